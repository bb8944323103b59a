//! Extra copies of results (`Client.replicate`, `scatter(broadcast=True)`).
//!
//! A task in memory has one primary holder (`TaskState::Memory`) and any number of replicas
//! (`Scheduler::replicas`), each counted in its worker's `holds`. A worker makes a replica
//! itself, fetching the value from the primary (`SchedulerToWorker::Replicate`), and it counts
//! only once the worker reports it stored (`Replicated`) for the attempt whose value is still
//! the one in memory: a copy of an older value is released. Replicas go when the result leaves
//! memory. When the primary's copy is lost (its worker died, or a fetch from it failed), a
//! replica takes its place and nothing is recomputed. Dependents placed on a worker with any
//! copy read it locally, and placement counts every copy.
use super::*;

/// Keys in one `Replicate` request; more is refused with an error.
pub const REPLICATE_KEYS_MAX: usize = 100_000;

/// Keys in one `WhoHas` request; more is refused with an error.
pub const WHO_HAS_KEYS_MAX: usize = 100_000;

impl Scheduler {
    /// Every worker with a copy of `task`'s result: the primary first, then the replicas.
    pub(super) fn copies(&self, task: TaskRef) -> impl Iterator<Item = Incarnation> + '_ {
        let primary = match self.task(task).map(|t| t.state) {
            Some(TaskState::Memory { holder, .. }) => Some(holder),
            _ => None,
        };
        let replicas = primary
            .and_then(|_| self.replicas.get(&task))
            .map(|r| r.as_slice())
            .unwrap_or_default();
        primary.into_iter().chain(replicas.iter().copied())
    }

    /// Is `inc` one of `task`'s replicas (cheap when there are none anywhere)?
    pub(super) fn is_replica_on(&self, task: TaskRef, inc: Incarnation) -> bool {
        !self.replicas.is_empty() && self.replicas.get(&task).is_some_and(|r| r.contains(&inc))
    }

    /// Does `inc` have a copy of `task`'s result the scheduler counts on?
    pub(super) fn has_copy(&self, task: TaskRef, inc: Incarnation) -> bool {
        self.copies(task).any(|c| c == inc)
    }

    /// Refuse a request of more than `max` keys, with an error naming the bound.
    fn too_many_keys(
        &mut self,
        client: ClientId,
        what: &str,
        n: usize,
        (max, bound): (usize, &str),
    ) -> bool {
        if n <= max {
            return false;
        }
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::Error {
                message: format!(
                    "{what} of {n} keys refused: at most {max} in one request ({bound})"
                ),
            },
        });
        true
    }

    pub(super) fn on_replicate(
        &mut self,
        client: ClientId,
        graph: GraphId,
        keys: Vec<String>,
        n: Option<u32>,
        names: Option<Vec<String>>,
    ) {
        if self.too_many_keys(
            client,
            "replicate",
            keys.len(),
            (REPLICATE_KEYS_MAX, "REPLICATE_KEYS_MAX"),
        ) {
            return;
        }
        // Candidates: live workers that take work (not paused, not unhealthy), in join order,
        // those named in `workers` only.
        let targets: Vec<Incarnation> = self
            .worker_order
            .iter()
            .copied()
            .filter(|i| {
                let w = &self.workers[i];
                w.heartbeat.paused.is_none()
                    && w.heartbeat.vitals.unhealthy.is_none()
                    && names
                        .as_ref()
                        .is_none_or(|ns| ns.iter().any(|n| w.answers_to(n)))
            })
            .collect();
        for key in keys {
            let Some(task) = self.resolve_key(graph, &key) else {
                continue;
            };
            let t = self.task(task).expect("resolved");
            let TaskState::Memory { holder, .. } = t.state else {
                continue;
            };
            let attempt = t.attempt;
            let want = n.map_or(usize::MAX, |n| n.max(1) as usize);
            let mut have = self.copies(task).count();
            let from = self.workers[&holder].address.clone();
            for &inc in &targets {
                if have >= want {
                    break;
                }
                if self.has_copy(task, inc) {
                    continue;
                }
                have += 1; // asked for: the next request does not ask it again in this batch
                self.out.push(Command::ToWorker {
                    incarnation: inc,
                    msg: SchedulerToWorker::Replicate {
                        task,
                        attempt,
                        from: from.clone(),
                    },
                });
            }
        }
    }

    pub(super) fn on_replicated(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
        _size: u64,
    ) {
        let counts = self
            .task(task)
            .is_some_and(|t| t.attempt == attempt && matches!(t.state, TaskState::Memory { .. }));
        if counts {
            if !self.has_copy(task, inc) {
                self.stats.replicas_stored += 1;
                self.replicas.entry(task).or_default().push(inc);
                self.workers
                    .get_mut(&inc)
                    .expect("reporting worker is live")
                    .holds
                    .insert(task);
            }
            return;
        }
        // A copy of a value no longer in memory (released, lost, recomputed since): drop it,
        // unless the task is assigned to this worker again (its store entry is the new
        // attempt's, which the assignment already cleared the old copy for).
        let reassigned = self
            .task(task)
            .is_some_and(|t| t.state.assigned_to() == Some(inc));
        if !reassigned && !self.has_copy(task, inc) {
            self.out.push(Command::ToWorker {
                incarnation: inc,
                msg: SchedulerToWorker::Release { tasks: vec![task] },
            });
        }
    }

    pub(super) fn on_who_has(&mut self, client: ClientId, graph: GraphId, keys: Vec<String>) {
        if self.too_many_keys(
            client,
            "who_has",
            keys.len(),
            (WHO_HAS_KEYS_MAX, "WHO_HAS_KEYS_MAX"),
        ) {
            return;
        }
        let holders = keys
            .into_iter()
            .map(|key| {
                let at = match self.resolve_key(graph, &key) {
                    Some(task) => self
                        .copies(task)
                        .map(|i| self.workers[&i].address.clone())
                        .collect(),
                    None => Vec::new(),
                };
                (key, at)
            })
            .collect();
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::WhoHas { graph, holders },
        });
    }

    /// Forget `task`'s replicas (its workers' `holds` too); returns their workers.
    pub(super) fn take_replicas(&mut self, task: TaskRef) -> Vec<Incarnation> {
        let Some(reps) = self.replicas.remove(&task) else {
            return Vec::new();
        };
        for r in &reps {
            if let Some(w) = self.workers.get_mut(r) {
                w.holds.remove(&task);
            }
        }
        reps
    }

    /// The result left memory: its replicas are released on their workers.
    pub(super) fn drop_replicas(&mut self, task: TaskRef) {
        for incarnation in self.take_replicas(task) {
            self.out.push(Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Release { tasks: vec![task] },
            });
        }
    }

    /// Worker `inc`'s copy of `task` is gone (the worker was removed, or a fetch from it
    /// failed); `inc`'s `holds` no longer lists it. A lost replica is just forgotten. A lost
    /// primary hands over to the first replica on a live worker; returns `true` when that copy
    /// was the last one: then the caller forgets the result (and recomputes it if needed).
    pub(super) fn lose_copy(&mut self, task: TaskRef, inc: Incarnation) -> bool {
        let Some(TaskState::Memory { holder, size }) = self.task(task).map(|t| t.state) else {
            return false;
        };
        if holder != inc {
            if let Some(reps) = self.replicas.get_mut(&task) {
                reps.retain(|&r| r != inc);
                if reps.is_empty() {
                    self.replicas.remove(&task);
                }
            }
            return false;
        }
        let Some(reps) = self.replicas.get_mut(&task) else {
            return true;
        };
        let heir = reps.remove(0);
        if reps.is_empty() {
            self.replicas.remove(&task);
        }
        debug_assert!(self.workers.contains_key(&heir), "replica on a live worker");
        self.stats.replicas_promoted += 1;
        self.set_state(task, TaskState::Memory { holder: heir, size });
        false
    }

    /// Replicas belong to tasks in memory, on live workers that list them, never twice and
    /// never on the primary.
    pub(super) fn check_replicas(&self) -> usize {
        let mut n = 0;
        for (&task, reps) in &self.replicas {
            let state = self.task(task).map(|t| t.state);
            let Some(TaskState::Memory { holder, .. }) = state else {
                panic!("{task} has replicas but is {state:?}");
            };
            assert!(!reps.is_empty(), "{task}: empty replica list kept");
            for (k, r) in reps.iter().enumerate() {
                assert_ne!(*r, holder, "{task}: replica on its primary");
                assert!(!reps[..k].contains(r), "{task}: replica {r} twice");
                let w = self
                    .workers
                    .get(r)
                    .unwrap_or_else(|| panic!("{task}: replica on unknown worker {r}"));
                assert!(w.holds.contains(&task), "{task} not in replica {r}'s holds");
            }
            n += reps.len();
        }
        n
    }
}
