//! Settings shared by the commands: the scheduler file, the cluster token, durations, logging.
use anyhow::{bail, Context, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusk_net::{Credentials, Tls, TlsSpec};

/// What `rusk scheduler --scheduler-file PATH` writes (JSON, mode 0600) and everything else
/// reads to find and join the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchedulerFile {
    /// `host:port` of the scheduler (what `rusk worker --scheduler` takes).
    pub address: String,
    /// The cluster's secret.
    pub token: String,
    pub pid: u32,
    /// URL of the dashboard (`/metrics`, `/api/...` beside it), when the scheduler serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// What joiners need for TLS when the cluster encrypts: the CA bundle, and the cluster CA's
    /// key when the scheduler made the CA itself (so each joiner issues itself a certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

impl SchedulerFile {
    pub fn read(path: &Path) -> Result<SchedulerFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scheduler file {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("scheduler file {} is not valid", path.display()))
    }

    /// Write atomically (temporary file then rename) with mode 0600: it holds the token.
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("scheduler"),
            std::process::id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all().ok();
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// A fresh random cluster token (256 bits, hex).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How a client or worker finds the scheduler: a scheduler file, or an address plus a token
/// from `--token-file` / `RUSK_TOKEN`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Scheduler file written by `rusk scheduler`.
    #[arg(long, env = "RUSK_SCHEDULER_FILE")]
    pub scheduler_file: Option<PathBuf>,
    /// Scheduler address (`host:port`), instead of a scheduler file.
    #[arg(long, env = "RUSK_SCHEDULER")]
    pub scheduler: Option<String>,
    /// File holding the cluster token (with `--scheduler`).
    #[arg(long, env = "RUSK_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The cluster token itself (with `--scheduler`); prefer a token file.
    #[arg(long, env = "RUSK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Whether the scheduler encrypts its cluster's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// TLS whenever the scheduler listens beyond loopback (or `--tls-*` files are given).
    Auto,
    /// TLS even on loopback.
    On,
    /// Plaintext even beyond loopback (a warning is logged).
    Off,
}

/// TLS files of an operator's own CA (over what a scheduler file carries).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM bundle of the CAs this cluster trusts (re-read when it changes: remove a CA to
    /// revoke what it issued).
    #[arg(long, env = "RUSK_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) of this process, issued by a CA of the bundle.
    #[arg(long, env = "RUSK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "RUSK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    pub fn spec(&self) -> TlsSpec {
        TlsSpec::from_files(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )
    }
}

#[derive(Clone)]
pub struct Cluster {
    pub address: String,
    pub token: String,
    /// TLS of this process's connections, when the cluster encrypts.
    pub tls: Option<Arc<Tls>>,
}

impl Cluster {
    /// Join by a scheduler file, with `args` over the TLS it carries.
    pub fn from_scheduler_file(f: SchedulerFile, args: &TlsArgs) -> Result<Cluster> {
        Ok(Cluster {
            address: f.address,
            token: f.token,
            tls: resolve_tls(f.tls, args)?,
        })
    }

    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.token.as_bytes(), self.tls.clone())
    }
}

/// This process's TLS: what the scheduler file carries, then `RUSK_TLS` (a worker's executors,
/// a nanny's workers), then the operator's files; none of them is plaintext.
fn resolve_tls(from_file: Option<TlsSpec>, args: &TlsArgs) -> Result<Option<Arc<Tls>>> {
    let spec = from_file
        .unwrap_or_default()
        .overridden_by(TlsSpec::from_env()?)
        .overridden_by(args.spec());
    if spec.is_empty() {
        return Ok(None);
    }
    Tls::new(&spec).map(Some).context("cannot set up TLS")
}

impl ClusterArgs {
    pub fn resolve(&self) -> Result<Cluster> {
        if let Some(address) = &self.scheduler {
            let token = match (&self.token_file, &self.token) {
                (Some(f), _) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read token file {}", f.display()))?
                    .trim()
                    .to_string(),
                (None, Some(t)) => t.clone(),
                (None, None) => bail!("--scheduler needs a token: --token-file or RUSK_TOKEN"),
            };
            if token.is_empty() {
                bail!("the cluster token is empty");
            }
            return Ok(Cluster {
                address: address.clone(),
                token,
                tls: resolve_tls(None, &self.tls)?,
            });
        }
        let Some(path) = &self.scheduler_file else {
            bail!("say where the scheduler is: --scheduler-file PATH, or --scheduler ADDR with a token");
        };
        Cluster::from_scheduler_file(SchedulerFile::read(path)?, &self.tls)
    }
}

/// Parse `500ms`, `5s`, `2m`, ... (clap value parser).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 500ms, 5s, 2m)"))
}

/// Log lines queued for the writer thread at most; past it lines are dropped (and counted by
/// tracing-appender) rather than blocking the event loop.
pub const LOG_LINES_QUEUED_MAX: usize = 10_000;

static LOG_GUARD: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> =
    std::sync::Mutex::new(None);

/// Logs go to stderr, written by a background thread (an event loop never waits on a slow
/// stderr: a full pipe, a busy disk); `RUSK_LOG` sets the filter (default `info`),
/// `RUSK_LOG_FORMAT=json` switches to one JSON object per line.
pub fn init_logging(component: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUSK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("RUSK_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_LINES_QUEUED_MAX)
        .thread_name("rusk-log")
        .finish(std::io::stderr());
    *LOG_GUARD.lock().expect("not poisoned") = Some(guard);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::recent_logs::Tee(writer))
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    tracing::debug!(component, "logging started");
}

/// Write out the queued log lines (bounded by tracing-appender's shutdown wait).
pub fn flush_logs() {
    drop(LOG_GUARD.lock().expect("not poisoned").take());
}

/// Exit the process after flushing the logs.
pub fn exit(code: i32) -> ! {
    flush_logs();
    std::process::exit(code)
}

/// Most resources one worker may declare (each is checked against every restricted task).
pub const WORKER_RESOURCES_MAX: usize = 64;

/// Parse a worker's resources: `GPU=2,MEM=64e9` (clap value parser). Amounts are finite
/// numbers, 0 or more; a name appears once.
pub fn parse_resources(s: &str) -> Result<Resources, String> {
    let mut out = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, amount)) = part.split_once('=') else {
            return Err(format!(
                "{part:?} is not NAME=AMOUNT (write resources like \"GPU=2,MEM=64e9\")"
            ));
        };
        let name = name.trim();
        let amount: f64 = amount
            .trim()
            .parse()
            .map_err(|_| format!("resource {name:?}: {:?} is not a number", amount.trim()))?;
        if name.is_empty() {
            return Err(format!("{part:?}: the resource has no name"));
        }
        if !amount.is_finite() || amount < 0.0 {
            return Err(format!(
                "resource {name:?} = {amount}: an amount must be a finite number, 0 or more"
            ));
        }
        if out.insert(name.to_string(), amount).is_some() {
            return Err(format!("resource {name:?} is given twice"));
        }
    }
    if out.len() > WORKER_RESOURCES_MAX {
        return Err(format!(
            "{} resources, more than the limit of {WORKER_RESOURCES_MAX}",
            out.len()
        ));
    }
    Ok(Resources(out))
}

/// A worker's declared resources (a named type so that clap keeps it as one value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources(pub std::collections::BTreeMap<String, f64>);

impl Resources {
    /// Back to the flag's text, for the nanny's workers.
    pub fn to_arg(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(n, a)| format!("{n}={a}")).collect();
        parts.join(",")
    }
}

/// Parse a byte size: `4GiB`, `512MiB`, `2GB`, `1000000` (clap value parser).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (write sizes like 4GiB, 512MiB, 2GB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let bytes = n * mult;
    if !(1.0..=1e18).contains(&bytes) {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("4XB").is_err());
        assert_eq!(
            parse_duration("500ms").unwrap(),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("2m").unwrap(),
            std::time::Duration::from_secs(120)
        );
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn resources_parse_and_bad_ones_say_why() {
        let r = parse_resources("GPU=2, MEM=64e9,").unwrap();
        assert_eq!(r.0.get("GPU"), Some(&2.0));
        assert_eq!(r.0.get("MEM"), Some(&64e9));
        assert_eq!(r.to_arg(), "GPU=2,MEM=64000000000");
        assert_eq!(parse_resources(&r.to_arg()).unwrap(), r);
        assert!(parse_resources("").unwrap().0.is_empty());
        for (bad, why) in [
            ("GPU", "not NAME=AMOUNT"),
            ("GPU=x", "is not a number"),
            ("GPU=-1", "0 or more"),
            ("GPU=NaN", "finite"),
            ("=1", "no name"),
            ("GPU=1,GPU=2", "twice"),
        ] {
            let e = parse_resources(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
