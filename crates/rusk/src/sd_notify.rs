//! systemd's notification protocol (`sd_notify(3)`), for `rusk scheduler` and `rusk nanny`
//! run as `Type=notify` services (deploy/systemd/).
//!
//! With `$NOTIFY_SOCKET` set (a path, or an abstract name starting with `@`), the process sends
//! datagrams of `KEY=value` lines to it: `READY=1` once it serves, `STATUS=...`, `STOPPING=1`
//! on its way out, and `WATCHDOG=1` every half of `$WATCHDOG_USEC` (only if `$WATCHDOG_PID`
//! is unset or is this process). The pings are sent by the core loop itself ([`Notifier::
//! watchdog`] once per turn), so a wedged loop stops them and systemd restarts the service.
//!
//! Without `$NOTIFY_SOCKET` a [`Notifier`] is `None` inside: every call is one branch. Sending
//! never blocks (a non-blocking socket; a full queue drops that message) and never fails the
//! process: the first failure is logged once as a warning.
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};
use tracing::warn;

/// The variables of the protocol: a supervised process removes them from its children's
/// environment, so that they never speak for it.
pub const ENV_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

pub struct Notifier(Option<Inner>);

struct Inner {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half the watchdog timeout, when systemd asks this process for pings.
    ping_every: Option<Duration>,
    next_ping: Instant,
    ready_sent: bool,
    warned: bool,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for; inactive when it is unset (or unusable: then
    /// with a warning).
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Notifier(None);
        };
        let watchdog = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        match open(path.as_encoded_bytes()) {
            Ok((socket, addr)) => Notifier(Some(Inner {
                socket,
                addr,
                ping_every: ping_interval(
                    watchdog.as_deref(),
                    watchdog_pid.as_deref(),
                    std::process::id(),
                ),
                next_ping: Instant::now(),
                ready_sent: false,
                warned: false,
            })),
            Err(e) => {
                warn!(notify_socket = %path.to_string_lossy(), error = %e, "cannot use NOTIFY_SOCKET; not notifying systemd");
                Notifier(None)
            }
        }
    }

    /// `READY=1` with a status line; sent once, later calls do nothing.
    pub fn ready(&mut self, status: &str) {
        if let Some(inner) = &mut self.0 {
            if !inner.ready_sent {
                inner.ready_sent = true;
                inner.send(&format!("READY=1\nSTATUS={status}"));
            }
        }
    }

    pub fn status(&mut self, status: &str) {
        if let Some(inner) = &mut self.0 {
            inner.send(&format!("STATUS={status}"));
        }
    }

    pub fn stopping(&mut self, status: &str) {
        if let Some(inner) = &mut self.0 {
            inner.send(&format!("STOPPING=1\nSTATUS={status}"));
        }
    }

    /// Called once per turn of the core loop: `WATCHDOG=1` when half the watchdog timeout has
    /// passed since the last one.
    #[inline]
    pub fn watchdog(&mut self) {
        if let Some(inner) = &mut self.0 {
            if let Some(every) = inner.ping_every {
                let now = Instant::now();
                if now >= inner.next_ping {
                    inner.next_ping = now + every;
                    inner.send("WATCHDOG=1");
                }
            }
        }
    }

    /// Under systemd, a task that says `STOPPING=1` on SIGTERM or SIGINT and then lets the
    /// signal end the process as it would have (so the exit status is unchanged). For a
    /// process that has no shutdown of its own (the scheduler); nothing without
    /// `$NOTIFY_SOCKET`.
    pub fn stop_on_signal(&self) {
        let Some(inner) = &self.0 else { return };
        let (Ok(socket), addr) = (inner.socket.try_clone(), inner.addr.clone()) else {
            return;
        };
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let sig = tokio::select! {
                _ = term.recv() => libc::SIGTERM,
                _ = int.recv() => libc::SIGINT,
            };
            let _ = socket.send_to_addr(b"STOPPING=1\nSTATUS=stopping on a signal", &addr);
            // SAFETY: restoring the default action and raising the signal again: the process
            // ends the way it would have without a handler.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        });
    }
}

impl Inner {
    fn send(&mut self, msg: &str) {
        match self.socket.send_to_addr(msg.as_bytes(), &self.addr) {
            Ok(_) => {}
            // systemd is busy: this message is dropped, the next ping is another.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET); going on without");
                }
            }
        }
    }
}

/// A non-blocking unbound datagram socket and the address of `$NOTIFY_SOCKET`.
fn open(path: &[u8]) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None if path.starts_with(b"/") => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?
        }
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@...)",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// Half of `$WATCHDOG_USEC`, when it is set and `$WATCHDOG_PID` (if set) names `pid`.
fn ping_interval(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = watchdog_pid {
        if p.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}
