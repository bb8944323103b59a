//! Python tasks: a pool of executor processes owned by the worker. This is the tokio shell; the
//! policy (which executor runs what, pipelining, stealing, hang and crash handling) is the pure
//! `rusk_core::executor::PoolCore`, which this file feeds with events and whose commands it
//! carries out.
//!
//! A worker runs `TaskKind::Python` tasks in `nthreads` long-lived Python processes (the
//! *executors*), each running `python/rusk/_executor.py`, which is embedded in this binary
//! (written once to the work dir as `rusk-executor-HASH.py` and run with `PYTHON -u`), so any
//! interpreter with `cloudpickle` installed will do. The worker keeps every result: an
//! executor holds nothing but the task it is running, so it can be killed at any time.
//!
//! # Protocol (the executor's stdin and stdout)
//!
//! Frames both ways ([`ExecutorCodec`]): a 13-byte header `kind: u8, id: u64 BE, len: u32 BE`,
//! then `len` bytes (at most [`MAX_EXECUTOR_FRAME`] from an executor).
//!
//! | dir | kind | body |
//! |---|---|---|
//! | → | `T` task | `n: u32 BE`, `n` blob descriptors (`kind: u8` (0 inline, 1 segment), 3 zero bytes, `fd: u32`, `offset: u64`, `len: u64`, all BE), then the inline blobs: the payload, then the inputs (a segment is mapped by the executor through `/proc/<worker pid>/fd/<fd>`) |
//! | → | `K` claim | `claim: u32 BE`: the next `T` of task `id` may run elsewhere too: before starting it, create `<id>.<claim>` in `RUSK_CLAIMS_DIR` exclusively (`O_EXCL`), and skip it (`X`) if it exists |
//! | → | `C` cancel | - (drop queued task `id` unless it has started) |
//! | → | `F` result mapped | - (close the fd of task `id`'s result segment) |
//! | → | `G` grant | `1: u8, fd: u32 BE, len: u64 BE`: a segment of the worker for task `id`'s result (`rusk_net::segment::SegmentWriter`: warm memory from the segment pool when there is some), written by the executor through `/proc/<worker pid>/fd/<fd>`; or `0: u8`, none (it makes its own) |
//! | ← | `H` hello | JSON `{"py","python","cloudpickle","pid","executable"}`, or `{"error"}` then exit |
//! | ← | `P` ping | - (every 100 ms, from a background thread) |
//! | ← | `S` started | - |
//! | ← | `A` ask | `size: u64 BE`: the running task `id`'s result takes `size` bytes (≥ `INLINE_VALUE_MAX`); answered by `G`. A grant lives until the task's answer, or the executor's death (then it is freed) |
//! | ← | `W` seceded | - (the running task `id` stops holding a thread slot while it waits: `rusk.secede()`) |
//! | ← | `J` rejoined | - (the seceded task `id` holds a thread slot again: `rusk.rejoin()`) |
//! | ← | `U` unmapped | `n` × `fd: u32 BE` (id 0): input segments the executor mapped (through the worker's fd `fd`) and has unmapped since, one per mapping; the worker keeps each segment it sent until then |
//! | ← | `R` result | `0: u8` then the value, or `1: u8, fd: u32 BE, len: u64 BE`: a sealed memfd of the executor holding the value, mapped here at once through `/proc/<executor pid>/fd/<fd>` (then `F`), or `2: u8, input: u32 BE`: the task returned its input `input` unchanged (an immutable value: the worker stores the input's bytes again, nothing is copied), or `3: u8, len: u64 BE`: the value is in the segment granted to the task (`G`), its layout's gaps written as zeros |
//! | ← | `E` error | `len: u32 BE`, the UTF-8 message, the pickled `(exception, traceback)` (none if the task never ran: bad header, version mismatch) |
//! | ← | `X` skipped | - (a cancelled task, or one claimed by another executor, that never started here) |
//!
//! Each `T` gets exactly one answer: `R` or `E` (each preceded by `S`), or `X`. Tasks start in
//! the order they were sent. End of stdin tells an executor to exit; it also dies with the
//! worker (`PR_SET_PDEATHSIG`). The executor moves the pipes off fds 0 and 1, so task code
//! that prints or reads stdin cannot corrupt them (its prints go to the worker's stderr, as does
//! everything the executor writes to stderr).
//!
//! # What the shell does
//!
//! - spawns executors (`Spawn`), each with a reader task (frames to events, activity stamped on
//!   every read), a writer task (frames batched per wake-up), a stderr forwarder (keeping the
//!   tail since the current task started) and a waiter (`wait()`; on `Kill`, SIGUSR1 for the
//!   Python stacks first when asked, then SIGKILL to the process group);
//! - keeps each job's payload and inputs until the core says `ForgetJob`;
//! - at every `next_timeout()`, samples each executor's last activity and, while it is silent,
//!   its CPU time from `/proc` (`Tick`).
//!
//! See `rusk_core::executor` for the policy: pipelining ([`executor::PIPELINE_DEPTH`],
//! [`executor::PIPELINE_DEPTH_SHORT`]), stealing ([`executor::STEAL_AFTER`]), the hang
//! timeout ([`DEFAULT_HANG_TIMEOUT`], `RUSK_EXECUTOR_HANG_TIMEOUT`) against the busy timeout
//! ([`DEFAULT_BUSY_TIMEOUT`]), start failures ([`executor::START_RETRY_DELAY`]) and what a task
//! whose executor dies fails with (its `retries` apply; tasks queued behind it run again
//! uncharged; results already on the worker are untouched).
use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use rusk_core::executor::{self, Answer, Command, Event, ExecId, Exit, JobId, Log, PoolCore};
use rusk_proto::msg::TaskError;
use rusk_proto::{AttemptId, TaskRef};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use tracing::{debug, info, warn};

use rusk_net::segment;

use claims::ClaimsDir;

/// The executor script, embedded so that a worker needs nothing but an interpreter with
/// `cloudpickle`.
pub const SCRIPT: &str = include_str!("../../../../python/rusk/_executor.py");

/// How often an executor pings (fixed in the script).
pub use rusk_core::executor::PING_INTERVAL;
/// Default of `--executor-hang-timeout` / `RUSK_EXECUTOR_HANG_TIMEOUT`: 60 missed pings.
///
/// Only a single C call that holds the GIL silences an executor (pure Python switches threads
/// every 5 ms), and legitimate ones rarely last seconds (`sorted()` of ten million items takes
/// about 3 s, pickling a large result about as long): 6 s is twice the longest we know of, and
/// catches a hung task sooner than Dask does even with its worker TTL cut to 5 s (about 10 s
/// there: TTL, its once-per-TTL check, then its nanny's kill). Raise it for workloads with
/// longer GIL-holding C calls.
pub const DEFAULT_HANG_TIMEOUT: &str = "6s";
/// Default of `--executor-busy-timeout` / `RUSK_EXECUTOR_BUSY_TIMEOUT`: how long a silent
/// executor that is *using CPU* (a long C computation holding the GIL) may go on before it is
/// killed as hung (`rusk_core::executor::judge`). A task's own `timeout` still applies.
pub const DEFAULT_BUSY_TIMEOUT: &str = "5m";
/// Largest frame accepted from an executor. Results of [`segment::INLINE_VALUE_MAX`] bytes or
/// more come in shared-memory segments, so only hellos, small results and errors (a message
/// and the pickled exception) travel through the pipe.
pub const MAX_EXECUTOR_FRAME: usize = 64 << 20;

/// Where this worker writes the files clients upload (`Client.upload_file`); its executors
/// import from there (`RUSK_UPLOADS_DIR`).
pub fn uploads_dir(work_dir: &std::path::Path) -> PathBuf {
    work_dir.join(format!("uploads-{}", std::process::id()))
}

#[derive(Clone, Debug)]
pub struct PythonOptions {
    /// The interpreter (`--python`, `RUSK_PYTHON`); `None` means [`default_python`].
    pub python: Option<PathBuf>,
    pub hang_timeout: Duration,
    /// Silent but computing executors are killed after this (`DEFAULT_BUSY_TIMEOUT`).
    pub busy_timeout: Duration,
    /// Start the executors with the worker rather than with the first Python task.
    pub eager: bool,
    /// How tasks reach the cluster (`rusk.get_client()`). `None`: they cannot.
    pub cluster: Option<TaskCluster>,
}

/// What executors get to reach the cluster from tasks: the scheduler's address
/// (`RUSK_SCHEDULER_ADDRESS`), the task credential (`RUSK_TASK_TOKEN`,
/// `rusk_proto::auth::task_token`) and, when the cluster encrypts, the worker's TLS without the
/// CA's key (`RUSK_TLS`, JSON of `rusk_net::TlsSpec`).
#[derive(Clone, Debug)]
pub struct TaskCluster {
    pub address: String,
    pub task_token: String,
    pub tls: Option<String>,
}

impl Default for PythonOptions {
    fn default() -> Self {
        PythonOptions {
            python: None,
            hang_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(300),
            eager: false,
            cluster: None,
        }
    }
}

/// The interpreter of the environment `rusk` was installed in: `<venv>/bin/python` when this
/// binary lives in a virtualenv's (or conda env's) `bin/`, else a `python3` beside the binary,
/// else `python3` on `PATH`.
pub fn default_python() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let env_root = dir.parent();
        let is_env = env_root
            .is_some_and(|r| r.join("pyvenv.cfg").is_file() || r.join("conda-meta").is_dir());
        let names: &[&str] = if is_env {
            &["python", "python3"]
        } else {
            &["python3"]
        };
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("python3")
}

/// What the pool tells the worker loop.
pub enum Report {
    Started {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// The started attempt seceded (`rusk.secede()`).
    Seceded {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// The seceded attempt holds its slot again (`rusk.rejoin()`).
    Rejoined {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// Exactly one per `execute`.
    Finished {
        task: TaskRef,
        attempt: AttemptId,
        result: Result<Bytes, TaskError>,
    },
    /// For the scheduler's recovery log: an executor replaced, or silent but computing.
    Event(rusk_proto::msg::WorkerEvent),
}

enum Request {
    Execute {
        task: TaskRef,
        attempt: AttemptId,
        payload: Bytes,
        inputs: Vec<Bytes>,
    },
    Abandon {
        task: TaskRef,
        attempt: AttemptId,
    },
}

/// Handle to the pool; its manager task runs on the worker's event loop and never blocks it
/// (each executor's pipes are served by their own tasks).
pub struct PythonPool {
    tx: mpsc::UnboundedSender<Request>,
}

impl PythonPool {
    /// Start the pool's manager (on the current tokio runtime). `report` is called from it.
    pub fn start(
        opts: PythonOptions,
        size: u32,
        work_dir: PathBuf,
        report: impl Fn(Report) + Send + 'static,
    ) -> PythonPool {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let python = opts.python.clone().unwrap_or_else(default_python);
        let core = PoolCore::new(executor::PoolConfig {
            size: size.max(1) as usize,
            hang_timeout: opts.hang_timeout,
            busy_timeout: opts.busy_timeout,
            eager: opts.eager,
            python: python.display().to_string(),
        });
        let claims = ClaimsDir::new(&work_dir);
        let manager = Manager {
            core,
            cluster: opts.cluster,
            hang_timeout: opts.hang_timeout,
            python,
            claims,
            work_dir,
            report: Box::new(report),
            epoch: Instant::now(),
            jobs: FxHashMap::default(),
            next_job: 0,
            execs: FxHashMap::default(),
            ev_tx,
        };
        tokio::spawn(manager.run(rx, ev_rx));
        PythonPool { tx }
    }

    pub fn execute(&self, task: TaskRef, attempt: AttemptId, payload: Bytes, inputs: Vec<Bytes>) {
        let _ = self.tx.send(Request::Execute {
            task,
            attempt,
            payload,
            inputs,
        });
    }

    /// Stop the attempt if it is queued or running here (a running one by killing its
    /// executor); a no-op for attempts this pool does not have.
    pub fn abandon(&self, task: TaskRef, attempt: AttemptId) {
        let _ = self.tx.send(Request::Abandon { task, attempt });
    }
}

/// What the shell keeps of a job for the core: what its `T` frame carries.
struct JobData {
    payload: Bytes,
    inputs: Vec<Bytes>,
    /// The claims it was sent under: their files go with the job.
    claims: Vec<u32>,
}

/// The shell's side of one executor process.
struct ExecIo {
    pid: u32,
    writer: mpsc::UnboundedSender<ToExecutor>,
    /// Milliseconds since the pool's epoch of the last byte received, plus one (0: none yet).
    activity: Arc<AtomicU64>,
    /// Kill switch; `Some(path)`: capture the Python stacks into `path` first.
    kill: Option<oneshot::Sender<Option<PathBuf>>>,
    /// Where the executor writes its stacks on SIGUSR1.
    stack_file: PathBuf,
    /// Input segments sent to it in jobs it has not started: it maps them when it does.
    unstarted: FxHashMap<JobId, Vec<(RawFd, Bytes)>>,
    /// Input segments it maps, by the fd it opened them through (one entry per mapping),
    /// kept alive until it says it unmapped them (`U`) or it is gone, so that their memory is
    /// neither freed nor reused (see `rusk_net::segment`) while it may still read it.
    mapped: FxHashMap<RawFd, Vec<Bytes>>,
}

struct Manager {
    core: PoolCore,
    cluster: Option<TaskCluster>,
    hang_timeout: Duration,
    python: PathBuf,
    work_dir: PathBuf,
    /// Where executors claim jobs (`K`): this pool's own directory.
    claims: ClaimsDir,
    report: Box<dyn Fn(Report) + Send>,
    epoch: Instant,
    jobs: FxHashMap<JobId, JobData>,
    next_job: u64,
    execs: FxHashMap<ExecId, ExecIo>,
    ev_tx: mpsc::UnboundedSender<FromExec>,
}

/// What an executor's reader and waiter tasks tell the manager.
enum FromExec {
    /// An event for the core.
    Core(Event),
    /// `R` kind 2: the job's result is its input `input`, returned unchanged (the manager holds
    /// the inputs, so it makes the answer).
    ResultIsInput {
        exec: ExecId,
        job: JobId,
        input: usize,
    },
    /// `U`: the executor unmapped these input segments (one fd per mapping).
    Unmapped { exec: ExecId, fds: Vec<RawFd> },
}

impl Manager {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        mut ev_rx: mpsc::UnboundedReceiver<FromExec>,
    ) {
        let out = self.core.start(self.now());
        self.carry_out(out);
        loop {
            let deadline = self.core.next_timeout().map(|t| self.epoch + t);
            let tick = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rx.recv() => {
                    let Some(r) = r else { return }; // the worker is going away; kill_on_drop
                    self.on_request(r);
                    while let Ok(r) = rx.try_recv() {
                        self.on_request(r);
                    }
                }
                Some(m) = ev_rx.recv() => {
                    self.deliver(m);
                    while let Ok(m) = ev_rx.try_recv() {
                        self.deliver(m);
                    }
                }
                _ = tick => {
                    let samples = self.samples();
                    self.feed(Event::Tick { samples });
                }
            }
            crate::vitals::set_executors_alive(self.core.executors_alive());
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn on_request(&mut self, r: Request) {
        match r {
            Request::Execute {
                task,
                attempt,
                payload,
                inputs,
            } => {
                self.next_job += 1;
                let job = JobId(self.next_job);
                self.jobs.insert(
                    job,
                    JobData {
                        payload,
                        inputs,
                        claims: Vec::new(),
                    },
                );
                self.feed(Event::Execute { job, task, attempt });
            }
            Request::Abandon { task, attempt } => self.feed(Event::Abandon { task, attempt }),
        }
    }

    fn deliver(&mut self, m: FromExec) {
        let ev = match m {
            FromExec::Core(ev) => {
                self.track_maps(&ev);
                ev
            }
            FromExec::Unmapped { exec, fds } => {
                if let Some(x) = self.execs.get_mut(&exec) {
                    for fd in fds {
                        let held = x.mapped.get_mut(&fd).and_then(|v| v.pop());
                        if held.is_none() {
                            debug!(
                                exec = exec.0,
                                fd, "executor unmapped a segment it was not given"
                            );
                        }
                        if x.mapped.get(&fd).is_some_and(|v| v.is_empty()) {
                            x.mapped.remove(&fd);
                        }
                    }
                }
                return;
            }
            FromExec::ResultIsInput { exec, job, input } => {
                let answer = match self.jobs.get(&job).and_then(|d| d.inputs.get(input)) {
                    Some(v) => Answer::Value(v.clone()),
                    None => Answer::Error(TaskError {
                        message: format!(
                            "the Python executor answered with input {input} of a job it was \
                             not given, or that has fewer inputs (a protocol error)"
                        ),
                        exit_code: None,
                        detail: None,
                    }),
                };
                Event::Answered { exec, job, answer }
            }
        };
        self.feed(ev);
    }

    /// An executor maps a job's input segments once it starts the job; one that skipped it
    /// never maps them.
    fn track_maps(&mut self, ev: &Event) {
        match *ev {
            Event::Started { exec, job } => {
                if let Some(x) = self.execs.get_mut(&exec) {
                    for (fd, v) in x.unstarted.remove(&job).unwrap_or_default() {
                        x.mapped.entry(fd).or_default().push(v);
                    }
                }
            }
            Event::Answered {
                exec,
                job,
                answer: Answer::Skipped,
            } => {
                if let Some(x) = self.execs.get_mut(&exec) {
                    x.unstarted.remove(&job);
                }
            }
            _ => {}
        }
    }

    /// Hand the core an event and carry out what it says, including the answers to its
    /// spawns (spawning is synchronous here, so the jobs it sends to a new executor find it).
    fn feed(&mut self, ev: Event) {
        let mut events = VecDeque::from([ev]);
        while let Some(ev) = events.pop_front() {
            let out = self.core.handle(self.now(), ev);
            events.extend(self.carry_out(out));
        }
    }

    /// Carry out commands; returns the events they caused.
    fn carry_out(&mut self, out: Vec<Command>) -> Vec<Event> {
        let mut events = Vec::new();
        for c in out {
            match c {
                Command::Spawn { exec } => events.push(match self.spawn(exec) {
                    Ok(pid) => Event::Spawned { exec, pid },
                    Err(e) => Event::SpawnFailed {
                        exec,
                        message: format!("{e:#}"),
                    },
                }),
                Command::Send { exec, job, claim } => {
                    let (Some(x), Some(d)) = (self.execs.get_mut(&exec), self.jobs.get_mut(&job))
                    else {
                        continue;
                    };
                    if let Some(c) = claim.filter(|c| !d.claims.contains(c)) {
                        d.claims.push(c);
                    }
                    let segments: Vec<(RawFd, Bytes)> = d
                        .inputs
                        .iter()
                        .filter_map(|v| segment::fd_of(v).map(|fd| (fd, v.clone())))
                        .collect();
                    if !segments.is_empty() {
                        x.unstarted.insert(job, segments);
                    }
                    let _ = x.writer.send(ToExecutor::Task {
                        id: job.0,
                        payload: d.payload.clone(),
                        inputs: d.inputs.clone(),
                        claim,
                    });
                }
                Command::Cancel { exec, job } => {
                    if let Some(x) = self.execs.get(&exec) {
                        let _ = x.writer.send(ToExecutor::Cancel(job.0));
                    }
                }
                Command::Kill {
                    exec,
                    capture_stacks,
                } => {
                    if let Some(x) = self.execs.get_mut(&exec) {
                        if let Some(k) = x.kill.take() {
                            let _ = k.send(capture_stacks.then(|| x.stack_file.clone()));
                        }
                    }
                }
                Command::Started { task, attempt } => {
                    (self.report)(Report::Started { task, attempt })
                }
                Command::Seceded { task, attempt } => {
                    (self.report)(Report::Seceded { task, attempt })
                }
                Command::Rejoined { task, attempt } => {
                    (self.report)(Report::Rejoined { task, attempt })
                }
                Command::Finished {
                    task,
                    attempt,
                    result,
                } => (self.report)(Report::Finished {
                    task,
                    attempt,
                    result: result.map_err(executor::Failure::into_task_error),
                }),
                Command::ForgetJob { job } => {
                    if let Some(d) = self.jobs.remove(&job) {
                        for c in d.claims {
                            self.claims.release(job, c);
                        }
                    }
                }
                Command::ForgetExec { exec } => {
                    if let Some(x) = self.execs.remove(&exec) {
                        // Whatever it still mapped may be mapped by children it left behind
                        // (a task's forked processes outlive it): never reuse that memory.
                        let held = x.mapped.values().flatten();
                        for v in held.chain(x.unstarted.values().flatten().map(|(_, v)| v)) {
                            segment::never_reuse(v);
                        }
                        let _ = std::fs::remove_file(&x.stack_file);
                    }
                }
                Command::Log(l) => {
                    if let Some(e) = l.worker_event() {
                        (self.report)(Report::Event(e));
                    }
                    log(l)
                }
            }
        }
        events
    }

    /// Every executor's last activity, and its CPU time while it is silent.
    fn samples(&self) -> Vec<executor::Sample> {
        let now = self.now();
        self.execs
            .iter()
            .map(|(&exec, x)| {
                let last = x.activity.load(Ordering::Relaxed);
                let last_activity = (last > 0).then(|| Duration::from_millis(last - 1));
                let cpu = last_activity
                    .filter(|&l| executor::samples_cpu(now.saturating_sub(l), self.hang_timeout))
                    .and_then(|_| crate::vitals::process_cpu_seconds(x.pid))
                    .map(Duration::from_secs_f64);
                executor::Sample {
                    exec,
                    last_activity,
                    cpu,
                }
            })
            .collect()
    }
}

fn log(l: Log) {
    match l {
        Log::StartFailed { pid: None, failure } => {
            warn!(message = %failure, "cannot start a python executor")
        }
        Log::StartFailed {
            pid: Some(pid),
            failure,
        } => warn!(pid, message = %failure, "python executor failed to start"),
        Log::ExecutorReplaced { pid, death, exit } => {
            if death != Some(executor::Death::Retired) {
                crate::vitals::executor_replaced();
            }
            match death {
                Some(executor::Death::Retired) => {
                    info!(
                        pid,
                        "python executor retired (one too many after a seceded task)"
                    )
                }
                Some(executor::Death::Abandoned) => {
                    info!(
                        pid,
                        "python executor killed to stop an abandoned task; replacing it"
                    )
                }
                Some(d) => {
                    warn!(pid, cause = ?d, status = %exit, "python executor killed; replacing it")
                }
                None => warn!(pid, status = %exit, "python executor died; replacing it"),
            }
        }
        Log::BusySilent {
            pid,
            silent,
            busy_timeout,
        } => warn!(
            pid,
            silent_ms = silent.as_millis() as u64,
            busy_timeout = ?busy_timeout,
            "python executor silent but computing (a long C call holding the GIL): left running until the busy timeout"
        ),
    }
}

fn task_error(message: String) -> TaskError {
    TaskError {
        message,
        exit_code: None,
        detail: None,
    }
}

/// Body of an `E` frame: message length, message, pickled `(exception, traceback)`.
fn parse_error(mut body: Bytes) -> TaskError {
    if body.len() < 4 {
        return task_error("the Python executor sent a malformed error".into());
    }
    let n = body.get_u32() as usize;
    if body.len() < n {
        return task_error("the Python executor sent a malformed error".into());
    }
    let message = String::from_utf8_lossy(&body.split_to(n)).into_owned();
    TaskError {
        message,
        exit_code: None,
        detail: (!body.is_empty()).then_some(body),
    }
}

mod claims;
mod codec;
mod process;
#[cfg(test)]
mod tests;

pub use codec::{ExecutorCodec, Frame, ToExecutor};
