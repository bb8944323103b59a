//! The Python executor pool under simulation: the real `rusk_core::executor::PoolCore`, driven
//! under a virtual clock by a model of its shell (`python_exec`), of the executor processes it
//! spawns and of the worker that hands it attempts. One seed draws the pool (size, hang and busy
//! timeouts, eager or not), the workload and the faults, so a failure replays exactly:
//!
//! ```text
//! RUSK_SIM_POOL_SEED=<N> cargo test -p rusk-sim --test seeds pool_seeds
//! ```
//!
//! Executors are processes with a pipe each way (frames arrive in order, a little later), that
//! ping every 100 ms once they said hello, read what was sent to them between tasks (so a
//! cancel that comes while a task runs is seen after it), and run each task to a plan drawn
//! when it starts: answer a value or raise after a while, crash mid-task, hang (silent, no
//! CPU), compute silently (CPU used) for less or more than the busy timeout, compute then get
//! stuck, close their output, break the pipe, or answer a task nobody sent. Starts fail too:
//! the spawn itself, a refusal in the hello, a death before it, no hello at all; and for
//! stretches every start fails. The pool's own loop stalls now and then (its events, ticks and
//! pipe reads wait). The worker submits attempts in bursts and abandons some.
//!
//! After every step, `PoolCore::check_invariants()` must hold, and so must what the simulator
//! checks itself (the [`PoolViolation`]s): every attempt finishes exactly once, `Started` at
//! most once and only when an executor started it; a value is the one its owner (the executor
//! whose start the pool reported) computed; a failure names a cause that happened (raised by
//! its owner, abandoned by the worker, its owner died or was killed while running it, no
//! executor could start), so a job that never started is never charged for a dead executor;
//! nothing is sent to an executor the pool knows is dead; a job is forgotten only once no live
//! executor holds it; an executor computing silently is **never killed before the busy
//! timeout**, nor judged stuck, and a healthy one never as hung; and a stuck one is killed
//! within a bound of the hang timeout. Then faults heal, and every attempt must finish and
//! every dead executor be settled within a bound.
use crate::error::{FailureKind, SimFailure};
use crate::timed::{catch_core_panic, Queued};
use bytes::Bytes;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rusk_core::executor::{
    self, Answer, Command, Death, Event, ExecId, Exit, Failure, JobId, Log, PoolConfig, PoolCore,
    ProtocolError, Sample, START_RETRY_DELAY,
};
use rusk_proto::msg::TaskError;
use rusk_proto::{AttemptId, GraphId, TaskRef};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::time::Duration;

mod model;
mod oracle;
mod run;
mod shell;

/// How long the shell waits for a condemned executor's stacks before SIGKILL
/// (`python_exec::STACKS_WAIT`).
const STACKS_WAIT: Duration = Duration::from_millis(300);
/// A frame takes up to this long through a pipe.
const PIPE_US_MAX: u64 = 1_000;
/// Spawning a process takes up to this long.
const SPAWN_US_MAX: u64 = 2_000;
/// Interpreter start and `import cloudpickle`, before the hello.
const HELLO_MS_MIN: u64 = 20;
const HELLO_MS_MAX: u64 = 400;
/// `wait()` returns this long after a death at most (the shell also reads the end of stderr,
/// for up to 50 ms).
const REAP_US_MAX: u64 = 60_000;
/// A dead executor's child may hold its output open: end of output comes up to this late.
const LATE_EOF_MS_MAX: u64 = 2_000;
/// Stalls of the pool's own loop: half of them short (under the 500 ms the pool takes for a
/// stall of its own, so it judges right after them), half long.
const STALL_MS_MIN: u64 = 200;
const STALL_SHORT_MS_MAX: u64 = 600;
const STALL_MS_MAX: u64 = 8_000;
/// Hang timeouts a seed draws from (the shell refuses less than three ping intervals).
const HANG_TIMEOUTS_MS: [u64; 5] = [300, 500, 1_000, 2_000, 6_000];
/// Longest busy timeout a seed draws (the default is 5 minutes; virtual time is not free).
const BUSY_TIMEOUT_MS_MAX: u64 = 20_000;
/// A silently computing task meant to survive ends this long before the busy timeout, at
/// least: while it runs, the silence the pool sees is at most its run time (its `S` frame is
/// the last thing its executor wrote), so a little is enough.
const BUSY_MARGIN: Duration = Duration::from_millis(20);
/// CPU a silently computing executor uses, in cores: at least twice the busy threshold.
const BUSY_RATE_MIN: f64 = 0.2;
/// CPU used while not silent (pure Python, pinging).
const ACTIVE_RATE: f64 = 0.5;
/// Id of the task an executor that breaks the protocol answers.
const BOGUS_JOB: u64 = u64::MAX / 2;
/// Events at one virtual instant before the run is declared livelocked.
const STEPS_AT_ONE_INSTANT_MAX: u64 = 100_000;

/// Settings of a pool simulation. [`PoolSimConfig::default`] is what `tests/seeds.rs` runs.
#[derive(Clone, Debug)]
pub struct PoolSimConfig {
    /// Executors in the pool: drawn per seed from `1..=size_max`.
    pub size_max: usize,
    /// Attempts the worker submits during the safety phase, drawn per seed.
    pub jobs_min: u32,
    pub jobs_max: u32,
    /// Virtual length of the safety phase (faults on).
    pub safety: Duration,
    /// Virtual time the liveness phase may take (it must outlast the start timeout, a busy
    /// timeout and a hang detection).
    pub liveness_bound: Duration,
    /// Inject faults during the safety phase.
    pub faults: bool,
    /// Events kept for the failure report.
    pub trace_len: usize,
}

impl Default for PoolSimConfig {
    fn default() -> Self {
        PoolSimConfig {
            size_max: 4,
            jobs_min: 10,
            jobs_max: 200,
            safety: Duration::from_secs(12),
            liveness_bound: Duration::from_secs(120),
            faults: true,
            trace_len: 60,
        }
    }
}

/// What one pool run exercised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolReport {
    pub seed: u64,
    pub virtual_time: Duration,
    pub steps: u64,
    pub size: usize,
    pub jobs: u64,
    /// Outcomes of the jobs.
    pub values: u64,
    pub raised: u64,
    pub lost: u64,
    pub abandoned: u64,
    pub no_executor: u64,
    /// Executors spawned, spawns that failed, and starts that failed after the spawn.
    pub spawns: u64,
    pub spawn_failures: u64,
    pub start_failures: u64,
    /// Faults injected into running tasks.
    pub crashes: u64,
    pub hangs: u64,
    pub busy_short: u64,
    pub busy_long: u64,
    pub protocol_faults: u64,
    /// Kills the pool ordered with stacks captured (hung or busy too long), and others.
    pub hang_kills: u64,
    pub other_kills: u64,
    /// Silently computing tasks that finished with their value (not killed).
    pub busy_survived: u64,
    pub stalls: u64,
    /// Jobs sent to a second executor (stolen), and cancels.
    pub copies: u64,
    pub cancels: u64,
    /// Hash of every command of the run: equal for two runs of one seed.
    pub fingerprint: u64,
}

/// A property of the pool that a run broke (the core's own invariants panic instead).
#[derive(Debug, thiserror::Error)]
pub enum PoolViolation {
    #[error("job {job} finished twice")]
    FinishedTwice { job: u64 },
    #[error("job {job}: Started reported wrongly: {why}")]
    BadStart { job: u64, why: &'static str },
    #[error("job {job}: value {got:?}, but its owner is {owner:?}")]
    WrongValue {
        job: u64,
        got: String,
        owner: Option<u64>,
    },
    #[error("job {job} failed with {failure}, which did not happen: {why}")]
    UnjustifiedFailure {
        job: u64,
        failure: String,
        why: &'static str,
    },
    #[error("executor pid {pid} computing silently was killed after {silent:?} of silence, before the busy timeout of {busy_timeout:?}")]
    BusyKilledEarly {
        pid: u32,
        silent: Duration,
        busy_timeout: Duration,
    },
    #[error("executor pid {pid} was killed as hung (stacks captured) but it was not silent")]
    HealthyKilled { pid: u32 },
    #[error(
        "executor pid {pid} stuck for {silent:?} and not killed (hang timeout {hang_timeout:?})"
    )]
    HangNotDetected {
        pid: u32,
        silent: Duration,
        hang_timeout: Duration,
    },
    #[error("executor pid {pid} computing silently for {silent:?} and not killed (busy timeout {busy_timeout:?})")]
    BusyNotDetected {
        pid: u32,
        silent: Duration,
        busy_timeout: Duration,
    },
    #[error("job {job} sent to executor {exec}, which the pool knew {why}")]
    SentToDeadExecutor {
        exec: u64,
        job: u64,
        why: &'static str,
    },
    #[error("job {job} started on executor {exec} while executor {other}, which started it too, lives on unkilled")]
    RanTwice { job: u64, exec: u64, other: u64 },
    #[error("cancel of job {job} to executor {exec}, which was never sent it")]
    CancelOfUnsent { exec: u64, job: u64 },
    #[error("executor {exec} killed {why}")]
    BadKill { exec: u64, why: &'static str },
    #[error("job {job} forgotten wrongly: {why}")]
    ForgottenWrongly { job: u64, why: &'static str },
    #[error("executor {exec} forgotten wrongly: {why}")]
    ExecForgottenWrongly { exec: u64, why: &'static str },
    #[error("log {log}: {why}")]
    BadLog { log: String, why: &'static str },
}

/// Run one seed: a random pool, workload and fault plan, a safety phase, then a liveness
/// phase. `Err` carries the seed and the last events.
pub fn run_pool_seed(seed: u64, config: &PoolSimConfig) -> Result<PoolReport, SimFailure> {
    PoolSim::new(seed, config).run()
}

// === the model ===

/// What an executor does with a task it starts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TaskPlan {
    Value(Duration),
    Raise(Duration),
    /// The process dies after this long (a segfault, `os._exit`).
    Crash(Duration),
    /// Silent, no CPU, forever.
    Hang,
    /// Silent, using CPU, for this long, then the value.
    Busy {
        run: Duration,
        rate: f64,
    },
    /// Silent, using CPU, for this long, then silent without CPU forever.
    BusyThenStuck {
        run: Duration,
        rate: f64,
    },
    /// Its output closes after this long (task code closed the fd); it lives on, silent.
    CloseOutput(Duration),
    /// The worker's read of its output fails after this long.
    ReadError(Duration),
    /// It answers a task nobody sent after this long, then goes silent.
    AnswerUnknown(Duration),
}

/// How an executor starts, once spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartPlan {
    Ready(Duration),
    /// Hello with an error (no `cloudpickle`), then exit.
    Refuse(Duration),
    /// Dies before its hello.
    DieEarly(Duration),
    /// Never says anything.
    Mute,
}

/// A frame (or the end) of an executor's output, as the shell's reader delivers it.
#[derive(Clone, Debug)]
enum Out {
    Hello(Option<String>),
    Started(JobId),
    Answer(JobId, Answer),
    Eof(Option<String>),
}

#[derive(Clone, Copy, Debug)]
enum In {
    /// A task, with its claim (see `Command::Send`).
    Task(JobId, Option<u32>),
    Cancel(JobId),
}

/// A silence of an executor (no pings): since when, until when (`None`: it goes on), and the
/// CPU it uses meanwhile.
#[derive(Clone, Copy, Debug)]
struct Silence {
    since: Duration,
    until: Option<Duration>,
    /// It computes (uses CPU) in this silence, from its start...
    computed: bool,
    /// ...until then, if it stopped (got stuck).
    cpu_stops: Option<Duration>,
}

impl Silence {
    fn ongoing(&self) -> bool {
        self.until.is_none()
    }

    /// Still computing at `t`.
    fn computing_at(&self, t: Duration) -> bool {
        self.computed && self.cpu_stops.is_none_or(|c| c > t)
    }
}

struct Proc {
    pid: u32,
    start: StartPlan,
    /// The spawn succeeded and the process has not died.
    alive: bool,
    spawn_answered: bool,
    spawn_failed: bool,
    ready: bool,
    exit: Option<Exit>,
    stderr_tail: &'static str,
    /// Frames from the shell, with when they arrive.
    input: VecDeque<(Duration, In)>,
    /// Tasks read and not started, with their claims.
    queue: VecDeque<(JobId, Option<u32>)>,
    /// The task it runs (until it answers or dies).
    current: Option<JobId>,
    /// Plans of the tasks it started.
    plans: BTreeMap<JobId, TaskPlan>,
    /// Invalidates the process's own timers after a task ends or the process dies.
    gen: u32,
    /// When it pinged: every 100 ms within each span `(from, until)` (`None`: still).
    pings: Vec<(Duration, Option<Duration>)>,
    /// Its silences, in order (the last one may go on).
    silences: Vec<Silence>,
    cpu_acc: Duration,
    cpu_rate: f64,
    cpu_since: Duration,
    /// When it wrote each frame to its output, in order.
    writes: Vec<Duration>,
    /// Frames are delivered in order: none before this.
    last_delivery: Duration,
    output_closed: bool,
    /// When the pool asked for its death, and whether with stacks.
    kill: Option<(Duration, bool)>,
    /// It died of that kill.
    killed: bool,
    /// What the pool has been told or has said about it.
    core_closed: bool,
    core_exited: bool,
    forgotten: bool,
    /// Jobs sent to it whose answer the pool has not received.
    unanswered: BTreeSet<JobId>,
    sent: BTreeSet<JobId>,
}

impl Proc {
    fn cpu_at(&self, t: Duration) -> Duration {
        self.cpu_acc + t.saturating_sub(self.cpu_since).mul_f64(self.cpu_rate)
    }

    fn set_cpu(&mut self, now: Duration, rate: f64) {
        self.cpu_acc = self.cpu_at(now);
        self.cpu_since = now;
        self.cpu_rate = rate;
    }

    /// The last byte it wrote by `t` (a ping or a frame).
    fn raw_activity(&self, t: Duration) -> Option<Duration> {
        let i = self.pings.partition_point(|&(from, _)| from <= t);
        let ping = i.checked_sub(1).map(|i| {
            let (from, until) = self.pings[i];
            let end = until.unwrap_or(t).min(t);
            let n = (end - from).as_nanos() / executor::PING_INTERVAL.as_nanos();
            from + executor::PING_INTERVAL * n as u32
        });
        let i = self.writes.partition_point(|&w| w <= t);
        let write = i.checked_sub(1).map(|i| self.writes[i]);
        ping.max(write)
    }

    /// Settled by the pool, or alive and serving: nothing about it is pending.
    fn at_rest(&self) -> bool {
        self.forgotten || (self.alive && self.kill.is_none() && !self.output_closed)
    }

    /// The silence it was in at `t`.
    fn silence_at(&self, t: Duration) -> Option<Silence> {
        self.silences
            .iter()
            .rev()
            .find(|s| s.since <= t && s.until.is_none_or(|u| u >= t))
            .copied()
    }

    /// The silence it is in.
    fn ongoing_silence(&mut self) -> Option<&mut Silence> {
        self.silences.last_mut().filter(|s| s.ongoing())
    }

    fn start_pinging(&mut self, now: Duration) {
        self.pings.push((now, None));
    }

    fn stop_pinging(&mut self, now: Duration) {
        if let Some((_, until @ None)) = self.pings.last_mut() {
            *until = Some(now);
        }
    }
}

/// The worker's view of one attempt, and the oracle's.
struct Job {
    task: TaskRef,
    attempt: AttemptId,
    submitted: Duration,
    sent_to: BTreeSet<ExecId>,
    /// The executor whose start the pool reported.
    owner: Option<ExecId>,
    /// The processes that started its code.
    ran_on: Vec<ExecId>,
    finished: bool,
    forgotten: bool,
    abandoned: bool,
}

/// What the pool is handling, to attribute its commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Started(ExecId, JobId),
    Abandon(JobId),
    Other,
}

enum Ev {
    /// The worker hands the pool attempts (a burst).
    Submit,
    /// The worker abandons an attempt.
    AbandonSome,
    SpawnAnswer {
        exec: ExecId,
    },
    Deliver {
        exec: ExecId,
        out: Out,
    },
    Reaped {
        exec: ExecId,
    },
    Tick {
        due: Duration,
    },
    /// The process reads what arrived and starts its next task if it is idle.
    ProcWake {
        exec: ExecId,
    },
    ProcHello {
        exec: ExecId,
        gen: u32,
    },
    ProcDone {
        exec: ExecId,
        gen: u32,
    },
    ProcCrash {
        exec: ExecId,
        gen: u32,
    },
    ProcCpuStops {
        exec: ExecId,
        gen: u32,
    },
    ProcCloses {
        exec: ExecId,
        gen: u32,
    },
    ProcBogus {
        exec: ExecId,
        gen: u32,
    },
    ProcDies {
        exec: ExecId,
        exit: Exit,
        tail: &'static str,
    },
    KillNow {
        exec: ExecId,
    },
    /// The pool's loop stalls: for this long, or a random while.
    Stall {
        length: Option<Duration>,
    },
    StallEnd,
    Heal,
}

impl Ev {
    /// Served by the pool's own loop (waits while it stalls), rather than by a process.
    fn on_pool_loop(&self) -> bool {
        matches!(
            self,
            Ev::Submit
                | Ev::AbandonSome
                | Ev::SpawnAnswer { .. }
                | Ev::Deliver { .. }
                | Ev::Reaped { .. }
                | Ev::Tick { .. }
        )
    }
}

/// Fault rates of one seed.
struct Faults {
    crash: f64,
    hang: f64,
    busy: f64,
    busy_then_stuck: f64,
    raise: f64,
    protocol: f64,
    spawn_fail: f64,
    start_fail: f64,
    /// Stretches of time in which every start fails.
    broken: Vec<(Duration, Duration)>,
}

enum TraceItem {
    In(Event),
    Out(Command),
    Note(String),
}

/// A pool under simulation.
struct PoolSim {
    seed: u64,
    config: PoolSimConfig,
    rng: ChaCha8Rng,
    now: Duration,
    seq: u64,
    steps_at_now: u64,
    queue: BinaryHeap<Reverse<Queued<Ev>>>,
    core: PoolCore,
    hang: Duration,
    busy: Duration,
    procs: BTreeMap<ExecId, Proc>,
    next_pid: u32,
    jobs: BTreeMap<JobId, Job>,
    by_attempt: BTreeMap<AttemptId, JobId>,
    /// The claims taken (the claim files of the real shell): `(job, claim)`.
    claims: BTreeSet<(JobId, u32)>,
    jobs_left: u32,
    faults: Faults,
    healed: bool,
    healed_at: Duration,
    tick_at: Option<Duration>,
    /// The loop stalls until then; its events wait here.
    stall: Option<(Duration, Duration)>,
    deferred: VecDeque<Ev>,
    /// Past stalls, as `(start, end)`, in order: what was written during one was read when it
    /// ended.
    stalls: Vec<(Duration, Duration)>,
    /// The readers have not caught up since the last stall.
    readers_behind: bool,
    start_failures: Vec<Duration>,
    /// When the pool handled its last `Tick`, and the one before.
    last_check: Duration,
    prev_check: Duration,
    handling: Cause,
    report: PoolReport,
    trace: VecDeque<(Duration, TraceItem)>,
    broken_run: bool,
    /// What a simulated process saw go wrong (a job started twice), reported by `dispatch`.
    violation: Option<PoolViolation>,
}

fn attempt_of(job: JobId) -> (TaskRef, AttemptId) {
    (
        TaskRef {
            graph: GraphId(1),
            index: job.0 as u32,
        },
        AttemptId(1_000_000 + job.0),
    )
}

fn value_of(job: JobId, exec: ExecId) -> Bytes {
    Bytes::from(format!("{}@{}", job.0, exec.0))
}

fn raised_of(job: JobId, exec: ExecId) -> String {
    format!("raised {}@{}", job.0, exec.0)
}

const SIGKILL: Exit = Exit::Signal {
    signal: 9,
    name: "SIGKILL",
};

impl fmt::Display for PoolReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} jobs: {} values, {} raised, {} lost, {} abandoned, {} without executor; \
             {} spawns ({} failed, {} starts failed); faults: {} crashes, {} hangs, {} short \
             and {} long busy silences ({} survived), {} protocol faults, {} stalls; {} hang \
             kills, {} other kills; {} copies, {} cancels",
            self.jobs,
            self.values,
            self.raised,
            self.lost,
            self.abandoned,
            self.no_executor,
            self.spawns,
            self.spawn_failures,
            self.start_failures,
            self.crashes,
            self.hangs,
            self.busy_short,
            self.busy_long,
            self.busy_survived,
            self.protocol_faults,
            self.stalls,
            self.hang_kills,
            self.other_kills,
            self.copies,
            self.cancels
        )
    }
}
