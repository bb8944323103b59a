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
pub mod reconnect;
pub mod segment;
pub mod stream;
pub mod tls;
pub mod transfer;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use rusk_proto::auth::{self, ClientHello, Role, ServerHello, ServerVerdict};
use rusk_proto::{MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub use stream::Stream;
pub use tls::{Tls, TlsSpec};

pub type Conn = Framed<Stream, LengthDelimitedCodec>;

/// A peer refused this process for good: a wrong token, role or version, a certificate it does
/// not accept, or TLS it requires. Retrying with the same credentials cannot help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether `e` (with any context around it) is a [`Refused`].
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Refused>())
}

/// What a process proves and checks on its connections: the cluster token, and TLS when the
/// cluster encrypts ([`tls`]).
#[derive(Clone)]
pub struct Credentials {
    pub token: Arc<[u8]>,
    pub tls: Option<Arc<Tls>>,
}

impl Credentials {
    pub fn new(token: &[u8], tls: Option<Arc<Tls>>) -> Credentials {
        Credentials {
            token: Arc::from(token),
            tls,
        }
    }

    /// The token alone: plaintext connections.
    pub fn plain(token: &[u8]) -> Credentials {
        Credentials::new(token, None)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ tls: {} }}", self.tls.is_some())
    }
}

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
    let frame = encode(value);
    if let Some(why) = over_frame_limit(frame.len()) {
        bail!("{why}");
    }
    conn.send(frame).await.context("send failed")
}

/// Why a message of `len` encoded bytes cannot be sent: over [`MAX_FRAME_BYTES`] (the peer
/// would drop the connection on it, and a client that reconnects would send it again).
pub fn over_frame_limit(len: usize) -> Option<String> {
    (len > MAX_FRAME_BYTES).then(|| {
        format!(
            "this message encodes to {} MiB, over the {} MiB one message may take \
             (MAX_FRAME_BYTES): submit the graph in parts, or put large objects in with \
             scatter() instead of the graph",
            len >> 20,
            MAX_FRAME_BYTES >> 20
        )
    })
}

/// Server side of the handshake: TLS first when the peer opens with it (refused on a
/// plaintext endpoint), a plaintext peer refused by a TLS endpoint, then the token handshake.
/// Returns the authenticated role, with the full frame size enabled, or an error (the caller
/// drops the connection).
pub async fn accept(
    stream: TcpStream,
    creds: &Credentials,
    allowed: &[Role],
) -> Result<(Conn, Role)> {
    stream.set_nodelay(true).ok();
    let work = async {
        let stream = open_server(stream, creds).await?;
        let mut conn = Framed::new(stream, codec(MAX_HANDSHAKE_FRAME_BYTES));
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
        let mut verdict = auth::judge_client(&creds.token, &nonce, &hello);
        if matches!(verdict, ServerVerdict::Accepted { .. }) && !allowed.contains(&hello.role) {
            verdict = ServerVerdict::Refused {
                reason: auth::RefusalReason::WrongRole,
            };
        }
        send(&mut conn, &verdict).await?;
        match verdict {
            ServerVerdict::Accepted { .. } => Ok((conn, hello.role)),
            ServerVerdict::Refused { reason } => Err(anyhow!("refused peer: {reason}")),
        }
    };
    let (mut conn, role) = tokio::time::timeout(deadline(), work)
        .await
        .map_err(|_| anyhow!("handshake not completed within {:?}", deadline()))??;
    conn.codec_mut().set_max_frame_length(MAX_FRAME_BYTES);
    Ok((conn, role))
}

/// The stream a server speaks on: TLS or plaintext, as the peer's first byte says and this
/// endpoint allows.
async fn open_server(mut stream: TcpStream, creds: &Credentials) -> Result<Stream> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await.context("receive failed")? == 0 {
        bail!("closed before the handshake");
    }
    if first[0] == tls::TLS_HANDSHAKE_BYTE {
        let Some(tls) = &creds.tls else {
            bail!("refused a TLS peer: this endpoint is plaintext (its cluster does not use TLS)");
        };
        let s = tokio_rustls::TlsAcceptor::from(tls.server_config())
            .accept(stream::tls_socket(stream))
            .await
            .map_err(|e| anyhow!("refused in the TLS handshake: {e}"))?;
        return Ok(Stream::tls(s.into(), tls.clone()));
    }
    let mut preamble = [0u8; 4];
    stream
        .read_exact(&mut preamble)
        .await
        .context("closed during the handshake")?;
    if preamble != auth::PLAINTEXT_PREAMBLE {
        bail!("not a rusk peer (it opened with {preamble:02x?})");
    }
    if creds.tls.is_some() {
        let mut conn = Framed::new(Stream::Plain(stream), codec(MAX_HANDSHAKE_FRAME_BYTES));
        let _ = send(
            &mut conn,
            &ServerHello {
                magic: auth::TLS_REQUIRED_MAGIC,
                version: PROTOCOL_VERSION,
                nonce: [0; 32],
            },
        )
        .await;
        bail!("refused a plaintext peer: this endpoint requires TLS");
    }
    Ok(Stream::Plain(stream))
}

/// The stream a client speaks on: TLS (checking that the server's certificate names the host
/// of `address`) or plaintext, as the credentials say.
async fn open_client(mut stream: TcpStream, address: &str, creds: &Credentials) -> Result<Stream> {
    match &creds.tls {
        Some(tls) => {
            let name = tls::server_name(address)?;
            let s = tokio_rustls::TlsConnector::from(tls.client_config())
                .connect(name, stream::tls_socket(stream))
                .await
                .map_err(|e| {
                    let text = format!("TLS handshake with {address} failed: {e}");
                    // A certificate refused either way stays refused; a dropped connection
                    // may not.
                    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                    match rustls_error {
                        Some(
                            rustls::Error::InvalidCertificate(_)
                            | rustls::Error::AlertReceived(_)
                            | rustls::Error::NoCertificatesPresented,
                        ) => anyhow::Error::from(Refused(text)),
                        _ => anyhow!(text),
                    }
                })?;
            Ok(Stream::tls(s.into(), tls.clone()))
        }
        None => {
            stream
                .write_all(&auth::PLAINTEXT_PREAMBLE)
                .await
                .with_context(|| format!("cannot write to {address}"))?;
            Ok(Stream::Plain(stream))
        }
    }
}

/// A failure of the token handshake, told in terms of TLS where TLS is why: a peer that refuses
/// our certificate says so with an alert once the TLS handshake seemed done.
fn handshake_error(address: &str, creds: &Credentials, e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if creds.tls.is_some() && text.contains("alert") && !is_refusal(&e) {
        Refused(format!("{address} refused our TLS certificate: {text}")).into()
    } else if creds.tls.is_some() && text.contains("closed the connection during the handshake") {
        anyhow!("{text} (it may not speak TLS: a plaintext cluster, or not rusk)")
    } else {
        e
    }
}

/// Client side: connect to `address` and prove the token for `role`, over TLS when the
/// credentials have it.
pub async fn connect(address: &str, creds: &Credentials, role: Role) -> Result<Conn> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| anyhow!("connecting to {address} timed out"))?
        .with_context(|| format!("cannot connect to {address}"))?;
    stream.set_nodelay(true).ok();
    let token = &creds.token;
    let work = async {
        let stream = open_client(stream, address, creds).await?;
        let mut conn = Framed::new(stream, codec(MAX_HANDSHAKE_FRAME_BYTES));
        let hello: ServerHello = recv(&mut conn)
            .await?
            .ok_or_else(|| anyhow!("{address} closed the connection during the handshake"))?;
        if hello.magic == auth::TLS_REQUIRED_MAGIC {
            return Err(Refused(format!(
                "{address} requires TLS: this cluster encrypts its connections; give its CA \
                 bundle and a certificate (--tls-ca, --tls-cert, --tls-key or RUSK_TLS_*), or \
                 join with its scheduler file"
            ))
            .into());
        }
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
                Ok(conn)
            }
            ServerVerdict::Refused { reason } => {
                Err(Refused(format!("{address} refused us: {reason}")).into())
            }
        }
    };
    let mut conn = tokio::time::timeout(deadline(), work)
        .await
        .map_err(|_| anyhow!("handshake with {address} timed out"))?
        .map_err(|e| handshake_error(address, creds, e))?;
    conn.codec_mut().set_max_frame_length(MAX_FRAME_BYTES);
    Ok(conn)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::SystemTime;
    use tls::{Ca, ISSUED_CERT_VALIDITY};

    const TOKEN: &[u8] = b"t0ken";

    fn spec(ca: &Ca, names: &[&str], not_before: SystemTime, valid: Duration) -> TlsSpec {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (cert, key) = ca.issue(&names, not_before, valid).unwrap();
        TlsSpec {
            ca_pem: Some(ca.cert_pem()),
            cert_pem: Some(cert),
            key_pem: Some(key),
            ..TlsSpec::default()
        }
    }

    fn creds(spec: &TlsSpec) -> Credentials {
        Credentials::new(TOKEN, Some(Tls::new(spec).unwrap()))
    }

    /// A current-thread tokio runtime for one test.
    pub(crate) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Server and client credentials of one cluster CA, the server's certificate naming
    /// 127.0.0.1.
    pub(crate) fn tls_pair() -> (Credentials, Credentials) {
        let ca = Ca::generate().unwrap();
        let now = SystemTime::now();
        (
            creds(&spec(&ca, &["127.0.0.1"], now, ISSUED_CERT_VALIDITY)),
            creds(&spec(&ca, &["client"], now, ISSUED_CERT_VALIDITY)),
        )
    }

    /// One connection: the server's result and the client's.
    fn attempt(server: Credentials, client: Credentials) -> (Result<Role>, Result<()>) {
        let rt = crate::tests::runtime();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let srv = tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                match accept(s, &server, &[Role::Client]).await {
                    Ok((mut conn, role)) => {
                        // Wait for the client to close, so its side sees the whole handshake.
                        let _ = recv::<u8>(&mut conn).await;
                        Ok(role)
                    }
                    Err(e) => Err(e),
                }
            });
            let cli = connect(&addr, &client, Role::Client).await.map(|_conn| ());
            (srv.await.unwrap(), cli)
        })
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.expect_err("refused"))
    }

    #[test]
    fn plaintext_and_tls_each_connect() {
        let (s, c) = attempt(Credentials::plain(TOKEN), Credentials::plain(TOKEN));
        assert_eq!(s.unwrap(), Role::Client);
        c.unwrap();
        let (server, client) = tls_pair();
        let (s, c) = attempt(server, client);
        assert_eq!(s.unwrap(), Role::Client);
        c.unwrap();
    }

    #[test]
    fn a_plaintext_peer_is_told_the_endpoint_requires_tls() {
        let (server, _) = tls_pair();
        let (s, c) = attempt(server, Credentials::plain(TOKEN));
        assert!(err(s).contains("requires TLS"));
        assert!(err(c).contains("requires TLS"), "{:?}", ());
    }

    #[test]
    fn a_tls_peer_is_refused_by_a_plaintext_endpoint() {
        let (_, client) = tls_pair();
        let (s, c) = attempt(Credentials::plain(TOKEN), client);
        assert!(err(s).contains("this endpoint is plaintext"));
        assert!(err(c).contains("TLS"));
    }

    #[test]
    fn a_certificate_of_another_ca_is_refused_both_ways() {
        let (server, _) = tls_pair();
        let (_, stranger) = tls_pair();
        let (s, c) = attempt(server, stranger);
        let (s, c) = (err(s), err(c));
        assert!(s.contains("TLS"), "{s}");
        assert!(c.contains("TLS") && c.contains("UnknownIssuer"), "{c}");
    }

    #[test]
    fn a_client_certificate_of_another_ca_is_refused() {
        let ca = Ca::generate().unwrap();
        let other = Ca::generate().unwrap();
        let now = SystemTime::now();
        let server = creds(&spec(&ca, &["127.0.0.1"], now, ISSUED_CERT_VALIDITY));
        // The client trusts the server's CA but holds a certificate of another one.
        let mut client = spec(&other, &["client"], now, ISSUED_CERT_VALIDITY);
        client.ca_pem = Some(ca.cert_pem());
        let (s, c) = attempt(server, creds(&client));
        let (s, c) = (err(s), err(c));
        assert!(
            s.contains("refused in the TLS handshake") && s.contains("UnknownIssuer"),
            "{s}"
        );
        assert!(c.contains("refused our TLS certificate"), "{c}");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let ca = Ca::generate().unwrap();
        let now = SystemTime::now();
        let long_ago = now - Duration::from_secs(30 * 24 * 3600);
        let expired = creds(&spec(
            &ca,
            &["127.0.0.1"],
            long_ago,
            Duration::from_secs(3600),
        ));
        let client = creds(&spec(&ca, &["client"], now, ISSUED_CERT_VALIDITY));
        let (_, c) = attempt(expired, client.clone());
        let c = err(c);
        assert!(c.contains("certificate expired"), "{c}");
        let server = creds(&spec(&ca, &["127.0.0.1"], now, ISSUED_CERT_VALIDITY));
        let expired = creds(&spec(&ca, &["client"], long_ago, Duration::from_secs(3600)));
        let (s, _) = attempt(server, expired);
        let s = err(s);
        assert!(s.contains("certificate expired"), "{s}");
    }

    #[test]
    fn a_certificate_for_another_host_is_refused() {
        let ca = Ca::generate().unwrap();
        let now = SystemTime::now();
        let server = creds(&spec(
            &ca,
            &["10.9.9.9", "elsewhere"],
            now,
            ISSUED_CERT_VALIDITY,
        ));
        let client = creds(&spec(&ca, &["client"], now, ISSUED_CERT_VALIDITY));
        let (_, c) = attempt(server, client);
        let c = err(c);
        assert!(c.contains("not valid for name \"127.0.0.1\""), "{c}");
    }

    /// Removing a CA from the bundle file revokes what it issued, from the next connection on,
    /// without a restart.
    /// Two CAs, `ca` and `team`, in a bundle file the server reads (its own certificate is
    /// `ca`'s); `revoke` rewrites the bundle with `ca` alone. Clients trust `ca` and hold a
    /// certificate of the CA they are given.
    struct TwoCaBundle {
        _dir: tempfile::TempDir,
        bundle: std::path::PathBuf,
        ca: Ca,
        team: Ca,
        server: Credentials,
    }

    impl TwoCaBundle {
        fn new() -> TwoCaBundle {
            let dir = tempfile::tempdir().unwrap();
            let (ca, team) = (Ca::generate().unwrap(), Ca::generate().unwrap());
            let bundle = dir.path().join("ca.pem");
            std::fs::write(&bundle, ca.cert_pem() + &team.cert_pem()).unwrap();
            let mut server = spec(&ca, &["127.0.0.1"], SystemTime::now(), ISSUED_CERT_VALIDITY);
            server.ca_pem = None;
            server.ca_file = Some(bundle.clone());
            let server = creds(&server);
            TwoCaBundle {
                _dir: dir,
                bundle,
                ca,
                team,
                server,
            }
        }

        fn client_of(&self, issuer: &Ca) -> Credentials {
            creds(
                &spec(issuer, &["client"], SystemTime::now(), ISSUED_CERT_VALIDITY).overridden_by(
                    TlsSpec {
                        ca_pem: Some(self.ca.cert_pem()),
                        ..TlsSpec::default()
                    },
                ),
            )
        }

        fn revoke_team(&self) {
            std::thread::sleep(Duration::from_millis(20)); // a new modification time
            std::fs::write(&self.bundle, self.ca.cert_pem()).unwrap();
        }
    }

    #[test]
    fn a_ca_removed_from_the_bundle_file_is_refused_from_then_on() {
        let b = TwoCaBundle::new();
        let (server, client) = (b.server.clone(), b.client_of(&b.team));
        let (s, c) = attempt(server.clone(), client.clone());
        s.unwrap();
        c.unwrap();
        b.revoke_team();
        let (s, c) = attempt(server, client);
        let (s, c) = (err(s), err(c));
        assert!(s.contains("UnknownIssuer"), "{s}");
        assert!(c.contains("refused our TLS certificate"), "{c}");
    }

    /// Removing a CA from the bundle file also closes the open connections of the peers it
    /// issued, at their next read, within the check interval; peers of the CA that stays keep
    /// theirs.
    #[test]
    fn a_ca_removed_from_the_bundle_file_closes_the_open_connections_it_issued() {
        let b = TwoCaBundle::new();
        let server = b.server.clone();
        let (revoked, kept) = (b.client_of(&b.team), b.client_of(&b.ca));
        let rt = crate::tests::runtime();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let mut clients = Vec::new();
            let mut served = Vec::new();
            for c in [&revoked, &kept] {
                let (accepted, connected) = tokio::join!(
                    async {
                        let (s, _) = listener.accept().await.unwrap();
                        accept(s, &server, &[Role::Client]).await.unwrap().0
                    },
                    connect(&addr, c, Role::Client)
                );
                clients.push(connected.unwrap());
                served.push(accepted);
            }
            for (c, s) in clients.iter_mut().zip(&mut served) {
                send(c, &1u8).await.unwrap();
                assert_eq!(recv::<u8>(s).await.unwrap(), Some(1));
            }
            b.revoke_team();
            tokio::time::sleep(tls::CA_BUNDLE_CHECK_INTERVAL + Duration::from_millis(500)).await;
            for c in &mut clients {
                let _ = send(c, &2u8).await;
            }
            let cut = recv::<u8>(&mut served[0]).await;
            let e = format!("{:#}", cut.expect_err("closed"));
            assert!(e.contains("no longer trusted"), "{e}");
            // The other peer's CA stays in the bundle: its connection goes on.
            assert_eq!(recv::<u8>(&mut served[1]).await.unwrap(), Some(2));
        });
    }

    #[test]
    fn a_wrong_token_inside_tls_is_still_refused() {
        let (server, client) = tls_pair();
        let client = Credentials::new(b"wrong", client.tls);
        let (s, c) = attempt(server, client);
        assert!(err(s).contains("wrong cluster token"));
        assert!(err(c).contains("wrong cluster token"));
    }
}
