//! Unit tests of the scheduler core: exact commands for each step.
use super::*;
use rusk_proto::graph::{Builtin, GraphSpec, TaskSpec};

const MS: Duration = Duration::from_millis(1);

fn spec(key: &str, deps: &[&str]) -> TaskSpec {
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
    }
}

fn info(name: &str, nthreads: u32) -> WorkerInfo {
    WorkerInfo {
        name: name.into(),
        host: "h".into(),
        pid: 1,
        nthreads,
        data_address: format!("addr-{name}"),
        nanny: None,
        slot: None,
    }
}

fn noop() -> Arc<TaskKind> {
    Arc::new(TaskKind::Builtin {
        op: Builtin::Noop,
        args: vec![],
    })
}

const C: ClientId = ClientId(1);
const W1: Incarnation = Incarnation(1);
const W2: Incarnation = Incarnation(2);
const G: GraphId = GraphId(1);

fn t(i: u32) -> TaskRef {
    TaskRef { graph: G, index: i }
}

fn assign(task: TaskRef, attempt: u64, deps: Vec<DepLocation>) -> SchedulerToWorker {
    SchedulerToWorker::Assign(Arc::new(Assignment {
        task,
        attempt: AttemptId(attempt),
        kind: noop(),
        deps,
        timeout_ms: None,
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

fn submit(s: &mut Scheduler, tasks: Vec<TaskSpec>, outputs: &[&str]) -> Vec<Command> {
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

fn done(s: &mut Scheduler, w: Incarnation, task: TaskRef, attempt: u64) -> Vec<Command> {
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
                erred: 0
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
        matches!(&out[1], Command::Log(r) if r.cause == "connection" && r.worker.as_deref() == Some("w2")
            && r.action.contains("1 lost result(s) recomputing")),
        "{:?}",
        out[1]
    );
    assert!(matches!(&out[2], Command::Recovery(n) if n.results_lost == 1 && n.recomputing == 1));
    assert_eq!(
        out[3],
        Command::ToWorker {
            incarnation: W1,
            msg: assign(t(1), 4, vec![])
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
    let OutputResult::Failed { error } = &outputs[0].result else {
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
