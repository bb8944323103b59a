//! Messages. Each connection carries frames; each frame is a batch (`Vec`) of one of the enums
//! below, so that a busy scheduler sends one frame per worker per loop turn, not one per task.
use crate::graph::{GraphSpec, TaskKind, TaskSpec as GraphSpecTask};
pub use crate::NannyId;
use crate::{AttemptId, GraphId, Incarnation, TaskRef};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Worker → scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerToScheduler {
    /// First message of a worker connection.
    Register(WorkerInfo),
    /// Sent every heartbeat interval from the worker's event loop.
    Heartbeat(HeartbeatInfo),
    /// The attempt finished and the worker now holds `size` bytes of result.
    TaskDone {
        task: TaskRef,
        attempt: AttemptId,
        size: u64,
    },
    /// The task's own code failed (a worker dying is never reported this way).
    TaskFailed {
        task: TaskRef,
        attempt: AttemptId,
        error: TaskError,
    },
    /// The worker could not fetch `dep` from the worker the scheduler named.
    MissingDep {
        task: TaskRef,
        attempt: AttemptId,
        dep: TaskRef,
    },
    /// The attempt is actually executing (not just queued). Only attempts running when a worker
    /// dies count towards a poison task. Not sent for attempts that finished within the same
    /// batch.
    TaskStarted { task: TaskRef, attempt: AttemptId },
    /// The running attempt stopped holding a thread slot while it waits (`rusk.secede()`): it
    /// no longer counts against the worker's capacity. Sent after its `TaskStarted`.
    TaskSeceded { task: TaskRef, attempt: AttemptId },
    /// The seceded attempt holds a thread slot again (`rusk.rejoin()`, the end of a
    /// `worker_client()` block): it counts against the worker's capacity again.
    TaskRejoined { task: TaskRef, attempt: AttemptId },
    /// Something the worker detected and handled on its own; the scheduler records it in the
    /// recovery log (`rusk events`, the dashboard).
    Event(WorkerEvent),
    /// Answer to `Steal`: `stolen` when the worker gave the attempt up before starting it (it
    /// forgot it and will never run it); otherwise it keeps (or already finished) it.
    StealResponse {
        task: TaskRef,
        attempt: AttemptId,
        stolen: bool,
    },
    /// Answer to `Replicate`: the worker now stores a copy of `task`'s result (of `attempt`),
    /// `size` bytes, and serves it like its own results.
    Replicated {
        task: TaskRef,
        attempt: AttemptId,
        size: u64,
    },
}

/// A worker's own recoveries and warnings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerEvent {
    /// A Python executor was killed (or died) and replaced.
    ExecutorReplaced {
        pid: u32,
        cause: ExecutorCause,
        /// What was observed (silence, exit status), and the stacks when they were captured.
        observed: String,
    },
    /// A Python executor is silent but computing (a long C call holding the GIL): left
    /// running until the busy timeout.
    ExecutorBusy { pid: u32, silent_ms: u64 },
    /// A spilled result's file was corrupt or missing: the result is lost (recomputed).
    SpillLost { task: TaskRef },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutorCause {
    /// Silent without using CPU for the hang timeout.
    Hung,
    /// Silent while computing for the busy timeout.
    BusyTooLong,
    /// Died on its own (crash, signal, exit).
    Died,
    /// Broke the pipe protocol.
    Protocol,
}

impl WorkerEvent {
    /// The recovery log's `cause`, `observed` and `action` for this event.
    pub fn describe(&self) -> (EventCause, String, &'static str) {
        match self {
            WorkerEvent::ExecutorReplaced {
                pid,
                cause,
                observed,
            } => (
                match cause {
                    ExecutorCause::Hung => EventCause::ExecutorHung,
                    ExecutorCause::BusyTooLong => EventCause::ExecutorBusyTimeout,
                    ExecutorCause::Died => EventCause::ExecutorDied,
                    ExecutorCause::Protocol => EventCause::ExecutorProtocol,
                },
                format!("executor pid {pid}: {observed}"),
                "executor replaced; its running task failed (retries apply), queued tasks run in the new one",
            ),
            WorkerEvent::ExecutorBusy { pid, silent_ms } => (
                EventCause::ExecutorBusy,
                format!("executor pid {pid} silent for {silent_ms} ms while using CPU (a long C call holding the GIL)"),
                "left running until --executor-busy-timeout",
            ),
            WorkerEvent::SpillLost { task } => (
                EventCause::SpillLost,
                format!("the spill file of {task} is corrupt or missing"),
                "result dropped; recomputed from its lineage where still needed",
            ),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Stable name of the worker (its slot); generated when not given.
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub nthreads: u32,
    /// Where peers and clients fetch results from (`host:port`).
    pub data_address: String,
    /// The nanny supervising this worker, and its slot there.
    pub nanny: Option<String>,
    pub slot: Option<u32>,
    /// Named resources this worker offers (`--resources "GPU=2,MEM=64e9"`): tasks assigned to
    /// it at once never ask for more in all.
    pub resources: BTreeMap<String, f64>,
    /// Results it already stores, with their sizes: empty on a first registration; after it
    /// reconnected (the scheduler restarted, or the connection dropped), what it kept, so the
    /// scheduler adopts what it still needs instead of recomputing it. At most
    /// [`HELD_RESULTS_MAX`] entries are sent; the rest are dropped by the worker.
    pub held: Vec<(TaskRef, u64)>,
    /// Attempts still running here when it registers again (they outlived the connection):
    /// the scheduler lets a still-needed one finish instead of running the task again. At most
    /// [`HELD_RESULTS_MAX`] entries.
    #[serde(default)]
    pub running: Vec<(TaskRef, AttemptId)>,
}

/// Stored results a worker reports when it registers again (`WorkerInfo::held`).
pub const HELD_RESULTS_MAX: usize = 1_000_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatInfo {
    pub running: u32,
    /// Results stored, in memory or spilled to disk.
    pub stored_results: u64,
    /// Managed memory: bytes of the results held in memory.
    pub stored_bytes: u64,
    /// Bytes and count of the results spilled to disk, and spills so far.
    pub spilled_bytes: u64,
    pub spilled_results: u64,
    pub spills_total: u64,
    /// Set while the worker is paused (memory over its pause threshold, or its spill disk
    /// full): it starts no new tasks but still serves its results.
    pub paused: Option<String>,
    /// What the worker measured of itself (sampled by its shell).
    pub vitals: Vitals,
}

/// A worker's health measurements, sent with every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vitals {
    /// How late the event loop woke up for its last timer, in ms (a busy or starved loop).
    pub loop_lag_ms: u32,
    /// CPU time used by the worker process and its children so far, in seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub open_fds: u32,
    /// Free space in the worker's work directory.
    pub disk_free_bytes: Option<u64>,
    /// Bytes of results fetched from peers so far.
    pub bytes_fetched: u64,
    /// Python executor processes alive, and replaced so far (killed after a hang or crash).
    pub executors_alive: u32,
    pub executors_replaced: u64,
    /// Freed shared memory the worker keeps to write the next received values into
    /// (`rusk_core::segment_pool`): not results, given back when idle or when memory is short.
    pub reuse_pool_bytes: u64,
    /// Set when the worker is alive but should not get new tasks (for example: free disk
    /// under its threshold). The scheduler stops placing tasks on it until it clears.
    pub unhealthy: Option<String>,
}

/// Why a task's own code failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub message: String,
    /// Exit code of a `cmd` task, when it exited non-zero.
    pub exit_code: Option<i32>,
    /// Opaque details for the client, carried unchanged to it: for a Python task, the pickled
    /// exception and remote traceback, so the client can re-raise the original type.
    pub detail: Option<Bytes>,
}

/// Scheduler → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SchedulerToWorker {
    /// Reply to `Register`.
    Welcome {
        incarnation: Incarnation,
        heartbeat_interval_ms: u64,
    },
    /// Run this attempt once all `deps` are local.
    Assign(Arc<Assignment>),
    /// Forget this attempt (drop it if queued; ignore its result if running).
    Cancel { task: TaskRef, attempt: AttemptId },
    /// Drop these stored results: nobody needs them any more.
    Release { tasks: Vec<TaskRef> },
    /// A file a client uploaded (`Client.upload_file`): write it where the Python executors
    /// import from.
    Upload { name: String, data: Bytes },
    /// Give this attempt back if it has not started (work stealing); answered by
    /// `StealResponse`.
    Steal { task: TaskRef, attempt: AttemptId },
    /// Fetch a copy of `task`'s result (produced by `attempt`) from the worker at `from` and
    /// keep it as a stored result (`Client.replicate`, `scatter(broadcast=True)`). Answered with
    /// `Replicated` once stored; a fetch that fails is dropped silently (the client asks again).
    Replicate {
        task: TaskRef,
        attempt: AttemptId,
        from: Arc<str>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskRef,
    pub attempt: AttemptId,
    pub kind: Arc<TaskKind>,
    /// Inputs in the task's dependency order.
    pub deps: Vec<DepLocation>,
    /// Time limit of this attempt, from its start.
    pub timeout_ms: Option<u64>,
    /// The task's priority: the worker starts its queued tasks highest first.
    pub priority: i32,
    /// The scheduler's estimate of its run time in µs (from earlier tasks of its kind), for
    /// the worker's logs and its own scheduling.
    pub expected_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepLocation {
    pub task: TaskRef,
    /// Data address of the worker holding it; `None` when it is the assignee itself.
    pub holder: Option<Arc<str>>,
}

/// Client → scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientToScheduler {
    /// Submit a graph. With `detach` the graph's outputs are kept for later; without it they are
    /// released when this client disconnects or sends `ReleaseGraph`.
    Submit {
        graph: GraphSpec,
        detach: bool,
    },
    /// Open a session graph: an empty graph that `Extend` grows (the Python client's futures).
    /// Its outputs are reported one by one as they finish (`OutputsReady`), not all at once.
    Open,
    /// Add tasks to a session graph. Dependencies may name any key already in the graph or
    /// earlier in `tasks`; `outputs` are the keys the client wants reported.
    Extend {
        graph: GraphId,
        tasks: Vec<GraphSpecTask>,
        outputs: Vec<String>,
        /// Sent again after reconnecting to a restarted scheduler, which may already have it
        /// from its journal: when every key is in the graph already, it is acknowledged again
        /// (`tasks: 0`) instead of rejected for duplicate keys.
        #[serde(default)]
        resent: bool,
    },
    /// The client no longer wants these outputs (futures dropped or cancelled): release their
    /// results, and cancel them if nothing else needs them.
    ReleaseKeys {
        graph: GraphId,
        keys: Vec<String>,
    },
    /// Ask again where the outputs are (after a fetch from a worker failed).
    LocateOutputs {
        graph: GraphId,
    },
    ReleaseGraph {
        graph: GraphId,
    },
    Status,
    /// Recovery events with sequence number >= `since`.
    Events {
        since: u64,
    },
    /// Operator restart (also revives a slot that failed after a crash loop).
    Restart {
        target: RestartTarget,
    },
    /// Operator stop of one nanny (by name) or all: their workers stop for good.
    StopNanny {
        nanny: Option<String>,
    },
    /// A file for every current and future worker's Python executors (`Client.upload_file`):
    /// a `.py` module or a `.zip`/`.egg`/`.whl` archive. Answered with `Done` or `Error`.
    Upload {
        name: String,
        data: Bytes,
    },
    /// Keep these keys of a session graph (any client's) and report each as it finishes, with
    /// `OutputsReady` for that graph; finished ones are reported at once. Idempotent: sending it
    /// again reports again (after a fetch failed). A key the graph does not have is reported
    /// failed. Dropped by `Unhold` or when this client leaves.
    Hold {
        graph: GraphId,
        keys: Vec<String>,
    },
    Unhold {
        graph: GraphId,
        keys: Vec<String>,
    },
    /// Keep computing these keys of a session graph until they finish, even if every client
    /// lets go of them (`fire_and_forget`).
    Keep {
        graph: GraphId,
        keys: Vec<String>,
    },
    /// Named datasets shared between clients (`Client.publish_dataset`).
    Dataset(DatasetRequest),
    /// Copy these finished keys of a session graph to more workers, up to `n` copies in all
    /// (`None`: every worker), on the workers named in `workers` only if given (names as
    /// `workers=` accepts). Not answered: `WhoHas` tells where the copies are. Keys not in
    /// memory are skipped.
    Replicate {
        graph: GraphId,
        keys: Vec<String>,
        n: Option<u32>,
        workers: Option<Vec<String>>,
    },
    /// Where the results of these keys are: answered with `WhoHas`.
    WhoHas {
        graph: GraphId,
        keys: Vec<String>,
    },
}

/// A request about named datasets. Answered with `Dataset`, `DatasetNames`, `Done` or `Error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DatasetRequest {
    /// Store `data` (opaque to the scheduler: the client's pickle) under `name`, and keep the
    /// keys it refers to (`refs`: session graph and key) for as long as it is published.
    Publish {
        name: String,
        data: Bytes,
        refs: Vec<(GraphId, String)>,
        replace: bool,
    },
    Get {
        name: String,
    },
    Unpublish {
        name: String,
    },
    List,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartTarget {
    /// A worker id as in `rusk status` (`nanny/slot` for supervised workers).
    Worker(String),
    All,
}

/// Scheduler → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SchedulerToClient {
    Submitted {
        graph: GraphId,
        tasks: u64,
    },
    Rejected {
        error: String,
    },
    Progress(GraphProgress),
    /// Reply to `Extend`.
    Extended {
        graph: GraphId,
        tasks: u64,
    },
    /// Reply to `LocateOutputs`: the graph is this client's now; its finished outputs follow
    /// (`OutputsReady` or `GraphFinished`), the others come when done. An unknown graph gets
    /// `Error` instead.
    Located {
        graph: GraphId,
    },
    /// Outputs of a session graph that just finished (in memory somewhere, or failed).
    OutputsReady {
        graph: GraphId,
        outputs: Vec<OutputState>,
    },
    /// Every output is either in memory somewhere or failed.
    GraphFinished {
        graph: GraphId,
        outputs: Vec<OutputState>,
    },
    Status(Box<StatusSnapshot>),
    Error {
        message: String,
    },
    Events {
        records: Vec<EventRecord>,
        next: u64,
    },
    /// An operator request was carried out.
    Done {
        message: String,
    },
    /// A published dataset (`DatasetRequest::Get`).
    Dataset {
        name: String,
        data: Bytes,
    },
    /// The names of the published datasets (`DatasetRequest::List`).
    DatasetNames {
        names: Vec<String>,
    },
    /// Reply to `WhoHas`: for each key asked, the data addresses of the workers holding its
    /// result (the first is the primary copy; empty when it is not in memory or unknown).
    WhoHas {
        graph: GraphId,
        holders: Vec<(String, Vec<Arc<str>>)>,
    },
}

/// One entry of the recovery log (`rusk events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub time_unix_ms: u64,
    /// Who observed it.
    pub source: EventSource,
    pub host: String,
    pub nanny: Option<String>,
    pub slot: Option<u32>,
    pub worker: Option<String>,
    pub incarnation: Option<u64>,
    pub new_incarnation: Option<u64>,
    pub cause: EventCause,
    /// What was observed, in words (exit code or signal, silence, RSS, ...).
    pub observed: String,
    /// What was done about it.
    pub action: String,
    pub detection_ms: Option<u64>,
    pub recovery_ms: Option<u64>,
}

/// Who observed a recovery-log entry. Its name ([`EventSource::as_str`], also its serde name,
/// so the JSON of `rusk events --json` and `/api/events`) is what logs and metrics show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSource {
    Scheduler,
    Nanny,
    /// A worker's own recoveries and warnings (`WorkerEvent`), logged by the scheduler.
    Worker,
}

impl EventSource {
    /// Every source, in declaration order.
    pub const ALL: [EventSource; 3] = [
        EventSource::Scheduler,
        EventSource::Nanny,
        EventSource::Worker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Scheduler => "scheduler",
            EventSource::Nanny => "nanny",
            EventSource::Worker => "worker",
        }
    }
}

impl std::fmt::Display for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a recovery-log entry was written, in a word. Its name ([`EventCause::as_str`], also its
/// serde name, so the JSON of `rusk events --json` and `/api/events`) is what logs, the metrics'
/// `cause` label and the dashboard show: renaming a variant's string breaks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventCause {
    // Nanny restarts (`rusk_core::nanny::RestartCause::kind`) and crash loops.
    /// The worker exited by itself.
    Crash,
    /// The worker exited because it lost its scheduler connection; also the scheduler's
    /// own when a worker's connection closes.
    Connection,
    /// The worker's event loop stopped pinging its nanny.
    Watchdog,
    /// The scheduler saw no heartbeat (and asked the nanny for a restart).
    Heartbeat,
    /// The worker's memory went over its limit.
    Memory,
    /// `rusk restart`.
    Operator,
    /// The worker never pinged its nanny after being spawned.
    StartTimeout,
    /// The worker process could not be started.
    SpawnFailed,
    /// A slot backing off after crashes in a row, or failed after too many.
    CrashLoop,
    // The scheduler's own.
    /// A task failed for running on too many workers that died.
    PoisonTask,
    /// Tasks failed because no worker could ever run them.
    Unrunnable,
    /// A nanny's connection closed.
    NannyGone,
    /// The scheduler started from its journal.
    SchedulerRestart,
    /// A worker registered again holding results.
    Rejoin,
    /// A worker paused (memory) or resumed.
    Paused,
    Resumed,
    /// A worker reported itself unhealthy, or healthy again.
    Unhealthy,
    Healthy,
    // A worker's own (`WorkerEvent`).
    ExecutorHung,
    ExecutorBusyTimeout,
    ExecutorDied,
    ExecutorProtocol,
    ExecutorBusy,
    SpillLost,
}

impl EventCause {
    /// Every cause, in declaration order.
    pub const ALL: [EventCause; 24] = [
        EventCause::Crash,
        EventCause::Connection,
        EventCause::Watchdog,
        EventCause::Heartbeat,
        EventCause::Memory,
        EventCause::Operator,
        EventCause::StartTimeout,
        EventCause::SpawnFailed,
        EventCause::CrashLoop,
        EventCause::PoisonTask,
        EventCause::Unrunnable,
        EventCause::NannyGone,
        EventCause::SchedulerRestart,
        EventCause::Rejoin,
        EventCause::Paused,
        EventCause::Resumed,
        EventCause::Unhealthy,
        EventCause::Healthy,
        EventCause::ExecutorHung,
        EventCause::ExecutorBusyTimeout,
        EventCause::ExecutorDied,
        EventCause::ExecutorProtocol,
        EventCause::ExecutorBusy,
        EventCause::SpillLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventCause::Crash => "crash",
            EventCause::Connection => "connection",
            EventCause::Watchdog => "watchdog",
            EventCause::Heartbeat => "heartbeat",
            EventCause::Memory => "memory",
            EventCause::Operator => "operator",
            EventCause::StartTimeout => "start-timeout",
            EventCause::SpawnFailed => "spawn-failed",
            EventCause::CrashLoop => "crash-loop",
            EventCause::PoisonTask => "poison-task",
            EventCause::Unrunnable => "unrunnable",
            EventCause::NannyGone => "nanny-gone",
            EventCause::SchedulerRestart => "scheduler-restart",
            EventCause::Rejoin => "rejoin",
            EventCause::Paused => "paused",
            EventCause::Resumed => "resumed",
            EventCause::Unhealthy => "unhealthy",
            EventCause::Healthy => "healthy",
            EventCause::ExecutorHung => "executor-hung",
            EventCause::ExecutorBusyTimeout => "executor-busy-timeout",
            EventCause::ExecutorDied => "executor-died",
            EventCause::ExecutorProtocol => "executor-protocol",
            EventCause::ExecutorBusy => "executor-busy",
            EventCause::SpillLost => "spill-lost",
        }
    }
}

impl std::fmt::Display for EventCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Nanny → scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NannyToScheduler {
    /// First message of a nanny connection.
    Register(NannyInfo),
    /// Current state of some slots.
    Slots(Vec<SlotReport>),
    /// A recovery the nanny observed or carried out.
    Record(NannyRecord),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NannyInfo {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub nworkers: u32,
    pub nthreads: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport {
    pub slot: u32,
    pub state: String,
    pub pid: Option<u32>,
    pub incarnation: Option<u64>,
    pub restarts: u32,
    pub last_cause: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NannyRecord {
    pub slot: u32,
    pub cause: EventCause,
    pub observed: String,
    pub action: String,
    pub incarnation: Option<u64>,
    pub new_incarnation: Option<u64>,
    pub detection_ms: Option<u64>,
    pub recovery_ms: Option<u64>,
}

/// Scheduler → nanny.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerToNanny {
    Welcome,
    /// The scheduler saw `incarnation` go silent: restart it (a no-op if it is already gone).
    RestartWorker {
        slot: u32,
        incarnation: u64,
        silent_for_ms: u64,
    },
    /// Operator restart of one slot, or all (`None`).
    OperatorRestart {
        slot: Option<u32>,
    },
    /// Operator stop: stop every worker for good and exit.
    Stop,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphProgress {
    pub graph: u64,
    pub total: u64,
    pub done: u64,
    pub erred: u64,
    /// Tasks assigned to a worker (running there or queued); the rest of the unfinished ones
    /// (`total - done - erred - assigned`) wait for inputs or for room.
    pub assigned: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputState {
    pub key: String,
    pub result: OutputResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputResult {
    Ready {
        task: TaskRef,
        holder: String,
        size: u64,
    },
    Failed {
        error: String,
        /// The failed task's `TaskError::detail` (for a dependent: its failed ancestor's).
        detail: Option<Bytes>,
    },
}

/// What `rusk status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub workers: Vec<WorkerStatus>,
    pub tasks: BTreeMap<String, u64>,
    pub graphs: Vec<GraphProgress>,
    pub nannies: Vec<NannyStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NannyStatus {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub slots: Vec<SlotReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub host: String,
    pub incarnation: u64,
    pub pid: u32,
    pub state: String,
    pub address: String,
    pub nthreads: u32,
    pub tasks: BTreeMap<String, u64>,
    pub stored_results: u64,
    /// Managed memory: bytes of results held in memory.
    pub stored_bytes: u64,
    /// Results spilled to disk: their bytes and count, and spills so far.
    pub spilled_bytes: u64,
    pub spilled_results: u64,
    pub spills_total: u64,
    /// Why the worker is paused (memory), when it is (`state` is then `paused`).
    pub paused: Option<String>,
    pub heartbeat_age_ms: u64,
    pub nanny: Option<String>,
    pub slot: Option<u32>,
    /// Restarts of this worker's slot (0 for unsupervised workers).
    pub restarts: u32,
    /// The worker's last reported measurements (`state` is `unhealthy` when
    /// `vitals.unhealthy` is set).
    pub vitals: Vitals,
    /// The resources it declared (`--resources`).
    pub resources: BTreeMap<String, f64>,
}

/// Peer (worker or client) → worker data server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    Get {
        id: u64,
        tasks: Vec<TaskRef>,
    },
    /// A client puts a value (`Client.scatter`): `size` raw bytes follow this frame, stored
    /// under `token` until a `TaskKind::Put` task adopts them (or `PUT_PENDING_TTL` passes).
    Put {
        id: u64,
        token: u128,
        size: u64,
    },
    /// The worker's recent log lines (`Client.get_worker_logs`).
    Logs {
        id: u64,
    },
    /// The values of `Get` request `id` have been read to the end (no reply): the holder may
    /// reuse the memory it sent them from (`rusk_net::segment::give_back`). Sent after a reply
    /// with a value of at least `INLINE_VALUE_MAX` bytes.
    Read {
        id: u64,
    },
}

/// Worker data server → peer: the size of each value asked for (`None` for one the worker does
/// not hold), in the order asked. The values themselves follow this frame on the connection as
/// raw bytes, back to back, in the same order (see `rusk_net::transfer`): no frame ever holds a
/// value, so a value's size is bounded only by the memory (and spill disk) of the two ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    Sizes {
        id: u64,
        items: Vec<(TaskRef, Option<u64>)>,
    },
    /// Reply to `Put`: stored, or refused (over a bound, worker shutting down).
    Put { id: u64, refused: Option<String> },
    /// Reply to `Logs`: `(level, line)`, oldest first.
    Logs {
        id: u64,
        lines: Vec<(String, String)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recovery log's names are what the JSON, the CLI, the dashboard and the metrics show:
    /// `as_str` and serde agree, and `ALL` lists every variant (postcard numbers variants in
    /// declaration order, and knows none past the last).
    #[test]
    fn event_names_are_their_serde_names_and_all_lists_every_variant() {
        for (i, c) in EventCause::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
            assert_eq!(
                serde_json::from_str::<EventCause>(&format!("\"{c}\"")).unwrap(),
                c
            );
            assert_eq!(crate::encode(&c).unwrap(), [i as u8]);
        }
        assert!(crate::decode::<EventCause>(&[EventCause::ALL.len() as u8]).is_err());
        for (i, s) in EventSource::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<EventSource>(&format!("\"{s}\"")).unwrap(),
                s
            );
            assert_eq!(crate::encode(&s).unwrap(), [i as u8]);
        }
        assert!(crate::decode::<EventSource>(&[EventSource::ALL.len() as u8]).is_err());
        assert_eq!(EventCause::PoisonTask.as_str(), "poison-task");
        assert_eq!(
            EventCause::ExecutorBusyTimeout.as_str(),
            "executor-busy-timeout"
        );
    }

    /// A record in JSON keeps the strings the Python client, the dashboard and `rusk events
    /// --json` read; in postcard it round-trips.
    #[test]
    fn an_event_record_is_json_with_string_source_and_cause() {
        let r = EventRecord {
            seq: 1,
            time_unix_ms: 2,
            source: EventSource::Nanny,
            host: "h".into(),
            nanny: Some("n0".into()),
            slot: Some(0),
            worker: None,
            incarnation: None,
            new_incarnation: None,
            cause: EventCause::CrashLoop,
            observed: "o".into(),
            action: "a".into(),
            detection_ms: None,
            recovery_ms: None,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["source"], "nanny");
        assert_eq!(json["cause"], "crash-loop");
        assert_eq!(serde_json::from_value::<EventRecord>(json).unwrap(), r);
        let bytes = crate::encode(&r).unwrap();
        assert_eq!(crate::decode::<EventRecord>(&bytes).unwrap(), r);
    }
}
