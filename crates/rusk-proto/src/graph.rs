//! The graph file: the contract users write (`rusk submit GRAPH.json`).
//!
//! ```json
//! {"tasks": [
//!   {"key": "a", "builtin": "sum", "args": ["1", "2"]},
//!   {"key": "b", "builtin": "sum", "args": ["10"], "deps": ["a"]},
//!   {"key": "c", "cmd": ["sh", "-c", "cat \"$RUSK_DEP_0\"; echo !"], "deps": ["b"]}
//!  ],
//!  "outputs": ["c"]}
//! ```
//!
//! Placement controls (all optional, Dask's semantics):
//!
//! ```json
//! {"key": "train", "python": "...", "priority": 10, "order": 3,
//!  "resources": {"GPU": 1, "MEM": 8e9},
//!  "workers": ["gpu-host", "10.0.0.7:40123", "nanny-a/0"], "allow_other_workers": false}
//! ```
//!
//! - `priority` (default 0): higher runs first, on the scheduler and on the worker.
//! - `order`: the submitter's graph order (Dask's `dask.order`), lower first among tasks of
//!   equal priority and submission; default: the task's index in its submission.
//! - `resources`: amounts a worker must have free (declared with `rusk worker --resources
//!   "GPU=2,MEM=64e9"`); tasks running at once on a worker never use more than it declares.
//! - `workers`: the task runs only on these workers, each named by its id in `rusk status`
//!   (`nanny/slot` or its `--name`), its data address (`host:port`) or its host name. With
//!   `allow_other_workers` the list is only a preference.
//!
//! A task no live worker can run (unknown resource, more than any worker declares, no worker of
//! those names) fails after the scheduler's `--no-worker-timeout` with an error naming what it
//! asked for and what the workers offer.
//!
//! The same types travel from client to scheduler (postcard), so the scheduler validates exactly
//! what the user wrote. Fields only ever get added, with defaults, so old files keep working.
//! (No `skip_serializing_if` here: postcard needs every field on the wire.)
use crate::ids::GraphId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole graph as submitted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    pub tasks: Vec<TaskSpec>,
    /// Keys whose results the submitter wants back. Empty means: every task without dependents.
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// One task as written in the graph file. Exactly one of `builtin` and `cmd` must be given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub key: String,
    /// Name of a function compiled into the worker (see [`Builtin`]).
    #[serde(default)]
    pub builtin: Option<String>,
    /// A program and its arguments; its stdout is the result.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// A Python call, as made by the Python client: a cloudpickled `(function, args, kwargs)`
    /// whose dependency results are substituted by the executor (see `python/rusk/_executor.py`).
    /// Its result is the pickled return value.
    #[serde(default)]
    pub python: Option<Bytes>,
    /// Arguments of a builtin.
    #[serde(default)]
    pub args: Vec<String>,
    /// Keys of the tasks whose results this task takes as inputs, in order.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Extra environment variables of a `cmd` task.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of a `cmd` task.
    #[serde(default)]
    pub cwd: Option<String>,
    /// How many times a task whose own code failed is run again (default 0). A worker dying
    /// under the task never counts against this.
    #[serde(default)]
    pub retries: u32,
    /// Time limit of one attempt (`"500ms"`, `"30s"`, `"2m"`). An attempt over it is killed
    /// and counts as a failure of the task (then `retries` applies); the worker is not touched.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Position in the submitter's graph order, lower first among equal priorities (default:
    /// the task's index in its submission).
    #[serde(default)]
    pub order: Option<u64>,
    /// Amounts of named resources the task holds while assigned to a worker.
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    /// The workers the task may run on (names, data addresses or host names). Absent: any.
    #[serde(default)]
    pub workers: Option<Vec<String>>,
    /// `workers` is only a preference.
    #[serde(default)]
    pub allow_other_workers: bool,
    /// A value the client already sent to a worker's data server (`Client.scatter`): the
    /// 32-hex-digit token it was put under. Such a task has no dependencies, and runs (adopts
    /// the value) on the worker holding it, which the client names in `workers`.
    #[serde(default)]
    pub put: Option<String>,
    /// Take the value of a key of another session graph (a future another client made, a
    /// published dataset's): the task's result is that value, and its lineage is the other
    /// graph's. Such a task has no dependencies and no other kind. Session graphs only.
    #[serde(default)]
    pub adopt: Option<AdoptSpec>,
}

/// The key of another session graph that an `adopt` task takes its value from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptSpec {
    pub graph: GraphId,
    pub key: String,
}

/// The functions compiled into every worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Builtin {
    /// Returns an empty result.
    Noop,
    /// Sums decimal numbers from `args` and from each dependency's result.
    Sum,
    /// Concatenates `args` then dependency results.
    Concat,
    /// Sleeps `args[0]` milliseconds (on a task thread, never on the event loop).
    SleepMs,
    /// Fails with the message in `args` (joined by spaces).
    Fail,
    /// Fault injection: aborts the worker process.
    Abort,
    /// Fault injection: wedges the worker's event-loop thread for `args[0]` seconds.
    BlockLoop,
    /// Fault injection: allocates and keeps `args[0]` MiB.
    AllocMb,
}

impl Builtin {
    pub const ALL: [Builtin; 8] = [
        Builtin::Noop,
        Builtin::Sum,
        Builtin::Concat,
        Builtin::SleepMs,
        Builtin::Fail,
        Builtin::Abort,
        Builtin::BlockLoop,
        Builtin::AllocMb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Noop => "noop",
            Builtin::Sum => "sum",
            Builtin::Concat => "concat",
            Builtin::SleepMs => "sleep_ms",
            Builtin::Fail => "fail",
            Builtin::Abort => "abort",
            Builtin::BlockLoop => "block_loop",
            Builtin::AllocMb => "alloc_mb",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Fault-injection builtins run only on workers started with `--enable-fault-injection`.
    pub fn is_fault_injection(self) -> bool {
        matches!(self, Builtin::Abort | Builtin::BlockLoop | Builtin::AllocMb)
    }
}

/// What a worker runs for one task: the validated form of a [`TaskSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    Builtin {
        op: Builtin,
        args: Vec<String>,
    },
    Cmd {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
    },
    /// Run in one of the worker's Python executor processes.
    Python {
        payload: Bytes,
    },
    /// Adopt the value a client put on this worker under `token` (`DataRequest::Put`) as the
    /// task's result.
    Put {
        token: u128,
    },
    /// The value of another graph's task, `key` of `graph`, which the assignment lists as its
    /// only input: the result is that input, unchanged (no copy where the worker holds it).
    Adopt {
        graph: GraphId,
        key: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_file_example_parses() {
        let text = r#"{"tasks": [
          {"key": "a", "builtin": "sum", "args": ["1", "2"]},
          {"key": "b", "builtin": "sum", "args": ["10"], "deps": ["a"]},
          {"key": "c", "cmd": ["sh", "-c", "cat \"$RUSK_DEP_0\"; echo !"], "deps": ["b"]}
         ],
         "outputs": ["c"]}"#;
        let g: GraphSpec = serde_json::from_str(text).unwrap();
        assert_eq!(g.tasks.len(), 3);
        assert_eq!(g.tasks[1].deps, vec!["a".to_string()]);
        assert_eq!(g.outputs, vec!["c".to_string()]);
        let wire = crate::encode(&g).unwrap();
        let back: GraphSpec = crate::decode(&wire).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn placement_fields_parse_with_defaults() {
        let text = r#"{"tasks": [
          {"key": "a", "builtin": "noop"},
          {"key": "b", "builtin": "noop", "priority": -3, "order": 7,
           "resources": {"GPU": 1, "MEM": 8e9}, "workers": ["h1", "n/0"],
           "allow_other_workers": true}
         ]}"#;
        let g: GraphSpec = serde_json::from_str(text).unwrap();
        let (a, b) = (&g.tasks[0], &g.tasks[1]);
        assert_eq!((a.priority, a.order, a.workers.clone()), (0, None, None));
        assert!(a.resources.is_empty() && !a.allow_other_workers);
        assert_eq!((b.priority, b.order), (-3, Some(7)));
        assert_eq!(b.resources["MEM"], 8e9);
        assert_eq!(b.workers, Some(vec!["h1".to_string(), "n/0".to_string()]));
        assert!(b.allow_other_workers);
        let back: GraphSpec = crate::decode(&crate::encode(&g).unwrap()).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn builtin_names_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
        }
        assert_eq!(Builtin::from_name("nope"), None);
    }
}
