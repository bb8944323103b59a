//! The Python executor pool's policy, pure: which executor runs which task, and when an
//! executor is stuck, lost or replaced.
//!
//! - [`PoolCore`] (in `pool`): the pool as a state machine (`handle(now, event) -> commands`):
//!   spawning and replacing executors, pipelining, work stealing with cancels, start failures,
//!   abandoned attempts and the settling of dead executors. The shell (`python_exec` in the
//!   `rusk` binary) spawns processes, moves frames and samples `/proc`; the simulator drives the
//!   same core with virtual executors that crash, hang and compute silently.
//! - [`judge`] (here): tell a stuck executor from a busy one.
//!
//! An executor pings every 100 ms from a thread that needs the GIL, so a silent executor is
//! running a C call that holds the GIL. That call may be stuck (a sleep, a lock, I/O: no CPU
//! used) or busy (a long computation: CPU used). The shell samples the executor's CPU time
//! while it is silent ([`samples_cpu`]) and the core asks [`judge`] at every check:
//!
//! - silent for less than the hang timeout: healthy;
//! - silent for the hang timeout and the last window (a hang timeout long) used less than
//!   [`BUSY_CPU_FRACTION`] of a core: stuck, killed ([`Verdict::Hung`]);
//! - otherwise busy: it is left alone, with a warning once ([`Verdict::Busy`]), until it has
//!   been silent for the busy timeout (`--executor-busy-timeout`, 5 minutes by default), then
//!   it is killed ([`Verdict::BusyTooLong`]). A busy executor that stops using CPU is judged
//!   stuck at the end of its current window.
//!
//! The pool judges on what it knew at its previous check (the silence up to then, the CPU
//! window up to then): what an executor wrote since may still be unread in its pipe (the
//! pool's loop was held up, or its readers have not run yet), and an executor that answered
//! and then died meanwhile is neither silent nor stuck. A CPU window never spans two silences.
use std::time::Duration;

mod pool;

pub use pool::*;

/// A silent executor using (or waiting in the run queue for) at least this fraction of one core
/// is busy, not stuck. The shell measures CPU time plus run-queue wait (`/proc/PID/schedstat`),
/// so a computing executor on a host overloaded many times over still counts its full share of
/// wanting the CPU; a stuck one (sleep, lock, I/O wait) neither runs nor waits.
pub const BUSY_CPU_FRACTION: f64 = 0.1;

/// Silence after which an executor's CPU time is sampled (and judged): shorter silences are
/// the gaps between pings.
pub const SILENCE_SAMPLE_AFTER: Duration = Duration::from_millis(500);

/// Must the shell read this executor's CPU time for the next `Tick`? Only while it has been
/// silent long enough for [`judge`] to look at it (reading `/proc` for every executor at every
/// check would be wasted work).
pub fn samples_cpu(silent: Duration, hang_timeout: Duration) -> bool {
    silent >= SILENCE_SAMPLE_AFTER && silent > hang_timeout / 4
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    Healthy,
    /// Silent for the hang timeout, but its CPU window just opened: too soon to tell.
    Undecided,
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
        return Verdict::Undecided;
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
        assert_eq!(judge(s(60, 1, 0.0), HANG, BUSY), Verdict::Undecided);
    }
}
