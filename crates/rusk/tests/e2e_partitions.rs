//! Partitions on a real multi-host cluster: "hosts" are network namespaces on a bridge (root
//! only; skipped with the reason otherwise). The scheduler and the client are on host 0, a
//! nanny with one worker on each of hosts 1 and 2. A graph of slow tasks is in flight each
//! time, and its result must be right. See docs/fault-model.md, "Partitions".
mod common;
#[path = "support/netns.rs"]
mod netns;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const TTL: &str = "3s";

fn cluster(net: &netns::Net, dir: &Path) -> (std::path::PathBuf, netns::Procs) {
    let (file, procs) = netns::start_cluster(
        net,
        RUSK,
        dir,
        &["--worker-ttl", TTL],
        &[
            (1, vec!["--nworkers", "1", "--nthreads", "2"]),
            (2, vec!["--nworkers", "1", "--nthreads", "2"]),
        ],
    );
    wait_until(
        Duration::from_secs(30),
        || netns::live_workers(net, RUSK, &file).len() == 2,
        "a worker on each host",
    );
    (file, procs)
}

/// `rusk submit --wait --json` of `graph`, started on host 0 in the background.
fn submit(net: &netns::Net, dir: &Path, file: &Path, graph: &Value) -> std::process::Child {
    let path = dir.join(format!("graph-{}.json", std::process::id()));
    std::fs::write(&path, graph.to_string()).unwrap();
    net.command(0, RUSK)
        .args([
            "submit",
            path.to_str().unwrap(),
            "--wait",
            "--json",
            "--scheduler-file",
        ])
        .arg(file)
        .env("RUSK_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child, root: &str, expected: &str) {
    let out = wait_output(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the graph failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[root], Value::from(expected), "{v}");
}

/// (worker id, incarnation) of the live workers.
fn incarnations(net: &netns::Net, file: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = netns::live_workers(net, RUSK, file)
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap_or("").to_string(),
                w["incarnation"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

/// Workers by (id, incarnation).
type Incarnations = [(String, u64)];

/// A graph of slow tasks in flight (submitted from host 0, running for a second), and the
/// workers' incarnations then.
struct InFlight {
    child: std::process::Child,
    root: String,
    expected: String,
    before: Vec<(String, u64)>,
}

fn graph_in_flight(net: &netns::Net, dir: &Path, file: &Path) -> InFlight {
    let (graph, expected) = slow_sum_graph(40, 400, 300);
    let root = graph["outputs"][0].as_str().unwrap().to_string();
    let child = submit(net, dir, file, &graph);
    std::thread::sleep(Duration::from_secs(1));
    let before = incarnations(net, file);
    InFlight {
        child,
        root,
        expected,
        before,
    }
}

/// Wait until both hosts have a worker again and `replaced(worker)` holds for a new
/// incarnation of the ones that had to come back; returns the time since `healed`.
fn capacity_back(
    net: &netns::Net,
    file: &Path,
    before: &Incarnations,
    healed: Instant,
    replaced: fn(&Incarnations, &Incarnations) -> bool,
    what: &str,
) -> Duration {
    wait_until(
        Duration::from_secs(30),
        || {
            let now = incarnations(net, file);
            now.len() == 2 && replaced(before, &now)
        },
        what,
    );
    let back = healed.elapsed();
    eprintln!(
        "{what} {:.2} s after the heal (TTL {TTL})",
        back.as_secs_f64()
    );
    back
}

/// Host 1's worker is a new incarnation.
fn host1_replaced(before: &Incarnations, now: &Incarnations) -> bool {
    now.iter()
        .any(|w| w.0.starts_with("host1/") && !before.contains(w))
}

/// The cut that drops everything a host sends (and, with `inbound`, receives) on its link.
fn cut_rules(inbound: bool) -> String {
    let mut r = String::from(
        "table inet cut {\n chain out {\n  type filter hook output priority 0; policy accept;\n  \
         oifname != \"lo\" drop\n }\n",
    );
    if inbound {
        r.push_str(
            " chain in {\n  type filter hook input priority 0; policy accept;\n  \
             iifname != \"lo\" drop\n }\n",
        );
    }
    r.push_str("}\n");
    r
}

fn net_or_skip(n: usize) -> Option<netns::Net> {
    match netns::Net::new(n) {
        Ok(net) => Some(net),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn a_host_cut_off_for_ten_seconds_loses_its_work_to_the_other_and_comes_back_after_the_heal() {
    let Some(net) = net_or_skip(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (file, _procs) = cluster(&net, dir.path());
    let g = graph_in_flight(&net, dir.path(), &file);
    net.cut(1, true);
    std::thread::sleep(Duration::from_secs(10));
    net.cut(1, false);
    let healed = Instant::now();
    // The scheduler dropped host 1's worker after its TTL and ran its work on host 2; after the
    // heal that worker learns it was dropped, exits, and its nanny starts a new incarnation.
    let back = capacity_back(
        &net,
        &file,
        &g.before,
        healed,
        host1_replaced,
        "host 1's capacity back",
    );
    finish(g.child, &g.root, &g.expected);
    // Host 2 never lost its worker.
    let after = incarnations(&net, &file);
    assert!(
        after
            .iter()
            .any(|w| w.0.starts_with("host2/") && g.before.contains(w)),
        "{:?} -> {after:?}",
        g.before
    );
    // The bound: capacity back within worker_ttl + 2 s of the heal.
    assert!(
        back <= Duration::from_secs(5),
        "capacity back {back:?} after the heal"
    );
}

#[test]
fn five_percent_loss_and_fifty_ms_delay_restart_nobody() {
    let Some(net) = net_or_skip(3) else { return };
    for h in [1, 2] {
        eprintln!("host {h}: {}", net.impair(h, 5, 50));
    }
    let dir = tempfile::tempdir().unwrap();
    let (file, _procs) = cluster(&net, dir.path());
    let before = incarnations(&net, &file);
    let (graph, expected) = slow_sum_graph(20, 300, 200);
    let root = graph["outputs"][0].as_str().unwrap().to_string();
    finish(submit(&net, dir.path(), &file, &graph), &root, &expected);
    assert_eq!(incarnations(&net, &file), before, "a worker was restarted");
    let events = net
        .command(0, RUSK)
        .args(["events", "--json", "--scheduler-file"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&events.stdout);
    for cause in ["\"heartbeat\"", "\"connection\"", "\"watchdog\""] {
        assert!(
            !text.contains(cause),
            "a {cause} recovery under loss and delay: {text}"
        );
    }
}

#[test]
fn a_one_way_partition_of_a_host_is_survived() {
    let Some(net) = net_or_skip(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (file, _procs) = cluster(&net, dir.path());
    let g = graph_in_flight(&net, dir.path(), &file);
    // Host 1 hears everyone but nobody hears it: everything it sends is dropped, for 10 s.
    net.nft(1, &cut_rules(false));
    std::thread::sleep(Duration::from_secs(10));
    net.nft(1, "delete table inet cut\n");
    let healed = Instant::now();
    // Dropped after the TTL, host 1's worker hears its connection close, exits, and the new
    // incarnation its nanny starts joins once it can be heard again.
    capacity_back(
        &net,
        &file,
        &g.before,
        healed,
        host1_replaced,
        "host 1's capacity back",
    );
    finish(g.child, &g.root, &g.expected);
}

#[test]
fn the_schedulers_host_cut_off_from_everyone_for_ten_seconds() {
    let Some(net) = net_or_skip(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (file, _procs) = cluster(&net, dir.path());
    let g = graph_in_flight(&net, dir.path(), &file);
    // Everything in or out of host 0's network link is dropped (its own loopback, where the
    // client talks to the scheduler, is not).
    net.nft(0, &cut_rules(true));
    std::thread::sleep(Duration::from_secs(10));
    net.nft(0, "delete table inet cut\n");
    let healed = Instant::now();
    // Both workers were dropped after the TTL; after the heal each learns it, exits, and its
    // nanny starts a new one: the graph finishes on them.
    let all_replaced =
        |before: &Incarnations, now: &Incarnations| now.iter().all(|w| !before.contains(w));
    capacity_back(
        &net,
        &file,
        &g.before,
        healed,
        all_replaced,
        "both hosts' capacity back",
    );
    finish(g.child, &g.root, &g.expected);
}
