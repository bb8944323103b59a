//! Recovery transitions shared by the handlers: requeueing, losing and recomputing results
//! from lineage, failing a task and everything downstream, and the bounded recovery log.
use super::*;

impl Scheduler {
    /// An event-log entry of the scheduler's own about `host`, to be completed by the caller.
    pub(super) fn scheduler_record(host: String, cause: EventCause) -> EventRecord {
        EventRecord {
            seq: 0,
            time_unix_ms: 0,
            source: EventSource::Scheduler,
            host,
            nanny: None,
            slot: None,
            worker: None,
            incarnation: None,
            new_incarnation: None,
            cause,
            observed: String::new(),
            action: String::new(),
            detection_ms: None,
            recovery_ms: None,
        }
    }

    /// An event-log entry of the scheduler's own about a worker, to be completed by the caller.
    pub(super) fn worker_record(
        &self,
        info: &WorkerInfo,
        inc: Incarnation,
        cause: EventCause,
    ) -> EventRecord {
        EventRecord {
            seq: 0,
            time_unix_ms: 0,
            source: EventSource::Scheduler,
            host: info.host.clone(),
            nanny: info.nanny.clone(),
            slot: info.slot,
            worker: Some(info.name.clone()),
            incarnation: Some(inc.0),
            new_incarnation: None,
            cause,
            observed: String::new(),
            action: String::new(),
            detection_ms: None,
            recovery_ms: None,
        }
    }

    /// Append to the recovery log (bounded) and hand the entry to the shell for logging.
    pub(super) fn record(&mut self, now: Duration, mut r: EventRecord) {
        r.seq = self.next_event_seq;
        self.next_event_seq += 1;
        r.time_unix_ms = self.config.epoch_unix_ms + now.as_millis() as u64;
        self.events.push_back(r.clone());
        while self.events.len() > self.config.events_retained_max {
            self.events.pop_front();
        }
        self.out.push(Command::Log(r));
    }

    /// An assigned task goes back to Ready/Waiting under a new attempt. The caller has removed
    /// it from its worker's `assigned` set.
    pub(super) fn unassign(&mut self, task: TaskRef) {
        let t = self.task(task).expect("assigned task exists");
        debug_assert!(matches!(t.state, TaskState::Assigned { .. }));
        if t.missing == 0 {
            self.make_ready(task);
        } else {
            self.set_state(task, TaskState::Waiting);
        }
    }

    /// The only copy of `task`'s result is gone (its holder's index is already updated).
    pub(super) fn lose_result(&mut self, task: TaskRef) {
        self.forget_result(task);
        self.recompute_if_needed(task);
    }

    /// A lost result that is still needed is computed again.
    pub(super) fn recompute_if_needed(&mut self, task: TaskRef) {
        let released = self
            .task(task)
            .is_some_and(|t| t.state == TaskState::Released);
        if released && self.is_needed(task) {
            self.recompute(task);
        }
    }

    /// `lose_result` without the recomputation: the task is released and dependents that were
    /// about to use it wait again.
    pub(super) fn forget_result(&mut self, task: TaskRef) {
        let g = self.graphs.get_mut(&task.graph).expect("task exists");
        let t = &g.tasks[task.index as usize];
        debug_assert!(matches!(t.state, TaskState::Memory { .. }));
        let is_output = t.is_output;
        let dependents = t.dependents.clone();
        // Memory -> Released leaves `done` unchanged (both count as done); `recompute` takes
        // the task out of `done` if it has to run again.
        g.progress_dirty = true;
        if is_output {
            g.outputs_pending += 1;
        }
        self.set_state(task, TaskState::Released);
        // Dependents that were about to use it must wait for the recomputation. One that has
        // started already has its inputs: it runs on (and if its attempt ends without a
        // result, it waits like the others). Cancelling it would throw its work away, and,
        // were it running on the very worker that is found dead a moment later, that death
        // would never be charged to it: a poison task could take any number of workers down.
        let adopters = self.adopters_of(task);
        let local = dependents.iter().map(|&d| TaskRef {
            graph: task.graph,
            index: d,
        });
        for dref in local.chain(adopters) {
            let dt = self.task_mut(dref).expect("dependent exists");
            match dt.state {
                TaskState::Waiting => dt.missing += 1,
                TaskState::Assigned { .. } if dt.started() => dt.missing += 1,
                TaskState::Ready => {
                    dt.missing += 1;
                    self.set_state(dref, TaskState::Waiting);
                }
                TaskState::Assigned { worker, .. } => {
                    dt.missing += 1;
                    let attempt = dt.attempt;
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.assigned.remove(&dref);
                    }
                    self.out.push(Command::ToWorker {
                        incarnation: worker,
                        msg: SchedulerToWorker::Cancel {
                            task: dref,
                            attempt,
                        },
                    });
                    self.set_state(dref, TaskState::Waiting);
                }
                TaskState::Memory { .. } | TaskState::Released | TaskState::Erred => {}
            }
        }
    }

    /// Bring a released task (and, transitively, its released inputs) back to Waiting/Ready.
    pub(super) fn recompute(&mut self, root: TaskRef) {
        let mut stack = vec![root];
        while let Some(task) = stack.pop() {
            let g = self.graphs.get_mut(&task.graph).expect("task exists");
            if g.tasks[task.index as usize].state != TaskState::Released {
                continue;
            }
            // Released counts as done; the task leaves it now (for Waiting, Ready or Erred).
            g.done -= 1;
            g.progress_dirty = true;
            self.stats.results_recomputed += 1;
            let t = &g.tasks[task.index as usize];
            let mut inputs: Vec<TaskRef> = t
                .deps
                .iter()
                .map(|&d| TaskRef {
                    graph: task.graph,
                    index: d,
                })
                .collect();
            inputs.extend(self.adopt_source(task));
            if inputs.iter().any(|&d| self.task(d).is_none()) {
                // An adopted key whose graph is gone: no lineage left to recompute from.
                let f = Failure::new(format!(
                    "task {:?} lost its value, and the key it adopted was released by its \
                     client since",
                    &*self.task(task).expect("exists").key
                ));
                self.set_state(task, TaskState::Waiting);
                self.task_mut(task).expect("exists").missing = 1;
                self.fail_with(task, f.clone(), f);
                continue;
            }
            let mut missing = 0;
            let mut erred_dep = None;
            for d in inputs {
                match self.task(d).expect("checked").state {
                    TaskState::Memory { .. } => {}
                    TaskState::Erred => {
                        erred_dep = Some(d);
                        missing += 1;
                    }
                    TaskState::Released => {
                        missing += 1;
                        stack.push(d);
                    }
                    TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                        missing += 1
                    }
                }
            }
            if let Some(d) = erred_dep {
                // The input failed after this task had used it: this task and everything
                // downstream fail with the error the input's dependents carry.
                let failure = self.downstream_failure(d);
                self.set_state(task, TaskState::Waiting);
                self.task_mut(task).expect("exists").missing = missing;
                self.fail_with(task, failure.clone(), failure);
                continue;
            }
            self.task_mut(task).expect("exists").missing = missing;
            if missing == 0 {
                self.make_ready(task);
            } else {
                self.set_state(task, TaskState::Waiting);
            }
        }
    }

    /// Mark `root` erred with its own `error`, and every unfinished task downstream of it with
    /// `dependency "<root>" failed: <error>`.
    pub(super) fn fail_task(&mut self, root: TaskRef, error: Failure) {
        self.journal(crate::journal::Record::Failed {
            task: root,
            message: error.message.to_string(),
            detail: error.detail.clone(),
        });
        let root_key = self.task(root).expect("exists").key.clone();
        let downstream = Failure {
            message: Arc::from(format!(
                "dependency {:?} failed: {}",
                &*root_key, error.message
            )),
            detail: error.detail.clone(),
        };
        self.fail_with(root, error, downstream);
    }

    /// The error the dependents of erred task `d` carry: `dependency "<d>" failed: ...` if `d`
    /// failed itself (its own error then names it: every root error is `task "<d>" ...`), or
    /// the very error of `d` if it was failed by one of its own inputs.
    pub(super) fn downstream_failure(&self, d: TaskRef) -> Failure {
        let g = &self.graphs[&d.graph];
        let key = &g.tasks[d.index as usize].key;
        let Some(f) = g.errors.get(&d.index) else {
            return Failure::new(format!("dependency {:?} failed", &**key));
        };
        if f.message.starts_with(&format!("task {:?} ", &**key)) {
            Failure {
                message: Arc::from(format!("dependency {:?} failed: {}", &**key, f.message)),
                detail: f.detail.clone(),
            }
        } else {
            f.clone()
        }
    }

    /// Mark `start` erred with `own`, and every unfinished task downstream of it with
    /// `downstream`.
    pub(super) fn fail_with(&mut self, start: TaskRef, own: Failure, downstream: Failure) {
        let mut stack = vec![(start, own)];
        let mut finished_graphs: Vec<GraphId> = Vec::new();
        let mut finished: Vec<TaskRef> = Vec::new();
        while let Some((task, err)) = stack.pop() {
            let t = self.task(task).expect("exists");
            if !t.state.is_unfinished() {
                continue;
            }
            if let TaskState::Assigned { worker, .. } = t.state {
                let attempt = t.attempt;
                // The reporting worker already dropped its own failed attempt.
                let still_there = self
                    .workers
                    .get_mut(&worker)
                    .is_some_and(|w| w.assigned.remove(&task));
                if still_there {
                    self.out.push(Command::ToWorker {
                        incarnation: worker,
                        msg: SchedulerToWorker::Cancel { task, attempt },
                    });
                }
            }
            self.set_state(task, TaskState::Erred);
            self.stats.tasks_erred += 1;
            let g = self.graphs.get_mut(&task.graph).expect("exists");
            g.erred += 1;
            g.progress_dirty = true;
            g.errors.insert(task.index, err.clone());
            let t = &g.tasks[task.index as usize];
            if t.is_output {
                g.outputs_pending -= 1;
                if g.session {
                    g.newly_done.push(task.index);
                }
                if !finished_graphs.contains(&task.graph) {
                    finished_graphs.push(task.graph);
                }
            }
            let deps = t.deps.clone();
            for &d in t.dependents.iter() {
                stack.push((
                    TaskRef {
                        graph: task.graph,
                        index: d,
                    },
                    downstream.clone(),
                ));
            }
            for a in self.adopters_of(task) {
                stack.push((a, downstream.clone()));
            }
            for d in deps.iter() {
                self.release_if_unneeded(TaskRef {
                    graph: task.graph,
                    index: *d,
                });
            }
            if let Some(src) = self.adopt_source(task) {
                self.drop_unneeded(src);
            }
            finished.push(task);
        }
        for id in finished_graphs {
            self.maybe_finish_graph(id);
        }
        for task in finished {
            self.notify_watchers(task);
            self.finish_keep(task);
        }
    }
}
