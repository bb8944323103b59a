//! Scripted scenarios of self-healing: one fault injected at a chosen moment on a quiet cluster
//! of nanny-supervised workers. Each runs under several seeds (latencies, placements and
//! back-off jitter differ), must end with every output correct (or failed as expected), and
//! must show that the intended recovery path ran: which nanny record, which restart.
use rusk_proto::msg::{EventCause, EventSource};
use rusk_sim::workload::{GraphBuilder, GraphModel, TIME_LIMITED_SLEEP_MS};
use rusk_sim::{Sim, SimConfig, SimFailure, SimReport};
use std::time::Duration;

/// Seeds per scenario.
const SEEDS: u64 = 10;
/// Enough for every worker of a quiet cluster to have joined and registered with its nanny.
const WARM_UP: Duration = Duration::from_millis(100);
/// Bound on the virtual time a scenario waits for its trigger.
const TRIGGER_WAIT: Duration = Duration::from_secs(20);

fn warm(seed: u64, config: &SimConfig) -> Result<Sim, SimFailure> {
    let mut sim = Sim::new(seed, config);
    let up = sim.run_until(WARM_UP, |s| (0..slots(config)).all(|k| s.slot_is_up(k)))?;
    assert!(up, "seed {seed}: the cluster did not come up");
    Ok(sim)
}

fn slots(config: &SimConfig) -> u32 {
    config.nanny_hosts_max * config.slots_per_host_max
}

fn check(r: Result<SimReport, SimFailure>) -> SimReport {
    r.unwrap_or_else(|f| panic!("{f}"))
}

fn records(report: &SimReport, kind: &str) -> u32 {
    report.nanny_records.get(kind).copied().unwrap_or(0)
}

/// Recovery events the scheduler logged, as `(source, cause)`.
fn events(sim: &Sim) -> Vec<(EventSource, EventCause)> {
    sim.scheduler()
        .events_since(0)
        .map(|r| (r.source, r.cause))
        .collect()
}

fn chain_graph(prefix: &str, len: usize) -> GraphModel {
    let mut b = GraphBuilder::new(prefix);
    let mut prev = b.sum(&[1], &[]);
    for i in 1..len {
        prev = b.sum(&[i as i64], &[prev]);
    }
    b.build(None, false)
}

/// A slot whose workers keep dying while they start backs off (exponentially, jittered),
/// then, past the crash-restart limit, goes `failed` and stays so, starting nothing; an
/// operator restart through the scheduler (`rusk restart n0/0`) revives it, and it runs work.
#[test]
fn crash_loop_backs_off_then_fails_until_an_operator_restart() {
    for seed in 0..SEEDS {
        let config = SimConfig::supervised(1, 1);
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            sim.crash_loop(0, Duration::from_secs(3))?;
            let failed = sim.run_until(TRIGGER_WAIT, |s| s.slot_status(0) == "failed")?;
            assert!(failed, "seed {seed}: the slot never went failed");
            let restarts = sim.slot_restarts(0);
            // Failed is final: nothing starts, whatever the time (the crash loop is over).
            sim.run_until(Duration::from_secs(5), |_| false)?;
            assert_eq!(sim.slot_status(0), "failed");
            assert_eq!(sim.slot_pid(0), None);
            assert_eq!(sim.slot_restarts(0), restarts);
            let nanny_events: Vec<EventCause> = events(&sim)
                .into_iter()
                .filter(|(source, _)| *source == EventSource::Nanny)
                .map(|(_, cause)| cause)
                .collect();
            assert!(
                nanny_events
                    .iter()
                    .filter(|c| **c == EventCause::CrashLoop)
                    .count()
                    >= 3,
                "seed {seed}: back-offs and the failure reach the scheduler: {nanny_events:?}"
            );
            sim.operator_restart_slot(0);
            let up = sim.run_until(Duration::from_secs(1), |s| s.slot_is_up(0))?;
            assert!(
                up,
                "seed {seed}: the operator restart did not revive the slot"
            );
            sim.submit(chain_graph("c", 8));
            sim.finish()
        })());
        assert!(
            records(&report, "backing-off") >= 2,
            "seed {seed}: {report:?}"
        );
        assert_eq!(records(&report, "failed"), 1, "seed {seed}: {report:?}");
        assert_eq!(
            report.faults.operator_restarts, 1,
            "seed {seed}: {report:?}"
        );
        assert!(report.faults.spawn_failures + records(&report, "crash") >= 4);
    }
}

/// A hung worker (its event loop stops: no pings, no heartbeats) under a watchdog shorter
/// than the scheduler's TTL: the nanny kills it first and starts a new incarnation, the
/// scheduler sees the old connection close. A restart request for the old incarnation that
/// arrives afterwards (late) changes nothing.
#[test]
fn hang_detected_by_the_watchdog_first() {
    for seed in 0..SEEDS {
        let config = SimConfig::supervised(1, 2);
        let watchdog = config.nanny.as_ref().expect("set").watchdog_timeout;
        assert!(watchdog < config.worker_ttl);
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            sim.submit(chain_graph("c", 30));
            let hung = sim.slot_incarnation(0).expect("registered");
            let pid = sim.slot_pid(0);
            sim.freeze(0, Duration::from_secs(5));
            let replaced = sim.run_until(TRIGGER_WAIT, |s| s.slot_is_up(0))?;
            assert!(replaced, "seed {seed}: the hung worker was never replaced");
            assert_ne!(sim.slot_pid(0), pid);
            let after = (sim.slot_pid(0), sim.slot_restarts(0));
            sim.send_restart_request(0, hung, Duration::from_millis(300));
            sim.run_until(Duration::from_secs(1), |_| false)?;
            assert_eq!(
                (sim.slot_pid(0), sim.slot_restarts(0)),
                after,
                "seed {seed}: a stale restart request restarted the slot"
            );
            sim.finish()
        })());
        assert_eq!(records(&report, "watchdog"), 1, "seed {seed}: {report:?}");
        assert_eq!(records(&report, "heartbeat"), 0, "seed {seed}: {report:?}");
        assert_eq!(report.faults.stale_restart_requests, 1);
    }
}

/// The same hang under a watchdog longer than the TTL: the scheduler drops the silent worker
/// first and asks its nanny to restart exactly that incarnation, which the nanny does. The
/// same request delivered again later is a no-op.
#[test]
fn hang_detected_by_the_scheduler_ttl_first() {
    for seed in 0..SEEDS {
        let mut config = SimConfig::supervised(1, 2);
        let nanny = config.nanny.as_mut().expect("set");
        nanny.watchdog_timeout = Duration::from_secs(5);
        assert!(nanny.watchdog_timeout > config.worker_ttl);
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            sim.submit(chain_graph("c", 30));
            let hung = sim.slot_incarnation(0).expect("registered");
            sim.freeze(0, Duration::from_secs(4));
            let replaced = sim.run_until(TRIGGER_WAIT, |s| {
                s.slot_is_up(0) && s.slot_incarnation(0) != Some(hung)
            })?;
            assert!(replaced, "seed {seed}: the hung worker was never replaced");
            assert!(
                sim.now() < Duration::from_secs(3),
                "seed {seed}: replaced at {:?}, after the freeze would have ended",
                sim.now()
            );
            let after = (sim.slot_pid(0), sim.slot_restarts(0));
            sim.send_restart_request(0, hung, Duration::ZERO);
            sim.send_restart_request(0, hung, Duration::from_millis(500));
            sim.run_until(Duration::from_secs(1), |_| false)?;
            assert_eq!((sim.slot_pid(0), sim.slot_restarts(0)), after);
            sim.finish()
        })());
        assert_eq!(records(&report, "heartbeat"), 1, "seed {seed}: {report:?}");
        assert_eq!(records(&report, "watchdog"), 0, "seed {seed}: {report:?}");
        assert!(report.scheduler.workers_lost >= 1);
    }
}

/// The worker↔scheduler connection breaks while both are healthy: the worker exits with
/// `EXIT_CONNECTION_LOST` and its nanny starts a new incarnation at once.
#[test]
fn partition_restarts_the_worker_as_a_new_incarnation() {
    for seed in 0..SEEDS {
        let config = SimConfig::supervised(1, 2);
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            sim.submit(chain_graph("c", 30));
            sim.run_until(Duration::from_millis(20), |_| false)?;
            let before = sim.slot_incarnation(0).expect("registered");
            sim.break_connection(0)?;
            let back = sim.run_until(TRIGGER_WAIT, |s| {
                s.slot_is_up(0) && s.slot_incarnation(0) != Some(before)
            })?;
            assert!(back, "seed {seed}: the slot never came back");
            assert!(sim.now() < Duration::from_secs(1), "seed {seed}: too slow");
            sim.finish()
        })());
        assert_eq!(records(&report, "connection"), 1, "seed {seed}: {report:?}");
        assert_eq!(report.faults.link_breaks, 1);
    }
}

/// A nanny process dies: its workers die with it, the scheduler sees their connections and
/// the nanny's close, and once a new nanny runs on the host its slots come back; the graph,
/// meanwhile running on the other host, completes correctly.
#[test]
fn nanny_death_takes_its_workers_and_a_new_nanny_brings_them_back() {
    for seed in 0..SEEDS {
        let config = SimConfig::supervised(2, 1);
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            let mut b = GraphBuilder::new("w");
            let leaves: Vec<usize> = (0..40).map(|i| b.sum(&[i], &[])).collect();
            let total = b.sum(&[], &leaves);
            b.output(total);
            sim.submit(b.build(None, false));
            let on_n0 = sim.slot_incarnation(0);
            let hit = sim.run_until(TRIGGER_WAIT, |s| {
                s.accepted()
                    .iter()
                    .filter(|a| Some(a.incarnation) == on_n0)
                    .count()
                    >= 3
            })?;
            assert!(hit, "seed {seed}: nothing ran on n0");
            sim.kill_nanny(0)?;
            assert_eq!(sim.slot_pid(0), None, "its worker died with it");
            assert_eq!(sim.slot_status(0), "no nanny");
            sim.run_until(Duration::from_millis(200), |_| false)?;
            assert!(
                events(&sim)
                    .iter()
                    .any(|&(s, c)| s == EventSource::Scheduler && c == EventCause::NannyGone),
                "seed {seed}: {:?}",
                events(&sim)
            );
            sim.finish()
        })());
        assert_eq!(report.faults.nanny_deaths, 1);
        assert_eq!(report.faults.nanny_starts, 3, "seed {seed}: {report:?}");
        assert!(report.scheduler.workers_lost >= 1);
        assert!(
            report.scheduler.results_recomputed >= 3,
            "seed {seed}: {report:?}"
        );
    }
}

/// A killer task kills every worker that starts it until it has been running on
/// `task_max_worker_deaths` workers that died: then it fails as a poison task, and the rest of
/// its graph completes. Each worker has one thread, so the tasks queued behind the killer on
/// the workers it kills are never running there: they are never charged, and no other task
/// becomes a poison task (the simulator's oracle checks each charge).
#[test]
fn poison_task_is_charged_only_for_started_attempts() {
    for seed in 0..SEEDS {
        let config = SimConfig {
            threads_max: 1,
            task_max_worker_deaths: Some(2),
            ..SimConfig::supervised(3, 1)
        };
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            let mut b = GraphBuilder::new("p");
            let a = b.sum(&[1], &[]);
            let k = b.killer(&[a]);
            let after = b.concat(&["x"], &[k]);
            let leaves: Vec<usize> = (0..12).map(|i| b.sum(&[i], &[a])).collect();
            let total = b.sum(&[], &leaves);
            for o in [k, after, total] {
                b.output(o);
            }
            sim.submit(b.build(None, false));
            sim.finish()
        })());
        assert_eq!(report.faults.aborts, 2, "seed {seed}: {report:?}");
        assert_eq!(report.scheduler.poison_tasks, 1, "seed {seed}: {report:?}");
        assert_eq!(records(&report, "crash"), 2, "seed {seed}: {report:?}");
    }
}

/// A task over its time limit is failed by the worker's timer on every attempt, then errs
/// with an error naming the limit; a task within its limit is never touched.
#[test]
fn time_limits_fail_only_tasks_that_exceed_them() {
    for seed in 0..SEEDS {
        let config = SimConfig::supervised(1, 2);
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            let mut b = GraphBuilder::new("t");
            let a = b.sum(&[1], &[]);
            let slow = b.sleep_with_limit(TIME_LIMITED_SLEEP_MS, 50, 1, &[a]);
            let after = b.noop(&[slow]);
            let fits = b.sleep_with_limit(100, 300, 0, &[a]);
            for o in [after, fits] {
                b.output(o);
            }
            sim.submit(b.build(None, false));
            sim.finish()
        })());
        // The slow task failed (after two attempts) and its dependent with it.
        assert_eq!(report.scheduler.tasks_erred, 2, "seed {seed}: {report:?}");
        assert_eq!(report.outputs_checked, 2);
    }
}
