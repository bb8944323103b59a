//! End-to-end tests of self-healing: a real scheduler, a real nanny and real workers, faults
//! made with real signals, each test asserting the state the cluster is restored to.
mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const RECOVERY: Duration = Duration::from_secs(15);

/// This machine's host name, as workers and nannies report it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn only_worker(c: &NannyCluster) -> (u64, u64) {
    let w = c.worker_of_slot(0).expect("slot 0 has a worker");
    (
        w["pid"].as_u64().unwrap(),
        w["incarnation"].as_u64().unwrap(),
    )
}

fn events_with_cause(c: &NannyCluster, cause: &str) -> Vec<Value> {
    c.events()
        .into_iter()
        .filter(|e| e["cause"] == json!(cause))
        .collect()
}

fn restarted_events(c: &NannyCluster) -> Vec<Value> {
    c.events()
        .into_iter()
        .filter(|e| e["action"] == json!("restarted"))
        .collect()
}

#[test]
fn kill_9_of_an_idle_worker_is_restarted_in_its_slot() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    let (pid, inc) = only_worker(&c);
    let t0 = Instant::now();
    signal(pid, libc::SIGKILL);
    let w = c.wait_new_incarnation(0, inc, RECOVERY);
    eprintln!("kill -9 → new worker registered after {:?}", t0.elapsed());
    assert_ne!(w["pid"].as_u64().unwrap(), pid);
    assert_eq!(w["nanny"], json!("n0"));
    assert_eq!(w["restarts"], json!(1));
    assert_eq!(w["state"], json!("running"));
    assert_eq!(c.workers().len(), 2, "the other slot is untouched");
    let ev = restarted_events(&c);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["cause"], json!("crash"));
    assert!(
        ev[0]["observed"].as_str().unwrap().contains("signal 9"),
        "{}",
        ev[0]
    );
    assert_eq!(ev[0]["incarnation"], json!(inc));
    assert_eq!(ev[0]["host"], json!(this_host()), "{}", ev[0]);
    assert!(
        ev[0]["recovery_ms"].as_u64().unwrap() < 1000,
        "a crashed worker is back within 1 s: {}",
        ev[0]
    );
    // `rusk events` names the host before the slot.
    let out = c.rusk(&["events"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("[nanny] {} n0/0 ", this_host()))),
        "{text}"
    );
    // The graph still runs on the restored cluster.
    let (ok, out, err) =
        c.submit_wait(&json!({"tasks": [{"key": "a", "builtin": "sum", "args": ["2", "3"]}]}));
    assert!(ok, "{err}");
    assert_eq!(out, json!({"a": "5"}));
}

#[test]
fn kill_9_right_after_the_first_start_is_restarted_like_any_crash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.json");
    let mut sched = std::process::Command::new(RUSK)
        .args(["scheduler", "--listen", "127.0.0.1:0", "--scheduler-file"])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || file.exists(), "scheduler file");
    let mut nanny = std::process::Command::new(RUSK)
        .args(["nanny", "--name", "n0", "--scheduler-file"])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Find the worker process the moment it exists and kill it before it can register.
    let children = format!("/proc/{}/task/{}/children", nanny.id(), nanny.id());
    let mut first = None;
    wait_until(
        Duration::from_secs(10),
        || {
            first = std::fs::read_to_string(&children).ok().and_then(|s| {
                s.split_whitespace()
                    .next()
                    .map(|p| p.parse::<u64>().unwrap())
            });
            first.is_some()
        },
        "the first worker process",
    );
    signal(first.unwrap(), libc::SIGKILL);
    let status = || {
        let out = std::process::Command::new(RUSK)
            .args(["status", "--json", "--scheduler-file"])
            .arg(&file)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // The one worker is the replacement (on a fast machine the first may have registered
    // before the kill, and be listed until its loss is noticed).
    let mut w = Value::Null;
    wait_until(
        RECOVERY,
        || match status()["workers"].as_array() {
            Some(ws) if ws.len() == 1 && ws[0]["pid"].as_u64() != first => {
                w = ws[0].clone();
                true
            }
            _ => false,
        },
        "the replacement worker after the early kill",
    );
    assert_eq!(w["restarts"], json!(1));
    let _ = nanny.kill();
    let _ = sched.kill();
    let _ = nanny.wait();
    let _ = sched.wait();
}

#[test]
fn sigstop_of_a_worker_is_detected_by_the_watchdog_and_replaced() {
    let c = NannyCluster::start(1, &[], &[], &[]);
    let (pid, inc) = only_worker(&c);
    let t0 = Instant::now();
    signal(pid, libc::SIGSTOP);
    let w = c.wait_new_incarnation(0, inc, RECOVERY);
    let took = t0.elapsed();
    eprintln!("SIGSTOP → new worker after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "a frozen worker is back within 5 s, took {took:?}"
    );
    assert_ne!(w["pid"].as_u64().unwrap(), pid);
    wait_until(
        Duration::from_secs(5),
        || !pid_alive(pid),
        "the frozen process killed",
    );
    let ev = restarted_events(&c);
    assert!(
        ev.iter()
            .any(|e| e["cause"] == json!("watchdog") || e["cause"] == json!("heartbeat")),
        "{ev:?}"
    );
}

#[test]
fn a_block_loop_task_restarts_its_worker_and_becomes_a_poison_task() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    let graph = json!({"tasks": [
        {"key": "wedge", "builtin": "block_loop", "args": ["60"]},
        {"key": "fine", "builtin": "sum", "args": ["1", "1"]},
        {"key": "later", "builtin": "sum", "args": ["5"], "deps": ["fine"]}
    ], "outputs": ["wedge", "later"]});
    let t0 = Instant::now();
    let (ok, out, err) = c.submit_wait(&graph);
    eprintln!("poison block_loop finished after {:?}", t0.elapsed());
    assert!(!ok);
    assert_eq!(out["later"], json!("7"), "the rest of the graph goes on");
    assert!(
        err.contains("\"wedge\"") && err.contains("3 workers"),
        "{err}"
    );
    // The third hung worker's restart completes after the graph has failed (the task fails
    // as soon as its third worker is declared dead): wait for it.
    wait_until(
        Duration::from_secs(15),
        || restarted_events(&c).len() >= 3,
        "three hung workers restarted",
    );
    let poison: Vec<Value> = events_with_cause(&c, "poison-task");
    assert_eq!(poison.len(), 1, "{:?}", c.events());
    c.wait_workers(2);
}

#[test]
fn the_same_worker_hung_ten_times_in_a_row_is_recovered_every_time() {
    let c = NannyCluster::start(1, &["--task-max-worker-deaths", "10"], &[], &[]);
    let t0 = Instant::now();
    let (ok, _, err) = c
        .submit_wait(&json!({"tasks": [{"key": "hang", "builtin": "block_loop", "args": ["60"]}]}));
    eprintln!("10 hangs recovered in {:?}", t0.elapsed());
    assert!(!ok && err.contains("10 workers"), "{err}");
    // The 10th replacement may register just after the scheduler failed the task.
    wait_until(
        RECOVERY,
        || restarted_events(&c).len() >= 10,
        "the 10th recovery",
    );
    let ev = restarted_events(&c);
    assert!(ev.len() >= 10, "every hang recovered: {}", ev.len());
    for e in &ev {
        assert!(e["recovery_ms"].as_u64().unwrap() < 5000, "{e}");
    }
    c.wait_workers(1);
    wait_until(
        RECOVERY,
        || {
            c.worker_of_slot(0)
                .is_some_and(|w| w["restarts"].as_u64().unwrap_or(0) >= 10)
        },
        "slot 0 to report 10 restarts",
    );
    let w = c.worker_of_slot(0).unwrap();
    assert!(w["restarts"].as_u64().unwrap() >= 10);
    assert_eq!(w["state"], json!("running"));
}

#[test]
fn sigterm_and_clean_exit_of_a_worker_end_in_a_restart() {
    let c = NannyCluster::start(1, &[], &[], &[]);
    let (pid, inc) = only_worker(&c);
    signal(pid, libc::SIGTERM);
    let w = c.wait_new_incarnation(0, inc, RECOVERY);
    let ev = restarted_events(&c);
    assert!(
        ev[0]["observed"].as_str().unwrap().contains("signal 15"),
        "{ev:?}"
    );
    assert_eq!(w["restarts"], json!(1));
}

#[test]
fn a_worker_that_crashes_at_start_up_backs_off_then_fails_without_a_storm() {
    let c = NannyCluster::start(
        1,
        &[],
        &["--crash-window", "60s"],
        &[("RUSK_FAULT_CRASH_ON_START", "1")],
    );
    let status = |c: &NannyCluster| c.status()["nannies"][0]["slots"][0].clone();
    wait_until(
        Duration::from_secs(30),
        || status(&c)["state"] == json!("failed"),
        "the slot to fail",
    );
    let slot = status(&c);
    assert_eq!(
        slot["restarts"],
        json!(6),
        "5 restarts allowed, the 6th crash fails the slot: {slot}"
    );
    let ev = c.events();
    let backoffs = ev
        .iter()
        .filter(|e| e["action"].as_str().unwrap_or("").starts_with("back off"))
        .count();
    assert!(backoffs >= 3, "crash loop backs off: {ev:?}");
    assert!(
        ev.iter()
            .any(|e| e["action"].as_str().unwrap_or("").contains("slot failed")),
        "{ev:?}"
    );
    // No restart storm: still failed, and no more restarts, a while later.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&c)["restarts"], json!(6));
    assert!(c.log("nanny0").contains("slot failed after a crash loop"));
    // An operator restart revives it (here it crashes again, which shows it was restarted).
    let out = c.rusk(&["restart", "n0/0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(10),
        || status(&c)["restarts"].as_u64().unwrap() > 6,
        "operator restart",
    );
}

#[test]
fn killing_the_nanny_takes_its_workers_down_and_the_scheduler_drops_them() {
    let mut c = NannyCluster::start(2, &[], &[], &[]);
    let pids: Vec<u64> = c
        .workers()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    let nanny_pid = c.nannies[0].id() as u64;
    let t0 = Instant::now();
    signal(nanny_pid, libc::SIGKILL);
    let _ = c.nannies[0].wait();
    wait_until(
        Duration::from_secs(5),
        || pids.iter().all(|p| !pid_alive(*p)),
        "workers exit (no orphans)",
    );
    wait_until(
        Duration::from_secs(5),
        || c.workers().is_empty(),
        "scheduler drops the host's workers",
    );
    eprintln!(
        "nanny gone → workers gone and dropped after {:?}",
        t0.elapsed()
    );
    assert!(c.status()["nannies"].as_array().unwrap().is_empty());
    // A new nanny brings the capacity back.
    c.add_nanny(2, &[], &[]);
    c.wait_workers(2);
}

#[test]
fn memory_over_the_limit_restarts_the_worker_with_cause_memory() {
    let c = NannyCluster::start(1, &[], &["--memory-limit", "300MiB"], &[]);
    let (_, inc) = only_worker(&c);
    let child =
        c.submit_spawn(&json!({"tasks": [{"key": "hog", "builtin": "alloc_mb", "args": ["400"]}]}));
    c.wait_new_incarnation(0, inc, RECOVERY);
    let ev = events_with_cause(&c, "memory");
    assert!(!ev.is_empty(), "{:?}", c.events());
    assert!(
        ev[0]["observed"].as_str().unwrap().contains("limit"),
        "{}",
        ev[0]
    );
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert!(!out.status.success(), "the hog is a poison task in the end");
}

#[test]
fn a_poison_task_fails_with_a_named_error_while_the_graph_goes_on() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    let mut tasks = vec![json!({"key": "poison", "builtin": "abort"})];
    for i in 0..100 {
        tasks.push(json!({"key": format!("ok{i}"), "builtin": "sum", "args": [i.to_string()]}));
    }
    let (ok, out, err) = c.submit_wait(&json!({"tasks": tasks}));
    assert!(!ok);
    assert!(
        err.contains("poison") && err.contains("\"poison\"") && err.contains("3 workers"),
        "{err}"
    );
    assert_eq!(out["ok42"], json!("42"));
    assert_eq!(out["poison"], Value::Null);
    c.wait_workers(2);
}

#[test]
fn a_task_over_its_time_limit_is_killed_and_failed_without_restarting_the_worker() {
    let c = NannyCluster::start(1, &[], &[], &[]);
    let (pid, inc) = only_worker(&c);
    let graph = json!({"tasks": [
        {"key": "slow-cmd", "cmd": ["sleep", "60"], "timeout": "500ms", "retries": 1},
        {"key": "slow-builtin", "builtin": "sleep_ms", "args": ["60000"], "timeout": "500ms"},
        {"key": "quick", "builtin": "sum", "args": ["1"], "timeout": "10s"}
    ]});
    let t0 = Instant::now();
    let (ok, out, err) = c.submit_wait(&graph);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "time limits are enforced"
    );
    assert!(!ok);
    assert!(
        err.contains("\"slow-cmd\"") && err.contains("time limit"),
        "{err}"
    );
    assert!(err.contains("\"slow-builtin\""), "{err}");
    assert_eq!(out["quick"], json!("1"));
    assert_eq!(
        only_worker(&c),
        (pid, inc),
        "the worker itself was not restarted"
    );
    // Capacity is intact after the abandoned builtin: another task runs at once.
    let (ok, out, _) =
        c.submit_wait(&json!({"tasks": [{"key": "next", "builtin": "sum", "args": ["9"]}]}));
    assert!(ok);
    assert_eq!(out["next"], json!("9"));
}

#[test]
fn stop_nanny_stops_workers_for_good_and_the_nanny_exits_cleanly() {
    let mut c = NannyCluster::start(2, &[], &[], &[]);
    let pids: Vec<u64> = c
        .workers()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    let out = c.rusk(&["stop-nanny", "n0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = c.nannies[0].wait().unwrap();
    assert!(status.success(), "nanny exits cleanly: {status}");
    assert!(pids.iter().all(|p| !pid_alive(*p)));
    wait_until(
        Duration::from_secs(5),
        || c.workers().is_empty(),
        "workers gone",
    );
    // SIGTERM does the same.
    c.add_nanny(1, &[], &[]);
    c.wait_workers(1);
    let pid = c.nannies[1].id() as u64;
    signal(pid, libc::SIGTERM);
    let status = c.nannies[1].wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn status_shows_nanny_slot_incarnation_pid_state_and_restarts() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    let s = c.status();
    for w in s["workers"].as_array().unwrap() {
        for f in ["nanny", "slot", "incarnation", "pid", "state", "restarts"] {
            assert!(!w[f].is_null(), "{f} missing in {w}");
        }
    }
    let n = &s["nannies"][0];
    assert_eq!(n["name"], json!("n0"));
    assert_eq!(n["host"], json!(this_host()));
    let slots = n["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    assert!(
        slots.iter().all(|s| s["state"] == json!("running")),
        "{slots:?}"
    );
    let out = c.rusk(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // The nanny's row: name, host, pid, slots; then its slots.
    let host = this_host();
    let pid = n["pid"].to_string();
    let row = ["n0", host.as_str(), pid.as_str(), "2"];
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == row),
        "{text}"
    );
    assert!(text.contains("slot 1"), "{text}");
}

#[test]
fn operator_restart_of_one_worker_and_of_all() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    let w0 = c.worker_of_slot(0).unwrap();
    let id = w0["id"].as_str().unwrap().to_string();
    let out = c.rusk(&["restart", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_new_incarnation(0, w0["incarnation"].as_u64().unwrap(), RECOVERY);
    let w1 = c.worker_of_slot(1).unwrap();
    let out = c.rusk(&["restart", "--all"]);
    assert!(out.status.success());
    c.wait_new_incarnation(1, w1["incarnation"].as_u64().unwrap(), RECOVERY);
    let out = c.rusk(&["restart", "no-such-worker"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-worker"));
    assert!(events_with_cause(&c, "operator").len() >= 2);
}

#[test]
fn kill_9_of_a_worker_mid_task_still_gives_the_right_answer() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    let (graph, expected) = slow_sum_graph(60, 600, 50);
    let child = c.submit_spawn(&graph);
    wait_until(
        Duration::from_secs(20),
        || c.status()["tasks"]["memory"].as_u64().unwrap_or(0) > 5,
        "work under way",
    );
    let (pid, inc) = only_worker(&c);
    signal(pid, libc::SIGKILL);
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert_eq!(single_output(&out), json!(expected));
    let w = c.wait_new_incarnation(0, inc, RECOVERY);
    assert_eq!(w["restarts"], json!(1));
}

#[test]
fn kill_9_of_a_worker_mid_transfer_still_gives_the_right_answer() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    // Two 30 MB results on different workers; the consumer fetches one from its peer.
    let graph = json!({"tasks": [
        {"key": "p0", "cmd": ["head", "-c", "30000000", "/dev/zero"]},
        {"key": "p1", "cmd": ["head", "-c", "30000000", "/dev/zero"]},
        {"key": "both", "cmd": ["sh", "-c", "cat \"$RUSK_DEP_0\" \"$RUSK_DEP_1\" | wc -c"], "deps": ["p0", "p1"]}
    ], "outputs": ["both"]});
    let child = c.submit_spawn(&graph);
    let mut victim = None;
    wait_until(
        Duration::from_secs(20),
        || {
            let ws = c.workers();
            let holders: Vec<&Value> = ws
                .iter()
                .filter(|w| w["tasks"]["memory"].as_u64().unwrap_or(0) > 0)
                .collect();
            if holders.len() == 2 {
                victim = Some(holders[1]["pid"].as_u64().unwrap());
            }
            victim.is_some()
        },
        "both producers done on different workers",
    );
    signal(victim.unwrap(), libc::SIGKILL);
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert_eq!(single_output(&out).as_str().unwrap().trim(), "60000000");
    c.wait_workers(2);
}

/// A TCP proxy between the nanny/workers and the scheduler, whose connections the test can
/// cut while both ends stay healthy.
struct Proxy {
    address: String,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let registry = conns.clone();
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                let Ok(up) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                registry.lock().unwrap().push(down.try_clone().unwrap());
                registry.lock().unwrap().push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { address, conns }
    }

    fn cut_all(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_cut_scheduler_connection_brings_a_new_incarnation_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.json");
    let mut sched = std::process::Command::new(RUSK)
        .args(["scheduler", "--listen", "127.0.0.1:0", "--scheduler-file"])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || file.exists(), "scheduler file");
    let sf: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let proxy = Proxy::start(sf["address"].as_str().unwrap().to_string());
    let mut nanny = std::process::Command::new(RUSK)
        .args([
            "nanny",
            "--name",
            "n0",
            "--nworkers",
            "1",
            "--scheduler",
            &proxy.address,
        ])
        .env("RUSK_TOKEN", sf["token"].as_str().unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = || {
        let out = std::process::Command::new(RUSK)
            .args(["status", "--json", "--scheduler-file"])
            .arg(&file)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    wait_until(
        Duration::from_secs(20),
        || status()["workers"].as_array().unwrap().len() == 1,
        "the worker",
    );
    let old = status()["workers"][0].clone();
    let t0 = Instant::now();
    proxy.cut_all();
    wait_until(
        Duration::from_secs(10),
        || {
            status()["workers"]
                .as_array()
                .unwrap()
                .first()
                .is_some_and(|w| w["incarnation"] != old["incarnation"])
        },
        "a new incarnation after the cut",
    );
    eprintln!("cut connection → new incarnation after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The cut worker registered again (keeping its process and its results) under a new
    // incarnation; the old one is fenced.
    let new = status()["workers"][0].clone();
    assert_eq!(new["pid"], old["pid"], "the same worker process came back");
    let ev = std::process::Command::new(RUSK)
        .args(["events", "--json", "--scheduler-file"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ev.stdout);
    assert!(text.contains("\"cause\":\"connection\""), "{text}");
    let _ = nanny.kill();
    let _ = sched.kill();
    let _ = nanny.wait();
    let _ = sched.wait();
}

#[test]
fn a_10000_task_graph_under_random_kills_and_freezes_gives_the_right_answer() {
    let c = NannyCluster::start(3, &[], &[], &[]);
    let (graph, expected) = slow_sum_graph(300, 4850, 40);
    assert!(graph["tasks"].as_array().unwrap().len() >= 10_000);
    let mut child = c.submit_spawn(&graph);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut faults = 0;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < SUBMIT_DEADLINE {
        std::thread::sleep(Duration::from_millis(900));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let ws = c.workers();
        if ws.is_empty() || faults >= 8 {
            continue;
        }
        let w = &ws[(rng % ws.len() as u64) as usize];
        let sig = if rng.is_multiple_of(3) {
            libc::SIGSTOP
        } else {
            libc::SIGKILL
        };
        eprintln!(
            "fault {faults}: signal {sig} to {} (pid {})",
            w["id"], w["pid"]
        );
        // The worker may have died since the status was read (its nanny replaced a frozen
        // one): then this fault did not happen.
        if try_signal(w["pid"].as_u64().unwrap(), sig) {
            faults += 1;
        }
    }
    let out = wait_output(child, SUBMIT_DEADLINE);
    assert_eq!(single_output(&out), json!(expected));
    assert!(faults >= 3, "the graph ran long enough to suffer faults");
    c.wait_workers(3);
}

/// False positives are failures too: tasks keeping every core at 100% must never get their
/// worker restarted. `RUSK_TEST_BURN_SECS` lengthens the burn (600 for the 10-minute check).
#[test]
fn workers_whose_tasks_keep_every_core_busy_are_never_restarted() {
    let secs: u64 = std::env::var("RUSK_TEST_BURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let c = NannyCluster::start(2, &[], &["--nthreads", "2"], &[]);
    let before: Vec<(u64, u64)> = c
        .workers()
        .iter()
        .map(|w| {
            (
                w["pid"].as_u64().unwrap(),
                w["incarnation"].as_u64().unwrap(),
            )
        })
        .collect();
    // 4 spinning commands plus 2 spinning builtin-free shells per core: the machine is saturated.
    let spin = format!(
        "end=$(( $(date +%s) + {secs} )); while [ $(date +%s) -lt $end ]; do :; done; echo done"
    );
    let tasks: Vec<Value> = (0..4)
        .map(|i| json!({"key": format!("burn{i}"), "cmd": ["sh", "-c", spin.clone()]}))
        .collect();
    let t0 = Instant::now();
    let (ok, out, err) =
        c.submit_wait_within(&json!({"tasks": tasks}), Duration::from_secs(secs + 120));
    assert!(ok, "{err}");
    assert!(
        t0.elapsed() >= Duration::from_secs(secs - 1),
        "the tasks really burned"
    );
    assert_eq!(out["burn3"], json!("done\n"));
    let after: Vec<(u64, u64)> = c
        .workers()
        .iter()
        .map(|w| {
            (
                w["pid"].as_u64().unwrap(),
                w["incarnation"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(before, after, "no worker was restarted");
    assert!(
        c.events().is_empty(),
        "no recovery at all: {:?}",
        c.events()
    );
}

fn pids_and_incarnations(c: &NannyCluster) -> Vec<(u64, u64)> {
    c.workers()
        .iter()
        .map(|w| {
            (
                w["pid"].as_u64().unwrap(),
                w["incarnation"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Freeze `pid` for `d` (SIGSTOP, then SIGCONT).
fn freeze(pid: u64, d: Duration) {
    signal(pid, libc::SIGSTOP);
    std::thread::sleep(d);
    signal(pid, libc::SIGCONT);
}

/// A host-wide stall as the nanny sees it: the nanny itself is frozen for 3 s (longer than its
/// 2 s watchdog) while its workers stay healthy, keep pinging and run a graph. When it thaws,
/// the pings it could not read are waiting in its sockets behind the overdue watchdog
/// deadline. Before the nanny measured its own lag this restarted every worker, every time.
#[test]
fn a_stalled_nanny_does_not_take_its_own_stall_for_hung_workers() {
    let c = NannyCluster::start(2, &[], &[], &[]);
    let before = pids_and_incarnations(&c);
    let nanny = c.nannies[0].id() as u64;
    // A graph in flight meanwhile: 40 tasks of 0.3 s on 2 workers take about 6 s.
    let tasks: Vec<Value> = (0..40)
        .map(|i| json!({"key": format!("t{i}"), "cmd": ["sh", "-c", format!("sleep 0.3; echo {i}")]}))
        .collect();
    let graph = c.submit_spawn(&json!({ "tasks": tasks }));
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        let t0 = Instant::now();
        freeze(nanny, Duration::from_millis(3000));
        eprintln!("round {round}: nanny frozen for {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(1000));
    }
    let out = wait_output(graph, SUBMIT_DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pids_and_incarnations(&c), before, "no worker was restarted");
    assert!(
        c.events().is_empty(),
        "no recovery at all: {:?}",
        c.events()
    );
    let log = c.log("nanny0");
    assert!(
        log.contains("the nanny's own event loop was stalled"),
        "the stall is logged: {log}"
    );
    assert!(!log.contains("worker fault detected"), "{log}");
}

/// The discount hides no real hang: a worker frozen together with its nanny is killed by the
/// watchdog about 2 s (of silence the nanny could see) after the nanny thaws. The scheduler's
/// TTL is set long so that only the watchdog can catch it.
#[test]
fn a_worker_frozen_with_its_nanny_is_still_caught_two_seconds_after_the_nanny_thaws() {
    let c = NannyCluster::start(1, &["--worker-ttl", "60s"], &[], &[]);
    let (pid, inc) = only_worker(&c);
    let nanny = c.nannies[0].id() as u64;
    signal(pid, libc::SIGSTOP);
    freeze(nanny, Duration::from_millis(3000));
    let thawed = Instant::now();
    let w = c.wait_new_incarnation(0, inc, RECOVERY);
    let took = thawed.elapsed();
    eprintln!("worker frozen with its nanny: replaced {took:?} after the nanny thawed");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_ne!(w["pid"].as_u64().unwrap(), pid);
    let ev = restarted_events(&c);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["cause"], json!("watchdog"));
    let observed = ev[0]["observed"].as_str().unwrap();
    assert!(
        observed.contains("the nanny itself was stalled") && observed.contains("stopped (T)"),
        "{observed}"
    );
}

/// A worker whose event loop is stuck in the kernel (uninterruptible sleep, as on a page fault
/// against a saturated disk) for 3 s, over the 2 s watchdog, is given the nanny's kernel-stall
/// grace and not killed; one stuck there for longer than the grace is killed, and the event
/// says it was in uninterruptible sleep.
#[test]
fn a_worker_stuck_in_the_kernel_gets_a_bounded_grace() {
    let c = NannyCluster::start(1, &["--worker-ttl", "30s"], &[], &[]);
    let inc = c.worker_of_slot(0).unwrap()["incarnation"]
        .as_u64()
        .unwrap();
    let (ok, _, err) = c.submit_wait(&json!({"tasks": [
        {"key": "stall", "builtin": "block_loop", "args": ["3", "kernel"]}
    ]}));
    assert!(ok, "{err}");
    assert_eq!(
        c.worker_of_slot(0).unwrap()["incarnation"]
            .as_u64()
            .unwrap(),
        inc,
        "a 3 s kernel stall restarted the worker: {:?}",
        c.events()
    );
    assert!(restarted_events(&c).is_empty(), "{:?}", c.events());
    // Stuck for 20 s: past the grace, killed and replaced.
    let child = c.submit_spawn(&json!({"tasks": [
        {"key": "stuck", "builtin": "block_loop", "args": ["20", "kernel"]}
    ]}));
    // (The scheduler still sees the old connection: the fault's vfork child keeps its socket
    // open until it exits. The nanny's record is what tells.)
    wait_until(
        Duration::from_secs(15),
        || {
            restarted_events(&c).iter().any(|e| {
                e["observed"]
                    .as_str()
                    .unwrap_or("")
                    .contains("uninterruptible")
            })
        },
        "the kernel-stuck worker killed after its grace",
    );
    drop(child);
}
