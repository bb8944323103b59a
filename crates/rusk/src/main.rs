//! `rusk`: one binary for every role (scheduler, worker, local cluster) and the CLI client.
//!
//! Every flag can also be set from the environment as `RUSK_<NAME>` (for example
//! `RUSK_WORKER_TTL=5s`); durations are written like `500ms`, `5s`, `2m`.
mod client;
mod config;
mod endpoint;
mod events;
mod http;
mod journal;
mod local;
mod metrics;
mod nanny_shell;
mod pids;
mod python_exec;
mod recent_logs;
mod scheduler_shell;
mod spill;
mod status;
mod vitals;
mod worker_shell;

// `crate::net` for the shells that have not yet moved to `rusk_net` paths (nanny_shell.rs).
use rusk_net as net;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{parse_duration, ClusterArgs};
use rusk_core::scheduler::SchedulerConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "rusk",
    version,
    about = "A distributed task scheduler whose workers heal themselves"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scheduler.
    Scheduler(SchedulerArgs),
    /// Run a worker that joins a scheduler.
    Worker(WorkerArgs),
    /// Submit a graph file (JSON) to a running cluster.
    Submit(SubmitArgs),
    /// Show the cluster as the scheduler sees it.
    Status(StatusArgs),
    /// Start a scheduler and workers on this machine and run a graph on them.
    Local(local::LocalArgs),
    /// Run a nanny: start and supervise worker processes on this host.
    Nanny(NannyArgs),
    /// Restart a worker (also revives a slot that gave up after a crash loop).
    Restart(RestartArgs),
    /// Stop a nanny and its workers for good.
    StopNanny(StopNannyArgs),
    /// Show the recovery log.
    Events(EventsArgs),
}

#[derive(clap::Args)]
struct NannyArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Where its workers' data servers listen and what they advertise.
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Worker processes (slots) to keep running.
    #[arg(long, env = "RUSK_NWORKERS", default_value_t = 1)]
    nworkers: u32,
    /// Task threads per worker.
    #[arg(long, env = "RUSK_NTHREADS", default_value_t = 1)]
    nthreads: u32,
    /// Memory limit per worker (for example 4GiB); the worker is restarted past
    /// `--memory-restart-fraction` of it.
    #[arg(long, env = "RUSK_MEMORY_LIMIT", value_parser = config::parse_bytes)]
    memory_limit: Option<u64>,
    /// Fraction of the memory limit at which the nanny restarts a worker.
    #[arg(long, env = "RUSK_MEMORY_RESTART_FRACTION", default_value_t = 0.95)]
    memory_restart_fraction: f64,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Name of this nanny (default: host-pid).
    #[arg(long, env = "RUSK_NANNY_NAME")]
    name: Option<String>,
    /// A worker whose event loop has not pinged the nanny this long is restarted.
    #[arg(long, env = "RUSK_WATCHDOG_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    watchdog_timeout: Duration,
    /// Grace between SIGTERM and SIGKILL when stopping a worker.
    #[arg(long, env = "RUSK_KILL_GRACE", default_value = "500ms", value_parser = parse_duration)]
    kill_grace: Duration,
    /// More crash restarts than this within `--crash-window` put a slot in `failed`.
    #[arg(long, env = "RUSK_CRASH_RESTARTS_MAX", default_value_t = 5)]
    crash_restarts_max: u32,
    #[arg(long, env = "RUSK_CRASH_WINDOW", default_value = "60s", value_parser = parse_duration)]
    crash_window: Duration,
    /// First back-off delay of a crash loop (doubles up to `--backoff-max`).
    #[arg(long, env = "RUSK_BACKOFF_INITIAL", default_value = "250ms", value_parser = parse_duration)]
    backoff_initial: Duration,
    #[arg(long, env = "RUSK_BACKOFF_MAX", default_value = "10s", value_parser = parse_duration)]
    backoff_max: Duration,
    /// A worker up this long resets the back-off.
    #[arg(long, env = "RUSK_STABLE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    stable_period: Duration,
    /// Pass --enable-fault-injection to the workers (tests only).
    #[arg(long, env = "RUSK_ENABLE_FAULT_INJECTION")]
    enable_fault_injection: bool,
    /// Resources each worker offers, e.g. "GPU=2,MEM=64e9" (passed to every worker).
    #[arg(long, env = "RUSK_RESOURCES", value_parser = config::parse_resources)]
    resources: Option<config::Resources>,
    /// Passed to the workers.
    #[command(flatten)]
    python: PythonArgs,
    /// Passed to the workers.
    #[command(flatten)]
    health: vitals::HealthArgs,
}

#[derive(clap::Args)]
struct RestartArgs {
    /// Worker id (as in `rusk status`), e.g. `host-123/0`.
    worker: Option<String>,
    /// Restart every worker of every nanny.
    #[arg(long, conflicts_with = "worker")]
    all: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(clap::Args)]
struct StopNannyArgs {
    /// Nanny name (as in `rusk status`).
    nanny: Option<String>,
    /// Stop every nanny.
    #[arg(long, conflicts_with = "nanny")]
    all: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(clap::Args)]
struct EventsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Keep printing new events as they happen.
    #[arg(long)]
    follow: bool,
}

#[derive(clap::Args)]
struct SchedulerArgs {
    /// Address to listen on. Loopback unless you say otherwise.
    #[arg(long, env = "RUSK_LISTEN", default_value = "127.0.0.1:8786")]
    listen: String,
    /// Where to write the scheduler file (address and token, mode 0600).
    #[arg(long, env = "RUSK_SCHEDULER_FILE")]
    scheduler_file: Option<PathBuf>,
    /// Read the cluster token from this file instead of generating one.
    #[arg(long, env = "RUSK_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve the dashboard, /metrics and the JSON API here (`none`: don't). When the port is
    /// taken, another free port on the same host is used (see the scheduler file).
    #[arg(long, env = "RUSK_DASHBOARD", default_value = "127.0.0.1:8787")]
    dashboard: String,
    /// Encrypt every connection with TLS: `auto` whenever listening beyond loopback, `on`
    /// always, `off` never. Without `--tls-*` files, the scheduler makes a cluster CA and puts
    /// it in the scheduler file.
    #[arg(long, env = "RUSK_TLS_MODE", value_enum, default_value = "auto")]
    tls: config::TlsMode,
    #[command(flatten)]
    tls_files: config::TlsArgs,
    /// Keep a journal here (an embedded database file): the cluster's identity (token, CA,
    /// address) and its graphs. A scheduler started again on the same journal is the same
    /// cluster, and resumes the graphs; workers keep their results meanwhile.
    #[arg(long, env = "RUSK_JOURNAL")]
    journal: Option<PathBuf>,
    /// What each journal commit survives: `machine` (fsynced: power loss too) or `process`
    /// (written, not fsynced: the scheduler dying, kill -9 included, but not the machine; what
    /// `rusk local` and the Python `LocalCluster` use, all on one machine anyway).
    #[arg(long, env = "RUSK_JOURNAL_SYNC", value_enum, default_value = "machine")]
    journal_sync: journal::JournalSync,
    /// Bytes queued for one connection (a worker, client or nanny) before it is cut off as not
    /// reading its messages; it leaves as if its connection broke, and may reconnect.
    #[arg(long, env = "RUSK_PEER_OUTBOX_LIMIT", default_value_t = scheduler_shell::PEER_OUTBOX_BYTES_MAX as u64, value_parser = config::parse_bytes)]
    peer_outbox_limit: u64,
    #[command(flatten)]
    core: CoreArgs,
}

#[derive(clap::Args, Clone)]
pub struct CoreArgs {
    /// A worker silent for this long is declared lost (see docs/fault-model.md).
    #[arg(long, env = "RUSK_WORKER_TTL", default_value = "3s", value_parser = parse_duration)]
    worker_ttl: Duration,
    /// How often workers send heartbeats.
    #[arg(long, env = "RUSK_HEARTBEAT_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Tasks queued on a worker per thread.
    #[arg(long, env = "RUSK_ASSIGNED_PER_THREAD", default_value_t = 512)]
    assigned_per_thread: u32,
    /// A task running on this many workers that died is failed as a poison task.
    #[arg(long, env = "RUSK_TASK_MAX_WORKER_DEATHS", default_value_t = 3)]
    task_max_worker_deaths: u32,
    /// A task that no connected worker can run (resources nobody offers, workers that are not
    /// there) fails after this long, with an error saying what it asked for.
    #[arg(long, env = "RUSK_NO_WORKER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    no_worker_timeout: Duration,
    /// Do not move queued tasks from busy workers to idle ones (for comparisons).
    #[arg(long, env = "RUSK_NO_WORK_STEALING")]
    no_work_stealing: bool,
    /// After a restart from a journal: how long workers that held results may take to come
    /// back before those results are recomputed, and clients to claim their graphs again.
    #[arg(long, env = "RUSK_RESUME_GRACE", default_value = "10s", value_parser = parse_duration)]
    resume_grace: Duration,
}

impl CoreArgs {
    fn config(&self) -> Result<SchedulerConfig> {
        if self.heartbeat_interval.is_zero() || self.worker_ttl < self.heartbeat_interval * 2 {
            anyhow::bail!(
                "worker TTL ({:?}) must be at least twice the heartbeat interval ({:?})",
                self.worker_ttl,
                self.heartbeat_interval
            );
        }
        Ok(SchedulerConfig {
            worker_ttl: self.worker_ttl,
            heartbeat_interval: self.heartbeat_interval,
            assigned_per_thread_max: self.assigned_per_thread.max(1),
            task_max_worker_deaths: self.task_max_worker_deaths.max(1),
            no_worker_timeout: self.no_worker_timeout,
            work_stealing: !self.no_work_stealing,
            resume_grace: self.resume_grace,
            ..SchedulerConfig::default()
        })
    }
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Task threads (and concurrent commands).
    #[arg(long, env = "RUSK_NTHREADS", default_value_t = 1)]
    nthreads: u32,
    /// Stable name of this worker (default: host-pid).
    #[arg(long, env = "RUSK_NAME")]
    name: Option<String>,
    /// Resources this worker offers to tasks that ask for them, e.g. "GPU=2,MEM=64e9": tasks
    /// running here at once never ask for more in all.
    #[arg(long, env = "RUSK_RESOURCES", value_parser = config::parse_resources)]
    resources: Option<config::Resources>,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Directory for command tasks' input files (default: a temporary directory).
    #[arg(long, env = "RUSK_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Enable the fault-injection builtins (abort, block_loop, alloc_mb). For tests only.
    #[arg(long, env = "RUSK_ENABLE_FAULT_INJECTION")]
    enable_fault_injection: bool,
    #[command(flatten)]
    python: PythonArgs,
    #[command(flatten)]
    health: vitals::HealthArgs,
    /// Fault injection: abort right after start-up (to test crash loops).
    #[arg(long, env = "RUSK_FAULT_CRASH_ON_START", hide = true)]
    fault_crash_on_start: bool,
    /// Memory limit of this worker (for example 4GiB): results are spilled to disk above
    /// `--memory-target-fraction` of it and the worker pauses above `--memory-pause-fraction`.
    #[arg(long, env = "RUSK_MEMORY_LIMIT", value_parser = config::parse_bytes)]
    memory_limit: Option<u64>,
    #[command(flatten)]
    memory: MemoryArgs,
    /// When the scheduler connection drops, keep the stored results and reconnect (with
    /// back-off) for this long before exiting; `0s`: exit at once.
    #[arg(long, env = "RUSK_SCHEDULER_LOST_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    scheduler_lost_timeout: Duration,
    /// Set by the nanny: its name.
    #[arg(long, hide = true, requires = "nanny_fd")]
    nanny: Option<String>,
    /// Set by the nanny: this worker's slot.
    #[arg(long, hide = true, requires = "nanny_fd")]
    slot: Option<u32>,
    /// Set by the nanny: inherited socket for pings.
    #[arg(long, hide = true)]
    nanny_fd: Option<i32>,
}

/// Where a worker's data server listens and what it advertises (see `endpoint.rs`).
#[derive(clap::Args, Clone)]
struct EndpointArgs {
    /// Host the data server listens on (peers and clients fetch results there); 0.0.0.0 for
    /// every interface. Default: the address of the interface that routes to the scheduler.
    #[arg(long, env = "RUSK_LISTEN_HOST")]
    listen_host: Option<String>,
    /// Host (name or address) peers and clients are told to fetch results from. Default: the
    /// listen host, or the routing interface's address when listening on every interface.
    #[arg(long, env = "RUSK_CONTACT_ADDRESS")]
    contact_address: Option<String>,
}

impl EndpointArgs {
    /// The same flags for the workers a nanny starts.
    fn worker_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(h) = &self.listen_host {
            args.push(format!("--listen-host={h}"));
        }
        if let Some(c) = &self.contact_address {
            args.push(format!("--contact-address={c}"));
        }
        args
    }
}

/// A worker's memory policy (see `rusk_core::memory`); the limit itself is `--memory-limit`.
#[derive(clap::Args, Clone)]
struct MemoryArgs {
    /// Spill least recently used results to disk above this fraction of the memory limit.
    #[arg(long, env = "RUSK_MEMORY_TARGET_FRACTION", default_value_t = 0.6)]
    memory_target_fraction: f64,
    /// Start no new tasks (but keep serving results) above this fraction of the memory limit.
    #[arg(long, env = "RUSK_MEMORY_PAUSE_FRACTION", default_value_t = 0.8)]
    memory_pause_fraction: f64,
    /// Directory for spilled results (default: `spill-PID` in the worker's work dir).
    #[arg(long, env = "RUSK_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
}

impl MemoryArgs {
    fn config(&self, limit: Option<u64>) -> Result<rusk_core::memory::MemoryConfig> {
        let (t, p) = (self.memory_target_fraction, self.memory_pause_fraction);
        if !(0.05..=1.0).contains(&t) || !(0.05..=1.0).contains(&p) || t > p {
            return Err(BadInput(format!(
                "--memory-target-fraction ({t}) and --memory-pause-fraction ({p}) must be between 0.05 and 1, the target at most the pause"
            ))
            .into());
        }
        Ok(rusk_core::memory::MemoryConfig {
            limit,
            target_fraction: t,
            pause_fraction: p,
        })
    }

    fn worker_args(&self, limit: Option<u64>) -> Vec<String> {
        let mut args = vec![
            format!("--memory-target-fraction={}", self.memory_target_fraction),
            format!("--memory-pause-fraction={}", self.memory_pause_fraction),
        ];
        if let Some(l) = limit {
            args.push(format!("--memory-limit={l}"));
        }
        if let Some(d) = &self.spill_dir {
            args.push(format!("--spill-dir={}", d.display()));
        }
        args
    }
}

/// The Python executors of a worker (see `python_exec`).
#[derive(clap::Args, Clone)]
struct PythonArgs {
    /// Python interpreter that runs Python tasks (it needs `cloudpickle`). Default: the
    /// `python` of the virtualenv `rusk` is installed in, else `python3` on PATH.
    #[arg(long, env = "RUSK_PYTHON")]
    python: Option<PathBuf>,
    /// A Python executor that sends no ping this long (a task holding the GIL in a C call) is
    /// killed and replaced, and its task fails.
    #[arg(long, env = "RUSK_EXECUTOR_HANG_TIMEOUT", default_value = python_exec::DEFAULT_HANG_TIMEOUT, value_parser = parse_duration)]
    executor_hang_timeout: Duration,
    /// A silent Python executor that is using CPU (a long C computation holding the GIL) is
    /// left running this long before it is killed as hung; a task's own timeout still applies.
    #[arg(long, env = "RUSK_EXECUTOR_BUSY_TIMEOUT", default_value = python_exec::DEFAULT_BUSY_TIMEOUT, value_parser = parse_duration)]
    executor_busy_timeout: Duration,
    /// Start the Python executors with the worker instead of on its first Python task.
    #[arg(long, env = "RUSK_PYTHON_EAGER")]
    python_eager: bool,
}

impl PythonArgs {
    fn options(&self) -> Result<python_exec::PythonOptions> {
        if self.executor_hang_timeout < python_exec::PING_INTERVAL * 3 {
            return Err(BadInput(format!(
                "--executor-hang-timeout must be at least 3 ping intervals ({:?})",
                python_exec::PING_INTERVAL * 3
            ))
            .into());
        }
        Ok(python_exec::PythonOptions {
            python: self.python.clone(),
            hang_timeout: self.executor_hang_timeout,
            busy_timeout: self.executor_busy_timeout,
            eager: self.python_eager,
            cluster: None, // set by the worker: its scheduler and the task credential
        })
    }

    /// The same settings as worker flags (for the nanny's workers).
    fn worker_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(p) = &self.python {
            args.push("--python".to_string());
            args.push(p.display().to_string());
        }
        args.push("--executor-hang-timeout".to_string());
        args.push(format!("{}ms", self.executor_hang_timeout.as_millis()));
        args.push(format!(
            "--executor-busy-timeout={}ms",
            self.executor_busy_timeout.as_millis()
        ));
        if self.python_eager {
            args.push("--python-eager".to_string());
        }
        args
    }
}

#[derive(clap::Args)]
struct SubmitArgs {
    /// The graph file (JSON).
    graph: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Wait for the outputs and print them.
    #[arg(long)]
    wait: bool,
    /// With --wait: print one JSON object mapping each output key to its result.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Thread pools of numeric libraries in task processes: one thread per task slot, as Dask's
/// nanny does (`distributed.nanny.pre-spawn-environ`). A worker runs `nthreads` tasks at once,
/// each in its own executor or command; letting each one start a BLAS/OpenMP pool the size of
/// the machine oversubscribes the cores (and OpenBLAS threads spin while they wait). Values set
/// by the user are kept.
const SINGLE_THREADED_NUMERICS: &[&str] = &[
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
];

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Cmd::Worker(_) | Cmd::Nanny(_)) {
        for var in SINGLE_THREADED_NUMERICS {
            if std::env::var_os(var).is_none() {
                // Still single-threaded here: no runtime, no other thread reads the environment.
                std::env::set_var(var, "1");
            }
        }
    }
    let result = match cli.command {
        Cmd::Scheduler(a) => run("scheduler", run_scheduler(a)),
        Cmd::Worker(a) => run("worker", run_worker(a)),
        Cmd::Submit(a) => run("client", run_submit(a)),
        Cmd::Status(a) => run("client", run_status(a)),
        Cmd::Local(a) => run("local", local::run(a)),
        Cmd::Nanny(a) => run("nanny", run_nanny(a)),
        Cmd::Restart(a) => run("client", run_restart(a)),
        Cmd::StopNanny(a) => run("client", run_stop_nanny(a)),
        Cmd::Events(a) => run("client", events::run(a.cluster, a.json, a.follow)),
    };
    if let Err(e) = result {
        eprintln!("rusk: error: {e:#}");
        std::process::exit(exit_code(&e));
    }
}

/// Exit status: 1 for failed tasks or errors, 2 for bad input (usage, graph rejected), 75 for a
/// worker that lost its scheduler (its nanny restarts it).
fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<BadInput>().is_some() {
        2
    } else if e.downcast_ref::<worker_shell::ConnectionLost>().is_some() {
        rusk_core::nanny::EXIT_CONNECTION_LOST
    } else {
        1
    }
}

/// Marks errors caused by the user's input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Start logging for `component`, then run `work` to completion on the runtime.
fn run(component: &str, work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    config::init_logging(component);
    let result = runtime().block_on(work);
    config::flush_logs();
    result
}

/// All roles run the current-thread runtime: one event loop, no cross-thread hand-offs.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

async fn run_scheduler(a: SchedulerArgs) -> Result<()> {
    let token = match &a.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read token file {}", f.display()))?
            .trim()
            .to_string(),
        None => match std::env::var("RUSK_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => {
                if a.scheduler_file.is_none() {
                    anyhow::bail!(
                        "no way to share the cluster token: give --scheduler-file, --token-file or RUSK_TOKEN"
                    );
                }
                config::new_token()
            }
        },
    };
    let core = a.core.config()?;
    scheduler_shell::run(scheduler_shell::SchedulerOptions {
        listen: a.listen,
        scheduler_file: a.scheduler_file,
        token,
        core,
        dashboard: Some(a.dashboard).filter(|d| !d.eq_ignore_ascii_case("none")),
        tls_mode: a.tls,
        tls: a.tls_files.spec(),
        journal: a.journal,
        journal_sync: a.journal_sync,
        peer_outbox_limit: usize::try_from(a.peer_outbox_limit).unwrap_or(usize::MAX),
    })
    .await
}

async fn run_worker(a: WorkerArgs) -> Result<()> {
    if a.fault_crash_on_start {
        tracing::error!("fault injection: crashing at start-up on purpose");
        config::flush_logs();
        std::process::abort();
    }
    let cluster = a.cluster.resolve()?;
    let supervision = match (a.nanny_fd, a.nanny, a.slot) {
        (Some(fd), Some(nanny), Some(slot)) => Some(worker_shell::Supervision { nanny, slot, fd }),
        (None, None, None) => None,
        _ => return Err(BadInput("--nanny, --slot and --nanny-fd go together".into()).into()),
    };
    let (listen_host, contact_host) = endpoint::data_endpoint(
        a.endpoint.listen_host.as_deref(),
        a.endpoint.contact_address.as_deref(),
        &cluster.address,
    )
    .map_err(|e| BadInput(format!("{e:#}")))?;
    worker_shell::run(worker_shell::WorkerOptions {
        scheduler: cluster.address,
        token: cluster.token,
        tls: cluster.tls,
        name: a.name,
        nthreads: a.nthreads,
        resources: a.resources.unwrap_or_default().0,
        listen_host,
        contact_host,
        work_dir: a.work_dir,
        fault_injection: a.enable_fault_injection,
        health: a.health.options(a.enable_fault_injection),
        supervision,
        python: a.python.options()?,
        memory: a.memory.config(a.memory_limit)?,
        spill_dir: a.memory.spill_dir,
        scheduler_lost_timeout: a.scheduler_lost_timeout,
    })
    .await
}

async fn run_nanny(a: NannyArgs) -> Result<()> {
    let cluster = a.cluster.resolve()?;
    if !(0.1..=1.0).contains(&a.memory_restart_fraction) {
        return Err(BadInput("--memory-restart-fraction must be between 0.1 and 1".into()).into());
    }
    let name = a
        .name
        .unwrap_or_else(|| format!("{}-{}", worker_shell::hostname(), std::process::id()));
    let mut worker_args = Vec::new();
    if a.enable_fault_injection {
        worker_args.push("--enable-fault-injection".to_string());
    }
    if let Some(r) = a.resources.as_ref().filter(|r| !r.0.is_empty()) {
        worker_args.push(format!("--resources={}", r.to_arg()));
    }
    a.python.options()?;
    worker_args.extend(a.python.worker_args());
    worker_args.extend(a.health.worker_args());
    a.memory.config(a.memory_limit)?;
    worker_args.extend(a.memory.worker_args(a.memory_limit));
    // Checked here too, so that a bad address fails the nanny, not each worker in a loop.
    endpoint::data_endpoint(
        a.endpoint.listen_host.as_deref(),
        a.endpoint.contact_address.as_deref(),
        &cluster.address,
    )
    .map_err(|e| BadInput(format!("{e:#}")))?;
    worker_args.extend(a.endpoint.worker_args());
    let core = rusk_core::nanny::NannyConfig {
        nworkers: a.nworkers.max(1),
        watchdog_timeout: a.watchdog_timeout,
        kill_grace: a.kill_grace,
        backoff_initial: a.backoff_initial,
        backoff_max: a.backoff_max,
        stable_period: a.stable_period,
        crash_restarts_max: a.crash_restarts_max,
        crash_window: a.crash_window,
        memory_restart_bytes: a
            .memory_limit
            .map(|l| (l as f64 * a.memory_restart_fraction) as u64),
        seed: std::process::id() as u64,
        ..rusk_core::nanny::NannyConfig::default()
    };
    if core.watchdog_timeout < worker_shell::NANNY_PING_INTERVAL * 3 {
        return Err(BadInput(format!(
            "--watchdog-timeout must be at least 3 ping intervals ({:?})",
            worker_shell::NANNY_PING_INTERVAL * 3
        ))
        .into());
    }
    nanny_shell::run(nanny_shell::NannyOptions {
        scheduler: cluster.address,
        token: cluster.token,
        tls: cluster.tls,
        name,
        nthreads: a.nthreads,
        worker_args,
        core,
    })
    .await
}

async fn run_restart(a: RestartArgs) -> Result<()> {
    let target = match (a.worker, a.all) {
        (Some(w), false) => rusk_proto::msg::RestartTarget::Worker(w),
        (None, true) => rusk_proto::msg::RestartTarget::All,
        _ => return Err(BadInput("name a worker, or --all".into()).into()),
    };
    let cluster = a.cluster.resolve()?;
    let mut c = client::Client::connect(&cluster).await?;
    let msg = c
        .operator(rusk_proto::msg::ClientToScheduler::Restart { target })
        .await?;
    println!("{msg}");
    Ok(())
}

async fn run_stop_nanny(a: StopNannyArgs) -> Result<()> {
    let nanny = match (a.nanny, a.all) {
        (Some(n), false) => Some(n),
        (None, true) => None,
        _ => return Err(BadInput("name a nanny, or --all".into()).into()),
    };
    let cluster = a.cluster.resolve()?;
    let mut c = client::Client::connect(&cluster).await?;
    let msg = c
        .operator(rusk_proto::msg::ClientToScheduler::StopNanny { nanny })
        .await?;
    println!("{msg}");
    Ok(())
}

/// Read and parse a graph file; parse errors say where.
pub fn read_graph(path: &std::path::Path) -> Result<rusk_proto::graph::GraphSpec> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| BadInput(format!("{} is not a valid graph file: {e}", path.display())).into())
}

async fn run_submit(a: SubmitArgs) -> Result<()> {
    let graph = read_graph(&a.graph)?;
    let cluster = a.cluster.resolve()?;
    let mut c = client::Client::connect(&cluster).await?;
    let (id, tasks) = match c.submit(graph, !a.wait).await {
        Ok(x) => x,
        Err(e) => return Err(BadInput(format!("{e:#}")).into()),
    };
    if !a.wait {
        println!("submitted graph {id} ({tasks} tasks)");
        return Ok(());
    }
    let mut bar = client::ProgressBar::new();
    let outputs = c.wait(id, |p| bar.update(p)).await;
    bar.finish();
    let outputs = outputs?;
    c.release(id).await.ok();
    print_outputs(&outputs, a.json)
}

/// Print outputs; failed outputs go to stderr (and `null` in JSON) and make the exit status 1.
pub fn print_outputs(outputs: &[(String, client::Output)], json: bool) -> Result<()> {
    let mut failed = 0;
    let mut obj = serde_json::Map::new();
    for (key, out) in outputs {
        match out {
            client::Output::Value(v) => {
                let text = String::from_utf8_lossy(v).into_owned();
                if !json {
                    println!("{key}: {}", text.trim_end());
                }
                obj.insert(key.clone(), serde_json::Value::String(text));
            }
            client::Output::Failed(e) => {
                failed += 1;
                eprintln!("{key}: FAILED: {e}");
                obj.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(obj));
    }
    if failed > 0 {
        anyhow::bail!("{failed} output(s) failed");
    }
    Ok(())
}

async fn run_status(a: StatusArgs) -> Result<()> {
    let cluster = a.cluster.resolve()?;
    let mut c = client::Client::connect(&cluster).await?;
    let s = c.status().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", status::format(&s));
    Ok(())
}
