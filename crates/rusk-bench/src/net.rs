//! `rusk-bench net`: what TLS and a flood of connections cost, each against its baseline in the
//! same run, runs alternating so that drift of the machine hits both sides alike.
//!
//! - **tasks/s, plaintext and TLS:** `rusk local GRAPH` as in `e2e`, with `--tls off` and
//!   `--tls on` (a cluster CA made for the run; every connection encrypted and mutually
//!   authenticated). Target: TLS keeps at least 85 % of the plaintext rate.
//! - **transfer GB/s, plaintext and TLS:** one value of `--transfer-mib` in shared memory sent
//!   by `rusk_net::transfer::send_values` and received by `fetch_values` (the code of every
//!   worker-to-worker and worker-to-client transfer) between two threads, each with its own
//!   event loop as two worker processes have, over loopback TCP. Plaintext moves the bytes with
//!   `sendfile` and `splice`; TLS encrypts from and decrypts into the values' memory. Target:
//!   TLS keeps at least 85 % of the plaintext rate.
//! - **flood:** a scheduler and a nanny with 2 workers; a graph submitted with `rusk submit
//!   --wait`, timed, with and without 2,000 unauthenticated connections held against the
//!   scheduler's port from another address (127.0.0.2), each reopened a second after the
//!   scheduler drops it. Target: the graph takes at most 1.2x its time without the flood.
use crate::e2e::{self, E2eOptions, Scratch};
use crate::graphs::{self, Shape};
use crate::link::{self, Link};
use crate::report::{median, Record, Target};
use rusk_net::segment::SegmentWriter;
use rusk_net::tls::{Ca, ISSUED_CERT_VALIDITY};
use rusk_net::{Credentials, Tls, TlsSpec};
use rusk_proto::auth::Role;
use rusk_proto::msg::DataRequest;
use rusk_proto::{GraphId, TaskRef};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// TLS keeps at least this share of the plaintext figure (issue 11: "TLS costs under 15%").
pub const TLS_KEEPS_AT_LEAST: f64 = 0.85;
/// A graph under the flood takes at most this many times its time without it.
pub const FLOOD_SLOWDOWN_MAX: f64 = 1.2;
/// Connections the flood holds.
pub const FLOOD_CONNECTIONS: usize = 2000;

pub struct NetOptions {
    pub tasks: u64,
    pub repeat: u32,
    pub rusk: PathBuf,
    pub timeout: Duration,
    pub transfer_mib: usize,
    /// One of [`PARTS`], or all of them.
    pub only: Option<String>,
    /// The transfer again over a link of this many Gbit/s between two network namespaces
    /// (`crate::link`); 0: not.
    pub link_gbit: u32,
}

/// The parts of the suite, for `--only`.
pub const PARTS: [&str; 3] = ["tasks", "transfer", "flood"];

pub fn run(opts: &NetOptions) -> Result<Vec<Record>, String> {
    let wanted = |part: &str| opts.only.as_deref().is_none_or(|o| o == part);
    let mut records = Vec::new();
    if wanted("tasks") {
        records.extend(tasks_per_sec(opts)?);
    }
    if wanted("transfer") {
        records.extend(transfer(opts)?);
    }
    if wanted("flood") {
        records.extend(flood(opts)?);
    }
    Ok(records)
}

fn ratio_record(what: &str, plain: f64, tls: f64) -> Record {
    Record::new("net", format!("{what}: TLS / plaintext"), tls / plain, "x")
        .target(Target::AtLeast(TLS_KEEPS_AT_LEAST))
}

fn tasks_per_sec(opts: &NetOptions) -> Result<Vec<Record>, String> {
    let base = E2eOptions::for_ab(opts.tasks, opts.repeat, opts.rusk.clone(), opts.timeout);
    let mut records = Vec::new();
    for shape in [Shape::Independent, Shape::Tree] {
        let (rates, n) = e2e::ab_rates(&base, shape, [&["--tls", "off"], &["--tls", "on"]], "net")?;
        let (plain, tls) = (median(&rates[0]), median(&rates[1]));
        let label = format!("{shape} {n}, 2w x 1t");
        records.push(Record::new(
            "net",
            format!("{label}: tasks/s plaintext"),
            plain,
            "1/s",
        ));
        records.push(Record::new(
            "net",
            format!("{label}: tasks/s TLS"),
            tls,
            "1/s",
        ));
        records.push(ratio_record(&format!("{label}: tasks/s"), plain, tls));
    }
    Ok(records)
}

/// Server and client credentials of one cluster CA (as `rusk scheduler` makes).
fn tls_credentials() -> Result<(Credentials, Credentials), String> {
    let ca = Ca::generate().map_err(|e| format!("{e:#}"))?;
    let make = |names: &[String]| -> Result<Credentials, String> {
        let (cert, key) = ca
            .issue(names, SystemTime::now(), ISSUED_CERT_VALIDITY)
            .map_err(|e| format!("{e:#}"))?;
        let tls = Tls::new(&TlsSpec {
            ca_pem: Some(ca.cert_pem()),
            cert_pem: Some(cert),
            key_pem: Some(key),
            ..TlsSpec::default()
        })
        .map_err(|e| format!("{e:#}"))?;
        Ok(Credentials::new(b"bench", Some(tls)))
    };
    Ok((
        make(&["127.0.0.1".into(), link::SERVER_IP.into()])?,
        make(&["client".into()])?,
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Seconds to move the value once from a server thread to this one, for each repetition.
/// Over loopback, or over `link` (the server in one namespace, the client in the other).
fn transfer_times(
    server: Credentials,
    client: Credentials,
    value: bytes::Bytes,
    repeat: u32,
    link: Option<&Link>,
) -> Result<Vec<f64>, String> {
    let (server_ns, client_ns) = match link {
        Some(l) => (Some(l.server_ns.clone()), Some(l.client_ns.clone())),
        None => (None, None),
    };
    let (listener_tx, listener_rx) = std::sync::mpsc::channel();
    let task = TaskRef {
        graph: GraphId(1),
        index: 0,
    };
    let len = value.len();
    let serving = std::thread::spawn(move || {
        let bound = (|| {
            let ip = match &server_ns {
                Some(ns) => {
                    Link::enter(ns)?;
                    link::SERVER_IP
                }
                None => "127.0.0.1",
            };
            let l = std::net::TcpListener::bind((ip, 0)).map_err(|e| e.to_string())?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok::<_, String>(l)
        })();
        let listener = match bound {
            Ok(l) => {
                let _ = listener_tx.send(l.local_addr().map_err(|e| e.to_string()));
                l
            }
            Err(e) => {
                let _ = listener_tx.send(Err(e));
                return;
            }
        };
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (s, _) = listener.accept().await.unwrap();
            let (mut conn, _) = rusk_net::accept(s, &server, &[Role::Peer]).await.unwrap();
            while let Ok(Some(req)) = rusk_net::recv::<DataRequest>(&mut conn).await {
                let DataRequest::Get { id, tasks } = req else {
                    continue; // `Read`: the value stays held, so its memory is never reused
                };
                let items: Vec<_> = tasks.iter().map(|t| (*t, Some(value.clone()))).collect();
                if rusk_net::transfer::send_values(&mut conn, id, &items)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    });
    let addr = listener_rx
        .recv()
        .map_err(|_| "the serving thread died".to_string())??
        .to_string();
    // A thread of its own: it may enter the client's namespace.
    let fetching = std::thread::spawn(move || {
        if let Some(ns) = &client_ns {
            Link::enter(ns)?;
        }
        fetch_times(&addr, client, task, len, repeat)
    });
    let times = fetching
        .join()
        .map_err(|_| "the fetching thread panicked")??;
    serving.join().map_err(|_| "the serving thread panicked")?;
    Ok(times)
}

/// Fetch the value `repeat + 1` times; the seconds of all but the first.
fn fetch_times(
    addr: &str,
    client: Credentials,
    task: TaskRef,
    len: usize,
    repeat: u32,
) -> Result<Vec<f64>, String> {
    runtime().block_on(async move {
        let mut conn = rusk_net::connect(addr, &client, Role::Peer)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let mut times = Vec::new();
        for id in 0..=repeat as u64 {
            let t0 = Instant::now();
            let got = rusk_net::transfer::fetch_values(&mut conn, id, &[task])
                .await
                .map_err(|e| format!("{e:#}"))?;
            let secs = t0.elapsed().as_secs_f64();
            let v = got[0].1.as_ref().ok_or("the value was not sent")?;
            if v.len() != len || v[len / 2] != 7 || v[len - 1] != 7 {
                return Err("the value arrived wrong".to_string());
            }
            if id > 0 {
                times.push(secs); // the first one warms both ends up
            }
        }
        Ok::<_, String>(times)
    })
}

fn transfer(opts: &NetOptions) -> Result<Vec<Record>, String> {
    let len = opts.transfer_mib << 20;
    // As a worker does (`segment_pool::pool_bound`): received values' memory is reused once
    // freed, so each timed transfer writes into warm memory, and what is measured is the
    // connection, not this VM's first touch of fresh memory (bench/README.md, data plane).
    rusk_net::segment::set_pool_bound(2 << 30);
    let seg = SegmentWriter::create(len).map_err(|e| format!("{e:#}"))?;
    let chunk = vec![7u8; 8 << 20];
    let mut off = 0;
    while off < len {
        let n = chunk.len().min(len - off);
        seg.write_at(&chunk[..n], off)
            .map_err(|e| format!("{e:#}"))?;
        off += n;
    }
    let value = seg.finish().map_err(|e| format!("{e:#}"))?;
    let (tls_server, tls_client) = tls_credentials()?;
    let plain = Credentials::plain(b"bench");
    let sides = [
        (plain.clone(), plain.clone()),
        (tls_server.clone(), tls_client.clone()),
    ];
    let mut records = transfer_pair(opts, &sides, &value, None, "between two event loops")?;
    if opts.link_gbit > 0 {
        match Link::new(opts.link_gbit) {
            Ok(l) => records.extend(transfer_pair(
                opts,
                &sides,
                &value,
                Some(&l),
                &format!(
                    "over a {} Gbit/s link between two network namespaces",
                    l.gbit
                ),
            )?),
            Err(why) => eprintln!("net transfer over a link: skipped ({why})"),
        }
    }
    Ok(records)
}

/// Plaintext and TLS alternated, `opts.repeat` runs each: their GB/s and the ratio.
fn transfer_pair(
    opts: &NetOptions,
    sides: &[(Credentials, Credentials); 2],
    value: &bytes::Bytes,
    link: Option<&Link>,
    how: &str,
) -> Result<Vec<Record>, String> {
    let len = value.len();
    let mut rates = [Vec::new(), Vec::new()];
    for i in 0..opts.repeat {
        for (side, (s, c)) in sides.iter().enumerate() {
            let times = transfer_times(s.clone(), c.clone(), value.clone(), 1, link)?;
            let gbs = len as f64 / times[0] / 1e9;
            eprintln!(
                "net transfer of {} MiB {how}, {} run {}/{}: {gbs:.2} GB/s",
                opts.transfer_mib,
                ["plaintext", "TLS"][side],
                i + 1,
                opts.repeat
            );
            rates[side].push(gbs);
        }
    }
    let (plain, tls) = (median(&rates[0]), median(&rates[1]));
    let label = format!("transfer of {} MiB {how}", opts.transfer_mib);
    Ok(vec![
        Record::new("net", format!("{label}: GB/s plaintext"), plain, "GB/s"),
        Record::new("net", format!("{label}: GB/s TLS"), tls, "GB/s"),
        ratio_record(&format!("{label}: GB/s"), plain, tls),
    ])
}

/// A scheduler and a nanny with 2 workers, killed on drop.
struct Cluster {
    procs: Vec<Child>,
    file: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn start_cluster(rusk: &Path, dir: &Path) -> Result<Cluster, String> {
    let file = dir.join("flood-scheduler.json");
    let _ = std::fs::remove_file(&file);
    let spawn = |args: &[&str]| -> Result<Child, String> {
        Command::new(rusk)
            .args(args)
            .arg("--scheduler-file")
            .arg(&file)
            .env("RUSK_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", rusk.display()))
    };
    let mut c = Cluster {
        procs: vec![spawn(&[
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--dashboard",
            "none",
        ])?],
        file: file.clone(),
    };
    let t0 = Instant::now();
    while !file.exists() {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err("the scheduler wrote no scheduler file".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.procs
        .push(spawn(&["nanny", "--nworkers", "2", "--nthreads", "1"])?);
    loop {
        let out = Command::new(rusk)
            .args(["status", "--json", "--scheduler-file"])
            .arg(&file)
            .output()
            .map_err(|e| e.to_string())?;
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if s["workers"].as_array().is_some_and(|w| w.len() >= 2) {
            return Ok(c);
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("the flood cluster's workers did not join".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 2,000 connections from 127.0.0.2 to `address` that never say anything, each reopened a
/// second after the scheduler closes it, until `stop` says `true`. Returns how many are open.
/// The connections wait on the socket and on `stop` without polling, so the flood itself
/// takes no CPU from the cluster on a 2-core machine beyond its reconnections.
fn start_flood(
    address: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    let handle = std::thread::spawn(move || {
        runtime().block_on(async move {
            let addr: std::net::SocketAddr = address.parse().expect("an address");
            let mut tasks = Vec::new();
            for _ in 0..FLOOD_CONNECTIONS {
                let (mut stop, open) = (stop.clone(), counter.clone());
                tasks.push(tokio::spawn(async move {
                    while !*stop.borrow() {
                        let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                            return;
                        };
                        if sock.bind("127.0.0.2:0".parse().unwrap()).is_err() {
                            return;
                        }
                        if let Ok(mut s) = sock.connect(addr).await {
                            open.fetch_add(1, Ordering::Relaxed);
                            let mut buf = [0u8; 256];
                            // Held until the scheduler drops it (or the run ends).
                            loop {
                                use tokio::io::AsyncReadExt;
                                tokio::select! {
                                    r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                                    _ = stop.changed() => break,
                                }
                            }
                            open.fetch_sub(1, Ordering::Relaxed);
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    });
    (open, handle)
}

fn submit_time(
    rusk: &Path,
    file: &Path,
    graph: &Path,
    g: &graphs::BenchGraph,
) -> Result<f64, String> {
    let t0 = Instant::now();
    let out = Command::new(rusk)
        .arg("submit")
        .arg(graph)
        .args(["--wait", "--json", "--scheduler-file"])
        .arg(file)
        .output()
        .map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "rusk submit failed: {}",
            e2e::tail(&String::from_utf8_lossy(&out.stderr), 10)
        ));
    }
    e2e::check_outputs(g, &String::from_utf8_lossy(&out.stdout))?;
    Ok(secs)
}

fn flood(opts: &NetOptions) -> Result<Vec<Record>, String> {
    rusk_net::segment::raise_fd_limit();
    let scratch = Scratch::new()?;
    let cluster = start_cluster(&opts.rusk, &scratch.0)?;
    let sf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cluster.file).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let address = sf["address"].as_str().ok_or("no address")?.to_string();
    let g = graphs::build(Shape::Independent, opts.tasks);
    let path = scratch.0.join("flood.json");
    e2e::write_graph(&g, &path)?;
    submit_time(&opts.rusk, &cluster.file, &path, &g)?; // warm-up
    let mut times = [Vec::new(), Vec::new()];
    let mut held = Vec::new();
    for i in 0..opts.repeat {
        times[0].push(submit_time(&opts.rusk, &cluster.file, &path, &g)?);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (open, handle) = start_flood(address.clone(), stop_rx);
        // Let the flood build up: every connection opened once, the admission queue full.
        let t0 = Instant::now();
        while open.load(Ordering::Relaxed) < FLOOD_CONNECTIONS / 4
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        let at_start = open.load(Ordering::Relaxed);
        let t = submit_time(&opts.rusk, &cluster.file, &path, &g);
        let at_end = open.load(Ordering::Relaxed);
        held.extend([at_start as f64, at_end as f64]);
        let _ = stop.send(true);
        let _ = handle.join();
        let t = t?;
        eprintln!(
            "net flood run {}/{}: {:.3} s without, {:.3} s with {at_start}..{at_end} connections open",
            i + 1,
            opts.repeat,
            times[0].last().unwrap(),
            t,
        );
        times[1].push(t);
    }
    drop(cluster);
    let (quiet, flooded) = (median(&times[0]), median(&times[1]));
    let label = format!(
        "independent {}, 2w x 1t, rusk submit --wait",
        g.spec.tasks.len()
    );
    Ok(vec![
        Record::new("net", format!("{label}: s without a flood"), quiet, "s"),
        Record::new(
            "net",
            format!("{label}: s with {FLOOD_CONNECTIONS} connections from one address"),
            flooded,
            "s",
        ),
        Record::new(
            "net",
            "flood: connections open at the graph's start and end (median)".to_string(),
            median(&held),
            "",
        ),
        Record::new(
            "net",
            format!("{label}: flooded / quiet"),
            flooded / quiet,
            "x",
        )
        .target(Target::Below(FLOOD_SLOWDOWN_MAX)),
    ])
}
