//! "Hosts" for multi-host tests: network namespaces, each with one veth into a bridge in the
//! root namespace, on a private /24 (root only; needs iproute2). Processes run in a host with
//! `ip netns exec`. Everything is removed when the `Net` is dropped (killing the namespaces'
//! processes is the test's job: they are its children).
#![allow(dead_code)]
use std::process::Command;

pub struct Net {
    id: String,
    pub hosts: Vec<Host>,
}

pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// `n` hosts, or why not (not root, no iproute2): the caller skips the test, saying so.
    pub fn new(n: usize) -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (network namespaces)".into());
        }
        // Short: interface names have at most 15 bytes.
        let id = format!("{:04x}", std::process::id() % 0xffff);
        let subnet = 10 + std::process::id() % 200;
        let mut net = Net {
            id: id.clone(),
            hosts: Vec::new(),
        };
        let bridge = format!("rbr{id}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("rusk{id}h{i}");
            let (outer, inner) = (format!("rv{id}h{i}"), format!("ri{id}h{i}"));
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                ns: ns.clone(),
                ip: format!("10.77.{subnet}.{}", i + 1),
            });
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &outer, "master", &bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            let addr = format!("{}/24", net.hosts[i].ip);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// `program` to run in host `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].ns, program]);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]); // its veth end goes with it, and the pair
        }
        let _ = ip(&["link", "del", &format!("rbr{}", self.id)]);
    }
}
