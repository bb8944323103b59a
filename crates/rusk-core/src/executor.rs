//! The executor pool's hang policy, pure: tell a stuck Python executor from a busy one.
//!
//! An executor pings every 100 ms from a thread that needs the GIL, so a silent executor is
//! running a C call that holds the GIL. That call may be stuck (a sleep, a lock, I/O: no CPU
//! used) or busy (a long computation: CPU used). The shell samples the executor's CPU time
//! while it is silent and asks [`judge`] at every check:
//!
//! - silent for less than the hang timeout: healthy;
//! - silent for the hang timeout and the last window (a hang timeout long) used less than
//!   [`BUSY_CPU_FRACTION`] of a core: stuck, killed ([`Verdict::Hung`]);
//! - otherwise busy: it is left alone, with a warning once ([`Verdict::Busy`]), until it has
//!   been silent for the busy timeout (`--executor-busy-timeout`, 5 minutes by default), then
//!   it is killed ([`Verdict::BusyTooLong`]). A busy executor that stops using CPU is judged
//!   stuck at the end of its current window.
use std::time::Duration;

/// A silent executor using at least this fraction of one core is busy, not stuck. A stuck one
/// (sleep, lock, I/O wait) uses practically none; a computing one on a host overloaded many
/// times over still gets more than this.
pub const BUSY_CPU_FRACTION: f64 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    Healthy,
    /// Silent but computing: leave it, warn once.
    Busy,
    /// Silent and not computing for the hang timeout: kill it.
    Hung,
    /// Silent (computing) for the busy timeout: kill it.
    BusyTooLong,
}

/// What the shell observed of one silent executor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Silence {
    /// Since the executor's last ping.
    pub silent_for: Duration,
    /// Length of the current CPU window, and the CPU time the executor used in it.
    pub window: Duration,
    pub window_cpu: Duration,
}

pub fn judge(s: Silence, hang_timeout: Duration, busy_timeout: Duration) -> Verdict {
    if s.silent_for <= hang_timeout {
        return Verdict::Healthy;
    }
    if s.window < hang_timeout / 2 {
        // Not enough of a window to tell (it just opened): wait for it.
        return Verdict::Busy;
    }
    let fraction = s.window_cpu.as_secs_f64() / s.window.as_secs_f64().max(1e-9);
    if fraction < BUSY_CPU_FRACTION {
        Verdict::Hung
    } else if s.silent_for > busy_timeout.max(hang_timeout) {
        Verdict::BusyTooLong
    } else {
        Verdict::Busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANG: Duration = Duration::from_secs(6);
    const BUSY: Duration = Duration::from_secs(300);

    fn s(silent: u64, window: u64, cpu: f64) -> Silence {
        Silence {
            silent_for: Duration::from_secs(silent),
            window: Duration::from_secs(window),
            window_cpu: Duration::from_secs_f64(cpu),
        }
    }

    #[test]
    fn stuck_is_killed_busy_is_kept_until_its_own_budget() {
        assert_eq!(judge(s(5, 5, 0.0), HANG, BUSY), Verdict::Healthy);
        assert_eq!(judge(s(7, 6, 0.1), HANG, BUSY), Verdict::Hung);
        // Computing on an overloaded host (a fifth of a core) is still busy.
        assert_eq!(judge(s(7, 6, 1.2), HANG, BUSY), Verdict::Busy);
        assert_eq!(judge(s(7, 6, 5.9), HANG, BUSY), Verdict::Busy);
        assert_eq!(judge(s(200, 6, 5.9), HANG, BUSY), Verdict::Busy);
        assert_eq!(judge(s(301, 6, 5.9), HANG, BUSY), Verdict::BusyTooLong);
        // Busy, then blocked: the next window shows it.
        assert_eq!(judge(s(60, 6, 0.05), HANG, BUSY), Verdict::Hung);
        // A window that just opened decides nothing yet.
        assert_eq!(judge(s(60, 1, 0.0), HANG, BUSY), Verdict::Busy);
    }
}
