//! Admission under a flood: 2,000 unauthenticated connections from one address, held open
//! against the scheduler's port and a worker's data port while a graph runs. The honest side
//! (the CLI, a worker joining, transfers between workers) connects from another address and
//! must get in every time; the flood only ever runs `HANDSHAKES_PER_ADDRESS_MAX` handshakes
//! and queues `WAITING_PER_ADDRESS_MAX` connections, the rest refused.
//! (How much the flood slows a graph is measured by the benchmarks, not here.)
mod common;

use common::*;
use std::net::SocketAddr;

const FLOOD: usize = 2_000;
/// The flood's source address (any 127/8 address is loopback on Linux).
const FLOOD_FROM: &str = "127.0.0.2:0";

/// Raise the open-files limit to its hard limit: the flood needs 2,000 sockets.
fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur
}

/// Open `n` connections to `to` from `FLOOD_FROM` and keep them (and whatever the server
/// refuses: it closes those at once). Says nothing on any of them.
async fn flood(to: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(FLOOD_FROM.parse().unwrap()).unwrap();
        if let Ok(c) = s.connect(to).await {
            held.push(c);
        }
    }
    held
}

fn address_of(file: &std::path::Path) -> SocketAddr {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["address"].as_str().unwrap().parse().unwrap()
}

/// The scheduler's address and token, and a runtime to speak the wire protocol to it.
fn speak_to(c: &Cluster) -> (String, String, tokio::runtime::Runtime) {
    let sf: serde_json::Value = serde_json::from_slice(&std::fs::read(&c.file).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (
        sf["address"].as_str().unwrap().to_string(),
        sf["token"].as_str().unwrap().to_string(),
        rt,
    )
}

#[test]
fn a_flood_from_one_address_locks_nobody_out() {
    let limit = raise_nofile();
    if limit < (2 * FLOOD + 512) as u64 {
        eprintln!("skipped: RLIMIT_NOFILE hard limit {limit} is below what the flood needs");
        return;
    }
    let mut c = Cluster::start(2);
    let scheduler = address_of(&c.file);
    let workers = c.status()["workers"].as_array().unwrap().clone();
    let data: SocketAddr = workers[0]["address"].as_str().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held = rt.block_on(async {
        let mut h = flood(scheduler, FLOOD).await;
        h.extend(flood(data, FLOOD).await);
        h
    });
    assert!(
        held.len() >= FLOOD,
        "the flood could not even connect: {}",
        held.len()
    );
    // While it lasts: a graph with transfers between the workers runs, the CLI connects (each
    // status and submit is a new connection), and a new worker joins.
    let leaves: Vec<(String, serde_json::Value)> = (0..64)
        .map(|i| {
            let key = format!("leaf{i}");
            let spec =
                serde_json::json!({"key": key, "builtin": "concat", "args": [i.to_string()]});
            (key, spec)
        })
        .collect();
    let (tasks, root) = sum_tree(&leaves);
    let graph = serde_json::json!({"tasks": tasks, "outputs": [root]});
    for _ in 0..3 {
        let (ok, out, err) = c.submit_wait(&graph);
        assert!(ok, "submit failed during the flood: {err}");
        assert_eq!(
            out[&root],
            serde_json::json!((0..64).sum::<i32>().to_string()),
            "{out}"
        );
    }
    c.add_worker();
    c.wait_workers(3);
    // The scheduler said why it refused the flood (rate-limited lines).
    let log = c.scheduler_log();
    assert!(log.contains("WAITING_PER_ADDRESS_MAX"), "{log}");
    drop(held);
}

/// A worker (with the right token) that registers with a pid meaning a process group or
/// every process is refused at the door: `rusk local` signals the pids the status shows.
#[test]
fn a_registration_with_a_pid_that_is_not_one_process_is_refused() {
    use futures::StreamExt;
    use rusk_net as net;
    use rusk_proto::auth::Role;
    use rusk_proto::msg::{WorkerInfo, WorkerToScheduler};

    let c = Cluster::start(0);
    let (address, token, rt) = speak_to(&c);
    for pid in [0u32, 1, u32::MAX] {
        let closed = rt.block_on(async {
            let mut conn = net::connect(
                &address,
                &net::Credentials::plain(token.as_bytes()),
                Role::Worker,
            )
            .await
            .expect("the handshake itself succeeds");
            let info = WorkerInfo {
                name: format!("liar-{pid}"),
                host: "h".into(),
                pid,
                nthreads: 1,
                data_address: "127.0.0.1:9".into(),
                nanny: None,
                slot: None,
                resources: Default::default(),
                held: Vec::new(),
                running: Vec::new(),
            };
            net::send(&mut conn, &vec![WorkerToScheduler::Register(info)])
                .await
                .unwrap();
            // The scheduler closes the connection instead of welcoming it.
            tokio::time::timeout(std::time::Duration::from_secs(10), conn.next())
                .await
                .expect("answered or closed in time")
                .is_none_or(|r| r.is_err())
        });
        assert!(closed, "pid {pid} was welcomed");
    }
    assert_eq!(c.worker_count(), 0);
    let log = c.scheduler_log();
    assert!(log.contains("not a process id"), "{log}");
}

/// A client that sends requests but never reads the replies: once more than
/// `--peer-outbox-limit` is queued for it, the scheduler cuts it off (closes its connection, as
/// if it had left) and says so; everyone else goes on as before.
#[test]
fn a_peer_that_does_not_read_is_cut_off_at_its_outbox_limit() {
    use futures::SinkExt;
    use rusk_net as net;
    use rusk_proto::auth::Role;
    use rusk_proto::msg::ClientToScheduler;

    let c = Cluster::start_with(1, &["--peer-outbox-limit", "4MiB"], &[]);
    let (address, token, rt) = speak_to(&c);
    let frames_sent = rt.block_on(async {
        let mut conn = net::connect(
            &address,
            &net::Credentials::plain(token.as_bytes()),
            Role::Client,
        )
        .await
        .unwrap();
        // Each frame asks for a thousand status replies (about a MiB); none is ever read.
        let many = net::encode(&vec![ClientToScheduler::Status; 1_000]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut sent = 0usize;
        while std::time::Instant::now() < deadline {
            let step =
                tokio::time::timeout(std::time::Duration::from_secs(5), conn.send(many.clone()));
            match step.await {
                Ok(Ok(())) => sent += 1,
                // Reset by the scheduler (or our writes blocked on a closed window): cut off.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        sent
    });
    wait_until(
        std::time::Duration::from_secs(30),
        || c.scheduler_log().contains("peer cut off"),
        "the scheduler to cut the client off",
    );
    assert!(frames_sent >= 4, "only {frames_sent} frames went out");
    // The others are not affected: the CLI connects, and a graph runs.
    assert_eq!(c.worker_count(), 1);
    let graph = serde_json::json!({"tasks": [{"key": "a", "builtin": "concat", "args": ["x", "y"]}], "outputs": ["a"]});
    let (ok, out, err) = c.submit_wait(&graph);
    assert!(ok, "{err}");
    assert_eq!(out["a"], serde_json::json!("xy"));
}
