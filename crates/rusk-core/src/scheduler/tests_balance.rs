//! Unit tests of load balance: task kinds, the adaptive depth, work stealing.
use super::tests::*;
use super::*;
use rusk_proto::graph::{GraphSpec, TaskSpec};

fn sched(per_thread: u32, workers: &[(&str, u32)]) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        assigned_per_thread_max: per_thread,
        ..SchedulerConfig::default()
    });
    for (i, (name, threads)) in workers.iter().enumerate() {
        s.handle(
            Duration::ZERO,
            Event::WorkerJoined {
                incarnation: Incarnation(i as u64 + 1),
                info: info(name, *threads),
            },
        );
    }
    s.handle(Duration::ZERO, Event::ClientJoined { client: C });
    s
}

fn tasks(prefix: &str, n: usize) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| spec(&format!("{prefix}-{i}"), &[]))
        .collect()
}

fn msg(s: &mut Scheduler, now: Duration, w: Incarnation, m: WorkerToScheduler) -> Vec<Command> {
    let out = s.handle(
        now,
        Event::WorkerMessage {
            incarnation: w,
            msg: m,
        },
    );
    s.check_invariants();
    out
}

/// Run `(task, attempt)` on `w` from `from` for `ms` milliseconds.
fn run(
    s: &mut Scheduler,
    w: Incarnation,
    task: TaskRef,
    attempt: u64,
    from: u64,
    ms: u64,
) -> Vec<Command> {
    let a = AttemptId(attempt);
    msg(
        s,
        MS * from as u32,
        w,
        WorkerToScheduler::TaskStarted { task, attempt: a },
    );
    msg(
        s,
        MS * (from + ms) as u32,
        w,
        WorkerToScheduler::TaskDone {
            task,
            attempt: a,
            size: 1,
        },
    )
}

fn steals(out: &[Command]) -> Vec<(Incarnation, TaskRef, u64)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Steal { task, attempt },
            } => Some((*incarnation, *task, attempt.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn task_kinds_are_read_from_keys_as_dask_does() {
    for (key, kind) in [
        ("sum-3f2a9c81", "sum"),
        ("('sum-3f2a9c81', 4)", "sum"),
        ("(\"x-17\", 0, 2)", "x"),
        ("leaf-17", "leaf"),
        ("my_task_12", "my_task"),
        ("read-parquet-a1b2c3d4e5", "read-parquet"),
        ("a", "a"),
        ("-1", "-1"),
    ] {
        assert_eq!(key_prefix(key), kind, "{key}");
    }
}

#[test]
fn the_depth_follows_measured_durations_between_the_floor_and_the_cap() {
    let mut s = sched(64, &[("w1", 1)]);
    // Never measured: 20 ms each, so 5 fit the 100 ms target.
    let first = assigned(&submit(&mut s, tasks("slow", 40), &[]));
    assert_eq!(first.len(), 5);
    // They take 100 ms each: after that the queue keeps only the floor of 2 per thread.
    let mut now = 1;
    let mut placed = first;
    let mut depth = Vec::new();
    for _ in 0..6 {
        let (task, attempt, w) = placed.remove(0);
        placed.extend(assigned(&run(&mut s, w, task, attempt, now, 100)));
        now += 101;
        depth.push(s.workers[&W1].assigned.len());
    }
    assert_eq!(depth, vec![4, 3, 2, 2, 2, 2], "{placed:?}");
    let (task, attempt, w) = placed.remove(0);
    run(&mut s, w, task, attempt, now, 100);
    // Tasks too short to measure (done within the turn that started them) fill up to the cap.
    let mut s = sched(64, &[("w1", 1)]);
    let first = assigned(&submit(&mut s, tasks("quick", 1), &[]));
    let (task, attempt, w) = first[0];
    msg(
        &mut s,
        MS,
        w,
        WorkerToScheduler::TaskDone {
            task,
            attempt: AttemptId(attempt),
            size: 1,
        },
    );
    let out = s.handle(
        2 * MS,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::Submit {
                graph: GraphSpec {
                    tasks: tasks("quick", 200),
                    outputs: vec![],
                },
                detach: false,
            },
        },
    );
    s.check_invariants();
    assert_eq!(assigned(&out).len(), 64);
}

#[test]
fn an_idle_worker_steals_the_task_that_would_run_last_and_it_runs_there_once() {
    let mut s = sched(64, &[("w1", 1)]);
    let placed = assigned(&submit(&mut s, tasks("job", 5), &[]));
    assert_eq!(placed.len(), 5);
    // The first one has started: it can never be stolen.
    msg(
        &mut s,
        MS,
        W1,
        WorkerToScheduler::TaskStarted {
            task: placed[0].0,
            attempt: AttemptId(placed[0].1),
        },
    );
    let out = s.handle(
        2 * MS,
        Event::WorkerJoined {
            incarnation: W2,
            info: info("w2", 1),
        },
    );
    s.check_invariants();
    // One idle thread on w2: one request, for the last task in w1's queue.
    assert_eq!(steals(&out), vec![(W1, t(4), 5)]);
    assert_eq!(s.stats.steals_requested, 1);
    // Nothing more is asked while that request is out.
    assert!(steals(&msg(
        &mut s,
        3 * MS,
        W1,
        WorkerToScheduler::Heartbeat(HeartbeatInfo::default())
    ))
    .is_empty());
    // w1 gives it up: it goes to w2 under a new attempt, and the old one is fenced.
    let out = msg(
        &mut s,
        4 * MS,
        W1,
        WorkerToScheduler::StealResponse {
            task: t(4),
            attempt: AttemptId(5),
            stolen: true,
        },
    );
    assert_eq!(assigned(&out), vec![(t(4), 6, W2)]);
    assert_eq!(s.stats.tasks_stolen, 1);
    let stale = s.stats.stale_reports;
    msg(
        &mut s,
        5 * MS,
        W1,
        WorkerToScheduler::TaskDone {
            task: t(4),
            attempt: AttemptId(5),
            size: 1,
        },
    );
    assert_eq!(s.stats.stale_reports, stale + 1);
    assert!(
        matches!(s.task(t(4)).unwrap().state, TaskState::Assigned { worker, .. } if worker == W2)
    );
}

#[test]
fn a_refused_steal_is_not_asked_again_and_a_late_answer_is_stale() {
    let mut s = sched(64, &[("w1", 1)]);
    assigned(&submit(&mut s, tasks("job", 5), &[]));
    let out = s.handle(
        MS,
        Event::WorkerJoined {
            incarnation: W2,
            info: info("w2", 1),
        },
    );
    assert_eq!(steals(&out), vec![(W1, t(4), 5)]);
    // Refused (w1 had handed it to an executor): the next one is asked for instead.
    let out = msg(
        &mut s,
        2 * MS,
        W1,
        WorkerToScheduler::StealResponse {
            task: t(4),
            attempt: AttemptId(5),
            stolen: false,
        },
    );
    assert_eq!(steals(&out), vec![(W1, t(3), 4)]);
    // t3 finishes on w1 before the answer: the answer is stale and moves nothing.
    let out = msg(
        &mut s,
        3 * MS,
        W1,
        WorkerToScheduler::TaskDone {
            task: t(3),
            attempt: AttemptId(4),
            size: 1,
        },
    );
    assert!(assigned(&out).iter().all(|a| a.0 != t(3)));
    let stale = s.stats.stale_reports;
    let out = msg(
        &mut s,
        4 * MS,
        W1,
        WorkerToScheduler::StealResponse {
            task: t(3),
            attempt: AttemptId(4),
            stolen: true,
        },
    );
    assert_eq!(s.stats.stale_reports, stale + 1);
    assert!(assigned(&out).is_empty(), "{out:?}");
    assert_eq!(s.stats.tasks_stolen, 0);
}

#[test]
fn no_steal_when_moving_the_inputs_costs_more_than_the_wait_or_the_thief_may_not_run_it() {
    let mut s = sched(64, &[("w1", 1)]);
    // A 1 GB input on w1: 10 s at the assumed bandwidth, against a 100 ms queue.
    let mut specs = vec![spec("big", &[])];
    specs.extend((0..5).map(|i| spec(&format!("use-{i}"), &["big"])));
    let placed = assigned(&submit(&mut s, specs, &[]));
    msg(
        &mut s,
        MS,
        W1,
        WorkerToScheduler::TaskDone {
            task: placed[0].0,
            attempt: AttemptId(placed[0].1),
            size: 1_000_000_000,
        },
    );
    // Now a plain worker joins: nothing on w1 is worth taking.
    let out = s.handle(
        3 * MS,
        Event::WorkerJoined {
            incarnation: W2,
            info: info("w2", 1),
        },
    );
    s.check_invariants();
    assert!(steals(&out).iter().all(|(v, _, _)| *v != W1), "{out:?}");
}

#[test]
fn a_restricted_task_is_only_stolen_by_a_worker_that_may_run_it() {
    let gpu = |name: &str| WorkerInfo {
        resources: [("GPU".to_string(), 1.0)].into_iter().collect(),
        ..info(name, 1)
    };
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.handle(
        Duration::ZERO,
        Event::WorkerJoined {
            incarnation: W1,
            info: gpu("w1"),
        },
    );
    s.handle(Duration::ZERO, Event::ClientJoined { client: C });
    let specs: Vec<TaskSpec> = (0..5)
        .map(|i| TaskSpec {
            resources: [("GPU".to_string(), 0.1)].into_iter().collect(),
            ..spec(&format!("gpu-{i}"), &[])
        })
        .collect();
    assert_eq!(assigned(&submit(&mut s, specs, &[])).len(), 5);
    let out = s.handle(
        MS,
        Event::WorkerJoined {
            incarnation: W2,
            info: info("w2", 1),
        },
    );
    s.check_invariants();
    assert!(steals(&out).is_empty(), "{out:?}");
    let out = s.handle(
        2 * MS,
        Event::WorkerJoined {
            incarnation: Incarnation(3),
            info: gpu("w3"),
        },
    );
    s.check_invariants();
    assert_eq!(steals(&out), vec![(W1, t(4), 5)]);
}

#[test]
fn a_seceded_task_stops_counting_against_its_workers_capacity() {
    // One thread, at most one task assigned: the second waits until the first secedes.
    let mut s = sched(1, &[("w1", 1)]);
    let out = submit(
        &mut s,
        tasks("parent", 3),
        &["parent-0", "parent-1", "parent-2"],
    );
    let assigned = |out: &[Command]| {
        out.iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::ToWorker {
                        msg: SchedulerToWorker::Assign(_),
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(assigned(&out), 1);
    msg(
        &mut s,
        MS,
        W1,
        WorkerToScheduler::TaskStarted {
            task: t(0),
            attempt: AttemptId(1),
        },
    );
    // A stale secede (another attempt) changes nothing.
    let out = msg(
        &mut s,
        MS,
        W1,
        WorkerToScheduler::TaskSeceded {
            task: t(0),
            attempt: AttemptId(9),
        },
    );
    assert_eq!(assigned(&out), 0);
    let out = msg(
        &mut s,
        MS,
        W1,
        WorkerToScheduler::TaskSeceded {
            task: t(0),
            attempt: AttemptId(1),
        },
    );
    assert_eq!(assigned(&out), 1, "the slot went to the next task: {out:?}");
    // It rejoins (`rusk.rejoin()`): it holds the slot again, so when the second task is done
    // the third still waits (a stale rejoin changes nothing).
    for attempt in [9, 1] {
        let rejoin = WorkerToScheduler::TaskRejoined {
            task: t(0),
            attempt: AttemptId(attempt),
        };
        assert_eq!(assigned(&msg(&mut s, MS, W1, rejoin)), 0);
    }
    assert_eq!(assigned(&done(&mut s, W1, t(1), 2)), 0);
    // The first finishes as usual, and the third gets the slot.
    assert_eq!(assigned(&done(&mut s, W1, t(0), 1)), 1);
    assert_eq!(s.task_counts()["memory"], 2);
}
