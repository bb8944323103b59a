//! The nanny core's vocabulary: its configuration, the events it handles, the commands and
//! records it emits, exit statuses, restart causes and slot statuses.
use super::*;

#[derive(Clone, Debug)]
pub struct NannyConfig {
    pub nworkers: u32,
    /// A worker whose event loop has not pinged for this long is restarted (time the nanny
    /// itself was stalled not counted; see `watch`).
    pub watchdog_timeout: Duration,
    /// How much longer a silent worker whose loop is stuck in the kernel (uninterruptible
    /// sleep, faulting pages in) is kept; [`KERNEL_STALL_GRACE`].
    pub kernel_stall_grace: Duration,
    /// A worker that has not pinged at all this long after being spawned is restarted.
    pub start_timeout: Duration,
    /// Between SIGTERM and SIGKILL when the nanny stops or restarts a worker.
    pub kill_grace: Duration,
    /// Back-off before the 2nd consecutive crash restart; doubles each time up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A worker registered this long resets the back-off.
    pub stable_period: Duration,
    /// More than this many crash restarts within `crash_window` put the slot in `Failed`.
    pub crash_restarts_max: u32,
    pub crash_window: Duration,
    /// Restart a worker whose memory (RSS of it and its children) exceeds this many bytes.
    pub memory_restart_bytes: Option<u64>,
    /// Seed of the back-off jitter (randomness is an input like time).
    pub seed: u64,
}

impl Default for NannyConfig {
    fn default() -> Self {
        NannyConfig {
            nworkers: 1,
            watchdog_timeout: Duration::from_secs(2),
            kernel_stall_grace: KERNEL_STALL_GRACE,
            start_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_millis(500),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            stable_period: Duration::from_secs(10),
            crash_restarts_max: 5,
            crash_window: Duration::from_secs(60),
            memory_restart_bytes: None,
            seed: 0,
        }
    }
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Exit code with which a worker says "I lost my scheduler connection": restart me.
pub const EXIT_CONNECTION_LOST: i32 = 75;

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(EXIT_CONNECTION_LOST), _) => write!(
                f,
                "exit code {EXIT_CONNECTION_LOST} (scheduler connection lost)"
            ),
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s} ({})", signal_name(s)),
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Why a slot's worker is being restarted (what was observed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartCause {
    /// The worker exited by itself (any code, any signal not sent by the nanny).
    Exited(ExitStatus),
    /// The worker's event loop stopped pinging the nanny for `silent_for`, not counting
    /// `nanny_stalled` during which the nanny's own loop was stalled; `state` is its event-loop
    /// thread's state at the verdict, where it was seen.
    Watchdog {
        silent_for: Duration,
        nanny_stalled: Duration,
        state: Option<ProcState>,
    },
    /// The worker never pinged after being spawned.
    StartTimeout,
    /// The scheduler saw no heartbeat for `silent_for` and asked for a restart.
    SchedulerRequest { silent_for: Duration },
    /// RSS over the limit.
    Memory { rss: u64, limit: u64 },
    /// `rusk restart`.
    Operator,
    /// The worker process could not be started at all.
    SpawnFailed(String),
}

impl RestartCause {
    /// The recovery log's cause for it (metrics label, JSON).
    pub fn kind(&self) -> EventCause {
        match self {
            RestartCause::Exited(s) if s.code == Some(EXIT_CONNECTION_LOST) => {
                EventCause::Connection
            }
            RestartCause::Exited(_) => EventCause::Crash,
            RestartCause::Watchdog { .. } => EventCause::Watchdog,
            RestartCause::StartTimeout => EventCause::StartTimeout,
            RestartCause::SchedulerRequest { .. } => EventCause::Heartbeat,
            RestartCause::Memory { .. } => EventCause::Memory,
            RestartCause::Operator => EventCause::Operator,
            RestartCause::SpawnFailed(_) => EventCause::SpawnFailed,
        }
    }

    /// Did the worker end on its own (a crash, for the crash-loop accounting)?
    pub(super) fn is_crash(&self) -> bool {
        matches!(self, RestartCause::Exited(_) | RestartCause::SpawnFailed(_))
    }

    /// How long the fault existed before it was detected, where that is known.
    pub(super) fn detection(&self) -> Duration {
        match self {
            RestartCause::Watchdog {
                silent_for,
                nanny_stalled,
                ..
            } => *silent_for + *nanny_stalled,
            RestartCause::SchedulerRequest { silent_for } => *silent_for,
            _ => Duration::ZERO,
        }
    }
}

impl fmt::Display for RestartCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartCause::Exited(s) => write!(f, "worker exited: {s}"),
            RestartCause::Watchdog {
                silent_for,
                nanny_stalled,
                state,
            } => {
                write!(
                    f,
                    "watchdog: no ping from the worker's event loop for {} ms",
                    silent_for.as_millis()
                )?;
                if !nanny_stalled.is_zero() {
                    write!(
                        f,
                        " (not counting {} ms the nanny itself was stalled)",
                        nanny_stalled.as_millis()
                    )?;
                }
                match state {
                    Some(s) => write!(f, "; its event-loop thread was {s}"),
                    None => Ok(()),
                }
            }
            RestartCause::StartTimeout => write!(f, "worker never started (no ping)"),
            RestartCause::SchedulerRequest { silent_for } => {
                write!(
                    f,
                    "scheduler: no heartbeat for {} ms",
                    silent_for.as_millis()
                )
            }
            RestartCause::Memory { rss, limit } => write!(
                f,
                "memory: {} MiB over the {} MiB limit",
                rss / (1024 * 1024),
                limit / (1024 * 1024)
            ),
            RestartCause::Operator => write!(f, "operator restart"),
            RestartCause::SpawnFailed(e) => write!(f, "could not start the worker: {e}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// Inputs of the nanny.
#[derive(Clone, Debug)]
pub enum Event {
    /// The nanny process started: bring every slot up.
    Start,
    Spawned {
        slot: u32,
        generation: u64,
        pid: u32,
    },
    SpawnFailed {
        slot: u32,
        generation: u64,
        error: String,
    },
    Exited {
        slot: u32,
        pid: u32,
        status: ExitStatus,
    },
    /// The worker's event loop is alive.
    Ping {
        slot: u32,
        pid: u32,
    },
    /// The nanny's own event loop woke `lag` later than it asked to: it could read no pings
    /// meanwhile (a host-wide stall, as the nanny sees it). Not held against its workers.
    LoopLag {
        lag: Duration,
    },
    /// The answer to `Command::Inspect`.
    Inspected {
        slot: u32,
        pid: u32,
        facts: ProcessFacts,
    },
    /// The worker joined the scheduler as `incarnation`.
    Registered {
        slot: u32,
        pid: u32,
        incarnation: Incarnation,
    },
    /// The scheduler saw `incarnation` go silent. A no-op unless it is still the slot's worker.
    SchedulerRestart {
        slot: u32,
        incarnation: Incarnation,
        silent_for: Duration,
    },
    /// `rusk restart`: restart whatever runs in the slot; also revives a `Failed` slot.
    OperatorRestart {
        slot: u32,
    },
    /// `rusk stop-nanny` / SIGTERM: stop every slot for good, then exit.
    Shutdown,
    Memory {
        slot: u32,
        pid: u32,
        rss: u64,
    },
    Tick,
}

/// Outputs of the nanny.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start a worker process for the slot; answer with `Spawned` or `SpawnFailed`.
    Spawn {
        slot: u32,
        generation: u64,
    },
    Signal {
        slot: u32,
        pid: u32,
        signal: Signal,
    },
    /// Look at the worker's event-loop thread (`/proc/PID/task/PID/stat`); answer with
    /// `Inspected`.
    Inspect {
        slot: u32,
        pid: u32,
    },
    /// A recovery action, to log, count and forward to the scheduler's event log.
    Record(Record),
    /// Something worth a log line that is not a recovery (nothing was restarted).
    Notice(Notice),
    /// The slot's observable status changed.
    SlotChanged(SlotStatus),
    /// Every slot is stopped after `Shutdown`: the nanny may exit.
    Exit,
}

/// Observations the nanny logs without acting on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The nanny's own loop was stalled for `lag` (not held against its workers).
    NannyStalled { lag: Duration },
    /// A worker silent for `silent_for` is stuck in the kernel: it is kept for up to `grace`
    /// more.
    KernelStall {
        slot: u32,
        pid: u32,
        silent_for: Duration,
        state: Option<ProcState>,
        grace: Duration,
    },
    /// A worker in its kernel-stall grace pinged again after `silent_for`: kept.
    StallOver {
        slot: u32,
        pid: u32,
        silent_for: Duration,
    },
}

/// One entry of the recovery log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub slot: u32,
    pub what: RecordKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A fault was observed and the restart began.
    Detected {
        cause: RestartCause,
        incarnation: Option<Incarnation>,
        pid: Option<u32>,
        action: String,
    },
    /// A new worker registered after a restart.
    Recovered {
        cause: RestartCause,
        old_incarnation: Option<Incarnation>,
        new_incarnation: Incarnation,
        detection: Duration,
        recovery: Duration,
    },
    /// The slot gave up after a crash loop.
    Failed {
        crashes: u32,
        window: Duration,
        last: RestartCause,
    },
    /// The slot waits before the next start.
    BackingOff { delay: Duration, crashes: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: u32,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub incarnation: Option<Incarnation>,
    pub restarts: u32,
    pub last_cause: Option<String>,
}
