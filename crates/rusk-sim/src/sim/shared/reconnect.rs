//! The session clients (A and B) across scheduler crashes, as the Python client
//! (`rusk-py/src/session.rs`) behaves: each request that gets a reply is kept until the reply
//! comes (routed to the oldest request waiting for that kind of reply); while the scheduler is
//! away, requests wait and messages without a reply queue; on the new connection the client
//! claims its session graph (`LocateOutputs`, answered by `Located`), sends again every request
//! still unanswered (`Extend { resent: true }`), then what queued. Messages without a reply
//! that were on their way to the scheduler that died are lost.
//!
//! One thing more than the Python client does today: B holds again the keys of A it holds
//! (`Hold` is not journaled, so the restarted scheduler holds nothing for it). Without that, a
//! held key B still waits for would never be reported (the Python client's foreign futures
//! have the same need).
//!
//! And what a restart resets in the oracle's model of the scheduler (`shared_restarted`):
//! what it knew from messages it does not journal.
use super::{ExtRef, InStep, OWNER, USER};
use crate::error::FailureKind;
use crate::sim::Sim;
use rusk_core::journal::Record;
use rusk_proto::msg::{ClientToScheduler, DatasetRequest, SchedulerToClient};
use rusk_proto::{ClientId, GraphId, TaskRef};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a request waits for (`rusk_py::session::Expect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    /// `Open`.
    Submitted,
    Extended,
    /// Publishing or unpublishing the dataset.
    Done,
    Dataset,
    WhoHas,
    /// The `LocateOutputs` that claims the session graph on a new connection.
    Located,
}

/// A request waiting for its reply, and the message, to send again.
struct Waiter {
    expect: Expect,
    /// `None` for the claim (only this connection's counts).
    msg: Option<ClientToScheduler>,
    /// For `Open`: the model of the graph.
    model: Option<usize>,
    /// For `Extend`: which extension it is.
    ext: Option<ExtRef>,
}

/// One client's side of its scheduler link, kept across reconnections.
#[derive(Default)]
pub(super) struct Link {
    waiters: VecDeque<Waiter>,
    /// Messages without a reply sent while the scheduler was away.
    queued: Vec<ClientToScheduler>,
}

/// The reply a request gets, if it gets one.
fn expect_of(msg: &ClientToScheduler) -> Option<Expect> {
    match msg {
        ClientToScheduler::Open => Some(Expect::Submitted),
        ClientToScheduler::Extend { .. } => Some(Expect::Extended),
        ClientToScheduler::Dataset(
            DatasetRequest::Publish { .. } | DatasetRequest::Unpublish { .. },
        ) => Some(Expect::Done),
        ClientToScheduler::Dataset(DatasetRequest::Get { .. }) => Some(Expect::Dataset),
        ClientToScheduler::WhoHas { .. } => Some(Expect::WhoHas),
        _ => None,
    }
}

impl Sim {
    /// A or B sends `msg` (a request is kept until answered; without a connection, a message
    /// without reply queues).
    pub(super) fn shared_send(&mut self, client: ClientId, msg: ClientToScheduler) {
        self.shared_send_as(client, msg, None, None);
    }

    /// [`Sim::shared_send`] of an `Open` (of graph model `model`) or an `Extend` (`ext`).
    pub(super) fn shared_send_as(
        &mut self,
        client: ClientId,
        msg: ClientToScheduler,
        model: Option<usize>,
        ext: Option<ExtRef>,
    ) {
        let connected = self.clients.get(&client).is_some_and(|c| c.connected);
        let sh = self.sh();
        let link = sh.links.entry(client).or_default();
        match expect_of(&msg) {
            Some(expect) => link.waiters.push_back(Waiter {
                expect,
                msg: Some(msg.clone()),
                model,
                ext,
            }),
            None if !connected => {
                link.queued.push(msg);
                return;
            }
            None => {}
        }
        if !connected {
            return;
        }
        if let Some(ext) = ext {
            sh.ext_queue.entry(client).or_default().push_back(ext);
        }
        self.client_send(client, msg, model);
    }

    /// A message from the scheduler reaches A or B: a reply answers the oldest request still
    /// waiting (the scheduler answers one client's requests in order, so that request must
    /// wait for this kind of reply: the Python client would give it to a later one).
    pub(super) fn shared_route(
        &mut self,
        client: ClientId,
        msg: &SchedulerToClient,
    ) -> Result<(), FailureKind> {
        let accepts: fn(Expect) -> bool = match msg {
            SchedulerToClient::Submitted { .. } => |e| e == Expect::Submitted,
            SchedulerToClient::Extended { .. } => |e| e == Expect::Extended,
            SchedulerToClient::Rejected { .. } => {
                |e| matches!(e, Expect::Submitted | Expect::Extended)
            }
            SchedulerToClient::Located { .. } => |e| e == Expect::Located,
            SchedulerToClient::Done { .. } => |e| e == Expect::Done,
            SchedulerToClient::Dataset { .. } => |e| e == Expect::Dataset,
            SchedulerToClient::WhoHas { .. } => |e| e == Expect::WhoHas,
            // Errors answer requests: here, getting or unpublishing a dataset a restarted
            // scheduler no longer has (checked when it was sent).
            SchedulerToClient::Error { .. } => |e| matches!(e, Expect::Dataset | Expect::Done),
            _ => return Ok(()), // not a reply: reports, progress
        };
        let link = self.sh().links.entry(client).or_default();
        match link.waiters.front() {
            Some(w) if accepts(w.expect) => {
                link.waiters.pop_front();
                Ok(())
            }
            // B's `LocateOutputs` after a failed fetch does not wait for its answer.
            _ if matches!(msg, SchedulerToClient::Located { .. }) => Ok(()),
            front => Self::violation(format!(
                "{client:?} got {msg:?} while its oldest request waits for {:?}",
                front.map(|w| w.expect)
            )),
        }
    }

    /// A or B is connected to the restarted scheduler: it claims its session graph, sends
    /// again every request not answered, then what queued; B holds its keys again.
    pub(crate) fn shared_reconnected(&mut self, client: ClientId) {
        let sh = self.sh();
        let graph = if client == OWNER {
            sh.owner_graph
        } else {
            sh.user_graph
        };
        let link = sh.links.entry(client).or_default();
        // A claim of the last connection got no answer: only this connection's counts.
        link.waiters.retain(|w| w.expect != Expect::Located);
        let mut msgs: Vec<(ClientToScheduler, Option<usize>)> = Vec::new();
        let mut exts = VecDeque::new();
        for w in &mut link.waiters {
            let Some(msg) = &mut w.msg else {
                continue;
            };
            if let ClientToScheduler::Extend { resent, .. } = msg {
                *resent = true;
            }
            exts.extend(w.ext);
            msgs.push((msg.clone(), w.model));
        }
        let resent = msgs.len() as u32;
        if let Some(graph) = graph {
            link.waiters.push_front(Waiter {
                expect: Expect::Located,
                msg: None,
                model: None,
                ext: None,
            });
            msgs.insert(0, (ClientToScheduler::LocateOutputs { graph }, None));
        }
        msgs.extend(link.queued.drain(..).map(|m| (m, None)));
        // Only these extensions are on their way now (those sent to the dead one are lost).
        sh.ext_queue.insert(client, exts);
        if graph.is_some() {
            self.crash_counts.session_claims += 1;
        }
        self.crash_counts.requests_resent += resent;
        for (msg, model) in msgs {
            self.client_send(client, msg, model);
        }
        if client == USER {
            self.hold_again();
        }
    }

    /// B holds again every key of another session it holds (checked or not).
    fn hold_again(&mut self) {
        let mut by_graph: BTreeMap<GraphId, Vec<TaskRef>> = BTreeMap::new();
        for (&t, item) in &self.sh().items {
            if item.held {
                by_graph.entry(t.graph).or_default().push(t);
            }
        }
        for (graph, tasks) in by_graph {
            let keys: Vec<String> = tasks
                .iter()
                .map(|&t| self.model_task(t).expect("a key of A's model").key.clone())
                .collect();
            self.crash_counts.keys_held_again += keys.len() as u32;
            self.shared_send(USER, ClientToScheduler::Hold { graph, keys });
        }
    }

    /// The scheduler's turn handling a message of A or B was written to its journal: an
    /// extension it journaled is one a restarted scheduler has.
    pub(crate) fn shared_turn_written(&mut self, records: &[Record]) {
        let sh = self.sh();
        if let Some(InStep::Extend(ext, _)) = sh.in_step {
            if records.iter().any(|r| matches!(r, Record::Extended { .. })) {
                sh.journaled.insert(ext);
            }
        }
    }

    /// A new scheduler resumed from the journal: what the oracle expects of it, reset to what
    /// the journal keeps (session graphs opened and extended, results in memory) and nothing
    /// of what it does not journal.
    pub(crate) fn shared_restarted(&mut self) {
        let kept_done: BTreeSet<TaskRef> = self
            .sh()
            .kept
            .clone()
            .into_iter()
            .filter(|&t| self.finishes(t) > 0)
            .collect();
        let outputs = self.journaled_outputs();
        let sh = self.sh();
        sh.in_step = None;
        // `Hold`s are not journaled: it holds nothing for anyone (B holds its keys again when
        // it reconnects).
        sh.holds.clear();
        // What was asked of the scheduler that died (holds, claims, extensions) means
        // nothing to this one: every report from now on answers a new ask or a new result.
        sh.asked.clear();
        // Task failures are not journaled: a task that failed runs again and may fail (and be
        // reported failed) again.
        sh.failed_reported.clear();
        // `Keep`s are not journaled: a kept key that had not finished no longer has to.
        sh.kept = kept_done;
        // Datasets are not journaled: the dataset is gone (getting or unpublishing it now
        // gets an error).
        sh.published = None;
        // `ReleaseKeys` is not journaled: every output an extension in the journal named is
        // an output again, reported to its client once that client claims its graph.
        sh.outputs = outputs;
    }

    /// Every (client, output) the extensions A and B had handled named, for the clients still
    /// there.
    fn journaled_outputs(&self) -> BTreeSet<(ClientId, TaskRef)> {
        let sh = self.shared.as_ref().expect("shared clients");
        let mut out = BTreeSet::new();
        for &ext in &sh.committed {
            let (client, graph, model, outputs): (_, _, _, Vec<usize>) = match ext {
                ExtRef::Owner(i) => (
                    OWNER,
                    sh.owner_graph,
                    sh.owner_model,
                    sh.owner_exts[i].1.clone(),
                ),
                ExtRef::User(j) => {
                    let p = &sh.plans[j];
                    let base = p.base as usize;
                    let outputs = p.outputs.iter().map(|&o| base + o).collect();
                    (USER, sh.user_graph, sh.user_model, outputs)
                }
            };
            let Some(graph) = graph.filter(|_| !sh.left.contains(&client)) else {
                continue;
            };
            let m = &self.models[model];
            for o in outputs {
                let index = m.spec_pos[o];
                out.insert((client, TaskRef { graph, index }));
            }
        }
        out
    }
}
