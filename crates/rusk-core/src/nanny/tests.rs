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
    assert!(signals(&step(&mut n, 2499 * MS, Event::Tick)).is_empty());
    let out = step(&mut n, 2600 * MS, Event::Tick);
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
                silent_for: 2100 * MS
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
        let out = step(&mut n, now, Event::Tick);
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
    assert_eq!(signals(&out), vec![(0, 100, Signal::Kill)]);
    assert_ne!(n.next_timeout(), Some(due), "the same deadline again");
    // Watchdog of a starting worker that pinged once.
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
    let due = n.next_timeout().unwrap();
    let out = step(&mut n, due, Event::Tick);
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
