//! TLS end to end, with real processes: a cluster with an operator's CA (the scheduler, two
//! workers with certificates of two CAs of the bundle, the CLI), every kind of bad peer refused
//! with a clear, logged reason while the cluster keeps working, a CA revoked by editing the
//! bundle, the dashboard over HTTPS, and a multi-host cluster where the scheduler turns TLS on
//! by itself because it listens beyond loopback.
mod common;
#[path = "support/netns.rs"]
mod netns;

use common::*;
use rusk_net::tls::{Ca, ISSUED_CERT_VALIDITY};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// A certificate and key of `ca` for `names`, written as `<name>.pem` / `<name>.key`.
fn issue(
    ca: &Ca,
    dir: &Path,
    name: &str,
    names: &[&str],
    not_before: SystemTime,
    valid: Duration,
) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let (cert, key) = ca.issue(&names, not_before, valid).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

fn fresh(ca: &Ca, dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    issue(
        ca,
        dir,
        name,
        names,
        SystemTime::now(),
        ISSUED_CERT_VALIDITY,
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A sum over 32 leaves across the workers: results move worker to worker.
fn tree_graph() -> (Value, String) {
    let leaves: Vec<(String, Value)> = (0..32)
        .map(|i| {
            let key = format!("leaf{i}");
            (
                key.clone(),
                json!({"key": key, "builtin": "concat", "args": [i.to_string()]}),
            )
        })
        .collect();
    let (tasks, root) = sum_tree(&leaves);
    (json!({"tasks": tasks, "outputs": [root]}), root)
}

/// `rusk ARGS --scheduler-file FILE` with this process's TLS files.
fn rusk_with(file: &Path, cert: &(PathBuf, PathBuf), args: &[&str]) -> Output {
    Command::new(RUSK)
        .args(args)
        .arg("--scheduler-file")
        .arg(file)
        .args(["--tls-cert", s(&cert.0), "--tls-key", s(&cert.1)])
        .env("RUSK_LOG", "warn")
        .output()
        .unwrap()
}

fn run_tree(c: &Cluster, cert: &(PathBuf, PathBuf)) {
    let (graph, root) = tree_graph();
    let path = c.write_graph("tree.json", &graph);
    let out = rusk_with(&c.file, cert, &["submit", s(&path), "--wait", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result[&root], json!((0..32).sum::<i32>().to_string()));
}

fn log_of(c: &Cluster, name: &str) -> String {
    std::fs::read_to_string(c.dir.path().join(format!("{name}.log"))).unwrap_or_default()
}

/// An unsupervised worker that is refused exits; its log says why.
fn refused_worker(c: &mut Cluster, cert: &(PathBuf, PathBuf)) -> String {
    let i = c.add_worker_with(&["--tls-cert", s(&cert.0), "--tls-key", s(&cert.1)], &[]);
    let out = wait_output_of(&mut c.workers[i], Duration::from_secs(20));
    assert!(!out.success(), "a refused worker exits with an error");
    log_of(c, &format!("w{i}"))
}

fn wait_output_of(child: &mut std::process::Child, deadline: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < deadline,
            "the refused worker did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_operators_ca_secures_the_cluster_and_every_bad_peer_is_refused_clearly() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    let (ca, team, stranger) = (
        Ca::generate().unwrap(),
        Ca::generate().unwrap(),
        Ca::generate().unwrap(),
    );
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, ca.cert_pem() + &team.cert_pem()).unwrap();
    let sched = fresh(&ca, dir, "scheduler", &["127.0.0.1"]);
    let w0 = fresh(&ca, dir, "w0", &["127.0.0.1"]);
    let w1 = fresh(&team, dir, "w1", &["127.0.0.1"]);
    let client = fresh(&ca, dir, "client", &["client"]);
    let foreign = fresh(&stranger, dir, "foreign", &["127.0.0.1"]);
    let long_ago = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    let expired = issue(
        &ca,
        dir,
        "expired",
        &["127.0.0.1"],
        long_ago,
        Duration::from_secs(3600),
    );

    let mut c = Cluster::start_with(
        0,
        &[
            "--dashboard",
            "127.0.0.1:0",
            "--tls-ca",
            s(&bundle),
            "--tls-cert",
            s(&sched.0),
            "--tls-key",
            s(&sched.1),
        ],
        &[],
    );
    let sf: Value = serde_json::from_str(&std::fs::read_to_string(&c.file).unwrap()).unwrap();
    assert!(sf["tls"]["ca_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(
        sf["tls"].get("ca_key_pem").is_none(),
        "an operator's CA key never leaves them"
    );
    for w in [&w0, &w1] {
        c.add_worker_with(&["--tls-cert", s(&w.0), "--tls-key", s(&w.1)], &[]);
    }
    let status = |c: &Cluster| -> Value {
        serde_json::from_slice(&rusk_with(&c.file, &client, &["status", "--json"]).stdout)
            .unwrap_or(Value::Null)
    };
    wait_until(
        Duration::from_secs(20),
        || {
            status(&c)["workers"]
                .as_array()
                .is_some_and(|w| w.len() == 2)
        },
        "two TLS workers",
    );
    run_tree(&c, &client);

    // A plaintext client is told the cluster requires TLS.
    let address = sf["address"].as_str().unwrap();
    let token = sf["token"].as_str().unwrap();
    let out = Command::new(RUSK)
        .args(["status", "--scheduler", address, "--token", token])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("requires TLS"),
        "{err}"
    );
    // So is a plaintext peer of a worker's data server: it answers only TLS too.
    let data = status(&c)["workers"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut raw = std::net::TcpStream::connect(&data).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"RUSK").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(
        answer.windows(4).any(|w| w == b"RTLS"),
        "the data server told a plaintext peer it requires TLS: {answer:?}"
    );

    // A certificate of a CA outside the bundle: refused, both sides say so.
    let log = refused_worker(&mut c, &foreign);
    assert!(log.contains("refused our TLS certificate"), "{log}");
    // An expired certificate.
    let log = refused_worker(&mut c, &expired);
    assert!(log.contains("refused our TLS certificate"), "{log}");
    // A server certificate for another name: the client dials `localhost`, the scheduler's
    // certificate names only 127.0.0.1.
    let port = address.rsplit_once(':').unwrap().1;
    let out = Command::new(RUSK)
        .args([
            "status",
            "--scheduler",
            &format!("localhost:{port}"),
            "--token",
            token,
        ])
        .args([
            "--tls-ca",
            s(&bundle),
            "--tls-cert",
            s(&client.0),
            "--tls-key",
            s(&client.1),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not valid for name \"localhost\""),
        "{err}"
    );
    let sched_log = c.scheduler_log();
    assert!(
        sched_log.contains("UnknownIssuer"),
        "the scheduler logs the foreign CA"
    );
    assert!(
        sched_log.contains("certificate expired"),
        "the scheduler logs the expiry"
    );
    assert!(
        sched_log.contains("requires TLS"),
        "the scheduler logs the plaintext peer"
    );

    // None of that cost the cluster anything.
    assert_eq!(status(&c)["workers"].as_array().unwrap().len(), 2);
    run_tree(&c, &client);

    // The dashboard is HTTPS, with the scheduler's certificate.
    let dashboard = sf["dashboard"].as_str().unwrap();
    assert!(dashboard.starts_with("https://"), "{dashboard}");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", s(&bundle)])
        .arg(format!("{dashboard}health"))
        .output();
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "curl over HTTPS: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("curl not found ({e}): the HTTPS check is skipped"),
    }

    // Revocation: the team's CA leaves the bundle. Its worker, restarted, is refused; the
    // scheduler re-read the bundle without a restart and the rest of the cluster works on.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&bundle, ca.cert_pem()).unwrap();
    c.signal_worker(1, libc::SIGKILL);
    wait_until(
        Duration::from_secs(20),
        || {
            status(&c)["workers"]
                .as_array()
                .is_some_and(|w| w.len() == 1)
        },
        "the killed worker gone",
    );
    let log = refused_worker(&mut c, &w1);
    assert!(log.contains("refused our TLS certificate"), "{log}");
    assert!(c
        .scheduler_log()
        .contains("TLS CA bundle changed: reloaded"));
    run_tree(&c, &client);
}

/// A scheduler listening beyond loopback turns TLS on by itself, with a CA of its own in the
/// scheduler file: nannies on two other hosts join with that file alone, and a graph runs
/// across the hosts. Root only (network namespaces); skipped otherwise.
#[test]
fn a_scheduler_beyond_loopback_encrypts_by_itself_and_hosts_join_with_its_file() {
    let net = match netns::Net::new(3) {
        Ok(n) => n,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (file, procs) = netns::start_cluster(
        &net,
        RUSK,
        dir.path(),
        &[],
        &[(1, vec!["--nworkers", "1"]), (2, vec!["--nworkers", "1"])],
    );
    let sf: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(sf["tls"]["ca_key_pem"].as_str().is_some(), "{sf}");
    let mode = std::fs::metadata(&file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    wait_until(
        Duration::from_secs(30),
        || netns::live_workers(&net, RUSK, &file).len() == 2,
        "a worker on each host",
    );
    let (graph, root) = tree_graph();
    let path = dir.path().join("graph.json");
    std::fs::write(&path, graph.to_string()).unwrap();
    let out = net
        .command(0, RUSK)
        .args(["submit", s(&path), "--wait", "--json", "--scheduler-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result[&root], json!((0..32).sum::<i32>().to_string()));
    // A plaintext client from another host is refused, with the reason.
    let out = net
        .command(1, RUSK)
        .args(["status", "--scheduler", sf["address"].as_str().unwrap()])
        .args(["--token", sf["token"].as_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("requires TLS"),
        "{err}"
    );
    let log = std::fs::read_to_string(dir.path().join("scheduler.log")).unwrap();
    assert!(
        log.contains("TLS on, with a cluster CA made for this cluster"),
        "{log}"
    );
    drop(procs);
}
