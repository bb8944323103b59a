//! Keys shared between clients. A session graph's key can be
//! - held by another client (`Hold`: a future unpickled in a task, `get_dataset`), which is
//!   told when it finishes and keeps it from being released;
//! - kept until it finishes although no client wants it (`Keep`: `fire_and_forget`);
//! - published under a name (datasets), kept while published;
//! - adopted by a task of another session graph (an `adopt` task): a dependency edge across
//!   graphs, whose lineage is the source graph's.
//!
//! Each of these *pins* the task: `is_needed` is true while it is pinned, so it is computed
//! (recomputed if lost) and kept. A graph whose client left while some of its tasks were
//! pinned stays, without an owner and without outputs, until its last pin goes (`retire_graph`).
use super::*;

/// Published datasets at most; publishing more is refused.
pub const DATASETS_MAX: usize = 1024;
/// Bytes of one dataset's data (the client's pickle of it; the values stay on the workers).
pub const DATASET_BYTES_MAX: usize = 1 << 20;
/// Keys one dataset may refer to.
pub const DATASET_REFS_MAX: usize = 100_000;
/// Bytes of a dataset's name.
pub const DATASET_NAME_MAX: usize = 256;
/// Keys of other graphs one client may hold at once (`Hold`); more are reported failed.
pub const HOLDS_PER_CLIENT_MAX: usize = 1_000_000;

struct Dataset {
    data: Bytes,
    refs: Vec<TaskRef>,
}

#[derive(Default)]
pub(super) struct Shared {
    /// Adopt task -> the task whose value it takes (in another graph, or earlier in its own).
    adopts: FxHashMap<TaskRef, TaskRef>,
    /// Source -> the adopt tasks that take its value.
    adopters: FxHashMap<TaskRef, Vec<TaskRef>>,
    /// How many times each task is pinned: holds, keeps, datasets, unfinished adopters.
    pins: FxHashMap<TaskRef, u32>,
    holds: FxHashMap<ClientId, FxHashSet<TaskRef>>,
    /// Clients holding each task: told when it finishes.
    watchers: FxHashMap<TaskRef, Vec<ClientId>>,
    /// Kept until finished (`fire_and_forget`).
    keep: FxHashSet<TaskRef>,
    datasets: BTreeMap<Box<str>, Dataset>,
    /// Graphs that lost a pin while ownerless: removed at the end of the step if it was the last.
    retire: Vec<GraphId>,
}

impl Scheduler {
    /// The task `key` of session graph `graph`, if the graph and the key exist.
    pub(super) fn resolve_key(&self, graph: GraphId, key: &str) -> Option<TaskRef> {
        let g = self.graphs.get(&graph).filter(|g| g.session)?;
        let index = *g.keys.get(key)?;
        Some(TaskRef { graph, index })
    }

    pub(super) fn is_pinned(&self, task: TaskRef) -> bool {
        !self.shared.pins.is_empty() && self.shared.pins.contains_key(&task)
    }

    /// Count one pin more (`delta` 1) or less (-1) on `task`; no other effect.
    pub(super) fn shift_pin(&mut self, task: TaskRef, delta: i64) {
        let Some(g) = self.graphs.get_mut(&task.graph) else {
            return;
        };
        if delta > 0 {
            *self.shared.pins.entry(task).or_default() += 1;
            g.pinned += 1;
        } else {
            let n = self.shared.pins.get_mut(&task).expect("pinned");
            *n -= 1;
            if *n == 0 {
                self.shared.pins.remove(&task);
            }
            g.pinned -= 1;
            if g.pinned == 0 && g.session && g.owner.is_none() {
                self.shared.retire.push(task.graph);
            }
        }
    }

    fn pin(&mut self, task: TaskRef) {
        self.shift_pin(task, 1);
        self.recompute_if_needed(task);
    }

    fn unpin(&mut self, task: TaskRef) {
        self.shift_pin(task, -1);
        self.drop_unneeded(task);
    }

    /// The task an adopt task takes its value from.
    pub(super) fn adopt_source(&self, task: TaskRef) -> Option<TaskRef> {
        if self.shared.adopts.is_empty() {
            return None;
        }
        self.shared.adopts.get(&task).copied()
    }

    /// The adopt tasks that take `task`'s value.
    pub(super) fn adopters_of(&self, task: TaskRef) -> Vec<TaskRef> {
        if self.shared.adopters.is_empty() {
            return Vec::new();
        }
        self.shared.adopters.get(&task).cloned().unwrap_or_default()
    }

    /// The sources of the `adopt` tasks of a new extension, or why one cannot be adopted.
    pub(super) fn resolve_adopts(
        &self,
        tasks: &[crate::graph::CompiledTask],
    ) -> Result<Vec<Option<TaskRef>>, String> {
        tasks
            .iter()
            .map(|t| match &*t.kind {
                TaskKind::Adopt { graph, key } => {
                    self.resolve_key(*graph, key).map(Some).ok_or_else(|| {
                        format!(
                            "task {:?} adopts key {key:?} of graph {graph}, which is not there \
                             (released by its client, or never submitted)",
                            &*t.key
                        )
                    })
                }
                _ => Ok(None),
            })
            .collect()
    }

    /// Link a new adopt task (created unfinished) to its source: it pins the source while it
    /// is unfinished (`set_state` keeps that count).
    pub(super) fn link_adopt(&mut self, adopt: TaskRef, src: TaskRef) {
        self.shared.adopts.insert(adopt, src);
        self.shared.adopters.entry(src).or_default().push(adopt);
        self.shift_pin(src, 1);
    }

    /// A graph's client let go of it (left, or released the graph): removed, unless some of
    /// its tasks are pinned; then it stays without an owner and outputs until the last pin goes.
    pub(super) fn retire_graph(&mut self, id: GraphId) {
        let Some(g) = self.graphs.get_mut(&id) else {
            return;
        };
        if g.pinned == 0 || !g.session {
            self.remove_graph(id);
            return;
        }
        g.owner = None;
        let outputs = std::mem::take(&mut g.outputs);
        for o in outputs {
            self.release_output(id, o);
        }
    }

    /// Remove the ownerless graphs whose last pin went in this step. Not one a restarted
    /// scheduler resumed that no client claimed yet: it is ownerless only until its client
    /// is back (`resume_tick` retires it at the end of the grace if none claimed it).
    pub(super) fn retire_unpinned(&mut self) {
        while let Some(id) = self.shared.retire.pop() {
            if self
                .graphs
                .get(&id)
                .is_some_and(|g| g.pinned == 0 && g.owner.is_none() && g.session && !g.resumed)
            {
                self.remove_graph(id);
            }
        }
    }

    /// Forget the shared state of a graph being removed: the pins of its unfinished adopt
    /// tasks on their sources, and every hold, keep and adopt link that names its tasks.
    pub(super) fn unlink_graph(&mut self, id: GraphId, g: &Graph) {
        if self.shared.adopts.is_empty()
            && self.shared.pins.is_empty()
            && self.shared.watchers.is_empty()
        {
            return;
        }
        let mut lost_sources = Vec::new();
        for (i, t) in g.tasks.iter().enumerate() {
            let tref = TaskRef {
                graph: id,
                index: i as u32,
            };
            if let Some(src) = self.shared.adopts.remove(&tref) {
                if let Some(list) = self.shared.adopters.get_mut(&src) {
                    list.retain(|&a| a != tref);
                    if list.is_empty() {
                        self.shared.adopters.remove(&src);
                    }
                }
                if t.state.is_unfinished() {
                    self.shift_pin(src, -1);
                    lost_sources.push(src);
                }
            }
            self.shared.pins.remove(&tref);
            self.shared.keep.remove(&tref);
            if let Some(clients) = self.shared.watchers.remove(&tref) {
                for c in clients {
                    if let Some(h) = self.shared.holds.get_mut(&c) {
                        h.remove(&tref);
                    }
                }
            }
            if let Some(adopters) = self.shared.adopters.remove(&tref) {
                // Only reached when a graph is removed with pins (never by design): the
                // adopters cannot get the value any more.
                // The links stay, dangling: a finished adopter whose value is lost later
                // fails instead of being recomputed.
                for a in adopters {
                    if self.task(a).is_some_and(|t| t.state.is_unfinished()) {
                        let key = &g.tasks[i].key;
                        self.fail_with(
                            a,
                            Failure::new(format!(
                                "the key {:?} it adopts was released by its client",
                                &**key
                            )),
                            Failure::new(format!("the key {:?} was released", &**key)),
                        );
                    }
                }
            }
        }
        for src in lost_sources {
            if self.task(src).is_some() {
                self.drop_unneeded(src);
            }
        }
    }

    /// Report a finished task to the clients holding it.
    pub(super) fn notify_watchers(&mut self, task: TaskRef) {
        if self.shared.watchers.is_empty() {
            return;
        }
        let Some(clients) = self.shared.watchers.get(&task) else {
            return;
        };
        let state = self.output_state(task.graph, task.index);
        for &client in clients {
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::OutputsReady {
                    graph: task.graph,
                    outputs: vec![state.clone()],
                },
            });
        }
    }

    /// A task finished (in memory or erred): a keep on it is done with.
    pub(super) fn finish_keep(&mut self, task: TaskRef) {
        if !self.shared.keep.is_empty() && self.shared.keep.remove(&task) {
            self.unpin(task);
        }
    }

    pub(super) fn on_hold(&mut self, client: ClientId, graph: GraphId, keys: Vec<String>) {
        let mut outputs = Vec::new();
        for key in keys {
            let Some(task) = self.resolve_key(graph, &key) else {
                let error = format!(
                    "key {key:?} of graph {graph} is not there (released by its client, or \
                     never submitted)"
                );
                outputs.push(OutputState {
                    key,
                    result: OutputResult::Failed {
                        error,
                        detail: None,
                    },
                });
                continue;
            };
            let holds = self.shared.holds.entry(client).or_default();
            if holds.len() >= HOLDS_PER_CLIENT_MAX && !holds.contains(&task) {
                outputs.push(OutputState {
                    key,
                    result: OutputResult::Failed {
                        error: format!(
                            "this client holds {HOLDS_PER_CLIENT_MAX} keys of other clients \
                             already (HOLDS_PER_CLIENT_MAX)"
                        ),
                        detail: None,
                    },
                });
                continue;
            }
            // Finished before the pin: pinning a released key recomputes it, and when that
            // fails at once (an input failed) the watchers, this client now included, are told
            // already; reporting it here too would report it twice.
            let finished = matches!(
                self.task(task).expect("resolved").state,
                TaskState::Memory { .. } | TaskState::Erred
            );
            let holds = self.shared.holds.entry(client).or_default();
            if holds.insert(task) {
                self.shared.watchers.entry(task).or_default().push(client);
                self.pin(task);
            }
            if finished {
                outputs.push(self.output_state(graph, task.index));
            }
        }
        if !outputs.is_empty() {
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::OutputsReady { graph, outputs },
            });
        }
    }

    fn unhold(&mut self, client: ClientId, task: TaskRef) {
        let Some(h) = self.shared.holds.get_mut(&client) else {
            return;
        };
        if !h.remove(&task) {
            return;
        }
        if h.is_empty() {
            self.shared.holds.remove(&client);
        }
        if let Some(w) = self.shared.watchers.get_mut(&task) {
            w.retain(|&c| c != client);
            if w.is_empty() {
                self.shared.watchers.remove(&task);
            }
        }
        self.unpin(task);
    }

    pub(super) fn on_unhold(&mut self, client: ClientId, graph: GraphId, keys: Vec<String>) {
        for key in keys {
            if let Some(task) = self.resolve_key(graph, &key) {
                self.unhold(client, task);
            }
        }
    }

    /// A client left: its holds go.
    pub(super) fn drop_holds(&mut self, client: ClientId) {
        let Some(h) = self.shared.holds.get(&client) else {
            return;
        };
        let mut tasks: Vec<TaskRef> = h.iter().copied().collect();
        tasks.sort_unstable();
        for t in tasks {
            self.unhold(client, t);
        }
    }

    pub(super) fn on_keep(&mut self, graph: GraphId, keys: Vec<String>) {
        for key in keys {
            let Some(task) = self.resolve_key(graph, &key) else {
                continue;
            };
            let t = self.task(task).expect("resolved");
            if matches!(t.state, TaskState::Memory { .. } | TaskState::Erred) {
                continue; // finished: nothing to keep it for
            }
            if self.shared.keep.insert(task) {
                self.pin(task);
            }
        }
    }

    pub(super) fn on_dataset(&mut self, client: ClientId, req: DatasetRequest) {
        let msg = match req {
            DatasetRequest::Publish {
                name,
                data,
                refs,
                replace,
            } => match self.publish(name, data, refs, replace) {
                Ok(message) => SchedulerToClient::Done { message },
                Err(message) => SchedulerToClient::Error { message },
            },
            DatasetRequest::Get { name } => match self.shared.datasets.get(name.as_str()) {
                Some(d) => SchedulerToClient::Dataset {
                    name,
                    data: d.data.clone(),
                },
                None => SchedulerToClient::Error {
                    message: format!("no dataset named {name:?}"),
                },
            },
            DatasetRequest::Unpublish { name } => {
                match self.shared.datasets.remove(name.as_str()) {
                    Some(d) => {
                        for t in d.refs {
                            if self.task(t).is_some() {
                                self.unpin(t);
                            }
                        }
                        SchedulerToClient::Done {
                            message: format!("dataset {name:?} unpublished"),
                        }
                    }
                    None => SchedulerToClient::Error {
                        message: format!("no dataset named {name:?}"),
                    },
                }
            }
            DatasetRequest::List => SchedulerToClient::DatasetNames {
                names: self.shared.datasets.keys().map(|k| k.to_string()).collect(),
            },
        };
        self.out.push(Command::ToClient { client, msg });
    }

    fn publish(
        &mut self,
        name: String,
        data: Bytes,
        refs: Vec<(GraphId, String)>,
        replace: bool,
    ) -> Result<String, String> {
        if name.is_empty() || name.len() > DATASET_NAME_MAX {
            return Err(format!(
                "a dataset name has 1 to {DATASET_NAME_MAX} bytes (DATASET_NAME_MAX)"
            ));
        }
        if data.len() > DATASET_BYTES_MAX {
            return Err(format!(
                "dataset {name:?} is {} bytes pickled, over DATASET_BYTES_MAX ({DATASET_BYTES_MAX}): \
                 publish futures (their values stay on the workers), not the data itself",
                data.len()
            ));
        }
        if refs.len() > DATASET_REFS_MAX {
            return Err(format!(
                "dataset {name:?} refers to {} keys, over DATASET_REFS_MAX ({DATASET_REFS_MAX})",
                refs.len()
            ));
        }
        let exists = self.shared.datasets.contains_key(name.as_str());
        if exists && !replace {
            return Err(format!("dataset {name:?} already exists"));
        }
        if !exists && self.shared.datasets.len() >= DATASETS_MAX {
            return Err(format!(
                "{DATASETS_MAX} datasets are published already (DATASETS_MAX): unpublish some"
            ));
        }
        let mut tasks = Vec::with_capacity(refs.len());
        for (graph, key) in &refs {
            let t = self.resolve_key(*graph, key).ok_or_else(|| {
                format!(
                    "dataset {name:?} refers to key {key:?} of graph {graph}, which is not there \
                     (released by its client, or never submitted)"
                )
            })?;
            tasks.push(t);
        }
        for &t in &tasks {
            self.pin(t);
        }
        let old = self
            .shared
            .datasets
            .insert(name.as_str().into(), Dataset { data, refs: tasks });
        for t in old.map(|d| d.refs).unwrap_or_default() {
            if self.task(t).is_some() {
                self.unpin(t);
            }
        }
        Ok(format!("dataset {name:?} published"))
    }

    /// For `check_invariants`: every pin accounted for by a hold, keep, dataset or unfinished
    /// adopter, and each graph's `pinned` the sum over its tasks.
    pub(super) fn check_pins(&self) {
        let mut expected: FxHashMap<TaskRef, u32> = FxHashMap::default();
        for h in self.shared.holds.values() {
            for &t in h {
                *expected.entry(t).or_default() += 1;
            }
        }
        for (&c, h) in &self.shared.holds {
            for t in h {
                assert!(
                    self.shared.watchers.get(t).is_some_and(|w| w.contains(&c)),
                    "{t} held by {c:?} but not watched"
                );
            }
        }
        for (t, clients) in &self.shared.watchers {
            for c in clients {
                assert!(
                    self.shared.holds.get(c).is_some_and(|h| h.contains(t)),
                    "{t} watched by {c:?} without a hold"
                );
            }
        }
        for &t in &self.shared.keep {
            *expected.entry(t).or_default() += 1;
            let s = self.task(t).expect("kept task exists").state;
            assert!(
                s.is_unfinished() || s == TaskState::Released,
                "{t} kept but finished ({s:?})"
            );
        }
        for d in self.shared.datasets.values() {
            for &t in &d.refs {
                if self.task(t).is_some() {
                    *expected.entry(t).or_default() += 1;
                }
            }
        }
        for (&a, &src) in &self.shared.adopts {
            let t = self.task(a).expect("adopt task exists");
            assert!(
                matches!(t.kind.as_ref(), TaskKind::Adopt { .. }),
                "{a} linked but not an adopt task"
            );
            if self.task(src).is_none() {
                assert!(
                    !t.state.is_unfinished(),
                    "{a} waits on a source that is gone"
                );
                continue; // dangling: its source's graph was removed
            }
            assert!(
                self.shared
                    .adopters
                    .get(&src)
                    .is_some_and(|l| l.contains(&a)),
                "{a} not among the adopters of {src}"
            );
            if t.state.is_unfinished() {
                *expected.entry(src).or_default() += 1;
            }
        }
        for (t, n) in &expected {
            assert_eq!(self.shared.pins.get(t), Some(n), "{t} pin count");
        }
        assert_eq!(expected.len(), self.shared.pins.len(), "stale pins");
        for (&gid, g) in &self.graphs {
            let sum: u32 = self
                .shared
                .pins
                .iter()
                .filter(|(t, _)| t.graph == gid)
                .map(|(_, &n)| n)
                .sum();
            assert_eq!(g.pinned, sum, "{gid} pinned count");
        }
    }
}
