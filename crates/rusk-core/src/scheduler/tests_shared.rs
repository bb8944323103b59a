//! Unit tests of keys shared between clients: holds, adopt tasks, keeps, datasets.
use super::tests::{done, info, spec, MS, W1, W2};
use super::*;
use rusk_proto::graph::{AdoptSpec, TaskSpec};

const A: ClientId = ClientId(1);
const B: ClientId = ClientId(2);

fn sched() -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for (i, name) in [(1, "w1"), (2, "w2")] {
        s.handle(
            Duration::ZERO,
            Event::WorkerJoined {
                incarnation: Incarnation(i),
                info: info(name, 1),
            },
        );
    }
    for c in [A, B] {
        s.handle(Duration::ZERO, Event::ClientJoined { client: c });
    }
    s
}

fn say(s: &mut Scheduler, client: ClientId, msg: ClientToScheduler) -> Vec<Command> {
    let out = s.handle(MS, Event::ClientMessage { client, msg });
    s.check_invariants();
    out
}

fn open(s: &mut Scheduler, client: ClientId) -> GraphId {
    match &say(s, client, ClientToScheduler::Open)[..] {
        [Command::ToClient {
            msg: SchedulerToClient::Submitted { graph, .. },
            ..
        }] => *graph,
        out => panic!("{out:?}"),
    }
}

fn extend(
    s: &mut Scheduler,
    client: ClientId,
    graph: GraphId,
    tasks: Vec<TaskSpec>,
    outputs: &[&str],
) -> Vec<Command> {
    let outputs = outputs.iter().map(|o| o.to_string()).collect();
    say(
        s,
        client,
        ClientToScheduler::Extend {
            graph,
            tasks,
            outputs,
            resent: false,
        },
    )
}

pub(super) fn adopt(key: &str, graph: GraphId, from: &str) -> TaskSpec {
    TaskSpec {
        key: key.into(),
        adopt: Some(AdoptSpec {
            graph,
            key: from.into(),
        }),
        ..Default::default()
    }
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|k| k.to_string()).collect()
}

/// The assignments in `out`: (task, attempt, inputs).
fn assigned(out: &[Command]) -> Vec<(TaskRef, u64, Vec<TaskRef>)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                msg: SchedulerToWorker::Assign(a),
                ..
            } => Some((a.task, a.attempt.0, a.deps.iter().map(|d| d.task).collect())),
            _ => None,
        })
        .collect()
}

fn released(out: &[Command]) -> Vec<TaskRef> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                msg: SchedulerToWorker::Release { tasks },
                ..
            } => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// (client, graph, key, ok) of every output report in `out`.
fn reports(out: &[Command]) -> Vec<(ClientId, GraphId, String, bool)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToClient {
                client,
                msg: SchedulerToClient::OutputsReady { graph, outputs },
            } => Some(
                outputs
                    .iter()
                    .map(|o| {
                        let ok = matches!(o.result, OutputResult::Ready { .. });
                        (*client, *graph, o.key.clone(), ok)
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn reply(out: &[Command], to: ClientId) -> &SchedulerToClient {
    out.iter()
        .find_map(|c| match c {
            Command::ToClient { client, msg } if *client == to => Some(msg),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no reply to {to:?} in {out:?}"))
}

#[test]
fn a_held_key_is_reported_to_its_holder_and_outlives_its_owner() {
    let mut s = sched();
    let g = open(&mut s, A);
    let out = extend(&mut s, A, g, vec![spec("a", &[])], &["a"]);
    let (a, attempt, _) = assigned(&out)[0].clone();
    // B holds `a` before it finishes: told when it does, as A is.
    let hold = ClientToScheduler::Hold {
        graph: g,
        keys: keys(&["a"]),
    };
    assert!(reports(&say(&mut s, B, hold.clone())).is_empty());
    let out = done(&mut s, W1, a, attempt);
    let mut r = reports(&out);
    r.sort();
    assert_eq!(r, vec![(A, g, "a".into(), true), (B, g, "a".into(), true)]);
    // Holding again reports again (what a client does after a fetch failed).
    assert_eq!(
        reports(&say(&mut s, B, hold)),
        vec![(B, g, "a".into(), true)]
    );
    // A leaves: its graph stays, without outputs, for B's hold.
    let out = s.handle(2 * MS, Event::ClientLeft { client: A });
    s.check_invariants();
    assert!(released(&out).is_empty(), "{out:?}");
    assert_eq!(s.graph_count(), 1);
    // Nor can B take the ownerless graph over with LocateOutputs (it would then stay after
    // its last pin went, until B left).
    let out = say(&mut s, B, ClientToScheduler::LocateOutputs { graph: g });
    assert!(
        matches!(reply(&out, B), SchedulerToClient::Error { message } if message.contains("another client")),
        "{out:?}"
    );
    // B lets go: the value is released and the graph goes.
    let out = say(
        &mut s,
        B,
        ClientToScheduler::Unhold {
            graph: g,
            keys: keys(&["a"]),
        },
    );
    assert_eq!(released(&out), vec![a]);
    assert_eq!(s.graph_count(), 0);
}

#[test]
fn holding_an_unknown_key_is_reported_failed_and_another_clients_graph_cannot_be_taken() {
    let mut s = sched();
    let g = open(&mut s, A);
    let out = say(
        &mut s,
        B,
        ClientToScheduler::Hold {
            graph: g,
            keys: keys(&["nope"]),
        },
    );
    assert_eq!(reports(&out), vec![(B, g, "nope".into(), false)]);
    let out = say(
        &mut s,
        B,
        ClientToScheduler::Hold {
            graph: GraphId(99),
            keys: keys(&["x"]),
        },
    );
    assert_eq!(reports(&out), vec![(B, GraphId(99), "x".into(), false)]);
    let out = say(&mut s, B, ClientToScheduler::LocateOutputs { graph: g });
    assert!(
        matches!(reply(&out, B), SchedulerToClient::Error { message } if message.contains("another client")),
        "{out:?}"
    );
    // B's Extend of A's graph is refused; B's adopt of a key A does not have is rejected.
    let out = extend(&mut s, B, g, vec![spec("x", &[])], &["x"]);
    assert!(matches!(reply(&out, B), SchedulerToClient::Error { .. }));
    let gb = open(&mut s, B);
    let out = extend(&mut s, B, gb, vec![adopt("x", g, "nope")], &["x"]);
    assert!(
        matches!(reply(&out, B), SchedulerToClient::Rejected { error } if error.contains("\"nope\"")),
        "{out:?}"
    );
}

#[test]
fn an_adopt_task_waits_for_its_source_runs_where_it_is_and_keeps_it_until_then() {
    let mut s = sched();
    let ga = open(&mut s, A);
    let out = extend(&mut s, A, ga, vec![spec("a", &[])], &["a"]);
    let (a, attempt, _) = assigned(&out)[0].clone();
    let gb = open(&mut s, B);
    let out = extend(
        &mut s,
        B,
        gb,
        vec![adopt("x", ga, "a"), spec("y", &["x"])],
        &["y"],
    );
    assert!(assigned(&out).is_empty(), "x waits for a: {out:?}");
    // A lets go of `a` while it runs: the adopt task still needs it, so it is not cancelled.
    let out = say(
        &mut s,
        A,
        ClientToScheduler::ReleaseKeys {
            graph: ga,
            keys: keys(&["a"]),
        },
    );
    assert!(out.is_empty(), "{out:?}");
    // `a` done on w1: x runs there, with `a` as its one input.
    let out = done(&mut s, W1, a, attempt);
    let x = TaskRef {
        graph: gb,
        index: 0,
    };
    let xa = assigned(&out);
    assert_eq!(xa.len(), 1);
    assert_eq!((xa[0].0, xa[0].2.clone()), (x, vec![a]));
    assert!(out.iter().any(|c| matches!(c, Command::ToWorker { incarnation, msg: SchedulerToWorker::Assign(_) } if *incarnation == W1)));
    // x done: nobody needs `a` any more, so it is released; y runs.
    let out = done(&mut s, W1, x, xa[0].1);
    assert_eq!(released(&out), vec![a]);
    let ya = assigned(&out);
    assert_eq!(
        ya[0].0,
        TaskRef {
            graph: gb,
            index: 1
        }
    );
}

#[test]
fn a_lost_source_is_recomputed_for_its_adopter_and_a_failed_one_fails_it() {
    let mut s = sched();
    let ga = open(&mut s, A);
    let out = extend(&mut s, A, ga, vec![spec("a", &[])], &["a"]);
    let (a, attempt, _) = assigned(&out)[0].clone();
    let holder = match out.iter().find_map(|c| match c {
        Command::ToWorker {
            incarnation,
            msg: SchedulerToWorker::Assign(_),
        } => Some(*incarnation),
        _ => None,
    }) {
        Some(w) => w,
        None => panic!("{out:?}"),
    };
    done(&mut s, holder, a, attempt);
    let gb = open(&mut s, B);
    // x is sent to the holder of `a`, with `a` as its input.
    let out = extend(&mut s, B, gb, vec![adopt("x", ga, "a")], &["x"]);
    let (x, _, inputs) = assigned(&out)[0].clone();
    assert_eq!(inputs, vec![a]);
    // The holder dies before x ran: `a` is recomputed (x still needs it) and x waits for it.
    let out = s.handle(
        2 * MS,
        Event::WorkerLeft {
            incarnation: holder,
            reason: "test".into(),
        },
    );
    s.check_invariants();
    let again = assigned(&out);
    assert_eq!(again.len(), 1, "only a is re-run: {out:?}");
    assert_eq!(again[0].0, a);
    let other = if holder == W1 { W2 } else { W1 };
    // This time `a` fails: x fails with it, and B hears why.
    let out = s.handle(
        3 * MS,
        Event::WorkerMessage {
            incarnation: other,
            msg: WorkerToScheduler::TaskFailed {
                task: a,
                attempt: AttemptId(again[0].1),
                error: TaskError {
                    message: "boom".into(),
                    exit_code: None,
                    detail: None,
                },
            },
        },
    );
    s.check_invariants();
    let r = reports(&out);
    assert!(r.contains(&(B, gb, "x".into(), false)), "{out:?}");
    assert!(s.task(x).is_some_and(|t| t.state == TaskState::Erred));
}

#[test]
fn kept_work_finishes_after_its_client_left_then_goes() {
    let mut s = sched();
    let g = open(&mut s, A);
    let out = extend(&mut s, A, g, vec![spec("a", &[])], &["a"]);
    let (a, attempt, _) = assigned(&out)[0].clone();
    say(
        &mut s,
        A,
        ClientToScheduler::Keep {
            graph: g,
            keys: keys(&["a"]),
        },
    );
    let out = s.handle(2 * MS, Event::ClientLeft { client: A });
    s.check_invariants();
    assert!(
        !out.iter().any(|c| matches!(
            c,
            Command::ToWorker {
                msg: SchedulerToWorker::Cancel { .. },
                ..
            }
        )),
        "kept work is not cancelled: {out:?}"
    );
    let out = done(&mut s, W1, a, attempt);
    assert_eq!(released(&out), vec![a]);
    assert_eq!(s.graph_count(), 0);
}

#[test]
fn datasets_keep_their_keys_while_published_and_refuse_bad_requests() {
    let mut s = sched();
    let g = open(&mut s, A);
    let out = extend(&mut s, A, g, vec![spec("a", &[])], &["a"]);
    let (a, attempt, _) = assigned(&out)[0].clone();
    done(&mut s, W1, a, attempt);
    let publish = |name: &str, refs: Vec<(GraphId, String)>, replace: bool| {
        ClientToScheduler::Dataset(DatasetRequest::Publish {
            name: name.into(),
            data: Bytes::from_static(b"pickle"),
            refs,
            replace,
        })
    };
    let out = say(&mut s, A, publish("ds", vec![(g, "a".into())], false));
    assert!(matches!(reply(&out, A), SchedulerToClient::Done { .. }));
    // Bad requests: a name taken, a key that is not there, data over the bound.
    let out = say(&mut s, A, publish("ds", vec![], false));
    assert!(
        matches!(reply(&out, A), SchedulerToClient::Error { message } if message.contains("already exists"))
    );
    let out = say(&mut s, A, publish("other", vec![(g, "zz".into())], false));
    assert!(
        matches!(reply(&out, A), SchedulerToClient::Error { message } if message.contains("\"zz\""))
    );
    let big = ClientToScheduler::Dataset(DatasetRequest::Publish {
        name: "big".into(),
        data: Bytes::from(vec![0u8; shared::DATASET_BYTES_MAX + 1]),
        refs: vec![],
        replace: false,
    });
    let out = say(&mut s, A, big);
    assert!(
        matches!(reply(&out, A), SchedulerToClient::Error { message } if message.contains("DATASET_BYTES_MAX"))
    );
    // Another client finds it; A leaves, and the value stays while published.
    let out = say(&mut s, B, ClientToScheduler::Dataset(DatasetRequest::List));
    assert_eq!(
        reply(&out, B),
        &SchedulerToClient::DatasetNames {
            names: vec!["ds".into()]
        }
    );
    let out = say(
        &mut s,
        B,
        ClientToScheduler::Dataset(DatasetRequest::Get { name: "ds".into() }),
    );
    assert!(
        matches!(reply(&out, B), SchedulerToClient::Dataset { data, .. } if &data[..] == b"pickle")
    );
    let out = s.handle(2 * MS, Event::ClientLeft { client: A });
    s.check_invariants();
    assert!(released(&out).is_empty());
    let out = say(
        &mut s,
        B,
        ClientToScheduler::Dataset(DatasetRequest::Unpublish { name: "ds".into() }),
    );
    assert_eq!(released(&out), vec![a]);
    assert_eq!(s.graph_count(), 0);
    let out = say(
        &mut s,
        B,
        ClientToScheduler::Dataset(DatasetRequest::Get { name: "ds".into() }),
    );
    assert!(
        matches!(reply(&out, B), SchedulerToClient::Error { message } if message.contains("no dataset"))
    );
}

#[test]
fn adopt_tasks_are_refused_in_submitted_graphs() {
    let mut s = sched();
    let g = open(&mut s, A);
    let out = say(
        &mut s,
        B,
        ClientToScheduler::Submit {
            graph: rusk_proto::graph::GraphSpec {
                tasks: vec![adopt("x", g, "a")],
                outputs: vec!["x".into()],
            },
            detach: false,
        },
    );
    assert!(
        matches!(reply(&out, B), SchedulerToClient::Rejected { error } if error.contains("session"))
    );
}

/// Found by the simulator (`shared_seeds`): an extension listing a task before its input (any
/// order compiles) indexed the input before it was added, and the scheduler panicked.
#[test]
fn an_extension_may_list_a_task_before_its_input() {
    let mut s = sched();
    let g = open(&mut s, A);
    let out = extend(
        &mut s,
        A,
        g,
        vec![spec("c", &["b"]), spec("b", &["a"]), spec("a", &[])],
        &["c"],
    );
    assert!(matches!(
        reply(&out, A),
        SchedulerToClient::Extended { tasks: 3, .. }
    ));
    // Only `a` runs; `b` then `c` follow it, in order.
    let assigned_to = |out: &[Command]| -> Vec<(Incarnation, TaskRef, u64)> {
        out.iter()
            .filter_map(|c| match c {
                Command::ToWorker {
                    incarnation,
                    msg: SchedulerToWorker::Assign(a),
                } => Some((*incarnation, a.task, a.attempt.0)),
                _ => None,
            })
            .collect()
    };
    let mut next = assigned_to(&out);
    for key in ["a", "b", "c"] {
        assert_eq!(next.len(), 1, "{key}: {next:?}");
        let (w, t, attempt) = next[0];
        assert_eq!(&*s.task(t).expect("exists").key, key);
        let out = done(&mut s, w, t, attempt);
        next = assigned_to(&out);
    }
    assert!(next.is_empty());
}
