//! Unit tests of the scheduler core: exact commands for each step.
use super::*;
use rusk_proto::graph::{Builtin, GraphSpec, TaskSpec};

pub(super) const MS: Duration = Duration::from_millis(1);

pub(super) fn spec(key: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        key: key.into(),
        builtin: Some("noop".into()),
        cmd: None,
        args: vec![],
        deps: deps.iter().map(|d| d.to_string()).collect(),
        env: Default::default(),
        cwd: None,
        retries: 0,
        timeout: None,
        put: None,
        python: None,
        ..Default::default()
    }
}

pub(super) fn info(name: &str, nthreads: u32) -> WorkerInfo {
    WorkerInfo {
        name: name.into(),
        host: "h".into(),
        pid: 1,
        nthreads,
        data_address: format!("addr-{name}"),
        nanny: None,
        slot: None,
        resources: Default::default(),
        held: Vec::new(),
        running: Vec::new(),
    }
}

fn noop() -> Arc<TaskKind> {
    Arc::new(TaskKind::Builtin {
        op: Builtin::Noop,
        args: vec![],
    })
}

pub(super) const C: ClientId = ClientId(1);
pub(super) const W1: Incarnation = Incarnation(1);
pub(super) const W2: Incarnation = Incarnation(2);
pub(super) const G: GraphId = GraphId(1);

pub(super) fn t(i: u32) -> TaskRef {
    TaskRef { graph: G, index: i }
}

fn assign(task: TaskRef, attempt: u64, deps: Vec<DepLocation>) -> SchedulerToWorker {
    SchedulerToWorker::Assign(Arc::new(Assignment {
        task,
        attempt: AttemptId(attempt),
        kind: noop(),
        deps,
        timeout_ms: None,
        priority: 0,
        expected_us: UNKNOWN_TASK_DURATION.as_micros() as u64,
    }))
}

/// `msg` (an `Assign`) with the scheduler's estimate of the task's duration.
pub(super) fn measured(msg: SchedulerToWorker, expected_us: u64) -> SchedulerToWorker {
    let SchedulerToWorker::Assign(a) = msg else {
        panic!("not an Assign: {msg:?}");
    };
    SchedulerToWorker::Assign(Arc::new(Assignment {
        expected_us,
        ..(*a).clone()
    }))
}

fn sched_with_workers(n: u64) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        assigned_per_thread_max: 4,
        ..SchedulerConfig::default()
    });
    for i in 1..=n {
        let out = s.handle(
            Duration::ZERO,
            Event::WorkerJoined {
                incarnation: Incarnation(i),
                info: info(&format!("w{i}"), 1),
            },
        );
        assert_eq!(out.len(), 1);
    }
    s.handle(Duration::ZERO, Event::ClientJoined { client: C });
    s
}

pub(super) fn submit(s: &mut Scheduler, tasks: Vec<TaskSpec>, outputs: &[&str]) -> Vec<Command> {
    let graph = GraphSpec {
        tasks,
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
    };
    let out = s.handle(
        Duration::ZERO,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::Submit {
                graph,
                detach: false,
            },
        },
    );
    s.check_invariants();
    out
}

pub(super) fn done(s: &mut Scheduler, w: Incarnation, task: TaskRef, attempt: u64) -> Vec<Command> {
    let out = s.handle(
        MS,
        Event::WorkerMessage {
            incarnation: w,
            msg: WorkerToScheduler::TaskDone {
                task,
                attempt: AttemptId(attempt),
                size: 1,
            },
        },
    );
    s.check_invariants();
    out
}

fn release(w: Incarnation, tasks: &[TaskRef]) -> Command {
    Command::ToWorker {
        incarnation: w,
        msg: SchedulerToWorker::Release {
            tasks: tasks.to_vec(),
        },
    }
}

#[test]
fn chain_runs_in_order_and_releases_intermediates() {
    let mut s = sched_with_workers(1);
    let out = submit(&mut s, vec![spec("a", &[]), spec("b", &["a"])], &["b"]);
    assert_eq!(
        out,
        vec![
            Command::ToClient {
                client: C,
                msg: SchedulerToClient::Submitted { graph: G, tasks: 2 }
            },
            Command::ToWorker {
                incarnation: W1,
                msg: assign(t(0), 1, vec![])
            },
        ]
    );
    let out = done(&mut s, W1, t(0), 1);
    assert_eq!(
        out,
        vec![Command::ToWorker {
            incarnation: W1,
            msg: assign(
                t(1),
                2,
                vec![DepLocation {
                    task: t(0),
                    holder: None
                }]
            )
        }]
    );
    let out = done(&mut s, W1, t(1), 2);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(
        out[0],
        Command::ToWorker {
            incarnation: W1,
            msg: SchedulerToWorker::Release { tasks: vec![t(0)] }
        }
    );
    assert_eq!(
        out[1],
        Command::ToClient {
            client: C,
            msg: SchedulerToClient::Progress(GraphProgress {
                graph: 1,
                total: 2,
                done: 2,
                erred: 0,
                assigned: 0
            })
        }
    );
    assert_eq!(
        out[2],
        Command::ToClient {
            client: C,
            msg: SchedulerToClient::GraphFinished {
                graph: G,
                outputs: vec![OutputState {
                    key: "b".into(),
                    result: OutputResult::Ready {
                        task: t(1),
                        holder: "addr-w1".into(),
                        size: 1
                    }
                }]
            }
        }
    );
}

#[test]
fn stale_and_duplicate_reports_are_fenced() {
    let mut s = sched_with_workers(2);
    submit(&mut s, vec![spec("a", &[])], &["a"]);
    // Wrong attempt, wrong worker: ignored. W1 is running the task, so its store entry will be
    // replaced by the current attempt; W2 stored a result nobody counts on and is told to drop it.
    assert!(done(&mut s, W1, t(0), 99).is_empty());
    assert_eq!(done(&mut s, W2, t(0), 1), vec![release(W2, &[t(0)])]);
    assert_eq!(done(&mut s, W1, t(0), 1).len(), 2);
    // A duplicate of the accepted report changes nothing.
    assert!(done(&mut s, W1, t(0), 1).is_empty());
    assert_eq!(s.stats().stale_reports, 3);
}

#[test]
fn lost_worker_tasks_are_rescheduled_and_lost_results_recomputed() {
    let mut s = sched_with_workers(2);
    // a -> c, b -> c; a lands on w1, b on w2 (chunks of one each).
    let out = submit(
        &mut s,
        vec![spec("a", &[]), spec("b", &[]), spec("c", &["a", "b"])],
        &["c"],
    );
    assert_eq!(
        out[1],
        Command::ToWorker {
            incarnation: W1,
            msg: assign(t(0), 1, vec![])
        }
    );
    assert_eq!(
        out[2],
        Command::ToWorker {
            incarnation: W2,
            msg: assign(t(1), 2, vec![])
        }
    );
    done(&mut s, W1, t(0), 1);
    let out = done(&mut s, W2, t(1), 2);
    // c goes to the holder of most input bytes (tie: lowest incarnation, w1) and fetches b from w2.
    assert_eq!(
        out,
        vec![Command::ToWorker {
            incarnation: W1,
            msg: assign(
                t(2),
                3,
                vec![
                    DepLocation {
                        task: t(0),
                        holder: None
                    },
                    DepLocation {
                        task: t(1),
                        holder: Some(Arc::from("addr-w2"))
                    }
                ]
            )
        }]
    );
    // w2 dies while c runs on w1: c is cancelled, b is recomputed on w1 (the only worker).
    let out = s.handle(
        2 * MS,
        Event::WorkerLeft {
            incarnation: W2,
            reason: "eof".into(),
        },
    );
    s.check_invariants();
    assert_eq!(
        out[0],
        Command::ToWorker {
            incarnation: W1,
            msg: SchedulerToWorker::Cancel {
                task: t(2),
                attempt: AttemptId(3)
            }
        }
    );
    assert!(
        matches!(&out[1], Command::Log(r) if r.cause == EventCause::Connection && r.worker.as_deref() == Some("w2")
            && r.action.contains("1 lost result(s) recomputing")),
        "{:?}",
        out[1]
    );
    assert!(matches!(&out[2], Command::Recovery(n) if n.results_lost == 1 && n.recomputing == 1));
    // b's kind has been measured now (its first run reported no start: under a turn).
    assert_eq!(
        out[3],
        Command::ToWorker {
            incarnation: W1,
            msg: measured(assign(t(1), 4, vec![]), 0)
        }
    );
    assert_eq!(out.len(), 4);
    // A late result from the old attempt of c is fenced, and the copy W1 stored is released.
    assert_eq!(done(&mut s, W1, t(2), 3), vec![release(W1, &[t(2)])]);
    let out = done(&mut s, W1, t(1), 4);
    assert_eq!(
        out,
        vec![Command::ToWorker {
            incarnation: W1,
            msg: assign(
                t(2),
                5,
                vec![
                    DepLocation {
                        task: t(0),
                        holder: None
                    },
                    DepLocation {
                        task: t(1),
                        holder: None
                    }
                ]
            )
        }]
    );
    let out = done(&mut s, W1, t(2), 5);
    assert!(out.iter().any(|c| matches!(
        c,
        Command::ToClient {
            msg: SchedulerToClient::GraphFinished { .. },
            ..
        }
    )));
}

#[test]
fn heartbeat_silence_drops_the_worker_after_the_ttl() {
    let mut s = sched_with_workers(1);
    submit(&mut s, vec![spec("a", &[])], &["a"]);
    let ttl = s.config().worker_ttl;
    assert!(s
        .handle(ttl, Event::Tick)
        .iter()
        .all(|c| !matches!(c, Command::DropWorker { .. })));
    let out = s.handle(ttl + MS, Event::Tick);
    s.check_invariants();
    assert!(out.contains(&Command::DropWorker {
        incarnation: W1,
        cause: LossCause::HeartbeatTimeout {
            silent_for: ttl + MS
        }
    }));
    assert_eq!(s.worker_count(), 0);
    assert_eq!(s.task_counts()["ready"], 1);
    // Its late result is fenced.
    assert!(done(&mut s, W1, t(0), 1).is_empty());
}

/// A stall of the scheduler itself (its loop ran 4 s late) is not held against a worker whose
/// heartbeats could not be read meanwhile; a real silence still is.
#[test]
fn the_schedulers_own_stall_is_not_a_silent_worker() {
    let mut s = sched_with_workers(1);
    submit(&mut s, vec![spec("a", &[])], &["a"]);
    let ttl = s.config().worker_ttl;
    let stall = ttl + Duration::from_secs(1);
    let now = MS + stall;
    let mut out = s.handle(now, Event::LoopLag(stall));
    out.extend(s.handle(now, Event::Tick));
    s.check_invariants();
    assert!(
        out.iter().all(|c| !matches!(c, Command::DropWorker { .. })),
        "{out:?}"
    );
    // Silent for a TTL after the stall: dropped.
    let out = s.handle(now + ttl + MS, Event::Tick);
    assert!(out.iter().any(|c| matches!(c, Command::DropWorker { .. })));
}

#[test]
fn own_failure_retries_then_errs_dependents_with_named_key() {
    let mut s = sched_with_workers(1);
    let mut a = spec("a", &[]);
    a.retries = 1;
    submit(&mut s, vec![a, spec("b", &["a"])], &["b"]);
    let fail = |s: &mut Scheduler, attempt| {
        let out = s.handle(
            MS,
            Event::WorkerMessage {
                incarnation: W1,
                msg: WorkerToScheduler::TaskFailed {
                    task: t(0),
                    attempt: AttemptId(attempt),
                    error: TaskError {
                        message: "boom".into(),
                        exit_code: Some(3),
                        detail: None,
                    },
                },
            },
        );
        s.check_invariants();
        out
    };
    assert_eq!(
        fail(&mut s, 1),
        vec![Command::ToWorker {
            incarnation: W1,
            msg: assign(t(0), 2, vec![])
        }]
    );
    let out = fail(&mut s, 2);
    let Some(Command::ToClient {
        msg: SchedulerToClient::GraphFinished { outputs, .. },
        ..
    }) = out.last()
    else {
        panic!("{out:?}")
    };
    let OutputResult::Failed { error, .. } = &outputs[0].result else {
        panic!()
    };
    assert!(
        error.contains("dependency \"a\" failed")
            && error.contains("exit code 3")
            && error.contains("boom"),
        "{error}"
    );
}

#[test]
fn bad_graph_is_rejected_and_nothing_runs() {
    let mut s = sched_with_workers(1);
    let out = submit(&mut s, vec![spec("a", &["a"])], &[]);
    assert_eq!(
        out,
        vec![Command::ToClient {
            client: C,
            msg: SchedulerToClient::Rejected {
                error: "dependency cycle through task \"a\"".into()
            }
        }]
    );
    assert_eq!(s.graph_count(), 0);
}

#[test]
fn client_leaving_releases_its_graph() {
    let mut s = sched_with_workers(1);
    submit(&mut s, vec![spec("a", &[]), spec("b", &[])], &[]);
    done(&mut s, W1, t(0), 1);
    let out = s.handle(MS, Event::ClientLeft { client: C });
    s.check_invariants();
    assert_eq!(
        out,
        vec![
            Command::ToWorker {
                incarnation: W1,
                msg: SchedulerToWorker::Cancel {
                    task: t(1),
                    attempt: AttemptId(2)
                }
            },
            Command::ToWorker {
                incarnation: W1,
                msg: SchedulerToWorker::Release { tasks: vec![t(0)] }
            },
        ]
    );
    assert_eq!(s.graph_count(), 0);
}

#[test]
fn capacity_bounds_assignment_and_balances_chunks() {
    let mut s = sched_with_workers(2); // 4 tasks per worker
    let tasks: Vec<TaskSpec> = (0..10).map(|i| spec(&format!("t{i}"), &[])).collect();
    let out = submit(&mut s, tasks, &[]);
    let to = |w| {
        out.iter()
            .filter(|c| matches!(c, Command::ToWorker { incarnation, .. } if *incarnation == w))
            .count()
    };
    assert_eq!((to(W1), to(W2)), (4, 4));
    assert_eq!(s.task_counts()["ready"], 2);
}

// === regressions found by rusk-sim ===

/// Losing a result whose inputs were already released recomputes the whole chain; every task
/// that leaves `Released` must leave the graph's done count too (it was left counting them).
#[test]
fn recomputing_a_released_chain_keeps_the_done_count() {
    let mut s = sched_with_workers(2);
    let out = submit(
        &mut s,
        vec![spec("a", &[]), spec("b", &["a"]), spec("c", &["b"])],
        &["c"],
    );
    assert_eq!(
        out[1],
        Command::ToWorker {
            incarnation: W1,
            msg: assign(t(0), 1, vec![])
        }
    );
    done(&mut s, W1, t(0), 1);
    let out = done(&mut s, W1, t(1), 2);
    // a is released, c runs on W1 next to b.
    assert_eq!(out[0], release(W1, &[t(0)]));
    assert_eq!(s.status(None).graphs[0].done, 2);
    s.handle(
        2 * MS,
        Event::WorkerLeft {
            incarnation: W1,
            reason: "eof".into(),
        },
    );
    s.check_invariants();
    // b and a both run again: nothing of the graph counts as done.
    assert_eq!(s.status(None).graphs[0].done, 0);
    assert_eq!(s.task_counts()["assigned"], 1);
    assert_eq!(s.task_counts()["waiting"], 2);
}

/// A `MissingDep` makes the scheduler stop counting on the holder's copy; the holder may well
/// still have it (the fetch failed on the way), so it is told to release it.
#[test]
fn missing_dep_releases_the_holders_copy() {
    let mut s = sched_with_workers(2);
    submit(
        &mut s,
        vec![spec("a", &[]), spec("b", &[]), spec("c", &["a", "b"])],
        &["c"],
    );
    done(&mut s, W1, t(0), 1);
    done(&mut s, W2, t(1), 2);
    let out = s.handle(
        2 * MS,
        Event::WorkerMessage {
            incarnation: W1,
            msg: WorkerToScheduler::MissingDep {
                task: t(2),
                attempt: AttemptId(3),
                dep: t(1),
            },
        },
    );
    s.check_invariants();
    assert_eq!(
        out[..2],
        [
            Command::ToWorker {
                incarnation: W1,
                msg: SchedulerToWorker::Cancel {
                    task: t(2),
                    attempt: AttemptId(3)
                }
            },
            release(W2, &[t(1)]),
        ]
    );
    assert!(
        matches!(&out[2], Command::ToWorker { msg: SchedulerToWorker::Assign(a), .. } if a.task == t(1)),
        "{out:?}"
    );
    assert_eq!(out.len(), 3);
}

/// A result that finished while its graph was being released crosses the `Cancel`: the
/// worker stored it, so it is told to drop it.
#[test]
fn result_crossing_a_graph_release_is_released_on_the_worker() {
    let mut s = sched_with_workers(1);
    submit(&mut s, vec![spec("a", &[])], &["a"]);
    let out = s.handle(
        MS,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::ReleaseGraph { graph: G },
        },
    );
    assert_eq!(
        out,
        vec![Command::ToWorker {
            incarnation: W1,
            msg: SchedulerToWorker::Cancel {
                task: t(0),
                attempt: AttemptId(1)
            }
        }]
    );
    assert_eq!(done(&mut s, W1, t(0), 1), vec![release(W1, &[t(0)])]);
    assert_eq!(s.stats().stale_reports, 1);
}

// === session graphs ===

fn open(s: &mut Scheduler) -> GraphId {
    let out = s.handle(
        Duration::ZERO,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::Open,
        },
    );
    let Command::ToClient {
        msg: SchedulerToClient::Submitted { graph, tasks: 0 },
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    *graph
}

fn extend(s: &mut Scheduler, g: GraphId, tasks: Vec<TaskSpec>, outputs: &[&str]) -> Vec<Command> {
    let out = s.handle(
        MS,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::Extend {
                graph: g,
                tasks,
                outputs: outputs.iter().map(|o| o.to_string()).collect(),
                resent: false,
            },
        },
    );
    s.check_invariants();
    out
}

fn outputs_ready(out: &[Command]) -> Vec<(String, bool)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToClient {
                msg: SchedulerToClient::OutputsReady { outputs, .. },
                ..
            } => Some(outputs.clone()),
            _ => None,
        })
        .flatten()
        .map(|o| (o.key, matches!(o.result, OutputResult::Ready { .. })))
        .collect()
}

#[test]
fn session_graph_reports_each_output_and_links_later_tasks_to_earlier_results() {
    let mut s = sched_with_workers(1);
    let g = open(&mut s);
    let out = extend(&mut s, g, vec![spec("a", &[])], &["a"]);
    assert!(out.iter().any(|c| matches!(
        c,
        Command::ToClient {
            msg: SchedulerToClient::Extended { tasks: 1, .. },
            ..
        }
    )));
    let a = TaskRef { graph: g, index: 0 };
    let out = done(&mut s, W1, a, 1);
    assert_eq!(outputs_ready(&out), vec![("a".to_string(), true)]);
    // A later task that depends on the finished `a` is ready at once; a duplicate key is refused.
    let out = extend(&mut s, g, vec![spec("b", &["a"])], &["b"]);
    assert!(out.iter().any(|c| matches!(c, Command::ToWorker { msg: SchedulerToWorker::Assign(x), .. } if x.task.index == 1)));
    let out = extend(&mut s, g, vec![spec("a", &[])], &[]);
    assert!(
        matches!(&out[0], Command::ToClient { msg: SchedulerToClient::Rejected { error }, .. } if error.contains("duplicate"))
    );
    let out = done(&mut s, W1, TaskRef { graph: g, index: 1 }, 2);
    assert_eq!(outputs_ready(&out), vec![("b".to_string(), true)]);
}

#[test]
fn an_extend_sent_again_after_a_reconnect_is_acknowledged_not_rejected_nor_run_twice() {
    let mut s = sched_with_workers(1);
    let g = open(&mut s);
    extend(&mut s, g, vec![spec("a", &[]), spec("b", &["a"])], &["b"]);
    let resend = |s: &mut Scheduler, tasks: Vec<TaskSpec>, outputs: &[&str]| {
        let out = s.handle(
            MS,
            Event::ClientMessage {
                client: C,
                msg: ClientToScheduler::Extend {
                    graph: g,
                    tasks,
                    outputs: outputs.iter().map(|o| o.to_string()).collect(),
                    resent: true,
                },
            },
        );
        s.check_invariants();
        out
    };
    // The journal had it: acknowledged with nothing added, and no task assigned again.
    let out = resend(&mut s, vec![spec("a", &[]), spec("b", &["a"])], &["b", "a"]);
    assert!(
        matches!(
            &out[..],
            [Command::ToClient {
                msg: SchedulerToClient::Extended { tasks: 0, .. },
                ..
            }]
        ),
        "{out:?}"
    );
    // ... and `a`, named an output by the resent message, is reported when done.
    let out = done(&mut s, W1, TaskRef { graph: g, index: 0 }, 1);
    assert_eq!(outputs_ready(&out), vec![("a".to_string(), true)]);
    // The journal did not have it: added as usual.
    let out = resend(&mut s, vec![spec("c", &["a"])], &["c"]);
    assert!(out.iter().any(|c| matches!(
        c,
        Command::ToClient {
            msg: SchedulerToClient::Extended { tasks: 1, .. },
            ..
        }
    )));
    // A genuine duplicate mixed with a new key is still refused.
    let out = resend(&mut s, vec![spec("a", &[]), spec("d", &[])], &[]);
    assert!(
        matches!(&out[0], Command::ToClient { msg: SchedulerToClient::Rejected { error }, .. } if error.contains("duplicate"))
    );
}

#[test]
fn released_keys_cancel_unneeded_work_and_a_released_input_is_recomputed_when_needed_again() {
    let mut s = sched_with_workers(1);
    let g = open(&mut s);
    extend(&mut s, g, vec![spec("a", &[])], &["a"]);
    done(&mut s, W1, TaskRef { graph: g, index: 0 }, 1);
    // Release `a`: its result is dropped on the worker.
    let out = s.handle(
        2 * MS,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::ReleaseKeys {
                graph: g,
                keys: vec!["a".into()],
            },
        },
    );
    s.check_invariants();
    assert_eq!(
        out,
        vec![Command::ToWorker {
            incarnation: W1,
            msg: SchedulerToWorker::Release {
                tasks: vec![TaskRef { graph: g, index: 0 }]
            }
        }]
    );
    // A new task needs `a` again: it is recomputed first.
    let out = extend(&mut s, g, vec![spec("b", &["a"])], &["b"]);
    assert!(out.iter().any(|c| matches!(c, Command::ToWorker { msg: SchedulerToWorker::Assign(x), .. } if x.task.index == 0)), "{out:?}");
    // Cancel `b` before it runs: the assigned `a` is cancelled too (nothing needs it).
    let out = s.handle(
        3 * MS,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::ReleaseKeys {
                graph: g,
                keys: vec!["b".into()],
            },
        },
    );
    s.check_invariants();
    assert!(out.iter().any(|c| matches!(c, Command::ToWorker { msg: SchedulerToWorker::Cancel { task, .. }, .. } if task.index == 0)), "{out:?}");
    assert_eq!(s.task_counts()["assigned"], 0);
}

#[test]
fn a_failure_detail_reaches_the_client_and_dependents() {
    let mut s = sched_with_workers(1);
    let g = open(&mut s);
    extend(
        &mut s,
        g,
        vec![spec("a", &[]), spec("b", &["a"])],
        &["a", "b"],
    );
    let detail = bytes::Bytes::from_static(b"pickled exception");
    let out = s.handle(
        MS,
        Event::WorkerMessage {
            incarnation: W1,
            msg: WorkerToScheduler::TaskFailed {
                task: TaskRef { graph: g, index: 0 },
                attempt: AttemptId(1),
                error: TaskError {
                    message: "ZeroDivisionError: boom".into(),
                    exit_code: None,
                    detail: Some(detail.clone()),
                },
            },
        },
    );
    s.check_invariants();
    let details: Vec<(String, Option<bytes::Bytes>)> = out
        .iter()
        .filter_map(|c| match c {
            Command::ToClient {
                msg: SchedulerToClient::OutputsReady { outputs, .. },
                ..
            } => Some(outputs.clone()),
            _ => None,
        })
        .flatten()
        .map(|o| match o.result {
            OutputResult::Failed { detail, .. } => (o.key, detail),
            r => panic!("{r:?}"),
        })
        .collect();
    assert_eq!(details.len(), 2);
    assert!(details.iter().all(|(_, d)| d.as_ref() == Some(&detail)));
    // A task added later on top of the failed `a` fails at once, naming `a` once.
    let out = extend(&mut s, g, vec![spec("c", &["a"])], &["c"]);
    let errors: Vec<String> = out
        .iter()
        .filter_map(|c| match c {
            Command::ToClient {
                msg: SchedulerToClient::OutputsReady { outputs, .. },
                ..
            } => Some(outputs.clone()),
            _ => None,
        })
        .flatten()
        .map(|o| match o.result {
            OutputResult::Failed { error, .. } => error,
            r => panic!("{r:?}"),
        })
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].matches("dependency \"a\" failed").count(),
        1,
        "{}",
        errors[0]
    );
}

// === poison tasks ===

/// A scheduler with `n` one-thread workers that take one task each, where a task that was
/// running on `max_deaths` workers that died is a poison task.
pub(super) fn sched_poison(n: u64, max_deaths: u32) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        assigned_per_thread_max: 1,
        task_max_worker_deaths: max_deaths,
        ..SchedulerConfig::default()
    });
    for i in 1..=n {
        s.handle(
            Duration::ZERO,
            Event::WorkerJoined {
                incarnation: Incarnation(i),
                info: info(&format!("w{i}"), 1),
            },
        );
    }
    s.handle(Duration::ZERO, Event::ClientJoined { client: C });
    s
}

/// Where each `Assign` in `out` went, as (task, attempt, worker).
pub(super) fn assigned(out: &[Command]) -> Vec<(TaskRef, u64, Incarnation)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Assign(a),
            } => Some((a.task, a.attempt.0, *incarnation)),
            _ => None,
        })
        .collect()
}

fn started(s: &mut Scheduler, w: Incarnation, task: TaskRef, attempt: u64) {
    let out = s.handle(
        MS,
        Event::WorkerMessage {
            incarnation: w,
            msg: WorkerToScheduler::TaskStarted {
                task,
                attempt: AttemptId(attempt),
            },
        },
    );
    s.check_invariants();
    assert!(out.is_empty(), "{out:?}");
}

pub(super) fn worker_left(s: &mut Scheduler, w: Incarnation) -> Vec<Command> {
    let out = s.handle(
        MS,
        Event::WorkerLeft {
            incarnation: w,
            reason: "killed".into(),
        },
    );
    s.check_invariants();
    out
}

pub(super) fn finished_outputs(out: &[Command]) -> Vec<(String, Result<Incarnation, String>)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToClient {
                msg: SchedulerToClient::GraphFinished { outputs, .. },
                ..
            } => Some(outputs.clone()),
            _ => None,
        })
        .flatten()
        .map(|o| {
            let r = match o.result {
                OutputResult::Ready { holder, .. } => Ok(Incarnation(
                    holder
                        .trim_start_matches("addr-w")
                        .parse()
                        .expect("test address"),
                )),
                OutputResult::Failed { error, .. } => Err(error),
            };
            (o.key, r)
        })
        .collect()
}

/// The worker a poison task dies on also holds the task's input and an output of the graph:
/// the task must be failed only after those results are forgotten (it used to be failed
/// first, and releasing its input, or reporting the finished graph, then looked up the worker
/// that was already gone: a panic, found by rusk-sim). The input, needed by nothing else now,
/// is not recomputed.
#[test]
fn poison_task_on_the_worker_holding_its_input() {
    let mut s = sched_poison(2, 1);
    // b(a) is the poison task; c is another output.
    let out = submit(
        &mut s,
        vec![spec("a", &[]), spec("b", &["a"]), spec("c", &[])],
        &["b", "c"],
    );
    assert_eq!(assigned(&out), vec![(t(0), 1, W1), (t(2), 2, W2)]);
    done(&mut s, W2, t(2), 2);
    let out = done(&mut s, W1, t(0), 1);
    assert_eq!(assigned(&out), vec![(t(1), 3, W1)]);
    started(&mut s, W1, t(1), 3);
    let out = worker_left(&mut s, W1);
    assert_eq!(s.stats().poison_tasks, 1);
    assert_eq!(assigned(&out), vec![], "nothing needs a any more");
    let outputs = finished_outputs(&out);
    assert_eq!(outputs.len(), 2, "{out:?}");
    assert_eq!(outputs[1], ("c".to_string(), Ok(W2)));
    let Err(error) = &outputs[0].1 else {
        panic!("{outputs:?}")
    };
    assert!(
        error.starts_with(
            "task \"b\" is a poison task: it was running on 1 workers that died \
             (limit RUSK_TASK_MAX_WORKER_DEATHS=1): w1 (i1): connection closed"
        ),
        "{error}"
    );
}

/// The worker a poison task dies on holds another output of the graph: the graph is reported
/// only once that output is computed again, never with a holder that is gone. A task merely
/// queued on a worker that dies is never charged.
#[test]
fn poison_task_on_the_worker_holding_another_output() {
    let mut s = sched_poison(2, 1);
    let out = submit(&mut s, vec![spec("a", &[]), spec("b", &[])], &["a", "b"]);
    assert_eq!(assigned(&out), vec![(t(0), 1, W1), (t(1), 2, W2)]);
    let out = done(&mut s, W1, t(0), 1);
    assert_eq!(assigned(&out), vec![]);
    // b was only queued on W2: uncharged, it moves to W1, where it starts, and W1 dies.
    let out = worker_left(&mut s, W2);
    assert_eq!(s.stats().poison_tasks, 0);
    assert_eq!(assigned(&out), vec![(t(1), 3, W1)]);
    started(&mut s, W1, t(1), 3);
    let out = worker_left(&mut s, W1);
    assert_eq!(s.stats().poison_tasks, 1);
    assert_eq!(
        finished_outputs(&out),
        vec![],
        "output a must be computed again first"
    );
    // A new worker computes a; then the graph finishes with b failed.
    let out = s.handle(
        MS,
        Event::WorkerJoined {
            incarnation: Incarnation(3),
            info: info("w3", 1),
        },
    );
    s.check_invariants();
    assert_eq!(assigned(&out), vec![(t(0), 4, Incarnation(3))]);
    let out = done(&mut s, Incarnation(3), t(0), 4);
    let outputs = finished_outputs(&out);
    assert_eq!(outputs[0], ("a".to_string(), Ok(Incarnation(3))));
    assert!(matches!(&outputs[1].1, Err(e) if e.contains("poison task")));
}

/// A released task needed again whose input has failed since it ran (the input was lost,
/// recomputed and poisoned) fails with the input's error as every dependent of the input
/// does: `dependency "<input>" failed: ...`. It used to take the input's own error, and its
/// dependents named it as the failed task (found by rusk-sim).
#[test]
fn recomputed_task_whose_input_failed_meanwhile_names_the_input() {
    let mut s = sched_poison(3, 1);
    // x; y(x) and u(x) are outputs.
    let out = submit(
        &mut s,
        vec![spec("x", &[]), spec("y", &["x"]), spec("u", &["x"])],
        &["y", "u"],
    );
    assert_eq!(assigned(&out), vec![(t(0), 1, W1)]);
    let out = done(&mut s, W1, t(0), 1);
    assert_eq!(assigned(&out), vec![(t(1), 2, W1), (t(2), 3, W2)]);
    done(&mut s, W2, t(2), 3);
    // W1 dies with x and the queued y: x is recomputed on another worker, starts, and that
    // worker dies too: x is a poison task, y fails with it.
    let out = worker_left(&mut s, W1);
    let a = assigned(&out);
    assert_eq!(a.len(), 1);
    let (task, attempt, wx) = a[0];
    assert_eq!((task, attempt), (t(0), 4));
    started(&mut s, wx, t(0), 4);
    worker_left(&mut s, wx);
    assert_eq!(s.stats().poison_tasks, 1);
    // W2 dies with u, which is needed again (an output) but whose input x has failed. The
    // client, whose fetch of u fails, asks where the outputs are.
    worker_left(&mut s, W2);
    let out = s.handle(
        MS,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::LocateOutputs { graph: G },
        },
    );
    s.check_invariants();
    let outputs = finished_outputs(&out);
    assert_eq!(outputs.len(), 2, "{out:?}");
    let want = "dependency \"x\" failed: task \"x\" is a poison task";
    for (key, r) in &outputs {
        assert!(matches!(r, Err(e) if e.starts_with(want)), "{key}: {r:?}");
    }
}

fn missing_dep(
    s: &mut Scheduler,
    w: Incarnation,
    task: TaskRef,
    attempt: u64,
    dep: TaskRef,
) -> Vec<Command> {
    let out = s.handle(
        MS,
        Event::WorkerMessage {
            incarnation: w,
            msg: WorkerToScheduler::MissingDep {
                task,
                attempt: AttemptId(attempt),
                dep,
            },
        },
    );
    s.check_invariants();
    out
}

fn cancels(out: &[Command]) -> Vec<TaskRef> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                msg: SchedulerToWorker::Cancel { task, .. },
                ..
            } => Some(*task),
            _ => None,
        })
        .collect()
}

/// Start the graph a; b(a); c(a) on two one-task workers: a and then b on W1 (b started), c on
/// W2, where fetching a from W1 fails. Returns the scheduler after that `MissingDep`, and what
/// it did then.
fn input_lost_under_a_started_task(max_deaths: u32) -> (Scheduler, Vec<Command>) {
    let mut s = sched_poison(2, max_deaths);
    let out = submit(
        &mut s,
        vec![spec("a", &[]), spec("b", &["a"]), spec("c", &["a"])],
        &["b", "c"],
    );
    assert_eq!(assigned(&out), vec![(t(0), 1, W1)]);
    let out = done(&mut s, W1, t(0), 1);
    assert_eq!(assigned(&out), vec![(t(1), 2, W1), (t(2), 3, W2)]);
    started(&mut s, W1, t(1), 2);
    let out = missing_dep(&mut s, W2, t(2), 3, t(0));
    (s, out)
}

/// An input is lost (its holder could not serve a fetch) while a dependent that already
/// started runs: the dependent is not cancelled (it has its inputs) and its result counts;
/// the input is recomputed for the dependents that still need it.
#[test]
fn a_started_task_runs_on_when_its_input_is_lost() {
    let (mut s, out) = input_lost_under_a_started_task(3);
    assert!(
        !cancels(&out).contains(&t(1)),
        "b is not cancelled: {out:?}"
    );
    // a is computed again for c, on W2 (W1 is busy with b).
    assert_eq!(assigned(&out), vec![(t(0), 4, W2)]);
    done(&mut s, W1, t(1), 2);
    assert_eq!(s.stats().stale_reports, 0, "b's result counts");
    let out = done(&mut s, W2, t(0), 4);
    assert_eq!(assigned(&out), vec![(t(2), 5, W2)]);
    let out = done(&mut s, W2, t(2), 5);
    let outputs = finished_outputs(&out);
    assert_eq!(
        outputs,
        vec![("b".to_string(), Ok(W1)), ("c".to_string(), Ok(W2))]
    );
}

/// The same, when the worker running the started dependent is the one that died: its death
/// is charged to the dependent (it used to be cancelled first and escape the charge, so a
/// poison task whose input lived on the worker it killed could kill any number of workers;
/// found by rusk-sim).
#[test]
fn a_started_task_whose_input_holder_died_under_it_is_charged() {
    let (mut s, _) = input_lost_under_a_started_task(1);
    let out = worker_left(&mut s, W1);
    assert_eq!(s.stats().poison_tasks, 1);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Log(r) if r.cause == EventCause::PoisonTask && r.observed.starts_with("task \"b\"")
        )),
        "{out:?}"
    );
}

#[test]
fn tasks_ready_one_at_a_time_are_spread_over_the_workers() {
    let mut s = sched_with_workers(2);
    let g = open(&mut s);
    let mut to = std::collections::BTreeMap::new();
    for i in 0..6 {
        let out = extend(&mut s, g, vec![spec(&format!("t{i}"), &[])], &[]);
        for c in out {
            if let Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Assign(_),
            } = c
            {
                *to.entry(incarnation).or_insert(0) += 1;
            }
        }
    }
    assert_eq!(to.get(&W1), Some(&3), "{to:?}");
    assert_eq!(to.get(&W2), Some(&3), "{to:?}");
}

/// Every recovery event names the host of the worker or nanny it concerns (`rusk events`,
/// the dashboard): a worker's from its registration, a nanny's (its records, its leaving)
/// from the nanny's; the scheduler's own events about no worker name the scheduler's host.
#[test]
fn recovery_events_name_the_host_of_the_worker_or_nanny_they_concern() {
    let logs = |out: &[Command]| -> Vec<(EventCause, String)> {
        out.iter()
            .filter_map(|c| match c {
                Command::Log(r) => Some((r.cause, r.host.clone())),
                _ => None,
            })
            .collect()
    };
    let mut s = Scheduler::new(SchedulerConfig {
        host: "sched-host".into(),
        no_worker_timeout: Duration::from_secs(1),
        ..SchedulerConfig::default()
    });
    let nanny = NannyId(1);
    s.handle(
        Duration::ZERO,
        Event::NannyJoined {
            nanny,
            info: NannyInfo {
                name: "n0".into(),
                host: "beta".into(),
                pid: 9,
                nworkers: 1,
                nthreads: 1,
            },
        },
    );
    for (inc, name, host, nanny) in [(W1, "w1", "alpha", None), (W2, "n0/0", "beta", Some(0))] {
        s.handle(
            Duration::ZERO,
            Event::WorkerJoined {
                incarnation: inc,
                info: WorkerInfo {
                    host: host.into(),
                    nanny: nanny.map(|_| "n0".to_string()),
                    slot: nanny,
                    ..info(name, 1)
                },
            },
        );
    }
    s.handle(Duration::ZERO, Event::ClientJoined { client: C });
    s.check_invariants();

    // The unsupervised worker on alpha is lost.
    let out = worker_left(&mut s, W1);
    assert_eq!(logs(&out), [(EventCause::Connection, "alpha".into())]);
    let r = s.events_since(0).last().expect("recorded").clone();
    assert_eq!(
        (r.host.as_str(), r.worker.as_deref()),
        ("alpha", Some("w1"))
    );

    // The nanny on beta reports a crash of its slot 0, then its connection closes.
    let out = s.handle(
        2 * MS,
        Event::NannyMessage {
            nanny,
            msg: NannyToScheduler::Record(NannyRecord {
                slot: 0,
                cause: EventCause::Crash,
                observed: "exit code 1".into(),
                action: "restarted".into(),
                incarnation: Some(W2.0),
                new_incarnation: None,
                detection_ms: Some(1),
                recovery_ms: None,
            }),
        },
    );
    assert_eq!(logs(&out), [(EventCause::Crash, "beta".into())]);
    let out = s.handle(
        3 * MS,
        Event::NannyLeft {
            nanny,
            reason: "closed".into(),
        },
    );
    assert_eq!(logs(&out), [(EventCause::NannyGone, "beta".into())]);

    // A task no worker can run concerns no worker: the scheduler names its own host.
    submit(
        &mut s,
        vec![TaskSpec {
            resources: [("GPU".to_string(), 1.0)].into(),
            ..spec("a", &[])
        }],
        &["a"],
    );
    let out = s.handle(Duration::from_secs(2), Event::Tick);
    s.check_invariants();
    assert!(
        logs(&out).contains(&(EventCause::Unrunnable, "sched-host".into())),
        "{out:?}"
    );
    let hosts: Vec<&str> = s.events_since(0).map(|r| r.host.as_str()).collect();
    assert_eq!(hosts, ["alpha", "beta", "beta", "sched-host"]);
}
