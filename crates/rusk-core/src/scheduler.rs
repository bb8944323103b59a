//! The scheduler as a pure state machine.
//!
//! `Scheduler::handle(now, event)` is the only entry point that changes state; it returns the
//! commands the I/O shell must carry out (messages to send, connections to drop). There is no
//! clock, no socket and no randomness in here, so the same inputs always give the same outputs:
//! unit tests assert exact commands and the simulator (`rusk-sim`) replays seeds.
//!
//! Task life cycle, as seen by the scheduler:
//!
//! ```text
//!            deps done            placed               TaskDone (current attempt)
//! Waiting ───────────▶ Ready ──────────▶ Assigned ─────────────────────▶ Memory
//!    ▲  ▲                ▲                  │ worker lost (uncharged)       │ not needed
//!    │  └────────────────┴──────────────────┘ / own failure with retries    ▼
//!    │                                                                   Released
//!    └──── result lost (holder died) and still needed: recompute ◀──────────┘
//! any unfinished state ──own failure, no retries left / dependency erred──▶ Erred
//! ```
//!
//! Fencing: every assignment gets a fresh [`AttemptId`]; only a report for the current attempt,
//! from the incarnation it was given to, moves a task. So a result is accepted exactly once.
use crate::graph::{compile, CompiledGraph};
use rusk_proto::graph::TaskKind;
use rusk_proto::msg::{
    Assignment, ClientToScheduler, DepLocation, EventRecord, GraphProgress, HeartbeatInfo,
    NannyInfo, NannyRecord, NannyStatus, NannyToScheduler, OutputResult, OutputState,
    RestartTarget, SchedulerToClient, SchedulerToNanny, SchedulerToWorker, SlotReport,
    StatusSnapshot, TaskError, WorkerInfo, WorkerStatus, WorkerToScheduler,
};
use rusk_proto::{AttemptId, ClientId, GraphId, Incarnation, NannyId, TaskRef};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Tunables of the scheduler core. Defaults are documented in `docs/fault-model.md`.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// A worker silent for this long is declared lost.
    pub worker_ttl: Duration,
    /// How often workers must send a heartbeat (told to each worker on registration).
    pub heartbeat_interval: Duration,
    /// Tasks the scheduler keeps assigned to a worker per thread: enough to hide the round trip
    /// at high task rates, few enough that a lost worker gives back little queued work.
    pub assigned_per_thread_max: u32,
    /// How often progress reports go to clients.
    pub progress_interval: Duration,
    /// Finished detached graphs kept (with their outputs) before the oldest is released.
    pub detached_graphs_max: usize,
    /// A task whose attempts were running on this many workers that died is a poison task:
    /// it fails instead of taking more workers down.
    pub task_max_worker_deaths: u32,
    /// Recovery events kept for `rusk events` (oldest dropped first).
    pub events_retained_max: usize,
    /// Wall-clock time (Unix ms) at which the shell's `now` was zero, to date events.
    pub epoch_unix_ms: u64,
    /// Host name of the scheduler, for its own events.
    pub host: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            worker_ttl: Duration::from_secs(3),
            heartbeat_interval: Duration::from_millis(500),
            assigned_per_thread_max: 512,
            progress_interval: Duration::from_millis(200),
            detached_graphs_max: 64,
            task_max_worker_deaths: 3,
            events_retained_max: 10_000,
            epoch_unix_ms: 0,
            host: String::new(),
        }
    }
}

/// Inputs of the scheduler.
#[derive(Clone, Debug)]
pub enum Event {
    /// A worker authenticated and sent `Register`. The shell allocates the incarnation
    /// (strictly increasing, never reused).
    WorkerJoined {
        incarnation: Incarnation,
        info: WorkerInfo,
    },
    WorkerMessage {
        incarnation: Incarnation,
        msg: WorkerToScheduler,
    },
    /// The worker's connection closed (or failed).
    WorkerLeft {
        incarnation: Incarnation,
        reason: String,
    },
    ClientJoined {
        client: ClientId,
    },
    ClientMessage {
        client: ClientId,
        msg: ClientToScheduler,
    },
    ClientLeft {
        client: ClientId,
    },
    /// A nanny authenticated and sent `Register`.
    NannyJoined {
        nanny: NannyId,
        info: NannyInfo,
    },
    NannyMessage {
        nanny: NannyId,
        msg: NannyToScheduler,
    },
    /// The nanny's connection closed.
    NannyLeft {
        nanny: NannyId,
        reason: String,
    },
    /// The shell's own loop ran late by this much (the host or the scheduler process was
    /// stalled): that time is not held against the workers, whose messages could not be read
    /// meanwhile. Sent before the events of the late turn.
    LoopLag(Duration),
    /// Time passed; the shell sends this at `next_timeout()`.
    Tick,
}

/// Loop lag shorter than this is ordinary scheduling noise, not discounted.
pub const LOOP_LAG_DISCOUNT_MIN: Duration = Duration::from_millis(100);

/// Outputs of the scheduler.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    ToWorker {
        incarnation: Incarnation,
        msg: SchedulerToWorker,
    },
    ToClient {
        client: ClientId,
        msg: SchedulerToClient,
    },
    /// Close this worker's connection: the scheduler has already forgotten it.
    DropWorker {
        incarnation: Incarnation,
        cause: LossCause,
    },
    ToNanny {
        nanny: NannyId,
        msg: SchedulerToNanny,
    },
    /// A worker was lost and its work recovered (typed summary, for tests and metrics).
    Recovery(RecoveryNote),
    /// A new entry of the recovery log; the shell logs it.
    Log(EventRecord),
}

/// Why the scheduler considers a worker gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LossCause {
    ConnectionClosed(String),
    HeartbeatTimeout { silent_for: Duration },
}

impl LossCause {
    /// Short name for the event log.
    pub fn kind(&self) -> &'static str {
        match self {
            LossCause::ConnectionClosed(_) => "connection",
            LossCause::HeartbeatTimeout { .. } => "heartbeat",
        }
    }
}

impl std::fmt::Display for LossCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossCause::ConnectionClosed(r) => write!(f, "connection closed ({r})"),
            LossCause::HeartbeatTimeout { silent_for } => {
                write!(f, "no heartbeat for {} ms", silent_for.as_millis())
            }
        }
    }
}

/// A recovery action and its cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryNote {
    pub worker: String,
    pub incarnation: Incarnation,
    pub cause: LossCause,
    pub rescheduled: u64,
    pub results_lost: u64,
    pub recomputing: u64,
}

/// Where a task is in its life (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskState {
    Waiting,
    Ready,
    Assigned { worker: Incarnation },
    Memory { holder: Incarnation, size: u64 },
    Released,
    Erred,
}

impl TaskState {
    /// "Unfinished" tasks still need their dependencies' results.
    fn is_unfinished(self) -> bool {
        matches!(
            self,
            TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. }
        )
    }
    fn slot(self) -> usize {
        match self {
            TaskState::Waiting => 0,
            TaskState::Ready => 1,
            TaskState::Assigned { .. } => 2,
            TaskState::Memory { .. } => 3,
            TaskState::Released => 4,
            TaskState::Erred => 5,
        }
    }
}

const STATE_NAMES: [&str; 6] = [
    "waiting", "ready", "assigned", "memory", "released", "erred",
];

struct Task {
    key: Box<str>,
    kind: Arc<TaskKind>,
    deps: Box<[u32]>,
    /// Grows when a session graph is extended.
    dependents: Vec<u32>,
    state: TaskState,
    /// Dependencies not in memory (meaningful while unfinished).
    missing: u32,
    /// Dependents in an unfinished state: while > 0 this task's result is needed.
    unfinished_dependents: u32,
    retries_left: u32,
    attempt: AttemptId,
    is_output: bool,
    /// Present in the ready queue (entries are removed lazily).
    queued: bool,
    /// The current attempt reported `TaskStarted` (it was executing, not just queued).
    started: bool,
    /// Workers that died while an attempt of this task was executing.
    worker_deaths: u32,
    /// Time limit of one attempt in milliseconds (0: none).
    timeout_ms: u32,
}

struct Graph {
    tasks: Vec<Task>,
    outputs: Vec<u32>,
    owner: Option<ClientId>,
    /// Outputs neither in memory nor erred.
    outputs_pending: u32,
    /// Send `GraphFinished` to the owner when `outputs_pending` reaches 0.
    notify_finished: bool,
    errors: FxHashMap<u32, Failure>,
    /// A session graph (`Open`/`Extend`): outputs are reported one by one as they finish.
    session: bool,
    /// Keys of a session graph, to resolve the dependencies of later `Extend`s.
    keys: FxHashMap<Box<str>, u32>,
    /// Session outputs finished since they were last reported.
    newly_done: Vec<u32>,
    done: u64,
    erred: u64,
    /// Tasks in `Assigned` (running or queued on a worker), kept by `set_state`.
    assigned: u64,
    progress_dirty: bool,
}

/// Why a task failed, as reported to the client.
#[derive(Clone, Debug)]
struct Failure {
    message: Arc<str>,
    /// Opaque details from the failed task (a Python exception), passed on unchanged.
    detail: Option<bytes::Bytes>,
}

impl Failure {
    fn new(message: impl Into<Arc<str>>) -> Failure {
        Failure {
            message: message.into(),
            detail: None,
        }
    }
}

struct Worker {
    info: WorkerInfo,
    address: Arc<str>,
    last_seen: Duration,
    assigned: FxHashSet<TaskRef>,
    holds: FxHashSet<TaskRef>,
    heartbeat: HeartbeatInfo,
}

impl Worker {
    /// May this worker take another task? Not when it is full, nor while it reports itself
    /// unhealthy (it keeps its work and serves its results, but gets nothing new).
    fn has_room(&self, per_thread: u32) -> bool {
        self.heartbeat.vitals.unhealthy.is_none()
            && self.heartbeat.paused.is_none()
            && self.assigned.len() < self.capacity(per_thread)
    }

    fn capacity(&self, per_thread: u32) -> usize {
        (self.info.nthreads.max(1) * per_thread) as usize
    }
}

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub transitions: u64,
    pub stale_reports: u64,
    pub workers_lost: u64,
    pub results_recomputed: u64,
    pub poison_tasks: u64,
    /// Results accepted (a task reached memory; a recomputation counts again).
    pub tasks_completed: u64,
    /// Tasks that ended `Erred` (their own failure, or a failed dependency).
    pub tasks_erred: u64,
}

struct Nanny {
    info: NannyInfo,
    slots: BTreeMap<u32, SlotReport>,
}

pub struct Scheduler {
    config: SchedulerConfig,
    graphs: FxHashMap<GraphId, Graph>,
    /// Detached finished graphs, oldest first, for the retention bound.
    detached: VecDeque<GraphId>,
    workers: FxHashMap<Incarnation, Worker>,
    /// Workers in join order, for round-robin placement.
    worker_order: Vec<Incarnation>,
    clients: FxHashSet<ClientId>,
    ready: VecDeque<TaskRef>,
    next_graph: u64,
    next_attempt: u64,
    last_tick: Duration,
    last_progress: Duration,
    rr_cursor: usize,
    state_counts: [u64; 6],
    stats: SchedulerStats,
    out: Vec<Command>,
    /// Reused buffer for tasks that became ready in one step.
    scratch: Vec<TaskRef>,
    nannies: FxHashMap<NannyId, Nanny>,
    /// The recovery log, oldest first, bounded by `events_retained_max`.
    events: VecDeque<EventRecord>,
    next_event_seq: u64,
    /// Why each task with worker deaths lost its attempts (for the poison error).
    death_notes: FxHashMap<TaskRef, Vec<String>>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            graphs: FxHashMap::default(),
            detached: VecDeque::new(),
            workers: FxHashMap::default(),
            worker_order: Vec::new(),
            clients: FxHashSet::default(),
            ready: VecDeque::new(),
            next_graph: 1,
            next_attempt: 1,
            last_tick: Duration::ZERO,
            last_progress: Duration::ZERO,
            rr_cursor: 0,
            state_counts: [0; 6],
            stats: SchedulerStats::default(),
            out: Vec::new(),
            scratch: Vec::new(),
            nannies: FxHashMap::default(),
            events: VecDeque::new(),
            next_event_seq: 1,
            death_notes: FxHashMap::default(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// When the shell must send the next `Tick`: often enough that a silent worker is caught
    /// within a tenth of the TTL of its deadline, and progress flows to clients.
    pub fn next_timeout(&self) -> Duration {
        let period = (self.config.worker_ttl / 10).min(self.config.progress_interval);
        self.last_tick + period
    }

    /// The single entry point: apply one event, return what to do.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.handle_into(now, event, &mut out);
        out
    }

    /// Like [`Scheduler::handle`], appending to a caller-owned buffer (no allocation per call).
    pub fn handle_into(&mut self, now: Duration, event: Event, out: &mut Vec<Command>) {
        debug_assert!(self.out.is_empty());
        std::mem::swap(&mut self.out, out);
        match event {
            Event::WorkerJoined { incarnation, info } => {
                self.on_worker_joined(now, incarnation, info)
            }
            Event::WorkerMessage { incarnation, msg } => {
                self.on_worker_message(now, incarnation, msg)
            }
            Event::WorkerLeft {
                incarnation,
                reason,
            } => self.remove_worker(now, incarnation, LossCause::ConnectionClosed(reason), false),
            Event::ClientJoined { client } => {
                self.clients.insert(client);
            }
            Event::ClientMessage { client, msg } => self.on_client_message(client, msg),
            Event::ClientLeft { client } => self.on_client_left(client),
            Event::NannyJoined { nanny, info } => self.on_nanny_joined(nanny, info),
            Event::NannyMessage { nanny, msg } => self.on_nanny_message(now, nanny, msg),
            Event::NannyLeft { nanny, reason } => self.on_nanny_left(now, nanny, reason),
            Event::Tick => self.on_tick(now),
            Event::LoopLag(lag) => {
                if lag >= LOOP_LAG_DISCOUNT_MIN {
                    for w in self.workers.values_mut() {
                        w.last_seen = (w.last_seen + lag).min(now);
                    }
                }
            }
        }
        self.schedule();
        std::mem::swap(&mut self.out, out);
    }

    // === workers ===

    fn on_worker_joined(&mut self, now: Duration, incarnation: Incarnation, info: WorkerInfo) {
        assert!(
            !self.workers.contains_key(&incarnation),
            "incarnation {incarnation} reused"
        );
        let address: Arc<str> = Arc::from(info.data_address.as_str());
        self.workers.insert(
            incarnation,
            Worker {
                info,
                address,
                last_seen: now,
                assigned: FxHashSet::default(),
                holds: FxHashSet::default(),
                heartbeat: HeartbeatInfo::default(),
            },
        );
        self.worker_order.push(incarnation);
        self.out.push(Command::ToWorker {
            incarnation,
            msg: SchedulerToWorker::Welcome {
                incarnation,
                heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            },
        });
    }

    fn on_worker_message(&mut self, now: Duration, inc: Incarnation, msg: WorkerToScheduler) {
        let Some(w) = self.workers.get_mut(&inc) else {
            // A message from a worker we already dropped: fenced.
            self.stats.stale_reports += 1;
            return;
        };
        w.last_seen = now;
        match msg {
            WorkerToScheduler::Register(_) => {} // only valid as the first message; the shell handles it
            WorkerToScheduler::Heartbeat(hb) => {
                let was = w.heartbeat.vitals.unhealthy.clone();
                let now_unhealthy = hb.vitals.unhealthy.clone();
                let (was_paused, now_paused) = (w.heartbeat.paused.clone(), hb.paused.clone());
                w.heartbeat = hb;
                if was_paused != now_paused {
                    let info = w.info.clone();
                    let (cause, observed, action) = match &now_paused {
                        Some(why) => (
                            "paused",
                            why.clone(),
                            "no new tasks; it still serves its results",
                        ),
                        None => (
                            "resumed",
                            format!(
                                "memory back under its thresholds (was {})",
                                was_paused.unwrap_or_default()
                            ),
                            "receives tasks again",
                        ),
                    };
                    self.record(
                        now,
                        EventRecord {
                            cause: cause.into(),
                            observed,
                            action: action.into(),
                            ..self.worker_record(&info, inc)
                        },
                    );
                }
                let Some(w) = self.workers.get_mut(&inc) else {
                    return;
                };
                if was != now_unhealthy {
                    let info = w.info.clone();
                    let (cause, observed, action) = match &now_unhealthy {
                        Some(why) => (
                            "unhealthy",
                            why.clone(),
                            "no new tasks until it is healthy again",
                        ),
                        None => (
                            "healthy",
                            format!("recovered from: {}", was.unwrap_or_default()),
                            "receives tasks again",
                        ),
                    };
                    self.record(
                        now,
                        EventRecord {
                            cause: cause.into(),
                            observed,
                            action: action.into(),
                            ..self.worker_record(&info, inc)
                        },
                    );
                }
            }
            WorkerToScheduler::TaskDone {
                task,
                attempt,
                size,
            } => self.on_task_done(inc, task, attempt, size),
            WorkerToScheduler::TaskFailed {
                task,
                attempt,
                error,
            } => self.on_task_failed(inc, task, attempt, error),
            WorkerToScheduler::MissingDep { task, attempt, dep } => {
                self.on_missing_dep(inc, task, attempt, dep)
            }
            WorkerToScheduler::Event(e) => {
                let info = w.info.clone();
                let (cause, observed, action) = e.describe();
                self.record(
                    now,
                    EventRecord {
                        cause: cause.into(),
                        observed,
                        action: action.into(),
                        source: "worker".into(),
                        ..self.worker_record(&info, inc)
                    },
                );
            }
            WorkerToScheduler::TaskStarted { task, attempt } => {
                if self.is_current(inc, task, attempt) {
                    self.task_mut(task).expect("current").started = true;
                } else {
                    self.stats.stale_reports += 1;
                }
            }
        }
    }

    /// Is `task` currently assigned to `inc` under `attempt`? Anything else is a stale report.
    fn is_current(&self, inc: Incarnation, task: TaskRef, attempt: AttemptId) -> bool {
        let Some(t) = self.task(task) else {
            return false;
        };
        t.attempt == attempt && t.state == TaskState::Assigned { worker: inc }
    }

    fn on_task_done(&mut self, inc: Incarnation, task: TaskRef, attempt: AttemptId, size: u64) {
        if !self.is_current(inc, task, attempt) {
            self.stats.stale_reports += 1;
            // The worker stored that result before reporting it (for example it finished just
            // as a Cancel or the graph's removal crossed its report). Unless it is the copy we
            // count on, or the task is assigned to it again (its new result will replace the
            // store entry), tell it to drop the copy: nobody else ever will.
            let counted = self.task(task).is_some_and(|t| {
                matches!(t.state, TaskState::Memory { holder, .. } if holder == inc)
                    || t.state == TaskState::Assigned { worker: inc }
            });
            if !counted {
                self.out.push(Command::ToWorker {
                    incarnation: inc,
                    msg: SchedulerToWorker::Release { tasks: vec![task] },
                });
            }
            return;
        }
        let w = self.workers.get_mut(&inc).expect("checked above");
        w.assigned.remove(&task);
        w.holds.insert(task);
        self.set_state(task, TaskState::Memory { holder: inc, size });
        self.stats.tasks_completed += 1;
        let g = self.graphs.get_mut(&task.graph).expect("task exists");
        g.done += 1;
        g.progress_dirty = true;
        let idx = task.index as usize;
        if g.tasks[idx].is_output {
            g.outputs_pending -= 1;
            if g.session {
                g.newly_done.push(task.index);
            }
        }
        let mut newly_ready = std::mem::take(&mut self.scratch);
        for k in 0..g.tasks[idx].dependents.len() {
            let d = g.tasks[idx].dependents[k];
            let dt = &mut g.tasks[d as usize];
            match dt.state {
                TaskState::Waiting => {
                    dt.missing -= 1;
                    if dt.missing == 0 {
                        newly_ready.push(TaskRef {
                            graph: task.graph,
                            index: d,
                        });
                    }
                }
                // A started dependent that ran on while this input was recomputed.
                TaskState::Assigned { .. } if dt.missing > 0 => dt.missing -= 1,
                _ => {}
            }
        }
        for r in newly_ready.drain(..) {
            self.make_ready(r);
        }
        self.scratch = newly_ready;
        let ndeps = self.graphs[&task.graph].tasks[idx].deps.len();
        for k in 0..ndeps {
            let d = self.graphs[&task.graph].tasks[idx].deps[k];
            self.release_if_unneeded(TaskRef {
                graph: task.graph,
                index: d,
            });
        }
        self.release_if_unneeded(task);
        self.maybe_finish_graph(task.graph);
    }

    fn on_task_failed(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
        error: TaskError,
    ) {
        if !self.is_current(inc, task, attempt) {
            self.stats.stale_reports += 1;
            return;
        }
        self.workers
            .get_mut(&inc)
            .expect("checked")
            .assigned
            .remove(&task);
        let t = self.task_mut(task).expect("checked");
        if t.retries_left > 0 {
            t.retries_left -= 1;
            // Back to Ready, or to Waiting if an input was lost while it ran.
            self.unassign(task);
            return;
        }
        let msg = match error.exit_code {
            Some(code) => format!(
                "task {:?} failed (exit code {code}): {}",
                t.key, error.message
            ),
            None => format!("task {:?} failed: {}", t.key, error.message),
        };
        self.fail_task(
            task,
            Failure {
                message: Arc::from(msg),
                detail: error.detail,
            },
        );
    }

    fn on_missing_dep(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
        dep: TaskRef,
    ) {
        if !self.is_current(inc, task, attempt) {
            self.stats.stale_reports += 1;
            return;
        }
        // The holder could not serve it: treat that copy as lost, which also sends this task
        // back to waiting and recomputes the dependency.
        if let Some(TaskState::Memory { holder, .. }) = self.task(dep).map(|t| t.state) {
            if let Some(h) = self.workers.get_mut(&holder) {
                h.holds.remove(&dep);
            }
            self.lose_result(dep);
            // The holder may well still have it (the fetch failed on the way, or timed out):
            // tell it to drop the copy we no longer count on, or it keeps it for its whole
            // life. After `lose_result`, so that the holder first cancels its own tasks that
            // read it from its store.
            self.out.push(Command::ToWorker {
                incarnation: holder,
                msg: SchedulerToWorker::Release { tasks: vec![dep] },
            });
        }
        // If the dep was somehow in memory on no one, at least re-place the task.
        if self.is_current(inc, task, attempt) {
            self.workers
                .get_mut(&inc)
                .expect("checked")
                .assigned
                .remove(&task);
            self.unassign(task);
        }
    }

    /// Forget a worker and recover everything it had: tasks queued there go back to the queue
    /// uncharged; tasks that were executing there count one worker death (a poison task fails
    /// after `task_max_worker_deaths`); results only it held are recomputed if still needed.
    /// A supervised worker that went silent is also handed to its nanny for a restart.
    fn remove_worker(
        &mut self,
        now: Duration,
        inc: Incarnation,
        cause: LossCause,
        drop_connection: bool,
    ) {
        let Some(w) = self.workers.remove(&inc) else {
            return; // already gone (for example TTL then connection close): idempotent
        };
        self.worker_order.retain(|&i| i != inc);
        self.stats.workers_lost += 1;
        if drop_connection {
            self.out.push(Command::DropWorker {
                incarnation: inc,
                cause: cause.clone(),
            });
        }
        let mut assigned: Vec<TaskRef> = w.assigned.into_iter().collect();
        assigned.sort_unstable();
        let rescheduled = assigned.len() as u64;
        let max_deaths = self.config.task_max_worker_deaths.max(1);
        // Poison tasks are failed only once the results this worker held are forgotten below:
        // failing one releases its inputs and may finish its graph, and neither may see a
        // result still recorded on a worker that is already gone.
        let mut poisoned: Vec<(TaskRef, Failure)> = Vec::new();
        for t in assigned {
            let task = self.task_mut(t).expect("assigned task exists");
            if !task.started {
                self.unassign(t);
                continue;
            }
            task.worker_deaths += 1;
            let deaths = task.worker_deaths;
            let key = task.key.clone();
            let notes = self.death_notes.entry(t).or_default();
            notes.push(format!("{} ({inc}): {cause}", w.info.name));
            self.unassign(t);
            if deaths < max_deaths {
                continue;
            }
            let notes = self.death_notes.remove(&t).unwrap_or_default();
            let msg = format!(
                "task {key:?} is a poison task: it was running on {deaths} workers that died \
                 (limit RUSK_TASK_MAX_WORKER_DEATHS={max_deaths}): {}",
                notes.join("; ")
            );
            self.stats.poison_tasks += 1;
            self.record(
                now,
                EventRecord {
                    cause: "poison-task".into(),
                    observed: format!("task {key:?} was running on {deaths} workers that died"),
                    action: "task failed; the rest of its graph goes on".into(),
                    ..self.worker_record(&w.info, inc)
                },
            );
            poisoned.push((t, Failure::new(msg)));
        }
        let mut lost: Vec<TaskRef> = w.holds.into_iter().collect();
        lost.sort_unstable();
        let results_lost = lost.len() as u64;
        let before = self.stats.results_recomputed;
        for &t in &lost {
            self.forget_result(t);
        }
        for (t, failure) in poisoned {
            self.fail_task(t, failure);
        }
        // Only now: a result that only a poison task needed is not recomputed.
        for t in lost {
            self.recompute_if_needed(t);
        }
        let recomputing = self.stats.results_recomputed - before;
        // A silent supervised worker may still be alive (frozen): ask its nanny to restart
        // exactly that incarnation. A no-op on the nanny's side if it already did.
        let mut action = format!(
            "dropped; {rescheduled} task(s) rescheduled, {recomputing} lost result(s) recomputing"
        );
        if let (LossCause::HeartbeatTimeout { silent_for }, Some(nanny), Some(slot)) =
            (&cause, &w.info.nanny, w.info.slot)
        {
            if let Some(id) = self.nanny_by_name(nanny) {
                self.out.push(Command::ToNanny {
                    nanny: id,
                    msg: SchedulerToNanny::RestartWorker {
                        slot,
                        incarnation: inc.0,
                        silent_for_ms: silent_for.as_millis() as u64,
                    },
                });
                action.push_str(&format!("; asked nanny {nanny} to restart slot {slot}"));
            }
        }
        let detection_ms = match &cause {
            LossCause::HeartbeatTimeout { silent_for } => Some(silent_for.as_millis() as u64),
            _ => None,
        };
        self.record(
            now,
            EventRecord {
                cause: cause.kind().into(),
                observed: cause.to_string(),
                action,
                detection_ms,
                ..self.worker_record(&w.info, inc)
            },
        );
        self.out.push(Command::Recovery(RecoveryNote {
            worker: w.info.name,
            incarnation: inc,
            cause,
            rescheduled,
            results_lost,
            recomputing,
        }));
    }

    /// An event-log entry about a worker, to be completed by the caller.
    fn worker_record(&self, info: &WorkerInfo, inc: Incarnation) -> EventRecord {
        EventRecord {
            seq: 0,
            time_unix_ms: 0,
            source: "scheduler".into(),
            host: info.host.clone(),
            nanny: info.nanny.clone(),
            slot: info.slot,
            worker: Some(info.name.clone()),
            incarnation: Some(inc.0),
            new_incarnation: None,
            cause: String::new(),
            observed: String::new(),
            action: String::new(),
            detection_ms: None,
            recovery_ms: None,
        }
    }

    /// Append to the recovery log (bounded) and hand the entry to the shell for logging.
    fn record(&mut self, now: Duration, mut r: EventRecord) {
        r.seq = self.next_event_seq;
        self.next_event_seq += 1;
        r.time_unix_ms = self.config.epoch_unix_ms + now.as_millis() as u64;
        self.events.push_back(r.clone());
        while self.events.len() > self.config.events_retained_max {
            self.events.pop_front();
        }
        self.out.push(Command::Log(r));
    }

    // === nannies ===

    fn nanny_by_name(&self, name: &str) -> Option<NannyId> {
        self.nannies
            .iter()
            .filter(|(_, n)| n.info.name == name)
            .map(|(id, _)| *id)
            .max() // the newest connection of that name
    }

    fn on_nanny_joined(&mut self, nanny: NannyId, info: NannyInfo) {
        self.nannies.insert(
            nanny,
            Nanny {
                info,
                slots: BTreeMap::new(),
            },
        );
        self.out.push(Command::ToNanny {
            nanny,
            msg: SchedulerToNanny::Welcome,
        });
    }

    fn on_nanny_message(&mut self, now: Duration, nanny: NannyId, msg: NannyToScheduler) {
        let Some(n) = self.nannies.get_mut(&nanny) else {
            return;
        };
        match msg {
            NannyToScheduler::Register(_) => {}
            NannyToScheduler::Slots(reports) => {
                for r in reports {
                    n.slots.insert(r.slot, r);
                }
            }
            NannyToScheduler::Record(NannyRecord {
                slot,
                cause,
                observed,
                action,
                incarnation,
                new_incarnation,
                detection_ms,
                recovery_ms,
            }) => {
                let r = EventRecord {
                    seq: 0,
                    time_unix_ms: 0,
                    source: "nanny".into(),
                    host: n.info.host.clone(),
                    nanny: Some(n.info.name.clone()),
                    slot: Some(slot),
                    worker: Some(format!("{}/{slot}", n.info.name)),
                    incarnation,
                    new_incarnation,
                    cause,
                    observed,
                    action,
                    detection_ms,
                    recovery_ms,
                };
                self.record(now, r);
            }
        }
    }

    /// A nanny's connection closed. If the nanny died, its workers died with it (they watch
    /// their parent), so their own connections close at once and their work is recovered
    /// through the usual path; if only the connection broke, its workers are healthy and keep
    /// serving. Either way nothing is dropped on this signal alone: no false positive.
    fn on_nanny_left(&mut self, now: Duration, nanny: NannyId, reason: String) {
        let Some(n) = self.nannies.remove(&nanny) else {
            return;
        };
        let workers = self
            .workers
            .values()
            .filter(|w| w.info.nanny.as_deref() == Some(n.info.name.as_str()))
            .count();
        self.record(
            now,
            EventRecord {
                seq: 0,
                time_unix_ms: 0,
                source: "scheduler".into(),
                host: n.info.host.clone(),
                nanny: Some(n.info.name.clone()),
                slot: None,
                worker: None,
                incarnation: None,
                new_incarnation: None,
                cause: "nanny-gone".into(),
                observed: format!("nanny connection closed ({reason})"),
                action: format!(
                    "{workers} of its worker(s) still connected; a dead nanny's workers exit with it and are recovered as their connections close"
                ),
                detection_ms: None,
                recovery_ms: None,
            },
        );
    }

    /// `rusk restart`.
    fn on_restart(&mut self, target: RestartTarget) -> Result<String, String> {
        match target {
            RestartTarget::All => {
                let mut ids: Vec<NannyId> = self.nannies.keys().copied().collect();
                ids.sort_unstable();
                for nanny in &ids {
                    self.out.push(Command::ToNanny {
                        nanny: *nanny,
                        msg: SchedulerToNanny::OperatorRestart { slot: None },
                    });
                }
                Ok(format!(
                    "asked {} nanny(ies) to restart all their workers",
                    ids.len()
                ))
            }
            RestartTarget::Worker(id) => {
                // A live worker by its id, or a slot (`nanny/slot`) whatever its state.
                let by_worker = self
                    .workers
                    .values()
                    .find(|w| w.info.name == id)
                    .map(|w| (w.info.nanny.clone(), w.info.slot));
                let (nanny, slot) = match by_worker {
                    Some((Some(n), Some(s))) => (n, s),
                    Some(_) => {
                        return Err(format!(
                            "worker {id:?} has no nanny; restart its process yourself"
                        ))
                    }
                    None => match id
                        .rsplit_once('/')
                        .and_then(|(n, s)| Some((n.to_string(), s.parse::<u32>().ok()?)))
                    {
                        Some(x) => x,
                        None => {
                            return Err(format!(
                                "no worker or slot named {id:?} (see `rusk status`)"
                            ))
                        }
                    },
                };
                let Some(nid) = self.nanny_by_name(&nanny) else {
                    return Err(format!(
                        "no worker or slot named {id:?}: nanny {nanny:?} is not connected"
                    ));
                };
                if slot >= self.nannies[&nid].info.nworkers {
                    return Err(format!(
                        "no worker or slot named {id:?}: nanny {nanny:?} has no slot {slot}"
                    ));
                }
                self.out.push(Command::ToNanny {
                    nanny: nid,
                    msg: SchedulerToNanny::OperatorRestart { slot: Some(slot) },
                });
                Ok(format!("asked nanny {nanny} to restart slot {slot}"))
            }
        }
    }

    fn on_stop_nanny(&mut self, name: Option<String>) -> Result<String, String> {
        let mut ids: Vec<NannyId> = self
            .nannies
            .iter()
            .filter(|(_, n)| name.as_deref().is_none_or(|want| n.info.name == want))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return Err(match name {
                Some(n) => format!("no nanny named {n:?} is connected"),
                None => "no nanny is connected".into(),
            });
        }
        for nanny in &ids {
            self.out.push(Command::ToNanny {
                nanny: *nanny,
                msg: SchedulerToNanny::Stop,
            });
        }
        Ok(format!(
            "asked {} nanny(ies) to stop their workers for good",
            ids.len()
        ))
    }

    /// An assigned task goes back to Ready/Waiting under a new attempt. The caller has removed
    /// it from its worker's `assigned` set.
    fn unassign(&mut self, task: TaskRef) {
        let t = self.task(task).expect("assigned task exists");
        debug_assert!(matches!(t.state, TaskState::Assigned { .. }));
        if t.missing == 0 {
            self.make_ready(task);
        } else {
            self.set_state(task, TaskState::Waiting);
        }
    }

    /// The only copy of `task`'s result is gone (its holder's index is already updated).
    fn lose_result(&mut self, task: TaskRef) {
        self.forget_result(task);
        self.recompute_if_needed(task);
    }

    /// A lost result that is still needed is computed again.
    fn recompute_if_needed(&mut self, task: TaskRef) {
        let released = self
            .task(task)
            .is_some_and(|t| t.state == TaskState::Released);
        if released && self.is_needed(task) {
            self.recompute(task);
        }
    }

    /// `lose_result` without the recomputation: the task is released and dependents that were
    /// about to use it wait again.
    fn forget_result(&mut self, task: TaskRef) {
        let g = self.graphs.get_mut(&task.graph).expect("task exists");
        let t = &g.tasks[task.index as usize];
        debug_assert!(matches!(t.state, TaskState::Memory { .. }));
        let is_output = t.is_output;
        let dependents = t.dependents.clone();
        // Memory -> Released leaves `done` unchanged (both count as done); `recompute` takes
        // the task out of `done` if it has to run again.
        g.progress_dirty = true;
        if is_output {
            g.outputs_pending += 1;
        }
        self.set_state(task, TaskState::Released);
        // Dependents that were about to use it must wait for the recomputation. One that has
        // started already has its inputs: it runs on (and if its attempt ends without a
        // result, it waits like the others). Cancelling it would throw its work away, and,
        // were it running on the very worker that is found dead a moment later, that death
        // would never be charged to it: a poison task could take any number of workers down.
        for &d in dependents.iter() {
            let dref = TaskRef {
                graph: task.graph,
                index: d,
            };
            let dt = self.task_mut(dref).expect("dependent exists");
            match dt.state {
                TaskState::Waiting => dt.missing += 1,
                TaskState::Assigned { .. } if dt.started => dt.missing += 1,
                TaskState::Ready => {
                    dt.missing += 1;
                    self.set_state(dref, TaskState::Waiting);
                }
                TaskState::Assigned { worker } => {
                    dt.missing += 1;
                    let attempt = dt.attempt;
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.assigned.remove(&dref);
                    }
                    self.out.push(Command::ToWorker {
                        incarnation: worker,
                        msg: SchedulerToWorker::Cancel {
                            task: dref,
                            attempt,
                        },
                    });
                    self.set_state(dref, TaskState::Waiting);
                }
                TaskState::Memory { .. } | TaskState::Released | TaskState::Erred => {}
            }
        }
    }

    /// Bring a released task (and, transitively, its released inputs) back to Waiting/Ready.
    fn recompute(&mut self, root: TaskRef) {
        let mut stack = vec![root];
        while let Some(task) = stack.pop() {
            let g = self.graphs.get_mut(&task.graph).expect("task exists");
            if g.tasks[task.index as usize].state != TaskState::Released {
                continue;
            }
            // Released counts as done; the task leaves it now (for Waiting, Ready or Erred).
            g.done -= 1;
            g.progress_dirty = true;
            let g = &*g;
            let t = &g.tasks[task.index as usize];
            self.stats.results_recomputed += 1;
            let mut missing = 0;
            let mut erred_dep = None;
            for &d in t.deps.iter() {
                let dt = &g.tasks[d as usize];
                match dt.state {
                    TaskState::Memory { .. } => {}
                    TaskState::Erred => {
                        erred_dep = Some(d);
                        missing += 1;
                    }
                    TaskState::Released => {
                        missing += 1;
                        stack.push(TaskRef {
                            graph: task.graph,
                            index: d,
                        });
                    }
                    TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                        missing += 1
                    }
                }
            }
            if let Some(d) = erred_dep {
                // The input failed after this task had used it: this task and everything
                // downstream fail with the error the input's dependents carry.
                let failure = self.downstream_failure(TaskRef {
                    graph: task.graph,
                    index: d,
                });
                self.set_state(task, TaskState::Waiting);
                self.task_mut(task).expect("exists").missing = missing;
                self.fail_with(task, failure.clone(), failure);
                continue;
            }
            self.task_mut(task).expect("exists").missing = missing;
            if missing == 0 {
                self.make_ready(task);
            } else {
                self.set_state(task, TaskState::Waiting);
            }
        }
    }

    // === clients ===

    fn on_client_message(&mut self, client: ClientId, msg: ClientToScheduler) {
        match msg {
            ClientToScheduler::Submit { graph, detach } => match compile(graph) {
                Ok(compiled) => self.add_graph(client, compiled, detach),
                Err(e) => self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Rejected {
                        error: e.to_string(),
                    },
                }),
            },
            ClientToScheduler::LocateOutputs { graph } => match self.graphs.get_mut(&graph) {
                Some(g) => {
                    g.owner = Some(client);
                    g.notify_finished = true;
                    if g.session {
                        // Report again every finished output; the others come when done.
                        let finished: Vec<u32> = g
                            .outputs
                            .iter()
                            .copied()
                            .filter(|&o| {
                                matches!(
                                    g.tasks[o as usize].state,
                                    TaskState::Memory { .. } | TaskState::Erred
                                )
                            })
                            .collect();
                        g.newly_done.extend(finished);
                    }
                    self.maybe_finish_graph(graph);
                }
                None => self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Error {
                        message: format!("unknown graph {graph} (released or never submitted)"),
                    },
                }),
            },
            ClientToScheduler::Open => self.open_session(client),
            ClientToScheduler::Extend {
                graph,
                tasks,
                outputs,
            } => self.on_extend(client, graph, tasks, outputs),
            ClientToScheduler::ReleaseKeys { graph, keys } => {
                self.on_release_keys(client, graph, keys)
            }
            ClientToScheduler::ReleaseGraph { graph } => {
                if self
                    .graphs
                    .get(&graph)
                    .is_some_and(|g| g.owner == Some(client) || g.owner.is_none())
                {
                    self.remove_graph(graph);
                }
            }
            ClientToScheduler::Events { since } => {
                /// Events per reply: bounds one answer's size; clients page with `next`.
                const EVENTS_PER_REPLY_MAX: usize = 1000;
                let records: Vec<EventRecord> = self
                    .events
                    .iter()
                    .filter(|r| r.seq >= since)
                    .take(EVENTS_PER_REPLY_MAX)
                    .cloned()
                    .collect();
                let next = records.last().map_or(since, |r| r.seq + 1);
                self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Events { records, next },
                });
            }
            ClientToScheduler::Restart { target } => {
                let msg = match self.on_restart(target) {
                    Ok(message) => SchedulerToClient::Done { message },
                    Err(message) => SchedulerToClient::Error { message },
                };
                self.out.push(Command::ToClient { client, msg });
            }
            ClientToScheduler::StopNanny { nanny } => {
                let msg = match self.on_stop_nanny(nanny) {
                    Ok(message) => SchedulerToClient::Done { message },
                    Err(message) => SchedulerToClient::Error { message },
                };
                self.out.push(Command::ToClient { client, msg });
            }
            ClientToScheduler::Status => {
                let snapshot = self.status(None);
                self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Status(Box::new(snapshot)),
                });
            }
        }
    }

    fn on_client_left(&mut self, client: ClientId) {
        self.clients.remove(&client);
        let mut owned: Vec<GraphId> = self
            .graphs
            .iter()
            .filter(|(_, g)| g.owner == Some(client))
            .map(|(id, _)| *id)
            .collect();
        owned.sort_unstable();
        for id in owned {
            if self.detached.contains(&id) {
                self.graphs.get_mut(&id).expect("exists").owner = None;
            } else {
                self.remove_graph(id);
            }
        }
    }

    fn add_graph(&mut self, client: ClientId, compiled: CompiledGraph, detach: bool) {
        let id = GraphId(self.next_graph);
        self.next_graph += 1;
        let n = compiled.tasks.len();
        let mut dependents_count = vec![0u32; n];
        for t in &compiled.tasks {
            for &d in t.deps.iter() {
                dependents_count[d as usize] += 1;
            }
        }
        let mut dependents: Vec<Vec<u32>> = dependents_count
            .iter()
            .map(|&c| Vec::with_capacity(c as usize))
            .collect();
        for (i, t) in compiled.tasks.iter().enumerate() {
            for &d in t.deps.iter() {
                dependents[d as usize].push(i as u32);
            }
        }
        let mut tasks = Vec::with_capacity(n);
        for (t, dependents) in compiled.tasks.into_iter().zip(dependents) {
            let missing = t.deps.len() as u32;
            tasks.push(Task {
                key: t.key,
                kind: t.kind,
                missing,
                unfinished_dependents: dependents.len() as u32,
                deps: t.deps,
                dependents,
                state: TaskState::Waiting,
                retries_left: t.retries,
                attempt: AttemptId(0),
                is_output: false,
                queued: false,
                started: false,
                worker_deaths: 0,
                timeout_ms: t.timeout_ms,
            });
        }
        for &o in &compiled.outputs {
            tasks[o as usize].is_output = true;
        }
        self.state_counts[TaskState::Waiting.slot()] += n as u64;
        self.graphs.insert(
            id,
            Graph {
                tasks,
                outputs_pending: compiled.outputs.len() as u32,
                outputs: compiled.outputs,
                owner: Some(client),
                notify_finished: true,
                errors: FxHashMap::default(),
                done: 0,
                erred: 0,
                assigned: 0,
                progress_dirty: true,
                session: false,
                keys: FxHashMap::default(),
                newly_done: Vec::new(),
            },
        );
        if detach {
            self.detached.push_back(id);
            self.enforce_detached_bound();
        }
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::Submitted {
                graph: id,
                tasks: n as u64,
            },
        });
        for i in 0..n as u32 {
            let tref = TaskRef {
                graph: id,
                index: i,
            };
            if self.task(tref).expect("just added").missing == 0 {
                self.make_ready(tref);
            }
        }
    }

    // === session graphs (the Python client's futures) ===

    fn open_session(&mut self, client: ClientId) {
        let id = GraphId(self.next_graph);
        self.next_graph += 1;
        self.graphs.insert(
            id,
            Graph {
                tasks: Vec::new(),
                outputs: Vec::new(),
                owner: Some(client),
                outputs_pending: 0,
                notify_finished: false,
                errors: FxHashMap::default(),
                done: 0,
                erred: 0,
                assigned: 0,
                progress_dirty: false,
                session: true,
                keys: FxHashMap::default(),
                newly_done: Vec::new(),
            },
        );
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::Submitted {
                graph: id,
                tasks: 0,
            },
        });
    }

    /// The session graph `id` if `client` owns it, else an error for the client.
    fn own_session(&self, client: ClientId, id: GraphId) -> Result<(), String> {
        match self.graphs.get(&id) {
            Some(g) if g.session && g.owner == Some(client) => Ok(()),
            Some(_) => Err(format!("graph {id} is not a session graph of this client")),
            None => Err(format!("unknown graph {id} (released or never opened)")),
        }
    }

    fn on_extend(
        &mut self,
        client: ClientId,
        id: GraphId,
        specs: Vec<rusk_proto::graph::TaskSpec>,
        outputs: Vec<String>,
    ) {
        if let Err(message) = self.own_session(client, id) {
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::Error { message },
            });
            return;
        }
        let g = &self.graphs[&id];
        let existing = g.tasks.len() as u32;
        let (tasks, outs) =
            match crate::graph::compile_extension(&g.keys, existing, specs, &outputs) {
                Ok(x) => x,
                Err(e) => {
                    self.out.push(Command::ToClient {
                        client,
                        msg: SchedulerToClient::Rejected {
                            error: e.to_string(),
                        },
                    });
                    return;
                }
            };
        let n = tasks.len() as u32;
        let g = self.graphs.get_mut(&id).expect("checked");
        for (i, t) in tasks.into_iter().enumerate() {
            let idx = existing + i as u32;
            g.keys.insert(t.key.clone(), idx);
            for &d in t.deps.iter() {
                let dt = &mut g.tasks[d as usize];
                dt.dependents.push(idx);
                dt.unfinished_dependents += 1; // the new task starts unfinished (Waiting)
            }
            g.tasks.push(Task {
                key: t.key,
                kind: t.kind,
                missing: 0,
                unfinished_dependents: 0,
                deps: t.deps,
                dependents: Vec::new(),
                state: TaskState::Waiting,
                retries_left: t.retries,
                attempt: AttemptId(0),
                is_output: false,
                queued: false,
                started: false,
                worker_deaths: 0,
                timeout_ms: t.timeout_ms,
            });
        }
        self.state_counts[TaskState::Waiting.slot()] += n as u64;
        for idx in existing..existing + n {
            let tref = TaskRef {
                graph: id,
                index: idx,
            };
            let g = &self.graphs[&id];
            let t = &g.tasks[idx as usize];
            let mut missing = 0;
            let mut released = Vec::new();
            let mut erred = None;
            for &d in t.deps.iter() {
                match g.tasks[d as usize].state {
                    TaskState::Memory { .. } => {}
                    TaskState::Released => {
                        missing += 1;
                        released.push(d);
                    }
                    TaskState::Erred => {
                        missing += 1;
                        erred = Some(d);
                    }
                    TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                        missing += 1
                    }
                }
            }
            self.task_mut(tref).expect("just added").missing = missing;
            if let Some(d) = erred {
                // Depends on a task that already failed: fail with the inherited error.
                let failure = self.downstream_failure(TaskRef {
                    graph: id,
                    index: d,
                });
                self.fail_with(tref, failure.clone(), failure);
                continue;
            }
            for d in released {
                // A dropped result is needed again: recompute it from its lineage.
                self.recompute(TaskRef {
                    graph: id,
                    index: d,
                });
            }
            if missing == 0 {
                self.make_ready(tref);
            }
        }
        for o in outs {
            let tref = TaskRef {
                graph: id,
                index: o,
            };
            let g = self.graphs.get_mut(&id).expect("checked");
            let t = &mut g.tasks[o as usize];
            if t.is_output {
                continue;
            }
            t.is_output = true;
            g.outputs.push(o);
            match t.state {
                TaskState::Memory { .. } | TaskState::Erred => g.newly_done.push(o),
                TaskState::Released => {
                    g.outputs_pending += 1;
                    self.recompute(tref);
                }
                TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                    g.outputs_pending += 1
                }
            }
        }
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::Extended {
                graph: id,
                tasks: n as u64,
            },
        });
        self.maybe_finish_graph(id);
    }

    /// The client no longer wants these outputs: drop what nothing else needs, cancelling
    /// work that has not finished.
    fn on_release_keys(&mut self, client: ClientId, id: GraphId, keys: Vec<String>) {
        if self.own_session(client, id).is_err() {
            return; // the graph may already be gone; releasing is idempotent
        }
        for key in keys {
            let g = self.graphs.get_mut(&id).expect("checked");
            let Some(&idx) = g.keys.get(key.as_str()) else {
                continue;
            };
            let t = &mut g.tasks[idx as usize];
            if !t.is_output {
                continue;
            }
            t.is_output = false;
            if !matches!(t.state, TaskState::Memory { .. } | TaskState::Erred) {
                g.outputs_pending -= 1;
            }
            g.outputs.retain(|&o| o != idx);
            self.drop_unneeded(TaskRef {
                graph: id,
                index: idx,
            });
        }
    }

    /// Release or cancel `root` and, transitively, its inputs, as far as nothing needs them.
    fn drop_unneeded(&mut self, root: TaskRef) {
        let mut stack = vec![root];
        while let Some(task) = stack.pop() {
            if self.is_needed(task) {
                continue;
            }
            let t = self.task(task).expect("exists");
            let (state, attempt, deps) = (t.state, t.attempt, t.deps.clone());
            match state {
                TaskState::Memory { .. } => self.release_if_unneeded(task),
                TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                    if let TaskState::Assigned { worker } = state {
                        if let Some(w) = self.workers.get_mut(&worker) {
                            w.assigned.remove(&task);
                        }
                        self.out.push(Command::ToWorker {
                            incarnation: worker,
                            msg: SchedulerToWorker::Cancel { task, attempt },
                        });
                    }
                    self.set_state(task, TaskState::Released);
                    let g = self.graphs.get_mut(&task.graph).expect("exists");
                    g.done += 1; // counted as settled; a later recompute takes it back
                    g.progress_dirty = true;
                    stack.extend(deps.iter().map(|&d| TaskRef {
                        graph: task.graph,
                        index: d,
                    }));
                }
                TaskState::Released | TaskState::Erred => {}
            }
        }
    }

    fn enforce_detached_bound(&mut self) {
        while self.detached.len() > self.config.detached_graphs_max {
            // Release the oldest detached graph that has finished; unfinished ones keep running.
            let Some(pos) = self
                .detached
                .iter()
                .position(|id| self.graphs.get(id).is_some_and(|g| g.outputs_pending == 0))
            else {
                return;
            };
            let id = self.detached.remove(pos).expect("position valid");
            self.remove_graph(id);
        }
    }

    /// Drop a whole graph: cancel its assigned tasks, release its results.
    fn remove_graph(&mut self, id: GraphId) {
        let Some(g) = self.graphs.remove(&id) else {
            return;
        };
        self.detached.retain(|&d| d != id);
        let mut releases: BTreeMap<Incarnation, Vec<TaskRef>> = BTreeMap::new();
        for (i, t) in g.tasks.iter().enumerate() {
            let tref = TaskRef {
                graph: id,
                index: i as u32,
            };
            self.state_counts[t.state.slot()] -= 1;
            match t.state {
                TaskState::Assigned { worker } => {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.assigned.remove(&tref);
                    }
                    self.out.push(Command::ToWorker {
                        incarnation: worker,
                        msg: SchedulerToWorker::Cancel {
                            task: tref,
                            attempt: t.attempt,
                        },
                    });
                }
                TaskState::Memory { holder, .. } => {
                    if let Some(w) = self.workers.get_mut(&holder) {
                        w.holds.remove(&tref);
                    }
                    releases.entry(holder).or_default().push(tref);
                }
                _ => {}
            }
        }
        for (incarnation, tasks) in releases {
            self.out.push(Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Release { tasks },
            });
        }
        // Ready-queue entries of this graph are skipped lazily (the graph is gone).
    }

    /// Tell the owner about finished outputs: a session graph reports each output as it
    /// finishes; a submitted graph reports all of them once the last one is done.
    fn maybe_finish_graph(&mut self, id: GraphId) {
        let g = self.graphs.get_mut(&id).expect("graph exists");
        if g.session {
            if g.newly_done.is_empty() {
                return;
            }
            let done = std::mem::take(&mut g.newly_done);
            let Some(client) = g.owner else {
                return;
            };
            let done: Vec<u32> = done
                .into_iter()
                .filter(|&o| {
                    let t = &g.tasks[o as usize];
                    t.is_output && matches!(t.state, TaskState::Memory { .. } | TaskState::Erred)
                })
                .collect();
            let outputs = done.into_iter().map(|o| self.output_state(id, o)).collect();
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::OutputsReady { graph: id, outputs },
            });
            return;
        }
        if g.outputs_pending > 0 || !g.notify_finished {
            return;
        }
        let Some(client) = g.owner else {
            return;
        };
        g.notify_finished = false;
        let outs = g.outputs.clone();
        let outputs = outs.into_iter().map(|o| self.output_state(id, o)).collect();
        let g = self.graphs.get_mut(&id).expect("graph exists");
        let progress = Self::progress_of(id, g);
        g.progress_dirty = false;
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::Progress(progress),
        });
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::GraphFinished { graph: id, outputs },
        });
        if self.detached.contains(&id) {
            self.enforce_detached_bound();
        }
    }

    /// Where a finished output is, or why it failed.
    fn output_state(&self, id: GraphId, o: u32) -> OutputState {
        let g = &self.graphs[&id];
        let t = &g.tasks[o as usize];
        let result = match t.state {
            TaskState::Memory { holder, size } => OutputResult::Ready {
                task: TaskRef {
                    graph: id,
                    index: o,
                },
                holder: self.workers[&holder].info.data_address.clone(),
                size,
            },
            TaskState::Erred => {
                let f = g.errors.get(&o);
                OutputResult::Failed {
                    error: f.map(|e| e.message.to_string()).unwrap_or_default(),
                    detail: f.and_then(|e| e.detail.clone()),
                }
            }
            s => unreachable!("finished output in state {s:?}"),
        };
        OutputState {
            key: t.key.to_string(),
            result,
        }
    }

    fn progress_of(id: GraphId, g: &Graph) -> GraphProgress {
        GraphProgress {
            graph: id.0,
            total: g.tasks.len() as u64,
            done: g.done,
            erred: g.erred,
            assigned: g.assigned,
        }
    }

    // === time ===

    fn on_tick(&mut self, now: Duration) {
        self.last_tick = now;
        let ttl = self.config.worker_ttl;
        let mut expired: Vec<(Incarnation, Duration)> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.last_seen) > ttl)
            .map(|(i, w)| (*i, now - w.last_seen))
            .collect();
        expired.sort_unstable();
        for (inc, silent_for) in expired {
            self.remove_worker(now, inc, LossCause::HeartbeatTimeout { silent_for }, true);
        }
        if now.saturating_sub(self.last_progress) >= self.config.progress_interval {
            self.last_progress = now;
            let mut ids: Vec<GraphId> = self.graphs.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                let g = self.graphs.get_mut(&id).expect("exists");
                if let (true, Some(client)) = (g.progress_dirty, g.owner) {
                    g.progress_dirty = false;
                    let p = Self::progress_of(id, g);
                    self.out.push(Command::ToClient {
                        client,
                        msg: SchedulerToClient::Progress(p),
                    });
                }
            }
        }
    }

    // === placement ===

    fn make_ready(&mut self, task: TaskRef) {
        self.set_state(task, TaskState::Ready);
        let t = self.task_mut(task).expect("exists");
        if !t.queued {
            t.queued = true;
            self.ready.push_back(task);
        }
    }

    /// Assign ready tasks to workers with free capacity. Tasks with inputs go to the worker
    /// holding most of their input bytes when it has room; the rest are dealt out in contiguous
    /// chunks (so that neighbouring tasks, often siblings in a reduction, land together) to the
    /// workers with room, round robin, which balances load.
    fn schedule(&mut self) {
        if self.ready.is_empty() || self.worker_order.is_empty() {
            return;
        }
        let per_thread = self.config.assigned_per_thread_max;
        let open: usize = self
            .worker_order
            .iter()
            .filter(|i| {
                let w = &self.workers[i];
                w.has_room(per_thread)
            })
            .count();
        if open == 0 {
            return;
        }
        let chunk = self.ready.len().div_ceil(open).max(1);
        let mut taken_in_chunk = 0usize;
        while let Some(task) = self.ready.pop_front() {
            let Some(t) = self.task_mut(task) else {
                continue; // graph released
            };
            t.queued = false;
            if t.state != TaskState::Ready {
                continue; // stale queue entry
            }
            let target = match self.preferred_worker(task) {
                Some(w) => Some(w),
                None => {
                    // Round robin over workers with room, `chunk` tasks at a time.
                    let n = self.worker_order.len();
                    let mut found = None;
                    let mut full_seen = 0;
                    while full_seen <= n {
                        let inc = self.worker_order[self.rr_cursor % n];
                        let w = &self.workers[&inc];
                        let room = w.has_room(per_thread);
                        if room && taken_in_chunk < chunk {
                            taken_in_chunk += 1;
                            found = Some(inc);
                            break;
                        }
                        self.rr_cursor = (self.rr_cursor + 1) % n;
                        taken_in_chunk = 0;
                        if !room {
                            full_seen += 1;
                        }
                    }
                    found
                }
            };
            match target {
                Some(inc) => self.assign(task, inc),
                None => {
                    let t = self.task_mut(task).expect("exists");
                    t.queued = true;
                    self.ready.push_front(task);
                    break;
                }
            }
        }
        // The next call starts with the next worker: tasks that become ready one at a time
        // (a client submitting in a loop) are spread over the cluster, not piled on one worker.
        if taken_in_chunk > 0 {
            self.rr_cursor = (self.rr_cursor + 1) % self.worker_order.len();
        }
    }

    /// The worker with free capacity holding the most input bytes of `task`, if any holds any.
    fn preferred_worker(&self, task: TaskRef) -> Option<Incarnation> {
        let g = &self.graphs[&task.graph];
        let t = &g.tasks[task.index as usize];
        let per_thread = self.config.assigned_per_thread_max;
        let mut best: Option<(u64, Incarnation)> = None;
        for &d in t.deps.iter() {
            if let TaskState::Memory { holder, .. } = g.tasks[d as usize].state {
                let w = &self.workers[&holder];
                if !w.has_room(per_thread) {
                    continue;
                }
                // Sum this holder's bytes over all deps (deps lists are short in practice).
                let bytes: u64 = t
                    .deps
                    .iter()
                    .filter_map(|&e| match g.tasks[e as usize].state {
                        TaskState::Memory { holder: h, size } if h == holder => Some(size.max(1)),
                        _ => None,
                    })
                    .sum();
                if best.is_none_or(|(b, i)| bytes > b || (bytes == b && holder < i)) {
                    best = Some((bytes, holder));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    fn assign(&mut self, task: TaskRef, inc: Incarnation) {
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        let g = &self.graphs[&task.graph];
        let t = &g.tasks[task.index as usize];
        let deps = t
            .deps
            .iter()
            .map(|&d| {
                let TaskState::Memory { holder, .. } = g.tasks[d as usize].state else {
                    unreachable!("ready task has a dependency not in memory");
                };
                DepLocation {
                    task: TaskRef {
                        graph: task.graph,
                        index: d,
                    },
                    holder: (holder != inc).then(|| self.workers[&holder].address.clone()),
                }
            })
            .collect();
        let assignment = Assignment {
            task,
            attempt,
            kind: t.kind.clone(),
            deps,
            timeout_ms: (t.timeout_ms > 0).then_some(t.timeout_ms as u64),
        };
        self.workers
            .get_mut(&inc)
            .expect("target exists")
            .assigned
            .insert(task);
        let t = self.task_mut(task).expect("exists");
        t.attempt = attempt;
        t.started = false;
        self.set_state(task, TaskState::Assigned { worker: inc });
        self.out.push(Command::ToWorker {
            incarnation: inc,
            msg: SchedulerToWorker::Assign(Arc::new(assignment)),
        });
    }

    // === shared transitions ===

    fn task(&self, t: TaskRef) -> Option<&Task> {
        self.graphs.get(&t.graph)?.tasks.get(t.index as usize)
    }

    fn task_mut(&mut self, t: TaskRef) -> Option<&mut Task> {
        self.graphs
            .get_mut(&t.graph)?
            .tasks
            .get_mut(t.index as usize)
    }

    /// Every state change goes through here, which keeps the per-state counts and each
    /// dependency's `unfinished_dependents` true.
    fn set_state(&mut self, task: TaskRef, new: TaskState) {
        let g = self.graphs.get_mut(&task.graph).expect("task exists");
        let t = &mut g.tasks[task.index as usize];
        let old = t.state;
        t.state = new;
        self.stats.transitions += 1;
        let (was_assigned, is_assigned) = (
            matches!(old, TaskState::Assigned { .. }),
            matches!(new, TaskState::Assigned { .. }),
        );
        if was_assigned != is_assigned {
            if is_assigned {
                g.assigned += 1;
            } else {
                g.assigned -= 1;
            }
        }
        self.state_counts[old.slot()] -= 1;
        self.state_counts[new.slot()] += 1;
        let delta: i64 = match (old.is_unfinished(), new.is_unfinished()) {
            (true, false) => -1,
            (false, true) => 1,
            _ => 0,
        };
        if delta != 0 {
            let idx = task.index as usize;
            for k in 0..g.tasks[idx].deps.len() {
                let d = g.tasks[idx].deps[k] as usize;
                let dt = &mut g.tasks[d];
                dt.unfinished_dependents = (dt.unfinished_dependents as i64 + delta) as u32;
            }
        }
    }

    fn is_needed(&self, task: TaskRef) -> bool {
        let t = self.task(task).expect("exists");
        t.is_output || t.unfinished_dependents > 0
    }

    fn release_if_unneeded(&mut self, task: TaskRef) {
        let t = self.task(task).expect("exists");
        let TaskState::Memory { holder, .. } = t.state else {
            return;
        };
        if self.is_needed(task) {
            return;
        }
        self.workers
            .get_mut(&holder)
            .expect("holder alive")
            .holds
            .remove(&task);
        self.set_state(task, TaskState::Released);
        self.out.push(Command::ToWorker {
            incarnation: holder,
            msg: SchedulerToWorker::Release { tasks: vec![task] },
        });
    }

    /// Mark `root` erred with its own `error`, and every unfinished task downstream of it with
    /// `dependency "<root>" failed: <error>`.
    fn fail_task(&mut self, root: TaskRef, error: Failure) {
        let root_key = self.task(root).expect("exists").key.clone();
        let downstream = Failure {
            message: Arc::from(format!(
                "dependency {:?} failed: {}",
                &*root_key, error.message
            )),
            detail: error.detail.clone(),
        };
        self.fail_with(root, error, downstream);
    }

    /// The error the dependents of erred task `d` carry: `dependency "<d>" failed: ...` if `d`
    /// failed itself (its own error then names it: every root error is `task "<d>" ...`), or
    /// the very error of `d` if it was failed by one of its own inputs.
    fn downstream_failure(&self, d: TaskRef) -> Failure {
        let g = &self.graphs[&d.graph];
        let key = &g.tasks[d.index as usize].key;
        let Some(f) = g.errors.get(&d.index) else {
            return Failure::new(format!("dependency {:?} failed", &**key));
        };
        if f.message.starts_with(&format!("task {:?} ", &**key)) {
            Failure {
                message: Arc::from(format!("dependency {:?} failed: {}", &**key, f.message)),
                detail: f.detail.clone(),
            }
        } else {
            f.clone()
        }
    }

    /// Mark `start` erred with `own`, and every unfinished task downstream of it with
    /// `downstream`.
    fn fail_with(&mut self, start: TaskRef, own: Failure, downstream: Failure) {
        let root = start;
        let mut stack = vec![(start, own)];
        let mut finished_graph = false;
        while let Some((task, err)) = stack.pop() {
            let t = self.task(task).expect("exists");
            if !t.state.is_unfinished() {
                continue;
            }
            if let TaskState::Assigned { worker } = t.state {
                let attempt = t.attempt;
                // The reporting worker already dropped its own failed attempt.
                let still_there = self
                    .workers
                    .get_mut(&worker)
                    .is_some_and(|w| w.assigned.remove(&task));
                if still_there {
                    self.out.push(Command::ToWorker {
                        incarnation: worker,
                        msg: SchedulerToWorker::Cancel { task, attempt },
                    });
                }
            }
            self.set_state(task, TaskState::Erred);
            self.stats.tasks_erred += 1;
            let g = self.graphs.get_mut(&task.graph).expect("exists");
            g.erred += 1;
            g.progress_dirty = true;
            g.errors.insert(task.index, err.clone());
            let t = &g.tasks[task.index as usize];
            if t.is_output {
                g.outputs_pending -= 1;
                if g.session {
                    g.newly_done.push(task.index);
                }
                finished_graph = true;
            }
            let deps = t.deps.clone();
            for &d in t.dependents.iter() {
                stack.push((
                    TaskRef {
                        graph: task.graph,
                        index: d,
                    },
                    downstream.clone(),
                ));
            }
            for d in deps.iter() {
                self.release_if_unneeded(TaskRef {
                    graph: task.graph,
                    index: *d,
                });
            }
        }
        if finished_graph {
            self.maybe_finish_graph(root.graph);
        }
    }

    // === observation ===

    /// A snapshot for `rusk status`; `now` (when known) fills in heartbeat ages.
    pub fn status(&self, now: Option<Duration>) -> StatusSnapshot {
        let mut tasks = BTreeMap::new();
        for (i, name) in STATE_NAMES.iter().enumerate() {
            tasks.insert(name.to_string(), self.state_counts[i]);
        }
        let now = now.unwrap_or(self.last_tick);
        let workers = self
            .worker_order
            .iter()
            .map(|inc| {
                let w = &self.workers[inc];
                let mut counts = BTreeMap::new();
                counts.insert("assigned".to_string(), w.assigned.len() as u64);
                counts.insert("memory".to_string(), w.holds.len() as u64);
                counts.insert("running".to_string(), w.heartbeat.running as u64);
                WorkerStatus {
                    id: w.info.name.clone(),
                    host: w.info.host.clone(),
                    incarnation: inc.0,
                    pid: w.info.pid,
                    state: if w.heartbeat.vitals.unhealthy.is_some() {
                        "unhealthy"
                    } else if w.heartbeat.paused.is_some() {
                        "paused"
                    } else {
                        "running"
                    }
                    .to_string(),
                    address: w.info.data_address.clone(),
                    nthreads: w.info.nthreads,
                    tasks: counts,
                    stored_results: w.heartbeat.stored_results,
                    stored_bytes: w.heartbeat.stored_bytes,
                    spilled_bytes: w.heartbeat.spilled_bytes,
                    spilled_results: w.heartbeat.spilled_results,
                    spills_total: w.heartbeat.spills_total,
                    paused: w.heartbeat.paused.clone(),
                    heartbeat_age_ms: now.saturating_sub(w.last_seen).as_millis() as u64,
                    nanny: w.info.nanny.clone(),
                    slot: w.info.slot,
                    restarts: self.slot_report(&w.info).map_or(0, |r| r.restarts),
                    vitals: w.heartbeat.vitals.clone(),
                }
            })
            .collect();
        let mut ids: Vec<&GraphId> = self.graphs.keys().collect();
        ids.sort_unstable();
        let graphs = ids
            .into_iter()
            .map(|id| Self::progress_of(*id, &self.graphs[id]))
            .collect();
        let mut nannies: Vec<NannyStatus> = self
            .nannies
            .values()
            .map(|n| NannyStatus {
                name: n.info.name.clone(),
                host: n.info.host.clone(),
                pid: n.info.pid,
                slots: n.slots.values().cloned().collect(),
            })
            .collect();
        nannies.sort_by(|a, b| a.name.cmp(&b.name));
        StatusSnapshot {
            workers,
            tasks,
            graphs,
            nannies,
        }
    }

    /// What the worker's nanny last reported about its slot.
    fn slot_report(&self, info: &WorkerInfo) -> Option<&SlotReport> {
        let nanny = self.nanny_by_name(info.nanny.as_deref()?)?;
        self.nannies[&nanny].slots.get(&info.slot?)
    }

    /// The recovery log from sequence number `since` (for tests and the shell).
    pub fn events_since(&self, since: u64) -> impl Iterator<Item = &EventRecord> {
        self.events.iter().filter(move |r| r.seq >= since)
    }

    /// Number of tasks in each state, by name.
    pub fn task_counts(&self) -> BTreeMap<&'static str, u64> {
        STATE_NAMES.iter().copied().zip(self.state_counts).collect()
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    pub fn graph_count(&self) -> usize {
        self.graphs.len()
    }

    /// Cross-check every index against the task states. Panics with a description on the first
    /// violation. Cheap enough for tests and simulation after every step (O(tasks + edges)).
    pub fn check_invariants(&self) {
        let mut counts = [0u64; 6];
        let mut assigned_seen = 0usize;
        let mut held_seen = 0usize;
        let mut queued: FxHashSet<TaskRef> = FxHashSet::default();
        for &q in &self.ready {
            if self.task(q).is_some() {
                assert!(queued.insert(q), "{q} queued twice");
            }
        }
        for (&gid, g) in &self.graphs {
            let mut pending = 0;
            let mut done = 0;
            let mut erred = 0;
            for (i, t) in g.tasks.iter().enumerate() {
                let tref = TaskRef {
                    graph: gid,
                    index: i as u32,
                };
                counts[t.state.slot()] += 1;
                let missing = t
                    .deps
                    .iter()
                    .filter(|&&d| !matches!(g.tasks[d as usize].state, TaskState::Memory { .. }))
                    .count() as u32;
                let unfinished = t
                    .dependents
                    .iter()
                    .filter(|&&d| g.tasks[d as usize].state.is_unfinished())
                    .count() as u32;
                assert_eq!(
                    t.unfinished_dependents, unfinished,
                    "{tref} unfinished_dependents"
                );
                assert_eq!(t.queued, queued.contains(&tref), "{tref} queued flag");
                if t.is_output && !matches!(t.state, TaskState::Memory { .. } | TaskState::Erred) {
                    pending += 1;
                }
                match t.state {
                    TaskState::Waiting => {
                        assert_eq!(t.missing, missing, "{tref} missing count");
                        assert!(missing > 0, "{tref} waiting with nothing missing");
                        for &d in t.deps.iter() {
                            let ds = g.tasks[d as usize].state;
                            assert!(
                                matches!(ds, TaskState::Memory { .. }) || ds.is_unfinished(),
                                "{tref} waits on {d} which is {ds:?} and will never arrive"
                            );
                        }
                    }
                    TaskState::Ready => {
                        assert_eq!(missing, 0, "{tref} ready with missing deps");
                        assert!(t.queued, "{tref} ready but not queued");
                    }
                    TaskState::Assigned { worker } => {
                        // Only a started attempt runs on after an input was lost.
                        if t.started {
                            assert_eq!(t.missing, missing, "{tref} missing count");
                        } else {
                            assert_eq!(missing, 0, "{tref} assigned with missing deps");
                        }
                        let w = self.workers.get(&worker).unwrap_or_else(|| {
                            panic!("{tref} assigned to unknown worker {worker}")
                        });
                        assert!(
                            w.assigned.contains(&tref),
                            "{tref} not in {worker}'s assigned set"
                        );
                        assigned_seen += 1;
                    }
                    TaskState::Memory { holder, .. } => {
                        let w = self
                            .workers
                            .get(&holder)
                            .unwrap_or_else(|| panic!("{tref} held by unknown worker {holder}"));
                        assert!(w.holds.contains(&tref), "{tref} not in {holder}'s holds");
                        assert!(
                            t.is_output || unfinished > 0,
                            "{tref} in memory but unneeded"
                        );
                        held_seen += 1;
                        done += 1;
                    }
                    TaskState::Released => {
                        assert!(!t.is_output, "{tref} output released while graph alive");
                        assert_eq!(unfinished, 0, "{tref} released but needed");
                        done += 1;
                    }
                    TaskState::Erred => {
                        assert!(
                            g.errors.contains_key(&(i as u32)),
                            "{tref} erred without error"
                        );
                        erred += 1;
                    }
                }
            }
            assert_eq!(g.outputs_pending, pending, "{gid} outputs_pending");
            assert_eq!(g.done, done, "{gid} done count");
            assert_eq!(g.erred, erred, "{gid} erred count");
            let assigned = g
                .tasks
                .iter()
                .filter(|t| matches!(t.state, TaskState::Assigned { .. }))
                .count() as u64;
            assert_eq!(g.assigned, assigned, "{gid} assigned count");
        }
        assert_eq!(counts, self.state_counts, "state counts");
        let assigned_total: usize = self.workers.values().map(|w| w.assigned.len()).sum();
        let held_total: usize = self.workers.values().map(|w| w.holds.len()).sum();
        assert_eq!(
            assigned_total, assigned_seen,
            "worker assigned sets hold stale tasks"
        );
        assert_eq!(held_total, held_seen, "worker holds sets hold stale tasks");
        assert_eq!(self.worker_order.len(), self.workers.len(), "worker order");
    }
}

#[cfg(test)]
mod tests;
