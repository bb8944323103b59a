//! A worker's logic as a pure state machine.
//!
//! The worker receives assignments from the scheduler, fetches the inputs it does not hold from
//! the peers the scheduler named, runs tasks (the shell executes `Execute` commands on task
//! threads or child processes, never on the event loop), keeps results in memory and serves them
//! to peers and clients. Heartbeats are timers here, so a wedged event loop stops them.
//!
//! Per-task states on the worker: `Fetching { missing }` → `Queued` → `Running` → (result stored,
//! task forgotten). A `Cancel` for the current attempt forgets the task in any state; a result
//! that arrives for a forgotten attempt is dropped.
use bytes::Bytes;
use rusk_proto::graph::TaskKind;
use rusk_proto::msg::{
    Assignment, HeartbeatInfo, SchedulerToWorker, TaskError, Vitals, WorkerInfo, WorkerToScheduler,
    HELD_RESULTS_MAX,
};
use rusk_proto::{AttemptId, Incarnation, TaskRef};

use crate::memory::{MemoryConfig, SpillError, Store, StoreCommand, Value};
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Tasks expected to take at least [`LONG_TASK`] are handed to the executor at most this many
/// per thread (the executor pool's own pipeline depth): the rest wait in the worker's queue,
/// in priority order, where the scheduler can still steal them for an idle worker. Shorter
/// tasks go up to `dispatched_per_thread_max` per thread, which keeps tiny tasks pipelined.
pub const LONG_TASKS_DISPATCHED_PER_THREAD: u32 = 2;
/// A task the scheduler expects to take this long or more (`Assignment::expected_us`; tasks
/// of a kind not measured yet count as long) is dispatched as a long one.
pub const LONG_TASK: Duration = Duration::from_millis(1);

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub info: WorkerInfo,
    /// Tasks handed to the executor per thread at once. More than one keeps the task threads
    /// busy while the event loop is away (the executor queues them); the scheduler's own
    /// per-worker bound limits how much work waits here in all.
    pub dispatched_per_thread_max: u32,
    /// Heartbeat interval used until the scheduler's `Welcome` says otherwise.
    pub heartbeat_interval: Duration,
    /// Memory limit and the spill and pause thresholds.
    pub memory: MemoryConfig,
}

#[derive(Clone, Debug)]
pub enum Event {
    FromScheduler(SchedulerToWorker),
    /// A peer answered a fetch; `None` items are results the peer does not hold.
    Fetched {
        peer: Arc<str>,
        items: Vec<(TaskRef, Option<Bytes>)>,
    },
    /// A fetch from `peer` failed as a whole (connection refused, closed, timed out).
    FetchFailed {
        peer: Arc<str>,
        tasks: Vec<TaskRef>,
    },
    /// An `Execute` finished.
    Finished {
        task: TaskRef,
        attempt: AttemptId,
        result: Result<Bytes, TaskError>,
    },
    /// A peer or client asks for stored results; `request` is the shell's reply handle.
    PeerRequest {
        request: u64,
        tasks: Vec<TaskRef>,
    },
    /// The executor began running this `Execute` (it may have queued it first). Starts the
    /// attempt's time limit and, unless it finishes within the same batch, tells the scheduler.
    Started {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// The running attempt seceded (a Python task waiting for tasks it submitted): reported
    /// to the scheduler, which stops counting it against this worker's capacity.
    Seceded {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// The seceded attempt holds its thread slot again (`rusk.rejoin()`): it counts against the
    /// dispatch caps again, and the scheduler is told.
    Rejoined {
        task: TaskRef,
        attempt: AttemptId,
    },
    /// The shell's latest measurements of this worker, sent with the next heartbeats.
    Vitals(Vitals),
    /// Something the shell handled on its own, for the scheduler's recovery log.
    Report(rusk_proto::msg::WorkerEvent),
    /// A `Command::Store(Spill)` is done (the result is on disk) or failed.
    Spilled {
        task: TaskRef,
        result: Result<(), SpillError>,
    },
    /// A spilled result could not be read back (its file is corrupt or missing): it is lost.
    /// `during` is the attempt whose `Execute` needed it (it did not run).
    SpillLost {
        dep: TaskRef,
        during: Option<(TaskRef, AttemptId)>,
    },
    /// The scheduler connection dropped. Queued work is forgotten (a scheduler that comes back
    /// assigns it again under new attempts); running attempts go on, and what they store is
    /// reported as held when the worker registers again ([`WorkerCore::start`]). Stored
    /// results are kept.
    SchedulerLost,
    Tick,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    ToScheduler(WorkerToScheduler),
    Fetch {
        peer: Arc<str>,
        tasks: Vec<TaskRef>,
    },
    Execute {
        task: TaskRef,
        attempt: AttemptId,
        kind: Arc<TaskKind>,
        inputs: Vec<Value>,
    },
    /// Stop the running attempt if the shell can (a `cmd` child is killed); its result is
    /// ignored either way.
    Abandon {
        task: TaskRef,
        attempt: AttemptId,
    },
    ReplyPeer {
        request: u64,
        items: Vec<(TaskRef, Option<Value>)>,
    },
    /// Spill a result to disk, or delete a spill file.
    Store(StoreCommand),
    /// Write a file a client uploaded where the Python executors import from.
    WriteUpload {
        name: String,
        data: bytes::Bytes,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WState {
    Fetching { missing: u32 },
    Queued,
    Running,
}

struct WTask {
    assignment: Arc<Assignment>,
    state: WState,
    /// Fetched inputs this task holds a reference on.
    replicas_held: Vec<TaskRef>,
    /// When the running attempt hits its time limit (set once it started).
    deadline: Option<Duration>,
    /// Its entry in `queue` while `Queued`.
    queued_as: Option<QueueKey>,
}

/// Queued tasks start highest priority first, then in the order they became runnable.
type QueueKey = (Reverse<i32>, u64, TaskRef, AttemptId);

struct Replica {
    data: Bytes,
    users: u32,
}

pub struct WorkerCore {
    config: WorkerConfig,
    incarnation: Option<Incarnation>,
    heartbeat_interval: Duration,
    next_heartbeat: Duration,
    tasks: FxHashMap<TaskRef, WTask>,
    /// The shell's latest measurements, for heartbeats.
    vitals: Vitals,
    /// Attempts that started since the last flush; reported unless already finished.
    started_unreported: Vec<(TaskRef, AttemptId)>,
    /// Running attempts that seceded, to report after their `TaskStarted`.
    seceded_unreported: Vec<(TaskRef, AttemptId)>,
    /// Reported seceded attempts that rejoined, to report after the seceded ones.
    rejoined_unreported: Vec<(TaskRef, AttemptId)>,
    /// Dispatched attempts that seceded: they hold no thread, so they do not count against
    /// the dispatch caps (else tasks waiting for their children would starve them).
    seceded: FxHashSet<(TaskRef, AttemptId)>,
    /// Time limits of running attempts: (deadline, task, attempt).
    deadlines: std::collections::BTreeSet<(Duration, TaskRef, AttemptId)>,
    /// Results this worker computed and the scheduler counts on it for, in memory or spilled.
    store: Store,
    store_out: Vec<StoreCommand>,
    /// Inputs fetched from peers, kept while a local task still needs them.
    replicas: FxHashMap<TaskRef, Replica>,
    /// Inputs being fetched, with the tasks waiting for them (none when only `copying` is).
    fetching: FxHashMap<TaskRef, Vec<(TaskRef, AttemptId)>>,
    /// Copies the scheduler asked for (`Replicate`) being fetched, with the attempt that made
    /// the value: stored and reported `Replicated` when they arrive.
    copying: FxHashMap<TaskRef, AttemptId>,
    /// Fetches decided in this turn, sent as one request per peer by `flush`.
    fetch_batches: FxHashMap<Arc<str>, Vec<TaskRef>>,
    queue: BTreeSet<QueueKey>,
    /// Tasks queued so far: the arrival order among equal priorities.
    queued_total: u64,
    /// Executes handed to the shell whose `Finished` has not come back (abandoned ones too).
    dispatched: u32,
    out: Vec<Command>,
}

impl WorkerCore {
    fn is_running(&self, task: TaskRef, attempt: AttemptId) -> bool {
        self.tasks
            .get(&task)
            .is_some_and(|t| t.assignment.attempt == attempt && t.state == WState::Running)
    }

    pub fn new(config: WorkerConfig) -> WorkerCore {
        let heartbeat_interval = config.heartbeat_interval;
        let memory = config.memory.clone();
        WorkerCore {
            config,
            incarnation: None,
            heartbeat_interval,
            next_heartbeat: Duration::ZERO,
            tasks: FxHashMap::default(),
            started_unreported: Vec::new(),
            seceded_unreported: Vec::new(),
            rejoined_unreported: Vec::new(),
            seceded: Default::default(),
            vitals: Vitals::default(),
            deadlines: std::collections::BTreeSet::new(),
            store: Store::new(memory),
            store_out: Vec::new(),
            replicas: FxHashMap::default(),
            fetching: FxHashMap::default(),
            copying: FxHashMap::default(),
            fetch_batches: FxHashMap::default(),
            queue: BTreeSet::new(),
            queued_total: 0,
            dispatched: 0,
            out: Vec::new(),
        }
    }

    /// The first command of every connection: register with the scheduler, naming the results
    /// stored here (none on the first connection).
    pub fn start(&mut self, now: Duration) -> Vec<Command> {
        self.next_heartbeat = now + self.heartbeat_interval;
        let mut info = self.config.info.clone();
        info.held = self.store.held();
        if info.held.len() > HELD_RESULTS_MAX {
            // Beyond the bound the scheduler would not hear of them: drop them here too.
            for (t, _) in info.held.split_off(HELD_RESULTS_MAX) {
                self.store.remove(&t, &mut self.store_out);
            }
        }
        // Attempts that outlived the last connection (queued ones were forgotten with it).
        info.running = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == WState::Running)
            .map(|(k, t)| (*k, t.assignment.attempt))
            .take(HELD_RESULTS_MAX)
            .collect();
        info.running.sort_unstable();
        vec![Command::ToScheduler(WorkerToScheduler::Register(info))]
    }

    /// Whether the worker is connected to (and registered with) a scheduler.
    pub fn connected(&self) -> bool {
        self.incarnation.is_some()
    }

    fn on_scheduler_lost(&mut self) {
        self.incarnation = None;
        let queued: Vec<TaskRef> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state != WState::Running)
            .map(|(k, _)| *k)
            .collect();
        for t in queued {
            self.forget(t);
        }
        self.started_unreported.clear();
        self.seceded_unreported.clear();
        self.rejoined_unreported.clear();
    }

    pub fn incarnation(&self) -> Option<Incarnation> {
        self.incarnation
    }

    pub fn next_timeout(&self) -> Duration {
        let t = match self.deadlines.first() {
            Some((d, _, _)) => self.next_heartbeat.min(*d),
            None => self.next_heartbeat,
        };
        self.store.next_timeout().map_or(t, |s| t.min(s))
    }

    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.handle_into(now, event, &mut out);
        out
    }

    /// Apply one event, appending commands to `out`. Call [`WorkerCore::flush`] after a batch of
    /// events so that fetches to the same peer go out as one request.
    pub fn handle_into(&mut self, now: Duration, event: Event, out: &mut Vec<Command>) {
        std::mem::swap(&mut self.out, out);
        match event {
            Event::FromScheduler(msg) => self.on_scheduler(msg),
            Event::SchedulerLost => self.on_scheduler_lost(),
            Event::Fetched { peer: _, items } => {
                for (dep, data) in items {
                    match data {
                        Some(data) => self.on_input_arrived(dep, data),
                        None => self.on_input_unavailable(dep),
                    }
                }
            }
            Event::FetchFailed { peer: _, tasks } => {
                for dep in tasks {
                    self.on_input_unavailable(dep);
                }
            }
            Event::Finished {
                task,
                attempt,
                result,
            } => self.on_finished(task, attempt, result),
            Event::PeerRequest { request, tasks } => {
                let items = tasks
                    .into_iter()
                    .map(|t| {
                        let data = self.store.get(&t).or_else(|| {
                            self.replicas.get(&t).map(|r| Value::Memory(r.data.clone()))
                        });
                        (t, data)
                    })
                    .collect();
                self.out.push(Command::ReplyPeer { request, items });
            }
            Event::Started { task, attempt } => {
                let running = self
                    .tasks
                    .get_mut(&task)
                    .filter(|t| t.assignment.attempt == attempt && t.state == WState::Running);
                if let Some(t) = running {
                    if let (Some(ms), None) = (t.assignment.timeout_ms, t.deadline) {
                        let deadline = now + Duration::from_millis(ms);
                        t.deadline = Some(deadline);
                        self.deadlines.insert((deadline, task, attempt));
                    }
                    self.started_unreported.push((task, attempt));
                }
            }
            Event::Seceded { task, attempt } => {
                if self.is_running(task, attempt) && self.seceded.insert((task, attempt)) {
                    self.seceded_unreported.push((task, attempt));
                }
            }
            Event::Rejoined { task, attempt } => {
                if self.is_running(task, attempt) && self.seceded.remove(&(task, attempt)) {
                    let before = self.seceded_unreported.len();
                    self.seceded_unreported.retain(|&s| s != (task, attempt));
                    if self.seceded_unreported.len() == before {
                        // The scheduler heard of the secede: tell it the slot is held again.
                        self.rejoined_unreported.push((task, attempt));
                    }
                }
            }
            Event::Vitals(v) => self.vitals = v,
            Event::Report(e) => self
                .out
                .push(Command::ToScheduler(WorkerToScheduler::Event(e))),
            Event::Spilled { task, result } => {
                self.store
                    .on_spilled(now, task, result, &mut self.store_out)
            }
            Event::SpillLost { dep, during } => {
                self.store.on_lost(&dep, &mut self.store_out);
                self.out.push(Command::ToScheduler(WorkerToScheduler::Event(
                    rusk_proto::msg::WorkerEvent::SpillLost { task: dep },
                )));
                if let Some((task, attempt)) = during {
                    // Its Execute was consumed without running: settle it like a finish, then
                    // let the scheduler recompute the lost input.
                    self.dispatched = self.dispatched.saturating_sub(1);
                    self.seceded.remove(&(task, attempt));
                    let current = self.tasks.get(&task).is_some_and(|t| {
                        t.assignment.attempt == attempt && t.state == WState::Running
                    });
                    if current {
                        self.forget(task);
                        self.out
                            .push(Command::ToScheduler(WorkerToScheduler::MissingDep {
                                task,
                                attempt,
                                dep,
                            }));
                    }
                }
            }
            Event::Tick => {
                while let Some(&(deadline, task, attempt)) = self.deadlines.first() {
                    if deadline > now {
                        break;
                    }
                    self.deadlines.pop_first();
                    self.on_time_limit(task, attempt);
                }
                if now >= self.next_heartbeat {
                    self.next_heartbeat = now + self.heartbeat_interval;
                    self.out
                        .push(Command::ToScheduler(WorkerToScheduler::Heartbeat(
                            self.heartbeat_info(),
                        )));
                }
            }
        }
        self.dispatch();
        self.store.spill(now, &mut self.store_out);
        self.out
            .extend(self.store_out.drain(..).map(Command::Store));
        std::mem::swap(&mut self.out, out);
    }

    /// Emit the fetches decided since the last flush, one per peer.
    pub fn flush(&mut self, out: &mut Vec<Command>) {
        for (task, attempt) in std::mem::take(&mut self.started_unreported) {
            if self.is_running(task, attempt) {
                out.push(Command::ToScheduler(WorkerToScheduler::TaskStarted {
                    task,
                    attempt,
                }));
            }
        }
        for (task, attempt) in std::mem::take(&mut self.seceded_unreported) {
            if self.is_running(task, attempt) {
                out.push(Command::ToScheduler(WorkerToScheduler::TaskSeceded {
                    task,
                    attempt,
                }));
            }
        }
        for (task, attempt) in std::mem::take(&mut self.rejoined_unreported) {
            if self.is_running(task, attempt) {
                out.push(Command::ToScheduler(WorkerToScheduler::TaskRejoined {
                    task,
                    attempt,
                }));
            }
        }
        let mut batches: Vec<(Arc<str>, Vec<TaskRef>)> = self.fetch_batches.drain().collect();
        batches.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (peer, tasks) in batches {
            out.push(Command::Fetch { peer, tasks });
        }
    }

    pub fn heartbeat_info(&self) -> HeartbeatInfo {
        let m = self.store.report();
        HeartbeatInfo {
            vitals: self.vitals.clone(),
            running: self.dispatched,
            stored_results: self.store.len() as u64,
            stored_bytes: m.managed_bytes,
            spilled_bytes: m.spilled_bytes,
            spilled_results: m.spilled_results,
            spills_total: m.spills_total,
            paused: m.paused,
        }
    }

    fn on_scheduler(&mut self, msg: SchedulerToWorker) {
        match msg {
            SchedulerToWorker::Welcome {
                incarnation,
                heartbeat_interval_ms,
            } => {
                self.incarnation = Some(incarnation);
                self.heartbeat_interval = Duration::from_millis(heartbeat_interval_ms.max(1));
            }
            SchedulerToWorker::Assign(a) => self.on_assign(a),
            SchedulerToWorker::Cancel { task, attempt } => {
                if self
                    .tasks
                    .get(&task)
                    .is_some_and(|t| t.assignment.attempt == attempt)
                {
                    let t = self.forget(task);
                    if t.state == WState::Running {
                        self.out.push(Command::Abandon { task, attempt });
                    }
                }
            }
            SchedulerToWorker::Release { tasks } => {
                for t in tasks {
                    self.store.remove(&t, &mut self.store_out);
                    self.copying.remove(&t);
                }
            }
            SchedulerToWorker::Replicate {
                task,
                attempt,
                from,
            } => self.on_replicate(task, attempt, from),
            SchedulerToWorker::Upload { name, data } => {
                self.out.push(Command::WriteUpload { name, data });
            }
            SchedulerToWorker::Steal { task, attempt } => {
                // Given up only if queued, not yet handed to an executor: then it never runs
                // here.
                let stolen = self
                    .tasks
                    .get(&task)
                    .is_some_and(|t| t.assignment.attempt == attempt && t.state == WState::Queued);
                if stolen {
                    self.forget(task);
                }
                self.out
                    .push(Command::ToScheduler(WorkerToScheduler::StealResponse {
                        task,
                        attempt,
                        stolen,
                    }));
            }
        }
    }

    fn on_assign(&mut self, a: Arc<Assignment>) {
        let task = a.task;
        if let Some(old) = self.tasks.get(&task) {
            if old.assignment.attempt == a.attempt {
                // A second copy of an assignment we already have. Taking it as new would
                // abandon the running attempt and then report the killed run's error as this
                // attempt's own failure.
                return;
            }
            // A newer attempt of a task we still have replaces it.
            let (old_attempt, old_state) = (old.assignment.attempt, old.state);
            self.forget(task);
            if old_state == WState::Running {
                self.out.push(Command::Abandon {
                    task,
                    attempt: old_attempt,
                });
            }
        }
        // Being assigned the task means the scheduler counts on no copy of its result: one we
        // still store is from an attempt it fenced (it finished as a Cancel crossed it). Drop
        // it now; if this attempt never completes here, nobody would release it. A copy of an
        // older value on its way is dropped as well.
        self.store.remove(&task, &mut self.store_out);
        self.copying.remove(&task);
        let mut missing = 0;
        let mut held = Vec::new();
        for dep in &a.deps {
            // Use our stored copy only when the scheduler counts on it (it names no holder).
            // A copy it does not count on (a result it fenced) may be released at any moment,
            // even while this task waits in the queue.
            if dep.holder.is_none() && self.store.contains(&dep.task) {
                continue;
            }
            if let Some(r) = self.replicas.get_mut(&dep.task) {
                r.users += 1;
                held.push(dep.task);
                continue;
            }
            let Some(peer) = &dep.holder else {
                // The scheduler believes we hold it but we do not.
                self.out
                    .push(Command::ToScheduler(WorkerToScheduler::MissingDep {
                        task,
                        attempt: a.attempt,
                        dep: dep.task,
                    }));
                for r in held {
                    self.unref_replica(r);
                }
                return;
            };
            missing += 1;
            self.fetch_from(dep.task, peer).push((task, a.attempt));
        }
        let ready = missing == 0;
        self.tasks.insert(
            task,
            WTask {
                assignment: a,
                state: WState::Fetching { missing },
                replicas_held: held,
                deadline: None,
                queued_as: None,
            },
        );
        if ready {
            self.enqueue(task);
        }
    }

    /// The task has all its inputs: queue it to run.
    fn enqueue(&mut self, task: TaskRef) {
        let t = self.tasks.get_mut(&task).expect("enqueue a known task");
        let key = (
            Reverse(t.assignment.priority),
            self.queued_total,
            task,
            t.assignment.attempt,
        );
        self.queued_total += 1;
        t.state = WState::Queued;
        t.queued_as = Some(key);
        self.queue.insert(key);
    }

    /// The waiters of a fetch of `dep`, asking `peer` for it unless a fetch is on its way.
    fn fetch_from(&mut self, dep: TaskRef, peer: &Arc<str>) -> &mut Vec<(TaskRef, AttemptId)> {
        match self.fetching.entry(dep) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                self.fetch_batches
                    .entry(peer.clone())
                    .or_default()
                    .push(dep);
                v.insert(Vec::new())
            }
        }
    }

    /// The scheduler asks for a copy of `task`'s result (made by `attempt`) from `from`.
    fn on_replicate(&mut self, task: TaskRef, attempt: AttemptId, from: Arc<str>) {
        if self.tasks.contains_key(&task) {
            return; // assigned here: a stale request, the value is being computed again
        }
        if let Some(size) = self.store.size_of(&task) {
            // Already here (asked twice): say so again.
            self.out
                .push(Command::ToScheduler(WorkerToScheduler::Replicated {
                    task,
                    attempt,
                    size,
                }));
            return;
        }
        if self.copying.insert(task, attempt).is_none() {
            self.fetch_from(task, &from);
        }
    }

    fn on_input_arrived(&mut self, dep: TaskRef, data: Bytes) {
        let Some(waiters) = self.fetching.remove(&dep) else {
            return; // duplicate reply
        };
        if let Some(attempt) = self.copying.remove(&dep) {
            let size = data.len() as u64;
            self.store.insert(dep, data.clone(), &mut self.store_out);
            self.out
                .push(Command::ToScheduler(WorkerToScheduler::Replicated {
                    task: dep,
                    attempt,
                    size,
                }));
        }
        for (task, attempt) in waiters {
            let Some(t) = self.tasks.get_mut(&task) else {
                continue;
            };
            let WState::Fetching { missing } = &mut t.state else {
                continue;
            };
            if t.assignment.attempt != attempt {
                continue;
            }
            *missing -= 1;
            t.replicas_held.push(dep);
            if *missing == 0 {
                self.enqueue(task);
            }
            self.replicas
                .entry(dep)
                .or_insert_with(|| Replica {
                    data: data.clone(),
                    users: 0,
                })
                .users += 1;
        }
    }

    fn on_input_unavailable(&mut self, dep: TaskRef) {
        let Some(waiters) = self.fetching.remove(&dep) else {
            return;
        };
        // A copy that could not be fetched is dropped: the client asks again if it still
        // wants it, and the scheduler names the current holder then.
        self.copying.remove(&dep);
        for (task, attempt) in waiters {
            if self
                .tasks
                .get(&task)
                .is_some_and(|t| t.assignment.attempt == attempt)
            {
                self.forget(task);
                self.out
                    .push(Command::ToScheduler(WorkerToScheduler::MissingDep {
                        task,
                        attempt,
                        dep,
                    }));
            }
        }
    }

    fn on_finished(&mut self, task: TaskRef, attempt: AttemptId, result: Result<Bytes, TaskError>) {
        assert!(self.dispatched > 0, "Finished without a dispatched Execute");
        self.dispatched -= 1;
        if !self.seceded.is_empty() {
            self.seceded.remove(&(task, attempt));
        }
        let current = self
            .tasks
            .get(&task)
            .is_some_and(|t| t.assignment.attempt == attempt && t.state == WState::Running);
        if !current {
            return; // abandoned attempt: drop its result
        }
        self.forget(task);
        let msg = match result {
            Ok(data) => {
                let size = data.len() as u64;
                self.store.insert(task, data, &mut self.store_out);
                WorkerToScheduler::TaskDone {
                    task,
                    attempt,
                    size,
                }
            }
            Err(error) => WorkerToScheduler::TaskFailed {
                task,
                attempt,
                error,
            },
        };
        self.out.push(Command::ToScheduler(msg));
    }

    /// Hand queued tasks to the executor, up to the dispatch bound.
    /// A running attempt exceeded its time limit: stop it and report a failure of the task
    /// (the scheduler applies `retries`); the worker itself is fine.
    fn on_time_limit(&mut self, task: TaskRef, attempt: AttemptId) {
        let current = self
            .tasks
            .get(&task)
            .is_some_and(|t| t.assignment.attempt == attempt && t.state == WState::Running);
        if !current {
            return;
        }
        let t = self.forget(task);
        let limit = t.assignment.timeout_ms.unwrap_or(0);
        self.out.push(Command::Abandon { task, attempt });
        self.out
            .push(Command::ToScheduler(WorkerToScheduler::TaskFailed {
                task,
                attempt,
                error: TaskError {
                    message: format!("exceeded its time limit of {limit} ms and was killed"),
                    exit_code: None,
                    detail: None,
                },
            }));
    }

    fn dispatch(&mut self) {
        let threads = self.config.info.nthreads.max(1);
        let per_thread = self.config.dispatched_per_thread_max.max(1);
        let (max, max_long) = if self.store.paused().is_some() {
            // Paused (memory): the scheduler sends nothing new, and the queue drains one task
            // at a time, so work accepted before the pause cannot deadlock the graph (it often
            // consumes results and so frees memory).
            (1, 1)
        } else {
            let long = LONG_TASKS_DISPATCHED_PER_THREAD.min(per_thread);
            (threads * per_thread, threads * long)
        };
        while self.dispatched - (self.seceded.len() as u32) < max {
            let Some(&(_, _, task, attempt)) = self.queue.first() else {
                return;
            };
            let Some(t) = self.tasks.get_mut(&task) else {
                self.queue.pop_first();
                continue;
            };
            if t.assignment.attempt != attempt || t.state != WState::Queued {
                self.queue.pop_first();
                continue;
            }
            if self.dispatched - self.seceded.len() as u32 >= max_long
                && t.assignment.expected_us >= LONG_TASK.as_micros() as u64
            {
                // It waits here, first in line, stealable, until a thread is nearly free.
                return;
            }
            self.queue.pop_first();
            t.state = WState::Running;
            t.queued_as = None;
            let a = t.assignment.clone();
            let held = std::mem::take(&mut t.replicas_held);
            let mut inputs = Vec::with_capacity(a.deps.len());
            for dep in &a.deps {
                let data = self
                    .store
                    .get(&dep.task)
                    .or_else(|| {
                        self.replicas
                            .get(&dep.task)
                            .map(|r| Value::Memory(r.data.clone()))
                    })
                    .unwrap_or_else(|| {
                        panic!("queued task {task} {attempt} lacks its input {}", dep.task)
                    });
                inputs.push(data);
            }
            for r in held {
                self.unref_replica(r);
            }
            self.dispatched += 1;
            self.out.push(Command::Execute {
                task,
                attempt,
                kind: a.kind.clone(),
                inputs,
            });
        }
    }

    fn forget(&mut self, task: TaskRef) -> WTask {
        let t = self.tasks.remove(&task).expect("forget a known task");
        if let Some(key) = t.queued_as {
            self.queue.remove(&key);
        }
        for &r in &t.replicas_held {
            self.unref_replica(r);
        }
        if let Some(d) = t.deadline {
            self.deadlines.remove(&(d, task, t.assignment.attempt));
        }
        WTask {
            assignment: t.assignment,
            state: t.state,
            replicas_held: Vec::new(),
            deadline: None,
            queued_as: None,
        }
    }

    fn unref_replica(&mut self, dep: TaskRef) {
        let r = self.replicas.get_mut(&dep).expect("held replica exists");
        r.users -= 1;
        if r.users == 0 {
            self.replicas.remove(&dep);
        }
    }

    /// A stored result's bytes, when in memory.
    pub fn stored(&self, task: &TaskRef) -> Option<&Bytes> {
        self.store.bytes(task)
    }

    pub fn assigned_count(&self) -> usize {
        self.tasks.len()
    }

    /// Cross-check the worker's indexes; panics on the first violation.
    pub fn check_invariants(&self) {
        let mut users: FxHashMap<TaskRef, u32> = FxHashMap::default();
        let mut running = 0;
        for (task, t) in &self.tasks {
            for r in &t.replicas_held {
                *users.entry(*r).or_default() += 1;
            }
            match t.state {
                WState::Fetching { missing } => {
                    assert!(missing > 0, "{task} fetching nothing");
                    let waiting = self
                        .fetching
                        .values()
                        .flatten()
                        .filter(|(w, a)| w == task && *a == t.assignment.attempt)
                        .count() as u32;
                    assert_eq!(waiting, missing, "{task} missing count vs fetch waiters");
                }
                WState::Queued => assert!(
                    t.queued_as.is_some_and(|k| self.queue.contains(&k)
                        && k.2 == *task
                        && k.3 == t.assignment.attempt),
                    "{task} queued but not in queue"
                ),
                WState::Running => running += 1,
            }
        }
        for dep in self.copying.keys() {
            assert!(
                self.fetching.contains_key(dep),
                "copy {dep} asked for but not fetched"
            );
            assert!(
                !self.tasks.contains_key(dep),
                "copy {dep} of a task assigned here"
            );
        }
        for (dep, r) in &self.replicas {
            assert_eq!(
                users.get(dep).copied().unwrap_or(0),
                r.users,
                "replica {dep} users"
            );
            assert!(r.users > 0, "unused replica {dep} kept");
        }
        assert!(
            self.dispatched >= running,
            "dispatched {} < running {running}",
            self.dispatched
        );
        self.store.check_invariants();
    }
}

#[cfg(test)]
mod tests;
