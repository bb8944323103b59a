//! A scheduler restarted from its journal: workers that register again with results they kept
//! and attempts still running there have them adopted, not run a second time.
use super::tests::{done, info, spec, submit, t, MS, W1};
use super::tests_shared::adopt;
use super::*;
use crate::journal::{replay, Record};

/// The records a scheduler journaled so far (what its shell would have written).
fn journaled(s: &mut Scheduler, out: &[Command]) -> Vec<Record> {
    let mut flushed = Vec::new();
    s.flush_journal(&mut flushed);
    out.iter()
        .chain(&flushed)
        .filter_map(|c| match c {
            Command::Journal(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn journaling() -> SchedulerConfig {
    SchedulerConfig {
        journal: true,
        assigned_per_thread_max: 4,
        ..SchedulerConfig::default()
    }
}

fn join(s: &mut Scheduler, inc: Incarnation, info: WorkerInfo) -> Vec<Command> {
    let out = s.handle(
        MS,
        Event::WorkerJoined {
            incarnation: inc,
            info,
        },
    );
    s.check_invariants();
    out
}

fn assigned(out: &[Command]) -> Vec<(Incarnation, TaskRef, AttemptId)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Assign(a),
            } => Some((*incarnation, a.task, a.attempt)),
            _ => None,
        })
        .collect()
}

/// `a` and `b` run on w1 (two threads); `a` finishes, then the scheduler dies with `b` running.
/// A new scheduler resumes from the journal; w1 registers again holding `a` and running `b`.
fn restarted_with_b_running() -> (Scheduler, AttemptId) {
    let mut s = Scheduler::new(journaling());
    let out = join(&mut s, W1, info("w1", 2));
    let mut records = journaled(&mut s, &out);
    let out = submit(
        &mut s,
        vec![spec("a", &[]), spec("b", &[]), spec("c", &["a", "b"])],
        &["c"],
    );
    records.extend(journaled(&mut s, &out));
    let first = assigned(&out);
    assert_eq!(first.len(), 2, "{out:?}");
    let b_attempt = first
        .iter()
        .find(|(_, task, _)| *task == t(1))
        .expect("b placed")
        .2;
    let a_attempt = first
        .iter()
        .find(|(_, task, _)| *task == t(0))
        .expect("a placed")
        .2;
    let out = done(&mut s, W1, t(0), a_attempt.0);
    records.extend(journaled(&mut s, &out));
    // kill -9: a new scheduler from what was journaled.
    let (s2, _) = Scheduler::resume(journaling(), replay(records));
    (s2, b_attempt)
}

#[test]
fn a_rejoining_worker_keeps_its_results_and_its_running_attempt_finishes_in_place() {
    let (mut s, b_attempt) = restarted_with_b_running();
    let mut w1 = info("w1", 2);
    w1.held = vec![(t(0), 1)];
    w1.running = vec![(t(1), b_attempt)];
    let w1_again = Incarnation(7);
    let out = join(&mut s, w1_again, w1);
    // Nothing is assigned: `a` is adopted, `b` is still running there.
    assert_eq!(assigned(&out), vec![], "{out:?}");
    assert_eq!(s.stats().attempts_adopted, 1);
    // The old attempt's result is accepted, and `c` follows on the same worker.
    let out = done(&mut s, w1_again, t(1), b_attempt.0);
    let next = assigned(&out);
    assert_eq!(next.len(), 1, "{out:?}");
    assert_eq!((next[0].0, next[0].1), (w1_again, t(2)));
    assert!(next[0].2 .0 > b_attempt.0, "a fresh attempt id for c");
}

#[test]
fn a_running_attempt_the_journal_never_issued_or_a_task_placed_elsewhere_is_not_adopted() {
    let (mut s, b_attempt) = restarted_with_b_running();
    // Another worker registers first, claiming to run `b` under an attempt id the journal
    // never reserved (a confused or hostile peer): ignored.
    let mut w2 = info("w2", 1);
    w2.running = vec![(t(1), AttemptId(u64::MAX / 2))];
    join(&mut s, Incarnation(8), w2);
    assert_eq!(s.stats().attempts_adopted, 0);
    // w1 comes back with the genuine attempt: adopted.
    let mut w1 = info("w1", 2);
    w1.held = vec![(t(0), 1)];
    w1.running = vec![(t(1), b_attempt)];
    join(&mut s, Incarnation(9), w1);
    assert_eq!(s.stats().attempts_adopted, 1);
    // A late report of the made-up attempt changes nothing.
    let out = done(&mut s, Incarnation(8), t(1), u64::MAX / 2);
    assert_eq!(assigned(&out), vec![]);
    assert_eq!(s.stats().stale_reports, 1);
}

// === session graphs sharing keys (adopt tasks) across a restart ===

use rusk_proto::graph::TaskSpec;

const A: ClientId = ClientId(11);
const B: ClientId = ClientId(12);

#[test]
fn a_task_that_failed_for_good_before_the_crash_fails_again_and_is_not_run_again() {
    let mut s = Scheduler::new(journaling());
    let out = join(&mut s, W1, info("w1", 2));
    let mut records = journaled(&mut s, &out);
    let out = submit(&mut s, vec![spec("a", &[]), spec("b", &["a"])], &["b"]);
    records.extend(journaled(&mut s, &out));
    let (_, a, attempt) = assigned(&out)[0];
    let out = s.handle(
        MS,
        Event::WorkerMessage {
            incarnation: W1,
            msg: WorkerToScheduler::TaskFailed {
                task: a,
                attempt,
                error: TaskError {
                    message: "task \"a\" exited with code 3".into(),
                    exit_code: Some(3),
                    detail: Some(bytes::Bytes::from_static(b"traceback")),
                },
            },
        },
    );
    records.extend(journaled(&mut s, &out));
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Failed { task, .. } if *task == a)));
    // kill -9, and the worker back: nothing is assigned, `a` and `b` are erred with `a`'s error.
    let (mut s, _) = Scheduler::resume(journaling(), replay(records));
    s.check_invariants();
    let out = join(&mut s, Incarnation(5), info("w1", 2));
    assert_eq!(assigned(&out), vec![], "{out:?}");
    assert_eq!(s.task_counts()["erred"], 2);
    assert_eq!(s.stats().tasks_erred, 2);
}

/// One client message, its invariants, and its records added to `journal`.
fn say(
    s: &mut Scheduler,
    journal: &mut Vec<Record>,
    client: ClientId,
    msg: ClientToScheduler,
) -> Vec<Command> {
    let out = s.handle(MS, Event::ClientMessage { client, msg });
    s.check_invariants();
    journal.extend(journaled(s, &out));
    out
}

fn opened(out: &[Command]) -> GraphId {
    out.iter()
        .find_map(|c| match c {
            Command::ToClient {
                msg: SchedulerToClient::Submitted { graph, .. },
                ..
            } => Some(*graph),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{out:?}"))
}

fn extend_msg(graph: GraphId, tasks: Vec<TaskSpec>, outputs: &[&str]) -> ClientToScheduler {
    ClientToScheduler::Extend {
        graph,
        tasks,
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
        resent: false,
    }
}

/// Run every assignment in `out` to completion on its worker, and what follows, until nothing
/// is assigned any more: every command emitted on the way.
fn run_all(s: &mut Scheduler, journal: &mut Vec<Record>, out: Vec<Command>) -> Vec<Command> {
    let mut all = Vec::new();
    let mut todo = assigned(&out);
    all.extend(out);
    while let Some((inc, task, attempt)) = todo.pop() {
        let out = done(s, inc, task, attempt.0);
        journal.extend(journaled(s, &out));
        todo.extend(assigned(&out));
        all.extend(out);
    }
    all
}

/// (key, ok) of every output reported to `client` in `out`.
fn reported(out: &[Command], to: ClientId) -> Vec<(String, Result<(), String>)> {
    out.iter()
        .filter_map(|c| match c {
            Command::ToClient {
                client,
                msg: SchedulerToClient::OutputsReady { outputs, .. },
            } if *client == to => Some(outputs.clone()),
            _ => None,
        })
        .flatten()
        .map(|o| {
            let r = match o.result {
                OutputResult::Ready { .. } => Ok(()),
                OutputResult::Failed { error, .. } => Err(error),
            };
            (o.key, r)
        })
        .collect()
}

/// B's session graph is opened before A's, so it has the lower id; B then adopts A's key `x`
/// (`ax`) and computes `y` from it. The journal keeps each graph's extensions in order, not
/// their order across graphs.
fn b_adopts_from_a_opened_later() -> (Scheduler, Vec<Record>, GraphId, GraphId) {
    let mut s = Scheduler::new(journaling());
    let out = join(&mut s, W1, info("w1", 4));
    let mut journal = journaled(&mut s, &out);
    for c in [A, B] {
        s.handle(MS, Event::ClientJoined { client: c });
    }
    let gb = opened(&say(&mut s, &mut journal, B, ClientToScheduler::Open));
    let ga = opened(&say(&mut s, &mut journal, A, ClientToScheduler::Open));
    assert!(gb < ga);
    let out = say(
        &mut s,
        &mut journal,
        A,
        extend_msg(ga, vec![spec("x", &[])], &["x"]),
    );
    run_all(&mut s, &mut journal, out);
    let tasks = vec![adopt("ax", ga, "x"), spec("y", &["ax"])];
    let out = say(&mut s, &mut journal, B, extend_msg(gb, tasks, &["y"]));
    let out = run_all(&mut s, &mut journal, out);
    assert_eq!(reported(&out, B), vec![("y".to_string(), Ok(()))]);
    (s, journal, ga, gb)
}

/// B claims its graph on the restarted scheduler: what it is told.
fn claim(s: &mut Scheduler, journal: &mut Vec<Record>, graph: GraphId) -> Vec<Command> {
    s.handle(MS, Event::ClientJoined { client: B });
    say(s, journal, B, ClientToScheduler::LocateOutputs { graph })
}

#[test]
fn an_adopt_extension_of_a_graph_opened_before_its_source_graph_is_resumed_with_it() {
    let (_, mut journal, ga, gb) = b_adopts_from_a_opened_later();
    let (mut s, _) = Scheduler::resume(journaling(), replay(journal.clone()));
    s.check_invariants();
    // x, ax and y: nothing of B's graph was lost for being replayed before A's.
    assert_eq!(s.task_counts().values().sum::<u64>(), 3);
    let out = claim(&mut s, &mut journal, gb);
    assert!(reported(&out, B).is_empty(), "{out:?}");
    // w1 comes back holding x and y: adopted and reported, nothing recomputed.
    let mut w1 = info("w1", 4);
    w1.held = vec![
        (
            TaskRef {
                graph: ga,
                index: 0,
            },
            1,
        ),
        (
            TaskRef {
                graph: gb,
                index: 1,
            },
            1,
        ),
    ];
    let out = join(&mut s, Incarnation(5), w1);
    let again: Vec<TaskRef> = assigned(&out).into_iter().map(|(_, t, _)| t).collect();
    assert!(
        !again.contains(&TaskRef {
            graph: ga,
            index: 0
        }),
        "{out:?}"
    );
    assert!(
        !again.contains(&TaskRef {
            graph: gb,
            index: 1
        }),
        "{out:?}"
    );
    assert_eq!(reported(&out, B), vec![("y".to_string(), Ok(()))]);
}

#[test]
fn an_adopt_task_whose_source_graph_went_before_the_crash_fails_after_it_and_its_graph_goes_on() {
    let (mut s, mut journal, _, gb) = b_adopts_from_a_opened_later();
    // A leaves: nothing pins x any more (ax finished), so A's graph is removed (journaled).
    let out = s.handle(MS, Event::ClientLeft { client: A });
    s.check_invariants();
    journal.extend(journaled(&mut s, &out));
    let (mut s, _) = Scheduler::resume(journaling(), replay(journal.clone()));
    s.check_invariants();
    // B's graph keeps its keys: `ax` cannot get its value again, so it and `y` fail with the
    // error a lost value of an adopt task whose source is gone always gets.
    let out = claim(&mut s, &mut journal, gb);
    let lost = "task \"ax\" lost its value, and the key it adopted was released by its client \
                since"
        .to_string();
    assert_eq!(reported(&out, B), vec![("y".to_string(), Err(lost))]);
    // ... and B can go on extending it with what depends on `y`.
    let out = say(
        &mut s,
        &mut journal,
        B,
        extend_msg(gb, vec![spec("z", &["y"])], &["z"]),
    );
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::ToClient {
                msg: SchedulerToClient::Extended { tasks: 1, .. },
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn a_resumed_session_graph_waits_for_its_client_even_when_its_last_pin_goes() {
    let mut s = Scheduler::new(journaling());
    let out = join(&mut s, W1, info("w1", 4));
    let mut journal = journaled(&mut s, &out);
    for c in [A, B] {
        s.handle(MS, Event::ClientJoined { client: c });
    }
    let ga = opened(&say(&mut s, &mut journal, A, ClientToScheduler::Open));
    let gb = opened(&say(&mut s, &mut journal, B, ClientToScheduler::Open));
    let out = say(
        &mut s,
        &mut journal,
        A,
        extend_msg(ga, vec![spec("x", &[])], &["x"]),
    );
    run_all(&mut s, &mut journal, out);
    let out = say(
        &mut s,
        &mut journal,
        B,
        extend_msg(gb, vec![adopt("ax", ga, "x")], &["ax"]),
    );
    run_all(&mut s, &mut journal, out);
    let (mut s, _) = Scheduler::resume(journaling(), replay(journal.clone()));
    // w1 comes back holding x and ax: once ax is adopted, nothing pins x any more, but A's
    // graph is A's until the grace ends, not an ownerless graph to drop.
    let mut w1 = info("w1", 4);
    w1.held = vec![
        (
            TaskRef {
                graph: ga,
                index: 0,
            },
            1,
        ),
        (
            TaskRef {
                graph: gb,
                index: 0,
            },
            1,
        ),
    ];
    join(&mut s, Incarnation(5), w1);
    s.handle(MS, Event::ClientJoined { client: A });
    let out = say(
        &mut s,
        &mut journal,
        A,
        ClientToScheduler::LocateOutputs { graph: ga },
    );
    assert!(
        matches!(
            &out[..],
            [
                Command::ToClient {
                    msg: SchedulerToClient::Located { .. },
                    ..
                },
                Command::ToClient {
                    msg: SchedulerToClient::OutputsReady { .. },
                    ..
                },
            ]
        ),
        "{out:?}"
    );
    assert_eq!(reported(&out, A), vec![("x".to_string(), Ok(()))]);
}

#[test]
fn keys_released_before_the_crash_stay_released_unless_named_again_later() {
    let mut s = Scheduler::new(journaling());
    let out = join(&mut s, W1, info("w1", 4));
    let mut journal = journaled(&mut s, &out);
    s.handle(MS, Event::ClientJoined { client: B });
    let g = opened(&say(&mut s, &mut journal, B, ClientToScheduler::Open));
    let tasks = vec![spec("x", &[]), spec("y", &[]), spec("z", &[])];
    let out = say(
        &mut s,
        &mut journal,
        B,
        extend_msg(g, tasks, &["x", "y", "z"]),
    );
    run_all(&mut s, &mut journal, out);
    let release = |keys: &[&str]| ClientToScheduler::ReleaseKeys {
        graph: g,
        keys: keys.iter().map(|k| k.to_string()).collect(),
    };
    say(&mut s, &mut journal, B, release(&["x", "y"]));
    // `y` is wanted again (an extension naming it as an output, as a resubmission does).
    say(&mut s, &mut journal, B, extend_msg(g, vec![], &["y"]));
    // kill -9; B claims its graph: `y` and `z` are reported, `x` is not.
    let (mut s, _) = Scheduler::resume(journaling(), replay(journal.clone()));
    s.check_invariants();
    // w1 comes back holding all three: `x` is no longer wanted, so released, not adopted.
    let mut w1 = info("w1", 4);
    w1.held = (0..3)
        .map(|index| (TaskRef { graph: g, index }, 8))
        .collect();
    let out = join(&mut s, Incarnation(9), w1);
    assert!(out.iter().any(|c| matches!(c, Command::ToWorker { msg: SchedulerToWorker::Release { tasks }, .. } if tasks == &vec![TaskRef { graph: g, index: 0 }])), "{out:?}");
    let out2 = claim(&mut s, &mut journal, g);
    let out = run_all(&mut s, &mut journal, [out, out2].concat());
    let mut keys: Vec<String> = reported(&out, B).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys, vec!["y".to_string(), "z".to_string()]);
    // The compacted journal says the same.
    let again = replay(replay(journal).to_records());
    assert_eq!(again.graphs[&g].released.len(), 1);
}

/// A journaled graph (or extension) whose encoding no longer decodes (a damaged or older
/// journal) is left out at resume, and nothing else is.
#[test]
fn a_journaled_graph_that_no_longer_decodes_is_left_out_and_the_others_resume() {
    use crate::journal::Encoded;
    use rusk_proto::graph::GraphSpec;
    let specs = |keys: &[&str]| -> Vec<TaskSpec> { keys.iter().map(|k| spec(k, &[])).collect() };
    let graph = |keys: &[&str]| GraphSpec {
        tasks: specs(keys),
        outputs: keys.iter().map(|k| k.to_string()).collect(),
    };
    // Bytes that are no graph, as postcard stores them (their length, then them).
    let damaged = || rusk_proto::decode::<Encoded<GraphSpec>>(&[3, 0xff, 0xff, 0xff]).unwrap();
    let damaged_tasks =
        || rusk_proto::decode::<Encoded<Vec<TaskSpec>>>(&[3, 0xff, 0xff, 0xff]).unwrap();
    assert!(damaged().decode().is_err());
    let records = vec![
        Record::Submitted {
            graph: GraphId(1),
            detach: false,
            spec: damaged(),
        },
        Record::Submitted {
            graph: GraphId(2),
            detach: false,
            spec: Encoded::new(&graph(&["a", "b"])),
        },
        Record::Opened { graph: GraphId(3) },
        Record::Extended {
            graph: GraphId(3),
            tasks: Encoded::new(&specs(&["x"])),
            outputs: vec!["x".into()],
        },
        Record::Extended {
            graph: GraphId(3),
            tasks: damaged_tasks(),
            outputs: vec![],
        },
        Record::Extended {
            graph: GraphId(3),
            tasks: Encoded::new(&specs(&["z"])),
            outputs: vec!["z".into()],
        },
    ];
    let (s, _) = Scheduler::resume(journaling(), replay(records));
    s.check_invariants();
    let tasks = |g: u64| s.graphs.get(&GraphId(g)).map(|g| g.tasks.len());
    assert_eq!(tasks(1), None, "the damaged graph is left out");
    assert_eq!(tasks(2), Some(2));
    // The session graph resumes up to the extension that does not decode (later ones may
    // build on it): "x" only.
    assert_eq!(tasks(3), Some(1));
    assert!(s.graphs[&GraphId(3)].keys.contains_key("x"));
}

/// The journal keeps each nanny with its slots. After a restart, a nanny that registers again
/// is expected and nothing is said; one still missing when the grace ends (its host may have
/// gone while the scheduler was down) is named in a `nanny-gone` event, with its slots as last
/// reported, and forgotten.
#[test]
fn nannies_are_journaled_and_one_that_never_comes_back_is_named_when_the_grace_ends() {
    let nanny_info = |name: &str, host: &str| NannyInfo {
        name: name.into(),
        host: host.into(),
        pid: 7,
        nworkers: 2,
        nthreads: 1,
    };
    let slot = |slot: u32, pid: u32| SlotReport {
        slot,
        state: "running".into(),
        pid: Some(pid),
        incarnation: None,
        restarts: 0,
        last_cause: None,
    };
    let mut s = Scheduler::new(journaling());
    let mut records = Vec::new();
    for (id, name, host) in [(1, "n-a", "alpha"), (2, "n-b", "beta")] {
        let out = s.handle(
            MS,
            Event::NannyJoined {
                nanny: NannyId(id),
                info: nanny_info(name, host),
            },
        );
        records.extend(journaled(&mut s, &out));
        let out = s.handle(
            MS,
            Event::NannyMessage {
                nanny: NannyId(id),
                msg: NannyToScheduler::Slots(vec![slot(0, 100 + id as u32), slot(1, 200)]),
            },
        );
        records.extend(journaled(&mut s, &out));
    }
    let (mut s2, _) = Scheduler::resume(journaling(), replay(records));
    let mut logged = Vec::new();
    let mut log = |out: Vec<Command>| {
        logged.extend(out.into_iter().filter_map(|c| match c {
            Command::Log(r) => Some(r),
            _ => None,
        }))
    };
    // The first event starts the grace; n-a registers again within it, n-b never does.
    log(s2.handle(MS, Event::Tick));
    log(s2.handle(
        MS * 2,
        Event::NannyJoined {
            nanny: NannyId(7),
            info: nanny_info("n-a", "alpha"),
        },
    ));
    let grace = journaling().resume_grace;
    let out = s2.handle(MS + grace + MS, Event::Tick);
    let forgotten: Vec<Record> = journaled(&mut s2, &out)
        .into_iter()
        .filter(|r| matches!(r, Record::NannyForgotten { .. }))
        .collect();
    log(out);
    s2.check_invariants();
    let gone: Vec<&EventRecord> = logged
        .iter()
        .filter(|r| r.cause == EventCause::NannyGone)
        .collect();
    assert_eq!(gone.len(), 1, "{logged:?}");
    assert_eq!(gone[0].nanny.as_deref(), Some("n-b"));
    assert_eq!(gone[0].host, "beta");
    assert!(
        gone[0]
            .observed
            .contains("0: running (pid 102), 1: running (pid 200)"),
        "{}",
        gone[0].observed
    );
    assert_eq!(forgotten, [Record::NannyForgotten { name: "n-b".into() }]);
    // A journal replayed after that no longer expects n-b.
    let r = replay([
        Record::Nanny {
            info: nanny_info("n-b", "beta"),
            slots: vec![],
        },
        forgotten[0].clone(),
    ]);
    assert!(r.nannies.is_empty());
}
