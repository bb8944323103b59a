//! The journal's side of the scheduler: emitting records, resuming from them after a restart,
//! and adopting the results workers kept while the scheduler was away.
//!
//! After a restart the scheduler holds back placement (for at most `resume_grace`) until every
//! worker the journal names as a holder has registered again: a result that still exists is
//! adopted, not recomputed. Graphs no client claims within the same grace (`LocateOutputs`)
//! are released, unless they were detached.
use super::*;
use crate::journal::{Record, Resume, ATTEMPTS_RESERVED_PER_RECORD, GRAPHS_RESERVED_PER_RECORD};

/// One worker's results that reached memory in a turn: its incarnation, its name, (task, size).
type HolderResults = (Incarnation, Arc<str>, Vec<(TaskRef, u64)>);

#[derive(Default)]
pub(super) struct ResumeState {
    /// Results that reached memory since the last [`Scheduler::flush_journal`], by holder
    /// (a turn's results come from a few workers: found by a short scan, the name cloned once).
    pub(super) mem: Vec<HolderResults>,
    /// Attempt ids below this are covered by a journaled `Reserved`.
    pub(super) reserved: u64,
    /// Graph ids below this may have been issued (journaled as `Reserved`).
    pub(super) reserved_graphs: u64,
    /// Workers (by name) that held results before the restart and have not registered again.
    pub(super) awaiting: FxHashSet<Arc<str>>,
    /// Until when placement waits for `awaiting` and graphs wait to be claimed (set by the
    /// first event after the restart, from its `now`).
    pub(super) grace_until: Option<Duration>,
    /// Resumed and still waiting for the grace to start.
    pub(super) pending: bool,
    /// Nannies the journal names that have not registered again since the restart; those
    /// still missing when the grace ends are named in a `nanny-gone` event and forgotten.
    pub(super) nannies: BTreeMap<String, (NannyInfo, Vec<SlotReport>)>,
}

/// A session graph's extension as journaled: its tasks and the outputs it named.
type JournaledExtension = (Vec<rusk_proto::graph::TaskSpec>, Vec<String>);

impl Scheduler {
    /// A scheduler that resumes the work the journal describes. Its first commands (the id
    /// reservation, to be journaled at once) are in the returned vector.
    pub fn resume(config: SchedulerConfig, from: Resume) -> (Scheduler, Vec<Command>) {
        let mut s = Scheduler::new(config);
        s.next_attempt = from.next_attempt.max(1);
        s.next_graph = from.next_graph.max(1);
        s.reserve_ids();
        let mut extensions = Vec::new();
        let mut releases: Vec<(GraphId, Vec<String>)> = Vec::new();
        for (id, g) in from.graphs {
            if g.session {
                s.open_session(None, Some(id));
                // A released key stays released unless a later extension named it again.
                for (at, keys) in &g.released {
                    let later = &g.extensions[(*at).min(g.extensions.len())..];
                    let keys: Vec<String> = keys
                        .iter()
                        .filter(|k| !later.iter().any(|(_, outs)| outs.contains(k)))
                        .cloned()
                        .collect();
                    if !keys.is_empty() {
                        releases.push((id, keys));
                    }
                }
                // Journaled once each compiled, so each decodes again; a journal of another
                // version might not: the graph then resumes up to that extension.
                let exts: VecDeque<JournaledExtension> = g
                    .extensions
                    .into_iter()
                    .map_while(|(tasks, outputs)| Some((tasks.decode().ok()?, outputs)))
                    .collect();
                extensions.push((id, exts));
            } else {
                match g.spec.decode().map(compile) {
                    Ok(Ok(compiled)) => {
                        s.add_graph(None, compiled, g.detach, Some(id));
                    }
                    // Accepted once, so it decodes and compiles; a journal from another
                    // version might not.
                    _ => continue,
                }
            }
            if g.delivered {
                if let Some(graph) = s.graphs.get_mut(&id) {
                    graph.notify_finished = false;
                }
            }
        }
        s.replay_extensions(extensions);
        for (id, keys) in releases {
            if s.graphs.contains_key(&id) {
                s.release_keys(id, keys);
            }
        }
        // Failed for good before the crash: failed again, not run again.
        for (task, (message, detail)) in from.failed {
            if s.task(task).is_some_and(|t| t.state.is_unfinished()) {
                s.fail_task(
                    task,
                    Failure {
                        message: message.into(),
                        detail,
                    },
                );
            }
        }
        let mut awaited = 0u64;
        for (task, (_, holder)) in from.in_memory {
            if s.task(task).is_some() {
                awaited += 1;
                s.resume.awaiting.insert(holder);
            }
        }
        s.resume.pending = true;
        s.resume.nannies = from.nannies;
        let mut r =
            Scheduler::scheduler_record(s.config.host.clone(), EventCause::SchedulerRestart);
        r.observed = format!(
            "started from its journal: {} graph(s), {} result(s) held by {} worker(s) before, \
             {} nanny(ies)",
            s.graphs.len(),
            awaited,
            s.resume.awaiting.len(),
            s.resume.nannies.len()
        );
        r.action = format!(
            "graphs resumed; placement waits up to {} ms for those workers to register again",
            s.config.resume_grace.as_millis()
        );
        s.record(Duration::ZERO, r);
        let out = std::mem::take(&mut s.out);
        (s, out)
    }

    /// Grow the resumed session graphs by their journaled extensions. The journal keeps each
    /// graph's extensions in order, not their order across graphs, and an adopt task may name
    /// a key of a graph with a higher id (opened later, extended earlier): so each graph's next
    /// extension goes in once every key it adopts is there, round after round. One still
    /// waiting when no round adds anything adopts keys no graph will have again (their graph
    /// was released after the adopters had finished): it goes in with those adopt tasks failed
    /// (`extend_graph` resuming), so that its other tasks, and the later extensions that build
    /// on its keys, are not lost.
    fn replay_extensions(&mut self, mut pending: Vec<(GraphId, VecDeque<JournaledExtension>)>) {
        loop {
            let mut progress = false;
            for (id, exts) in &mut pending {
                while let Some((tasks, _)) = exts.front() {
                    let ready = tasks.iter().all(|t| {
                        t.adopt
                            .as_ref()
                            .is_none_or(|a| self.resolve_key(a.graph, &a.key).is_some())
                    });
                    if !ready {
                        break;
                    }
                    let (tasks, outputs) = exts.pop_front().expect("looked at");
                    // Journaled once it compiled, so it compiles again (a journal of another
                    // version might not: the graph then resumes without it).
                    let _ = self.extend_graph(*id, tasks, outputs, false);
                    progress = true;
                }
            }
            if progress {
                continue;
            }
            let Some((id, exts)) = pending.iter_mut().find(|(_, e)| !e.is_empty()) else {
                break;
            };
            let (tasks, outputs) = exts.pop_front().expect("not empty");
            let _ = self.extend_graph(*id, tasks, outputs, true);
        }
        // Outputs that finished (failed) while being replayed: nobody owns the graphs yet, and
        // the client that claims one is told every finished output then.
        for g in self.graphs.values_mut() {
            g.newly_done.clear();
        }
    }

    /// Queue a journal record (nothing without a journal).
    /// A new journal's first records (the id floors), for the shell to write before it serves,
    /// so that no turn of a running cluster waits for a floor until a million ids are used.
    pub fn start_journal(&mut self) -> Vec<Record> {
        self.reserve_ids();
        let mut records = Vec::new();
        self.out.retain(|c| match c {
            Command::Journal(r) => {
                records.push(r.clone());
                false
            }
            _ => true,
        });
        records
    }

    pub(super) fn journal(&mut self, r: Record) {
        if self.config.journal {
            self.out.push(Command::Journal(r));
        }
    }

    /// Journal a result that reached memory: batched until [`Scheduler::flush_journal`].
    pub(super) fn journal_in_memory(&mut self, task: TaskRef, size: u64, holder: Incarnation) {
        if !self.config.journal {
            return;
        }
        match self
            .resume
            .mem
            .iter_mut()
            .find(|(inc, _, _)| *inc == holder)
        {
            Some((_, _, results)) => results.push((task, size)),
            None => {
                let name = self.workers[&holder].name.clone();
                self.resume.mem.push((holder, name, vec![(task, size)]));
            }
        }
    }

    /// Hand the results batched this turn to the shell: one `InMemory` record per holder.
    /// The shell calls it once per turn.
    pub fn flush_journal(&mut self, out: &mut Vec<Command>) {
        for (_, holder, results) in self.resume.mem.drain(..) {
            out.push(Command::Journal(Record::InMemory { holder, results }));
        }
    }

    /// Journal a new attempt-id floor before ids reach the old one.
    pub(super) fn reserve_ids(&mut self) {
        if !self.config.journal
            || (self.next_attempt < self.resume.reserved
                && self.next_graph < self.resume.reserved_graphs)
        {
            return;
        }
        if self.next_attempt >= self.resume.reserved {
            self.resume.reserved = self.next_attempt + ATTEMPTS_RESERVED_PER_RECORD;
        }
        if self.next_graph >= self.resume.reserved_graphs {
            self.resume.reserved_graphs = self.next_graph + GRAPHS_RESERVED_PER_RECORD;
        }
        self.journal(Record::Reserved {
            attempts: self.resume.reserved,
            graphs: self.resume.reserved_graphs,
        });
    }

    /// A new graph id, above every id a previous life of this scheduler may have issued.
    pub(super) fn new_graph_id(&mut self) -> GraphId {
        self.next_graph += 1;
        self.reserve_ids();
        GraphId(self.next_graph - 1)
    }

    /// Start the grace at the first event after a restart; end it when it runs out.
    pub(super) fn resume_tick(&mut self, now: Duration) {
        if self.resume.pending {
            self.resume.pending = false;
            self.resume.grace_until = Some(now + self.config.resume_grace);
            return;
        }
        let Some(until) = self.resume.grace_until else {
            return;
        };
        if now < until {
            return;
        }
        self.resume.grace_until = None;
        self.resume.awaiting.clear();
        self.forget_missing_nannies(now);
        // Graphs nobody claimed: their clients are not coming back.
        let mut unclaimed: Vec<GraphId> = self
            .graphs
            .iter()
            .filter(|(id, g)| g.resumed && !self.detached.contains(id))
            .map(|(id, _)| *id)
            .collect();
        unclaimed.sort_unstable();
        for id in unclaimed {
            self.retire_graph(id);
        }
        for g in self.graphs.values_mut() {
            g.resumed = false;
        }
    }

    /// The grace is over: each nanny the journal named that has not registered again is named
    /// in an event (its host may have gone while the scheduler was down) and forgotten.
    fn forget_missing_nannies(&mut self, now: Duration) {
        for (name, (info, slots)) in std::mem::take(&mut self.resume.nannies) {
            let mut r = Scheduler::scheduler_record(info.host.clone(), EventCause::NannyGone);
            r.nanny = Some(name.clone());
            let described: Vec<String> = slots
                .iter()
                .map(|s| match s.pid {
                    Some(pid) => format!("{}: {} (pid {pid})", s.slot, s.state),
                    None => format!("{}: {}", s.slot, s.state),
                })
                .collect();
            r.observed = format!(
                "nanny {name} on {} did not register again within {} ms of the scheduler's \
                 restart; its {} slot(s) when last reported: {}",
                info.host,
                self.config.resume_grace.as_millis(),
                info.nworkers,
                if described.is_empty() {
                    "none reported".to_string()
                } else {
                    described.join(", ")
                }
            );
            r.action = "forgotten until it registers again: check that host (its workers, if \
                        they live, register on their own)"
                .into();
            self.record(now, r);
            self.journal(Record::NannyForgotten { name });
        }
    }

    /// Is placement held back, waiting for holders to register again?
    pub(super) fn resume_holding(&self) -> bool {
        self.resume.pending
            || (self.resume.grace_until.is_some() && !self.resume.awaiting.is_empty())
    }

    /// A worker that registered naming attempts still running there (they outlived its last
    /// connection): each one whose task is still needed and ready, not placed elsewhere, is
    /// taken over as this worker's assignment under its attempt id, so its result is accepted
    /// when it comes, instead of the task running a second time. Ids this scheduler's journal
    /// never reserved are ignored (a peer's mistake), as are tasks no longer ready: their late
    /// results are stale reports, released.
    pub(super) fn adopt_running(&mut self, inc: Incarnation, running: Vec<(TaskRef, AttemptId)>) {
        for (task, attempt) in running {
            if attempt.0 >= self.next_attempt {
                continue;
            }
            let adoptable = self.task(task).is_some_and(|t| {
                t.state == TaskState::Ready && (t.is_output || t.unfinished_dependents > 0)
            });
            if !adoptable {
                continue;
            }
            let est = self.estimate_us(self.task(task).expect("checked").prefix);
            self.workers
                .get_mut(&inc)
                .expect("just joined")
                .assigned
                .insert(task);
            let now = self.now;
            let t = self.task_mut(task).expect("checked");
            t.attempt = attempt;
            t.steal_refused = false;
            t.est_us = est;
            self.set_state(
                task,
                TaskState::Assigned {
                    worker: inc,
                    started: Some(now),
                },
            );
            self.stats.attempts_adopted += 1;
        }
    }

    /// A worker that registered naming results it already stores: take over those still
    /// needed and not yet in memory; tell it to drop the others.
    pub(super) fn adopt_held(&mut self, inc: Incarnation, held: Vec<(TaskRef, u64)>) {
        let name = self.workers[&inc].name.clone();
        self.resume.awaiting.remove(&name);
        let mut release = Vec::new();
        let reported = held.len();
        for (task, size) in held {
            let adoptable = self.task(task).is_some_and(|t| {
                matches!(t.state, TaskState::Waiting | TaskState::Ready)
                    && (t.is_output || t.unfinished_dependents > 0)
            });
            if !adoptable {
                release.push(task);
                continue;
            }
            let attempt = AttemptId(self.next_attempt);
            self.next_attempt += 1;
            self.reserve_ids();
            self.workers
                .get_mut(&inc)
                .expect("just joined")
                .assigned
                .insert(task);
            let t = self.task_mut(task).expect("checked");
            t.attempt = attempt;
            t.est_us = 0;
            self.set_state(task, TaskState::assigned(inc));
            self.on_task_done(inc, task, attempt, size);
            // Its inputs may have been waiting to be computed (their results were released
            // before the crash): now that it is in memory, nothing may need them any more.
            let inputs: Vec<TaskRef> = self
                .task(task)
                .map(|t| {
                    t.deps
                        .iter()
                        .map(|&index| TaskRef {
                            graph: task.graph,
                            index,
                        })
                        .collect()
                })
                .unwrap_or_default();
            for input in inputs {
                self.drop_unneeded(input);
            }
        }
        let adopted = (reported - release.len()) as u64;
        self.stats.results_adopted += adopted;
        let info = self.workers[&inc].info.clone();
        let mut r = self.worker_record(&info, inc, EventCause::Rejoin);
        r.observed = format!("registered again holding {reported} result(s)");
        r.action = format!(
            "adopted {adopted} (not recomputed); {} no longer needed, released",
            release.len()
        );
        let now = self.now;
        self.record(now, r);
        if !release.is_empty() {
            self.out.push(Command::ToWorker {
                incarnation: inc,
                msg: SchedulerToWorker::Release { tasks: release },
            });
        }
    }
}
