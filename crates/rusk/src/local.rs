//! `rusk local`: a whole cluster on this machine, as real child processes, running one graph.
//! It is the newcomer's demo and the quickest way to try a graph file.
use crate::client::{self, Client, Output};
use crate::config::{Cluster, SchedulerFile};
use anyhow::{bail, Context, Result};
use rusk_proto::graph::{GraphSpec, TaskSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
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
    /// Leaves of the demo's tree reduction.
    #[arg(long, default_value_t = 10_000)]
    demo_size: u64,
    /// Print outputs as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    core: crate::CoreArgs,
}

/// Child processes that die with us: killed on drop, and (PR_SET_PDEATHSIG) by the kernel if
/// this process dies first.
pub struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

pub fn spawn_rusk(args: &[String]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the rusk executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
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
pub fn demo_graph(n: u64) -> GraphSpec {
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
    };
    let mut tasks = Vec::new();
    let mut level: Vec<String> = (1..=n.max(1))
        .map(|i| {
            let key = format!("leaf-{i}");
            tasks.push(task(key.clone(), vec![i.to_string()], vec![]));
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
    });
    GraphSpec {
        tasks,
        outputs: vec!["report".into()],
    }
}

pub async fn run(a: LocalArgs) -> Result<()> {
    let graph = match &a.graph {
        Some(p) => crate::read_graph(p)?,
        None => demo_graph(a.demo_size),
    };
    let dir = tempfile::Builder::new().prefix("rusk-local-").tempdir()?;
    let file = dir.path().join("scheduler.json");
    let file_arg = file.to_string_lossy().into_owned();
    let mut children = Children(Vec::new());
    let core = a.core.config()?;
    children.0.push(spawn_rusk(&[
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
    ])?);
    let sf = wait_for_file(&file, &mut children.0[0]).await?;
    for i in 0..a.workers {
        children.0.push(spawn_rusk(&[
            "worker".into(),
            "--scheduler-file".into(),
            file_arg.clone(),
            "--nthreads".into(),
            a.nthreads.to_string(),
            "--name".into(),
            format!("local-{i}"),
        ])?);
    }
    let cluster = Cluster {
        address: sf.address,
        token: sf.token,
    };
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
        "rusk local: scheduler at {} with {} worker(s) x {} thread(s); running {} tasks",
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
    let mut bar = client::ProgressBar::new();
    let outputs = c.wait(id, |p| bar.update(p)).await;
    bar.finish();
    let outputs = outputs?;
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
    drop(children);
    Ok(())
}
