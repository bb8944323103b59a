//! Validation of a submitted graph: everything a user can get wrong in a graph file is caught
//! here, before a single task runs, with an error that names the offending key.
use rusk_proto::graph::{Builtin, GraphSpec, TaskKind, TaskSpec};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Most tasks one graph may hold: bounds the memory a single submission can take
/// (about 300 bytes a task in the scheduler, so 10,000,000 tasks is about 3 GiB).
pub const MAX_TASKS_PER_GRAPH: usize = 10_000_000;
/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Most named resources one task may ask for: placement checks each against every candidate
/// worker, so the list must stay short.
pub const MAX_TASK_RESOURCES: usize = 64;
/// Most names in one task's `workers` list (each is matched against every worker).
pub const MAX_TASK_WORKERS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("graph has no tasks")]
    Empty,
    #[error("graph has {count} tasks, more than the limit of {max}")]
    TooManyTasks { count: usize, max: usize },
    #[error("task key is empty (task #{index})")]
    EmptyKey { index: usize },
    #[error("task key {key:?} is longer than {max} bytes")]
    KeyTooLong { key: String, max: usize },
    #[error("duplicate task key {key:?}")]
    DuplicateKey { key: String },
    #[error("task {key:?} depends on unknown key {dep:?}")]
    UnknownDependency { key: String, dep: String },
    #[error("task {key:?} lists dependency {dep:?} twice")]
    DuplicateDependency { key: String, dep: String },
    #[error("dependency cycle through task {key:?}")]
    Cycle { key: String },
    #[error("task {key:?} uses unknown builtin {name:?} (known: {known})")]
    UnknownBuiltin {
        key: String,
        name: String,
        known: String,
    },
    #[error("task {key:?} must have exactly one of \"builtin\", \"cmd\" and \"python\"")]
    KindAmbiguous { key: String },
    #[error("task {key:?}: bad \"put\": {reason}")]
    BadPut { key: String, reason: String },
    #[error("task {key:?}: bad \"adopt\": {reason}")]
    BadAdopt { key: String, reason: String },
    #[error("task {key:?} has an empty \"cmd\"")]
    EmptyCommand { key: String },
    #[error("task {key:?}: \"args\" only applies to builtin tasks; put arguments in \"cmd\"")]
    ArgsOnCommand { key: String },
    #[error("output {key:?} is not a task of this graph")]
    UnknownOutput { key: String },
    #[error("task {key:?} has an invalid \"timeout\" {value:?} ({reason}); write it like \"500ms\", \"30s\", \"2m\"")]
    BadTimeout {
        key: String,
        value: String,
        reason: String,
    },
    #[error("task {key:?} asks for resource {name:?} = {amount}: an amount must be a finite number, 0 or more")]
    BadResource {
        key: String,
        name: String,
        amount: String,
    },
    #[error("task {key:?} asks for a resource with an empty name")]
    EmptyResourceName { key: String },
    #[error("task {key:?} asks for {count} resources, more than the limit of {max}")]
    TooManyResources {
        key: String,
        count: usize,
        max: usize,
    },
    #[error("task {key:?} has an empty \"workers\" list: name at least one worker (its id in `rusk status`, its address or its host), or leave the field out")]
    EmptyWorkers { key: String },
    #[error("task {key:?} names {count} workers, more than the limit of {max}")]
    TooManyWorkers {
        key: String,
        count: usize,
        max: usize,
    },
}

/// Where a task may run: resources it holds while assigned, and the workers it is restricted
/// to (or, with `loose`, prefers).
#[derive(Debug, Clone, PartialEq)]
pub struct Restrictions {
    /// Sorted by name, each at most once.
    pub resources: Vec<(Box<str>, f64)>,
    /// Names, data addresses or host names of the allowed (or preferred) workers.
    pub workers: Option<Box<[Box<str>]>>,
    /// `allow_other_workers`: `workers` is only a preference.
    pub loose: bool,
}

impl Restrictions {
    /// `GPU=1, MEM=8000000000`: the resources, as in error messages.
    pub fn resources_text(&self) -> String {
        let parts: Vec<String> = self
            .resources
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        parts.join(", ")
    }
}

/// A validated graph, ready for the scheduler.
#[derive(Debug, Clone)]
pub struct CompiledGraph {
    pub tasks: Vec<CompiledTask>,
    /// Indexes of the output tasks, deduplicated, in the order given.
    pub outputs: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct CompiledTask {
    pub key: Box<str>,
    pub kind: Arc<TaskKind>,
    pub deps: Box<[u32]>,
    pub retries: u32,
    /// Time limit of one attempt in milliseconds (0: none).
    pub timeout_ms: u32,
    pub priority: i32,
    /// The submitter's graph order, if it gave one.
    pub order: Option<u64>,
    /// `None` for a task that may run anywhere (most tasks).
    pub restrictions: Option<Arc<Restrictions>>,
}

/// Validate a graph and resolve its keys to indexes.
pub fn compile(spec: GraphSpec) -> Result<CompiledGraph, GraphError> {
    let n = spec.tasks.len();
    if n == 0 {
        return Err(GraphError::Empty);
    }
    if n > MAX_TASKS_PER_GRAPH {
        return Err(GraphError::TooManyTasks {
            count: n,
            max: MAX_TASKS_PER_GRAPH,
        });
    }
    let mut index: FxHashMap<&str, u32> = FxHashMap::default();
    index.reserve(n);
    for (i, t) in spec.tasks.iter().enumerate() {
        if t.key.is_empty() {
            return Err(GraphError::EmptyKey { index: i });
        }
        if t.key.len() > MAX_KEY_BYTES {
            return Err(GraphError::KeyTooLong {
                key: t.key.chars().take(64).collect(),
                max: MAX_KEY_BYTES,
            });
        }
        if index.insert(t.key.as_str(), i as u32).is_some() {
            return Err(GraphError::DuplicateKey { key: t.key.clone() });
        }
    }
    let mut deps_of: Vec<Box<[u32]>> = Vec::with_capacity(n);
    for t in &spec.tasks {
        let mut deps = Vec::with_capacity(t.deps.len());
        for d in &t.deps {
            let Some(&j) = index.get(d.as_str()) else {
                return Err(GraphError::UnknownDependency {
                    key: t.key.clone(),
                    dep: d.clone(),
                });
            };
            // A Python task lists a dependency once per place it is used.
            if t.python.is_none() && deps.contains(&j) {
                return Err(GraphError::DuplicateDependency {
                    key: t.key.clone(),
                    dep: d.clone(),
                });
            }
            deps.push(j);
        }
        deps_of.push(deps.into_boxed_slice());
    }
    if let Some(i) = find_cycle(&deps_of) {
        return Err(GraphError::Cycle {
            key: spec.tasks[i as usize].key.clone(),
        });
    }
    let mut outputs = Vec::with_capacity(spec.outputs.len());
    for o in &spec.outputs {
        let Some(&j) = index.get(o.as_str()) else {
            return Err(GraphError::UnknownOutput { key: o.clone() });
        };
        if !outputs.contains(&j) {
            outputs.push(j);
        }
    }
    if outputs.is_empty() {
        // Default outputs: the sinks (tasks nothing depends on).
        let mut has_dependent = vec![false; n];
        for deps in &deps_of {
            for &d in deps.iter() {
                has_dependent[d as usize] = true;
            }
        }
        outputs = (0..n as u32)
            .filter(|&i| !has_dependent[i as usize])
            .collect();
    }
    drop(index);
    let mut tasks = Vec::with_capacity(n);
    for (t, deps) in spec.tasks.into_iter().zip(deps_of) {
        tasks.push(compile_task(t, deps)?);
    }
    Ok(CompiledGraph { tasks, outputs })
}

/// One task, its dependencies already resolved to indexes.
fn compile_task(mut t: TaskSpec, deps: Box<[u32]>) -> Result<CompiledTask, GraphError> {
    let timeout_ms = match &t.timeout {
        None => 0,
        Some(text) => parse_timeout_ms(text).map_err(|reason| GraphError::BadTimeout {
            key: t.key.clone(),
            value: text.clone(),
            reason,
        })?,
    };
    let restrictions = restrictions(&t)?;
    let kind = if let Some(token) = t.put.as_deref() {
        put_kind(&t.key, token, &t, &deps)?
    } else if let Some(a) = t.adopt.take() {
        adopt_kind(&t.key, a, &t, &deps)?
    } else {
        task_kind(&t.key, t.builtin, t.cmd, t.python, t.args, t.env, t.cwd)?
    };
    Ok(CompiledTask {
        key: t.key.into_boxed_str(),
        kind: Arc::new(kind),
        deps,
        retries: t.retries,
        timeout_ms,
        priority: t.priority,
        order: t.order,
        restrictions,
    })
}

/// The validated placement restrictions of a task, `None` when it has none.
fn restrictions(t: &TaskSpec) -> Result<Option<Arc<Restrictions>>, GraphError> {
    if t.resources.len() > MAX_TASK_RESOURCES {
        return Err(GraphError::TooManyResources {
            key: t.key.clone(),
            count: t.resources.len(),
            max: MAX_TASK_RESOURCES,
        });
    }
    for (name, &amount) in &t.resources {
        if name.is_empty() {
            return Err(GraphError::EmptyResourceName { key: t.key.clone() });
        }
        if !amount.is_finite() || amount < 0.0 {
            return Err(GraphError::BadResource {
                key: t.key.clone(),
                name: name.clone(),
                amount: amount.to_string(),
            });
        }
    }
    if let Some(w) = &t.workers {
        if w.is_empty() || w.iter().all(|n| n.is_empty()) {
            return Err(GraphError::EmptyWorkers { key: t.key.clone() });
        }
        if w.len() > MAX_TASK_WORKERS {
            return Err(GraphError::TooManyWorkers {
                key: t.key.clone(),
                count: w.len(),
                max: MAX_TASK_WORKERS,
            });
        }
    }
    if t.resources.is_empty() && t.workers.is_none() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Restrictions {
        // A BTreeMap: sorted by name, each once.
        resources: t
            .resources
            .iter()
            .map(|(n, &a)| (n.as_str().into(), a))
            .collect(),
        workers: t.workers.as_ref().map(|w| {
            w.iter()
                .filter(|n| !n.is_empty())
                .map(|n| n.as_str().into())
                .collect()
        }),
        loose: t.allow_other_workers,
    })))
}

/// A `put` task (`Client.scatter`): a token, and nothing to run.
fn put_kind(key: &str, token: &str, t: &TaskSpec, deps: &[u32]) -> Result<TaskKind, GraphError> {
    if t.builtin.is_some() || t.cmd.is_some() || t.python.is_some() {
        return Err(GraphError::KindAmbiguous { key: key.into() });
    }
    if !deps.is_empty() {
        return Err(GraphError::BadPut {
            key: key.into(),
            reason: "a put task has no dependencies".into(),
        });
    }
    if token.len() != 32 {
        return Err(GraphError::BadPut {
            key: key.into(),
            reason: format!("the token {token:?} is not 32 hex digits"),
        });
    }
    let token = u128::from_str_radix(token, 16).map_err(|_| GraphError::BadPut {
        key: key.into(),
        reason: format!("the token {token:?} is not 32 hex digits"),
    })?;
    Ok(TaskKind::Put { token })
}

/// An `adopt` task: another session graph's key, and nothing else.
fn adopt_kind(
    key: &str,
    a: rusk_proto::graph::AdoptSpec,
    t: &TaskSpec,
    deps: &[u32],
) -> Result<TaskKind, GraphError> {
    let bad = |reason: &str| GraphError::BadAdopt {
        key: key.into(),
        reason: reason.into(),
    };
    if t.builtin.is_some() || t.cmd.is_some() || t.python.is_some() || t.put.is_some() {
        return Err(GraphError::KindAmbiguous { key: key.into() });
    }
    if !deps.is_empty() {
        return Err(bad("an adopt task has no dependencies"));
    }
    if a.key.is_empty() || a.key.len() > MAX_KEY_BYTES {
        return Err(bad("the adopted key is empty or too long"));
    }
    Ok(TaskKind::Adopt {
        graph: a.graph,
        key: a.key,
    })
}

/// The validated kind of one task: exactly one of `builtin`, `cmd` and `python`.
fn task_kind(
    key: &str,
    builtin: Option<String>,
    cmd: Option<Vec<String>>,
    python: Option<bytes::Bytes>,
    args: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    cwd: Option<String>,
) -> Result<TaskKind, GraphError> {
    let key = || key.to_string();
    Ok(match (builtin, cmd, python) {
        (Some(name), None, None) => {
            let Some(op) = Builtin::from_name(&name) else {
                let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
                return Err(GraphError::UnknownBuiltin {
                    key: key(),
                    name,
                    known: known.join(", "),
                });
            };
            TaskKind::Builtin { op, args }
        }
        (None, Some(argv), None) => {
            if argv.is_empty() {
                return Err(GraphError::EmptyCommand { key: key() });
            }
            if !args.is_empty() {
                return Err(GraphError::ArgsOnCommand { key: key() });
            }
            TaskKind::Cmd {
                argv,
                env: env.into_iter().collect(),
                cwd,
            }
        }
        (None, None, Some(payload)) => TaskKind::Python { payload },
        _ => return Err(GraphError::KindAmbiguous { key: key() }),
    })
}

/// Validate tasks added to an existing (session) graph of `existing` tasks whose keys are in
/// `keys`. Dependencies may name existing keys or keys earlier or later in `tasks`; indexes of
/// new tasks start at `existing`. Returns the new tasks and the indexes of `outputs`.
pub fn compile_extension(
    keys: &FxHashMap<Box<str>, u32>,
    existing: u32,
    tasks_in: Vec<TaskSpec>,
    outputs_in: &[String],
) -> Result<(Vec<CompiledTask>, Vec<u32>), GraphError> {
    let n = tasks_in.len();
    if existing as usize + n > MAX_TASKS_PER_GRAPH {
        return Err(GraphError::TooManyTasks {
            count: existing as usize + n,
            max: MAX_TASKS_PER_GRAPH,
        });
    }
    let mut new_index: FxHashMap<&str, u32> = FxHashMap::default();
    for (i, t) in tasks_in.iter().enumerate() {
        if t.key.is_empty() {
            return Err(GraphError::EmptyKey { index: i });
        }
        if t.key.len() > MAX_KEY_BYTES {
            return Err(GraphError::KeyTooLong {
                key: t.key.chars().take(64).collect(),
                max: MAX_KEY_BYTES,
            });
        }
        if keys.contains_key(t.key.as_str())
            || new_index
                .insert(t.key.as_str(), existing + i as u32)
                .is_some()
        {
            return Err(GraphError::DuplicateKey { key: t.key.clone() });
        }
    }
    let lookup = |k: &str| keys.get(k).copied().or_else(|| new_index.get(k).copied());
    let mut deps_of = Vec::with_capacity(n);
    // Only edges among the new tasks can form a cycle (existing tasks never depend on new ones).
    let mut local_deps: Vec<Box<[u32]>> = Vec::with_capacity(n);
    for t in &tasks_in {
        let mut deps = Vec::with_capacity(t.deps.len());
        for d in &t.deps {
            let Some(j) = lookup(d) else {
                return Err(GraphError::UnknownDependency {
                    key: t.key.clone(),
                    dep: d.clone(),
                });
            };
            deps.push(j);
        }
        local_deps.push(
            deps.iter()
                .filter(|&&j| j >= existing)
                .map(|&j| j - existing)
                .collect(),
        );
        deps_of.push(deps.into_boxed_slice());
    }
    if let Some(i) = find_cycle(&local_deps) {
        return Err(GraphError::Cycle {
            key: tasks_in[i as usize].key.clone(),
        });
    }
    let mut outputs = Vec::with_capacity(outputs_in.len());
    for o in outputs_in {
        let Some(j) = lookup(o) else {
            return Err(GraphError::UnknownOutput { key: o.clone() });
        };
        if !outputs.contains(&j) {
            outputs.push(j);
        }
    }
    let mut tasks = Vec::with_capacity(n);
    for (t, deps) in tasks_in.into_iter().zip(deps_of) {
        tasks.push(compile_task(t, deps)?);
    }
    Ok((tasks, outputs))
}

/// Longest time limit a task may have: about 49 days (fits the scheduler's 32-bit field).
pub const MAX_TIMEOUT_MS: u64 = u32::MAX as u64;

fn parse_timeout_ms(text: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    let ms = d.as_millis();
    if ms == 0 {
        return Err("must be at least 1ms".into());
    }
    if ms > MAX_TIMEOUT_MS as u128 {
        return Err(format!("more than the maximum of {MAX_TIMEOUT_MS} ms"));
    }
    Ok(ms as u32)
}

/// Iterative three-colour DFS; returns a task on a cycle, if any.
fn find_cycle(deps_of: &[Box<[u32]>]) -> Option<u32> {
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut colour = vec![WHITE; deps_of.len()];
    let mut stack: Vec<(u32, usize)> = Vec::new();
    for root in 0..deps_of.len() as u32 {
        if colour[root as usize] != WHITE {
            continue;
        }
        colour[root as usize] = GREY;
        stack.push((root, 0));
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = &deps_of[node as usize];
            if *next < deps.len() {
                let d = deps[*next];
                *next += 1;
                match colour[d as usize] {
                    WHITE => {
                        colour[d as usize] = GREY;
                        stack.push((d, 0));
                    }
                    GREY => return Some(d),
                    _ => {}
                }
            } else {
                colour[node as usize] = BLACK;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusk_proto::graph::TaskSpec;

    fn task(key: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            key: key.into(),
            builtin: Some("noop".into()),
            cmd: None,
            args: vec![],
            deps: deps.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
            cwd: None,
            retries: 0,
            timeout: None,
            put: None,
            python: None,
            ..Default::default()
        }
    }
    fn graph(tasks: Vec<TaskSpec>, outputs: &[&str]) -> GraphSpec {
        GraphSpec {
            tasks,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn put_tasks_need_a_token_and_no_dependencies() {
        let put = |key: &str, token: &str, deps: &[&str]| TaskSpec {
            builtin: None,
            put: Some(token.into()),
            ..task(key, deps)
        };
        let token = "0123456789abcdef0123456789ABCDEF";
        let g = compile(graph(vec![put("p", token, &[])], &[])).unwrap();
        assert_eq!(
            *g.tasks[0].kind,
            TaskKind::Put {
                token: 0x0123456789abcdef0123456789abcdef
            }
        );
        for (bad, why) in [
            ("12", "32 hex"),
            ("0123456789abcdef0123456789abcdeg", "32 hex"),
        ] {
            let err = compile(graph(vec![put("p", bad, &[])], &[])).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        let err = compile(graph(vec![task("a", &[]), put("p", token, &["a"])], &[])).unwrap_err();
        assert!(err.to_string().contains("no dependencies"), "{err}");
        let both = TaskSpec {
            put: Some(token.into()),
            ..task("p", &[])
        };
        assert!(matches!(
            compile(graph(vec![both], &[])),
            Err(GraphError::KindAmbiguous { .. })
        ));
    }

    #[test]
    fn valid_graph_compiles_with_sink_outputs_by_default() {
        let g = compile(graph(
            vec![task("a", &[]), task("b", &["a"]), task("c", &["a"])],
            &[],
        ))
        .unwrap();
        assert_eq!(g.outputs, vec![1, 2]);
        assert_eq!(&*g.tasks[1].deps, &[0]);
    }

    #[test]
    fn each_bad_graph_names_the_offending_key() {
        let e = compile(graph(vec![task("a", &[]), task("a", &[])], &[])).unwrap_err();
        assert_eq!(e, GraphError::DuplicateKey { key: "a".into() });
        let e = compile(graph(vec![task("a", &["zz"])], &[])).unwrap_err();
        assert_eq!(
            e,
            GraphError::UnknownDependency {
                key: "a".into(),
                dep: "zz".into()
            }
        );
        let e = compile(graph(
            vec![task("a", &["c"]), task("b", &["a"]), task("c", &["b"])],
            &[],
        ))
        .unwrap_err();
        assert!(matches!(e, GraphError::Cycle { .. }), "{e}");
        let e = compile(graph(vec![task("self", &["self"])], &[])).unwrap_err();
        assert_eq!(e, GraphError::Cycle { key: "self".into() });
        let mut t = task("x", &[]);
        t.builtin = Some("frobnicate".into());
        let e = compile(graph(vec![t], &[])).unwrap_err();
        assert!(
            e.to_string().contains("\"x\"") && e.to_string().contains("frobnicate"),
            "{e}"
        );
        let mut t = task("y", &[]);
        t.cmd = Some(vec!["true".into()]);
        assert_eq!(
            compile(graph(vec![t], &[])).unwrap_err(),
            GraphError::KindAmbiguous { key: "y".into() }
        );
        let e = compile(graph(vec![task("a", &[])], &["nope"])).unwrap_err();
        assert_eq!(e, GraphError::UnknownOutput { key: "nope".into() });
        assert_eq!(compile(graph(vec![], &[])).unwrap_err(), GraphError::Empty);
    }

    #[test]
    fn placement_fields_are_validated() {
        let with = |f: &dyn Fn(&mut TaskSpec)| {
            let mut t = task("p", &[]);
            f(&mut t);
            compile(graph(vec![t], &[]))
        };
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = with(&|t| {
                t.resources.insert("GPU".into(), bad);
            })
            .unwrap_err();
            assert!(matches!(e, GraphError::BadResource { .. }), "{e}");
            assert!(e.to_string().contains("\"p\"") && e.to_string().contains("GPU"));
        }
        let e = with(&|t| t.workers = Some(vec![])).unwrap_err();
        assert_eq!(e, GraphError::EmptyWorkers { key: "p".into() });
        assert!(e.to_string().contains("empty \"workers\""), "{e}");
        let e = with(&|t| {
            t.resources.insert(String::new(), 1.0);
        })
        .unwrap_err();
        assert_eq!(e, GraphError::EmptyResourceName { key: "p".into() });
        // No restrictions: none compiled (the common case costs nothing).
        let g = with(&|t| t.priority = 5).unwrap();
        assert_eq!((g.tasks[0].priority, g.tasks[0].order), (5, None));
        assert!(g.tasks[0].restrictions.is_none());
        let g = with(&|t| {
            t.resources.insert("MEM".into(), 8e9);
            t.resources.insert("GPU".into(), 1.0);
            t.workers = Some(vec!["h1".into()]);
            t.order = Some(4);
        })
        .unwrap();
        let r = g.tasks[0].restrictions.as_deref().unwrap();
        assert_eq!(r.resources_text(), "GPU=1, MEM=8000000000");
        assert_eq!(r.workers.as_deref(), Some(&["h1".into()][..]));
        assert!(!r.loose);
        assert_eq!(g.tasks[0].order, Some(4));
    }

    #[test]
    fn deep_chain_has_no_stack_overflow() {
        let n = 200_000;
        let tasks = (0..n)
            .map(|i| {
                let deps = if i == 0 {
                    vec![]
                } else {
                    vec![format!("t{}", i - 1)]
                };
                let mut t = task(&format!("t{i}"), &[]);
                t.deps = deps;
                t
            })
            .collect();
        let g = compile(graph(tasks, &[])).unwrap();
        assert_eq!(g.outputs, vec![n - 1]);
    }
}
