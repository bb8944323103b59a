//! Worker processes: what the worker shell does around a `WorkerCore`.
//!
//! A *slot* is a named worker that something keeps restarting: either its host's nanny (a
//! `NannyCore`, see [`super::nanny`]) or, for slots without one, an outside supervisor that
//! starts a new process a while after the last one died. A *life* is one process of a slot,
//! with its own pid, a fresh core, its own data address (sometimes reusing the previous one,
//! as a restarted process reusing its port would) and its own connection to the scheduler.
//!
//! A process ends by crashing (the kernel closes its connection: the scheduler sees it leave,
//! the nanny's `wait()` sees the exit at once), by a signal from its nanny (SIGKILL at once;
//! SIGTERM shortly, or when it thaws if frozen), by vanishing with its host (nothing closes,
//! nothing answers), by dying with its nanny, or by a killer task. A process whose connection
//! to the scheduler broke, or was dropped by the scheduler, is still alive: it exits with
//! `EXIT_CONNECTION_LOST` as soon as it notices (when it thaws, if it is frozen), or, with a
//! `--scheduler-lost-timeout` (`SimConfig::worker_reconnect_share`), keeps its results and
//! running tasks and reconnects (see [`lives`]). A frozen life
//! pings nobody and keeps everything addressed to it in an inbox, handled in order when it
//! thaws; its task threads run on.
//!
//! The executor runs `Execute` commands on `nthreads` simulated task threads, queueing the
//! rest, tells the core when a job starts (`Started`), and reports exactly one `Finished` per
//! `Execute`: pure builtins through `rusk_core::builtins::run_pure`, `sleep_ms` after that much
//! virtual time, every job after a small random duration. A killer (`abort`) never finishes:
//! once its start has been told, the process dies. `Abandon` kills a queued job at once and a
//! running one sometimes (else it runs on, its thread replaced, and its result is ignored); a
//! killed job still reports (an error), as a killed child process would.
mod lives;

use super::{Ev, LifeId, Sim};
use crate::error::FailureKind;
use crate::trace::{Node, What};
use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rusk_core::builtins::run_pure;
use rusk_core::nanny::{self, ExitStatus, EXIT_CONNECTION_LOST};
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
/// How long an outside supervisor waits before restarting a dead worker.
const RESTART_MS_MIN: u64 = 50;
const RESTART_MS_MAX: u64 = 1_500;
/// How often a worker's event loop pings its nanny (`NANNY_PING_INTERVAL` of the shell).
pub(crate) const PING_INTERVAL: Duration = Duration::from_millis(200);
/// A job that runs on after `Abandon` ends (its result ignored) at most this long after it,
/// even a long `sleep_ms`: the worker core counts it as dispatched until then, which the real
/// shell's 64 dispatch slots per thread absorb but the simulator's 1 to 3 would turn into a
/// stall of the whole worker (a time-limited task sleeps 10 s).
const ABANDONED_RUN_ON_US_MAX: u64 = 200_000;
/// How long a running process takes to notice its connection is gone, or to die of SIGTERM.
const NOTICE_US_MAX: u64 = 5_000;
const TERM_US_MAX: u64 = 20_000;

pub(crate) struct Slot {
    pub(crate) life: Option<LifeId>,
    lives: u32,
    last_address: Option<Arc<str>>,
    /// Which nanny slot this is; `None`: an outside supervisor restarts it.
    pub(crate) sup: Option<Supervised>,
    /// An injected crash loop: until then, every worker started here dies during start-up
    /// (or cannot be started at all).
    pub(crate) crash_loop_until: Option<Duration>,
    /// The incarnations its workers joined as, oldest first.
    pub(crate) incarnations: Vec<Incarnation>,
    /// How long after the liveness phase began one of its workers first told its nanny it
    /// registered (zero if one was up then).
    pub(crate) recovered_after_heal: Option<Duration>,
}

/// A worker slot's place in its nanny.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Supervised {
    pub(crate) host: usize,
    pub(crate) index: u32,
}

impl Slot {
    pub(crate) fn new(sup: Option<Supervised>) -> Slot {
        Slot {
            life: None,
            lives: 0,
            last_address: None,
            sup,
            crash_loop_until: None,
            incarnations: Vec::new(),
            recovered_after_heal: None,
        }
    }
}

/// How a life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// The process died on its own (a signal, a panic); the kernel closed its connections.
    Crash,
    /// The host vanished: nothing is closed, nothing answers.
    Silent,
    /// Its connection to the scheduler broke (a lost packet, a partition): it exited.
    LinkBroke,
    /// The scheduler dropped it (`DropWorker`), for example after a freeze longer than the
    /// TTL: it exited when it noticed.
    Dropped,
    /// SIGKILL from its nanny.
    Killed,
    /// SIGTERM from its nanny.
    Terminated,
    /// A killer task it started aborted it.
    Aborted,
    /// It died during start-up (an injected crash loop).
    StartupCrash,
    /// Its nanny died (`PR_SET_PDEATHSIG`).
    NannyGone,
}

impl Death {
    /// What `wait()` tells the nanny, if anyone is left to tell.
    fn exit_status(self, rng: &mut ChaCha8Rng) -> Option<ExitStatus> {
        let signal = |s| ExitStatus {
            code: None,
            signal: Some(s),
        };
        let code = |c| ExitStatus {
            code: Some(c),
            signal: None,
        };
        Some(match self {
            Death::Crash => match rng.gen_range(0..3) {
                0 => signal(11),
                1 => signal(9),
                _ => code(101), // a Rust panic
            },
            Death::Silent | Death::NannyGone => return None,
            Death::LinkBroke | Death::Dropped => code(EXIT_CONNECTION_LOST),
            Death::Killed => signal(9),
            Death::Terminated => signal(15),
            Death::Aborted => signal(6),
            Death::StartupCrash => code(1),
        })
    }
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
    pub(crate) pid: u32,
    /// The nanny process that started it; `None`: an outside supervisor did.
    pub(crate) parent: Option<usize>,
    pub(crate) state: LifeState,
    pub(crate) core: Option<WorkerCore>,
    /// Events that reached this life while it was frozen, in arrival order.
    pub(crate) inbox: VecDeque<Ev>,
    tick_at: Option<Duration>,
    threads: u32,
    pub(crate) threads_busy: u32,
    exec_queue: VecDeque<u64>,
    /// It exits as soon as it thaws (it lost its connection, or got SIGTERM, while frozen).
    exit_on_thaw: Option<Death>,
    /// Its connections to the scheduler so far, minus one: packets carry it, so that an
    /// earlier connection's never reach a later one.
    pub(crate) link: u32,
    /// Lost its scheduler connection while frozen: it reconnects when it thaws.
    lost_on_thaw: bool,
    ping_at: Option<Duration>,
    /// When its event loop last pinged its nanny, and the time before.
    pub(crate) last_ping: Duration,
    pub(crate) prev_ping: Duration,
    pub(crate) told_registered: bool,
    // The connection to the scheduler:
    pub(crate) incarnation: Option<Incarnation>,
    /// Every incarnation it registered as (more than one after scheduler restarts).
    pub(crate) incarnations: Vec<Incarnation>,
    /// The first and the latest incarnation it told its nanny.
    pub(crate) first_told: Option<Incarnation>,
    pub(crate) last_told: Option<Incarnation>,
    pub(crate) link_open: bool,
    /// After the link closed, packets already sent still reach the scheduler.
    pub(crate) flush_to_sched: bool,
    pub(crate) last_to_sched: Duration,
    pub(crate) last_to_worker: Duration,
    /// The scheduler has been told this link is gone, or dropped it itself.
    pub(crate) sched_forgot: bool,
    /// The scheduler crashed: what it sent before still arrives, then the worker notices.
    pub(crate) draining: bool,
    /// The scheduler life (`CrashState::epoch`) its connection is to.
    pub(crate) sched_epoch: u64,
    /// Back-off of its next attempt to reconnect to a restarted scheduler.
    pub(crate) retry: Duration,
}

impl Life {
    pub(crate) fn node(&self) -> Node {
        Node::Worker {
            slot: self.slot,
            life: self.number,
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        matches!(self.state, LifeState::Running | LifeState::Frozen)
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
    /// When it finishes, once started.
    ends_at: Duration,
    /// Bumped when the job is killed; completions with an older token are void.
    token: u32,
    started: bool,
    holds_thread: bool,
    /// An `abort`: once started (and told), it kills its process.
    killer: bool,
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
        self.tell_nanny_registered(life);
        self.reschedule_worker_tick(life);
        Ok(())
    }

    pub(crate) fn carry_out_worker(
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
                } => {
                    let inputs = inputs.into_iter().map(in_memory).collect();
                    self.on_execute(life, task, attempt, &kind, inputs)?
                }
                worker::Command::Abandon { task, attempt } => self.on_abandon(life, task, attempt),
                worker::Command::ReplyPeer { request, items } => {
                    let items = items
                        .into_iter()
                        .map(|(t, v)| (t, v.map(in_memory)))
                        .collect();
                    self.reply_fetch(request, items)
                }
                worker::Command::Store(c) => unreachable!("no memory limit, no spill: {c:?}"),
                // The simulated executors import nothing.
                worker::Command::WriteUpload { .. } => {}
            }
        }
        if !to_sched.is_empty() {
            self.send_to_sched(life, to_sched);
        }
        Ok(())
    }

    /// A supervised worker tells its nanny, over its private socket, as soon as the
    /// scheduler's `Welcome` gave it an incarnation.
    fn tell_nanny_registered(&mut self, life: LifeId) {
        let l = &self.lives[life];
        let (Some(parent), false, Some(core)) = (l.parent, l.told_registered, l.core.as_ref())
        else {
            return;
        };
        let Some(incarnation) = core.incarnation() else {
            return;
        };
        let (slot, pid) = (self.sup_index(l.slot), l.pid);
        self.lives[life].told_registered = true;
        self.lives[life].first_told.get_or_insert(incarnation);
        self.lives[life].last_told = Some(incarnation);
        self.push(
            self.now,
            Ev::NannyEvent {
                nanny: parent,
                ev: nanny::Event::Registered {
                    slot,
                    pid,
                    incarnation,
                },
            },
        );
    }

    /// The slot's index in its nanny.
    pub(crate) fn sup_index(&self, slot: u32) -> u32 {
        self.slots[slot as usize]
            .sup
            .expect("only supervised slots talk to a nanny")
            .index
    }

    pub(crate) fn reschedule_worker_tick(&mut self, life: LifeId) {
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

    fn schedule_ping(&mut self, life: LifeId, at: Duration) {
        let l = &mut self.lives[life];
        if l.parent.is_some() && l.state == LifeState::Running && l.ping_at.is_none() {
            l.ping_at = Some(at);
            self.push(at, Ev::WorkerPing { life, due: at });
        }
    }

    /// The event loop pings its nanny; a frozen one does not (it pings again when it thaws).
    pub(crate) fn on_worker_ping(&mut self, life: LifeId, due: Duration) {
        let now = self.now;
        let l = &mut self.lives[life];
        if l.ping_at != Some(due) {
            return;
        }
        l.ping_at = None;
        if l.state != LifeState::Running {
            return;
        }
        l.prev_ping = l.last_ping;
        l.last_ping = now;
        let (parent, slot, pid) = (l.parent, l.slot, l.pid);
        if let Some(nanny) = parent {
            let slot = self.sup_index(slot);
            self.push(
                now,
                Ev::NannyEvent {
                    nanny,
                    ev: nanny::Event::Ping { slot, pid },
                },
            );
        }
        self.schedule_ping(life, now + PING_INTERVAL);
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
        let killer = matches!(
            kind,
            TaskKind::Builtin {
                op: Builtin::Abort,
                ..
            }
        );
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
                ends_at: Duration::MAX,
                token: 0,
                started: false,
                holds_thread: false,
                killer,
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
            detail: None,
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
                // Never reported: the process dies when it starts.
                None if *op == Builtin::Abort => (Err(err("aborted")), Duration::ZERO),
                None => (Err(err("builtin not simulated")), Duration::ZERO),
            },
            // The worker stores its one input under the adopt task (no copy).
            TaskKind::Adopt { .. } => match inputs.first() {
                Some(v) => (Ok(v.clone()), Duration::ZERO),
                None => (Err(err("an adopt task got no input")), Duration::ZERO),
            },
            TaskKind::Cmd { .. } | TaskKind::Python { .. } | TaskKind::Put { .. } => {
                (Err(err("commands are not simulated")), Duration::ZERO)
            }
        }
    }

    /// Hand queued jobs to free threads. Each tells the event loop it started (the core then
    /// reports `TaskStarted`) before it finishes.
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
            job.ends_at = self.now + job.run_for;
            let (at, token, killer) = (job.ends_at, job.token, job.killer);
            self.push(
                self.now,
                Ev::JobStarted {
                    life,
                    job: id,
                    token,
                },
            );
            if !killer {
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
    }

    /// A task thread tells the event loop that a job began (`worker::Event::Started`). A
    /// killer then aborts the process, as the shell's does once that report is on its way.
    pub(crate) fn on_job_started(
        &mut self,
        life: LifeId,
        job: u64,
        token: u32,
    ) -> Result<(), FailureKind> {
        let Some(j) = self.exec.jobs.get(&job).filter(|j| j.token == token) else {
            return Ok(());
        };
        if self.lives[life].state != LifeState::Running {
            return Ok(());
        }
        let (task, attempt, killer) = (j.task, j.attempt, j.killer);
        self.oracle.executor_started(task, attempt)?;
        self.worker_handle(life, vec![worker::Event::Started { task, attempt }])?;
        if killer {
            self.push(self.now, Ev::KillerFires { life, job });
        }
        Ok(())
    }

    pub(crate) fn on_killer_fires(&mut self, life: LifeId, job: u64) -> Result<(), FailureKind> {
        let Some(j) = self.exec.jobs.get(&job) else {
            return Ok(());
        };
        if !self.lives[life].is_alive() {
            return Ok(());
        }
        self.counts.aborts += 1;
        let (on, task, attempt) = (self.lives[life].node(), j.task, j.attempt);
        self.note(What::Exec {
            on,
            task,
            attempt,
            what: "aborts its process",
        });
        self.kill_life(life, Death::Aborted);
        self.oracle.killed_worker(task, attempt)
    }

    fn on_abandon(&mut self, life: LifeId, task: TaskRef, attempt: AttemptId) {
        let found = self
            .exec
            .jobs
            .iter()
            .find(|(_, j)| j.life == life && j.task == task && j.attempt == attempt)
            .map(|(id, j)| (*id, j.started, j.killer));
        let Some((id, started, killer)) = found else {
            return; // already finished
        };
        if started && killer {
            return; // it aborts the process whatever happens
        }
        let kill = !started || self.rng.gen_bool(0.5);
        if !kill {
            // It runs on (a while at most) and its result will be ignored; a new thread takes
            // its place.
            let run_on = Duration::from_micros(self.rng.gen_range(0..=ABANDONED_RUN_ON_US_MAX));
            let job = self.exec.jobs.get_mut(&id).expect("found above");
            job.token += 1;
            job.ends_at = job.ends_at.min(self.now + run_on);
            let (at, token) = (job.ends_at, job.token);
            self.push(
                at,
                Ev::ExecDone {
                    life,
                    job: id,
                    token,
                },
            );
            let job = self.exec.jobs.get_mut(&id).expect("found above");
            if job.holds_thread {
                job.holds_thread = false;
                self.lives[life].threads_busy -= 1;
                self.start_jobs(life);
            }
            return;
        }
        if !started {
            self.lives[life].exec_queue.retain(|&j| j != id);
        }
        let job = self.exec.jobs.get_mut(&id).expect("found above");
        job.token += 1;
        job.result = Err(TaskError {
            message: "killed: attempt abandoned".into(),
            exit_code: Some(-9),
            detail: None,
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
}

/// A value of a simulated worker: always in memory (it has no memory limit).
fn in_memory(v: rusk_core::memory::Value) -> Bytes {
    v.into_memory()
        .expect("the simulated workers have no memory limit, so nothing is spilled")
}
