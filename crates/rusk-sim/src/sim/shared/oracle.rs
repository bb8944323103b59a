//! The shared-keys clients' view of the scheduler, kept in step with it: what each client
//! message asks for (before the scheduler handles it), and checks of everything the scheduler
//! sends these clients, in the very step it sends it (see [`super`]).
use super::{ExtRef, InStep, Item, ItemState, PlanState, SharedEv, OWNER, USER};
use crate::error::FailureKind;
use crate::sim::{Ev, Sim};
use crate::workload::Expected;
use rand::Rng;
use rusk_proto::msg::{
    ClientToScheduler, DatasetRequest, OutputResult, OutputState, SchedulerToClient,
};
use rusk_proto::{ClientId, GraphId, TaskRef};
use std::collections::BTreeSet;
use std::time::Duration;

impl Sim {
    /// Before the scheduler handles `msg` from A or B: commit an extension to its graph's
    /// model, and note what the client now asks for.
    pub(crate) fn shared_before(&mut self, client: ClientId, msg: &ClientToScheduler) {
        let sh = self.shared.as_mut().expect("shared clients");
        sh.in_step = None;
        match msg {
            ClientToScheduler::Extend {
                graph,
                tasks,
                outputs,
                resent: _,
            } => {
                let ext = sh
                    .ext_queue
                    .get_mut(&client)
                    .and_then(|q| q.pop_front())
                    .expect("every Extend of a shared client is queued when sent");
                if sh.committed.contains(&ext) {
                    // Sent again after a scheduler crash: handled already by the one that
                    // died in that turn, so in the model already. A restarted scheduler has it
                    // if it was journaled (then acknowledges it with no task added), else adds
                    // it under the same indexes (the journal has every earlier extension).
                    let again = sh.journaled.contains(&ext);
                    let model = match ext {
                        ExtRef::Owner(_) => sh.owner_model,
                        ExtRef::User(_) => sh.user_model,
                    };
                    let m = &self.models[model];
                    for key in outputs {
                        let k = m.tasks.iter().position(|t| t.key == *key);
                        let k = k.expect("modelled");
                        let t = TaskRef {
                            graph: *graph,
                            index: m.spec_pos[k],
                        };
                        sh.outputs.insert((client, t));
                        sh.asked.insert((client, t));
                    }
                    sh.in_step = Some(InStep::Extend(ext, again));
                    return;
                }
                sh.committed.insert(ext);
                let (model, new, local) = match ext {
                    ExtRef::Owner(i) => {
                        let r = sh.owner_exts[i].0.clone();
                        (sh.owner_model, sh.owner_builder.tasks()[r].to_vec(), false)
                    }
                    ExtRef::User(j) => (sh.user_model, sh.plans[j].builder.tasks().to_vec(), true),
                };
                let m = &mut self.models[model];
                let base = m.tasks.len();
                if let ExtRef::Owner(i) = ext {
                    assert_eq!(
                        base, sh.owner_exts[i].0.start,
                        "A's extensions are handled in order and never refused"
                    );
                }
                let n = new.len();
                for mut t in new {
                    if local {
                        t.deps.iter_mut().for_each(|d| *d += base);
                    }
                    let pos = tasks
                        .iter()
                        .position(|s| s.key == t.key)
                        .expect("the spec lists every task");
                    m.spec_pos.push((base + pos) as u32);
                    m.tasks.push(t);
                    self.flaky_left[model].push(0);
                }
                m.model_of.resize(base + n, 0);
                for k in base..base + n {
                    m.model_of[m.spec_pos[k] as usize] = k;
                }
                if let ExtRef::User(j) = ext {
                    // B waits for the outputs of its extension from now on (as the Python
                    // client's futures, made when it sent it): a report of one may come before
                    // the reply (after a scheduler crash: the claim's, while the `Extend` is
                    // sent again).
                    sh.plans[j].base = base as u32;
                    for &o in &sh.plans[j].outputs {
                        let t = TaskRef {
                            graph: *graph,
                            index: m.spec_pos[base + o],
                        };
                        let item = Item {
                            held: false,
                            state: ItemState::Waiting,
                        };
                        sh.items.insert(t, item);
                    }
                }
                for key in outputs {
                    let k = m
                        .tasks
                        .iter()
                        .position(|t| t.key == *key)
                        .expect("modelled");
                    let t = TaskRef {
                        graph: *graph,
                        index: m.spec_pos[k],
                    };
                    sh.outputs.insert((client, t));
                    sh.asked.insert((client, t));
                }
                sh.in_step = Some(InStep::Extend(ext, false));
            }
            ClientToScheduler::Hold { graph, keys } => {
                let tasks: Vec<TaskRef> = keys
                    .iter()
                    .filter_map(|k| self.resolve(*graph, k))
                    .collect();
                let sh = self.shared.as_mut().expect("shared clients");
                for &t in &tasks {
                    sh.asked.insert((client, t));
                }
                sh.in_step = Some(InStep::Hold {
                    client,
                    tasks,
                    failed: Vec::new(),
                });
            }
            ClientToScheduler::Unhold { graph, keys }
            | ClientToScheduler::ReleaseKeys { graph, keys } => {
                let tasks: Vec<TaskRef> = keys
                    .iter()
                    .filter_map(|k| self.resolve(*graph, k))
                    .collect();
                let sh = self.shared.as_mut().expect("shared clients");
                for t in tasks {
                    sh.holds.remove(&(client, t));
                    sh.outputs.remove(&(client, t));
                    sh.asked.remove(&(client, t));
                }
            }
            ClientToScheduler::LocateOutputs { graph } => {
                let mine: Vec<_> = sh
                    .outputs
                    .iter()
                    .filter(|(c, t)| *c == client && t.graph == *graph)
                    .copied()
                    .collect();
                sh.asked.extend(mine);
            }
            ClientToScheduler::Keep { graph, keys } => {
                let tasks: Vec<TaskRef> = keys
                    .iter()
                    .filter_map(|k| self.resolve(*graph, k))
                    .collect();
                let sh = self.shared.as_mut().expect("shared clients");
                sh.kept.extend(tasks);
            }
            ClientToScheduler::Dataset(DatasetRequest::Publish { refs, .. }) => {
                let tasks = refs
                    .iter()
                    .filter_map(|(g, k)| self.resolve(*g, k))
                    .collect();
                let sh = self.shared.as_mut().expect("shared clients");
                sh.in_step = Some(InStep::Publish(tasks));
            }
            ClientToScheduler::Dataset(DatasetRequest::Unpublish { .. }) => {
                sh.in_step = Some(InStep::Unpublish);
            }
            ClientToScheduler::WhoHas { .. } => sh.in_step = Some(InStep::WhoHas),
            ClientToScheduler::Dataset(DatasetRequest::Get { .. }) => {
                sh.in_step = Some(InStep::Get);
            }
            _ => {}
        }
    }

    /// After the scheduler handled a message of A or B.
    pub(crate) fn shared_after(&mut self, client: ClientId) -> Result<(), FailureKind> {
        let down = self.crash.down;
        let sh = self.shared.as_mut().expect("shared clients");
        if down {
            // The scheduler died in that turn: nothing it did is known to anyone (and what it
            // journaled is in `journaled`); the client sends a request again.
            sh.in_step = None;
            return Ok(());
        }
        match sh.in_step.take() {
            Some(InStep::Hold { tasks, failed, .. }) => {
                for t in tasks {
                    if !failed.contains(&t) {
                        sh.holds.insert((client, t));
                    }
                }
                Ok(())
            }
            None => Ok(()),
            Some(_) => Self::violation(format!(
                "{client:?}'s request got no answer from the scheduler"
            )),
        }
    }

    /// A or B leaves: the scheduler drops its holds and outputs.
    pub(crate) fn shared_left(&mut self, client: ClientId) {
        let sh = self.shared.as_mut().expect("shared clients");
        sh.left.insert(client);
        if client == OWNER {
            let pinned = sh
                .holds
                .iter()
                .any(|(_, t)| Some(t.graph) == sh.owner_graph)
                || sh.published.is_some();
            if pinned {
                sh.counts.owner_left_pinned += 1;
            }
        }
        sh.holds.retain(|(c, _)| *c != client);
        sh.outputs.retain(|(c, _)| *c != client);
        sh.asked.retain(|(c, _)| *c != client);
        // B may have waited only for A to be done (A left with requests unanswered: the
        // scheduler was away).
        self.maybe_user_done();
    }

    pub(super) fn violation(message: String) -> Result<(), FailureKind> {
        Err(FailureKind::SharedKeys { message })
    }

    /// Results of `t` that reached memory: accepted from a worker's report, or adopted by a
    /// restarted scheduler from a worker that held it (`CrashState::adopted`).
    pub(crate) fn finishes(&self, t: TaskRef) -> u32 {
        let accepted = self.oracle.done_count.get(&t).copied().unwrap_or(0);
        accepted + self.crash.adopted.get(&t).copied().unwrap_or(0)
    }

    /// May `graph` be gone: its owner let go and no hold or dataset pins one of its keys
    /// (keeps and unfinished adopters may still pin it: "may").
    pub(crate) fn may_be_gone(&self, graph: GraphId) -> bool {
        let sh = self.shared.as_ref().expect("shared clients");
        let owner = if Some(graph) == sh.owner_graph {
            OWNER
        } else if Some(graph) == sh.user_graph {
            USER
        } else {
            return true;
        };
        sh.left.contains(&owner)
            && !sh.holds.iter().any(|(_, t)| t.graph == graph)
            && sh
                .published
                .as_ref()
                .is_none_or(|r| r.iter().all(|t| t.graph != graph))
    }

    /// `t` and everything it depends on, across adopt edges.
    fn upstream(&self, t: TaskRef) -> BTreeSet<TaskRef> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            let Some(m) = self.oracle.model_of(x.graph) else {
                continue;
            };
            let model = &self.models[m];
            let Some(mt) = model.task(x.index) else {
                continue;
            };
            stack.extend(mt.deps.iter().map(|&d| TaskRef {
                graph: x.graph,
                index: model.spec_pos[d],
            }));
            if let Some(a) = &mt.adopt {
                stack.push(TaskRef {
                    graph: a.graph,
                    index: a.index,
                });
            }
        }
        seen
    }

    pub(crate) fn upstream_poisoned(&self, t: TaskRef) -> Vec<TaskRef> {
        if self.oracle.poisoned.is_empty() {
            return Vec::new();
        }
        self.upstream(t)
            .intersection(&self.oracle.poisoned)
            .copied()
            .collect()
    }

    /// May the scheduler report `t` failed with `error`? Only for a poison task upstream, or
    /// an adopt task upstream that lost its value after the key it adopted was let go of.
    fn acceptable_error(&self, t: TaskRef, error: &str) -> bool {
        let key = |x: TaskRef| {
            self.model_task(x)
                .map_or_else(String::new, |m| m.key.clone())
        };
        for p in self.upstream_poisoned(t) {
            let own = format!("task {:?} is a poison task: ", key(p));
            if (p == t && error.starts_with(&own))
                || error.starts_with(&format!("dependency {:?} failed: {own}", key(p)))
            {
                return true;
            }
        }
        self.upstream(t).into_iter().any(|x| {
            self.model_task(x)
                .and_then(|m| m.adopt.as_ref())
                .is_some_and(|a| {
                    // Its own error, which dependents failed with it carry too, or which they
                    // carry as a dependency's when they find it failed later.
                    let own = format!(
                        "task {:?} lost its value, and the key it adopted was released by its \
                         client since",
                        key(x)
                    );
                    self.may_be_gone(a.graph)
                        && (error == own
                            || *error == format!("dependency {:?} failed: {own}", key(x)))
                })
        })
    }

    /// The scheduler sends `msg` to A or B: check it against what they asked for.
    pub(crate) fn shared_on_emit(
        &mut self,
        client: ClientId,
        msg: &SchedulerToClient,
    ) -> Result<(), FailureKind> {
        let in_step = self
            .shared
            .as_ref()
            .expect("shared clients")
            .in_step
            .as_ref();
        let what = match (msg, in_step) {
            (
                SchedulerToClient::Submitted { .. }
                | SchedulerToClient::Progress(_)
                | SchedulerToClient::Located { .. },
                _,
            ) => return Ok(()),
            (SchedulerToClient::OutputsReady { graph, outputs }, _) => {
                for o in outputs {
                    self.check_report(client, *graph, o)?;
                }
                return Ok(());
            }
            (SchedulerToClient::Extended { tasks, .. }, Some(&InStep::Extend(ext, again))) => {
                self.on_extended(client, ext, *tasks, again)?;
                "extended"
            }
            (
                SchedulerToClient::Rejected { error },
                Some(&InStep::Extend(ExtRef::User(j), false)),
            ) => {
                let sh = self.shared.as_ref().expect("shared clients");
                let sources = sh.plans[j].sources.clone();
                if !(error.contains("is not there") && sources.iter().any(|&g| self.may_be_gone(g)))
                {
                    return Self::violation(format!(
                        "B's adopt extension refused although its sources are pinned: {error}"
                    ));
                }
                self.rollback(j);
                "refused"
            }
            (SchedulerToClient::Done { .. }, Some(InStep::Publish(refs))) => {
                let refs = refs.clone();
                let sh = self.shared.as_mut().expect("shared clients");
                sh.published = Some(refs);
                sh.counts.datasets += 1;
                sh.owner_pending -= 1;
                sh.user_pending += 1;
                let at = self.now + Duration::from_millis(self.rng.gen_range(5..=500));
                self.push(at, Ev::Shared(SharedEv::GetDataset));
                "published"
            }
            (SchedulerToClient::Done { .. }, Some(InStep::Unpublish)) => {
                self.shared.as_mut().expect("shared clients").published = None;
                "unpublished"
            }
            (SchedulerToClient::Dataset { data, .. }, Some(InStep::Get)) => {
                let sh = self.shared.as_ref().expect("shared clients");
                if *data != sh.dataset_data || sh.published.is_none() {
                    return Self::violation(format!(
                        "dataset data {data:?}, published: {:?}",
                        sh.published
                    ));
                }
                "dataset"
            }
            // Datasets are not journaled: one published before a scheduler restart is gone
            // (and only then, `shared_restarted`, is there none to get or unpublish).
            (SchedulerToClient::Error { message }, Some(InStep::Get | InStep::Unpublish)) => {
                if self.shared.as_ref().expect("shared").published.is_some() {
                    return Self::violation(format!(
                        "{client:?} told the dataset is not there: {message}"
                    ));
                }
                "no dataset"
            }
            (SchedulerToClient::WhoHas { holders, .. }, Some(InStep::WhoHas)) => {
                // No copy twice (the invariants check each is on a live worker).
                for (key, at) in holders {
                    for (k, a) in at.iter().enumerate() {
                        if at[..k].contains(a) {
                            return Self::violation(format!("who_has lists {a} twice for {key}"));
                        }
                    }
                    if at.len() > 1 {
                        self.shared
                            .as_mut()
                            .expect("shared clients")
                            .counts
                            .keys_with_copies += 1;
                    }
                }
                "who has"
            }
            (msg, _) => {
                return Self::violation(format!("{client:?} got {msg:?}"));
            }
        };
        let _ = what;
        self.shared.as_mut().expect("shared clients").in_step = None;
        Ok(())
    }

    /// An extension is acknowledged (`again`: one a restarted scheduler had from its journal,
    /// sent again, so with no task added).
    fn on_extended(
        &mut self,
        client: ClientId,
        ext: ExtRef,
        n: u64,
        again: bool,
    ) -> Result<(), FailureKind> {
        if again {
            self.crash_counts.extends_replayed += 1;
        }
        let sh = self.shared.as_mut().expect("shared clients");
        sh.counts.extensions += 1;
        let added = |len: usize| if again { 0 } else { len as u64 };
        match ext {
            ExtRef::Owner(i) => {
                if n != added(sh.owner_exts[i].0.len()) {
                    return Self::violation(format!("A's extension {i} got {n} tasks"));
                }
                sh.owner_pending -= 1;
                if !sh.left.contains(&USER) {
                    sh.user_pending += 1;
                    let at = self.now + Duration::from_millis(self.rng.gen_range(5..=100));
                    self.push(at, Ev::Shared(SharedEv::Learn { ext: i }));
                }
            }
            ExtRef::User(j) => {
                let p = &mut sh.plans[j];
                if n != added(p.builder.len()) {
                    return Self::violation(format!("B's extension {j} got {n} tasks"));
                }
                p.state = PlanState::Extended;
            }
        }
        let _ = client;
        Ok(())
    }

    /// B's extension `j` was refused: its tasks leave B's graph's model.
    fn rollback(&mut self, j: usize) {
        let sh = self.shared.as_mut().expect("shared clients");
        sh.counts.refused_gone += 1;
        sh.committed.remove(&ExtRef::User(j));
        let p = &mut sh.plans[j];
        p.state = PlanState::Rejected;
        let base = p.base as usize;
        let m = &mut self.models[sh.user_model];
        m.tasks.truncate(base);
        m.spec_pos.truncate(base);
        m.model_of.truncate(base);
        self.flaky_left[sh.user_model].truncate(base);
        let graph = sh.user_graph;
        let gone = |t: &TaskRef| Some(t.graph) == graph && t.index as usize >= base;
        sh.outputs.retain(|(_, t)| !gone(t));
        sh.asked.retain(|(_, t)| !gone(t));
        sh.items.retain(|t, _| !gone(t));
    }

    /// One output report to A or B: to a client that holds the key or owns it as an output,
    /// once per time it asked or the key finished again, with the right size or an error the
    /// model allows.
    fn check_report(
        &mut self,
        client: ClientId,
        graph: GraphId,
        o: &OutputState,
    ) -> Result<(), FailureKind> {
        let key = o.key.as_str();
        let t = self.resolve(graph, key);
        let gone = self.may_be_gone(graph);
        let sh = self.shared.as_mut().expect("shared clients");
        let in_hold = match (&mut sh.in_step, t) {
            (
                Some(InStep::Hold {
                    client: c,
                    tasks,
                    failed,
                }),
                Some(t),
            ) if *c == client && tasks.contains(&t) => Some(failed),
            _ => None,
        };
        if let OutputResult::Failed { error, .. } = &o.result {
            if error.starts_with("key ") && error.contains("is not there") {
                let Some(failed) = in_hold else {
                    return Self::violation(format!(
                        "{client:?} told {key:?} is not there: {error}"
                    ));
                };
                failed.push(t.expect("in the hold"));
                sh.counts.refused_gone += 1;
                if !gone {
                    return Self::violation(format!(
                        "hold of {key:?} of {graph} refused while its graph is pinned: {error}"
                    ));
                }
                return Ok(());
            }
        }
        let in_hold = in_hold.is_some();
        let Some(t) = t else {
            return Self::violation(format!("{client:?} got a report of unknown key {key:?}"));
        };
        if !(in_hold || sh.holds.contains(&(client, t)) || sh.outputs.contains(&(client, t))) {
            return Self::violation(format!(
                "{client:?} got a report of {key:?} ({t}), which it neither holds nor owns"
            ));
        }
        // `finishes(t)` (`sh` is borrowed).
        let done = self.oracle.done_count.get(&t).copied().unwrap_or(0)
            + self.crash.adopted.get(&t).copied().unwrap_or(0);
        let asked = sh.asked.remove(&(client, t));
        let fresh = match &o.result {
            OutputResult::Ready { .. } => {
                done > sh.last_done.get(&(client, t)).copied().unwrap_or(0)
            }
            OutputResult::Failed { .. } => !sh.failed_reported.contains(&(client, t)),
        };
        if !(asked || fresh) {
            return Self::violation(format!(
                "{client:?} got {key:?} ({t}) reported again, neither asked for again nor \
                 finished again ({done} results accepted)"
            ));
        }
        sh.last_done.insert((client, t), done);
        sh.counts.reports += 1;
        if matches!(o.result, OutputResult::Failed { .. }) {
            sh.failed_reported.insert((client, t));
        }
        match &o.result {
            OutputResult::Ready { task, size, .. } => {
                let want = match self.model_task(t).map(|m| &m.expected) {
                    Some(Expected::Value(v)) => v.len() as u64,
                    _ => u64::MAX,
                };
                if *task != t || *size != want || done == 0 {
                    return Self::violation(format!(
                        "{key:?} reported as {task} of {size} bytes ({done} results accepted), \
                         expected {t} of {want}"
                    ));
                }
            }
            OutputResult::Failed { error, .. } => {
                if !self.acceptable_error(t, error) {
                    return Self::violation(format!(
                        "{key:?} ({t}) reported failed: {error:?}; poisoned upstream: {:?}",
                        self.upstream_poisoned(t)
                    ));
                }
            }
        }
        Ok(())
    }
}
