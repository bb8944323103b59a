//! Placement controls with real processes: workers declaring resources (`--resources` and
//! `RUSK_RESOURCES`), tasks asking for them or for named workers, and tasks no worker can run
//! failing with their reason while another graph completes; and work stealing between real
//! workers (the Steal/StealResponse exchange through the worker shell).
mod common;
#[path = "support/http.rs"]
mod http;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A `cmd` task that prints its worker's pid (its parent) and when it ran, in ns.
fn probe(key: &str, extra: Value) -> Value {
    let mut t = json!({"key": key, "cmd": ["sh", "-c",
        "a=$(date +%s%N); sleep 0.3; echo $PPID $a $(date +%s%N)"]});
    t.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    t
}

/// (worker pid, start ns, end ns) of each probe's output.
fn runs(out: &Value, keys: &[&str]) -> Vec<(u64, u128, u128)> {
    keys.iter()
        .map(|k| {
            let text = out[*k].as_str().unwrap_or_else(|| panic!("{k}: {out}"));
            let f: Vec<&str> = text.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

fn overlap(a: (u64, u128, u128), b: (u64, u128, u128)) -> bool {
    a.1 < b.2 && b.1 < a.2
}

/// Two workers with different declarations; 4 threads each, so only the resources can keep
/// tasks apart.
fn cluster() -> (Cluster, Vec<u64>, Vec<String>) {
    let mut c = Cluster::start_with(0, &["--no-worker-timeout", "2s"], &["--nthreads", "4"]);
    c.add_worker_with(&["--resources", "GPU=1"], &[]);
    c.add_worker_with(&[], &[("RUSK_RESOURCES", "MEM=100, CPU=4")]);
    c.wait_workers(2);
    let pids = c.workers.iter().map(|w| w.id() as u64).collect();
    let s = c.status();
    let mut addrs = vec![String::new(); 2];
    for w in s["workers"].as_array().unwrap() {
        let i: usize = w["id"].as_str().unwrap()[1..].parse().unwrap();
        addrs[i] = w["address"].as_str().unwrap().to_string();
    }
    (c, pids, addrs)
}

#[test]
fn resources_and_worker_restrictions_place_and_bound_tasks() {
    let (c, pids, addrs) = cluster();
    // The declarations are in the status JSON (what the Python client's scheduler_info reads).
    let s = c.status();
    let declared: Vec<Value> = ["w0", "w1"]
        .iter()
        .map(|id| {
            let w = s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["id"] == json!(id))
                .unwrap();
            w["resources"].clone()
        })
        .collect();
    assert_eq!(
        declared,
        vec![json!({"GPU": 1.0}), json!({"CPU": 4.0, "MEM": 100.0})]
    );
    let table = String::from_utf8_lossy(&c.rusk(&["status"]).stdout).into_owned();
    assert!(table.contains("resources: GPU=1"), "{table}");

    let gpu = json!({"resources": {"GPU": 1}});
    let mem = json!({"resources": {"MEM": 60}});
    let graph = json!({"tasks": [
        probe("g0", gpu.clone()), probe("g1", gpu.clone()), probe("g2", gpu),
        probe("m0", mem.clone()), probe("m1", mem),
        probe("on-w1", json!({"workers": ["w1"]})),
        probe("on-addr-w0", json!({"workers": [addrs[0]]})),
        probe("prefers-nobody", json!({"workers": ["nope"], "allow_other_workers": true})),
    ]});
    let (ok, out, err) = c.submit_wait(&graph);
    assert!(ok, "{err}");
    let g = runs(&out, &["g0", "g1", "g2"]);
    let m = runs(&out, &["m0", "m1"]);
    // GPU tasks only on w0, MEM tasks only on w1, never two at once (1 GPU; 60+60 > 100 MEM).
    assert!(g.iter().all(|r| r.0 == pids[0]), "{g:?} {pids:?}");
    assert!(m.iter().all(|r| r.0 == pids[1]), "{m:?} {pids:?}");
    for (i, a) in g.iter().enumerate() {
        for b in &g[i + 1..] {
            assert!(!overlap(*a, *b), "GPU tasks overlapped: {g:?}");
        }
    }
    assert!(!overlap(m[0], m[1]), "MEM tasks overlapped: {m:?}");
    assert_eq!(runs(&out, &["on-w1"])[0].0, pids[1]);
    assert_eq!(runs(&out, &["on-addr-w0"])[0].0, pids[0]);
    assert!(pids.contains(&runs(&out, &["prefers-nobody"])[0].0));
}

#[test]
fn tasks_no_worker_can_run_fail_with_their_reason_and_the_cluster_goes_on() {
    let (c, _, _) = cluster();
    let too_much = c.submit_spawn(&json!({"tasks": [
        {"key": "big", "builtin": "noop", "resources": {"GPU": 2}},
        {"key": "after-big", "builtin": "noop", "deps": ["big"]},
        {"key": "fine", "builtin": "sum", "args": ["1"]}
    ], "outputs": ["after-big", "fine"]}));
    let nobody = c.submit_spawn(&json!({"tasks": [
        {"key": "where", "builtin": "noop", "workers": ["nope"]}
    ]}));
    // Meanwhile another graph runs to completion.
    let (ok, out, err) = c.submit_wait(&json!({"tasks": [
        {"key": "x", "builtin": "sum", "args": ["2", "3"], "resources": {"GPU": 1}}
    ]}));
    assert!(ok, "{err}");
    assert_eq!(out, json!({"x": "5"}));
    let out = wait_output(too_much, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The workers are listed in join order, which races here.
    let offers = [
        "w0 {GPU=1}, w1 {CPU=4, MEM=100}",
        "w1 {CPU=4, MEM=100}, w0 {GPU=1}",
    ];
    assert!(
        offers.iter().any(|o| err.contains(&format!(
            "after-big: FAILED: dependency \"big\" failed: task \"big\" cannot run: no worker \
             offers resources GPU=2 (workers offer: {o}); no worker could run it for 2000 ms"
        ))),
        "{err}"
    );
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stdout["fine"], json!("1"));
    let out = wait_output(nobody, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("task \"where\" cannot run: no worker matches workers=[\"nope\"] (workers: w"),
        "{err}"
    );
    // It is in the recovery log too.
    let events = String::from_utf8_lossy(&c.rusk(&["events"]).stdout).into_owned();
    assert!(events.contains("unrunnable"), "{events}");
}

#[test]
fn malformed_placement_is_rejected_with_a_clear_message() {
    let c = Cluster::start(1);
    for (task, want) in [
        (
            json!({"key": "neg", "builtin": "noop", "resources": {"GPU": -1}}),
            "task \"neg\" asks for resource \"GPU\" = -1: an amount must be a finite number, 0 or more",
        ),
        (
            json!({"key": "empty", "builtin": "noop", "workers": []}),
            "task \"empty\" has an empty \"workers\" list",
        ),
    ] {
        let (ok, _, err) = c.submit_wait(&json!({ "tasks": [task] }));
        assert!(!ok);
        assert!(err.contains(want), "{err}");
    }
    // A bad declaration stops the worker at once, saying why.
    let out = std::process::Command::new(RUSK)
        .args(["worker", "--resources", "GPU=lots", "--scheduler-file"])
        .arg(&c.file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resource \"GPU\": \"lots\" is not a number"),
        "{err}"
    );
}

/// A worker that joins while another holds a queue of slow tasks makes the scheduler ask for
/// some of them (`Steal`); whatever the busy worker answers, every task runs and reports once,
/// and the graph's result is right.
#[test]
fn an_idle_worker_joining_makes_the_scheduler_steal_and_every_task_runs_once() {
    let mut c = Cluster::start_with(0, &["--dashboard", "127.0.0.1:0"], &["--nthreads", "1"]);
    c.add_worker();
    c.wait_workers(1);
    // Each task prints its worker's pid: a task run twice would show in no output, but its
    // duplicate report would be fenced; the sum checks every value arrived once.
    let leaves: Vec<Value> = (0..8)
        .map(|i| json!({"key": format!("nap-{i}"), "cmd": ["sh", "-c", "sleep 0.3; echo 1"]}))
        .collect();
    let mut tasks = leaves.clone();
    let keys: Vec<String> = (0..8).map(|i| format!("nap-{i}")).collect();
    tasks.push(json!({"key": "total", "builtin": "sum", "deps": keys}));
    let run = c.submit_spawn(&json!({ "tasks": tasks, "outputs": ["total"] }));
    wait_until(
        Duration::from_secs(10),
        || {
            c.status()["workers"][0]["tasks"]["assigned"]
                .as_u64()
                .unwrap_or(0)
                >= 3
        },
        "a queue on the first worker",
    );
    c.add_worker();
    let out = wait_output(run, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"total": "8"}));
    let base = http::dashboard_url(&c.file);
    let mut stats = Value::Null;
    wait_until(
        Duration::from_secs(5),
        || {
            stats = http::get(&format!("{base}/api/overview")).json()["stats"].clone();
            stats["steals_requested"].as_u64().unwrap_or(0) >= 1
        },
        "a steal request",
    );
    assert!(stats["tasks_stolen"].as_u64().unwrap() <= stats["steals_requested"].as_u64().unwrap());
}
