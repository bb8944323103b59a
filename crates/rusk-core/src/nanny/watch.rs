//! The watchdog's view of one worker: when its event loop last pinged, and the verdict on a
//! worker that went silent.
//!
//! Silence alone does not prove a wedged loop. Two things look the same from the nanny's seat
//! and must not be punished (false positives are failures too):
//!
//! - **The nanny itself stalled.** While its own loop does not run (the host is frozen or
//!   starved, its pages are being read back after reclaim, a write to its log blocks) it reads
//!   no pings, and when it thaws the unread pings wait in its sockets behind the overdue
//!   watchdog deadline. The shell measures how late its loop wakes (`Event::LoopLag`); the
//!   watchdog does not count that time: a worker's *silence* is the time since its last ping
//!   minus the nanny's own lag since then.
//! - **The worker is stuck in the kernel.** Under heavy I/O and memory pressure a healthy loop
//!   can sit for seconds in uninterruptible sleep (`D`: a page fault reading its code back from
//!   a saturated disk, a write to its log file waiting for the journal, reclaim). When the
//!   silence reaches the watchdog timeout the nanny first looks at the loop thread
//!   (`Command::Inspect`, answered with `Event::Inspected`): in `D`, or still faulting pages in,
//!   it gets a bounded grace (`NannyConfig::kernel_stall_grace`, [`KERNEL_STALL_GRACE`]) and is
//!   looked at again every [`STALL_RECHECK_INTERVAL`].
//!
//! Everything else is killed exactly as fast as before: a stopped process (`T`, SIGSTOP), or a
//! loop that is sleeping or running (`S`/`R`: a deadlock, a blocked or spinning loop) is killed
//! on the first look, in the same turn the timeout is reached. A worker that was in the kernel
//! and came out of it (`R`/`S`, no new page faults) but still does not ping within
//! [`STALL_SETTLE`] is killed too, and so is one still in the kernel when the grace is over.
use super::RestartCause;
use std::fmt;
use std::time::Duration;

/// The longest a silent worker whose event loop is stuck in the kernel (uninterruptible sleep,
/// or faulting pages in) is kept beyond the watchdog timeout: two more watchdog timeouts at the
/// default. A loop stuck longer is killed as hung (SIGKILL takes effect when the kernel lets go).
pub const KERNEL_STALL_GRACE: Duration = Duration::from_secs(4);
/// How often a worker in its kernel-stall grace is looked at again (one ping interval).
pub const STALL_RECHECK_INTERVAL: Duration = Duration::from_millis(200);
/// A worker that came out of the kernel during its grace must ping within this long (two ping
/// intervals), or it is killed as hung.
pub const STALL_SETTLE: Duration = Duration::from_millis(400);
/// Lateness of the nanny's own loop below this is timer jitter and not discounted.
pub const LAG_COUNTED_MIN: Duration = Duration::from_millis(10);
/// A stall of the nanny's own loop at least this long is logged.
pub const LAG_LOGGED_MIN: Duration = Duration::from_millis(250);
/// If the shell does not answer an `Inspect` within this long, the verdict is made without it.
pub const INSPECT_ANSWER_MAX: Duration = Duration::from_millis(500);

/// The scheduling state of a process's thread, as `/proc/PID/task/TID/stat` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// `R`: running or runnable.
    Running,
    /// `S` (or `I`): sleeping, interruptibly: waiting for an event, a lock, a timer.
    Sleeping,
    /// `D`: uninterruptible sleep in the kernel: disk I/O, a page fault, reclaim, a blocked
    /// write to a file. Signals (SIGKILL too) wait until it returns.
    DiskSleep,
    /// `T` or `t`: stopped (SIGSTOP) or stopped by a tracer.
    Stopped,
    /// `Z` or `X`: exited, not yet reaped.
    Dead,
    /// Any other letter.
    Other(char),
}

impl ProcState {
    pub fn from_letter(c: char) -> ProcState {
        match c {
            'R' => ProcState::Running,
            'S' | 'I' => ProcState::Sleeping,
            'D' => ProcState::DiskSleep,
            'T' | 't' => ProcState::Stopped,
            'Z' | 'X' | 'x' => ProcState::Dead,
            other => ProcState::Other(other),
        }
    }
}

impl fmt::Display for ProcState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcState::Running => write!(f, "running (R)"),
            ProcState::Sleeping => write!(f, "sleeping (S)"),
            ProcState::DiskSleep => write!(f, "in uninterruptible sleep (D)"),
            ProcState::Stopped => write!(f, "stopped (T)"),
            ProcState::Dead => write!(f, "exited (Z)"),
            ProcState::Other(c) => write!(f, "in state {c}"),
        }
    }
}

/// What the shell saw of a worker's event-loop thread when the watchdog asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessFacts {
    /// `None`: `/proc` could not be read (the process is gone).
    pub state: Option<ProcState>,
    /// Major page faults of the thread so far: each one a wait for the disk.
    pub major_faults: u64,
}

impl ProcessFacts {
    /// The process could not be looked at.
    pub const UNKNOWN: ProcessFacts = ProcessFacts {
        state: None,
        major_faults: 0,
    };

    /// Parse the text of `/proc/PID/stat` or `/proc/PID/task/TID/stat`: `pid (comm) state ppid
    /// ...`, with `majflt` the 12th field. `comm` may hold spaces and parentheses, so fields
    /// are counted after the last `)`.
    pub fn from_stat(text: &str) -> Option<ProcessFacts> {
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = ProcState::from_letter(fields.next()?.chars().next()?);
        // After the state: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt.
        let major_faults = fields.nth(8)?.parse().ok()?;
        Some(ProcessFacts {
            state: Some(state),
            major_faults,
        })
    }
}

/// What the watchdog wants done for one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Nothing,
    /// Look at the worker's process (`Command::Inspect`).
    Inspect,
    /// The worker is stuck in the kernel: its grace begins (to log).
    GraceBegins {
        silent_for: Duration,
        state: Option<ProcState>,
    },
    /// Hung: kill it.
    Kill(RestartCause),
}

/// The limits a watch is judged by (from `NannyConfig`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub timeout: Duration,
    pub grace: Duration,
}

/// A silent worker under examination.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Suspect {
    /// An `Inspect` is out; its answer is due by `next`.
    asked: bool,
    /// When to look again (or stop waiting for the answer).
    next: Duration,
    /// It was seen stuck in the kernel: its grace runs.
    grace: bool,
    /// During the grace: since when it has been seen out of the kernel without pinging.
    out_since: Option<Duration>,
    /// Its major faults at the last look.
    faults: Option<u64>,
}

/// The watchdog's state for one worker process that has pinged at least once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Watch {
    last_ping: Duration,
    /// The nanny's total measured lag when that ping was read.
    lag_at_ping: Duration,
    suspect: Option<Suspect>,
}

impl Watch {
    pub fn new(now: Duration, lag_total: Duration) -> Watch {
        Watch {
            last_ping: now,
            lag_at_ping: lag_total,
            suspect: None,
        }
    }

    /// A ping: the loop is alive. Returns its silence if it ends a kernel-stall grace.
    pub fn ping(&mut self, now: Duration, lag_total: Duration) -> Option<Duration> {
        let ended = self
            .suspect
            .as_ref()
            .filter(|s| s.grace)
            .map(|_| self.silence(now, lag_total));
        *self = Watch::new(now, lag_total);
        ended
    }

    /// How long the nanny itself was stalled since the last ping.
    fn nanny_stalled(&self, lag_total: Duration) -> Duration {
        lag_total.saturating_sub(self.lag_at_ping)
    }

    /// Time since the last ping, not counting the nanny's own stalls.
    pub fn silence(&self, now: Duration, lag_total: Duration) -> Duration {
        now.saturating_sub(self.last_ping)
            .saturating_sub(self.nanny_stalled(lag_total))
    }

    /// When the watchdog must act next.
    pub fn deadline(&self, lag_total: Duration, limits: Limits) -> Duration {
        match &self.suspect {
            None => self.last_ping + self.nanny_stalled(lag_total) + limits.timeout,
            Some(s) => s.next,
        }
    }

    fn kill(&self, now: Duration, lag_total: Duration, state: Option<ProcState>) -> Step {
        Step::Kill(RestartCause::Watchdog {
            silent_for: self.silence(now, lag_total),
            nanny_stalled: self.nanny_stalled(lag_total),
            state,
        })
    }

    /// Time passed: ask for a look at a worker silent for the timeout, look again at one in its
    /// grace, or give up waiting for an answer.
    pub fn on_tick(&mut self, now: Duration, lag_total: Duration, limits: Limits) -> Step {
        let silence = self.silence(now, lag_total);
        match &mut self.suspect {
            None if silence >= limits.timeout => {
                self.suspect = Some(Suspect {
                    asked: true,
                    next: now + INSPECT_ANSWER_MAX,
                    grace: false,
                    out_since: None,
                    faults: None,
                });
                Step::Inspect
            }
            None => Step::Nothing,
            Some(s) if now < s.next => Step::Nothing,
            Some(s) if s.asked => self.kill(now, lag_total, None), // no answer: decide without
            Some(s) => {
                s.asked = true;
                s.next = now + INSPECT_ANSWER_MAX;
                Step::Inspect
            }
        }
    }

    /// The answer to `Inspect`: kill, grant or extend the kernel-stall grace, or wait.
    pub fn on_facts(
        &mut self,
        now: Duration,
        lag_total: Duration,
        limits: Limits,
        facts: ProcessFacts,
    ) -> Step {
        let silence = self.silence(now, lag_total);
        let Some(s) = self.suspect.as_mut().filter(|s| s.asked) else {
            return Step::Nothing; // not asked (a late or repeated answer)
        };
        s.asked = false;
        if silence < limits.timeout {
            // The nanny's own stall, measured meanwhile, accounts for the silence.
            self.suspect = None;
            return Step::Nothing;
        }
        let over = silence >= limits.timeout + limits.grace;
        let faulted = s.faults.is_some_and(|f| facts.major_faults > f);
        s.faults = Some(facts.major_faults);
        let in_kernel = facts.state == Some(ProcState::DiskSleep) || faulted;
        match facts.state {
            Some(ProcState::Stopped | ProcState::Dead) | None => {
                self.kill(now, lag_total, facts.state)
            }
            _ if in_kernel && !over => {
                s.out_since = None;
                s.next = now + STALL_RECHECK_INTERVAL.min(limits.timeout + limits.grace - silence);
                if s.grace {
                    Step::Nothing
                } else {
                    s.grace = true;
                    Step::GraceBegins {
                        silent_for: silence,
                        state: facts.state,
                    }
                }
            }
            _ if s.grace && !over => {
                let since = *s.out_since.get_or_insert(now);
                if now.saturating_sub(since) >= STALL_SETTLE {
                    self.kill(now, lag_total, facts.state)
                } else {
                    s.next = now + STALL_RECHECK_INTERVAL;
                    Step::Nothing
                }
            }
            _ => self.kill(now, lag_total, facts.state),
        }
    }
}
