//! End-to-end tests of the core engine with the real `rusk` binaries on loopback.
mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

/// This machine's host name, as workers and nannies report it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn builtin_and_cmd_graph_from_the_docs_gives_the_right_result() {
    let c = Cluster::start(2);
    let graph = json!({"tasks": [
        {"key": "a", "builtin": "sum", "args": ["1", "2"]},
        {"key": "b", "builtin": "sum", "args": ["10"], "deps": ["a"]},
        {"key": "c", "cmd": ["sh", "-c", "cat \"$RUSK_DEP_0\"; echo !"], "deps": ["b"]}
    ], "outputs": ["c"]});
    let (ok, out, err) = c.submit_wait(&graph);
    assert!(ok, "{err}");
    assert_eq!(out, json!({"c": "13!\n"}));
}

#[test]
fn many_outputs_concat_env_cwd_and_fan_in() {
    let c = Cluster::start(2);
    let dir = c.dir.path().to_str().unwrap().to_string();
    let mut tasks = vec![];
    for i in 0..50 {
        tasks
            .push(json!({"key": format!("x{i}"), "builtin": "concat", "args": [format!("<{i}>")]}));
    }
    let deps: Vec<String> = (0..50).map(|i| format!("x{i}")).collect();
    tasks.push(json!({"key": "all", "builtin": "concat", "deps": deps}));
    tasks.push(
        json!({"key": "env", "cmd": ["sh", "-c", "printf '%s in %s' \"$GREETING\" \"$(pwd)\""],
                      "env": {"GREETING": "hello"}, "cwd": dir}),
    );
    tasks.push(json!({"key": "files", "cmd": ["sh", "-c", "cat \"$RUSK_DEP_1\" \"$RUSK_DEP_0\""], "deps": ["x1", "x2"]}));
    let (ok, out, err) =
        c.submit_wait(&json!({"tasks": tasks, "outputs": ["all", "env", "files"]}));
    assert!(ok, "{err}");
    let expected_all: String = (0..50).map(|i| format!("<{i}>")).collect();
    assert_eq!(out["all"], json!(expected_all));
    assert_eq!(out["env"], json!(format!("hello in {dir}")));
    assert_eq!(out["files"], json!("<2><1>"));
}

#[test]
fn command_failure_reports_exit_code_and_stderr_and_retries_rerun_it() {
    let c = Cluster::start(1);
    let marker = c.dir.path().join("marker");
    let m = marker.to_str().unwrap();
    let graph = json!({"tasks": [
        {"key": "bad", "cmd": ["sh", "-c", "echo oops-on-stderr >&2; exit 7"]},
        {"key": "after", "builtin": "concat", "deps": ["bad"]},
        {"key": "flaky", "cmd": ["sh", "-c", format!("if [ -e {m} ]; then echo second; else touch {m}; exit 1; fi")], "retries": 1},
        {"key": "fails", "builtin": "fail", "args": ["custom", "message"]}
    ], "outputs": ["after", "flaky", "fails"]});
    let (ok, out, err) = c.submit_wait(&graph);
    assert!(!ok, "a failed output must make the exit status non-zero");
    assert_eq!(out["flaky"], json!("second\n"));
    assert_eq!(out["after"], Value::Null);
    assert!(
        err.contains("exit code 7") && err.contains("oops-on-stderr"),
        "{err}"
    );
    assert!(err.contains("dependency \"bad\" failed"), "{err}");
    assert!(err.contains("custom message"), "{err}");
}

#[test]
fn bad_graphs_are_rejected_with_the_offending_key_and_nothing_runs() {
    let c = Cluster::start(1);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"tasks": [{"key": "dup", "builtin": "noop"}, {"key": "dup", "builtin": "noop"}]}),
            "duplicate task key \"dup\"",
        ),
        (
            json!({"tasks": [{"key": "a", "builtin": "noop", "deps": ["ghost"]}]}),
            "unknown key \"ghost\"",
        ),
        (
            json!({"tasks": [{"key": "p", "builtin": "noop", "deps": ["q"]}, {"key": "q", "builtin": "noop", "deps": ["p"]}]}),
            "dependency cycle through task",
        ),
        (
            json!({"tasks": [{"key": "z", "builtin": "frobnicate"}]}),
            "task \"z\" uses unknown builtin \"frobnicate\"",
        ),
        (
            json!({"tasks": [{"key": "k", "builtin": "noop", "cmd": ["true"]}]}),
            "task \"k\" must have exactly one",
        ),
        (
            json!({"tasks": [{"key": "a", "builtin": "noop"}], "outputs": ["nope"]}),
            "output \"nope\"",
        ),
    ];
    for (graph, needle) in cases {
        let (ok, _, err) = c.submit_wait(&graph);
        assert!(!ok, "accepted a bad graph: {graph}");
        assert!(
            err.contains(needle),
            "error for {graph} should contain {needle:?}: {err}"
        );
    }
    // Malformed JSON, and an unknown field.
    for (text, needle) in [
        ("{\"tasks\": [", "not a valid graph file"),
        ("{\"tasks\": [], \"bogus\": 1}", "unknown field"),
    ] {
        let p = c.dir.path().join("bad.json");
        std::fs::write(&p, text).unwrap();
        let out = c.rusk(&["submit", p.to_str().unwrap(), "--wait"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }
    let s = c.status();
    assert_eq!(s["graphs"], json!([]));
    assert_eq!(s["tasks"]["memory"], json!(0));
    assert_eq!(s["tasks"]["assigned"], json!(0));
}

#[test]
fn wrong_token_is_refused_and_garbage_costs_nothing() {
    let c = Cluster::start(1);
    let address = serde_json::from_str::<Value>(&std::fs::read_to_string(&c.file).unwrap())
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    // A worker with the wrong token never joins.
    let out = std::process::Command::new(RUSK)
        .args(["worker", "--scheduler", &address])
        .env("RUSK_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong cluster token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same for a client.
    let out = std::process::Command::new(RUSK)
        .args(["status", "--scheduler", &address, "--token", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong cluster token"));
    // Raw garbage, an oversized length prefix, and a silent connection: each is dropped.
    let mut s = std::net::TcpStream::connect(&address).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut s2 = std::net::TcpStream::connect(&address).unwrap();
    s2.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    let _silent = std::net::TcpStream::connect(&address).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = s2.read_to_end(&mut buf); // returns once the scheduler closes it
                                      // Still exactly one worker and a working cluster.
    assert_eq!(c.worker_count(), 1);
    let (ok, out, err) =
        c.submit_wait(&json!({"tasks": [{"key": "a", "builtin": "sum", "args": ["40", "2"]}]}));
    assert!(ok, "{err}");
    assert_eq!(out, json!({"a": "42"}));
    let log = c.scheduler_log();
    assert!(
        log.contains("connection dropped"),
        "refusals are logged with a reason"
    );
}

#[test]
fn status_json_lists_workers_with_their_fields() {
    let c = Cluster::start_with(2, &[], &["--nthreads", "2"]);
    let s = c.status();
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let host = this_host();
    let table = c.rusk(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    for w in workers {
        for field in [
            "id",
            "host",
            "pid",
            "state",
            "address",
            "incarnation",
            "nthreads",
            "tasks",
        ] {
            assert!(!w[field].is_null(), "missing {field} in {w}");
        }
        assert_eq!(w["nthreads"], json!(2));
        assert_eq!(w["state"], json!("running"));
        assert_eq!(w["host"], json!(host));
        // The table names the host in the column after the worker's id.
        let id = w["id"].as_str().unwrap();
        let row = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|r| r.first() == Some(&id))
            .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"));
        assert_eq!(row[1], host, "{table}");
    }
    let pids: Vec<u64> = workers.iter().map(|w| w["pid"].as_u64().unwrap()).collect();
    let mut expected: Vec<u64> = c.workers.iter().map(|w| w.id() as u64).collect();
    let mut got = pids.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn kill_9_of_a_worker_in_the_middle_of_a_10000_task_graph() {
    let mut c = Cluster::start(3);
    let (graph, expected) = slow_sum_graph(200, 4900, 40);
    assert!(graph["tasks"].as_array().unwrap().len() >= 9_999);
    let child = c.submit_spawn(&graph);
    // Wait until work is under way and the victim holds results, then kill it.
    wait_until(
        Duration::from_secs(20),
        || {
            let s = c.status();
            s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["tasks"]["memory"].as_u64().unwrap_or(0) > 0)
        },
        "every worker holding results",
    );
    c.signal_worker(1, libc::SIGKILL);
    let _ = c.workers[1].wait();
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.as_object().unwrap().values().next().unwrap(),
        &json!(expected)
    );
    assert!(
        c.scheduler_log().contains("worker lost"),
        "the loss is logged"
    );
    assert_eq!(c.worker_count(), 2);
    c.add_worker(); // capacity can be added back at any time
    c.wait_workers(3);
}

#[test]
fn graph_survives_all_workers_killed_and_replaced() {
    let mut c = Cluster::start(2);
    let (graph, expected) = slow_sum_graph(40, 400, 100);
    let child = c.submit_spawn(&graph);
    wait_until(
        Duration::from_secs(20),
        || c.status()["tasks"]["memory"].as_u64().unwrap_or(0) > 10,
        "some results",
    );
    c.signal_worker(0, libc::SIGKILL);
    c.signal_worker(1, libc::SIGKILL);
    let _ = c.workers[0].wait();
    let _ = c.workers[1].wait();
    c.wait_workers(0);
    c.add_worker();
    c.add_worker();
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.as_object().unwrap().values().next().unwrap(),
        &json!(expected)
    );
}

#[test]
fn frozen_worker_is_declared_lost_after_the_ttl_and_its_work_is_redone() {
    let mut c = Cluster::start_with(
        2,
        &["--worker-ttl", "1s", "--heartbeat-interval", "200ms"],
        &[],
    );
    let (graph, expected) = slow_sum_graph(20, 200, 100);
    let child = c.submit_spawn(&graph);
    wait_until(
        Duration::from_secs(20),
        || c.status()["tasks"]["memory"].as_u64().unwrap_or(0) > 5,
        "some results",
    );
    c.signal_worker(0, libc::SIGSTOP);
    wait_until(
        Duration::from_secs(10),
        || c.worker_count() == 1,
        "the frozen worker dropped",
    );
    assert!(
        c.scheduler_log().contains("no heartbeat for"),
        "cause is logged"
    );
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.as_object().unwrap().values().next().unwrap(),
        &json!(expected)
    );
    // Thawed, the old incarnation is fenced: the scheduler dropped its connection, so the
    // same process registers again as a new incarnation, naming the results it kept (no
    // longer needed: released).
    let before: Vec<u64> = c.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["incarnation"].as_u64().unwrap())
        .collect();
    c.signal_worker(0, libc::SIGCONT);
    wait_until(
        Duration::from_secs(10),
        || c.worker_count() == 2,
        "the thawed worker back",
    );
    assert!(
        c.workers[0].try_wait().unwrap().is_none(),
        "it kept running"
    );
    let pid = c.workers[0].id() as u64;
    let back = c.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"].as_u64() == Some(pid))
        .cloned()
        .expect("the same process is a worker again");
    assert!(!before.contains(&back["incarnation"].as_u64().unwrap()));
    let events = String::from_utf8_lossy(&c.rusk(&["events", "--json"]).stdout).into_owned();
    assert!(events.contains("\"rejoin\""), "{events}");
}

#[test]
fn fault_injection_builtins_are_refused_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.json");
    let mut sched = std::process::Command::new(RUSK)
        .args(["scheduler", "--listen", "127.0.0.1:0", "--scheduler-file"])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || file.exists(), "scheduler file");
    let mut worker = std::process::Command::new(RUSK)
        .args(["worker", "--scheduler-file"])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(&g, r#"{"tasks": [{"key": "boom", "builtin": "abort"}]}"#).unwrap();
    let out = std::process::Command::new(RUSK)
        .args(["submit", g.to_str().unwrap(), "--wait", "--scheduler-file"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--enable-fault-injection"),
        "{err}"
    );
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still alive"
    );
    let _ = worker.kill();
    let _ = sched.kill();
    let _ = worker.wait();
    let _ = sched.wait();
}

#[test]
fn scheduler_file_is_private_and_durations_come_from_the_environment() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(1);
    let mode = std::fs::metadata(&c.file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let f: Value = serde_json::from_str(&std::fs::read_to_string(&c.file).unwrap()).unwrap();
    assert!(f["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(f["token"].as_str().unwrap().len() >= 32);
    // A bad duration in the environment is a clear error.
    let out = std::process::Command::new(RUSK)
        .args([
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--scheduler-file",
            "/dev/null",
        ])
        .env("RUSK_WORKER_TTL", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RUSK_WORKER_TTL")
            || String::from_utf8_lossy(&out.stderr).contains("worker-ttl")
    );
}

/// A stall of the scheduler itself (SIGSTOP for 4 s, longer than the 3 s worker TTL) is not
/// taken for silent workers: after SIGCONT they are all still there, same incarnations.
#[test]
fn a_stalled_scheduler_does_not_drop_its_healthy_workers() {
    let c = Cluster::start(2);
    let before: Vec<u64> = c.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["incarnation"].as_u64().unwrap())
        .collect();
    let pid = c.scheduler.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_secs(4));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut after: Vec<u64> = c.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["incarnation"].as_u64().unwrap())
        .collect();
    after.sort_unstable();
    let mut before = before;
    before.sort_unstable();
    assert_eq!(before, after, "{}", c.scheduler_log());
    assert!(
        !c.scheduler_log().contains("worker lost"),
        "{}",
        c.scheduler_log()
    );
}
