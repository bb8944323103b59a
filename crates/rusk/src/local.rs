//! `rusk local`: a whole cluster on this machine, as real child processes, running one graph.
//! It is the newcomer's demo and the quickest way to try a graph file.
use crate::client::{self, Client, Output};
use crate::config::{Cluster, SchedulerFile};
use anyhow::{bail, Context, Result};
use rusk_proto::graph::{GraphSpec, TaskSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long `rusk local` waits for its scheduler and workers to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(clap::Args)]
pub struct LocalArgs {
    /// Graph file to run (default: the built-in demo).
    graph: Option<PathBuf>,
    /// Worker processes to start.
    #[arg(long, env = "RUSK_WORKERS", default_value_t = 2)]
    workers: u32,
    /// Task threads per worker.
    #[arg(long, env = "RUSK_NTHREADS", default_value_t = 1)]
    nthreads: u32,
    /// Resources each worker offers, e.g. "GPU=1,MEM=8e9".
    #[arg(long, env = "RUSK_RESOURCES", value_parser = crate::config::parse_resources)]
    resources: Option<crate::config::Resources>,
    /// Leaves of the demo's tree reduction.
    #[arg(long, default_value_t = 10_000)]
    demo_size: u64,
    /// Print outputs as one JSON object.
    #[arg(long)]
    json: bool,
    /// Kill one worker and freeze another while the graph runs, then show the recovery events
    /// (on by default for the demo graph).
    #[arg(long)]
    chaos: bool,
    /// Run the demo graph without the chaos.
    #[arg(long, conflicts_with = "chaos")]
    no_chaos: bool,
    /// Sleep tasks of the demo (they make it run long enough to watch the healing).
    #[arg(long, default_value_t = 120)]
    demo_sleeps: u64,
    /// TLS of the local cluster's connections (`auto`: plaintext, as it runs on loopback;
    /// `on`: encrypted all the same, to see what TLS costs).
    #[arg(long, value_enum, default_value = "auto")]
    tls: crate::config::TlsMode,
    /// Run the scheduler without its journal (by default it keeps one, and a scheduler that
    /// dies is started again on it: the graph goes on).
    #[arg(long)]
    no_journal: bool,
    #[command(flatten)]
    core: crate::CoreArgs,
}

/// Child processes that die with us: killed on drop, and (PR_SET_PDEATHSIG) by the kernel if
/// this process dies first.
pub struct Children(Vec<Child>);

impl Drop for Children {
    /// Stop the children newest first (the nanny before the scheduler) with SIGTERM, their
    /// clean shutdown; SIGKILL whatever is still there after a grace period.
    fn drop(&mut self) {
        const GRACE: Duration = Duration::from_secs(3);
        for c in self.0.iter_mut().rev() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < GRACE && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn spawn_rusk(args: &[String]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the rusk executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    if std::env::var_os("RUSK_LOG").is_none() {
        // The demo tells its own story; the children speak up only for errors.
        cmd.env("RUSK_LOG", "error");
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().context("cannot start a rusk child process")
}

async fn wait_for_file(path: &Path, child: &mut Child) -> Result<SchedulerFile> {
    let start = Instant::now();
    loop {
        if let Ok(f) = SchedulerFile::read(path) {
            return Ok(f);
        }
        if let Some(status) = child.try_wait()? {
            bail!("the scheduler exited during start-up ({status})");
        }
        if start.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "the scheduler did not write {} within {STARTUP_TIMEOUT:?}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The demo graph: sum 1..=n as a binary tree of `sum` tasks, then a `cmd` task that reports it.
pub fn demo_graph(n: u64, sleeps: u64) -> GraphSpec {
    let task = |key: String, args: Vec<String>, deps: Vec<String>| TaskSpec {
        key,
        builtin: Some("sum".into()),
        cmd: None,
        args,
        deps,
        env: Default::default(),
        cwd: None,
        retries: 0,
        timeout: None,
        put: None,
        python: None,
        ..Default::default()
    };
    let mut tasks = Vec::new();
    // `sleeps` slow tasks of 40 ms each; every leaf waits for one of them (a `sum` of the
    // leaf's number and the sleep's empty result would not parse, so the leaf is a `concat`).
    for j in 0..sleeps {
        tasks.push(TaskSpec {
            builtin: Some("sleep_ms".into()),
            ..task(format!("sleep-{j}"), vec!["40".into()], vec![])
        });
    }
    let mut level: Vec<String> = (1..=n.max(1))
        .map(|i| {
            let key = format!("leaf-{i}");
            let deps = if sleeps > 0 {
                vec![format!("sleep-{}", i % sleeps)]
            } else {
                vec![]
            };
            tasks.push(TaskSpec {
                builtin: Some("concat".into()),
                ..task(key.clone(), vec![i.to_string()], deps)
            });
            key
        })
        .collect();
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        level = level
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                let key = format!("sum-{depth}-{i}");
                tasks.push(task(key.clone(), vec![], pair.to_vec()));
                key
            })
            .collect();
    }
    tasks.push(TaskSpec {
        key: "report".into(),
        builtin: None,
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("echo \"sum of 1..{n} = $(cat \"$RUSK_DEP_0\")\""),
        ]),
        args: vec![],
        deps: vec![level[0].clone()],
        env: Default::default(),
        cwd: None,
        retries: 0,
        timeout: None,
        put: None,
        python: None,
        ..Default::default()
    });
    GraphSpec {
        tasks,
        outputs: vec!["report".into()],
    }
}

/// The demo's faults: while the graph runs, SIGKILL one worker, then SIGSTOP another.
async fn inject_chaos(cluster: Cluster) -> Result<()> {
    let mut c = Client::connect(&cluster).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let workers = c.status().await?.workers;
    if let Some(w) = workers.iter().find(|w| w.slot == Some(0)) {
        eprintln!("rusk local: chaos: kill -9 worker {} (pid {})", w.id, w.pid);
        signal(w.pid, libc::SIGKILL);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let workers = c.status().await?.workers;
    if let Some(w) = workers.iter().find(|w| w.slot == Some(1)) {
        eprintln!(
            "rusk local: chaos: freeze worker {} (pid {}) with SIGSTOP",
            w.id, w.pid
        );
        signal(w.pid, libc::SIGSTOP);
    }
    Ok(())
}

/// A worker pid from the scheduler's status: checked (`pids::signal`) before it is used.
fn signal(pid: u32, sig: i32) {
    if let Err(e) = crate::pids::signal(pid, sig) {
        eprintln!("rusk local: chaos: not signalling pid {pid}: {e}");
    }
}

pub async fn run(a: LocalArgs) -> Result<()> {
    let graph = match &a.graph {
        Some(p) => crate::read_graph(p)?,
        None => demo_graph(a.demo_size, a.demo_sleeps),
    };
    let chaos = a.chaos || (a.graph.is_none() && !a.no_chaos);
    let dir = tempfile::Builder::new().prefix("rusk-local-").tempdir()?;
    let file = dir.path().join("scheduler.json");
    let file_arg = file.to_string_lossy().into_owned();
    let mut children = Children(Vec::new());
    let core = a.core.config()?;
    let mut scheduler_args: Vec<String> = vec![
        "scheduler".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--scheduler-file".into(),
        file_arg.clone(),
        "--worker-ttl".into(),
        format!("{}ms", core.worker_ttl.as_millis()),
        "--heartbeat-interval".into(),
        format!("{}ms", core.heartbeat_interval.as_millis()),
        "--task-max-worker-deaths".into(),
        core.task_max_worker_deaths.to_string(),
        "--no-worker-timeout".into(),
        format!("{}ms", core.no_worker_timeout.as_millis()),
        "--tls".into(),
        format!("{:?}", a.tls).to_lowercase(),
    ];
    if !a.no_journal {
        // One machine: a commit need only survive the scheduler process (`JournalSync`).
        scheduler_args.push("--journal-sync".into());
        scheduler_args.push("process".into());
        scheduler_args.push("--journal".into());
        scheduler_args.push(
            dir.path()
                .join("journal.redb")
                .to_string_lossy()
                .into_owned(),
        );
    }
    children.0.push(spawn_rusk(&scheduler_args)?);
    let sf = wait_for_file(&file, &mut children.0[0]).await?;
    if let Some(d) = &sf.dashboard {
        eprintln!("rusk local: dashboard at {d} (while this runs)");
    }
    let mut nanny: Vec<String> = vec![
        "nanny".into(),
        "--scheduler-file".into(),
        file_arg.clone(),
        "--nworkers".into(),
        a.workers.to_string(),
        "--nthreads".into(),
        a.nthreads.to_string(),
        "--name".into(),
        "local".into(),
    ];
    if let Some(r) = a.resources.as_ref().filter(|r| !r.0.is_empty()) {
        nanny.push(format!("--resources={}", r.to_arg()));
    }
    children.0.push(spawn_rusk(&nanny)?);
    let children = Arc::new(Mutex::new(children));
    let supervisor =
        (!a.no_journal).then(|| tokio::spawn(keep_scheduler(children.clone(), scheduler_args)));
    let cluster = Cluster::from_scheduler_file(sf, &Default::default())?;
    let mut c = Client::connect(&cluster).await?;
    let start = Instant::now();
    loop {
        let s = c.status().await?;
        if s.workers.len() as u32 >= a.workers {
            break;
        }
        if start.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "only {} of {} workers joined within {STARTUP_TIMEOUT:?}",
                s.workers.len(),
                a.workers
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "rusk local: scheduler at {} with a nanny of {} worker(s) x {} thread(s); running {} tasks",
        cluster.address,
        a.workers,
        a.nthreads,
        graph.tasks.len()
    );
    let t0 = Instant::now();
    let (id, _) = c
        .submit(graph, false)
        .await
        .map_err(|e| crate::BadInput(format!("{e:#}")))?;
    let chaos_task = chaos.then(|| tokio::spawn(inject_chaos(cluster.clone())));
    let mut bar = client::ProgressBar::new();
    let outputs = c.wait(id, |p| bar.update(p)).await;
    bar.finish();
    let outputs = outputs?;
    if let Some(t) = chaos_task {
        t.abort();
        // Give the frozen worker's restart time to complete, then show what happened.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (records, _) = c.events(0).await?;
            let recovered = records.iter().filter(|r| r.action == "restarted").count();
            if recovered >= 2 || Instant::now() > deadline {
                eprintln!("rusk local: recovery events:");
                for r in &records {
                    eprintln!("  {}", crate::events::format_record(r));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "rusk local: finished in {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    c.release(id).await.ok();
    crate::print_outputs(&outputs, a.json)?;
    if a.graph.is_none() {
        let n = a.demo_size;
        let expected = format!("sum of 1..{n} = {}", n * (n + 1) / 2);
        match outputs.first() {
            Some((_, Output::Value(v))) if String::from_utf8_lossy(v).trim() == expected => {
                eprintln!("rusk local: demo result verified");
            }
            other => bail!("demo result is wrong: expected {expected:?}, got {other:?}"),
        }
    }
    if let Some(s) = supervisor {
        s.abort();
    }
    drop(children);
    Ok(())
}

/// How often `rusk local` looks whether its scheduler is still there.
const SCHEDULER_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Start the scheduler (`children.0[0]`) again on its journal whenever it dies: its workers
/// and this client reconnect, and the graph goes on.
async fn keep_scheduler(children: Arc<Mutex<Children>>, args: Vec<String>) {
    loop {
        tokio::time::sleep(SCHEDULER_CHECK_INTERVAL).await;
        let mut c = children.lock().expect("not poisoned");
        if let Ok(Some(status)) = c.0[0].try_wait() {
            eprintln!(
                "rusk local: the scheduler died ({status}); starting it again on its journal"
            );
            match spawn_rusk(&args) {
                Ok(child) => c.0[0] = child,
                Err(e) => {
                    eprintln!("rusk local: cannot start the scheduler again: {e:#}");
                    return;
                }
            }
        }
    }
}
