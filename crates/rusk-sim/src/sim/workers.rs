//! Worker processes: what the worker shell does around a `WorkerCore`.
//!
//! A *slot* is a named worker that a supervisor keeps restarting; a *life* is one process of
//! it, with a fresh core, its own data address (sometimes reusing the previous one, as a
//! restarted process reusing its port would) and its own connection to the scheduler. A life
//! ends by crashing (the scheduler sees the connection close), vanishing silently (only the
//! TTL notices), losing its connection, or being dropped by the scheduler; a frozen life keeps
//! everything addressed to it in an inbox and handles it in order when it thaws.
//!
//! The executor runs `Execute` commands on `nthreads` simulated task threads, queueing the
//! rest, and reports exactly one `Finished` per `Execute`: pure builtins through
//! `rusk_core::builtins::run_pure`, `sleep_ms` after that much virtual time, every job after a
//! small random duration. `Abandon` kills a queued job at once and a running one sometimes;
//! a killed job still reports (an error), as a killed child process would.
use super::{Ev, LifeId, Sim};
use crate::error::FailureKind;
use crate::trace::{Node, What};
use bytes::Bytes;
use rand::Rng;
use rusk_core::builtins::run_pure;
use rusk_core::worker::{self, WorkerConfig, WorkerCore};
use rusk_proto::graph::{Builtin, TaskKind};
use rusk_proto::msg::{TaskError, WorkerInfo};
use rusk_proto::{AttemptId, Incarnation, TaskRef};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Virtual run time of a job, on top of any `sleep_ms`.
const JOB_US_MIN: u64 = 500;
const JOB_US_MAX: u64 = 15_000;
/// How long a supervisor waits before restarting a dead worker.
const RESTART_MS_MIN: u64 = 50;
const RESTART_MS_MAX: u64 = 1_500;

#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) life: Option<LifeId>,
    lives: u32,
    last_address: Option<Arc<str>>,
}

/// How a life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// The process died; the kernel closed its connections (the scheduler sees `WorkerLeft`).
    Crash,
    /// The host vanished: nothing is closed, nothing answers.
    Silent,
    /// A packet was lost, so the connection broke and the process restarted.
    LinkBroke,
    /// The scheduler dropped it (`DropWorker`), for example after a freeze longer than the TTL.
    Dropped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LifeState {
    Running,
    Frozen,
    Gone(Death),
}

pub(crate) struct Life {
    pub(crate) slot: u32,
    number: u32,
    pub(crate) state: LifeState,
    pub(crate) core: Option<WorkerCore>,
    /// Events that reached this life while it was frozen, in arrival order.
    pub(crate) inbox: VecDeque<Ev>,
    tick_at: Option<Duration>,
    threads: u32,
    pub(crate) threads_busy: u32,
    exec_queue: VecDeque<u64>,
    // The connection to the scheduler:
    pub(crate) incarnation: Option<Incarnation>,
    pub(crate) link_open: bool,
    /// After the link closed, packets already sent still reach the scheduler.
    pub(crate) flush_to_sched: bool,
    pub(crate) last_to_sched: Duration,
    pub(crate) last_to_worker: Duration,
    /// The scheduler has been told this link is gone, or dropped it itself.
    pub(crate) sched_forgot: bool,
}

impl Life {
    pub(crate) fn node(&self) -> Node {
        Node::Worker {
            slot: self.slot,
            life: self.number,
        }
    }
}

/// Jobs handed to executors whose `Finished` has not been delivered.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: BTreeMap<u64, Job>,
    next: u64,
}

struct Job {
    life: LifeId,
    task: TaskRef,
    attempt: AttemptId,
    result: Result<Bytes, TaskError>,
    run_for: Duration,
    /// Bumped when the job is killed; completions with an older token are void.
    token: u32,
    started: bool,
    holds_thread: bool,
}

impl Sim {
    /// Feed events to a life's core (checking its invariants after each), then carry out what
    /// it asked for. Events for a life that is gone are lost, as they would be.
    pub(crate) fn worker_handle(
        &mut self,
        life: LifeId,
        events: Vec<worker::Event>,
    ) -> Result<(), FailureKind> {
        let now = self.now;
        let Some(core) = self.lives[life].core.as_mut() else {
            return Ok(());
        };
        let mut out = Vec::new();
        for ev in events {
            core.handle_into(now, ev, &mut out);
            core.check_invariants();
        }
        core.flush(&mut out);
        self.carry_out_worker(life, out)?;
        self.reschedule_worker_tick(life);
        Ok(())
    }

    fn carry_out_worker(
        &mut self,
        life: LifeId,
        out: Vec<worker::Command>,
    ) -> Result<(), FailureKind> {
        let mut to_sched = Vec::new();
        for cmd in out {
            match cmd {
                worker::Command::ToScheduler(m) => to_sched.push(m),
                worker::Command::Fetch { peer, tasks } => {
                    self.start_fetch(super::net::Requester::Worker(life), peer, tasks)
                }
                worker::Command::Execute {
                    task,
                    attempt,
                    kind,
                    inputs,
                } => self.on_execute(life, task, attempt, &kind, inputs)?,
                worker::Command::Abandon { task, attempt } => self.on_abandon(life, task, attempt),
                worker::Command::ReplyPeer { request, items } => self.reply_fetch(request, items),
            }
        }
        if !to_sched.is_empty() {
            self.send_to_sched(life, to_sched);
        }
        Ok(())
    }

    fn reschedule_worker_tick(&mut self, life: LifeId) {
        let now = self.now;
        let l = &mut self.lives[life];
        let (LifeState::Running, Some(core)) = (l.state, l.core.as_ref()) else {
            return;
        };
        let next = core.next_timeout().max(now);
        if l.tick_at != Some(next) {
            l.tick_at = Some(next);
            self.push(next, Ev::WorkerTick { life, due: next });
        }
    }

    pub(crate) fn on_worker_tick(
        &mut self,
        life: LifeId,
        due: Duration,
    ) -> Result<(), FailureKind> {
        let l = &mut self.lives[life];
        if l.state != LifeState::Running || l.tick_at != Some(due) {
            return Ok(());
        }
        l.tick_at = None;
        let node = l.node();
        self.note(What::WorkerTick(node));
        self.worker_handle(life, vec![worker::Event::Tick])
    }

    // === executor ===

    fn on_execute(
        &mut self,
        life: LifeId,
        task: TaskRef,
        attempt: AttemptId,
        kind: &TaskKind,
        inputs: Vec<Bytes>,
    ) -> Result<(), FailureKind> {
        self.oracle.on_execute(task, &inputs, &self.models)?;
        let (result, extra) = self.compute(task, kind, &inputs);
        let run_for = Duration::from_micros(self.rng.gen_range(JOB_US_MIN..=JOB_US_MAX)) + extra;
        let id = self.exec.next;
        self.exec.next += 1;
        self.exec.jobs.insert(
            id,
            Job {
                life,
                task,
                attempt,
                result,
                run_for,
                token: 0,
                started: false,
                holds_thread: false,
            },
        );
        self.lives[life].exec_queue.push_back(id);
        self.start_jobs(life);
        Ok(())
    }

    /// What a task computes, and how long it sleeps. Flaky tasks fail their first runs.
    fn compute(
        &mut self,
        task: TaskRef,
        kind: &TaskKind,
        inputs: &[Bytes],
    ) -> (Result<Bytes, TaskError>, Duration) {
        let err = |message: &str| TaskError {
            message: message.to_string(),
            exit_code: None,
        };
        if let Some(m) = self.oracle.model_of(task.graph) {
            if let Some(&mt) = self.models[m].model_of.get(task.index as usize) {
                let left = &mut self.flaky_left[m][mt];
                if *left > 0 {
                    *left -= 1;
                    return (
                        Err(err("flaky failure injected by the simulator")),
                        Duration::ZERO,
                    );
                }
            }
        }
        match kind {
            TaskKind::Builtin { op, args } => match run_pure(*op, args, inputs) {
                Some(r) => (r, Duration::ZERO),
                None if *op == Builtin::SleepMs => {
                    let ms = args
                        .first()
                        .and_then(|a| a.parse::<u64>().ok())
                        .unwrap_or(0);
                    (Ok(Bytes::new()), Duration::from_millis(ms))
                }
                None => (Err(err("builtin not simulated")), Duration::ZERO),
            },
            TaskKind::Cmd { .. } => (Err(err("commands are not simulated")), Duration::ZERO),
        }
    }

    fn start_jobs(&mut self, life: LifeId) {
        loop {
            let l = &mut self.lives[life];
            if l.threads_busy >= l.threads {
                return;
            }
            let Some(id) = l.exec_queue.pop_front() else {
                return;
            };
            l.threads_busy += 1;
            let job = self.exec.jobs.get_mut(&id).expect("queued jobs exist");
            job.started = true;
            job.holds_thread = true;
            let (at, token) = (self.now + job.run_for, job.token);
            self.push(
                at,
                Ev::ExecDone {
                    life,
                    job: id,
                    token,
                },
            );
        }
    }

    fn on_abandon(&mut self, life: LifeId, task: TaskRef, attempt: AttemptId) {
        let found = self
            .exec
            .jobs
            .iter()
            .find(|(_, j)| j.life == life && j.task == task && j.attempt == attempt)
            .map(|(id, j)| (*id, j.started));
        let Some((id, started)) = found else {
            return; // already finished
        };
        let kill = !started || self.rng.gen_bool(0.5);
        if !kill {
            return; // it runs on; its result will be ignored
        }
        if !started {
            self.lives[life].exec_queue.retain(|&j| j != id);
        }
        let job = self.exec.jobs.get_mut(&id).expect("found above");
        job.token += 1;
        job.result = Err(TaskError {
            message: "killed: attempt abandoned".into(),
            exit_code: Some(-9),
        });
        let token = job.token;
        let at = self.now + Duration::from_micros(self.rng.gen_range(0..=2_000));
        self.push(
            at,
            Ev::ExecDone {
                life,
                job: id,
                token,
            },
        );
    }

    pub(crate) fn on_exec_done(
        &mut self,
        life: LifeId,
        job: u64,
        token: u32,
    ) -> Result<(), FailureKind> {
        if self.exec.jobs.get(&job).is_none_or(|j| j.token != token) {
            return Ok(());
        }
        let j = self.exec.jobs.remove(&job).expect("checked");
        let l = &mut self.lives[life];
        if l.state != LifeState::Running {
            return Ok(());
        }
        if j.holds_thread {
            l.threads_busy -= 1;
        }
        let on = l.node();
        self.note(What::Exec {
            on,
            task: j.task,
            attempt: j.attempt,
            what: if j.result.is_ok() {
                "finished"
            } else {
                "failed"
            },
        });
        self.worker_handle(
            life,
            vec![worker::Event::Finished {
                task: j.task,
                attempt: j.attempt,
                result: j.result,
            }],
        )?;
        self.start_jobs(life);
        Ok(())
    }

    // === lives ===

    /// A supervisor (re)starts `slot`: a new process with a new core connects and registers.
    pub(crate) fn on_restart(&mut self, slot: u32) -> Result<(), FailureKind> {
        let s = &mut self.slots[slot as usize];
        if s.life.is_some() {
            return Ok(());
        }
        let number = s.lives;
        s.lives += 1;
        let reuse = s.last_address.clone().filter(|_| self.rng.gen_bool(0.4));
        let address = reuse.unwrap_or_else(|| Arc::from(format!("w{slot}:{}", 7000 + number)));
        let threads = self.rng.gen_range(1..=self.config.threads_max.max(1));
        let info = WorkerInfo {
            name: format!("w{slot}"),
            host: format!("host{slot}"),
            pid: 1000 + number,
            nthreads: threads,
            data_address: address.to_string(),
            nanny: None,
            slot: None,
        };
        let mut core = WorkerCore::new(WorkerConfig {
            info,
            dispatched_per_thread_max: self.rng.gen_range(1..=3),
            heartbeat_interval: self.config.heartbeat_interval,
        });
        let start = core.start(self.now);
        let life = self.lives.len();
        self.lives.push(Life {
            slot,
            number,
            state: LifeState::Running,
            core: Some(core),
            inbox: VecDeque::new(),
            tick_at: None,
            threads,
            threads_busy: 0,
            exec_queue: VecDeque::new(),
            incarnation: None,
            link_open: true,
            flush_to_sched: false,
            last_to_sched: Duration::ZERO,
            last_to_worker: Duration::ZERO,
            sched_forgot: false,
        });
        let s = &mut self.slots[slot as usize];
        s.life = Some(life);
        s.last_address = Some(address.clone());
        self.addresses.insert(address.clone(), life);
        self.counts.restarts += 1;
        let node = self.lives[life].node();
        self.note(What::Note(format!(
            "{node} starts at {address} with {threads} threads"
        )));
        self.carry_out_worker(life, start)?;
        self.reschedule_worker_tick(life);
        Ok(())
    }

    /// End a life. Depending on how, the scheduler's end of the link closes now, later, or
    /// never; the supervisor restarts the slot after a while.
    pub(crate) fn kill_life(&mut self, life: LifeId, death: Death) {
        let l = &mut self.lives[life];
        if matches!(l.state, LifeState::Gone(_)) {
            return;
        }
        l.link_open = false;
        let close_delay = Duration::from_micros(self.rng.gen_range(1_000..=50_000));
        let l = &mut self.lives[life];
        match death {
            Death::Crash => {
                // The kernel flushes what was sent, then closes.
                l.flush_to_sched = true;
                let at = (self.now + close_delay).max(l.last_to_sched);
                self.push(
                    at,
                    Ev::LinkClosed {
                        life,
                        reason: "connection reset (process died)",
                    },
                );
            }
            Death::Silent => l.flush_to_sched = false,
            Death::LinkBroke => {
                l.flush_to_sched = false;
                self.push(
                    self.now + close_delay,
                    Ev::LinkClosed {
                        life,
                        reason: "connection broke",
                    },
                );
            }
            Death::Dropped => {
                l.flush_to_sched = self.rng.gen_bool(self.config.late_delivery_after_drop);
            }
        }
        let l = &mut self.lives[life];
        l.state = LifeState::Gone(death);
        l.core = None;
        l.inbox.clear();
        l.tick_at = None;
        l.exec_queue.clear();
        l.threads_busy = 0;
        let (node, slot) = (l.node(), l.slot);
        self.exec.jobs.retain(|_, j| j.life != life);
        if self.slots[slot as usize].life == Some(life) {
            self.slots[slot as usize].life = None;
        }
        self.note(What::Note(format!("{node} is gone: {death:?}")));
        let at =
            self.now + Duration::from_millis(self.rng.gen_range(RESTART_MS_MIN..=RESTART_MS_MAX));
        self.push(at, Ev::Restart { slot });
    }

    /// The scheduler said `DropWorker`: close the connection; the process (frozen or not)
    /// notices and is replaced.
    pub(crate) fn on_drop_worker(&mut self, life: LifeId) {
        self.lives[life].sched_forgot = true;
        if self.lives[life].link_open {
            self.kill_life(life, Death::Dropped);
        }
    }

    pub(crate) fn freeze_life(&mut self, life: LifeId, d: Duration) {
        let l = &mut self.lives[life];
        if l.state != LifeState::Running {
            return;
        }
        l.state = LifeState::Frozen;
        l.tick_at = None;
        let node = l.node();
        self.counts.freezes += 1;
        self.note(What::Note(format!("{node} freezes for {d:?}")));
        self.push(self.now + d, Ev::Thaw { life });
    }

    /// A frozen life resumes: it handles everything that reached it, in order.
    pub(crate) fn thaw(&mut self, life: LifeId) -> Result<(), FailureKind> {
        let l = &mut self.lives[life];
        if l.state != LifeState::Frozen {
            return Ok(());
        }
        l.state = LifeState::Running;
        let inbox = std::mem::take(&mut l.inbox);
        let node = l.node();
        self.note(What::Note(format!(
            "{node} thaws with {} queued events",
            inbox.len()
        )));
        for ev in inbox {
            self.dispatch(ev)?;
        }
        self.reschedule_worker_tick(life);
        Ok(())
    }
}
