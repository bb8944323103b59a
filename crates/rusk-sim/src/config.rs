//! What one simulated run looks like: cluster size, workload, phase lengths and how hard faults
//! are injected. Everything a seed does not choose itself is here, so a failing seed replays
//! exactly with the same `SimConfig`.
use rusk_core::nanny::NannyConfig;
use std::time::Duration;

/// Settings of a simulation run. [`SimConfig::default`] is what `tests/seeds.rs` runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Worker slots without a nanny (an outside supervisor restarts them after a delay):
    /// drawn per seed.
    pub workers_min: u32,
    pub workers_max: u32,
    /// Hosts with a nanny (`rusk nanny`) that supervises its own worker slots, drawn per seed,
    /// with `slots_per_host_min..=slots_per_host_max` slots each.
    pub nanny_hosts_min: u32,
    pub nanny_hosts_max: u32,
    pub slots_per_host_min: u32,
    pub slots_per_host_max: u32,
    /// The nannies' tunables (`nworkers` and `seed` are set per host); `None`: drawn per seed,
    /// scaled down like the scheduler's so that faults are detected quickly.
    pub nanny: Option<NannyConfig>,
    /// The scheduler's poison-task limit; `None`: drawn per seed from 1..=3.
    pub task_max_worker_deaths: Option<u32>,
    /// Threads of each worker, drawn per incarnation.
    pub threads_max: u32,
    /// Graphs the main client submits during the safety phase, drawn per seed.
    pub graphs_min: u32,
    pub graphs_max: u32,
    /// Tasks per random graph (most graphs are drawn from the small end).
    pub tasks_min: u32,
    pub tasks_max: u32,
    /// Also run a second client that submits one graph and disconnects before it finishes.
    pub abandoning_client: bool,
    /// Virtual length of the safety phase (faults on).
    pub safety: Duration,
    /// Virtual time the liveness phase (faults healed) may take before the run fails.
    pub liveness_bound: Duration,
    /// Inject faults during the safety phase.
    pub faults: bool,
    /// Deliver packets of one worker↔scheduler link out of order. Off by default: the cores
    /// assume TCP's in-order delivery; this exists to find out what breaks without it.
    pub reorder_within_links: bool,
    /// When the scheduler drops a worker (`DropWorker`), the chance that packets the worker
    /// already sent still reach the scheduler core (they were read before the socket closed).
    /// This is what exercises fencing of a dropped incarnation.
    pub late_delivery_after_drop: f64,
    /// The chance, drawn per seed, that its workers run with a `--scheduler-lost-timeout` (the
    /// real default, 60 s): a worker whose scheduler connection breaks or that the scheduler
    /// dropped keeps its results and running tasks, reconnects with back-off and registers
    /// again (a new incarnation) naming what it holds and runs, which the scheduler adopts
    /// when still needed. Otherwise (`--scheduler-lost-timeout 0`) it exits and is restarted.
    /// Scheduler crashes make workers reconnect either way.
    pub worker_reconnect_share: f64,
    /// Scheduler tunables (scaled down from the defaults so that faults are detected quickly).
    pub worker_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// How long a fetch from a peer that does not answer takes to fail.
    pub fetch_timeout: Duration,
    /// The scheduler's `no_worker_timeout`. Random workloads only ask for what the cluster
    /// has, but a restricted task may wait through a long outage of its workers: the default
    /// is longer than any run, so only scripted scenarios see tasks fail this way.
    pub no_worker_timeout: Duration,
    /// The scheduler moves queued tasks to idle workers (`SchedulerConfig::work_stealing`).
    pub work_stealing: bool,
    /// Also run two session clients that share keys (holds, adopt tasks, keeps, a dataset):
    /// see `sim/shared.rs`.
    pub shared_keys: bool,
    /// Also crash the scheduler (one to three times in the safety phase) and restart it from
    /// its journal (`sim/crash.rs`); with `shared_keys`, the session clients reconnect too
    /// (`sim/shared/reconnect.rs`).
    pub scheduler_crashes: bool,
    /// Events kept for the failure report.
    pub trace_len: usize,
    /// After the run, let everything settle and check that workers hold no results once every
    /// graph is released, and that the scheduler's view of every nanny's slots is current.
    pub check_leaks: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            workers_min: 0,
            workers_max: 2,
            nanny_hosts_min: 1,
            nanny_hosts_max: 2,
            slots_per_host_min: 1,
            slots_per_host_max: 2,
            nanny: None,
            task_max_worker_deaths: None,
            threads_max: 4,
            graphs_min: 2,
            graphs_max: 8,
            tasks_min: 5,
            tasks_max: 300,
            abandoning_client: true,
            safety: Duration::from_secs(10),
            liveness_bound: Duration::from_secs(60),
            faults: true,
            reorder_within_links: false,
            late_delivery_after_drop: 0.5,
            worker_reconnect_share: 0.0,
            worker_ttl: Duration::from_millis(1500),
            heartbeat_interval: Duration::from_millis(250),
            fetch_timeout: Duration::from_millis(1000),
            no_worker_timeout: Duration::from_secs(3600),
            work_stealing: true,
            shared_keys: false,
            scheduler_crashes: false,
            trace_len: 60,
            check_leaks: true,
        }
    }
}

impl SimConfig {
    /// A quiet cluster of exactly `workers` workers without nannies and no random workload:
    /// the starting point of scripted scenarios, which submit their own graphs and inject
    /// their own faults. The poison-task limit is the scheduler's default (3).
    pub fn scripted(workers: u32) -> SimConfig {
        SimConfig {
            workers_min: workers,
            workers_max: workers,
            nanny_hosts_min: 0,
            nanny_hosts_max: 0,
            task_max_worker_deaths: Some(3),
            graphs_min: 0,
            graphs_max: 0,
            abandoning_client: false,
            faults: false,
            ..SimConfig::default()
        }
    }

    /// Like [`SimConfig::scripted`], but every worker is supervised: `hosts` nannies of
    /// `slots` slots each (worker slot `h * slots + k` is slot `k` of nanny `n{h}`), with the
    /// nanny's default tunables scaled down (watchdog 1 s, start timeout 5 s, kill grace
    /// 200 ms, back-off 100 ms doubling to 1 s, stable after 3 s, failed after more than 3
    /// crash restarts within 20 s).
    pub fn supervised(hosts: u32, slots: u32) -> SimConfig {
        SimConfig {
            workers_min: 0,
            workers_max: 0,
            nanny_hosts_min: hosts,
            nanny_hosts_max: hosts,
            slots_per_host_min: slots,
            slots_per_host_max: slots,
            nanny: Some(NannyConfig {
                watchdog_timeout: Duration::from_secs(1),
                start_timeout: Duration::from_secs(5),
                kill_grace: Duration::from_millis(200),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                stable_period: Duration::from_secs(3),
                crash_restarts_max: 3,
                crash_window: Duration::from_secs(20),
                ..NannyConfig::default()
            }),
            ..SimConfig::scripted(0)
        }
    }
}
