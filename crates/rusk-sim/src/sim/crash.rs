//! Scheduler crashes and restarts (`SimConfig::scheduler_crashes`): the scheduler process dies
//! and a new one resumes from its journal, as `rusk scheduler --journal` does.
//!
//! The journal is modelled as the shell writes it: one entry per loop turn that produced
//! records (a turn here is one `Scheduler::handle_into` plus `flush_journal`), written before
//! the turn's messages go out, durably (fsync) when any record `needs_sync()`. A crash
//! happens
//! - between turns: everything sent so far is on its way, nothing more comes;
//! - inside a turn, before its journal write: neither its records nor its messages exist;
//! - inside a turn, after its journal write: its records exist, its messages were never sent.
//!
//! Entries written without an fsync (turns that only moved results to memory) and not
//! followed by a durable one may be lost at a crash: a random number of the trailing ones is
//! dropped (all, none, or some). The new scheduler starts from `replay` of what is left (the
//! journal is then compacted into `Resume::to_records`, as the shell compacts it at start).
//!
//! Every connection to the dead scheduler is gone: what was in flight towards it is lost;
//! what it had sent before dying still arrives, then each peer notices the close. Workers
//! forget their queued work (`worker::Event::SchedulerLost`), keep running attempts and stored
//! results, and reconnect with back-off (100 ms doubling to 2 s, as the worker shell), each
//! registration naming the results they hold; incarnations stay unique over the whole run.
//! Nannies reconnect as they do after any lost link. Clients reconnect with back-off (100 ms
//! doubling to 1 s), claim their unfinished graphs with `LocateOutputs`, release again the
//! graphs they were done with (the release may have died with the scheduler), and submit
//! again what they never heard `Submitted` for (as a user would rerun `rusk submit`).
use super::{Ev, LifeId, LifeState, Sim};
use crate::error::FailureKind;
use crate::trace::What;
use rand::Rng;
use rusk_core::journal::{replay, Record};
use rusk_core::scheduler::{self, Scheduler, SchedulerConfig, SchedulerStats};
use rusk_core::worker;
use rusk_proto::msg::{ClientToScheduler, SchedulerToClient};
use rusk_proto::{ClientId, GraphId};
use std::time::Duration;

/// How long the scheduler stays down before its supervisor (systemd) has started it again.
const DOWN_MS_MIN: u64 = 20;
const DOWN_MS_MAX: u64 = 2_500;
/// Back-off of a worker reconnecting (the worker shell's `CONNECT_RETRY_MIN/MAX`).
const WORKER_RETRY_MIN: Duration = Duration::from_millis(100);
const WORKER_RETRY_MAX: Duration = Duration::from_secs(2);
/// Back-off of a client reconnecting (`rusk::client`'s `RECONNECT_DELAY_MIN/MAX`).
pub(crate) const CLIENT_RETRY_MIN: Duration = Duration::from_millis(100);
const CLIENT_RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a peer takes to notice that its connection closed.
const NOTICE_US_MIN: u64 = 500;
const NOTICE_US_MAX: u64 = 50_000;

/// Where in a turn the armed crash strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    BeforeWrite,
    AfterWrite,
}

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
    config: SchedulerConfig,
    /// When the scheduler last restarted.
    pub(crate) restarted_at: Option<Duration>,
    /// Statistics of the scheduler lives that ended.
    pub(crate) results_adopted: u64,
    pub(crate) stale_reports: u64,
}

impl CrashState {
    pub(crate) fn new(enabled: bool, config: SchedulerConfig) -> CrashState {
        CrashState {
            enabled,
            journal: Vec::new(),
            down: false,
            epoch: 0,
            armed: None,
            restarted_at: None,
            config,
            results_adopted: 0,
            stale_reports: 0,
        }
    }
}

/// Scheduler crashes injected in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashCounts {
    /// Crashes, by where they struck: between turns, before a turn's journal write, after it.
    pub between_turns: u32,
    pub before_write: u32,
    pub after_write: u32,
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
}

impl CrashCounts {
    pub fn crashes(&self) -> u32 {
        self.between_turns + self.before_write + self.after_write
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
        if !self.faults_active() || self.crash.down || self.crash.armed.is_some() {
            return Ok(());
        }
        match self.rng.gen_range(0..3) {
            0 => {
                self.crash_counts.between_turns += 1;
                self.crash_now("between turns");
            }
            1 => self.crash.armed = Some(CrashPoint::BeforeWrite),
            _ => self.crash.armed = Some(CrashPoint::AfterWrite),
        }
        Ok(())
    }

    /// The end of a scheduler turn: its journal records are written (durably if any needs
    /// it), unless the armed crash strikes first. `Err(())`: the scheduler died in this turn
    /// and `out` must not be carried out.
    pub(crate) fn end_turn(&mut self, out: &mut Vec<scheduler::Command>) -> Result<(), ()> {
        if !self.crash.enabled {
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
        // Healing (the liveness phase) disarms a crash that had not struck yet.
        let armed = self.crash.armed.take().filter(|_| self.faults_active());
        if armed == Some(CrashPoint::BeforeWrite) {
            self.crash_counts.before_write += 1;
            out.clear();
            self.crash_now("in a turn, before its journal write");
            return Err(());
        }
        if !records.is_empty() {
            let synced = records.iter().any(Record::needs_sync);
            self.crash.journal.push((records, synced));
        }
        if armed == Some(CrashPoint::AfterWrite) {
            self.crash_counts.after_write += 1;
            self.crash_in_turn(out, "in a turn, after its journal write");
            return Err(());
        }
        Ok(())
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
