//! Scripted scenarios: a fault injected at one chosen, racy moment, on a quiet cluster. Each
//! runs under several seeds (the latencies and placements differ) and must end with every
//! output correct, plus evidence that the intended recovery path actually ran.
use rusk_sim::workload::{GraphBuilder, GraphModel};
use rusk_sim::{Sim, SimConfig, SimFailure, SimReport};
use std::time::Duration;

/// Seeds per scenario.
const SEEDS: u64 = 20;
/// Enough for every worker of a quiet cluster to have joined.
const WARM_UP: Duration = Duration::from_millis(100);
/// Bound on the virtual time a scenario waits for its trigger.
const TRIGGER_WAIT: Duration = Duration::from_secs(10);

fn warm(seed: u64, config: &SimConfig) -> Result<Sim, SimFailure> {
    let mut sim = Sim::new(seed, config);
    sim.run_until(WARM_UP, |_| false)?;
    Ok(sim)
}

fn check(r: Result<SimReport, SimFailure>) -> SimReport {
    r.unwrap_or_else(|f| panic!("{f}"))
}

/// Two leaves on different workers and a join that fetches one of them.
fn join_graph() -> GraphModel {
    let mut b = GraphBuilder::new("j");
    let a = b.sum(&[1], &[]);
    let c = b.sum(&[2], &[]);
    b.sum(&[3], &[a, c]);
    b.build(None, false)
}

fn chain_graph(len: usize) -> GraphModel {
    let mut b = GraphBuilder::new("c");
    let mut prev = b.sum(&[1], &[]);
    for i in 1..len {
        prev = b.sum(&[i as i64], &[prev]);
    }
    b.build(None, false)
}

/// The peer a worker is fetching from crashes mid-fetch: the fetch fails, the worker reports
/// `MissingDep`, the scheduler recomputes the lost input.
#[test]
fn kill_during_fetch() {
    for seed in 0..SEEDS {
        let report = check((|| {
            let mut sim = warm(seed, &SimConfig::scripted(2))?;
            sim.submit(join_graph());
            let hit = sim.run_until(TRIGGER_WAIT, |s| !s.worker_fetches_in_flight().is_empty())?;
            assert!(hit, "seed {seed}: no fetch between workers happened");
            let (_, peer) = sim.worker_fetches_in_flight()[0].clone();
            let slot = sim
                .slot_at(&peer)
                .expect("the peer is up when the fetch starts");
            sim.kill(slot, false)?;
            sim.finish()
        })());
        assert!(
            report.scheduler.workers_lost >= 1,
            "seed {seed}: {report:?}"
        );
        assert!(
            report.scheduler.results_recomputed >= 1,
            "seed {seed}: {report:?}"
        );
    }
}

/// A worker freezes while running tasks for longer than the TTL: the scheduler drops it, its
/// work is redone elsewhere, and whatever it had sent before is fenced. Freezes just over the
/// TTL make the thaw race the drop.
#[test]
fn freeze_longer_than_ttl_then_thaw() {
    for seed in 0..SEEDS {
        for factor in [1.05, 1.3, 3.0] {
            let config = SimConfig {
                late_delivery_after_drop: 1.0,
                ..SimConfig::scripted(2)
            };
            let ttl = config.worker_ttl;
            let report = check((|| {
                let mut sim = warm(seed, &config)?;
                let mut b = GraphBuilder::new("f");
                let leaves: Vec<usize> = (0..30).map(|i| b.sum(&[i], &[])).collect();
                let root = b.sum(&[], &leaves);
                b.output(root);
                for _ in 0..4 {
                    let s = b.sleep_ms(200, &[]);
                    b.output(s);
                }
                sim.submit(b.build(None, false));
                let hit = sim.run_until(TRIGGER_WAIT, |s| s.running_on(0) > 0)?;
                assert!(hit, "seed {seed}: worker 0 never ran anything");
                let frozen_for = ttl.mul_f64(factor);
                sim.freeze(0, frozen_for);
                // `finish` heals (thaws) at once: let the freeze run its course first.
                sim.run_until(frozen_for + Duration::from_millis(500), |_| false)?;
                sim.finish()
            })());
            assert_eq!(report.faults.freezes, 1);
            // Just over the TTL the thaw may beat the drop (the race is the point); well over
            // it (more than the TTL plus a tick plus a heartbeat), the drop always comes first.
            if factor > 1.2 {
                assert!(
                    report.scheduler.workers_lost >= 1,
                    "seed {seed} x{factor}: {report:?}"
                );
            }
        }
    }
}

/// A freeze shorter than the TTL costs nothing: the worker resumes where it was.
#[test]
fn freeze_shorter_than_ttl_is_survived() {
    for seed in 0..SEEDS {
        let config = SimConfig::scripted(2);
        let ttl = config.worker_ttl;
        let report = check((|| {
            let mut sim = warm(seed, &config)?;
            sim.submit(chain_graph(10));
            let hit = sim.run_until(TRIGGER_WAIT, |s| s.running_on(0) + s.running_on(1) > 0)?;
            assert!(hit);
            sim.freeze(0, ttl / 3);
            sim.freeze(1, ttl / 3);
            sim.run_until(ttl / 2, |_| false)?;
            sim.finish()
        })());
        assert_eq!(report.scheduler.workers_lost, 0, "seed {seed}: {report:?}");
    }
}

/// A `TaskDone` delivered twice is accepted once; the copy counts as a stale report.
#[test]
fn duplicate_task_done() {
    for seed in 0..SEEDS {
        let report = check((|| {
            let mut sim = warm(seed, &SimConfig::scripted(1))?;
            sim.submit(chain_graph(5));
            sim.duplicate_next_task_done();
            sim.finish()
        })());
        assert_eq!(report.faults.duplicates, 1);
        assert!(
            report.scheduler.stale_reports >= 1,
            "seed {seed}: {report:?}"
        );
        assert_eq!(report.results_accepted, 5, "seed {seed}: {report:?}");
    }
}

/// The worker holding the only copy of a chain's latest intermediate dies (loudly, or silently
/// so that only the TTL notices): the chain is recomputed from its start.
#[test]
fn crash_loses_the_only_copy_of_a_chain_intermediate() {
    const LEN: usize = 12;
    const CUT: usize = 5;
    for seed in 0..SEEDS {
        for silent in [false, true] {
            let report = check((|| {
                let mut sim = warm(seed, &SimConfig::scripted(2))?;
                let m = sim.submit(chain_graph(LEN));
                let hit = sim.run_until(TRIGGER_WAIT, |s| {
                    let Some(g) = s.graph_id(m) else { return false };
                    let index = s.spec_index(m, CUT);
                    s.accepted()
                        .iter()
                        .any(|a| a.task.graph == g && a.task.index == index)
                })?;
                assert!(hit, "seed {seed}: the chain never got to task {CUT}");
                let holder = sim.accepted().last().expect("just accepted").incarnation;
                let slot = sim.slot_of(holder).expect("the holder is a known worker");
                sim.kill(slot, silent)?;
                sim.finish()
            })());
            assert!(
                report.scheduler.workers_lost >= 1,
                "seed {seed}: {report:?}"
            );
            assert!(
                report.scheduler.results_recomputed > CUT as u64,
                "seed {seed} silent={silent}: {report:?}"
            );
        }
    }
}

/// The scheduler crashes in the middle of a chain whose results are spread over two workers:
/// the new one resumes the graph from its journal, the workers register again naming the
/// results they kept, and those still needed are adopted, not recomputed.
#[test]
fn scheduler_crash_mid_graph() {
    let mut adopted = 0;
    for seed in 0..SEEDS {
        let report = check((|| {
            let config = SimConfig {
                scheduler_crashes: true,
                ..SimConfig::scripted(2)
            };
            let mut sim = warm(seed, &config)?;
            sim.submit(chain_graph(40));
            let hit = sim.run_until(TRIGGER_WAIT, |s| s.accepted().len() >= 15)?;
            assert!(hit, "seed {seed}: the chain did not get going");
            sim.crash_scheduler()?;
            sim.finish()
        })());
        assert_eq!(report.crash.crashes(), 1, "seed {seed}");
        assert!(
            report.crash.worker_reconnects >= 2,
            "seed {seed}: {report:?}"
        );
        assert!(
            report.crash.client_reconnects >= 1,
            "seed {seed}: {report:?}"
        );
        adopted += report.crash.results_adopted;
    }
    assert!(adopted > 0, "no result was adopted after a scheduler crash");
}
