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
    Task(JobId),
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
    /// Tasks read and not started.
    queue: VecDeque<JobId>,
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

impl PoolSim {
    fn new(seed: u64, config: &PoolSimConfig) -> PoolSim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005E_ED0F_E7EC);
        let size = rng.gen_range(1..=config.size_max.max(1));
        let hang =
            Duration::from_millis(HANG_TIMEOUTS_MS[rng.gen_range(0..HANG_TIMEOUTS_MS.len())]);
        // Mostly a few hang timeouts, so that silent computations end within the safety
        // phase (with its stalls); sometimes long.
        let busy_ms = if rng.gen_bool(0.7) {
            rng.gen_range(0..=3 * hang.as_millis() as u64)
        } else {
            rng.gen_range(0..=BUSY_TIMEOUT_MS_MAX)
        };
        let busy = (hang + Duration::from_millis(busy_ms))
            .min(Duration::from_millis(BUSY_TIMEOUT_MS_MAX).max(hang));
        let eager = rng.gen_bool(0.3);
        let f = config.faults;
        let mut rate = |max: f64| {
            if f && rng.gen_bool(0.8) {
                rng.gen_range(0.0..max)
            } else {
                0.0
            }
        };
        let mut faults = Faults {
            crash: rate(0.04),
            hang: rate(0.02),
            busy: rate(0.03),
            busy_then_stuck: rate(0.01),
            raise: rate(0.1),
            protocol: rate(0.01),
            spawn_fail: rate(0.1),
            start_fail: rate(0.15),
            broken: Vec::new(),
        };
        if f {
            for _ in 0..rng.gen_range(0..=2) {
                let at = Duration::from_millis(rng.gen_range(0..config.safety.as_millis() as u64));
                let d = Duration::from_millis(rng.gen_range(300..=4_000));
                faults.broken.push((at, at + d));
            }
        }
        let core = PoolCore::new(PoolConfig {
            size,
            hang_timeout: hang,
            busy_timeout: busy,
            eager,
            python: "sim-python".into(),
        });
        let jobs_left = rng.gen_range(config.jobs_min..=config.jobs_max.max(config.jobs_min));
        let mut sim = PoolSim {
            seed,
            config: config.clone(),
            rng,
            now: Duration::ZERO,
            seq: 0,
            steps_at_now: 0,
            queue: BinaryHeap::new(),
            core,
            hang,
            busy,
            procs: BTreeMap::new(),
            next_pid: 100,
            jobs: BTreeMap::new(),
            by_attempt: BTreeMap::new(),
            jobs_left,
            faults,
            healed: false,
            healed_at: Duration::ZERO,
            tick_at: None,
            stall: None,
            deferred: VecDeque::new(),
            stalls: Vec::new(),
            readers_behind: false,
            start_failures: Vec::new(),
            last_check: Duration::ZERO,
            prev_check: Duration::ZERO,
            handling: Cause::Other,
            report: PoolReport {
                seed,
                size,
                ..PoolReport::default()
            },
            trace: VecDeque::new(),
            broken_run: false,
        };
        sim.push(Duration::ZERO, Ev::Submit);
        let safety = sim.config.safety;
        for _ in 0..sim.rng.gen_range(0..=8) {
            let at = sim.rng.gen_range(Duration::ZERO..safety);
            sim.push(at, Ev::AbandonSome);
        }
        if f {
            for _ in 0..sim.rng.gen_range(0..=6) {
                let at = sim.rng.gen_range(Duration::ZERO..safety);
                sim.push(at, Ev::Stall { length: None });
            }
        }
        sim.push(safety, Ev::Heal);
        sim
    }

    fn run(mut self) -> Result<PoolReport, SimFailure> {
        self.guarded(|s| {
            let out = s.core.start(s.now);
            s.core.check_invariants();
            s.carry_out(out)?;
            s.reschedule_tick();
            Ok(())
        })?;
        loop {
            if self.healed {
                if self.all_done() {
                    self.report.virtual_time = self.now;
                    return Ok(self.report);
                }
                if self.now > self.healed_at + self.config.liveness_bound {
                    let pending = self.pending_summary();
                    return Err(self.failure(FailureKind::Liveness {
                        bound: self.config.liveness_bound,
                        pending,
                    }));
                }
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                let pending = self.pending_summary();
                return Err(self.failure(FailureKind::Liveness {
                    bound: self.config.liveness_bound,
                    pending: format!("the event queue ran dry: {pending}"),
                }));
            };
            if q.at == self.now {
                self.steps_at_now += 1;
                if self.steps_at_now > STEPS_AT_ONE_INSTANT_MAX {
                    return Err(self.failure(FailureKind::Liveness {
                        bound: Duration::ZERO,
                        pending: "livelock: too many events at one virtual instant".into(),
                    }));
                }
            } else {
                self.steps_at_now = 0;
            }
            self.now = q.at;
            self.report.steps += 1;
            self.guarded(|s| s.dispatch(q.ev))?;
        }
    }

    fn all_done(&self) -> bool {
        self.jobs_left == 0
            && self.jobs.values().all(|j| j.finished && j.forgotten)
            && self.procs.values().all(Proc::at_rest)
    }

    fn pending_summary(&self) -> String {
        let jobs: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| !(j.finished && j.forgotten))
            .take(10)
            .map(|(id, j)| {
                format!(
                    "job {} (finished {}, forgotten {}, sent to {:?})",
                    id.0, j.finished, j.forgotten, j.sent_to
                )
            })
            .collect();
        let procs: Vec<String> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.at_rest())
            .take(10)
            .map(|(id, p)| {
                format!(
                    "{id} (pid {}, alive {}, kill {:?}, closed {}, exited {})",
                    p.pid, p.alive, p.kill, p.core_closed, p.core_exited
                )
            })
            .collect();
        format!("jobs: {}; executors: {}", jobs.join(", "), procs.join(", "))
    }

    fn guarded(
        &mut self,
        f: impl FnOnce(&mut PoolSim) -> Result<(), FailureKind>,
    ) -> Result<(), SimFailure> {
        if self.broken_run {
            return Err(self.failure(FailureKind::CorePanic {
                message: "the simulation already failed".into(),
            }));
        }
        catch_core_panic(|| f(self)).map_err(|kind| {
            self.broken_run = true;
            self.failure(kind)
        })
    }

    fn failure(&self, kind: FailureKind) -> SimFailure {
        let trace = self
            .trace
            .iter()
            .map(|(at, t)| match t {
                TraceItem::In(e) => format!("{at:>12?}  -> {e:?}"),
                TraceItem::Out(c) => format!("{at:>12?}  <- {c:?}"),
                TraceItem::Note(n) => format!("{at:>12?}     {n}"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        SimFailure {
            seed: self.seed,
            at: self.now,
            step: self.report.steps,
            kind: Box::new(kind),
            trace: format!(
                "pool of {} (hang timeout {:?}, busy timeout {:?})\n{trace}",
                self.report.size, self.hang, self.busy
            ),
        }
    }

    fn record(&mut self, item: TraceItem) {
        if self.trace.len() >= self.config.trace_len.max(1) {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, item));
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.config.trace_len > 0 {
            let n = what();
            self.record(TraceItem::Note(n));
        }
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn us(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.rng.gen_range(0..=max))
    }

    fn fingerprint(&mut self, words: [u64; 3]) {
        let mut h = self.report.fingerprint ^ self.now.as_nanos() as u64;
        for w in words {
            h = (h ^ w).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
        }
        self.report.fingerprint = h;
    }

    // === dispatch ===

    fn dispatch(&mut self, ev: Ev) -> Result<(), FailureKind> {
        if self.stall.is_some() && ev.on_pool_loop() {
            self.deferred.push_back(ev);
            return Ok(());
        }
        match ev {
            Ev::Submit => self.on_submit(),
            Ev::AbandonSome => self.on_abandon_some(),
            Ev::SpawnAnswer { exec } => self.on_spawn_answer(exec),
            Ev::Deliver { exec, out } => self.on_deliver(exec, out),
            Ev::Reaped { exec } => {
                let p = self.procs.get_mut(&exec).expect("reaped processes exist");
                p.core_exited = true;
                let exit = p.exit.clone().expect("reaped processes died");
                let stacks = p
                    .kill
                    .filter(|(_, capture)| *capture)
                    .map(|_| format!("stacks of pid {}", p.pid));
                let stderr_tail = p.stderr_tail.to_string();
                let killed = p.killed;
                self.core_step(Event::Exited {
                    exec,
                    exit,
                    killed,
                    stacks,
                    stderr_tail,
                })
            }
            Ev::Tick { due } => {
                if self.tick_at != Some(due) {
                    return Ok(());
                }
                self.tick_at = None;
                self.check_detection()?;
                let samples = self.samples();
                self.prev_check = self.last_check;
                self.last_check = self.now;
                self.core_step(Event::Tick { samples })
            }
            Ev::ProcWake { exec } => {
                self.proc_wake(exec);
                Ok(())
            }
            Ev::ProcHello { exec, gen } => {
                self.on_proc_hello(exec, gen);
                Ok(())
            }
            Ev::ProcDone { exec, gen } => {
                self.on_proc_done(exec, gen);
                Ok(())
            }
            Ev::ProcCrash { exec, gen } => {
                if self.procs[&exec].gen == gen && self.procs[&exec].alive {
                    let (exit, tail) = if self.rng.gen_bool(0.5) {
                        (
                            Exit::Signal {
                                signal: 11,
                                name: "SIGSEGV",
                            },
                            "Fatal Python error: Segmentation fault",
                        )
                    } else {
                        (Exit::Code(3), "")
                    };
                    self.die(exec, exit, tail);
                }
                Ok(())
            }
            Ev::ProcCpuStops { exec, gen } => {
                let now = self.now;
                let p = self.procs.get_mut(&exec).expect("exists");
                if p.gen == gen && p.alive {
                    p.set_cpu(now, 0.0);
                    if let Some(s) = p.ongoing_silence() {
                        s.cpu_stops = Some(now);
                    }
                }
                Ok(())
            }
            Ev::ProcCloses { exec, gen } => {
                let p = &self.procs[&exec];
                if p.gen == gen && p.alive && !p.output_closed {
                    let error = match p.plans.get(&p.current.expect("running")) {
                        Some(TaskPlan::ReadError(_)) => Some(
                            "reading its output: Connection reset by peer (os error 104)".into(),
                        ),
                        _ => None,
                    };
                    self.write(exec, Out::Eof(error));
                    let p = self.procs.get_mut(&exec).expect("exists");
                    p.output_closed = true;
                }
                Ok(())
            }
            Ev::ProcBogus { exec, gen } => {
                let p = &self.procs[&exec];
                if p.gen == gen && p.alive {
                    let bogus = JobId(BOGUS_JOB + exec.0);
                    self.write(exec, Out::Answer(bogus, Answer::Value(Bytes::new())));
                }
                Ok(())
            }
            Ev::ProcDies { exec, exit, tail } => {
                if self.procs[&exec].alive {
                    self.die(exec, exit, tail);
                }
                Ok(())
            }
            Ev::KillNow { exec } => {
                if self.procs[&exec].alive {
                    self.procs.get_mut(&exec).expect("exists").killed = true;
                    self.die(exec, SIGKILL, "");
                }
                Ok(())
            }
            Ev::Stall { length } => {
                if self.healed || self.stall.is_some() {
                    return Ok(());
                }
                let max = if self.rng.gen_bool(0.5) {
                    STALL_SHORT_MS_MAX
                } else {
                    STALL_MS_MAX
                };
                let d = length.unwrap_or_else(|| {
                    Duration::from_millis(self.rng.gen_range(STALL_MS_MIN..=max))
                });
                self.report.stalls += 1;
                self.stall = Some((self.now, self.now + d));
                self.note(|| format!("the pool's loop stalls for {d:?}"));
                self.push(self.now + d, Ev::StallEnd);
                Ok(())
            }
            Ev::StallEnd => {
                let (start, end) = self.stall.take().expect("stalled");
                self.stalls.push((start, end));
                // The tick (if one is due) may come before the readers caught up.
                self.readers_behind = self.rng.gen_bool(0.5);
                let deferred = std::mem::take(&mut self.deferred);
                let (ticks, rest): (Vec<Ev>, Vec<Ev>) = deferred
                    .into_iter()
                    .partition(|e| matches!(e, Ev::Tick { .. }));
                let tick = ticks.into_iter().last();
                if self.readers_behind {
                    if let Some(t) = tick {
                        self.dispatch(t)?;
                    }
                    self.readers_behind = false;
                    for e in rest {
                        self.dispatch(e)?;
                    }
                } else {
                    for e in rest {
                        self.dispatch(e)?;
                    }
                    if let Some(t) = tick {
                        self.dispatch(t)?;
                    }
                }
                self.reschedule_tick();
                Ok(())
            }
            Ev::Heal => {
                self.healed = true;
                self.healed_at = self.now;
                self.jobs_left = 0;
                self.note(|| "faults heal".into());
                Ok(())
            }
        }
    }

    fn reschedule_tick(&mut self) {
        let next = self.core.next_timeout().map(|t| t.max(self.now));
        if next != self.tick_at {
            self.tick_at = next;
            if let Some(t) = next {
                self.push(t, Ev::Tick { due: t });
            }
        }
    }

    /// Hand the pool an event, check its invariants, carry out its commands.
    fn core_step(&mut self, ev: Event) -> Result<(), FailureKind> {
        self.handling = match &ev {
            Event::Started { exec, job } => Cause::Started(*exec, *job),
            Event::Abandon { attempt, .. } => self
                .by_attempt
                .get(attempt)
                .map_or(Cause::Other, |&j| Cause::Abandon(j)),
            _ => Cause::Other,
        };
        if self.config.trace_len > 0 {
            self.record(TraceItem::In(ev.clone()));
        }
        let out = self.core.handle(self.now, ev);
        self.core.check_invariants();
        self.carry_out(out)?;
        self.handling = Cause::Other;
        self.reschedule_tick();
        Ok(())
    }

    // === the worker ===

    fn on_submit(&mut self) -> Result<(), FailureKind> {
        if self.jobs_left == 0 {
            return Ok(());
        }
        let burst = if self.rng.gen_bool(0.2) {
            self.rng.gen_range(2..=20)
        } else {
            1
        };
        for _ in 0..burst.min(self.jobs_left) {
            self.jobs_left -= 1;
            let job = JobId(self.jobs.len() as u64 + 1);
            let (task, attempt) = attempt_of(job);
            self.jobs.insert(
                job,
                Job {
                    task,
                    attempt,
                    submitted: self.now,
                    sent_to: BTreeSet::new(),
                    owner: None,
                    finished: false,
                    forgotten: false,
                    abandoned: false,
                },
            );
            self.by_attempt.insert(attempt, job);
            self.report.jobs += 1;
            self.core_step(Event::Execute { job, task, attempt })?;
        }
        if self.jobs_left > 0 {
            let gap_ms = self.config.safety.as_millis() as u64 / (self.jobs_left as u64 + 1);
            let at = self.now + Duration::from_millis(self.rng.gen_range(0..=2 * gap_ms.max(1)));
            self.push(at, Ev::Submit);
        }
        Ok(())
    }

    fn on_abandon_some(&mut self) -> Result<(), FailureKind> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        // Mostly an unfinished attempt; sometimes one that already finished (a no-op).
        let unfinished: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.finished)
            .map(|(&id, _)| id)
            .collect();
        let job = if !unfinished.is_empty() && self.rng.gen_bool(0.8) {
            unfinished[self.rng.gen_range(0..unfinished.len())]
        } else {
            JobId(self.rng.gen_range(1..=self.jobs.len() as u64))
        };
        let j = self.jobs.get_mut(&job).expect("drawn from the jobs");
        if !j.finished {
            j.abandoned = true;
        }
        let (task, attempt) = (j.task, j.attempt);
        self.core_step(Event::Abandon { task, attempt })
    }

    // === the shell ===

    fn carry_out(&mut self, out: Vec<Command>) -> Result<(), FailureKind> {
        let mut forgotten = Vec::new();
        for c in out {
            if self.config.trace_len > 0 {
                self.record(TraceItem::Out(c.clone()));
            }
            match c {
                Command::Spawn { exec } => {
                    self.fingerprint([1, exec.0, 0]);
                    self.spawn(exec);
                }
                Command::Send { exec, job } => {
                    self.fingerprint([2, exec.0, job.0]);
                    self.on_send(exec, job)?;
                }
                Command::Cancel { exec, job } => {
                    self.fingerprint([3, exec.0, job.0]);
                    self.report.cancels += 1;
                    let p = &self.procs[&exec];
                    if !p.sent.contains(&job) {
                        return Err(FailureKind::Pool(PoolViolation::CancelOfUnsent {
                            exec: exec.0,
                            job: job.0,
                        }));
                    }
                    if p.alive || !p.spawn_answered && !p.spawn_failed {
                        let at = self.now + self.us(PIPE_US_MAX);
                        let p = self.procs.get_mut(&exec).expect("exists");
                        p.input.push_back((at, In::Cancel(job)));
                        self.push(at, Ev::ProcWake { exec });
                    }
                }
                Command::Kill {
                    exec,
                    capture_stacks,
                } => {
                    self.fingerprint([4, exec.0, capture_stacks as u64]);
                    self.on_kill(exec, capture_stacks)?;
                }
                Command::Started { task, attempt } => {
                    self.fingerprint([5, task.index as u64, attempt.0]);
                    self.on_started(attempt)?;
                }
                Command::Finished {
                    task,
                    attempt,
                    result,
                } => {
                    self.fingerprint([6, task.index as u64, attempt.0]);
                    self.on_finished(attempt, result)?;
                }
                Command::ForgetJob { job } => {
                    self.fingerprint([7, job.0, 0]);
                    let j = self.jobs.get_mut(&job).expect("forgotten jobs exist");
                    if !j.finished || j.forgotten {
                        return Err(FailureKind::Pool(PoolViolation::ForgottenWrongly {
                            job: job.0,
                            why: "not finished, or forgotten before",
                        }));
                    }
                    j.forgotten = true;
                    forgotten.push(job);
                }
                Command::ForgetExec { exec } => {
                    self.fingerprint([8, exec.0, 0]);
                    let p = self
                        .procs
                        .get_mut(&exec)
                        .expect("forgotten executors exist");
                    if p.forgotten || !(p.core_exited || p.spawn_failed) {
                        return Err(FailureKind::Pool(PoolViolation::ExecForgottenWrongly {
                            exec: exec.0,
                            why: "forgotten before, or its exit was not seen",
                        }));
                    }
                    p.forgotten = true;
                }
                Command::Log(l) => {
                    self.fingerprint([9, 0, 0]);
                    self.on_log(l)?;
                }
            }
        }
        // A job is forgotten once no executor still holds it (checked after the whole batch:
        // an executor settled in it is forgotten after the jobs it held).
        for job in forgotten {
            if let Some((exec, _)) = self
                .procs
                .iter()
                .find(|(_, p)| !p.forgotten && p.unanswered.contains(&job))
            {
                return Err(FailureKind::Pool(PoolViolation::ExecForgottenWrongly {
                    exec: exec.0,
                    why: "a job it holds was forgotten while it may still answer it",
                }));
            }
        }
        Ok(())
    }

    fn spawn(&mut self, exec: ExecId) {
        self.report.spawns += 1;
        let pid = self.next_pid;
        self.next_pid += 1;
        let broken = self
            .faults
            .broken
            .iter()
            .any(|&(a, b)| self.now >= a && self.now < b)
            && !self.healed;
        let fail_start = !self.healed && (broken || self.rng.gen_bool(self.faults.start_fail));
        let hello = Duration::from_millis(self.rng.gen_range(HELLO_MS_MIN..=HELLO_MS_MAX));
        let start = if !fail_start {
            StartPlan::Ready(hello)
        } else {
            match self.rng.gen_range(0..10) {
                0..=3 => StartPlan::Refuse(hello),
                4..=7 => StartPlan::DieEarly(hello),
                _ => StartPlan::Mute,
            }
        };
        let spawn_fails = !self.healed
            && (broken && self.rng.gen_bool(0.5) || self.rng.gen_bool(self.faults.spawn_fail));
        self.procs.insert(
            exec,
            Proc {
                pid,
                start,
                alive: false,
                spawn_answered: false,
                spawn_failed: spawn_fails,
                ready: false,
                exit: None,
                stderr_tail: "",
                input: VecDeque::new(),
                queue: VecDeque::new(),
                current: None,
                plans: BTreeMap::new(),
                gen: 0,
                pings: Vec::new(),
                silences: Vec::new(),
                cpu_acc: Duration::ZERO,
                cpu_rate: 0.0,
                cpu_since: self.now,
                writes: Vec::new(),
                last_delivery: self.now,
                output_closed: false,
                kill: None,
                killed: false,
                core_closed: false,
                core_exited: false,
                forgotten: false,
                unanswered: BTreeSet::new(),
                sent: BTreeSet::new(),
            },
        );
        let at = self.now + self.us(SPAWN_US_MAX);
        self.push(at, Ev::SpawnAnswer { exec });
    }

    fn on_spawn_answer(&mut self, exec: ExecId) -> Result<(), FailureKind> {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("spawned");
        p.spawn_answered = true;
        if p.spawn_failed {
            self.report.spawn_failures += 1;
            return self.core_step(Event::SpawnFailed {
                exec,
                message: "cannot start the Python executor with \"sim-python\": No such file or directory (os error 2)".into(),
            });
        }
        p.alive = true;
        p.cpu_since = now;
        p.cpu_rate = ACTIVE_RATE;
        let pid = p.pid;
        match p.start {
            StartPlan::Ready(d) | StartPlan::Refuse(d) => {
                self.push(now + d, Ev::ProcHello { exec, gen: 0 })
            }
            StartPlan::DieEarly(d) => self.push(
                now + d,
                Ev::ProcDies {
                    exec,
                    exit: Exit::Code(1),
                    tail: "ModuleNotFoundError: No module named 'encodings'",
                },
            ),
            StartPlan::Mute => {}
        }
        // Frames sent before the spawn was answered wait in its pipe.
        self.push(now, Ev::ProcWake { exec });
        self.core_step(Event::Spawned { exec, pid })
    }

    fn on_send(&mut self, exec: ExecId, job: JobId) -> Result<(), FailureKind> {
        let p = self.procs.get(&exec).expect("sent to a spawned executor");
        let why = if p.forgotten {
            Some("settled")
        } else if p.kill.is_some() {
            Some("condemned")
        } else if p.core_closed {
            Some("closed")
        } else if p.core_exited {
            Some("exited")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(FailureKind::Pool(PoolViolation::SentToDeadExecutor {
                exec: exec.0,
                job: job.0,
                why,
            }));
        }
        let j = self.jobs.get_mut(&job).expect("sent jobs exist");
        if j.finished {
            return Err(FailureKind::Pool(PoolViolation::ForgottenWrongly {
                job: job.0,
                why: "sent after it finished",
            }));
        }
        if !j.sent_to.insert(exec) {
            return Err(FailureKind::Pool(PoolViolation::SentToDeadExecutor {
                exec: exec.0,
                job: job.0,
                why: "had it already",
            }));
        }
        if j.sent_to.len() > 1 {
            self.report.copies += 1;
        }
        let at = self.now + self.us(PIPE_US_MAX);
        let p = self.procs.get_mut(&exec).expect("exists");
        p.sent.insert(job);
        p.unanswered.insert(job);
        // Frames to a process that is gone (or never started) are lost with the pipe.
        if p.alive || !p.spawn_answered && !p.spawn_failed {
            p.input.push_back((at, In::Task(job)));
            self.push(at, Ev::ProcWake { exec });
        }
        Ok(())
    }

    fn on_kill(&mut self, exec: ExecId, capture: bool) -> Result<(), FailureKind> {
        let (hang, busy) = (self.hang, self.busy);
        let now = self.now;
        let observed = self.observed_activity(exec, now);
        let p = self.procs.get_mut(&exec).expect("killed executors exist");
        if p.kill.is_some() || p.core_exited || !p.spawn_answered || p.spawn_failed {
            return Err(FailureKind::Pool(PoolViolation::BadKill {
                exec: exec.0,
                why: "twice, after its exit, or before it was spawned",
            }));
        }
        p.kill = Some((now, capture));
        if capture {
            self.report.hang_kills += 1;
            if p.alive {
                // Judged on the silence up to the pool's previous check (what came after may
                // be unread): it must have been silent through it, for longer than the hang
                // timeout, and for longer than the busy timeout if it was computing. (The pool
                // sees a silence begin at the ping before it: up to a ping interval early.)
                let prev = self.prev_check;
                let silence = p.silence_at(prev);
                let length = silence.map_or(Duration::ZERO, |s| prev - s.since);
                let silent = now.saturating_sub(observed.unwrap_or_default());
                if silence.is_none() || length + executor::PING_INTERVAL <= hang {
                    return Err(FailureKind::Pool(PoolViolation::HealthyKilled {
                        pid: p.pid,
                    }));
                }
                // Computing when the pool last looked, and its CPU ran on until now (or until
                // it answered): the pool's CPU window shows it busy, so only the busy timeout
                // may end it. (CPU that stopped meanwhile makes it stuck.)
                let stayed_busy = silence.is_some_and(|s| {
                    let end = s.until.unwrap_or(now).min(now);
                    s.computing_at(prev) && s.cpu_stops.is_none_or(|c| c >= end)
                });
                if stayed_busy && length + executor::PING_INTERVAL <= busy {
                    return Err(FailureKind::Pool(PoolViolation::BusyKilledEarly {
                        pid: p.pid,
                        silent,
                        busy_timeout: busy,
                    }));
                }
            }
            self.push(now + STACKS_WAIT, Ev::KillNow { exec });
        } else {
            self.report.other_kills += 1;
            let at = now + self.us(500);
            self.push(at, Ev::KillNow { exec });
        }
        Ok(())
    }

    fn on_started(&mut self, attempt: AttemptId) -> Result<(), FailureKind> {
        let job = self.by_attempt[&attempt];
        let Cause::Started(exec, started) = self.handling else {
            return Err(FailureKind::Pool(PoolViolation::BadStart {
                job: job.0,
                why: "not while handling an executor's start",
            }));
        };
        let j = self.jobs.get_mut(&job).expect("exists");
        if started != job || j.owner.is_some() || j.finished {
            return Err(FailureKind::Pool(PoolViolation::BadStart {
                job: job.0,
                why: "for another job, twice, or after it finished",
            }));
        }
        j.owner = Some(exec);
        Ok(())
    }

    fn on_finished(
        &mut self,
        attempt: AttemptId,
        result: Result<Bytes, Failure>,
    ) -> Result<(), FailureKind> {
        let job = self.by_attempt[&attempt];
        let j = self.jobs.get_mut(&job).expect("exists");
        if j.finished {
            return Err(FailureKind::Pool(PoolViolation::FinishedTwice {
                job: job.0,
            }));
        }
        j.finished = true;
        let (owner, submitted, abandoned) = (j.owner, j.submitted, j.abandoned);
        let unjustified = |failure: &Failure, why| {
            Err(FailureKind::Pool(PoolViolation::UnjustifiedFailure {
                job: job.0,
                failure: format!("{failure:?}"),
                why,
            }))
        };
        let plan = owner.and_then(|o| self.procs[&o].plans.get(&job).copied());
        match result {
            Ok(v) => {
                self.report.values += 1;
                if owner.is_none_or(|o| v != value_of(job, o)) {
                    return Err(FailureKind::Pool(PoolViolation::WrongValue {
                        job: job.0,
                        got: String::from_utf8_lossy(&v).into_owned(),
                        owner: owner.map(|o| o.0),
                    }));
                }
                if matches!(plan, Some(TaskPlan::Busy { .. })) {
                    self.report.busy_survived += 1;
                }
            }
            Err(f) => match &f {
                Failure::Raised(e) => {
                    self.report.raised += 1;
                    let ok = owner.is_some_and(|o| e.message == raised_of(job, o))
                        && matches!(plan, Some(TaskPlan::Raise(_)));
                    if !ok {
                        return unjustified(&f, "its owner did not raise it");
                    }
                }
                Failure::Abandoned => {
                    self.report.abandoned += 1;
                    if !abandoned || self.handling != Cause::Abandon(job) {
                        return unjustified(&f, "the worker did not abandon it now");
                    }
                }
                Failure::Lost(loss) => {
                    self.report.lost += 1;
                    let Some(o) = owner else {
                        return unjustified(&f, "it never started: queued jobs are not charged");
                    };
                    let p = &self.procs[&o];
                    if p.pid != loss.pid || p.alive {
                        return unjustified(&f, "its owner is another process, or alive");
                    }
                    // Its output closed and its exit came late: if it died by itself, that
                    // is what it died of.
                    let closed_output = Some(Death::Protocol(ProtocolError::ClosedOutput));
                    if loss.death == closed_output && !p.killed {
                        return unjustified(&f, "it died by itself, not of the kill");
                    }
                    let ok = match (&loss.death, plan) {
                        (None, Some(TaskPlan::Crash(_))) => !p.killed,
                        (None, _) => false,
                        (Some(Death::Hung { .. }), Some(TaskPlan::Hang)) => true,
                        (Some(Death::Hung { .. }), Some(TaskPlan::BusyThenStuck { .. })) => true,
                        (Some(Death::BusyTooLong { silent }), Some(TaskPlan::Busy { .. }))
                        | (
                            Some(Death::BusyTooLong { silent }),
                            Some(TaskPlan::BusyThenStuck { .. }),
                        ) => *silent > self.busy,
                        (
                            Some(Death::Protocol(_)),
                            Some(
                                TaskPlan::CloseOutput(_)
                                | TaskPlan::ReadError(_)
                                | TaskPlan::AnswerUnknown(_),
                            ),
                        ) => true,
                        _ => false,
                    };
                    if !ok {
                        return unjustified(&f, "its executor did not die that way");
                    }
                    let killed_at = p.kill.map_or(self.now, |(at, _)| at);
                    if matches!(loss.death, Some(Death::Hung { .. }))
                        && matches!(plan, Some(TaskPlan::BusyThenStuck { .. }))
                        && p.silence_at(killed_at)
                            .is_some_and(|s| s.computing_at(killed_at))
                    {
                        return unjustified(&f, "judged stuck while computing");
                    }
                }
                Failure::NoExecutor(_) => {
                    self.report.no_executor += 1;
                    if owner.is_some() {
                        return unjustified(&f, "it had started");
                    }
                    let recent = self
                        .start_failures
                        .iter()
                        .any(|&t| t + START_RETRY_DELAY >= submitted);
                    if !recent {
                        return unjustified(&f, "no start failed since it was submitted");
                    }
                }
            },
        }
        Ok(())
    }

    fn on_log(&mut self, l: Log) -> Result<(), FailureKind> {
        match &l {
            Log::BusySilent { pid, .. } => {
                let busy = self
                    .procs
                    .values()
                    .find(|p| p.pid == *pid)
                    .is_some_and(|p| p.silence_at(self.prev_check).is_some_and(|s| s.computed));
                // (The silence it was in when the pool last looked: it may since have ended,
                // unread.)
                if !busy {
                    return Err(FailureKind::Pool(PoolViolation::BadLog {
                        log: format!("{l:?}"),
                        why: "the executor never computed in this silence",
                    }));
                }
            }
            Log::StartFailed { pid: Some(pid), .. } => {
                self.report.start_failures += 1;
                let failed = self
                    .procs
                    .values()
                    .find(|p| p.pid == *pid)
                    .is_some_and(|p| !p.ready && !p.alive);
                if !failed {
                    return Err(FailureKind::Pool(PoolViolation::BadLog {
                        log: format!("{l:?}"),
                        why: "that executor did start (or lives)",
                    }));
                }
                // Jobs fail for want of an executor from when the pool learns of it.
                self.start_failures.push(self.now);
            }
            Log::StartFailed { pid: None, .. } => self.start_failures.push(self.now),
            Log::ExecutorReplaced { .. } => {}
        }
        Ok(())
    }

    /// The activity the shell's reader would have stamped by now (it stamps when it reads).
    fn observed_activity(&self, exec: ExecId, now: Duration) -> Option<Duration> {
        let p = &self.procs[&exec];
        let raw = match (self.stall, self.stalls.last()) {
            // Stalled, or the stall just ended and the readers have not run yet: nothing read
            // since it began.
            (Some((a, _)), _) => p.raw_activity(a),
            (None, Some(&(a, _))) if self.readers_behind => p.raw_activity(a),
            _ => p.raw_activity(now),
        };
        // Written during a stall: read when it ended.
        raw.map(|w| {
            self.stalls
                .iter()
                .find(|&&(a, b)| w > a && w < b)
                .map_or(w, |&(_, b)| b)
        })
    }

    fn samples(&self) -> Vec<Sample> {
        self.procs
            .iter()
            .filter(|(_, p)| p.spawn_answered && !p.spawn_failed && !p.forgotten)
            .map(|(&exec, p)| {
                let last_activity = self.observed_activity(exec, self.now);
                let cpu = last_activity
                    .filter(|&l| executor::samples_cpu(self.now.saturating_sub(l), self.hang))
                    .map(|_| p.cpu_at(self.now));
                Sample {
                    exec,
                    last_activity,
                    cpu,
                }
            })
            .collect()
    }

    /// A stuck executor is killed within a bound of the hang timeout, a silently computing one
    /// of the busy timeout (both counted from the end of the last stall, if later).
    fn check_detection(&self) -> Result<(), FailureKind> {
        let since_stall = |s: Duration| match self.stalls.last() {
            Some(&(_, b)) => s.max(b),
            None => s,
        };
        let period = executor::PING_INTERVAL;
        for p in self.procs.values() {
            let (true, None, false, Some(s)) = (
                p.alive,
                p.kill,
                p.output_closed,
                p.silences.last().copied().filter(Silence::ongoing),
            ) else {
                continue;
            };
            let silent = self.now.saturating_sub(since_stall(s.since));
            if !s.computed && silent > self.hang + self.hang / 2 + 4 * period {
                return Err(FailureKind::Pool(PoolViolation::HangNotDetected {
                    pid: p.pid,
                    silent,
                    hang_timeout: self.hang,
                }));
            }
            let busy_bound = self.busy.max(self.hang) + self.hang + 4 * period;
            if s.computing_at(self.now) && silent > busy_bound {
                return Err(FailureKind::Pool(PoolViolation::BusyNotDetected {
                    pid: p.pid,
                    silent,
                    busy_timeout: self.busy,
                }));
            }
        }
        Ok(())
    }

    fn on_deliver(&mut self, exec: ExecId, out: Out) -> Result<(), FailureKind> {
        let p = self
            .procs
            .get_mut(&exec)
            .expect("delivering processes exist");
        let ev = match out {
            Out::Hello(error) => Event::Hello { exec, error },
            Out::Started(job) => Event::Started { exec, job },
            Out::Answer(job, answer) => {
                p.unanswered.remove(&job);
                Event::Answered { exec, job, answer }
            }
            Out::Eof(error) => {
                p.core_closed = true;
                Event::Closed { exec, error }
            }
        };
        self.core_step(ev)
    }

    // === the executor processes ===

    /// Write a frame to the process's output; the reader delivers it a little later, in order.
    fn write(&mut self, exec: ExecId, out: Out) {
        let lat = self.us(PIPE_US_MAX);
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("writing processes exist");
        if p.output_closed {
            return;
        }
        p.writes.push(now);
        let late = matches!(out, Out::Eof(None)) && !p.alive && self.rng.gen_bool(0.1);
        let mut at = (now + lat).max(p.last_delivery);
        if late {
            at += Duration::from_millis(self.rng.gen_range(0..=LATE_EOF_MS_MAX));
        }
        p.last_delivery = at;
        self.push(at, Ev::Deliver { exec, out });
    }

    fn on_proc_hello(&mut self, exec: ExecId, gen: u32) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        if p.gen != gen || !p.alive {
            return;
        }
        match p.start {
            StartPlan::Ready(_) => {
                p.ready = true;
                p.start_pinging(now);
                self.write(exec, Out::Hello(None));
                self.proc_wake(exec);
            }
            StartPlan::Refuse(_) => {
                self.write(
                    exec,
                    Out::Hello(Some(
                        "the Python executor (sim-python) cannot import cloudpickle".into(),
                    )),
                );
                let at = now + Duration::from_millis(1);
                self.push(
                    at,
                    Ev::ProcDies {
                        exec,
                        exit: Exit::Code(1),
                        tail: "",
                    },
                );
            }
            StartPlan::DieEarly(_) | StartPlan::Mute => unreachable!("no hello"),
        }
    }

    /// Between tasks: read what arrived (cancels drop queued tasks), start the next task.
    fn proc_wake(&mut self, exec: ExecId) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        if !p.alive || !p.ready || p.current.is_some() {
            return;
        }
        let mut skipped = Vec::new();
        while p.input.front().is_some_and(|(at, _)| *at <= now) {
            let (_, frame) = p.input.pop_front().expect("checked");
            match frame {
                In::Task(j) => p.queue.push_back(j),
                In::Cancel(j) => {
                    if let Some(pos) = p.queue.iter().position(|&q| q == j) {
                        p.queue.remove(pos);
                        skipped.push(j);
                    }
                }
            }
        }
        let next = p.queue.pop_front();
        for j in skipped {
            self.write(exec, Out::Answer(j, Answer::Skipped));
        }
        if let Some(j) = next {
            self.start_task(exec, j);
        }
    }

    fn draw_plan(&mut self) -> TaskPlan {
        let d = match self.rng.gen_range(0..100) {
            0..=39 => Duration::from_micros(self.rng.gen_range(50..=900)),
            40..=84 => Duration::from_micros(self.rng.gen_range(1_000..=30_000)),
            _ => Duration::from_millis(self.rng.gen_range(100..=2_000)),
        };
        if self.healed {
            return TaskPlan::Value(d);
        }
        let f = &self.faults;
        let (crash, hang, busy, stuck, raise, protocol) = (
            f.crash,
            f.hang,
            f.busy,
            f.busy_then_stuck,
            f.raise,
            f.protocol,
        );
        let x: f64 = self.rng.gen();
        let rate = self.rng.gen_range(BUSY_RATE_MIN..=1.0);
        let mut acc = crash;
        if x < acc {
            return TaskPlan::Crash(d);
        }
        acc += hang;
        if x < acc {
            return TaskPlan::Hang;
        }
        acc += busy;
        if x < acc {
            // Meant to survive: anywhere under the budget, or just under it (the edge).
            let short = self.busy.saturating_sub(BUSY_MARGIN);
            let edge = short.saturating_sub(Duration::from_millis(300));
            let run = if self.rng.gen_bool(0.6) && short > Duration::ZERO {
                if self.rng.gen_bool(0.5) {
                    self.rng.gen_range(edge..=short)
                } else {
                    self.rng.gen_range(Duration::ZERO..=short)
                }
            } else {
                self.busy + Duration::from_millis(self.rng.gen_range(100..=3_000))
            };
            return TaskPlan::Busy { run, rate };
        }
        acc += stuck;
        if x < acc {
            let run =
                Duration::from_millis(self.rng.gen_range(0..=3 * self.hang.as_millis() as u64));
            return TaskPlan::BusyThenStuck { run, rate };
        }
        acc += raise;
        if x < acc {
            return TaskPlan::Raise(d);
        }
        acc += protocol;
        if x < acc {
            return match self.rng.gen_range(0..3) {
                0 => TaskPlan::CloseOutput(d),
                1 => TaskPlan::ReadError(d),
                _ => TaskPlan::AnswerUnknown(d),
            };
        }
        TaskPlan::Value(d)
    }

    fn start_task(&mut self, exec: ExecId, job: JobId) {
        let plan = self.draw_plan();
        let now = self.now;
        self.write(exec, Out::Started(job));
        let p = self.procs.get_mut(&exec).expect("exists");
        p.plans.insert(job, plan);
        p.current = Some(job);
        p.gen += 1;
        let gen = p.gen;
        let silent = |p: &mut Proc, rate: f64| {
            p.silences.push(Silence {
                since: now,
                until: None,
                computed: rate > 0.0,
                cpu_stops: None,
            });
            p.stop_pinging(now);
            p.set_cpu(now, rate);
        };
        match plan {
            TaskPlan::Value(d) | TaskPlan::Raise(d) => {
                self.push(now + d, Ev::ProcDone { exec, gen })
            }
            TaskPlan::Crash(d) => {
                self.report.crashes += 1;
                self.push(now + d, Ev::ProcCrash { exec, gen })
            }
            TaskPlan::Hang => {
                self.report.hangs += 1;
                silent(p, 0.0)
            }
            TaskPlan::Busy { run, rate } => {
                silent(p, rate);
                self.push(now + run, Ev::ProcDone { exec, gen });
                if run > self.busy {
                    self.report.busy_long += 1;
                } else {
                    self.report.busy_short += 1;
                    // Aimed: the pool's loop stalls from just before the computation ends to
                    // just after its budget runs out, so that its answer waits unread.
                    let at = (now + run).saturating_sub(self.us(100_000));
                    let length = (now + self.busy + self.us(100_000)).saturating_sub(at);
                    if length < Duration::from_millis(STALL_SHORT_MS_MAX) && self.rng.gen_bool(0.5)
                    {
                        self.push(
                            at,
                            Ev::Stall {
                                length: Some(length),
                            },
                        );
                    }
                }
            }
            TaskPlan::BusyThenStuck { run, rate } => {
                self.report.hangs += 1;
                silent(p, rate);
                self.push(now + run, Ev::ProcCpuStops { exec, gen });
            }
            TaskPlan::CloseOutput(d) | TaskPlan::ReadError(d) => {
                self.report.protocol_faults += 1;
                self.push(now + d, Ev::ProcCloses { exec, gen });
            }
            TaskPlan::AnswerUnknown(d) => {
                self.report.protocol_faults += 1;
                self.push(now + d, Ev::ProcBogus { exec, gen });
            }
        }
    }

    fn on_proc_done(&mut self, exec: ExecId, gen: u32) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        if p.gen != gen || !p.alive {
            return;
        }
        let job = p.current.take().expect("a task ends");
        if let Some(s) = p.ongoing_silence() {
            s.until = Some(now);
            p.start_pinging(now);
        }
        p.set_cpu(now, ACTIVE_RATE);
        let answer = match p.plans[&job] {
            TaskPlan::Raise(_) => Answer::Error(TaskError {
                message: raised_of(job, exec),
                exit_code: None,
                detail: None,
            }),
            _ => Answer::Value(value_of(job, exec)),
        };
        self.write(exec, Out::Answer(job, answer));
        self.proc_wake(exec);
    }

    /// The process ends: its output closes after what it wrote, and `wait()` returns.
    fn die(&mut self, exec: ExecId, exit: Exit, tail: &'static str) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        debug_assert!(p.alive);
        let pid = p.pid;
        p.alive = false;
        p.gen += 1;
        p.set_cpu(now, 0.0);
        p.stop_pinging(now);
        if let Some(s) = p.ongoing_silence() {
            s.until = Some(now);
        }
        p.exit = Some(exit.clone());
        p.stderr_tail = tail;
        if !p.output_closed {
            self.write(exec, Out::Eof(None));
            self.procs.get_mut(&exec).expect("exists").output_closed = true;
        }
        let at = now + self.us(REAP_US_MAX);
        self.push(at, Ev::Reaped { exec });
        self.note(|| format!("pid {pid} ({exec}) dies: {exit}"));
    }
}

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
