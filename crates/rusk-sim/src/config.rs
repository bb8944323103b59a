//! What one simulated run looks like: cluster size, workload, phase lengths and how hard faults
//! are injected. Everything a seed does not choose itself is here, so a failing seed replays
//! exactly with the same `SimConfig`.
use std::time::Duration;

/// Settings of a simulation run. [`SimConfig::default`] is what `tests/seeds.rs` runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Worker slots (processes that get restarted under the same name): drawn per seed.
    pub workers_min: u32,
    pub workers_max: u32,
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
    /// Scheduler tunables (scaled down from the defaults so that faults are detected quickly).
    pub worker_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// How long a fetch from a peer that does not answer takes to fail.
    pub fetch_timeout: Duration,
    /// Events kept for the failure report.
    pub trace_len: usize,
    /// Check that workers hold no results once every graph is released.
    pub check_leaks: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            workers_min: 1,
            workers_max: 4,
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
            worker_ttl: Duration::from_millis(1500),
            heartbeat_interval: Duration::from_millis(250),
            fetch_timeout: Duration::from_millis(1000),
            trace_len: 60,
            check_leaks: true,
        }
    }
}

impl SimConfig {
    /// A quiet cluster of exactly `workers` workers and no random workload: the starting point
    /// of scripted scenarios, which submit their own graphs and inject their own faults.
    pub fn scripted(workers: u32) -> SimConfig {
        SimConfig {
            workers_min: workers,
            workers_max: workers,
            graphs_min: 0,
            graphs_max: 0,
            abandoning_client: false,
            faults: false,
            ..SimConfig::default()
        }
    }
}
