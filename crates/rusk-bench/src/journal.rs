//! `rusk-bench journal`: what the scheduler's journal costs, and how fast a killed scheduler is
//! back.
//!
//! - **cost**: tasks/s of `rusk local` (which keeps a journal by default) against
//!   `rusk local --no-journal`, alternated in the same run, on the e2e suite's graphs.
//!   Target: the journal keeps at least [`JOURNAL_KEEPS_AT_LEAST`] of the throughput.
//! - **restart**: a scheduler with a journal, a nanny with 2 workers, a graph of 20 ms sleep
//!   tasks in flight; the scheduler is killed with SIGKILL and started again on the journal at
//!   once. Measured from the kill: until the new scheduler has written its scheduler file
//!   (serving), and until the graph has made progress again (a task more finished than when the
//!   new scheduler first reported it, polled every 10 ms).
use crate::e2e::{self, E2eOptions, Scratch};
use crate::graphs::Shape;
use crate::report::{median, Record, Target};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Throughput with the journal over throughput without it.
pub const JOURNAL_KEEPS_AT_LEAST: f64 = 0.9;
/// From the kill to the graph making progress again.
pub const BACK_IN_AT_MOST: f64 = 2.0;

pub struct JournalOptions {
    pub tasks: u64,
    pub repeat: u32,
    pub rusk: PathBuf,
    pub timeout: Duration,
}

pub fn run(opts: &JournalOptions) -> Result<Vec<Record>, String> {
    let base = E2eOptions::for_ab(opts.tasks, opts.repeat, opts.rusk.clone(), opts.timeout);
    let mut records = Vec::new();
    for shape in [Shape::Independent, Shape::Tree] {
        let (rates, n) = e2e::ab_rates(&base, shape, [&["--no-journal"], &[]], "journal")?;
        let (off, on) = (median(&rates[0]), median(&rates[1]));
        let label = format!("{shape} {n}, 2w x 1t");
        records.push(Record::new(
            "journal",
            format!("{label}: tasks/s without journal"),
            off,
            "1/s",
        ));
        records.push(Record::new(
            "journal",
            format!("{label}: tasks/s with journal"),
            on,
            "1/s",
        ));
        records.push(
            Record::new(
                "journal",
                format!("{label}: tasks/s with / without"),
                on / off,
                "x",
            )
            .target(Target::AtLeast(JOURNAL_KEEPS_AT_LEAST)),
        );
    }
    let mut serving = Vec::new();
    let mut progress = Vec::new();
    for i in 0..opts.repeat {
        let (s, p) = restart_once(&opts.rusk)?;
        eprintln!(
            "journal restart {}/{}: serving after {:.3} s, progress after {:.3} s",
            i + 1,
            opts.repeat,
            s,
            p
        );
        serving.push(s);
        progress.push(p);
    }
    records.push(Record::new(
        "journal",
        format!(
            "kill -9 to a new scheduler serving (median of {})",
            opts.repeat
        ),
        median(&serving),
        "s",
    ));
    records.push(
        Record::new(
            "journal",
            format!(
                "kill -9 to the graph progressing again (median of {})",
                opts.repeat
            ),
            median(&progress),
            "s",
        )
        .target(Target::Below(BACK_IN_AT_MOST)),
    );
    Ok(records)
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(rusk: &Path, args: &[&str], log: &Path) -> Result<Child, String> {
    let f = std::fs::File::create(log).map_err(|e| e.to_string())?;
    Command::new(rusk)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", rusk.display()))
}

/// Tasks finished so far in the cluster (from `rusk status --json`), or `None` while it does
/// not answer.
fn finished(rusk: &Path, file: &str) -> Option<u64> {
    let out = Command::new(rusk)
        .args(["status", "--json", "--scheduler-file", file])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let graphs = v.get("graphs")?.as_array()?;
    Some(
        graphs
            .iter()
            .filter_map(|g| g.get("done").and_then(|d| d.as_u64()))
            .sum(),
    )
}

fn file_pid(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("pid")?.as_u64()
}

/// One kill and restart: (seconds to serving, seconds to progress).
fn restart_once(rusk: &Path) -> Result<(f64, f64), String> {
    let scratch = Scratch::new()?;
    let dir = &scratch.0;
    let file = dir.join("scheduler.json");
    let file_s = file.to_string_lossy().into_owned();
    let journal = dir.join("journal.redb").to_string_lossy().into_owned();
    let sched_args = [
        "scheduler",
        "--listen",
        "127.0.0.1:0",
        "--dashboard",
        "none",
        "--scheduler-file",
        &file_s,
        "--journal",
        &journal,
    ];
    let mut procs = Procs(vec![spawn(rusk, &sched_args, &dir.join("s0.log"))?]);
    wait_for(Duration::from_secs(10), || file.exists(), "scheduler file")?;
    procs.0.push(spawn(
        rusk,
        &["nanny", "--scheduler-file", &file_s, "--nworkers", "2"],
        &dir.join("nanny.log"),
    )?);
    let tasks: Vec<serde_json::Value> = (0..600)
        .map(|i| serde_json::json!({"key": format!("s{i}"), "builtin": "sleep_ms", "args": ["20"]}))
        .collect();
    let graph = dir.join("graph.json");
    std::fs::write(&graph, serde_json::json!({ "tasks": tasks }).to_string())
        .map_err(|e| e.to_string())?;
    let submit = Command::new(rusk)
        .args(["submit", "--wait", "--scheduler-file", &file_s])
        .arg(&graph)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    procs.0.push(submit);
    wait_for(
        Duration::from_secs(20),
        || finished(rusk, &file_s).is_some_and(|d| d >= 100),
        "the graph under way",
    )?;
    let killed = Instant::now();
    procs.0[0].kill().map_err(|e| e.to_string())?;
    let _ = procs.0[0].wait();
    procs.0[0] = spawn(rusk, &sched_args, &dir.join("s1.log"))?;
    let new_pid = procs.0[0].id() as u64;
    wait_for(
        Duration::from_secs(10),
        || file_pid(&file) == Some(new_pid),
        "the new scheduler's file",
    )?;
    let serving = killed.elapsed().as_secs_f64();
    // The first count the new scheduler reports (results adopted included), then one more.
    let mut first = None;
    wait_for(
        Duration::from_secs(30),
        || match (finished(rusk, &file_s), first) {
            (Some(d), None) => {
                first = Some(d);
                false
            }
            (Some(d), Some(f)) => d > f,
            (None, _) => false,
        },
        "progress after the restart",
    )?;
    Ok((serving, killed.elapsed().as_secs_f64()))
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool, what: &str) -> Result<(), String> {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > limit {
            return Err(format!("journal bench: no {what} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
