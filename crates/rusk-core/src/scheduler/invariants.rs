//! `check_invariants`: every index cross-checked against the task states.
use super::*;

impl Scheduler {
    /// Cross-check every index against the task states. Panics with a description on the first
    /// violation. Cheap enough for tests and simulation after every step (O(tasks + edges)).
    pub fn check_invariants(&self) {
        let mut counts = [0u64; 6];
        let mut assigned_seen = 0usize;
        let mut held_seen = 0usize;
        // Queued tasks: unrestricted ones in `ready`, restricted ones in their class; each
        // entry's key is its task's own (priorities never change).
        let mut queued: FxHashMap<TaskRef, bool> = FxHashMap::default();
        let classes = self.classes.iter().flat_map(|(name, c)| {
            c.tasks
                .iter()
                .map(move |k| (k, Some((name, &c.restrictions))))
        });
        for (k, class) in self.ready.iter().map(|k| (k, None)).chain(classes) {
            let q = k.task;
            let Some(t) = self.task(q) else {
                continue;
            };
            assert!(
                queued.insert(q, class.is_some()).is_none(),
                "{q} queued twice"
            );
            assert_eq!(*k, t.ready_key(q), "{q} queued under a stale key");
            match (class, &t.restrictions) {
                (None, None) => {}
                (Some((_, cr)), Some(r)) => assert_eq!(cr, r, "{q} in the wrong class"),
                _ => panic!(
                    "{q} queued in the wrong queue (restricted: {})",
                    class.is_some()
                ),
            }
        }
        self.check_resources();
        self.check_balance();
        self.check_pins();
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
                let src_missing = self.adopt_source(tref).is_some_and(|s| {
                    !matches!(
                        self.task(s).map(|t| t.state),
                        Some(TaskState::Memory { .. })
                    )
                });
                let missing = t
                    .deps
                    .iter()
                    .filter(|&&d| !matches!(g.tasks[d as usize].state, TaskState::Memory { .. }))
                    .count() as u32
                    + src_missing as u32;
                let pinned = self.is_pinned(tref);
                let unfinished = t
                    .dependents
                    .iter()
                    .filter(|&&d| g.tasks[d as usize].state.is_unfinished())
                    .count() as u32;
                assert_eq!(
                    t.unfinished_dependents, unfinished,
                    "{tref} unfinished_dependents"
                );
                assert_eq!(t.queued, queued.contains_key(&tref), "{tref} queued flag");
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
                    TaskState::Assigned { worker, .. } => {
                        // Only a started attempt runs on after an input was lost.
                        if t.started() {
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
                        if let Some(r) = t.restrictions.as_deref().filter(|r| !r.loose) {
                            if let Some(names) = r.workers.as_deref() {
                                assert!(
                                    names.iter().any(|n| w.answers_to(n)),
                                    "{tref} restricted to {names:?} but assigned to {}",
                                    w.info.name
                                );
                            }
                        }
                        if let Some(r) = t.restrictions.as_deref() {
                            assert!(
                                w.declares(r),
                                "{tref} assigned to a worker without its resources"
                            );
                        }
                        assigned_seen += 1;
                    }
                    TaskState::Memory { holder, .. } => {
                        let w = self
                            .workers
                            .get(&holder)
                            .unwrap_or_else(|| panic!("{tref} held by unknown worker {holder}"));
                        assert!(w.holds.contains(&tref), "{tref} not in {holder}'s holds");
                        assert!(
                            t.is_output || unfinished > 0 || pinned,
                            "{tref} in memory but unneeded"
                        );
                        held_seen += 1;
                        done += 1;
                    }
                    TaskState::Released => {
                        assert!(!t.is_output, "{tref} output released while graph alive");
                        assert_eq!(unfinished, 0, "{tref} released but needed");
                        assert!(!pinned, "{tref} released but pinned");
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
        let replicas = self.check_replicas();
        assert_eq!(
            held_total,
            held_seen + replicas,
            "worker holds sets hold stale tasks"
        );
        assert_eq!(self.worker_order.len(), self.workers.len(), "worker order");
    }

    /// Every worker's `resources_used` is the sum over its assigned tasks, and never more than
    /// it declares.
    fn check_resources(&self) {
        for (inc, w) in &self.workers {
            let mut used: FxHashMap<&str, f64> = FxHashMap::default();
            for &t in &w.assigned {
                let r = self.task(t).and_then(|t| t.restrictions.as_deref());
                for (n, a) in r.map(|r| &r.resources[..]).unwrap_or_default() {
                    *used.entry(&**n).or_default() += a;
                }
            }
            let names: FxHashSet<&str> = used
                .keys()
                .copied()
                .chain(w.resources_used.keys().map(|n| &**n))
                .collect();
            for n in names {
                let want = used.get(n).copied().unwrap_or(0.0);
                let have = w.resources_used.get(n).copied().unwrap_or(0.0);
                assert!(
                    (want - have).abs() <= 1e-6 * want.abs().max(1.0),
                    "{inc} uses {have} of {n} by its index, {want} by its tasks"
                );
                let declared = w.info.resources.get(n).copied().unwrap_or(0.0);
                assert!(
                    want <= declared + 1e-6 * declared.max(1.0),
                    "{inc} runs tasks using {want} of {n} but declares {declared}"
                );
            }
        }
    }

    /// Each worker's `expected_us` is the sum over its assigned tasks; every pending steal is of
    /// a task still assigned to its victim under the attempt asked for (it may have started
    /// since: the victim will refuse), and each worker's
    /// `incoming` counts the steals towards it.
    fn check_balance(&self) {
        let mut incoming: FxHashMap<Incarnation, u32> = FxHashMap::default();
        for (task, p) in &self.steals {
            let t = self
                .task(*task)
                .unwrap_or_else(|| panic!("steal of unknown {task}"));
            assert_eq!(
                (t.state.assigned_to(), t.attempt),
                (Some(p.victim), p.attempt),
                "{task}: pending steal of an attempt no longer on its victim"
            );
            *incoming.entry(p.thief).or_default() += 1;
        }
        for (inc, w) in &self.workers {
            let expected: u64 = w
                .assigned
                .iter()
                .map(|t| self.task(*t).map_or(0, |t| t.est_us))
                .sum();
            assert_eq!(w.expected_us, expected, "{inc} expected work");
            assert!(
                w.seceded.iter().all(|t| w.assigned.contains(t)),
                "{inc} has a seceded task not assigned to it"
            );
            assert_eq!(
                w.incoming,
                incoming.get(inc).copied().unwrap_or(0),
                "{inc} incoming steals"
            );
        }
    }
}
