//! systemd supervision (`sd_notify`): the real `rusk scheduler` and `rusk nanny` with
//! `$NOTIFY_SOCKET` pointing at a datagram socket of the test, as systemd would run them
//! (deploy/systemd/). READY=1 once serving, WATCHDOG=1 from the core loop (so a stopped
//! process stops pinging), STOPPING=1 on SIGTERM; a bad socket is one warning, never a crash.
mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `WATCHDOG_USEC` of the tests: pings expected every 500 ms.
const WATCHDOG_USEC: &str = "1000000";
/// Long enough to see several pings, or to be sure there are none.
const WINDOW: Duration = Duration::from_secs(3);

/// What systemd's end of the socket received, read by a thread (so nothing is dropped on a
/// full socket queue while the test waits for something else).
struct Notifications(mpsc::Receiver<String>);

impl Notifications {
    fn listen(socket: UnixDatagram) -> Notifications {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        Notifications(rx)
    }

    /// The first message with the line `line` within `timeout`, skipping others.
    fn wait_for(&self, line: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.0.recv_timeout(left) {
                Ok(m) if m.lines().any(|l| l == line) => return Some(m),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Messages with the line `line` received during `window`.
    fn count(&self, line: &str, window: Duration) -> usize {
        let deadline = Instant::now() + window;
        let mut n = 0;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.0.recv_timeout(left) {
                Ok(m) if m.lines().any(|l| l == line) => n += 1,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the socket's reader died"),
            }
        }
        n
    }

    /// Forget what arrived so far (waiting `settle` for what is in flight).
    fn drain(&self, settle: Duration) {
        std::thread::sleep(settle);
        while self.0.try_recv().is_ok() {}
    }
}

fn bind_path(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    (socket, path.to_str().unwrap().to_string())
}

fn start_scheduler(dir: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(RUSK)
        .args([
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--dashboard",
            "none",
        ])
        .arg("--scheduler-file")
        .arg(dir.join("scheduler.json"))
        .envs(env.iter().copied())
        .env("RUSK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("scheduler.log")).unwrap())
        .spawn()
        .unwrap()
}

/// Stops (SIGSTOP) `pid` and checks that the pings stop, then resumes it (SIGCONT) and checks
/// that they come back.
fn pings_follow_the_loop(n: &Notifications, pid: u64) {
    let pings = n.count("WATCHDOG=1", WINDOW);
    assert!(
        pings >= 3,
        "WATCHDOG=1 keeps arriving: {pings} in {WINDOW:?}"
    );
    signal(pid, libc::SIGSTOP);
    n.drain(Duration::from_millis(300));
    let frozen = n.count("WATCHDOG=1", WINDOW);
    signal(pid, libc::SIGCONT);
    assert_eq!(frozen, 0, "no pings from a stopped process");
    assert!(
        n.wait_for("WATCHDOG=1", WINDOW).is_some(),
        "pings resume after SIGCONT"
    );
    let pings = n.count("WATCHDOG=1", WINDOW);
    assert!(
        pings >= 3,
        "pings go on after SIGCONT: {pings} in {WINDOW:?}"
    );
}

#[test]
fn scheduler_is_ready_pings_from_its_loop_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = bind_path(dir.path());
    let n = Notifications::listen(socket);
    let mut scheduler = start_scheduler(
        dir.path(),
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", WATCHDOG_USEC)],
    );
    let pid = scheduler.id() as u64;
    let ready = n
        .wait_for("READY=1", Duration::from_secs(10))
        .expect("READY=1 from the scheduler");
    assert!(
        dir.path().join("scheduler.json").exists(),
        "READY=1 comes after the scheduler file is written"
    );
    assert!(ready.contains("STATUS=listening on 127.0.0.1:"), "{ready}");
    pings_follow_the_loop(&n, pid);
    // Still serving after all that.
    let out = Command::new(RUSK)
        .args(["status", "--json", "--scheduler-file"])
        .arg(dir.path().join("scheduler.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    signal(pid, libc::SIGTERM);
    assert!(
        n.wait_for("STOPPING=1", Duration::from_secs(5)).is_some(),
        "STOPPING=1 on SIGTERM"
    );
    let status = wait_exit(&mut scheduler, Duration::from_secs(10));
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "it still ends as SIGTERM ends it: {status:?}"
    );
}

/// The exit status of `child`, which must end within `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watchdog_pid_of_another_process_means_no_pings() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = bind_path(dir.path());
    let n = Notifications::listen(socket);
    let mut scheduler = start_scheduler(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
            ("WATCHDOG_PID", "1"),
        ],
    );
    assert!(n.wait_for("READY=1", Duration::from_secs(10)).is_some());
    assert_eq!(n.count("WATCHDOG=1", WINDOW), 0, "pings are for pid 1");
    let _ = scheduler.kill();
    let _ = scheduler.wait();
}

#[test]
fn a_bad_notify_socket_is_one_warning_and_the_scheduler_serves() {
    for (case, socket) in [
        ("nobody listens", "/nonexistent/notify.sock"),
        ("not a socket name", "relative/notify.sock"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut scheduler = start_scheduler(
            dir.path(),
            // Pings every 50 ms, all failing.
            &[("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", "100000")],
        );
        let file = dir.path().join("scheduler.json");
        wait_until(Duration::from_secs(10), || file.exists(), "scheduler file");
        std::thread::sleep(Duration::from_secs(1));
        let out = Command::new(RUSK)
            .args(["status", "--json", "--scheduler-file"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            scheduler.try_wait().unwrap().is_none(),
            "{case}: still running"
        );
        let _ = scheduler.kill();
        let _ = scheduler.wait();
        let log = std::fs::read_to_string(dir.path().join("scheduler.log")).unwrap();
        let warnings = log
            .lines()
            .filter(|l| l.contains("NOTIFY_SOCKET") && l.contains("WARN"))
            .count();
        assert_eq!(warnings, 1, "{case}: one warning:\n{log}");
    }
}

#[test]
fn nanny_is_ready_with_its_slots_pings_from_its_loop_and_says_stopping() {
    // An abstract socket name this time (`@...`).
    use std::os::linux::net::SocketAddrExt;
    let name = format!("rusk-e2e-sdnotify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let n = Notifications::listen(UnixDatagram::bind_addr(&addr).unwrap());
    let notify_socket = format!("@{name}");
    let mut c = NannyCluster::start(
        1,
        &[],
        &[],
        &[
            ("NOTIFY_SOCKET", &notify_socket),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
    );
    assert!(
        n.wait_for("READY=1", Duration::from_secs(10)).is_some(),
        "READY=1 from the nanny"
    );
    let nanny = c.nannies[0].id() as u64;
    // The nanny speaks to systemd; its workers are not handed the socket.
    let worker = c.worker_of_slot(0).expect("slot 0 has a worker")["pid"]
        .as_u64()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    for var in ["NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="] {
        assert!(
            !environ
                .split(|&b| b == 0)
                .any(|kv| kv.starts_with(var.as_bytes())),
            "the worker's environment has no {var}"
        );
    }
    pings_follow_the_loop(&n, nanny);
    // The nanny was frozen 3 s (past the 2 s watchdog), yet that was its own lag: the worker
    // was not restarted for it.
    let w = c.worker_of_slot(0).expect("slot 0 has a worker");
    assert_eq!(w["pid"].as_u64(), Some(worker), "{w}");

    signal(nanny, libc::SIGTERM);
    assert!(
        n.wait_for("STOPPING=1", Duration::from_secs(5)).is_some(),
        "STOPPING=1 on SIGTERM"
    );
    let status = wait_exit(&mut c.nannies[0], Duration::from_secs(10));
    assert!(
        status.success(),
        "the nanny stops its workers and exits: {status:?}"
    );
    wait_until(
        Duration::from_secs(10),
        || !pid_alive(worker),
        "the worker stopped with its nanny",
    );
}
