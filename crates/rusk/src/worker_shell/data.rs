//! The worker's data plane: the data server that peers and clients fetch results from, one
//! fetcher task per peer this worker fetches inputs from, and spilled values mapped back (for
//! the data server and for a task's inputs).
use super::puts::Puts;
use super::runners::Executor;
use super::Local;
use crate::spill::SpillDir;
use anyhow::{anyhow, Result};
use bytes::Bytes;
use rusk_core::memory::Value;
use rusk_net::{self as net, Conn};
use rusk_proto::auth::Role;
use rusk_proto::graph::TaskKind;
use rusk_proto::msg::DataRequest;
use rusk_proto::{AttemptId, TaskRef};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Results a peer asked for, with `None` for those this worker does not hold.
pub(super) type DataItems = Vec<(TaskRef, Option<Value>)>;

/// Serve stored results to peers and clients.
pub(super) async fn data_server(
    listener: TcpListener,
    creds: net::Credentials,
    local: mpsc::UnboundedSender<Local>,
    spill: SpillDir,
    puts: Puts,
) {
    let admission = net::admission::Admission::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, say: do not spin on it.
                warn!(error = %e, "data server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok(t) => t,
            Err(why) => {
                tracing::debug!(%peer, "data connection refused before its handshake: {why}");
                continue;
            }
        };
        let (creds, local, spill, puts) =
            (creds.clone(), local.clone(), spill.clone(), puts.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_peer(stream, &creds, local, spill, puts, ticket).await {
                warn!(%peer, error = %format!("{e:#}"), "data connection dropped");
            }
        });
    }
}

async fn serve_peer(
    stream: tokio::net::TcpStream,
    creds: &net::Credentials,
    local: mpsc::UnboundedSender<Local>,
    spill: SpillDir,
    puts: Puts,
    mut ticket: net::admission::Ticket,
) -> Result<()> {
    ticket.turn().await;
    let (mut conn, _) = net::accept(stream, creds, &[Role::Peer]).await?;
    drop(ticket); // authenticated: its place goes to the next stranger

    // Segments of the last reply lent to the socket, until the peer shows it read them: it
    // says so (`Read`) or asks again (a peer reads a reply to the end before its next request).
    let mut lent: Option<(u64, Vec<rusk_net::segment::Lent>)> = None;
    while let Some(req) = net::recv::<DataRequest>(&mut conn).await? {
        if let Some((sent, l)) = lent.take() {
            match req {
                DataRequest::Read { id } if id != sent => lent = Some((sent, l)),
                _ => rusk_net::segment::give_back(l),
            }
        }
        let (id, tasks) = match req {
            DataRequest::Read { .. } => continue,
            DataRequest::Get { id, tasks } => (id, tasks),
            DataRequest::Put { id, token, size } => {
                if let Err(why) = puts.admit(size) {
                    // The value's bytes follow: the stream cannot be resynchronised.
                    rusk_net::transfer::reply_put(&mut conn, id, Some(why.clone())).await?;
                    return Err(anyhow!("put refused: {why}"));
                }
                let value = rusk_net::transfer::receive_value(&mut conn, size).await?;
                puts.insert(token, value);
                rusk_net::transfer::reply_put(&mut conn, id, None).await?;
                continue;
            }
            DataRequest::Logs { id } => {
                let lines = crate::recent_logs::recent();
                net::send(&mut conn, &rusk_proto::msg::DataReply::Logs { id, lines }).await?;
                continue;
            }
        };
        if tasks.len() > rusk_net::transfer::TRANSFER_ITEMS_MAX {
            return Err(anyhow!(
                "a request for {} values; at most {} (TRANSFER_ITEMS_MAX)",
                tasks.len(),
                rusk_net::transfer::TRANSFER_ITEMS_MAX
            ));
        }
        let (tx, rx) = oneshot::channel();
        local
            .send(Local::PeerRequest { tasks, reply: tx })
            .map_err(|_| anyhow!("worker shutting down"))?;
        let items = rx.await.map_err(|_| anyhow!("worker shutting down"))?;
        // Spilled values are mapped back from their files (checksums verified off the loop).
        let (spill2, local2) = (spill.clone(), local.clone());
        let items = tokio::task::spawn_blocking(move || {
            items
                .into_iter()
                .map(|(t, v)| {
                    let v = v.and_then(|v| match resolve(v, &spill2) {
                        Ok(b) => Some(b),
                        Err(dep) => {
                            let _ = local2.send(Local::SpillLost { dep, during: None });
                            None
                        }
                    });
                    (t, v)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        let sent = rusk_net::transfer::send_values(&mut conn, id, &items).await?;
        if !sent.is_empty() {
            lent = Some((id, sent));
        }
    }
    Ok(())
}

/// A stored value's bytes: in memory, or mapped from its spill file. `Err` names a spilled
/// result whose file is corrupt or missing.
fn resolve(v: Value, spill: &SpillDir) -> Result<Bytes, TaskRef> {
    match v {
        Value::Memory(b) => Ok(b),
        Value::Spilled { task, size } => spill.read(task, size).map_err(|e| {
            warn!(%task, error = %format!("{e:#}"), "cannot read a spilled result back");
            task
        }),
    }
}

/// Hand an `Execute` to the executor; inputs that are spilled are mapped back first, off the
/// event loop (`Local::Resolved`).
pub(super) fn resolve_inputs(
    task: TaskRef,
    attempt: AttemptId,
    kind: Arc<TaskKind>,
    inputs: Vec<Value>,
    spill: &SpillDir,
    local: &mpsc::UnboundedSender<Local>,
    executor: &Executor,
) {
    if inputs.iter().all(|v| matches!(v, Value::Memory(_))) {
        let inputs = inputs.into_iter().filter_map(Value::into_memory).collect();
        executor.execute(task, attempt, kind, inputs);
        return;
    }
    let (spill, local) = (spill.clone(), local.clone());
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(inputs.len());
        for v in inputs {
            match resolve(v, &spill) {
                Ok(b) => out.push(b),
                Err(dep) => {
                    let _ = local.send(Local::SpillLost {
                        dep,
                        during: Some((task, attempt)),
                    });
                    return;
                }
            }
        }
        let _ = local.send(Local::Resolved {
            task,
            attempt,
            kind,
            inputs: out,
        });
    });
}

/// One task per peer: a single authenticated connection, requests served in order.
pub(super) fn spawn_fetcher(
    peer: Arc<str>,
    creds: net::Credentials,
    local: mpsc::UnboundedSender<Local>,
) -> mpsc::UnboundedSender<Vec<TaskRef>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<TaskRef>>();
    tokio::spawn(async move {
        let mut conn: Option<Conn> = None;
        let mut id = 0u64;
        while let Some(tasks) = rx.recv().await {
            id += 1;
            let failure = match fetch_once(&mut conn, &peer, &creds, id, &tasks).await {
                Ok(items) => {
                    let bytes = items.iter().flat_map(|(_, b)| b).map(|b| b.len() as u64);
                    crate::vitals::add_bytes_fetched(bytes.sum());
                    let _ = local.send(Local::Fetched {
                        peer: peer.clone(),
                        items,
                    });
                    continue;
                }
                Err(e) => format!("{e:#}"),
            };
            // Fail this request and everything queued behind it; the loop starts a new fetcher.
            let mut failed = tasks;
            while let Ok(more) = rx.try_recv() {
                failed.extend(more);
            }
            let _ = local.send(Local::FetchFailed {
                peer: peer.clone(),
                tasks: failed,
                reason: failure,
            });
            return;
        }
    });
    tx
}

async fn fetch_once(
    conn: &mut Option<Conn>,
    peer: &str,
    creds: &net::Credentials,
    id: u64,
    tasks: &[TaskRef],
) -> Result<Vec<(TaskRef, Option<Bytes>)>> {
    if conn.is_none() {
        *conn = Some(net::connect(peer, creds, Role::Peer).await?);
    }
    let c = conn.as_mut().expect("just set");
    rusk_net::transfer::fetch_values(c, id, tasks).await
}
