//! Workers joining, their messages (heartbeats, health, pause), and their loss: everything a
//! lost worker had is recovered here (queued tasks requeued, poison tasks charged, held
//! results recomputed) and a silent supervised worker is handed to its nanny.
use super::*;

impl Scheduler {
    pub(super) fn on_worker_joined(
        &mut self,
        now: Duration,
        incarnation: Incarnation,
        mut info: WorkerInfo,
    ) {
        let held = std::mem::take(&mut info.held);
        let running = std::mem::take(&mut info.running);
        assert!(
            !self.workers.contains_key(&incarnation),
            "incarnation {incarnation} reused"
        );
        let address: Arc<str> = Arc::from(info.data_address.as_str());
        self.workers.insert(
            incarnation,
            Worker {
                name: Arc::from(info.name.as_str()),
                info,
                address,
                last_seen: now,
                assigned: FxHashSet::default(),
                holds: FxHashSet::default(),
                heartbeat: HeartbeatInfo::default(),
                resources_used: FxHashMap::default(),
                expected_us: 0,
                incoming: 0,
                seceded: FxHashSet::default(),
            },
        );
        self.worker_order.push(incarnation);
        self.refresh_classes();
        self.out.push(Command::ToWorker {
            incarnation,
            msg: SchedulerToWorker::Welcome {
                incarnation,
                heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            },
        });
        self.send_uploads(incarnation);
        if !held.is_empty() {
            self.adopt_held(incarnation, held);
        }
        // After the held results: they may be what a running attempt's task needed.
        if !running.is_empty() {
            self.adopt_running(incarnation, running);
        }
    }

    pub(super) fn on_worker_message(
        &mut self,
        now: Duration,
        inc: Incarnation,
        msg: WorkerToScheduler,
    ) {
        let Some(w) = self.workers.get_mut(&inc) else {
            // A message from a worker we already dropped: fenced.
            self.stats.stale_reports += 1;
            return;
        };
        w.last_seen = now;
        match msg {
            WorkerToScheduler::Register(_) => {} // only valid as the first message; the shell handles it
            WorkerToScheduler::Heartbeat(hb) => {
                let was = w.heartbeat.vitals.unhealthy.clone();
                let now_unhealthy = hb.vitals.unhealthy.clone();
                let (was_paused, now_paused) = (w.heartbeat.paused.clone(), hb.paused.clone());
                w.heartbeat = hb;
                if was_paused != now_paused {
                    let info = w.info.clone();
                    let (cause, observed, action) = match &now_paused {
                        Some(why) => (
                            EventCause::Paused,
                            why.clone(),
                            "no new tasks; it still serves its results",
                        ),
                        None => (
                            EventCause::Resumed,
                            format!(
                                "memory back under its thresholds (was {})",
                                was_paused.unwrap_or_default()
                            ),
                            "receives tasks again",
                        ),
                    };
                    self.record(
                        now,
                        EventRecord {
                            observed,
                            action: action.into(),
                            ..self.worker_record(&info, inc, cause)
                        },
                    );
                }
                let Some(w) = self.workers.get_mut(&inc) else {
                    return;
                };
                if was != now_unhealthy {
                    let info = w.info.clone();
                    let (cause, observed, action) = match &now_unhealthy {
                        Some(why) => (
                            EventCause::Unhealthy,
                            why.clone(),
                            "no new tasks until it is healthy again",
                        ),
                        None => (
                            EventCause::Healthy,
                            format!("recovered from: {}", was.unwrap_or_default()),
                            "receives tasks again",
                        ),
                    };
                    self.record(
                        now,
                        EventRecord {
                            observed,
                            action: action.into(),
                            ..self.worker_record(&info, inc, cause)
                        },
                    );
                }
            }
            WorkerToScheduler::TaskDone {
                task,
                attempt,
                size,
            } => self.on_task_done(inc, task, attempt, size),
            WorkerToScheduler::TaskFailed {
                task,
                attempt,
                error,
            } => self.on_task_failed(inc, task, attempt, error),
            WorkerToScheduler::MissingDep { task, attempt, dep } => {
                self.on_missing_dep(inc, task, attempt, dep)
            }
            WorkerToScheduler::Event(e) => {
                let info = w.info.clone();
                let (cause, observed, action) = e.describe();
                self.record(
                    now,
                    EventRecord {
                        observed,
                        action: action.into(),
                        source: EventSource::Worker,
                        ..self.worker_record(&info, inc, cause)
                    },
                );
            }
            WorkerToScheduler::StealResponse {
                task,
                attempt,
                stolen,
            } => self.on_steal_response(inc, task, attempt, stolen),
            WorkerToScheduler::Replicated {
                task,
                attempt,
                size,
            } => self.on_replicated(inc, task, attempt, size),
            WorkerToScheduler::TaskSeceded { task, attempt } => {
                if self.is_current(inc, task, attempt) {
                    // Its estimated work leaves the worker's load with its slot.
                    let t = self.task_mut(task).expect("current");
                    let est = std::mem::take(&mut t.est_us);
                    let w = self.workers.get_mut(&inc).expect("current");
                    w.expected_us -= est;
                    w.seceded.insert(task);
                } else {
                    self.stats.stale_reports += 1;
                }
            }
            WorkerToScheduler::TaskRejoined { task, attempt } => {
                if self.is_current(inc, task, attempt) {
                    // It holds a slot again (its estimate stays spent: it ran a while).
                    self.workers
                        .get_mut(&inc)
                        .expect("current")
                        .seceded
                        .remove(&task);
                } else {
                    self.stats.stale_reports += 1;
                }
            }
            WorkerToScheduler::TaskStarted { task, attempt } => {
                if self.is_current(inc, task, attempt) {
                    // Within `Assigned`: nothing counted changes, so not through `set_state`.
                    let t = self.task_mut(task).expect("current");
                    t.state = TaskState::Assigned {
                        worker: inc,
                        started: Some(now),
                    };
                } else {
                    self.stats.stale_reports += 1;
                }
            }
        }
    }

    /// Forget a worker and recover everything it had: tasks queued there go back to the queue
    /// uncharged; tasks that were executing there count one worker death (a poison task fails
    /// after `task_max_worker_deaths`); results only it held are recomputed if still needed.
    /// A supervised worker that went silent is also handed to its nanny for a restart.
    pub(super) fn remove_worker(
        &mut self,
        now: Duration,
        inc: Incarnation,
        cause: LossCause,
        drop_connection: bool,
    ) {
        let Some(w) = self.workers.remove(&inc) else {
            return; // already gone (for example TTL then connection close): idempotent
        };
        self.worker_order.retain(|&i| i != inc);
        self.refresh_classes();
        self.stats.workers_lost += 1;
        if drop_connection {
            self.out.push(Command::DropWorker {
                incarnation: inc,
                cause: cause.clone(),
            });
        }
        let mut assigned: Vec<TaskRef> = w.assigned.into_iter().collect();
        assigned.sort_unstable();
        let rescheduled = assigned.len() as u64;
        let max_deaths = self.config.task_max_worker_deaths.max(1);
        // Poison tasks are failed only once the results this worker held are forgotten below:
        // failing one releases its inputs and may finish its graph, and neither may see a
        // result still recorded on a worker that is already gone.
        let mut poisoned: Vec<(TaskRef, Failure)> = Vec::new();
        for t in assigned {
            let task = self.task_mut(t).expect("assigned task exists");
            if !task.started() {
                self.unassign(t);
                continue;
            }
            task.worker_deaths += 1;
            let deaths = task.worker_deaths;
            let key = task.key.clone();
            let notes = self.death_notes.entry(t).or_default();
            notes.push(format!("{} ({inc}): {cause}", w.info.name));
            self.unassign(t);
            if deaths < max_deaths {
                continue;
            }
            let notes = self.death_notes.remove(&t).unwrap_or_default();
            let msg = format!(
                "task {key:?} is a poison task: it was running on {deaths} workers that died \
                 (limit RUSK_TASK_MAX_WORKER_DEATHS={max_deaths}): {}",
                notes.join("; ")
            );
            self.stats.poison_tasks += 1;
            self.record(
                now,
                EventRecord {
                    observed: format!("task {key:?} was running on {deaths} workers that died"),
                    action: "task failed; the rest of its graph goes on".into(),
                    ..self.worker_record(&w.info, inc, EventCause::PoisonTask)
                },
            );
            poisoned.push((t, Failure::new(msg)));
        }
        let mut held: Vec<TaskRef> = w.holds.into_iter().collect();
        held.sort_unstable();
        // A result with a copy elsewhere is not lost: a replica takes over from a primary.
        let mut lost = Vec::new();
        for t in held {
            if self.lose_copy(t, inc) {
                lost.push(t);
            }
        }
        let results_lost = lost.len() as u64;
        let before = self.stats.results_recomputed;
        for &t in &lost {
            self.forget_result(t);
        }
        for (t, failure) in poisoned {
            self.fail_task(t, failure);
        }
        // Only now: a result that only a poison task needed is not recomputed.
        for t in lost {
            self.recompute_if_needed(t);
        }
        let recomputing = self.stats.results_recomputed - before;
        // A silent supervised worker may still be alive (frozen): ask its nanny to restart
        // exactly that incarnation. A no-op on the nanny's side if it already did.
        let mut action = format!(
            "dropped; {rescheduled} task(s) rescheduled, {recomputing} lost result(s) recomputing"
        );
        if let (LossCause::HeartbeatTimeout { silent_for }, Some(nanny), Some(slot)) =
            (&cause, &w.info.nanny, w.info.slot)
        {
            if let Some(id) = self.nanny_by_name(nanny) {
                self.out.push(Command::ToNanny {
                    nanny: id,
                    msg: SchedulerToNanny::RestartWorker {
                        slot,
                        incarnation: inc.0,
                        silent_for_ms: silent_for.as_millis() as u64,
                    },
                });
                action.push_str(&format!("; asked nanny {nanny} to restart slot {slot}"));
            }
        }
        let detection_ms = match &cause {
            LossCause::HeartbeatTimeout { silent_for } => Some(silent_for.as_millis() as u64),
            _ => None,
        };
        self.record(
            now,
            EventRecord {
                observed: cause.to_string(),
                action,
                detection_ms,
                ..self.worker_record(&w.info, inc, cause.kind())
            },
        );
        self.out.push(Command::Recovery(RecoveryNote {
            worker: w.info.name,
            incarnation: inc,
            cause,
            rescheduled,
            results_lost,
            recomputing,
        }));
    }
}
