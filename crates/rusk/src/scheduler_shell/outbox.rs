//! Each peer's outbox: the frames the scheduler's loop has for one connection, waiting for its
//! writer task. The loop never waits on a socket, so the queue is bounded in bytes instead: a
//! peer that stops reading while its replies pile up past the limit is cut off (its connection
//! closed, as if it had left), and the cluster goes on without it. A worker cut off this way
//! reconnects as a new incarnation, like after any broken link; a client reconnects too.
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rusk_net::Conn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bytes queued for one peer before it is cut off as not reading (`--peer-outbox-limit`).
/// Far above what a live peer ever has queued (a turn's messages to one peer are one frame,
/// at most `rusk_proto::MAX_FRAME_BYTES`), so only a peer that stopped reading for good reaches it.
pub const PEER_OUTBOX_BYTES_MAX: usize = 512 << 20;

/// The loop's end of a peer's outbox.
pub struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    cut: CancellationToken,
}

/// The frame would take the peer's queue past its limit: the peer has been cut off.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow {
    /// Bytes that were queued, not counting the refused frame.
    pub queued: usize,
    /// Whether this is the frame that cut it off (earlier ones already did: say it once).
    pub first: bool,
}

impl Outbox {
    /// Queue a frame. Refused (and the peer cut off) when it would take the queue past the
    /// limit, or when the peer was cut off already.
    pub fn send(&self, frame: Bytes) -> Result<(), Overflow> {
        let queued = self.queued.load(Ordering::Relaxed);
        if self.cut.is_cancelled() {
            return Err(Overflow {
                queued,
                first: false,
            });
        }
        if queued.saturating_add(frame.len()) > self.limit {
            self.cut.cancel();
            return Err(Overflow {
                queued,
                first: true,
            });
        }
        self.queued.fetch_add(frame.len(), Ordering::Relaxed);
        if self.tx.send(frame).is_err() {
            // The writer is gone (the connection closed): its leave event is on its way.
        }
        Ok(())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The writer's end of a peer's outbox.
pub struct OutboxRx {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// A new outbox of at most `limit` bytes, and the token cancelled when the peer is cut off
/// (its reader stops on it too, so the connection closes and the peer leaves as usual).
pub fn outbox(limit: usize) -> (Outbox, OutboxRx, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let cut = CancellationToken::new();
    (
        Outbox {
            tx,
            queued: queued.clone(),
            limit,
            cut: cut.clone(),
        },
        OutboxRx { rx, queued },
        cut,
    )
}

impl OutboxRx {
    async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    fn try_recv(&mut self) -> Option<Bytes> {
        self.rx.try_recv().ok()
    }

    fn sent(&self, frame: &Bytes) {
        self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
    }
}

/// Write a peer's outbox to its connection, coalescing what is queued into one flush. Stops
/// when the outbox closes, the socket fails, or the peer is cut off.
pub async fn writer(
    mut sink: futures::stream::SplitSink<Conn, Bytes>,
    mut rx: OutboxRx,
    cut: CancellationToken,
) {
    let work = async {
        while let Some(frame) = rx.recv().await {
            rx.sent(&frame);
            sink.feed(frame).await?;
            while let Some(frame) = rx.try_recv() {
                rx.sent(&frame);
                sink.feed(frame).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    };
    tokio::select! {
        _ = cut.cancelled() => {}
        _ = work => {}
    }
}

/// Read a connection's frames and decode them until it ends, or until its peer is cut off;
/// returns why it ended.
pub async fn read_loop<M: serde::de::DeserializeOwned, E>(
    mut stream: futures::stream::SplitStream<Conn>,
    cut: CancellationToken,
    wrap: impl Fn(Vec<M>) -> E,
    tx: &mpsc::Sender<E>,
) -> String {
    let read = async {
        loop {
            match stream.next().await {
                None => return "closed by peer".to_string(),
                Some(Err(e)) => return format!("bad frame: {e}"),
                Some(Ok(frame)) => match rusk_proto::decode::<Vec<M>>(&frame) {
                    Ok(msgs) => {
                        if tx.send(wrap(msgs)).await.is_err() {
                            return "scheduler shutting down".to_string();
                        }
                    }
                    Err(e) => return format!("malformed message ({} bytes): {e}", frame.len()),
                },
            }
        }
    };
    tokio::select! {
        _ = cut.cancelled() => "cut off: it did not read its messages (outbox over --peer-outbox-limit)".to_string(),
        reason = read => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_past_the_limit_cuts_the_peer_off_once() {
        let (out, mut rx, cut) = outbox(10);
        assert_eq!(out.send(Bytes::from_static(b"123456")), Ok(()));
        assert!(!cut.is_cancelled());
        assert_eq!(
            out.send(Bytes::from_static(b"12345")),
            Err(Overflow {
                queued: 6,
                first: true
            })
        );
        assert!(cut.is_cancelled());
        // Later frames are refused too, and not said again.
        assert_eq!(
            out.send(Bytes::from_static(b"1")),
            Err(Overflow {
                queued: 6,
                first: false
            })
        );
        // Only the accepted frame was queued.
        let f = rx.try_recv().unwrap();
        rx.sent(&f);
        assert_eq!(&f[..], b"123456");
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn what_the_writer_took_no_longer_counts() {
        let (out, mut rx, cut) = outbox(10);
        for _ in 0..5 {
            out.send(Bytes::from_static(b"1234567")).unwrap();
            let f = rx.try_recv().unwrap();
            rx.sent(&f);
        }
        assert!(!cut.is_cancelled());
    }
}
