//! Read-only views for the shell and tests: the status snapshot, the event log, counts.
use super::*;

impl Scheduler {
    /// A snapshot for `rusk status`; `now` (when known) fills in heartbeat ages.
    pub fn status(&self, now: Option<Duration>) -> StatusSnapshot {
        let mut tasks = BTreeMap::new();
        for (i, name) in STATE_NAMES.iter().enumerate() {
            tasks.insert(name.to_string(), self.state_counts[i]);
        }
        let now = now.unwrap_or(self.last_tick);
        let workers = self
            .worker_order
            .iter()
            .map(|inc| {
                let w = &self.workers[inc];
                let mut counts = BTreeMap::new();
                counts.insert("assigned".to_string(), w.assigned.len() as u64);
                counts.insert("memory".to_string(), w.holds.len() as u64);
                counts.insert("running".to_string(), w.heartbeat.running as u64);
                WorkerStatus {
                    id: w.info.name.clone(),
                    host: w.info.host.clone(),
                    incarnation: inc.0,
                    pid: w.info.pid,
                    state: if w.heartbeat.vitals.unhealthy.is_some() {
                        "unhealthy"
                    } else if w.heartbeat.paused.is_some() {
                        "paused"
                    } else {
                        "running"
                    }
                    .to_string(),
                    address: w.info.data_address.clone(),
                    nthreads: w.info.nthreads,
                    tasks: counts,
                    stored_results: w.heartbeat.stored_results,
                    stored_bytes: w.heartbeat.stored_bytes,
                    spilled_bytes: w.heartbeat.spilled_bytes,
                    spilled_results: w.heartbeat.spilled_results,
                    spills_total: w.heartbeat.spills_total,
                    paused: w.heartbeat.paused.clone(),
                    heartbeat_age_ms: now.saturating_sub(w.last_seen).as_millis() as u64,
                    nanny: w.info.nanny.clone(),
                    slot: w.info.slot,
                    restarts: self.slot_report(&w.info).map_or(0, |r| r.restarts),
                    vitals: w.heartbeat.vitals.clone(),
                    resources: w.info.resources.clone(),
                }
            })
            .collect();
        let mut ids: Vec<&GraphId> = self.graphs.keys().collect();
        ids.sort_unstable();
        let graphs = ids
            .into_iter()
            .map(|id| Self::progress_of(*id, &self.graphs[id]))
            .collect();
        let mut nannies: Vec<NannyStatus> = self
            .nannies
            .values()
            .map(|n| NannyStatus {
                name: n.info.name.clone(),
                host: n.info.host.clone(),
                pid: n.info.pid,
                slots: n.slots.values().cloned().collect(),
            })
            .collect();
        nannies.sort_by(|a, b| a.name.cmp(&b.name));
        StatusSnapshot {
            workers,
            tasks,
            graphs,
            nannies,
        }
    }

    /// What the worker's nanny last reported about its slot.
    pub(super) fn slot_report(&self, info: &WorkerInfo) -> Option<&SlotReport> {
        let nanny = self.nanny_by_name(info.nanny.as_deref()?)?;
        self.nannies[&nanny].slots.get(&info.slot?)
    }

    /// The recovery log from sequence number `since` (for tests and the shell).
    pub fn events_since(&self, since: u64) -> impl Iterator<Item = &EventRecord> {
        self.events.iter().filter(move |r| r.seq >= since)
    }

    /// Number of tasks in each state, by name.
    pub fn task_counts(&self) -> BTreeMap<&'static str, u64> {
        STATE_NAMES.iter().copied().zip(self.state_counts).collect()
    }

    /// The worker and attempt `task` is assigned to now (`None`: not assigned, or unknown).
    pub fn assigned_attempt(&self, task: TaskRef) -> Option<(Incarnation, AttemptId)> {
        let t = self.task(task)?;
        Some((t.state.assigned_to()?, t.attempt))
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    pub fn graph_count(&self) -> usize {
        self.graphs.len()
    }
}
