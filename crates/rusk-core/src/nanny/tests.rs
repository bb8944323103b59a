//! Unit tests of the nanny's slot state machine: exact commands for each step.
use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn nanny(n: u32) -> NannyCore {
    NannyCore::new(NannyConfig {
        nworkers: n,
        memory_restart_bytes: Some(1000),
        ..NannyConfig::default()
    })
}

fn step(n: &mut NannyCore, now: Duration, ev: Event) -> Vec<Command> {
    let out = n.handle(now, ev);
    n.check_invariants();
    out
}

fn spawns(out: &[Command]) -> Vec<(u32, u64)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Spawn { slot, generation } => Some((*slot, *generation)),
            _ => None,
        })
        .collect()
}

fn signals(out: &[Command]) -> Vec<(u32, u32, Signal)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Signal { slot, pid, signal } => Some((*slot, *pid, *signal)),
            _ => None,
        })
        .collect()
}

fn records(out: &[Command]) -> Vec<RecordKind> {
    out.iter()
        .filter_map(|c| match c {
            Command::Record(r) => Some(r.what.clone()),
            _ => None,
        })
        .collect()
}

/// Start slot 0 and bring it to Running as (pid, incarnation).
fn running(n: &mut NannyCore, now: Duration, generation: u64, pid: u32, inc: u64) {
    step(
        n,
        now,
        Event::Spawned {
            slot: 0,
            generation,
            pid,
        },
    );
    step(
        n,
        now,
        Event::Registered {
            slot: 0,
            pid,
            incarnation: Incarnation(inc),
        },
    );
    assert_eq!(n.slot_state(0), "running");
}

/// The `Inspect` requests among `out`.
fn inspects(out: &[Command]) -> Vec<(u32, u32)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Inspect { slot, pid } => Some((*slot, *pid)),
            _ => None,
        })
        .collect()
}

fn notices(out: &[Command]) -> Vec<Notice> {
    out.iter()
        .filter_map(|c| match c {
            Command::Notice(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn facts(state: ProcState, major_faults: u64) -> ProcessFacts {
    ProcessFacts {
        state: Some(state),
        major_faults,
    }
}

/// Step `ev`, then answer every `Inspect` it asks for at the same instant as the shell does,
/// with `seen`; all the commands together.
fn step_seeing(n: &mut NannyCore, now: Duration, ev: Event, seen: ProcessFacts) -> Vec<Command> {
    let mut out = step(n, now, ev);
    let mut asked = inspects(&out);
    while let Some((slot, pid)) = asked.pop() {
        let more = step(
            n,
            now,
            Event::Inspected {
                slot,
                pid,
                facts: seen,
            },
        );
        asked.extend(inspects(&more));
        out.extend(more);
    }
    out
}

/// A wedged loop, as `/proc` shows it: sleeping (a deadlock, a blocked loop).
const WEDGED: ProcessFacts = ProcessFacts {
    state: Some(ProcState::Sleeping),
    major_faults: 0,
};

const CRASH: ExitStatus = ExitStatus {
    code: None,
    signal: Some(9),
};

#[test]
fn start_spawns_every_slot_and_a_crash_restarts_at_once() {
    let mut n = nanny(2);
    let out = step(&mut n, Duration::ZERO, Event::Start);
    assert_eq!(spawns(&out), vec![(0, 1), (1, 1)]);
    running(&mut n, MS, 1, 100, 7);
    let out = step(
        &mut n,
        20 * S,
        Event::Exited {
            slot: 0,
            pid: 100,
            status: CRASH,
        },
    );
    assert_eq!(spawns(&out), vec![(0, 2)], "restart at once: {out:?}");
    assert!(matches!(
        &records(&out)[0],
        RecordKind::Detected {
            cause: RestartCause::Exited(CRASH),
            incarnation: Some(Incarnation(7)),
            ..
        }
    ));
    // The new worker registers: a Recovered record with the old and new incarnation.
    step(
        &mut n,
        20 * S + 5 * MS,
        Event::Spawned {
            slot: 0,
            generation: 2,
            pid: 101,
        },
    );
    let out = step(
        &mut n,
        20 * S + 80 * MS,
        Event::Registered {
            slot: 0,
            pid: 101,
            incarnation: Incarnation(9),
        },
    );
    assert_eq!(
        records(&out),
        vec![RecordKind::Recovered {
            cause: RestartCause::Exited(CRASH),
            old_incarnation: Some(Incarnation(7)),
            new_incarnation: Incarnation(9),
            detection: Duration::ZERO,
            recovery: 80 * MS,
        }]
    );
}

#[test]
fn clean_exit_sigterm_from_outside_and_lost_connection_all_restart() {
    for status in [
        ExitStatus {
            code: Some(0),
            signal: None,
        },
        ExitStatus {
            code: None,
            signal: Some(15),
        },
        ExitStatus {
            code: Some(EXIT_CONNECTION_LOST),
            signal: None,
        },
    ] {
        let mut n = nanny(1);
        step(&mut n, Duration::ZERO, Event::Start);
        running(&mut n, MS, 1, 100, 1);
        let out = step(
            &mut n,
            30 * S,
            Event::Exited {
                slot: 0,
                pid: 100,
                status,
            },
        );
        assert_eq!(spawns(&out), vec![(0, 2)], "{status}");
    }
}

#[test]
fn crash_loop_backs_off_exponentially_then_fails_until_operator_restart() {
    let mut n = nanny(1);
    let mut now = Duration::ZERO;
    step(&mut n, now, Event::Start);
    let mut generation = 1;
    let mut delays = vec![];
    loop {
        let pid = 100 + generation as u32;
        step(
            &mut n,
            now,
            Event::Spawned {
                slot: 0,
                generation,
                pid,
            },
        );
        now += 10 * MS;
        let out = step(
            &mut n,
            now,
            Event::Exited {
                slot: 0,
                pid,
                status: CRASH,
            },
        );
        if n.slot_state(0) == "failed" {
            assert!(
                matches!(
                    records(&out).last(),
                    Some(RecordKind::Failed { crashes: 6, .. })
                ),
                "{out:?}"
            );
            break;
        }
        if let Some((_, g)) = spawns(&out).first() {
            generation = *g;
            continue;
        }
        let RecordKind::BackingOff { delay, .. } = records(&out).last().cloned().unwrap() else {
            panic!("{out:?}")
        };
        delays.push(delay);
        assert!(
            step(&mut n, now + delay - MS, Event::Tick).is_empty(),
            "no restart before the delay"
        );
        now += delay;
        let out = step(&mut n, now, Event::Tick);
        generation = spawns(&out)[0].1;
    }
    // 1st crash restarts at once; then 250ms, 500ms, 1s, 2s (each jittered to [d/2, d)).
    assert_eq!(delays.len(), 4, "{delays:?}");
    for (i, d) in delays.iter().enumerate() {
        let base = 250 * MS * (1 << i);
        assert!(*d >= base / 2 && *d < base, "delay {i}: {d:?}");
    }
    // Failed: no restart, whatever the time.
    assert!(step(&mut n, now + 600 * S, Event::Tick).is_empty());
    assert_eq!(n.next_timeout(), None);
    // The operator revives it.
    let out = step(&mut n, now + 601 * S, Event::OperatorRestart { slot: 0 });
    assert_eq!(spawns(&out).len(), 1);
}

#[test]
fn watchdog_kills_a_silent_worker_and_records_detection_and_recovery() {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    step(&mut n, 500 * MS, Event::Ping { slot: 0, pid: 100 });
    assert_eq!(n.next_timeout(), Some(2500 * MS));
    assert!(step(&mut n, 2499 * MS, Event::Tick).is_empty());
    // At the timeout the nanny looks at the process first, and kills it in the same turn
    // when its loop is sleeping (a deadlock, a blocked loop): no slower than before.
    let out = step(&mut n, 2600 * MS, Event::Tick);
    assert_eq!(out, vec![Command::Inspect { slot: 0, pid: 100 }]);
    let out = step(
        &mut n,
        2600 * MS,
        Event::Inspected {
            slot: 0,
            pid: 100,
            facts: WEDGED,
        },
    );
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    assert_eq!(n.slot_state(0), "killing");
    // A ping from the dying process changes nothing; its exit starts the replacement.
    assert!(step(&mut n, 2650 * MS, Event::Ping { slot: 0, pid: 100 }).is_empty());
    let out = step(
        &mut n,
        2700 * MS,
        Event::Exited {
            slot: 0,
            pid: 100,
            status: CRASH,
        },
    );
    assert_eq!(spawns(&out), vec![(0, 2)]);
    step(
        &mut n,
        2710 * MS,
        Event::Spawned {
            slot: 0,
            generation: 2,
            pid: 200,
        },
    );
    let out = step(
        &mut n,
        2900 * MS,
        Event::Registered {
            slot: 0,
            pid: 200,
            incarnation: Incarnation(6),
        },
    );
    assert_eq!(
        records(&out),
        vec![RecordKind::Recovered {
            cause: RestartCause::Watchdog {
                silent_for: 2100 * MS,
                nanny_stalled: Duration::ZERO,
                state: Some(ProcState::Sleeping),
            },
            old_incarnation: Some(Incarnation(5)),
            new_incarnation: Incarnation(6),
            detection: 2100 * MS,
            recovery: 300 * MS,
        }]
    );
}

#[test]
fn scheduler_restart_request_for_a_stale_incarnation_is_a_no_op() {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    let stale = Event::SchedulerRestart {
        slot: 0,
        incarnation: Incarnation(4),
        silent_for: 3 * S,
    };
    assert!(step(&mut n, S, stale).is_empty());
    let current = Event::SchedulerRestart {
        slot: 0,
        incarnation: Incarnation(5),
        silent_for: 3 * S,
    };
    let out = step(&mut n, S, current.clone());
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    // Duplicated request: nothing more.
    assert!(signals(&step(&mut n, S, current)).is_empty());
}

/// A running worker that registers again (its scheduler connection dropped, or the scheduler
/// restarted) is the same process under a new incarnation: a late restart request for the old
/// one must not kill it, and one for the new one does.
#[test]
fn a_worker_that_registers_again_is_known_by_its_new_incarnation() {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    let again = Event::Registered {
        slot: 0,
        pid: 100,
        incarnation: Incarnation(2),
    };
    let out = step(&mut n, S, again);
    assert!(
        out.iter().any(|c| matches!(c, Command::SlotChanged(_))),
        "the scheduler hears of it"
    );
    assert_eq!(n.slot_state(0), "running");
    let old = Event::SchedulerRestart {
        slot: 0,
        incarnation: Incarnation(5),
        silent_for: 3 * S,
    };
    assert!(signals(&step(&mut n, S, old)).is_empty());
    let new = Event::SchedulerRestart {
        slot: 0,
        incarnation: Incarnation(2),
        silent_for: 3 * S,
    };
    assert_eq!(signals(&step(&mut n, S, new)), vec![(0, 100, Signal::Kill)]);
}

#[test]
fn memory_over_the_limit_restarts_with_term_then_kill() {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    assert!(step(
        &mut n,
        S,
        Event::Memory {
            slot: 0,
            pid: 100,
            rss: 999
        }
    )
    .is_empty());
    let out = step(
        &mut n,
        S,
        Event::Memory {
            slot: 0,
            pid: 100,
            rss: 5000,
        },
    );
    assert_eq!(signals(&out), vec![(0, 100, Signal::Term)]);
    let out = step(&mut n, S + 500 * MS, Event::Tick);
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    let out = step(
        &mut n,
        S + 600 * MS,
        Event::Exited {
            slot: 0,
            pid: 100,
            status: CRASH,
        },
    );
    assert_eq!(
        spawns(&out),
        vec![(0, 2)],
        "memory restarts are immediate, not backed off"
    );
}

#[test]
fn shutdown_stops_every_slot_for_good_then_exits() {
    let mut n = nanny(2);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    // Slot 1's spawn is still in flight.
    let out = step(&mut n, S, Event::Shutdown);
    assert_eq!(signals(&out), vec![(0, 100, Signal::Term)]);
    // The in-flight spawn completes: killed at once, no restart.
    let out = step(
        &mut n,
        S,
        Event::Spawned {
            slot: 1,
            generation: 1,
            pid: 300,
        },
    );
    assert_eq!(signals(&out), vec![(1, 300, Signal::Kill)]);
    let out = step(&mut n, S + 500 * MS, Event::Tick);
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    let out = step(
        &mut n,
        S + 600 * MS,
        Event::Exited {
            slot: 0,
            pid: 100,
            status: CRASH,
        },
    );
    assert!(spawns(&out).is_empty());
    assert!(out.contains(&Command::Exit), "{out:?}");
}

#[test]
fn crash_right_after_first_start_is_handled_like_any_other() {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    step(
        &mut n,
        MS,
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 100,
        },
    );
    let out = step(
        &mut n,
        2 * MS,
        Event::Exited {
            slot: 0,
            pid: 100,
            status: CRASH,
        },
    );
    assert_eq!(spawns(&out), vec![(0, 2)]);
    running(&mut n, 3 * MS, 2, 101, 1);
}

#[test]
fn hung_worker_restarted_ten_times_in_a_row_never_gives_up() {
    let mut n = nanny(1);
    let mut now = Duration::ZERO;
    step(&mut n, now, Event::Start);
    for i in 0..10u64 {
        running(&mut n, now, i + 1, 100 + i as u32, i + 1);
        now += 2100 * MS;
        let out = step_seeing(&mut n, now, Event::Tick, WEDGED);
        assert_eq!(signals(&out).len(), 1, "hang {i} detected");
        now += 10 * MS;
        let out = step(
            &mut n,
            now,
            Event::Exited {
                slot: 0,
                pid: 100 + i as u32,
                status: CRASH,
            },
        );
        assert_eq!(spawns(&out).len(), 1, "hang {i} restarted at once");
    }
}

/// A Tick delivered exactly at `next_timeout()` must act: with the watchdog and the start
/// timeout checked with `>`, a shell whose clock wakes exactly on time was handed the same
/// deadline again and spun forever (found by rusk-sim, whose clock is exact).
#[test]
fn a_tick_exactly_at_the_deadline_acts() {
    // Watchdog of a running worker.
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    let due = n.next_timeout().unwrap();
    assert_eq!(due, MS + 2 * S);
    let out = step(&mut n, due, Event::Tick);
    assert_eq!(inspects(&out), vec![(0, 100)]);
    assert_ne!(n.next_timeout(), Some(due), "the same deadline again");
    let out = step_seeing(&mut n, due, Event::Tick, WEDGED);
    assert!(out.is_empty(), "an answer is awaited: {out:?}");
    // Watchdog of a starting worker that pinged once.
    let mut n = starting_and_pinged();
    let due = n.next_timeout().unwrap();
    let out = step_seeing(&mut n, due, Event::Tick, WEDGED);
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    // Start timeout of a worker that never pinged.
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    step(
        &mut n,
        MS,
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 100,
        },
    );
    let due = n.next_timeout().unwrap();
    assert_eq!(due, MS + 30 * S);
    let out = step(&mut n, due, Event::Tick);
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    assert!(matches!(
        records(&out)[..],
        [RecordKind::Detected {
            cause: RestartCause::StartTimeout,
            ..
        }]
    ));
}

/// One slot whose worker (pid 100, incarnation 5) registered at 1 ms and last pinged at 0.5 s.
fn pinged_at_half_a_second() -> NannyCore {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    step(&mut n, 500 * MS, Event::Ping { slot: 0, pid: 100 });
    n
}

/// One slot whose worker (pid 100) was spawned at 1 ms and pinged at 2 ms, not registered.
fn starting_and_pinged() -> NannyCore {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    step(
        &mut n,
        MS,
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 100,
        },
    );
    step(&mut n, 2 * MS, Event::Ping { slot: 0, pid: 100 });
    n
}

/// One slot whose worker (pid 100) registered at 1 ms, never pinged, and is being looked at
/// (`Inspect` out) at the timeout, 2.001 s.
fn looked_at_after_two_seconds() -> NannyCore {
    let mut n = nanny(1);
    step(&mut n, Duration::ZERO, Event::Start);
    running(&mut n, MS, 1, 100, 5);
    assert_eq!(
        inspects(&step(&mut n, 2001 * MS, Event::Tick)),
        vec![(0, 100)]
    );
    n
}

/// Tick at every deadline the core asks for up to `until`, answering each look with `seen`
/// (a function of the time); the commands of all of it.
fn run_until(
    n: &mut NannyCore,
    until: Duration,
    mut seen: impl FnMut(Duration) -> ProcessFacts,
) -> Vec<(Duration, Command)> {
    let mut all = Vec::new();
    while let Some(due) = n.next_timeout().filter(|&d| d <= until) {
        let out = step_seeing(n, due, Event::Tick, seen(due));
        all.extend(out.into_iter().map(|c| (due, c)));
        if n.slot_state(0) != "running" {
            break;
        }
    }
    all
}

/// The nanny froze for 2.9 s (SIGSTOP, a host-wide stall): when it thaws, the Tick for the
/// overdue deadline comes before the pings its workers sent meanwhile. The measured lag is
/// not held against them; a worker that really hung meanwhile is still caught, once its
/// silence outside the nanny's stall reaches the timeout.
#[test]
fn the_nannys_own_stall_is_not_held_against_its_workers() {
    let mut n = pinged_at_half_a_second();
    // Frozen from 0.6 s to 3.5 s: the loop woke 2.9 s after it asked to.
    let out = step(&mut n, 3500 * MS, Event::LoopLag { lag: 2900 * MS });
    assert_eq!(notices(&out), vec![Notice::NannyStalled { lag: 2900 * MS }]);
    assert!(
        step(&mut n, 3500 * MS, Event::Tick).is_empty(),
        "no look, no kill"
    );
    assert_eq!(n.next_timeout(), Some(500 * MS + 2900 * MS + 2 * S));
    // The queued pings arrive: all is well.
    step(&mut n, 3501 * MS, Event::Ping { slot: 0, pid: 100 });
    assert_eq!(n.next_timeout(), Some(3501 * MS + 2 * S));
    // Jitter below LAG_COUNTED_MIN is not discounted; a later real hang is caught at 2 s.
    step(&mut n, 3600 * MS, Event::LoopLag { lag: 9 * MS });
    assert_eq!(n.next_timeout(), Some(5501 * MS));
    let out = step_seeing(&mut n, 5501 * MS, Event::Tick, WEDGED);
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
}

/// A worker that hangs while its nanny is stalled is killed after 2 s of silence the nanny
/// could see; the record tells both figures, and the detection time is the whole silence.
#[test]
fn a_hang_during_a_nanny_stall_is_caught_and_the_record_tells_the_stall() {
    let mut n = pinged_at_half_a_second();
    step(&mut n, 3500 * MS, Event::LoopLag { lag: 2900 * MS });
    assert!(step(&mut n, 3500 * MS, Event::Tick).is_empty());
    let due = n.next_timeout().unwrap();
    assert_eq!(due, 5400 * MS);
    let out = step_seeing(&mut n, due, Event::Tick, WEDGED);
    let cause = RestartCause::Watchdog {
        silent_for: 2 * S,
        nanny_stalled: 2900 * MS,
        state: Some(ProcState::Sleeping),
    };
    assert!(
        matches!(&records(&out)[..], [RecordKind::Detected { cause: c, .. }] if *c == cause),
        "{out:?}"
    );
    assert_eq!(cause.detection(), 4900 * MS);
    assert_eq!(
        cause.to_string(),
        "watchdog: no ping from the worker's event loop for 2000 ms (not counting 2900 ms the \
         nanny itself was stalled); its event-loop thread was sleeping (S)"
    );
}

/// The incident: a healthy worker's loop sat in uninterruptible sleep (reading its pages back
/// from a saturated disk) past the watchdog timeout. It is kept while it stays in the kernel,
/// and nothing is recorded when it pings again.
#[test]
fn a_worker_stuck_in_the_kernel_is_kept_and_pinging_again_ends_its_grace() {
    let mut n = pinged_at_half_a_second();
    let out = step_seeing(
        &mut n,
        2500 * MS,
        Event::Tick,
        facts(ProcState::DiskSleep, 40),
    );
    assert!(signals(&out).is_empty(), "{out:?}");
    assert_eq!(
        notices(&out),
        vec![Notice::KernelStall {
            slot: 0,
            pid: 100,
            silent_for: 2 * S,
            state: Some(ProcState::DiskSleep),
            grace: KERNEL_STALL_GRACE,
        }]
    );
    assert_eq!(n.next_timeout(), Some(2500 * MS + STALL_RECHECK_INTERVAL));
    // Looked at again every 200 ms: in D, or faulting pages in between (R, more faults).
    let mut faults = 40;
    let out = run_until(&mut n, 3300 * MS, |t| {
        faults += 7;
        if t.as_millis() % 400 == 100 {
            facts(ProcState::Running, faults)
        } else {
            facts(ProcState::DiskSleep, faults)
        }
    });
    assert!(
        out.iter()
            .all(|(_, c)| matches!(c, Command::Inspect { .. })),
        "only looks: {out:?}"
    );
    assert_eq!(out.len(), 4, "at 2.7, 2.9, 3.1, 3.3 s: {out:?}");
    let out = step(&mut n, 3350 * MS, Event::Ping { slot: 0, pid: 100 });
    assert_eq!(
        out,
        vec![Command::Notice(Notice::StallOver {
            slot: 0,
            pid: 100,
            silent_for: 2850 * MS
        })]
    );
    assert_eq!(n.slot_state(0), "running");
    assert_eq!(n.next_timeout(), Some(5350 * MS), "watched as before");
    // The grace is per silence: the next stall gets its own.
    let out = step_seeing(
        &mut n,
        5350 * MS,
        Event::Tick,
        facts(ProcState::DiskSleep, 90),
    );
    assert_eq!(notices(&out).len(), 1);
    assert!(signals(&out).is_empty());
    // A worker that pinged but has not registered yet is judged the same way.
    let mut n = starting_and_pinged();
    let out = step_seeing(
        &mut n,
        2002 * MS,
        Event::Tick,
        facts(ProcState::DiskSleep, 1),
    );
    assert!(signals(&out).is_empty());
    assert_eq!(notices(&out).len(), 1);
    assert_eq!(n.slot_state(0), "starting");
}

/// The grace is bounded: still in the kernel when it is over, the worker is killed (its
/// SIGKILL takes effect when the kernel lets go of it).
#[test]
fn a_worker_still_in_the_kernel_when_the_grace_is_over_is_killed() {
    let mut n = pinged_at_half_a_second();
    let out = run_until(&mut n, 60 * S, |_| facts(ProcState::DiskSleep, 3));
    let (at, kill) = out
        .iter()
        .find(|(_, c)| matches!(c, Command::Signal { .. }))
        .expect("killed");
    assert_eq!(
        *kill,
        Command::Signal {
            slot: 0,
            pid: 100,
            signal: Signal::Kill
        }
    );
    assert_eq!(
        *at,
        500 * MS + 2 * S + KERNEL_STALL_GRACE,
        "exactly at the bound"
    );
    let detected = out
        .iter()
        .find_map(|(_, c)| match c {
            Command::Record(Record {
                what: RecordKind::Detected { cause, .. },
                ..
            }) => Some(cause.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        detected,
        RestartCause::Watchdog {
            silent_for: 6 * S,
            nanny_stalled: Duration::ZERO,
            state: Some(ProcState::DiskSleep),
        }
    );
    assert!(detected.to_string().contains("uninterruptible sleep (D)"));
}

/// Out of the kernel (sleeping, no new page faults) but still silent: its loop is wedged after
/// all. Killed once it has had `STALL_SETTLE` to ping; a SIGSTOP during the grace is killed at
/// the next look.
#[test]
fn out_of_the_kernel_and_still_silent_or_stopped_during_the_grace_is_killed() {
    for (later, killed_at) in [
        (WEDGED, 2500 + 200 + 400),
        (facts(ProcState::Stopped, 0), 2700),
    ] {
        let mut n = pinged_at_half_a_second();
        let out = run_until(&mut n, 60 * S, |t| {
            if t <= 2500 * MS {
                facts(ProcState::DiskSleep, 0)
            } else {
                later
            }
        });
        let at = out
            .iter()
            .find(|(_, c)| matches!(c, Command::Signal { .. }))
            .map(|(t, _)| *t);
        assert_eq!(at, Some(killed_at * MS), "{later:?}: {out:?}");
    }
}

/// A stopped process (SIGSTOP) or one /proc no longer shows is killed on the first look, like
/// a sleeping one; only `D` earns the grace.
#[test]
fn stopped_running_and_vanished_processes_are_killed_at_the_first_look() {
    for seen in [
        facts(ProcState::Stopped, 0),
        facts(ProcState::Running, 0),
        facts(ProcState::Sleeping, 5),
        ProcessFacts::UNKNOWN,
    ] {
        let mut n = nanny(1);
        step(&mut n, Duration::ZERO, Event::Start);
        running(&mut n, MS, 1, 100, 5);
        let out = step_seeing(&mut n, 2001 * MS, Event::Tick, seen);
        assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)], "{seen:?}");
    }
}

/// A shell that never answers `Inspect` still gets its hung worker killed, a bounded
/// `INSPECT_ANSWER_MAX` later; a late answer, or one for another pid, changes nothing.
#[test]
fn an_unanswered_look_ends_in_the_verdict_anyway() {
    let mut n = looked_at_after_two_seconds();
    let stray = Event::Inspected {
        slot: 0,
        pid: 99,
        facts: facts(ProcState::DiskSleep, 0),
    };
    assert!(step(&mut n, 2100 * MS, stray).is_empty());
    assert_eq!(n.next_timeout(), Some(2001 * MS + INSPECT_ANSWER_MAX));
    let out = step(&mut n, 2001 * MS + INSPECT_ANSWER_MAX, Event::Tick);
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    let late = Event::Inspected {
        slot: 0,
        pid: 100,
        facts: facts(ProcState::DiskSleep, 0),
    };
    assert!(signals(&step(&mut n, 2600 * MS, late)).is_empty());
    assert_eq!(n.slot_state(0), "killing");
}

/// A stall of the nanny measured while its look is out: the silence it leaves is under the
/// timeout, so the answer does not condemn the worker.
#[test]
fn a_nanny_stall_measured_while_a_look_is_out_acquits_the_worker() {
    let mut n = looked_at_after_two_seconds();
    step(&mut n, 2300 * MS, Event::LoopLag { lag: 1500 * MS });
    let out = step(
        &mut n,
        2300 * MS,
        Event::Inspected {
            slot: 0,
            pid: 100,
            facts: WEDGED,
        },
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(n.next_timeout(), Some(MS + 1500 * MS + 2 * S));
}

#[test]
fn proc_stat_lines_parse_even_with_odd_command_names() {
    let line = "4242 (rusk (w) 1) D 4200 4242 4200 0 -1 4194560 1200 0 37 0 15 3 0 0 20 0 3 0 \
                100 0 0 18446744073709551615";
    assert_eq!(
        ProcessFacts::from_stat(line),
        Some(facts(ProcState::DiskSleep, 37))
    );
    let stopped = "7 (sh) T 1 7 7 0 -1 0 0 0 0 0";
    assert_eq!(
        ProcessFacts::from_stat(stopped),
        Some(facts(ProcState::Stopped, 0))
    );
    assert_eq!(ProcessFacts::from_stat("7 (sh"), None);
    assert_eq!(ProcessFacts::from_stat("7 (sh) S 1"), None);
    assert_eq!(ProcState::from_letter('t'), ProcState::Stopped);
    assert_eq!(ProcState::from_letter('I'), ProcState::Sleeping);
    assert_eq!(ProcState::from_letter('W'), ProcState::Other('W'));
}
