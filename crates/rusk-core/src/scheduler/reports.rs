//! A worker's reports about its tasks (done, failed, missing input), fenced by attempt and
//! incarnation: only the current attempt on the worker it was given to moves a task.
use super::*;

impl Scheduler {
    /// Is `task` currently assigned to `inc` under `attempt`? Anything else is a stale report.
    pub(super) fn is_current(&self, inc: Incarnation, task: TaskRef, attempt: AttemptId) -> bool {
        let Some(t) = self.task(task) else {
            return false;
        };
        t.attempt == attempt && t.state.assigned_to() == Some(inc)
    }

    pub(super) fn on_task_done(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
        size: u64,
    ) {
        if !self.is_current(inc, task, attempt) {
            self.stats.stale_reports += 1;
            // The worker stored that result before reporting it (for example it finished just
            // as a Cancel or the graph's removal crossed its report). Unless it is the copy we
            // count on, or the task is assigned to it again (its new result will replace the
            // store entry), tell it to drop the copy: nobody else ever will.
            let counted = self.task(task).is_some_and(|t| {
                matches!(t.state, TaskState::Memory { holder, .. } if holder == inc)
                    || t.state.assigned_to() == Some(inc)
            });
            if !counted {
                self.out.push(Command::ToWorker {
                    incarnation: inc,
                    msg: SchedulerToWorker::Release { tasks: vec![task] },
                });
            }
            return;
        }
        self.record_duration(task);
        let w = self.workers.get_mut(&inc).expect("checked above");
        w.assigned.remove(&task);
        w.holds.insert(task);
        self.set_state(task, TaskState::Memory { holder: inc, size });
        self.journal_in_memory(task, size, inc);
        self.stats.tasks_completed += 1;
        let g = self.graphs.get_mut(&task.graph).expect("task exists");
        g.done += 1;
        g.progress_dirty = true;
        let idx = task.index as usize;
        if g.tasks[idx].is_output {
            g.outputs_pending -= 1;
            if g.session {
                g.newly_done.push(task.index);
            }
        }
        let mut newly_ready = std::mem::take(&mut self.scratch);
        for k in 0..g.tasks[idx].dependents.len() {
            let d = g.tasks[idx].dependents[k];
            let dt = &mut g.tasks[d as usize];
            match dt.state {
                TaskState::Waiting => {
                    dt.missing -= 1;
                    if dt.missing == 0 {
                        newly_ready.push(TaskRef {
                            graph: task.graph,
                            index: d,
                        });
                    }
                }
                // A started dependent that ran on while this input was recomputed.
                TaskState::Assigned { .. } if dt.missing > 0 => dt.missing -= 1,
                _ => {}
            }
        }
        for a in self.adopters_of(task) {
            let at = self.task_mut(a).expect("adopter exists");
            match at.state {
                TaskState::Waiting => {
                    at.missing -= 1;
                    if at.missing == 0 {
                        newly_ready.push(a);
                    }
                }
                TaskState::Assigned { .. } if at.missing > 0 => at.missing -= 1,
                _ => {}
            }
        }
        for r in newly_ready.drain(..) {
            self.make_ready(r);
        }
        self.scratch = newly_ready;
        let ndeps = self.graphs[&task.graph].tasks[idx].deps.len();
        for k in 0..ndeps {
            let d = self.graphs[&task.graph].tasks[idx].deps[k];
            self.release_if_unneeded(TaskRef {
                graph: task.graph,
                index: d,
            });
        }
        if let Some(src) = self.adopt_source(task) {
            self.drop_unneeded(src);
        }
        self.release_if_unneeded(task);
        self.maybe_finish_graph(task.graph);
        self.notify_watchers(task);
        self.finish_keep(task);
    }

    pub(super) fn on_task_failed(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
        error: TaskError,
    ) {
        if !self.is_current(inc, task, attempt) {
            self.stats.stale_reports += 1;
            return;
        }
        self.workers
            .get_mut(&inc)
            .expect("checked")
            .assigned
            .remove(&task);
        let t = self.task_mut(task).expect("checked");
        if t.retries_left > 0 {
            t.retries_left -= 1;
            // Back to Ready, or to Waiting if an input was lost while it ran.
            self.unassign(task);
            return;
        }
        let msg = match error.exit_code {
            Some(code) => format!(
                "task {:?} failed (exit code {code}): {}",
                t.key, error.message
            ),
            None => format!("task {:?} failed: {}", t.key, error.message),
        };
        self.fail_task(
            task,
            Failure {
                message: Arc::from(msg),
                detail: error.detail,
            },
        );
    }

    pub(super) fn on_missing_dep(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
        dep: TaskRef,
    ) {
        if !self.is_current(inc, task, attempt) {
            self.stats.stale_reports += 1;
            return;
        }
        // The holder could not serve it: treat that copy as lost, which also sends this task
        // back to waiting and recomputes the dependency.
        if let Some(TaskState::Memory { holder, .. }) = self.task(dep).map(|t| t.state) {
            // The copy it was sent to: its own when it has one (it read its store), else the
            // primary's.
            let holder = if self.has_copy(dep, inc) { inc } else { holder };
            if let Some(h) = self.workers.get_mut(&holder) {
                h.holds.remove(&dep);
            }
            if self.lose_copy(dep, holder) {
                self.lose_result(dep);
            }
            // The holder may well still have it (the fetch failed on the way, or timed out):
            // tell it to drop the copy we no longer count on, or it keeps it for its whole
            // life. After `lose_result`, so that the holder first cancels its own tasks that
            // read it from its store.
            self.out.push(Command::ToWorker {
                incarnation: holder,
                msg: SchedulerToWorker::Release { tasks: vec![dep] },
            });
        }
        // If the dep was somehow in memory on no one, at least re-place the task.
        if self.is_current(inc, task, attempt) {
            self.workers
                .get_mut(&inc)
                .expect("checked")
                .assigned
                .remove(&task);
            self.unassign(task);
        }
    }
}
