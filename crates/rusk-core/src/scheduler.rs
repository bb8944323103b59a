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
//! `Assigned { started }` tells a task queued on its worker from one executing there
//! (`TaskStarted`): only a started attempt is charged when its worker dies.
//!
//! Fencing: every assignment gets a fresh [`AttemptId`]; only a report for the current attempt,
//! from the incarnation it was given to, moves a task. So a result is accepted exactly once.
use crate::graph::{compile, CompiledGraph, CompiledTask, Restrictions};
use bytes::Bytes;
use rusk_proto::graph::TaskKind;
use rusk_proto::msg::{
    Assignment, ClientToScheduler, DatasetRequest, DepLocation, EventCause, EventRecord,
    EventSource, GraphProgress, HeartbeatInfo, NannyInfo, NannyRecord, NannyStatus,
    NannyToScheduler, OutputResult, OutputState, RestartTarget, SchedulerToClient,
    SchedulerToNanny, SchedulerToWorker, SlotReport, StatusSnapshot, TaskError, WorkerInfo,
    WorkerStatus, WorkerToScheduler,
};
use rusk_proto::{AttemptId, ClientId, GraphId, Incarnation, NannyId, TaskRef};
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Tunables of the scheduler core. Defaults are documented in `docs/fault-model.md`.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// A worker silent for this long is declared lost.
    pub worker_ttl: Duration,
    /// How often workers must send a heartbeat (told to each worker on registration).
    pub heartbeat_interval: Duration,
    /// Most tasks the scheduler keeps assigned to a worker per thread: enough to hide the round
    /// trip at high task rates, few enough that a lost worker gives back little queued work.
    /// Within it the depth adapts to measured task durations (see `balance.rs`).
    pub assigned_per_thread_max: u32,
    /// Move queued, not yet started tasks from busy workers to idle ones.
    pub work_stealing: bool,
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
    /// A ready task that no live worker can ever run (it asks for a resource no worker
    /// declares, more than any declares, or only workers that are not there) fails after this
    /// long, counted while at least one worker is connected; a worker joining in time that can
    /// run it lets it run.
    pub no_worker_timeout: Duration,
    /// Emit [`Command::Journal`] records (the shell has a journal to write them to).
    pub journal: bool,
    /// After a restart from a journal: how long workers that held results may take to
    /// register again before the tasks whose results they held are recomputed, and how long
    /// clients may take to claim their graphs again before graphs nobody claimed (and that
    /// were not detached) are released.
    pub resume_grace: Duration,
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
            no_worker_timeout: Duration::from_secs(10),
            work_stealing: true,
            journal: false,
            resume_grace: Duration::from_secs(10),
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
    /// Write this to the journal (only with `SchedulerConfig::journal`). The shell writes a
    /// turn's records before it sends that turn's messages, durably when any record
    /// [`needs_sync`](crate::journal::Record::needs_sync).
    Journal(crate::journal::Record),
}

/// Why the scheduler considers a worker gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LossCause {
    ConnectionClosed(String),
    HeartbeatTimeout { silent_for: Duration },
}

impl LossCause {
    /// The event log's cause for it.
    pub fn kind(&self) -> EventCause {
        match self {
            LossCause::ConnectionClosed(_) => EventCause::Connection,
            LossCause::HeartbeatTimeout { .. } => EventCause::Heartbeat,
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
    /// Placed on `worker`; `started`: when its current attempt's `TaskStarted` arrived (it was
    /// executing there, not just queued).
    Assigned {
        worker: Incarnation,
        started: Option<Duration>,
    },
    Memory {
        holder: Incarnation,
        size: u64,
    },
    Released,
    Erred,
}

impl TaskState {
    /// Placed on a worker, not yet started there.
    fn assigned(worker: Incarnation) -> TaskState {
        TaskState::Assigned {
            worker,
            started: None,
        }
    }

    /// The worker it is assigned to, started or not.
    fn assigned_to(self) -> Option<Incarnation> {
        match self {
            TaskState::Assigned { worker, .. } => Some(worker),
            _ => None,
        }
    }

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
    /// Workers that died while an attempt of this task was executing.
    worker_deaths: u32,
    /// Time limit of one attempt in milliseconds (0: none).
    timeout_ms: u32,
    /// Where it stands in the ready queue: priority, then submission, then graph order.
    priority: i32,
    generation: u64,
    order: u64,
    /// Resources it holds while assigned and the workers it may run on (`None`: anywhere).
    restrictions: Option<Arc<Restrictions>>,
    /// Its kind for duration estimates (an index into `Scheduler::durations`).
    prefix: u32,
    /// Its estimated run time when it was assigned, counted in its worker's `expected_us`.
    est_us: u64,
    /// Its worker refused to give the current attempt up (it had started it).
    steal_refused: bool,
}

impl Task {
    /// A new task of submission `generation`, `index`-th in it, waiting for `missing` inputs.
    fn new(t: CompiledTask, generation: u64, index: u64, missing: u32) -> Task {
        Task {
            key: t.key,
            kind: t.kind,
            missing,
            unfinished_dependents: 0,
            deps: t.deps,
            dependents: Vec::new(),
            state: TaskState::Waiting,
            retries_left: t.retries,
            attempt: AttemptId(0),
            is_output: false,
            queued: false,
            worker_deaths: 0,
            timeout_ms: t.timeout_ms,
            priority: t.priority,
            generation,
            order: t.order.unwrap_or(index),
            restrictions: t.restrictions,
            prefix: 0,
            est_us: 0,
            steal_refused: false,
        }
    }

    /// When its current attempt's `TaskStarted` arrived (`None`: not assigned, or queued).
    fn started_at(&self) -> Option<Duration> {
        match self.state {
            TaskState::Assigned { started, .. } => started,
            _ => None,
        }
    }

    /// Its current attempt is executing on its worker (not just queued there).
    fn started(&self) -> bool {
        self.started_at().is_some()
    }

    fn ready_key(&self, task: TaskRef) -> ReadyKey {
        ReadyKey {
            priority: Reverse(self.priority),
            generation: self.generation,
            order: self.order,
            task,
        }
    }
}

/// A ready task's place in the queue: highest priority first, then earliest submission, then
/// the submitter's graph order (Dask's `(-priority, generation, order)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyKey {
    priority: Reverse<i32>,
    generation: u64,
    order: u64,
    task: TaskRef,
}

/// Ready tasks that share one set of restrictions, waiting for a worker that satisfies them
/// to have room (and, for resources, the amounts free).
struct Class {
    restrictions: Arc<Restrictions>,
    tasks: BTreeSet<ReadyKey>,
    /// Since when no live worker could ever run these tasks (with at least one worker alive).
    unrunnable_since: Option<Duration>,
}

struct Graph {
    /// Restored from the journal and not yet claimed by a client (`LocateOutputs`).
    resumed: bool,
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
    /// Pins on its tasks (`shared`): while > 0, the graph outlives its client.
    pinned: u32,
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
    /// `info.name`, shared (the journal names holders by it).
    name: Arc<str>,
    address: Arc<str>,
    last_seen: Duration,
    assigned: FxHashSet<TaskRef>,
    holds: FxHashSet<TaskRef>,
    heartbeat: HeartbeatInfo,
    /// Resources held by the tasks assigned to it (kept by `set_state`).
    resources_used: FxHashMap<Box<str>, f64>,
    /// Estimated run time of the tasks assigned to it, in µs (kept by `set_state`).
    expected_us: u64,
    /// Steals under way towards it (their tasks will come here if given up).
    incoming: u32,
    /// Assigned tasks that seceded (`rusk.secede()`: waiting for tasks they submitted): they
    /// hold no thread slot, so they do not count against its capacity.
    seceded: FxHashSet<TaskRef>,
}

impl Worker {
    /// May this worker take another task estimated at `est_us`? Not while it reports itself
    /// unhealthy or paused (it keeps its work and serves its results, but gets nothing new),
    /// nor at `per_thread_max` tasks per thread; past `ASSIGNED_PER_THREAD_MIN` per thread only
    /// while its assigned work stays within `TARGET_WORK_PER_THREAD` per thread.
    fn has_room(&self, per_thread_max: u32, est_us: u64) -> bool {
        let threads = self.info.nthreads.max(1) as usize;
        let n = self.assigned.len() - self.seceded.len();
        let floor = ASSIGNED_PER_THREAD_MIN.min(per_thread_max) as usize;
        let target = TARGET_WORK_PER_THREAD.as_micros() as u64 * threads as u64;
        self.heartbeat.vitals.unhealthy.is_none()
            && self.heartbeat.paused.is_none()
            && n < threads * per_thread_max as usize
            && (n < threads * floor || self.expected_us + est_us <= target)
    }

    /// Does it answer to `name` (its id, its data address or its host)?
    fn answers_to(&self, name: &str) -> bool {
        self.info.name == name || self.info.data_address == name || self.info.host == name
    }

    /// May it ever run a task with these restrictions (resources declared, names matching)?
    fn could_run(&self, r: &Restrictions) -> bool {
        let named = r.loose
            || r.workers
                .as_deref()
                .is_none_or(|names| names.iter().any(|n| self.answers_to(n)));
        named && self.declares(r)
    }

    /// Does it declare at least the resources `r` asks for?
    fn declares(&self, r: &Restrictions) -> bool {
        r.resources
            .iter()
            .all(|(n, a)| self.info.resources.get(&**n).is_some_and(|d| d >= a))
    }

    /// Are the resources `r` asks for free on it now?
    fn has_free(&self, r: &Restrictions) -> bool {
        r.resources.iter().all(|(n, a)| {
            let declared = self.info.resources.get(&**n).copied().unwrap_or(0.0);
            let used = self.resources_used.get(n).copied().unwrap_or(0.0);
            used + a <= declared + RESOURCE_EPSILON
        })
    }

    /// `name {GPU=2, MEM=64000000000}`, for error messages.
    fn offer_text(&self) -> String {
        let parts: Vec<String> = self
            .info
            .resources
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        format!("{} {{{}}}", self.info.name, parts.join(", "))
    }
}

/// Give back the resources `r` held on `w`.
fn release_resources(w: &mut Worker, r: &Restrictions) {
    for (n, a) in &r.resources {
        if let Some(u) = w.resources_used.get_mut(n) {
            *u -= a;
            if *u <= RESOURCE_EPSILON {
                w.resources_used.remove(n);
            }
        }
    }
}

pub use balance::{
    key_prefix, ASSIGNED_PER_THREAD_MIN, PREFIXES_TRACKED_MAX, STEAL_BANDWIDTH_BYTES_PER_S,
    STEAL_WAIT_MIN, TARGET_WORK_PER_THREAD, UNKNOWN_TASK_DURATION,
};
use balance::{DurationStats, PendingSteal};

/// Slack in resource arithmetic (amounts are f64; sums of fractions are not exact).
const RESOURCE_EPSILON: f64 = 1e-9;

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
    /// Tasks failed because no worker could run them (`no_worker_timeout`).
    pub tasks_unrunnable: u64,
    /// `Steal` requests sent, and tasks the victims gave up.
    pub steals_requested: u64,
    pub tasks_stolen: u64,
    /// Replicas workers stored and the scheduler counted, and primaries they took over from.
    pub replicas_stored: u64,
    pub replicas_promoted: u64,
    /// Results workers still held when they registered again, taken over instead of
    /// recomputed (after a scheduler restart or a dropped connection).
    pub results_adopted: u64,
    /// Attempts still running on a worker that registered again, taken over instead of run
    /// a second time (`WorkerInfo::running`).
    pub attempts_adopted: u64,
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
    /// Ready tasks without restrictions, in priority order (entries are removed lazily).
    ready: BTreeSet<ReadyKey>,
    /// Ready tasks with restrictions, by class (the canonical text of their restrictions).
    classes: BTreeMap<Box<str>, Class>,
    /// Submissions so far (`Submit` and `Extend`): the `generation` of the next one.
    next_generation: u64,
    /// The `now` of the event being handled.
    now: Duration,
    /// Task kinds (key prefixes) seen, and their measured durations (index 0: the rest).
    prefixes: FxHashMap<Box<str>, u32>,
    durations: Vec<DurationStats>,
    /// Steals asked for and not yet answered, by task.
    steals: FxHashMap<TaskRef, PendingSteal>,
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
    /// Files clients uploaded (`Client.upload_file`), sent to every worker that joins.
    uploads: uploads::Uploads,
    /// Keys shared between clients: holds, keeps, datasets, adopt links.
    shared: shared::Shared,
    /// Extra copies of results in memory, besides the primary holder (see `replicas.rs`).
    replicas: FxHashMap<TaskRef, Vec<Incarnation>>,
    /// The journal's bookkeeping, and what a resumed scheduler waits for (see `resume.rs`).
    resume: resume::ResumeState,
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
            ready: BTreeSet::new(),
            classes: BTreeMap::new(),
            next_generation: 0,
            now: Duration::ZERO,
            prefixes: FxHashMap::default(),
            durations: vec![DurationStats::default()],
            steals: FxHashMap::default(),
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
            uploads: uploads::Uploads::default(),
            shared: shared::Shared::default(),
            replicas: FxHashMap::default(),
            resume: resume::ResumeState::default(),
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
        self.now = now;
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
        self.retire_unpinned();
        if self.resume.pending || self.resume.grace_until.is_some() {
            self.resume_tick(now);
        }
        self.schedule();
        std::mem::swap(&mut self.out, out);
    }

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
        if !self.classes.is_empty() {
            self.fail_unrunnable(now);
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
        // Estimated work and resources are held exactly while the task is assigned to a worker.
        if let TaskState::Assigned { worker, .. } = old {
            if let Some(w) = self.workers.get_mut(&worker) {
                w.expected_us -= t.est_us;
                if !w.seceded.is_empty() {
                    w.seceded.remove(&task);
                }
            }
        }
        if let TaskState::Assigned { worker, .. } = new {
            let w = self
                .workers
                .get_mut(&worker)
                .expect("assigned to a live worker");
            w.expected_us += t.est_us;
        }
        if let Some(r) = &t.restrictions {
            if let TaskState::Assigned { worker, .. } = old {
                if let Some(w) = self.workers.get_mut(&worker) {
                    release_resources(w, r);
                }
            }
            if let TaskState::Assigned { worker, .. } = new {
                let w = self
                    .workers
                    .get_mut(&worker)
                    .expect("assigned to a live worker");
                for (n, a) in &r.resources {
                    *w.resources_used.entry(n.clone()).or_default() += a;
                }
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
        if delta != 0 {
            if let Some(src) = self.adopt_source(task) {
                self.shift_pin(src, delta); // an unfinished adopt task pins its source
            }
        }
        if was_assigned && !self.steals.is_empty() {
            self.drop_steal(task); // the task left its victim: that request is moot
        }
        let left_memory =
            matches!(old, TaskState::Memory { .. }) && !matches!(new, TaskState::Memory { .. });
        if left_memory && !self.replicas.is_empty() {
            self.drop_replicas(task); // its extra copies go with it
        }
    }

    fn is_needed(&self, task: TaskRef) -> bool {
        let t = self.task(task).expect("exists");
        t.is_output || t.unfinished_dependents > 0 || self.is_pinned(task)
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
}

mod balance;
mod graphs;
mod invariants;
mod nannies;
mod placement;
mod recovery;
mod replicas;
mod reports;
mod restricted;
mod resume;
mod shared;
mod status;
mod uploads;
mod workers;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_balance;
#[cfg(test)]
mod tests_placement;
#[cfg(test)]
mod tests_replicas;
#[cfg(test)]
mod tests_resume;
#[cfg(test)]
mod tests_shared;
