//! What the scheduler shows about itself: Prometheus metrics (`/metrics`) and the snapshots the
//! dashboard and the JSON API serve.
//!
//! The core loop owns an [`Observer`]. It feeds it every recovery record (counters and
//! histograms by cause) and, every [`PUBLISH_INTERVAL`], a fresh `status()` of the core: the
//! observer turns that into gauges and into an immutable [`Snapshot`] published on a
//! `tokio::sync::watch` channel. HTTP handlers only ever read the latest snapshot (or ask the
//! loop through a query channel): they never hold anything the loop waits for.
//!
//! Per-worker series (`rusk_worker_*{worker="..."}`) are encoded at scrape time from the latest
//! snapshot, so a worker that left has no stale series and nothing is kept per departed worker.
use bytes::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rusk_core::scheduler::SchedulerStats;
use rusk_proto::msg::{EventCause, EventRecord, EventSource, StatusSnapshot};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the core loop publishes a snapshot (and refreshes the gauges).
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// How often the loop-lag probe wakes up.
const LAG_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// The lag gauge is the largest lateness over this many probe ticks (one second).
const LAG_WINDOW_TICKS: usize = 10;
/// Window over which `tasks_per_second` is measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// A worker's CPU use is measured over at least this much time (its vitals come with
/// heartbeats, so shorter windows are mostly jitter).
const CPU_WINDOW: Duration = Duration::from_secs(2);

/// Slot states a nanny reports (always exported, 0 when none).
const SLOT_STATES: [&str; 7] = [
    "starting",
    "running",
    "killing",
    "backing-off",
    "failed",
    "stopping",
    "stopped",
];
/// Causes of a nanny's restarts (`RestartCause::kind`), exported at 0 from the start.
const RESTART_CAUSES: [EventCause; 8] = [
    EventCause::Crash,
    EventCause::Connection,
    EventCause::Watchdog,
    EventCause::Heartbeat,
    EventCause::Memory,
    EventCause::Operator,
    EventCause::StartTimeout,
    EventCause::SpawnFailed,
];
/// Worker states as `rusk status` shows them.
const WORKER_STATES: [&str; 2] = ["running", "unhealthy"];

/// Buckets of the detection and recovery time histograms, in seconds.
const RECOVERY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of the scheduler's loop lag and turn time histograms, in seconds.
const LOOP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

type Label = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

fn label(k: &'static str, v: &str) -> Label {
    [(k, v.to_string())]
}

fn recovery_histogram() -> Histogram {
    Histogram::new(RECOVERY_BUCKETS)
}

/// The scheduler's Prometheus registry and the metrics the loop updates.
pub struct Metrics {
    registry: Registry,
    workers: Family<Label, Gauge>,
    slots: Family<Label, Gauge>,
    nannies: Gauge,
    tasks: Family<Label, Gauge>,
    graphs: Gauge,
    connections: Family<Label, Gauge>,
    tasks_completed: Counter,
    tasks_erred: Counter,
    tasks_per_second: FloatGauge,
    transitions: Counter,
    restarts: Family<Label, Counter>,
    events: Family<Labels2, Counter>,
    detection: HistogramFamily,
    recovery: HistogramFamily,
    workers_lost: Counter,
    stale_reports: Counter,
    results_recomputed: Counter,
    poison_tasks: Counter,
    executor_replacements: Counter,
    transfer_bytes: Counter,
    heartbeat_age_max: FloatGauge,
    loop_lag: FloatGauge,
    loop_lag_seconds: Histogram,
    turn_seconds: Histogram,
    /// The journal's writer thread counts into these.
    pub journal: JournalMetrics,
    uptime: FloatGauge,
    /// Loop lag in microseconds (max over the last second), for the snapshots.
    lag_us: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(latest: watch::Receiver<Arc<Snapshot>>) -> Metrics {
        let mut r = Registry::default();
        let workers = Family::<Label, Gauge>::default();
        r.register(
            "rusk_workers",
            "Workers connected to the scheduler, by state (running, unhealthy)",
            workers.clone(),
        );
        let slots = Family::<Label, Gauge>::default();
        r.register(
            "rusk_nanny_slots",
            "Worker slots of all nannies, by the state their nanny reports",
            slots.clone(),
        );
        let nannies = Gauge::default();
        r.register("rusk_nannies", "Nannies connected", nannies.clone());
        let tasks = Family::<Label, Gauge>::default();
        r.register(
            "rusk_tasks",
            "Tasks of live graphs, by scheduler state (waiting, ready, assigned, memory, released, erred)",
            tasks.clone(),
        );
        let graphs = Gauge::default();
        r.register(
            "rusk_graphs",
            "Graphs held by the scheduler",
            graphs.clone(),
        );
        let connections = Family::<Label, Gauge>::default();
        r.register(
            "rusk_connections",
            "Authenticated connections, by role (worker, client, nanny)",
            connections.clone(),
        );
        let tasks_completed = Counter::default();
        r.register(
            "rusk_tasks_completed",
            "Task results accepted (a recomputed result counts again)",
            tasks_completed.clone(),
        );
        let tasks_erred = Counter::default();
        r.register(
            "rusk_tasks_erred",
            "Tasks that ended in error (own failure or a failed dependency)",
            tasks_erred.clone(),
        );
        let tasks_per_second = FloatGauge::default();
        r.register(
            "rusk_tasks_completed_per_second",
            "Task results accepted per second over the last 5 s",
            tasks_per_second.clone(),
        );
        let transitions = Counter::default();
        r.register(
            "rusk_task_transitions",
            "Task state transitions in the scheduler core",
            transitions.clone(),
        );
        let restarts = Family::<Label, Counter>::default();
        // Present from the start (at 0) so that rate() and increase() see the first restart.
        for cause in RESTART_CAUSES {
            restarts
                .get_or_create(&label("cause", cause.as_str()))
                .inc_by(0);
        }
        r.register(
            "rusk_restarts",
            "Worker restarts completed by a nanny (a new incarnation registered), by cause",
            restarts.clone(),
        );
        let events = Family::<Labels2, Counter>::default();
        r.register(
            "rusk_recovery_events",
            "Entries of the recovery log (rusk events), by source and cause",
            events.clone(),
        );
        let detection: HistogramFamily = Family::new_with_constructor(recovery_histogram);
        r.register(
            "rusk_detection_seconds",
            "Time from a fault to its detection, by cause",
            detection.clone(),
        );
        let recovery: HistogramFamily = Family::new_with_constructor(recovery_histogram);
        r.register(
            "rusk_recovery_seconds",
            "Time from detection to recovery (a new incarnation registered), by cause",
            recovery.clone(),
        );
        let workers_lost = Counter::default();
        r.register(
            "rusk_workers_lost",
            "Workers the scheduler declared lost (connection closed or heartbeat timeout)",
            workers_lost.clone(),
        );
        let stale_reports = Counter::default();
        r.register(
            "rusk_stale_reports",
            "Worker reports ignored by fencing (old attempt or incarnation)",
            stale_reports.clone(),
        );
        let results_recomputed = Counter::default();
        r.register(
            "rusk_results_recomputed",
            "Lost results recomputed from lineage",
            results_recomputed.clone(),
        );
        let poison_tasks = Counter::default();
        r.register(
            "rusk_poison_tasks",
            "Tasks failed as poison (too many workers died running them)",
            poison_tasks.clone(),
        );
        let executor_replacements = Counter::default();
        r.register(
            "rusk_executor_replacements",
            "Task executor processes replaced by workers (after a hang or crash)",
            executor_replacements.clone(),
        );
        let transfer_bytes = Counter::default();
        r.register(
            "rusk_transfer_bytes",
            "Bytes of results workers fetched from each other",
            transfer_bytes.clone(),
        );
        let heartbeat_age_max = FloatGauge::default();
        r.register(
            "rusk_heartbeat_age_max_seconds",
            "Time since the last message of the most silent worker",
            heartbeat_age_max.clone(),
        );
        let loop_lag = FloatGauge::default();
        r.register(
            "rusk_scheduler_loop_lag_seconds",
            "Largest lateness of the scheduler's event loop over the last second",
            loop_lag.clone(),
        );
        let loop_lag_seconds = Histogram::new(LOOP_BUCKETS);
        r.register(
            "rusk_scheduler_loop_lag_sample_seconds",
            "Lateness of the scheduler's event loop, sampled every 100 ms",
            loop_lag_seconds.clone(),
        );
        let turn_seconds = Histogram::new(LOOP_BUCKETS);
        r.register(
            "rusk_scheduler_turn_seconds",
            "Time the core loop spends per turn (handling a batch of events and sending)",
            turn_seconds.clone(),
        );
        let journal = JournalMetrics::default();
        r.register(
            "rusk_journal_commits",
            "Commits of the scheduler's journal (each holds one or more loop turns' records)",
            journal.commits.clone(),
        );
        r.register(
            "rusk_journal_commit_seconds",
            "Time one journal commit took (encoding, writing, and its fsync unless \
             --journal-sync process)",
            journal.commit_seconds.clone(),
        );
        r.register(
            "rusk_journal_bytes",
            "Bytes of records written to the journal",
            journal.bytes.clone(),
        );
        r.register(
            "rusk_journal_write_failures",
            "Journal writes that failed (disk full, say); their records are kept and retried",
            journal.write_failures.clone(),
        );
        r.register(
            "rusk_journal_queue_waits",
            "Times the scheduler's loop waited because JOURNAL_QUEUE_TURNS_MAX turns were \
             queued for the journal (its disk is behind)",
            journal.queue_waits.clone(),
        );
        let uptime = FloatGauge::default();
        r.register(
            "rusk_scheduler_uptime_seconds",
            "Time since the scheduler started",
            uptime.clone(),
        );
        let info = Family::<Label, Gauge>::default();
        info.get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        r.register("rusk_build_info", "The rusk version (value 1)", info);
        r.register_collector(Box::new(WorkerCollector { latest }));
        Metrics {
            registry: r,
            workers,
            slots,
            nannies,
            tasks,
            graphs,
            connections,
            tasks_completed,
            tasks_erred,
            tasks_per_second,
            transitions,
            restarts,
            events,
            detection,
            recovery,
            workers_lost,
            stale_reports,
            results_recomputed,
            poison_tasks,
            executor_replacements,
            transfer_bytes,
            heartbeat_age_max,
            loop_lag,
            loop_lag_seconds,
            turn_seconds,
            journal,
            uptime,
            lag_us: AtomicU64::new(0),
        }
    }

    /// The whole exposition (OpenMetrics text, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A recovery log entry: count it, and time it.
    pub fn on_record(&self, r: &EventRecord) {
        self.events
            .get_or_create(&[
                ("source", r.source.as_str().to_string()),
                ("cause", r.cause.as_str().to_string()),
            ])
            .inc();
        let cause = label("cause", r.cause.as_str());
        if r.source == EventSource::Nanny && r.new_incarnation.is_some() {
            self.restarts.get_or_create(&cause).inc();
        }
        if let Some(ms) = r.detection_ms {
            self.detection
                .get_or_create(&cause)
                .observe(ms as f64 / 1000.0);
        }
        if let Some(ms) = r.recovery_ms {
            self.recovery
                .get_or_create(&cause)
                .observe(ms as f64 / 1000.0);
        }
    }

    /// One turn of the core loop took `d`.
    pub fn observe_turn(&self, d: Duration) {
        self.turn_seconds.observe(d.as_secs_f64());
    }

    /// Largest loop lag over the last second.
    pub fn loop_lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }
}

/// What the journal's writer thread counts (clones share the counts).
#[derive(Clone)]
pub struct JournalMetrics {
    pub commits: Counter,
    pub commit_seconds: Histogram,
    pub bytes: Counter,
    pub write_failures: Counter,
    pub queue_waits: Counter,
}

impl Default for JournalMetrics {
    fn default() -> Self {
        JournalMetrics {
            commits: Counter::default(),
            commit_seconds: Histogram::new(LOOP_BUCKETS),
            bytes: Counter::default(),
            write_failures: Counter::default(),
            queue_waits: Counter::default(),
        }
    }
}

/// Measure the lateness of a periodic timer on this (the scheduler's) runtime: a loop busy with
/// a huge batch, or blocked, shows up here.
pub fn spawn_lag_probe(metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LAG_PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut window: VecDeque<Duration> = VecDeque::with_capacity(LAG_WINDOW_TICKS);
        loop {
            let due = tick.tick().await;
            let late = tokio::time::Instant::now().saturating_duration_since(due);
            metrics.loop_lag_seconds.observe(late.as_secs_f64());
            if window.len() == LAG_WINDOW_TICKS {
                window.pop_front();
            }
            window.push_back(late);
            let max = window.iter().max().copied().unwrap_or_default();
            metrics
                .lag_us
                .store(max.as_micros() as u64, Ordering::Relaxed);
            metrics.loop_lag.set(max.as_secs_f64());
        }
    });
}

/// What the dashboard and the JSON API serve: one consistent picture, taken by the core loop.
pub struct Snapshot {
    /// Increases with every publication.
    pub seq: u64,
    pub taken: Instant,
    /// Exactly what `rusk status --json` prints.
    pub status: StatusSnapshot,
    /// The scheduler itself and what the shell measures around the core.
    pub overview: Overview,
    status_json: OnceLock<Bytes>,
    overview_json: OnceLock<Bytes>,
    stream_json: OnceLock<Bytes>,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot::new(0, StatusSnapshot::default(), Overview::default())
    }

    fn new(seq: u64, status: StatusSnapshot, overview: Overview) -> Snapshot {
        Snapshot {
            seq,
            taken: Instant::now(),
            status,
            overview,
            status_json: OnceLock::new(),
            overview_json: OnceLock::new(),
            stream_json: OnceLock::new(),
        }
    }

    /// `status` as JSON, serialised once however many clients ask.
    pub fn status_json(&self) -> Bytes {
        self.status_json
            .get_or_init(|| json_bytes(&self.status))
            .clone()
    }

    pub fn overview_json(&self) -> Bytes {
        self.overview_json
            .get_or_init(|| json_bytes(&self.overview))
            .clone()
    }

    /// `{"status": ..., "overview": ...}`, what the dashboard's stream carries.
    pub fn stream_json(&self) -> Bytes {
        self.stream_json
            .get_or_init(|| {
                #[derive(Serialize)]
                struct Both<'a> {
                    status: &'a StatusSnapshot,
                    overview: &'a Overview,
                }
                json_bytes(&Both {
                    status: &self.status,
                    overview: &self.overview,
                })
            })
            .clone()
    }
}

fn json_bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("our snapshot types serialise"))
}

/// The scheduler and its surroundings, alongside `StatusSnapshot`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overview {
    pub version: &'static str,
    pub host: String,
    pub pid: u32,
    /// Where workers and clients connect.
    pub address: String,
    pub time_unix_ms: u64,
    pub uptime_ms: u64,
    /// Largest lateness of the scheduler's event loop over the last second.
    pub loop_lag_ms: f64,
    pub tasks_completed: u64,
    pub tasks_erred: u64,
    pub tasks_per_second: f64,
    /// Sequence number the next recovery event will get (`/api/events?since=`).
    pub events_next: u64,
    pub workers_by_state: BTreeMap<String, u64>,
    pub slots_by_state: BTreeMap<String, u64>,
    pub connections: BTreeMap<String, u64>,
    pub transfer_bytes: u64,
    pub executor_replacements: u64,
    pub stats: StatsView,
    /// Per worker, in the order of `status.workers`.
    pub workers: Vec<WorkerExtra>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StatsView {
    pub transitions: u64,
    pub stale_reports: u64,
    pub workers_lost: u64,
    pub results_recomputed: u64,
    pub poison_tasks: u64,
    /// Work stealing: `Steal` requests sent, and tasks their victims gave up.
    pub steals_requested: u64,
    pub tasks_stolen: u64,
}

/// What the shell knows of a worker beyond the core's status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerExtra {
    pub incarnation: u64,
    /// Time since this incarnation joined.
    pub uptime_ms: u64,
    /// CPU use of the worker and its children (100 = one core), over the last seconds.
    pub cpu_percent: Option<f64>,
}

/// Per-incarnation bookkeeping of the observer.
struct Tracked {
    joined: Instant,
    /// CPU samples (when observed, cpu seconds), oldest first.
    cpu: VecDeque<(Instant, f64)>,
    bytes_fetched: u64,
    executors_replaced: u64,
}

impl Tracked {
    fn new(joined: Instant) -> Tracked {
        Tracked {
            joined,
            cpu: VecDeque::new(),
            bytes_fetched: 0,
            executors_replaced: 0,
        }
    }
}

/// Static facts about this scheduler for the overview.
pub struct SchedulerIdentity {
    pub host: String,
    pub address: String,
    pub epoch: Instant,
    pub epoch_unix_ms: u64,
}

/// Lives in the core loop: builds snapshots and keeps the metrics current.
pub struct Observer {
    pub metrics: Arc<Metrics>,
    tx: watch::Sender<Arc<Snapshot>>,
    identity: SchedulerIdentity,
    tracked: FxHashMap<u64, Tracked>,
    completed: VecDeque<(Instant, u64)>,
    transfer_bytes: u64,
    executor_replacements: u64,
    seq: u64,
}

impl Observer {
    pub fn new(identity: SchedulerIdentity) -> Observer {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty()));
        Observer {
            metrics: Arc::new(Metrics::new(rx)),
            tx,
            identity,
            tracked: FxHashMap::default(),
            completed: VecDeque::new(),
            transfer_bytes: 0,
            executor_replacements: 0,
            seq: 0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn worker_joined(&mut self, incarnation: u64) {
        self.tracked
            .insert(incarnation, Tracked::new(Instant::now()));
    }

    /// Take in the core's current status and publish a snapshot.
    pub fn publish(
        &mut self,
        status: StatusSnapshot,
        stats: &SchedulerStats,
        events_next: u64,
        connections: [(&str, usize); 3],
    ) {
        let now = Instant::now();
        let m = &self.metrics;
        // Forget departed incarnations; start tracking any we missed.
        let live: rustc_hash::FxHashSet<u64> =
            status.workers.iter().map(|w| w.incarnation).collect();
        self.tracked.retain(|inc, _| live.contains(inc));
        let mut workers_by_state: BTreeMap<String, u64> =
            WORKER_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        let mut extras = Vec::with_capacity(status.workers.len());
        let mut heartbeat_age_max = 0u64;
        for w in &status.workers {
            *workers_by_state.entry(w.state.clone()).or_default() += 1;
            heartbeat_age_max = heartbeat_age_max.max(w.heartbeat_age_ms);
            let t = self
                .tracked
                .entry(w.incarnation)
                .or_insert_with(|| Tracked::new(now));
            let v = &w.vitals;
            // Counters of a worker only grow; add what grew since the last look.
            if v.bytes_fetched > t.bytes_fetched {
                self.transfer_bytes += v.bytes_fetched - t.bytes_fetched;
                t.bytes_fetched = v.bytes_fetched;
            }
            if v.executors_replaced > t.executors_replaced {
                self.executor_replacements += v.executors_replaced - t.executors_replaced;
                t.executors_replaced = v.executors_replaced;
            }
            if t.cpu.back().is_none_or(|&(_, c)| c != v.cpu_seconds) {
                t.cpu.push_back((now, v.cpu_seconds));
            }
            while t.cpu.len() > 2 && now.duration_since(t.cpu[1].0) >= CPU_WINDOW {
                t.cpu.pop_front();
            }
            let cpu_percent = match (t.cpu.front(), t.cpu.back()) {
                (Some(&(t0, c0)), Some(&(t1, c1))) if t1.duration_since(t0) >= CPU_WINDOW / 2 => {
                    Some(((c1 - c0) / t1.duration_since(t0).as_secs_f64() * 100.0).max(0.0))
                }
                _ => None,
            };
            extras.push(WorkerExtra {
                incarnation: w.incarnation,
                uptime_ms: now.duration_since(t.joined).as_millis() as u64,
                cpu_percent: cpu_percent.map(|p| (p * 10.0).round() / 10.0),
            });
        }
        let mut slots_by_state: BTreeMap<String, u64> =
            SLOT_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        for n in &status.nannies {
            for s in &n.slots {
                *slots_by_state.entry(s.state.clone()).or_default() += 1;
            }
        }
        // Completion rate over the last few seconds.
        self.completed.push_back((now, stats.tasks_completed));
        while self.completed.len() > 2 && now.duration_since(self.completed[1].0) >= RATE_WINDOW {
            self.completed.pop_front();
        }
        let tasks_per_second = match (self.completed.front(), self.completed.back()) {
            (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => {
                (c1 - c0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        };

        // Gauges and counters.
        for (state, n) in &workers_by_state {
            m.workers
                .get_or_create(&label("state", state))
                .set(*n as i64);
        }
        for (state, n) in &slots_by_state {
            m.slots.get_or_create(&label("state", state)).set(*n as i64);
        }
        m.nannies.set(status.nannies.len() as i64);
        for (state, n) in &status.tasks {
            m.tasks.get_or_create(&label("state", state)).set(*n as i64);
        }
        m.graphs.set(status.graphs.len() as i64);
        let mut conns = BTreeMap::new();
        for (role, n) in connections {
            m.connections
                .get_or_create(&label("role", role))
                .set(n as i64);
            conns.insert(role.to_string(), n as u64);
        }
        store(&m.tasks_completed, stats.tasks_completed);
        store(&m.tasks_erred, stats.tasks_erred);
        store(&m.transitions, stats.transitions);
        store(&m.workers_lost, stats.workers_lost);
        store(&m.stale_reports, stats.stale_reports);
        store(&m.results_recomputed, stats.results_recomputed);
        store(&m.poison_tasks, stats.poison_tasks);
        store(&m.transfer_bytes, self.transfer_bytes);
        store(&m.executor_replacements, self.executor_replacements);
        m.tasks_per_second.set(tasks_per_second);
        m.heartbeat_age_max.set(heartbeat_age_max as f64 / 1000.0);
        let uptime = now.duration_since(self.identity.epoch);
        m.uptime.set(uptime.as_secs_f64());

        let overview = Overview {
            version: env!("CARGO_PKG_VERSION"),
            host: self.identity.host.clone(),
            pid: std::process::id(),
            address: self.identity.address.clone(),
            time_unix_ms: self.identity.epoch_unix_ms + uptime.as_millis() as u64,
            uptime_ms: uptime.as_millis() as u64,
            loop_lag_ms: m.loop_lag().as_secs_f64() * 1000.0,
            tasks_completed: stats.tasks_completed,
            tasks_erred: stats.tasks_erred,
            tasks_per_second: (tasks_per_second * 10.0).round() / 10.0,
            events_next,
            workers_by_state,
            slots_by_state,
            connections: conns,
            transfer_bytes: self.transfer_bytes,
            executor_replacements: self.executor_replacements,
            stats: StatsView {
                transitions: stats.transitions,
                stale_reports: stats.stale_reports,
                workers_lost: stats.workers_lost,
                results_recomputed: stats.results_recomputed,
                poison_tasks: stats.poison_tasks,
                steals_requested: stats.steals_requested,
                tasks_stolen: stats.tasks_stolen,
            },
            workers: extras,
        };
        self.seq += 1;
        self.tx
            .send_replace(Arc::new(Snapshot::new(self.seq, status, overview)));
    }
}

fn store(c: &Counter, v: u64) {
    c.inner().store(v, Ordering::Relaxed);
}

/// Encodes the per-worker series from the latest snapshot at scrape time.
struct WorkerCollector {
    latest: watch::Receiver<Arc<Snapshot>>,
}

impl std::fmt::Debug for WorkerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerCollector")
    }
}

/// How a per-worker value is read from the snapshot.
type Reader = fn(&rusk_proto::msg::WorkerStatus, &WorkerExtra) -> Option<f64>;

const PER_WORKER: &[(&str, &str, MetricType, Reader)] = &[
    (
        "rusk_worker_healthy",
        "1 while the worker takes tasks, 0 while it reports itself unhealthy",
        MetricType::Gauge,
        |w, _| {
            Some(if w.vitals.unhealthy.is_some() {
                0.0
            } else {
                1.0
            })
        },
    ),
    (
        "rusk_worker_heartbeat_age_seconds",
        "Time since the scheduler last heard from the worker",
        MetricType::Gauge,
        |w, _| Some(w.heartbeat_age_ms as f64 / 1000.0),
    ),
    (
        "rusk_worker_uptime_seconds",
        "Time since this incarnation of the worker joined",
        MetricType::Gauge,
        |_, x| Some(x.uptime_ms as f64 / 1000.0),
    ),
    (
        "rusk_worker_restarts",
        "Restarts of the worker's nanny slot",
        MetricType::Gauge,
        |w, _| Some(w.restarts as f64),
    ),
    (
        "rusk_worker_loop_lag_seconds",
        "Lateness of the worker's event loop, as the worker measured it",
        MetricType::Gauge,
        |w, _| Some(w.vitals.loop_lag_ms as f64 / 1000.0),
    ),
    (
        "rusk_worker_cpu_seconds",
        "CPU time of the worker process and its children",
        MetricType::Counter,
        |w, _| Some(w.vitals.cpu_seconds),
    ),
    (
        "rusk_worker_rss_bytes",
        "Resident memory of the worker process and its children",
        MetricType::Gauge,
        |w, _| Some(w.vitals.rss_bytes as f64),
    ),
    (
        "rusk_worker_open_fds",
        "Open file descriptors of the worker process",
        MetricType::Gauge,
        |w, _| Some(w.vitals.open_fds as f64),
    ),
    (
        "rusk_worker_disk_free_bytes",
        "Free space in the worker's work directory",
        MetricType::Gauge,
        |w, _| w.vitals.disk_free_bytes.map(|b| b as f64),
    ),
    (
        "rusk_worker_tasks_running",
        "Tasks executing on the worker",
        MetricType::Gauge,
        |w, _| Some(w.tasks.get("running").copied().unwrap_or(0) as f64),
    ),
    (
        "rusk_worker_tasks_assigned",
        "Tasks assigned to the worker (running or queued there)",
        MetricType::Gauge,
        |w, _| Some(w.tasks.get("assigned").copied().unwrap_or(0) as f64),
    ),
    (
        "rusk_worker_results_stored",
        "Results the worker holds",
        MetricType::Gauge,
        |w, _| Some(w.stored_results as f64),
    ),
    (
        "rusk_worker_stored_bytes",
        "Managed memory: bytes of results the worker holds in memory",
        MetricType::Gauge,
        |w, _| Some(w.stored_bytes as f64),
    ),
    (
        "rusk_worker_spilled_bytes",
        "Bytes of results the worker has spilled to disk",
        MetricType::Gauge,
        |w, _| Some(w.spilled_bytes as f64),
    ),
    (
        "rusk_worker_spilled_results",
        "Results the worker has spilled to disk",
        MetricType::Gauge,
        |w, _| Some(w.spilled_results as f64),
    ),
    (
        "rusk_worker_spills",
        "Results this incarnation spilled to disk so far",
        MetricType::Counter,
        |w, _| Some(w.spills_total as f64),
    ),
    (
        "rusk_worker_paused",
        "1 while the worker is paused (memory over its pause threshold, or spill disk full)",
        MetricType::Gauge,
        |w, _| Some(if w.paused.is_some() { 1.0 } else { 0.0 }),
    ),
    (
        "rusk_worker_reuse_pool_bytes",
        "Freed shared memory the worker keeps to receive the next values into (not results)",
        MetricType::Gauge,
        |w, _| Some(w.vitals.reuse_pool_bytes as f64),
    ),
    (
        "rusk_worker_fetched_bytes",
        "Bytes of results this incarnation fetched from peers",
        MetricType::Counter,
        |w, _| Some(w.vitals.bytes_fetched as f64),
    ),
    (
        "rusk_worker_executors_alive",
        "Task executor processes alive on the worker",
        MetricType::Gauge,
        |w, _| Some(w.vitals.executors_alive as f64),
    ),
    (
        "rusk_worker_executors_replaced",
        "Task executor processes this incarnation replaced",
        MetricType::Counter,
        |w, _| Some(w.vitals.executors_replaced as f64),
    ),
];

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.latest.borrow().clone();
        let workers = &snap.status.workers;
        let extras = &snap.overview.workers;
        for (name, help, kind, read) in PER_WORKER {
            let mut family = encoder.encode_descriptor(name, help, None, *kind)?;
            for (w, x) in workers.iter().zip(extras) {
                let Some(v) = read(w, x) else { continue };
                let labels = [("worker", w.id.as_str())];
                let enc = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(v).encode(enc)?,
                    _ => ConstGauge::new(v).encode(enc)?,
                }
            }
        }
        Ok(())
    }
}
