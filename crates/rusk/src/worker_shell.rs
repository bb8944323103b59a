//! The worker process: a thin tokio shell around `rusk_core::worker::WorkerCore`.
//!
//! The event loop (a current-thread runtime) owns the core, the scheduler connection, the data
//! server that peers and clients fetch results from, and one fetcher task per peer. Task code
//! never runs on this loop: builtins run on `nthreads` task threads, `cmd` tasks in child
//! processes, Python tasks in a pool of executor processes (`crate::python_exec`). So heartbeats
//! keep flowing while tasks keep every core busy, and a heartbeat that stops means the loop
//! itself is wedged, which is exactly what the scheduler's TTL catches.
use crate::python_exec::{PythonOptions, PythonPool, Report};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rusk_core::builtins;
use rusk_core::memory::{MemoryConfig, SpillError, StoreCommand, Value};
use rusk_core::worker::{Command, Event, WorkerConfig, WorkerCore};
use rusk_net::{self as net, Conn};
use rusk_proto::auth::Role;
use rusk_proto::graph::{Builtin, TaskKind};
use rusk_proto::msg::{DataRequest, SchedulerToWorker, TaskError, WorkerInfo, WorkerToScheduler};
use rusk_proto::{AttemptId, TaskRef};
use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{error, info, warn};

use crate::spill::SpillDir;

/// Results per fetch request (at most `rusk_net::transfer::TRANSFER_ITEMS_MAX`). A fetch fails
/// when its transfer makes no progress for `TRANSFER_IDLE_TIMEOUT`, however large the values.
const FETCH_BATCH_MAX: usize = 1024;
/// Bytes of a failed command's stderr quoted in its error.
const STDERR_TAIL_BYTES: usize = 2048;
/// Executes the core may have handed out per task thread at once.
const DISPATCHED_PER_THREAD_MAX: u32 = 64;

pub struct WorkerOptions {
    pub scheduler: String,
    pub token: String,
    pub name: Option<String>,
    pub nthreads: u32,
    pub listen_host: String,
    pub work_dir: Option<PathBuf>,
    pub fault_injection: bool,
    /// Set when a nanny supervises this worker.
    pub supervision: Option<Supervision>,
    /// The Python executors (interpreter, hang timeout, eager start).
    pub python: PythonOptions,
    /// When the worker reports itself unhealthy (`crate::vitals`).
    pub health: crate::vitals::HealthOptions,
    /// Memory limit, spill and pause thresholds (`rusk_core::memory`).
    pub memory: MemoryConfig,
    /// Where results are spilled (default: `spill/` in the work dir).
    pub spill_dir: Option<PathBuf>,
}

/// How a nanny-supervised worker reaches its nanny.
pub struct Supervision {
    pub nanny: String,
    pub slot: u32,
    /// Inherited socket: the worker writes `ping` and `registered <incarnation>` lines.
    pub fd: i32,
}

/// How often the worker's event loop pings its nanny (the nanny's watchdog timeout is a
/// multiple of this).
pub const NANNY_PING_INTERVAL: Duration = Duration::from_millis(200);
/// Back-off while a supervised worker cannot reach the scheduler.
const CONNECT_RETRY_MIN: Duration = Duration::from_millis(100);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(2);

enum Local {
    /// An executor began a task. `ack`, when set, is answered once the scheduler has been
    /// told (the `TaskStarted` frame is on the socket): a task that may kill this process waits
    /// for it, so that its death is charged to it.
    Started {
        task: TaskRef,
        attempt: AttemptId,
        ack: Option<std::sync::mpsc::SyncSender<()>>,
    },
    Finished {
        task: TaskRef,
        attempt: AttemptId,
        result: Result<Bytes, TaskError>,
    },
    Fetched {
        peer: Arc<str>,
        items: Vec<(TaskRef, Option<Bytes>)>,
    },
    FetchFailed {
        peer: Arc<str>,
        tasks: Vec<TaskRef>,
        reason: String,
    },
    PeerRequest {
        tasks: Vec<TaskRef>,
        reply: oneshot::Sender<DataItems>,
    },
    /// New measurements from the vitals sampler (`crate::vitals`).
    Vitals(rusk_proto::msg::Vitals),
    /// A spill file was written (or could not be).
    Spilled {
        task: TaskRef,
        result: Result<(), SpillError>,
    },
    /// A spilled value could not be read back.
    SpillLost {
        dep: TaskRef,
        during: Option<(TaskRef, AttemptId)>,
    },
    /// An `Execute` whose spilled inputs have been mapped back.
    Resolved {
        task: TaskRef,
        attempt: AttemptId,
        kind: Arc<TaskKind>,
        inputs: Vec<Bytes>,
    },
}

/// Results a peer asked for, with `None` for those this worker does not hold.
type DataItems = Vec<(TaskRef, Option<Value>)>;
/// Kill switches of running command tasks.
type RunningCommands = Arc<Mutex<FxHashMap<(TaskRef, AttemptId), oneshot::Sender<()>>>>;

struct Job {
    task: TaskRef,
    attempt: AttemptId,
    op: Builtin,
    args: Vec<String>,
    inputs: Vec<Bytes>,
}

/// Memory kept alive by the `alloc_mb` fault-injection builtin.
static HELD_ALLOCATIONS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub async fn run(opts: WorkerOptions) -> Result<()> {
    let token: Arc<[u8]> = Arc::from(opts.token.as_bytes());
    let listener = TcpListener::bind((opts.listen_host.as_str(), 0))
        .await
        .with_context(|| format!("cannot open the data server on {}", opts.listen_host))?;
    let data_address = listener.local_addr()?.to_string();
    let pid = std::process::id();
    let host = hostname();
    let info = WorkerInfo {
        name: opts.name.clone().unwrap_or_else(|| format!("{host}-{pid}")),
        host,
        pid,
        nthreads: opts.nthreads.max(1),
        data_address: data_address.clone(),
        nanny: opts.supervision.as_ref().map(|s| s.nanny.clone()),
        slot: opts.supervision.as_ref().map(|s| s.slot),
    };
    let work_dir = opts
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("rusk-worker-{pid}")));
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create work dir {}", work_dir.display()))?;
    if opts.work_dir.is_none() {
        sweep_dead_work_dirs();
    }
    let spill = SpillDir::new(
        opts.spill_dir
            .clone()
            .unwrap_or_else(|| work_dir.join(format!("spill-{pid}"))),
    )?;
    let fd_limit = rusk_net::segment::raise_fd_limit();
    info!(
        store = "memfd (shared memory, not limited by /dev/shm)",
        spill_dir = %spill.dir().display(),
        memory_limit = ?opts.memory.limit,
        fd_limit,
        "object store ready"
    );

    let nanny = match &opts.supervision {
        Some(sup) => Some(NannyLink::open(sup.fd)?),
        None => None,
    };
    let mut conn = connect_scheduler(&opts, &token).await?;
    let start = Instant::now();
    let mut core = WorkerCore::new(WorkerConfig {
        info: info.clone(),
        dispatched_per_thread_max: DISPATCHED_PER_THREAD_MAX,
        heartbeat_interval: Duration::from_millis(500),
        memory: opts.memory.clone(),
    });
    let register: Vec<WorkerToScheduler> = core
        .start(start.elapsed())
        .into_iter()
        .map(|c| match c {
            Command::ToScheduler(m) => m,
            other => unreachable!("start only registers: {other:?}"),
        })
        .collect();
    net::send(&mut conn, &register).await?;
    info!(name = %info.name, scheduler = %opts.scheduler, %data_address, nthreads = info.nthreads, "worker started");

    let (local_tx, mut local_rx) = mpsc::unbounded_channel::<Local>();
    tokio::spawn(data_server(
        listener,
        token.clone(),
        local_tx.clone(),
        spill.clone(),
    ));

    let (sched_sink, mut sched_stream) = conn.split();
    let (sched_out, sched_out_rx) = mpsc::unbounded_channel::<OutFrame>();
    tokio::spawn(write_frames(sched_sink, sched_out_rx));
    let (sched_in_tx, mut sched_in) =
        mpsc::unbounded_channel::<Result<Vec<SchedulerToWorker>, String>>();
    tokio::spawn(async move {
        loop {
            let item = match sched_stream.next().await {
                None => Err("scheduler closed the connection".to_string()),
                Some(Err(e)) => Err(format!("bad frame from scheduler: {e}")),
                Some(Ok(frame)) => rusk_proto::decode::<Vec<SchedulerToWorker>>(&frame)
                    .map_err(|e| format!("malformed message from scheduler: {e}")),
            };
            let end = item.is_err();
            if sched_in_tx.send(item).is_err() || end {
                return;
            }
        }
    });

    let vitals_tx = local_tx.clone();
    crate::vitals::spawn(work_dir.clone(), opts.health.clone(), move |v| {
        let _ = vitals_tx.send(Local::Vitals(v));
    });
    let executor = Executor::start(
        info.nthreads,
        opts.fault_injection,
        work_dir,
        local_tx.clone(),
        opts.python.clone(),
    );
    let mut fetchers: FxHashMap<Arc<str>, mpsc::UnboundedSender<Vec<TaskRef>>> =
        FxHashMap::default();
    let mut out: Vec<Command> = Vec::new();
    let mut to_scheduler: Vec<WorkerToScheduler> = Vec::new();
    let mut replies: FxHashMap<u64, oneshot::Sender<DataItems>> = FxHashMap::default();
    let mut next_reply = 0u64;
    let mut registered_reported = false;
    let mut started_acks: Vec<std::sync::mpsc::SyncSender<()>> = Vec::new();

    loop {
        let deadline = start + core.next_timeout();
        tokio::select! {
            biased;
            msg = sched_in.recv() => {
                let now = start.elapsed();
                let mut batch = msg;
                loop {
                    match batch {
                        Some(Ok(msgs)) => {
                            for m in msgs {
                                core.handle_into(now, Event::FromScheduler(m), &mut out);
                            }
                        }
                        Some(Err(reason)) => return Err(anyhow!(ConnectionLost(reason))),
                        None => return Err(anyhow!(ConnectionLost("reader ended".into()))),
                    }
                    batch = match sched_in.try_recv() {
                        Ok(b) => Some(b),
                        Err(_) => break,
                    };
                }
            }
            ev = local_rx.recv() => {
                let now = start.elapsed();
                let mut ev = ev;
                while let Some(e) = ev.take() {
                    let event = match e {
                        Local::Finished { task, attempt, result } => Event::Finished { task, attempt, result },
                        Local::Fetched { peer, items } => Event::Fetched { peer, items },
                        Local::FetchFailed { peer, tasks, reason } => {
                            warn!(%peer, %reason, tasks = tasks.len(), "fetch from peer failed");
                            fetchers.remove(&peer);
                            Event::FetchFailed { peer, tasks }
                        }
                        Local::Started { task, attempt, ack } => {
                            if let Some(ack) = ack {
                                started_acks.push(ack);
                            }
                            Event::Started { task, attempt }
                        }
                        Local::Vitals(v) => Event::Vitals(v),
                        Local::Spilled { task, result } => Event::Spilled { task, result },
                        Local::SpillLost { dep, during } => {
                            warn!(%dep, "a spilled result is lost (its file is corrupt or missing); it will be recomputed");
                            Event::SpillLost { dep, during }
                        }
                        Local::Resolved { task, attempt, kind, inputs } => {
                            executor.execute(task, attempt, kind, inputs);
                            ev = local_rx.try_recv().ok();
                            continue;
                        }
                        Local::PeerRequest { tasks, reply } => {
                            next_reply += 1;
                            replies.insert(next_reply, reply);
                            Event::PeerRequest { request: next_reply, tasks }
                        }
                    };
                    core.handle_into(now, event, &mut out);
                    ev = local_rx.try_recv().ok();
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = start.elapsed();
        if now >= core.next_timeout() {
            core.handle_into(now, Event::Tick, &mut out);
        }
        core.flush(&mut out);
        // Tell the nanny as soon as we are registered, before running anything.
        if let (Some(link), false, Some(inc)) = (&nanny, registered_reported, core.incarnation()) {
            link.registered(inc.0);
            registered_reported = true;
        }
        for cmd in out.drain(..) {
            match cmd {
                Command::ToScheduler(m) => to_scheduler.push(m),
                Command::Fetch { peer, tasks } => {
                    for chunk in tasks.chunks(FETCH_BATCH_MAX) {
                        let tx = fetchers.entry(peer.clone()).or_insert_with(|| {
                            spawn_fetcher(peer.clone(), token.clone(), local_tx.clone())
                        });
                        if tx.send(chunk.to_vec()).is_err() {
                            let tx = spawn_fetcher(peer.clone(), token.clone(), local_tx.clone());
                            let _ = tx.send(chunk.to_vec());
                            fetchers.insert(peer.clone(), tx);
                        }
                    }
                }
                Command::Execute {
                    task,
                    attempt,
                    kind,
                    inputs,
                } => {
                    if let TaskKind::Builtin {
                        op: Builtin::BlockLoop,
                        args,
                    } = &*kind
                    {
                        if opts.fault_injection {
                            // Deliberately wedge this event loop (fault injection). First make
                            // sure the scheduler knows this attempt is running.
                            let mut started = Vec::new();
                            core.handle_into(
                                start.elapsed(),
                                Event::Started { task, attempt },
                                &mut started,
                            );
                            core.flush(&mut started);
                            let msgs: Vec<WorkerToScheduler> = started
                                .into_iter()
                                .filter_map(|c| match c {
                                    Command::ToScheduler(m) => Some(m),
                                    _ => None,
                                })
                                .collect();
                            let (tx, rx) = oneshot::channel();
                            let _ = sched_out.send(OutFrame {
                                frame: net::encode(&msgs),
                                sent: Some(tx),
                            });
                            let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
                            let secs: f64 = args
                                .first()
                                .and_then(|a| a.trim().parse().ok())
                                .unwrap_or(10.0);
                            warn!(secs, "block_loop: wedging the event loop on purpose");
                            std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
                            let _ = local_tx.send(Local::Finished {
                                task,
                                attempt,
                                result: Ok(Bytes::new()),
                            });
                            continue;
                        }
                    }
                    resolve_inputs(task, attempt, kind, inputs, &spill, &local_tx, &executor);
                }
                Command::Store(StoreCommand::Spill { task, data }) => {
                    let (spill, local) = (spill.clone(), local_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let result = spill.write(task, &data);
                        drop(data);
                        let _ = local.send(Local::Spilled { task, result });
                    });
                }
                Command::Store(StoreCommand::DropSpill { task }) => spill.remove(task),
                Command::Abandon { task, attempt } => executor.abandon(task, attempt),
                Command::ReplyPeer { request, items } => {
                    if let Some(r) = replies.remove(&request) {
                        let _ = r.send(items);
                    }
                }
            }
        }
        if to_scheduler.is_empty() {
            // Nothing to tell the scheduler (the started attempts were cancelled meanwhile).
            for a in started_acks.drain(..) {
                let _ = a.try_send(());
            }
        } else {
            let frame = net::encode(&to_scheduler);
            to_scheduler.clear();
            let sent = if started_acks.is_empty() {
                None
            } else {
                // Tell the waiting task threads once this frame (with their TaskStarted) is out.
                let acks = std::mem::take(&mut started_acks);
                let (tx, rx) = oneshot::channel::<()>();
                tokio::spawn(async move {
                    let _ = rx.await;
                    for a in acks {
                        let _ = a.try_send(());
                    }
                });
                Some(tx)
            };
            if sched_out.send(OutFrame { frame, sent }).is_err() {
                return Err(anyhow!(ConnectionLost("writer closed".into())));
            }
        }
    }
}

/// The worker lost its scheduler connection after joining: the process exits with
/// `EXIT_CONNECTION_LOST` so its nanny starts a fresh incarnation.
#[derive(Debug, thiserror::Error)]
#[error("lost the scheduler: {0}")]
pub struct ConnectionLost(pub String);

/// Join the scheduler. A supervised worker keeps trying (its nanny's watchdog is fed
/// meanwhile) except when refused, which retrying cannot fix; a standalone worker reports the
/// first failure.
async fn connect_scheduler(opts: &WorkerOptions, token: &[u8]) -> Result<Conn> {
    let mut delay = CONNECT_RETRY_MIN;
    // One line for the first failure, then one every 30 s: no log storm while it is down.
    let (mut attempts, mut last_log) = (0u64, None::<Instant>);
    loop {
        match net::connect(&opts.scheduler, token, Role::Worker).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let refused = format!("{e:#}").contains("refused us");
                if opts.supervision.is_none() || refused {
                    return Err(
                        e.context(format!("cannot join the scheduler at {}", opts.scheduler))
                    );
                }
                attempts += 1;
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    last_log = Some(Instant::now());
                    warn!(error = %format!("{e:#}"), attempts, retry_in_ms = delay.as_millis() as u64, "scheduler unreachable; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(CONNECT_RETRY_MAX);
            }
        }
    }
}

/// The worker's side of its nanny socket. Pings come from a task on this worker's single
/// event-loop thread, so a wedged loop stops them: that is what the nanny's watchdog detects.
struct NannyLink {
    stream: Arc<tokio::net::UnixStream>,
}

impl NannyLink {
    fn open(fd: i32) -> Result<NannyLink> {
        use std::os::fd::FromRawFd;
        // SAFETY: the nanny passed us this fd (a Unix socket) and nothing else in this process
        // owns it.
        let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        std_stream.set_nonblocking(true).context("nanny socket")?;
        let stream =
            Arc::new(tokio::net::UnixStream::from_std(std_stream).context("nanny socket")?);
        let pinger = stream.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(NANNY_PING_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = pinger.try_write(b"ping\n") {
                            if e.kind() != std::io::ErrorKind::WouldBlock {
                                error!(error = %e, "nanny socket closed; exiting");
                                std::process::exit(EXIT_NANNY_GONE);
                            }
                        }
                    }
                    r = pinger.readable() => {
                        if r.is_ok() && matches!(pinger.try_read(&mut buf), Ok(0)) {
                            error!("nanny gone; exiting");
                            std::process::exit(EXIT_NANNY_GONE);
                        }
                    }
                }
            }
        });
        Ok(NannyLink { stream })
    }

    fn registered(&self, incarnation: u64) {
        let _ = self
            .stream
            .try_write(format!("registered {incarnation}\n").as_bytes());
    }
}

/// Exit code of a worker whose nanny is gone.
const EXIT_NANNY_GONE: i32 = 70;

/// A frame for the scheduler; `sent` is answered once it has been written out.
struct OutFrame {
    frame: Bytes,
    sent: Option<oneshot::Sender<()>>,
}

async fn write_frames(
    mut sink: futures::stream::SplitSink<Conn, Bytes>,
    mut rx: mpsc::UnboundedReceiver<OutFrame>,
) {
    let mut acks = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(OutFrame { frame, sent }) = next.take() {
            if sink.feed(frame).await.is_err() {
                return;
            }
            acks.extend(sent);
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
        for a in acks.drain(..) {
            let _ = a.send(());
        }
    }
}

/// Serve stored results to peers and clients.
async fn data_server(
    listener: TcpListener,
    token: Arc<[u8]>,
    local: mpsc::UnboundedSender<Local>,
    spill: SpillDir,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (token, local, spill) = (token.clone(), local.clone(), spill.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_peer(stream, &token, local, spill).await {
                warn!(%peer, error = %format!("{e:#}"), "data connection dropped");
            }
        });
    }
}

async fn serve_peer(
    stream: tokio::net::TcpStream,
    token: &[u8],
    local: mpsc::UnboundedSender<Local>,
    spill: SpillDir,
) -> Result<()> {
    let (mut conn, _) = net::accept(stream, token, &[Role::Peer]).await?;
    while let Some(req) = net::recv::<DataRequest>(&mut conn).await? {
        let DataRequest::Get { id, tasks } = req;
        if tasks.len() > rusk_net::transfer::TRANSFER_ITEMS_MAX {
            return Err(anyhow!(
                "a request for {} values; at most {} (TRANSFER_ITEMS_MAX)",
                tasks.len(),
                rusk_net::transfer::TRANSFER_ITEMS_MAX
            ));
        }
        let (tx, rx) = oneshot::channel();
        local
            .send(Local::PeerRequest { tasks, reply: tx })
            .map_err(|_| anyhow!("worker shutting down"))?;
        let items = rx.await.map_err(|_| anyhow!("worker shutting down"))?;
        // Spilled values are mapped back from their files (checksums verified off the loop).
        let (spill2, local2) = (spill.clone(), local.clone());
        let items = tokio::task::spawn_blocking(move || {
            items
                .into_iter()
                .map(|(t, v)| {
                    let v = v.and_then(|v| match resolve(v, &spill2) {
                        Ok(b) => Some(b),
                        Err(dep) => {
                            let _ = local2.send(Local::SpillLost { dep, during: None });
                            None
                        }
                    });
                    (t, v)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        rusk_net::transfer::send_values(&mut conn, id, &items).await?;
    }
    Ok(())
}

/// A stored value's bytes: in memory, or mapped from its spill file. `Err` names a spilled
/// result whose file is corrupt or missing.
fn resolve(v: Value, spill: &SpillDir) -> Result<Bytes, TaskRef> {
    match v {
        Value::Memory(b) => Ok(b),
        Value::Spilled { task, size } => spill.read(task, size).map_err(|e| {
            warn!(%task, error = %format!("{e:#}"), "cannot read a spilled result back");
            task
        }),
    }
}

/// Hand an `Execute` to the executor; inputs that are spilled are mapped back first, off the
/// event loop (`Local::Resolved`).
fn resolve_inputs(
    task: TaskRef,
    attempt: AttemptId,
    kind: Arc<TaskKind>,
    inputs: Vec<Value>,
    spill: &SpillDir,
    local: &mpsc::UnboundedSender<Local>,
    executor: &Executor,
) {
    if inputs.iter().all(|v| matches!(v, Value::Memory(_))) {
        let inputs = inputs.into_iter().filter_map(Value::into_memory).collect();
        executor.execute(task, attempt, kind, inputs);
        return;
    }
    let (spill, local) = (spill.clone(), local.clone());
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(inputs.len());
        for v in inputs {
            match resolve(v, &spill) {
                Ok(b) => out.push(b),
                Err(dep) => {
                    let _ = local.send(Local::SpillLost {
                        dep,
                        during: Some((task, attempt)),
                    });
                    return;
                }
            }
        }
        let _ = local.send(Local::Resolved {
            task,
            attempt,
            kind,
            inputs: out,
        });
    });
}

/// Remove the work directories (and spill files) of default-placed workers that died without
/// cleaning up (`kill -9`): `rusk-worker-<pid>` in the temp dir whose process is gone.
fn sweep_dead_work_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("rusk-worker-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
            info!(pid, "removed the work dir of a dead worker");
        }
    }
}

/// One task per peer: a single authenticated connection, requests served in order.
fn spawn_fetcher(
    peer: Arc<str>,
    token: Arc<[u8]>,
    local: mpsc::UnboundedSender<Local>,
) -> mpsc::UnboundedSender<Vec<TaskRef>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<TaskRef>>();
    tokio::spawn(async move {
        let mut conn: Option<Conn> = None;
        let mut id = 0u64;
        while let Some(tasks) = rx.recv().await {
            id += 1;
            let failure = match fetch_once(&mut conn, &peer, &token, id, &tasks).await {
                Ok(items) => {
                    let bytes = items.iter().flat_map(|(_, b)| b).map(|b| b.len() as u64);
                    crate::vitals::add_bytes_fetched(bytes.sum());
                    let _ = local.send(Local::Fetched {
                        peer: peer.clone(),
                        items,
                    });
                    continue;
                }
                Err(e) => format!("{e:#}"),
            };
            // Fail this request and everything queued behind it; the loop starts a new fetcher.
            let mut failed = tasks;
            while let Ok(more) = rx.try_recv() {
                failed.extend(more);
            }
            let _ = local.send(Local::FetchFailed {
                peer: peer.clone(),
                tasks: failed,
                reason: failure,
            });
            return;
        }
    });
    tx
}

async fn fetch_once(
    conn: &mut Option<Conn>,
    peer: &str,
    token: &[u8],
    id: u64,
    tasks: &[TaskRef],
) -> Result<Vec<(TaskRef, Option<Bytes>)>> {
    if conn.is_none() {
        *conn = Some(net::connect(peer, token, Role::Peer).await?);
    }
    let c = conn.as_mut().expect("just set");
    rusk_net::transfer::fetch_values(c, id, tasks).await
}

/// Runs tasks off the event loop: builtins on `nthreads` threads, commands as child processes
/// (at most `nthreads` at once), Python tasks in `nthreads` executor processes.
///
/// A builtin thread cannot be killed. When a builtin attempt is abandoned while running (its
/// time limit passed), the thread is retired after that job and a replacement thread takes its
/// place at once, so capacity stays the same. Too many stuck threads means a sick worker: past
/// `ABANDONED_THREADS_MAX` the worker exits and its nanny restarts it.
struct Executor {
    jobs: crossbeam_channel::Sender<Job>,
    job_rx: crossbeam_channel::Receiver<Job>,
    pool: Arc<Pool>,
    commands: Arc<Semaphore>,
    fault_injection: bool,
    work_dir: PathBuf,
    local: mpsc::UnboundedSender<Local>,
    running_commands: RunningCommands,
    python: PythonPool,
}

/// Builtin attempts running on task threads, and those whose thread must retire.
#[derive(Default)]
struct Pool {
    running: Mutex<rustc_hash::FxHashSet<(TaskRef, AttemptId)>>,
    retiring: Mutex<rustc_hash::FxHashSet<(TaskRef, AttemptId)>>,
    threads: std::sync::atomic::AtomicU32,
}

/// Stuck task threads tolerated (abandoned builtins still running) before the worker gives up
/// and exits for a restart.
const ABANDONED_THREADS_MAX: usize = 64;
/// Exit code of a worker with too many stuck task threads.
const EXIT_STUCK_THREADS: i32 = 71;
/// How long a task thread waits for "the scheduler knows I started" before running a builtin
/// that may take the process down.
const STARTED_ACK_TIMEOUT: Duration = Duration::from_secs(1);

impl Executor {
    fn start(
        nthreads: u32,
        fault_injection: bool,
        work_dir: PathBuf,
        local: mpsc::UnboundedSender<Local>,
        python: PythonOptions,
    ) -> Executor {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let to_loop = local.clone();
        let python = PythonPool::start(python, nthreads, work_dir.clone(), move |r| {
            let _ = to_loop.send(match r {
                Report::Started { task, attempt } => Local::Started {
                    task,
                    attempt,
                    ack: None,
                },
                Report::Finished {
                    task,
                    attempt,
                    result,
                } => Local::Finished {
                    task,
                    attempt,
                    result,
                },
            });
        });
        let e = Executor {
            jobs,
            job_rx,
            pool: Arc::default(),
            commands: Arc::new(Semaphore::new(nthreads.max(1) as usize)),
            fault_injection,
            work_dir,
            local,
            running_commands: Arc::default(),
            python,
        };
        for _ in 0..nthreads.max(1) {
            e.spawn_thread();
        }
        e
    }

    fn spawn_thread(&self) {
        let i = self
            .pool
            .threads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (rx, local, pool) = (self.job_rx.clone(), self.local.clone(), self.pool.clone());
        std::thread::Builder::new()
            .name(format!("rusk-task-{i}"))
            .spawn(move || task_thread(rx, local, pool))
            .expect("spawning a task thread");
    }

    fn execute(&self, task: TaskRef, attempt: AttemptId, kind: Arc<TaskKind>, inputs: Vec<Bytes>) {
        match &*kind {
            TaskKind::Builtin { op, args } => {
                if op.is_fault_injection() && !self.fault_injection {
                    let _ = self.local.send(Local::Finished {
                        task,
                        attempt,
                        result: Err(TaskError {
                            message: format!(
                                "builtin {:?} is for fault injection; this worker was not started with --enable-fault-injection",
                                op.name()
                            ),
                            exit_code: None,
                            detail: None,
                        }),
                    });
                    return;
                }
                let _ = self.jobs.send(Job {
                    task,
                    attempt,
                    op: *op,
                    args: args.clone(),
                    inputs,
                });
            }
            TaskKind::Python { payload } => {
                self.python.execute(task, attempt, payload.clone(), inputs);
            }
            TaskKind::Cmd { argv, env, cwd } => {
                let (kill_tx, kill_rx) = oneshot::channel();
                self.running_commands
                    .lock()
                    .expect("not poisoned")
                    .insert((task, attempt), kill_tx);
                let (argv, env, cwd) = (argv.clone(), env.clone(), cwd.clone());
                let (sem, local, dir, running) = (
                    self.commands.clone(),
                    self.local.clone(),
                    self.work_dir.clone(),
                    self.running_commands.clone(),
                );
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let _ = local.send(Local::Started {
                        task,
                        attempt,
                        ack: None,
                    });
                    let result =
                        run_command(&argv, &env, cwd.as_deref(), &inputs, &dir, kill_rx).await;
                    running
                        .lock()
                        .expect("not poisoned")
                        .remove(&(task, attempt));
                    let _ = local.send(Local::Finished {
                        task,
                        attempt,
                        result,
                    });
                });
            }
        }
    }

    fn abandon(&self, task: TaskRef, attempt: AttemptId) {
        let command = self
            .running_commands
            .lock()
            .expect("not poisoned")
            .remove(&(task, attempt));
        if let Some(kill) = command {
            let _ = kill.send(()); // dropping the child kills it
            return;
        }
        // A no-op unless it is one of the Python pool's attempts.
        self.python.abandon(task, attempt);
        let key = (task, attempt);
        if !self
            .pool
            .running
            .lock()
            .expect("not poisoned")
            .contains(&key)
        {
            return; // still queued (it will be skipped) or already done
        }
        let stuck = {
            let mut retiring = self.pool.retiring.lock().expect("not poisoned");
            retiring.insert(key);
            retiring.len()
        };
        if stuck > ABANDONED_THREADS_MAX {
            error!(
                stuck,
                "too many task threads stuck in abandoned builtins; exiting for a restart"
            );
            std::process::exit(EXIT_STUCK_THREADS);
        }
        warn!(%task, "abandoned a running builtin; its thread retires when it returns, a new one takes its place");
        self.spawn_thread();
    }
}

fn task_thread(
    rx: crossbeam_channel::Receiver<Job>,
    local: mpsc::UnboundedSender<Local>,
    pool: Arc<Pool>,
) {
    while let Ok(job) = rx.recv() {
        let key = (job.task, job.attempt);
        let pure = builtins::run_pure(job.op, &job.args, &job.inputs);
        let result = match pure {
            // Pure builtins are instant and cannot harm the process: no start report needed.
            Some(r) => r,
            None => {
                pool.running.lock().expect("not poisoned").insert(key);
                let (tx, rx_ack) = std::sync::mpsc::sync_channel(1);
                let may_kill = matches!(job.op, Builtin::Abort | Builtin::AllocMb);
                let _ = local.send(Local::Started {
                    task: job.task,
                    attempt: job.attempt,
                    ack: may_kill.then_some(tx),
                });
                if may_kill {
                    let _ = rx_ack.recv_timeout(STARTED_ACK_TIMEOUT);
                }
                let r = run_effect(job.op, &job.args);
                pool.running.lock().expect("not poisoned").remove(&key);
                r
            }
        };
        let retire = pool.retiring.lock().expect("not poisoned").remove(&key);
        let sent = local.send(Local::Finished {
            task: job.task,
            attempt: job.attempt,
            result,
        });
        if sent.is_err() || retire {
            return;
        }
    }
}

fn number_arg(op: Builtin, args: &[String]) -> Result<f64, TaskError> {
    let a = args.first().map(|s| s.trim()).unwrap_or("");
    a.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| TaskError {
            message: format!(
                "{} needs a non-negative number as its first argument, got {a:?}",
                op.name()
            ),
            exit_code: None,
            detail: None,
        })
}

/// Builtins with effects on this process.
fn run_effect(op: Builtin, args: &[String]) -> Result<Bytes, TaskError> {
    match op {
        Builtin::SleepMs => {
            let ms = number_arg(op, args)?;
            std::thread::sleep(Duration::from_secs_f64(ms / 1000.0));
            Ok(Bytes::new())
        }
        Builtin::Abort => {
            error!("abort builtin: aborting the worker process on purpose");
            std::process::abort();
        }
        Builtin::AllocMb => {
            // Grow like a leaking task: 16 MiB every 20 ms, every page touched so it counts in
            // RSS, all kept for the life of the process.
            let mb = number_arg(op, args)? as usize;
            let mut left = mb;
            while left > 0 {
                let step = left.min(16);
                let mut v = vec![0u8; step * 1024 * 1024];
                for page in v.chunks_mut(4096) {
                    page[0] = 1;
                }
                HELD_ALLOCATIONS.lock().expect("not poisoned").push(v);
                left -= step;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Bytes::from(format!("{mb}")))
        }
        Builtin::BlockLoop => Err(TaskError {
            message: "block_loop must run on the event loop".into(),
            exit_code: None,
            detail: None,
        }),
        Builtin::Noop | Builtin::Sum | Builtin::Concat | Builtin::Fail => {
            unreachable!("pure builtins are handled by run_pure")
        }
    }
}

async fn run_command(
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&str>,
    inputs: &[Bytes],
    work_dir: &std::path::Path,
    kill: oneshot::Receiver<()>,
) -> Result<Bytes, TaskError> {
    let fail = |message: String| TaskError {
        message,
        exit_code: None,
        detail: None,
    };
    let dir = tempfile::Builder::new()
        .prefix("task-")
        .tempdir_in(work_dir)
        .map_err(|e| {
            fail(format!(
                "cannot create a task directory in {}: {e}",
                work_dir.display()
            ))
        })?;
    // Its stdout goes straight into shared memory: the result is stored without a copy.
    let out_fd = rusk_net::segment::SegmentMut::anonymous_file()
        .map_err(|e| fail(format!("cannot create shared memory for the output: {e}")))?;
    let child_out = out_fd
        .try_clone()
        .map_err(|e| fail(format!("cannot create shared memory for the output: {e}")))?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(child_out))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (i, data) in inputs.iter().enumerate() {
        // An input in shared memory is read in place through /proc; a small one is a file.
        let path = match rusk_net::segment::proc_path(data) {
            Some(p) => PathBuf::from(p),
            None => {
                let path = dir.path().join(format!("dep-{i}"));
                tokio::fs::write(&path, data).await.map_err(|e| {
                    fail(format!("cannot write input file {}: {e}", path.display()))
                })?;
                path
            }
        };
        cmd.env(format!("RUSK_DEP_{i}"), &path);
    }
    cmd.env("RUSK_TASK_DIR", dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {:?}: {e}", argv[0])))?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| fail(format!("waiting for {:?} failed: {e}", argv[0])))?,
        _ = kill => return Err(fail("abandoned".into())), // dropping the child kills it
    };
    if output.status.success() {
        return rusk_net::segment::adopt_fd(out_fd)
            .map_err(|e| fail(format!("cannot map the command's output: {e}")));
    }
    let tail_start = output.stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    let stderr = String::from_utf8_lossy(&output.stderr[tail_start..])
        .trim_end()
        .to_string();
    use std::os::unix::process::ExitStatusExt;
    Err(match (output.status.code(), output.status.signal()) {
        (Some(code), _) => TaskError {
            message: format!("{:?} exited with code {code}; stderr: {stderr}", argv[0]),
            exit_code: Some(code),
            detail: None,
        },
        (None, sig) => fail(format!(
            "{:?} was killed by signal {}; stderr: {stderr}",
            argv[0],
            sig.unwrap_or(0)
        )),
    })
}
