//! Connections: length-delimited frames over TCP, the token handshake, and typed batches.
//!
//! One library for every endpoint: the `rusk` binary (scheduler, worker, nanny, CLI client) and
//! the Python extension (`rusk-py`) connect, frame and authenticate through this crate, and
//! follow its one locate-and-retry policy ([`locate`]) when a worker holding an output is gone.
//!
//! Every connection starts with the handshake of `rusk_proto::auth` under a deadline and with
//! tiny frames; only an authenticated peer gets the full frame size and has its messages
//! decoded. A malformed or oversized frame is an error value that closes that one connection.
pub mod admission;
pub mod locate;
pub mod segment;
pub mod transfer;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use rusk_proto::auth::{self, ClientHello, Role, ServerHello, ServerVerdict};
use rusk_proto::{MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub type Conn = Framed<TcpStream, LengthDelimitedCodec>;

/// How long a client waits to connect before giving up on an address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max)
        .new_codec()
}

fn deadline() -> Duration {
    Duration::from_millis(auth::HANDSHAKE_TIMEOUT_MS)
}

/// Encode a value as one frame payload.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(rusk_proto::encode(value).expect("in-memory encoding of our own types cannot fail"))
}

/// Receive and decode one frame. `Ok(None)` is a clean close.
pub async fn recv<T: DeserializeOwned>(conn: &mut Conn) -> Result<Option<T>> {
    match conn.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(anyhow!(e).context("bad frame")),
        Some(Ok(frame)) => rusk_proto::decode(&frame)
            .map(Some)
            .map_err(|e| anyhow!("malformed message ({} bytes): {e}", frame.len())),
    }
}

pub async fn send<T: Serialize>(conn: &mut Conn, value: &T) -> Result<()> {
    conn.send(encode(value)).await.context("send failed")
}

/// Server side of the handshake. Returns the authenticated role, with the full frame size
/// enabled, or an error (the caller drops the connection).
pub async fn accept(stream: TcpStream, token: &[u8], allowed: &[Role]) -> Result<(Conn, Role)> {
    stream.set_nodelay(true).ok();
    let mut conn = Framed::new(stream, codec(MAX_HANDSHAKE_FRAME_BYTES));
    let work = async {
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        send(
            &mut conn,
            &ServerHello {
                magic: auth::MAGIC,
                version: PROTOCOL_VERSION,
                nonce,
            },
        )
        .await?;
        let hello: ClientHello = recv(&mut conn)
            .await?
            .ok_or_else(|| anyhow!("closed during handshake"))?;
        let mut verdict = auth::judge_client(token, &nonce, &hello);
        if matches!(verdict, ServerVerdict::Accepted { .. }) && !allowed.contains(&hello.role) {
            verdict = ServerVerdict::Refused {
                reason: auth::RefusalReason::WrongRole,
            };
        }
        send(&mut conn, &verdict).await?;
        match verdict {
            ServerVerdict::Accepted { .. } => Ok(hello.role),
            ServerVerdict::Refused { reason } => Err(anyhow!("refused peer: {reason}")),
        }
    };
    let role = tokio::time::timeout(deadline(), work)
        .await
        .map_err(|_| anyhow!("handshake not completed within {:?}", deadline()))??;
    conn.codec_mut().set_max_frame_length(MAX_FRAME_BYTES);
    Ok((conn, role))
}

/// Client side: connect to `address` and prove the token for `role`.
pub async fn connect(address: &str, token: &[u8], role: Role) -> Result<Conn> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| anyhow!("connecting to {address} timed out"))?
        .with_context(|| format!("cannot connect to {address}"))?;
    stream.set_nodelay(true).ok();
    let mut conn = Framed::new(stream, codec(MAX_HANDSHAKE_FRAME_BYTES));
    let work = async {
        let hello: ServerHello = recv(&mut conn)
            .await?
            .ok_or_else(|| anyhow!("{address} closed the connection during the handshake"))?;
        if hello.magic != auth::MAGIC {
            bail!("{address} is not a rusk endpoint");
        }
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let proof = auth::client_proof(token, role, &hello.nonce, &nonce);
        send(
            &mut conn,
            &ClientHello {
                version: PROTOCOL_VERSION,
                role,
                nonce,
                proof,
            },
        )
        .await?;
        let verdict: ServerVerdict = recv(&mut conn)
            .await?
            .ok_or_else(|| anyhow!("{address} closed the connection during the handshake"))?;
        match verdict {
            ServerVerdict::Accepted { proof } => {
                if !auth::verify_server(token, role, &hello.nonce, &nonce, &proof) {
                    bail!("{address} could not prove it knows the cluster token");
                }
                Ok(())
            }
            ServerVerdict::Refused { reason } => bail!("{address} refused us: {reason}"),
        }
    };
    tokio::time::timeout(deadline(), work)
        .await
        .map_err(|_| anyhow!("handshake with {address} timed out"))??;
    conn.codec_mut().set_max_frame_length(MAX_FRAME_BYTES);
    Ok(conn)
}
