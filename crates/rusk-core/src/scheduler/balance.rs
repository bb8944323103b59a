//! Load balance: how deep each worker's queue is, and work stealing.
//!
//! **Depth.** The scheduler measures how long tasks run (from `TaskStarted` to `TaskDone`, with
//! its own `now`) per task kind: the key's prefix as Dask's `key_split` reads it (`sum-3f2a…`,
//! `('sum-3f2a…', 4)` and `sum-17` are all `sum`). A worker takes tasks while the estimated
//! work assigned to it stays within `TARGET_WORK_PER_THREAD` per thread, always at least
//! `ASSIGNED_PER_THREAD_MIN` per thread and never more than `assigned_per_thread_max`. So
//! 100 µs tasks are queued hundreds deep (hiding the round trip) and 1 s tasks two deep (so
//! little waits behind a slow worker).
//!
//! **Stealing.** When a worker has idle threads (fewer tasks than threads) and another has
//! more tasks than threads whose expected wait is at least `STEAL_WAIT_MIN`, the scheduler asks
//! the busy one (`Steal{task, attempt}`) to give up a task it has not started, choosing the one
//! that would run last there. A task is not stolen when the extra input bytes the thief would
//! fetch, at `STEAL_BANDWIDTH_BYTES_PER_S`, take longer than that wait, nor to a worker outside
//! its restrictions or without its resources free. The victim gives the attempt up only if it
//! has not handed it to an executor (`StealResponse{stolen}`); then the task is assigned to the
//! thief under a new attempt, so fencing holds and nothing runs twice.
use super::*;

/// Estimated work a worker is given per thread (running and queued) beyond the minimum depth.
pub const TARGET_WORK_PER_THREAD: Duration = Duration::from_millis(100);
/// Tasks per thread a worker always may have (one running, one ready to start).
pub const ASSIGNED_PER_THREAD_MIN: u32 = 2;
/// Estimate for a task kind never measured yet: 5 per thread within the target.
pub const UNKNOWN_TASK_DURATION: Duration = Duration::from_millis(20);
/// Network bandwidth assumed when weighing a steal against the inputs it moves (Dask's default).
pub const STEAL_BANDWIDTH_BYTES_PER_S: u64 = 100_000_000;
/// A queue expected to drain sooner than this is not worth a steal's round trip.
pub const STEAL_WAIT_MIN: Duration = Duration::from_millis(5);
/// Task kinds whose durations are tracked; later kinds share one estimate.
pub const PREFIXES_TRACKED_MAX: usize = 10_000;
/// Weight of a new duration sample in a kind's moving average.
const DURATION_SAMPLE_WEIGHT: f64 = 0.25;

/// Measured durations of one task kind.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DurationStats {
    mean_us: f64,
    samples: u64,
}

/// A `Steal` sent and not answered: the task stays assigned to the victim meanwhile.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingSteal {
    pub(super) attempt: AttemptId,
    pub(super) victim: Incarnation,
    pub(super) thief: Incarnation,
}

/// The kind of a task, from its key, as Dask's `key_split`: the name inside a tuple key, with
/// trailing `-`/`_` parts that are numbers or hex tokens (5+ digits) dropped.
pub fn key_prefix(key: &str) -> &str {
    let mut k = key;
    if let Some(rest) = k.strip_prefix("('").or_else(|| k.strip_prefix("(\"")) {
        k = rest.split(['\'', '"']).next().unwrap_or(rest);
    }
    let mut end = k.len();
    while let Some(pos) = k[..end].rfind(['-', '_']) {
        let part = &k[pos + 1..end];
        let number = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let token = part.len() >= 5 && part.bytes().all(|b| b.is_ascii_hexdigit());
        if !(number || token) || pos == 0 {
            break;
        }
        end = pos;
    }
    &k[..end]
}

impl Scheduler {
    /// The duration-tracking index of `key`'s kind.
    pub(super) fn intern_prefix(&mut self, key: &str) -> u32 {
        let p = key_prefix(key);
        if let Some(&i) = self.prefixes.get(p) {
            return i;
        }
        if self.prefixes.len() >= PREFIXES_TRACKED_MAX {
            return 0;
        }
        let i = self.durations.len() as u32;
        self.durations.push(DurationStats::default());
        self.prefixes.insert(p.into(), i);
        i
    }

    /// Expected run time of a task of kind `prefix`, in µs.
    pub(super) fn estimate_us(&self, prefix: u32) -> u64 {
        let d = self.durations[prefix as usize];
        if d.samples == 0 {
            UNKNOWN_TASK_DURATION.as_micros() as u64
        } else {
            d.mean_us as u64
        }
    }

    /// `task` finished now: fold its run time into its kind's estimate. An attempt whose start
    /// was never reported finished within the worker's turn that started it: counted as 0.
    pub(super) fn record_duration(&mut self, task: TaskRef) {
        let t = self.task(task).expect("exists");
        let sample = t
            .started_at()
            .map_or(0.0, |s| self.now.saturating_sub(s).as_micros() as f64);
        let prefix = t.prefix as usize;
        let d = &mut self.durations[prefix];
        d.mean_us = if d.samples == 0 {
            sample
        } else {
            d.mean_us + DURATION_SAMPLE_WEIGHT * (sample - d.mean_us)
        };
        d.samples += 1;
    }

    /// Ask busy workers to give queued tasks to workers with idle threads.
    pub(super) fn steal(&mut self) {
        if !self.config.work_stealing || self.worker_order.len() < 2 {
            return;
        }
        let idle = |w: &Worker| {
            let threads = w.info.nthreads.max(1) as usize;
            let taken = w.assigned.len() + w.incoming as usize;
            if w.heartbeat.vitals.unhealthy.is_none() && w.heartbeat.paused.is_none() {
                threads.saturating_sub(taken)
            } else {
                0
            }
        };
        let thieves: Vec<(Incarnation, usize)> = self
            .worker_order
            .iter()
            .map(|i| (*i, idle(&self.workers[i])))
            .filter(|(_, n)| *n > 0)
            .collect();
        if thieves.is_empty() {
            return;
        }
        let wait_min = STEAL_WAIT_MIN.as_micros() as u64;
        let mut victims: Vec<(u64, Incarnation)> = self
            .worker_order
            .iter()
            .map(|i| (i, &self.workers[i]))
            .filter(|(_, w)| w.assigned.len() > w.info.nthreads.max(1) as usize)
            .map(|(i, w)| (w.expected_us / w.info.nthreads.max(1) as u64, *i))
            .filter(|(wait, _)| *wait >= wait_min)
            .collect();
        if victims.is_empty() {
            return;
        }
        victims.sort_unstable_by(|a, b| b.cmp(a)); // longest expected wait first
        for (thief, mut slots) in thieves {
            while slots > 0 {
                let found = victims
                    .iter()
                    .filter(|(_, v)| *v != thief)
                    .find_map(|&(wait, v)| Some((self.steal_candidate(v, thief, wait)?, v)));
                let Some((task, victim)) = found else {
                    break;
                };
                let attempt = self.task(task).expect("assigned").attempt;
                self.steals.insert(
                    task,
                    PendingSteal {
                        attempt,
                        victim,
                        thief,
                    },
                );
                self.workers.get_mut(&thief).expect("listed").incoming += 1;
                self.stats.steals_requested += 1;
                self.out.push(Command::ToWorker {
                    incarnation: victim,
                    msg: SchedulerToWorker::Steal { task, attempt },
                });
                slots -= 1;
            }
        }
    }

    /// The task on `victim` worth giving to `thief`: not started, not refused or asked for
    /// already, allowed and with its resources free on the thief, inputs cheap enough to move
    /// for a queue of `wait_us`; the one that would run last on the victim.
    fn steal_candidate(
        &self,
        victim: Incarnation,
        thief: Incarnation,
        wait_us: u64,
    ) -> Option<TaskRef> {
        let v = &self.workers[&victim];
        let th = &self.workers[&thief];
        let mut best: Option<ReadyKey> = None;
        for &task in &v.assigned {
            let t = self.task(task).expect("assigned task exists");
            if t.started() || t.steal_refused || self.steals.contains_key(&task) {
                continue;
            }
            if !t_allows(t, th) {
                continue;
            }
            let key = t.ready_key(task);
            if best.is_some_and(|b| key <= b) {
                continue;
            }
            let on_thief = self.input_bytes_on(task, thief);
            let on_victim = self.input_bytes_on(task, victim);
            let extra = on_victim.saturating_sub(on_thief);
            let transfer_us = extra.saturating_mul(1_000_000) / STEAL_BANDWIDTH_BYTES_PER_S;
            if transfer_us >= wait_us {
                continue;
            }
            best = Some(key);
        }
        best.map(|k| k.task)
    }

    /// The victim answered a `Steal`.
    pub(super) fn on_steal_response(
        &mut self,
        inc: Incarnation,
        task: TaskRef,
        attempt: AttemptId,
        stolen: bool,
    ) {
        let pending = self
            .steals
            .get(&task)
            .copied()
            .filter(|p| p.attempt == attempt && p.victim == inc);
        if pending.is_some() {
            self.drop_steal(task);
        }
        if !self.is_current(inc, task, attempt) {
            // The task moved on meanwhile (finished, cancelled, its worker lost).
            self.stats.stale_reports += 1;
            return;
        }
        let t = self.task_mut(task).expect("current");
        if !stolen {
            t.steal_refused = true; // it started there (or is about to): leave it
            return;
        }
        let prefix = t.prefix;
        self.stats.tasks_stolen += 1;
        let est = self.estimate_us(prefix);
        self.workers
            .get_mut(&inc)
            .expect("current")
            .assigned
            .remove(&task);
        let thief = pending.map(|p| p.thief).filter(|th| {
            let per_thread = self.config.assigned_per_thread_max;
            self.workers.get(th).is_some_and(|w| {
                w.has_room(per_thread, est) && t_allows(self.task(task).expect("current"), w)
            })
        });
        match thief {
            // Straight to the idle worker, under a new attempt (through Ready, so that the
            // victim gives back exactly what it was charged).
            Some(th) => {
                self.set_state(task, TaskState::Ready);
                self.assign(task, th)
            }
            None => self.unassign(task),
        }
    }

    /// Forget a pending steal of `task` (answered, or its task left the victim).
    pub(super) fn drop_steal(&mut self, task: TaskRef) {
        if let Some(p) = self.steals.remove(&task) {
            if let Some(w) = self.workers.get_mut(&p.thief) {
                w.incoming -= 1;
            }
        }
    }
}

/// May `t` run on `w` now (restrictions and free resources)?
fn t_allows(t: &Task, w: &Worker) -> bool {
    t.restrictions.as_deref().is_none_or(|r| {
        let named = r.loose
            || r.workers
                .as_deref()
                .is_none_or(|ns| ns.iter().any(|n| w.answers_to(n)));
        named && w.declares(r) && w.has_free(r)
    })
}
