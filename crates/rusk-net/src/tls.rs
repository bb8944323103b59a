//! TLS of rusk connections (rustls): what a process trusts and proves, and the cluster CA that
//! `rusk scheduler` makes for itself when the operator gives none.
//!
//! Every TLS connection is mutually authenticated: both ends present a certificate issued by a
//! CA of the cluster's bundle, and the connecting side checks that the server's certificate
//! names the host it dialled. The token handshake then runs inside the encrypted stream, as on
//! a plaintext connection, so a certificate alone does not join a cluster either.
//!
//! What a process uses is a [`TlsSpec`]: the CA bundle (a file, re-read when it changes, so a
//! CA removed from it is refused from the next connection on; or PEM inline), and the
//! process's own certificate and key (files, PEM inline, or issued at start from the cluster
//! CA's key when the scheduler file carries it). [`Tls`] is the built configuration.
use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// The first byte of a TLS record carrying a handshake: how a listener tells a TLS client from
/// a plaintext one (which opens with [`rusk_proto::auth::PLAINTEXT_PREAMBLE`]).
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;
/// How long a certificate issued from the cluster CA at a process's start is valid.
pub const ISSUED_CERT_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);
/// How long the cluster CA made by `rusk scheduler` is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates in a CA bundle, at most (a larger bundle is refused with this bound's name).
pub const CA_BUNDLE_CERTS_MAX: usize = 1024;
/// How often a process looks at its CA bundle file for changes. A CA removed from it is
/// refused from the next handshake on, and each open connection whose peer's certificate
/// no longer chains to the bundle is closed at its next read or write.
pub const CA_BUNDLE_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// The common name of a CA made by `rusk scheduler`.
const CLUSTER_CA_NAME: &str = "rusk cluster CA";

/// Where a process's TLS material comes from. Serialised into the scheduler file (the cluster
/// CA and its key, when the scheduler made them) and into an executor's environment
/// (`RUSK_TLS`: the CA and the worker's own certificate, never the CA's key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSpec {
    /// PEM file of the CA bundle trusted; re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The CA bundle inline (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The cluster CA's private key (PEM): a process that has it issues itself a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
}

impl TlsSpec {
    /// Operator files (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub fn from_files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> TlsSpec {
        TlsSpec {
            ca_file: ca.map(Path::to_path_buf),
            cert_file: cert.map(Path::to_path_buf),
            key_file: key.map(Path::to_path_buf),
            ..TlsSpec::default()
        }
    }

    /// `RUSK_TLS` (a JSON spec, as a worker gives its executors), then the files named by
    /// `RUSK_TLS_CA`, `RUSK_TLS_CERT` and `RUSK_TLS_KEY` over it.
    pub fn from_env() -> Result<TlsSpec> {
        let base = match std::env::var("RUSK_TLS") {
            Ok(json) if !json.is_empty() => {
                serde_json::from_str(&json).context("RUSK_TLS is not a valid TLS spec (JSON)")?
            }
            _ => TlsSpec::default(),
        };
        let file = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Ok(base.overridden_by(TlsSpec {
            ca_file: file("RUSK_TLS_CA"),
            cert_file: file("RUSK_TLS_CERT"),
            key_file: file("RUSK_TLS_KEY"),
            ..TlsSpec::default()
        }))
    }

    pub fn is_empty(&self) -> bool {
        *self == TlsSpec::default()
    }

    /// This spec with every source `over` names replacing the one of the same kind (a CA file
    /// replaces an inline CA, a certificate file an issued one).
    pub fn overridden_by(mut self, over: TlsSpec) -> TlsSpec {
        if over.ca_file.is_some() || over.ca_pem.is_some() {
            self.ca_file = over.ca_file;
            self.ca_pem = over.ca_pem;
        }
        if over.ca_key_pem.is_some() {
            self.ca_key_pem = over.ca_key_pem;
        }
        if over.cert_file.is_some() || over.cert_pem.is_some() {
            self.cert_file = over.cert_file;
            self.cert_pem = over.cert_pem;
        }
        if over.key_file.is_some() || over.key_pem.is_some() {
            self.key_file = over.key_file;
            self.key_pem = over.key_pem;
        }
        self
    }
}

/// A process's built TLS configuration: shared by all its connections.
pub struct Tls {
    ca: CaSource,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The certificate and key as PEM, for the spec a worker gives its executors.
    identity_pem: (String, String),
    built: Mutex<Built>,
    /// Bumped at each reload of the CA bundle: open connections check their peer again.
    generation: AtomicU64,
}

enum CaSource {
    File(PathBuf),
    Inline(String),
}

struct Built {
    /// Modification time of the CA file these configs were built from.
    stamp: Option<SystemTime>,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// rustls on *ring*: it builds with no toolchain beyond a C compiler. rustls deprecates it
/// for lacking post-quantum key exchange (aws-lc-rs has it); see docs/security.md.
/// AES-128-GCM is offered first: as safe for this use as AES-256 and about a third faster,
/// which transfers of large values feel.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

impl Tls {
    pub fn new(spec: &TlsSpec) -> Result<Arc<Tls>> {
        let ca = match (&spec.ca_file, &spec.ca_pem) {
            (Some(f), _) => CaSource::File(f.clone()),
            (None, Some(p)) => CaSource::Inline(p.clone()),
            (None, None) => bail!("TLS needs the cluster's CA bundle (--tls-ca or RUSK_TLS_CA)"),
        };
        let read = |file: &Option<PathBuf>,
                    inline: &Option<String>,
                    what: &str|
         -> Result<Option<String>> {
            match (file, inline) {
                (Some(f), _) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the TLS {what} {}", f.display()))
                    .map(Some),
                (None, Some(p)) => Ok(Some(p.clone())),
                (None, None) => Ok(None),
            }
        };
        let cert = read(&spec.cert_file, &spec.cert_pem, "certificate")?;
        let key = read(&spec.key_file, &spec.key_pem, "key")?;
        let (cert_pem, key_pem) = match (cert, key, &spec.ca_key_pem) {
            (Some(c), Some(k), _) => (c, k),
            (None, None, Some(ca_key)) => {
                let ca = Ca::from_key_pem(ca_key)?;
                ca.issue(&local_names(), SystemTime::now(), ISSUED_CERT_VALIDITY)?
            }
            (Some(_), None, _) => bail!("a TLS certificate was given without its key (--tls-key)"),
            (None, Some(_), _) => bail!("a TLS key was given without its certificate (--tls-cert)"),
            (None, None, None) => bail!(
                "TLS needs this process's certificate and key (--tls-cert and --tls-key), or a \
                 scheduler file carrying the cluster CA"
            ),
        };
        let chain = parse_certs(&cert_pem, "certificate")?;
        if chain.is_empty() {
            bail!("the TLS certificate file holds no certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow!("the TLS key is not a PEM private key: {e}"))?;
        let tls = Tls {
            ca,
            chain,
            key,
            identity_pem: (cert_pem, key_pem),
            built: Mutex::new(placeholder_built()?),
            generation: AtomicU64::new(0),
        };
        let (stamp, pem) = tls.read_ca()?;
        *tls.built.lock().expect("not poisoned") = tls.build(stamp, &pem)?;
        let tls = Arc::new(tls);
        if matches!(tls.ca, CaSource::File(_)) {
            watch_bundle(Arc::downgrade(&tls));
        }
        Ok(tls)
    }

    /// The number of CA bundle reloads so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Does `chain` (a peer's certificates, end entity first) still chain to the current CA
    /// bundle, as a client's or as a server's certificate?
    pub fn still_trusts(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((end, intermediates)) = chain.split_first() else {
            return false;
        };
        let (roots, verifier) = {
            let b = self.built.lock().expect("not poisoned");
            (b.roots.clone(), b.client_verifier.clone())
        };
        let now = rustls::pki_types::UnixTime::now();
        if verifier.verify_client_cert(end, intermediates, now).is_ok() {
            return true;
        }
        let Ok(parsed) = rustls::server::ParsedCertificate::try_from(end) else {
            return false;
        };
        let algs = provider().signature_verification_algorithms;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            algs.all,
        )
        .is_ok()
    }

    fn read_ca(&self) -> Result<(Option<SystemTime>, String)> {
        match &self.ca {
            CaSource::Inline(p) => Ok((None, p.clone())),
            CaSource::File(f) => {
                let stamp = std::fs::metadata(f).and_then(|m| m.modified()).ok();
                let pem = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the TLS CA bundle {}", f.display()))?;
                Ok((stamp, pem))
            }
        }
    }

    fn build(&self, stamp: Option<SystemTime>, ca_pem: &str) -> Result<Built> {
        let cas = parse_certs(ca_pem, "CA bundle")?;
        if cas.len() > CA_BUNDLE_CERTS_MAX {
            bail!(
                "the TLS CA bundle holds {} certificates; at most {CA_BUNDLE_CERTS_MAX} \
                 (CA_BUNDLE_CERTS_MAX)",
                cas.len()
            );
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(cas);
        if added == 0 {
            bail!("the TLS CA bundle holds no usable CA certificate ({ignored} unusable)");
        }
        let roots = Arc::new(roots);
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .context("this process's TLS certificate and key do not go together")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .context("cannot build the TLS client verifier")?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("this process's TLS certificate and key do not go together")?;
        Ok(Built {
            stamp,
            client: Arc::new(client),
            server: Arc::new(server),
            roots,
            client_verifier: verifier,
        })
    }

    /// The configurations, rebuilt first when the CA file changed since they were built (a CA
    /// removed from the bundle is refused from the next handshake on). A bundle that became
    /// unreadable or invalid keeps the last good one, with a warning.
    fn current(&self) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        let mut built = self.built.lock().expect("not poisoned");
        if let CaSource::File(f) = &self.ca {
            let stamp = std::fs::metadata(f).and_then(|m| m.modified()).ok();
            if stamp != built.stamp {
                match self.read_ca().and_then(|(s, pem)| self.build(s, &pem)) {
                    Ok(new) => {
                        tracing::info!(file = %f.display(), "TLS CA bundle changed: reloaded");
                        *built = new;
                        self.generation.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %format!("{e:#}"), "TLS CA bundle changed but cannot be used; keeping the last good one");
                        built.stamp = stamp;
                    }
                }
            }
        }
        (built.client.clone(), built.server.clone())
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().0
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().1
    }

    /// A server configuration for HTTPS (the dashboard): this process's certificate, no client
    /// certificate asked (browsers; the dashboard's token guards it).
    pub fn https_config(&self) -> Result<Arc<ServerConfig>> {
        let mut c = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("this process's TLS certificate and key do not go together")?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(c))
    }

    /// What this process's children get (`RUSK_TLS`: a nanny's workers, a worker's executors):
    /// the CA, and this process's certificate and key, but never the CA's key.
    pub fn spec_for_children(&self) -> TlsSpec {
        let (ca_file, ca_pem) = match &self.ca {
            CaSource::File(f) => (Some(f.clone()), None),
            CaSource::Inline(p) => (None, Some(p.clone())),
        };
        TlsSpec {
            ca_file,
            ca_pem,
            cert_pem: Some(self.identity_pem.0.clone()),
            key_pem: Some(self.identity_pem.1.clone()),
            ..TlsSpec::default()
        }
    }
}

/// Look at the CA bundle file every [`CA_BUNDLE_CHECK_INTERVAL`] while its `Tls` lives.
fn watch_bundle(tls: Weak<Tls>) {
    let spawned = std::thread::Builder::new()
        .name("rusk-tls-ca".into())
        .spawn(move || loop {
            std::thread::sleep(CA_BUNDLE_CHECK_INTERVAL);
            match tls.upgrade() {
                Some(t) => {
                    t.current();
                }
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the TLS CA bundle: changes apply to new connections only");
    }
}

fn placeholder_built() -> Result<Built> {
    let roots = Arc::new(RootCertStore::empty());
    Ok(Built {
        stamp: None,
        client: Arc::new(placeholder_client()?),
        server: Arc::new(placeholder_server()?),
        client_verifier: WebPkiClientVerifier::no_client_auth(),
        roots,
    })
}

fn placeholder_client() -> Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

fn placeholder_server() -> Result<ServerConfig> {
    // Never used: replaced before `Tls::new` returns.
    let ca = Ca::generate()?;
    let (c, k) = ca.issue(
        &["localhost".into()],
        SystemTime::now(),
        Duration::from_secs(60),
    )?;
    Ok(ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            parse_certs(&c, "certificate")?,
            PrivateKeyDer::from_pem_slice(k.as_bytes()).map_err(|e| anyhow!("{e}"))?,
        )?)
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the TLS {what} is not valid PEM: {e}"))
}

/// The name a client checks the server's certificate against: the host of `address`
/// (`host:port`, `[v6]:port`).
pub fn server_name(address: &str) -> Result<ServerName<'static>> {
    let host = match address.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| anyhow!("{address}: {host:?} is not a host name or address"))
}

/// A certificate authority: the cluster CA that `rusk scheduler` makes, or one a test makes.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A CA's parameters. Its name carries a fingerprint of its key, so CAs of two clusters are
/// told apart (a certificate of the other cluster is "unknown issuer", not "bad signature").
fn ca_params(key: &KeyPair, not_before: SystemTime, validity: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let print: String = key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    dn.push(DnType::CommonName, format!("{CLUSTER_CA_NAME} {print}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before.into();
    p.not_after = (not_before + validity).into();
    p
}

impl Ca {
    /// A new CA with a fresh key (ECDSA P-256).
    pub fn generate() -> Result<Ca> {
        let key = KeyPair::generate().context("cannot generate a key")?;
        let now = SystemTime::now() - Duration::from_secs(3600);
        let cert = ca_params(&key, now, CA_VALIDITY)
            .self_signed(&key)
            .context("cannot make the CA certificate")?;
        Ok(Ca { key, cert })
    }

    /// The CA of `key_pem` as an issuer. Its certificate is made again from the same name and
    /// key, so what it issues verifies against the original certificate.
    pub fn from_key_pem(key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem).context("the cluster CA's key is not valid PEM")?;
        let cert = ca_params(&key, SystemTime::now(), CA_VALIDITY)
            .self_signed(&key)
            .context("cannot make the CA certificate")?;
        Ok(Ca { key, cert })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate and key (PEM) for `names` (host names or addresses), valid from
    /// `not_before` for `validity`, for both server and client use.
    pub fn issue(
        &self,
        names: &[String],
        not_before: SystemTime,
        validity: Duration,
    ) -> Result<(String, String)> {
        let key = KeyPair::generate().context("cannot generate a key")?;
        let mut p = CertificateParams::new(names.to_vec())
            .map_err(|e| anyhow!("cannot name a certificate {names:?}: {e}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("rusk", String::as_str),
        );
        p.distinguished_name = dn;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = not_before.into();
        p.not_after = (not_before + validity).into();
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .context("cannot sign a certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Every name this host answers to: its host name, `localhost`, and the address of each of its
/// interfaces (so an issued certificate fits whichever address a peer dials).
pub fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && rustls::pki_types::DnsName::try_from(h).is_ok() {
            names.push(h.to_string());
        }
    }
    names.push("127.0.0.1".into());
    names.push("::1".into());
    for ip in interface_addresses() {
        names.push(ip.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The address of each of this host's interfaces.
pub fn interface_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; every pointer read is checked
    // for null and read as the address family it says it is.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                            u32::from_be(sin.sin_addr.s_addr),
                        )));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                            sin6.sin6_addr.s6_addr,
                        )));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_verify_against_the_original_ca() {
        let ca = Ca::generate().unwrap();
        let again = Ca::from_key_pem(&ca.key_pem()).unwrap();
        let (cert, key) = again
            .issue(&local_names(), SystemTime::now(), ISSUED_CERT_VALIDITY)
            .unwrap();
        let tls = Tls::new(&TlsSpec {
            ca_pem: Some(ca.cert_pem()),
            cert_pem: Some(cert),
            key_pem: Some(key),
            ..TlsSpec::default()
        })
        .unwrap();
        // Building the configs checked the pair; the chain check itself is exercised by the
        // connection tests in lib.rs.
        let _ = tls.client_config();
    }

    #[test]
    fn server_names_of_addresses() {
        assert!(matches!(
            server_name("10.1.2.3:8786").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:8786").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node-7.example:1").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn a_spec_is_overridden_by_kind() {
        let base = TlsSpec {
            ca_pem: Some("inline".into()),
            ca_key_pem: Some("k".into()),
            ..TlsSpec::default()
        };
        let s = base.overridden_by(TlsSpec::from_files(Some(Path::new("/ca.pem")), None, None));
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(s.ca_pem, None);
        assert_eq!(s.ca_key_pem.as_deref(), Some("k"));
    }
}
