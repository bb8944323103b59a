//! Why a simulated run failed. A failure always carries the seed and the last events, because
//! the only useful thing to do with it is to replay that seed and read the trace.
use rusk_proto::{AttemptId, GraphId, Incarnation, NannyId, TaskRef};
use std::fmt;
use std::time::Duration;

/// A failed run: replay it with `RUSK_SIM_SEED=<seed> cargo test -p rusk-sim`.
#[derive(Debug, thiserror::Error)]
#[error("seed={seed}: {kind} (at {at:?}, step {step})\nlast events:\n{trace}")]
pub struct SimFailure {
    pub seed: u64,
    pub at: Duration,
    pub step: u64,
    /// Boxed: failures are rare and the `Result`s that carry them are everywhere.
    pub kind: Box<FailureKind>,
    /// The last events before the failure, one per line.
    pub trace: String,
}

/// What went wrong. Every variant is a bug in a core or in the simulator's model of the shells.
#[derive(Debug, thiserror::Error)]
pub enum FailureKind {
    /// A core panicked: an assertion or `check_invariants()` failed.
    #[error("core panicked: {message}")]
    CorePanic { message: String },
    #[error("scheduler accepted {task} {attempt} from {incarnation}: {why}")]
    FencedResultAccepted {
        task: TaskRef,
        attempt: AttemptId,
        incarnation: Incarnation,
        why: &'static str,
    },
    #[error("scheduler accepted {accepted} failures of {task}, at most {allowed} may be charged")]
    TooManyFailures {
        task: TaskRef,
        accepted: u32,
        allowed: u32,
    },
    #[error("scheduler accepted a failure of {task} ({key}), which cannot fail: {error}")]
    UnexpectedTaskFailure {
        task: TaskRef,
        key: String,
        error: String,
    },
    #[error("scheduler sent {what} to {incarnation}, which it had already dropped")]
    SentToDroppedWorker {
        incarnation: Incarnation,
        what: &'static str,
    },
    #[error("attempt {attempt} of {task} was both given up to a steal and run")]
    StolenAfterStart { task: TaskRef, attempt: AttemptId },
    #[error("scheduler assigned {task} ({key}) wrongly: {why}")]
    BadAssignment {
        task: TaskRef,
        key: String,
        why: String,
    },
    #[error("worker executed {task} ({key}) with wrong inputs: {why}")]
    WrongInputs {
        task: TaskRef,
        key: String,
        why: String,
    },
    #[error("graph {graph} output {key}: expected {expected}, got {got}")]
    WrongOutput {
        graph: GraphId,
        key: String,
        expected: String,
        got: String,
    },
    #[error("client got an unexpected message: {message}")]
    ClientProtocol { message: String },
    /// A rule of keys shared between clients broken (holds, adopt tasks, keeps, datasets).
    #[error("shared keys: {message}")]
    SharedKeys { message: String },
    #[error("liveness: not finished {bound:?} after faults healed: {pending}")]
    Liveness { bound: Duration, pending: String },
    #[error("leak: {what}")]
    Leak { what: String },
    /// A nanny started a worker for a slot whose previous worker process was still alive.
    #[error(
        "two live workers in slot {slot}: pid {old_pid} still alive when pid {new_pid} started"
    )]
    TwoLiveWorkers {
        slot: String,
        old_pid: u32,
        new_pid: u32,
    },
    #[error("scheduler asked nanny {nanny} to restart {incarnation} wrongly: {why}")]
    BadRestartRequest {
        nanny: NannyId,
        incarnation: Incarnation,
        why: String,
    },
    #[error("scheduler sent {what} to nanny connection {nanny}, which it had been told was gone")]
    SentToGoneNanny { nanny: NannyId, what: &'static str },
    #[error("nanny of slot {slot} signalled pid {pid} wrongly: {why}")]
    BadNannySignal { slot: String, pid: u32, why: String },
    #[error("scheduler accepted that {task} {attempt} started, but no executor ever started it")]
    FalseStart { task: TaskRef, attempt: AttemptId },
    /// The scheduler failed other tasks as poison tasks than the ones whose attempts were
    /// running on `task_max_worker_deaths` workers that died.
    #[error("poison tasks: expected {expected:?} (from the attempts running on workers that died), scheduler logged {logged:?}")]
    PoisonMismatch {
        expected: Vec<String>,
        logged: Vec<String>,
    },
    /// What the scheduler last heard of a nanny's slots (`rusk status`) is not what runs.
    #[error("the scheduler's view of nanny {nanny} is stale: {got}, but {want} run")]
    StaleNannyView {
        nanny: String,
        want: String,
        got: String,
    },
    /// A killer took down more workers that had reported it started than the poison-task
    /// limit allows: some of those deaths were not charged to it.
    #[error("{task} took down {killed} workers after the scheduler accepted that it started there; the poison-task limit is {limit}")]
    PoisonUnbounded {
        task: TaskRef,
        killed: u32,
        limit: u32,
    },
    /// The executor pool simulation (`crate::pool`) found a property broken.
    #[error("executor pool: {0}")]
    Pool(crate::pool::PoolViolation),
    #[error("liveness: slot {slot} is {state} and has not run a registered worker within {bound:?} of the faults healing")]
    SlotNotRecovered {
        slot: String,
        state: String,
        bound: Duration,
    },
}

impl SimFailure {
    /// One line that names the seed and the failure, without the trace.
    pub fn summary(&self) -> String {
        format!("seed={}: {}", self.seed, self.kind)
    }
}

/// Shows bytes as text when they are printable, for failure messages.
pub(crate) struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}
