//! The scheduler's HTTP side on a real cluster: `/metrics` parses strictly and counts a
//! `kill -9` restart exactly once under cause `crash`; the JSON API serves what `rusk status`
//! and `rusk events` print; `/health`; the dashboard's files and its live stream; and a worker
//! that reports itself unhealthy gets no new tasks until it is healthy again.
mod common;
#[path = "support/http.rs"]
mod http;

use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

const DASHBOARD: [&str; 2] = ["--dashboard", "127.0.0.1:0"];

fn metrics(base: &str) -> http::Exposition {
    let r = http::get(&format!("{base}/metrics"));
    assert_eq!(r.status, 200, "{}", r.body);
    http::parse_exposition(&r.body)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{}", r.body))
}

#[test]
fn metrics_parse_and_a_kill_9_counts_one_crash_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.redb");
    let mut args = DASHBOARD.to_vec();
    args.extend(["--journal", journal.to_str().unwrap()]);
    let c = NannyCluster::start(2, &args, &[], &[]);
    let base = http::dashboard_url(&c.file);
    let r = http::get(&format!("{base}/metrics"));
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    let ex = metrics(&base);
    for family in [
        "rusk_workers",
        "rusk_nanny_slots",
        "rusk_tasks",
        "rusk_tasks_completed",
        "rusk_tasks_completed_per_second",
        "rusk_restarts",
        "rusk_heartbeat_age_max_seconds",
        "rusk_executor_replacements",
        "rusk_transfer_bytes",
        "rusk_scheduler_loop_lag_seconds",
        "rusk_scheduler_turn_seconds",
        "rusk_worker_heartbeat_age_seconds",
        "rusk_worker_rss_bytes",
        "rusk_worker_cpu_seconds",
        "rusk_worker_loop_lag_seconds",
        "rusk_journal_commits",
        "rusk_journal_commit_seconds",
        "rusk_journal_bytes",
        "rusk_journal_write_failures",
        "rusk_journal_queue_waits",
    ] {
        assert!(ex.types.contains_key(family), "no {family} in /metrics");
    }
    // The nanny's registration and slot reports went into the journal.
    wait_until(
        Duration::from_secs(10),
        || {
            let ex = metrics(&base);
            ex.value("rusk_journal_commits_total", &[]) > 0.0
                && ex.value("rusk_journal_bytes_total", &[]) > 0.0
        },
        "journal commits in /metrics",
    );
    assert_eq!(
        metrics(&base).value("rusk_journal_write_failures_total", &[]),
        0.0
    );
    wait_until(
        Duration::from_secs(10),
        || {
            let ex = metrics(&base);
            ex.value("rusk_nanny_slots", &[("state", "running")]) == 2.0
                && ex.value("rusk_worker_rss_bytes", &[("worker", "n0/0")]) > 1e6
        },
        "2 running slots and their workers' vitals in /metrics",
    );
    let ex = metrics(&base);
    assert_eq!(ex.value("rusk_workers", &[("state", "running")]), 2.0);
    let before = ex.value("rusk_restarts_total", &[("cause", "crash")]);

    let w = c.worker_of_slot(0).unwrap();
    let (pid, inc) = (
        w["pid"].as_u64().unwrap(),
        w["incarnation"].as_u64().unwrap(),
    );
    signal(pid, libc::SIGKILL);
    c.wait_new_incarnation(0, inc, Duration::from_secs(20));
    wait_until(
        Duration::from_secs(10),
        || metrics(&base).value("rusk_restarts_total", &[("cause", "crash")]) == before + 1.0,
        "the crash restart in /metrics",
    );
    // Counted once, not once per record or per scrape.
    std::thread::sleep(Duration::from_secs(1));
    let ex = metrics(&base);
    assert_eq!(
        ex.value("rusk_restarts_total", &[("cause", "crash")]),
        before + 1.0
    );
    assert!(ex.value("rusk_recovery_seconds_count", &[("cause", "crash")]) >= 1.0);
    assert!(ex.value("rusk_detection_seconds_count", &[("cause", "crash")]) >= 1.0);
    assert!(ex.value("rusk_workers_lost_total", &[]) >= 1.0);
    assert!(
        ex.value(
            "rusk_recovery_events_total",
            &[("source", "nanny"), ("cause", "crash")]
        ) >= 2.0,
        "the nanny's detection and recovery records"
    );
    assert_eq!(ex.value("rusk_workers", &[("state", "running")]), 2.0);
}

#[test]
fn the_json_api_serves_what_the_cli_prints_and_health_answers() {
    let c = NannyCluster::start(2, &DASHBOARD, &[], &[]);
    let base = http::dashboard_url(&c.file);
    // Make some recovery events.
    let w = c.worker_of_slot(1).unwrap();
    signal(w["pid"].as_u64().unwrap(), libc::SIGKILL);
    c.wait_new_incarnation(
        1,
        w["incarnation"].as_u64().unwrap(),
        Duration::from_secs(20),
    );

    // /api/status is `rusk status --json` (taken at most 250 ms apart).
    let ids = |s: &Value| -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["id"].as_str().unwrap().to_string(),
                    w["incarnation"].as_u64().unwrap(),
                    w["pid"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut api = Value::Null;
    wait_until(
        Duration::from_secs(10),
        || {
            api = http::get(&format!("{base}/api/status")).json();
            ids(&api) == ids(&c.status())
        },
        "/api/status to show the workers rusk status shows",
    );
    let cli = c.status();
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&api), keys(&cli));
    assert_eq!(
        keys(&api["workers"][0]),
        keys(&cli["workers"][0]),
        "worker fields"
    );
    assert_eq!(api["nannies"][0]["name"], cli["nannies"][0]["name"]);
    wait_until(
        Duration::from_secs(5),
        || {
            http::get(&format!("{base}/api/status")).json()["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["vitals"]["rss_bytes"].as_u64().unwrap() > 0)
        },
        "every worker's vitals",
    );

    // /api/events is `rusk events --json`.
    let mut cli_events = Vec::new();
    wait_until(
        Duration::from_secs(10),
        || {
            cli_events = c.events();
            cli_events
                .iter()
                .any(|e| e["cause"] == "crash" && !e["new_incarnation"].is_null())
        },
        "the restart in rusk events",
    );
    let page = http::get(&format!("{base}/api/events")).json();
    let api_events = page["events"].as_array().unwrap();
    assert!(api_events.len() >= cli_events.len());
    assert_eq!(&api_events[..cli_events.len()], &cli_events[..]);
    assert_eq!(
        page["next"].as_u64().unwrap(),
        api_events.last().unwrap()["seq"].as_u64().unwrap() + 1
    );
    let second = api_events[1]["seq"].as_u64().unwrap();
    let one = http::get(&format!("{base}/api/events?since={second}&limit=1")).json();
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    assert_eq!(one["events"][0], api_events[1]);
    assert_eq!(one["next"].as_u64().unwrap(), second + 1);

    let overview = http::get(&format!("{base}/api/overview")).json();
    assert_eq!(overview["workers_by_state"]["running"], 2);
    assert_eq!(overview["slots_by_state"]["running"], 2);
    assert_eq!(overview["workers"].as_array().unwrap().len(), 2);

    let health = http::get(&format!("{base}/health"));
    assert_eq!(health.status, 200, "{}", health.body);
    let h = health.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["workers"], 2);

    assert_eq!(http::get(&format!("{base}/no-such-page")).status, 404);
    let page = http::get(&format!("{base}/"));
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("/dashboard.js"));
    for asset in ["/dashboard.js", "/dashboard.css"] {
        let r = http::get(&format!("{base}{asset}"));
        assert_eq!(r.status, 200, "{asset}");
        assert!(r.body.len() > 1000, "{asset}");
    }

    // The live stream starts with the status, then the recent events.
    let evs = http::first_stream_events(&base, 2, Duration::from_secs(10));
    assert_eq!(evs[0].0, "status");
    let first: Value = serde_json::from_str(&evs[0].1).unwrap();
    assert_eq!(first["status"]["workers"].as_array().unwrap().len(), 2);
    assert!(first["overview"]["uptime_ms"].as_u64().is_some());
    assert_eq!(evs[1].0, "events");
    let ev: Value = serde_json::from_str(&evs[1].1).unwrap();
    assert!(!ev["events"].as_array().unwrap().is_empty());
}

#[test]
fn health_is_served_and_the_dashboard_can_be_turned_off() {
    let c = Cluster::start_with(0, &["--dashboard", "none"], &[]);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&c.file).unwrap()).unwrap();
    assert!(file.get("dashboard").is_none(), "{file}");

    let c = Cluster::start_with(1, &DASHBOARD, &[]);
    let base = http::dashboard_url(&c.file);
    wait_until(
        Duration::from_secs(5),
        || http::get(&format!("{base}/health")).json()["workers"] == 1,
        "health to count the worker",
    );
    let r = http::get(&format!("{base}/health"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
}

/// A worker started by hand with its own environment.
fn spawn_worker(c: &mut Cluster, name: &str, env: &[(&str, &std::path::Path)]) {
    let mut cmd = Command::new(RUSK);
    cmd.args(["worker", "--enable-fault-injection", "--name", name])
        .arg("--scheduler-file")
        .arg(&c.file)
        .env("RUSK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(c.dir.path().join(format!("{name}.log"))).unwrap(),
        ));
    for (k, v) in env {
        cmd.env(k, v);
    }
    c.workers.push(cmd.spawn().unwrap());
}

fn worker<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {status}"))
}

fn held(c: &Cluster, name: &str) -> u64 {
    worker(&c.status(), name)["tasks"]["memory"]
        .as_u64()
        .unwrap()
}

/// Submit `n` independent tasks, detached (their results stay where they were computed), and
/// wait until they are done.
fn run_detached(c: &Cluster, tag: &str, n: usize) {
    let tasks: Vec<Value> = (0..n)
        .map(
            |i| json!({"key": format!("{tag}{i}"), "builtin": "sum", "args": ["1", i.to_string()]}),
        )
        .collect();
    let p = c.write_graph(&format!("{tag}.json"), &json!({ "tasks": tasks }));
    let out = c.rusk(&["submit", p.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.strip_prefix('g').and_then(|g| g.parse().ok()))
        .expect("graph id");
    wait_until(
        Duration::from_secs(30),
        || {
            c.status()["graphs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["graph"] == graph && g["done"] == n as u64)
        },
        &format!("graph {tag} done"),
    );
}

#[test]
fn an_unhealthy_worker_gets_no_new_tasks_until_it_is_healthy_again() {
    let mut c = Cluster::start_with(0, &DASHBOARD, &[]);
    let base = http::dashboard_url(&c.file);
    let flag = c.dir.path().join("sick-flag");
    std::fs::write(&flag, "").unwrap();
    spawn_worker(&mut c, "sick", &[("RUSK_FAULT_UNHEALTHY_FILE", &flag)]);
    spawn_worker(&mut c, "well", &[]);
    c.wait_workers(2);
    wait_until(
        Duration::from_secs(10),
        || worker(&c.status(), "sick")["state"] == "unhealthy",
        "the sick worker to be shown unhealthy",
    );
    let s = c.status();
    assert!(worker(&s, "sick")["vitals"]["unhealthy"]
        .as_str()
        .unwrap()
        .contains("fault injection"));
    assert_eq!(worker(&s, "well")["state"], "running");
    wait_until(
        Duration::from_secs(5),
        || {
            let ex = metrics(&base);
            ex.value("rusk_workers", &[("state", "unhealthy")]) == 1.0
                && ex.value("rusk_worker_healthy", &[("worker", "sick")]) == 0.0
        },
        "the unhealthy worker in /metrics",
    );

    // Everything goes to the healthy worker.
    run_detached(&c, "a", 200);
    assert_eq!(held(&c, "sick"), 0, "the unhealthy worker got tasks");
    assert_eq!(held(&c, "well"), 200);
    let out = c.rusk(&["events", "--json"]);
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"cause\":\"unhealthy\"") && l.contains("\"sick\"")),
        "{events}"
    );

    // Healthy again: it takes tasks again.
    std::fs::remove_file(&flag).unwrap();
    wait_until(
        Duration::from_secs(10),
        || worker(&c.status(), "sick")["state"] == "running",
        "the worker to be healthy again",
    );
    run_detached(&c, "b", 200);
    assert!(held(&c, "sick") > 0, "the recovered worker got no tasks");
    let out = c.rusk(&["events", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains("\"cause\":\"healthy\"")));
}
