//! The simulated client, behaving as `rusk submit` will: submit a graph, wait for
//! `GraphFinished`, fetch every ready output from the worker named as its holder, and when a
//! fetch fails, back off and ask the scheduler again with `LocateOutputs`. Each value and each
//! error is compared with the model; a graph whose outputs all check out is released.
use super::net::Requester;
use super::{Ev, Sim, ABANDONING_CLIENT, MAIN_CLIENT, OPERATOR};
use crate::error::{FailureKind, Shown};
use crate::trace::What;
use crate::workload::Expected;
use bytes::Bytes;
use rand::Rng;
use rusk_core::scheduler;
use rusk_proto::msg::{ClientToScheduler, OutputResult, OutputState, SchedulerToClient};
use rusk_proto::{ClientId, GraphId, TaskRef};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;
use std::time::Duration;

/// Back-off before asking again where outputs are, in milliseconds.
const LOCATE_BACKOFF_MS_MIN: u64 = 50;
const LOCATE_BACKOFF_MS_MAX: u64 = 300;

pub(crate) struct ClientState {
    /// Models submitted whose `Submitted` has not arrived, in order (the link is ordered).
    pub(crate) awaiting: VecDeque<usize>,
    pub(crate) graphs: BTreeMap<GraphId, ClientGraph>,
    /// Graphs this client will have submitted by the end of the run.
    planned: u32,
    /// Models it sent a `Submit` for.
    submitted_models: Vec<usize>,
    pub(crate) left: bool,
    /// Connected to the scheduler (false from noticing a scheduler crash until reconnected).
    pub(crate) connected: bool,
    /// The scheduler life (`CrashState::epoch`) its connection is to.
    pub(crate) epoch: u64,
    /// Back-off of its next reconnection attempt.
    pub(crate) retry: Duration,
}

pub(crate) struct ClientGraph {
    pub(crate) model: usize,
    /// Outputs already checked.
    ok: Vec<bool>,
    /// Output fetches of the current round not yet answered.
    round_pending: u32,
    round_failed: bool,
    rounds: u32,
    done: bool,
    /// A `LocateOutputs` is planned (`Ev::LocateAgain`) and not yet sent.
    locate_pending: bool,
}

impl ClientGraph {
    /// Waiting for `GraphFinished`: neither fetching, nor about to ask, nor done.
    pub(crate) fn awaits_finish(&self) -> bool {
        !self.done && self.round_pending == 0 && !self.locate_pending
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }
}

impl ClientState {
    pub(crate) fn new() -> ClientState {
        ClientState {
            awaiting: VecDeque::new(),
            graphs: BTreeMap::new(),
            planned: 0,
            submitted_models: Vec::new(),
            left: false,
            connected: true,
            epoch: 0,
            retry: super::crash::CLIENT_RETRY_MIN,
        }
    }
}

impl Sim {
    pub(crate) fn plan_submit(&mut self, client: ClientId, at: Duration, model: usize) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.planned += 1;
        }
        self.push(at, Ev::Submit { client, model });
    }

    pub(crate) fn on_submit(&mut self, client: ClientId, model: usize) -> Result<(), FailureKind> {
        let Some(c) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        if c.left {
            return Ok(());
        }
        c.awaiting.push_back(model);
        c.submitted_models.push(model);
        self.note(What::Client(client, "submit", None));
        let m = &self.models[model];
        let msg = ClientToScheduler::Submit {
            graph: m.spec.clone(),
            detach: m.detach,
        };
        self.client_send(client, msg, Some(model));
        Ok(())
    }

    /// Submit `model` again: its `Submitted` died with the scheduler.
    pub(crate) fn resubmit(&mut self, client: ClientId, model: usize) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.awaiting.push_back(model);
        self.note(What::Client(client, "submit again", None));
        let m = &self.models[model];
        let msg = ClientToScheduler::Submit {
            graph: m.spec.clone(),
            detach: m.detach,
        };
        self.client_send(client, msg, Some(model));
    }

    pub(crate) fn on_client_to_sched(
        &mut self,
        client: ClientId,
        msg: ClientToScheduler,
        model: Option<usize>,
    ) -> Result<(), FailureKind> {
        if self.clients.get(&client).is_none_or(|c| c.left) {
            return Ok(());
        }
        let (what, graph) = match &msg {
            ClientToScheduler::Submit { .. } => ("sched gets Submit", None),
            ClientToScheduler::LocateOutputs { graph } => {
                ("sched gets LocateOutputs", Some(*graph))
            }
            ClientToScheduler::ReleaseGraph { graph } => ("sched gets ReleaseGraph", Some(*graph)),
            ClientToScheduler::Status => ("sched gets Status", None),
            ClientToScheduler::Events { .. } => ("sched gets Events", None),
            ClientToScheduler::Restart { .. } => ("sched gets Restart", None),
            ClientToScheduler::StopNanny { .. } => ("sched gets StopNanny", None),
            ClientToScheduler::Upload { .. } => ("sched gets Upload", None),
            ClientToScheduler::Open => ("sched gets Open", None),
            ClientToScheduler::Extend { graph, .. } => ("sched gets Extend", Some(*graph)),
            ClientToScheduler::ReleaseKeys { graph, .. } => {
                ("sched gets ReleaseKeys", Some(*graph))
            }
            ClientToScheduler::Hold { graph, .. } => ("sched gets Hold", Some(*graph)),
            ClientToScheduler::Unhold { graph, .. } => ("sched gets Unhold", Some(*graph)),
            ClientToScheduler::Keep { graph, .. } => ("sched gets Keep", Some(*graph)),
            ClientToScheduler::Dataset(_) => ("sched gets Dataset", None),
            ClientToScheduler::Replicate { graph, .. } => ("sched gets Replicate", Some(*graph)),
            ClientToScheduler::WhoHas { graph, .. } => ("sched gets WhoHas", Some(*graph)),
        };
        self.note(What::Client(client, what, graph));
        let shared = self.is_shared_client(client);
        if shared {
            self.shared_before(client, &msg);
        }
        self.submit_model = model;
        let r = self.sched_step(scheduler::Event::ClientMessage { client, msg });
        self.submit_model = None;
        r?;
        if shared {
            self.shared_after(client)?;
        }
        Ok(())
    }

    pub(crate) fn on_client_leaves(&mut self, client: ClientId) -> Result<(), FailureKind> {
        let Some(c) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        c.left = true;
        // Only the scheduler it is connected to sees it leave.
        let connected = c.connected && c.epoch == self.crash.epoch;
        self.note(What::Client(client, "leaves", None));
        if self.is_shared_client(client) {
            self.shared_left(client);
        }
        if !connected {
            return Ok(());
        }
        self.sched_step(scheduler::Event::ClientLeft { client })
    }

    pub(crate) fn on_to_client(
        &mut self,
        client: ClientId,
        msg: SchedulerToClient,
    ) -> Result<(), FailureKind> {
        let Some(c) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        if c.left {
            return Ok(());
        }
        if self.shared.is_some()
            && (client == super::shared::OWNER || client == super::shared::USER)
        {
            return self.shared_to_client(client, msg);
        }
        let protocol = |message: String| Err(FailureKind::ClientProtocol { message });
        match msg {
            SchedulerToClient::Submitted { graph, tasks } => {
                let Some(model) = c.awaiting.pop_front() else {
                    return protocol(format!("Submitted {graph} without a submission"));
                };
                let outputs = self.models[model].outputs.len();
                c.graphs.insert(
                    graph,
                    ClientGraph {
                        model,
                        ok: vec![false; outputs],
                        round_pending: 0,
                        round_failed: false,
                        rounds: 0,
                        done: false,
                        locate_pending: false,
                    },
                );
                self.note(What::Client(client, "submitted", Some(graph)));
                if tasks != self.models[model].tasks.len() as u64 {
                    return protocol(format!("Submitted {graph} with {tasks} tasks"));
                }
                Ok(())
            }
            SchedulerToClient::Rejected { error } => protocol(format!("graph rejected: {error}")),
            SchedulerToClient::Error { message } if client == MAIN_CLIENT => {
                protocol(format!("error: {message}"))
            }
            SchedulerToClient::GraphFinished { graph, outputs } if client == MAIN_CLIENT => {
                self.note(What::Client(client, "graph finished", Some(graph)));
                self.on_graph_finished(graph, outputs)
            }
            SchedulerToClient::Error { message } if client == OPERATOR => {
                self.note(What::Note(format!("operator gets an error: {message}")));
                Ok(())
            }
            SchedulerToClient::Done { message } if client == OPERATOR => {
                self.note(What::Note(format!("operator: {message}")));
                Ok(())
            }
            SchedulerToClient::Extended { .. } | SchedulerToClient::OutputsReady { .. } => {
                protocol("a session-graph reply to a client that opened none".into())
            }
            SchedulerToClient::Error { .. }
            | SchedulerToClient::GraphFinished { .. }
            | SchedulerToClient::Located { .. }
            | SchedulerToClient::Progress(_)
            | SchedulerToClient::Status(_)
            | SchedulerToClient::Events { .. }
            | SchedulerToClient::Dataset { .. }
            | SchedulerToClient::DatasetNames { .. }
            | SchedulerToClient::WhoHas { .. }
            | SchedulerToClient::Done { .. } => Ok(()),
        }
    }

    fn on_graph_finished(
        &mut self,
        graph: GraphId,
        outputs: Vec<OutputState>,
    ) -> Result<(), FailureKind> {
        let protocol = |message: String| Err(FailureKind::ClientProtocol { message });
        let Some(cg) = self
            .clients
            .get(&MAIN_CLIENT)
            .and_then(|c| c.graphs.get(&graph))
        else {
            return protocol(format!("GraphFinished for unknown graph {graph}"));
        };
        if cg.done || cg.round_pending > 0 {
            return protocol(format!("GraphFinished for {graph} that was not asked for"));
        }
        let model = &self.models[cg.model];
        let of_model = |set: &BTreeSet<TaskRef>, only: Option<&BTreeSet<TaskRef>>| {
            set.iter()
                .filter(|t| t.graph == graph && only.is_none_or(|o| !o.contains(t)))
                .filter_map(|t| model.model_of.get(t.index as usize).copied())
                .collect::<BTreeSet<usize>>()
        };
        // Poisoned by this scheduler life, and only by earlier ones (`acceptable_errors_across`).
        let poisoned = of_model(&self.oracle.poisoned_life, None);
        let earlier = of_model(&self.oracle.poisoned, Some(&self.oracle.poisoned_life));
        if outputs.len() != model.outputs.len() {
            return protocol(format!(
                "{graph} finished with {} outputs, expected {}",
                outputs.len(),
                model.outputs.len()
            ));
        }
        let mut ok = cg.ok.clone();
        let mut fetches = Vec::new();
        for (i, o) in outputs.into_iter().enumerate() {
            let m = model.outputs[i];
            let t = &model.tasks[m];
            if o.key != t.key {
                return protocol(format!(
                    "{graph} output {i} is {:?}, expected {:?}",
                    o.key, t.key
                ));
            }
            if ok[i] {
                continue;
            }
            let wrong = |expected: String, got: String| {
                Err(FailureKind::WrongOutput {
                    graph,
                    key: t.key.clone(),
                    expected,
                    got,
                })
            };
            match (o.result, &t.expected) {
                (OutputResult::Failed { error, .. }, expected) => {
                    // Any task may have been failed as a poison task, if the oracle saw it
                    // (or one upstream) running on enough workers that died.
                    let acceptable = model.acceptable_errors_across(
                        m,
                        self.oracle.max_worker_deaths,
                        &poisoned,
                        &earlier,
                    );
                    if !acceptable.iter().any(|p| p.matches(&error)) {
                        let want = match expected {
                            Expected::Value(v) => Shown(v).to_string(),
                            Expected::Failed => format!("one of {acceptable:?}"),
                        };
                        return wrong(want, format!("error {error:?}"));
                    }
                    ok[i] = true;
                    self.outputs_checked += 1;
                }
                (OutputResult::Ready { .. }, Expected::Failed) => {
                    return wrong("an error".into(), "a result".into());
                }
                (OutputResult::Ready { task, holder, size }, Expected::Value(v)) => {
                    let want = TaskRef {
                        graph,
                        index: model.spec_pos[m],
                    };
                    if task != want || size != v.len() as u64 {
                        return wrong(
                            format!("{want} of {} bytes", v.len()),
                            format!("{task} of {size} bytes"),
                        );
                    }
                    fetches.push((i, holder, task));
                }
            }
        }
        let cg = self
            .clients
            .get_mut(&MAIN_CLIENT)
            .and_then(|c| c.graphs.get_mut(&graph))
            .expect("looked up above");
        cg.ok = ok;
        cg.round_pending = fetches.len() as u32;
        for (output, holder, task) in fetches {
            self.start_fetch(
                Requester::Client { graph, output },
                holder.into(),
                vec![task],
            );
        }
        if self.client_graph(graph).round_pending == 0 {
            self.finish_round(graph);
        }
        Ok(())
    }

    fn client_graph(&mut self, graph: GraphId) -> &mut ClientGraph {
        self.clients
            .get_mut(&MAIN_CLIENT)
            .and_then(|c| c.graphs.get_mut(&graph))
            .expect("client fetches only for its own graphs")
    }

    /// A client fetch of output `output` of `graph` ended with `data` (`None`: failed, or the
    /// holder did not have it).
    pub(crate) fn client_fetch_done(
        &mut self,
        graph: GraphId,
        output: usize,
        data: Option<Bytes>,
    ) -> Result<(), FailureKind> {
        let cg = self.client_graph(graph);
        cg.round_pending -= 1;
        let model_index = cg.model;
        let model = &self.models[model_index];
        let m = model.outputs[output];
        match data {
            Some(data) => {
                if model.tasks[m].expected != Expected::Value(data.clone()) {
                    let expected = match &model.tasks[m].expected {
                        Expected::Value(v) => Shown(v).to_string(),
                        Expected::Failed => "an error".into(),
                    };
                    return Err(FailureKind::WrongOutput {
                        graph,
                        key: model.tasks[m].key.clone(),
                        expected,
                        got: Shown(&data).to_string(),
                    });
                }
                self.outputs_checked += 1;
                self.client_graph(graph).ok[output] = true;
            }
            None => self.client_graph(graph).round_failed = true,
        }
        if self.client_graph(graph).round_pending == 0 {
            self.finish_round(graph);
        }
        Ok(())
    }

    fn finish_round(&mut self, graph: GraphId) {
        let cg = self.client_graph(graph);
        if cg.ok.iter().all(|&o| o) {
            cg.done = true;
            self.note(What::Client(
                MAIN_CLIENT,
                "all outputs checked; release",
                Some(graph),
            ));
            self.client_send(MAIN_CLIENT, ClientToScheduler::ReleaseGraph { graph }, None);
            return;
        }
        cg.round_failed = false;
        cg.rounds += 1;
        cg.locate_pending = true;
        let backoff = Duration::from_millis(
            self.rng
                .gen_range(LOCATE_BACKOFF_MS_MIN..=LOCATE_BACKOFF_MS_MAX),
        );
        self.push(self.now + backoff, Ev::LocateAgain { graph });
    }

    pub(crate) fn on_locate_again(&mut self, graph: GraphId) -> Result<(), FailureKind> {
        self.client_graph(graph).locate_pending = false;
        self.note(What::Client(MAIN_CLIENT, "locate outputs", Some(graph)));
        self.client_send(
            MAIN_CLIENT,
            ClientToScheduler::LocateOutputs { graph },
            None,
        );
        Ok(())
    }

    /// Detached graphs outlive the client that submitted them; once that client has left,
    /// the main client releases them (a graph without owner may be released by anyone), so
    /// that the run ends with nothing left.
    pub(crate) fn release_orphaned_graphs(&mut self) {
        if self.crash.enabled {
            // After scheduler crashes, also graphs whose `Submitted` died with it (their
            // client submitted them again): every graph the main client does not own.
            let own: BTreeSet<GraphId> = self
                .clients
                .get(&MAIN_CLIENT)
                .map(|c| c.graphs.keys().copied().collect())
                .unwrap_or_default();
            let orphans: Vec<GraphId> = self
                .oracle
                .graphs()
                .map(|(g, _)| g)
                .filter(|g| !own.contains(g))
                .collect();
            for graph in orphans {
                self.note(What::Client(MAIN_CLIENT, "release orphan", Some(graph)));
                self.client_send(MAIN_CLIENT, ClientToScheduler::ReleaseGraph { graph }, None);
            }
            return;
        }
        let orphans: Vec<GraphId> = self
            .clients
            .iter()
            .filter(|(&id, c)| id != MAIN_CLIENT && c.left)
            .flat_map(|(_, c)| c.submitted_models.iter().copied())
            .filter(|&m| self.models[m].detach)
            .filter_map(|m| {
                self.oracle
                    .graphs()
                    .find(|&(_, gm)| gm == m)
                    .map(|(g, _)| g)
            })
            .collect();
        for graph in orphans {
            self.note(What::Client(MAIN_CLIENT, "release orphan", Some(graph)));
            self.client_send(MAIN_CLIENT, ClientToScheduler::ReleaseGraph { graph }, None);
        }
    }

    /// Everything the main client planned is submitted, finished and checked, and the
    /// abandoning client (if any) has left.
    pub(crate) fn client_done(&self) -> bool {
        let main_done = self.clients.get(&MAIN_CLIENT).is_none_or(|c| {
            c.awaiting.is_empty()
                && c.graphs.len() as u32 == c.planned
                && c.graphs.values().all(|g| g.done)
        });
        let other_done = self.clients.get(&ABANDONING_CLIENT).is_none_or(|c| c.left);
        main_done && other_done && self.shared_done()
    }

    /// What is still missing, for the liveness failure report.
    pub(crate) fn pending_summary(&self) -> String {
        let mut s = String::new();
        if let Some(c) = self.clients.get(&MAIN_CLIENT) {
            if !c.awaiting.is_empty() || c.graphs.len() as u32 != c.planned {
                let _ = write!(
                    s,
                    "{} graphs submitted of {} planned, {} awaiting Submitted; ",
                    c.graphs.len(),
                    c.planned,
                    c.awaiting.len()
                );
            }
            for (id, g) in c.graphs.iter().filter(|(_, g)| !g.done) {
                let _ = write!(
                    s,
                    "{id}: {}/{} outputs checked after {} rounds, {} fetches pending; ",
                    g.ok.iter().filter(|&&o| o).count(),
                    g.ok.len(),
                    g.rounds,
                    g.round_pending
                );
            }
        }
        s.push_str(&self.shared_summary());
        let _ = write!(
            s,
            "scheduler tasks {:?}, workers {}; lives:",
            self.scheduler.task_counts(),
            self.scheduler.worker_count()
        );
        for l in &self.lives {
            if l.core.is_some() {
                let _ = write!(s, " {}={:?}/{:?}", l.node(), l.state, l.incarnation);
            }
        }
        let _ = write!(s, "; slots:");
        for slot in 0..self.slots.len() as u32 {
            let _ = write!(
                s,
                " {}={}{}",
                self.slot_name(slot),
                self.slot_state(slot),
                if self.slot_up(slot) { "/up" } else { "" }
            );
        }
        s
    }
}
