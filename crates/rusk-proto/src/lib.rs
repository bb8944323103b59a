//! The rusk wire protocol.
//!
//! Everything that crosses a process boundary is defined here and only here: typed ids, the
//! graph-file format users write, the messages between scheduler, workers and clients, the
//! frame-size limits and the token handshake. Keeping the wire types in one crate makes the
//! protocol reviewable as a whole and lets the pure cores (`rusk-core`) stay free of I/O.
//!
//! Framing: every message is a batch (`Vec<M>`) encoded with postcard and carried in a frame
//! with a 4-byte big-endian length prefix, at most [`MAX_FRAME_BYTES`]. Before any message is
//! decoded, both ends run the handshake in [`auth`], whose frames are bounded by
//! [`MAX_HANDSHAKE_FRAME_BYTES`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod graph;
pub mod ids;
pub mod msg;

pub use ids::*;

/// Version of the message protocol; both ends must speak exactly this version.
/// Bump it on any incompatible change of a message type.
pub const PROTOCOL_VERSION: u32 = 6;

/// Largest frame any rusk process accepts after the handshake. It bounds the memory one peer can
/// make another allocate for a single message. 256 MiB leaves room for a 1,000,000-task graph
/// submission (about 50 MiB encoded). Task results never travel in a frame: they are streamed
/// (see `rusk_net::transfer`), so their size has no fixed cap.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Largest frame accepted before the peer is authenticated: the handshake messages are a few
/// dozen bytes, so an unauthenticated peer can never make us allocate more than this.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 256;

/// Encode a batch of messages into a frame payload (without the length prefix).
pub fn encode<T: serde::Serialize>(batch: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(batch)
}

/// Decode a frame payload. Malformed input is an error value, never a panic.
pub fn decode<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(payload)
}
