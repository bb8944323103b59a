//! A worker's health measurements (`Vitals`), sent to the scheduler with every heartbeat.
//!
//! A sampler task on the worker's event loop wakes every 100 ms and measures how late it woke
//! (the loop's lag); every 500 ms it reads `/proc` (CPU time and RSS of the worker and its
//! children, open file descriptors) and the free space of the work directory, off the loop
//! (a hung file system stalls the sampler, not the loop), and hands the result to the loop.
//!
//! A worker is *unhealthy*, and gets no new tasks until it is healthy again, while the free
//! space in its work directory is under `--min-free-disk` (or, with fault injection, while the
//! file named by `--fault-unhealthy-file` exists).
//!
//! Counters other parts of the worker update: [`add_bytes_fetched`] (peer fetches),
//! [`set_executors_alive`] and [`executor_replaced`] (the Python executors).
use crate::config::parse_bytes;
use rusk_proto::msg::Vitals;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tracing::{info, warn};

/// How often the lag probe wakes.
const LAG_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Vitals are sampled every this many probe ticks (500 ms).
const SAMPLE_EVERY_TICKS: u32 = 5;
/// Descendant processes followed when summing CPU and RSS.
const DESCENDANTS_MAX: usize = 1024;
/// Default of `--min-free-disk`.
pub const DEFAULT_MIN_FREE_DISK: &str = "512MiB";

static BYTES_FETCHED: AtomicU64 = AtomicU64::new(0);
static EXECUTORS_ALIVE: AtomicU32 = AtomicU32::new(0);
static EXECUTORS_REPLACED: AtomicU64 = AtomicU64::new(0);

/// Bytes of results received from a peer's data server.
pub fn add_bytes_fetched(n: u64) {
    BYTES_FETCHED.fetch_add(n, Ordering::Relaxed);
}

/// Task executor processes (Python executors) alive now.
#[allow(dead_code)] // for the Python executors
pub fn set_executors_alive(n: u32) {
    EXECUTORS_ALIVE.store(n, Ordering::Relaxed);
}

/// A task executor process was killed and replaced (hang or crash).
#[allow(dead_code)] // for the Python executors
pub fn executor_replaced() {
    EXECUTORS_REPLACED.fetch_add(1, Ordering::Relaxed);
}

/// Health settings of a worker (`rusk worker` and `rusk nanny`, which passes them on).
#[derive(clap::Args, Clone, Debug)]
pub struct HealthArgs {
    /// A worker with less free space than this in its work directory reports itself
    /// unhealthy: it keeps its results but gets no new tasks until there is room again
    /// (0 turns the check off).
    #[arg(long, env = "RUSK_MIN_FREE_DISK", default_value = DEFAULT_MIN_FREE_DISK, value_parser = parse_size_or_zero)]
    pub min_free_disk: u64,
    /// Fault injection (needs --enable-fault-injection): while this file exists the worker
    /// reports itself unhealthy.
    #[arg(long, env = "RUSK_FAULT_UNHEALTHY_FILE", hide = true)]
    pub fault_unhealthy_file: Option<PathBuf>,
}

impl HealthArgs {
    /// The same settings as worker flags (for a nanny's workers).
    pub fn worker_args(&self) -> Vec<String> {
        let mut args = vec![
            "--min-free-disk".to_string(),
            self.min_free_disk.to_string(),
        ];
        if let Some(f) = &self.fault_unhealthy_file {
            args.push("--fault-unhealthy-file".into());
            args.push(f.display().to_string());
        }
        args
    }

    pub fn options(&self, fault_injection: bool) -> HealthOptions {
        HealthOptions {
            min_free_disk: self.min_free_disk,
            unhealthy_file: self
                .fault_unhealthy_file
                .clone()
                .filter(|_| fault_injection),
        }
    }
}

fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        Ok(0)
    } else {
        parse_bytes(s)
    }
}

#[derive(Clone, Debug, Default)]
pub struct HealthOptions {
    pub min_free_disk: u64,
    pub unhealthy_file: Option<PathBuf>,
}

/// Start sampling; `deliver` hands each new `Vitals` to the worker's loop.
pub fn spawn(work_dir: PathBuf, opts: HealthOptions, deliver: impl Fn(Vitals) + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LAG_PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut worst_lag = Duration::ZERO;
        let mut ticks = SAMPLE_EVERY_TICKS - 1; // the first sample right away
        let mut was_unhealthy: Option<String> = None;
        let mut sampler = Sampler::new();
        loop {
            let due = tick.tick().await;
            worst_lag = worst_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
            ticks += 1;
            if ticks < SAMPLE_EVERY_TICKS {
                continue;
            }
            ticks = 0;
            let (dir, o) = (work_dir.clone(), opts.clone());
            let Ok((s, mut v)) = tokio::task::spawn_blocking(move || {
                let v = sampler.sample(&dir, &o);
                (sampler, v)
            })
            .await
            else {
                return; // the runtime is shutting down
            };
            sampler = s;
            v.loop_lag_ms = worst_lag.as_millis().min(u32::MAX as u128) as u32;
            worst_lag = Duration::ZERO;
            if v.unhealthy != was_unhealthy {
                match &v.unhealthy {
                    Some(why) => {
                        warn!(reason = %why, "worker unhealthy: it gets no new tasks until this clears")
                    }
                    None => info!("worker healthy again"),
                }
                was_unhealthy = v.unhealthy.clone();
            }
            deliver(v);
        }
    });
}

struct Sampler {
    ticks_per_second: f64,
    page_size: u64,
}

impl Sampler {
    fn new() -> Sampler {
        // SAFETY: sysconf only reads system constants.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Sampler {
            ticks_per_second: if tck > 0 { tck as f64 } else { 100.0 },
            page_size: if page > 0 { page as u64 } else { 4096 },
        }
    }

    fn sample(&mut self, work_dir: &Path, opts: &HealthOptions) -> Vitals {
        let pid = std::process::id();
        let mut cpu_ticks = 0u64;
        let mut rss_pages = 0u64;
        if let Some(s) = read_stat(pid) {
            // Our own time plus that of children we already waited for.
            cpu_ticks += s.utime + s.stime + s.cutime + s.cstime;
            rss_pages += s.rss_pages;
        }
        for child in descendants(pid) {
            if let Some(s) = read_stat(child) {
                cpu_ticks += s.utime + s.stime + s.cutime + s.cstime;
                rss_pages += s.rss_pages;
            }
        }
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count().saturating_sub(1) as u32) // minus the directory's own fd
            .unwrap_or(0);
        let disk_free_bytes = free_space(work_dir);
        let unhealthy = unhealthy_reason(work_dir, disk_free_bytes, opts);
        Vitals {
            loop_lag_ms: 0,
            cpu_seconds: cpu_ticks as f64 / self.ticks_per_second,
            rss_bytes: rss_pages * self.page_size,
            open_fds,
            disk_free_bytes,
            bytes_fetched: BYTES_FETCHED.load(Ordering::Relaxed),
            executors_alive: EXECUTORS_ALIVE.load(Ordering::Relaxed),
            executors_replaced: EXECUTORS_REPLACED.load(Ordering::Relaxed),
            reuse_pool_bytes: rusk_net::segment::pooled().0,
            unhealthy,
        }
    }
}

fn unhealthy_reason(work_dir: &Path, free: Option<u64>, opts: &HealthOptions) -> Option<String> {
    if let Some(f) = &opts.unhealthy_file {
        if f.exists() {
            return Some(format!("fault injection: {} exists", f.display()));
        }
    }
    match free {
        Some(free) if opts.min_free_disk > 0 && free < opts.min_free_disk => Some(format!(
            "free disk in {} is {} MiB, under the minimum of {} MiB (--min-free-disk)",
            work_dir.display(),
            free >> 20,
            opts.min_free_disk >> 20
        )),
        _ => None,
    }
}

/// CPU time one process's main thread has used, or waited for in the run queue, so far, in
/// seconds (`/proc/PID/schedstat`; CPU time from `stat` where schedstat is missing). Counting
/// the wait makes a computing thread on a host overloaded many times over look as busy as it
/// is: it wants the CPU; a thread blocked in a sleep, a lock or I/O neither runs nor waits.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/schedstat")) {
        let f: Vec<u64> = text
            .split_whitespace()
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        match f[..] {
            [run_ns, wait_ns] if run_ns + wait_ns > 0 => {
                return Some((run_ns + wait_ns) as f64 / 1e9)
            }
            _ => {} // no scheduler statistics here: fall back to CPU time
        }
    }
    let s = read_stat(pid)?;
    // SAFETY: sysconf only reads a system constant.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((s.utime + s.stime) as f64 / if tck > 0 { tck as f64 } else { 100.0 })
}

struct Stat {
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    rss_pages: u64,
}

/// Fields of `/proc/PID/stat` (see proc(5)); the command name may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<i64>().ok());
    Some(Stat {
        utime: num(14)?.max(0) as u64,
        stime: num(15)?.max(0) as u64,
        cutime: num(16)?.max(0) as u64,
        cstime: num(17)?.max(0) as u64,
        rss_pages: num(24)?.max(0) as u64,
    })
}

/// Live descendants of `pid` (children, their children, ...), from
/// `/proc/PID/task/TID/children`; empty where the kernel does not offer it.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for c in text
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if out.len() >= DESCENDANTS_MAX {
                    return out;
                }
                out.push(c);
                queue.push(c);
            }
        }
    }
    out
}

/// Free space for unprivileged users in the file system holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 1 0 12345 1000000 321 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (250, 50, 7, 3));
        assert_eq!(s.rss_pages, 321);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn cpu_demand_grows_while_computing() {
        // A computing process, and one blocked in a sleep.
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let mut idle = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let (b, i) = (busy.id(), idle.id());
        std::thread::sleep(Duration::from_millis(50));
        let (b0, i0) = (
            process_cpu_seconds(b).unwrap(),
            process_cpu_seconds(i).unwrap(),
        );
        std::thread::sleep(Duration::from_millis(500));
        let (b1, i1) = (
            process_cpu_seconds(b).unwrap(),
            process_cpu_seconds(i).unwrap(),
        );
        let _ = (busy.kill(), idle.kill(), busy.wait(), idle.wait());
        // Running or waiting for a core, the busy one accrues about the wall time.
        assert!(b1 - b0 >= 0.3, "busy: {b0} -> {b1}");
        assert!(i1 - i0 < 0.05, "blocked: {i0} -> {i1}");
    }

    #[test]
    fn own_process_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sampler::new();
        let v = s.sample(dir.path(), &HealthOptions::default());
        assert!(v.rss_bytes > 1 << 20, "rss {}", v.rss_bytes);
        assert!(v.open_fds > 2, "fds {}", v.open_fds);
        assert!(v.disk_free_bytes.is_some());
        assert!(v.unhealthy.is_none());
    }

    #[test]
    fn low_disk_and_the_fault_file_make_a_worker_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sampler::new();
        let v = s.sample(
            dir.path(),
            &HealthOptions {
                min_free_disk: u64::MAX,
                unhealthy_file: None,
            },
        );
        assert!(v.unhealthy.unwrap().contains("free disk"));
        let flag = dir.path().join("sick");
        let opts = HealthOptions {
            min_free_disk: 0,
            unhealthy_file: Some(flag.clone()),
        };
        assert!(s.sample(dir.path(), &opts).unhealthy.is_none());
        std::fs::write(&flag, "").unwrap();
        assert!(s
            .sample(dir.path(), &opts)
            .unhealthy
            .unwrap()
            .contains("fault injection"));
    }

    #[test]
    fn sizes_parse_and_zero_turns_the_check_off() {
        assert_eq!(parse_size_or_zero("0").unwrap(), 0);
        assert_eq!(parse_size_or_zero("512MiB").unwrap(), 512 << 20);
        assert!(parse_size_or_zero("lots").is_err());
    }
}
