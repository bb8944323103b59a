//! Unit tests of placement controls: priorities and graph order, resources, `workers`
//! restrictions, and tasks no worker can run.
use super::tests::*;
use super::*;
use rusk_proto::graph::{GraphSpec, TaskSpec};

fn with_resources(name: &str, nthreads: u32, resources: &[(&str, f64)]) -> WorkerInfo {
    WorkerInfo {
        resources: resources.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        ..info(name, nthreads)
    }
}

/// A scheduler with one thread's room of `per_thread` tasks on each of `workers`.
fn sched(per_thread: u32, workers: Vec<WorkerInfo>) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        assigned_per_thread_max: per_thread,
        ..SchedulerConfig::default()
    });
    for (i, w) in workers.into_iter().enumerate() {
        join(&mut s, Duration::ZERO, Incarnation(i as u64 + 1), w);
    }
    s.handle(Duration::ZERO, Event::ClientJoined { client: C });
    s
}

fn join(s: &mut Scheduler, now: Duration, inc: Incarnation, info: WorkerInfo) -> Vec<Command> {
    let out = s.handle(
        now,
        Event::WorkerJoined {
            incarnation: inc,
            info,
        },
    );
    s.check_invariants();
    out
}

fn tick(s: &mut Scheduler, now: Duration) -> Vec<Command> {
    // Keep the workers alive: only the unrunnable clock is under test.
    for inc in s.worker_order.clone() {
        s.handle(
            now,
            Event::WorkerMessage {
                incarnation: inc,
                msg: WorkerToScheduler::Heartbeat(HeartbeatInfo::default()),
            },
        );
    }
    let out = s.handle(now, Event::Tick);
    s.check_invariants();
    out
}

fn keys(s: &Scheduler, placed: &[(TaskRef, u64, Incarnation)]) -> Vec<String> {
    placed
        .iter()
        .map(|(t, _, _)| s.task(*t).expect("exists").key.to_string())
        .collect()
}

fn prio(key: &str, priority: i32, order: Option<u64>) -> TaskSpec {
    TaskSpec {
        priority,
        order,
        ..spec(key, &[])
    }
}

fn needs(key: &str, deps: &[&str], resources: &[(&str, f64)]) -> TaskSpec {
    TaskSpec {
        resources: resources.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        ..spec(key, deps)
    }
}

fn on(key: &str, workers: &[&str], loose: bool) -> TaskSpec {
    TaskSpec {
        workers: Some(workers.iter().map(|w| w.to_string()).collect()),
        allow_other_workers: loose,
        ..spec(key, &[])
    }
}

/// Each finished task gives its thread to the next; returns the keys in the order they ran.
fn run_all(s: &mut Scheduler, mut placed: Vec<(TaskRef, u64, Incarnation)>) -> Vec<String> {
    let mut ran = Vec::new();
    while let Some((task, attempt, w)) = placed.pop() {
        ran.push(s.task(task).expect("exists").key.to_string());
        placed.extend(assigned(&done(s, w, task, attempt)));
    }
    ran
}

#[test]
fn higher_priority_runs_first_then_submission_then_graph_order() {
    let mut s = sched(1, vec![info("w1", 1)]);
    let first = assigned(&submit(
        &mut s,
        vec![
            prio("low", -1, None),
            prio("b", 0, Some(2)),
            prio("a", 0, Some(1)),
            prio("high", 7, None),
            prio("c", 0, Some(3)),
        ],
        &[],
    ));
    assert_eq!(keys(&s, &first), vec!["high"]);
    // A later submission of equal priority waits for the earlier one; a higher one does not.
    let out = s.handle(
        MS,
        Event::ClientMessage {
            client: C,
            msg: ClientToScheduler::Submit {
                graph: GraphSpec {
                    tasks: vec![prio("later", 0, Some(0)), prio("urgent", 3, None)],
                    outputs: vec![],
                },
                detach: false,
            },
        },
    );
    assert!(assigned(&out).is_empty());
    let ran = run_all(&mut s, first);
    assert_eq!(ran, vec!["high", "urgent", "a", "b", "c", "later", "low"]);
}

#[test]
fn the_worker_is_told_each_tasks_priority() {
    let mut s = sched(4, vec![info("w1", 1)]);
    let out = submit(&mut s, vec![prio("p", 9, None)], &[]);
    let prios: Vec<i32> = out
        .iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                msg: SchedulerToWorker::Assign(a),
                ..
            } => Some(a.priority),
            _ => None,
        })
        .collect();
    assert_eq!(prios, vec![9]);
}

#[test]
fn resources_bound_what_runs_at_once_and_pick_the_worker() {
    let mut s = sched(
        8,
        vec![
            with_resources("w1", 4, &[("GPU", 2.0)]),
            with_resources("w2", 4, &[("MEM", 10.0)]),
        ],
    );
    let placed = assigned(&submit(
        &mut s,
        vec![
            needs("g1", &[], &[("GPU", 1.0)]),
            needs("g2", &[], &[("GPU", 1.0)]),
            needs("g3", &[], &[("GPU", 1.0)]),
            needs("m1", &[], &[("MEM", 6.0)]),
            needs("m2", &[], &[("MEM", 6.0)]),
            needs("both", &[], &[("GPU", 1.0), ("MEM", 1.0)]),
        ],
        &[],
    ));
    // Two GPU tasks fit w1's GPU=2, one MEM=6 fits w2's MEM=10; "both" has no worker.
    let on = |w: Incarnation| {
        let mut k: Vec<String> = placed
            .iter()
            .filter(|p| p.2 == w)
            .map(|p| s.task(p.0).unwrap().key.to_string())
            .collect();
        k.sort();
        k
    };
    assert_eq!(on(W1), vec!["g1", "g2"]);
    assert_eq!(on(W2), vec!["m1"]);
    // A finished GPU task frees its GPU for the next one, on the same worker.
    let (t0, a0, _) = placed[0];
    let next = assigned(&done(&mut s, W1, t0, a0));
    assert_eq!(keys(&s, &next), vec!["g3"]);
    assert_eq!(next[0].2, W1);
    // A failed one (no retries) frees it too, and so does a cancel (graph released).
    let (t1, a1, _) = placed[1];
    s.handle(
        MS,
        Event::WorkerMessage {
            incarnation: W1,
            msg: WorkerToScheduler::TaskFailed {
                task: t1,
                attempt: AttemptId(a1),
                error: TaskError {
                    message: "boom".into(),
                    exit_code: None,
                    detail: None,
                },
            },
        },
    );
    s.check_invariants();
    assert_eq!(s.workers[&W1].resources_used.get("GPU"), Some(&1.0));
    s.handle(MS, Event::ClientLeft { client: C });
    s.check_invariants();
    assert!(s.workers.values().all(|w| w.resources_used.is_empty()));
}

#[test]
fn resources_held_on_a_lost_worker_go_with_it_and_the_task_moves() {
    let mut s = sched(
        8,
        vec![
            with_resources("w1", 1, &[("GPU", 1.0)]),
            with_resources("w2", 1, &[("GPU", 1.0)]),
        ],
    );
    let placed = assigned(&submit(
        &mut s,
        vec![
            needs("a", &[], &[("GPU", 1.0)]),
            needs("b", &[], &[("GPU", 1.0)]),
            needs("c", &[], &[("GPU", 1.0)]),
        ],
        &[],
    ));
    assert_eq!(placed.len(), 2);
    let lost = placed.iter().find(|p| p.2 == W1).unwrap().0;
    let out = worker_left(&mut s, W1);
    // The survivor is busy with its own GPU task: nothing moves until it frees the GPU.
    assert!(assigned(&out).is_empty(), "{out:?}");
    let (t2, a2, _) = *placed.iter().find(|p| p.2 == W2).unwrap();
    let next = assigned(&done(&mut s, W2, t2, a2));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].2, W2);
    assert!(next[0].0 == lost || s.task(next[0].0).unwrap().key.as_ref() == "c");
}

#[test]
fn workers_restriction_by_name_address_or_host_and_loose_preference() {
    let mut s = sched(
        1,
        vec![
            WorkerInfo {
                host: "alpha".into(),
                ..info("w1", 1)
            },
            WorkerInfo {
                host: "beta".into(),
                ..info("w2", 1)
            },
        ],
    );
    let placed = assigned(&submit(
        &mut s,
        vec![
            on("by-name", &["w2"], false),
            on("by-address", &["addr-w2"], false),
            on("by-host", &["beta"], false),
            on("loose", &["w2"], true),
        ],
        &[],
    ));
    // w2 has room for one task; the loose one goes to w1 rather than wait.
    let mut got: Vec<(String, Incarnation)> = placed
        .iter()
        .map(|p| (s.task(p.0).unwrap().key.to_string(), p.2))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("by-name".to_string(), W2), ("loose".to_string(), W1)]
    );
    let ran = run_all(&mut s, placed);
    assert_eq!(ran.len(), 4, "every restricted task ran: {ran:?}");
}

#[test]
fn a_task_no_worker_can_run_fails_after_the_timeout_and_the_rest_goes_on() {
    let mut s = sched(4, vec![with_resources("w1", 1, &[("CPU", 4.0)])]);
    let out = submit(
        &mut s,
        vec![
            needs("gpu", &[], &[("GPU", 1.0)]),
            spec("after-gpu", &["gpu"]),
            spec("other", &[]),
        ],
        &["after-gpu", "other"],
    );
    let placed = assigned(&out);
    assert_eq!(keys(&s, &placed), vec!["other"]);
    let (t0, a0, w) = placed[0];
    assert!(finished_outputs(&done(&mut s, w, t0, a0)).is_empty());
    tick(&mut s, Duration::from_millis(9_900));
    assert_eq!(s.stats.tasks_unrunnable, 0);
    let out = tick(&mut s, Duration::from_secs(10));
    assert_eq!(s.stats.tasks_unrunnable, 1);
    let fin = finished_outputs(&out);
    assert_eq!(fin.len(), 2, "{out:?}");
    let (key, err) = (&fin[0].0, fin[0].1.clone().unwrap_err());
    assert_eq!(key, "after-gpu");
    assert_eq!(
        err,
        "dependency \"gpu\" failed: task \"gpu\" cannot run: no worker offers resources GPU=1 \
         (workers offer: w1 {CPU=4}); no worker could run it for 10000 ms (the scheduler's \
         --no-worker-timeout)"
    );
    assert_eq!(fin[1], ("other".to_string(), Ok(W1)));
    let logged: Vec<&EventRecord> = s.events_since(0).collect();
    assert_eq!(logged.last().unwrap().cause, EventCause::Unrunnable);
}

#[test]
fn an_unknown_worker_name_fails_naming_the_workers_there_are() {
    let mut s = sched(4, vec![info("w1", 1)]);
    submit(&mut s, vec![on("x", &["nope"], false)], &[]);
    let out = tick(&mut s, Duration::from_secs(10));
    let fin = finished_outputs(&out);
    assert_eq!(
        fin[0].1.clone().unwrap_err(),
        "task \"x\" cannot run: no worker matches workers=[\"nope\"] (workers: w1 at addr-w1 \
         on h); no worker could run it for 10000 ms (the scheduler's --no-worker-timeout)"
    );
    // With allow_other_workers the name is only a preference: it runs at once.
    let out = submit(&mut s, vec![on("y", &["nope"], true)], &[]);
    assert_eq!(assigned(&out).len(), 1);
}

#[test]
fn a_worker_joining_in_time_runs_it_and_no_worker_at_all_stops_the_clock() {
    let mut s = sched(4, vec![]);
    submit(&mut s, vec![needs("gpu", &[], &[("GPU", 2.0)])], &[]);
    // No worker at all: the clock does not run.
    tick(&mut s, Duration::from_secs(30));
    assert_eq!(s.stats.tasks_unrunnable, 0);
    join(
        &mut s,
        Duration::from_secs(30),
        W1,
        with_resources("w1", 1, &[("GPU", 1.0)]),
    );
    tick(&mut s, Duration::from_secs(35));
    assert_eq!(s.stats.tasks_unrunnable, 0);
    // A worker with enough GPUs joins before the 10 s are up: the task runs there.
    let out = join(
        &mut s,
        Duration::from_secs(39),
        W2,
        with_resources("w2", 1, &[("GPU", 2.0)]),
    );
    let placed = assigned(&out);
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].2, W2);
    tick(&mut s, Duration::from_secs(50));
    assert_eq!(s.stats.tasks_unrunnable, 0);
}
