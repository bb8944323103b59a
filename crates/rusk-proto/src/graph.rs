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
//! The same types travel from client to scheduler (postcard), so the scheduler validates exactly
//! what the user wrote. Fields only ever get added, with defaults, so old files keep working.
//! (No `skip_serializing_if` here: postcard needs every field on the wire.)
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole graph as submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    pub tasks: Vec<TaskSpec>,
    /// Keys whose results the submitter wants back. Empty means: every task without dependents.
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// One task as written in the graph file. Exactly one of `builtin` and `cmd` must be given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    fn builtin_names_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
        }
        assert_eq!(Builtin::from_name("nope"), None);
    }
}
