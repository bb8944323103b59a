//! Unit tests of replicas: extra copies of results (`Client.replicate`, `scatter(broadcast)`).
use super::tests::{done, info, spec, MS};
use super::*;

const A: ClientId = ClientId(1);
const W1: Incarnation = Incarnation(1);
const W2: Incarnation = Incarnation(2);
const W3: Incarnation = Incarnation(3);

fn sched() -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for (i, name) in [(1, "w1"), (2, "w2"), (3, "w3")] {
        s.handle(
            Duration::ZERO,
            Event::WorkerJoined {
                incarnation: Incarnation(i),
                info: info(name, 1),
            },
        );
    }
    s.handle(Duration::ZERO, Event::ClientJoined { client: A });
    s
}

fn say(s: &mut Scheduler, msg: ClientToScheduler) -> Vec<Command> {
    let out = s.handle(MS, Event::ClientMessage { client: A, msg });
    s.check_invariants();
    out
}

fn from_worker(
    s: &mut Scheduler,
    incarnation: Incarnation,
    msg: WorkerToScheduler,
) -> Vec<Command> {
    let out = s.handle(MS, Event::WorkerMessage { incarnation, msg });
    s.check_invariants();
    out
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|k| k.to_string()).collect()
}

/// A session graph with task `x` done on its worker; returns (graph, x, x's worker, attempt).
fn x_in_memory(s: &mut Scheduler) -> (GraphId, TaskRef, Incarnation, AttemptId) {
    let graph = match &say(s, ClientToScheduler::Open)[..] {
        [Command::ToClient {
            msg: SchedulerToClient::Submitted { graph, .. },
            ..
        }] => *graph,
        out => panic!("{out:?}"),
    };
    let out = say(
        s,
        ClientToScheduler::Extend {
            graph,
            tasks: vec![spec("x", &[])],
            outputs: keys(&["x"]),
            resent: false,
        },
    );
    let (inc, a) = first_assign(&out);
    done(s, inc, a.task, a.attempt.0);
    (graph, a.task, inc, a.attempt)
}

/// The first assignment in `out`, with its worker.
fn first_assign(out: &[Command]) -> (Incarnation, Arc<Assignment>) {
    out.iter()
        .find_map(|c| match c {
            Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Assign(a),
            } => Some((*incarnation, a.clone())),
            _ => None,
        })
        .expect("an assignment")
}

/// (worker, task, attempt, from) of every `Replicate` in `out`.
fn replicates(out: &[Command]) -> Vec<(Incarnation, TaskRef, AttemptId, String)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                incarnation,
                msg:
                    SchedulerToWorker::Replicate {
                        task,
                        attempt,
                        from,
                    },
            } => Some((*incarnation, *task, *attempt, from.to_string())),
            _ => None,
        })
        .collect()
}

fn who_has(s: &mut Scheduler, graph: GraphId, key: &str) -> Vec<String> {
    let out = say(
        s,
        ClientToScheduler::WhoHas {
            graph,
            keys: keys(&[key]),
        },
    );
    match &out[..] {
        [Command::ToClient {
            msg: SchedulerToClient::WhoHas { holders, .. },
            ..
        }] => holders[0].1.iter().map(|a| a.to_string()).collect(),
        out => panic!("{out:?}"),
    }
}

fn replicate_all(s: &mut Scheduler, graph: GraphId, n: Option<u32>) -> Vec<Command> {
    say(
        s,
        ClientToScheduler::Replicate {
            graph,
            keys: keys(&["x"]),
            n,
            workers: None,
        },
    )
}

fn replicated(
    s: &mut Scheduler,
    w: Incarnation,
    task: TaskRef,
    attempt: AttemptId,
) -> Vec<Command> {
    from_worker(
        s,
        w,
        WorkerToScheduler::Replicated {
            task,
            attempt,
            size: 1,
        },
    )
}

fn released_to(out: &[Command]) -> Vec<(Incarnation, Vec<TaskRef>)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Release { tasks },
            } => Some((*incarnation, tasks.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn replicate_asks_every_other_worker_and_counts_copies_once_stored() {
    let mut s = sched();
    let (g, x, holder, attempt) = x_in_memory(&mut s);
    let out = replicate_all(&mut s, g, None);
    let asked = replicates(&out);
    assert_eq!(asked.len(), 2, "{out:?}");
    let from = format!("addr-w{}", holder.0);
    for (w, t, a, f) in &asked {
        assert_ne!(*w, holder);
        assert_eq!((*t, *a, f.as_str()), (x, attempt, from.as_str()));
    }
    // Nothing counts before the workers say so; asking again asks again (the client retries).
    assert_eq!(who_has(&mut s, g, "x"), vec![from.clone()]);
    assert_eq!(replicates(&replicate_all(&mut s, g, None)).len(), 2);
    for (w, ..) in &asked {
        replicated(&mut s, *w, x, attempt);
    }
    // A second report of the same copy changes nothing.
    replicated(&mut s, asked[0].0, x, attempt);
    assert_eq!(who_has(&mut s, g, "x").len(), 3);
    assert!(replicates(&replicate_all(&mut s, g, None)).is_empty());
    // Released with its graph's key: every copy is released.
    let out = say(
        &mut s,
        ClientToScheduler::ReleaseKeys {
            graph: g,
            keys: keys(&["x"]),
        },
    );
    let mut to: Vec<Incarnation> = released_to(&out).into_iter().map(|(w, _)| w).collect();
    to.sort();
    assert_eq!(to, vec![W1, W2, W3]);
}

#[test]
fn n_bounds_the_copies_and_workers_names_the_targets() {
    let mut s = sched();
    let (g, _, holder, _) = x_in_memory(&mut s);
    assert_eq!(replicates(&replicate_all(&mut s, g, Some(2))).len(), 1);
    assert!(replicates(&replicate_all(&mut s, g, Some(1))).is_empty());
    let other = if holder == W3 { "w2" } else { "w3" };
    let out = say(
        &mut s,
        ClientToScheduler::Replicate {
            graph: g,
            keys: keys(&["x", "no-such-key"]),
            n: None,
            workers: Some(vec![other.into()]),
        },
    );
    let asked = replicates(&out);
    assert_eq!(asked.len(), 1);
    assert_eq!(s.workers[&asked[0].0].info.name, other);
}

#[test]
fn a_lost_primary_hands_over_to_a_replica_and_nothing_is_recomputed() {
    let mut s = sched();
    let (g, x, holder, attempt) = x_in_memory(&mut s);
    let asked = replicates(&replicate_all(&mut s, g, Some(2)));
    let heir = asked[0].0;
    replicated(&mut s, heir, x, attempt);
    let out = s.handle(
        MS,
        Event::WorkerLeft {
            incarnation: holder,
            reason: "killed".into(),
        },
    );
    s.check_invariants();
    assert!(
        !out.iter().any(|c| matches!(
            c,
            Command::ToWorker {
                msg: SchedulerToWorker::Assign(_),
                ..
            }
        )),
        "x recomputed: {out:?}"
    );
    assert_eq!(s.stats().results_recomputed, 0);
    assert_eq!(who_has(&mut s, g, "x"), vec![format!("addr-w{}", heir.0)]);
    // A dependent now goes to the heir and reads x locally.
    let out = say(
        &mut s,
        ClientToScheduler::Extend {
            graph: g,
            tasks: vec![spec("y", &["x"])],
            outputs: keys(&["y"]),
            resent: false,
        },
    );
    let a = first_assign(&out);
    assert_eq!(a.0, heir);
    assert_eq!(a.1.deps[0].holder, None);
}

#[test]
fn a_lost_replica_is_forgotten_and_a_failed_fetch_from_the_primary_promotes_one() {
    let mut s = sched();
    let (g, x, holder, attempt) = x_in_memory(&mut s);
    let asked = replicates(&replicate_all(&mut s, g, None));
    for (w, ..) in &asked {
        replicated(&mut s, *w, x, attempt);
    }
    s.handle(
        MS,
        Event::WorkerLeft {
            incarnation: asked[1].0,
            reason: "killed".into(),
        },
    );
    s.check_invariants();
    assert_eq!(who_has(&mut s, g, "x").len(), 2);
    // Both live workers have x, so a dependent reads it from its own store. Its worker then
    // finds no copy there: that copy is dropped, the other one serves.
    let out = say(
        &mut s,
        ClientToScheduler::Extend {
            graph: g,
            tasks: vec![spec("y", &["x"])],
            outputs: keys(&["y"]),
            resent: false,
        },
    );
    let (w, a) = first_assign(&out);
    assert_eq!(a.deps[0].holder, None, "every worker has x");
    let out = from_worker(
        &mut s,
        w,
        WorkerToScheduler::MissingDep {
            task: a.task,
            attempt: a.attempt,
            dep: x,
        },
    );
    // That worker's copy is dropped; the other copy remains; y is placed again.
    assert_eq!(released_to(&out), vec![(w, vec![x])]);
    let left = who_has(&mut s, g, "x");
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], format!("addr-w{}", w.0));
    assert_eq!(s.stats().results_recomputed, 0);
    assert!(asked.iter().all(|(w, ..)| *w != holder));
}

#[test]
fn a_copy_of_a_value_no_longer_in_memory_is_released() {
    let mut s = sched();
    let (g, x, _, attempt) = x_in_memory(&mut s);
    let asked = replicates(&replicate_all(&mut s, g, None));
    say(
        &mut s,
        ClientToScheduler::ReleaseKeys {
            graph: g,
            keys: keys(&["x"]),
        },
    );
    let out = replicated(&mut s, asked[0].0, x, attempt);
    assert_eq!(released_to(&out), vec![(asked[0].0, vec![x])]);
    // A report for a stale attempt of a key in memory is released too.
    let mut s = sched();
    let (g, x, _, attempt) = x_in_memory(&mut s);
    let asked = replicates(&replicate_all(&mut s, g, None));
    let out = replicated(&mut s, asked[0].0, x, AttemptId(attempt.0 + 100));
    assert_eq!(released_to(&out), vec![(asked[0].0, vec![x])]);
    assert_eq!(who_has(&mut s, g, "x").len(), 1);
}

#[test]
fn too_many_keys_in_one_request_is_a_clear_error() {
    let mut s = sched();
    let (g, ..) = x_in_memory(&mut s);
    let many: Vec<String> = (0..replicas::REPLICATE_KEYS_MAX + 1)
        .map(|i| i.to_string())
        .collect();
    let out = say(
        &mut s,
        ClientToScheduler::Replicate {
            graph: g,
            keys: many,
            n: None,
            workers: None,
        },
    );
    match &out[..] {
        [Command::ToClient {
            msg: SchedulerToClient::Error { message },
            ..
        }] => assert!(message.contains("REPLICATE_KEYS_MAX"), "{message}"),
        out => panic!("{out:?}"),
    }
}
