//! Nannies: what the nanny shell (`rusk nanny`) does around a real `NannyCore`, one per host.
//!
//! A host's nanny owns the host's worker slots. Its `Spawn` starts a worker process (a new
//! life with a new pid); `Signal` kills it (SIGKILL at once) or asks it to stop (SIGTERM: it
//! dies shortly, or when it thaws). Worker exits reach the nanny at once, as `wait()` does;
//! the worker's event loop pings it every 200 ms while it is not frozen, and says `registered`
//! once the scheduler's `Welcome` arrived. When the nanny process dies, its workers die with
//! it (`PR_SET_PDEATHSIG`); when its host vanishes, everything on it stops answering and the
//! scheduler's ends of its connections only close when TCP keepalive gives up.
//!
//! The nanny↔scheduler link is a TCP-like ordered stream per connection, faulted like worker
//! links (delayed, duplicated in place, or broken by a lost packet). A nanny that loses it
//! keeps supervising, queues what it would have sent, and reconnects with back-off as a new
//! connection (a new `NannyId`): `Register`, every slot's status, then the queued records.
//!
//! An *operator* (a client of its own) restarts slots and stops nannies through the scheduler
//! (`rusk restart`, `rusk stop-nanny`); in the liveness phase it revives every slot that went
//! `failed`, and a host whose nanny is gone gets a new one.
use super::{Ev, LifeId, LifeState, Phase, Sim, OPERATOR};
use crate::error::FailureKind;
use crate::trace::What;
use rand::Rng;
use rusk_core::nanny::{
    self, Command, NannyConfig, NannyCore, Record, RecordKind, RestartCause, Signal, SlotStatus,
};
use rusk_proto::msg::{
    ClientToScheduler, NannyInfo, NannyRecord, NannyToScheduler, RestartTarget, SchedulerToNanny,
    SlotReport,
};
use rusk_proto::{Incarnation, NannyId};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

mod link;

/// Messages a nanny keeps while it cannot reach the scheduler (`RECORDS_QUEUED_MAX` of the
/// shell); older ones are dropped.
const QUEUED_MAX: usize = 1000;
/// Back-off between a nanny's attempts to reach the scheduler (the shell's goes up to 5 s;
/// scaled down like the other timeouts).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How long the scheduler's end of a vanished host's connection stays open (TCP keepalive).
const KEEPALIVE_MS_MIN: u64 = 2_000;
const KEEPALIVE_MS_MAX: u64 = 6_000;
/// How often the operator looks for `failed` slots in the liveness phase.
pub(crate) const OPERATOR_PERIOD: Duration = Duration::from_millis(500);
/// How long after an injected crash-loop start-up a worker dies.
const STARTUP_CRASH_US_MAX: u64 = 30_000;

/// A machine with a nanny: its name, its worker slots, and its current nanny process.
pub(crate) struct Host {
    pub(crate) name: Arc<str>,
    /// The worker slot (`Sim::slots` index) of each of its nanny's slots.
    pub(crate) slots: Vec<u32>,
    pub(crate) nanny: Option<usize>,
    runs: u32,
    /// The operator stopped its nanny; nothing restarts it before the liveness phase.
    pub(crate) stopped_by_operator: bool,
    start_planned: bool,
}

impl Host {
    pub(crate) fn new(name: String, slots: Vec<u32>) -> Host {
        Host {
            name: Arc::from(name),
            slots,
            nanny: None,
            runs: 0,
            stopped_by_operator: false,
            start_planned: false,
        }
    }
}

/// One nanny process.
pub(crate) struct NannyProc {
    pub(crate) host: usize,
    run: u32,
    pid: u32,
    pub(crate) core: NannyCore,
    pub(crate) alive: bool,
    tick_at: Option<Duration>,
    /// The scheduler connection it believes is up.
    pub(crate) conn: Option<NannyId>,
    /// What it would have sent while it had no connection.
    queued: VecDeque<NannyToScheduler>,
    retry: Duration,
}

/// One nanny↔scheduler connection.
pub(crate) struct NannyConn {
    pub(crate) nanny: usize,
    open: bool,
    /// After it closed, packets already sent still reach the scheduler.
    flush_to_sched: bool,
    /// The scheduler got `NannyJoined` for it.
    joined: bool,
    /// The scheduler got `NannyLeft` for it (or never will hear of it).
    pub(crate) left: bool,
    last_to_sched: Duration,
    last_to_nanny: Duration,
}

impl NannyConn {
    /// The scheduler crashed: the connection is gone, and the new scheduler never knew it.
    /// Whether it was open.
    pub(crate) fn close_for_crash(&mut self) -> bool {
        let was_open = self.open;
        self.open = false;
        self.flush_to_sched = false;
        self.left = true;
        was_open
    }
}

/// Whether `NannyCore` knew a worker only by the incarnation of its first `Registered`. It did
/// (found by the crash seeds: a late `RestartWorker` for the old incarnation killed the
/// reconnected worker); it now follows re-registrations of the running process, so the checks
/// below expect the latest incarnation. Kept as a switch to replay the old behaviour's seeds.
const NANNY_KEEPS_FIRST_INCARNATION: bool = false;

/// A slot as `rusk status` shows it: index, state, pid, incarnation.
type SlotView<'a> = (u32, &'a str, Option<u32>, Option<u64>);

/// How a nanny process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NannyEnd {
    /// Killed (crash, OOM, kill -9): the kernel closes its connection, its workers die.
    Crash,
    /// Its host vanished with everything on it.
    Vanish,
    /// It stopped every slot (operator stop) and exited.
    Exited,
}

/// The nanny tunables of a seed: scaled down from the defaults like the scheduler's, and
/// drawn so that sometimes the watchdog, sometimes the scheduler's TTL notices a hang first.
pub(crate) fn draw_nanny_config(rng: &mut impl Rng) -> NannyConfig {
    let ms = Duration::from_millis;
    NannyConfig {
        watchdog_timeout: ms(rng.gen_range(600..=3_000)),
        start_timeout: ms(5_000),
        kill_grace: ms(rng.gen_range(100..=500)),
        backoff_initial: ms(rng.gen_range(50..=250)),
        backoff_max: ms(rng.gen_range(1_000..=2_000)),
        stable_period: ms(rng.gen_range(2_000..=5_000)),
        crash_restarts_max: rng.gen_range(3..=5),
        crash_window: ms(rng.gen_range(5_000..=20_000)),
        memory_restart_bytes: None,
        ..NannyConfig::default()
    }
}

impl Sim {
    // === nanny processes ===

    /// A nanny process starts on `host` (first boot, systemd restarting it, or the operator):
    /// it brings every slot up and connects to the scheduler.
    pub(crate) fn start_nanny(&mut self, host: usize) -> Result<(), FailureKind> {
        let h = &mut self.hosts[host];
        h.start_planned = false;
        if h.nanny.is_some() {
            return Ok(());
        }
        h.stopped_by_operator = false;
        let run = h.runs;
        h.runs += 1;
        let config = NannyConfig {
            nworkers: h.slots.len() as u32,
            seed: self.rng.gen(),
            ..self.nanny_config.clone()
        };
        let id = self.nannies.len();
        let pid = self.next_pid;
        self.next_pid += 1;
        self.nannies.push(NannyProc {
            host,
            run,
            pid,
            core: NannyCore::new(config),
            alive: true,
            tick_at: None,
            conn: None,
            queued: VecDeque::new(),
            retry: RECONNECT_MIN,
        });
        self.hosts[host].nanny = Some(id);
        self.counts.nanny_starts += 1;
        let name = self.nanny_name(id);
        self.note(What::Note(format!("{name} (pid {pid}) starts")));
        let at = self.now + self.latency();
        self.push(at, Ev::NannyConnect { nanny: id });
        self.nanny_step(id, nanny::Event::Start)
    }

    pub(crate) fn nanny_name(&self, nanny: usize) -> String {
        let n = &self.nannies[nanny];
        format!("{}#{}", self.hosts[n.host].name, n.run)
    }

    /// One `NannyCore::handle` call, its invariant checks, then its commands.
    pub(crate) fn nanny_step(&mut self, nanny: usize, ev: nanny::Event) -> Result<(), FailureKind> {
        if !self.nannies[nanny].alive {
            return Ok(()); // lost with the process
        }
        let registered = match ev {
            nanny::Event::Registered { slot, pid, .. } => Some((slot, pid)),
            _ => None,
        };
        // A restart request may only ever kill the incarnation it names.
        let requested = match ev {
            nanny::Event::SchedulerRestart { incarnation, .. } => Some(incarnation),
            _ => None,
        };
        let mut out = Vec::new();
        let n = &mut self.nannies[nanny];
        n.core.handle_into(self.now, ev, &mut out);
        n.core.check_invariants();
        self.carry_out_nanny(nanny, out, requested)?;
        if let (Some((index, pid)), Phase::Liveness { .. }) = (registered, self.phase) {
            let n = &self.nannies[nanny];
            if n.alive
                && n.core.slot_pid(index) == Some(pid)
                && n.core.slot_state(index) == "running"
            {
                let slot = self.hosts[n.host].slots[index as usize];
                let after = self.now.saturating_sub(self.healed_at);
                self.slots[slot as usize]
                    .recovered_after_heal
                    .get_or_insert(after);
            }
        }
        self.reschedule_nanny_tick(nanny);
        Ok(())
    }

    fn reschedule_nanny_tick(&mut self, nanny: usize) {
        let now = self.now;
        let n = &mut self.nannies[nanny];
        if !n.alive {
            return;
        }
        let Some(next) = n.core.next_timeout() else {
            return;
        };
        let next = next.max(now);
        if n.tick_at != Some(next) {
            n.tick_at = Some(next);
            self.push(next, Ev::NannyTick { nanny, due: next });
        }
    }

    pub(crate) fn on_nanny_tick(&mut self, nanny: usize, due: Duration) -> Result<(), FailureKind> {
        let n = &mut self.nannies[nanny];
        if !n.alive || n.tick_at != Some(due) {
            return Ok(());
        }
        n.tick_at = None;
        let name = self.nanny_name(nanny);
        self.note(What::Note(format!("{name} tick")));
        self.nanny_step(nanny, nanny::Event::Tick)
    }

    fn carry_out_nanny(
        &mut self,
        nanny: usize,
        out: Vec<Command>,
        requested: Option<Incarnation>,
    ) -> Result<(), FailureKind> {
        let mut outgoing = Vec::new();
        let mut exit = false;
        // The fault each restart was begun for: the nanny records it before it signals.
        let mut detected: Option<(u32, RestartCause)> = None;
        let name = self.nanny_name(nanny);
        for cmd in out {
            match cmd {
                Command::Spawn { slot, generation } => self.nanny_spawn(nanny, slot, generation)?,
                Command::Signal { slot, pid, signal } => {
                    let why = detected
                        .as_ref()
                        .filter(|d| d.0 == slot)
                        .map(|d| d.1.clone());
                    self.nanny_signal(nanny, slot, pid, signal, why, requested)?
                }
                Command::Record(r) => {
                    if let RecordKind::Detected { cause, .. } = &r.what {
                        detected = Some((r.slot, cause.clone()));
                    }
                    self.count_record(&r);
                    self.note(What::Note(format!("{name} slot {}: {:?}", r.slot, r.what)));
                    outgoing.push(NannyToScheduler::Record(NannyRecord::from(&r)));
                }
                Command::SlotChanged(s) => {
                    self.note(What::Note(format!(
                        "{name} slot {} is {} (pid {:?}, {:?})",
                        s.slot, s.state, s.pid, s.incarnation
                    )));
                    outgoing.push(NannyToScheduler::Slots(vec![slot_report(&s)]));
                }
                Command::Inspect { slot, pid } => self.nanny_inspect(nanny, slot, pid),
                Command::Notice(notice) => self.note(What::Note(format!("{name}: {notice:?}"))),
                Command::Exit => exit = true,
            }
        }
        if exit {
            let all = self.nannies[nanny].core.statuses();
            outgoing.push(NannyToScheduler::Slots(
                all.iter().map(slot_report).collect(),
            ));
        }
        if !outgoing.is_empty() {
            self.nanny_send(nanny, outgoing);
        }
        if exit {
            self.end_nanny(nanny, NannyEnd::Exited);
        }
        Ok(())
    }

    fn count_record(&mut self, r: &Record) {
        let key = match &r.what {
            RecordKind::Detected { cause, .. } => cause.kind().as_str(),
            RecordKind::Recovered { .. } => "recovered",
            RecordKind::Failed { .. } => "failed",
            RecordKind::BackingOff { .. } => "backing-off",
        };
        *self.nanny_records.entry(key).or_default() += 1;
    }

    /// `Spawn`: start the slot's worker process (or fail to, in an injected crash loop). The
    /// previous one must be gone: that is the nanny's safety rule.
    fn nanny_spawn(
        &mut self,
        nanny: usize,
        index: u32,
        generation: u64,
    ) -> Result<(), FailureKind> {
        let host = self.nannies[nanny].host;
        let slot = self.hosts[host].slots[index as usize];
        let crash_loop = self.slots[slot as usize]
            .crash_loop_until
            .is_some_and(|until| self.now < until);
        if crash_loop && self.rng.gen_bool(0.3) {
            self.counts.spawn_failures += 1;
            self.push(
                self.now,
                Ev::NannyEvent {
                    nanny,
                    ev: nanny::Event::SpawnFailed {
                        slot: index,
                        generation,
                        error: "cannot execute the worker (injected)".into(),
                    },
                },
            );
            return Ok(());
        }
        if let Some(old) = self.slots[slot as usize].life {
            if self.lives[old].is_alive() {
                return Err(FailureKind::TwoLiveWorkers {
                    slot: self.slot_name(slot),
                    old_pid: self.lives[old].pid,
                    new_pid: self.next_pid,
                });
            }
        }
        let life = self.start_process(slot, Some(nanny))?;
        let pid = self.lives[life].pid;
        self.push(
            self.now,
            Ev::NannyEvent {
                nanny,
                ev: nanny::Event::Spawned {
                    slot: index,
                    generation,
                    pid,
                },
            },
        );
        if crash_loop {
            let at =
                self.now + Duration::from_micros(self.rng.gen_range(1_000..=STARTUP_CRASH_US_MAX));
            self.push(
                at,
                Ev::ProcessExit {
                    life,
                    death: super::Death::StartupCrash,
                },
            );
        }
        Ok(())
    }

    /// `Inspect`: what `/proc` shows of the process's event-loop thread. A simulated worker is
    /// never stuck in the kernel: a frozen one is stopped or wedged, a gone one a zombie until
    /// its exit is seen.
    fn nanny_inspect(&mut self, nanny: usize, slot: u32, pid: u32) {
        let state = self
            .pids
            .get(&pid)
            .map(|&life| match self.lives[life].state {
                LifeState::Running => nanny::ProcState::Sleeping,
                LifeState::Frozen => nanny::ProcState::Stopped,
                LifeState::Gone(_) => nanny::ProcState::Dead,
            });
        let facts = nanny::ProcessFacts {
            state,
            major_faults: 0,
        };
        self.push(
            self.now,
            Ev::NannyEvent {
                nanny,
                ev: nanny::Event::Inspected { slot, pid, facts },
            },
        );
    }

    /// `Signal`: the target must be this slot's worker; a watchdog kill must hit a process
    /// that really stopped pinging, and a signal sent on a scheduler's restart request
    /// (`requested`) must hit the incarnation the request names (so a stale one is a no-op).
    fn nanny_signal(
        &mut self,
        nanny: usize,
        index: u32,
        pid: u32,
        signal: Signal,
        why: Option<RestartCause>,
        requested: Option<Incarnation>,
    ) -> Result<(), FailureKind> {
        let host = self.nannies[nanny].host;
        let slot = self.hosts[host].slots[index as usize];
        let bad = |s: &Sim, why: String| {
            Err(FailureKind::BadNannySignal {
                slot: s.slot_name(slot),
                pid,
                why,
            })
        };
        let Some(&life) = self.pids.get(&pid) else {
            return bad(self, "no such process".into());
        };
        let l = &self.lives[life];
        if l.parent != Some(nanny) || l.slot != slot {
            return bad(self, "not a worker this nanny started for the slot".into());
        }
        if !l.is_alive() {
            return Ok(()); // it already exited; its exit is on the way (a zombie until reaped)
        }
        if let Some(named) = requested {
            // This very process under an earlier connection (see
            // `NANNY_KEEPS_FIRST_INCARNATION`) is still the worker the request is meant for.
            // What the nanny knows: the incarnation the worker last told it (it may be
            // reconnecting, with no current one).
            let known = if NANNY_KEEPS_FIRST_INCARNATION {
                l.first_told.or(l.incarnation)
            } else {
                l.last_told.or(l.incarnation)
            };
            if known != Some(named) {
                return bad(
                    self,
                    format!(
                        "a restart request for {named} hit the worker of {:?}",
                        l.incarnation
                    ),
                );
            }
        }
        if let Some(RestartCause::Watchdog { .. }) = why {
            let silent = self.now.saturating_sub(self.ping_before_now(life));
            if silent < self.nanny_config.watchdog_timeout {
                return bad(
                    self,
                    format!("watchdog kill of a worker that pinged {silent:?} ago"),
                );
            }
        }
        let node = l.node();
        self.note(What::Note(format!(
            "nanny sends {signal:?} to {node} (pid {pid})"
        )));
        match signal {
            Signal::Kill => self.kill_life(life, super::Death::Killed),
            Signal::Term => self.terminate(life),
        }
        Ok(())
    }

    /// The last ping the process sent before this instant (the nanny may not have read one
    /// sent at this very instant yet).
    fn ping_before_now(&self, life: LifeId) -> Duration {
        let l = &self.lives[life];
        if l.last_ping == self.now {
            l.prev_ping
        } else {
            l.last_ping
        }
    }

    /// A nanny process ends; its workers die with it.
    pub(crate) fn end_nanny(&mut self, nanny: usize, how: NannyEnd) {
        let now = self.now;
        let n = &mut self.nannies[nanny];
        if !n.alive {
            return;
        }
        n.alive = false;
        n.tick_at = None;
        let host = n.host;
        let conn = n.conn.take();
        self.hosts[host].nanny = None;
        if let Some(c) = conn {
            let close_delay = Duration::from_micros(self.rng.gen_range(1_000..=50_000));
            let keepalive =
                Duration::from_millis(self.rng.gen_range(KEEPALIVE_MS_MIN..=KEEPALIVE_MS_MAX));
            let conn = self
                .nanny_conns
                .get_mut(&c)
                .expect("a nanny's connection exists");
            if conn.open {
                conn.open = false;
                let (flush, at, reason) = match how {
                    NannyEnd::Vanish => (false, now + keepalive, "keepalive timeout"),
                    NannyEnd::Crash | NannyEnd::Exited => (
                        true,
                        (now + close_delay).max(conn.last_to_sched),
                        "connection reset (nanny process gone)",
                    ),
                };
                conn.flush_to_sched = flush;
                self.push(at, Ev::NannyLinkClosed { conn: c, reason });
            }
        }
        let name = self.nanny_name(nanny);
        self.note(What::Note(format!("{name} is gone: {how:?}")));
        let children: Vec<LifeId> = (0..self.lives.len())
            .filter(|&l| self.lives[l].parent == Some(nanny) && self.lives[l].is_alive())
            .collect();
        for life in children {
            let death = match how {
                NannyEnd::Vanish => super::Death::Silent,
                NannyEnd::Crash | NannyEnd::Exited => super::Death::NannyGone,
            };
            self.kill_life(life, death);
        }
        // Who starts it again: in the liveness phase, always (the operator); before, systemd
        // sometimes does, unless an operator stopped it.
        let again = match self.phase {
            Phase::Liveness { .. } => Some(self.rng.gen_range(1..=50)),
            Phase::Safety if self.hosts[host].stopped_by_operator => None,
            Phase::Safety => self
                .rng
                .gen_bool(0.6)
                .then(|| self.rng.gen_range(200..=3_000)),
        };
        if let Some(ms) = again {
            self.plan_nanny_start(host, now + Duration::from_millis(ms));
        }
    }

    pub(crate) fn plan_nanny_start(&mut self, host: usize, at: Duration) {
        let h = &mut self.hosts[host];
        if h.nanny.is_none() && !h.start_planned {
            h.start_planned = true;
            self.push(at, Ev::NannyStart { host });
        }
    }

    // === the operator ===

    pub(crate) fn operator_send(&mut self, msg: ClientToScheduler) {
        self.note(What::Note(format!("operator: {msg:?}")));
        self.client_send(OPERATOR, msg, None);
    }

    /// `rusk restart <nanny>/<slot>`.
    pub(crate) fn operator_restart(&mut self, slot: u32) {
        let Some(sup) = self.slots[slot as usize].sup else {
            return;
        };
        self.counts.operator_restarts += 1;
        let id = format!("{}/{}", self.hosts[sup.host].name, sup.index);
        self.operator_send(ClientToScheduler::Restart {
            target: RestartTarget::Worker(id),
        });
    }

    /// `rusk stop-nanny <nanny>`.
    pub(crate) fn operator_stop(&mut self, host: usize) {
        self.counts.operator_stops += 1;
        self.hosts[host].stopped_by_operator = true;
        let name = self.hosts[host].name.to_string();
        self.operator_send(ClientToScheduler::StopNanny { nanny: Some(name) });
    }

    /// In the liveness phase the operator revives every slot that went `failed` (retrying
    /// while its nanny is not connected).
    pub(crate) fn on_operator_check(&mut self) {
        if !matches!(self.phase, Phase::Liveness { .. }) {
            return;
        }
        for host in 0..self.hosts.len() {
            let Some(n) = self.hosts[host].nanny else {
                continue;
            };
            for (index, &slot) in self.hosts[host].slots.clone().iter().enumerate() {
                if self.nannies[n].core.slot_state(index as u32) == "failed" {
                    self.operator_restart(slot);
                }
            }
        }
        self.push(self.now + OPERATOR_PERIOD, Ev::OperatorCheck);
    }

    // === liveness ===

    /// A supervised slot is up: its nanny runs it, and the scheduler counts on that worker.
    pub(crate) fn slot_up(&self, slot: u32) -> bool {
        let s = &self.slots[slot as usize];
        let Some(sup) = s.sup else {
            return true;
        };
        let Some(n) = self.hosts[sup.host].nanny else {
            return false;
        };
        let core = &self.nannies[n].core;
        let Some(life) = s.life else {
            return false;
        };
        let l = &self.lives[life];
        l.state == super::LifeState::Running
            && l.incarnation.is_some_and(|i| self.oracle.is_live(i))
            && core.slot_state(sup.index) == "running"
            && core.slot_pid(sup.index) == Some(l.pid)
    }

    /// The nanny's view of a supervised slot, for reports.
    pub(crate) fn slot_state(&self, slot: u32) -> String {
        let Some(sup) = self.slots[slot as usize].sup else {
            return "unsupervised".into();
        };
        match self.hosts[sup.host].nanny {
            Some(n) => self.nannies[n].core.slot_state(sup.index).into(),
            None => "no nanny".into(),
        }
    }

    pub(crate) fn slot_name(&self, slot: u32) -> String {
        match self.slots[slot as usize].sup {
            Some(sup) => format!("{}/{}", self.hosts[sup.host].name, sup.index),
            None => format!("w{slot}"),
        }
    }

    /// The bound within which every supervised slot must run a registered worker again once
    /// the faults have healed: the nanny reconnects, the operator notices a failed slot, a
    /// back-off ends, a hang is detected and killed, and the worker starts.
    pub(crate) fn slot_bound(&self) -> Duration {
        let n = &self.nanny_config;
        RECONNECT_MAX
            + OPERATOR_PERIOD
            + n.backoff_max
            + n.watchdog_timeout.max(self.config.worker_ttl)
            + n.kill_grace
            + Duration::from_secs(1)
    }

    /// Once everything has settled, the slot reports the scheduler holds for each nanny (what
    /// `rusk status` shows) describe the workers that really run, whatever reports were lost,
    /// duplicated or queued across reconnections.
    pub(crate) fn check_nanny_views(&self) -> Result<(), FailureKind> {
        let status = self.scheduler.status(None);
        for host in &self.hosts {
            let want: Vec<SlotView> = host
                .slots
                .iter()
                .enumerate()
                .map(|(index, &slot)| {
                    let life = self.slots[slot as usize].life.map(|l| &self.lives[l]);
                    (
                        index as u32,
                        "running",
                        life.map(|l| l.pid),
                        life.and_then(|l| {
                            if NANNY_KEEPS_FIRST_INCARNATION {
                                l.first_told.or(l.incarnation)
                            } else {
                                l.last_told.or(l.incarnation)
                            }
                        })
                        .map(|i| i.0),
                    )
                })
                .collect();
            let views: Vec<Vec<SlotView>> = status
                .nannies
                .iter()
                .filter(|n| *n.name == *host.name)
                .map(|n| {
                    n.slots
                        .iter()
                        .map(|r| (r.slot, r.state.as_str(), r.pid, r.incarnation))
                        .collect()
                })
                .collect();
            if !views.contains(&want) {
                return Err(FailureKind::StaleNannyView {
                    nanny: host.name.to_string(),
                    want: format!("{want:?}"),
                    got: format!("{views:?}"),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn on_slots_check(&mut self) -> Result<(), FailureKind> {
        let bound = self.slot_bound();
        for slot in 0..self.slots.len() as u32 {
            let s = &self.slots[slot as usize];
            if s.sup.is_none() || s.recovered_after_heal.is_some() || self.slot_up(slot) {
                continue;
            }
            return Err(FailureKind::SlotNotRecovered {
                slot: self.slot_name(slot),
                state: self.slot_state(slot),
                bound,
            });
        }
        Ok(())
    }
}

fn slot_report(s: &SlotStatus) -> SlotReport {
    SlotReport {
        slot: s.slot,
        state: s.state.to_string(),
        pid: s.pid,
        incarnation: s.incarnation.map(|i| i.0),
        restarts: s.restarts,
        last_cause: s.last_cause.clone(),
    }
}
