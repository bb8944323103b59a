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
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Idle data-server connections kept per worker.
const POOLED_PER_HOLDER_MAX: usize = 4;

/// How long a client keeps trying to get back to a scheduler it lost before its pending
/// futures fail (a scheduler restarted on its journal is found again within this; the
/// Python `Client(scheduler_lost_timeout=...)` changes it).
pub const SCHEDULER_LOST_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests and messages kept while the scheduler is away; more fail at once.
pub const AWAITING_RECONNECT_MAX: usize = 100_000;

/// Keys of other sessions held, and keys kept (`fire_and_forget`), remembered to be held and
/// kept again by a restarted scheduler (neither is journaled); beyond this many, newer ones
/// are not remembered.
pub const PINS_REMEMBERED_MAX: usize = 100_000;

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
    /// `LocateOutputs`: `Located`, or an error for a graph it cannot have.
    Located,
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
    /// The graph is this client's again (after reconnecting).
    Located,
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
    /// The connection to the scheduler dropped; the client is reconnecting (why).
    Reconnecting(String),
    /// Back on the scheduler (after this many seconds away); requests were sent again.
    Reconnected {
        away_s: f64,
    },
    /// The connection to the scheduler is gone for good; nothing more will come.
    Disconnected(String),
}

struct Waiter {
    expect: Expect,
    tx: cb::Sender<Reply>,
    /// The request, kept until answered: sent again to a scheduler restarted meanwhile.
    msg: Option<ClientToScheduler>,
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
    /// Connect to the scheduler at `address` with the cluster token, over TLS when `tls` says
    /// so (`None`: plaintext), and start the I/O thread. A lost connection is reconnected for
    /// up to `lost_timeout` (zero: given up at once).
    pub fn connect(
        address: &str,
        token: &str,
        tls: Option<Arc<net::Tls>>,
        lost_timeout: Duration,
    ) -> Result<Session> {
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
                            run(conn, address, creds, lost_timeout, req_rx, ev_tx).await;
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
            waiter: Some(Waiter {
                expect,
                tx,
                msg: None,
            }),
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

/// How a spell of serving one connection ended.
enum End {
    /// `close()`: the client is done.
    Closed,
    /// The connection dropped (or the scheduler said something malformed): try to get back.
    Dropped(String),
    /// The scheduler came back without this client's graphs: nothing to get back to.
    Gone(String),
}

/// What one request from Python comes down to.
enum Asked {
    Send(ClientToScheduler, Option<Waiter>),
    /// Served on its own (a fetch, a put, a worker's logs).
    Handled,
    Close,
}

/// The client's side of its scheduler link, kept across reconnections: the requests still
/// waiting for their replies (and the messages, to send again), the graphs it owns, and what
/// was sent while the scheduler was away.
struct Client {
    address: String,
    creds: net::Credentials,
    lost_timeout: Duration,
    events: cb::Sender<Event>,
    waiters: VecDeque<Waiter>,
    /// Graphs this client submitted or opened and has not released: claimed again
    /// (`LocateOutputs`) from a scheduler restarted on its journal.
    owned: BTreeSet<GraphId>,
    /// Messages that need no reply, sent while the scheduler was away.
    queued: Vec<ClientToScheduler>,
    /// Keys of other graphs this client holds (`Hold` not yet `Unhold`), and keys it asked
    /// to keep: sent again after reconnecting.
    held: BTreeMap<GraphId, BTreeSet<String>>,
    kept: BTreeMap<GraphId, BTreeSet<String>>,
    pins: usize,
    /// `LocateOutputs` sent on reconnecting, by graph: `Located`, or `Error` for a graph the
    /// restarted scheduler does not have.
    locating: Vec<(GraphId, cb::Receiver<Reply>)>,
    /// Why the client gave up on the scheduler; requests fail at once with it.
    lost: Option<String>,
    pool: Pool,
    next_id: Arc<AtomicU64>,
}

async fn run(
    conn: Conn,
    address: String,
    creds: net::Credentials,
    lost_timeout: Duration,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: cb::Sender<Event>,
) {
    let mut c = Client {
        address,
        creds,
        lost_timeout,
        events,
        waiters: VecDeque::new(),
        owned: BTreeSet::new(),
        queued: Vec::new(),
        held: BTreeMap::new(),
        kept: BTreeMap::new(),
        pins: 0,
        locating: Vec::new(),
        lost: None,
        pool: Arc::default(),
        next_id: Arc::new(AtomicU64::new(1)),
    };
    let mut conn = conn;
    let mut again = false;
    loop {
        let why = match c.serve(conn, again, &mut requests).await {
            End::Closed => return,
            End::Gone(why) => {
                c.give_up(why);
                return c.serve_lost(&mut requests).await;
            }
            End::Dropped(why) => why,
        };
        match c.away(why, &mut requests).await {
            Some(Ok(back)) => {
                conn = back;
                again = true;
            }
            Some(Err(why)) => {
                c.give_up(why);
                return c.serve_lost(&mut requests).await;
            }
            None => return,
        }
    }
}

impl Client {
    /// Start what does not involve the scheduler connection; say what the rest is.
    fn take(&self, req: Option<Request>) -> Asked {
        match req {
            None | Some(Request::Close) => Asked::Close,
            Some(Request::Send { msg, waiter }) => Asked::Send(msg, waiter),
            Some(Request::Fetch {
                holder,
                tasks,
                reply,
            }) => {
                let (pool, creds, next_id) =
                    (self.pool.clone(), self.creds.clone(), self.next_id.clone());
                tokio::spawn(async move {
                    let r = fetch(&pool, &holder, &creds, &next_id, tasks)
                        .await
                        .map_err(|e| format!("{e:#}"));
                    let _ = reply.send(r);
                });
                Asked::Handled
            }
            Some(Request::Put {
                holder,
                token: put_token,
                body,
                reply,
            }) => {
                let (pool, creds, next_id) =
                    (self.pool.clone(), self.creds.clone(), self.next_id.clone());
                tokio::spawn(async move {
                    let r = put(&pool, &holder, &creds, &next_id, put_token, body)
                        .await
                        .map_err(|e| format!("{e:#}"));
                    let _ = reply.send(r);
                });
                Asked::Handled
            }
            Some(Request::Logs { holder, reply }) => {
                let (creds, next_id) = (self.creds.clone(), self.next_id.clone());
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
                Asked::Handled
            }
        }
    }

    /// Note a message on its way to the scheduler.
    fn sending(&mut self, msg: &ClientToScheduler) {
        match msg {
            ClientToScheduler::ReleaseGraph { graph } => {
                self.owned.remove(graph);
                self.pins -= self.kept.remove(graph).map_or(0, |k| k.len());
            }
            ClientToScheduler::Hold { graph, keys } => {
                self.pins += remember(&mut self.held, *graph, keys, self.pins);
            }
            ClientToScheduler::Keep { graph, keys } => {
                self.pins += remember(&mut self.kept, *graph, keys, self.pins);
            }
            ClientToScheduler::Unhold { graph, keys } => {
                if let Some(set) = self.held.get_mut(graph) {
                    for k in keys {
                        if set.remove(k) {
                            self.pins -= 1;
                        }
                    }
                    if set.is_empty() {
                        self.held.remove(graph);
                    }
                }
            }
            _ => {}
        }
    }

    /// Serve one connection until it ends. `again`: it replaces a lost one, so first claim the
    /// owned graphs, then send again every request still unanswered and what queued meanwhile.
    async fn serve(
        &mut self,
        conn: Conn,
        again: bool,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> End {
        let (mut sink, mut stream) = conn.split();
        if again {
            if let Err(e) = self.resume(&mut sink).await {
                return End::Dropped(format!("lost the connection to the scheduler: {e}"));
            }
        }
        loop {
            tokio::select! {
                req = requests.recv() => match self.take(req) {
                    Asked::Close => {
                        let _ = sink.close().await;
                        return End::Closed;
                    }
                    Asked::Handled => {}
                    Asked::Send(msg, waiter) => {
                        let frame = net::encode(&vec![&msg]);
                        if let Some(why) = net::over_frame_limit(frame.len()) {
                            // Refused here: the connection would fail on it, and so would
                            // every reconnection that sent it again.
                            match waiter {
                                Some(w) => {
                                    let _ = w.tx.send(Reply::Rejected(why));
                                }
                                None => {
                                    let _ = self.events.send(Event::Error(why));
                                }
                            }
                            continue;
                        }
                        self.sending(&msg);
                        let sent = sink.send(frame).await;
                        if let Some(mut w) = waiter {
                            w.msg = Some(msg);
                            self.waiters.push_back(w);
                        }
                        if let Err(e) = sent {
                            return End::Dropped(format!("lost the connection to the scheduler: {e}"));
                        }
                    }
                },
                frame = stream.next() => match frame {
                    None => return End::Dropped("the scheduler closed the connection".into()),
                    Some(Err(e)) => {
                        return End::Dropped(format!("lost the connection to the scheduler: {e}"))
                    }
                    Some(Ok(frame)) => match rusk_proto::decode::<Vec<SchedulerToClient>>(&frame) {
                        Ok(batch) => {
                            for m in batch {
                                self.route(m);
                            }
                            if let Some(why) = self.graphs_gone() {
                                let _ = sink.close().await;
                                return End::Gone(why);
                            }
                        }
                        Err(e) => {
                            return End::Dropped(format!("malformed message from the scheduler: {e}"))
                        }
                    },
                },
            }
        }
    }

    /// On a new connection: `LocateOutputs` for every owned graph (their replies first, so
    /// their waiters go first), then the unanswered requests again (`Extend`s marked as
    /// resent), then the messages queued while away.
    async fn resume(
        &mut self,
        sink: &mut futures::stream::SplitSink<Conn, Bytes>,
    ) -> std::result::Result<(), std::io::Error> {
        let mut msgs = Vec::new();
        let mut front = Vec::new();
        self.locating.clear();
        for &graph in &self.owned {
            let (tx, rx) = cb::bounded(1);
            front.push(Waiter {
                expect: Expect::Located,
                tx,
                msg: None,
            });
            self.locating.push((graph, rx));
            msgs.push(ClientToScheduler::LocateOutputs { graph });
        }
        // Locates from the last connection got no answer: only this connection's count.
        self.waiters.retain(|w| w.expect != Expect::Located);
        for w in &mut self.waiters {
            if let Some(ClientToScheduler::Extend { resent, .. }) = &mut w.msg {
                *resent = true;
            }
            msgs.extend(w.msg.clone());
        }
        for w in front.into_iter().rev() {
            self.waiters.push_front(w);
        }
        // Holds and keeps are not journaled: ask for them again (a key no longer there is
        // reported failed to a holder, and ignored for a keep).
        for (pins, hold) in [(&self.held, true), (&self.kept, false)] {
            for (&graph, keys) in pins {
                let keys: Vec<String> = keys.iter().cloned().collect();
                msgs.push(if hold {
                    ClientToScheduler::Hold { graph, keys }
                } else {
                    ClientToScheduler::Keep { graph, keys }
                });
            }
        }
        msgs.append(&mut self.queued);
        for m in &msgs {
            sink.feed(net::encode(&vec![m])).await?;
        }
        sink.flush().await
    }

    /// A graph the restarted scheduler does not have (it had no journal, or released the
    /// graph): why this client cannot go on.
    fn graphs_gone(&mut self) -> Option<String> {
        let mut gone = None;
        self.locating.retain(|(graph, rx)| match rx.try_recv() {
            Err(cb::TryRecvError::Empty) => true,
            Ok(Reply::Error(message)) => {
                gone.get_or_insert(format!(
                    "the scheduler came back without graph {graph} (restarted without its \
                     journal?): {message}"
                ));
                false
            }
            _ => false,
        });
        gone
    }

    /// The scheduler is unreachable: reconnect with back-off for up to the lost timeout, while
    /// requests queue (fetches from workers go on). `None` when the client closed meanwhile.
    async fn away(
        &mut self,
        why: String,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Option<std::result::Result<Conn, String>> {
        let since = Instant::now();
        let _ = self.events.send(Event::Reconnecting(why.clone()));
        let (address, creds) = (self.address.clone(), self.creds.clone());
        let attempt =
            net::reconnect::reconnect(&address, &creds, Role::Client, self.lost_timeout, |_, _| {});
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                r = &mut attempt => {
                    return Some(match r {
                        Ok(conn) => {
                            let _ = self.events.send(Event::Reconnected {
                                away_s: since.elapsed().as_secs_f64(),
                            });
                            Ok(conn)
                        }
                        Err(e) => Err(format!("{e} (after {why})")),
                    });
                }
                req = requests.recv() => match self.take(req) {
                    Asked::Close => return None,
                    Asked::Handled => {}
                    Asked::Send(msg, waiter) => self.hold(msg, waiter),
                },
            }
        }
    }

    /// Keep a request for when the scheduler is back, within [`AWAITING_RECONNECT_MAX`].
    fn hold(&mut self, msg: ClientToScheduler, waiter: Option<Waiter>) {
        if self.waiters.len() + self.queued.len() >= AWAITING_RECONNECT_MAX {
            let why = format!(
                "the scheduler is unreachable and {AWAITING_RECONNECT_MAX} requests already \
                 wait for it (AWAITING_RECONNECT_MAX)"
            );
            match waiter {
                Some(w) => {
                    let _ = w.tx.send(Reply::Error(why));
                }
                None => {
                    let _ = self
                        .events
                        .send(Event::Error(format!("dropped a message: {why}")));
                }
            }
            return;
        }
        self.sending(&msg);
        match waiter {
            Some(mut w) => {
                w.msg = Some(msg);
                self.waiters.push_back(w);
            }
            None => self.queued.push(msg),
        }
    }

    /// Fail everything waiting with `why`, tell Python, and refuse what comes later.
    fn give_up(&mut self, why: String) {
        for w in self.waiters.drain(..) {
            let _ = w.tx.send(Reply::Error(why.clone()));
        }
        self.queued.clear();
        let _ = self.events.send(Event::Disconnected(why.clone()));
        self.lost = Some(why);
    }

    /// After giving up: requests to the scheduler fail at once; fetches from workers still
    /// work (results already located stay reachable).
    async fn serve_lost(&mut self, requests: &mut mpsc::UnboundedReceiver<Request>) {
        loop {
            match self.take(requests.recv().await) {
                Asked::Close => return,
                Asked::Handled => {}
                Asked::Send(_, waiter) => {
                    if let (Some(w), Some(why)) = (waiter, &self.lost) {
                        let _ = w.tx.send(Reply::Error(why.clone()));
                    }
                }
            }
        }
    }

    /// Give a reply to the oldest request waiting for that kind of reply; everything else is
    /// an event. The scheduler answers one client's requests in order, so the oldest is the
    /// right one.
    fn route(&mut self, m: SchedulerToClient) {
        let (waiters, events) = (&mut self.waiters, &self.events);
        let (accepts, reply): (fn(Expect) -> bool, Reply) = match m {
            SchedulerToClient::Submitted { graph, .. } => {
                self.owned.insert(graph);
                (|e| e == Expect::Submitted, Reply::Submitted { graph })
            }
            SchedulerToClient::Extended { tasks, .. } => {
                (|e| e == Expect::Extended, Reply::Extended { tasks })
            }
            SchedulerToClient::Located { .. } => (|e| e == Expect::Located, Reply::Located),
            SchedulerToClient::Rejected { error } => (
                |e| matches!(e, Expect::Submitted | Expect::Extended),
                Reply::Rejected(error),
            ),
            SchedulerToClient::Status(s) => (|e| e == Expect::Status, Reply::Status(s)),
            SchedulerToClient::Events { records, next } => {
                (|e| e == Expect::Events, Reply::Events { records, next })
            }
            SchedulerToClient::Done { message } => (|e| e == Expect::Done, Reply::Done(message)),
            SchedulerToClient::Dataset { data, .. } => {
                (|e| e == Expect::Dataset, Reply::Dataset(data))
            }
            SchedulerToClient::DatasetNames { names } => {
                (|e| e == Expect::DatasetNames, Reply::DatasetNames(names))
            }
            SchedulerToClient::WhoHas { holders, .. } => {
                (|e| e == Expect::WhoHas, Reply::WhoHas(holders))
            }
            SchedulerToClient::Error { message } => {
                // Errors answer requests (an operator request, an unknown graph); one nobody
                // waits for is reported as an event.
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
}

/// Add `keys` to what is remembered for `graph`, within [`PINS_REMEMBERED_MAX`] in all
/// (`pins` so far); how many were new.
fn remember(
    pins: &mut BTreeMap<GraphId, BTreeSet<String>>,
    graph: GraphId,
    keys: &[String],
    mut total: usize,
) -> usize {
    let set = pins.entry(graph).or_default();
    let before = total;
    for k in keys {
        if total >= PINS_REMEMBERED_MAX {
            break;
        }
        if set.insert(k.clone()) {
            total += 1;
        }
    }
    total - before
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
