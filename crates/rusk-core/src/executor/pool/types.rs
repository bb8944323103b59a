//! The pool's vocabulary: ids, configuration, how executors end and fail, and the events,
//! commands and logs exchanged with the shell.
use super::*;

/// A job: one `Execute`, named by the shell (which keeps its payload and inputs under it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// An executor process of the pool, named by the core (`Spawn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "executor {}", self.0)
    }
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Executors kept running (the worker's `nthreads`, at least 1).
    pub size: usize,
    /// A silent executor not using CPU for this long is hung.
    pub hang_timeout: Duration,
    /// A silent executor using CPU is killed after this long.
    pub busy_timeout: Duration,
    /// Spawn the executors at once rather than with the first job.
    pub eager: bool,
    /// The interpreter, as named in start-failure messages.
    pub python: String,
}

/// How an executor process ended, as the shell saw it (`wait()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal {
        signal: i32,
        name: &'static str,
    },
    /// Neither a code nor a signal.
    Other,
    WaitFailed(String),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal { signal, name } => write!(f, "was killed by signal {signal} ({name})"),
            Exit::Other => write!(f, "ended"),
            Exit::WaitFailed(e) => write!(f, "could not be waited for ({e})"),
        }
    }
}

/// Why the pool killed an executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Death {
    /// Silent and not computing (judged [`Verdict::Hung`]).
    Hung {
        silent: Duration,
    },
    /// Silent and computing past the busy timeout ([`Verdict::BusyTooLong`]).
    BusyTooLong {
        silent: Duration,
    },
    /// The job it was running was abandoned by the worker.
    Abandoned,
    /// No hello within [`START_TIMEOUT`].
    StartTimeout,
    Protocol(ProtocolError),
    /// Idle and one too many: it ran a seceded task, for which another executor took its slot.
    Retired,
}

/// How an executor broke the pipe protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    StartedUnknown(JobId),
    AnsweredUnknown(JobId),
    /// Started a task while running another, skipped one it had started, or answered one
    /// nobody started.
    OutOfOrder(JobId),
    /// Its output ended, and it did not exit within [`EXIT_GRACE`].
    ClosedOutput,
    /// What the shell's reader found (a bad frame, a read error).
    Reader(String),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::StartedUnknown(j) => write!(f, "started unknown task {j}"),
            ProtocolError::AnsweredUnknown(j) => write!(f, "answered unknown task {j}"),
            ProtocolError::OutOfOrder(j) => write!(f, "answered task {j} out of order"),
            ProtocolError::ClosedOutput => write!(f, "closed its output"),
            ProtocolError::Reader(e) => write!(f, "{e}"),
        }
    }
}

/// Why no executor could run a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartFailure {
    /// The process could not be spawned (the shell's words: no such interpreter, ...).
    Spawn(String),
    /// The executor said why in its hello (no `cloudpickle`, ...).
    Refused(String),
    TimedOut {
        python: String,
        stderr_tail: String,
    },
    /// It exited before its hello.
    Ended {
        python: String,
        exit: Exit,
        stderr_tail: String,
    },
    /// Executors said hello, then died by themselves before any job started, `times` in a row
    /// (`IDLE_DEATHS_MAX`); the last one's exit.
    DiedIdle {
        python: String,
        exit: Exit,
        stderr_tail: String,
        times: u32,
    },
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFailure::Spawn(m) | StartFailure::Refused(m) => write!(f, "{m}"),
            StartFailure::TimedOut {
                python,
                stderr_tail,
            } => write!(
                f,
                "the Python executor ({python}) did not start within {START_TIMEOUT:?} and was killed{}",
                Tail(stderr_tail)
            ),
            StartFailure::Ended {
                python,
                exit,
                stderr_tail,
            } => write!(
                f,
                "the Python executor ({python}) {exit} before it was ready{}",
                Tail(stderr_tail)
            ),
            StartFailure::DiedIdle {
                python,
                exit,
                stderr_tail,
                times,
            } => write!(
                f,
                "{times} Python executors ({python}) in a row died by themselves while idle, \
                 before running anything (the last one {exit}); something in their environment \
                 kills them (an uploaded module, sitecustomize, the OOM killer){}",
                Tail(stderr_tail)
            ),
        }
    }
}

/// An executor died while running a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    pub pid: u32,
    /// Why the pool killed it; `None`: it died by itself.
    pub death: Option<Death>,
    pub exit: Exit,
    /// Its Python stacks, captured before a hang kill.
    pub stacks: Option<String>,
    pub stderr_tail: String,
    /// The timeouts in force, for the advice in the message.
    pub hang_timeout: Duration,
    pub busy_timeout: Duration,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pid, tail) = (self.pid, Tail(&self.stderr_tail));
        match &self.death {
            Some(Death::Hung { silent }) => write!(
                f,
                "the Python executor (pid {pid}) running this task sent no ping for {silent:?}, \
                 so it was killed (SIGKILL) and replaced: the task held the GIL (a long \
                 C call) or hung. If the task legitimately holds the GIL that long, raise \
                 RUSK_EXECUTOR_HANG_TIMEOUT (now {t:?}){tail}",
                t = self.hang_timeout
            )?,
            Some(Death::BusyTooLong { silent }) => write!(
                f,
                "the Python executor (pid {pid}) running this task computed without a \
                 ping (a C call holding the GIL) for {silent:?}, over the busy timeout \
                 of {t:?}, so it was killed (SIGKILL) and replaced. Raise \
                 RUSK_EXECUTOR_BUSY_TIMEOUT if the task legitimately runs that long{tail}",
                t = self.busy_timeout
            )?,
            Some(Death::Protocol(p)) => write!(
                f,
                "the Python executor (pid {pid}) running this task broke the protocol \
                 ({p}) and was killed and replaced{tail}"
            )?,
            Some(Death::StartTimeout) | Some(Death::Abandoned) | Some(Death::Retired) | None => {
                write!(
                    f,
                    "the Python executor (pid {pid}) running this task {}; the worker \
                 replaced it{tail}",
                    self.exit
                )?
            }
        }
        if let Some(st) = &self.stacks {
            write!(
                f,
                "\nPython stacks of the executor when it was killed:\n{st}"
            )?;
        }
        Ok(())
    }
}

/// `; its stderr ended with: ...`, or nothing.
struct Tail<'a>(&'a str);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0.trim();
        if t.is_empty() {
            Ok(())
        } else {
            write!(f, "; its stderr ended with: {t}")
        }
    }
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The task raised (or its payload could not be run): the executor's `E`.
    Raised(TaskError),
    /// The worker abandoned the attempt.
    Abandoned,
    /// The executor running it died or was killed.
    Lost(Box<Loss>),
    /// No executor could start.
    NoExecutor(StartFailure),
}

impl Failure {
    /// The error the worker reports to the scheduler.
    pub fn into_task_error(self) -> TaskError {
        let message = match self {
            Failure::Raised(e) => return e,
            Failure::Abandoned => "abandoned".to_string(),
            Failure::Lost(l) => l.to_string(),
            Failure::NoExecutor(s) => s.to_string(),
        };
        TaskError {
            message,
            exit_code: None,
            detail: None,
        }
    }
}

/// An executor's answer to a job it was sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// `R`: the value.
    Value(Bytes),
    /// `E`: the task raised.
    Error(TaskError),
    /// `X`: cancelled before it started.
    Skipped,
}

/// What the shell observed of one executor at a `Tick`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub exec: ExecId,
    /// When its last byte arrived; `None`: nothing yet.
    pub last_activity: Option<Duration>,
    /// Its CPU demand so far (time run, or waited for a core), read when [`samples_cpu`]
    /// says so (else `None`).
    pub cpu: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Run this attempt; the shell keeps its payload and inputs under `job`.
    Execute {
        job: JobId,
        task: TaskRef,
        attempt: AttemptId,
    },
    /// Stop the attempt if it is queued or running here (a running one by killing its
    /// executor); a no-op for attempts the pool does not have or has reported.
    Abandon { task: TaskRef, attempt: AttemptId },
    /// A `Spawn` succeeded.
    Spawned { exec: ExecId, pid: u32 },
    /// A `Spawn` failed: no process exists.
    SpawnFailed { exec: ExecId, message: String },
    /// `H`: ready, or the reason it cannot run tasks (it exits next).
    Hello { exec: ExecId, error: Option<String> },
    /// `S`.
    Started { exec: ExecId, job: JobId },
    /// `W`: its running job stops holding a slot while it waits (`rusk.secede()`): another
    /// executor takes the slot, and the jobs queued behind it may move there.
    Seceded { exec: ExecId, job: JobId },
    /// `J`: its running job, which seceded, holds a slot again (`rusk.rejoin()`): if that makes
    /// one executor too many, another one stops taking jobs and retires once idle.
    Rejoined { exec: ExecId, job: JobId },
    /// `R`, `E` or `X`.
    Answered {
        exec: ExecId,
        job: JobId,
        answer: Answer,
    },
    /// Its output ended: EOF (`None`) or what the reader found wrong.
    Closed { exec: ExecId, error: Option<String> },
    /// The process was reaped.
    Exited {
        exec: ExecId,
        exit: Exit,
        /// It died of the pool's `Kill`, not of something else first.
        killed: bool,
        /// Captured before a `Kill { capture_stacks: true }`.
        stacks: Option<String>,
        /// The end of what it wrote to stderr since its current task started.
        stderr_tail: String,
    },
    /// Periodic (at [`PoolCore::next_timeout`]), with a sample of every executor spawned.
    Tick { samples: Vec<Sample> },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Start an executor process; answer with `Spawned` or `SpawnFailed`. Jobs may be sent
    /// to it (the commands after this one) before the answer: a failed spawn gives them back.
    Spawn {
        exec: ExecId,
    },
    /// Write the job's `T` frame to the executor. With `claim`, the executor must first claim
    /// the job (`K` frame: create the claim file `<job>.<claim>` exclusively) and skips it if
    /// another executor claimed it: set on every send that may not start at once (the job may
    /// be stolen while it waits), and on the stolen copy, so that a job never runs twice.
    Send {
        exec: ExecId,
        job: JobId,
        claim: Option<u32>,
    },
    /// Write a `C` frame: drop the job unless it has started.
    Cancel {
        exec: ExecId,
        job: JobId,
    },
    /// Kill the executor (its process group), after capturing its Python stacks if asked; then
    /// report `Exited` (with the stacks).
    Kill {
        exec: ExecId,
        capture_stacks: bool,
    },
    /// Tell the worker the attempt started (at most once per job, before `Finished`).
    Started {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// Tell the worker the started attempt seceded (`W`): it holds no thread slot now.
    Seceded {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// Tell the worker the seceded attempt holds a thread slot again (`J`).
    Rejoined {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// Exactly one per `Execute`.
    Finished {
        task: TaskRef,
        attempt: AttemptId,
        result: Result<Bytes, Failure>,
    },
    /// No executor holds the job any more: drop its payload and inputs (and its claim files).
    ForgetJob {
        job: JobId,
    },
    /// The executor is settled (or was never spawned): drop what the shell keeps for it.
    ForgetExec {
        exec: ExecId,
    },
    Log(Log),
}

/// What the pool did, for the shell's logs and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Log {
    /// An executor could not start (`pid` `None`: not even spawned).
    StartFailed {
        pid: Option<u32>,
        failure: StartFailure,
    },
    /// A ready executor died or was killed; a replacement follows.
    ExecutorReplaced {
        pid: u32,
        death: Option<Death>,
        exit: Exit,
    },
    /// Silent but computing: left running until the busy timeout (once per silence).
    BusySilent {
        pid: u32,
        silent: Duration,
        busy_timeout: Duration,
    },
}

impl Log {
    /// The recovery-log event the worker reports for this, if any (starts that fail are the
    /// waiting tasks' errors; an executor killed to stop an abandoned task is routine).
    pub fn worker_event(&self) -> Option<rusk_proto::msg::WorkerEvent> {
        use rusk_proto::msg::{ExecutorCause, WorkerEvent};
        match self {
            Log::StartFailed { .. } => None,
            Log::ExecutorReplaced { pid, death, exit } => {
                let (cause, observed) = match death {
                    None => (ExecutorCause::Died, format!("{exit}")),
                    Some(Death::Abandoned) | Some(Death::Retired) => return None,
                    Some(Death::Hung { silent }) => (
                        ExecutorCause::Hung,
                        format!("no ping for {silent:?} and no CPU used (stuck in a C call holding the GIL)"),
                    ),
                    Some(Death::BusyTooLong { silent }) => (
                        ExecutorCause::BusyTooLong,
                        format!("computing without a ping for {silent:?}, past the busy timeout"),
                    ),
                    Some(Death::StartTimeout) => (ExecutorCause::Hung, "no hello in time".into()),
                    Some(Death::Protocol(p)) => (ExecutorCause::Protocol, format!("{p}")),
                };
                Some(WorkerEvent::ExecutorReplaced {
                    pid: *pid,
                    cause,
                    observed,
                })
            }
            Log::BusySilent { pid, silent, .. } => Some(WorkerEvent::ExecutorBusy {
                pid: *pid,
                silent_ms: silent.as_millis() as u64,
            }),
        }
    }
}
