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
        python: None,
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
}
