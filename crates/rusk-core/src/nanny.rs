//! The nanny's logic: one restart state machine per worker slot, as a pure state machine.
//!
//! The nanny exists to keep every slot's worker running. The article that started rusk
//! describes Dask's nanny switching itself off when its worker asked to close; here that cannot
//! happen by construction: each slot holds a **desired** state (`Run` or `Stop`) that only an
//! operator changes (`rusk stop-nanny`, SIGTERM to the nanny), apart from the **observed**
//! state, which everything else (worker exits, pings, the scheduler, memory samples) changes.
//! While desired is `Run`, every way a worker can end leads back to a new worker, except a crash
//! loop, which parks the slot in `Failed` until an operator restarts it.
//!
//! ```text
//!            Spawned          Registered                 pings stop / memory / scheduler asks
//! Starting ─────────▶ Starting ─────────▶ Running ──────────────────────────────▶ Killing
//!  ▲  (pid known)         │ exit (crash)     │ exit (crash, code 0, SIGTERM, lost connection)   │ exit
//!  │                      ▼                  ▼                                                  ▼
//!  └──── delay over ── BackingOff ◀──────── crash #k (k ≥ 2 within the window) ◀──── restart at once
//!                         │ more than crash_restarts_max crashes in crash_window
//!                         ▼
//!                       Failed ── operator restart ──▶ Starting
//! any state ── operator stop ──▶ Stopping ── exit ──▶ Stopped
//! ```
//!
//! Safety rule: a new worker is spawned only after the previous one's exit was observed, so a
//! slot never has two live workers. Messages from any pid other than the slot's current one
//! (a ping from a worker already being killed, say) are ignored.
use rusk_proto::msg::EventCause;
use rusk_proto::Incarnation;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

mod record;
mod types;
mod watch;
pub use types::*;
use watch::{Limits, Step, Watch};
pub use watch::{
    ProcState, ProcessFacts, INSPECT_ANSWER_MAX, KERNEL_STALL_GRACE, LAG_COUNTED_MIN,
    LAG_LOGGED_MIN, STALL_RECHECK_INTERVAL, STALL_SETTLE,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Desired {
    Run,
    Stop,
}

/// A restart in progress: what caused it and when it was seen, for the recovery record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Recovery {
    cause: RestartCause,
    detected_at: Duration,
    old_incarnation: Option<Incarnation>,
    /// Had the worker being replaced registered with the scheduler?
    registered: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SlotState {
    /// Spawn requested (`pid` None) or process running but not yet registered.
    Starting {
        generation: u64,
        pid: Option<u32>,
        spawned_at: Duration,
        /// From its first ping on.
        watch: Option<Watch>,
        recovery: Option<Recovery>,
    },
    Running {
        pid: u32,
        incarnation: Incarnation,
        registered_at: Duration,
        watch: Watch,
    },
    /// Signalled; waiting for the exit. SIGKILL follows at `kill_at`.
    Killing {
        pid: u32,
        kill_at: Duration,
        killed: bool,
        recovery: Recovery,
    },
    BackingOff {
        until: Duration,
        recovery: Recovery,
    },
    Failed {
        cause: RestartCause,
    },
    /// Operator stop: signalled, waiting for the exit.
    Stopping {
        pid: u32,
        kill_at: Duration,
        killed: bool,
    },
    Stopped,
}

impl SlotState {
    fn name(&self) -> &'static str {
        match self {
            SlotState::Starting { .. } => "starting",
            SlotState::Running { .. } => "running",
            SlotState::Killing { .. } => "killing",
            SlotState::BackingOff { .. } => "backing-off",
            SlotState::Failed { .. } => "failed",
            SlotState::Stopping { .. } => "stopping",
            SlotState::Stopped => "stopped",
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            SlotState::Starting { pid, .. } => *pid,
            SlotState::Running { pid, .. }
            | SlotState::Killing { pid, .. }
            | SlotState::Stopping { pid, .. } => Some(*pid),
            SlotState::BackingOff { .. } | SlotState::Failed { .. } | SlotState::Stopped => None,
        }
    }
}

struct Slot {
    desired: Desired,
    state: SlotState,
    generation: u64,
    restarts: u32,
    /// Times of recent crash restarts, for the crash-loop limit.
    crashes: VecDeque<Duration>,
    /// Crashes since the last stable period, for the back-off.
    consecutive_crashes: u32,
    last_cause: Option<RestartCause>,
    /// The incarnation of the last registered worker (for "old incarnation" in records).
    last_incarnation: Option<Incarnation>,
}

pub struct NannyCore {
    config: NannyConfig,
    slots: Vec<Slot>,
    /// Total time the nanny's own loop was measured stalled (`Event::LoopLag`).
    lag_total: Duration,
    rng: u64,
    started: bool,
    shutting_down: bool,
    exited: bool,
    out: Vec<Command>,
}

impl NannyCore {
    pub fn new(config: NannyConfig) -> NannyCore {
        let slots = (0..config.nworkers)
            .map(|_| Slot {
                desired: Desired::Run,
                state: SlotState::Stopped,
                generation: 0,
                restarts: 0,
                crashes: VecDeque::new(),
                consecutive_crashes: 0,
                last_cause: None,
                last_incarnation: None,
            })
            .collect();
        NannyCore {
            rng: config.seed ^ 0x9E37_79B9_7F4A_7C15,
            config,
            slots,
            lag_total: Duration::ZERO,
            started: false,
            shutting_down: false,
            exited: false,
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &NannyConfig {
        &self.config
    }

    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.handle_into(now, event, &mut out);
        out
    }

    pub fn handle_into(&mut self, now: Duration, event: Event, out: &mut Vec<Command>) {
        std::mem::swap(&mut self.out, out);
        match event {
            Event::Start => {
                self.started = true;
                for slot in 0..self.slots.len() as u32 {
                    if self.slots[slot as usize].state == SlotState::Stopped {
                        self.spawn(now, slot, None);
                    }
                }
            }
            Event::Spawned {
                slot,
                generation,
                pid,
            } => self.on_spawned(now, slot, generation, pid),
            Event::SpawnFailed {
                slot,
                generation,
                error,
            } => {
                if let Some(s) = self.slot(slot) {
                    if matches!(s.state, SlotState::Starting { generation: g, pid: None, .. } if g == generation)
                    {
                        let recovery = Recovery {
                            cause: RestartCause::SpawnFailed(error),
                            detected_at: now,
                            old_incarnation: s.last_incarnation,
                            registered: false,
                        };
                        self.after_exit(now, slot, recovery);
                    }
                }
            }
            Event::Exited { slot, pid, status } => self.on_exited(now, slot, pid, status),
            Event::Ping { slot, pid } => {
                let lag = self.lag_total;
                if let Some(s) = self.slots.get_mut(slot as usize) {
                    let ended = match &mut s.state {
                        SlotState::Starting {
                            pid: Some(p),
                            watch,
                            ..
                        } if *p == pid => match watch {
                            Some(w) => w.ping(now, lag),
                            None => {
                                *watch = Some(Watch::new(now, lag));
                                None
                            }
                        },
                        SlotState::Running { pid: p, watch, .. } if *p == pid => {
                            watch.ping(now, lag)
                        }
                        _ => None,
                    };
                    if let Some(silent_for) = ended {
                        self.out.push(Command::Notice(Notice::StallOver {
                            slot,
                            pid,
                            silent_for,
                        }));
                    }
                }
            }
            Event::LoopLag { lag } => {
                if lag >= LAG_COUNTED_MIN {
                    self.lag_total += lag;
                    if lag >= LAG_LOGGED_MIN {
                        self.out.push(Command::Notice(Notice::NannyStalled { lag }));
                    }
                }
            }
            Event::Inspected { slot, pid, facts } => {
                let (lag, limits) = (self.lag_total, self.limits());
                let step = match self.slots.get_mut(slot as usize).map(|s| &mut s.state) {
                    Some(SlotState::Starting {
                        pid: Some(p),
                        watch: Some(w),
                        ..
                    })
                    | Some(SlotState::Running {
                        pid: p, watch: w, ..
                    }) if *p == pid => w.on_facts(now, lag, limits, facts),
                    _ => Step::Nothing,
                };
                self.watch_step(now, slot, pid, step);
            }
            Event::Registered {
                slot,
                pid,
                incarnation,
            } => self.on_registered(now, slot, pid, incarnation),
            Event::SchedulerRestart {
                slot,
                incarnation,
                silent_for,
            } => {
                let current = self.slot(slot).and_then(|s| match s.state {
                    SlotState::Running { incarnation: i, .. } => Some(i),
                    _ => None,
                });
                if current == Some(incarnation) {
                    self.begin_restart(
                        now,
                        slot,
                        RestartCause::SchedulerRequest { silent_for },
                        Signal::Kill,
                    );
                }
            }
            Event::OperatorRestart { slot } => self.on_operator_restart(now, slot),
            Event::Shutdown => self.on_shutdown(now),
            Event::Memory { slot, pid, rss } => {
                let Some(limit) = self.config.memory_restart_bytes else {
                    return self.finish(out);
                };
                let live = self.slot(slot).is_some_and(|s| {
                    s.state.pid() == Some(pid)
                        && matches!(
                            s.state,
                            SlotState::Starting { .. } | SlotState::Running { .. }
                        )
                });
                if live && rss > limit {
                    self.begin_restart(
                        now,
                        slot,
                        RestartCause::Memory { rss, limit },
                        Signal::Term,
                    );
                }
            }
            Event::Tick => self.on_tick(now),
        }
        self.finish(out);
    }

    fn finish(&mut self, out: &mut Vec<Command>) {
        if self.shutting_down
            && !self.exited
            && self.slots.iter().all(|s| s.state == SlotState::Stopped)
        {
            self.exited = true;
            self.out.push(Command::Exit);
        }
        std::mem::swap(&mut self.out, out);
    }

    /// When the shell must send the next `Tick`.
    pub fn next_timeout(&self) -> Option<Duration> {
        self.slots
            .iter()
            .filter_map(|s| match &s.state {
                SlotState::Starting {
                    spawned_at,
                    watch,
                    pid: Some(_),
                    ..
                } => Some(match watch {
                    Some(w) => w.deadline(self.lag_total, self.limits()),
                    None => *spawned_at + self.config.start_timeout,
                }),
                SlotState::Running { watch, .. } => {
                    Some(watch.deadline(self.lag_total, self.limits()))
                }
                SlotState::Killing {
                    kill_at,
                    killed: false,
                    ..
                }
                | SlotState::Stopping {
                    kill_at,
                    killed: false,
                    ..
                } => Some(*kill_at),
                SlotState::BackingOff { until, .. } => Some(*until),
                _ => None,
            })
            .min()
    }

    pub fn statuses(&self) -> Vec<SlotStatus> {
        (0..self.slots.len() as u32)
            .map(|i| self.status(i))
            .collect()
    }

    fn status(&self, slot: u32) -> SlotStatus {
        let s = &self.slots[slot as usize];
        SlotStatus {
            slot,
            state: s.state.name(),
            pid: s.state.pid(),
            incarnation: match s.state {
                SlotState::Running { incarnation, .. } => Some(incarnation),
                _ => None,
            },
            restarts: s.restarts,
            last_cause: s.last_cause.as_ref().map(|c| c.to_string()),
        }
    }

    fn slot(&self, slot: u32) -> Option<&Slot> {
        self.slots.get(slot as usize)
    }

    fn set_state(&mut self, slot: u32, state: SlotState) {
        let s = &mut self.slots[slot as usize];
        let changed = s.state.name() != state.name() || s.state.pid() != state.pid();
        s.state = state;
        if changed || matches!(s.state, SlotState::Running { .. }) {
            let st = self.status(slot);
            self.out.push(Command::SlotChanged(st));
        }
    }

    fn spawn(&mut self, now: Duration, slot: u32, recovery: Option<Recovery>) {
        let s = &mut self.slots[slot as usize];
        s.generation += 1;
        let generation = s.generation;
        self.set_state(
            slot,
            SlotState::Starting {
                generation,
                pid: None,
                spawned_at: now,
                watch: None,
                recovery,
            },
        );
        self.out.push(Command::Spawn { slot, generation });
    }

    fn on_spawned(&mut self, now: Duration, slot: u32, generation: u64, pid: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if let SlotState::Starting {
            generation: g,
            pid: p @ None,
            spawned_at,
            ..
        } = &mut s.state
        {
            if *g == generation {
                *p = Some(pid);
                *spawned_at = now;
                let st = self.status(slot);
                self.out.push(Command::SlotChanged(st));
                return;
            }
        }
        // A spawn we no longer want (the slot was stopped meanwhile): kill it at once.
        self.out.push(Command::Signal {
            slot,
            pid,
            signal: Signal::Kill,
        });
    }

    fn on_registered(&mut self, now: Duration, slot: u32, pid: u32, incarnation: Incarnation) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        // The running worker registered again (its scheduler connection dropped, or the
        // scheduler restarted): the same process under a new incarnation. Its old incarnation
        // is gone, so a late `RestartWorker` naming it must not kill this one.
        if let SlotState::Running {
            pid: p,
            incarnation: inc,
            ..
        } = &mut s.state
        {
            // (Not `>`: a restarted scheduler numbers its connections from 1 again.)
            if *p == pid && incarnation != *inc {
                *inc = incarnation;
                s.last_incarnation = Some(incarnation);
                let st = self.status(slot);
                self.out.push(Command::SlotChanged(st));
            }
            return;
        }
        let SlotState::Starting {
            pid: Some(p),
            recovery,
            ..
        } = &mut s.state
        else {
            return;
        };
        if *p != pid {
            return;
        }
        let recovery = recovery.take();
        s.last_incarnation = Some(incarnation);
        self.set_state(
            slot,
            SlotState::Running {
                pid,
                incarnation,
                registered_at: now,
                watch: Watch::new(now, self.lag_total),
            },
        );
        if let Some(r) = recovery {
            self.out.push(Command::Record(Record {
                slot,
                what: RecordKind::Recovered {
                    detection: r.cause.detection(),
                    recovery: now.saturating_sub(r.detected_at),
                    cause: r.cause,
                    old_incarnation: r.old_incarnation,
                    new_incarnation: incarnation,
                },
            }));
        }
    }

    /// Kill the slot's worker for `cause` (a sick worker), then start a new one.
    fn begin_restart(&mut self, now: Duration, slot: u32, cause: RestartCause, signal: Signal) {
        let s = &self.slots[slot as usize];
        if s.desired == Desired::Stop {
            return;
        }
        let (pid, incarnation) = match &s.state {
            SlotState::Starting { pid: Some(pid), .. } => (*pid, None),
            SlotState::Running {
                pid, incarnation, ..
            } => (*pid, Some(*incarnation)),
            _ => return, // nothing alive to restart
        };
        let recovery = Recovery {
            cause: cause.clone(),
            detected_at: now,
            old_incarnation: incarnation.or(s.last_incarnation),
            registered: incarnation.is_some(),
        };
        self.out.push(Command::Record(Record {
            slot,
            what: RecordKind::Detected {
                cause,
                incarnation,
                pid: Some(pid),
                action: match signal {
                    Signal::Kill => "kill (SIGKILL) and restart".into(),
                    Signal::Term => "stop (SIGTERM, then SIGKILL) and restart".into(),
                },
            },
        }));
        self.out.push(Command::Signal { slot, pid, signal });
        self.set_state(
            slot,
            SlotState::Killing {
                pid,
                kill_at: now + self.config.kill_grace,
                killed: signal == Signal::Kill,
                recovery,
            },
        );
    }

    fn on_exited(&mut self, now: Duration, slot: u32, pid: u32, status: ExitStatus) {
        let Some(s) = self.slots.get(slot as usize) else {
            return;
        };
        if s.state.pid() != Some(pid) {
            return; // not the slot's current process
        }
        let last_incarnation = s.last_incarnation;
        match s.state.clone() {
            SlotState::Stopping { .. } => self.set_state(slot, SlotState::Stopped),
            SlotState::Killing { recovery, .. } => {
                // The restart the nanny began: start the replacement at once.
                self.after_exit(now, slot, recovery);
            }
            SlotState::Starting { recovery, .. } => {
                // Crashed before registering (e.g. right after its first start).
                let cause = RestartCause::Exited(status);
                self.record_detected(slot, &cause, None, Some(pid));
                let recovery = Recovery {
                    cause,
                    detected_at: now,
                    old_incarnation: recovery
                        .and_then(|r| r.old_incarnation)
                        .or(last_incarnation),
                    registered: false,
                };
                self.after_exit(now, slot, recovery);
            }
            SlotState::Running {
                incarnation,
                registered_at,
                ..
            } => {
                if now.saturating_sub(registered_at) >= self.config.stable_period {
                    self.slots[slot as usize].consecutive_crashes = 0;
                }
                let cause = RestartCause::Exited(status);
                self.record_detected(slot, &cause, Some(incarnation), Some(pid));
                let recovery = Recovery {
                    cause,
                    detected_at: now,
                    old_incarnation: Some(incarnation),
                    registered: true,
                };
                self.after_exit(now, slot, recovery);
            }
            SlotState::BackingOff { .. } | SlotState::Failed { .. } | SlotState::Stopped => {
                unreachable!("no process in this state")
            }
        }
    }

    fn record_detected(
        &mut self,
        slot: u32,
        cause: &RestartCause,
        incarnation: Option<Incarnation>,
        pid: Option<u32>,
    ) {
        self.out.push(Command::Record(Record {
            slot,
            what: RecordKind::Detected {
                cause: cause.clone(),
                incarnation,
                pid,
                action: "restart".into(),
            },
        }));
    }

    /// The slot's process is gone (or never started). Decide: restart now, back off, or fail.
    fn after_exit(&mut self, now: Duration, slot: u32, recovery: Recovery) {
        let config = self.config.clone();
        let s = &mut self.slots[slot as usize];
        s.restarts += 1;
        s.last_cause = Some(recovery.cause.clone());
        if s.desired == Desired::Stop {
            self.set_state(slot, SlotState::Stopped);
            return;
        }
        // Crash-loop accounting: crashes, and any restart of a worker that never registered
        // (it hangs or dies during start-up). Operator restarts never count.
        let counts = recovery.cause.is_crash()
            || (!recovery.registered && recovery.cause != RestartCause::Operator);
        if counts {
            s.crashes.push_back(now);
            while s
                .crashes
                .front()
                .is_some_and(|&t| now.saturating_sub(t) > config.crash_window)
            {
                s.crashes.pop_front();
            }
            s.consecutive_crashes += 1;
            if s.crashes.len() as u32 > config.crash_restarts_max {
                let crashes = s.crashes.len() as u32;
                self.out.push(Command::Record(Record {
                    slot,
                    what: RecordKind::Failed {
                        crashes,
                        window: config.crash_window,
                        last: recovery.cause.clone(),
                    },
                }));
                self.set_state(
                    slot,
                    SlotState::Failed {
                        cause: recovery.cause,
                    },
                );
                return;
            }
        }
        let k = s.consecutive_crashes;
        if recovery.cause.is_crash() && k >= 2 {
            let base = config
                .backoff_initial
                .saturating_mul(1u32 << (k - 2).min(20))
                .min(config.backoff_max);
            // Jitter: uniformly in [base/2, base).
            let half = base / 2;
            let jitter = Duration::from_nanos(self.next_random() % (half.as_nanos() as u64).max(1));
            let delay = half + jitter;
            self.out.push(Command::Record(Record {
                slot,
                what: RecordKind::BackingOff { delay, crashes: k },
            }));
            self.set_state(
                slot,
                SlotState::BackingOff {
                    until: now + delay,
                    recovery,
                },
            );
            return;
        }
        self.spawn(now, slot, Some(recovery));
    }

    fn on_operator_restart(&mut self, now: Duration, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if s.desired == Desired::Stop {
            return;
        }
        s.crashes.clear();
        s.consecutive_crashes = 0;
        match s.state {
            SlotState::Failed { .. } | SlotState::BackingOff { .. } => {
                let recovery = Recovery {
                    cause: RestartCause::Operator,
                    detected_at: now,
                    old_incarnation: s.last_incarnation,
                    registered: false,
                };
                self.spawn(now, slot, Some(recovery));
            }
            SlotState::Starting { pid: Some(_), .. } | SlotState::Running { .. } => {
                self.begin_restart(now, slot, RestartCause::Operator, Signal::Term)
            }
            // Already on its way to a fresh worker.
            SlotState::Starting { pid: None, .. } | SlotState::Killing { .. } => {}
            SlotState::Stopping { .. } | SlotState::Stopped => {}
        }
    }

    fn on_shutdown(&mut self, now: Duration) {
        self.shutting_down = true;
        for slot in 0..self.slots.len() as u32 {
            let s = &mut self.slots[slot as usize];
            s.desired = Desired::Stop;
            match s.state.clone() {
                SlotState::Starting { pid: Some(pid), .. } | SlotState::Running { pid, .. } => {
                    self.out.push(Command::Signal {
                        slot,
                        pid,
                        signal: Signal::Term,
                    });
                    self.set_state(
                        slot,
                        SlotState::Stopping {
                            pid,
                            kill_at: now + self.config.kill_grace,
                            killed: false,
                        },
                    );
                }
                SlotState::Killing {
                    pid,
                    kill_at,
                    killed,
                    ..
                } => self.set_state(
                    slot,
                    SlotState::Stopping {
                        pid,
                        kill_at,
                        killed,
                    },
                ),
                // A spawn in flight is killed when `Spawned` arrives.
                SlotState::Starting { pid: None, .. }
                | SlotState::BackingOff { .. }
                | SlotState::Failed { .. } => self.set_state(slot, SlotState::Stopped),
                SlotState::Stopping { .. } | SlotState::Stopped => {}
            }
        }
    }

    fn on_tick(&mut self, now: Duration) {
        let (lag, limits) = (self.lag_total, self.limits());
        for slot in 0..self.slots.len() as u32 {
            let s = &mut self.slots[slot as usize];
            if let SlotState::Running { registered_at, .. } = s.state {
                if now.saturating_sub(registered_at) >= self.config.stable_period {
                    s.consecutive_crashes = 0;
                }
            }
            // The watchdog of a worker that pinged. Like every deadline here it acts at
            // `now >= next_timeout()`, or a shell whose clock wakes exactly on time would be
            // handed the same deadline forever.
            let watched = match &mut s.state {
                SlotState::Starting {
                    pid: Some(pid),
                    watch: Some(w),
                    ..
                }
                | SlotState::Running { pid, watch: w, .. } => {
                    Some((*pid, w.on_tick(now, lag, limits)))
                }
                _ => None,
            };
            if let Some((pid, step)) = watched {
                self.watch_step(now, slot, pid, step);
                continue;
            }
            match s.state.clone() {
                SlotState::Starting {
                    pid: Some(_),
                    spawned_at,
                    watch: None,
                    ..
                } if now.saturating_sub(spawned_at) >= self.config.start_timeout => {
                    self.begin_restart(now, slot, RestartCause::StartTimeout, Signal::Kill)
                }
                SlotState::Killing {
                    pid,
                    kill_at,
                    killed: false,
                    recovery,
                } if now >= kill_at => {
                    self.out.push(Command::Signal {
                        slot,
                        pid,
                        signal: Signal::Kill,
                    });
                    self.slots[slot as usize].state = SlotState::Killing {
                        pid,
                        kill_at,
                        killed: true,
                        recovery,
                    };
                }
                SlotState::Stopping {
                    pid,
                    kill_at,
                    killed: false,
                } if now >= kill_at => {
                    self.out.push(Command::Signal {
                        slot,
                        pid,
                        signal: Signal::Kill,
                    });
                    self.slots[slot as usize].state = SlotState::Stopping {
                        pid,
                        kill_at,
                        killed: true,
                    };
                }
                SlotState::BackingOff { until, recovery } if now >= until => {
                    self.spawn(now, slot, Some(recovery))
                }
                _ => {}
            }
        }
    }

    /// Carry out what the watchdog decided for the worker `pid` of `slot`.
    fn watch_step(&mut self, now: Duration, slot: u32, pid: u32, step: Step) {
        match step {
            Step::Nothing => {}
            Step::Inspect => self.out.push(Command::Inspect { slot, pid }),
            Step::GraceBegins { silent_for, state } => {
                self.out.push(Command::Notice(Notice::KernelStall {
                    slot,
                    pid,
                    silent_for,
                    state,
                    grace: self.config.kernel_stall_grace,
                }))
            }
            Step::Kill(cause) => self.begin_restart(now, slot, cause, Signal::Kill),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: self.config.watchdog_timeout,
            grace: self.config.kernel_stall_grace,
        }
    }

    /// SplitMix64: deterministic jitter from the configured seed.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Live processes per slot (for the simulator's "never two live incarnations" check the
    /// shell or simulator tracks real processes; here: the state names at most one pid).
    pub fn slot_pid(&self, slot: u32) -> Option<u32> {
        self.slots.get(slot as usize).and_then(|s| s.state.pid())
    }

    pub fn slot_state(&self, slot: u32) -> &'static str {
        self.slots[slot as usize].state.name()
    }

    /// Cross-check each slot; panics on the first violation.
    pub fn check_invariants(&self) {
        for (i, s) in self.slots.iter().enumerate() {
            if s.desired == Desired::Stop {
                assert!(
                    matches!(s.state, SlotState::Stopping { .. } | SlotState::Stopped),
                    "slot {i} stopped by the operator but in {}",
                    s.state.name()
                );
            }
            if s.desired == Desired::Run && self.started {
                assert!(
                    !matches!(s.state, SlotState::Stopped | SlotState::Stopping { .. }),
                    "slot {i} wants to run but is {}",
                    s.state.name()
                );
            }
            assert!(
                s.crashes.len() as u32 <= self.config.crash_restarts_max + 1,
                "slot {i} crash list unbounded"
            );
        }
    }
}

#[cfg(test)]
mod tests;
