//! The data plane with real processes: large values in shared memory across workers, spilling
//! under a memory limit, a corrupt spill file, a full spill disk.
mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// A `cmd` task whose stdout is `mib` MiB of a byte pattern named by `tag`.
fn producer(key: &str, tag: &str, mib: u64) -> Value {
    json!({"key": key, "cmd": ["sh", "-c",
        format!("yes {tag} | head -c {}", mib * MIB)]})
}

/// A `cmd` task printing the size and the first line of each input.
fn consumer(key: &str, deps: &[String], after: &[&str]) -> Value {
    let mut all: Vec<String> = deps.to_vec();
    all.extend(after.iter().map(|s| s.to_string()));
    let script = (0..deps.len())
        .map(|i| {
            format!("printf '%s %s\\n' $(wc -c < \"$RUSK_DEP_{i}\") $(head -n1 \"$RUSK_DEP_{i}\")")
        })
        .collect::<Vec<_>>()
        .join("; ");
    json!({"key": key, "cmd": ["sh", "-c", script], "deps": all})
}

fn expected(tags: &[&str], mib: u64) -> String {
    tags.iter()
        .map(|t| format!("{} {t}\n", mib * MIB))
        .collect()
}

fn worker_stat(c: &Cluster, field: &str) -> u64 {
    c.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[field].as_u64().unwrap_or(0))
        .sum()
}

fn fetched(c: &Cluster) -> u64 {
    c.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["vitals"]["bytes_fetched"].as_u64().unwrap_or(0))
        .sum()
}

/// Values of hundreds of MB (over the old 128 MiB cap) go from a command's stdout into shared
/// memory, across workers through the streamed transfer, and into the next command as a file
/// read in place.
#[test]
fn large_command_outputs_cross_workers_and_feed_the_next_command() {
    // One task queued per worker thread at a time, so the producers land on both workers.
    let c = Cluster::start_with(2, &["--assigned-per-thread", "1"], &[]);
    let tags = ["alpha", "beta", "gamma", "delta"];
    let mut tasks: Vec<Value> = tags
        .iter()
        .map(|t| producer(&format!("p-{t}"), t, 160))
        .collect();
    let keys: Vec<String> = tags.iter().map(|t| format!("p-{t}")).collect();
    tasks.push(consumer("c", &keys, &[]));
    let (ok, out, err) = c.submit_wait(&json!({"tasks": tasks, "outputs": ["c"]}));
    assert!(ok, "{err}");
    assert_eq!(out["c"].as_str().unwrap(), expected(&tags, 160));
    // Four 160 MiB producers spread over two workers: the consumer fetched some of them.
    wait_until(
        Duration::from_secs(15),
        || fetched(&c) >= 160 * MIB,
        "a value fetched across workers (reported with the vitals)",
    );
}

/// The spill files under a spill dir (each worker process has its own `spill-<pid>` in it).
fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(spill_files(&e.path()));
            } else if e.path().extension().is_some_and(|x| x == "spill") {
                out.push(e.path());
            }
        }
    }
    out
}

/// A worker with a 200 MiB limit holding 6 x 50 MiB of results spills the least recently used
/// ones (target 60 %), keeps running, reports the spilled bytes, and its spilled results feed
/// the consumer correctly.
#[test]
fn results_over_the_memory_target_are_spilled_and_still_used() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = tmp.path().join("spill");
    let c = Cluster::start_with(
        1,
        &[],
        &[
            "--memory-limit",
            "200MiB",
            "--spill-dir",
            spill.to_str().unwrap(),
        ],
    );
    let tags = ["a1", "b2", "c3", "d4", "e5", "f6"];
    let mut tasks: Vec<Value> = tags
        .iter()
        .map(|t| producer(&format!("p-{t}"), t, 50))
        .collect();
    // Hold the consumer back until the producers are all stored (and spilled).
    tasks.push(json!({"key": "gate", "builtin": "sleep_ms", "args": ["2500"]}));
    let keys: Vec<String> = tags.iter().map(|t| format!("p-{t}")).collect();
    tasks.push(consumer("c", &keys, &["gate"]));
    let child = c.submit_spawn(&json!({"tasks": tasks, "outputs": ["c"]}));
    wait_until(
        Duration::from_secs(30),
        || worker_stat(&c, "spilled_bytes") >= 150 * MIB,
        "spilled bytes reported",
    );
    assert!(spill_files(&spill).len() >= 3, "{:?}", spill_files(&spill));
    // Managed memory back under the 60 % target (120 MiB).
    wait_until(
        Duration::from_secs(30),
        || worker_stat(&c, "stored_bytes") <= 120 * MIB,
        "managed memory under the target",
    );
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["c"].as_str().unwrap(), expected(&tags, 50));
    // The same worker process held everything: spilling, not a restart.
    let mut c = c;
    assert!(c.workers[0].try_wait().unwrap().is_none());
}

/// A spill file corrupted on disk is caught by its checksum: that result is lost and
/// recomputed from its lineage, and the graph still finishes with the right answer.
#[test]
fn a_corrupt_spill_file_means_recompute_not_a_wrong_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = tmp.path().join("spill");
    let c = Cluster::start_with(
        1,
        &[],
        &[
            "--memory-limit",
            "100MiB",
            "--spill-dir",
            spill.to_str().unwrap(),
        ],
    );
    let tags = ["one", "two", "three", "four"];
    let mut tasks: Vec<Value> = tags
        .iter()
        .map(|t| producer(&format!("p-{t}"), t, 30))
        .collect();
    tasks.push(json!({"key": "gate", "builtin": "sleep_ms", "args": ["4000"]}));
    let keys: Vec<String> = tags.iter().map(|t| format!("p-{t}")).collect();
    tasks.push(consumer("c", &keys, &["gate"]));
    let child = c.submit_spawn(&json!({"tasks": tasks, "outputs": ["c"]}));
    wait_until(
        Duration::from_secs(30),
        || !spill_files(&spill).is_empty() && worker_stat(&c, "spilled_results") >= 1,
        "a spill file",
    );
    // Flip bytes in the middle of every spill file.
    for f in spill_files(&spill) {
        let mut b = std::fs::read(&f).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        b[mid + 1] ^= 0xff;
        std::fs::write(&f, &b).unwrap();
    }
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["c"].as_str().unwrap(), expected(&tags, 30));
    let log = std::fs::read_to_string(c.dir.path().join("w0.log")).unwrap_or_default();
    assert!(
        log.contains("checksum mismatch") && log.contains("spilled result is lost"),
        "the corrupt file was caught and its result recomputed: {log}"
    );
    // And it is in the recovery log, reported by the worker.
    let events = c.rusk(&["events", "--json"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("spill-lost") && events.contains("\"source\":\"worker\""),
        "{events}"
    );
}

/// A spill disk that fills up pauses the worker with an event (it does not crash); the
/// paused worker still serves its results to the other worker, which finishes the graph.
#[test]
fn a_full_spill_disk_pauses_the_worker_with_an_event() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let small = disk.path.clone();
    let mut c = Cluster::start_with(
        1,
        &[],
        &[
            "--memory-limit",
            "100MiB",
            "--spill-dir",
            small.to_str().unwrap(),
        ],
    );
    let tags = ["aa", "bb", "cc", "dd"];
    let mut tasks: Vec<Value> = tags
        .iter()
        .map(|t| producer(&format!("p-{t}"), t, 30))
        .collect();
    // The consumer waits on a gate, so the results stay (over the target) for a while.
    tasks.push(json!({"key": "gate", "builtin": "sleep_ms", "args": ["3000"]}));
    let keys: Vec<String> = tags.iter().map(|t| format!("p-{t}")).collect();
    tasks.push(consumer("c", &keys, &["gate"]));
    let child = c.submit_spawn(&json!({"tasks": tasks, "outputs": ["c"]}));
    let mut saw_paused = false;
    wait_until(
        Duration::from_secs(30),
        || {
            saw_paused |= c.status()["workers"][0]["state"] == "paused";
            let out = c.rusk(&["events", "--json"]);
            String::from_utf8_lossy(&out.stdout).contains("spill disk full")
        },
        "a paused event naming the full spill disk",
    );
    saw_paused |= c.status()["workers"][0]["state"] == "paused";
    assert!(saw_paused, "rusk status showed the worker paused");
    // A second worker (plenty of memory) takes the consumer; the paused one serves its data.
    c.add_worker();
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["c"].as_str().unwrap(), expected(&tags, 30));
    // The paused worker is alive: the same process answered all along.
    assert!(c.workers[0].try_wait().unwrap().is_none());
}

/// `kill -9` of a worker while it spills: its nanny restarts the slot, the new worker removes
/// what the dead one left in the spill dir, and the graph still finishes with the right result
/// (the lost results are recomputed).
#[test]
fn kill_9_while_spilling_leaves_nothing_behind_after_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = tmp.path().join("spill");
    let c = NannyCluster::start(
        1,
        &[],
        &[
            "--memory-limit",
            "100MiB",
            "--spill-dir",
            spill.to_str().unwrap(),
        ],
        &[],
    );
    let tags = ["k1", "k2", "k3", "k4", "k5"];
    let mut tasks: Vec<Value> = tags
        .iter()
        .map(|t| producer(&format!("p-{t}"), t, 30))
        .collect();
    tasks.push(json!({"key": "gate", "builtin": "sleep_ms", "args": ["1500"]}));
    let keys: Vec<String> = tags.iter().map(|t| format!("p-{t}")).collect();
    tasks.push(consumer("c", &keys, &["gate"]));
    let child = c.submit_spawn(&json!({"tasks": tasks, "outputs": ["c"]}));
    wait_until(
        Duration::from_secs(30),
        || !spill_files(&spill).is_empty(),
        "spilling started",
    );
    let w = c.worker_of_slot(0).expect("slot 0");
    let (pid, inc) = (
        w["pid"].as_u64().unwrap() as i32,
        w["incarnation"].as_u64().unwrap(),
    );
    // SAFETY: killing our own test's worker process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let own = spill.join(format!("spill-{pid}"));
    c.wait_new_incarnation(0, inc, Duration::from_secs(20));
    wait_until(
        Duration::from_secs(10),
        || !own.exists(),
        "the dead worker's spill files removed by its successor",
    );
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["c"].as_str().unwrap(), expected(&tags, 30));
}

/// The store does not depend on /dev/shm: a worker whose /dev/shm is a 64 MiB tmpfs (the
/// default of a container) stores and serves a 200 MiB value, and says which store it uses.
#[test]
fn a_small_dev_shm_does_not_limit_the_store() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a private mount namespace needs root");
        return;
    }
    let mut c = Cluster::start(0);
    let log = c.dir.path().join("w-small-shm.log");
    let script = format!(
        "mount -t tmpfs -o size=64m tmpfs /dev/shm && exec {} worker --name w-small-shm --scheduler-file {}",
        RUSK,
        c.file.display()
    );
    let child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("RUSK_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    c.workers.push(child);
    c.wait_workers(1);
    let tasks = vec![
        producer("big", "shm", 200),
        consumer("c", &["big".to_string()], &[]),
    ];
    let (ok, out, err) = c.submit_wait(&json!({"tasks": tasks, "outputs": ["c"]}));
    assert!(ok, "{err}");
    assert_eq!(out["c"].as_str().unwrap(), expected(&["shm"], 200));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("object store ready") && text.contains("memfd"),
        "{text}"
    );
}
