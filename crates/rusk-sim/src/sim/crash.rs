//! Scheduler crashes and restarts (`SimConfig::scheduler_crashes`): the scheduler process dies
//! and a new one resumes from its journal, as `rusk scheduler --journal` does.
//!
//! The journal is modelled as the shell writes it: one entry per loop turn that produced
//! records (a turn here is one `Scheduler::handle_into` plus `flush_journal`), written before
//! the turn's messages go out, durably (fsync) when any record `needs_sync()`. A crash
//! happens
//! - between turns: everything sent so far is on its way, nothing more comes;
//! - inside a turn, before its journal write: neither its records nor its messages exist;
//! - inside a turn with durable records (none an id floor), after its messages to workers and
//!   nannies went out but before its records reached the disk: the shell holds only the
//!   replies to clients for the write (`HeldReplies`), so workers may run tasks of a graph
//!   the new scheduler never hears of (their results are released when they register);
//! - inside a turn, after its journal write: its records exist, its messages were never sent;
//! - with the journal's writer several turns behind (`CrashPoint::WriterBehind`): for 2 to 6
//!   turns the loop sends its messages to workers and nannies while their records wait for the
//!   writer (the shell's queue, up to `JOURNAL_QUEUE_TURNS_MAX` turns) and every reply to a
//!   client waits behind them (`HeldReplies`), then the scheduler dies with all of them
//!   unwritten. A turn that raises an id floor makes the loop wait for the writer (everything
//!   queued is written, then the held replies go out, in order), and so does healing.
//!
//! Entries written without an fsync (turns that only moved results to memory) and not
//! followed by a durable one may be lost at a crash: a random number of the trailing ones is
//! dropped (all, none, or some). The new scheduler starts from `replay` of what is left (the
//! journal is then compacted into `Resume::to_records`, as the shell compacts it at start).
//!
//! Every connection to the dead scheduler is gone: what was in flight towards it is lost;
//! what it had sent before dying still arrives, then each peer notices the close. Workers
//! forget their queued work (`worker::Event::SchedulerLost`), keep running attempts and stored
//! results, and reconnect with back-off (100 ms doubling to 2 s, `rusk_net::reconnect`, as
//! every endpoint), each registration naming the results they hold; incarnations stay unique
//! over the whole run. Nannies reconnect as they do after any lost link. Clients reconnect
//! with the same back-off. The main client claims its unfinished graphs with `LocateOutputs`,
//! releases again the graphs it was done with (the release may have died with the
//! scheduler), and submits again what it never heard `Submitted` for (as a user would rerun
//! `rusk submit`). The shared-keys clients' session graphs reconnect as the Python client
//! does (`shared/reconnect.rs`): claim the graph, send again every request not answered,
//! then what was queued meanwhile.
//!
//! A result a worker still holds when it registers again is adopted by the new scheduler
//! without any report the oracle saw accepted (the worker's `TaskDone` may have died with the
//! old one): the journal's `InMemory` records of each turn tell which (`CrashState::adopted`).
use super::{Ev, LifeId, LifeState, Sim};
use crate::error::FailureKind;
use crate::trace::What;
use rand::Rng;
use rusk_core::journal::{replay, Record};
use rusk_core::scheduler::{self, Scheduler, SchedulerConfig, SchedulerStats};
use rusk_core::worker;
use rusk_proto::msg::{ClientToScheduler, SchedulerToClient};
use rusk_proto::{ClientId, GraphId, TaskRef};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the scheduler stays down before its supervisor (systemd) has started it again.
const DOWN_MS_MIN: u64 = 20;
const DOWN_MS_MAX: u64 = 2_500;
/// Back-off of a worker reconnecting: `rusk_net::reconnect::{RECONNECT_DELAY_MIN,
/// RECONNECT_DELAY_MAX}`, the one back-off of every endpoint (the worker shell's included).
const WORKER_RETRY_MIN: Duration = Duration::from_millis(100);
const WORKER_RETRY_MAX: Duration = Duration::from_secs(2);
/// Back-off of a client reconnecting (`rusk::client` and the Python client's session): the
/// same `rusk_net::reconnect` back-off.
pub(crate) const CLIENT_RETRY_MIN: Duration = Duration::from_millis(100);
const CLIENT_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a peer takes to notice that its connection closed.
const NOTICE_US_MIN: u64 = 500;
const NOTICE_US_MAX: u64 = 50_000;

/// Where in a turn the armed crash strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// Before its journal write: neither its records nor its messages exist.
    Unwritten,
    /// In a turn whose durable records hold back only its client replies: its messages to
    /// workers and nannies went out, its records never reached the disk.
    WorkersToldUnwritten,
    /// After its journal write: its records exist, its messages were never sent.
    Written,
    /// The writer falls behind for a few turns, then the scheduler dies (see the module).
    WriterBehind,
}

/// Turns the journal's writer is behind, and what waits for it.
struct Behind {
    /// Turns until the crash.
    turns_left: u32,
    turns: u32,
    /// Each turn's records, not yet on disk.
    records: Vec<Vec<Record>>,
    /// Replies to clients, held until the records before them are on disk.
    replies: Vec<scheduler::Command>,
}

/// How many turns the writer may fall behind before the crash (`CrashPoint::WriterBehind`).
const BEHIND_TURNS_MIN: u32 = 2;
const BEHIND_TURNS_MAX: u32 = 6;

/// The scheduler process's life and its journal.
pub(crate) struct CrashState {
    pub(crate) enabled: bool,
    /// The journal on disk: one entry per turn, and whether it was written durably.
    journal: Vec<(Vec<Record>, bool)>,
    /// The scheduler process is dead (between a crash and its restart).
    pub(crate) down: bool,
    /// Scheduler lives so far, minus one: tags connections, so that nothing sent to a dead
    /// scheduler reaches the next one.
    pub(crate) epoch: u64,
    /// The next turn crashes at this point.
    armed: Option<CrashPoint>,
    /// The writer is behind: turns written later, or lost at the crash.
    behind: Option<Behind>,
    config: SchedulerConfig,
    /// When the scheduler last restarted.
    pub(crate) restarted_at: Option<Duration>,
    /// Statistics of the scheduler lives that ended.
    pub(crate) results_adopted: u64,
    pub(crate) stale_reports: u64,
    /// Results a restarted scheduler adopted from the workers that held them, per task: each
    /// one reached memory (and was reported to whoever waits for it) without a report the
    /// oracle saw accepted.
    pub(crate) adopted: BTreeMap<TaskRef, u32>,
    /// How many of the oracle's accepted results the turns so far accounted for.
    accepted_seen: usize,
}

impl CrashState {
    pub(crate) fn new(enabled: bool, config: SchedulerConfig) -> CrashState {
        CrashState {
            enabled,
            journal: Vec::new(),
            down: false,
            epoch: 0,
            armed: None,
            behind: None,
            restarted_at: None,
            config,
            results_adopted: 0,
            stale_reports: 0,
            adopted: BTreeMap::new(),
            accepted_seen: 0,
        }
    }

    /// How long a restarted scheduler waits for holders to register and graphs to be claimed.
    pub(crate) fn resume_grace(&self) -> Duration {
        self.config.resume_grace
    }
}

/// Scheduler crashes injected in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashCounts {
    /// Crashes, by where they struck: between turns, before a turn's journal write, after it.
    pub between_turns: u32,
    pub before_write: u32,
    /// In a turn with durable records: its workers told, its records and replies lost.
    pub workers_told_before_write: u32,
    pub after_write: u32,
    /// With the journal's writer 2 to 6 turns behind: those turns' workers told, their
    /// records and client replies lost.
    pub writer_behind: u32,
    /// Turns those crashes had their records and replies queued, in all.
    pub writer_behind_turns: u32,
    /// Times the writer caught up instead (an id floor, or healing).
    pub writer_caught_up: u32,
    /// Journal entries written without fsync and lost at a crash.
    pub unsynced_lost: u32,
    /// Results workers still held when they registered again, adopted by the new scheduler.
    pub results_adopted: u64,
    /// Graphs a client claimed again after a restart (`LocateOutputs` on reconnecting).
    pub claims: u32,
    /// Graphs submitted again because their `Submitted` died with the scheduler.
    pub resubmits: u32,
    /// Worker and client reconnections to a restarted scheduler.
    pub worker_reconnects: u32,
    pub client_reconnects: u32,
    /// Session graphs their client claimed again on reconnecting (`LocateOutputs`).
    pub session_claims: u32,
    /// Requests of the session clients sent again on reconnecting (no reply had come).
    pub requests_resent: u32,
    /// Of those, `Extend`s the restarted scheduler had from its journal already (acknowledged
    /// with no task added).
    pub extends_replayed: u32,
    /// Keys of another session held again on reconnecting (holds are not journaled).
    pub keys_held_again: u32,
}

impl CrashCounts {
    pub fn crashes(&self) -> u32 {
        self.between_turns
            + self.before_write
            + self.workers_told_before_write
            + self.after_write
            + self.writer_behind
    }
}

impl Sim {
    /// Plan this run's scheduler crashes: one to three, anywhere in the safety phase.
    pub(crate) fn plan_crashes(&mut self) {
        if !self.crash.enabled || !self.plan.enabled {
            return;
        }
        let n = self.rng.gen_range(1..=3);
        let safety_us = self.config.safety.as_micros() as u64;
        for _ in 0..n {
            let at = Duration::from_micros(self.rng.gen_range(safety_us / 20..safety_us));
            self.push(at, Ev::SchedCrash);
        }
    }

    /// A planned crash: now, or armed for the next turn (before or after its journal write).
    pub(crate) fn on_sched_crash(&mut self) -> Result<(), FailureKind> {
        if !self.faults_active()
            || self.crash.down
            || self.crash.armed.is_some()
            || self.crash.behind.is_some()
        {
            return Ok(());
        }
        match self.rng.gen_range(0..5) {
            0 => {
                self.crash_counts.between_turns += 1;
                self.crash_now("between turns");
            }
            1 => self.crash.armed = Some(CrashPoint::Unwritten),
            2 => self.crash.armed = Some(CrashPoint::WorkersToldUnwritten),
            3 => self.crash.armed = Some(CrashPoint::WriterBehind),
            _ => self.crash.armed = Some(CrashPoint::Written),
        }
        Ok(())
    }

    /// The end of a scheduler turn: its journal records are written (durably if any needs
    /// it), unless the armed crash strikes first. `Err`: the scheduler died in this turn and
    /// `out` must not be carried out (with the failure found in what it did send, if any).
    pub(crate) fn end_turn(
        &mut self,
        out: &mut Vec<scheduler::Command>,
    ) -> Result<(), Option<FailureKind>> {
        if !self.crash.enabled && !self.workers_reconnect {
            return Ok(());
        }
        self.scheduler.flush_journal(out);
        let records: Vec<Record> = out
            .iter()
            .filter_map(|c| match c {
                scheduler::Command::Journal(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        if !self.crash.enabled {
            // No crash, but results adopted from reconnecting workers are counted.
            self.count_adopted(&records);
            return Ok(());
        }
        // Healing (the liveness phase) disarms a crash that had not struck yet.
        let mut armed = self.crash.armed.take().filter(|_| self.faults_active());
        if armed == Some(CrashPoint::WriterBehind) {
            let turns = self.rng.gen_range(BEHIND_TURNS_MIN..=BEHIND_TURNS_MAX);
            self.note(What::Note(format!(
                "fault: the journal's writer falls {turns} turns behind, then the scheduler crashes"
            )));
            self.crash.behind = Some(Behind {
                turns_left: turns,
                turns,
                records: Vec::new(),
                replies: Vec::new(),
            });
            armed = None;
        }
        if let Some(mut behind) = self.crash.behind.take() {
            if self.faults_active() && !records.iter().any(Record::holds_workers) {
                return self.turn_behind(behind, records, out);
            }
            // The loop waits for the writer: what was queued is written, in order, then the
            // replies it held go out before this turn's.
            self.crash_counts.writer_caught_up += 1;
            self.note(What::Note(format!(
                "the journal's writer catches up ({} turns queued, {} replies held)",
                behind.records.len(),
                behind.replies.len()
            )));
            let queued: Vec<Record> = behind.records.drain(..).flatten().collect();
            if self.shared.is_some() {
                self.shared_turn_written(&queued);
            }
            if !queued.is_empty() {
                let synced = queued.iter().any(Record::needs_sync);
                self.crash.journal.push((queued, synced));
            }
            out.splice(0..0, behind.replies);
        }
        // The shell sends a turn's messages to workers before its records are on disk unless
        // one raises an id floor (`Record::holds_workers`): this crash waits, armed, for a turn
        // with durable records and no floor.
        if armed == Some(CrashPoint::WorkersToldUnwritten) {
            let durable = records.iter().any(Record::needs_sync);
            if durable && !records.iter().any(Record::holds_workers) {
                self.crash.accepted_seen = self.oracle.accepted.len();
                self.crash_counts.workers_told_before_write += 1;
                out.retain(|c| {
                    !matches!(
                        c,
                        scheduler::Command::ToClient { .. } | scheduler::Command::Journal(_)
                    )
                });
                // What workers and nannies were sent: checked and delivered as usual.
                let told = self.carry_out_sched(out);
                out.clear();
                told.map_err(Some)?;
                self.crash_now("in a turn, workers told, before its journal write");
                return Err(None);
            }
            self.crash.armed = armed;
            armed = None;
        }
        if armed == Some(CrashPoint::Unwritten) {
            self.crash.accepted_seen = self.oracle.accepted.len();
            self.crash_counts.before_write += 1;
            out.clear();
            self.crash_now("in a turn, before its journal write");
            return Err(None);
        }
        self.count_adopted(&records);
        if self.shared.is_some() {
            self.shared_turn_written(&records);
        }
        if !records.is_empty() {
            let synced = records.iter().any(Record::needs_sync);
            self.crash.journal.push((records, synced));
        }
        if armed == Some(CrashPoint::Written) {
            self.crash_counts.after_write += 1;
            self.crash_in_turn(out, "in a turn, after its journal write");
            return Err(None);
        }
        Ok(())
    }

    /// A turn while the writer is behind: its messages to workers and nannies go out, its
    /// records and its replies to clients wait; the last such turn ends with the crash.
    fn turn_behind(
        &mut self,
        mut behind: Behind,
        records: Vec<Record>,
        out: &mut Vec<scheduler::Command>,
    ) -> Result<(), Option<FailureKind>> {
        self.count_adopted(&records);
        if !records.is_empty() {
            behind.records.push(records);
        }
        let mut kept = Vec::with_capacity(out.len());
        for c in out.drain(..) {
            match c {
                scheduler::Command::ToClient { .. } => behind.replies.push(c),
                scheduler::Command::Journal(_) => {}
                _ => kept.push(c),
            }
        }
        *out = kept;
        behind.turns_left -= 1;
        // The shared-keys oracle follows each session request to its answer within its turn:
        // a turn whose answer would wait for the writer is the one the crash strikes.
        let answer_held = self.shared_request_unanswered();
        if behind.turns_left > 0 && !answer_held {
            self.crash.behind = Some(behind);
            return Ok(());
        }
        self.crash_counts.writer_behind += 1;
        let turns = behind.turns - behind.turns_left;
        self.crash_counts.writer_behind_turns += turns;
        let told = self.carry_out_sched(out);
        out.clear();
        told.map_err(Some)?;
        self.crash_now(&format!(
            "with its journal's writer {turns} turns behind ({} replies to clients held)",
            behind.replies.len()
        ));
        Err(None)
    }

    /// The results of this turn that reached memory (`InMemory`) without a result the oracle
    /// saw accepted in it: adopted from a worker that registered again.
    fn count_adopted(&mut self, records: &[Record]) {
        let mut accepted: BTreeMap<TaskRef, u32> = BTreeMap::new();
        for a in &self.oracle.accepted[self.crash.accepted_seen..] {
            *accepted.entry(a.task).or_default() += 1;
        }
        self.crash.accepted_seen = self.oracle.accepted.len();
        for r in records {
            let Record::InMemory { results, .. } = r else {
                continue;
            };
            for (task, _) in results {
                match accepted.get_mut(task) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => *self.crash.adopted.entry(*task).or_default() += 1,
                }
            }
        }
    }

    /// The scheduler dies after writing its turn's records.
    fn crash_in_turn(&mut self, out: &mut Vec<scheduler::Command>, when: &str) {
        // The oracle learns which model a graph is from `Submitted`: it never went out, but
        // the journaled graph lives on, and its tasks must still be checked.
        if let Some(m) = self.submit_model {
            for c in out.iter() {
                if let scheduler::Command::ToClient {
                    msg: SchedulerToClient::Submitted { graph, .. },
                    ..
                } = c
                {
                    self.oracle.graph_submitted(*graph, m);
                }
            }
        }
        // Workers it dropped in that turn are dropped in what it journaled too (a poison
        // verdict charged to their deaths is a `Failed` record the new scheduler fails the task
        // with again): the oracle charges those deaths as the scheduler did.
        for c in out.iter() {
            if let scheduler::Command::DropWorker { incarnation, .. } = c {
                self.oracle.removed(*incarnation, &self.models);
            }
        }
        out.clear();
        self.crash_now(when);
    }

    /// The scheduler process dies now.
    pub(crate) fn crash_now(&mut self, when: &str) {
        let stats = self.scheduler.stats();
        self.crash.results_adopted += stats.results_adopted;
        self.crash.stale_reports += stats.stale_reports;
        self.crash.down = true;
        self.crash.epoch += 1;
        // A writer behind loses what it had queued, and the replies held for it.
        self.crash.behind = None;
        self.poison_logged.clear();
        // Entries written without fsync after the last durable one: the OS may lose them.
        let durable = self
            .crash
            .journal
            .iter()
            .rposition(|(_, synced)| *synced)
            .map_or(0, |i| i + 1);
        let trailing = self.crash.journal.len() - durable;
        let keep = match self.rng.gen_range(0..3) {
            0 => trailing,
            1 => 0,
            _ => self.rng.gen_range(0..=trailing),
        };
        self.crash.journal.truncate(durable + keep);
        self.crash_counts.unsynced_lost += (trailing - keep) as u32;
        self.note(What::Note(format!(
            "fault: the scheduler crashes {when} ({} of {trailing} unsynced journal entries lost)",
            trailing - keep
        )));
        // Everything on its way to the dead scheduler is lost.
        let mut queue = std::mem::take(&mut self.queue).into_vec();
        queue.retain(|q| {
            !matches!(
                q.0.ev,
                Ev::ToSched { .. }
                    | Ev::LinkClosed { .. }
                    | Ev::NannyToSched { .. }
                    | Ev::NannyLinkClosed { .. }
                    | Ev::SchedTick { .. }
            )
        });
        self.queue = queue.into();
        self.sched_tick_at = None;
        // The life that died: connections to it carry its epoch.
        let epoch = self.crash.epoch - 1;
        // Workers: what the scheduler sent arrives, then they notice the close.
        for life in 0..self.lives.len() {
            let l = &mut self.lives[life];
            l.flush_to_sched = false;
            if !l.is_alive() || !l.link_open {
                continue;
            }
            l.link_open = false;
            l.draining = true;
            let at = (self.now
                + Duration::from_micros(self.rng.gen_range(NOTICE_US_MIN..=NOTICE_US_MAX)))
            .max(self.lives[life].last_to_worker);
            self.push(at, Ev::SchedLost { life, epoch });
        }
        // Nannies notice and reconnect, as after any lost link.
        let conns: Vec<_> = self.nanny_conns.keys().copied().collect();
        for conn in conns {
            let c = self.nanny_conns.get_mut(&conn).expect("listed");
            let was_open = c.close_for_crash();
            if was_open {
                let at = self.now
                    + Duration::from_micros(self.rng.gen_range(NOTICE_US_MIN..=NOTICE_US_MAX));
                self.push(at, Ev::NannyLinkDown { conn });
            }
        }
        // Clients: the same.
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for client in clients {
            let c = &self.clients[&client];
            if c.left || !c.connected {
                continue;
            }
            let at = (self.now
                + Duration::from_micros(self.rng.gen_range(NOTICE_US_MIN..=NOTICE_US_MAX)))
            .max(self.last_to_client(client));
            self.push(at, Ev::ClientLost { client, epoch });
        }
        let down = Duration::from_millis(self.rng.gen_range(DOWN_MS_MIN..=DOWN_MS_MAX));
        self.push(self.now + down, Ev::SchedRestart);
    }

    /// The supervisor starts the scheduler again: it replays its journal and resumes.
    pub(crate) fn on_sched_restart(&mut self) -> Result<(), FailureKind> {
        let records: Vec<Record> = std::mem::take(&mut self.crash.journal)
            .into_iter()
            .flat_map(|(r, _)| r)
            .collect();
        let resume = replay(records);
        let graphs = resume.graphs.len();
        let held = resume.in_memory.len();
        // The shell compacts the journal at start: the state, in one durable entry.
        self.crash.journal.push((resume.to_records(), true));
        let (core, mut out) = Scheduler::resume(self.crash.config.clone(), resume);
        self.scheduler = core;
        self.crash.down = false;
        self.crash.restarted_at = Some(self.now);
        self.oracle.scheduler_restarted();
        if self.shared.is_some() {
            self.shared_restarted();
        }
        self.note(What::Note(format!(
            "the scheduler restarts from its journal: {graphs} graphs, {held} results in memory"
        )));
        // Its first records (the attempt-id floor) are written before anything else.
        let first: Vec<Record> = out
            .iter()
            .filter_map(|c| match c {
                scheduler::Command::Journal(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        if !first.is_empty() {
            self.crash.journal.push((first, true));
        }
        self.carry_out_sched(&mut out)?;
        let next = self.scheduler.next_timeout().max(self.now);
        self.sched_tick_at = Some(next);
        self.push(next, Ev::SchedTick { due: next });
        Ok(())
    }

    /// Everyone is back with the scheduler: it runs, and every client, worker and nanny that
    /// lost it has reconnected (what the end-of-run checks need after a late restart).
    pub(crate) fn all_reconnected(&self) -> bool {
        !self.crash.down
            && self.clients.values().all(|c| c.left || c.connected)
            && self
                .lives
                .iter()
                .all(|l| !l.is_alive() || l.link_open || !(l.draining || l.retry > Duration::ZERO))
            && self.nannies.iter().all(|n| !n.alive || n.conn.is_some())
    }

    /// Statistics of the scheduler over all its lives (the current one's, plus what the
    /// earlier lives counted of the fields the report sums).
    pub(crate) fn sched_stats(&self) -> SchedulerStats {
        let mut s = self.scheduler.stats().clone();
        s.results_adopted += self.crash.results_adopted;
        s.stale_reports += self.crash.stale_reports;
        s
    }

    // === workers ===

    /// A worker notices that its scheduler connection closed: it forgets its queued work and
    /// tries to reconnect (keeping its results and running attempts).
    pub(crate) fn on_sched_lost(&mut self, life: LifeId, epoch: u64) -> Result<(), FailureKind> {
        let l = &mut self.lives[life];
        if l.state != LifeState::Running || !l.draining || l.sched_epoch != epoch {
            return Ok(());
        }
        l.draining = false;
        l.incarnation = None;
        l.told_registered = false;
        l.retry = WORKER_RETRY_MIN;
        let node = l.node();
        self.note(What::Note(format!(
            "{node} lost its scheduler; keeps its results and reconnects"
        )));
        self.worker_handle(life, vec![worker::Event::SchedulerLost])?;
        let at = self.now + WORKER_RETRY_MIN;
        self.push(at, Ev::WorkerReconnect { life });
        Ok(())
    }

    /// A worker's reconnection attempt: refused while the scheduler is down (back off and try
    /// again), else a new connection on which it registers, naming the results it holds.
    pub(crate) fn on_worker_reconnect(&mut self, life: LifeId) -> Result<(), FailureKind> {
        let l = &mut self.lives[life];
        if l.state != LifeState::Running || l.link_open || l.draining {
            return Ok(());
        }
        if self.crash.down {
            let retry = l.retry;
            l.retry = (l.retry * 2).min(WORKER_RETRY_MAX);
            self.push(self.now + retry, Ev::WorkerReconnect { life });
            return Ok(());
        }
        l.link_open = true;
        l.link += 1;
        l.flush_to_sched = false;
        l.sched_forgot = false;
        l.incarnation = None;
        l.sched_epoch = self.crash.epoch;
        let node = l.node();
        self.crash_counts.worker_reconnects += 1;
        let now = self.now;
        let start = self.lives[life]
            .core
            .as_mut()
            .expect("a running life has a core")
            .start(now);
        let held = match start.first() {
            Some(worker::Command::ToScheduler(rusk_proto::msg::WorkerToScheduler::Register(
                info,
            ))) => info.held.len(),
            _ => 0,
        };
        self.note(What::Note(format!(
            "{node} reconnects, holding {held} results"
        )));
        self.carry_out_worker(life, start)?;
        self.reschedule_worker_tick(life);
        Ok(())
    }

    // === clients ===

    /// A client notices its scheduler connection closed and starts reconnecting.
    pub(crate) fn on_client_lost(&mut self, client: ClientId, epoch: u64) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.left || !c.connected || c.epoch != epoch {
            return;
        }
        c.connected = false;
        c.retry = CLIENT_RETRY_MIN;
        self.note(What::Client(client, "lost the scheduler", None));
        self.push(self.now + CLIENT_RETRY_MIN, Ev::ClientReconnect { client });
    }

    /// A client's reconnection attempt; once connected it claims its graphs again.
    pub(crate) fn on_client_reconnect(&mut self, client: ClientId) -> Result<(), FailureKind> {
        let Some(c) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        if c.left || c.connected {
            return Ok(());
        }
        if self.crash.down {
            let retry = c.retry;
            c.retry = (c.retry * 2).min(CLIENT_RETRY_MAX);
            self.push(self.now + retry, Ev::ClientReconnect { client });
            return Ok(());
        }
        c.connected = true;
        c.epoch = self.crash.epoch;
        self.crash_counts.client_reconnects += 1;
        self.note(What::Client(client, "reconnects", None));
        self.sched_step(scheduler::Event::ClientJoined { client })?;
        if self.is_shared_client(client) {
            self.shared_reconnected(client);
            return Ok(());
        }
        let c = self.clients.get_mut(&client).expect("checked");
        // Submissions never answered: the scheduler may have died before or after taking
        // them; a graph it took and resumed is nobody's and is released after the grace.
        let lost: Vec<usize> = c.awaiting.drain(..).collect();
        let claim: Vec<GraphId> = c
            .graphs
            .iter()
            .filter(|(_, g)| g.awaits_finish())
            .map(|(id, _)| *id)
            .collect();
        let release: Vec<GraphId> = c
            .graphs
            .iter()
            .filter(|(_, g)| g.is_done())
            .map(|(id, _)| *id)
            .collect();
        for graph in release {
            self.client_send(client, ClientToScheduler::ReleaseGraph { graph }, None);
        }
        for graph in claim {
            self.crash_counts.claims += 1;
            self.note(What::Client(client, "claims again", Some(graph)));
            self.client_send(client, ClientToScheduler::LocateOutputs { graph }, None);
        }
        for model in lost {
            self.crash_counts.resubmits += 1;
            self.resubmit(client, model);
        }
        Ok(())
    }
}
