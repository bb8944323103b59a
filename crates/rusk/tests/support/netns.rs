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
    /// Its interface (the namespace's end of the veth).
    pub dev: String,
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
                dev: inner.clone(),
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

    /// Run `ip -n <host i's namespace> args...` (panics on failure).
    pub fn ip_in(&self, i: usize, args: &[&str]) {
        let mut all = vec!["-n", self.hosts[i].ns.as_str()];
        all.extend_from_slice(args);
        ip(&all).unwrap();
    }

    /// Cut host `i` off from everyone (its link down), or heal it.
    pub fn cut(&self, i: usize, off: bool) {
        let dev = self.hosts[i].dev.clone();
        self.ip_in(i, &["link", "set", &dev, if off { "down" } else { "up" }]);
    }

    /// Run `nft` in host `i` with `script` on stdin (panics on failure).
    pub fn nft(&self, i: usize, script: &str) {
        use std::io::Write;
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft");
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success(), "nft failed: {script}");
    }

    /// Impair host `i`'s link: `loss_pct` % of packets lost and `delay_ms` added, with
    /// `tc netem`. Kernels without netem (some VMs) get the loss from nftables (each way)
    /// and no delay. Returns what was applied, for the test's output.
    pub fn impair(&self, i: usize, loss_pct: u32, delay_ms: u32) -> String {
        let dev = self.hosts[i].dev.clone();
        let (delay, loss) = (format!("{delay_ms}ms"), format!("{loss_pct}%"));
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hosts[i].ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                &dev,
            ])
            .args(["root", "netem", "delay", &delay, "loss", &loss])
            .output()
            .unwrap();
        if out.status.success() {
            return format!("netem: {loss} loss, {delay} delay");
        }
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        self.nft(
            i,
            &format!(
                "table inet lossy {{\n chain out {{\n  type filter hook output priority 0; \
                 policy accept;\n  oifname != \"lo\" numgen random mod 100 < {loss_pct} drop\n \
                 }}\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
                 iifname != \"lo\" numgen random mod 100 < {loss_pct} drop\n }}\n}}\n"
            ),
        );
        format!("nftables: {loss} loss each way, no delay (tc netem unavailable: {why})")
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

/// Children killed (and reaped) when dropped, before the namespaces go.
pub struct Procs(pub Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cluster across the hosts: the scheduler on host 0 (`scheduler_args` added), a nanny on
/// each of `nannies` (host, extra args; named `host<i>`), logs in `dir`. Returns the scheduler
/// file and the processes; the caller waits for the workers.
pub fn start_cluster(
    net: &Net,
    rusk: &str,
    dir: &std::path::Path,
    scheduler_args: &[&str],
    nannies: &[(usize, Vec<&str>)],
) -> (std::path::PathBuf, Procs) {
    let logged = |cmd: &mut Command, name: &str| {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        cmd.env("RUSK_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .unwrap()
    };
    let file = dir.join("scheduler.json");
    let mut procs = Procs(Vec::new());
    let listen = format!("{}:0", net.hosts[0].ip);
    procs.0.push(logged(
        net.command(0, rusk)
            .args(["scheduler", "--dashboard", "none", "--listen", &listen])
            .args(scheduler_args)
            .arg("--scheduler-file")
            .arg(&file),
        "scheduler",
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !file.exists() {
        assert!(std::time::Instant::now() < deadline, "no scheduler file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for (h, extra) in nannies {
        procs.0.push(logged(
            net.command(*h, rusk)
                .args(["nanny", "--name", &format!("host{h}")])
                .args(extra)
                .arg("--scheduler-file")
                .arg(&file),
            &format!("nanny{h}"),
        ));
    }
    (file, procs)
}

/// `rusk status --json` run on host 0 (`Null` if it failed).
pub fn status(net: &Net, rusk: &str, file: &std::path::Path) -> serde_json::Value {
    let out = net
        .command(0, rusk)
        .args(["status", "--json", "--scheduler-file"])
        .arg(file)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The workers `status` shows that are not lost.
pub fn live_workers(net: &Net, rusk: &str, file: &std::path::Path) -> Vec<serde_json::Value> {
    status(net, rusk, file)["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w["state"] != "lost")
        .collect()
}
