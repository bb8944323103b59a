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
//! - the receiver moves a value of [`segment::INLINE_VALUE_MAX`] bytes or more from the socket
//!   into a fresh shared-memory segment of its exact size (the receiving worker's store, or the
//!   client's memory) with `splice`, through its file rather than a mapping, so a value is
//!   copied once, by the kernel, on each side, and the new memory is never faulted in;
//! - a transfer that makes no progress for [`TRANSFER_IDLE_TIMEOUT`] fails (the connection is
//!   then dropped: its stream position is unknown), however large the value;
//! - a fetcher that received a value of [`segment::INLINE_VALUE_MAX`] bytes or more says it
//!   read the reply to the end (`DataRequest::Read { id }`, not answered), so the sender may
//!   reuse the memory `sendfile` lent to the socket ([`segment::give_back`]).
use crate::segment::{self, SegmentWriter};
use crate::{encode, Conn, Stream};
use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes};
use futures::{SinkExt, StreamExt};
use rusk_proto::msg::{DataReply, DataRequest};
use rusk_proto::TaskRef;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

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
///
/// Returns the segments lent to the socket (sent with `sendfile`): the caller gives them back
/// ([`segment::give_back`]) when the peer says it read them (`DataRequest::Read`) or sends its
/// next request.
pub async fn send_values(
    conn: &mut Conn,
    id: u64,
    items: &[(TaskRef, Option<Bytes>)],
) -> Result<Vec<segment::Lent>> {
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
    let mut lent = Vec::new();
    for value in items.iter().filter_map(|(_, v)| v.as_ref()) {
        if let Some(tcp) = stream.plain() {
            if let Some((fd, l)) = segment::lend_to_socket(value) {
                // A whole segment (or spill file) from its start: the kernel hands its pages to
                // the socket (no mapping faults, no copy through user space); they stay
                // referenced there after the call, so the segment is lent until the peer has
                // read it. Over TLS the bytes are encrypted from the mapping instead.
                lent.push(l);
                send_file(tcp, fd, value.len()).await?;
                continue;
            }
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
    Ok(lent)
}

/// `sendfile` the first `len` bytes of `fd` to the socket, [`TRANSFER_CHUNK_BYTES`] at a time.
async fn send_file(stream: &mut TcpStream, fd: RawFd, len: usize) -> Result<()> {
    let sock = stream.as_raw_fd();
    let mut off: libc::off_t = 0;
    let mut turn = Turn::new();
    while (off as usize) < len {
        let want = (len - off as usize).min(TRANSFER_CHUNK_BYTES);
        // `async_io`, not `writable` + `try_io`: it spends the task's cooperative budget, so a
        // transfer that never has to wait still lets the rest of the event loop (the nanny's
        // watchdog pings) run.
        let r = idle(
            "sending a value",
            stream.async_io(Interest::WRITABLE, || {
                // SAFETY: both fds are open for the whole call (the caller holds the value,
                // whose mapping keeps `fd` open); `off` is a local the kernel advances.
                let n = unsafe { libc::sendfile(sock, fd, &mut off, want) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }),
        )
        .await?;
        match r {
            Ok(0) => bail!("the value's file ended {off} bytes into {len}"),
            Ok(_) => {}
            Err(e) => return Err(anyhow!(e).context("send failed")),
        }
        turn.pass().await;
    }
    Ok(())
}

/// Send the first `len` bytes of `fd` through a stream that must see them (TLS encrypts
/// them): read with `pread` into a reused buffer, [`TRANSFER_CHUNK_BYTES`] at a time.
async fn send_file_copy(stream: &mut Stream, fd: RawFd, len: usize) -> Result<()> {
    let mut buf = vec![0u8; len.min(TRANSFER_CHUNK_BYTES)];
    let mut off = 0usize;
    while off < len {
        let want = (len - off).min(buf.len());
        // SAFETY: reading into our own buffer of at least `want` bytes from an fd the caller
        // keeps open; the result is checked.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), want, off as libc::off_t) };
        if n < 0 {
            return Err(anyhow!(std::io::Error::last_os_error()).context("cannot read the value"));
        }
        if n == 0 {
            bail!("the value's file ended {off} bytes into {len}");
        }
        let n = n as usize;
        idle("sending a value", stream.write_all(&buf[..n]))
            .await?
            .context("send failed")?;
        off += n;
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
    let reply = rusk_proto::decode(&frame).map_err(|e| anyhow!("malformed reply: {e}"))?;
    let DataReply::Sizes { id: rid, items } = reply else {
        bail!("peer answered a fetch with {reply:?}");
    };
    if rid != id {
        bail!("peer answered request {rid}, expected {id}");
    }
    if items.len() != tasks.len() || items.iter().zip(tasks).any(|((t, _), a)| t != a) {
        bail!("peer answered other values than asked");
    }
    let mut out = Vec::with_capacity(items.len());
    let mut large = false;
    for (task, size) in items {
        let value = match size {
            None => None,
            Some(len) => {
                large |= len >= segment::INLINE_VALUE_MAX as u64;
                Some(read_value(conn, len).await?)
            }
        };
        out.push((task, value));
    }
    if large {
        // Read to the end: the holder may reuse the memory it sent them from.
        let _ = idle(
            "sending a request",
            conn.send(encode(&DataRequest::Read { id })),
        )
        .await;
    }
    Ok(out)
}

/// What a client puts: bytes, or the first `len` bytes of a file (a memfd the client wrote
/// the value into), sent with `sendfile`.
pub enum PutBody {
    Bytes(Bytes),
    File { fd: OwnedFd, len: u64 },
}

impl PutBody {
    pub fn len(&self) -> u64 {
        match self {
            PutBody::Bytes(b) => b.len() as u64,
            PutBody::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Client side of `DataRequest::Put`: send one value to be stored under `token`, and wait for
/// the worker to say it has it.
pub async fn put_value(conn: &mut Conn, id: u64, token: u128, body: &PutBody) -> Result<()> {
    let size = body.len();
    let req = DataRequest::Put { id, token, size };
    idle("sending a request", conn.send(encode(&req)))
        .await?
        .context("send failed")?;
    let stream = conn.get_mut();
    match body {
        PutBody::Bytes(b) => {
            for piece in b.chunks(TRANSFER_CHUNK_BYTES) {
                idle("sending a value", stream.write_all(piece))
                    .await?
                    .context("send failed")?;
            }
        }
        PutBody::File { fd, len } => {
            let len = usize::try_from(*len).map_err(|_| anyhow!("a value of {len} bytes"))?;
            match stream.plain() {
                Some(tcp) => send_file(tcp, fd.as_raw_fd(), len).await?,
                None => send_file_copy(stream, fd.as_raw_fd(), len).await?,
            }
        }
    }
    idle("sending a value", stream.flush())
        .await?
        .context("send failed")?;
    let frame = idle("waiting for the worker to store the value", conn.next())
        .await?
        .ok_or_else(|| anyhow!("peer closed the connection"))?
        .context("bad frame")?;
    match rusk_proto::decode(&frame).map_err(|e| anyhow!("malformed reply: {e}"))? {
        DataReply::Put { id: rid, refused } if rid == id => match refused {
            None => Ok(()),
            Some(why) => bail!("the worker refused the value: {why}"),
        },
        other => bail!("peer answered a put with {other:?}"),
    }
}

/// Client side of `DataRequest::Logs`: the worker's recent log lines, `(level, line)`.
pub async fn fetch_logs(conn: &mut Conn, id: u64) -> Result<Vec<(String, String)>> {
    idle(
        "sending a request",
        conn.send(encode(&DataRequest::Logs { id })),
    )
    .await?
    .context("send failed")?;
    let frame = idle("waiting for the logs", conn.next())
        .await?
        .ok_or_else(|| anyhow!("peer closed the connection"))?
        .context("bad frame")?;
    match rusk_proto::decode(&frame).map_err(|e| anyhow!("malformed reply: {e}"))? {
        DataReply::Logs { id: rid, lines } if rid == id => Ok(lines),
        other => bail!("peer answered a logs request with {other:?}"),
    }
}

/// Server side of `DataRequest::Put`: after [`receive_value`], say whether it was stored.
pub async fn reply_put(conn: &mut Conn, id: u64, refused: Option<String>) -> Result<()> {
    idle(
        "replying",
        conn.send(encode(&DataReply::Put { id, refused })),
    )
    .await?
    .context("send failed")
}

/// Read one value of `len` bytes from the connection: small ones onto the heap, others into a
/// new segment (the server side of `DataRequest::Put`).
pub async fn receive_value(conn: &mut Conn, len: u64) -> Result<Bytes> {
    read_value(conn, len).await
}

/// Read one value of `len` bytes: small ones onto the heap, others into a new segment.
async fn read_value(conn: &mut Conn, len: u64) -> Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| anyhow!("a value of {len} bytes"))?;
    if len < segment::INLINE_VALUE_MAX {
        let mut buf = vec![0u8; len];
        read_raw(conn, &mut buf).await?;
        return Ok(Bytes::from(buf));
    }
    let seg = SegmentWriter::create(len)
        .with_context(|| format!("cannot allocate {len} bytes of shared memory for a value"))?;
    let buffered = conn.read_buffer_mut();
    let n = buffered.len().min(len);
    seg.write_at(&buffered[..n], 0)
        .context("cannot write a received value to shared memory")?;
    buffered.advance(n);
    match conn.get_mut() {
        Stream::Plain(tcp) => receive_into(tcp, &seg, n).await?,
        tls => receive_copy(tls, &seg, n).await?,
    }
    seg.finish()
        .with_context(|| format!("cannot map a received value of {len} bytes"))
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

/// Receive the rest of a segment's bytes, from offset `got`, straight from the socket into the
/// segment's file: `splice` through a pipe (the kernel moves the socket's pages into the pipe
/// and copies them once into the segment), or, where the kernel refuses that, reads into a
/// reused buffer and `pwrite`s. Either way the fresh shared memory is never faulted in through a
/// mapping.
async fn receive_into(stream: &mut TcpStream, seg: &SegmentWriter, mut got: usize) -> Result<()> {
    let len = seg.len();
    let sock = stream.as_raw_fd();
    let mut pipe = if len - got > SPLICE_MIN_BYTES {
        Pipe::new().ok()
    } else {
        None
    };
    let mut buf = Vec::new();
    let mut turn = Turn::new();
    while got < len {
        let want = (len - got).min(TRANSFER_CHUNK_BYTES);
        // `async_io` spends the task's cooperative budget (see `send_file`).
        let r = match &pipe {
            Some(p) => {
                idle(
                    "receiving a value",
                    stream.async_io(Interest::READABLE, || p.fill_from(sock, want)),
                )
                .await?
            }
            None => {
                buf.resize(want.max(buf.len()), 0);
                let dst = &mut buf[..want];
                idle(
                    "receiving a value",
                    stream.async_io(Interest::READABLE, || {
                        // SAFETY: reading into our own buffer of at least `want` bytes.
                        let n = unsafe { libc::read(sock, dst.as_mut_ptr().cast(), dst.len()) };
                        if n < 0 {
                            Err(std::io::Error::last_os_error())
                        } else {
                            Ok(n as usize)
                        }
                    }),
                )
                .await?
            }
        };
        let n = match r {
            Ok(0) => bail!("peer closed the connection {got} bytes into a value of {len}"),
            Ok(n) => n,
            Err(e) if pipe.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
                // This socket cannot be spliced: read it instead.
                pipe = None;
                continue;
            }
            Err(e) => return Err(anyhow!(e).context("receive failed")),
        };
        match &pipe {
            Some(p) => p
                .drain_into(seg, got, n, &mut buf)
                .context("cannot write a received value to shared memory")?,
            None => seg
                .write_at(&buf[..n], got)
                .context("cannot write a received value to shared memory")?,
        }
        got += n;
        turn.pass().await;
    }
    Ok(())
}

/// Receive the rest of a segment's bytes, from offset `got`, through a stream that must see
/// them (TLS decrypts them): read into a buffer and `pwrite` it into the segment's file. Above
/// [`PIPELINE_MIN_BYTES`] the `pwrite` of one piece runs on the blocking pool while the next
/// piece is read and decrypted, so a large value's copy into shared memory no longer waits
/// behind its decryption on the event loop's thread (nor the other way round).
async fn receive_copy(stream: &mut Stream, seg: &SegmentWriter, mut got: usize) -> Result<()> {
    let len = seg.len();
    let mut buf = vec![0u8; (len - got).min(TRANSFER_CHUNK_BYTES)];
    let pipelined = len - got >= PIPELINE_MIN_BYTES;
    let writer = if pipelined {
        Some(std::sync::Arc::new(
            seg.try_clone()
                .context("cannot write a received value to shared memory")?,
        ))
    } else {
        None
    };
    // The write in flight: it gives its buffer back when done.
    let mut writing: Option<tokio::task::JoinHandle<(Vec<u8>, std::io::Result<()>)>> = None;
    let mut turn = Turn::new();
    while got < len {
        let want = (len - got).min(buf.len());
        let mut filled = 0;
        while filled < want {
            let n = idle("receiving a value", stream.read(&mut buf[filled..want]))
                .await?
                .context("receive failed")?;
            if n == 0 {
                bail!(
                    "peer closed the connection {} bytes into a value of {len}",
                    got + filled
                );
            }
            filled += n;
            if writer.is_none() {
                break;
            }
            turn.pass().await;
        }
        let Some(writer) = &writer else {
            seg.write_at(&buf[..filled], got)
                .context("cannot write a received value to shared memory")?;
            got += filled;
            turn.pass().await;
            continue;
        };
        let spare = match writing.take() {
            Some(w) => written(w).await?,
            None => vec![0u8; buf.len()],
        };
        let full = std::mem::replace(&mut buf, spare);
        let (writer, at) = (writer.clone(), got);
        writing = Some(tokio::task::spawn_blocking(move || {
            let r = writer.write_at(&full[..filled], at);
            (full, r)
        }));
        got += filled;
    }
    if let Some(w) = writing {
        written(w).await?;
    }
    Ok(())
}

/// The end of a pipelined write of [`receive_copy`]: its buffer, for the next piece.
async fn written(w: tokio::task::JoinHandle<(Vec<u8>, std::io::Result<()>)>) -> Result<Vec<u8>> {
    let (buf, r) = w.await.context("the write of a received value panicked")?;
    r.context("cannot write a received value to shared memory")?;
    Ok(buf)
}

/// From this many bytes left to receive through TLS, [`receive_copy`] writes one piece into
/// shared memory while it decrypts the next (below it, a second buffer and a hand-off to the
/// blocking pool cost more than they save).
pub const PIPELINE_MIN_BYTES: usize = 2 * TRANSFER_CHUNK_BYTES;

/// A transfer gives the rest of its event loop a turn at least this often, even when its
/// socket never makes it wait (the cooperative budget alone is not enough where copying into
/// fresh memory is slow: 128 pieces of 4 MiB took 1.7 s on a VM).
pub const TRANSFER_TURN: Duration = Duration::from_millis(10);

struct Turn(std::time::Instant);

impl Turn {
    fn new() -> Turn {
        Turn(std::time::Instant::now())
    }

    /// Yield to the event loop if this transfer has held it for [`TRANSFER_TURN`].
    async fn pass(&mut self) {
        if self.0.elapsed() >= TRANSFER_TURN {
            tokio::task::yield_now().await;
            self.0 = std::time::Instant::now();
        }
    }
}

/// Below this many bytes left to receive, a value is read and written (a pipe costs more).
const SPLICE_MIN_BYTES: usize = 1 << 20;
/// The pipe a received value is spliced through is asked for this capacity (Linux's default
/// limit for unprivileged processes, `/proc/sys/fs/pipe-max-size`); it keeps 64 KiB otherwise.
const SPLICE_PIPE_BYTES: libc::c_int = 1 << 20;

/// A pipe, both ends non-blocking, closed on drop.
struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    cap: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-element array; the result is checked.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: two fresh fds we own.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain fcntls on our pipe.
        let cap = unsafe {
            libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_PIPE_BYTES);
            libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        Ok(Pipe {
            rd,
            wr,
            cap: usize::try_from(cap).unwrap_or(0).max(4096),
        })
    }

    /// Move at most `want` bytes from the socket into the (empty) pipe.
    fn fill_from(&self, sock: RawFd, want: usize) -> std::io::Result<usize> {
        // SAFETY: splice between two fds we hold; the result is checked.
        let n = unsafe {
            libc::splice(
                sock,
                std::ptr::null_mut(),
                self.wr.as_raw_fd(),
                std::ptr::null_mut(),
                want.min(self.cap),
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Move the `n` bytes in the pipe into `seg` at `offset` (through `buf` where the kernel
    /// cannot splice into the segment's file).
    fn drain_into(
        &self,
        seg: &SegmentWriter,
        offset: usize,
        n: usize,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let mut done = 0;
        while done < n {
            let mut off = (offset + done) as libc::loff_t;
            // SAFETY: splice between two fds we hold, at an offset inside the segment.
            let r = unsafe {
                libc::splice(
                    self.rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    seg.raw_fd(),
                    &mut off,
                    n - done,
                    libc::SPLICE_F_MOVE,
                )
            };
            if r > 0 {
                done += r as usize;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    // No splice into this file: copy the pipe's bytes through user space.
                    buf.resize((n - done).max(buf.len()), 0);
                    // SAFETY: reading the pipe into our own buffer of at least n - done bytes.
                    let got = unsafe {
                        libc::read(self.rd.as_raw_fd(), buf.as_mut_ptr().cast(), n - done)
                    };
                    if got <= 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    seg.write_at(&buf[..got as usize], offset + done)?;
                    done += got as usize;
                }
                _ if r == 0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the pipe ran dry",
                    ))
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{accept, connect, Credentials};
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
    /// segments on the receiving side, spliced or (under `SPLICE_MIN_BYTES`) read and written.
    #[test]
    fn values_of_every_kind_stream_intact() {
        every_kind_streams_intact(Credentials::plain(b"t0ken"), Credentials::plain(b"t0ken"));
    }

    /// The same over TLS, where values are encrypted from and decrypted into their memory
    /// rather than moved by the kernel.
    #[test]
    fn values_of_every_kind_stream_intact_over_tls() {
        let (server, client) = crate::tests::tls_pair();
        every_kind_streams_intact(server, client);
    }

    fn every_kind_streams_intact(server_creds: Credentials, client_creds: Credentials) {
        let rt = crate::tests::runtime();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let pattern = |n: usize, k: u8| -> Vec<u8> {
                (0..n).map(|i| (i as u8).wrapping_mul(31) ^ k).collect()
            };
            let small = Bytes::from(pattern(1000, 1));
            let heap = Bytes::from(pattern(3 << 20, 2));
            // Under SPLICE_MIN_BYTES: read and written rather than spliced.
            let mid = Bytes::from(pattern(200 << 10, 4));
            let seg = SegmentWriter::create(5 << 20).unwrap();
            seg.write_at(&pattern(5 << 20, 3), 0).unwrap();
            let seg = seg.finish().unwrap();
            // Over PIPELINE_MIN_BYTES, with a last piece shorter than the others: under TLS
            // written on the blocking pool while the next piece is decrypted.
            let large = Bytes::from(pattern(
                PIPELINE_MIN_BYTES + TRANSFER_CHUNK_BYTES + 12_345,
                5,
            ));
            let items = [
                (tr(0), Some(small.clone())),
                (tr(1), None),
                (tr(2), Some(heap.clone())),
                (tr(3), Some(seg.clone())),
                (tr(4), Some(mid.clone())),
                (tr(5), Some(large.clone())),
            ];
            let server = tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                let (mut conn, _) = accept(s, &server_creds, &[Role::Peer]).await.unwrap();
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
                    // The client says it read them to the end.
                    assert_eq!(
                        crate::recv::<DataRequest>(&mut conn).await.unwrap(),
                        Some(DataRequest::Read { id })
                    );
                }
            });
            let mut conn = connect(&addr, &client_creds, Role::Peer).await.unwrap();
            let got = fetch_values(&mut conn, 1, &[tr(0), tr(1), tr(2), tr(3), tr(4), tr(5)])
                .await
                .unwrap();
            assert_eq!(got[0], (tr(0), Some(small)));
            assert_eq!(got[1], (tr(1), None));
            assert_eq!(got[2].1.as_deref(), Some(&heap[..]));
            assert_eq!(got[3].1.as_deref(), Some(&seg[..]));
            assert_eq!(got[4].1.as_deref(), Some(&mid[..]));
            assert_eq!(got[5].1.as_deref(), Some(&large[..]));
            for v in [&got[2], &got[3], &got[4], &got[5]] {
                assert!(segment::fd_of(v.1.as_ref().unwrap()).is_some());
            }
            let again = fetch_values(&mut conn, 2, &[tr(3), tr(0)]).await.unwrap();
            assert_eq!(again[0].1.as_deref(), Some(&seg[..]));
            server.await.unwrap();
        });
    }

    /// A long transfer never holds its event loop: another task on the same single-threaded
    /// runtime (a worker's watchdog pings) keeps getting turns while a value streams in and
    /// out, even when the socket never makes the transfer wait.
    #[test]
    fn a_long_transfer_lets_the_rest_of_its_event_loop_run() {
        const LEN: usize = 256 << 20;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let seg = SegmentWriter::create(LEN).unwrap();
        seg.write_at(&vec![5u8; LEN], 0).unwrap();
        let seg = seg.finish().unwrap();
        let rt = crate::tests::runtime;
        // Each side on its own single-threaded runtime, with a ticker beside it.
        let ticking = |rt: &tokio::runtime::Runtime| {
            let ticks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let t = ticks.clone();
            rt.spawn(async move {
                loop {
                    t.lock().unwrap().push(std::time::Instant::now());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            ticks
        };
        let largest_gap = |ticks: &[std::time::Instant]| {
            ticks
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default()
        };
        let server = std::thread::spawn(move || {
            let rt = rt();
            let ticks = ticking(&rt);
            let started = std::time::Instant::now();
            rt.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let (mut conn, id) = accept_get(&listener).await;
                send_values(&mut conn, id, &[(tr(0), Some(seg))])
                    .await
                    .unwrap();
            });
            let gap = largest_gap(&ticks.lock().unwrap());
            (started.elapsed(), gap)
        });
        let rt = rt();
        let ticks = ticking(&rt);
        let started = std::time::Instant::now();
        let got = rt.block_on(async {
            let mut conn = connect(&addr, &Credentials::plain(b"t0ken"), Role::Peer)
                .await
                .unwrap();
            fetch_values(&mut conn, 1, &[tr(0)]).await.unwrap()
        });
        let took = started.elapsed();
        assert_eq!(got[0].1.as_ref().map(|v| v.len()), Some(LEN));
        let gap = largest_gap(&ticks.lock().unwrap());
        let (sent_in, send_gap) = server.join().unwrap();
        // Without turns, the gap is the whole transfer; with them, about TRANSFER_TURN.
        let bound = |total: Duration| (total / 3).max(TRANSFER_TURN * 5);
        assert!(
            gap <= bound(took),
            "receiver: {gap:?} without a turn in {took:?}"
        );
        assert!(
            send_gap <= bound(sent_in),
            "sender: {send_gap:?} without a turn in {sent_in:?}"
        );
    }

    /// Accept a peer on `listener` and read its first request, a `Get`: its id.
    async fn accept_get(listener: &tokio::net::TcpListener) -> (Conn, u64) {
        let (s, _) = listener.accept().await.unwrap();
        let (mut conn, _) = accept(s, &Credentials::plain(b"t0ken"), &[Role::Peer])
            .await
            .unwrap();
        let Some(DataRequest::Get { id, .. }) =
            crate::recv::<DataRequest>(&mut conn).await.unwrap()
        else {
            panic!("a request")
        };
        (conn, id)
    }

    /// A new segment of `len` bytes of `byte`.
    fn segment_of(len: usize, byte: u8) -> Bytes {
        let w = SegmentWriter::create(len).unwrap();
        w.write_at(&vec![byte; len], 0).unwrap();
        w.finish().unwrap()
    }

    /// A segment sent with `sendfile` is lent to the socket until the peer says it read it
    /// (`Read`, which `fetch_values` sends): given back then, it is kept for reuse when freed.
    #[test]
    fn a_sent_segment_the_peer_has_read_is_reused() {
        const LEN: usize = segment::INLINE_VALUE_MAX;
        segment::set_pool_bound(1 << 30);
        let rt = crate::tests::runtime();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server = tokio::spawn(async move {
                let (mut conn, id) = accept_get(&listener).await;
                let sent = segment_of(LEN, 0xaa);
                let lent = send_values(&mut conn, id, &[(tr(0), Some(sent.clone()))])
                    .await
                    .unwrap();
                assert_eq!(lent.len(), 1, "sent with sendfile");
                assert_eq!(
                    crate::recv::<DataRequest>(&mut conn).await.unwrap(),
                    Some(DataRequest::Read { id })
                );
                segment::give_back(lent);
                drop(sent);
                assert_eq!(segment::pooled(), (LEN as u64, 1), "kept for reuse");
            });
            let mut conn = connect(&addr, &Credentials::plain(b"t0ken"), Role::Peer)
                .await
                .unwrap();
            let got = fetch_values(&mut conn, 1, &[tr(0)]).await.unwrap();
            assert!(got[0].1.as_ref().unwrap().iter().all(|&b| b == 0xaa));
            server.await.unwrap();
        });
    }

    /// A segment sent with `sendfile` is not reused: the socket still holds its pages after
    /// the send returns (here, until the peer reads them), so reusing its memory for the next
    /// value would change bytes already "sent".
    #[test]
    fn a_sent_segment_is_not_reused_while_the_socket_holds_its_pages() {
        const LEN: usize = segment::INLINE_VALUE_MAX; // fits in the socket buffers
        segment::set_pool_bound(1 << 30);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let (overwritten_tx, overwritten_rx) = std::sync::mpsc::channel();
        let rt = crate::tests::runtime;
        let server = std::thread::spawn(move || {
            rt().block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let (mut conn, id) = accept_get(&listener).await;
                let sent = segment_of(LEN, 0xaa);
                send_values(&mut conn, id, &[(tr(0), Some(sent))])
                    .await
                    .unwrap();
                // The value is gone here; the next one of its size must not get its memory.
                let next = segment_of(LEN, 0x55);
                overwritten_tx.send(()).unwrap();
                // Keep the connection (and the new value) until the client has read.
                let _ = crate::recv::<DataRequest>(&mut conn).await;
                drop(next);
            });
        });
        rt().block_on(async {
            let mut conn = connect(&addr, &Credentials::plain(b"t0ken"), Role::Peer)
                .await
                .unwrap();
            let req = DataRequest::Get {
                id: 1,
                tasks: vec![tr(0)],
            };
            conn.send(encode(&req)).await.unwrap();
            overwritten_rx.recv().unwrap();
            let frame = conn.next().await.unwrap().unwrap();
            let DataReply::Sizes { items, .. } = rusk_proto::decode(&frame).unwrap() else {
                panic!("expected sizes")
            };
            assert_eq!(items[0].1, Some(LEN as u64));
            let v = read_value(&mut conn, LEN as u64).await.unwrap();
            assert!(
                v.iter().all(|&b| b == 0xaa),
                "the bytes sent, not the next value's"
            );
            drop(conn);
        });
        server.join().unwrap();
    }
}
