//! Messages. Each connection carries frames; each frame is a batch (`Vec`) of one of the enums
//! below, so that a busy scheduler sends one frame per worker per loop turn, not one per task.
use crate::graph::{GraphSpec, TaskKind};
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Stable name of the worker (its slot); generated when not given.
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub nthreads: u32,
    /// Where peers and clients fetch results from (`host:port`).
    pub data_address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatInfo {
    pub running: u32,
    pub stored_results: u64,
    pub stored_bytes: u64,
}

/// Why a task's own code failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub message: String,
    /// Exit code of a `cmd` task, when it exited non-zero.
    pub exit_code: Option<i32>,
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskRef,
    pub attempt: AttemptId,
    pub kind: Arc<TaskKind>,
    /// Inputs in the task's dependency order.
    pub deps: Vec<DepLocation>,
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
    /// Ask again where the outputs are (after a fetch from a worker failed).
    LocateOutputs {
        graph: GraphId,
    },
    ReleaseGraph {
        graph: GraphId,
    },
    Status,
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
    /// Every output is either in memory somewhere or failed.
    GraphFinished {
        graph: GraphId,
        outputs: Vec<OutputState>,
    },
    Status(Box<StatusSnapshot>),
    Error {
        message: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphProgress {
    pub graph: u64,
    pub total: u64,
    pub done: u64,
    pub erred: u64,
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
    },
}

/// What `rusk status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub workers: Vec<WorkerStatus>,
    pub tasks: BTreeMap<String, u64>,
    pub graphs: Vec<GraphProgress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    pub stored_bytes: u64,
    pub heartbeat_age_ms: u64,
}

/// Peer (worker or client) → worker data server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    Get { id: u64, tasks: Vec<TaskRef> },
}

/// Worker data server → peer. `None` for a result the worker does not hold. A reply too big for
/// one frame comes in several, the final one with `last` set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    Data {
        id: u64,
        items: Vec<(TaskRef, Option<Bytes>)>,
        last: bool,
    },
}
