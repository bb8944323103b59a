//! The nanny process: a thin tokio shell around `rusk_core::nanny::NannyCore`.
//!
//! It spawns worker processes, one per slot, each with a private Unix socket (fd 3) over which
//! the worker's event loop pings (`ping`) and reports its registration (`registered <inc>`).
//! Child exits are seen at once through `wait()`, not polling. It keeps a connection to the
//! scheduler to register its slots, receive restart and stop requests and forward its recovery
//! records; losing that connection never touches the workers (the watchdog works without the
//! scheduler), and the nanny reconnects with back-off.
//!
//! The watchdog's judgement lives in the core; this shell only samples: it wakes at least
//! every [`LAG_PROBE_INTERVAL`] and tells the core how late it woke (`Event::LoopLag`: while
//! the nanny itself is stalled it reads no pings, and that is not its workers' fault), and it
//! answers the core's `Inspect` with the state of the worker's event-loop thread from `/proc`.
use crate::net::{self, Conn};
use anyhow::{Context, Result};
use futures::{SinkExt, StreamExt};
use rusk_core::nanny::{
    Command, Event, ExitStatus, NannyConfig, NannyCore, Notice, ProcessFacts, Record, RecordKind,
    Signal,
};
use rusk_proto::auth::Role;
use rusk_proto::msg::{NannyInfo, NannyRecord, NannyToScheduler, SchedulerToNanny, SlotReport};
use rusk_proto::Incarnation;
use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// The fd number at which a worker finds its nanny socket.
pub const NANNY_FD: i32 = 3;
/// How often the nanny samples its workers' memory (when a limit is set).
const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// The nanny's loop wakes at least this often, so that a stall of its own (the host frozen or
/// starved, its pages read back from disk, a blocked write to its log) is measured: a wake later
/// than asked for is the nanny's lag, which its watchdog does not hold against the workers.
const LAG_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Messages handled in one turn at most, before the watchdog's deadlines are checked.
const MESSAGES_PER_TURN_MAX: usize = 1024;
/// Records kept while the scheduler is unreachable; older ones are dropped (they stay in the log).
const RECORDS_QUEUED_MAX: usize = 1000;
/// The longest wait between attempts to reach the scheduler (from
/// `rusk_net::reconnect::RECONNECT_DELAY_MIN`, doubling).
const SCHEDULER_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct NannyOptions {
    pub scheduler: String,
    pub token: String,
    /// TLS of its connection and of its workers', when the cluster encrypts.
    pub tls: Option<std::sync::Arc<net::Tls>>,
    pub name: String,
    pub nthreads: u32,
    pub worker_args: Vec<String>,
    pub core: NannyConfig,
}

enum Local {
    Core(Event),
    FromScheduler(SchedulerToNanny),
    SchedulerUp(mpsc::UnboundedSender<Vec<NannyToScheduler>>),
    SchedulerDown(String),
    Terminate(&'static str),
}

pub async fn run(opts: NannyOptions) -> Result<()> {
    let start = Instant::now();
    let host = crate::worker_shell::hostname();
    let mut core = NannyCore::new(opts.core.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<Local>();
    let info = NannyInfo {
        name: opts.name.clone(),
        host: host.clone(),
        pid: std::process::id(),
        nworkers: opts.core.nworkers,
        nthreads: opts.nthreads,
    };
    tokio::spawn(scheduler_link(
        opts.scheduler.clone(),
        net::Credentials::new(opts.token.as_bytes(), opts.tls.clone()),
        info,
        tx.clone(),
    ));
    tokio::spawn(signals(tx.clone()));
    info!(name = %opts.name, nworkers = opts.core.nworkers, scheduler = %opts.scheduler, "nanny started");

    let mut to_scheduler: Option<mpsc::UnboundedSender<Vec<NannyToScheduler>>> = None;
    let mut queued: VecDeque<NannyToScheduler> = VecDeque::new();
    let mut out: Vec<Command> = Vec::new();
    let sample_memory = opts.core.memory_restart_bytes.is_some();
    let mut next_memory_sample = start + MEMORY_SAMPLE_INTERVAL;
    let mut woke = Instant::now();
    let mut pending: Vec<Local> = Vec::new();
    // systemd (Type=notify): ready once the first turn has started the slots (the scheduler
    // may be down: supervising workers does not wait for it); pings from this loop.
    let mut notify = crate::scheduler_shell::sd_notify::Notifier::from_env();
    core.handle_into(start.elapsed(), Event::Start, &mut out);
    loop {
        notify.watchdog(); // every turn: at least every LAG_PROBE_INTERVAL
        let mut outgoing: Vec<NannyToScheduler> = Vec::new();
        for cmd in out.drain(..) {
            match cmd {
                Command::Spawn { slot, generation } => {
                    let ev = match spawn_worker(&opts, slot, tx.clone()) {
                        Ok(pid) => Event::Spawned {
                            slot,
                            generation,
                            pid,
                        },
                        Err(e) => {
                            error!(slot, error = %format!("{e:#}"), "cannot start worker");
                            Event::SpawnFailed {
                                slot,
                                generation,
                                error: format!("{e:#}"),
                            }
                        }
                    };
                    let _ = tx.send(Local::Core(ev));
                }
                Command::Signal { slot, pid, signal } => {
                    let sig = match signal {
                        Signal::Term => libc::SIGTERM,
                        Signal::Kill => libc::SIGKILL,
                    };
                    // A pid we spawned and have not reaped yet; checked all the same.
                    if let Err(e) = crate::pids::signal(pid, sig) {
                        warn!(slot, pid, error = %e, "signal failed (process already gone?)");
                    }
                }
                Command::Inspect { slot, pid } => {
                    let facts = inspect(pid);
                    let _ = tx.send(Local::Core(Event::Inspected { slot, pid, facts }));
                }
                Command::Notice(n) => log_notice(&opts.name, &n),
                Command::Record(r) => {
                    log_record(&opts.name, &r);
                    outgoing.push(NannyToScheduler::Record(NannyRecord::from(&r)));
                }
                Command::SlotChanged(s) => {
                    outgoing.push(NannyToScheduler::Slots(vec![slot_report(&s)]))
                }
                Command::Exit => {
                    info!("all workers stopped; nanny exiting");
                    if let Some(link) = &to_scheduler {
                        outgoing.push(NannyToScheduler::Slots(
                            core.statuses().iter().map(slot_report).collect(),
                        ));
                        let _ = link.send(std::mem::take(&mut outgoing));
                        tokio::time::sleep(Duration::from_millis(50)).await; // let the writer flush
                    }
                    return Ok(());
                }
            }
        }
        notify.ready("workers started");
        if !outgoing.is_empty() {
            match &to_scheduler {
                Some(link) => {
                    if link.send(outgoing).is_err() {
                        to_scheduler = None;
                    }
                }
                None => {
                    queued.extend(outgoing);
                    while queued.len() > RECORDS_QUEUED_MAX {
                        queued.pop_front();
                    }
                }
            }
        }
        // Sleep until the core's next deadline, but never longer than the lag probe after the
        // moment this turn began: any later wake (stopped, starved, blocked in this turn's own
        // work) is lag.
        let mut wake_by = woke + LAG_PROBE_INTERVAL;
        if let Some(d) = core.next_timeout() {
            wake_by = wake_by.min(start + d);
        }
        if sample_memory {
            wake_by = wake_by.min(next_memory_sample);
        }
        let msg = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => Some(m),
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(wake_by.into()) => None,
        };
        woke = Instant::now();
        let now = woke - start;
        // The lag first: after a stall the overdue deadline must not be judged without it.
        let lag = woke.saturating_duration_since(wake_by);
        if !lag.is_zero() {
            core.handle_into(now, Event::LoopLag { lag }, &mut out);
        }
        // Then every message already here (the pings read meanwhile among them).
        pending.extend(msg);
        while pending.len() < MESSAGES_PER_TURN_MAX {
            match rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(_) => break,
            }
        }
        for msg in pending.drain(..) {
            match msg {
                Local::Core(ev) => core.handle_into(now, ev, &mut out),
                Local::FromScheduler(m) => match m {
                    SchedulerToNanny::Welcome => {}
                    SchedulerToNanny::RestartWorker {
                        slot,
                        incarnation,
                        silent_for_ms,
                    } => core.handle_into(
                        now,
                        Event::SchedulerRestart {
                            slot,
                            incarnation: Incarnation(incarnation),
                            silent_for: Duration::from_millis(silent_for_ms),
                        },
                        &mut out,
                    ),
                    SchedulerToNanny::OperatorRestart { slot } => {
                        let slots: Vec<u32> = match slot {
                            Some(s) => vec![s],
                            None => (0..opts.core.nworkers).collect(),
                        };
                        for slot in slots {
                            info!(slot, "operator restart");
                            core.handle_into(now, Event::OperatorRestart { slot }, &mut out);
                        }
                    }
                    SchedulerToNanny::Stop => {
                        info!("operator stop received from the scheduler; stopping all workers");
                        notify.stopping("operator stop: stopping all workers");
                        core.handle_into(now, Event::Shutdown, &mut out);
                    }
                },
                Local::SchedulerUp(link) => {
                    let mut hello = vec![NannyToScheduler::Slots(
                        core.statuses().iter().map(slot_report).collect(),
                    )];
                    hello.extend(queued.drain(..));
                    let _ = link.send(hello);
                    notify.status("supervising workers; scheduler connected");
                    to_scheduler = Some(link);
                }
                Local::SchedulerDown(reason) => {
                    if to_scheduler.take().is_some() {
                        warn!(%reason, "lost the scheduler; workers keep running, reconnecting");
                        notify.status("supervising workers; scheduler lost, reconnecting");
                    }
                }
                Local::Terminate(sig) => {
                    info!(signal = sig, "stopping all workers for good");
                    notify.stopping(&format!("{sig}: stopping all workers"));
                    core.handle_into(now, Event::Shutdown, &mut out);
                }
            }
        }
        if sample_memory && woke >= next_memory_sample {
            next_memory_sample = woke + MEMORY_SAMPLE_INTERVAL;
            for s in core.statuses() {
                if let Some(pid) = s.pid {
                    let rss = tree_rss_bytes(pid);
                    core.handle_into(
                        now,
                        Event::Memory {
                            slot: s.slot,
                            pid,
                            rss,
                        },
                        &mut out,
                    );
                }
            }
        }
        if core.next_timeout().is_some_and(|t| t <= now) {
            core.handle_into(now, Event::Tick, &mut out);
        }
    }
}

/// What `/proc` shows of the thread running a worker's event loop (its main thread).
/// Reading `stat` takes no lock of the process's memory, so it never blocks on a process stuck
/// in a page fault.
pub fn inspect(pid: u32) -> ProcessFacts {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
        .ok()
        .and_then(|text| ProcessFacts::from_stat(&text))
        .unwrap_or(ProcessFacts::UNKNOWN)
}

async fn signals(tx: mpsc::UnboundedSender<Local>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if tx.send(Local::Terminate(name)).is_err() {
            return;
        }
    }
}

/// Keep a connection to the scheduler; reconnect with back-off when it drops.
async fn scheduler_link(
    address: String,
    creds: net::Credentials,
    info: NannyInfo,
    tx: mpsc::UnboundedSender<Local>,
) {
    let mut backoff = net::reconnect::Backoff::new(SCHEDULER_RETRY_MAX);
    loop {
        match net::connect(&address, &creds, Role::Nanny).await {
            Ok(conn) => {
                backoff.reset();
                let reason = serve_link(conn, &info, &tx).await;
                if tx.send(Local::SchedulerDown(reason)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if net::is_refusal(&e) {
                    error!(error = %msg, "the scheduler refused this nanny");
                }
                let _ = tx.send(Local::SchedulerDown(msg));
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn serve_link(mut conn: Conn, info: &NannyInfo, tx: &mpsc::UnboundedSender<Local>) -> String {
    if let Err(e) = net::send(&mut conn, &vec![NannyToScheduler::Register(info.clone())]).await {
        return format!("{e:#}");
    }
    let (mut sink, mut stream) = conn.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<NannyToScheduler>>();
    if tx.send(Local::SchedulerUp(out_tx)).is_err() {
        return "nanny exiting".into();
    }
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                None => return "scheduler closed the connection".into(),
                Some(Err(e)) => return format!("bad frame: {e}"),
                Some(Ok(f)) => match rusk_proto::decode::<Vec<SchedulerToNanny>>(&f) {
                    Ok(msgs) => {
                        for m in msgs {
                            if tx.send(Local::FromScheduler(m)).is_err() {
                                return "nanny exiting".into();
                            }
                        }
                    }
                    Err(e) => return format!("malformed message: {e}"),
                },
            },
            batch = out_rx.recv() => match batch {
                Some(b) => {
                    if let Err(e) = sink.send(net::encode(&b)).await {
                        return format!("send failed: {e}");
                    }
                }
                None => return "nanny exiting".into(),
            },
        }
    }
}

/// Start the worker process of `slot` with its nanny socket on fd 3; watch its exit and its
/// socket on the nanny's event loop.
fn spawn_worker(opts: &NannyOptions, slot: u32, tx: mpsc::UnboundedSender<Local>) -> Result<u32> {
    use std::os::fd::AsRawFd;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
    let exe = std::env::current_exe().context("cannot find the rusk executable")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("worker")
        .args(["--scheduler", &opts.scheduler])
        .args(["--name", &format!("{}/{slot}", opts.name)])
        .args(["--nthreads", &opts.nthreads.to_string()])
        .args(["--nanny", &opts.name])
        .args(["--slot", &slot.to_string()])
        .args(["--nanny-fd", &NANNY_FD.to_string()])
        .args(&opts.worker_args)
        .env("RUSK_TOKEN", &opts.token)
        .env_remove("RUSK_SCHEDULER_FILE")
        .env_remove("RUSK_TLS");
    for var in crate::scheduler_shell::sd_notify::ENV_VARS {
        cmd.env_remove(var); // the nanny speaks to systemd, its workers do not
    }
    if let Some(tls) = &opts.tls {
        // The nanny's own certificate: its workers run on its host, under the same names.
        let spec = serde_json::to_string(&tls.spec_for_children()).expect("a spec serialises");
        cmd.env("RUSK_TLS", spec);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(false);
    let fd = theirs.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, NANNY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::fcntl(NANNY_FD, libc::F_GETFD);
            libc::fcntl(NANNY_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            // The worker dies with its nanny: no orphans.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot spawn the worker process")?;
    drop(theirs);
    let pid = child.id().context("spawned worker has no pid")?;
    // Exit watcher: wait(2) resolves the moment the child exits.
    let exit_tx = tx.clone();
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => ExitStatus {
                code: s.code(),
                signal: s.signal(),
            },
            Err(_) => ExitStatus {
                code: None,
                signal: None,
            },
        };
        let _ = exit_tx.send(Local::Core(Event::Exited { slot, pid, status }));
    });
    // Socket reader: pings and registration.
    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let ev = if line == "ping" {
                Event::Ping { slot, pid }
            } else if let Some(inc) = line
                .strip_prefix("registered ")
                .and_then(|s| s.trim().parse().ok())
            {
                Event::Registered {
                    slot,
                    pid,
                    incarnation: Incarnation(inc),
                }
            } else {
                warn!(slot, pid, line = %line.chars().take(80).collect::<String>(), "unknown message from worker");
                continue;
            };
            if tx.send(Local::Core(ev)).is_err() {
                return;
            }
        }
    });
    Ok(pid)
}

/// Private resident memory (anonymous: heaps, leaks) of `pid` and all its descendants, from
/// /proc. Shared and file-backed pages are left out: a worker's stored values live in shared
/// memory and its spilled ones in mapped files, both governed by its own memory policy
/// (spill, pause), and a segment mapped by several of its processes would be counted once per
/// mapping.
pub fn tree_rss_bytes(pid: u32) -> u64 {
    let page = 4096u64;
    let mut total = 0;
    let mut stack = vec![pid];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 4096 {
            break; // bound the walk
        }
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{p}/statm")) {
            let f: Vec<u64> = statm
                .split_whitespace()
                .take(3)
                .filter_map(|v| v.parse::<u64>().ok())
                .collect();
            if let [_, resident, shared] = f[..] {
                total += resident.saturating_sub(shared) * page;
            }
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
    }
    total
}

fn log_notice(nanny: &str, n: &Notice) {
    match n {
        Notice::NannyStalled { lag } => warn!(
            nanny,
            lag_ms = lag.as_millis() as u64,
            "the nanny's own event loop was stalled (a host-wide stall?); its workers' silence \
             meanwhile is not held against them"
        ),
        Notice::KernelStall {
            slot,
            pid,
            silent_for,
            state,
            grace,
        } => warn!(
            nanny,
            slot,
            pid,
            silent_ms = silent_for.as_millis() as u64,
            state = %state.map(|s| s.to_string()).unwrap_or_default(),
            grace_ms = grace.as_millis() as u64,
            "worker silent past the watchdog timeout but its event loop is stuck in the kernel \
             (disk I/O, page faults): kept for up to the grace"
        ),
        Notice::StallOver {
            slot,
            pid,
            silent_for,
        } => info!(
            nanny,
            slot,
            pid,
            silent_ms = silent_for.as_millis() as u64,
            "worker pinged again after a stall in the kernel; kept"
        ),
    }
}

fn log_record(nanny: &str, r: &Record) {
    match &r.what {
        RecordKind::Detected {
            cause,
            incarnation,
            pid,
            action,
        } => warn!(
            nanny, slot = r.slot, cause = cause.kind().as_str(), observed = %cause,
            incarnation = incarnation.map(|i| i.0), pid, %action, "worker fault detected"
        ),
        RecordKind::Recovered {
            cause,
            old_incarnation,
            new_incarnation,
            detection,
            recovery,
        } => info!(
            nanny,
            slot = r.slot,
            cause = cause.kind().as_str(),
            old_incarnation = old_incarnation.map(|i| i.0),
            new_incarnation = new_incarnation.0,
            detection_ms = detection.as_millis() as u64,
            recovery_ms = recovery.as_millis() as u64,
            "worker recovered"
        ),
        RecordKind::Failed {
            crashes,
            window,
            last,
        } => error!(
            nanny, slot = r.slot, crashes, window_s = window.as_secs(), last = %last,
            "slot failed after a crash loop; `rusk restart` revives it"
        ),
        RecordKind::BackingOff { delay, crashes } => warn!(
            nanny,
            slot = r.slot,
            delay_ms = delay.as_millis() as u64,
            crashes,
            "crash loop: backing off"
        ),
    }
}

fn slot_report(s: &rusk_core::nanny::SlotStatus) -> SlotReport {
    SlotReport {
        slot: s.slot,
        state: s.state.to_string(),
        pid: s.pid,
        incarnation: s.incarnation.map(|i| i.0),
        restarts: s.restarts,
        last_cause: s.last_cause.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusk_core::nanny::ProcState;

    fn wait_for_state(pid: u32, want: ProcState) -> ProcessFacts {
        let t0 = Instant::now();
        loop {
            let facts = inspect(pid);
            if facts.state == Some(want) || t0.elapsed() > Duration::from_secs(5) {
                return facts;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The watchdog's look at real processes: uninterruptible sleep, stopped, sleeping, gone.
    #[test]
    fn inspect_tells_uninterruptible_sleep_stopped_and_sleeping_apart() {
        // `D`: a process waiting for its vfork() child to exec or exit sits in uninterruptible
        // sleep, as a loop thread does in a page fault or a blocked disk write. The child
        // sleeps 30 s (killed below).
        // SAFETY: the forked child only makes raw system calls (vfork, nanosleep, _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            unsafe {
                #[allow(deprecated)]
                if libc::vfork() == 0 {
                    let t = libc::timespec {
                        tv_sec: 30,
                        tv_nsec: 0,
                    };
                    libc::nanosleep(&t, std::ptr::null_mut());
                    libc::_exit(0);
                }
                libc::_exit(0);
            }
        }
        let facts = wait_for_state(pid as u32, ProcState::DiskSleep);
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        // SAFETY: kill(2)/waitpid(2) of the children this test made.
        unsafe {
            for c in children.split_whitespace() {
                libc::kill(c.parse().unwrap(), libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(facts.state, Some(ProcState::DiskSleep), "{facts:?}");

        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = sleeper.id();
        assert_eq!(
            wait_for_state(id, ProcState::Sleeping).state,
            Some(ProcState::Sleeping)
        );
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(id as i32, libc::SIGSTOP) };
        assert_eq!(
            wait_for_state(id, ProcState::Stopped).state,
            Some(ProcState::Stopped)
        );
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert_eq!(
            inspect(id),
            ProcessFacts::UNKNOWN,
            "a reaped process is gone"
        );
    }
}
