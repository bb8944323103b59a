//! Tasks with restrictions: resources a worker must have free, and the workers a task may run
//! on (or prefers, with `allow_other_workers`).
//!
//! Ready restricted tasks wait by class (one class per distinct set of restrictions), each
//! class in priority order, so a class nobody can serve now costs one check per scheduling
//! pass, not one per task. A class that no live worker could ever run (a resource nobody
//! declares, more than anyone declares, only workers that are not there) is timed from the
//! moment that is so while a worker is connected; after `no_worker_timeout` its tasks fail
//! with an error naming what they asked for and what the workers offer.
use super::*;

/// Workers listed in an "unrunnable" error before the rest are only counted.
const ERROR_WORKERS_LISTED_MAX: usize = 8;

/// The canonical text of a set of restrictions: tasks with equal texts share a class.
fn class_name(r: &Restrictions) -> Box<str> {
    let names = r
        .workers
        .as_deref()
        .map(|w| w.join("\u{0}"))
        .unwrap_or_default();
    format!(
        "{}|{}|{}|{}",
        r.resources_text(),
        r.workers.is_some(),
        names,
        r.loose
    )
    .into()
}

impl Scheduler {
    /// Queue a ready restricted task in its class.
    pub(super) fn enqueue_restricted(&mut self, key: ReadyKey, r: Arc<Restrictions>) {
        let name = class_name(&r);
        if let Some(c) = self.classes.get_mut(&name) {
            c.tasks.insert(key);
            return;
        }
        let unrunnable_since = self.unrunnable(&r).then_some(self.now);
        let mut tasks = BTreeSet::new();
        tasks.insert(key);
        self.classes.insert(
            name,
            Class {
                restrictions: r,
                tasks,
                unrunnable_since,
            },
        );
    }

    /// Is there at least one worker, and can none of them ever run tasks of `r`?
    fn unrunnable(&self, r: &Restrictions) -> bool {
        !self.workers.is_empty() && !self.workers.values().any(|w| w.could_run(r))
    }

    /// Workers came or went: start or stop each class's "unrunnable" clock.
    pub(super) fn refresh_classes(&mut self) {
        let now = self.now;
        let flags: Vec<bool> = self
            .classes
            .values()
            .map(|c| self.unrunnable(&c.restrictions))
            .collect();
        for (c, unrunnable) in self.classes.values_mut().zip(flags) {
            c.unrunnable_since = match (unrunnable, c.unrunnable_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(now),
            };
        }
    }

    /// Place restricted tasks in priority order across all classes: always the first task of
    /// the class whose first task comes first, dropping a class from this pass as soon as its
    /// first task finds no worker.
    pub(super) fn place_restricted(&mut self) {
        let mut heads: std::collections::BinaryHeap<Reverse<(ReadyKey, Box<str>)>> = self
            .classes
            .iter()
            .filter(|(_, c)| c.unrunnable_since.is_none())
            .filter_map(|(n, c)| Some(Reverse((*c.tasks.first()?, n.clone()))))
            .collect();
        while let Some(Reverse((key, name))) = heads.pop() {
            let class = self.classes.get_mut(&name).expect("listed");
            let r = class.restrictions.clone();
            let live = self
                .task(key.task)
                .is_some_and(|t| t.state == TaskState::Ready);
            let target = if live {
                self.restricted_target(key.task, &r)
            } else {
                None
            };
            if live && target.is_none() {
                continue; // this class waits for room; the others go on
            }
            // Placed, or a stale entry (the task moved on, or its graph is gone): dequeue it.
            let class = self.classes.get_mut(&name).expect("listed");
            class.tasks.remove(&key);
            match class.tasks.first() {
                Some(&next) => heads.push(Reverse((next, name))),
                None => {
                    self.classes.remove(&name);
                }
            }
            if let Some(t) = self.task_mut(key.task) {
                t.queued = false;
            }
            if let Some(inc) = target {
                self.assign(key.task, inc);
            }
        }
    }

    /// The best worker for a restricted task now: it has room, the resources free, and (unless
    /// `loose`) one of the names; preferring named workers, then the most input bytes held,
    /// then the fewest assigned tasks, then join order.
    fn restricted_target(&self, task: TaskRef, r: &Restrictions) -> Option<Incarnation> {
        let per_thread = self.config.assigned_per_thread_max;
        let est = self.estimate_us(self.task(task).expect("exists").prefix);
        /// Named, input bytes held, fewer assigned, earlier joined: the largest wins.
        type Score = (bool, u64, Reverse<usize>, Reverse<usize>);
        let mut best: Option<(Score, Incarnation)> = None;
        for (pos, &inc) in self.worker_order.iter().enumerate() {
            let w = &self.workers[&inc];
            if !w.has_room(per_thread, est) || !w.declares(r) || !w.has_free(r) {
                continue;
            }
            let named = r
                .workers
                .as_deref()
                .is_none_or(|names| names.iter().any(|n| w.answers_to(n)));
            if !named && !r.loose {
                continue;
            }
            let score = (
                named,
                self.input_bytes_on(task, inc),
                Reverse(w.assigned.len()),
                Reverse(pos),
            );
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, inc));
            }
        }
        best.map(|(_, inc)| inc)
    }

    /// Fail the tasks of every class that no worker could run for `no_worker_timeout`.
    pub(super) fn fail_unrunnable(&mut self, now: Duration) {
        let timeout = self.config.no_worker_timeout;
        let expired: Vec<Box<str>> = self
            .classes
            .iter()
            .filter(|(_, c)| {
                c.unrunnable_since
                    .is_some_and(|s| now.saturating_sub(s) >= timeout)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            let class = self.classes.remove(&name).expect("listed");
            let why = self.unrunnable_reason(&class.restrictions);
            let mut failed = 0u64;
            for key in class.tasks {
                let Some(t) = self.task_mut(key.task) else {
                    continue;
                };
                t.queued = false;
                if t.state != TaskState::Ready {
                    continue;
                }
                let msg = format!(
                    "task {:?} cannot run: {why}; no worker could run it for {} ms \
                     (the scheduler's --no-worker-timeout)",
                    t.key,
                    timeout.as_millis()
                );
                failed += 1;
                self.stats.tasks_unrunnable += 1;
                self.fail_task(key.task, Failure::new(msg));
            }
            if failed > 0 {
                self.record(
                    now,
                    EventRecord {
                        observed: why,
                        action: format!("{failed} task(s) failed; the rest of their graphs go on"),
                        detection_ms: Some(timeout.as_millis() as u64),
                        ..Self::scheduler_record(self.config.host.clone(), EventCause::Unrunnable)
                    },
                );
            }
        }
    }

    /// Why no worker can run tasks of `r`: what they ask for and what the workers offer.
    fn unrunnable_reason(&self, r: &Restrictions) -> String {
        let strict_names = r.workers.as_deref().filter(|_| !r.loose);
        let candidates: Vec<&Worker> = self
            .worker_order
            .iter()
            .map(|i| &self.workers[i])
            .filter(|w| strict_names.is_none_or(|ns| ns.iter().any(|n| w.answers_to(n))))
            .collect();
        let list = |items: Vec<String>| {
            let n = items.len();
            let mut shown: Vec<String> = items.into_iter().take(ERROR_WORKERS_LISTED_MAX).collect();
            if n > ERROR_WORKERS_LISTED_MAX {
                shown.push(format!("and {} more", n - ERROR_WORKERS_LISTED_MAX));
            }
            shown.join(", ")
        };
        if let (Some(names), true) = (strict_names, candidates.is_empty()) {
            let workers = self
                .worker_order
                .iter()
                .map(|i| {
                    let w = &self.workers[i];
                    format!(
                        "{} at {} on {}",
                        w.info.name, w.info.data_address, w.info.host
                    )
                })
                .collect();
            return format!(
                "no worker matches workers={names:?} (workers: {})",
                list(workers)
            );
        }
        let among = if strict_names.is_some() {
            format!(" of workers={:?}", strict_names.unwrap_or_default())
        } else {
            String::new()
        };
        format!(
            "no worker{among} offers resources {} (workers offer: {})",
            r.resources_text(),
            list(candidates.iter().map(|w| w.offer_text()).collect())
        )
    }
}
