//! The simulator's main test: many seeds of random workload and random faults.
//!
//! - `RUSK_SIM_SEEDS=<n>` runs seeds `0..n` (default 1000), or `k..k+n` with
//!   `RUSK_SIM_SEEDS_FROM=<k>`;
//! - `RUSK_SIM_SEED=<n>` replays that one seed (and prints its report);
//! - `RUSK_SIM_TRACE=<n>` keeps the last `n` events for the failure report (default 60);
//! - `RUSK_SIM_REORDER=1` also reorders packets within a worker link (not TCP; exploratory).
//!
//! The shared-keys seeds (`shared_seeds`) likewise: `RUSK_SIM_SHARED_SEEDS=<n>` (default
//! 2000), `RUSK_SIM_SHARED_SEEDS_FROM=<k>`, `RUSK_SIM_SHARED_SEED=<n>`.
//!
//! The scheduler-crash seeds (`crash_seeds`: the same random workload and faults, the
//! shared-keys clients' session graphs, plus one to three scheduler crashes, each restarted
//! from its journal) likewise: `RUSK_SIM_CRASH_SEEDS=<n>` (default 1000),
//! `RUSK_SIM_CRASH_SEEDS_FROM=<k>`, `RUSK_SIM_CRASH_SEED=<n>`.
//!
//! The executor pool's seeds (`pool_seeds`) likewise: `RUSK_SIM_POOL_SEEDS=<n>` (default 500),
//! `RUSK_SIM_POOL_SEEDS_FROM=<k>`, `RUSK_SIM_POOL_SEED=<n>`.
use rusk_sim::{
    run_pool_seed, run_seed, CrashCounts, PoolReport, PoolSimConfig, SharedCounts, SimConfig,
    SimFailure, SimReport,
};
use std::collections::BTreeMap;
use std::time::Instant;

/// Seeds run when `RUSK_SIM_SEEDS` is not set: about half a minute on two cores.
const DEFAULT_SEEDS: u64 = 1000;
/// Shared-keys seeds run when `RUSK_SIM_SHARED_SEEDS` is not set: about 15 s on two cores.
const DEFAULT_SHARED_SEEDS: u64 = 2000;
/// Scheduler-crash seeds run when `RUSK_SIM_CRASH_SEEDS` is not set.
const DEFAULT_CRASH_SEEDS: u64 = 1000;
/// Pool seeds run when `RUSK_SIM_POOL_SEEDS` is not set: a few seconds on two cores.
const DEFAULT_POOL_SEEDS: u64 = 500;
/// Threads the seeds are spread over (the CI machine has two cores).
const THREADS: u64 = 2;
/// Failures reported in full; the rest are listed by seed.
const FAILURES_SHOWN: usize = 1;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
    )
}

fn config() -> SimConfig {
    let default = SimConfig::default();
    SimConfig {
        reorder_within_links: std::env::var("RUSK_SIM_REORDER").is_ok_and(|v| v == "1"),
        trace_len: env_u64("RUSK_SIM_TRACE").map_or(default.trace_len, |n| n as usize),
        // Most seeds' workers reconnect after losing their scheduler, as real ones do by
        // default; the others exit (`--scheduler-lost-timeout 0`).
        worker_reconnect_share: 0.7,
        ..default
    }
}

#[test]
fn random_seeds() {
    let config = config();
    seeds_test(
        "RUSK_SIM",
        DEFAULT_SEEDS,
        |seed| run_seed(seed, &config),
        |reports| {
            // Most seeds' workers reconnect after a broken link or a drop, as real ones do:
            // that path must have run, and the scheduler must have adopted what they kept.
            if reports.len() >= 100 {
                let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
                assert!(
                    sum(|r| r.crash.worker_reconnects as u64) > 0,
                    "no worker reconnected"
                );
                assert!(
                    sum(|r| r.scheduler.results_adopted) > 0,
                    "no result adopted"
                );
            }
            totals(reports)
        },
    );
}

fn crash_config() -> SimConfig {
    SimConfig {
        scheduler_crashes: true,
        shared_keys: true,
        ..config()
    }
}

/// The scheduler crashes (between turns, or inside one before or after its journal write,
/// losing journal entries written without fsync) and restarts from its journal; workers,
/// nannies and clients reconnect (`sim/crash.rs`), the shared-keys clients' session graphs
/// as the Python client does (`sim/shared/reconnect.rs`).
#[test]
fn crash_seeds() {
    let config = crash_config();
    seeds_test(
        "RUSK_SIM_CRASH",
        DEFAULT_CRASH_SEEDS,
        |seed| run_seed(seed, &config),
        crash_totals,
    );
}

#[test]
fn a_crash_seed_replays_exactly() {
    let config = crash_config();
    for seed in [4, 13] {
        let a = run_seed(seed, &config).map_err(|f| f.to_string());
        let b = run_seed(seed, &config).map_err(|f| f.to_string());
        assert_eq!(a, b, "crash seed {seed} ran differently twice");
    }
}

/// What the scheduler-crash seeds exercised, summed (and that they exercised it at all).
fn crash_totals(reports: &[SimReport]) -> String {
    let mut t = CrashCounts::default();
    for r in reports {
        let c = &r.crash;
        t.between_turns += c.between_turns;
        t.before_write += c.before_write;
        t.workers_told_before_write += c.workers_told_before_write;
        t.after_write += c.after_write;
        t.writer_behind += c.writer_behind;
        t.writer_caught_up += c.writer_caught_up;
        t.writer_behind_turns += c.writer_behind_turns;
        t.unsynced_lost += c.unsynced_lost;
        t.results_adopted += c.results_adopted;
        t.claims += c.claims;
        t.resubmits += c.resubmits;
        t.worker_reconnects += c.worker_reconnects;
        t.client_reconnects += c.client_reconnects;
        t.session_claims += c.session_claims;
        t.requests_resent += c.requests_resent;
        t.extends_replayed += c.extends_replayed;
        t.keys_held_again += c.keys_held_again;
    }
    if reports.len() >= 100 {
        for (what, n) in [
            ("crashes between turns", t.between_turns as u64),
            ("crashes before a journal write", t.before_write as u64),
            (
                "crashes with workers told, before a journal write",
                t.workers_told_before_write as u64,
            ),
            ("crashes after a journal write", t.after_write as u64),
            (
                "crashes with the journal's writer turns behind",
                t.writer_behind as u64,
            ),
            ("unsynced journal entries lost", t.unsynced_lost as u64),
            ("results adopted", t.results_adopted),
            ("graphs claimed again", t.claims as u64),
            ("graphs submitted again", t.resubmits as u64),
            ("worker reconnections", t.worker_reconnects as u64),
            ("session graphs claimed again", t.session_claims as u64),
            ("session requests sent again", t.requests_resent as u64),
            ("keys held again", t.keys_held_again as u64),
        ] {
            assert!(n > 0, "no {what} in {} crash seeds", reports.len());
        }
    }
    format!(
        "{} scheduler crashes: {t:?}\nshared keys: {:?}\n{}",
        t.crashes(),
        shared_sum(reports),
        totals(reports)
    )
}

/// Keys shared between clients: a session client's keys held, adopted, kept and published by
/// another, which checks every value, while the owner lets go and leaves; a lighter main
/// workload beside them (`sim/shared.rs`).
fn shared_config() -> SimConfig {
    SimConfig {
        shared_keys: true,
        graphs_min: 1,
        graphs_max: 4,
        tasks_max: 150,
        ..config()
    }
}

#[test]
fn shared_seeds() {
    let config = shared_config();
    seeds_test(
        "RUSK_SIM_SHARED",
        DEFAULT_SHARED_SEEDS,
        |seed| run_seed(seed, &config),
        shared_totals,
    );
}

/// What the shared-keys clients did in `reports`, summed.
fn shared_sum(reports: &[SimReport]) -> SharedCounts {
    let mut t = SharedCounts::default();
    for r in reports {
        let s = &r.shared;
        t.extensions += s.extensions;
        t.adopt_tasks += s.adopt_tasks;
        t.holds += s.holds;
        t.reports += s.reports;
        t.values_checked += s.values_checked;
        t.errors_checked += s.errors_checked;
        t.fetch_retries += s.fetch_retries;
        t.releases += s.releases;
        t.keeps += s.keeps;
        t.datasets += s.datasets;
        t.unholds += s.unholds;
        t.owner_left_pinned += s.owner_left_pinned;
        t.refused_gone += s.refused_gone;
        t.replicates += s.replicates;
        t.keys_with_copies += s.keys_with_copies;
    }
    t
}

/// What the shared-keys seeds exercised, summed (and that they exercised it at all).
fn shared_totals(reports: &[SimReport]) -> String {
    let t = shared_sum(reports);
    let stored: u64 = reports.iter().map(|r| r.scheduler.replicas_stored).sum();
    let promoted: u64 = reports.iter().map(|r| r.scheduler.replicas_promoted).sum();
    if reports.len() >= 100 {
        for (what, n) in [
            ("adopt tasks", t.adopt_tasks),
            ("holds", t.holds),
            ("values checked", t.values_checked),
            ("fetch retries", t.fetch_retries),
            ("releases", t.releases),
            ("keeps", t.keeps),
            ("datasets", t.datasets),
            ("unholds", t.unholds),
            ("owners leaving pinned graphs", t.owner_left_pinned),
            ("refusals of keys gone", t.refused_gone),
            ("replicate requests", t.replicates),
            ("keys seen with copies", t.keys_with_copies),
            ("replicas stored", stored as u32),
            ("replicas taking over a lost primary", promoted as u32),
        ] {
            assert!(n > 0, "no {what} in {} shared seeds", reports.len());
        }
    }
    format!(
        "{t:?}; replicas stored {stored}, promoted {promoted}; {}",
        totals(reports)
    )
}

/// A seeds test: replay one seed (`<prefix>_SEED`, printing its report), or run many
/// (`<prefix>_SEEDS`, from `<prefix>_SEEDS_FROM`), print what they exercised and fail with
/// every failing seed.
fn seeds_test<R: std::fmt::Debug + Send>(
    prefix: &str,
    default_seeds: u64,
    run: impl Fn(u64) -> Result<R, SimFailure> + Sync,
    totals: impl Fn(&[R]) -> String,
) {
    if let Some(seed) = env_u64(&format!("{prefix}_SEED")) {
        match run(seed) {
            Ok(report) => println!("{report:#?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let n = env_u64(&format!("{prefix}_SEEDS")).unwrap_or(default_seeds);
    let from = env_u64(&format!("{prefix}_SEEDS_FROM")).unwrap_or(0);
    let started = Instant::now();
    let (reports, failures) = run_seeds(from, n, run);
    println!("{n} seeds in {:.1?}", started.elapsed());
    // Failures first: the totals assert that the passing seeds exercised enough.
    fail_on(n, &failures);
    println!("{}", totals(&reports));
}

/// Seeds `from..from + n` spread over [`THREADS`] threads: the reports, and the failures by
/// seed.
fn run_seeds<R: Send>(
    from: u64,
    n: u64,
    run: impl Fn(u64) -> Result<R, SimFailure> + Sync,
) -> (Vec<R>, Vec<SimFailure>) {
    let results: Vec<Result<R, SimFailure>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let run = &run;
                s.spawn(move || {
                    (from..from + n)
                        .filter(|seed| seed % THREADS == t)
                        .map(run)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("seed threads catch core panics themselves"))
            .collect()
    });
    let (reports, failures): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
    let reports = reports.into_iter().filter_map(Result::ok).collect();
    let mut failures: Vec<SimFailure> = failures.into_iter().filter_map(Result::err).collect();
    failures.sort_by_key(|f| f.seed);
    (reports, failures)
}

/// Panic with the first failure in full and every failing seed, if any failed.
fn fail_on(n: u64, failures: &[SimFailure]) {
    if failures.is_empty() {
        return;
    }
    for f in &failures[..FAILURES_SHOWN.min(failures.len())] {
        eprintln!("{f}");
    }
    let list: Vec<String> = failures.iter().map(|f| f.summary()).collect();
    panic!(
        "{} of {n} seeds failed:\n{}",
        failures.len(),
        list.join("\n")
    );
}

fn pool_config() -> PoolSimConfig {
    let default = PoolSimConfig::default();
    PoolSimConfig {
        trace_len: env_u64("RUSK_SIM_TRACE").map_or(default.trace_len, |n| n as usize),
        ..default
    }
}

/// The Python executor pool (`PoolCore`) with executors that crash, hang, compute silently,
/// break the protocol and fail to start, and its own loop stalling.
#[test]
fn pool_seeds() {
    let config = pool_config();
    seeds_test(
        "RUSK_SIM_POOL",
        DEFAULT_POOL_SEEDS,
        |seed| run_pool_seed(seed, &config),
        pool_totals,
    );
}

#[test]
fn a_pool_seed_replays_exactly() {
    let config = PoolSimConfig::default();
    for seed in [5, 11] {
        let a = run_pool_seed(seed, &config).map_err(|f| f.to_string());
        let b = run_pool_seed(seed, &config).map_err(|f| f.to_string());
        assert_eq!(a, b, "pool seed {seed} ran differently twice");
    }
}

/// What the passing pool seeds exercised, summed (and that they exercised it at all).
fn pool_totals(reports: &[PoolReport]) -> String {
    let mut t = PoolReport::default();
    for r in reports {
        t.steps += r.steps;
        t.virtual_time += r.virtual_time;
        t.jobs += r.jobs;
        t.values += r.values;
        t.raised += r.raised;
        t.lost += r.lost;
        t.abandoned += r.abandoned;
        t.no_executor += r.no_executor;
        t.spawns += r.spawns;
        t.spawn_failures += r.spawn_failures;
        t.start_failures += r.start_failures;
        t.crashes += r.crashes;
        t.hangs += r.hangs;
        t.busy_short += r.busy_short;
        t.busy_long += r.busy_long;
        t.busy_survived += r.busy_survived;
        t.protocol_faults += r.protocol_faults;
        t.stalls += r.stalls;
        t.hang_kills += r.hang_kills;
        t.other_kills += r.other_kills;
        t.copies += r.copies;
        t.cancels += r.cancels;
    }
    if reports.len() >= 100 {
        // A run that injects nothing proves nothing.
        for (what, n) in [
            ("crashes", t.crashes),
            ("hangs", t.hangs),
            ("short busy silences", t.busy_short),
            ("long busy silences", t.busy_long),
            ("busy silences survived", t.busy_survived),
            ("hang kills", t.hang_kills),
            ("stalls", t.stalls),
            ("copies", t.copies),
            ("jobs lost with their executor", t.lost),
            ("jobs without an executor", t.no_executor),
            ("abandoned jobs", t.abandoned),
        ] {
            assert!(n > 0, "no {what} in {} pool seeds", reports.len());
        }
    }
    format!(
        "{} steps, {:.0} virtual s; {t}",
        t.steps,
        t.virtual_time.as_secs_f64()
    )
}

#[test]
fn a_shared_seed_replays_exactly() {
    let config = shared_config();
    for seed in [2, 9] {
        let a = run_seed(seed, &config).map_err(|f| f.to_string());
        let b = run_seed(seed, &config).map_err(|f| f.to_string());
        assert_eq!(a, b, "shared seed {seed} ran differently twice");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::default();
    for seed in [3, 17] {
        let a = run_seed(seed, &config).map_err(|f| f.to_string());
        let b = run_seed(seed, &config).map_err(|f| f.to_string());
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
}

/// What the passing seeds exercised, summed: a run that injects nothing proves nothing.
fn totals(reports: &[SimReport]) -> String {
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut records: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        for (k, n) in &r.nanny_records {
            *records.entry(k).or_default() += *n as u64;
        }
    }
    let records: Vec<String> = records.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let supervision = format!(
        "supervision: {} nanny starts, {} nanny deaths, {} hosts vanished, {} nanny links \
         broken, {} crash loops, {} spawn failures, {} stale restart requests, {} operator \
         restarts, {} operator stops, {} workers aborted by killer tasks, {} poison tasks; \
         slowest slot recovery after healing {:?}; nanny records: {}",
        sum(|r| r.faults.nanny_starts as u64),
        sum(|r| r.faults.nanny_deaths as u64),
        sum(|r| r.faults.host_vanishes as u64),
        sum(|r| r.faults.nanny_link_breaks as u64),
        sum(|r| r.faults.crash_loops as u64),
        sum(|r| r.faults.spawn_failures as u64),
        sum(|r| r.faults.stale_restart_requests as u64),
        sum(|r| r.faults.operator_restarts as u64),
        sum(|r| r.faults.operator_stops as u64),
        sum(|r| r.faults.aborts as u64),
        sum(|r| r.scheduler.poison_tasks),
        reports
            .iter()
            .map(|r| r.slowest_slot_recovery)
            .max()
            .unwrap_or_default(),
        records.join(", ")
    );
    supervision
        + "\n"
        + &format!(
        "{} steps, {:.0} virtual s, {} graphs, {} tasks, {} results accepted, {} outputs checked, \
         {} worker lives; faults: {} crashes, {} silent deaths, {} freezes, {} broken links, \
         {} duplicates, {} delays, {} fetch failures; scheduler: {} stale reports, {} workers \
         lost, {} results recomputed; {} worker reconnections, {} results adopted",
        sum(|r| r.steps),
        reports
            .iter()
            .map(|r| r.virtual_time.as_secs_f64())
            .sum::<f64>(),
        sum(|r| r.graphs as u64),
        sum(|r| r.tasks),
        sum(|r| r.results_accepted),
        sum(|r| r.outputs_checked),
        sum(|r| r.worker_lives as u64),
        sum(|r| r.faults.crashes as u64),
        sum(|r| r.faults.silent_deaths as u64),
        sum(|r| r.faults.freezes as u64),
        sum(|r| r.faults.link_breaks as u64),
        sum(|r| r.faults.duplicates as u64),
        sum(|r| r.faults.delays as u64),
        sum(|r| r.faults.fetch_failures as u64),
        sum(|r| r.scheduler.stale_reports),
        sum(|r| r.scheduler.workers_lost),
        sum(|r| r.scheduler.results_recomputed),
        sum(|r| r.crash.worker_reconnects as u64),
        sum(|r| r.scheduler.results_adopted),
    )
}
