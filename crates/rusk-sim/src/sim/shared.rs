//! Keys shared between clients (`rusk_core::scheduler::shared`), played by two session
//! clients while the cluster's faults go on:
//!
//! - the *owner* (A) opens a session graph, extends it with small sum/concat sub-graphs, and
//!   tells the user (out of band, as a pickled future would) about each extension's keys once
//!   it is in; it sometimes releases some of its outputs (`ReleaseKeys`), keeps some keys
//!   (`Keep`, fire_and_forget), publishes a dataset of some keys, and leaves early or at the
//!   end;
//! - the *user* (B) opens its own session graph, holds some of A's keys (`Hold`), extends its
//!   graph with adopt tasks of A's keys and dependents of them (sums, concats), gets the
//!   dataset, holds its keys and unpublishes it; it fetches every value reported to it from
//!   the holder and compares it with the model (asking again, by holding again or with
//!   `LocateOutputs`, when a fetch fails), sometimes lets go of what it checked, and leaves
//!   when everything is checked.
//!
//! Checked synchronously at the scheduler, on every message it sends these clients
//! (`on_emit`): a report (`OutputsReady`) goes only to a client holding the key or owning it
//! as an output, exactly once per time the client asked (a hold, an extension naming it, a
//! `LocateOutputs`) or the key finished again (a result accepted, or its one failure);
//! a `Ready` names the key with the model's size, a `Failed` carries an error the model
//! allows (a poison task upstream, across adopt edges, or an adopted key released by its
//! owner *when nothing pinned it*); a hold or adopt of a key fails with "is not there" only
//! if its graph may be gone (its owner left and no hold or dataset pins it); publishing and
//! getting the dataset never fail. The oracle's `on_execute` checks that every adopt task
//! runs on its source's true value. At the end every kept key must have finished, and once
//! both clients have left the usual leak check finds no graph and no stored result.
//!
//! With scheduler crashes, both reconnect as the Python client does (`reconnect.rs`): claim
//! their session graph, send again the requests not answered (an `Extend` the dead scheduler
//! had journaled is acknowledged with no task added, one it had not is added again), then
//! what queued; B holds its keys again. The oracle's model is reset at the restart to what
//! the journal keeps: no holds, keeps, dataset or failures, every journaled output an output
//! again; a result adopted from a worker counts as one that finished.
use super::net::Requester;
use super::{ClientState, Ev, Sim};
use crate::error::{FailureKind, Shown};
use crate::trace::What;
use crate::workload::{AdoptModel, Expected, GraphBuilder, GraphModel, ModelTask};
use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::Rng;
use rusk_proto::graph::GraphSpec;
use rusk_proto::msg::{
    ClientToScheduler, DatasetRequest, OutputResult, OutputState, SchedulerToClient,
};
use rusk_proto::{ClientId, GraphId, TaskRef};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::time::Duration;

mod oracle;
mod reconnect;

/// Client A, whose session graph's keys are shared, and client B, which uses them.
pub(crate) const OWNER: ClientId = ClientId(4);
pub(crate) const USER: ClientId = ClientId(5);
const DATASET: &str = "shared-keys";
/// Back-off before asking again for a value whose fetch failed, in milliseconds.
const RETRY_MS_MIN: u64 = 50;
const RETRY_MS_MAX: u64 = 300;

#[derive(Debug)]
pub(crate) enum SharedEv {
    Open {
        client: ClientId,
    },
    /// A sends its extension `ext`.
    Extend {
        ext: usize,
    },
    ReleaseKeys,
    Keep,
    Publish,
    /// A asks for more copies of some keys (`Client.replicate`), then where they are.
    Replicate,
    /// A leaves (when B is done if `after_user`).
    OwnerLeaves,
    /// B hears of the keys of A's extension `ext`.
    Learn {
        ext: usize,
    },
    Hold {
        task: TaskRef,
    },
    /// B sends its adopt extension `plan`.
    Adopt {
        plan: usize,
    },
    GetDataset,
    Unpublish,
    /// B asks again for the value of `task` after a fetch failed.
    Retry {
        task: TaskRef,
    },
    /// A asks where these keys are.
    WhoHas {
        graph: GraphId,
        keys: Vec<String>,
    },
}

/// What the passing runs did with shared keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedCounts {
    pub extensions: u32,
    pub adopt_tasks: u32,
    pub holds: u32,
    pub reports: u32,
    pub values_checked: u32,
    pub errors_checked: u32,
    pub fetch_retries: u32,
    pub releases: u32,
    pub keeps: u32,
    pub datasets: u32,
    pub unholds: u32,
    /// A left while some of its keys were held or published (its graph stayed, ownerless).
    pub owner_left_pinned: u32,
    /// Holds and adopt extensions refused because A's graph was (allowed to be) gone.
    pub refused_gone: u32,
    /// `Replicate` requests, and keys `WhoHas` found on more than one worker.
    pub replicates: u32,
    pub keys_with_copies: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ExtRef {
    Owner(usize),
    User(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlanState {
    Planned,
    Sent,
    Extended,
    Rejected,
}

/// One adopt extension of B: tasks with local indices (committed after B's earlier ones).
struct UserExt {
    builder: GraphBuilder,
    outputs: Vec<usize>,
    /// The graphs its adopt tasks take keys from.
    sources: Vec<GraphId>,
    base: u32,
    state: PlanState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemState {
    Waiting,
    Fetching,
    Checked,
}

/// A value B waits for: a key it holds, or an output of its own graph.
struct Item {
    held: bool,
    state: ItemState,
}

/// What the client message the scheduler is handling expects.
enum InStep {
    /// An extension; `true`: one a scheduler that died had journaled (sent again, it is
    /// acknowledged with no task added).
    Extend(ExtRef, bool),
    Hold {
        client: ClientId,
        tasks: Vec<TaskRef>,
        failed: Vec<TaskRef>,
    },
    Publish(Vec<TaskRef>),
    Unpublish,
    Get,
    WhoHas,
}

pub(crate) struct SharedState {
    owner_model: usize,
    user_model: usize,
    owner_graph: Option<GraphId>,
    user_graph: Option<GraphId>,
    /// Every task A will submit, and its extensions (ranges of model indexes, outputs).
    owner_builder: GraphBuilder,
    owner_exts: Vec<(Range<usize>, Vec<usize>)>,
    owner_sent: usize,
    /// A's planned actions not yet carried out (an extension or a publish: not yet answered).
    owner_pending: u32,
    owner_stays: bool,
    learned: Vec<usize>,
    plans: Vec<UserExt>,
    /// B's timed actions not yet carried out.
    user_pending: u32,
    /// B has closed its connection.
    user_leaving: bool,
    items: BTreeMap<TaskRef, Item>,
    /// The extensions on their way to the scheduler, per client, in order.
    ext_queue: BTreeMap<ClientId, VecDeque<ExtRef>>,
    /// Each client's side of its scheduler link, kept across reconnections.
    links: BTreeMap<ClientId, reconnect::Link>,
    /// Extensions in their graph's model (handled by a scheduler), and those of them a
    /// scheduler journaled (a restarted one has them).
    committed: BTreeSet<ExtRef>,
    journaled: BTreeSet<ExtRef>,
    // === the oracle's view, kept in step with the scheduler ===
    in_step: Option<InStep>,
    asked: BTreeSet<(ClientId, TaskRef)>,
    last_done: BTreeMap<(ClientId, TaskRef), u32>,
    failed_reported: BTreeSet<(ClientId, TaskRef)>,
    holds: BTreeSet<(ClientId, TaskRef)>,
    outputs: BTreeSet<(ClientId, TaskRef)>,
    left: BTreeSet<ClientId>,
    kept: BTreeSet<TaskRef>,
    published: Option<Vec<TaskRef>>,
    dataset_data: Bytes,
    pub(crate) counts: SharedCounts,
}

fn empty_model() -> GraphModel {
    GraphModel {
        tasks: Vec::new(),
        spec_pos: Vec::new(),
        model_of: Vec::new(),
        outputs: Vec::new(),
        spec: GraphSpec {
            tasks: Vec::new(),
            outputs: Vec::new(),
        },
        detach: false,
    }
}

fn numeric(e: &Expected) -> bool {
    matches!(e, Expected::Value(v) if std::str::from_utf8(v).is_ok_and(|s| s.parse::<i128>().is_ok()))
}

fn value_len(e: &Expected) -> usize {
    match e {
        Expected::Value(v) => v.len(),
        Expected::Failed => 0,
    }
}

/// One extension of A: 2 to 5 sums and concats, some on earlier tasks (of any extension).
fn plan_owner_ext(b: &mut GraphBuilder, rng: &mut impl Rng) -> (Range<usize>, Vec<usize>) {
    const WINDOW: usize = 8;
    let start = b.len();
    for _ in 0..rng.gen_range(2..=5) {
        let m = b.len();
        let lo = m.saturating_sub(WINDOW);
        let mut deps: Vec<usize> = Vec::new();
        let sum = rng.gen_bool(0.6);
        for _ in 0..rng.gen_range(0..=2.min(m)) {
            let d = rng.gen_range(lo..m);
            let ok = !sum || numeric(&b.tasks()[d].expected);
            if ok && !deps.contains(&d) {
                deps.push(d);
            }
        }
        if sum {
            b.sum(&[rng.gen_range(-20..=100)], &deps);
        } else {
            let size: usize = deps
                .iter()
                .map(|&d| value_len(&b.tasks()[d].expected))
                .sum();
            if size > 48 {
                deps.clear();
            }
            let s: String = (0..rng.gen_range(1..=3))
                .map(|_| rng.gen_range(b'a'..=b'z') as char)
                .collect();
            b.concat(&[s.as_str()], &deps);
        }
    }
    let end = b.len();
    let mut outputs: Vec<usize> = (start..end)
        .filter(|&m| !b.tasks()[m + 1..].iter().any(|t| t.deps.contains(&m)))
        .collect();
    let extra = rng.gen_range(start..end);
    if !outputs.contains(&extra) {
        outputs.push(extra);
    }
    (start..end, outputs)
}

impl Sim {
    /// Join clients A and B and plan A's script (B reacts to what A tells it).
    pub(crate) fn plan_shared(&mut self) -> Result<(), FailureKind> {
        let owner_model = self.add_model(empty_model());
        let user_model = self.add_model(empty_model());
        let mut owner_builder = GraphBuilder::new("sa");
        let mut owner_exts = Vec::new();
        for _ in 0..self.rng.gen_range(2..=5) {
            owner_exts.push(plan_owner_ext(&mut owner_builder, &mut self.rng));
        }
        let safety_ms = self.config.safety.as_millis() as u64;
        let ms = |rng: &mut rand_chacha::ChaCha8Rng, lo: u64, hi: u64| {
            Duration::from_millis(rng.gen_range(lo..=hi.max(lo)))
        };
        for client in [OWNER, USER] {
            self.clients.insert(client, ClientState::new());
            self.sched_step(rusk_core::scheduler::Event::ClientJoined { client })?;
            let at = ms(&mut self.rng, 0, 200);
            self.push(at, Ev::Shared(SharedEv::Open { client }));
        }
        let mut times: Vec<Duration> = (0..owner_exts.len())
            .map(|_| ms(&mut self.rng, 50, safety_ms * 6 / 10))
            .collect();
        times.sort();
        for (ext, &at) in times.iter().enumerate() {
            self.push(at, Ev::Shared(SharedEv::Extend { ext }));
        }
        let mut pending = owner_exts.len() as u32;
        let first = times[0].as_millis() as u64;
        let last = times[times.len() - 1].as_millis() as u64;
        for (p, ev) in [
            (0.5, SharedEv::ReleaseKeys),
            (0.5, SharedEv::Keep),
            (0.5, SharedEv::Publish),
            (0.6, SharedEv::Replicate),
            (0.3, SharedEv::Replicate),
        ] {
            if self.rng.gen_bool(p) {
                let at = ms(&mut self.rng, first, safety_ms);
                self.push(at, Ev::Shared(ev));
                pending += 1;
            }
        }
        let owner_stays = self.rng.gen_bool(0.4);
        if !owner_stays {
            let at = ms(&mut self.rng, last, safety_ms * 11 / 10);
            self.push(at, Ev::Shared(SharedEv::OwnerLeaves));
        }
        self.shared = Some(Box::new(SharedState {
            owner_model,
            user_model,
            owner_graph: None,
            user_graph: None,
            owner_builder,
            owner_exts,
            owner_sent: 0,
            owner_pending: pending,
            owner_stays,
            learned: Vec::new(),
            plans: Vec::new(),
            user_pending: 0,
            user_leaving: false,
            items: BTreeMap::new(),
            ext_queue: BTreeMap::new(),
            links: BTreeMap::new(),
            committed: BTreeSet::new(),
            journaled: BTreeSet::new(),
            in_step: None,
            asked: BTreeSet::new(),
            last_done: BTreeMap::new(),
            failed_reported: BTreeSet::new(),
            holds: BTreeSet::new(),
            outputs: BTreeSet::new(),
            left: BTreeSet::new(),
            kept: BTreeSet::new(),
            published: None,
            dataset_data: Bytes::from(format!("dataset of seed {}", self.seed)),
            counts: SharedCounts::default(),
        }));
        Ok(())
    }

    fn sh(&mut self) -> &mut SharedState {
        self.shared.as_mut().expect("shared clients planned")
    }

    /// A session request this turn handled still waits for its answer.
    pub(crate) fn shared_request_unanswered(&self) -> bool {
        self.shared.as_ref().is_some_and(|sh| sh.in_step.is_some())
    }

    pub(crate) fn is_shared_client(&self, client: ClientId) -> bool {
        self.shared.is_some() && (client == OWNER || client == USER)
    }

    fn client_gone(&self, client: ClientId) -> bool {
        self.clients.get(&client).is_none_or(|c| c.left)
    }

    /// The task `key` of `graph`, as its model has it.
    fn resolve(&self, graph: GraphId, key: &str) -> Option<TaskRef> {
        let m = self.oracle.model_of(graph)?;
        let model = &self.models[m];
        let i = model.tasks.iter().position(|t| t.key == key)?;
        Some(TaskRef {
            graph,
            index: model.spec_pos[i],
        })
    }

    fn model_task(&self, t: TaskRef) -> Option<&ModelTask> {
        let m = self.oracle.model_of(t.graph)?;
        self.models[m].task(t.index)
    }

    // === the clients' actions ===

    pub(crate) fn on_shared(&mut self, ev: SharedEv) -> Result<(), FailureKind> {
        match ev {
            SharedEv::Open { client } => {
                let model = if client == OWNER {
                    self.sh().owner_model
                } else {
                    self.sh().user_model
                };
                self.note(What::Client(client, "open", None));
                self.shared_send_as(client, ClientToScheduler::Open, Some(model), None);
            }
            SharedEv::Extend { ext } => self.owner_extend(ext),
            SharedEv::ReleaseKeys | SharedEv::Keep | SharedEv::Publish | SharedEv::Replicate => {
                self.owner_let_go(ev);
            }
            SharedEv::OwnerLeaves => {
                if !self.client_gone(OWNER) {
                    self.note(What::Client(OWNER, "leaves", None));
                    self.client_leave(OWNER);
                }
            }
            SharedEv::Learn { ext } => self.user_learn(ext),
            SharedEv::Hold { task } => {
                self.sh().user_pending -= 1;
                self.user_hold(vec![task]);
            }
            SharedEv::Adopt { plan } => self.user_adopt(plan),
            SharedEv::GetDataset => {
                self.sh().user_pending -= 1;
                if !self.client_gone(USER) {
                    let name = DATASET.to_string();
                    let msg = ClientToScheduler::Dataset(DatasetRequest::Get { name });
                    self.shared_send(USER, msg);
                }
            }
            SharedEv::Unpublish => {
                self.sh().user_pending -= 1;
                let name = DATASET.to_string();
                let msg = ClientToScheduler::Dataset(DatasetRequest::Unpublish { name });
                self.shared_send(USER, msg);
            }
            SharedEv::Retry { task } => {
                self.sh().user_pending -= 1;
                self.user_retry(task);
            }
            SharedEv::WhoHas { graph, keys } => {
                if !self.client_gone(OWNER) {
                    let msg = ClientToScheduler::WhoHas { graph, keys };
                    self.shared_send(OWNER, msg);
                }
            }
        }
        self.maybe_user_done();
        Ok(())
    }

    /// A sends its extensions up to `ext`, in order (each may build on the earlier ones).
    fn owner_extend(&mut self, ext: usize) {
        if self.client_gone(OWNER) {
            return;
        }
        let Some(graph) = self.sh().owner_graph else {
            // The graph is not open yet: try again shortly.
            let at = self.now + Duration::from_millis(20);
            self.push(at, Ev::Shared(SharedEv::Extend { ext }));
            return;
        };
        while self.sh().owner_sent <= ext {
            let next = self.sh().owner_sent;
            self.owner_send_ext(graph, next);
        }
    }

    fn owner_send_ext(&mut self, graph: GraphId, ext: usize) {
        let sh = self.sh();
        let (range, outputs) = sh.owner_exts[ext].clone();
        sh.owner_sent = ext + 1;
        let b = &self.sh().owner_builder;
        let mut tasks: Vec<_> = range.clone().map(|m| b.task_spec(m)).collect();
        let outputs = outputs.iter().map(|&o| b.tasks()[o].key.clone()).collect();
        tasks.shuffle(&mut self.rng);
        self.note(What::Client(OWNER, "extend", Some(graph)));
        let msg = ClientToScheduler::Extend {
            graph,
            tasks,
            outputs,
            resent: false,
        };
        self.shared_send_as(OWNER, msg, None, Some(ExtRef::Owner(ext)));
    }

    /// A's release, keep or publish, of some keys of the extensions it sent.
    fn owner_let_go(&mut self, ev: SharedEv) {
        let sh = self.sh();
        sh.owner_pending -= 1;
        let sent: Vec<usize> = sh.owner_exts[..sh.owner_sent]
            .iter()
            .flat_map(|(r, _)| r.clone())
            .collect();
        let outputs: Vec<usize> = sh.owner_exts[..sh.owner_sent]
            .iter()
            .flat_map(|(_, o)| o.iter().copied())
            .collect();
        let Some(graph) = sh.owner_graph else {
            return;
        };
        if sent.is_empty() || self.client_gone(OWNER) {
            return;
        }
        let from = if matches!(ev, SharedEv::ReleaseKeys) {
            outputs
        } else {
            sent
        };
        let k = self.rng.gen_range(1..=3.min(from.len()));
        let chosen: Vec<usize> = from.choose_multiple(&mut self.rng, k).copied().collect();
        let keys: Vec<String> = chosen
            .iter()
            .map(|&m| self.sh().owner_builder.tasks()[m].key.clone())
            .collect();
        let msg = match ev {
            SharedEv::Replicate => {
                self.sh().counts.replicates += 1;
                let n = self.rng.gen_bool(0.5).then_some(2);
                let ask = ClientToScheduler::Replicate {
                    graph,
                    keys: keys.clone(),
                    n,
                    workers: None,
                };
                self.note(What::Client(OWNER, "replicates keys", Some(graph)));
                self.shared_send(OWNER, ask);
                // Where they are: now, and once the copies had time to arrive.
                for after in [0, self.rng.gen_range(20..=500)] {
                    let at = self.now + Duration::from_millis(after);
                    let keys = keys.clone();
                    self.push(at, Ev::Shared(SharedEv::WhoHas { graph, keys }));
                }
                return;
            }
            SharedEv::ReleaseKeys => {
                self.sh().counts.releases += 1;
                ClientToScheduler::ReleaseKeys { graph, keys }
            }
            SharedEv::Keep => {
                self.sh().counts.keeps += 1;
                ClientToScheduler::Keep { graph, keys }
            }
            _ => {
                self.sh().owner_pending += 1; // until the scheduler answers
                ClientToScheduler::Dataset(DatasetRequest::Publish {
                    name: DATASET.into(),
                    data: self.sh().dataset_data.clone(),
                    refs: keys.into_iter().map(|k| (graph, k)).collect(),
                    replace: false,
                })
            }
        };
        self.note(What::Client(OWNER, "lets go of keys", Some(graph)));
        self.shared_send(OWNER, msg);
    }

    /// B hears of the keys of A's extension `ext`: it holds some, and adopts some.
    fn user_learn(&mut self, ext: usize) {
        if self.sh().user_graph.is_none() && !self.client_gone(USER) {
            let at = self.now + Duration::from_millis(20);
            self.push(at, Ev::Shared(SharedEv::Learn { ext }));
            return;
        }
        self.sh().user_pending -= 1;
        if self.client_gone(USER) {
            return;
        }
        let graph = self.sh().owner_graph.expect("extended");
        let owner_model = self.sh().owner_model;
        let source = |s: &Sim, m: usize| {
            let t = &s.models[owner_model].tasks[m];
            let task = TaskRef {
                graph,
                index: s.models[owner_model].spec_pos[m],
            };
            (task, t.key.clone(), t.expected.clone())
        };
        let range = self.sh().owner_exts[ext].0.clone();
        let mine: Vec<usize> = range.collect();
        self.sh().learned.push(ext);
        if self.rng.gen_bool(0.7) {
            let k = self.rng.gen_range(1..=2.min(mine.len()));
            for &m in mine
                .choose_multiple(&mut self.rng, k)
                .copied()
                .collect::<Vec<_>>()
                .iter()
            {
                let (task, _, _) = source(self, m);
                let at = self.now + Duration::from_millis(self.rng.gen_range(0..=1500));
                self.sh().user_pending += 1;
                self.push(at, Ev::Shared(SharedEv::Hold { task }));
            }
        }
        if self.rng.gen_bool(0.8) {
            let k = self.rng.gen_range(1..=2.min(mine.len()));
            let mut chosen: Vec<usize> = mine.choose_multiple(&mut self.rng, k).copied().collect();
            let learned = self.sh().learned.clone();
            if learned.len() > 1 && self.rng.gen_bool(0.3) {
                let other = learned[self.rng.gen_range(0..learned.len() - 1)];
                let r = self.sh().owner_exts[other].0.clone();
                chosen.push(self.rng.gen_range(r));
            }
            let srcs: Vec<_> = chosen.iter().map(|&m| source(self, m)).collect();
            let plan = self.plan_user_ext(srcs);
            let at = self.now + Duration::from_millis(self.rng.gen_range(0..=1500));
            self.sh().user_pending += 1;
            self.push(at, Ev::Shared(SharedEv::Adopt { plan }));
        }
    }

    /// An adopt extension of B: adopt tasks of `srcs`, a sum over the numeric ones (and maybe
    /// a sum over that), a concat of one; outputs among all of them.
    fn plan_user_ext(&mut self, srcs: Vec<(TaskRef, String, Expected)>) -> usize {
        let j = self.sh().plans.len();
        let mut b = GraphBuilder::new(&format!("sb{j}"));
        let rng = &mut self.rng;
        let mut xs = Vec::new();
        let mut nums = Vec::new();
        for (task, key, expected) in &srcs {
            let num = numeric(expected);
            let x = b.adopt(
                AdoptModel {
                    graph: task.graph,
                    index: task.index,
                    key: key.clone(),
                },
                expected.clone(),
            );
            xs.push(x);
            if num && !nums.contains(&x) {
                nums.push(x);
            }
        }
        let mut outputs = Vec::new();
        if !nums.is_empty() {
            let y = b.sum(&[rng.gen_range(-5..=50)], &nums);
            outputs.push(y);
            if rng.gen_bool(0.3) {
                outputs.push(b.sum(&[1], &[y]));
            }
        }
        if nums.is_empty() || rng.gen_bool(0.5) {
            let x = xs[rng.gen_range(0..xs.len())];
            outputs.push(b.concat(&["b"], &[x]));
        }
        for &x in &xs {
            if rng.gen_bool(0.4) {
                outputs.push(x);
            }
        }
        let sources = srcs.iter().map(|(t, _, _)| t.graph).collect();
        self.sh().counts.adopt_tasks += xs.len() as u32;
        self.sh().plans.push(UserExt {
            builder: b,
            outputs,
            sources,
            base: 0,
            state: PlanState::Planned,
        });
        j
    }

    fn user_adopt(&mut self, plan: usize) {
        self.sh().user_pending -= 1;
        if self.client_gone(USER) {
            return;
        }
        let graph = self.sh().user_graph.expect("opened before learning");
        let sh = self.sh();
        sh.plans[plan].state = PlanState::Sent;
        let p = &sh.plans[plan];
        let mut tasks: Vec<_> = (0..p.builder.len())
            .map(|m| p.builder.task_spec(m))
            .collect();
        let outputs = p
            .outputs
            .iter()
            .map(|&o| p.builder.tasks()[o].key.clone())
            .collect();
        tasks.shuffle(&mut self.rng);
        self.note(What::Client(USER, "extend with adopt tasks", Some(graph)));
        let msg = ClientToScheduler::Extend {
            graph,
            tasks,
            outputs,
            resent: false,
        };
        self.shared_send_as(USER, msg, None, Some(ExtRef::User(plan)));
    }

    /// B holds these keys of A's graph (again, for those it held already).
    fn user_hold(&mut self, tasks: Vec<TaskRef>) {
        if self.client_gone(USER) || tasks.is_empty() {
            return;
        }
        let graph = tasks[0].graph;
        let mut keys = Vec::new();
        for &t in &tasks {
            let key = self.model_task(t).expect("a key of A's model").key.clone();
            keys.push(key);
            let sh = self.sh();
            sh.counts.holds += 1;
            let item = sh.items.entry(t).or_insert(Item {
                held: true,
                state: ItemState::Waiting,
            });
            item.held = true;
            if item.state == ItemState::Checked {
                item.state = ItemState::Waiting;
            }
        }
        self.note(What::Client(USER, "hold", Some(graph)));
        self.shared_send(USER, ClientToScheduler::Hold { graph, keys });
    }

    fn user_retry(&mut self, task: TaskRef) {
        if self.client_gone(USER) {
            return;
        }
        let Some(item) = self.sh().items.get(&task) else {
            return;
        };
        if item.state == ItemState::Checked {
            return;
        }
        let held = item.held;
        self.sh().counts.fetch_retries += 1;
        if held {
            self.user_hold(vec![task]);
        } else {
            self.note(What::Client(USER, "locate outputs", Some(task.graph)));
            let msg = ClientToScheduler::LocateOutputs { graph: task.graph };
            self.shared_send(USER, msg);
        }
    }

    /// A message from the scheduler reaches A or B (after `on_emit` checked it).
    pub(crate) fn shared_to_client(
        &mut self,
        client: ClientId,
        msg: SchedulerToClient,
    ) -> Result<(), FailureKind> {
        // A reply goes to the request it answers, as the Python client routes it.
        self.shared_route(client, &msg)?;
        match msg {
            SchedulerToClient::Submitted { graph, .. } => {
                let sh = self.sh();
                if client == OWNER {
                    sh.owner_graph = Some(graph);
                } else {
                    sh.user_graph = Some(graph);
                }
            }
            SchedulerToClient::OutputsReady { graph, outputs } if client == USER => {
                for o in outputs {
                    self.user_report(graph, o);
                }
            }
            SchedulerToClient::Dataset { .. } if client == USER => {
                // `on_emit` checked the data; hold its keys, as `get_dataset` does.
                let refs = self.sh().published.clone().unwrap_or_default();
                self.user_hold(refs);
                let at = self.now + Duration::from_millis(self.rng.gen_range(0..=1000));
                self.sh().user_pending += 1;
                self.push(at, Ev::Shared(SharedEv::Unpublish));
            }
            _ => {}
        }
        self.maybe_user_done();
        Ok(())
    }

    fn user_report(&mut self, graph: GraphId, o: OutputState) {
        let Some(task) = self.resolve(graph, &o.key) else {
            return;
        };
        let Some(item) = self.sh().items.get_mut(&task) else {
            return;
        };
        if item.state != ItemState::Waiting {
            return;
        }
        match o.result {
            OutputResult::Ready { holder, .. } => {
                item.state = ItemState::Fetching;
                let requester = Requester::Shared { client: USER, task };
                self.start_fetch(requester, holder.into(), vec![task]);
            }
            OutputResult::Failed { .. } => {
                // Its error was checked when the scheduler sent it.
                item.state = ItemState::Checked;
                self.sh().counts.errors_checked += 1;
                self.after_check(task);
            }
        }
    }

    /// A fetch of `task`'s value for B ended: compare it with the model, or ask again.
    pub(crate) fn shared_fetch_done(
        &mut self,
        task: TaskRef,
        data: Option<Bytes>,
    ) -> Result<(), FailureKind> {
        let Some(item) = self.sh().items.get_mut(&task) else {
            return Ok(());
        };
        if item.state != ItemState::Fetching {
            return Ok(());
        }
        let Some(data) = data else {
            item.state = ItemState::Waiting;
            let at =
                self.now + Duration::from_millis(self.rng.gen_range(RETRY_MS_MIN..=RETRY_MS_MAX));
            self.sh().user_pending += 1;
            self.push(at, Ev::Shared(SharedEv::Retry { task }));
            return Ok(());
        };
        let t = self.model_task(task).expect("B fetches modelled keys");
        if t.expected != Expected::Value(data.clone()) {
            let expected = match &t.expected {
                Expected::Value(v) => Shown(v).to_string(),
                Expected::Failed => "an error".into(),
            };
            return Err(FailureKind::WrongOutput {
                graph: task.graph,
                key: t.key.clone(),
                expected,
                got: Shown(&data).to_string(),
            });
        }
        let sh = self.sh();
        sh.items.get_mut(&task).expect("looked up").state = ItemState::Checked;
        sh.counts.values_checked += 1;
        self.after_check(task);
        self.maybe_user_done();
        Ok(())
    }

    /// B sometimes lets go of what it checked.
    fn after_check(&mut self, task: TaskRef) {
        if self.client_gone(USER) {
            return;
        }
        let held = self.sh().items[&task].held;
        let key = self.model_task(task).expect("modelled").key.clone();
        let graph = task.graph;
        if held && self.rng.gen_bool(0.5) {
            self.sh().counts.unholds += 1;
            self.sh().items.get_mut(&task).expect("exists").held = false;
            let msg = ClientToScheduler::Unhold {
                graph,
                keys: vec![key],
            };
            self.shared_send(USER, msg);
        } else if !held && self.rng.gen_bool(0.3) {
            let msg = ClientToScheduler::ReleaseKeys {
                graph,
                keys: vec![key],
            };
            self.shared_send(USER, msg);
        }
    }

    /// B leaves once A is done with its script, every adopt extension is answered, the
    /// dataset is unpublished and every value is checked; A then leaves if it stayed.
    fn maybe_user_done(&mut self) {
        let Some(sh) = self.shared.as_ref() else {
            return;
        };
        let owner_stays = sh.owner_stays;
        let owner_done = self.client_gone(OWNER) || sh.owner_pending == 0;
        let done = owner_done
            && sh.user_pending == 0
            && sh.published.is_none()
            && sh.plans.iter().all(|p| p.state != PlanState::Sent)
            && sh.items.values().all(|i| i.state == ItemState::Checked);
        if !done || sh.user_leaving {
            return;
        }
        self.sh().user_leaving = true;
        self.note(What::Client(USER, "all checked; leaves", None));
        self.client_leave(USER);
        if owner_stays {
            self.push(self.now, Ev::Shared(SharedEv::OwnerLeaves));
        }
    }

    /// Both clients have left and every kept key finished.
    pub(crate) fn shared_done(&self) -> bool {
        let Some(sh) = self.shared.as_ref() else {
            return true;
        };
        sh.left.contains(&OWNER)
            && sh.left.contains(&USER)
            && sh.kept.iter().all(|&t| self.kept_finished(t))
    }

    fn kept_finished(&self, t: TaskRef) -> bool {
        self.finishes(t) > 0 || !self.upstream_poisoned(t).is_empty()
    }

    pub(crate) fn shared_summary(&self) -> String {
        let Some(sh) = self.shared.as_ref() else {
            return String::new();
        };
        let unchecked: Vec<String> = sh
            .items
            .iter()
            .filter(|(_, i)| i.state != ItemState::Checked)
            .map(|(t, i)| format!("{t}:{:?}", i.state))
            .collect();
        let kept: Vec<String> = sh
            .kept
            .iter()
            .filter(|&&t| !self.kept_finished(t))
            .map(|t| t.to_string())
            .collect();
        format!(
            "shared keys: left {:?}, owner pending {}, user pending {}, published {:?}, plans \
             {:?}, unchecked [{}], kept unfinished [{}]; ",
            sh.left,
            sh.owner_pending,
            sh.user_pending,
            sh.published,
            sh.plans.iter().map(|p| p.state).collect::<Vec<_>>(),
            unchecked.join(" "),
            kept.join(" ")
        )
    }
}
