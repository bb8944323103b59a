//! Two "hosts" joined by a network link of a given rate, for the `net` suite's transfer: two
//! network namespaces, a veth pair between them, and a token bucket (`tc tbf`) at the link's
//! rate on each end (root only; needs iproute2 and tc). A thread enters one of them with
//! [`Link::enter`] (`setns` moves only the calling thread). Removed on drop.
use std::os::fd::AsRawFd;
use std::process::Command;

/// The two ends' addresses on the link.
pub const SERVER_IP: &str = "10.254.77.1";
const CLIENT_IP: &str = "10.254.77.2";

pub struct Link {
    pub server_ns: String,
    pub client_ns: String,
    pub gbit: u32,
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Link {
    /// A link of `gbit` Gbit/s each way, or why not (not root, no `ip` or `tc`).
    pub fn new(gbit: u32) -> Result<Link, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (network namespaces)".into());
        }
        let id = std::process::id() % 0xffff;
        let link = Link {
            server_ns: format!("rbench{id:04x}s"),
            client_ns: format!("rbench{id:04x}c"),
            gbit,
        };
        let (sv, cv) = (format!("rbv{id:04x}s"), format!("rbv{id:04x}c"));
        let rate = format!("{gbit}gbit");
        run("ip", &["netns", "add", &link.server_ns])?;
        run("ip", &["netns", "add", &link.client_ns])?;
        run(
            "ip",
            &["link", "add", &sv, "type", "veth", "peer", "name", &cv],
        )?;
        for (ns, dev, ip) in [
            (&link.server_ns, &sv, SERVER_IP),
            (&link.client_ns, &cv, CLIENT_IP),
        ] {
            run("ip", &["link", "set", dev, "netns", ns])?;
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            )?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                    &rate, "burst", "4mb", "latency", "10ms",
                ],
            )?;
        }
        Ok(link)
    }

    /// Move the calling thread into namespace `ns` (its sockets are made there from now on).
    pub fn enter(ns: &str) -> Result<(), String> {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}"))
            .map_err(|e| format!("netns {ns}: {e}"))?;
        // SAFETY: setns on an open namespace file; affects only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        let _ = run("ip", &["netns", "del", &self.server_ns]);
        let _ = run("ip", &["netns", "del", &self.client_ns]);
    }
}
