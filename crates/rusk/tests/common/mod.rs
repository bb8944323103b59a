//! A real cluster for end-to-end tests: the `rusk` binary started as separate processes on
//! loopback, killed with real signals.
#![allow(dead_code)]
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const RUSK: &str = env!("CARGO_BIN_EXE_rusk");

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub scheduler: Child,
    pub workers: Vec<Child>,
    pub file: PathBuf,
    worker_args: Vec<String>,
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
}

impl Cluster {
    /// A scheduler plus `n` workers (fault injection on), waiting until all joined.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[], &[])
    }

    pub fn start_with(n: usize, scheduler_args: &[&str], worker_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scheduler.json");
        let scheduler = Command::new(RUSK)
            .args(["scheduler", "--listen", "127.0.0.1:0", "--scheduler-file"])
            .arg(&file)
            .args(scheduler_args)
            .env("RUSK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file(dir.path(), "scheduler-out"))
            .stderr(log_file(dir.path(), "scheduler"))
            .spawn()
            .unwrap();
        let mut c = Cluster {
            dir,
            scheduler,
            workers: Vec::new(),
            file,
            worker_args: worker_args.iter().map(|s| s.to_string()).collect(),
        };
        wait_until(
            Duration::from_secs(10),
            || c.file.exists(),
            "scheduler file",
        );
        for _ in 0..n {
            c.add_worker();
        }
        if n > 0 {
            c.wait_workers(n);
        }
        c
    }

    pub fn add_worker(&mut self) -> usize {
        self.add_worker_with(&[], &[])
    }

    /// A worker with `args` besides the cluster's worker args, and `env`.
    pub fn add_worker_with(&mut self, args: &[&str], env: &[(&str, &str)]) -> usize {
        let i = self.workers.len();
        let child = Command::new(RUSK)
            .args([
                "worker",
                "--enable-fault-injection",
                "--name",
                &format!("w{i}"),
                "--scheduler-file",
            ])
            .arg(&self.file)
            .args(&self.worker_args)
            .args(args)
            .envs(env.iter().copied())
            .env("RUSK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file(self.dir.path(), &format!("w{i}-out")))
            .stderr(log_file(self.dir.path(), &format!("w{i}")))
            .spawn()
            .unwrap();
        self.workers.push(child);
        i
    }

    pub fn rusk(&self, args: &[&str]) -> Output {
        Command::new(RUSK)
            .args(args)
            .arg("--scheduler-file")
            .arg(&self.file)
            .env("RUSK_LOG", "warn")
            .output()
            .unwrap()
    }

    pub fn status(&self) -> Value {
        let out = self.rusk(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn worker_count(&self) -> usize {
        self.status()["workers"].as_array().unwrap().len()
    }

    pub fn wait_workers(&self, n: usize) {
        wait_until(
            Duration::from_secs(20),
            || self.worker_count() == n,
            &format!("{n} workers"),
        );
    }

    pub fn write_graph(&self, name: &str, graph: &Value) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec(graph).unwrap()).unwrap();
        p
    }

    /// `rusk submit --wait --json`; returns (exit ok, parsed stdout or Null, stderr).
    pub fn submit_wait(&self, graph: &Value) -> (bool, Value, String) {
        let out = wait_output(self.submit_spawn(graph), SUBMIT_DEADLINE);
        let stdout = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.success(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Start `rusk submit --wait --json` in the background.
    pub fn submit_spawn(&self, graph: &Value) -> Child {
        let p = self.write_graph(&format!("graph-{}.json", unique()), graph);
        Command::new(RUSK)
            .args([
                "submit",
                p.to_str().unwrap(),
                "--wait",
                "--json",
                "--scheduler-file",
            ])
            .arg(&self.file)
            .env("RUSK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn signal_worker(&self, i: usize, signal: i32) {
        let pid = self.workers[i].id() as i32;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
    }

    pub fn scheduler_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("scheduler.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
        if std::thread::panicking() {
            for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("--- {} (last lines) ---", p.display());
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `sum` tree over `leaves` leaf values; returns (graph, expected root value).
pub fn sum_tree(leaves: &[(String, Value)]) -> (Vec<Value>, String) {
    let mut tasks: Vec<Value> = Vec::new();
    let mut level: Vec<String> = leaves.iter().map(|(k, _)| k.clone()).collect();
    for (_, t) in leaves {
        tasks.push(t.clone());
    }
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        level = level
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                let key = format!("s{depth}-{i}");
                tasks.push(serde_json::json!({"key": key, "builtin": "sum", "deps": pair}));
                key
            })
            .collect();
    }
    (tasks, level[0].clone())
}

/// A scheduler plus nannies, each supervising worker slots.
pub struct NannyCluster {
    pub dir: tempfile::TempDir,
    pub scheduler: Child,
    pub nannies: Vec<Child>,
    pub file: PathBuf,
}

impl NannyCluster {
    /// A scheduler (with `scheduler_args`) and one nanny with `nworkers` slots (`nanny_args`,
    /// `nanny_env`), waiting until every slot's worker joined.
    pub fn start(
        nworkers: usize,
        scheduler_args: &[&str],
        nanny_args: &[&str],
        nanny_env: &[(&str, &str)],
    ) -> NannyCluster {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scheduler.json");
        let scheduler = Command::new(RUSK)
            .args(["scheduler", "--listen", "127.0.0.1:0", "--scheduler-file"])
            .arg(&file)
            .args(scheduler_args)
            .env("RUSK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file(dir.path(), "scheduler-out"))
            .stderr(log_file(dir.path(), "scheduler"))
            .spawn()
            .unwrap();
        let mut c = NannyCluster {
            dir,
            scheduler,
            nannies: Vec::new(),
            file,
        };
        wait_until(
            Duration::from_secs(10),
            || c.file.exists(),
            "scheduler file",
        );
        c.add_nanny(nworkers, nanny_args, nanny_env);
        if !nanny_env
            .iter()
            .any(|(k, _)| *k == "RUSK_FAULT_CRASH_ON_START")
        {
            c.wait_workers(nworkers);
        }
        c
    }

    /// Start a new scheduler process (after the old one was killed) with the same scheduler
    /// file and `args`; waits until it has written the file. Returns how long that took.
    pub fn restart_scheduler(&mut self, args: &[&str]) -> Duration {
        let _ = self.scheduler.wait();
        let t0 = Instant::now();
        let n = unique();
        self.scheduler = Command::new(RUSK)
            .args(["scheduler", "--listen", "127.0.0.1:0", "--scheduler-file"])
            .arg(&self.file)
            .args(args)
            .env("RUSK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file(self.dir.path(), &format!("scheduler-out-r{n}")))
            .stderr(log_file(self.dir.path(), &format!("scheduler-r{n}")))
            .spawn()
            .unwrap();
        let pid = self.scheduler.id() as u64;
        wait_until(
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&self.file)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .is_some_and(|v| v["pid"].as_u64() == Some(pid))
            },
            "the new scheduler's file",
        );
        t0.elapsed()
    }

    pub fn add_nanny(&mut self, nworkers: usize, args: &[&str], env: &[(&str, &str)]) -> usize {
        let i = self.nannies.len();
        let mut cmd = Command::new(RUSK);
        cmd.args([
            "nanny",
            "--enable-fault-injection",
            "--name",
            &format!("n{i}"),
            "--nworkers",
            &nworkers.to_string(),
        ])
        .arg("--scheduler-file")
        .arg(&self.file)
        .args(args)
        .env("RUSK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file(self.dir.path(), &format!("nanny{i}-out")))
        .stderr(log_file(self.dir.path(), &format!("nanny{i}")));
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.nannies.push(cmd.spawn().unwrap());
        i
    }

    pub fn rusk(&self, args: &[&str]) -> Output {
        Command::new(RUSK)
            .args(args)
            .arg("--scheduler-file")
            .arg(&self.file)
            .env("RUSK_LOG", "warn")
            .output()
            .unwrap()
    }

    pub fn status(&self) -> Value {
        let out = self.rusk(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn workers(&self) -> Vec<Value> {
        self.status()["workers"].as_array().unwrap().clone()
    }

    pub fn wait_workers(&self, n: usize) {
        wait_until(
            Duration::from_secs(30),
            || self.workers().len() == n,
            &format!("{n} workers"),
        );
    }

    /// The worker of `slot` (of nanny n0) as the scheduler sees it.
    pub fn worker_of_slot(&self, slot: u64) -> Option<Value> {
        self.workers()
            .into_iter()
            .find(|w| w["slot"].as_u64() == Some(slot))
    }

    /// Wait until slot `slot` runs an incarnation other than `old`; returns it.
    pub fn wait_new_incarnation(&self, slot: u64, old: u64, timeout: Duration) -> Value {
        let mut found = None;
        wait_until(
            timeout,
            || {
                found = self
                    .worker_of_slot(slot)
                    .filter(|w| w["incarnation"].as_u64() != Some(old));
                found.is_some()
            },
            &format!("a new incarnation in slot {slot}"),
        );
        found.unwrap()
    }

    pub fn events(&self) -> Vec<Value> {
        let out = self.rusk(&["events", "--json"]);
        assert!(
            out.status.success(),
            "events failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn write_graph(&self, name: &str, graph: &Value) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec(graph).unwrap()).unwrap();
        p
    }

    pub fn submit_wait(&self, graph: &Value) -> (bool, Value, String) {
        self.submit_wait_within(graph, SUBMIT_DEADLINE)
    }

    pub fn submit_wait_within(&self, graph: &Value, deadline: Duration) -> (bool, Value, String) {
        let child = self.submit_spawn(graph);
        let out = wait_output(child, deadline);
        let stdout = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.success(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn submit_spawn(&self, graph: &Value) -> Child {
        let p = self.write_graph(&format!("graph-{}.json", unique()), graph);
        Command::new(RUSK)
            .args([
                "submit",
                p.to_str().unwrap(),
                "--wait",
                "--json",
                "--scheduler-file",
            ])
            .arg(&self.file)
            .env("RUSK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for NannyCluster {
    fn drop(&mut self) {
        for n in &mut self.nannies {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
        if std::thread::panicking() {
            for name in ["scheduler", "nanny0", "nanny1"] {
                let text = self.log(name);
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {name}.log (last lines) ---");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// A small tmpfs (a disk that fills up), unmounted when dropped. Root only: `None` (and a
/// line saying the test is skipped) otherwise; CI runs as root.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small");
        std::fs::create_dir_all(&path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Some(SmallDisk { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The one output of a `rusk submit --wait --json` that succeeded.
pub fn single_output(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_object().unwrap().values().next().unwrap().clone()
}

/// No test waits longer than this for a graph.
pub const SUBMIT_DEADLINE: Duration = Duration::from_secs(120);

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Wait for a child's output, killing it (and failing the test) past `deadline`.
pub fn wait_output(mut child: Child, deadline: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "command did not finish within {deadline:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signal `pid`; false when it no longer exists (it died between a status read and now).
pub fn try_signal(pid: u64, sig: i32) -> bool {
    if unsafe { libc::kill(pid as i32, sig) } == 0 {
        return true;
    }
    let e = std::io::Error::last_os_error();
    assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "kill {pid} {sig}: {e}");
    false
}

pub fn signal(pid: u64, sig: i32) {
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {pid} {sig}"
    );
}

pub fn pid_alive(pid: u64) -> bool {
    // A zombie counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A ~10,000-task graph whose leaves wait on slow tasks, so that it runs for a few seconds:
/// `slow` sleep tasks, leaves `concat` their index (after a slow task), a sum tree on top.
pub fn slow_sum_graph(slow: usize, leaves: usize, sleep_ms: u64) -> (Value, String) {
    let mut leaf_specs = Vec::new();
    let mut sleeps = Vec::new();
    for j in 0..slow {
        sleeps.push(json!({"key": format!("sleep{j}"), "builtin": "sleep_ms", "args": [sleep_ms.to_string()]}));
    }
    for i in 0..leaves {
        let key = format!("leaf{i}");
        let spec = json!({"key": key, "builtin": "concat", "args": [i.to_string()], "deps": [format!("sleep{}", i % slow)]});
        leaf_specs.push((key, spec));
    }
    let (mut tasks, root) = sum_tree(&leaf_specs);
    tasks.extend(sleeps);
    let expected = (leaves * (leaves - 1) / 2).to_string();
    (json!({"tasks": tasks, "outputs": [root]}), expected)
}

// ---------------------------------------------------------------------------------------------
// Python task payloads, made by `python3` with `cloudpickle` as the Python client makes them

pub const PRELUDE: &str = r#"
import sys, json, pickle, cloudpickle, os, time, ctypes
HEADER = json.dumps({"py": "%d.%d" % sys.version_info[:2], "cloudpickle": cloudpickle.__version__, "rusk": 2}).encode() + b"\n"
def payload(f, args=(), kwargs=None, paths=()):
    return HEADER + cloudpickle.dumps((f, tuple(args), dict(kwargs or {}), [tuple(p) for p in paths]), protocol=5)
out = []
"#;

pub fn python3(script: &str) -> String {
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("these tests need python3 (with cloudpickle) on PATH");
    assert!(
        o.status.success(),
        "python3 failed (these tests need cloudpickle: pip install cloudpickle): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Byte strings made by `code`, which appends them to `out` (with `payload(f, args, kwargs,
/// dep_paths)` available, the Python client's format).
pub fn python_bytes(code: &str) -> Vec<Vec<u8>> {
    let script = format!("{PRELUDE}\n{code}\nfor b in out:\n    print(b.hex())\n");
    python3(&script).lines().map(hex_decode).collect()
}

pub fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
