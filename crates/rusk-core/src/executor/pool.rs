//! The executor pool as a pure state machine: the policy of `python_exec`, without processes.
//!
//! The worker hands the pool attempts to run (`Execute`, keyed by a [`JobId`] the shell chose;
//! the shell keeps the payload and inputs) and sometimes takes them back (`Abandon`). The pool
//! keeps `size` executors, sends each job to one of them and reports exactly one `Finished` per
//! `Execute`, preceded by at most one `Started`.
//!
//! # Scheduling
//!
//! Executors are spawned with the first job (or at once: `eager`), and the pool is kept at
//! `size` live executors from then on. Jobs are sent ahead of their start, so an executor goes
//! from one to the next without a round trip through the worker: [`PIPELINE_DEPTH`] at once,
//! or [`PIPELINE_DEPTH_SHORT`] while its tasks take under [`SHORT_TASK`] on average. A job
//! queued behind a long one (running for [`STEAL_AFTER`]) or behind an executor still starting
//! is not stuck there: an idle executor, when nothing else waits, is sent a copy. A job that
//! may wait (or be copied) is sent with a *claim*: before it starts it, an executor takes the
//! claim (an exclusive file create, atomic between processes) and skips the job (`X`) if
//! another executor took it first, so a job's code never runs twice. The executor that
//! starts it owns it, the others are told to drop it (`Cancel`), and only the owner's answer
//! counts. A job put back in line (its executor died) gets a new claim.
//!
//! # Failures
//!
//! An executor is killed (`Kill`) when it is hung or busy too long ([`super::judge`], from the
//! `Tick` samples), when the job it runs is abandoned, when it has not said hello within
//! [`START_TIMEOUT`], or when it breaks the protocol. A dead executor is *settled* once both its
//! output closed and its exit was seen (or [`EXIT_GRACE`] after its exit): the job it was running
//! fails with a [`Loss`] saying what happened (its retries apply), the jobs queued behind it go
//! back to the front of the queue uncharged, and a replacement is spawned. An executor that
//! never got going fails the jobs only it held with the reason ([`StartFailure`]); after a start
//! failure no executor is spawned for [`START_RETRY_DELAY`], and while none is live the waiting
//! jobs fail with that reason rather than wait.
//!
//! Answers (`Started`, `Answered`) from an executor the pool has condemned are ignored: the
//! verdict stands, and its jobs are settled when it is gone.
use super::{judge, samples_cpu, Silence, Verdict};
use bytes::Bytes;
use rusk_proto::msg::TaskError;
use rusk_proto::{AttemptId, TaskRef};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// How often an executor pings (fixed in the script).
pub const PING_INTERVAL: Duration = Duration::from_millis(100);
/// Tasks sent to one executor ahead of their start.
pub const PIPELINE_DEPTH: usize = 2;
/// Tasks sent to one executor ahead while its tasks are short (no-op-sized tasks would
/// otherwise wait on pipe wake-ups).
pub const PIPELINE_DEPTH_SHORT: usize = 16;
/// Tasks shorter than this on average (start to answer, as seen by the pool) are short.
pub const SHORT_TASK: Duration = Duration::from_millis(1);
/// A task queued behind one that has run this long (or behind an executor still starting)
/// may be taken by an idle executor. Shorter waits are not worth a duplicate start.
pub const STEAL_AFTER: Duration = Duration::from_millis(10);
/// An executor that has not said hello within this is killed (interpreter start and
/// `import cloudpickle` take well under a second on a healthy host).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After an executor failed to start, wait this long before trying again.
pub const START_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Executors that died by themselves after their hello, with no job ever started on any
/// executor since, that count as a failure to start (something in the environment kills
/// them: an uploaded module's thread, a sitecustomize): the pool then backs off as for any
/// start failure instead of replacing them forever.
pub const IDLE_DEATHS_MAX: u32 = 3;
/// How long to wait for the rest of a dead executor's output (or for its exit after it closed
/// its output) before settling its tasks.
pub const EXIT_GRACE: Duration = Duration::from_millis(200);
/// If the pool's own loop was held up longer than this (at least; half the hang timeout if
/// that is more) between two checks, the executors' pings are waiting unread: judge nobody.
const STALL_MIN: Duration = Duration::from_millis(500);
/// Shortest period of the checks (a hang timeout of 100 ms would ask for 20 ms).
const CHECK_PERIOD_MIN: Duration = Duration::from_millis(20);

struct Job {
    task: TaskRef,
    attempt: AttemptId,
    /// Executors it was sent to that have not answered it.
    on: Vec<ExecId>,
    /// The executor that started it first: its answer is the job's.
    owner: Option<ExecId>,
    /// `Finished` was emitted.
    reported: bool,
    /// Abandoned by the worker: any executor that starts it is killed.
    abandoned: bool,
    /// The claim of its current copies (`None`: sent unclaimed, to an executor that starts it
    /// next; such a job is never copied). Copies share one claim: the first executor to take
    /// it runs the job, the others skip it.
    claim: Option<u32>,
    /// Bumped each time the job goes back to waiting: an executor that died after taking the
    /// old claim (before its start was seen) does not block the job's next run.
    gen: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Hello {
    Waiting,
    Ready,
    Refused(String),
}

/// The CPU window of a silent executor: when it opened, the CPU time then, and the silence it
/// belongs to (the last activity when it opened: a window never spans two silences).
#[derive(Clone, Copy, Debug)]
struct CpuWindow {
    start: Duration,
    cpu: Duration,
    silent_since: Duration,
}

struct Exited {
    exit: Exit,
    killed: bool,
    at: Duration,
    stacks: Option<String>,
    stderr_tail: String,
}

struct Exec {
    id: ExecId,
    /// `None` until `Spawned`.
    pid: Option<u32>,
    spawned_at: Duration,
    hello: Hello,
    /// A job started on it (then its death is not a failure to start).
    started_any: bool,
    /// Jobs sent and not answered, in order.
    queue: Vec<JobId>,
    /// The job it started last and has not answered, and when it started.
    running: Option<(JobId, Duration)>,
    /// Moving average of its tasks' run times, in microseconds (`None`: none ran yet).
    avg_run_us: Option<f64>,
    /// While silent: the CPU window, the CPU time sampled at the last check, and whether
    /// `BusySilent` was logged.
    window: Option<CpuWindow>,
    last_cpu: Option<(Duration, Duration)>,
    busy_warned: bool,
    /// Condemned: why it is being killed.
    death: Option<Death>,
    kill_sent: bool,
    /// Output closed (EOF or a bad frame), and when.
    closed_at: Option<Duration>,
    exited: Option<Exited>,
    /// Its running job seceded: it holds no slot until that job is answered.
    seceded: bool,
}

impl Exec {
    fn live(&self) -> bool {
        self.death.is_none() && self.closed_at.is_none() && self.exited.is_none()
    }

    fn ready(&self) -> bool {
        self.hello == Hello::Ready
    }

    /// How many jobs it may have been sent and not answered.
    fn depth(&self) -> usize {
        match self.avg_run_us {
            Some(us) if us < SHORT_TASK.as_micros() as f64 => PIPELINE_DEPTH_SHORT,
            _ => PIPELINE_DEPTH,
        }
    }

    /// May a job be sent to it now? Also while it is being spawned: the shell spawns before
    /// it carries out the commands that follow, and a failed spawn gives its jobs back.
    fn takes_jobs(&self) -> bool {
        self.live() && !self.seceded && self.queue.len() < self.depth()
    }

    /// Does it count against the pool's size? Not while its running job is seceded.
    fn holds_slot(&self) -> bool {
        self.live() && !self.seceded
    }

    /// Since when may the jobs queued behind its running one be stolen (`None`: not now)?
    /// At once while it is still starting, [`STEAL_AFTER`] into a running task.
    fn stealable_from(&self) -> Option<Duration> {
        if !self.live() {
            return None;
        }
        if !self.ready() || self.seceded {
            return Some(Duration::ZERO);
        }
        self.running.map(|(_, at)| at + STEAL_AFTER)
    }
}

pub struct PoolCore {
    config: PoolConfig,
    jobs: FxHashMap<JobId, Job>,
    by_attempt: FxHashMap<(TaskRef, AttemptId), JobId>,
    /// Jobs waiting for an executor, oldest first.
    pending: VecDeque<JobId>,
    /// In spawn order (so by id).
    execs: Vec<Exec>,
    /// Keep `size` executors running (set by the first job, or `eager`).
    active: bool,
    start_failure: Option<(Duration, StartFailure)>,
    /// Executors dead by themselves after their hello since a job last started (see
    /// `IDLE_DEATHS_MAX`).
    idle_deaths: u32,
    next_exec: u64,
    last_check: Duration,
    out: Vec<Command>,
}

impl PoolCore {
    pub fn new(config: PoolConfig) -> PoolCore {
        assert!(config.size >= 1, "a pool of no executors");
        PoolCore {
            active: config.eager,
            config,
            jobs: FxHashMap::default(),
            by_attempt: FxHashMap::default(),
            pending: VecDeque::new(),
            execs: Vec::new(),
            start_failure: None,
            idle_deaths: 0,
            next_exec: 0,
            last_check: Duration::ZERO,
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// What to do when the shell starts: an eager pool spawns its executors.
    pub fn start(&mut self, now: Duration) -> Vec<Command> {
        let mut out = Vec::new();
        std::mem::swap(&mut self.out, &mut out);
        self.dispatch(now);
        std::mem::swap(&mut self.out, &mut out);
        out
    }

    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.handle_into(now, event, &mut out);
        out
    }

    pub fn handle_into(&mut self, now: Duration, event: Event, out: &mut Vec<Command>) {
        std::mem::swap(&mut self.out, out);
        match event {
            Event::Execute { job, task, attempt } => self.on_execute(job, task, attempt),
            Event::Abandon { task, attempt } => self.on_abandon(task, attempt),
            Event::Spawned { exec, pid } => self.on_spawned(now, exec, pid),
            Event::SpawnFailed { exec, message } => self.on_spawn_failed(now, exec, message),
            Event::Hello { exec, error } => {
                if let Some(x) = self.exec_mut(exec) {
                    x.hello = match error {
                        Some(e) => Hello::Refused(e),
                        None => Hello::Ready,
                    };
                }
            }
            Event::Started { exec, job } => self.on_started(now, exec, job),
            Event::Seceded { exec, job } => self.on_seceded(exec, job),
            Event::Rejoined { exec, job } => self.on_rejoined(exec, job),
            Event::Answered { exec, job, answer } => self.on_answered(now, exec, job, answer),
            Event::Closed { exec, error } => {
                if let Some(x) = self.exec_mut(exec) {
                    x.closed_at.get_or_insert(now);
                    if let Some(e) = error {
                        self.kill(exec, Death::Protocol(ProtocolError::Reader(e)));
                    }
                    self.maybe_settle(now, exec);
                }
            }
            Event::Exited {
                exec,
                exit,
                killed,
                stacks,
                stderr_tail,
            } => {
                if let Some(x) = self.exec_mut(exec) {
                    assert!(x.pid.is_some(), "{exec} exited before it was spawned");
                    x.exited = Some(Exited {
                        exit,
                        killed,
                        at: now,
                        stacks,
                        stderr_tail,
                    });
                    self.maybe_settle(now, exec);
                }
            }
            Event::Tick { samples } => self.on_tick(now, &samples),
        }
        self.dispatch(now);
        std::mem::swap(&mut self.out, out);
    }

    /// When the shell must send the next `Tick`: periodically while there are executors (to
    /// judge silences, start timeouts and exits), sooner when a queued job becomes stealable.
    pub fn next_timeout(&self) -> Option<Duration> {
        if self.execs.is_empty() {
            return None;
        }
        let period = (self.config.hang_timeout / 5).clamp(CHECK_PERIOD_MIN, PING_INTERVAL);
        let check = self.last_check + period;
        Some(match self.steal_deadline() {
            Some(s) => s.min(check),
            None => check,
        })
    }

    /// Executors alive and not condemned (a gauge).
    pub fn executors_alive(&self) -> u32 {
        self.execs.iter().filter(|e| e.live()).count() as u32
    }

    fn exec_mut(&mut self, id: ExecId) -> Option<&mut Exec> {
        self.execs.iter_mut().find(|e| e.id == id)
    }

    fn exec(&self, id: ExecId) -> Option<&Exec> {
        self.execs.iter().find(|e| e.id == id)
    }

    fn on_execute(&mut self, job: JobId, task: TaskRef, attempt: AttemptId) {
        assert!(!self.jobs.contains_key(&job), "job {job} executed twice");
        let old = self.by_attempt.insert((task, attempt), job);
        assert!(old.is_none(), "{task} {attempt} executed twice");
        self.jobs.insert(
            job,
            Job {
                task,
                attempt,
                on: Vec::new(),
                owner: None,
                reported: false,
                abandoned: false,
                claim: None,
                gen: 0,
            },
        );
        self.pending.push_back(job);
        self.active = true;
    }

    fn on_abandon(&mut self, task: TaskRef, attempt: AttemptId) {
        let Some(&id) = self.by_attempt.get(&(task, attempt)) else {
            return;
        };
        let job = self.jobs.get_mut(&id).expect("by_attempt names live jobs");
        if job.reported {
            return;
        }
        job.abandoned = true;
        let owner = job.owner;
        let on = job.on.clone();
        self.finish(id, Err(Failure::Abandoned));
        if let Some(pos) = self.pending.iter().position(|&j| j == id) {
            self.pending.remove(pos);
        }
        match owner {
            Some(e) => self.kill(e, Death::Abandoned),
            None => {
                for exec in on {
                    self.out.push(Command::Cancel { exec, job: id });
                }
            }
        }
        self.gc(id);
    }

    fn on_spawned(&mut self, now: Duration, exec: ExecId, pid: u32) {
        let x = self
            .exec_mut(exec)
            .filter(|x| x.pid.is_none())
            .unwrap_or_else(|| panic!("Spawned for {exec}, which is not being spawned"));
        x.pid = Some(pid);
        x.spawned_at = now;
    }

    fn on_spawn_failed(&mut self, now: Duration, exec: ExecId, message: String) {
        let pos = self
            .execs
            .iter()
            .position(|x| x.id == exec && x.pid.is_none())
            .unwrap_or_else(|| panic!("SpawnFailed for {exec}, which is not being spawned"));
        let x = self.execs.remove(pos);
        // The jobs sent to it never reached an executor: they wait for another one (or fail
        // with the reason if none is coming, see `dispatch`).
        for &j in x.queue.iter().rev() {
            let job = self.jobs.get_mut(&j).expect("queued jobs exist");
            job.on.retain(|&e| e != exec);
            if !job.reported && job.on.is_empty() {
                self.requeue(j);
            }
            self.gc(j);
        }
        let failure = StartFailure::Spawn(message);
        self.out.push(Command::Log(Log::StartFailed {
            pid: None,
            failure: failure.clone(),
        }));
        self.out.push(Command::ForgetExec { exec });
        self.start_failure = Some((now, failure));
    }

    fn on_started(&mut self, now: Duration, exec: ExecId, id: JobId) {
        let Some(x) = self.exec_mut(exec) else { return };
        if x.death.is_some() {
            // Condemned before this frame came: the verdict stands, its jobs are settled when
            // it is gone.
            return;
        }
        if !x.queue.contains(&id) {
            self.kill(exec, Death::Protocol(ProtocolError::StartedUnknown(id)));
            return;
        }
        x.started_any = true;
        if x.running.is_some() {
            // Executors run one task at a time.
            self.kill(exec, Death::Protocol(ProtocolError::OutOfOrder(id)));
            return;
        }
        x.running = Some((id, now));
        self.idle_deaths = 0;
        let job = self.jobs.get_mut(&id).expect("queued jobs exist");
        if job.abandoned {
            self.kill(exec, Death::Abandoned);
            return;
        }
        if job.owner.is_some() || job.reported {
            return; // a copy that lost the race: its answer is ignored
        }
        job.owner = Some(exec);
        let (task, attempt) = (job.task, job.attempt);
        let others: Vec<ExecId> = job.on.iter().copied().filter(|&e| e != exec).collect();
        self.out.push(Command::Started { task, attempt });
        for e in others {
            self.out.push(Command::Cancel { exec: e, job: id });
        }
    }

    /// A frame about the running job `id` (`W`, `J`): false if the executor is condemned, or
    /// `id` is not what it runs (a protocol error: it is killed).
    fn is_running(&mut self, exec: ExecId, id: JobId) -> bool {
        let Some(x) = self.exec_mut(exec) else {
            return false;
        };
        if x.death.is_some() {
            return false;
        }
        if x.running.map(|(r, _)| r) != Some(id) {
            self.kill(exec, Death::Protocol(ProtocolError::OutOfOrder(id)));
            return false;
        }
        true
    }

    /// The attempt of job `id` if `exec` runs it for the worker (not a copy, not answered).
    fn owned_attempt(&self, exec: ExecId, id: JobId) -> Option<(TaskRef, AttemptId)> {
        self.jobs
            .get(&id)
            .filter(|j| j.owner == Some(exec) && !j.reported)
            .map(|j| (j.task, j.attempt))
    }

    fn on_seceded(&mut self, exec: ExecId, id: JobId) {
        if !self.is_running(exec, id) {
            return;
        }
        // `dispatch` starts another executor for the slot; the jobs queued behind this one
        // are stealable at once.
        self.exec_mut(exec).expect("running").seceded = true;
        if let Some((task, attempt)) = self.owned_attempt(exec, id) {
            self.out.push(Command::Seceded { task, attempt });
        }
    }

    fn on_rejoined(&mut self, exec: ExecId, id: JobId) {
        if !self.is_running(exec, id) {
            return;
        }
        let x = self.exec_mut(exec).expect("running");
        if !std::mem::take(&mut x.seceded) {
            return; // never seceded (or marked one too many): it keeps what it had
        }
        if let Some((task, attempt)) = self.owned_attempt(exec, id) {
            self.out.push(Command::Rejoined { task, attempt });
        }
        if self.slots_held() > self.config.size {
            // The executor that took its slot meanwhile is one too many now: the one with the
            // least work stops taking jobs and retires once idle (as after a seceded job ends).
            let surplus = self
                .execs
                .iter()
                .filter(|e| e.id != exec && e.holds_slot())
                .min_by_key(|e| (e.running.is_some(), e.queue.len(), e.id))
                .map(|e| e.id);
            if let Some(s) = surplus {
                self.exec_mut(s).expect("listed").seceded = true;
            }
        }
    }

    /// Executors holding a slot.
    fn slots_held(&self) -> usize {
        self.execs.iter().filter(|e| e.holds_slot()).count()
    }

    fn on_answered(&mut self, now: Duration, exec: ExecId, id: JobId, answer: Answer) {
        let Some(x) = self.exec_mut(exec) else { return };
        if x.death.is_some() {
            return; // condemned: see `on_started`
        }
        let Some(pos) = x.queue.iter().position(|&j| j == id) else {
            self.kill(exec, Death::Protocol(ProtocolError::AnsweredUnknown(id)));
            return;
        };
        let owner = self.jobs[&id].owner;
        let out_of_order = match answer {
            Answer::Skipped => owner == Some(exec),
            Answer::Value(_) | Answer::Error(_) => owner.is_none(),
        };
        if out_of_order {
            // `X` after `S`, or `R`/`E` without any `S`: settled (and the job run again
            // elsewhere, uncharged) once it is gone.
            self.kill(exec, Death::Protocol(ProtocolError::OutOfOrder(id)));
            return;
        }
        let x = self.exec_mut(exec).expect("found above");
        x.queue.remove(pos);
        let mut rejoined = false;
        if let Some((r, at)) = x.running {
            if r == id {
                x.running = None;
                let us = now.saturating_sub(at).as_micros() as f64;
                x.avg_run_us = Some(x.avg_run_us.map_or(us, |a| 0.8 * a + 0.2 * us));
                rejoined = std::mem::take(&mut x.seceded);
            }
        }
        if rejoined && self.slots_held() > self.config.size {
            // Another executor took its slot meanwhile: one too many now. Retire it once the
            // jobs still queued on it have moved (stealable at once, as while it seceded).
            self.exec_mut(exec).expect("found above").seceded = true;
        }
        let job = self.jobs.get_mut(&id).expect("queued jobs exist");
        job.on.retain(|&e| e != exec);
        match answer {
            Answer::Skipped => {
                if !job.reported && job.owner.is_none() && job.on.is_empty() {
                    self.requeue(id);
                }
            }
            Answer::Value(v) if job.owner == Some(exec) => self.finish(id, Ok(v)),
            Answer::Error(e) if job.owner == Some(exec) => self.finish(id, Err(Failure::Raised(e))),
            // A copy that lost the race: ignored.
            Answer::Value(_) | Answer::Error(_) => {}
        }
        self.gc(id);
    }

    /// A job no executor holds waits again, first in line, under a new claim.
    fn requeue(&mut self, id: JobId) {
        let job = self.jobs.get_mut(&id).expect("requeued jobs exist");
        debug_assert!(job.on.is_empty() && job.owner.is_none());
        job.gen += 1;
        job.claim = None;
        self.pending.push_front(id);
    }

    /// Report the job's outcome (once). Its data stays until no executor holds it (`gc`): an
    /// executor that has it queued may still map its inputs.
    fn finish(&mut self, id: JobId, result: Result<Bytes, Failure>) {
        let job = self.jobs.get_mut(&id).expect("finished jobs exist");
        if job.reported {
            return;
        }
        job.reported = true;
        self.out.push(Command::Finished {
            task: job.task,
            attempt: job.attempt,
            result,
        });
    }

    /// Forget a finished job once no executor holds it.
    fn gc(&mut self, id: JobId) {
        let job = &self.jobs[&id];
        if job.reported && job.on.is_empty() {
            self.by_attempt.remove(&(job.task, job.attempt));
            self.jobs.remove(&id);
            self.out.push(Command::ForgetJob { job: id });
        }
    }

    fn kill(&mut self, exec: ExecId, death: Death) {
        let Some(x) = self.exec_mut(exec) else { return };
        let death = x.death.get_or_insert(death);
        let capture_stacks = matches!(death, Death::Hung { .. } | Death::BusyTooLong { .. });
        if !x.kill_sent && x.exited.is_none() {
            assert!(x.pid.is_some(), "{exec} killed before it was spawned");
            x.kill_sent = true;
            self.out.push(Command::Kill {
                exec,
                capture_stacks,
            });
        }
    }

    /// Settle a dead executor once both its output ended and its exit was seen.
    fn maybe_settle(&mut self, now: Duration, exec: ExecId) {
        if self
            .exec(exec)
            .is_some_and(|x| x.closed_at.is_some() && x.exited.is_some())
        {
            self.settle(now, exec);
        }
    }

    fn settle(&mut self, now: Duration, exec: ExecId) {
        let pos = self
            .execs
            .iter()
            .position(|e| e.id == exec)
            .expect("settled executors exist");
        let x = self.execs.remove(pos);
        let pid = x.pid.expect("only spawned executors exit");
        let exited = x.exited.expect("only exited executors are settled");
        // Condemned only because its exit was slow to be seen after its output closed, but
        // dead of something else before the kill landed (a crash): that is what it died of.
        // Other verdicts (hung, busy too long, abandoned, a protocol error) stand.
        let death = match x.death {
            Some(Death::Protocol(ProtocolError::ClosedOutput)) if !exited.killed => None,
            d => d,
        };
        // Ready, but dead by itself before starting any job: the third time in a row it is
        // the environment, not bad luck.
        let died_idle = x.hello == Hello::Ready && !x.started_any && death.is_none();
        if died_idle {
            self.idle_deaths += 1;
        }
        let start_failure = match (&x.hello, &death) {
            // Every further one too, until a job starts: one executor per `START_RETRY_DELAY`.
            (Hello::Ready, _) if died_idle && self.idle_deaths >= IDLE_DEATHS_MAX => {
                Some(StartFailure::DiedIdle {
                    python: self.config.python.clone(),
                    exit: exited.exit.clone(),
                    stderr_tail: exited.stderr_tail.clone(),
                    times: IDLE_DEATHS_MAX,
                })
            }
            (Hello::Ready, _) => None,
            // It never got going: the interpreter or its environment is the problem, not a job.
            (Hello::Refused(e), _) => Some(StartFailure::Refused(e.clone())),
            (Hello::Waiting, Some(Death::StartTimeout)) => Some(StartFailure::TimedOut {
                python: self.config.python.clone(),
                stderr_tail: exited.stderr_tail.clone(),
            }),
            (Hello::Waiting, _) => Some(StartFailure::Ended {
                python: self.config.python.clone(),
                exit: exited.exit.clone(),
                stderr_tail: exited.stderr_tail.clone(),
            }),
        };
        match &start_failure {
            Some(failure) => {
                self.out.push(Command::Log(Log::StartFailed {
                    pid: Some(pid),
                    failure: failure.clone(),
                }));
                self.start_failure = Some((now, failure.clone()));
                if self.pending.is_empty() && x.queue.is_empty() && !self.config.eager {
                    self.active = false;
                }
            }
            None => self.out.push(Command::Log(Log::ExecutorReplaced {
                pid,
                death: death.clone(),
                exit: exited.exit.clone(),
            })),
        }
        if let Some((r, _)) = x.running {
            let owned = self
                .jobs
                .get(&r)
                .is_some_and(|j| j.owner == Some(exec) && !j.reported);
            if owned {
                let loss = Loss {
                    pid,
                    death,
                    exit: exited.exit.clone(),
                    stacks: exited.stacks.clone(),
                    stderr_tail: exited.stderr_tail.clone(),
                    hang_timeout: self.config.hang_timeout,
                    busy_timeout: self.config.busy_timeout,
                };
                self.finish(r, Err(Failure::Lost(Box::new(loss))));
            }
        }
        // Jobs queued behind it never started there: run them elsewhere, uncharged (or fail
        // them if the executor could not even start). Its running job is in the queue too.
        for &j in x.queue.iter().rev() {
            let job = self.jobs.get_mut(&j).expect("queued jobs exist");
            job.on.retain(|&e| e != exec);
            if !job.reported && job.owner.is_none() && job.on.is_empty() {
                match &start_failure {
                    Some(f) => {
                        let f = f.clone();
                        self.finish(j, Err(Failure::NoExecutor(f)));
                    }
                    None => self.requeue(j),
                }
            }
            self.gc(j);
        }
        self.out.push(Command::ForgetExec { exec });
    }

    /// Periodic: hung executors, stuck starts, dead executors whose output never closed.
    fn on_tick(&mut self, now: Duration, samples: &[Sample]) {
        let since = now.saturating_sub(self.last_check);
        self.last_check = now;
        let (hang, busy) = (self.config.hang_timeout, self.config.busy_timeout);
        // If this loop itself was held up, the executors' pings are waiting unread in the
        // pipes: judge them next time.
        let stalled = since > (hang / 2).max(STALL_MIN);
        let mut kills = Vec::new();
        let mut settles = Vec::new();
        for x in &mut self.execs {
            let Some(pid) = x.pid else { continue };
            if let Some(e) = &x.exited {
                if now.saturating_sub(e.at) > EXIT_GRACE {
                    settles.push(x.id);
                }
                continue;
            }
            if let Some(at) = x.closed_at {
                if now.saturating_sub(at) > EXIT_GRACE && x.death.is_none() {
                    kills.push((x.id, Death::Protocol(ProtocolError::ClosedOutput)));
                }
                continue;
            }
            if x.death.is_some() || stalled {
                continue;
            }
            let Some(sample) = samples.iter().find(|s| s.exec == x.id) else {
                continue;
            };
            let Some(last) = sample.last_activity else {
                if now.saturating_sub(x.spawned_at) > START_TIMEOUT {
                    kills.push((x.id, Death::StartTimeout));
                }
                continue;
            };
            let silent = now.saturating_sub(last);
            if !samples_cpu(silent, hang) || x.window.is_some_and(|w| w.silent_since != last) {
                // A new silence (or none): what was measured of the last one is void.
                x.window = None;
                x.last_cpu = None;
                x.busy_warned = false;
            }
            if !samples_cpu(silent, hang) {
                continue;
            }
            let cpu = sample.cpu.unwrap_or_default();
            let w = *x.window.get_or_insert(CpuWindow {
                start: now,
                cpu,
                silent_since: last,
            });
            // Judged as of the previous check: what the executor wrote since may still be
            // unread (this loop was held up, or its readers have not run yet), so neither the
            // silence since then nor the CPU used since (it may have answered, even died)
            // count against it.
            let vouched = silent.saturating_sub(since);
            let prev = x
                .last_cpu
                .replace((now, cpu))
                .filter(|&(t, _)| t >= w.start);
            let (window, window_cpu) = match prev {
                Some((t, c)) => (t - w.start, c.saturating_sub(w.cpu)),
                None => (Duration::ZERO, Duration::ZERO), // it just opened
            };
            let verdict = judge(
                Silence {
                    silent_for: vouched,
                    window,
                    window_cpu,
                },
                hang,
                busy,
            );
            match verdict {
                Verdict::Healthy | Verdict::Undecided => {}
                Verdict::Busy => {
                    if !x.busy_warned && silent > hang {
                        x.busy_warned = true;
                        self.out.push(Command::Log(Log::BusySilent {
                            pid,
                            silent,
                            busy_timeout: busy,
                        }));
                    }
                    if let (true, Some((start, cpu))) = (window >= hang, prev) {
                        // A new window, from the previous check on.
                        x.window = Some(CpuWindow {
                            start,
                            cpu,
                            silent_since: last,
                        });
                    }
                }
                Verdict::Hung => kills.push((x.id, Death::Hung { silent })),
                Verdict::BusyTooLong => kills.push((x.id, Death::BusyTooLong { silent })),
            }
        }
        for (e, d) in kills {
            self.kill(e, d);
        }
        for e in settles {
            self.settle(now, e);
        }
    }

    fn blocked(&self, now: Duration) -> bool {
        self.start_failure
            .as_ref()
            .is_some_and(|(t, _)| now.saturating_sub(*t) < START_RETRY_DELAY)
    }

    fn dispatch(&mut self, now: Duration) {
        if !self.pending.is_empty() {
            // Jobs put back by a dead executor need executors as much as new ones do.
            self.active = true;
        }
        let blocked = self.blocked(now);
        if self.active && !blocked {
            while self.slots_held() < self.config.size {
                self.spawn(now);
            }
        }
        self.retire_idle();
        if blocked && !self.execs.iter().any(Exec::live) {
            // Nothing can run them for now: fail them with the reason rather than wait.
            let (_, failure) = self.start_failure.clone().expect("blocked by a failure");
            while let Some(j) = self.pending.pop_front() {
                self.finish(j, Err(Failure::NoExecutor(failure.clone())));
                self.gc(j);
            }
            if !self.config.eager {
                self.active = false;
            }
            return;
        }
        while let Some(&j) = self.pending.front() {
            let best = self
                .execs
                .iter()
                .filter(|e| e.takes_jobs())
                .min_by_key(|e| (e.queue.len(), !e.ready(), e.id))
                .map(|e| e.id);
            let Some(e) = best else { break };
            self.pending.pop_front();
            self.send(j, e);
        }
        if self.pending.is_empty() {
            self.steal(now);
        }
    }

    /// Kill the executors that ran a seceded job, are idle, and are one too many.
    fn retire_idle(&mut self) {
        let idle: Vec<ExecId> = self
            .execs
            .iter()
            .filter(|e| e.live() && e.seceded && e.running.is_none() && e.queue.is_empty())
            .map(|e| e.id)
            .collect();
        for exec in idle {
            self.kill(exec, Death::Retired);
        }
    }

    /// A job another executor may take a copy of: queued, not started, on that one only.
    fn stealable(&self, x: &Exec) -> Option<JobId> {
        let running = x.running.map(|(r, _)| r);
        x.queue.iter().copied().find(|&j| {
            running != Some(j)
                && self.jobs.get(&j).is_some_and(|job| {
                    job.owner.is_none() && !job.reported && job.on.len() == 1 && job.claim.is_some()
                })
        })
    }

    fn idle_thieves(&self) -> impl Iterator<Item = &Exec> {
        self.execs
            .iter()
            .filter(|e| e.holds_slot() && e.ready() && e.queue.is_empty())
    }

    /// An idle executor takes a copy of a job waiting behind another executor's running one.
    fn steal(&mut self, now: Duration) {
        let thieves: Vec<ExecId> = self.idle_thieves().map(|e| e.id).collect();
        for thief in thieves {
            let found = self
                .execs
                .iter()
                .filter(|x| x.id != thief && x.stealable_from().is_some_and(|t| t <= now))
                .find_map(|x| self.stealable(x));
            match found {
                Some(j) => self.send(j, thief),
                None => return,
            }
        }
    }

    /// When `steal` will next find something, if an executor is idle.
    fn steal_deadline(&self) -> Option<Duration> {
        if !self.pending.is_empty() || self.idle_thieves().next().is_none() {
            return None;
        }
        self.execs
            .iter()
            .filter_map(|x| Some(x.stealable_from()?).filter(|_| self.stealable(x).is_some()))
            .min()
    }

    fn send(&mut self, j: JobId, exec: ExecId) {
        let x = self.exec_mut(exec).expect("sent to a live executor");
        // Unless it starts next on an executor that is up, it may be stolen while it waits.
        let may_wait = !x.ready() || !x.queue.is_empty();
        x.queue.push(j);
        let job = self.jobs.get_mut(&j).expect("sent jobs exist");
        let copy = !job.on.is_empty();
        debug_assert!(!copy || job.claim.is_some(), "only claimed jobs are copied");
        if copy || may_wait {
            job.claim = Some(job.gen);
        }
        job.on.push(exec);
        let claim = job.claim;
        self.out.push(Command::Send {
            exec,
            job: j,
            claim,
        });
    }

    fn spawn(&mut self, now: Duration) {
        if self.execs.is_empty() {
            // No checks ran while there were no executors: do not take that for a stall.
            self.last_check = now;
        }
        self.next_exec += 1;
        let id = ExecId(self.next_exec);
        self.execs.push(Exec {
            id,
            pid: None,
            spawned_at: now,
            hello: Hello::Waiting,
            started_any: false,
            queue: Vec::new(),
            running: None,
            avg_run_us: None,
            window: None,
            last_cpu: None,
            busy_warned: false,
            death: None,
            kill_sent: false,
            closed_at: None,
            exited: None,
            seceded: false,
        });
        self.out.push(Command::Spawn { exec: id });
    }
}

mod invariants;
mod types;
pub use types::*;

#[cfg(test)]
mod tests;
