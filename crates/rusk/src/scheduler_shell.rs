//! The scheduler process: a thin tokio shell around `rusk_core::scheduler::Scheduler`.
//!
//! One task accepts connections and runs the handshake; each authenticated connection gets a
//! reader task (decode frames → events) and a writer task (frames from its outbox → socket;
//! `outbox`: bounded in bytes, a peer that stops reading is cut off). The core runs on one loop that drains every event available, then sends each
//! destination one frame with all its messages: batching is where the throughput comes from.
//! The loop never waits on a socket, so a slow peer cannot stall the cluster.
//!
//! The same runtime serves the dashboard, `/metrics` and the JSON API (`crate::http`): the
//! loop publishes a snapshot every 250 ms and answers queries between turns, so HTTP never
//! holds the loop up.
use crate::config::{SchedulerFile, TlsMode};
use crate::http::{self, Query};
use crate::journal::{HeldReplies, Identity, Journal, JournalWriter};
use crate::metrics::{Observer, SchedulerIdentity, PUBLISH_INTERVAL};
mod outbox;
pub use outbox::PEER_OUTBOX_BYTES_MAX;
use outbox::{outbox, read_loop, writer, Outbox};
// Here rather than in main.rs: `crate::scheduler_shell::sd_notify` for the nanny too.
#[path = "sd_notify.rs"]
pub mod sd_notify;
use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use rusk_core::scheduler::{Command, Event, Scheduler, SchedulerConfig};
use rusk_net::{self as net, TlsSpec};
use rusk_proto::auth::Role;
use rusk_proto::msg::{
    ClientToScheduler, NannyToScheduler, SchedulerToClient, SchedulerToNanny, SchedulerToWorker,
    WorkerToScheduler,
};
use rusk_proto::{ClientId, Incarnation, NannyId};
use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// Events queued from connection tasks to the core loop. When full, readers wait, which pushes
/// back on the peers' sockets instead of growing memory.
const EVENT_QUEUE_MAX: usize = 16 * 1024;
/// Events handled per loop turn before outputs are flushed: bounds the latency a huge burst can
/// add to everyone else's messages.
const EVENTS_PER_TURN_MAX: usize = 8 * 1024;

pub struct SchedulerOptions {
    pub listen: String,
    pub scheduler_file: Option<PathBuf>,
    pub token: String,
    pub core: SchedulerConfig,
    /// Where to serve the dashboard, `/metrics` and the JSON API (`None`: not at all).
    pub dashboard: Option<String>,
    /// Whether connections are encrypted (`Auto`: whenever the listener is off loopback).
    pub tls_mode: TlsMode,
    /// The operator's own CA bundle, certificate and key (`--tls-*`); none: the scheduler makes
    /// a cluster CA of its own when it encrypts.
    pub tls: TlsSpec,
    /// The journal (`--journal`): the cluster's identity and what is needed to resume its work
    /// after a restart.
    pub journal: Option<PathBuf>,
    pub journal_sync: crate::journal::JournalSync,
    /// Bytes queued for one peer before it is cut off as not reading (`PEER_OUTBOX_BYTES_MAX`).
    pub peer_outbox_limit: usize,
}

/// The scheduler's TLS, and what of it goes into the scheduler file for joiners.
fn set_up_tls(
    mode: TlsMode,
    given: &TlsSpec,
    local: SocketAddr,
    scheduler_file: Option<&std::path::Path>,
    journaled_ca: Option<TlsSpec>,
) -> Result<(Option<Arc<net::Tls>>, Option<TlsSpec>)> {
    let encrypt = match mode {
        TlsMode::On => true,
        TlsMode::Off => false,
        TlsMode::Auto => !local.ip().is_loopback() || !given.is_empty(),
    };
    if !encrypt {
        if !local.ip().is_loopback() {
            warn!(listen = %local, "listening beyond loopback WITHOUT TLS (--tls off): anyone on the path reads the data and code, and can inject frames");
        }
        return Ok((None, None));
    }
    if let Some(ca_file) = &given.ca_file {
        let tls =
            net::Tls::new(given).context("cannot set up TLS from --tls-ca/--tls-cert/--tls-key")?;
        let bundle = std::fs::read_to_string(ca_file).context("cannot read the TLS CA bundle")?;
        info!("TLS on, with the operator's CA: joiners need their own --tls-cert and --tls-key");
        let for_joiners = TlsSpec {
            ca_pem: Some(bundle),
            ..TlsSpec::default()
        };
        return Ok((Some(tls), Some(for_joiners)));
    }
    if !given.is_empty() {
        anyhow::bail!("--tls-cert and --tls-key need the CA bundle that issued them (--tls-ca)");
    }
    if scheduler_file.is_none() {
        anyhow::bail!(
            "TLS with a cluster CA made here needs --scheduler-file to hand the CA to joiners; \
             or give your own CA (--tls-ca, --tls-cert, --tls-key), or --tls off"
        );
    }
    if let Some(spec) = journaled_ca {
        // The same cluster as before the restart: joiners hold certificates of this CA.
        let tls = net::Tls::new(&spec).context("cannot set up TLS with the journal's CA")?;
        info!("TLS on, with the cluster CA from the journal");
        return Ok((Some(tls), Some(spec)));
    }
    let ca = net::tls::Ca::generate().context("cannot make the cluster CA")?;
    let spec = TlsSpec {
        ca_pem: Some(ca.cert_pem()),
        ca_key_pem: Some(ca.key_pem()),
        ..TlsSpec::default()
    };
    let tls = net::Tls::new(&spec).context("cannot set up TLS")?;
    info!("TLS on, with a cluster CA made for this cluster (in the scheduler file, mode 0600)");
    Ok((Some(tls), Some(spec)))
}

/// The address joiners dial: the listener's, or, when it is bound to every interface, the
/// address of one of this host's interfaces (an unspecified address is never handed out).
fn contact_address(local: SocketAddr) -> String {
    if !local.ip().is_unspecified() {
        return local.to_string();
    }
    let ip = net::tls::interface_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, local.port()).to_string()
}

enum Inbound {
    WorkerJoined {
        incarnation: Incarnation,
        info: rusk_proto::msg::WorkerInfo,
        out: Outbox,
        reader: AbortHandle,
    },
    Worker {
        incarnation: Incarnation,
        msgs: Vec<WorkerToScheduler>,
    },
    WorkerLeft {
        incarnation: Incarnation,
        reason: String,
    },
    ClientJoined {
        client: ClientId,
        out: Outbox,
    },
    Client {
        client: ClientId,
        msgs: Vec<ClientToScheduler>,
    },
    ClientLeft {
        client: ClientId,
    },
    NannyJoined {
        nanny: NannyId,
        info: rusk_proto::msg::NannyInfo,
        out: Outbox,
    },
    Nanny {
        nanny: NannyId,
        msgs: Vec<NannyToScheduler>,
    },
    NannyLeft {
        nanny: NannyId,
        reason: String,
    },
}

struct Peer {
    out: Outbox,
    reader: Option<AbortHandle>,
}

impl Peer {
    /// Queue a frame for the peer; one that stopped reading is cut off (said once), and leaves
    /// through its reader like any closed connection.
    fn send(&self, frame: Bytes, who: &dyn std::fmt::Display) {
        if let Err(o) = self.out.send(frame) {
            if o.first {
                warn!(peer = %who, queued = o.queued, limit = self.out.limit(), "peer cut off: it is not reading its messages (outbox over --peer-outbox-limit)");
            }
        }
    }
}

pub async fn run(mut opts: SchedulerOptions) -> Result<()> {
    let mut journal = None;
    let mut resume = None;
    let mut journaled_ca = None;
    if let Some(path) = &opts.journal {
        let (j, identity, state) = Journal::open(path, opts.journal_sync)?;
        if let Some(id) = identity {
            info!(journal = %path.display(), address = %id.address, graphs = state.graphs.len(), "resuming the cluster from its journal: same token, CA and address");
            opts.token = id.token;
            journaled_ca = id.tls;
            opts.listen = same_port(&opts.listen, &id.address);
            // A restart: resume what the journal holds (a new journal starts a new cluster,
            // with no `scheduler-restart` event).
            resume = Some(state);
        }
        journal = Some(j);
    }
    let listener = TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let local: SocketAddr = listener.local_addr()?;
    let address = contact_address(local);
    let operator_ca = opts.tls.ca_file.is_some();
    let (tls, tls_for_joiners) = set_up_tls(
        opts.tls_mode,
        &opts.tls,
        local,
        opts.scheduler_file.as_deref(),
        journaled_ca,
    )?;
    if let Some(j) = &mut journal {
        j.write_identity(&Identity {
            token: opts.token.clone(),
            tls: tls_for_joiners.clone().filter(|_| !operator_ca),
            address: address.clone(),
        })?;
    }
    let http_listener = match &opts.dashboard {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let dashboard = match &http_listener {
        Some(l) => Some(format!("{scheme}://{}/", l.local_addr()?)),
        None => None,
    };
    if let Some(path) = &opts.scheduler_file {
        SchedulerFile {
            address: address.clone(),
            token: opts.token.clone(),
            pid: std::process::id(),
            dashboard: dashboard.clone(),
            tls: tls_for_joiners,
        }
        .write(path)?;
        info!(%address, file = %path.display(), dashboard = dashboard.as_deref().unwrap_or("none"), "scheduler listening; scheduler file written");
    } else {
        info!(%address, dashboard = dashboard.as_deref().unwrap_or("none"), "scheduler listening");
    }
    let mut core = opts.core;
    let epoch = Instant::now();
    core.epoch_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    core.host = crate::worker_shell::hostname();
    let observer = Observer::new(SchedulerIdentity {
        host: core.host.clone(),
        address,
        epoch,
        epoch_unix_ms: core.epoch_unix_ms,
    });
    crate::metrics::spawn_lag_probe(observer.metrics.clone());
    let (query_tx, query_rx) = mpsc::channel::<Query>(http::QUERY_QUEUE_MAX);
    if let Some(l) = http_listener {
        let mut state =
            http::HttpState::new(observer.subscribe(), query_tx, observer.metrics.clone());
        if !l.local_addr()?.ip().is_loopback() {
            info!("dashboard bound beyond loopback: every route but /health requires the cluster token");
            state = state.with_token(&opts.token);
        }
        let https = match &tls {
            Some(t) => Some(t.https_config()?),
            None => None,
        };
        http::spawn(l, state, https);
    }
    let (tx, rx) = mpsc::channel::<Inbound>(EVENT_QUEUE_MAX);
    let creds = net::Credentials::new(opts.token.as_bytes(), tls);
    tokio::spawn(accept_loop(listener, creds, tx, opts.peer_outbox_limit));
    core.journal = journal.is_some();
    let core = match resume {
        Some(state) => {
            let (core, first) = Scheduler::resume(core, state);
            if let Some(j) = &mut journal {
                let records = first
                    .into_iter()
                    .filter_map(|c| match c {
                        Command::Journal(r) => Some(r),
                        _ => None,
                    })
                    .collect();
                j.append(records)?;
            }
            core
        }
        None => {
            let mut core = Scheduler::new(core);
            if let Some(j) = &mut journal {
                j.append(core.start_journal())?;
            }
            core
        }
    };
    // systemd (Type=notify): serving from here on (the journal replayed, so that a long replay
    // runs under TimeoutStartSec, not the watchdog); watchdog pings from the core loop.
    let mut notify = sd_notify::Notifier::from_env();
    notify.ready(&format!("listening on {local}"));
    notify.stop_on_signal();
    let journal = journal
        .map(|j| JournalWriter::spawn(j, observer.metrics.journal.clone()))
        .transpose()?;
    core_loop(core, epoch, rx, query_rx, observer, notify, journal).await
}

/// `listen` with the journal's port when it asks for any port (`:0`): a restarted scheduler
/// keeps its address.
fn same_port(listen: &str, journaled: &str) -> String {
    let port = journaled.rsplit(':').next().unwrap_or("0");
    match listen.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{port}"),
        _ => listen.to_string(),
    }
}

/// Warnings about refused or failed connections per [`LOG_WINDOW`] before the rest are only
/// counted: a flood of bad connections must not become a flood of log lines.
const CONNECTION_WARNINGS_PER_WINDOW: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Lets through a few log lines per window and counts the rest; the count is reported with the
/// first line of the next window.
struct LogLimiter {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    fn new() -> LogLimiter {
        LogLimiter {
            window_start: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` if this line may be logged.
    fn allow(&mut self) -> Option<u64> {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.window_start = Instant::now();
            self.logged = 0;
        }
        if self.logged < CONNECTION_WARNINGS_PER_WINDOW {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    creds: net::Credentials,
    tx: mpsc::Sender<Inbound>,
    outbox_limit: usize,
) {
    let ids = Arc::new(AtomicU64::new(1));
    let admission = net::admission::Admission::new();
    let limiter = Arc::new(std::sync::Mutex::new(LogLimiter::new()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                if let Some(suppressed) = limiter.lock().expect("not poisoned").allow() {
                    warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match admission.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(why) => {
                if let Some(suppressed) = limiter.lock().expect("not poisoned").allow() {
                    warn!(%peer, suppressed, "connection refused before its handshake: {why}");
                }
                continue; // dropped: closed at once
            }
        };
        let (creds, tx, ids, limiter) = (creds.clone(), tx.clone(), ids.clone(), limiter.clone());
        tokio::spawn(async move {
            let res = serve_connection(stream, &creds, tx, ids, permit, outbox_limit).await;
            if let Err(e) = res {
                if let Some(suppressed) = limiter.lock().expect("not poisoned").allow() {
                    warn!(%peer, error = %format!("{e:#}"), suppressed, "connection dropped");
                }
            }
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    creds: &net::Credentials,
    tx: mpsc::Sender<Inbound>,
    ids: Arc<AtomicU64>,
    mut permit: net::admission::Ticket,
    outbox_limit: usize,
) -> Result<()> {
    permit.turn().await;
    let (mut conn, role) =
        net::accept(stream, creds, &[Role::Worker, Role::Client, Role::Nanny]).await?;
    drop(permit);
    let id = ids.fetch_add(1, Ordering::Relaxed);
    match role {
        Role::Worker => {
            let first: Vec<WorkerToScheduler> =
                tokio::time::timeout(Duration::from_secs(10), net::recv(&mut conn))
                    .await
                    .context("worker did not register in time")??
                    .context("worker closed before registering")?;
            let Some(WorkerToScheduler::Register(info)) = first.into_iter().next() else {
                anyhow::bail!("worker's first message was not Register");
            };
            if !crate::pids::is_process(info.pid) {
                // Shown in the status, where `rusk local` signals it: refused at the door.
                anyhow::bail!(
                    "worker {:?} registered with pid {}, not a process id",
                    info.name,
                    info.pid
                );
            }
            let incarnation = Incarnation(id);
            info!(worker = %info.name, %incarnation, pid = info.pid, address = %info.data_address, "worker joined");
            let (out_tx, out_rx, cut) = outbox(outbox_limit);
            let (sink, stream) = conn.split();
            tokio::spawn(writer(sink, out_rx, cut.clone()));
            let reader_tx = tx.clone();
            let reader = tokio::spawn(async move {
                let reason = read_loop(
                    stream,
                    cut,
                    |msgs| Inbound::Worker { incarnation, msgs },
                    &reader_tx,
                )
                .await;
                let _ = reader_tx
                    .send(Inbound::WorkerLeft {
                        incarnation,
                        reason,
                    })
                    .await;
            });
            tx.send(Inbound::WorkerJoined {
                incarnation,
                info,
                out: out_tx,
                reader: reader.abort_handle(),
            })
            .await
            .ok();
        }
        Role::Client => {
            let client = ClientId(id);
            let (out_tx, out_rx, cut) = outbox(outbox_limit);
            let (sink, stream) = conn.split();
            tokio::spawn(writer(sink, out_rx, cut.clone()));
            tx.send(Inbound::ClientJoined {
                client,
                out: out_tx,
            })
            .await
            .ok();
            let reason = read_loop(stream, cut, |msgs| Inbound::Client { client, msgs }, &tx).await;
            debug!(%client, %reason, "client left");
            tx.send(Inbound::ClientLeft { client }).await.ok();
        }
        Role::Nanny => {
            let first: Vec<NannyToScheduler> =
                tokio::time::timeout(Duration::from_secs(10), net::recv(&mut conn))
                    .await
                    .context("nanny did not register in time")??
                    .context("nanny closed before registering")?;
            let Some(NannyToScheduler::Register(info)) = first.into_iter().next() else {
                anyhow::bail!("nanny's first message was not Register");
            };
            if !crate::pids::is_process(info.pid) {
                anyhow::bail!(
                    "nanny {:?} registered with pid {}, not a process id",
                    info.name,
                    info.pid
                );
            }
            let nanny = NannyId(id);
            info!(nanny = %info.name, host = %info.host, pid = info.pid, slots = info.nworkers, "nanny joined");
            let (out_tx, out_rx, cut) = outbox(outbox_limit);
            let (sink, stream) = conn.split();
            tokio::spawn(writer(sink, out_rx, cut.clone()));
            tx.send(Inbound::NannyJoined {
                nanny,
                info,
                out: out_tx,
            })
            .await
            .ok();
            let reason = read_loop(stream, cut, |msgs| Inbound::Nanny { nanny, msgs }, &tx).await;
            tx.send(Inbound::NannyLeft { nanny, reason }).await.ok();
        }
        Role::Peer => unreachable!("not allowed by accept"),
    }
    Ok(())
}

struct Peers {
    workers: FxHashMap<Incarnation, Peer>,
    clients: FxHashMap<ClientId, Peer>,
    nannies: FxHashMap<NannyId, Peer>,
}

async fn core_loop(
    mut core: Scheduler,
    start: Instant,
    mut rx: mpsc::Receiver<Inbound>,
    mut queries: mpsc::Receiver<Query>,
    mut observer: Observer,
    mut notify: sd_notify::Notifier,
    journal: Option<JournalWriter>,
) -> Result<()> {
    let mut records: Vec<rusk_core::journal::Record> = Vec::new();
    let mut next_publish = Instant::now();
    // Sequence number of the next recovery event (every record passes through `Command::Log`).
    let mut events_next = 0u64;
    let mut peers = Peers {
        workers: FxHashMap::default(),
        clients: FxHashMap::default(),
        nannies: FxHashMap::default(),
    };
    let mut out: Vec<Command> = Vec::new();
    let mut to_workers: FxHashMap<Incarnation, Vec<SchedulerToWorker>> = FxHashMap::default();
    let mut to_clients: FxHashMap<ClientId, Vec<SchedulerToClient>> = FxHashMap::default();
    let mut to_nannies: FxHashMap<NannyId, Vec<SchedulerToNanny>> = FxHashMap::default();
    // Replies to clients waiting for the journal to have what they acknowledge.
    let mut held: HeldReplies<FxHashMap<ClientId, Vec<SchedulerToClient>>> = HeldReplies::default();
    // After a late turn: the event that woke it, handled first in the next turn.
    let mut carried: Option<Inbound> = None;
    let mut caught_up = false;
    loop {
        notify.watchdog(); // every turn: at least every PUBLISH_INTERVAL
        let deadline = (start + core.next_timeout()).min(next_publish);
        let first = if let Some(ev) = carried.take() {
            Some(ev)
        } else {
            tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => Some(ev),
                None => return Ok(()),
            },
            Some(q) = queries.recv() => {
                answer(&core, q);
                continue;
            }
            _ = held.next_written(), if !held.is_empty() => {
                for batch in held.ready() {
                    send_to_clients(&peers, batch);
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => None,
            }
        };
        let turn_started = Instant::now();
        let lag = turn_started.saturating_duration_since(deadline);
        if lag >= rusk_core::scheduler::LOOP_LAG_DISCOUNT_MIN && !caught_up {
            // This loop (or the whole host) was stalled: let the connection readers deliver
            // what the workers sent meanwhile before anyone is judged silent, and tell the core
            // how long we were away.
            warn!(
                lag_ms = lag.as_millis() as u64,
                "the scheduler's loop ran late; not holding that time against the workers"
            );
            core.handle_into(start.elapsed(), Event::LoopLag(lag), &mut out);
            caught_up = true;
            carried = first;
            tokio::task::yield_now().await;
            continue;
        }
        caught_up = false;
        let now = start.elapsed();
        let mut pending = first;
        let mut handled = 0;
        loop {
            if let Some(ev) = pending.take() {
                if let Inbound::WorkerJoined { incarnation, .. } = &ev {
                    observer.worker_joined(incarnation.0);
                }
                apply(&mut core, now, ev, &mut peers, &mut out);
                handled += 1;
            }
            if handled >= EVENTS_PER_TURN_MAX {
                break;
            }
            match rx.try_recv() {
                Ok(ev) => pending = Some(ev),
                Err(_) => break,
            }
        }
        if now >= core.next_timeout() {
            core.handle_into(now, Event::Tick, &mut out);
        }
        core.flush_journal(&mut out);
        // Carry out the commands: one frame per destination.
        for cmd in out.drain(..) {
            match cmd {
                Command::ToWorker { incarnation, msg } => {
                    to_workers.entry(incarnation).or_default().push(msg)
                }
                Command::ToClient { client, msg } => {
                    to_clients.entry(client).or_default().push(msg)
                }
                Command::ToNanny { nanny, msg } => to_nannies.entry(nanny).or_default().push(msg),
                Command::DropWorker { incarnation, cause } => {
                    // The loss is logged once, as its recovery event (`Log`).
                    debug!(%incarnation, %cause, "dropping worker");
                    to_workers.remove(&incarnation);
                    if let Some(p) = peers.workers.remove(&incarnation) {
                        if let Some(r) = p.reader {
                            r.abort();
                        }
                    }
                }
                // The same loss is in the event log entry (`Log`), logged below.
                Command::Recovery(_) => {}
                Command::Log(record) => {
                    observer.metrics.on_record(&record);
                    events_next = events_next.max(record.seq + 1);
                    log_record(&record);
                }
                Command::Journal(r) => records.push(r),
            }
        }
        // The turn's records are on disk before its replies to clients go out; before its
        // messages to workers too when it raised an id floor (`Record::holds_workers`).
        let mut ticket = None;
        if let Some(j) = &journal {
            let holds_workers = records
                .iter()
                .any(rusk_core::journal::Record::holds_workers);
            ticket = j.write(std::mem::take(&mut records)).await;
            if holds_workers {
                if let Some(t) = ticket.take() {
                    let _ = t.await;
                }
            }
        }
        for (nanny, msgs) in to_nannies.drain() {
            if let Some(p) = peers.nannies.get(&nanny) {
                p.send(net::encode(&msgs), &nanny);
            }
        }
        for (inc, msgs) in to_workers.drain() {
            if let Some(p) = peers.workers.get(&inc) {
                p.send(net::encode(&msgs), &inc);
            }
        }
        if ticket.is_some() || !held.is_empty() {
            held.hold(ticket, std::mem::take(&mut to_clients));
            for batch in held.ready() {
                send_to_clients(&peers, batch);
            }
        } else {
            send_to_clients(&peers, to_clients.drain());
        }
        if handled > 0 {
            observer.metrics.observe_turn(turn_started.elapsed());
        }
        if Instant::now() >= next_publish {
            observer.publish(
                core.status(Some(start.elapsed())),
                core.stats(),
                events_next,
                [
                    ("worker", peers.workers.len()),
                    ("client", peers.clients.len()),
                    ("nanny", peers.nannies.len()),
                ],
            );
            next_publish = Instant::now() + PUBLISH_INTERVAL;
        }
    }
}

fn send_to_clients(
    peers: &Peers,
    batch: impl IntoIterator<Item = (ClientId, Vec<SchedulerToClient>)>,
) {
    for (client, msgs) in batch {
        if let Some(p) = peers.clients.get(&client) {
            p.send(net::encode(&msgs), &client);
        }
    }
}

/// Answer a question from the HTTP server.
fn answer(core: &Scheduler, q: Query) {
    match q {
        Query::Events {
            since,
            limit,
            reply,
        } => {
            let events: Vec<_> = core.events_since(since).take(limit).cloned().collect();
            let next = events.last().map_or(since, |r| r.seq + 1);
            let _ = reply.send(http::EventsPage { events, next });
        }
    }
}

/// Every recovery event is logged once, here, with its cause, ids and durations as fields (so
/// `RUSK_LOG_FORMAT=json` gives them as JSON keys). Events that need no one's attention (a
/// restart done, a worker healthy again) are `info`, the rest `warn`.
fn log_record(r: &rusk_proto::msg::EventRecord) {
    use rusk_proto::msg::{EventCause, EventSource};
    macro_rules! emit {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                seq = r.seq,
                source = %r.source,
                cause = %r.cause,
                host = %r.host,
                nanny = r.nanny.as_deref(),
                slot = r.slot,
                worker = r.worker.as_deref(),
                incarnation = r.incarnation,
                new_incarnation = r.new_incarnation,
                detection_ms = r.detection_ms,
                recovery_ms = r.recovery_ms,
                observed = %r.observed,
                action = %r.action,
                $msg
            )
        };
    }
    match (r.source, r.cause) {
        (_, EventCause::Healthy) => emit!(info, "worker healthy again"),
        (_, EventCause::Unhealthy) => emit!(warn, "worker unhealthy"),
        (EventSource::Scheduler, EventCause::Connection | EventCause::Heartbeat) => {
            emit!(warn, "worker lost")
        }
        (EventSource::Nanny, _) if r.new_incarnation.is_some() => emit!(info, "worker restarted"),
        (EventSource::Nanny, _) => emit!(warn, "worker fault (nanny)"),
        _ => emit!(warn, "recovery event"),
    }
}

fn apply(
    core: &mut Scheduler,
    now: Duration,
    ev: Inbound,
    peers: &mut Peers,
    out: &mut Vec<Command>,
) {
    let Peers {
        workers,
        clients,
        nannies,
    } = peers;
    match ev {
        Inbound::WorkerJoined {
            incarnation,
            info,
            out: tx,
            reader,
        } => {
            workers.insert(
                incarnation,
                Peer {
                    out: tx,
                    reader: Some(reader),
                },
            );
            core.handle_into(now, Event::WorkerJoined { incarnation, info }, out);
        }
        Inbound::Worker { incarnation, msgs } => {
            if !workers.contains_key(&incarnation) {
                return; // dropped already: fenced
            }
            for msg in msgs {
                if matches!(msg, WorkerToScheduler::Register(_)) {
                    warn!(%incarnation, "worker sent Register twice; ignored");
                    continue;
                }
                core.handle_into(now, Event::WorkerMessage { incarnation, msg }, out);
            }
        }
        Inbound::WorkerLeft {
            incarnation,
            reason,
        } => {
            if workers.remove(&incarnation).is_some() {
                // Logged as its recovery event (cause `connection`).
                debug!(%incarnation, %reason, "worker connection closed");
                core.handle_into(
                    now,
                    Event::WorkerLeft {
                        incarnation,
                        reason,
                    },
                    out,
                );
            }
        }
        Inbound::ClientJoined { client, out: tx } => {
            clients.insert(
                client,
                Peer {
                    out: tx,
                    reader: None,
                },
            );
            core.handle_into(now, Event::ClientJoined { client }, out);
        }
        Inbound::Client { client, msgs } => {
            for msg in msgs {
                core.handle_into(now, Event::ClientMessage { client, msg }, out);
            }
        }
        Inbound::ClientLeft { client } => {
            clients.remove(&client);
            core.handle_into(now, Event::ClientLeft { client }, out);
        }
        Inbound::NannyJoined {
            nanny,
            info,
            out: tx,
        } => {
            nannies.insert(
                nanny,
                Peer {
                    out: tx,
                    reader: None,
                },
            );
            core.handle_into(now, Event::NannyJoined { nanny, info }, out);
        }
        Inbound::Nanny { nanny, msgs } => {
            for msg in msgs {
                if matches!(msg, NannyToScheduler::Register(_)) {
                    continue;
                }
                core.handle_into(now, Event::NannyMessage { nanny, msg }, out);
            }
        }
        Inbound::NannyLeft { nanny, reason } => {
            if nannies.remove(&nanny).is_some() {
                // Logged as its recovery event (cause `nanny-gone`).
                debug!(%nanny, %reason, "nanny connection closed");
                core.handle_into(now, Event::NannyLeft { nanny, reason }, out);
            }
        }
    }
}
