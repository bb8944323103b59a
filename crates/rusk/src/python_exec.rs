//! Python tasks: a pool of executor processes owned by the worker.
//!
//! A worker runs `TaskKind::Python` tasks in `nthreads` long-lived Python processes (the
//! *executors*), each running `python/rusk/_executor.py`, which is embedded in this binary
//! (written once to the work dir as `rusk-executor-HASH.py` and run with `PYTHON -u`), so any
//! interpreter with `cloudpickle` installed will do. The worker keeps every result: an
//! executor holds nothing but the task it is running, so it can be killed at any time.
//!
//! # Protocol (the executor's stdin and stdout)
//!
//! Frames both ways: a 13-byte header `kind: u8, id: u64 BE, len: u32 BE`, then `len` bytes.
//!
//! | dir | kind | body |
//! |---|---|---|
//! | → | `T` task | `n: u32 BE`, `n` lengths (`u64 BE`), then the `n` blobs: the payload, then the inputs |
//! | → | `C` cancel | - (drop queued task `id` unless it has started) |
//! | ← | `H` hello | JSON `{"py","python","cloudpickle","pid","executable"}`, or `{"error"}` then exit |
//! | ← | `P` ping | - (every 100 ms, from a background thread) |
//! | ← | `S` started | - |
//! | ← | `R` result | the pickled return value |
//! | ← | `E` error | `len: u32 BE`, the UTF-8 message, the pickled `(exception, traceback)` (none if the task never ran: bad header, version mismatch) |
//! | ← | `X` skipped | - (a cancelled task that never started) |
//!
//! Each `T` gets exactly one answer: `R` or `E` (each preceded by `S`), or `X`. Tasks start in
//! the order they were sent. End of stdin tells an executor to exit; it also dies with the
//! worker (`PR_SET_PDEATHSIG`). The executor moves the pipes off fds 0 and 1, so task code
//! that prints or reads stdin cannot corrupt them (its prints go to the worker's stderr, as does
//! everything the executor writes to stderr).
//!
//! # Scheduling
//!
//! Executors start with the first Python task (or with the worker: `--python-eager`), and the
//! pool is kept at `nthreads` from then on. Tasks are sent to an executor ahead of their start,
//! so it goes from one to the next without waiting for a round trip through the worker:
//! [`PIPELINE_DEPTH`] at once, or [`PIPELINE_DEPTH_SHORT`] while its tasks take under
//! [`SHORT_TASK`] (no-op-sized tasks would otherwise wait on pipe wake-ups). A task queued
//! behind a long one (running for [`STEAL_AFTER`]) is not stuck there: an idle executor, when
//! nothing else is waiting, is sent a copy; the first to start it owns it and the other is told
//! to drop it (`C`).
//!
//! # Failures
//!
//! - An executor silent (no ping, no data) for the hang timeout ([`DEFAULT_HANG_TIMEOUT`],
//!   `RUSK_EXECUTOR_HANG_TIMEOUT`) is SIGKILLed: its ping thread needs the GIL, so silence
//!   means a C call holding the GIL (or a frozen process). Pure-Python work never silences it.
//! - An executor that dies (crash, `kill -9`, OOM, `os._exit`) is replaced at once.
//! - An attempt abandoned by the worker core while running (its `timeout` passed, or it was
//!   cancelled) is stopped by killing its executor, which is then replaced.
//!
//! In each case the running task fails with a message saying what happened (its `retries`
//! apply; a task that kills every executor it runs in ends in that error after its retries,
//! without ever taking the worker down), tasks queued behind it are run by the next executor
//! without being charged, and results already on the worker are untouched. An executor that
//! cannot start (no interpreter, no `cloudpickle`) fails the waiting Python tasks with the
//! reason; a start is tried again for the next task, at most once per [`START_RETRY_DELAY`].
use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use rusk_core::executor::{self, Verdict};
use rusk_proto::msg::TaskError;
use rusk_proto::{AttemptId, TaskRef};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use rusk_net::segment;

/// The executor script, embedded so that a worker needs nothing but an interpreter with
/// `cloudpickle`.
pub const SCRIPT: &str = include_str!("../../../python/rusk/_executor.py");

/// How often an executor pings (fixed in the script).
pub const PING_INTERVAL: Duration = Duration::from_millis(100);
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
/// Silence after which the pool starts sampling an executor's CPU time.
const SILENCE_SAMPLE_AFTER: Duration = Duration::from_millis(500);
/// How long to wait for a hung executor's stacks (SIGUSR1, faulthandler) before SIGKILL.
const STACKS_WAIT: Duration = Duration::from_millis(300);
/// Bytes of the stacks quoted in a task's error.
const STACKS_MAX_BYTES: usize = 8192;
/// Tasks sent to one executor ahead of their start.
pub const PIPELINE_DEPTH: usize = 2;
/// Tasks sent to one executor ahead while its tasks are short.
pub const PIPELINE_DEPTH_SHORT: usize = 16;
/// Tasks shorter than this on average (start to answer, as seen by the worker) are short.
pub const SHORT_TASK: Duration = Duration::from_millis(1);
/// A task queued behind one that has run this long (or behind an executor still starting)
/// may be taken by an idle executor. Shorter waits are not worth a duplicate start.
pub const STEAL_AFTER: Duration = Duration::from_millis(10);
/// An executor that has not said hello within this is killed (interpreter start and
/// `import cloudpickle` take well under a second on a healthy host).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After an executor failed to start, wait this long before trying again.
pub const START_RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long to wait for the rest of a dead executor's output (or for its exit after it closed
/// its output) before settling its tasks.
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// Bytes of an executor's recent stderr quoted when it dies.
const STDERR_TAIL_BYTES: usize = 1500;
const HEADER_LEN: usize = 13;
/// Largest frame accepted from an executor. Results of [`segment::INLINE_VALUE_MAX`] bytes or
/// more come in shared-memory segments, so only hellos, small results and errors (a message
/// and the pickled exception) travel through the pipe.
pub const MAX_EXECUTOR_FRAME: usize = 64 << 20;
/// Size of a blob descriptor in a `T` frame: kind, fd, offset, length.
const BLOB_DESCRIPTOR_LEN: usize = 24;

#[derive(Clone, Debug)]
pub struct PythonOptions {
    /// The interpreter (`--python`, `RUSK_PYTHON`); `None` means [`default_python`].
    pub python: Option<PathBuf>,
    pub hang_timeout: Duration,
    /// Silent but computing executors are killed after this (`DEFAULT_BUSY_TIMEOUT`).
    pub busy_timeout: Duration,
    /// Start the executors with the worker rather than with the first Python task.
    pub eager: bool,
}

impl Default for PythonOptions {
    fn default() -> Self {
        PythonOptions {
            python: None,
            hang_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(300),
            eager: false,
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
    /// Exactly one per `execute`.
    Finished {
        task: TaskRef,
        attempt: AttemptId,
        result: Result<Bytes, TaskError>,
    },
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
        let manager = Manager {
            active: opts.eager,
            opts,
            python,
            work_dir,
            size: size.max(1) as usize,
            report: Box::new(report),
            epoch: Instant::now(),
            jobs: FxHashMap::default(),
            by_attempt: FxHashMap::default(),
            pending: VecDeque::new(),
            execs: Vec::new(),
            ev_tx,
            start_failure: None,
            next_job: 0,
            next_exec: 0,
            last_check: Instant::now(),
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

struct Job {
    task: TaskRef,
    attempt: AttemptId,
    payload: Bytes,
    inputs: Vec<Bytes>,
    /// Executors this job was sent to that have not answered it.
    on: Vec<u64>,
    /// The executor that started it first: its answer is the job's.
    owner: Option<u64>,
    /// `Finished` was reported.
    reported: bool,
    /// Abandoned by the worker core: any executor that starts it is killed.
    abandoned: bool,
}

/// Why the pool killed an executor.
#[derive(Clone, Debug)]
enum Death {
    Hang(Duration),
    BusyTooLong(Duration),
    Abandoned,
    StartTimeout,
    Protocol(String),
}

struct Exec {
    id: u64,
    pid: u32,
    writer: mpsc::UnboundedSender<Vec<Bytes>>,
    /// Jobs sent and not answered, in order.
    queue: Vec<u64>,
    running: Option<u64>,
    /// When the running task started (its `S`).
    started_at: Option<Instant>,
    /// Moving average of its tasks' run times, in microseconds (`None`: none ran yet).
    avg_run_us: Option<f64>,
    /// Said hello (a healthy start).
    ready: bool,
    start_error: Option<String>,
    /// Milliseconds since the pool's epoch of the last byte received, plus one (0: none yet).
    activity: Arc<AtomicU64>,
    spawned: Instant,
    /// Kill switch; `Some(path)`: capture the Python stacks into `path` first.
    kill: Option<oneshot::Sender<Option<PathBuf>>>,
    /// Where the executor writes its stacks on SIGUSR1.
    stack_file: PathBuf,
    /// Stacks captured before it was killed.
    stacks: Option<String>,
    /// While silent: the CPU window (start, CPU seconds then) and whether a busy warning was
    /// logged.
    cpu_window: Option<(Instant, f64)>,
    busy_warned: bool,
    death: Option<Death>,
    /// Output closed (EOF or a bad frame), and when.
    closed: Option<Instant>,
    /// Exit status described, and when it was seen.
    exited: Option<(String, Instant)>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
}

impl Exec {
    fn live(&self) -> bool {
        self.death.is_none() && self.closed.is_none() && self.exited.is_none()
    }

    /// How many tasks it may have been sent and not answered.
    fn depth(&self) -> usize {
        match self.avg_run_us {
            Some(us) if us < SHORT_TASK.as_micros() as f64 => PIPELINE_DEPTH_SHORT,
            _ => PIPELINE_DEPTH,
        }
    }
}

enum Ev {
    Frame {
        exec: u64,
        kind: u8,
        id: u64,
        body: Bytes,
    },
    Closed {
        exec: u64,
        error: Option<String>,
    },
    Exited {
        exec: u64,
        status: String,
        stacks: Option<String>,
    },
}

struct Manager {
    opts: PythonOptions,
    python: PathBuf,
    work_dir: PathBuf,
    size: usize,
    report: Box<dyn Fn(Report) + Send>,
    epoch: Instant,
    jobs: FxHashMap<u64, Job>,
    by_attempt: FxHashMap<(TaskRef, AttemptId), u64>,
    /// Jobs waiting for an executor, oldest first.
    pending: VecDeque<u64>,
    execs: Vec<Exec>,
    ev_tx: mpsc::UnboundedSender<Ev>,
    /// Keep `size` executors running (set by the first task, or `eager`).
    active: bool,
    start_failure: Option<(Instant, String)>,
    next_job: u64,
    next_exec: u64,
    last_check: Instant,
}

impl Manager {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        mut ev_rx: mpsc::UnboundedReceiver<Ev>,
    ) {
        let period = (self.opts.hang_timeout / 5).clamp(Duration::from_millis(20), PING_INTERVAL);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.dispatch();
        loop {
            tokio::select! {
                r = rx.recv() => {
                    let Some(r) = r else { return }; // the worker is going away; kill_on_drop
                    self.on_request(r);
                    while let Ok(r) = rx.try_recv() {
                        self.on_request(r);
                    }
                }
                Some(ev) = ev_rx.recv() => {
                    self.on_event(ev);
                    while let Ok(ev) = ev_rx.try_recv() {
                        self.on_event(ev);
                    }
                }
                _ = tick.tick(), if !self.execs.is_empty() => self.check(),
            }
            self.dispatch();
        }
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
                let id = self.next_job;
                self.jobs.insert(
                    id,
                    Job {
                        task,
                        attempt,
                        payload,
                        inputs,
                        on: Vec::new(),
                        owner: None,
                        reported: false,
                        abandoned: false,
                    },
                );
                self.by_attempt.insert((task, attempt), id);
                self.pending.push_back(id);
                self.active = true;
            }
            Request::Abandon { task, attempt } => {
                let Some(&id) = self.by_attempt.get(&(task, attempt)) else {
                    return;
                };
                let Some(job) = self.jobs.get_mut(&id) else {
                    return;
                };
                if job.reported {
                    return;
                }
                job.abandoned = true;
                let owner = job.owner;
                let on = job.on.clone();
                self.finish(id, Err(task_error("abandoned".into())));
                if let Some(pos) = self.pending.iter().position(|&j| j == id) {
                    self.pending.remove(pos);
                }
                match owner {
                    Some(e) => self.kill(e, Death::Abandoned),
                    None => {
                        for e in on {
                            if let Some(x) = self.exec_mut(e) {
                                let _ = x.writer.send(vec![frame_header(b'C', id, 0)]);
                            }
                        }
                    }
                }
                self.gc(id);
            }
        }
    }

    fn exec_mut(&mut self, id: u64) -> Option<&mut Exec> {
        self.execs.iter_mut().find(|e| e.id == id)
    }

    /// Report the job's outcome (once) and drop its data.
    fn finish(&mut self, id: u64, result: Result<Bytes, TaskError>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.reported {
            return;
        }
        job.reported = true;
        // Its inputs stay alive until no executor holds the job (`gc`): an executor that has
        // it queued may still map them.
        let (task, attempt) = (job.task, job.attempt);
        (self.report)(Report::Finished {
            task,
            attempt,
            result,
        });
    }

    /// Forget a finished job once no executor holds it.
    fn gc(&mut self, id: u64) {
        if let Some(job) = self.jobs.get(&id) {
            if job.reported && job.on.is_empty() {
                self.by_attempt.remove(&(job.task, job.attempt));
                self.jobs.remove(&id);
            }
        }
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Frame {
                exec,
                kind,
                id,
                body,
            } => self.on_frame(exec, kind, id, body),
            Ev::Closed { exec, error } => {
                let Some(x) = self.exec_mut(exec) else { return };
                x.closed = Some(Instant::now());
                if let Some(e) = error {
                    self.kill(exec, Death::Protocol(e));
                }
                self.maybe_settle(exec);
            }
            Ev::Exited {
                exec,
                status,
                stacks,
            } => {
                let Some(x) = self.exec_mut(exec) else { return };
                x.exited = Some((status, Instant::now()));
                x.stacks = stacks;
                x.kill = None;
                self.maybe_settle(exec);
            }
        }
    }

    fn on_frame(&mut self, exec: u64, kind: u8, id: u64, body: Bytes) {
        let Some(x) = self.exec_mut(exec) else { return };
        let pid = x.pid;
        match kind {
            b'H' => {
                let hello: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(err) = hello.get("error").and_then(|e| e.as_str()) {
                    x.start_error = Some(err.to_string());
                    return;
                }
                x.ready = true;
                info!(
                    pid,
                    python = hello["python"].as_str().unwrap_or("?"),
                    cloudpickle = hello["cloudpickle"].as_str().unwrap_or("?"),
                    executable = hello["executable"].as_str().unwrap_or("?"),
                    "python executor ready"
                );
            }
            b'S' | b'R' | b'E' | b'X' if x.death.is_some() => {
                // Judged hung (or otherwise condemned) before this frame came: the verdict
                // stands, its tasks are settled when it is gone.
            }
            b'S' => {
                if !x.queue.contains(&id) {
                    self.kill(exec, Death::Protocol(format!("started unknown task {id}")));
                    return;
                }
                x.running = Some(id);
                x.started_at = Some(Instant::now());
                x.stderr_tail.lock().expect("not poisoned").clear();
                let Some(job) = self.jobs.get_mut(&id) else {
                    return;
                };
                if job.abandoned {
                    self.kill(exec, Death::Abandoned);
                    return;
                }
                if job.owner.is_some() || job.reported {
                    return; // a copy that lost the race: its answer is ignored
                }
                job.owner = Some(exec);
                let (task, attempt) = (job.task, job.attempt);
                let others: Vec<u64> = job.on.iter().copied().filter(|&e| e != exec).collect();
                (self.report)(Report::Started { task, attempt });
                for e in others {
                    if let Some(o) = self.exec_mut(e) {
                        let _ = o.writer.send(vec![frame_header(b'C', id, 0)]);
                    }
                }
            }
            b'R' | b'E' | b'X' => {
                let Some(pos) = x.queue.iter().position(|&j| j == id) else {
                    self.kill(exec, Death::Protocol(format!("answered unknown task {id}")));
                    return;
                };
                x.queue.remove(pos);
                if x.running == Some(id) {
                    x.running = None;
                    if let Some(at) = x.started_at.take() {
                        let us = at.elapsed().as_micros() as f64;
                        x.avg_run_us = Some(x.avg_run_us.map_or(us, |a| 0.8 * a + 0.2 * us));
                    }
                }
                let Some(job) = self.jobs.get_mut(&id) else {
                    return;
                };
                job.on.retain(|&e| e != exec);
                if kind == b'X' {
                    if !job.reported && job.owner.is_none() && job.on.is_empty() {
                        self.pending.push_front(id);
                    }
                } else if job.owner == Some(exec) {
                    let result = if kind == b'R' {
                        Ok(body)
                    } else {
                        Err(parse_error(body))
                    };
                    self.finish(id, result);
                }
                self.gc(id);
            }
            other => {
                self.kill(
                    exec,
                    Death::Protocol(format!("unknown frame kind {:?}", other as char)),
                );
            }
        }
    }

    fn kill(&mut self, exec: u64, death: Death) {
        let Some(x) = self.exec_mut(exec) else { return };
        if x.death.is_none() {
            x.death = Some(death);
        }
        let capture = matches!(x.death, Some(Death::Hang(_)) | Some(Death::BusyTooLong(_)))
            .then(|| x.stack_file.clone());
        if let Some(k) = x.kill.take() {
            let _ = k.send(capture);
        }
    }

    /// Settle a dead executor once both its output ended and its exit was seen.
    fn maybe_settle(&mut self, exec: u64) {
        let Some(x) = self.exec_mut(exec) else { return };
        if x.closed.is_some() && x.exited.is_some() {
            self.settle(exec);
        }
    }

    fn settle(&mut self, exec: u64) {
        let Some(pos) = self.execs.iter().position(|e| e.id == exec) else {
            return;
        };
        let x = self.execs.remove(pos);
        let status = x
            .exited
            .as_ref()
            .map_or_else(|| "did not exit".to_string(), |(s, _)| s.clone());
        let tail = {
            let t = x.stderr_tail.lock().expect("not poisoned");
            String::from_utf8_lossy(&t).trim().to_string()
        };
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!("; its stderr ended with: {tail}")
        };
        let pid = x.pid;
        if !x.ready {
            // It never got going: the interpreter or its environment is the problem, not a task.
            let message = match (&x.start_error, &x.death) {
                (Some(e), _) => e.clone(),
                (None, Some(Death::StartTimeout)) => format!(
                    "the Python executor ({}) did not start within {START_TIMEOUT:?} and was killed{tail}",
                    self.python.display()
                ),
                _ => format!(
                    "the Python executor ({}) {status} before it was ready{tail}",
                    self.python.display()
                ),
            };
            warn!(pid, %message, "python executor failed to start");
            self.start_failure = Some((Instant::now(), message));
            if self.pending.is_empty() && x.queue.is_empty() && !self.opts.eager {
                self.active = false;
            }
        } else {
            crate::vitals::executor_replaced();
            match &x.death {
                Some(Death::Abandoned) => {
                    info!(
                        pid,
                        "python executor killed to stop an abandoned task; replacing it"
                    )
                }
                Some(d) => warn!(pid, cause = ?d, %status, "python executor killed; replacing it"),
                None => warn!(pid, %status, "python executor died; replacing it"),
            }
        }
        if let Some(r) = x.running {
            let owned = self
                .jobs
                .get(&r)
                .is_some_and(|j| j.owner == Some(exec) && !j.reported);
            if owned {
                let message = match &x.death {
                    Some(Death::Hang(silence)) => format!(
                        "the Python executor (pid {pid}) running this task sent no ping for {silence:?}, \
                         so it was killed (SIGKILL) and replaced: the task held the GIL (a long \
                         C call) or hung. If the task legitimately holds the GIL that long, raise \
                         RUSK_EXECUTOR_HANG_TIMEOUT (now {t:?}){tail}",
                        t = self.opts.hang_timeout
                    ),
                    Some(Death::BusyTooLong(silence)) => format!(
                        "the Python executor (pid {pid}) running this task computed without a \
                         ping (a C call holding the GIL) for {silence:?}, over the busy timeout \
                         of {t:?}, so it was killed (SIGKILL) and replaced. Raise \
                         RUSK_EXECUTOR_BUSY_TIMEOUT if the task legitimately runs that long{tail}",
                        t = self.opts.busy_timeout
                    ),
                    Some(Death::Protocol(p)) => format!(
                        "the Python executor (pid {pid}) running this task broke the protocol \
                         ({p}) and was killed and replaced{tail}"
                    ),
                    Some(Death::StartTimeout) | Some(Death::Abandoned) | None => format!(
                        "the Python executor (pid {pid}) running this task {status}; the worker \
                         replaced it{tail}"
                    ),
                };
                let message = match &x.stacks {
                    Some(st) => format!(
                        "{message}\nPython stacks of the executor when it was killed:\n{st}"
                    ),
                    None => message,
                };
                self.finish(r, Err(task_error(message)));
            }
        }
        let _ = std::fs::remove_file(&x.stack_file);
        let start_failure = (!x.ready).then(|| self.start_failure.clone()).flatten();
        // Tasks queued behind it never started there: run them elsewhere, uncharged (or fail
        // them if the executor could not even start).
        for &j in x.queue.iter().rev() {
            let Some(job) = self.jobs.get_mut(&j) else {
                continue;
            };
            job.on.retain(|&e| e != exec);
            if !job.reported && job.owner.is_none() && job.on.is_empty() {
                match &start_failure {
                    Some((_, m)) => {
                        let m = m.clone();
                        self.finish(j, Err(task_error(m)));
                    }
                    None => self.pending.push_front(j),
                }
            }
            self.gc(j);
        }
        if let Some(r) = x.running {
            if let Some(job) = self.jobs.get_mut(&r) {
                job.on.retain(|&e| e != exec);
            }
            self.gc(r);
        }
    }

    /// Periodic: hung executors, stuck starts, dead executors whose output never closed.
    fn check(&mut self) {
        let now = Instant::now();
        let since = now - self.last_check;
        self.last_check = now;
        // If this loop itself was held up, the executors' pings are waiting unread in the
        // pipes: judge them next time.
        let stalled = since > (self.opts.hang_timeout / 2).max(Duration::from_millis(500));
        let now_ms = (now - self.epoch).as_millis() as u64 + 1;
        let hang_ms = self.opts.hang_timeout.as_millis() as u64;
        let mut kills = Vec::new();
        let mut settles = Vec::new();
        let (hang, busy) = (self.opts.hang_timeout, self.opts.busy_timeout);
        for x in &mut self.execs {
            if let Some((_, at)) = &x.exited {
                if now - *at > EXIT_GRACE {
                    settles.push(x.id);
                }
                continue;
            }
            if let Some(at) = x.closed {
                if now - at > EXIT_GRACE && x.death.is_none() {
                    kills.push((x.id, Death::Protocol("closed its output".into())));
                }
                continue;
            }
            if x.death.is_some() || stalled {
                continue;
            }
            let last = x.activity.load(Ordering::Relaxed);
            if last == 0 {
                if now - x.spawned > START_TIMEOUT {
                    kills.push((x.id, Death::StartTimeout));
                }
            } else {
                let silent = Duration::from_millis(now_ms.saturating_sub(last));
                if silent < SILENCE_SAMPLE_AFTER || silent.as_millis() as u64 <= hang_ms / 4 {
                    x.cpu_window = None;
                    x.busy_warned = false;
                    continue;
                }
                let cpu = crate::vitals::process_cpu_seconds(x.pid).unwrap_or(0.0);
                let (wstart, wcpu) = *x.cpu_window.get_or_insert((now, cpu));
                let window = now - wstart;
                let verdict = executor::judge(
                    executor::Silence {
                        silent_for: silent,
                        window,
                        window_cpu: Duration::from_secs_f64((cpu - wcpu).max(0.0)),
                    },
                    hang,
                    busy,
                );
                match verdict {
                    Verdict::Healthy => {}
                    Verdict::Busy => {
                        if !x.busy_warned && silent > hang {
                            x.busy_warned = true;
                            warn!(
                                pid = x.pid,
                                silent_ms = silent.as_millis() as u64,
                                busy_timeout = ?busy,
                                "python executor silent but computing (a long C call holding the GIL): left running until the busy timeout"
                            );
                        }
                        if window >= hang {
                            x.cpu_window = Some((now, cpu));
                        }
                    }
                    Verdict::Hung => kills.push((x.id, Death::Hang(silent))),
                    Verdict::BusyTooLong => kills.push((x.id, Death::BusyTooLong(silent))),
                }
            }
        }
        for (e, d) in kills {
            self.kill(e, d);
        }
        for e in settles {
            self.settle(e);
        }
    }

    fn dispatch(&mut self) {
        self.dispatch_tasks();
        let alive = self.execs.iter().filter(|e| e.live()).count();
        crate::vitals::set_executors_alive(alive as u32);
    }

    fn dispatch_tasks(&mut self) {
        let now = Instant::now();
        let blocked = self
            .start_failure
            .as_ref()
            .is_some_and(|(t, _)| now - *t < START_RETRY_DELAY);
        if self.active && !blocked {
            while self.execs.iter().filter(|e| e.live()).count() < self.size {
                if let Err(e) = self.spawn() {
                    let message = format!("{e:#}");
                    warn!(%message, "cannot start a python executor");
                    self.start_failure = Some((now, message));
                    break;
                }
            }
        }
        let blocked = self
            .start_failure
            .as_ref()
            .is_some_and(|(t, _)| now - *t < START_RETRY_DELAY);
        if self.execs.iter().all(|e| !e.live()) && blocked {
            // Nothing can run them for now: fail them with the reason rather than wait.
            if let Some((_, message)) = self.start_failure.clone() {
                while let Some(j) = self.pending.pop_front() {
                    self.finish(j, Err(task_error(message.clone())));
                    self.gc(j);
                }
                if !self.opts.eager {
                    self.active = false;
                }
            }
            return;
        }
        while let Some(&j) = self.pending.front() {
            let best = self
                .execs
                .iter()
                .filter(|e| e.live() && e.queue.len() < e.depth())
                .min_by_key(|e| (e.queue.len(), !e.ready, e.id))
                .map(|e| e.id);
            let Some(e) = best else { break };
            self.pending.pop_front();
            self.send(j, e);
        }
        if self.pending.is_empty() {
            self.steal();
        }
    }

    /// An idle executor takes a copy of a task waiting behind another executor's running one.
    fn steal(&mut self) {
        let idle: Vec<u64> = self
            .execs
            .iter()
            .filter(|e| e.live() && e.ready && e.queue.is_empty())
            .map(|e| e.id)
            .collect();
        for thief in idle {
            let mut found = None;
            let stuck = |x: &&Exec| {
                x.id != thief
                    && x.live()
                    && (!x.ready || x.started_at.is_some_and(|t| t.elapsed() >= STEAL_AFTER))
            };
            'outer: for x in self.execs.iter().filter(stuck) {
                for &j in &x.queue {
                    if x.running == Some(j) {
                        continue;
                    }
                    if self.jobs.get(&j).is_some_and(|job| {
                        job.owner.is_none() && !job.reported && job.on.len() == 1
                    }) {
                        found = Some(j);
                        break 'outer;
                    }
                }
            }
            match found {
                Some(j) => self.send(j, thief),
                None => return,
            }
        }
    }

    fn send(&mut self, j: u64, exec: u64) {
        let Some(job) = self.jobs.get_mut(&j) else {
            return;
        };
        let frame = task_frame(j, &job.payload, &job.inputs);
        job.on.push(exec);
        if let Some(x) = self.exec_mut(exec) {
            x.queue.push(j);
            let _ = x.writer.send(frame);
        }
    }

    /// Write the script (once per content) and start an executor with its pipe tasks.
    fn spawn(&mut self) -> Result<()> {
        let script = ensure_script(&self.work_dir)?;
        let stack_file = self.work_dir.join(format!(
            "executor-{}-{}.stacks",
            std::process::id(),
            self.next_exec + 1
        ));
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.arg("-u")
            .arg(&script)
            .env("RUSK_WORKER_PID", std::process::id().to_string())
            .env("RUSK_EXECUTOR_STACK_FILE", &stack_file)
            // Task code has no business with the cluster's secret.
            .env_remove("RUSK_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let parent = std::process::id() as i32;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Its own process group, so that killing it takes its children along.
                libc::setpgid(0, 0);
                // It dies with the worker.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Inherit nothing but the pipes (the worker's nanny socket is inheritable).
                // Best effort: kernels before 5.11 lack close_range.
                const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                );
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the worker exited"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot start the Python executor with {:?} (set the interpreter with --python or RUSK_PYTHON)",
                self.python
            )
        })?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        self.next_exec += 1;
        let id = self.next_exec;
        let activity = Arc::new(AtomicU64::new(0));
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let (kill, kill_rx) = oneshot::channel();
        tokio::spawn(write_frames(stdin, writer_rx));
        tokio::spawn(read_frames(
            ExecLink {
                exec: id,
                pid,
                writer: writer.clone(),
            },
            stdout,
            activity.clone(),
            self.epoch,
            self.ev_tx.clone(),
        ));
        tokio::spawn(forward_stderr(stderr, stderr_tail.clone()));
        tokio::spawn(wait_child(id, child, kill_rx, self.ev_tx.clone()));
        self.execs.push(Exec {
            id,
            pid,
            writer,
            queue: Vec::new(),
            running: None,
            started_at: None,
            avg_run_us: None,
            ready: false,
            start_error: None,
            activity,
            spawned: Instant::now(),
            kill: Some(kill),
            death: None,
            closed: None,
            exited: None,
            stderr_tail,
            stack_file,
            stacks: None,
            cpu_window: None,
            busy_warned: false,
        });
        Ok(())
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

fn frame_header(kind: u8, id: u64, len: u32) -> Bytes {
    let mut h = BytesMut::with_capacity(HEADER_LEN);
    h.put_u8(kind);
    h.put_u64(id);
    h.put_u32(len);
    h.freeze()
}

/// A `T` frame as parts: header and blob descriptors, then the inline blobs. The payload and
/// small inputs go inline; an input that is a whole shared-memory segment is named by its fd
/// and mapped in place by the executor.
fn task_frame(id: u64, payload: &Bytes, inputs: &[Bytes]) -> Vec<Bytes> {
    let n = 1 + inputs.len();
    let blobs =
        std::iter::once((payload, None)).chain(inputs.iter().map(|i| (i, segment::fd_of(i))));
    let mut desc = BytesMut::with_capacity(4 + BLOB_DESCRIPTOR_LEN * n);
    desc.put_u32(n as u32);
    let mut parts = Vec::with_capacity(n + 2);
    let mut inline = 0usize;
    for (b, fd) in blobs {
        desc.put_u8(u8::from(fd.is_some()));
        desc.put_bytes(0, 3);
        desc.put_u32(fd.unwrap_or(0) as u32);
        desc.put_u64(0);
        desc.put_u64(b.len() as u64);
        if fd.is_none() {
            inline += b.len();
            parts.push(b.clone());
        }
    }
    let body_len = desc.len() + inline;
    let mut head = BytesMut::with_capacity(HEADER_LEN + desc.len());
    head.put_u8(b'T');
    head.put_u64(id);
    head.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    head.extend_from_slice(&desc);
    parts.insert(0, head.freeze());
    parts
}

/// Where the embedded script is written: named by a hash of its content, so workers of
/// different versions sharing a work dir never run each other's.
fn ensure_script(work_dir: &Path) -> Result<PathBuf> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SCRIPT.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let path = work_dir.join(format!("rusk-executor-{h:016x}.py"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create work dir {}", work_dir.display()))?;
    let tmp = work_dir.join(format!(
        ".rusk-executor-{h:016x}.py.{}.tmp",
        std::process::id()
    ));
    std::fs::write(&tmp, SCRIPT).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

async fn write_frames(
    stdin: tokio::process::ChildStdin,
    mut rx: mpsc::UnboundedReceiver<Vec<Bytes>>,
) {
    let mut w = tokio::io::BufWriter::with_capacity(1 << 16, stdin);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(parts) = next.take() {
            for p in parts {
                if w.write_all(&p).await.is_err() {
                    return; // the executor is gone; its exit is reported by `wait_child`
                }
            }
            next = rx.try_recv().ok();
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

/// What the reader of an executor's output needs to know of it.
struct ExecLink {
    exec: u64,
    pid: u32,
    writer: mpsc::UnboundedSender<Vec<Bytes>>,
}

impl ExecLink {
    /// The value of an `R` frame: inline, or the executor's sealed memfd, mapped here at once
    /// (then the executor is told to close its fd with `F`).
    fn result_value(&self, id: u64, mut body: Bytes) -> Result<Bytes, String> {
        match body.first() {
            Some(0) => {
                body.advance(1);
                Ok(body)
            }
            Some(1) if body.len() == 13 => {
                body.advance(1);
                let fd = body.get_u32();
                let len = body.get_u64() as usize;
                let path = PathBuf::from(format!("/proc/{}/fd/{fd}", self.pid));
                let value = segment::adopt_path(&path, len).map_err(|e| {
                    format!("cannot map the result segment {}: {e}", path.display())
                })?;
                let _ = self.writer.send(vec![frame_header(b'F', id, 0)]);
                Ok(value)
            }
            _ => Err("a malformed result frame".into()),
        }
    }
}

async fn read_frames(
    link: ExecLink,
    mut stdout: tokio::process::ChildStdout,
    activity: Arc<AtomicU64>,
    epoch: Instant,
    ev: mpsc::UnboundedSender<Ev>,
) {
    let mut buf = BytesMut::with_capacity(1 << 16);
    let error = loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(1 << 16);
        }
        match stdout.read_buf(&mut buf).await {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(format!("reading its output: {e}")),
        }
        activity.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let mut bad = None;
        while buf.len() >= HEADER_LEN {
            let kind = buf[0];
            let id = u64::from_be_bytes(buf[1..9].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(buf[9..13].try_into().expect("4 bytes")) as usize;
            if len > MAX_EXECUTOR_FRAME {
                bad = Some(format!("a frame of {len} bytes"));
                break;
            }
            if buf.len() < HEADER_LEN + len {
                buf.reserve(HEADER_LEN + len - buf.len());
                break;
            }
            let mut frame = buf.split_to(HEADER_LEN + len);
            if kind == b'P' {
                continue;
            }
            frame.advance(HEADER_LEN);
            let mut body = frame.freeze();
            if kind == b'R' {
                match link.result_value(id, body) {
                    Ok(v) => body = v,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            let _ = ev.send(Ev::Frame {
                exec: link.exec,
                kind,
                id,
                body,
            });
        }
        if bad.is_some() {
            break bad;
        }
    };
    let _ = ev.send(Ev::Closed {
        exec: link.exec,
        error,
    });
}

async fn forward_stderr(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    // Like the worker's own logs, straight to its stderr.
    use std::io::Write;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = std::io::stderr().write_all(&buf[..n]);
        let mut t = tail.lock().expect("not poisoned");
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_TAIL_BYTES {
            let cut = t.len() - STDERR_TAIL_BYTES;
            t.drain(..cut);
        }
    }
}

async fn wait_child(
    exec: u64,
    mut child: tokio::process::Child,
    mut kill: oneshot::Receiver<Option<PathBuf>>,
    ev: mpsc::UnboundedSender<Ev>,
) {
    let pid = child.id();
    let done = tokio::select! {
        s = child.wait() => Ok(s),
        k = &mut kill => Err(k.ok().flatten()),
    };
    let mut stacks = None;
    let status = match done {
        Ok(s) => s,
        Err(capture) => {
            if let (Some(pid), Some(path)) = (pid, capture) {
                // faulthandler writes every thread's Python stack from its signal handler,
                // even while a C call holds the GIL.
                // SAFETY: plain syscall on our own, not yet reaped, child.
                unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
                tokio::time::sleep(STACKS_WAIT).await;
                stacks = std::fs::read(&path).ok().and_then(|b| {
                    let text = String::from_utf8_lossy(&b[..b.len().min(STACKS_MAX_BYTES)])
                        .trim()
                        .to_string();
                    (!text.is_empty()).then_some(text)
                });
            }
            if let Some(pid) = pid {
                // Not reaped yet, so the group is still ours.
                // SAFETY: plain syscall.
                unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            }
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let status = match status {
        Ok(s) => describe_exit(s),
        Err(e) => format!("could not be waited for ({e})"),
    };
    if let Some(st) = &stacks {
        warn!(pid = ?pid, stacks = %st, "python stacks of the executor before it was killed");
    }
    let _ = ev.send(Ev::Exited {
        exec,
        status,
        stacks,
    });
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        _ => "ended".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    //! The pool against real executors (`python3` with `cloudpickle`).
    use super::*;
    use rusk_proto::GraphId;

    /// Payloads made by `python3`: `code` appends bytes to `out` using `payload(f, args,
    /// kwargs, paths)` (the client's format) and `dump(value)`.
    fn python_bytes(code: &str) -> Vec<Bytes> {
        let prelude = r#"
import sys, json, pickle, cloudpickle, os, time, ctypes
HEADER = json.dumps({"py": "%d.%d" % sys.version_info[:2], "cloudpickle": cloudpickle.__version__, "rusk": 1}).encode() + b"\n"
def payload(f, args=(), kwargs=None, paths=()):
    return HEADER + cloudpickle.dumps((f, tuple(args), dict(kwargs or {}), [tuple(p) for p in paths]), protocol=5)
def dump(v):
    return pickle.dumps(v, protocol=5)
out = []
"#;
        let script = format!("{prelude}\n{code}\nfor b in out:\n    print(b.hex())\n");
        let o = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .expect("python3");
        assert!(
            o.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| Bytes::from(hex_decode(l)))
            .collect()
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// `expr` evaluated by python3 with `v` bound to the unpickled bytes.
    fn python_eval(bytes: &[u8], expr: &str) -> String {
        let script = format!(
            "import pickle, cloudpickle\nv = pickle.loads(bytes.fromhex('{}'))\nprint({expr})",
            hex(bytes)
        );
        let o = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    fn t(i: u32) -> (TaskRef, AttemptId) {
        (
            TaskRef {
                graph: GraphId(1),
                index: i,
            },
            AttemptId(i as u64 + 100),
        )
    }

    struct Harness {
        pool: PythonPool,
        rx: mpsc::UnboundedReceiver<Report>,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        fn new(size: u32, opts: PythonOptions) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let (tx, rx) = mpsc::unbounded_channel();
            let pool = PythonPool::start(opts, size, dir.path().to_path_buf(), move |r| {
                let _ = tx.send(r);
            });
            Harness {
                pool,
                rx,
                _dir: dir,
            }
        }

        fn run(&self, i: u32, payload: &Bytes, inputs: Vec<Bytes>) {
            let (task, attempt) = t(i);
            self.pool.execute(task, attempt, payload.clone(), inputs);
        }

        /// The next `Finished` (skipping `Started`), as (task index, result).
        async fn finished(&mut self) -> (u32, Result<Bytes, TaskError>) {
            loop {
                let r = tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                    .await
                    .expect("a report within 60 s")
                    .expect("pool alive");
                if let Report::Finished { task, result, .. } = r {
                    return (task.index, result);
                }
            }
        }

        async fn started(&mut self) -> u32 {
            let r = tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                .await
                .expect("a report within 60 s")
                .expect("pool alive");
            match r {
                Report::Started { task, .. } => task.index,
                Report::Finished { task, result, .. } => {
                    panic!("task {} finished before starting: {result:?}", task.index)
                }
            }
        }
    }

    fn opts(hang: Duration) -> PythonOptions {
        PythonOptions {
            python: Some("python3".into()),
            hang_timeout: hang,
            busy_timeout: Duration::from_secs(60),
            eager: false,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn dependencies_are_placed_and_the_result_is_pickled() {
        let p = python_bytes(
            r#"
def f(a, b, scale=1, extra=None):
    return {"sum": (a + b[1]) * scale, "extra": extra}
out.append(payload(f, (None, (0, None)), {"scale": None, "extra": {"k": [None]}}, [(0, 0), (0, 1, 1), (1, "scale"), (1, "extra", "k", 0)]))
out += [dump(1), dump(41), dump(2), dump("x")]
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            h.run(0, &p[0], p[1..].to_vec());
            assert_eq!(h.started().await, 0);
            let (i, r) = h.finished().await;
            assert_eq!(i, 0);
            let v = r.expect("success");
            assert_eq!(
                python_eval(&v, "sorted(v.items())"),
                "[('extra', {'k': ['x']}), ('sum', 84)]"
            );
        });
    }

    #[test]
    fn an_exception_carries_its_type_message_and_traceback() {
        let p = python_bytes(
            r#"
class Custom(Exception):
    pass
def boom(x):
    raise Custom("bad value %d" % x)
out.append(payload(boom, (7,)))
out.append(payload(lambda: 1 / 0))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            h.run(0, &p[0], vec![]);
            h.run(1, &p[1], vec![]);
            let (_, r) = h.finished().await;
            let e = r.expect_err("fails");
            assert!(
                e.message.starts_with("Custom: bad value 7"),
                "{}",
                e.message
            );
            assert!(e.message.contains("in boom"), "{}", e.message);
            let detail = e.detail.expect("detail");
            assert_eq!(
                python_eval(&detail, "type(v[0]).__name__, str(v[0]), 'in boom' in v[1]"),
                "Custom bad value 7 True"
            );
            let (_, r) = h.finished().await;
            let e = r.expect_err("fails");
            assert!(
                e.message.starts_with("ZeroDivisionError: division by zero"),
                "{}",
                e.message
            );
        });
    }

    #[test]
    fn a_version_mismatch_and_a_bad_payload_are_clear_errors() {
        let p = python_bytes(
            r#"
body = cloudpickle.dumps((abs, (-1,), {}, []), protocol=5)
out.append(b'{"py": "2.7", "cloudpickle": "0.0.1", "rusk": 1}\n' + body)
out.append(HEADER + b"not a pickle")
out.append(b"no header at all")
out.append(payload(abs, (-3,)))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            for (i, b) in p.iter().enumerate() {
                h.run(i as u32, b, vec![]);
            }
            let (_, r) = h.finished().await;
            let m = r.unwrap_err().message;
            assert!(
                m.contains("version mismatch")
                    && m.contains("Python 2.7")
                    && m.contains("cloudpickle 0.0.1"),
                "{m}"
            );
            let (_, r) = h.finished().await;
            let m = r.unwrap_err().message;
            assert!(m.contains("cannot unpickle the task"), "{m}");
            let (_, r) = h.finished().await;
            let m = r.unwrap_err().message;
            assert!(m.contains("no header line"), "{m}");
            let (_, r) = h.finished().await;
            assert_eq!(python_eval(&r.unwrap(), "v"), "3");
        });
    }

    #[test]
    fn a_task_holding_the_gil_is_killed_and_the_pool_goes_on() {
        let p = python_bytes(
            r#"
out.append(payload(lambda: ctypes.PyDLL(None).sleep(600)))
out.append(payload(lambda: os.getpid()))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_millis(500)));
            let start = Instant::now();
            h.run(0, &p[0], vec![]);
            h.run(1, &p[1], vec![]);
            let (i, r) = h.finished().await;
            assert_eq!(i, 0);
            let m = r.unwrap_err().message;
            assert!(m.contains("sent no ping") && m.contains("GIL"), "{m}");
            // Where it was stuck: the stacks faulthandler wrote before the kill.
            assert!(m.contains("Python stacks") && m.contains("<lambda>"), "{m}");
            assert!(start.elapsed() < Duration::from_secs(10));
            // The task queued behind it ran in the replacement, uncharged.
            let (i, r) = h.finished().await;
            assert_eq!(i, 1);
            r.unwrap();
        });
    }

    /// A long C computation holding the GIL silences the executor but uses CPU: it is left to
    /// finish (the busy timeout is far away), where a stuck one would be killed after 500 ms.
    #[test]
    fn a_busy_silent_executor_is_not_killed_before_its_busy_budget() {
        let p = python_bytes(
            r#"
out.append(payload(lambda: sum(range(100_000_000))))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_millis(500)));
            h.run(0, &p[0], vec![]);
            let (_, r) = h.finished().await;
            let v = r.expect("a busy executor is not killed");
            assert_eq!(
                python_eval(&v, "v"),
                (100_000_000u64 * 99_999_999 / 2).to_string()
            );
        });
        // With a busy budget shorter than the computation, it is killed, and says why.
        rt().block_on(async {
            let mut o = opts(Duration::from_millis(500));
            o.busy_timeout = Duration::from_millis(800);
            let mut h = Harness::new(1, o);
            h.run(0, &p[0], vec![]);
            let (_, r) = h.finished().await;
            let m = r.unwrap_err().message;
            assert!(m.contains("busy timeout") && m.contains("<lambda>"), "{m}");
        });
    }

    #[test]
    fn an_executor_killed_mid_task_fails_only_that_task() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let p = python_bytes(&format!(
            r#"
def slow(path):
    open(path + ".tmp", "w").write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(60)
out.append(payload(slow, ({:?},)))
out.append(payload(lambda: 5))
"#,
            pidfile.display().to_string()
        ));
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            h.run(0, &p[0], vec![]);
            h.run(1, &p[1], vec![]);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !pidfile.exists() {
                assert!(Instant::now() < deadline, "no pid file");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let (i, r) = h.finished().await;
            assert_eq!(i, 0);
            let m = r.unwrap_err().message;
            assert!(m.contains("killed by signal 9 (SIGKILL)"), "{m}");
            let (i, r) = h.finished().await;
            assert_eq!(i, 1);
            assert_eq!(python_eval(&r.unwrap(), "v"), "5");
        });
    }

    #[test]
    fn abandoning_a_running_task_kills_its_executor_and_queued_ones_are_dropped() {
        let p = python_bytes(
            r#"
out.append(payload(time.sleep, (60,)))
out.append(payload(lambda: "queued"))
out.append(payload(lambda: "after"))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            h.run(0, &p[0], vec![]);
            h.run(1, &p[1], vec![]);
            assert_eq!(h.started().await, 0);
            let (t1, a1) = t(1);
            h.pool.abandon(t1, a1);
            let (i, r) = h.finished().await;
            assert_eq!((i, r.unwrap_err().message.as_str()), (1, "abandoned"));
            let (t0, a0) = t(0);
            h.pool.abandon(t0, a0);
            let (i, r) = h.finished().await;
            assert_eq!((i, r.unwrap_err().message.as_str()), (0, "abandoned"));
            h.run(2, &p[2], vec![]);
            let (i, r) = h.finished().await;
            assert_eq!(i, 2);
            assert_eq!(python_eval(&r.unwrap(), "v"), "after");
        });
    }

    #[test]
    fn a_task_behind_a_long_one_is_taken_by_an_idle_executor() {
        let p = python_bytes(
            r#"
out.append(payload(time.sleep, (3,)))
out.append(payload(time.sleep, (0.3,)))
out.append(payload(lambda: "quick"))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(2, opts(Duration::from_secs(10)));
            for i in 0..3 {
                h.run(i, &p[i as usize], vec![]);
            }
            let (i, _) = h.finished().await;
            assert_eq!(i, 1);
            let (i, r) = h.finished().await;
            assert_eq!(i, 2, "the quick task waited for the long one");
            assert_eq!(python_eval(&r.unwrap(), "v"), "quick");
            let (i, _) = h.finished().await;
            assert_eq!(i, 0);
        });
    }

    #[test]
    fn an_interpreter_that_cannot_start_fails_tasks_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        // An interpreter without site-packages: no cloudpickle.
        let wrapper = dir.path().join("python-no-site");
        std::fs::write(&wrapper, "#!/bin/sh\nexec python3 -S \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = python_bytes("out.append(payload(abs, (-1,)))");
        rt().block_on(async {
            let mut h = Harness::new(
                2,
                PythonOptions {
                    python: Some(wrapper.clone()),
                    ..opts(Duration::from_secs(10))
                },
            );
            h.run(0, &p[0], vec![]);
            h.run(1, &p[0], vec![]);
            for _ in 0..2 {
                let m = h.finished().await.1.unwrap_err().message;
                assert!(m.contains("cannot import cloudpickle"), "{m}");
            }
            let mut h = Harness::new(
                1,
                PythonOptions {
                    python: Some("/nonexistent/python".into()),
                    ..opts(Duration::from_secs(10))
                },
            );
            h.run(0, &p[0], vec![]);
            let m = h.finished().await.1.unwrap_err().message;
            assert!(
                m.contains("cannot start the Python executor") && m.contains("/nonexistent/python"),
                "{m}"
            );
        });
    }

    #[test]
    fn big_inputs_and_results_and_task_output_on_stdout_do_not_disturb_the_pipes() {
        let p = python_bytes(
            r#"
def big(data):
    print("x" * 200000)           # stdout is not the protocol pipe
    sys.stdout.write("T\0\0\0\0\0\0\0\0\0\0\0\0")
    rest = sys.stdin.read()       # nor is stdin
    return (len(data), rest, b"y" * (20 << 20))
out.append(payload(big, (None,), {}, [(0, 0)]))
out.append(dump(b"z" * (5 << 20)))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            h.run(0, &p[0], vec![p[1].clone()]);
            let (_, r) = h.finished().await;
            let v = r.expect("success");
            assert!(v.len() > 20 << 20);
            let script = format!(
                "import pickle, sys\nsys.path.insert(0, {:?})\nimport _executor\nv = _executor.load_value(memoryview(open({:?}, 'rb').read()), pickle.loads)\nprint(v[0], repr(v[1]), len(v[2]))",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/rusk"),
                {
                    let f = h._dir.path().join("result");
                    std::fs::write(&f, &v).unwrap();
                    f.display().to_string()
                }
            );
            let o = std::process::Command::new("python3")
                .arg("-c")
                .arg(script)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "5242880 '' 20971520");
        });
    }

    #[test]
    fn a_crash_reports_the_signal_and_the_end_of_the_executors_stderr() {
        let p = python_bytes(
            r#"
out.append(payload(lambda: ctypes.string_at(0)))
out.append(payload(lambda: os._exit(3)))
out.append(payload(lambda: "fine"))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            for (i, b) in p.iter().enumerate() {
                h.run(i as u32, b, vec![]);
            }
            let mut results = FxHashMap::default();
            for _ in 0..3 {
                let (i, r) = h.finished().await;
                results.insert(i, r);
            }
            let m = &results[&0].as_ref().unwrap_err().message;
            assert!(m.contains("killed by signal 11 (SIGSEGV)"), "{m}");
            assert!(
                m.contains("Fatal Python error"),
                "faulthandler's report: {m}"
            );
            let m = &results[&1].as_ref().unwrap_err().message;
            assert!(m.contains("exited with code 3"), "{m}");
            assert_eq!(python_eval(results[&2].as_ref().unwrap(), "v"), "fine");
        });
    }

    /// Per-task cost of the pool and executor for no-op tasks (printed; run with
    /// `--nocapture` to see it).
    #[test]
    fn noop_tasks_are_cheap() {
        const N: u32 = 10_000;
        let p = python_bytes(
            r#"
def noop(x):
    return x
out.append(payload(noop, (1,)))
"#,
        );
        rt().block_on(async {
            let mut h = Harness::new(1, opts(Duration::from_secs(10)));
            h.run(0, &p[0], vec![]);
            h.finished().await.1.unwrap();
            let start = Instant::now();
            for i in 1..=N {
                h.run(i, &p[0], vec![]);
            }
            for _ in 0..N {
                h.finished().await.1.unwrap();
            }
            let per_task = start.elapsed() / N;
            println!("{N} no-op Python tasks on one executor: {per_task:?} per task");
            assert!(per_task < Duration::from_millis(1), "{per_task:?} per task");
        });
    }
}
