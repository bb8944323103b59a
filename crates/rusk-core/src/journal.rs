//! What the scheduler journals so that a new scheduler can resume its cluster's work, and the
//! replay of those records. Pure: the scheduler core emits [`Record`]s as
//! [`crate::scheduler::Command::Journal`]; the shell stores them (in an embedded store) and,
//! after a restart, reads them back and hands them to [`replay`], whose [`Resume`] starts the
//! new core ([`crate::scheduler::Scheduler::resume`]).
//!
//! What is journaled, and why it is enough:
//! - every graph as submitted (`Submitted`, `Opened` + `Extended`), until it is retired;
//! - each task that reached memory, with its holder's name and size (`InMemory`): so the new
//!   scheduler knows whose re-registration to wait for before it recomputes anything;
//! - graphs whose outputs were delivered (`Delivered`);
//! - each nanny with its slots as last reported (`Nanny`), until a restarted scheduler gives
//!   up waiting for it (`NannyForgotten`): so that a host lost while the scheduler was down is
//!   noticed and named, not silently missing;
//! - attempt- and graph-id floors (`Reserved`): ids issued before the crash are all below
//!   them, so none is ever issued twice, and a stale report from before the crash matches
//!   nothing.
//!
//! Results themselves are never journaled: they stay with the workers, which keep them while
//! the scheduler is away and name them when they register again (`WorkerInfo::held`).
use rusk_proto::graph::{GraphSpec, TaskSpec};
use rusk_proto::msg::{NannyInfo, SlotReport};
use rusk_proto::{GraphId, TaskRef};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// Attempt ids reserved per `Reserved` record: one journal write per this many assignments.
pub const ATTEMPTS_RESERVED_PER_RECORD: u64 = 1 << 20;

/// Graph ids reserved per `Reserved` record. A restarted scheduler starts above the floor, so a
/// graph whose submission died unjournaled with the scheduler never shares its id with a new
/// graph: results of its tasks that workers still hold can never be taken for another's.
pub const GRAPHS_RESERVED_PER_RECORD: u64 = 1 << 20;

/// A value journaled as its encoding (the wire's postcard), made once where the record is
/// made: for a graph's task specs far cheaper on the core's loop than the deep copy the record
/// would otherwise need (100,000 specs: about 30 ms), and stored by the writer as they are.
/// Decoded at replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Encoded<T> {
    bytes: bytes::Bytes,
    #[serde(skip)]
    of: PhantomData<fn() -> T>,
}

impl<T: Serialize + serde::de::DeserializeOwned> Encoded<T> {
    pub fn new(value: &T) -> Encoded<T> {
        Encoded {
            bytes: rusk_proto::encode(value)
                .expect("journaled values serialise")
                .into(),
            of: PhantomData,
        }
    }

    pub fn decode(&self) -> Result<T, String> {
        rusk_proto::decode(&self.bytes).map_err(|e| e.to_string())
    }
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// Attempt ids below `attempts`, and graph ids below `graphs`, may have been issued.
    Reserved { attempts: u64, graphs: u64 },
    /// A graph submitted whole (`Submit`).
    Submitted {
        graph: GraphId,
        detach: bool,
        spec: Encoded<GraphSpec>,
    },
    /// A session graph opened (`Open`); it grows by `Extended`.
    Opened { graph: GraphId },
    Extended {
        graph: GraphId,
        tasks: Encoded<Vec<TaskSpec>>,
        outputs: Vec<String>,
    },
    /// The graph is gone (released, or its client left without detaching).
    Retired { graph: GraphId },
    /// These results (task, size) reached memory on the worker named `holder`.
    InMemory {
        holder: Arc<str>,
        results: Vec<(TaskRef, u64)>,
    },
    /// The graph's `GraphFinished` went to its client.
    Delivered { graph: GraphId },
    /// The client released these keys of its session graph (futures dropped): a restarted
    /// scheduler does not keep them for it (unless a later extension named them again).
    ReleasedKeys { graph: GraphId, keys: Vec<String> },
    /// The task failed for good (no retries left, poison, unrunnable): a restarted scheduler
    /// fails it again, with the same error, instead of running it again. Its dependents'
    /// failures follow from it.
    Failed {
        task: TaskRef,
        message: String,
        detail: Option<bytes::Bytes>,
    },
    /// A nanny registered, or reported its slots: what a restarted scheduler expects back.
    Nanny {
        info: NannyInfo,
        slots: Vec<SlotReport>,
    },
    /// A restarted scheduler gave up waiting for this nanny (named in an event).
    NannyForgotten { name: String },
}

impl Record {
    /// Must this record be on disk before the replies of its turn go out? (A client told
    /// `Submitted` must find its graph after a crash, and no attempt id may be issued twice;
    /// a result's location may be lost: its holder names it again when it registers.)
    pub fn needs_sync(&self) -> bool {
        // A lost release only keeps a result until its graph goes; a lost slot report is
        // sent again when its nanny registers.
        !matches!(
            self,
            Record::InMemory { .. }
                | Record::ReleasedKeys { .. }
                | Record::Nanny { .. }
                | Record::NannyForgotten { .. }
        )
    }

    /// Must this record be on disk before its turn's messages to *workers* go out too? Only an
    /// id floor: the turn's assignments may carry ids above the old one. Every other durable
    /// record holds back only the replies to clients, and the workers start at once: if the
    /// scheduler dies before the record is on disk, the work they did is for a graph (or an
    /// extension) the restarted scheduler does not know, under ids it never issues again
    /// (`GRAPHS_RESERVED_PER_RECORD`), so their results are released when they register, and
    /// the client, never told, sends its request again.
    pub fn holds_workers(&self) -> bool {
        matches!(self, Record::Reserved { .. })
    }
}

/// A graph to resume.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumedGraph {
    pub detach: bool,
    pub session: bool,
    /// The submitted graph; empty for a session graph.
    pub spec: Encoded<GraphSpec>,
    /// A session graph's extensions, in order: (tasks, outputs).
    pub extensions: Vec<(Encoded<Vec<TaskSpec>>, Vec<String>)>,
    /// Keys its client released, each with the number of extensions journaled before.
    pub released: Vec<(usize, Vec<String>)>,
    pub delivered: bool,
}

/// Everything a new scheduler starts from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resume {
    pub graphs: BTreeMap<GraphId, ResumedGraph>,
    /// Where results of live graphs were in memory, by worker name.
    pub in_memory: FxHashMap<TaskRef, (u64, Arc<str>)>,
    /// Tasks of live graphs that failed for good: (message, detail).
    pub failed: BTreeMap<TaskRef, (String, Option<bytes::Bytes>)>,
    /// The first attempt id the new scheduler may issue.
    pub next_attempt: u64,
    /// The first graph id the new scheduler may issue.
    pub next_graph: u64,
    /// Nannies by name, with their slots as last reported.
    pub nannies: BTreeMap<String, (NannyInfo, Vec<SlotReport>)>,
}

impl Resume {
    /// The records that rebuild this state: what a compacted journal holds.
    pub fn to_records(&self) -> Vec<Record> {
        let mut out = vec![Record::Reserved {
            attempts: self.next_attempt,
            graphs: self.next_graph,
        }];
        for (&graph, g) in &self.graphs {
            if g.session {
                out.push(Record::Opened { graph });
                let mut released = g.released.iter().peekable();
                for (i, (tasks, outputs)) in g.extensions.iter().enumerate() {
                    while let Some((_, keys)) = released.next_if(|(at, _)| *at <= i) {
                        out.push(Record::ReleasedKeys {
                            graph,
                            keys: keys.clone(),
                        });
                    }
                    out.push(Record::Extended {
                        graph,
                        tasks: tasks.clone(),
                        outputs: outputs.clone(),
                    });
                }
                for (_, keys) in released {
                    out.push(Record::ReleasedKeys {
                        graph,
                        keys: keys.clone(),
                    });
                }
            } else {
                out.push(Record::Submitted {
                    graph,
                    detach: g.detach,
                    spec: g.spec.clone(),
                });
            }
            if g.delivered {
                out.push(Record::Delivered { graph });
            }
        }
        let mut by_holder: std::collections::BTreeMap<Arc<str>, Vec<(TaskRef, u64)>> =
            Default::default();
        for (t, (s, h)) in &self.in_memory {
            by_holder.entry(h.clone()).or_default().push((*t, *s));
        }
        for (holder, mut results) in by_holder {
            results.sort_unstable();
            out.push(Record::InMemory { holder, results });
        }
        for (&task, (message, detail)) in &self.failed {
            out.push(Record::Failed {
                task,
                message: message.clone(),
                detail: detail.clone(),
            });
        }
        for (info, slots) in self.nannies.values() {
            out.push(Record::Nanny {
                info: info.clone(),
                slots: slots.clone(),
            });
        }
        out
    }

    /// Apply one record. Task specs stay encoded: they are decoded once, by the scheduler
    /// that resumes them ([`crate::scheduler::Scheduler::resume`]).
    pub fn apply(&mut self, r: Record) {
        let bump = |next: &mut u64, g: GraphId| *next = (*next).max(g.0 + 1);
        match r {
            Record::Reserved { attempts, graphs } => {
                self.next_attempt = self.next_attempt.max(attempts);
                self.next_graph = self.next_graph.max(graphs);
            }
            Record::Submitted {
                graph,
                detach,
                spec,
            } => {
                bump(&mut self.next_graph, graph);
                self.graphs.insert(
                    graph,
                    ResumedGraph {
                        detach,
                        session: false,
                        spec,
                        extensions: Vec::new(),
                        released: Vec::new(),
                        delivered: false,
                    },
                );
            }
            Record::Opened { graph } => {
                bump(&mut self.next_graph, graph);
                self.graphs.insert(
                    graph,
                    ResumedGraph {
                        detach: false,
                        session: true,
                        spec: Encoded::new(&GraphSpec::default()),
                        extensions: Vec::new(),
                        released: Vec::new(),
                        delivered: false,
                    },
                );
            }
            Record::Extended {
                graph,
                tasks,
                outputs,
            } => {
                if let Some(g) = self.graphs.get_mut(&graph) {
                    g.extensions.push((tasks, outputs));
                }
            }
            Record::ReleasedKeys { graph, keys } => {
                if let Some(g) = self.graphs.get_mut(&graph) {
                    let at = g.extensions.len();
                    g.released.push((at, keys));
                }
            }
            Record::Retired { graph } => {
                bump(&mut self.next_graph, graph);
                if self.graphs.remove(&graph).is_some() {
                    self.in_memory.retain(|t, _| t.graph != graph);
                    self.failed.retain(|t, _| t.graph != graph);
                }
            }
            Record::InMemory { holder, results } => {
                for (t, size) in results {
                    if self.graphs.contains_key(&t.graph) {
                        self.in_memory.insert(t, (size, holder.clone()));
                    }
                }
            }
            Record::Delivered { graph } => {
                if let Some(g) = self.graphs.get_mut(&graph) {
                    g.delivered = true;
                }
            }
            Record::Failed {
                task,
                message,
                detail,
            } => {
                if self.graphs.contains_key(&task.graph) {
                    self.in_memory.remove(&task);
                    self.failed.insert(task, (message, detail));
                }
            }
            Record::Nanny { info, slots } => {
                self.nannies.insert(info.name.clone(), (info, slots));
            }
            Record::NannyForgotten { name } => {
                self.nannies.remove(&name);
            }
        }
    }
}

/// The state the records describe, in order.
pub fn replay(records: impl IntoIterator<Item = Record>) -> Resume {
    let mut r = Resume {
        next_attempt: 1,
        next_graph: 1,
        ..Resume::default()
    };
    for rec in records {
        r.apply(rec);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(keys: &[&str]) -> GraphSpec {
        GraphSpec {
            tasks: keys
                .iter()
                .map(|k| TaskSpec {
                    key: k.to_string(),
                    builtin: Some("noop".into()),
                    ..TaskSpec::default()
                })
                .collect(),
            outputs: Vec::new(),
        }
    }

    #[test]
    fn replay_keeps_live_graphs_and_their_results_and_never_lowers_the_id_floors() {
        let t = |g, i| TaskRef {
            graph: GraphId(g),
            index: i,
        };
        let recs = vec![
            Record::Reserved {
                attempts: 100,
                graphs: 0,
            },
            Record::Submitted {
                graph: GraphId(1),
                detach: false,
                spec: Encoded::new(&spec(&["a"])),
            },
            Record::Opened { graph: GraphId(2) },
            Record::Extended {
                graph: GraphId(2),
                tasks: Encoded::new(&spec(&["x", "y"]).tasks),
                outputs: vec!["y".into()],
            },
            Record::InMemory {
                holder: "w1".into(),
                results: vec![(t(1, 0), 8)],
            },
            Record::InMemory {
                holder: "w2".into(),
                results: vec![(t(2, 1), 9)],
            },
            Record::Submitted {
                graph: GraphId(3),
                detach: true,
                spec: Encoded::new(&spec(&["b"])),
            },
            Record::Retired { graph: GraphId(1) },
            Record::Retired { graph: GraphId(3) },
            Record::Reserved {
                attempts: 50,
                graphs: 2,
            },
        ];
        let r = replay(recs);
        assert_eq!(r.graphs.keys().copied().collect::<Vec<_>>(), [GraphId(2)]);
        assert_eq!(r.graphs[&GraphId(2)].extensions.len(), 1);
        assert_eq!(r.in_memory.len(), 1);
        assert_eq!(r.in_memory[&t(2, 1)], (9, Arc::from("w2")));
        assert_eq!((r.next_attempt, r.next_graph), (100, 4));
        // Compaction keeps the same state.
        assert_eq!(replay(r.to_records()), r);
    }

    #[test]
    fn task_specs_are_journaled_encoded_and_kept_as_they_are_through_compaction() {
        let good = Encoded::new(&spec(&["a", "b"]));
        assert_eq!(good.decode().unwrap(), spec(&["a", "b"]));
        // What a damaged (or older) journal could hold: bytes that are no graph.
        let damaged = Encoded::<GraphSpec> {
            bytes: bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
            of: PhantomData,
        };
        assert!(damaged.decode().is_err());
        let recs = vec![
            Record::Submitted {
                graph: GraphId(1),
                detach: false,
                spec: damaged,
            },
            Record::Submitted {
                graph: GraphId(2),
                detach: false,
                spec: good,
            },
            Record::Opened { graph: GraphId(3) },
            Record::Extended {
                graph: GraphId(3),
                tasks: Encoded::new(&spec(&["x"]).tasks),
                outputs: vec!["x".into()],
            },
            Record::Extended {
                graph: GraphId(3),
                tasks: Encoded {
                    bytes: bytes::Bytes::from_static(&[0xff]),
                    of: PhantomData,
                },
                outputs: vec![],
            },
            Record::Extended {
                graph: GraphId(3),
                tasks: Encoded::new(&spec(&["z"]).tasks),
                outputs: vec![],
            },
        ];
        let r = replay(recs);
        // The records round-trip through the journal's own encoding, damaged specs as they are.
        let bytes = rusk_proto::encode(&r.to_records()).unwrap();
        let back: Vec<Record> = rusk_proto::decode(&bytes).unwrap();
        assert_eq!(replay(back), r);
        // Left out at resume: scheduler::tests_resume.
    }
}
