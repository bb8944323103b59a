//! The simulator's own cross-checks of the scheduler, from the outside.
//!
//! `Scheduler::check_invariants()` checks the scheduler against itself; this checks it against
//! what the simulator knows to be true: which incarnations the scheduler has already dropped,
//! which attempt it assigned last, what each task must compute. A report counts as *accepted*
//! when the scheduler did not count it as stale (`SchedulerStats::stale_reports`), so the oracle
//! needs no access to the scheduler's private state.
//!
//! It also keeps its own account of worker deaths per task, the way the poison-task rule
//! reads: an assignment the scheduler still counts on, whose `TaskStarted` it accepted, is
//! charged one death when its incarnation is removed; an attempt that was merely queued there
//! never is. When a task's charge reaches `task_max_worker_deaths`, the scheduler must fail it
//! as a poison task in that very step, and never any other task. And whatever the races, a
//! killer task takes down at most `task_max_worker_deaths` workers whose report that it
//! started the scheduler accepted.
//!
//! Stealing: an attempt a worker gave up (`StealResponse{stolen: true}`, accepted) had never
//! started and never starts afterwards, so no task runs twice through a steal.
//!
//! Placement: a task restricted to some workers (without `allow_other_workers`) is only ever
//! assigned to one of them, a task asking for a resource only to a worker that declares it,
//! and the tasks the scheduler counts as assigned to a worker never ask for more of a
//! resource than the worker declares.
use crate::error::FailureKind;
use crate::workload::{Expected, GraphModel, GPU_RESOURCE};
use bytes::Bytes;
use rusk_proto::msg::{Assignment, WorkerInfo, WorkerToScheduler};
use rusk_proto::{AttemptId, GraphId, Incarnation, TaskRef};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A result the scheduler accepted, for scenarios to wait on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub task: TaskRef,
    pub attempt: AttemptId,
    pub incarnation: Incarnation,
    pub at: Duration,
}

#[derive(Clone, Copy, Debug)]
struct AssignRec {
    attempt: AttemptId,
    incarnation: Incarnation,
    /// Position in the oracle's own sequence of assignments and acceptances.
    order: u64,
}

/// An assignment the scheduler still counts on (neither reported, nor cancelled, nor lost).
#[derive(Clone, Copy, Debug)]
struct LiveAssign {
    attempt: AttemptId,
    incarnation: Incarnation,
    /// The scheduler accepted its `TaskStarted`.
    started: bool,
}

#[derive(Default)]
pub(crate) struct Oracle {
    /// Which model each scheduler graph was submitted from.
    graphs: BTreeMap<GraphId, usize>,
    /// Incarnations the scheduler has joined and not yet dropped, as they registered.
    live: BTreeMap<Incarnation, WorkerInfo>,
    /// Incarnations the scheduler has dropped or been told are gone.
    removed: BTreeSet<Incarnation>,
    last_assign: BTreeMap<TaskRef, AssignRec>,
    last_accept: BTreeMap<TaskRef, u64>,
    failures_accepted: BTreeMap<TaskRef, u32>,
    order: u64,
    pub(crate) accepted: Vec<Accepted>,
    live_assign: BTreeMap<TaskRef, LiveAssign>,
    /// Every attempt the scheduler gave out, over all its lives, with the worker (by name) it
    /// went to.
    issued: BTreeMap<(TaskRef, AttemptId), String>,
    /// Attempts some simulated executor actually began running.
    executor_started: BTreeSet<(TaskRef, AttemptId)>,
    /// Attempts a worker gave up to a steal (the scheduler accepted it).
    stolen: BTreeSet<(TaskRef, AttemptId)>,
    /// Worker deaths charged to each task (started attempts only).
    deaths_charged: BTreeMap<TaskRef, u32>,
    /// Tasks whose charge reached the limit: the scheduler failed them as poison tasks.
    pub(crate) poisoned: BTreeSet<TaskRef>,
    /// Of those, the ones failed so by the current scheduler life (all, without restarts).
    pub(crate) poisoned_life: BTreeSet<TaskRef>,
    /// The poison-task events the scheduler must log in the current step (their `observed`).
    pending_poison: Vec<String>,
    /// Attempts that killed the worker running them, and attempts whose start the scheduler
    /// accepted; per task, how many attempts are both.
    killed_worker: BTreeSet<(TaskRef, AttemptId)>,
    start_accepted: BTreeSet<(TaskRef, AttemptId)>,
    known_killings: BTreeMap<TaskRef, u32>,
    /// The scheduler's `task_max_worker_deaths`.
    pub(crate) max_worker_deaths: u32,
    /// Results accepted per task (more than one when it was recomputed).
    pub(crate) done_count: BTreeMap<TaskRef, u32>,
}

impl Oracle {
    pub(crate) fn new(max_worker_deaths: u32) -> Oracle {
        Oracle {
            max_worker_deaths,
            ..Oracle::default()
        }
    }

    pub(crate) fn graph_submitted(&mut self, graph: GraphId, model: usize) {
        self.graphs.insert(graph, model);
    }

    /// Every graph submitted so far, with its model.
    pub(crate) fn graphs(&self) -> impl Iterator<Item = (GraphId, usize)> + '_ {
        self.graphs.iter().map(|(g, m)| (*g, *m))
    }

    pub(crate) fn model_of(&self, graph: GraphId) -> Option<usize> {
        self.graphs.get(&graph).copied()
    }

    pub(crate) fn joined(&mut self, inc: Incarnation, info: &WorkerInfo) {
        self.live.insert(inc, info.clone());
    }

    /// The scheduler took over, as `inc`'s assignment, an attempt that worker process was
    /// still running when it registered again (`WorkerInfo::running`). It must be an attempt
    /// some earlier incarnation of the same worker (by name) was given: never one made up,
    /// never another worker's.
    pub(crate) fn adopted_running(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
    ) -> Result<(), FailureKind> {
        let name = self.live.get(&inc).map(|i| i.name.clone());
        let issued_here = self.issued.get(&(task, attempt)).cloned();
        if name.is_none() || issued_here != name {
            return Err(FailureKind::FencedResultAccepted {
                task,
                attempt,
                incarnation: inc,
                why: "adopted a running attempt never given to that worker",
            });
        }
        self.order += 1;
        self.last_assign.insert(
            task,
            AssignRec {
                attempt,
                incarnation: inc,
                order: self.order,
            },
        );
        self.live_assign.insert(
            task,
            LiveAssign {
                attempt,
                incarnation: inc,
                started: true,
            },
        );
        if self.start_accepted.insert((task, attempt)) {
            self.count_killing(task, attempt)?;
        }
        Ok(())
    }

    /// The scheduler forgot `inc` (dropped it, or was told it left). Every started attempt it
    /// still counted on there is charged a death.
    pub(crate) fn removed(&mut self, inc: Incarnation, models: &[GraphModel]) {
        self.live.remove(&inc);
        if !self.removed.insert(inc) {
            return;
        }
        let lost: Vec<(TaskRef, bool)> = self
            .live_assign
            .iter()
            .filter(|(_, a)| a.incarnation == inc)
            .map(|(t, a)| (*t, a.started))
            .collect();
        for (task, started) in lost {
            self.live_assign.remove(&task);
            if !started {
                continue; // merely queued there: never charged
            }
            let n = self.deaths_charged.entry(task).or_default();
            *n += 1;
            let n = *n;
            if n == self.max_worker_deaths {
                self.poisoned.insert(task);
                self.poisoned_life.insert(task);
                let key = self
                    .model_of(task.graph)
                    .and_then(|m| models[m].task(task.index))
                    .map_or_else(|| task.to_string(), |t| t.key.clone());
                self.pending_poison
                    .push(format!("task {key:?} was running on {n} workers that died"));
            }
        }
    }

    /// A new scheduler resumed from the journal: it knows no incarnation and no attempt of
    /// the one that crashed (attempt ids go on above a journaled floor, so none is reused).
    /// What is fenced, accepted, failed and charged is judged per scheduler life from here
    /// on; executor starts and steals stay (attempts are unique over the run).
    pub(crate) fn scheduler_restarted(&mut self) {
        let live = std::mem::take(&mut self.live);
        self.removed.extend(live.into_keys());
        self.last_assign.clear();
        self.last_accept.clear();
        self.live_assign.clear();
        self.failures_accepted.clear();
        self.deaths_charged.clear();
        self.known_killings.clear();
        self.start_accepted.clear();
        self.pending_poison.clear();
        self.poisoned_life.clear();
    }

    pub(crate) fn is_removed(&self, inc: Incarnation) -> bool {
        self.removed.contains(&inc)
    }

    /// Joined and not removed: the scheduler counts this incarnation as a live worker.
    pub(crate) fn is_live(&self, inc: Incarnation) -> bool {
        self.live.contains_key(&inc)
    }

    /// The scheduler sent `Cancel`: it no longer counts on that assignment.
    pub(crate) fn on_cancel(&mut self, inc: Incarnation, task: TaskRef, attempt: AttemptId) {
        if self
            .live_assign
            .get(&task)
            .is_some_and(|a| a.attempt == attempt && a.incarnation == inc)
        {
            self.live_assign.remove(&task);
        }
    }

    /// A simulated executor began running this attempt: never one its worker gave up.
    pub(crate) fn executor_started(
        &mut self,
        task: TaskRef,
        attempt: AttemptId,
    ) -> Result<(), FailureKind> {
        if self.stolen.contains(&(task, attempt)) {
            return Err(FailureKind::StolenAfterStart { task, attempt });
        }
        self.executor_started.insert((task, attempt));
        Ok(())
    }

    /// A killer attempt took its worker down.
    pub(crate) fn killed_worker(
        &mut self,
        task: TaskRef,
        attempt: AttemptId,
    ) -> Result<(), FailureKind> {
        self.killed_worker.insert((task, attempt));
        self.count_killing(task, attempt)
    }

    /// A worker taken down by an attempt whose start the scheduler knew of must be charged to
    /// it (or the attempt was cancelled because its task failed or its graph went): so a
    /// poison task never takes down more than the limit.
    fn count_killing(&mut self, task: TaskRef, attempt: AttemptId) -> Result<(), FailureKind> {
        let key = (task, attempt);
        if !(self.killed_worker.contains(&key) && self.start_accepted.contains(&key)) {
            return Ok(());
        }
        let n = self.known_killings.entry(task).or_default();
        *n += 1;
        if *n > self.max_worker_deaths {
            return Err(FailureKind::PoisonUnbounded {
                task,
                killed: *n,
                limit: self.max_worker_deaths,
            });
        }
        Ok(())
    }

    /// At the end of a scheduler step: the poison tasks it logged (their `observed` texts) must
    /// be exactly those whose charge reached the limit in the step.
    pub(crate) fn check_poison(&mut self, mut logged: Vec<String>) -> Result<(), FailureKind> {
        let mut expected = std::mem::take(&mut self.pending_poison);
        expected.sort();
        logged.sort();
        if expected != logged {
            return Err(FailureKind::PoisonMismatch { expected, logged });
        }
        Ok(())
    }

    /// The scheduler sent `a` to `inc`: it must match the model and name live holders.
    pub(crate) fn on_assign(
        &mut self,
        inc: Incarnation,
        a: &Assignment,
        models: &[GraphModel],
    ) -> Result<(), FailureKind> {
        if let Some(w) = self.live.get(&inc) {
            self.issued.insert((a.task, a.attempt), w.name.clone());
        }
        self.order += 1;
        self.last_assign.insert(
            a.task,
            AssignRec {
                attempt: a.attempt,
                incarnation: inc,
                order: self.order,
            },
        );
        self.live_assign.insert(
            a.task,
            LiveAssign {
                attempt: a.attempt,
                incarnation: inc,
                started: false,
            },
        );
        let Some(model) = self.model_of(a.task.graph).map(|m| &models[m]) else {
            return Ok(()); // a graph of no model cannot happen; nothing to compare with
        };
        let bad = |why: String| {
            let key = model
                .task(a.task.index)
                .map_or_else(String::new, |t| t.key.clone());
            Err(FailureKind::BadAssignment {
                task: a.task,
                key,
                why,
            })
        };
        let Some(t) = model.task(a.task.index) else {
            return bad("no such task".into());
        };
        if *a.kind != t.kind() {
            return bad(format!("kind {:?}, model says {:?}", a.kind, t.kind()));
        }
        if let Some(src) = &t.adopt {
            // Its one input is the key it adopts, in the other graph.
            let want = TaskRef {
                graph: src.graph,
                index: src.index,
            };
            let got: Vec<TaskRef> = a.deps.iter().map(|d| d.task).collect();
            if got != [want] {
                return bad(format!(
                    "adopt task with inputs {got:?}, model says [{want}]"
                ));
            }
        } else {
            let want: Vec<u32> = t.deps.iter().map(|&d| model.spec_pos[d]).collect();
            let got: Vec<u32> = a.deps.iter().map(|d| d.task.index).collect();
            if want != got || a.deps.iter().any(|d| d.task.graph != a.task.graph) {
                return bad(format!("deps {got:?}, model says {want:?}"));
            }
        }
        if t.deps
            .iter()
            .any(|&d| model.tasks[d].expected == Expected::Failed)
        {
            // A task whose input can only fail must err without running.
            return bad("assigned although a dependency can only fail".into());
        }
        for d in &a.deps {
            if let Some(holder) = &d.holder {
                if !self.live.values().any(|w| *w.data_address == **holder) {
                    return bad(format!(
                        "dep {} at {holder}, no live worker has that address",
                        d.task
                    ));
                }
            }
        }
        let Some(w) = self.live.get(&inc) else {
            return bad(format!(
                "assigned to {inc}, which the scheduler does not count as live"
            ));
        };
        let p = &t.placement;
        if let (Some(names), false) = (&p.workers, p.allow_other_workers) {
            let answers = |n: &String| *n == w.name || *n == w.data_address || *n == w.host;
            if !names.iter().any(answers) {
                return bad(format!("restricted to {names:?}, assigned to {}", w.name));
            }
        }
        if p.gpu.is_some() {
            let declared = w.resources.get(GPU_RESOURCE).copied().unwrap_or(0.0);
            let used: f64 = self
                .live_assign
                .iter()
                .filter(|(_, a)| a.incarnation == inc)
                .filter_map(|(task, _)| {
                    let m = self.model_of(task.graph)?;
                    models[m].task(task.index)?.placement.gpu
                })
                .sum();
            if used > declared + 1e-9 {
                return bad(format!(
                    "{} declares {GPU_RESOURCE}={declared}, its assigned tasks ask for {used}",
                    w.name
                ));
            }
        }
        Ok(())
    }

    /// The scheduler handled a report from `inc`; `accepted` tells whether it counted it as
    /// stale. An accepted report must be for the attempt last assigned to `inc`, `inc` must not
    /// have been dropped, and a result is accepted at most once per assignment.
    pub(crate) fn on_report(
        &mut self,
        now: Duration,
        inc: Incarnation,
        msg: &WorkerToScheduler,
        accepted: bool,
        models: &[GraphModel],
    ) -> Result<(), FailureKind> {
        let (task, attempt) = match msg {
            WorkerToScheduler::TaskDone { task, attempt, .. }
            | WorkerToScheduler::TaskFailed { task, attempt, .. }
            | WorkerToScheduler::MissingDep { task, attempt, .. }
            | WorkerToScheduler::TaskStarted { task, attempt }
            | WorkerToScheduler::TaskSeceded { task, attempt }
            | WorkerToScheduler::TaskRejoined { task, attempt }
            | WorkerToScheduler::StealResponse {
                task,
                attempt,
                stolen: true,
            } => (*task, *attempt),
            WorkerToScheduler::StealResponse { stolen: false, .. } => return Ok(()),
            WorkerToScheduler::Register(_)
            | WorkerToScheduler::Heartbeat(_)
            | WorkerToScheduler::Event(_)
            | WorkerToScheduler::Replicated { .. } => return Ok(()),
        };
        if !accepted {
            return Ok(());
        }
        let fenced = |why| {
            Err(FailureKind::FencedResultAccepted {
                task,
                attempt,
                incarnation: inc,
                why,
            })
        };
        if self.removed.contains(&inc) {
            return fenced("that incarnation was already dropped");
        }
        let Some(rec) = self.last_assign.get(&task).copied() else {
            return fenced("the task was never assigned");
        };
        if rec.attempt != attempt || rec.incarnation != inc {
            return fenced("not the attempt last assigned, or not to this incarnation");
        }
        let live = self
            .live_assign
            .get(&task)
            .is_some_and(|a| a.attempt == attempt && a.incarnation == inc);
        if !live {
            return fenced("that assignment was already reported, cancelled or lost");
        }
        if let WorkerToScheduler::StealResponse { .. } = msg {
            // Given up: that attempt must never have run, and never will (checked at start).
            if self.executor_started.contains(&(task, attempt)) {
                return Err(FailureKind::StolenAfterStart { task, attempt });
            }
            self.stolen.insert((task, attempt));
            self.live_assign.remove(&task);
            return Ok(());
        }
        if let WorkerToScheduler::TaskStarted { .. } = msg {
            if !self.executor_started.contains(&(task, attempt)) {
                return Err(FailureKind::FalseStart { task, attempt });
            }
            if let Some(a) = self.live_assign.get_mut(&task) {
                a.started = true;
            }
            if self.start_accepted.insert((task, attempt)) {
                self.count_killing(task, attempt)?;
            }
            return Ok(());
        }
        self.live_assign.remove(&task);
        let model = self.model_of(task.graph).map(|m| &models[m]);
        let mt = model.and_then(|m| m.task(task.index));
        match msg {
            WorkerToScheduler::TaskDone { size, .. } => {
                if self.last_accept.get(&task).is_some_and(|&a| a > rec.order) {
                    return fenced("a result of this assignment was already accepted");
                }
                self.order += 1;
                self.last_accept.insert(task, self.order);
                *self.done_count.entry(task).or_default() += 1;
                self.accepted.push(Accepted {
                    task,
                    attempt,
                    incarnation: inc,
                    at: now,
                });
                if let Some(t) = mt {
                    match &t.expected {
                        Expected::Value(v) if v.len() as u64 != *size => {
                            return Err(FailureKind::WrongInputs {
                                task,
                                key: t.key.clone(),
                                why: format!("result of {size} bytes, expected {}", v.len()),
                            });
                        }
                        Expected::Failed => return fenced("the task can only fail"),
                        Expected::Value(_) => {}
                    }
                }
            }
            WorkerToScheduler::TaskFailed { error, .. } => {
                let n = self.failures_accepted.entry(task).or_default();
                *n += 1;
                if let Some(t) = mt {
                    let allowed = t.failures_allowed();
                    if allowed == 0 {
                        return Err(FailureKind::UnexpectedTaskFailure {
                            task,
                            key: t.key.clone(),
                            error: error.message.clone(),
                        });
                    }
                    if *n > allowed {
                        return Err(FailureKind::TooManyFailures {
                            task,
                            accepted: *n,
                            allowed,
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An `Execute` reached the executor: its inputs must be the dependencies' true values.
    pub(crate) fn on_execute(
        &self,
        task: TaskRef,
        inputs: &[Bytes],
        models: &[GraphModel],
    ) -> Result<(), FailureKind> {
        let Some(model) = self.model_of(task.graph).map(|m| &models[m]) else {
            return Ok(());
        };
        let Some(t) = model.task(task.index) else {
            return Ok(());
        };
        let wrong = |why: String| {
            Err(FailureKind::WrongInputs {
                task,
                key: t.key.clone(),
                why,
            })
        };
        if t.adopt.is_some() {
            // The source's value, which the model worked out from the source's own graph.
            return match (&t.expected, inputs) {
                (Expected::Value(v), [input]) if v == input => Ok(()),
                (Expected::Value(v), [input]) => wrong(format!(
                    "adopted {}, the source's value is {}",
                    crate::error::Shown(input),
                    crate::error::Shown(v)
                )),
                _ => wrong(format!("an adopt task with {} inputs", inputs.len())),
            };
        }
        if inputs.len() != t.deps.len() {
            return wrong(format!("{} inputs for {} deps", inputs.len(), t.deps.len()));
        }
        for (i, (&d, input)) in t.deps.iter().zip(inputs).enumerate() {
            match &model.tasks[d].expected {
                Expected::Value(v) if v == input => {}
                Expected::Value(v) => {
                    return wrong(format!(
                        "input {i} is {}, expected {}",
                        crate::error::Shown(input),
                        crate::error::Shown(v)
                    ))
                }
                Expected::Failed => return wrong(format!("input {i} comes from a failed task")),
            }
        }
        Ok(())
    }
}
