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
//! | → | `C` cancel | - (drop queued task `id` unless it has started) |
//! | → | `F` result mapped | - (close the fd of task `id`'s result segment) |
//! | ← | `H` hello | JSON `{"py","python","cloudpickle","pid","executable"}`, or `{"error"}` then exit |
//! | ← | `P` ping | - (every 100 ms, from a background thread) |
//! | ← | `S` started | - |
//! | ← | `R` result | `0: u8` then the value, or `1: u8, fd: u32 BE, len: u64 BE`: a sealed memfd of the executor holding the value, mapped here at once through `/proc/<executor pid>/fd/<fd>` (then `F`) |
//! | ← | `E` error | `len: u32 BE`, the UTF-8 message, the pickled `(exception, traceback)` (none if the task never ran: bad header, version mismatch) |
//! | ← | `X` skipped | - (a cancelled task that never started) |
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
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use tracing::{info, warn};

use rusk_net::segment;

/// The executor script, embedded so that a worker needs nothing but an interpreter with
/// `cloudpickle`.
pub const SCRIPT: &str = include_str!("../../../python/rusk/_executor.py");

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
/// How long to wait for a hung executor's stacks (SIGUSR1, faulthandler) before SIGKILL.
const STACKS_WAIT: Duration = Duration::from_millis(300);
/// Bytes of the stacks quoted in a task's error.
const STACKS_MAX_BYTES: usize = 8192;
/// Bytes of an executor's recent stderr quoted when it dies.
const STDERR_TAIL_BYTES: usize = 1500;
/// How long, after an executor's exit, to wait for the rest of its stderr (faulthandler's
/// report of a crash): well under `executor::EXIT_GRACE`, so that its exit is seen before the
/// pool gives up waiting for it.
const STDERR_DRAIN_WAIT: Duration = Duration::from_millis(50);
const HEADER_LEN: usize = 13;
/// Largest frame accepted from an executor. Results of [`segment::INLINE_VALUE_MAX`] bytes or
/// more come in shared-memory segments, so only hellos, small results and errors (a message
/// and the pickled exception) travel through the pipe.
pub const MAX_EXECUTOR_FRAME: usize = 64 << 20;
/// Size of a blob descriptor in a `T` frame: kind, fd, offset, length.
const BLOB_DESCRIPTOR_LEN: usize = 24;
/// Buffer of a pipe's reader and writer: many small frames per system call.
const PIPE_BUFFER_BYTES: usize = 1 << 16;

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
        let manager = Manager {
            core,
            hang_timeout: opts.hang_timeout,
            python,
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
}

struct Manager {
    core: PoolCore,
    hang_timeout: Duration,
    python: PathBuf,
    work_dir: PathBuf,
    report: Box<dyn Fn(Report) + Send>,
    epoch: Instant,
    jobs: FxHashMap<JobId, JobData>,
    next_job: u64,
    execs: FxHashMap<ExecId, ExecIo>,
    ev_tx: mpsc::UnboundedSender<Event>,
}

impl Manager {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        mut ev_rx: mpsc::UnboundedReceiver<Event>,
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
                Some(ev) = ev_rx.recv() => {
                    self.feed(ev);
                    while let Ok(ev) = ev_rx.try_recv() {
                        self.feed(ev);
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
                self.jobs.insert(job, JobData { payload, inputs });
                self.feed(Event::Execute { job, task, attempt });
            }
            Request::Abandon { task, attempt } => self.feed(Event::Abandon { task, attempt }),
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
                Command::Send { exec, job } => {
                    if let (Some(x), Some(d)) = (self.execs.get(&exec), self.jobs.get(&job)) {
                        let _ = x.writer.send(ToExecutor::Task {
                            id: job.0,
                            payload: d.payload.clone(),
                            inputs: d.inputs.clone(),
                        });
                    }
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
                    self.jobs.remove(&job);
                }
                Command::ForgetExec { exec } => {
                    if let Some(x) = self.execs.remove(&exec) {
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

    /// Write the script (once per content) and start an executor with its pipe tasks.
    fn spawn(&mut self, exec: ExecId) -> Result<u32> {
        let script = ensure_script(&self.work_dir)?;
        let stack_file =
            self.work_dir
                .join(format!("executor-{}-{}.stacks", std::process::id(), exec.0));
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
        let activity = Arc::new(AtomicU64::new(0));
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let (kill, kill_rx) = oneshot::channel();
        tokio::spawn(write_frames(stdin, writer_rx));
        let stamped = Stamped {
            inner: stdout,
            activity: activity.clone(),
            epoch: self.epoch,
        };
        tokio::spawn(read_frames(
            ExecLink {
                exec,
                pid,
                writer: writer.clone(),
                stderr_tail: stderr_tail.clone(),
            },
            stamped,
            self.ev_tx.clone(),
        ));
        let forwarder = tokio::spawn(forward_stderr(stderr, stderr_tail.clone()));
        tokio::spawn(wait_child(
            exec,
            child,
            kill_rx,
            forwarder,
            stderr_tail,
            self.ev_tx.clone(),
        ));
        self.execs.insert(
            exec,
            ExecIo {
                pid,
                writer,
                activity,
                kill: Some(kill),
                stack_file,
            },
        );
        Ok(pid)
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
            crate::vitals::executor_replaced();
            match death {
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

// === impl ExecutorCodec ===

/// The frames of an executor's pipes (see the module doc): decodes what an executor writes,
/// encodes what the worker sends it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecutorCodec;

/// A frame from an executor, undecoded: its kind, the task id, the body.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub kind: u8,
    pub id: u64,
    pub body: Bytes,
}

/// What the worker sends an executor.
#[derive(Clone, Debug)]
pub enum ToExecutor {
    /// `T`: the payload inline; each input inline, or named by its fd if it is a whole
    /// shared-memory segment (the executor maps it in place).
    Task {
        id: u64,
        payload: Bytes,
        inputs: Vec<Bytes>,
    },
    /// `C`.
    Cancel(u64),
    /// `F`: the result segment of task `id` is mapped; close it.
    ResultMapped(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("reading its output: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes")]
    TooLarge(usize),
}

impl Decoder for ExecutorCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = src[0];
        let id = u64::from_be_bytes(src[1..9].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(src[9..13].try_into().expect("4 bytes")) as usize;
        if len > MAX_EXECUTOR_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(HEADER_LEN + len);
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            kind,
            id,
            body: frame.freeze(),
        }))
    }
}

impl Encoder<ToExecutor> for ExecutorCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: ToExecutor, dst: &mut BytesMut) -> std::io::Result<()> {
        let (id, payload, inputs) = match item {
            ToExecutor::Cancel(id) => {
                put_header(dst, b'C', id, 0);
                return Ok(());
            }
            ToExecutor::ResultMapped(id) => {
                put_header(dst, b'F', id, 0);
                return Ok(());
            }
            ToExecutor::Task {
                id,
                payload,
                inputs,
            } => (id, payload, inputs),
        };
        let blobs: Vec<(&Bytes, Option<i32>)> = std::iter::once((&payload, None))
            .chain(inputs.iter().map(|i| (i, segment::fd_of(i))))
            .collect();
        let inline: usize = blobs
            .iter()
            .filter(|(_, fd)| fd.is_none())
            .map(|(b, _)| b.len())
            .sum();
        let body_len = 4 + BLOB_DESCRIPTOR_LEN * blobs.len() + inline;
        dst.reserve(HEADER_LEN + body_len);
        put_header(dst, b'T', id, u32::try_from(body_len).unwrap_or(u32::MAX));
        dst.put_u32(blobs.len() as u32);
        for (b, fd) in &blobs {
            dst.put_u8(u8::from(fd.is_some()));
            dst.put_bytes(0, 3);
            dst.put_u32(fd.unwrap_or(0) as u32);
            dst.put_u64(0);
            dst.put_u64(b.len() as u64);
        }
        for (b, _) in blobs.iter().filter(|(_, fd)| fd.is_none()) {
            dst.extend_from_slice(b);
        }
        Ok(())
    }
}

fn put_header(dst: &mut BytesMut, kind: u8, id: u64, len: u32) {
    dst.reserve(HEADER_LEN);
    dst.put_u8(kind);
    dst.put_u64(id);
    dst.put_u32(len);
}

/// An executor's output, stamping the time of every read: pings are consumed by the decoder
/// and never reach the core, so this is how the core learns an executor is alive.
struct Stamped<R> {
    inner: R,
    activity: Arc<AtomicU64>,
    epoch: Instant,
}

impl<R: AsyncRead + Unpin> AsyncRead for Stamped<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = this.epoch.elapsed().as_millis() as u64 + 1;
            this.activity.store(ms, Ordering::Relaxed);
        }
        r
    }
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

/// Frames to the executor, flushed once per batch of what is waiting.
async fn write_frames(
    stdin: tokio::process::ChildStdin,
    mut rx: mpsc::UnboundedReceiver<ToExecutor>,
) {
    let mut sink = FramedWrite::with_capacity(stdin, ExecutorCodec, PIPE_BUFFER_BYTES);
    sink.set_backpressure_boundary(PIPE_BUFFER_BYTES);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if sink.feed(item).await.is_err() {
                return; // the executor is gone; its exit is reported by `wait_child`
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// What the reader of an executor's output needs to know of it.
struct ExecLink {
    exec: ExecId,
    pid: u32,
    writer: mpsc::UnboundedSender<ToExecutor>,
    /// Cleared when a task starts, so that a death quotes what that task wrote.
    stderr_tail: Arc<Mutex<Vec<u8>>>,
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
                let _ = self.writer.send(ToExecutor::ResultMapped(id));
                Ok(value)
            }
            _ => Err("a malformed result frame".into()),
        }
    }

    /// The event a frame means, or what is wrong with it.
    fn event(&self, f: Frame) -> Result<Option<Event>, String> {
        let (exec, job) = (self.exec, JobId(f.id));
        Ok(Some(match f.kind {
            b'P' => return Ok(None),
            b'H' => {
                let hello: serde_json::Value = serde_json::from_slice(&f.body).unwrap_or_default();
                let error = hello
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(String::from);
                if error.is_none() {
                    info!(
                        pid = self.pid,
                        python = hello["python"].as_str().unwrap_or("?"),
                        cloudpickle = hello["cloudpickle"].as_str().unwrap_or("?"),
                        executable = hello["executable"].as_str().unwrap_or("?"),
                        "python executor ready"
                    );
                }
                Event::Hello { exec, error }
            }
            b'S' => {
                self.stderr_tail.lock().expect("not poisoned").clear();
                Event::Started { exec, job }
            }
            b'R' => Event::Answered {
                exec,
                job,
                answer: Answer::Value(self.result_value(f.id, f.body)?),
            },
            b'E' => Event::Answered {
                exec,
                job,
                answer: Answer::Error(parse_error(f.body)),
            },
            b'X' => Event::Answered {
                exec,
                job,
                answer: Answer::Skipped,
            },
            other => return Err(format!("unknown frame kind {:?}", other as char)),
        }))
    }
}

async fn read_frames(
    link: ExecLink,
    stdout: Stamped<tokio::process::ChildStdout>,
    ev: mpsc::UnboundedSender<Event>,
) {
    let mut frames = FramedRead::with_capacity(stdout, ExecutorCodec, PIPE_BUFFER_BYTES);
    let error = loop {
        let frame = match frames.next().await {
            None => break None,
            Some(Err(e)) => break Some(e.to_string()),
            Some(Ok(f)) => f,
        };
        match link.event(frame) {
            Ok(Some(e)) => {
                let _ = ev.send(e);
            }
            Ok(None) => {}
            Err(e) => break Some(e),
        }
    };
    let _ = ev.send(Event::Closed {
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
    exec: ExecId,
    mut child: tokio::process::Child,
    mut kill: oneshot::Receiver<Option<PathBuf>>,
    forwarder: tokio::task::JoinHandle<()>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    ev: mpsc::UnboundedSender<Event>,
) {
    let pid = child.id();
    let done = tokio::select! {
        s = child.wait() => Ok(s),
        k = &mut kill => Err(k.ok().flatten()),
    };
    let mut stacks = None;
    let by_kill = done.is_err();
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
    let exit = match status {
        Ok(s) => describe_exit(s),
        Err(e) => Exit::WaitFailed(e.to_string()),
    };
    // Killed by us, not dead of something else just before.
    let killed = by_kill
        && matches!(
            exit,
            Exit::Signal {
                signal: libc::SIGKILL,
                ..
            }
        );
    if let Some(st) = &stacks {
        warn!(pid = ?pid, stacks = %st, "python stacks of the executor before it was killed");
    }
    // The last words on stderr (faulthandler's report of a crash) come after the exit: read
    // them to the end, unless a surviving child of the executor holds the pipe open.
    let _ = tokio::time::timeout(STDERR_DRAIN_WAIT, forwarder).await;
    let stderr_tail = {
        let t = stderr_tail.lock().expect("not poisoned");
        String::from_utf8_lossy(&t).into_owned()
    };
    let _ = ev.send(Event::Exited {
        exec,
        exit,
        killed,
        stacks,
        stderr_tail,
    });
}

fn describe_exit(s: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(signal)) => Exit::Signal {
            signal,
            name: signal_name(signal),
        },
        _ => Exit::Other,
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
    //! The pipe codec, then the pool against real executors (`python3` with `cloudpickle`).
    use super::*;
    use rusk_proto::GraphId;

    fn header(kind: u8, id: u64, len: u32) -> Vec<u8> {
        let mut h = vec![kind];
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn the_codec_decodes_frames_split_anywhere() {
        let mut wire = header(b'P', 0, 0);
        wire.extend(header(b'S', 7, 0));
        wire.extend(header(b'R', 7, 4));
        wire.extend(b"\0abc");
        let mut codec = ExecutorCodec;
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // One byte at a time: a frame is complete only when all of it is there.
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert!(buf.is_empty());
        let frame = |kind, id, body: &'static [u8]| Frame {
            kind,
            id,
            body: Bytes::from_static(body),
        };
        assert_eq!(
            frames,
            vec![
                frame(b'P', 0, b""),
                frame(b'S', 7, b""),
                frame(b'R', 7, b"\0abc")
            ]
        );
    }

    #[test]
    fn the_codec_refuses_a_frame_over_the_limit_from_its_header() {
        let mut buf = BytesMut::from(&header(b'E', 1, MAX_EXECUTOR_FRAME as u32 + 1)[..]);
        let e = ExecutorCodec.decode(&mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("a frame of {} bytes", MAX_EXECUTOR_FRAME + 1)
        );
    }

    #[test]
    fn the_codec_encodes_tasks_with_blob_descriptors_and_bare_cancels() {
        let mut dst = BytesMut::new();
        ExecutorCodec
            .encode(
                ToExecutor::Task {
                    id: 9,
                    payload: Bytes::from_static(b"ab"),
                    inputs: vec![Bytes::from_static(b"c")],
                },
                &mut dst,
            )
            .unwrap();
        let mut want = header(b'T', 9, 4 + 2 * 24 + 3);
        want.extend(2u32.to_be_bytes());
        for len in [2u64, 1] {
            want.extend([0, 0, 0, 0]); // inline, padding
            want.extend(0u32.to_be_bytes()); // fd
            want.extend(0u64.to_be_bytes()); // offset
            want.extend(len.to_be_bytes());
        }
        want.extend(b"abc");
        assert_eq!(&dst[..], &want[..]);
        let mut dst = BytesMut::new();
        ExecutorCodec
            .encode(ToExecutor::Cancel(5), &mut dst)
            .unwrap();
        ExecutorCodec
            .encode(ToExecutor::ResultMapped(6), &mut dst)
            .unwrap();
        let mut want = header(b'C', 5, 0);
        want.extend(header(b'F', 6, 0));
        assert_eq!(&dst[..], &want[..]);
    }

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
            loop {
                let r = tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                    .await
                    .expect("a report within 60 s")
                    .expect("pool alive");
                match r {
                    Report::Started { task, .. } => return task.index,
                    Report::Finished { task, result, .. } => {
                        panic!("task {} finished before starting: {result:?}", task.index)
                    }
                    Report::Event(_) => {} // an executor replaced meanwhile
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
