//! The token handshake that opens every connection, as plain functions over values.
//!
//! 0. client → server: [`PLAINTEXT_PREAMBLE`] (plaintext only; over TLS the TLS handshake comes
//!    first, and these steps run inside it);
//! 1. server → client: [`ServerHello`] with a fresh random nonce;
//! 2. client → server: [`ClientHello`] with its own nonce and
//!    `HMAC-SHA256(token, "rusk-client" ‖ version ‖ role ‖ server_nonce ‖ client_nonce)`;
//! 3. server → client: [`ServerVerdict::Accepted`] carrying
//!    `HMAC-SHA256(token, "rusk-server" ‖ version ‖ role ‖ client_nonce ‖ server_nonce)`, so the
//!    client knows the server holds the token too, or [`ServerVerdict::Refused`].
//!
//! The token never crosses the wire, proofs are compared in constant time (`hmac`'s
//! `verify_slice`), and fresh nonces on both sides defeat replay. The I/O shell adds the
//! deadline ([`HANDSHAKE_TIMEOUT_MS`]) and the small frame limit
//! ([`crate::MAX_HANDSHAKE_FRAME_BYTES`]).
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Magic bytes that open the server hello, so a stray non-rusk peer is told apart quickly.
pub const MAGIC: [u8; 4] = *b"RUSK";
/// What a plaintext client sends first, before any frame. A TLS client opens with its TLS
/// handshake instead, so a listener tells the two apart from the first byte, and a plaintext
/// client facing a TLS-only listener is told so rather than left waiting.
pub const PLAINTEXT_PREAMBLE: [u8; 4] = *b"RUSK";
/// The magic of the server hello a TLS-only listener sends a plaintext client before closing:
/// the client reports that the endpoint requires TLS.
pub const TLS_REQUIRED_MAGIC: [u8; 4] = *b"RTLS";

/// How long a peer has to complete the handshake before it is dropped: long enough for a loaded
/// machine, short enough that idle unauthenticated sockets cannot pile up.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

pub type Nonce = [u8; 32];
pub type Proof = [u8; 32];

/// What the connecting side wants to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A worker registering with the scheduler.
    Worker,
    /// A client (CLI, Python) talking to the scheduler.
    Client,
    /// A worker or client fetching results from a worker's data server.
    Peer,
    /// A nanny registering its worker slots with the scheduler.
    Nanny,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    pub magic: [u8; 4],
    pub version: u32,
    pub nonce: Nonce,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub version: u32,
    pub role: Role,
    pub nonce: Nonce,
    pub proof: Proof,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerVerdict {
    Accepted { proof: Proof },
    Refused { reason: RefusalReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    BadToken,
    VersionMismatch { server: u32 },
    WrongRole,
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::BadToken => write!(f, "authentication failed: wrong cluster token"),
            RefusalReason::VersionMismatch { server } => write!(
                f,
                "protocol version mismatch: peer speaks {server}, we speak {}",
                crate::PROTOCOL_VERSION
            ),
            RefusalReason::WrongRole => write!(f, "this endpoint does not serve that role"),
        }
    }
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Worker => 1,
        Role::Client => 2,
        Role::Peer => 3,
        Role::Nanny => 4,
    }
}

fn mac(token: &[u8], label: &[u8], version: u32, role: Role, a: &Nonce, b: &Nonce) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(token).expect("HMAC accepts keys of any length");
    m.update(label);
    m.update(&version.to_be_bytes());
    m.update(&[role_byte(role)]);
    m.update(a);
    m.update(b);
    m
}

/// The client's proof of the token.
pub fn client_proof(token: &[u8], role: Role, server_nonce: &Nonce, client_nonce: &Nonce) -> Proof {
    let m = mac(
        token,
        b"rusk-client",
        crate::PROTOCOL_VERSION,
        role,
        server_nonce,
        client_nonce,
    );
    m.finalize().into_bytes().into()
}

/// The server's proof of the token.
pub fn server_proof(token: &[u8], role: Role, server_nonce: &Nonce, client_nonce: &Nonce) -> Proof {
    let m = mac(
        token,
        b"rusk-server",
        crate::PROTOCOL_VERSION,
        role,
        client_nonce,
        server_nonce,
    );
    m.finalize().into_bytes().into()
}

/// The credential task code gets (`RUSK_TASK_TOKEN` in a worker's executors), derived from the
/// cluster token: `hex(HMAC-SHA256(token, "rusk-task-credential"))`. It opens connections as a
/// [`Role::Client`] or a [`Role::Peer`] (submit tasks, fetch results: what `get_client()` in a
/// task needs), never as a worker or a nanny, and the cluster token cannot be computed from it.
pub fn task_token(token: &[u8]) -> String {
    let mut m = HmacSha256::new_from_slice(token).expect("HMAC accepts keys of any length");
    m.update(b"rusk-task-credential");
    let digest: [u8; 32] = m.finalize().into_bytes().into();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The roles the task credential ([`task_token`]) may take.
pub fn task_role(role: Role) -> bool {
    matches!(role, Role::Client | Role::Peer)
}

/// Server side: decide on a client hello. Constant-time comparison of the proof. A client or
/// peer may prove the task credential instead of the cluster token.
pub fn judge_client(token: &[u8], server_nonce: &Nonce, hello: &ClientHello) -> ServerVerdict {
    if hello.version != crate::PROTOCOL_VERSION {
        return ServerVerdict::Refused {
            reason: RefusalReason::VersionMismatch {
                server: crate::PROTOCOL_VERSION,
            },
        };
    }
    let proves = |key: &[u8]| {
        mac(
            key,
            b"rusk-client",
            hello.version,
            hello.role,
            server_nonce,
            &hello.nonce,
        )
        .verify_slice(&hello.proof)
        .is_ok()
    };
    let derived = task_token(token);
    let key: &[u8] = if proves(token) {
        token
    } else if task_role(hello.role) && proves(derived.as_bytes()) {
        derived.as_bytes()
    } else {
        return ServerVerdict::Refused {
            reason: RefusalReason::BadToken,
        };
    };
    ServerVerdict::Accepted {
        proof: server_proof(key, hello.role, server_nonce, &hello.nonce),
    }
}

/// Client side: check the server's proof, in constant time.
pub fn verify_server(
    token: &[u8],
    role: Role,
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    proof: &Proof,
) -> bool {
    mac(
        token,
        b"rusk-server",
        crate::PROTOCOL_VERSION,
        role,
        client_nonce,
        server_nonce,
    )
    .verify_slice(proof)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(token: &[u8], sn: &Nonce) -> ClientHello {
        let cn = [7u8; 32];
        ClientHello {
            version: crate::PROTOCOL_VERSION,
            role: Role::Worker,
            nonce: cn,
            proof: client_proof(token, Role::Worker, sn, &cn),
        }
    }

    #[test]
    fn the_task_credential_opens_client_and_peer_connections_only() {
        let sn = [3u8; 32];
        let cn = [7u8; 32];
        let task = task_token(b"secret");
        assert_eq!(task.len(), 64);
        assert_ne!(task_token(b"other"), task);
        for role in [Role::Worker, Role::Client, Role::Peer, Role::Nanny] {
            let h = ClientHello {
                version: crate::PROTOCOL_VERSION,
                role,
                nonce: cn,
                proof: client_proof(task.as_bytes(), role, &sn, &cn),
            };
            match judge_client(b"secret", &sn, &h) {
                ServerVerdict::Accepted { proof } => {
                    assert!(
                        task_role(role),
                        "{role:?} accepted with the task credential"
                    );
                    assert!(verify_server(task.as_bytes(), role, &sn, &cn, &proof));
                }
                ServerVerdict::Refused { reason } => {
                    assert!(!task_role(role), "{role:?} refused");
                    assert_eq!(reason, RefusalReason::BadToken);
                }
            }
        }
        // A credential derived from another token is not accepted.
        let other = task_token(b"other");
        let h = ClientHello {
            version: crate::PROTOCOL_VERSION,
            role: Role::Client,
            nonce: cn,
            proof: client_proof(other.as_bytes(), Role::Client, &sn, &cn),
        };
        assert!(matches!(
            judge_client(b"secret", &sn, &h),
            ServerVerdict::Refused { .. }
        ));
    }

    #[test]
    fn right_token_is_accepted_and_server_proves_itself() {
        let sn = [3u8; 32];
        let h = hello(b"secret", &sn);
        match judge_client(b"secret", &sn, &h) {
            ServerVerdict::Accepted { proof } => {
                assert!(verify_server(
                    b"secret",
                    Role::Worker,
                    &sn,
                    &h.nonce,
                    &proof
                ));
                assert!(!verify_server(
                    b"other",
                    Role::Worker,
                    &sn,
                    &h.nonce,
                    &proof
                ));
            }
            v => panic!("refused: {v:?}"),
        }
    }

    #[test]
    fn wrong_token_replay_and_role_change_are_refused() {
        let sn = [3u8; 32];
        let h = hello(b"wrong", &sn);
        assert_eq!(
            judge_client(b"secret", &sn, &h),
            ServerVerdict::Refused {
                reason: RefusalReason::BadToken
            }
        );
        // A proof captured for one server nonce is useless for another.
        let good = hello(b"secret", &sn);
        assert!(matches!(
            judge_client(b"secret", &[4u8; 32], &good),
            ServerVerdict::Refused { .. }
        ));
        // The role is bound into the proof.
        let mut escalated = good.clone();
        escalated.role = Role::Client;
        assert!(matches!(
            judge_client(b"secret", &sn, &escalated),
            ServerVerdict::Refused { .. }
        ));
    }

    #[test]
    fn version_mismatch_is_named() {
        let sn = [3u8; 32];
        let mut h = hello(b"secret", &sn);
        h.version = 999;
        assert!(matches!(
            judge_client(b"secret", &sn, &h),
            ServerVerdict::Refused {
                reason: RefusalReason::VersionMismatch { .. }
            }
        ));
    }
}
