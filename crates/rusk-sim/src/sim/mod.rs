//! The simulated cluster: one real `Scheduler`, real `NannyCore`s supervising real
//! `WorkerCore`s (and some workers without a nanny), clients and an operator, wired together by
//! an in-memory network under a virtual clock.
//!
//! Why a simulator: the cores' recovery logic (fencing, TTLs, recomputation) only matters when
//! messages race with crashes, and such races are rare and unrepeatable on real machines. Here
//! every input of every core comes from one event queue ordered by `(virtual time, sequence
//! number)`, and every random choice (latencies, faults, workload, task durations) comes from
//! one seeded `ChaCha8Rng`, so a seed replays exactly.
//!
//! What plays the role of the tokio shells:
//! - the network ([`net`]): each worker↔scheduler link is a TCP-like ordered stream of batches,
//!   which faults may delay, duplicate in place, or break (a lost packet breaks the connection);
//!   peer fetches are separate connections that fail, time out or are refused;
//! - workers ([`workers`]): lives of a worker slot, each a process with its own pid,
//!   `WorkerCore`, address, executor threads, heartbeat and ping timers; lives are crashed,
//!   frozen, dropped, killed and restarted;
//! - nannies ([`nanny`]): one per host, each owning its slots' worker processes, with its own
//!   link to the scheduler; nannies die, vanish, lose their link and are restarted; an operator
//!   restarts slots and stops nannies through the scheduler;
//! - the client ([`client`]): submits graphs, fetches outputs from their holders, retries with
//!   `LocateOutputs` when a fetch fails, and compares every value with the model.
//!
//! A run has two phases: a safety phase with faults, then a liveness phase in which faults are
//! healed and everything submitted must finish, correctly, within a virtual-time bound, and
//! every supervised slot must run a registered worker again within its own, shorter bound.
mod api;
mod client;
mod crash;
mod faults;
mod nanny;
mod net;
mod sched;
mod shared;
mod workers;

use crate::config::SimConfig;
use crate::error::{FailureKind, SimFailure};
use crate::oracle::Oracle;
use crate::trace::{Msg, Node, Trace, What};
use crate::workload::GraphModel;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusk_core::nanny::NannyConfig;
use rusk_core::scheduler::{self, Scheduler, SchedulerConfig, SchedulerStats};
use rusk_proto::msg::{
    ClientToScheduler, NannyToScheduler, SchedulerToClient, SchedulerToNanny, SchedulerToWorker,
    WorkerToScheduler,
};
use rusk_proto::{ClientId, GraphId, Incarnation, NannyId, TaskRef};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use crate::timed::{catch_core_panic, Queued};
pub(crate) use client::ClientState;

pub use crash::CrashCounts;
pub use faults::FaultCounts;
pub(crate) use faults::FaultPlan;
pub(crate) use nanny::{Host, NannyConn, NannyProc};
pub use shared::SharedCounts;
pub use workers::Death;
pub(crate) use workers::{Life, LifeState, Slot, Supervised};

/// How long the end-of-run leak check waits for releases to arrive: longer than any packet
/// delayed in the safety phase can still be in flight.
const SETTLE: Duration = Duration::from_millis(1500);
/// Events at a single virtual instant beyond which the run is a livelock (a timer that is due
/// but does nothing, rescheduled for the same instant forever). Real bursts are far smaller.
const STEPS_AT_ONE_INSTANT_MAX: u64 = 200_000;

/// Index of a worker life in `Sim::lives`. A life is one process of a slot, from start to
/// death; its connection to the scheduler lives and dies with it.
pub(crate) type LifeId = usize;

/// The main client (whose graphs must all finish), one that leaves early, and the operator
/// (`rusk restart`, `rusk stop-nanny`).
pub(crate) const MAIN_CLIENT: ClientId = ClientId(1);
pub(crate) const ABANDONING_CLIENT: ClientId = ClientId(2);
pub(crate) const OPERATOR: ClientId = ClientId(3);

/// Everything that can happen, as queued for a virtual time.
#[derive(Debug)]
pub(crate) enum Ev {
    SchedTick {
        due: Duration,
    },
    WorkerTick {
        life: LifeId,
        due: Duration,
    },
    /// A packet of a worker link arrives at the scheduler's end.
    ToSched {
        life: LifeId,
        /// Which of the life's connections (`Life::link`): an earlier one's packets are lost.
        link: u32,
        batch: Vec<WorkerToScheduler>,
    },
    /// A packet of a worker link arrives at the worker's end.
    ToWorker {
        life: LifeId,
        link: u32,
        batch: Vec<SchedulerToWorker>,
    },
    /// The scheduler's shell notices that a worker's connection closed.
    LinkClosed {
        life: LifeId,
        /// The incarnation registered on that connection, if any.
        inc: Option<Incarnation>,
        reason: &'static str,
    },
    ClientToSched {
        client: ClientId,
        msg: ClientToScheduler,
        /// For `Submit`: which model the graph is.
        model: Option<usize>,
        /// The scheduler life whose connection carries it (`CrashState::epoch`).
        epoch: u64,
    },
    ToClient {
        client: ClientId,
        msg: SchedulerToClient,
    },
    ClientLeaves {
        client: ClientId,
    },
    /// A fetch request arrives at the peer's data server.
    DataRequest {
        fetch: u64,
    },
    /// A fetch's outcome reaches the requester.
    DataReply {
        fetch: u64,
        items: Vec<(TaskRef, Option<Bytes>)>,
        duplicate: bool,
    },
    FetchRefused {
        fetch: u64,
    },
    FetchTimeout {
        fetch: u64,
    },
    /// A task thread finished a job (or the job was killed).
    ExecDone {
        life: LifeId,
        job: u64,
        token: u32,
    },
    /// A task thread tells the event loop that it began a job.
    JobStarted {
        life: LifeId,
        job: u64,
        token: u32,
    },
    /// A started killer aborts its process.
    KillerFires {
        life: LifeId,
        job: u64,
    },
    /// A worker process exits on its own (it lost its scheduler, got SIGTERM, crashed while
    /// starting).
    ProcessExit {
        life: LifeId,
        death: Death,
    },
    /// The worker's event loop pings its nanny.
    WorkerPing {
        life: LifeId,
        due: Duration,
    },
    /// Something the nanny shell hands its core: a spawn's outcome, a worker's exit, ping or
    /// registration.
    NannyEvent {
        nanny: usize,
        ev: rusk_core::nanny::Event,
    },
    NannyTick {
        nanny: usize,
        due: Duration,
    },
    NannyStart {
        host: usize,
    },
    /// A nanny (re)connects to the scheduler.
    NannyConnect {
        nanny: usize,
    },
    /// A packet of a nanny link arrives at the scheduler's end.
    NannyToSched {
        conn: NannyId,
        batch: Vec<NannyToScheduler>,
    },
    /// A packet of a nanny link arrives at the nanny's end.
    ToNanny {
        conn: NannyId,
        batch: Vec<SchedulerToNanny>,
    },
    /// The scheduler's shell notices that a nanny connection closed.
    NannyLinkClosed {
        conn: NannyId,
        reason: &'static str,
    },
    /// The nanny notices that its connection closed.
    NannyLinkDown {
        conn: NannyId,
    },
    OperatorCheck,
    SlotsCheck,
    /// Something the shared-keys clients do.
    Shared(shared::SharedEv),
    Submit {
        client: ClientId,
        model: usize,
    },
    LocateAgain {
        graph: GraphId,
    },
    Fault,
    Thaw {
        life: LifeId,
    },
    Restart {
        slot: u32,
    },
    Heal,
    /// The scheduler process dies (now, or armed for its next turn).
    SchedCrash,
    /// Its supervisor starts it again, from its journal.
    SchedRestart,
    /// A worker notices that its connection to scheduler life `epoch` closed.
    SchedLost {
        life: LifeId,
        epoch: u64,
    },
    /// A worker that lost its scheduler tries to connect again.
    WorkerReconnect {
        life: LifeId,
    },
    /// A client notices that its connection to scheduler life `epoch` closed.
    ClientLost {
        client: ClientId,
        epoch: u64,
    },
    ClientReconnect {
        client: ClientId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Safety,
    Liveness { deadline: Duration },
}

/// The outcome of a successful run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    /// Virtual time at the end of the run.
    pub virtual_time: Duration,
    /// Events processed.
    pub steps: u64,
    pub graphs: u32,
    pub tasks: u64,
    /// Outputs the client fetched (or saw fail) and checked against the model.
    pub outputs_checked: u64,
    /// Task results the scheduler accepted (more than `tasks` when results were recomputed).
    pub results_accepted: u64,
    pub worker_lives: u32,
    pub faults: FaultCounts,
    pub scheduler: SchedulerStats,
    /// The longest a supervised slot took to run a registered worker again after the faults
    /// healed (zero when every slot was up then).
    pub slowest_slot_recovery: Duration,
    /// Recovery records of the nannies, by kind (`crash`, `watchdog`, `heartbeat`,
    /// `connection`, `operator`, `recovered`, `backing-off`, `failed`, ...).
    pub nanny_records: BTreeMap<&'static str, u32>,
    /// What the shared-keys clients did (`SimConfig::shared_keys`).
    pub shared: SharedCounts,
    /// Scheduler crashes and what recovered from them (`SimConfig::scheduler_crashes`).
    pub crash: CrashCounts,
    /// Hash of every event of the run: equal for two runs of one seed.
    pub fingerprint: u64,
}

/// A simulated cluster. [`crate::run_seed`] drives one with a random workload and random
/// faults; scenario tests drive one by hand (submit graphs, inject chosen faults, step).
pub struct Sim {
    pub(crate) seed: u64,
    pub(crate) config: SimConfig,
    pub(crate) now: Duration,
    seq: u64,
    steps: u64,
    steps_at_now: u64,
    /// When the liveness phase began.
    healed_at: Duration,
    pub(crate) queue: BinaryHeap<Reverse<Queued<Ev>>>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) phase: Phase,
    heal_planned: bool,
    pub(crate) scheduler: Scheduler,
    /// The scheduler process's crashes, restarts and journal.
    pub(crate) crash: crash::CrashState,
    /// Workers reconnect after losing their scheduler connection (`SimConfig::
    /// worker_reconnect_share`), rather than exit.
    pub(crate) workers_reconnect: bool,
    pub(crate) crash_counts: CrashCounts,
    pub(crate) sched_tick_at: Option<Duration>,
    sbuf: Vec<scheduler::Command>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) lives: Vec<Life>,
    /// Every worker process by pid (pids are never reused).
    pub(crate) pids: BTreeMap<u32, LifeId>,
    next_pid: u32,
    pub(crate) hosts: Vec<Host>,
    pub(crate) nannies: Vec<NannyProc>,
    pub(crate) nanny_conns: BTreeMap<NannyId, NannyConn>,
    next_nanny_conn: u64,
    /// The nannies' tunables in this run.
    pub(crate) nanny_config: NannyConfig,
    pub(crate) nanny_records: BTreeMap<&'static str, u32>,
    /// Poison-task events the scheduler logged in the current step (their `observed`).
    pub(crate) poison_logged: Vec<String>,
    /// Data address → the last life that listened on it.
    pub(crate) addresses: BTreeMap<Arc<str>, LifeId>,
    pub(crate) inc_to_life: BTreeMap<Incarnation, LifeId>,
    next_incarnation: u64,
    pub(crate) net: net::Net,
    pub(crate) exec: workers::Jobs,
    pub(crate) models: Vec<GraphModel>,
    /// Injected executor failures left per model task (`flaky`).
    pub(crate) flaky_left: Vec<Vec<u32>>,
    pub(crate) clients: BTreeMap<ClientId, ClientState>,
    pub(crate) oracle: Oracle,
    pub(crate) trace: Trace,
    pub(crate) plan: FaultPlan,
    pub(crate) counts: FaultCounts,
    /// One-shot scripted fault: duplicate the next worker packet carrying a `TaskDone`.
    pub(crate) dup_next_task_done: bool,
    /// Model of the `Submit` being handled by the scheduler right now.
    pub(crate) submit_model: Option<usize>,
    outputs_checked: u64,
    broken: bool,
    /// The shared-keys clients, when the config runs them.
    pub(crate) shared: Option<Box<shared::SharedState>>,
}

impl Sim {
    /// A cluster at virtual time zero: worker slots started, clients connected. Unless the
    /// config asks for no graphs, a random workload, random faults and the start of the
    /// liveness phase are planned too.
    pub fn new(seed: u64, config: &SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let plan = if config.faults {
            FaultPlan::random(&mut rng)
        } else {
            FaultPlan::none()
        };
        let max_worker_deaths = config
            .task_max_worker_deaths
            .unwrap_or_else(|| rng.gen_range(1..=3));
        let sched_config = SchedulerConfig {
            worker_ttl: config.worker_ttl,
            heartbeat_interval: config.heartbeat_interval,
            assigned_per_thread_max: rng.gen_range(1..=8),
            progress_interval: Duration::from_millis(200),
            detached_graphs_max: 64,
            task_max_worker_deaths: max_worker_deaths,
            no_worker_timeout: config.no_worker_timeout,
            work_stealing: config.work_stealing,
            ..SchedulerConfig::default()
        };
        // Scheduler crashes need its journal. Random crashes come with the random faults;
        // scripted scenarios crash it themselves.
        let crashes = config.scheduler_crashes;
        let workers_reconnect =
            config.worker_reconnect_share > 0.0 && rng.gen_bool(config.worker_reconnect_share);
        // Results a reconnecting worker names are adopted without a report the oracle sees:
        // the journal's `InMemory` records tell which (`CrashState::adopted`).
        let sched_config = SchedulerConfig {
            journal: workers_reconnect,
            ..sched_config
        };
        let sched_config = if crashes {
            SchedulerConfig {
                journal: true,
                resume_grace: Duration::from_millis(rng.gen_range(3_000..=6_000)),
                ..sched_config
            }
        } else {
            sched_config
        };
        let workers =
            rng.gen_range(config.workers_min..=config.workers_max.max(config.workers_min));
        let nanny_hosts = rng
            .gen_range(config.nanny_hosts_min..=config.nanny_hosts_max.max(config.nanny_hosts_min));
        let nanny_config = match &config.nanny {
            Some(c) => c.clone(),
            None => nanny::draw_nanny_config(&mut rng),
        };
        let mut slots: Vec<Slot> = (0..workers).map(|_| Slot::new(None)).collect();
        let mut hosts = Vec::new();
        for h in 0..nanny_hosts as usize {
            let n = rng.gen_range(
                config.slots_per_host_min.max(1)
                    ..=config
                        .slots_per_host_max
                        .max(config.slots_per_host_min.max(1)),
            );
            let mut own = Vec::new();
            for index in 0..n {
                own.push(slots.len() as u32);
                slots.push(Slot::new(Some(Supervised { host: h, index })));
            }
            hosts.push(Host::new(format!("n{h}"), own));
        }
        let mut sim = Sim {
            seed,
            config: config.clone(),
            now: Duration::ZERO,
            seq: 0,
            steps: 0,
            steps_at_now: 0,
            healed_at: Duration::ZERO,
            queue: BinaryHeap::new(),
            rng,
            phase: Phase::Safety,
            heal_planned: false,
            scheduler: Scheduler::new(sched_config.clone()),
            crash: crash::CrashState::new(crashes, sched_config),
            workers_reconnect,
            crash_counts: CrashCounts::default(),
            sched_tick_at: None,
            sbuf: Vec::new(),
            slots,
            lives: Vec::new(),
            pids: BTreeMap::new(),
            next_pid: 1000,
            hosts,
            nannies: Vec::new(),
            nanny_conns: BTreeMap::new(),
            next_nanny_conn: 1,
            nanny_config,
            nanny_records: BTreeMap::new(),
            poison_logged: Vec::new(),
            addresses: BTreeMap::new(),
            inc_to_life: BTreeMap::new(),
            next_incarnation: 1,
            net: net::Net::default(),
            exec: workers::Jobs::default(),
            models: Vec::new(),
            flaky_left: Vec::new(),
            clients: BTreeMap::new(),
            oracle: Oracle::new(max_worker_deaths),
            trace: Trace::new(config.trace_len),
            plan,
            counts: FaultCounts::default(),
            dup_next_task_done: false,
            submit_model: None,
            outputs_checked: 0,
            broken: false,
            shared: None,
        };
        // Setting up is not a step of any core that can fail, except by a bug in the sim.
        sim.setup()
            .expect("setting up the cluster runs no checks that can fail");
        sim
    }

    fn setup(&mut self) -> Result<(), FailureKind> {
        for client in [MAIN_CLIENT, OPERATOR] {
            self.clients.insert(client, ClientState::new());
            self.sched_step(scheduler::Event::ClientJoined { client })?;
        }
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize].sup.is_none() {
                let at = Duration::from_micros(self.rng.gen_range(0..20_000));
                self.push(at, Ev::Restart { slot });
            }
        }
        for host in 0..self.hosts.len() {
            let at = Duration::from_micros(self.rng.gen_range(0..20_000));
            self.plan_nanny_start(host, at);
        }
        if self.config.graphs_max > 0 {
            self.plan_workload()?;
            if self.config.shared_keys {
                self.plan_shared()?;
            }
            let heal_at = self.config.safety;
            self.push(heal_at, Ev::Heal);
            self.heal_planned = true;
        }
        if self.plan.enabled {
            let first = self.plan.next_gap(&mut self.rng);
            self.push(first, Ev::Fault);
        }
        self.plan_crashes();
        Ok(())
    }

    fn plan_workload(&mut self) -> Result<(), FailureKind> {
        let n = self
            .rng
            .gen_range(self.config.graphs_min..=self.config.graphs_max.max(self.config.graphs_min));
        let safety_us = self.config.safety.as_micros() as u64;
        for i in 0..n {
            let names = self.slot_names();
            let model = GraphModel::random(
                &mut self.rng,
                self.config.tasks_min,
                self.config.tasks_max,
                &format!("g{i}"),
                &names,
            );
            // Most graphs arrive during the first part of the safety phase, so that faults
            // hit them while they run.
            let at = Duration::from_micros(self.rng.gen_range(0..=safety_us * 4 / 5));
            let m = self.add_model(model);
            self.plan_submit(MAIN_CLIENT, at, m);
        }
        if self.config.abandoning_client && self.rng.gen_bool(0.3) {
            self.clients.insert(ABANDONING_CLIENT, ClientState::new());
            // Joining is immediate; the graph comes a little later and the client leaves
            // while it most likely still runs.
            self.sched_step(scheduler::Event::ClientJoined {
                client: ABANDONING_CLIENT,
            })?;
            let names = self.slot_names();
            let model = GraphModel::random(&mut self.rng, self.config.tasks_min, 80, "gx", &names);
            let m = self.add_model(model);
            let at = Duration::from_micros(self.rng.gen_range(0..=safety_us / 2));
            self.plan_submit(ABANDONING_CLIENT, at, m);
            let leave = at + Duration::from_micros(self.rng.gen_range(0..=safety_us / 3));
            self.push(
                leave,
                Ev::ClientLeaves {
                    client: ABANDONING_CLIENT,
                },
            );
        }
        Ok(())
    }

    pub(crate) fn add_model(&mut self, model: GraphModel) -> usize {
        self.flaky_left
            .push(model.tasks.iter().map(|t| t.flaky).collect());
        self.models.push(model);
        self.models.len() - 1
    }

    // === the event loop ===

    pub(crate) fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn peek_time(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse(q)| q.at)
    }

    /// Process the next event; core panics become failures that carry the trace.
    fn step(&mut self) -> Result<(), SimFailure> {
        let Some(Reverse(q)) = self.queue.pop() else {
            return Err(self.failure(FailureKind::Liveness {
                bound: self.config.liveness_bound,
                pending: "the event queue ran dry".into(),
            }));
        };
        debug_assert!(q.at >= self.now, "time never goes back");
        if q.at == self.now {
            self.steps_at_now += 1;
            if self.steps_at_now > STEPS_AT_ONE_INSTANT_MAX {
                self.broken = true;
                return Err(self.failure(FailureKind::Liveness {
                    bound: Duration::ZERO,
                    pending: format!(
                        "livelock: more than {STEPS_AT_ONE_INSTANT_MAX} events at one virtual \
                         instant (a timer due now that does nothing?)"
                    ),
                }));
            }
        } else {
            self.steps_at_now = 0;
        }
        self.now = q.at;
        self.steps += 1;
        self.guarded(|s| s.dispatch(q.ev))
    }

    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Sim) -> Result<(), FailureKind>,
    ) -> Result<(), SimFailure> {
        if self.broken {
            return Err(self.failure(FailureKind::CorePanic {
                message: "the simulation already failed".into(),
            }));
        }
        catch_core_panic(|| f(self)).map_err(|kind| {
            self.broken = true;
            self.failure(kind)
        })
    }

    pub(crate) fn failure(&self, kind: FailureKind) -> SimFailure {
        SimFailure {
            seed: self.seed,
            at: self.now,
            step: self.steps,
            kind: Box::new(kind),
            trace: self.trace.render(),
        }
    }

    pub(crate) fn note(&mut self, what: What) {
        self.trace.record(self.now, what);
    }

    fn dispatch(&mut self, ev: Ev) -> Result<(), FailureKind> {
        // Events for a frozen worker wait in its inbox until it thaws.
        if let Some(life) = self.frozen_target(&ev) {
            if !matches!(ev, Ev::WorkerTick { .. }) {
                self.lives[life].inbox.push_back(ev);
            }
            return Ok(());
        }
        match ev {
            Ev::SchedTick { due } => {
                if self.sched_tick_at == Some(due) {
                    self.sched_tick_at = None;
                    self.note(What::SchedTick);
                    self.sched_step(scheduler::Event::Tick)?;
                }
                Ok(())
            }
            Ev::WorkerTick { life, due } => self.on_worker_tick(life, due),
            Ev::ToSched { life, link, batch } => self.on_to_sched(life, link, batch),
            Ev::ToWorker { life, link, batch } => self.on_to_worker(life, link, batch),
            Ev::LinkClosed { life, inc, reason } => self.on_link_closed(life, inc, reason),
            Ev::ClientToSched {
                client,
                msg,
                model,
                epoch,
            } => {
                if epoch != self.crash.epoch || self.crash.down {
                    return Ok(()); // sent to a scheduler that died
                }
                self.on_client_to_sched(client, msg, model)
            }
            Ev::ToClient { client, msg } => self.on_to_client(client, msg),
            Ev::ClientLeaves { client } => self.on_client_leaves(client),
            Ev::DataRequest { fetch } => self.on_data_request(fetch),
            Ev::DataReply {
                fetch,
                items,
                duplicate,
            } => self.on_fetch_outcome(fetch, Some(items), duplicate),
            Ev::FetchRefused { fetch } | Ev::FetchTimeout { fetch } => {
                self.on_fetch_outcome(fetch, None, false)
            }
            Ev::ExecDone { life, job, token } => self.on_exec_done(life, job, token),
            Ev::Submit { client, model } => self.on_submit(client, model),
            Ev::LocateAgain { graph } => self.on_locate_again(graph),
            Ev::Fault => self.on_fault(),
            Ev::Thaw { life } => self.thaw(life),
            Ev::Restart { slot } => self.on_restart(slot),
            Ev::Heal => self.heal(),
            Ev::JobStarted { life, job, token } => self.on_job_started(life, job, token),
            Ev::KillerFires { life, job } => self.on_killer_fires(life, job),
            Ev::ProcessExit { life, death } => {
                self.kill_life(life, death);
                Ok(())
            }
            Ev::WorkerPing { life, due } => {
                self.on_worker_ping(life, due);
                Ok(())
            }
            Ev::NannyEvent { nanny, ev } => self.nanny_step(nanny, ev),
            Ev::NannyTick { nanny, due } => self.on_nanny_tick(nanny, due),
            Ev::NannyStart { host } => self.start_nanny(host),
            Ev::NannyConnect { nanny } => {
                self.on_nanny_connect(nanny);
                Ok(())
            }
            Ev::NannyToSched { conn, batch } => self.on_nanny_to_sched(conn, batch),
            Ev::ToNanny { conn, batch } => self.on_to_nanny(conn, batch),
            Ev::NannyLinkClosed { conn, reason } => self.on_nanny_link_closed(conn, reason),
            Ev::NannyLinkDown { conn } => {
                self.on_nanny_link_down(conn);
                Ok(())
            }
            Ev::OperatorCheck => {
                self.on_operator_check();
                Ok(())
            }
            Ev::SlotsCheck => self.on_slots_check(),
            Ev::Shared(ev) => self.on_shared(ev),
            Ev::SchedCrash => self.on_sched_crash(),
            Ev::SchedRestart => self.on_sched_restart(),
            Ev::SchedLost { life, epoch } => self.on_sched_lost(life, epoch),
            Ev::WorkerReconnect { life } => self.on_worker_reconnect(life),
            Ev::ClientLost { client, epoch } => {
                self.on_client_lost(client, epoch);
                Ok(())
            }
            Ev::ClientReconnect { client } => self.on_client_reconnect(client),
        }
    }

    /// The worker life an event is for, if that life is frozen.
    fn frozen_target(&self, ev: &Ev) -> Option<LifeId> {
        let life = match ev {
            Ev::WorkerTick { life, .. }
            | Ev::ToWorker { life, .. }
            | Ev::ExecDone { life, .. }
            | Ev::JobStarted { life, .. }
            | Ev::SchedLost { life, .. }
            | Ev::WorkerReconnect { life } => *life,
            Ev::DataRequest { fetch } => {
                let f = self.net.fetches.get(fetch)?;
                *self.addresses.get(&f.peer)?
            }
            Ev::DataReply { fetch, .. }
            | Ev::FetchRefused { fetch }
            | Ev::FetchTimeout { fetch } => match self.net.fetches.get(fetch)?.requester {
                net::Requester::Worker(l) => l,
                net::Requester::Client { .. } | net::Requester::Shared { .. } => return None,
            },
            _ => return None,
        };
        (self.lives[life].state == LifeState::Frozen).then_some(life)
    }

    // === phases ===

    /// Start the liveness phase: no more injected faults, frozen workers thawed, every empty
    /// slot restarted.
    pub(crate) fn heal(&mut self) -> Result<(), FailureKind> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        self.phase = Phase::Liveness {
            deadline: self.now + self.config.liveness_bound,
        };
        self.note(What::Note("heal: liveness phase starts".into()));
        self.healed_at = self.now;
        let frozen: Vec<LifeId> = (0..self.lives.len())
            .filter(|&l| self.lives[l].state == LifeState::Frozen)
            .collect();
        for life in frozen {
            self.thaw(life)?;
        }
        for slot in 0..self.slots.len() as u32 {
            let up = self.slot_up(slot);
            self.slots[slot as usize].recovered_after_heal = up.then_some(Duration::ZERO);
        }
        for slot in 0..self.slots.len() as u32 {
            let s = &mut self.slots[slot as usize];
            s.crash_loop_until = None;
            if s.life.is_none() && s.sup.is_none() {
                let at = self.now + Duration::from_millis(self.rng.gen_range(1..=50));
                self.push(at, Ev::Restart { slot });
            }
        }
        for host in 0..self.hosts.len() {
            let at = self.now + Duration::from_millis(self.rng.gen_range(1..=50));
            self.plan_nanny_start(host, at);
        }
        if !self.hosts.is_empty() {
            self.push(self.now, Ev::OperatorCheck);
            let bound = self.slot_bound();
            self.push(self.now + bound, Ev::SlotsCheck);
        }
        Ok(())
    }

    pub(crate) fn faults_active(&self) -> bool {
        self.phase == Phase::Safety && self.plan.enabled
    }

    fn all_slots_up(&self) -> bool {
        (0..self.slots.len() as u32).all(|s| self.slot_up(s))
    }

    /// After the client has checked everything: let releases arrive, then check that nothing
    /// is left behind anywhere.
    fn settle_and_report(mut self) -> Result<SimReport, SimFailure> {
        if self.config.check_leaks {
            if self.crash.enabled {
                // A late scheduler restart: let everyone reconnect before the orphans are
                // released and the leaks checked.
                let bound = self.now + self.config.liveness_bound;
                while !self.all_reconnected() && self.peek_time().is_some_and(|t| t <= bound) {
                    self.step()?;
                }
            }
            self.release_orphaned_graphs();
            // After a scheduler restart, nannies may still be backing off before they
            // reconnect, and session graphs whose client left meanwhile go only when the grace
            // ends (nobody claimed them).
            let reconnected = self.crash.restarted_at.map_or(Duration::ZERO, |t| {
                t + nanny::RECONNECT_MAX.max(self.crash.resume_grace()) + SETTLE
            });
            let settle = (self.now + SETTLE).max(reconnected);
            while self.peek_time().is_some_and(|t| t <= settle) {
                self.step()?;
            }
            if let Err(kind) = self
                .check_no_leaks()
                .and_then(|()| self.check_nanny_views())
            {
                return Err(self.failure(kind));
            }
        }
        let stats = self.sched_stats();
        let results_adopted = stats.results_adopted;
        Ok(SimReport {
            seed: self.seed,
            virtual_time: self.now,
            steps: self.steps,
            graphs: self.models.len() as u32,
            tasks: self.models.iter().map(|m| m.tasks.len() as u64).sum(),
            outputs_checked: self.outputs_checked,
            results_accepted: self.oracle.accepted.len() as u64,
            worker_lives: self.lives.len() as u32,
            faults: self.counts.clone(),
            scheduler: stats,
            nanny_records: self.nanny_records.clone(),
            shared: self
                .shared
                .as_ref()
                .map(|s| s.counts.clone())
                .unwrap_or_default(),
            crash: CrashCounts {
                results_adopted,
                ..self.crash_counts.clone()
            },
            slowest_slot_recovery: self
                .slots
                .iter()
                .filter_map(|s| s.recovered_after_heal)
                .max()
                .unwrap_or_default(),
            fingerprint: self.trace.fingerprint(),
        })
    }

    fn check_no_leaks(&self) -> Result<(), FailureKind> {
        if self.scheduler.graph_count() != 0 {
            return Err(FailureKind::Leak {
                what: format!(
                    "scheduler still has graphs after all were released: {:?}",
                    self.scheduler.status(None).graphs
                ),
            });
        }
        if let Some((state, n)) = self
            .scheduler
            .task_counts()
            .into_iter()
            .find(|&(_, n)| n > 0)
        {
            return Err(FailureKind::Leak {
                what: format!("scheduler still counts {n} tasks {state}"),
            });
        }
        for l in &self.lives {
            let Some(core) = l.core.as_ref() else {
                continue;
            };
            let hb = core.heartbeat_info();
            if hb.stored_results > 0 || core.assigned_count() > 0 {
                let stored: Vec<String> = self
                    .oracle
                    .graphs()
                    .flat_map(|(graph, m)| {
                        (0..self.models[m].tasks.len() as u32)
                            .map(move |index| TaskRef { graph, index })
                    })
                    .filter(|t| core.stored(t).is_some())
                    .take(5)
                    .map(|t| t.to_string())
                    .collect();
                return Err(FailureKind::Leak {
                    what: format!(
                        "{} still stores {} results ({}) and has {} tasks after every graph was released",
                        l.node(),
                        hb.stored_results,
                        stored.join(" "),
                        core.assigned_count()
                    ),
                });
            }
        }
        Ok(())
    }
}
