//! Clients and their graphs: submission, session graphs (`Open`/`Extend`/`ReleaseKeys`),
//! release, the detached-graph bound, finished outputs and progress.
use super::*;

impl Scheduler {
    pub(super) fn on_client_message(&mut self, client: ClientId, msg: ClientToScheduler) {
        match msg {
            ClientToScheduler::Submit { graph, detach } => {
                let journaled = self
                    .config
                    .journal
                    .then(|| crate::journal::Encoded::new(&graph));
                self.on_submit(client, graph, detach, journaled)
            }
            ClientToScheduler::LocateOutputs { graph } => match self.graphs.get_mut(&graph) {
                // A session graph whose client left (kept for another's pins) is no one's to
                // take over either: only a submitted graph without owner is (detached ones),
                // or any graph a restarted scheduler resumed from its journal (its client
                // reconnecting).
                Some(g)
                    if g.owner.is_some_and(|o| o != client)
                        || (g.session && g.owner.is_none() && !g.resumed) =>
                {
                    self.out.push(Command::ToClient {
                        client,
                        msg: SchedulerToClient::Error {
                            message: format!(
                                "graph {graph} belongs to another client (hold its keys instead)"
                            ),
                        },
                    })
                }
                Some(g) => {
                    g.owner = Some(client);
                    g.resumed = false;
                    g.notify_finished = true;
                    if g.session {
                        // Report again every finished output; the others come when done.
                        let finished: Vec<u32> = g
                            .outputs
                            .iter()
                            .copied()
                            .filter(|&o| {
                                matches!(
                                    g.tasks[o as usize].state,
                                    TaskState::Memory { .. } | TaskState::Erred
                                )
                            })
                            .collect();
                        g.newly_done.extend(finished);
                    }
                    self.out.push(Command::ToClient {
                        client,
                        msg: SchedulerToClient::Located { graph },
                    });
                    self.maybe_finish_graph(graph);
                }
                None => self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Error {
                        message: format!("unknown graph {graph} (released or never submitted)"),
                    },
                }),
            },
            ClientToScheduler::Open => self.open_session(Some(client), None),
            ClientToScheduler::Extend {
                graph,
                tasks,
                outputs,
                resent,
            } => self.on_extend(client, graph, tasks, outputs, resent),
            ClientToScheduler::ReleaseKeys { graph, keys } => {
                self.on_release_keys(client, graph, keys)
            }
            ClientToScheduler::ReleaseGraph { graph } => {
                if self
                    .graphs
                    .get(&graph)
                    .is_some_and(|g| g.owner == Some(client) || (g.owner.is_none() && !g.session))
                {
                    self.retire_graph(graph);
                }
            }
            ClientToScheduler::Hold { graph, keys } => self.on_hold(client, graph, keys),
            ClientToScheduler::Replicate {
                graph,
                keys,
                n,
                workers,
            } => self.on_replicate(client, graph, keys, n, workers),
            ClientToScheduler::WhoHas { graph, keys } => self.on_who_has(client, graph, keys),
            ClientToScheduler::Unhold { graph, keys } => self.on_unhold(client, graph, keys),
            ClientToScheduler::Keep { graph, keys } => self.on_keep(graph, keys),
            ClientToScheduler::Dataset(req) => self.on_dataset(client, req),
            ClientToScheduler::Events { since } => {
                /// Events per reply: bounds one answer's size; clients page with `next`.
                const EVENTS_PER_REPLY_MAX: usize = 1000;
                let records: Vec<EventRecord> = self
                    .events
                    .iter()
                    .filter(|r| r.seq >= since)
                    .take(EVENTS_PER_REPLY_MAX)
                    .cloned()
                    .collect();
                let next = records.last().map_or(since, |r| r.seq + 1);
                self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Events { records, next },
                });
            }
            ClientToScheduler::Restart { target } => {
                let msg = match self.on_restart(target) {
                    Ok(message) => SchedulerToClient::Done { message },
                    Err(message) => SchedulerToClient::Error { message },
                };
                self.out.push(Command::ToClient { client, msg });
            }
            ClientToScheduler::Upload { name, data } => {
                let msg = match self.on_upload(name, data) {
                    Ok(message) => SchedulerToClient::Done { message },
                    Err(message) => SchedulerToClient::Error { message },
                };
                self.out.push(Command::ToClient { client, msg });
            }
            ClientToScheduler::StopNanny { nanny } => {
                let msg = match self.on_stop_nanny(nanny) {
                    Ok(message) => SchedulerToClient::Done { message },
                    Err(message) => SchedulerToClient::Error { message },
                };
                self.out.push(Command::ToClient { client, msg });
            }
            ClientToScheduler::Status => {
                let snapshot = self.status(None);
                self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Status(Box::new(snapshot)),
                });
            }
        }
    }

    fn on_submit(
        &mut self,
        client: ClientId,
        graph: rusk_proto::graph::GraphSpec,
        detach: bool,
        journaled: Option<crate::journal::Encoded<rusk_proto::graph::GraphSpec>>,
    ) {
        match compile(graph) {
            Ok(compiled)
                if compiled
                    .tasks
                    .iter()
                    .any(|t| matches!(*t.kind, TaskKind::Adopt { .. })) =>
            {
                self.out.push(Command::ToClient {
                    client,
                    msg: SchedulerToClient::Rejected {
                        error: "\"adopt\" tasks belong in session graphs (Extend), not in \
                                submitted graphs"
                            .into(),
                    },
                })
            }
            Ok(compiled) => {
                let id = self.add_graph(Some(client), compiled, detach, None);
                if let Some(spec) = journaled {
                    self.journal(crate::journal::Record::Submitted {
                        graph: id,
                        detach,
                        spec,
                    });
                }
            }
            Err(e) => self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::Rejected {
                    error: e.to_string(),
                },
            }),
        }
    }

    pub(super) fn on_client_left(&mut self, client: ClientId) {
        self.clients.remove(&client);
        self.drop_holds(client);
        let mut owned: Vec<GraphId> = self
            .graphs
            .iter()
            .filter(|(_, g)| g.owner == Some(client))
            .map(|(id, _)| *id)
            .collect();
        owned.sort_unstable();
        for id in owned {
            if self.detached.contains(&id) {
                self.graphs.get_mut(&id).expect("exists").owner = None;
            } else {
                self.retire_graph(id);
            }
        }
    }

    /// Add a compiled graph for `owner` (none: resumed from the journal, under its old `id`).
    pub(super) fn add_graph(
        &mut self,
        owner: Option<ClientId>,
        compiled: CompiledGraph,
        detach: bool,
        id: Option<GraphId>,
    ) -> GraphId {
        let id = match id {
            Some(id) => id,
            None => self.new_graph_id(),
        };
        let n = compiled.tasks.len();
        let mut dependents_count = vec![0u32; n];
        for t in &compiled.tasks {
            for &d in t.deps.iter() {
                dependents_count[d as usize] += 1;
            }
        }
        let mut dependents: Vec<Vec<u32>> = dependents_count
            .iter()
            .map(|&c| Vec::with_capacity(c as usize))
            .collect();
        for (i, t) in compiled.tasks.iter().enumerate() {
            for &d in t.deps.iter() {
                dependents[d as usize].push(i as u32);
            }
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut tasks = Vec::with_capacity(n);
        for (i, (t, dependents)) in compiled.tasks.into_iter().zip(dependents).enumerate() {
            let missing = t.deps.len() as u32;
            let prefix = self.intern_prefix(&t.key);
            let mut task = Task::new(t, generation, i as u64, missing);
            task.prefix = prefix;
            task.unfinished_dependents = dependents.len() as u32;
            task.dependents = dependents;
            tasks.push(task);
        }
        for &o in &compiled.outputs {
            tasks[o as usize].is_output = true;
        }
        self.state_counts[TaskState::Waiting.slot()] += n as u64;
        self.graphs.insert(
            id,
            Graph {
                tasks,
                outputs_pending: compiled.outputs.len() as u32,
                outputs: compiled.outputs,
                owner,
                resumed: owner.is_none(),
                notify_finished: true,
                errors: FxHashMap::default(),
                done: 0,
                erred: 0,
                assigned: 0,
                progress_dirty: true,
                pinned: 0,
                session: false,
                keys: FxHashMap::default(),
                newly_done: Vec::new(),
            },
        );
        if detach {
            self.detached.push_back(id);
            self.enforce_detached_bound();
        }
        if let Some(client) = owner {
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::Submitted {
                    graph: id,
                    tasks: n as u64,
                },
            });
        }
        for i in 0..n as u32 {
            let tref = TaskRef {
                graph: id,
                index: i,
            };
            if self.task(tref).expect("just added").missing == 0 {
                self.make_ready(tref);
            }
        }
        id
    }

    /// Open a session graph for `owner` (none: resumed from the journal, under its old `id`).
    pub(super) fn open_session(&mut self, owner: Option<ClientId>, id: Option<GraphId>) {
        let id = match id {
            Some(id) => id,
            None => self.new_graph_id(),
        };
        self.journal(crate::journal::Record::Opened { graph: id });
        self.graphs.insert(
            id,
            Graph {
                tasks: Vec::new(),
                outputs: Vec::new(),
                owner,
                resumed: owner.is_none(),
                outputs_pending: 0,
                notify_finished: false,
                errors: FxHashMap::default(),
                done: 0,
                erred: 0,
                assigned: 0,
                progress_dirty: false,
                pinned: 0,
                session: true,
                keys: FxHashMap::default(),
                newly_done: Vec::new(),
            },
        );
        if let Some(client) = owner {
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::Submitted {
                    graph: id,
                    tasks: 0,
                },
            });
        }
    }

    /// The session graph `id` if `client` owns it, else an error for the client.
    pub(super) fn own_session(&self, client: ClientId, id: GraphId) -> Result<(), String> {
        match self.graphs.get(&id) {
            Some(g) if g.session && g.owner == Some(client) => Ok(()),
            Some(_) => Err(format!("graph {id} is not a session graph of this client")),
            None => Err(format!("unknown graph {id} (released or never opened)")),
        }
    }

    pub(super) fn on_extend(
        &mut self,
        client: ClientId,
        id: GraphId,
        specs: Vec<rusk_proto::graph::TaskSpec>,
        outputs: Vec<String>,
        resent: bool,
    ) {
        if let Err(message) = self.own_session(client, id) {
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::Error { message },
            });
            return;
        }
        // A client that lost a restarted scheduler sends again the `Extend`s it had no reply
        // to. One the journal already had (extensions are journaled whole, before the reply)
        // is acknowledged again rather than rejected for its duplicate keys.
        let g = &self.graphs[&id];
        let replay = resent
            && !specs.is_empty()
            && specs.iter().all(|t| g.keys.contains_key(t.key.as_str()));
        let specs = if replay { Vec::new() } else { specs };
        match self.extend_graph(id, specs, outputs, false) {
            Ok(n) => self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::Extended {
                    graph: id,
                    tasks: n,
                },
            }),
            Err(error) => self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::Rejected { error },
            }),
        }
        self.maybe_finish_graph(id);
    }

    /// Grow session graph `id`: the number of tasks added, or why nothing was. `resuming`: a
    /// journaled extension replayed by a restarted scheduler, in which an adopt task whose
    /// source is gone (its graph was released after the adopter had finished) is not a reason
    /// to refuse it: that adopt task fails as its lost value would (`recompute`), and the rest
    /// of the extension stays.
    pub(super) fn extend_graph(
        &mut self,
        id: GraphId,
        specs: Vec<rusk_proto::graph::TaskSpec>,
        outputs: Vec<String>,
        resuming: bool,
    ) -> Result<u64, String> {
        let journaled = self
            .config
            .journal
            .then(|| crate::journal::Encoded::new(&specs));
        let g = &self.graphs[&id];
        let existing = g.tasks.len() as u32;
        let (tasks, outs) = crate::graph::compile_extension(&g.keys, existing, specs, &outputs)
            .map_err(|e| e.to_string())?;
        // Per task: not an adopt task (None), its source, or (when resuming) a source gone.
        let sources: Vec<Option<Option<TaskRef>>> = if resuming {
            tasks
                .iter()
                .map(|t| match &*t.kind {
                    TaskKind::Adopt { graph, key } => Some(self.resolve_key(*graph, key)),
                    _ => None,
                })
                .collect()
        } else {
            let sources = self.resolve_adopts(&tasks)?;
            sources.into_iter().map(|s| s.map(Some)).collect()
        };
        if let Some(tasks) = journaled {
            self.journal(crate::journal::Record::Extended {
                graph: id,
                tasks,
                outputs,
            });
        }
        let n = tasks.len() as u32;
        let generation = self.next_generation;
        self.next_generation += 1;
        let prefixes: Vec<u32> = tasks.iter().map(|t| self.intern_prefix(&t.key)).collect();
        let g = self.graphs.get_mut(&id).expect("checked");
        for (i, (t, prefix)) in tasks.into_iter().zip(prefixes).enumerate() {
            let idx = existing + i as u32;
            g.keys.insert(t.key.clone(), idx);
            let mut task = Task::new(t, generation, i as u64, 0);
            task.prefix = prefix;
            g.tasks.push(task);
        }
        // Only now that every new task is in: a new task may be listed before a new input.
        for idx in existing..existing + n {
            for k in 0..g.tasks[idx as usize].deps.len() {
                let d = g.tasks[idx as usize].deps[k];
                let dt = &mut g.tasks[d as usize];
                dt.dependents.push(idx);
                dt.unfinished_dependents += 1; // the new task starts unfinished (Waiting)
            }
        }
        self.state_counts[TaskState::Waiting.slot()] += n as u64;
        for (idx, src) in (existing..existing + n).zip(sources) {
            let tref = TaskRef {
                graph: id,
                index: idx,
            };
            let gone = src == Some(None);
            let src = src.flatten();
            if let Some(src) = src {
                self.link_adopt(tref, src);
            }
            let g = &self.graphs[&id];
            let t = &g.tasks[idx as usize];
            let inputs = t.deps.iter().map(|&d| TaskRef {
                graph: id,
                index: d,
            });
            let mut missing = 0;
            let mut released = Vec::new();
            let mut erred = None;
            for d in inputs.chain(src) {
                match self.task(d).expect("input exists").state {
                    TaskState::Memory { .. } => {}
                    TaskState::Released => {
                        missing += 1;
                        released.push(d);
                    }
                    TaskState::Erred => {
                        missing += 1;
                        erred = Some(d);
                    }
                    TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                        missing += 1
                    }
                }
            }
            if gone {
                let f = Failure::new(format!(
                    "task {:?} lost its value, and the key it adopted was released by its \
                     client since",
                    &*self.task(tref).expect("just added").key
                ));
                self.task_mut(tref).expect("just added").missing = missing + 1;
                self.fail_with(tref, f.clone(), f);
                continue;
            }
            self.task_mut(tref).expect("just added").missing = missing;
            if let Some(d) = erred {
                // Depends on a task that already failed: fail with the inherited error.
                let failure = self.downstream_failure(d);
                self.fail_with(tref, failure.clone(), failure);
                continue;
            }
            for d in released {
                // A dropped result is needed again: recompute it from its lineage.
                self.recompute(d);
            }
            if missing == 0 {
                self.make_ready(tref);
            }
        }
        for o in outs {
            let tref = TaskRef {
                graph: id,
                index: o,
            };
            let g = self.graphs.get_mut(&id).expect("checked");
            let t = &mut g.tasks[o as usize];
            if t.is_output {
                continue;
            }
            t.is_output = true;
            g.outputs.push(o);
            match t.state {
                TaskState::Memory { .. } | TaskState::Erred => g.newly_done.push(o),
                TaskState::Released => {
                    g.outputs_pending += 1;
                    self.recompute(tref);
                }
                TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                    g.outputs_pending += 1
                }
            }
        }
        Ok(n as u64)
    }

    /// The client no longer wants these outputs: drop what nothing else needs, cancelling
    /// work that has not finished.
    pub(super) fn on_release_keys(&mut self, client: ClientId, id: GraphId, keys: Vec<String>) {
        if self.own_session(client, id).is_err() {
            return; // the graph may already be gone; releasing is idempotent
        }
        if self.config.journal {
            self.journal(crate::journal::Record::ReleasedKeys {
                graph: id,
                keys: keys.clone(),
            });
        }
        self.release_keys(id, keys);
    }

    /// Session graph `id`'s client no longer wants `keys`.
    pub(super) fn release_keys(&mut self, id: GraphId, keys: Vec<String>) {
        for key in keys {
            let g = self.graphs.get_mut(&id).expect("checked");
            let Some(&idx) = g.keys.get(key.as_str()) else {
                continue;
            };
            g.outputs.retain(|&o| o != idx);
            self.release_output(id, idx);
        }
    }

    /// Output `idx` of graph `id` is no longer wanted (the caller took it out of `outputs`):
    /// drop what nothing else needs.
    pub(super) fn release_output(&mut self, id: GraphId, idx: u32) {
        let g = self.graphs.get_mut(&id).expect("exists");
        let t = &mut g.tasks[idx as usize];
        if !t.is_output {
            return;
        }
        t.is_output = false;
        if !matches!(t.state, TaskState::Memory { .. } | TaskState::Erred) {
            g.outputs_pending -= 1;
        }
        self.drop_unneeded(TaskRef {
            graph: id,
            index: idx,
        });
    }

    /// Release or cancel `root` and, transitively, its inputs, as far as nothing needs them.
    pub(super) fn drop_unneeded(&mut self, root: TaskRef) {
        let mut stack = vec![root];
        while let Some(task) = stack.pop() {
            if self.task(task).is_none() || self.is_needed(task) {
                continue;
            }
            let t = self.task(task).expect("exists");
            let (state, attempt, deps) = (t.state, t.attempt, t.deps.clone());
            match state {
                TaskState::Memory { .. } => self.release_if_unneeded(task),
                TaskState::Waiting | TaskState::Ready | TaskState::Assigned { .. } => {
                    if let TaskState::Assigned { worker, .. } = state {
                        if let Some(w) = self.workers.get_mut(&worker) {
                            w.assigned.remove(&task);
                        }
                        self.out.push(Command::ToWorker {
                            incarnation: worker,
                            msg: SchedulerToWorker::Cancel { task, attempt },
                        });
                    }
                    self.set_state(task, TaskState::Released);
                    let g = self.graphs.get_mut(&task.graph).expect("exists");
                    g.done += 1; // counted as settled; a later recompute takes it back
                    g.progress_dirty = true;
                    stack.extend(deps.iter().map(|&d| TaskRef {
                        graph: task.graph,
                        index: d,
                    }));
                    stack.extend(self.adopt_source(task));
                }
                TaskState::Released | TaskState::Erred => {}
            }
        }
    }

    pub(super) fn enforce_detached_bound(&mut self) {
        while self.detached.len() > self.config.detached_graphs_max {
            // Release the oldest detached graph that has finished; unfinished ones keep running.
            let Some(pos) = self
                .detached
                .iter()
                .position(|id| self.graphs.get(id).is_some_and(|g| g.outputs_pending == 0))
            else {
                return;
            };
            let id = self.detached.remove(pos).expect("position valid");
            self.remove_graph(id);
        }
    }

    /// Drop a whole graph: cancel its assigned tasks, release its results.
    pub(super) fn remove_graph(&mut self, id: GraphId) {
        let Some(g) = self.graphs.remove(&id) else {
            return;
        };
        self.journal(crate::journal::Record::Retired { graph: id });
        self.detached.retain(|&d| d != id);
        let mut releases: BTreeMap<Incarnation, Vec<TaskRef>> = BTreeMap::new();
        for (i, t) in g.tasks.iter().enumerate() {
            let tref = TaskRef {
                graph: id,
                index: i as u32,
            };
            self.state_counts[t.state.slot()] -= 1;
            match t.state {
                TaskState::Assigned { worker, .. } => {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.assigned.remove(&tref);
                        w.seceded.remove(&tref);
                        w.expected_us -= t.est_us;
                        if let Some(r) = &t.restrictions {
                            super::release_resources(w, r);
                        }
                    }
                    self.drop_steal(tref);
                    self.out.push(Command::ToWorker {
                        incarnation: worker,
                        msg: SchedulerToWorker::Cancel {
                            task: tref,
                            attempt: t.attempt,
                        },
                    });
                }
                TaskState::Memory { holder, .. } => {
                    if let Some(w) = self.workers.get_mut(&holder) {
                        w.holds.remove(&tref);
                    }
                    releases.entry(holder).or_default().push(tref);
                    for r in self.take_replicas(tref) {
                        releases.entry(r).or_default().push(tref);
                    }
                }
                _ => {}
            }
        }
        for (incarnation, tasks) in releases {
            self.out.push(Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Release { tasks },
            });
        }
        self.unlink_graph(id, &g);
        // Ready-queue entries of this graph are skipped lazily (the graph is gone).
    }

    /// Tell the owner about finished outputs: a session graph reports each output as it
    /// finishes; a submitted graph reports all of them once the last one is done.
    pub(super) fn maybe_finish_graph(&mut self, id: GraphId) {
        let g = self.graphs.get_mut(&id).expect("graph exists");
        if g.session {
            if g.newly_done.is_empty() {
                return;
            }
            let done = std::mem::take(&mut g.newly_done);
            let Some(client) = g.owner else {
                return;
            };
            let done: Vec<u32> = done
                .into_iter()
                .filter(|&o| {
                    let t = &g.tasks[o as usize];
                    t.is_output && matches!(t.state, TaskState::Memory { .. } | TaskState::Erred)
                })
                .collect();
            let outputs = done.into_iter().map(|o| self.output_state(id, o)).collect();
            self.out.push(Command::ToClient {
                client,
                msg: SchedulerToClient::OutputsReady { graph: id, outputs },
            });
            return;
        }
        if g.outputs_pending > 0 || !g.notify_finished {
            return;
        }
        let Some(client) = g.owner else {
            return;
        };
        g.notify_finished = false;
        let outs = g.outputs.clone();
        let outputs = outs.into_iter().map(|o| self.output_state(id, o)).collect();
        let g = self.graphs.get_mut(&id).expect("graph exists");
        let progress = Self::progress_of(id, g);
        g.progress_dirty = false;
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::Progress(progress),
        });
        self.out.push(Command::ToClient {
            client,
            msg: SchedulerToClient::GraphFinished { graph: id, outputs },
        });
        self.journal(crate::journal::Record::Delivered { graph: id });
        if self.detached.contains(&id) {
            self.enforce_detached_bound();
        }
    }

    /// Where a finished output is, or why it failed.
    pub(super) fn output_state(&self, id: GraphId, o: u32) -> OutputState {
        let g = &self.graphs[&id];
        let t = &g.tasks[o as usize];
        let result = match t.state {
            TaskState::Memory { holder, size } => OutputResult::Ready {
                task: TaskRef {
                    graph: id,
                    index: o,
                },
                holder: self.workers[&holder].info.data_address.clone(),
                size,
            },
            TaskState::Erred => {
                let f = g.errors.get(&o);
                OutputResult::Failed {
                    error: f.map(|e| e.message.to_string()).unwrap_or_default(),
                    detail: f.and_then(|e| e.detail.clone()),
                }
            }
            s => unreachable!("finished output in state {s:?}"),
        };
        OutputState {
            key: t.key.to_string(),
            result,
        }
    }

    pub(super) fn progress_of(id: GraphId, g: &Graph) -> GraphProgress {
        GraphProgress {
            graph: id.0,
            total: g.tasks.len() as u64,
            done: g.done,
            erred: g.erred,
            assigned: g.assigned,
        }
    }
}
