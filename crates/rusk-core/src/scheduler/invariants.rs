//! `check_invariants`: every index cross-checked against the task states.
use super::*;

impl Scheduler {
    /// Cross-check every index against the task states. Panics with a description on the first
    /// violation. Cheap enough for tests and simulation after every step (O(tasks + edges)).
    pub fn check_invariants(&self) {
        let mut counts = [0u64; 6];
        let mut assigned_seen = 0usize;
        let mut held_seen = 0usize;
        let mut queued: FxHashSet<TaskRef> = FxHashSet::default();
        for &q in &self.ready {
            if self.task(q).is_some() {
                assert!(queued.insert(q), "{q} queued twice");
            }
        }
        for (&gid, g) in &self.graphs {
            let mut pending = 0;
            let mut done = 0;
            let mut erred = 0;
            for (i, t) in g.tasks.iter().enumerate() {
                let tref = TaskRef {
                    graph: gid,
                    index: i as u32,
                };
                counts[t.state.slot()] += 1;
                let missing = t
                    .deps
                    .iter()
                    .filter(|&&d| !matches!(g.tasks[d as usize].state, TaskState::Memory { .. }))
                    .count() as u32;
                let unfinished = t
                    .dependents
                    .iter()
                    .filter(|&&d| g.tasks[d as usize].state.is_unfinished())
                    .count() as u32;
                assert_eq!(
                    t.unfinished_dependents, unfinished,
                    "{tref} unfinished_dependents"
                );
                assert_eq!(t.queued, queued.contains(&tref), "{tref} queued flag");
                if t.is_output && !matches!(t.state, TaskState::Memory { .. } | TaskState::Erred) {
                    pending += 1;
                }
                match t.state {
                    TaskState::Waiting => {
                        assert_eq!(t.missing, missing, "{tref} missing count");
                        assert!(missing > 0, "{tref} waiting with nothing missing");
                        for &d in t.deps.iter() {
                            let ds = g.tasks[d as usize].state;
                            assert!(
                                matches!(ds, TaskState::Memory { .. }) || ds.is_unfinished(),
                                "{tref} waits on {d} which is {ds:?} and will never arrive"
                            );
                        }
                    }
                    TaskState::Ready => {
                        assert_eq!(missing, 0, "{tref} ready with missing deps");
                        assert!(t.queued, "{tref} ready but not queued");
                    }
                    TaskState::Assigned { worker } => {
                        // Only a started attempt runs on after an input was lost.
                        if t.started {
                            assert_eq!(t.missing, missing, "{tref} missing count");
                        } else {
                            assert_eq!(missing, 0, "{tref} assigned with missing deps");
                        }
                        let w = self.workers.get(&worker).unwrap_or_else(|| {
                            panic!("{tref} assigned to unknown worker {worker}")
                        });
                        assert!(
                            w.assigned.contains(&tref),
                            "{tref} not in {worker}'s assigned set"
                        );
                        assigned_seen += 1;
                    }
                    TaskState::Memory { holder, .. } => {
                        let w = self
                            .workers
                            .get(&holder)
                            .unwrap_or_else(|| panic!("{tref} held by unknown worker {holder}"));
                        assert!(w.holds.contains(&tref), "{tref} not in {holder}'s holds");
                        assert!(
                            t.is_output || unfinished > 0,
                            "{tref} in memory but unneeded"
                        );
                        held_seen += 1;
                        done += 1;
                    }
                    TaskState::Released => {
                        assert!(!t.is_output, "{tref} output released while graph alive");
                        assert_eq!(unfinished, 0, "{tref} released but needed");
                        done += 1;
                    }
                    TaskState::Erred => {
                        assert!(
                            g.errors.contains_key(&(i as u32)),
                            "{tref} erred without error"
                        );
                        erred += 1;
                    }
                }
            }
            assert_eq!(g.outputs_pending, pending, "{gid} outputs_pending");
            assert_eq!(g.done, done, "{gid} done count");
            assert_eq!(g.erred, erred, "{gid} erred count");
            let assigned = g
                .tasks
                .iter()
                .filter(|t| matches!(t.state, TaskState::Assigned { .. }))
                .count() as u64;
            assert_eq!(g.assigned, assigned, "{gid} assigned count");
        }
        assert_eq!(counts, self.state_counts, "state counts");
        let assigned_total: usize = self.workers.values().map(|w| w.assigned.len()).sum();
        let held_total: usize = self.workers.values().map(|w| w.holds.len()).sum();
        assert_eq!(
            assigned_total, assigned_seen,
            "worker assigned sets hold stale tasks"
        );
        assert_eq!(held_total, held_seen, "worker holds sets hold stale tasks");
        assert_eq!(self.worker_order.len(), self.workers.len(), "worker order");
    }
}
