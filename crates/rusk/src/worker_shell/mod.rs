//! The worker process: a thin tokio shell around `rusk_core::worker::WorkerCore`.
//!
//! The event loop (a current-thread runtime) owns the core, the scheduler connection, the data
//! server that peers and clients fetch results from, and one fetcher task per peer. Task code
//! never runs on this loop: builtins run on `nthreads` task threads, `cmd` tasks in child
//! processes, Python tasks in a pool of executor processes (`crate::python_exec`). So heartbeats
//! keep flowing while tasks keep every core busy, and a heartbeat that stops means the loop
//! itself is wedged, which is exactly what the scheduler's TTL catches.
//!
//! This module is the event loop (`run`) and the worker's links to its scheduler and nanny; the
//! data server and peer fetchers are in `data`, the task threads and command runner in
//! `runners`, the builtins with effects on the process (fault injection) in `faults`.
use crate::python_exec::PythonOptions;
use crate::spill::SpillDir;
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rusk_core::memory::{MemoryConfig, SpillError, StoreCommand};
use rusk_core::worker::{Command, Event, WorkerConfig, WorkerCore};
use rusk_net::{self as net, Conn};
use rusk_proto::auth::Role;
use rusk_proto::graph::{Builtin, TaskKind};
use rusk_proto::msg::{SchedulerToWorker, TaskError, WorkerInfo, WorkerToScheduler};
use rusk_proto::{AttemptId, TaskRef};
use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

mod data;
mod faults;
mod puts;
mod runners;

use data::{data_server, resolve_inputs, spawn_fetcher, DataItems};
use runners::Executor;

/// Results per fetch request (at most `rusk_net::transfer::TRANSFER_ITEMS_MAX`). A fetch fails
/// when its transfer makes no progress for `TRANSFER_IDLE_TIMEOUT`, however large the values.
const FETCH_BATCH_MAX: usize = 1024;
/// Executes the core may have handed out per task thread at once.
const DISPATCHED_PER_THREAD_MAX: u32 = 64;

pub struct WorkerOptions {
    pub scheduler: String,
    pub token: String,
    /// TLS of every connection, when the cluster encrypts.
    pub tls: Option<Arc<net::Tls>>,
    pub name: Option<String>,
    pub nthreads: u32,
    /// What it offers to tasks that ask for resources (`--resources`).
    pub resources: std::collections::BTreeMap<String, f64>,
    pub listen_host: String,
    /// The host advertised for the data server (never an unspecified address).
    pub contact_host: String,
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
    /// How long the worker keeps trying to get back to a scheduler it lost (keeping its
    /// results) before it exits; zero: exit at once.
    pub scheduler_lost_timeout: Duration,
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

enum Local {
    /// The scheduler is reachable again (after its connection dropped).
    Reconnected(Conn),
    /// The scheduler stayed unreachable for `--scheduler-lost-timeout`, or refused us.
    ReconnectFailed(String),
    /// An executor began a task. `ack`, when set, is answered once the scheduler has been
    /// told (the `TaskStarted` frame is on the socket): a task that may kill this process waits
    /// for it, so that its death is charged to it.
    Started {
        task: TaskRef,
        attempt: AttemptId,
        ack: Option<std::sync::mpsc::SyncSender<()>>,
    },
    /// A running Python task seceded (`rusk.secede()`).
    Seceded { task: TaskRef, attempt: AttemptId },
    /// A seceded Python task holds its slot again (`rusk.rejoin()`).
    Rejoined { task: TaskRef, attempt: AttemptId },
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
    /// Something for the scheduler's recovery log (an executor replaced, ...).
    Report(rusk_proto::msg::WorkerEvent),
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

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub async fn run(opts: WorkerOptions) -> Result<()> {
    let creds = net::Credentials::new(opts.token.as_bytes(), opts.tls.clone());
    let listener = TcpListener::bind((opts.listen_host.as_str(), 0))
        .await
        .with_context(|| format!("cannot open the data server on {}", opts.listen_host))?;
    let data_address = crate::endpoint::join(&opts.contact_host, listener.local_addr()?.port());
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
        resources: opts.resources.clone(),
        held: Vec::new(),
        running: Vec::new(),
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
    let spill = SpillDir::new(opts.spill_dir.as_deref().unwrap_or(&work_dir))?;
    let fd_limit = rusk_net::segment::raise_fd_limit();
    let pool_bound = rusk_core::segment_pool::pool_bound(opts.memory.limit);
    rusk_net::segment::set_pool_bound(pool_bound);
    info!(
        store = "memfd (shared memory, not limited by /dev/shm)",
        spill_dir = %spill.dir().display(),
        memory_limit = ?opts.memory.limit,
        reuse_pool_bytes = pool_bound,
        fd_limit,
        "object store ready"
    );

    let nanny = match &opts.supervision {
        Some(sup) => Some(NannyLink::open(sup.fd)?),
        None => None,
    };
    let mut conn = connect_scheduler(&opts, &creds).await?;
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
    let puts = puts::Puts::default();
    tokio::spawn(data_server(
        listener,
        creds.clone(),
        local_tx.clone(),
        spill.clone(),
        puts.clone(),
    ));

    let (sched_in_tx, mut sched_in) = mpsc::unbounded_channel::<SchedulerInput>();
    // Connections to the scheduler so far: input from an earlier one is ignored.
    let mut generation = 0u64;
    let mut sched_out = open_scheduler_link(conn, generation, sched_in_tx.clone());
    // Since when the scheduler is lost (we are reconnecting).
    let mut lost_since: Option<Instant> = None;

    let vitals_tx = local_tx.clone();
    crate::vitals::spawn(work_dir.clone(), opts.health.clone(), move |v| {
        let _ = vitals_tx.send(Local::Vitals(v));
    });
    let uploads = crate::python_exec::uploads_dir(&work_dir);
    let mut python = opts.python.clone();
    python.cluster = Some(crate::python_exec::TaskCluster {
        address: opts.scheduler.clone(),
        task_token: rusk_proto::auth::task_token(opts.token.as_bytes()),
        tls: opts
            .tls
            .as_ref()
            .map(|t| serde_json::to_string(&t.spec_for_children()).expect("a spec serialises")),
    });
    let executor = Executor::start(
        info.nthreads,
        opts.fault_injection,
        work_dir,
        local_tx.clone(),
        python,
        puts,
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
                        Some((g, _)) if g != generation => {}
                        Some((_, Ok(msgs))) => {
                            for m in msgs {
                                core.handle_into(now, Event::FromScheduler(m), &mut out);
                            }
                        }
                        Some((_, Err(reason))) => {
                            if opts.scheduler_lost_timeout.is_zero() {
                                return Err(anyhow!(ConnectionLost(reason)));
                            }
                            warn!(%reason, stored = core.heartbeat_info().stored_results, timeout_s = opts.scheduler_lost_timeout.as_secs_f64(), "lost the scheduler; keeping results and reconnecting");
                            core.handle_into(now, Event::SchedulerLost, &mut out);
                            lost_since = Some(Instant::now());
                            generation += 1;
                            spawn_reconnect(&opts, &creds, local_tx.clone());
                            break;
                        }
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
                        Local::Reconnected(conn) => {
                            let away = lost_since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
                            info!(away_s = away, held = core.heartbeat_info().stored_results, "scheduler reachable again; registering with the results kept");
                            sched_out = open_scheduler_link(conn, generation, sched_in_tx.clone());
                            let register: Vec<WorkerToScheduler> = core
                                .start(start.elapsed())
                                .into_iter()
                                .filter_map(|c| match c {
                                    Command::ToScheduler(m) => Some(m),
                                    _ => None,
                                })
                                .collect();
                            let _ = sched_out.send(OutFrame { frame: net::encode(&register), sent: None });
                            registered_reported = false;
                            ev = local_rx.try_recv().ok();
                            continue;
                        }
                        Local::ReconnectFailed(reason) => return Err(anyhow!(ConnectionLost(reason))),
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
                        Local::Seceded { task, attempt } => Event::Seceded { task, attempt },
                        Local::Rejoined { task, attempt } => Event::Rejoined { task, attempt },
                        Local::Vitals(v) => Event::Vitals(v),
                        Local::Report(e) => Event::Report(e),
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
            // Freed segments kept for reuse go once idle (SEGMENT_POOL_IDLE).
            rusk_net::segment::trim_pool(false);
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
                            spawn_fetcher(peer.clone(), creds.clone(), local_tx.clone())
                        });
                        if tx.send(chunk.to_vec()).is_err() {
                            let tx = spawn_fetcher(peer.clone(), creds.clone(), local_tx.clone());
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
                            faults::block_loop(
                                &mut core, start, &sched_out, &local_tx, task, attempt, args,
                            )
                            .await;
                            continue;
                        }
                    }
                    resolve_inputs(task, attempt, kind, inputs, &spill, &local_tx, &executor);
                }
                Command::Store(StoreCommand::Spill { task, data }) => {
                    // Memory is short: keep nothing for reuse, this value's memory included.
                    rusk_net::segment::trim_pool(true);
                    rusk_net::segment::never_reuse(&data);
                    let (spill, local) = (spill.clone(), local_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let result = spill.write(task, &data);
                        drop(data);
                        let _ = local.send(Local::Spilled { task, result });
                    });
                }
                Command::Store(StoreCommand::DropSpill { task }) => spill.remove(task),
                Command::WriteUpload { name, data } => {
                    let dir = uploads.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = write_upload(&dir, &name, &data) {
                            warn!(%name, error = %format!("{e:#}"), "cannot write an uploaded file");
                        }
                    });
                }
                Command::Abandon { task, attempt } => executor.abandon(task, attempt),
                Command::ReplyPeer { request, items } => {
                    if let Some(r) = replies.remove(&request) {
                        let _ = r.send(items);
                    }
                }
            }
        }
        if lost_since.is_some() {
            // No scheduler to tell: what matters is re-reported when we register again.
            to_scheduler.clear();
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
            // A closed writer means a dropped connection: its reader reports that.
            let _ = sched_out.send(OutFrame { frame, sent });
        }
    }
}

/// What the reader of a scheduler connection passes on, tagged with the connection's
/// generation.
type SchedulerInput = (u64, Result<Vec<SchedulerToWorker>, String>);

/// Start the writer and reader of a scheduler connection; returns the writer's queue.
fn open_scheduler_link(
    conn: Conn,
    generation: u64,
    input: mpsc::UnboundedSender<SchedulerInput>,
) -> mpsc::UnboundedSender<OutFrame> {
    let (sink, mut stream) = conn.split();
    let (out, out_rx) = mpsc::unbounded_channel::<OutFrame>();
    tokio::spawn(write_frames(sink, out_rx));
    tokio::spawn(async move {
        loop {
            let item = match stream.next().await {
                None => Err("scheduler closed the connection".to_string()),
                Some(Err(e)) => Err(format!("bad frame from scheduler: {e}")),
                Some(Ok(frame)) => rusk_proto::decode::<Vec<SchedulerToWorker>>(&frame)
                    .map_err(|e| format!("malformed message from scheduler: {e}")),
            };
            let end = item.is_err();
            if input.send((generation, item)).is_err() || end {
                return;
            }
        }
    });
    out
}

/// Get back to a lost scheduler with back-off; `Reconnected` or, after
/// `scheduler_lost_timeout` (or when refused: a different cluster), `ReconnectFailed`.
fn spawn_reconnect(
    opts: &WorkerOptions,
    creds: &net::Credentials,
    tx: mpsc::UnboundedSender<Local>,
) {
    let (address, creds, timeout) = (
        opts.scheduler.clone(),
        creds.clone(),
        opts.scheduler_lost_timeout,
    );
    tokio::spawn(async move {
        let r = net::reconnect::reconnect(&address, &creds, Role::Worker, timeout, |e, delay| {
            debug!(error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64, "scheduler unreachable")
        })
        .await;
        let _ = tx.send(match r {
            Ok(c) => Local::Reconnected(c),
            Err(e) => Local::ReconnectFailed(format!("{e} (--scheduler-lost-timeout)")),
        });
    });
}

/// The worker lost its scheduler connection after joining: the process exits with
/// `EXIT_CONNECTION_LOST` so its nanny starts a fresh incarnation.
#[derive(Debug, thiserror::Error)]
#[error("lost the scheduler: {0}")]
pub struct ConnectionLost(pub String);

/// Join the scheduler. A supervised worker keeps trying (its nanny's watchdog is fed
/// meanwhile) except when refused, which retrying cannot fix; a standalone worker reports the
/// first failure.
async fn connect_scheduler(opts: &WorkerOptions, creds: &net::Credentials) -> Result<Conn> {
    let mut backoff = net::reconnect::Backoff::default();
    // One line for the first failure, then one every 30 s: no log storm while it is down.
    let (mut attempts, mut last_log) = (0u64, None::<Instant>);
    loop {
        match net::connect(&opts.scheduler, creds, Role::Worker).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let refused = net::is_refusal(&e);
                if opts.supervision.is_none() || refused {
                    return Err(
                        e.context(format!("cannot join the scheduler at {}", opts.scheduler))
                    );
                }
                attempts += 1;
                let delay = backoff.next_delay();
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    last_log = Some(Instant::now());
                    warn!(error = %format!("{e:#}"), attempts, retry_in_ms = delay.as_millis() as u64, "scheduler unreachable; retrying");
                }
                tokio::time::sleep(delay).await;
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
                                crate::config::exit(EXIT_NANNY_GONE);
                            }
                        }
                    }
                    r = pinger.readable() => {
                        if r.is_ok() && matches!(pinger.try_read(&mut buf), Ok(0)) {
                            error!("nanny gone; exiting");
                            crate::config::exit(EXIT_NANNY_GONE);
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

/// Remove the work directories (and spill files) of default-placed workers that died without
/// cleaning up (`kill -9`): `rusk-worker-<pid>` in the temp dir whose process is gone.
/// Write an uploaded file whole, then rename it into place: an executor never imports half of
/// one, and the directory's mtime tells executors to look again.
fn write_upload(dir: &std::path::Path, name: &str, data: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming {}", tmp.display()))?;
    info!(%name, bytes = data.len(), "uploaded file written");
    Ok(())
}

fn sweep_dead_work_dirs() {
    crate::spill::sweep_dead(&std::env::temp_dir(), "rusk-worker-");
}
