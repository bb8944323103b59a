//! `rusk`: one binary for every role (scheduler, worker, local cluster) and the CLI client.
//!
//! Every flag can also be set from the environment as `RUSK_<NAME>` (for example
//! `RUSK_WORKER_TTL=5s`); durations are written like `500ms`, `5s`, `2m`.
mod client;
mod config;
mod local;
mod net;
mod scheduler_shell;
mod worker_shell;

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
    /// Host the data server listens on (peers fetch results there).
    #[arg(long, env = "RUSK_LISTEN_HOST", default_value = "127.0.0.1")]
    listen_host: String,
    /// Directory for command tasks' input files (default: a temporary directory).
    #[arg(long, env = "RUSK_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Enable the fault-injection builtins (abort, block_loop, alloc_mb). For tests only.
    #[arg(long, env = "RUSK_ENABLE_FAULT_INJECTION")]
    enable_fault_injection: bool,
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Scheduler(a) => {
            config::init_logging("scheduler");
            runtime().block_on(run_scheduler(a))
        }
        Cmd::Worker(a) => {
            config::init_logging("worker");
            runtime().block_on(run_worker(a))
        }
        Cmd::Submit(a) => {
            config::init_logging("client");
            runtime().block_on(run_submit(a))
        }
        Cmd::Status(a) => {
            config::init_logging("client");
            runtime().block_on(run_status(a))
        }
        Cmd::Local(a) => {
            config::init_logging("local");
            runtime().block_on(local::run(a))
        }
    };
    if let Err(e) = result {
        eprintln!("rusk: error: {e:#}");
        std::process::exit(exit_code(&e));
    }
}

/// Exit status: 1 for failed tasks or errors, 2 for bad input (usage, graph rejected).
fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<BadInput>().is_some() {
        2
    } else {
        1
    }
}

/// Marks errors caused by the user's input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

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
    })
    .await
}

async fn run_worker(a: WorkerArgs) -> Result<()> {
    let cluster = a.cluster.resolve()?;
    worker_shell::run(worker_shell::WorkerOptions {
        scheduler: cluster.address,
        token: cluster.token,
        name: a.name,
        nthreads: a.nthreads,
        listen_host: a.listen_host,
        work_dir: a.work_dir,
        fault_injection: a.enable_fault_injection,
    })
    .await
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
    println!("{} worker(s)", s.workers.len());
    println!(
        "{:<24} {:>6} {:>8} {:>8} {:<8} {:>8} {:>8} {:>6}  address",
        "worker", "incarn", "pid", "threads", "state", "assigned", "memory", "hb ms"
    );
    for w in &s.workers {
        println!(
            "{:<24} {:>6} {:>8} {:>8} {:<8} {:>8} {:>8} {:>6}  {}",
            w.id,
            w.incarnation,
            w.pid,
            w.nthreads,
            w.state,
            w.tasks.get("assigned").copied().unwrap_or(0),
            w.tasks.get("memory").copied().unwrap_or(0),
            w.heartbeat_age_ms,
            w.address
        );
    }
    let tasks: Vec<String> = s.tasks.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("tasks: {}", tasks.join(" "));
    for g in &s.graphs {
        println!(
            "graph g{}: {}/{} done, {} erred",
            g.graph, g.done, g.total, g.erred
        );
    }
    Ok(())
}
