//! Unit tests of the worker core: exact commands for each event.
use super::*;
use rusk_proto::graph::Builtin;
use rusk_proto::msg::DepLocation;
use rusk_proto::GraphId;

fn core() -> WorkerCore {
    WorkerCore::new(WorkerConfig {
        info: WorkerInfo {
            name: "w".into(),
            host: "h".into(),
            pid: 1,
            nthreads: 1,
            data_address: "127.0.0.1:1".into(),
            nanny: None,
            slot: None,
            resources: Default::default(),
            held: Vec::new(),
            running: Vec::new(),
        },
        dispatched_per_thread_max: 1,
        heartbeat_interval: Duration::from_millis(500),
        memory: MemoryConfig::default(),
    })
}
fn tr(i: u32) -> TaskRef {
    TaskRef {
        graph: GraphId(1),
        index: i,
    }
}
fn assign(task: u32, attempt: u64, deps: Vec<(u32, Option<&str>)>) -> Event {
    Event::FromScheduler(SchedulerToWorker::Assign(Arc::new(Assignment {
        task: tr(task),
        attempt: AttemptId(attempt),
        kind: Arc::new(TaskKind::Builtin {
            op: Builtin::Noop,
            args: vec![],
        }),
        deps: deps
            .into_iter()
            .map(|(d, h)| DepLocation {
                task: tr(d),
                holder: h.map(Arc::from),
            })
            .collect(),
        timeout_ms: None,
        priority: 0,
        expected_us: 0,
    })))
}
fn execute(task: u32, attempt: u64, inputs: Vec<Bytes>) -> Command {
    Command::Execute {
        task: tr(task),
        attempt: AttemptId(attempt),
        kind: Arc::new(TaskKind::Builtin {
            op: Builtin::Noop,
            args: vec![],
        }),
        inputs: inputs.into_iter().map(Value::Memory).collect(),
    }
}

#[test]
fn long_tasks_wait_in_the_queue_and_a_seceded_one_frees_its_place() {
    let mut w = WorkerCore::new(WorkerConfig {
        dispatched_per_thread_max: 64,
        ..core().config
    });
    let now = Duration::ZERO;
    let long = |task: u32| match assign(task, 1, vec![]) {
        Event::FromScheduler(SchedulerToWorker::Assign(a)) => {
            Event::FromScheduler(SchedulerToWorker::Assign(Arc::new(Assignment {
                expected_us: 20_000,
                ..(*a).clone()
            })))
        }
        _ => unreachable!(),
    };
    let executes = |out: &[Command]| {
        out.iter()
            .filter(|c| matches!(c, Command::Execute { .. }))
            .count()
    };
    let mut n = 0;
    for i in 0..4 {
        n += executes(&w.handle(now, long(i)));
    }
    assert_eq!(
        n, LONG_TASKS_DISPATCHED_PER_THREAD as usize,
        "the rest wait"
    );
    w.handle(
        now,
        Event::Started {
            task: tr(0),
            attempt: AttemptId(1),
        },
    );
    // Task 0 waits for its children: its place goes to the next long task.
    let out = w.handle(
        now,
        Event::Seceded {
            task: tr(0),
            attempt: AttemptId(1),
        },
    );
    assert_eq!(executes(&out), 1);
    let mut flushed = Vec::new();
    w.flush(&mut flushed);
    assert!(flushed.iter().any(|c| matches!(
        c,
        Command::ToScheduler(WorkerToScheduler::TaskSeceded { .. })
    )));
    // It rejoins (`rusk.rejoin()`): it counts against the caps again, so nothing more is
    // dispatched, and the scheduler is told.
    let out = w.handle(
        now,
        Event::Rejoined {
            task: tr(0),
            attempt: AttemptId(1),
        },
    );
    assert_eq!(executes(&out), 0);
    let mut flushed = Vec::new();
    w.flush(&mut flushed);
    assert!(flushed.iter().any(|c| matches!(
        c,
        Command::ToScheduler(WorkerToScheduler::TaskRejoined { .. })
    )));
    // Seceding and rejoining within one batch tells the scheduler nothing.
    for ev in [
        Event::Seceded {
            task: tr(0),
            attempt: AttemptId(1),
        },
        Event::Rejoined {
            task: tr(0),
            attempt: AttemptId(1),
        },
    ] {
        w.handle(now, ev);
    }
    let mut flushed = Vec::new();
    w.flush(&mut flushed);
    assert!(flushed.is_empty(), "{flushed:?}");
    w.check_invariants();
    // It finishes: nothing more is dispatched for it (two long ones run, one waits).
    let out = w.handle(
        now,
        Event::Finished {
            task: tr(0),
            attempt: AttemptId(1),
            result: Ok(Bytes::new()),
        },
    );
    assert_eq!(executes(&out), 0);
    w.check_invariants();
}

#[test]
fn queued_tasks_start_highest_priority_first_then_in_arrival_order() {
    let mut w = core();
    let now = Duration::ZERO;
    let with_priority = |task: u32, attempt: u64, priority: i32| match assign(task, attempt, vec![])
    {
        Event::FromScheduler(SchedulerToWorker::Assign(a)) => {
            Event::FromScheduler(SchedulerToWorker::Assign(Arc::new(Assignment {
                priority,
                ..(*a).clone()
            })))
        }
        _ => unreachable!(),
    };
    // The first one runs at once (one thread, one dispatched); the rest queue.
    assert_eq!(
        w.handle(now, with_priority(0, 1, 0)),
        vec![execute(0, 1, vec![])]
    );
    for (task, attempt, priority) in [(1, 2, 0), (2, 3, 5), (3, 4, -1), (4, 5, 5)] {
        assert_eq!(
            w.handle(now, with_priority(task, attempt, priority)),
            vec![]
        );
    }
    w.check_invariants();
    let mut order = Vec::new();
    let (mut task, mut attempt) = (0, 1);
    for _ in 0..4 {
        let out = w.handle(
            now,
            Event::Finished {
                task: tr(task),
                attempt: AttemptId(attempt),
                result: Ok(Bytes::from_static(b"x")),
            },
        );
        w.check_invariants();
        let Some(Command::Execute {
            task: t,
            attempt: a,
            ..
        }) = out.last()
        else {
            panic!("{out:?}");
        };
        (task, attempt) = (t.index, a.0);
        order.push(task);
    }
    assert_eq!(order, vec![2, 4, 1, 3]);
}

#[test]
fn runs_one_at_a_time_and_reports_results() {
    let mut w = core();
    let now = Duration::ZERO;
    assert_eq!(
        w.handle(now, assign(0, 1, vec![])),
        vec![execute(0, 1, vec![])]
    );
    assert_eq!(w.handle(now, assign(1, 2, vec![])), vec![]);
    w.check_invariants();
    let out = w.handle(
        now,
        Event::Finished {
            task: tr(0),
            attempt: AttemptId(1),
            result: Ok(Bytes::from_static(b"x")),
        },
    );
    assert_eq!(
        out,
        vec![
            Command::ToScheduler(WorkerToScheduler::TaskDone {
                task: tr(0),
                attempt: AttemptId(1),
                size: 1
            }),
            execute(1, 2, vec![]),
        ]
    );
    w.check_invariants();
    assert_eq!(w.stored(&tr(0)).unwrap(), &Bytes::from_static(b"x"));
}

fn replicate(task: u32, attempt: u64, from: &str) -> Event {
    Event::FromScheduler(SchedulerToWorker::Replicate {
        task: tr(task),
        attempt: AttemptId(attempt),
        from: Arc::from(from),
    })
}

#[test]
fn a_copy_is_fetched_once_stored_served_and_reported() {
    let mut w = core();
    let now = Duration::ZERO;
    assert!(w.handle(now, replicate(0, 3, "p1")).is_empty());
    // A task needing the same value shares the fetch; asking twice fetches once.
    assert!(w
        .handle(now, assign(5, 1, vec![(0, Some("p1"))]))
        .is_empty());
    assert!(w.handle(now, replicate(0, 3, "p1")).is_empty());
    let mut out = Vec::new();
    w.flush(&mut out);
    let fetch = Command::Fetch {
        peer: Arc::from("p1"),
        tasks: vec![tr(0)],
    };
    assert_eq!(out, vec![fetch]);
    w.check_invariants();
    let out = w.handle(
        now,
        Event::Fetched {
            peer: Arc::from("p1"),
            items: vec![(tr(0), Some(Bytes::from_static(b"abc")))],
        },
    );
    let done = Command::ToScheduler(WorkerToScheduler::Replicated {
        task: tr(0),
        attempt: AttemptId(3),
        size: 3,
    });
    assert_eq!(
        out,
        vec![
            done.clone(),
            execute(5, 1, vec![Bytes::from_static(b"abc")])
        ]
    );
    assert_eq!(w.stored(&tr(0)).map(|b| &b[..]), Some(&b"abc"[..]));
    w.check_invariants();
    // Asked again once stored: reported again, nothing fetched.
    assert_eq!(w.handle(now, replicate(0, 3, "p1")), vec![done]);
    // A dependent the scheduler places here reads the copy locally.
    w.handle(
        now,
        Event::Finished {
            task: tr(5),
            attempt: AttemptId(1),
            result: Ok(Bytes::new()),
        },
    );
    let out = w.handle(now, assign(6, 1, vec![(0, None)]));
    assert_eq!(out, vec![execute(6, 1, vec![Bytes::from_static(b"abc")])]);
    w.check_invariants();
}

#[test]
fn a_copy_released_or_unavailable_on_the_way_is_dropped() {
    let mut w = core();
    let now = Duration::ZERO;
    w.handle(now, replicate(0, 3, "p1"));
    w.handle(
        now,
        Event::FromScheduler(SchedulerToWorker::Release { tasks: vec![tr(0)] }),
    );
    w.check_invariants();
    let out = w.handle(
        now,
        Event::Fetched {
            peer: Arc::from("p1"),
            items: vec![(tr(0), Some(Bytes::from_static(b"abc")))],
        },
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(w.stored(&tr(0)).is_none());
    w.handle(now, replicate(1, 3, "p1"));
    let out = w.handle(
        now,
        Event::FetchFailed {
            peer: Arc::from("p1"),
            tasks: vec![tr(1)],
        },
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(w.stored(&tr(1)).is_none());
    w.check_invariants();
    // A copy of a task assigned here is a stale request: ignored.
    w.flush(&mut Vec::new());
    w.handle(now, assign(7, 1, vec![]));
    assert!(w.handle(now, replicate(7, 3, "p1")).is_empty());
    let mut out = Vec::new();
    w.flush(&mut out);
    assert!(
        !out.iter().any(|c| matches!(c, Command::Fetch { .. })),
        "{out:?}"
    );
    w.check_invariants();
}

#[test]
fn fetches_are_batched_per_peer_and_shared_between_tasks() {
    let mut w = core();
    let now = Duration::ZERO;
    assert!(w
        .handle(now, assign(5, 1, vec![(0, Some("p1")), (1, Some("p1"))]))
        .is_empty());
    assert!(w
        .handle(now, assign(6, 2, vec![(0, Some("p1"))]))
        .is_empty());
    let mut out = Vec::new();
    w.flush(&mut out);
    assert_eq!(
        out,
        vec![Command::Fetch {
            peer: Arc::from("p1"),
            tasks: vec![tr(0), tr(1)]
        }]
    );
    w.check_invariants();
    let out = w.handle(
        now,
        Event::Fetched {
            peer: Arc::from("p1"),
            items: vec![
                (tr(0), Some(Bytes::from_static(b"a"))),
                (tr(1), Some(Bytes::from_static(b"b"))),
            ],
        },
    );
    // Task 6 needed only input 0, which arrived first; one thread, so 5 waits its turn.
    assert_eq!(out, vec![execute(6, 2, vec![Bytes::from_static(b"a")])]);
    w.check_invariants();
    let out = w.handle(
        now,
        Event::Finished {
            task: tr(6),
            attempt: AttemptId(2),
            result: Ok(Bytes::new()),
        },
    );
    assert_eq!(
        out[1],
        execute(
            5,
            1,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        )
    );
    w.check_invariants();
}

#[test]
fn unavailable_input_is_reported_and_stale_results_are_dropped() {
    let mut w = core();
    let now = Duration::ZERO;
    w.handle(now, assign(5, 1, vec![(0, Some("p1"))]));
    let out = w.handle(
        now,
        Event::FetchFailed {
            peer: Arc::from("p1"),
            tasks: vec![tr(0)],
        },
    );
    assert_eq!(
        out,
        vec![Command::ToScheduler(WorkerToScheduler::MissingDep {
            task: tr(5),
            attempt: AttemptId(1),
            dep: tr(0)
        })]
    );
    w.check_invariants();
    // Cancel a running attempt: its result is ignored.
    w.handle(now, assign(7, 3, vec![]));
    let out = w.handle(
        now,
        Event::FromScheduler(SchedulerToWorker::Cancel {
            task: tr(7),
            attempt: AttemptId(3),
        }),
    );
    assert_eq!(
        out,
        vec![Command::Abandon {
            task: tr(7),
            attempt: AttemptId(3)
        }]
    );
    let out = w.handle(
        now,
        Event::Finished {
            task: tr(7),
            attempt: AttemptId(3),
            result: Ok(Bytes::new()),
        },
    );
    assert!(out.is_empty());
    w.check_invariants();
}

/// A duplicated `Assign` (same attempt) must not abandon the running attempt: the killed
/// run's error would then be reported as the attempt's own failure (found by rusk-sim).
#[test]
fn duplicate_assignment_is_ignored() {
    let mut w = core();
    let now = Duration::ZERO;
    assert_eq!(
        w.handle(now, assign(0, 1, vec![])),
        vec![execute(0, 1, vec![])]
    );
    assert_eq!(w.handle(now, assign(0, 1, vec![])), vec![]);
    w.check_invariants();
    let out = w.handle(
        now,
        Event::Finished {
            task: tr(0),
            attempt: AttemptId(1),
            result: Ok(Bytes::from_static(b"x")),
        },
    );
    assert_eq!(
        out,
        vec![Command::ToScheduler(WorkerToScheduler::TaskDone {
            task: tr(0),
            attempt: AttemptId(1),
            size: 1
        })]
    );
    w.check_invariants();
}

/// A stored result the scheduler fenced (it names another holder) is released while a
/// task that needs it is queued: the task must have fetched its own copy (found by
/// rusk-sim as a panic in `dispatch`).
#[test]
fn input_from_a_fenced_stored_result_is_fetched_not_borrowed() {
    let mut w = core();
    let now = Duration::ZERO;
    w.handle(now, assign(0, 1, vec![]));
    w.handle(now, assign(1, 2, vec![]));
    let out = w.handle(
        now,
        Event::Finished {
            task: tr(0),
            attempt: AttemptId(1),
            result: Ok(Bytes::from_static(b"x")),
        },
    );
    assert_eq!(out[1], execute(1, 2, vec![]));
    // Task 0 was recomputed elsewhere meanwhile: its result is named at p1.
    assert!(w
        .handle(now, assign(2, 3, vec![(0, Some("p1"))]))
        .is_empty());
    let mut out = Vec::new();
    w.flush(&mut out);
    assert_eq!(
        out,
        vec![Command::Fetch {
            peer: Arc::from("p1"),
            tasks: vec![tr(0)]
        }]
    );
    let release = SchedulerToWorker::Release { tasks: vec![tr(0)] };
    assert!(w.handle(now, Event::FromScheduler(release)).is_empty());
    w.check_invariants();
    let out = w.handle(
        now,
        Event::Finished {
            task: tr(1),
            attempt: AttemptId(2),
            result: Ok(Bytes::new()),
        },
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let out = w.handle(
        now,
        Event::Fetched {
            peer: Arc::from("p1"),
            items: vec![(tr(0), Some(Bytes::from_static(b"x")))],
        },
    );
    assert_eq!(out, vec![execute(2, 3, vec![Bytes::from_static(b"x")])]);
    w.check_invariants();
}

/// A result stored for an attempt the scheduler fenced, then the task assigned here again
/// and lost on the way (its input vanished): the stale copy must not stay in the store
/// forever (found by rusk-sim's end-of-run leak check).
#[test]
fn reassignment_drops_a_fenced_stored_result() {
    let mut w = core();
    let now = Duration::ZERO;
    w.handle(now, assign(0, 1, vec![]));
    w.handle(
        now,
        Event::Finished {
            task: tr(0),
            attempt: AttemptId(1),
            result: Ok(Bytes::from_static(b"x")),
        },
    );
    let cancel = SchedulerToWorker::Cancel {
        task: tr(0),
        attempt: AttemptId(1),
    };
    assert!(w.handle(now, Event::FromScheduler(cancel)).is_empty());
    assert!(w
        .handle(now, assign(0, 2, vec![(5, Some("p1"))]))
        .is_empty());
    assert_eq!(w.stored(&tr(0)), None);
    let out = w.handle(
        now,
        Event::FetchFailed {
            peer: Arc::from("p1"),
            tasks: vec![tr(5)],
        },
    );
    assert_eq!(
        out,
        vec![Command::ToScheduler(WorkerToScheduler::MissingDep {
            task: tr(0),
            attempt: AttemptId(2),
            dep: tr(5)
        })]
    );
    assert_eq!(w.heartbeat_info().stored_results, 0);
    w.check_invariants();
}
