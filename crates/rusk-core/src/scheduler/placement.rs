//! Placement: the ready queue and which worker gets each ready task.
//!
//! Ready tasks wait in priority order ([`ReadyKey`]: priority, then submission, then the
//! submitter's graph order). Tasks without restrictions share one queue; tasks with resources
//! or a `workers` list wait in the queue of their class (see `restricted.rs`), placed first
//! since they can only go to some workers.
use super::*;

impl Scheduler {
    pub(super) fn make_ready(&mut self, task: TaskRef) {
        self.set_state(task, TaskState::Ready);
        let t = self.task_mut(task).expect("exists");
        if t.queued {
            return; // its (lazily stale) entry is still queued: it serves again
        }
        t.queued = true;
        let key = t.ready_key(task);
        match t.restrictions.clone() {
            None => {
                self.ready.insert(key);
            }
            Some(r) => self.enqueue_restricted(key, r),
        }
    }

    /// Assign ready tasks to workers with free capacity. Tasks with inputs go to the worker
    /// holding most of their input bytes when it has room; the rest are dealt out in contiguous
    /// chunks (so that neighbouring tasks, often siblings in a reduction, land together) to the
    /// workers with room, round robin, which balances load.
    pub(super) fn schedule(&mut self) {
        if self.worker_order.is_empty() || self.resume_holding() {
            return;
        }
        if !self.classes.is_empty() {
            self.place_restricted();
        }
        if !self.ready.is_empty() {
            self.place_unrestricted();
        }
        self.steal();
    }

    fn place_unrestricted(&mut self) {
        let per_thread = self.config.assigned_per_thread_max;
        let open: usize = self
            .worker_order
            .iter()
            .filter(|i| {
                let w = &self.workers[i];
                w.has_room(per_thread, 0)
            })
            .count();
        if open == 0 {
            return;
        }
        let chunk = self.ready.len().div_ceil(open).max(1);
        let mut taken_in_chunk = 0usize;
        while let Some(key) = self.ready.pop_first() {
            let task = key.task;
            let Some(t) = self.task_mut(task) else {
                continue; // graph released
            };
            t.queued = false;
            if t.state != TaskState::Ready {
                continue; // stale queue entry
            }
            let prefix = t.prefix;
            let est = self.estimate_us(prefix);
            let target = match self.preferred_worker(task, est) {
                Some(w) => Some(w),
                None => {
                    // Round robin over workers with room, `chunk` tasks at a time.
                    let n = self.worker_order.len();
                    let mut found = None;
                    let mut full_seen = 0;
                    while full_seen <= n {
                        let inc = self.worker_order[self.rr_cursor % n];
                        let w = &self.workers[&inc];
                        let room = w.has_room(per_thread, est);
                        if room && taken_in_chunk < chunk {
                            taken_in_chunk += 1;
                            found = Some(inc);
                            break;
                        }
                        self.rr_cursor = (self.rr_cursor + 1) % n;
                        taken_in_chunk = 0;
                        if !room {
                            full_seen += 1;
                        }
                    }
                    found
                }
            };
            match target {
                Some(inc) => self.assign(task, inc),
                None => {
                    let t = self.task_mut(task).expect("exists");
                    t.queued = true;
                    self.ready.insert(key);
                    break;
                }
            }
        }
        // The next call starts with the next worker: tasks that become ready one at a time
        // (a client submitting in a loop) are spread over the cluster, not piled on one worker.
        if taken_in_chunk > 0 {
            self.rr_cursor = (self.rr_cursor + 1) % self.worker_order.len();
        }
    }

    /// Bytes of `task`'s inputs that `holder` holds.
    pub(super) fn input_bytes_on(&self, task: TaskRef, holder: Incarnation) -> u64 {
        let g = &self.graphs[&task.graph];
        g.tasks[task.index as usize]
            .deps
            .iter()
            .filter_map(|&e| match g.tasks[e as usize].state {
                TaskState::Memory { holder: h, size }
                    if h == holder
                        || self.is_replica_on(
                            TaskRef {
                                graph: task.graph,
                                index: e,
                            },
                            holder,
                        ) =>
                {
                    Some(size.max(1))
                }
                _ => None,
            })
            .sum()
    }

    /// The worker with free capacity holding the most input bytes of `task`, if any holds any.
    pub(super) fn preferred_worker(&self, task: TaskRef, est: u64) -> Option<Incarnation> {
        let g = &self.graphs[&task.graph];
        let t = &g.tasks[task.index as usize];
        let per_thread = self.config.assigned_per_thread_max;
        if let Some(src) = self.adopt_source(task) {
            // An adopt task runs where its source is: the value is then shared, not copied.
            return self
                .copies(src)
                .find(|h| self.workers[h].has_room(per_thread, est));
        }
        // Most input bytes first; among equals (a broadcast input is on every worker) the
        // least loaded, then the oldest.
        let mut best: Option<(u64, usize, Incarnation)> = None;
        for &d in t.deps.iter() {
            let dref = TaskRef {
                graph: task.graph,
                index: d,
            };
            for holder in self.copies(dref) {
                let w = &self.workers[&holder];
                if !w.has_room(per_thread, est) {
                    continue;
                }
                // Sum this holder's bytes over all deps (deps lists are short in practice).
                let bytes = self.input_bytes_on(task, holder);
                let load = w.assigned.len();
                let better = best.is_none_or(|(b, l, i)| {
                    bytes > b || (bytes == b && (load < l || (load == l && holder < i)))
                });
                if better {
                    best = Some((bytes, load, holder));
                }
            }
        }
        best.map(|(_, _, i)| i)
    }

    pub(super) fn assign(&mut self, task: TaskRef, inc: Incarnation) {
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        self.reserve_ids();
        let g = &self.graphs[&task.graph];
        let t = &g.tasks[task.index as usize];
        let est = self.estimate_us(t.prefix);
        let inputs = t.deps.iter().map(|&d| TaskRef {
            graph: task.graph,
            index: d,
        });
        let deps = inputs
            .chain(self.adopt_source(task))
            .map(|d| {
                let TaskState::Memory { holder, .. } = self.task(d).expect("input exists").state
                else {
                    unreachable!("ready task has a dependency not in memory");
                };
                let local = holder == inc || self.is_replica_on(d, inc);
                DepLocation {
                    task: d,
                    holder: (!local).then(|| self.workers[&holder].address.clone()),
                }
            })
            .collect();
        let assignment = Assignment {
            task,
            attempt,
            kind: t.kind.clone(),
            deps,
            timeout_ms: (t.timeout_ms > 0).then_some(t.timeout_ms as u64),
            priority: t.priority,
            expected_us: est,
        };
        self.workers
            .get_mut(&inc)
            .expect("target exists")
            .assigned
            .insert(task);
        let t = self.task_mut(task).expect("exists");
        t.attempt = attempt;
        t.steal_refused = false;
        t.est_us = est;
        self.set_state(task, TaskState::assigned(inc));
        self.out.push(Command::ToWorker {
            incarnation: inc,
            msg: SchedulerToWorker::Assign(Arc::new(assignment)),
        });
    }
}
