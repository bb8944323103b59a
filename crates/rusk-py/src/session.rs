//! The client's I/O: one background thread running a tokio runtime that owns the connection to
//! the scheduler, serves requests from Python threads over a channel, routes the scheduler's
//! replies to whoever waits for them and everything else (outputs, progress) to an event queue,
//! and fetches results from workers' data servers (keeping one idle connection per worker).
//!
//! Nothing here touches Python: `lib.rs` wraps it, releasing the GIL while it waits.
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use crossbeam_channel as cb;
use futures::{SinkExt, StreamExt};
use rusk_net::{self as net, Conn};
use rusk_proto::auth::Role;
use rusk_proto::msg::{
    ClientToScheduler, EventRecord, GraphProgress, OutputState, SchedulerToClient, StatusSnapshot,
};
use rusk_proto::{GraphId, TaskRef};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Idle data-server connections kept per worker.
const POOLED_PER_HOLDER_MAX: usize = 4;

/// What a request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `Open` or `Submit`.
    Submitted,
    Extended,
    Status,
    Events,
    /// An operator request (`Restart`, `StopNanny`).
    Done,
    /// A published dataset's data.
    Dataset,
    /// The published datasets' names.
    DatasetNames,
    /// Where keys' results are.
    WhoHas,
}

/// The scheduler's answer to one request.
#[derive(Debug)]
pub enum Reply {
    Submitted {
        graph: GraphId,
    },
    Extended {
        tasks: u64,
    },
    Status(Box<StatusSnapshot>),
    Events {
        records: Vec<EventRecord>,
        next: u64,
    },
    Done(String),
    Dataset(Bytes),
    DatasetNames(Vec<String>),
    /// Each key asked and the data addresses holding it.
    WhoHas(Vec<(String, Vec<Arc<str>>)>),
    /// Graph validation failed (`Rejected`).
    Rejected(String),
    /// `Error` from the scheduler, or the connection was lost.
    Error(String),
}

/// Something the scheduler said that nobody asked for.
#[derive(Debug)]
pub enum Event {
    /// `OutputsReady` (session graph, `finished: false`) or `GraphFinished`.
    Outputs {
        graph: GraphId,
        finished: bool,
        outputs: Vec<OutputState>,
    },
    Progress(GraphProgress),
    Error(String),
    /// The connection to the scheduler is gone; nothing more will come.
    Disconnected(String),
}

struct Waiter {
    expect: Expect,
    tx: cb::Sender<Reply>,
}

type FetchResult = Result<Vec<Option<Bytes>>, String>;
/// A worker's recent log lines, `(level, line)`.
type LogsResult = Result<Vec<(String, String)>, String>;

enum Request {
    Send {
        msg: ClientToScheduler,
        waiter: Option<Waiter>,
    },
    Fetch {
        holder: String,
        tasks: Vec<TaskRef>,
        reply: cb::Sender<FetchResult>,
    },
    Put {
        holder: String,
        token: u128,
        body: rusk_net::transfer::PutBody,
        reply: cb::Sender<Result<(), String>>,
    },
    Logs {
        holder: String,
        reply: cb::Sender<LogsResult>,
    },
    Close,
}

pub struct Session {
    requests: mpsc::UnboundedSender<Request>,
    pub events: cb::Receiver<Event>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Session {
    /// Connect to the scheduler (blocking) and start the I/O thread.
    /// Connect to the scheduler at `address` with the cluster token, over TLS when `tls` says
    /// so (`None`: plaintext).
    pub fn connect(address: &str, token: &str, tls: Option<Arc<net::Tls>>) -> Result<Session> {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = cb::unbounded();
        let (ready_tx, ready_rx) = cb::bounded::<Result<()>>(1);
        let address = address.to_string();
        let creds = net::Credentials::new(token.as_bytes(), tls);
        let thread = std::thread::Builder::new()
            .name("rusk-client-io".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!(e).context("cannot start tokio")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let conn = net::connect(&address, &creds, Role::Client)
                        .await
                        .with_context(|| format!("cannot reach the scheduler at {address}"));
                    match conn {
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                        Ok(conn) => {
                            let _ = ready_tx.send(Ok(()));
                            run(conn, creds, req_rx, ev_tx).await;
                        }
                    }
                });
            })
            .context("cannot start the client's I/O thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Session {
                requests: req_tx,
                events: ev_rx,
                thread: Mutex::new(Some(thread)),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(anyhow!("the client's I/O thread stopped during start-up"))
            }
        }
    }

    fn push(&self, r: Request) -> Result<()> {
        self.requests
            .send(r)
            .map_err(|_| anyhow!("the client is closed"))
    }

    /// Send a message that gets no reply.
    pub fn send(&self, msg: ClientToScheduler) -> Result<()> {
        self.push(Request::Send { msg, waiter: None })
    }

    /// Send a message and get the channel its reply will come on.
    pub fn request(&self, msg: ClientToScheduler, expect: Expect) -> Result<cb::Receiver<Reply>> {
        let (tx, rx) = cb::bounded(1);
        self.push(Request::Send {
            msg,
            waiter: Some(Waiter { expect, tx }),
        })?;
        Ok(rx)
    }

    /// Fetch results from the data server at `holder`; `None` for one it does not hold.
    pub fn fetch(&self, holder: String, tasks: Vec<TaskRef>) -> Result<cb::Receiver<FetchResult>> {
        let (tx, rx) = cb::bounded(1);
        self.push(Request::Fetch {
            holder,
            tasks,
            reply: tx,
        })?;
        Ok(rx)
    }

    /// Put a value on the data server at `holder` under `token` (`Client.scatter`).
    pub fn put(
        &self,
        holder: String,
        token: u128,
        body: rusk_net::transfer::PutBody,
    ) -> Result<cb::Receiver<Result<(), String>>> {
        let (tx, rx) = cb::bounded(1);
        self.push(Request::Put {
            holder,
            token,
            body,
            reply: tx,
        })?;
        Ok(rx)
    }

    /// The recent log lines of the worker whose data server is `holder`.
    pub fn logs(&self, holder: String) -> Result<cb::Receiver<LogsResult>> {
        let (tx, rx) = cb::bounded(1);
        self.push(Request::Logs { holder, reply: tx })?;
        Ok(rx)
    }

    /// Close the connection (the scheduler releases this client's graphs) and stop the thread.
    pub fn close(&self) {
        let _ = self.requests.send(Request::Close);
        let handle = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Idle data-server connections by worker address.
type Pool = Arc<Mutex<HashMap<String, Vec<Conn>>>>;

async fn run(
    conn: Conn,
    creds: net::Credentials,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: cb::Sender<Event>,
) {
    let (mut sink, mut stream) = conn.split();
    let mut waiters: VecDeque<Waiter> = VecDeque::new();
    let mut lost: Option<String> = None;
    let pool: Pool = Arc::default();
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        tokio::select! {
            req = requests.recv() => match req {
                None | Some(Request::Close) => break,
                Some(Request::Fetch { holder, tasks, reply }) => {
                    let (pool, creds, next_id) = (pool.clone(), creds.clone(), next_id.clone());
                    tokio::spawn(async move {
                        let r = fetch(&pool, &holder, &creds, &next_id, tasks)
                            .await
                            .map_err(|e| format!("{e:#}"));
                        let _ = reply.send(r);
                    });
                }
                Some(Request::Put { holder, token: put_token, body, reply }) => {
                    let (pool, creds, next_id) = (pool.clone(), creds.clone(), next_id.clone());
                    tokio::spawn(async move {
                        let r = put(&pool, &holder, &creds, &next_id, put_token, body)
                            .await
                            .map_err(|e| format!("{e:#}"));
                        let _ = reply.send(r);
                    });
                }
                Some(Request::Logs { holder, reply }) => {
                    let (creds, next_id) = (creds.clone(), next_id.clone());
                    tokio::spawn(async move {
                        let r = async {
                            let mut conn = connect_peer(&holder, &creds).await?;
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            rusk_net::transfer::fetch_logs(&mut conn, id).await
                        }
                        .await
                        .map_err(|e| format!("{e:#}"));
                        let _ = reply.send(r);
                    });
                }
                Some(Request::Send { msg, waiter }) => {
                    if let Some(why) = &lost {
                        if let Some(w) = waiter {
                            let _ = w.tx.send(Reply::Error(why.clone()));
                        }
                        continue;
                    }
                    if let Some(w) = waiter {
                        waiters.push_back(w);
                    }
                    if let Err(e) = sink.send(net::encode(&vec![msg])).await {
                        let why = format!("lost the connection to the scheduler: {e}");
                        disconnect(&mut lost, why, &mut waiters, &events);
                    }
                }
            },
            frame = stream.next(), if lost.is_none() => match frame {
                None => disconnect(
                    &mut lost,
                    "the scheduler closed the connection".into(),
                    &mut waiters,
                    &events,
                ),
                Some(Err(e)) => disconnect(
                    &mut lost,
                    format!("lost the connection to the scheduler: {e}"),
                    &mut waiters,
                    &events,
                ),
                Some(Ok(frame)) => match rusk_proto::decode::<Vec<SchedulerToClient>>(&frame) {
                    Ok(batch) => {
                        for m in batch {
                            route(m, &mut waiters, &events);
                        }
                    }
                    Err(e) => disconnect(
                        &mut lost,
                        format!("malformed message from the scheduler: {e}"),
                        &mut waiters,
                        &events,
                    ),
                },
            },
        }
    }
    let _ = sink.close().await;
}

fn disconnect(
    lost: &mut Option<String>,
    why: String,
    waiters: &mut VecDeque<Waiter>,
    events: &cb::Sender<Event>,
) {
    if lost.is_some() {
        return;
    }
    for w in waiters.drain(..) {
        let _ = w.tx.send(Reply::Error(why.clone()));
    }
    let _ = events.send(Event::Disconnected(why.clone()));
    *lost = Some(why);
}

/// Give a reply to the oldest request waiting for that kind of reply; everything else is an
/// event. The scheduler answers one client's requests in order, so the oldest is the right one.
fn route(m: SchedulerToClient, waiters: &mut VecDeque<Waiter>, events: &cb::Sender<Event>) {
    let (accepts, reply): (fn(Expect) -> bool, Reply) = match m {
        SchedulerToClient::Submitted { graph, .. } => {
            (|e| e == Expect::Submitted, Reply::Submitted { graph })
        }
        SchedulerToClient::Extended { tasks, .. } => {
            (|e| e == Expect::Extended, Reply::Extended { tasks })
        }
        SchedulerToClient::Rejected { error } => (
            |e| matches!(e, Expect::Submitted | Expect::Extended),
            Reply::Rejected(error),
        ),
        SchedulerToClient::Status(s) => (|e| e == Expect::Status, Reply::Status(s)),
        SchedulerToClient::Events { records, next } => {
            (|e| e == Expect::Events, Reply::Events { records, next })
        }
        SchedulerToClient::Done { message } => (|e| e == Expect::Done, Reply::Done(message)),
        SchedulerToClient::Dataset { data, .. } => (|e| e == Expect::Dataset, Reply::Dataset(data)),
        SchedulerToClient::DatasetNames { names } => {
            (|e| e == Expect::DatasetNames, Reply::DatasetNames(names))
        }
        SchedulerToClient::WhoHas { holders, .. } => {
            (|e| e == Expect::WhoHas, Reply::WhoHas(holders))
        }
        SchedulerToClient::Error { message } => {
            // Errors answer requests (an operator request, an unknown graph); one nobody waits
            // for is reported as an event.
            if let Some(w) = waiters.pop_front() {
                let _ = w.tx.send(Reply::Error(message));
            } else {
                let _ = events.send(Event::Error(message));
            }
            return;
        }
        SchedulerToClient::OutputsReady { graph, outputs } => {
            let _ = events.send(Event::Outputs {
                graph,
                finished: false,
                outputs,
            });
            return;
        }
        SchedulerToClient::GraphFinished { graph, outputs } => {
            let _ = events.send(Event::Outputs {
                graph,
                finished: true,
                outputs,
            });
            return;
        }
        SchedulerToClient::Progress(p) => {
            let _ = events.send(Event::Progress(p));
            return;
        }
    };
    if let Some(i) = waiters.iter().position(|w| accepts(w.expect)) {
        let w = waiters.remove(i).expect("index from position");
        let _ = w.tx.send(reply);
    }
}

async fn fetch(
    pool: &Pool,
    holder: &str,
    creds: &net::Credentials,
    next_id: &AtomicU64,
    tasks: Vec<TaskRef>,
) -> Result<Vec<Option<Bytes>>> {
    let pooled = pool
        .lock()
        .ok()
        .and_then(|mut p| p.get_mut(holder).and_then(|v| v.pop()));
    let mut conn = match pooled {
        Some(mut conn) => {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            match fetch_on(&mut conn, id, &tasks).await {
                Ok(items) => {
                    give_back(pool, holder, conn);
                    return Ok(order(&tasks, items));
                }
                // The pooled connection may have gone stale: retry on a fresh one.
                Err(_) => connect_peer(holder, creds).await?,
            }
        }
        None => connect_peer(holder, creds).await?,
    };
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let items = fetch_on(&mut conn, id, &tasks)
        .await
        .with_context(|| format!("fetching results from worker {holder}"))?;
    give_back(pool, holder, conn);
    Ok(order(&tasks, items))
}

async fn put(
    pool: &Pool,
    holder: &str,
    creds: &net::Credentials,
    next_id: &AtomicU64,
    put_token: u128,
    body: rusk_net::transfer::PutBody,
) -> Result<()> {
    // A fresh connection: a put that fails half-way leaves a connection that cannot be reused,
    // and a stale pooled one would fail after part of the value was sent.
    let mut conn = connect_peer(holder, creds).await?;
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    rusk_net::transfer::put_value(&mut conn, id, put_token, &body)
        .await
        .with_context(|| format!("putting a value of {} bytes on worker {holder}", body.len()))?;
    give_back(pool, holder, conn);
    Ok(())
}

async fn connect_peer(holder: &str, creds: &net::Credentials) -> Result<Conn> {
    net::connect(holder, creds, Role::Peer)
        .await
        .with_context(|| format!("cannot reach worker {holder}"))
}

fn give_back(pool: &Pool, holder: &str, conn: Conn) {
    if let Ok(mut p) = pool.lock() {
        let v = p.entry(holder.to_string()).or_default();
        if v.len() < POOLED_PER_HOLDER_MAX {
            v.push(conn);
        }
    }
}

async fn fetch_on(
    conn: &mut Conn,
    id: u64,
    tasks: &[TaskRef],
) -> Result<Vec<(TaskRef, Option<Bytes>)>> {
    let mut items = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(rusk_net::transfer::TRANSFER_ITEMS_MAX) {
        items.extend(rusk_net::transfer::fetch_values(conn, id, chunk).await?);
    }
    Ok(items)
}

/// The fetched values in the order asked for.
fn order(tasks: &[TaskRef], items: Vec<(TaskRef, Option<Bytes>)>) -> Vec<Option<Bytes>> {
    let by_task: HashMap<TaskRef, Bytes> = items
        .into_iter()
        .filter_map(|(t, d)| d.map(|d| (t, d)))
        .collect();
    tasks.iter().map(|t| by_task.get(t).cloned()).collect()
}
