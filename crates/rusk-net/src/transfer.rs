//! Streamed transfers of stored values, the one implementation used by workers (serving and
//! fetching inputs) and clients (the CLI and `rusk-py`, gathering outputs).
//!
//! On a data connection a peer sends `DataRequest::Get { id, tasks }` frames. The worker answers
//! each with one `DataReply::Sizes` frame, then the bytes of every value it holds, raw and back
//! to back, in the order of the request. No frame ever carries a value, so nothing bounds a
//! value's size but the memory of the two ends:
//!
//! - the sender writes straight from the stored value (a shared-memory mapping) to the socket,
//!   [`TRANSFER_CHUNK_BYTES`] at a time; TCP's flow control is the backpressure;
//! - the receiver reads a value of [`segment::INLINE_VALUE_MAX`] bytes or more straight into a
//!   fresh shared-memory segment of its exact size (the receiving worker's store, or the
//!   client's memory), so a value is copied once, by the kernel, on each side;
//! - a transfer that makes no progress for [`TRANSFER_IDLE_TIMEOUT`] fails (the connection is
//!   then dropped: its stream position is unknown), however large the value.
use crate::segment::{self, SegmentMut};
use crate::{encode, Conn};
use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes};
use futures::{SinkExt, StreamExt};
use rusk_proto::msg::{DataReply, DataRequest};
use rusk_proto::TaskRef;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

/// The sender writes a value to the socket in pieces of at most this many bytes.
pub const TRANSFER_CHUNK_BYTES: usize = 4 << 20;
/// A transfer fails when no byte moves for this long (either way).
pub const TRANSFER_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Values asked for in one request, at most (a bigger request is refused by the server).
pub const TRANSFER_ITEMS_MAX: usize = 4096;

async fn idle<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(TRANSFER_IDLE_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("no progress for {TRANSFER_IDLE_TIMEOUT:?} while {what}"))
}

/// Server side: answer request `id` with `items` (the values the worker holds, in the order
/// asked; `None` for one it does not hold).
pub async fn send_values(
    conn: &mut Conn,
    id: u64,
    items: &[(TaskRef, Option<Bytes>)],
) -> Result<()> {
    let sizes = DataReply::Sizes {
        id,
        items: items
            .iter()
            .map(|(t, v)| (*t, v.as_ref().map(|b| b.len() as u64)))
            .collect(),
    };
    idle("sending sizes", conn.send(encode(&sizes)))
        .await?
        .context("send failed")?;
    let stream = conn.get_mut();
    for value in items.iter().filter_map(|(_, v)| v.as_ref()) {
        if let Some(fd) = segment::fd_of(value) {
            // A whole segment (or spill file) from its start: the kernel copies it from the
            // page cache to the socket (no mapping faults, no copy through user space).
            send_file(stream, fd, value.len()).await?;
            continue;
        }
        for piece in value.chunks(TRANSFER_CHUNK_BYTES) {
            idle("sending a value", stream.write_all(piece))
                .await?
                .context("send failed")?;
        }
    }
    idle("sending a value", stream.flush())
        .await?
        .context("send failed")?;
    Ok(())
}

/// `sendfile` the first `len` bytes of `fd` to the socket, [`TRANSFER_CHUNK_BYTES`] at a time.
async fn send_file(stream: &mut tokio::net::TcpStream, fd: RawFd, len: usize) -> Result<()> {
    let sock = stream.as_raw_fd();
    let mut off: libc::off_t = 0;
    while (off as usize) < len {
        idle("sending a value", stream.writable())
            .await?
            .context("send failed")?;
        let want = (len - off as usize).min(TRANSFER_CHUNK_BYTES);
        let r = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both fds are open for the whole call (the caller holds the value, whose
            // mapping keeps `fd` open); `off` is a local the kernel advances.
            let n = unsafe { libc::sendfile(sock, fd, &mut off, want) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Ok(0) => bail!("the value's file ended {off} bytes into {len}"),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(anyhow!(e).context("send failed")),
        }
    }
    Ok(())
}

/// Client side: ask for `tasks` on `conn` as request `id` and receive the values (`None` for
/// one the worker does not hold), in the order asked.
pub async fn fetch_values(
    conn: &mut Conn,
    id: u64,
    tasks: &[TaskRef],
) -> Result<Vec<(TaskRef, Option<Bytes>)>> {
    if tasks.len() > TRANSFER_ITEMS_MAX {
        bail!(
            "{} values asked in one request; at most {TRANSFER_ITEMS_MAX} (TRANSFER_ITEMS_MAX)",
            tasks.len()
        );
    }
    let req = DataRequest::Get {
        id,
        tasks: tasks.to_vec(),
    };
    idle("sending a request", conn.send(encode(&req)))
        .await?
        .context("send failed")?;
    let frame = idle("waiting for sizes", conn.next())
        .await?
        .ok_or_else(|| anyhow!("peer closed the connection"))?
        .context("bad frame")?;
    let DataReply::Sizes { id: rid, items } =
        rusk_proto::decode(&frame).map_err(|e| anyhow!("malformed reply: {e}"))?;
    if rid != id {
        bail!("peer answered request {rid}, expected {id}");
    }
    if items.len() != tasks.len() || items.iter().zip(tasks).any(|((t, _), a)| t != a) {
        bail!("peer answered other values than asked");
    }
    let mut out = Vec::with_capacity(items.len());
    for (task, size) in items {
        let value = match size {
            None => None,
            Some(len) => Some(read_value(conn, len).await?),
        };
        out.push((task, value));
    }
    Ok(out)
}

/// Read one value of `len` bytes: small ones onto the heap, others into a new segment.
async fn read_value(conn: &mut Conn, len: u64) -> Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| anyhow!("a value of {len} bytes"))?;
    if len < segment::INLINE_VALUE_MAX {
        let mut buf = vec![0u8; len];
        read_raw(conn, &mut buf).await?;
        return Ok(Bytes::from(buf));
    }
    let mut seg = SegmentMut::create(len)
        .with_context(|| format!("cannot allocate {len} bytes of shared memory for a value"))?;
    read_raw(conn, seg.as_mut_slice()).await?;
    Ok(seg.freeze())
}

/// Fill `dst` from the connection: first what the frame reader already buffered, then
/// straight from the socket.
async fn read_raw(conn: &mut Conn, dst: &mut [u8]) -> Result<()> {
    let buffered = conn.read_buffer_mut();
    let n = buffered.len().min(dst.len());
    dst[..n].copy_from_slice(&buffered[..n]);
    buffered.advance(n);
    let mut got = n;
    let stream = conn.get_mut();
    while got < dst.len() {
        let end = (got + TRANSFER_CHUNK_BYTES).min(dst.len());
        let r = idle("receiving a value", stream.read(&mut dst[got..end]))
            .await?
            .context("receive failed")?;
        if r == 0 {
            bail!(
                "peer closed the connection {got} bytes into a value of {}",
                dst.len()
            );
        }
        got += r;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{accept, connect};
    use rusk_proto::auth::Role;
    use rusk_proto::GraphId;

    fn tr(i: u32) -> TaskRef {
        TaskRef {
            graph: GraphId(7),
            index: i,
        }
    }

    /// Every kind of value a worker holds arrives intact, in order: small (heap), large on the
    /// heap (written), large in a segment (sendfile), and "not held"; the large ones land in
    /// segments on the receiving side.
    #[test]
    fn values_of_every_kind_stream_intact() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let pattern = |n: usize, k: u8| -> Vec<u8> {
                (0..n).map(|i| (i as u8).wrapping_mul(31) ^ k).collect()
            };
            let small = Bytes::from(pattern(1000, 1));
            let heap = Bytes::from(pattern(3 << 20, 2));
            let mut seg = SegmentMut::create(5 << 20).unwrap();
            seg.as_mut_slice().copy_from_slice(&pattern(5 << 20, 3));
            let seg = seg.freeze();
            let items = [
                (tr(0), Some(small.clone())),
                (tr(1), None),
                (tr(2), Some(heap.clone())),
                (tr(3), Some(seg.clone())),
            ];
            let server = tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                let (mut conn, _) = accept(s, b"t0ken", &[Role::Peer]).await.unwrap();
                // Two requests on one connection: the stream stays in step.
                for _ in 0..2 {
                    let Some(DataRequest::Get { id, tasks }) =
                        crate::recv::<DataRequest>(&mut conn).await.unwrap()
                    else {
                        panic!("a request")
                    };
                    let reply: Vec<_> = tasks
                        .iter()
                        .map(|t| items[t.index as usize].clone())
                        .collect();
                    send_values(&mut conn, id, &reply).await.unwrap();
                }
            });
            let mut conn = connect(&addr, b"t0ken", Role::Peer).await.unwrap();
            let got = fetch_values(&mut conn, 1, &[tr(0), tr(1), tr(2), tr(3)])
                .await
                .unwrap();
            assert_eq!(got[0], (tr(0), Some(small)));
            assert_eq!(got[1], (tr(1), None));
            assert_eq!(got[2].1.as_deref(), Some(&heap[..]));
            assert_eq!(got[3].1.as_deref(), Some(&seg[..]));
            assert!(segment::fd_of(got[3].1.as_ref().unwrap()).is_some());
            let again = fetch_values(&mut conn, 2, &[tr(3), tr(0)]).await.unwrap();
            assert_eq!(again[0].1.as_deref(), Some(&seg[..]));
            server.await.unwrap();
        });
    }
}
