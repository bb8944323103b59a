//! `rusk-bench e2e`: end-to-end throughput of a real cluster on this machine.
//!
//! Each run is `rusk local GRAPH --workers W --nthreads T --json`: one scheduler process and `W`
//! worker processes on loopback. `rusk local` prints `rusk local: finished in X s` on stderr,
//! timing submission to all outputs gathered (process start-up is not included); tasks/s is the
//! graph's task count over that time. The outputs printed on stdout are checked: every output of
//! the independent graph must be present, and the tree's root must be the right sum.
use crate::graphs::{self, BenchGraph, Shape};
use crate::report::{median, Record, Target};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Target from the core-engine issue.
pub const TASKS_PER_SEC_TARGET: f64 = 100_000.0;

pub struct E2eOptions {
    pub tasks: u64,
    pub repeat: u32,
    pub workers: u32,
    pub nthreads: u32,
    pub shapes: Vec<Shape>,
    pub rusk: PathBuf,
    pub timeout: Duration,
    /// More flags for `rusk local` (`rusk-bench net`: `--tls on`).
    pub local_args: Vec<String>,
}

/// The `rusk` binary next to this one (`target/release/rusk` when run from `target/release`),
/// else `target/release/rusk` relative to the current directory.
pub fn default_rusk() -> PathBuf {
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("rusk")))
    {
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("target/release/rusk")
}

/// A scratch directory removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("rusk-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn write_graph(g: &BenchGraph, path: &Path) -> Result<(), String> {
    let f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    serde_json::to_writer(&mut w, &g.spec)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::io::Write::flush(&mut w).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The last few lines of a text, for error messages.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Parse `rusk local: finished in X s` from `rusk local`'s stderr.
pub fn parse_finished(stderr: &str) -> Option<f64> {
    stderr.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("rusk local: finished in ")?;
        let secs: f64 = rest.strip_suffix(" s")?.trim().parse().ok()?;
        (secs.is_finite() && secs > 0.0).then_some(secs)
    })
}

/// Check the outputs `rusk local --json` printed.
pub(crate) fn check_outputs(g: &BenchGraph, stdout: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("stdout is not the JSON outputs object: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("stdout is not a JSON object of outputs")?;
    match &g.expected_root {
        Some((root, sum)) => {
            let got = obj
                .get(root)
                .and_then(|r| r.as_str())
                .ok_or_else(|| format!("output {root:?} missing or failed"))?;
            if got.trim() != sum.to_string() {
                return Err(format!("tree sum is {got:?}, expected {sum}"));
            }
        }
        None => {
            let n = g.spec.tasks.len();
            let ok = obj.values().filter(|r| r.is_string()).count();
            if obj.len() != n || ok != n {
                return Err(format!(
                    "expected {n} outputs, got {} ({ok} with a value)",
                    obj.len()
                ));
            }
        }
    }
    Ok(())
}

/// What one `rusk local` run took.
pub(crate) struct Timing {
    /// As printed by `rusk local`: submission to outputs gathered.
    pub(crate) finished: f64,
    /// The whole process, start-up and shut-down included.
    pub(crate) wall: f64,
}

/// One `rusk local` run.
pub(crate) fn run_once(
    opts: &E2eOptions,
    g: &BenchGraph,
    graph_path: &Path,
    dir: &Path,
) -> Result<Timing, String> {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let stdout = File::create(&out_path).map_err(|e| e.to_string())?;
    let stderr = File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(&opts.rusk)
        .arg("local")
        .arg(graph_path)
        .args(["--workers", &opts.workers.to_string()])
        .args(["--nthreads", &opts.nthreads.to_string()])
        .arg("--json")
        .args(&opts.local_args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", opts.rusk.display()))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > opts.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("rusk local took longer than {:?}", opts.timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for rusk local: {e}")),
        }
    };
    let err_text = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "rusk local failed ({status}):\n{}",
            tail(&err_text, 20)
        ));
    }
    let wall = start.elapsed().as_secs_f64();
    let finished = parse_finished(&err_text).ok_or_else(|| {
        format!(
            "no \"rusk local: finished in X s\" line on stderr:\n{}",
            tail(&err_text, 20)
        )
    })?;
    let out_text = std::fs::read_to_string(&out_path)
        .map_err(|e| format!("cannot read {}: {e}", out_path.display()))?;
    check_outputs(g, &out_text)?;
    Ok(Timing { finished, wall })
}

impl E2eOptions {
    /// The options of a same-run comparison ([`ab_rates`]): 2 workers x 1 thread.
    pub(crate) fn for_ab(tasks: u64, repeat: u32, rusk: PathBuf, timeout: Duration) -> Self {
        E2eOptions {
            tasks,
            repeat,
            workers: 2,
            nthreads: 1,
            shapes: Vec::new(),
            rusk,
            timeout,
            local_args: Vec::new(),
        }
    }
}

/// tasks/s of `rusk local` on `shape` with two sets of extra flags, alternated run by run
/// (`repeat` runs each, 2 workers x 1 thread), for comparisons made in the same run:
/// `[rates with sides[0], rates with sides[1]]`, and the graph's task count.
pub(crate) fn ab_rates(
    base: &E2eOptions,
    shape: Shape,
    sides: [&[&str]; 2],
    what: &str,
) -> Result<([Vec<f64>; 2], usize), String> {
    let scratch = Scratch::new()?;
    let g = graphs::build(shape, base.tasks);
    let n = g.spec.tasks.len() as f64;
    let path = scratch.0.join(format!("{shape}.json"));
    write_graph(&g, &path)?;
    let mut rates = [Vec::new(), Vec::new()];
    for i in 0..base.repeat {
        for (side, args) in sides.iter().enumerate() {
            let o = E2eOptions {
                tasks: base.tasks,
                repeat: 1,
                workers: 2,
                nthreads: 1,
                shapes: vec![shape],
                rusk: base.rusk.clone(),
                timeout: base.timeout,
                local_args: args.iter().map(|s| s.to_string()).collect(),
            };
            let t = run_once(&o, &g, &path, &scratch.0)
                .map_err(|e| format!("{what} {shape} {args:?} run {}: {e}", i + 1))?;
            eprintln!(
                "{what} {shape} {args:?} run {}/{}: {:.0} tasks/s",
                i + 1,
                base.repeat,
                n / t.finished
            );
            rates[side].push(n / t.finished);
        }
    }
    Ok((rates, g.spec.tasks.len()))
}

pub fn run(opts: &E2eOptions) -> Result<Vec<Record>, String> {
    if !opts.rusk.is_file() {
        return Err(format!(
            "no rusk binary at {} (build it with `cargo build --release -p rusk`, or pass --rusk)",
            opts.rusk.display()
        ));
    }
    let scratch = Scratch::new()?;
    let mut records = Vec::new();
    for &shape in &opts.shapes {
        let g = graphs::build(shape, opts.tasks);
        let n = g.spec.tasks.len();
        let path = scratch.0.join(format!("{shape}.json"));
        write_graph(&g, &path)?;
        let mut secs = Vec::new();
        let mut walls = Vec::new();
        for i in 0..opts.repeat {
            let t = run_once(opts, &g, &path, &scratch.0)
                .map_err(|e| format!("e2e {shape} run {}: {e}", i + 1))?;
            eprintln!(
                "e2e {shape} run {}/{}: {n} tasks in {:.3} s, {:.0} tasks/s \
                 ({:.3} s with process start-up)",
                i + 1,
                opts.repeat,
                t.finished,
                n as f64 / t.finished,
                t.wall
            );
            secs.push(t.finished);
            walls.push(t.wall);
        }
        let rates: Vec<f64> = secs.iter().map(|s| n as f64 / s).collect();
        let label = format!("{shape} {n}, {}w x {}t", opts.workers, opts.nthreads);
        records.push(
            Record::new(
                "e2e",
                format!("{label}: tasks/s (median of {})", opts.repeat),
                median(&rates),
                "1/s",
            )
            .target(Target::AtLeast(TASKS_PER_SEC_TARGET)),
        );
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        records.push(Record::new(
            "e2e",
            format!("{label}: tasks/s min"),
            min,
            "1/s",
        ));
        records.push(Record::new(
            "e2e",
            format!("{label}: tasks/s max"),
            max,
            "1/s",
        ));
        records.push(Record::new(
            "e2e",
            format!("{label}: whole rusk local run (median)"),
            median(&walls),
            "s",
        ));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_line_is_parsed() {
        let err = "rusk local: scheduler at 127.0.0.1:1 with 2 worker(s)\n\
                   rusk local: finished in 0.734 s\n";
        assert_eq!(parse_finished(err), Some(0.734));
        assert_eq!(parse_finished("rusk local: finished in nope s"), None);
        assert_eq!(parse_finished("rusk local: finished in 0.000 s"), None);
        assert_eq!(parse_finished(""), None);
    }

    #[test]
    fn outputs_are_checked() {
        let t = graphs::tree(4);
        let root = t.expected_root.clone().unwrap().0;
        assert!(check_outputs(&t, &format!("{{\"{root}\":\"10\"}}")).is_ok());
        assert!(check_outputs(&t, &format!("{{\"{root}\":\"11\"}}")).is_err());
        assert!(check_outputs(&t, &format!("{{\"{root}\":null}}")).is_err());
        assert!(check_outputs(&t, "garbage").is_err());
        let i = graphs::independent(2);
        assert!(check_outputs(&i, r#"{"t0":"","t1":""}"#).is_ok());
        assert!(check_outputs(&i, r#"{"t0":""}"#).is_err());
    }
}
