//! Real multi-host clusters: three "hosts" (network namespaces on a bridge, root only). The
//! scheduler and the client are on one, a nanny on each of the other two. Workers listen where
//! they are told and advertise an address the others can reach (never 0.0.0.0); a graph whose
//! sums need values from both hosts runs, and the client fetches its result across hosts.
mod common;
#[path = "support/netns.rs"]
mod netns;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn workers_on_two_hosts_advertise_reachable_addresses_and_run_a_graph_together() {
    let net = match netns::Net::new(3) {
        Ok(n) => n,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // Host 1 listens on every interface (its workers must still advertise 10.77.x.2); host 2
    // takes the defaults (the interface that routes to the scheduler).
    let (file, procs) = netns::start_cluster(
        &net,
        RUSK,
        dir.path(),
        &[],
        &[
            (1, vec!["--nworkers", "1", "--listen-host", "0.0.0.0"]),
            (2, vec!["--nworkers", "1"]),
        ],
    );
    let mut workers = Vec::new();
    wait_until(
        Duration::from_secs(30),
        || {
            workers = netns::live_workers(&net, RUSK, &file);
            workers.len() == 2
        },
        "a worker on each host",
    );
    for h in [1, 2] {
        let w = workers
            .iter()
            .find(|w| {
                w["id"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("host{h}/"))
            })
            .unwrap_or_else(|| panic!("no worker of host{h}: {workers:?}"));
        let address = w["address"].as_str().unwrap();
        assert!(
            address.starts_with(&format!("{}:", net.hosts[h].ip)),
            "host{h}'s worker advertises {address}"
        );
    }
    // 64 leaves spread over both hosts, sums across them; the client (on the scheduler's
    // host) fetches the root from whichever host holds it.
    let leaves: Vec<(String, Value)> = (0..64)
        .map(|i| {
            let key = format!("leaf{i}");
            (
                key.clone(),
                json!({"key": key, "builtin": "concat", "args": [i.to_string()]}),
            )
        })
        .collect();
    let (tasks, root) = sum_tree(&leaves);
    let graph = dir.path().join("graph.json");
    std::fs::write(
        &graph,
        json!({"tasks": tasks, "outputs": [root]}).to_string(),
    )
    .unwrap();
    let out = net
        .command(0, RUSK)
        .args([
            "submit",
            graph.to_str().unwrap(),
            "--wait",
            "--json",
            "--scheduler-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result[&root],
        json!((0..64).sum::<i32>().to_string()),
        "{result}"
    );
    drop(procs);
}
