//! Graphs the simulated client submits, each with the outcome of every task worked out by the
//! simulator itself.
//!
//! The expected values are computed here with our own arithmetic, never by calling the builtins
//! the workers run, so that a wrong input, a stale replica or a result accepted from the wrong
//! attempt shows up as a wrong value at the client. Builtins are typed by what they produce:
//! `sum` tasks only take numeric inputs (or inputs that are expected to fail), `concat`, `noop`
//! and `sleep_ms` take anything; values and sizes are capped so that nothing overflows.
//!
//! Three kinds of task can only fail, each with an error the model words in advance: `fail`
//! (its own error, after its retries), a *killer* (`abort`: the simulated worker process that
//! starts it dies, so the scheduler must fail it as a poison task after exactly
//! `task_max_worker_deaths` deaths) and a `sleep_ms` far longer than its time limit (failed by
//! the worker core's timer, after its retries). Everything downstream of them fails with
//! `dependency ... failed: ...`.
//!
//! Some graphs carry placement controls ([`Placement`]): priorities, a `GPU` resource (every
//! simulated worker declares `GPU` = 1 or 2, so each such task is runnable and the amounts
//! bound how many run at once) and `workers` lists naming worker slots of the cluster (strict,
//! or a preference). None of them changes what a task computes.
use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::Rng;
use rusk_proto::graph::{AdoptSpec, Builtin, GraphSpec, TaskKind, TaskSpec};
use rusk_proto::GraphId;
use std::collections::BTreeSet;

/// Sums never exceed this magnitude: a deep random DAG of sums grows exponentially otherwise.
const SUM_MAGNITUDE_MAX: i128 = 1_000_000_000_000;
/// Concatenations longer than this are turned into `noop`s, for the same reason.
const CONCAT_BYTES_MAX: usize = 256;
/// Longest `sleep_ms` a generated task asks for, in virtual milliseconds.
const SLEEP_MS_MAX: u64 = 150;
/// How long a task that must exceed its time limit sleeps: longer than its limit plus any
/// freeze the simulator injects (`FREEZE_MS_MAX`), so that no worker ever sees it finish
/// before its deadline, however long its event loop was stopped.
pub const TIME_LIMITED_SLEEP_MS: u64 = 10_000;
/// Longest freeze of a worker the simulator injects (it heals everything at the liveness
/// phase anyway); below `TIME_LIMITED_SLEEP_MS` by a margin.
pub const FREEZE_MS_MAX: u64 = 6_000;
/// A task that must finish within its time limit gets at least this much slack over its
/// sleep: the simulated executor adds at most 15 ms to every job.
const TIME_LIMIT_SLACK_MS: u64 = 100;

/// What a task must end as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    Value(Bytes),
    /// The task errs, because it is (or depends on) a task that can only fail.
    Failed,
}

/// An error the scheduler may report, as the model can predict it: the whole text, or its
/// start (a poison task's error ends with which workers died and why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorPattern {
    Exact(String),
    Prefix(String),
}

impl ErrorPattern {
    pub fn matches(&self, error: &str) -> bool {
        match self {
            ErrorPattern::Exact(e) => error == e,
            ErrorPattern::Prefix(p) => error.starts_with(p.as_str()),
        }
    }

    /// The same error as a dependent reports it.
    fn downstream(&self, key: &str) -> ErrorPattern {
        let head = format!("dependency {key:?} failed: ");
        match self {
            ErrorPattern::Exact(e) => ErrorPattern::Exact(head + e),
            ErrorPattern::Prefix(p) => ErrorPattern::Prefix(head + p),
        }
    }
}

/// One task of a model graph.
#[derive(Clone, Debug)]
pub struct ModelTask {
    pub key: String,
    pub op: Builtin,
    pub args: Vec<String>,
    pub deps: Vec<usize>,
    pub retries: u32,
    /// The simulated executor fails this many executions before the task succeeds
    /// (`flaky <= retries`, so the task must still succeed).
    pub flaky: u32,
    /// Time limit of one attempt (the spec's `timeout`).
    pub timeout_ms: Option<u32>,
    pub expected: Expected,
    /// Tasks that can only fail which this task is or depends on (transitively): whose error
    /// it may report.
    pub fail_roots: BTreeSet<usize>,
    pub placement: Placement,
    /// An adopt task (session graphs): its value is this key's of another session graph.
    pub adopt: Option<AdoptModel>,
}

/// The key an adopt task takes its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptModel {
    pub graph: GraphId,
    /// Its `TaskRef::index` in `graph`.
    pub index: u32,
    pub key: String,
}

/// A task's placement controls, as submitted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub priority: i32,
    /// Amounts of `GPU_RESOURCE` (none: not asked for).
    pub gpu: Option<f64>,
    /// Worker names (ids in `rusk status`).
    pub workers: Option<Vec<String>>,
    pub allow_other_workers: bool,
}

/// The resource simulated workers declare: each declares `GPU_DECLARED_MIN..` of it.
pub const GPU_RESOURCE: &str = "GPU";
/// Every simulated worker declares at least this much GPU; tasks ask for at most this much, so
/// none is unrunnable (that path has its own scripted scenario).
pub const GPU_DECLARED_MIN: f64 = 1.0;

impl ModelTask {
    pub fn kind(&self) -> TaskKind {
        if let Some(a) = &self.adopt {
            return TaskKind::Adopt {
                graph: a.graph,
                key: a.key.clone(),
            };
        }
        TaskKind::Builtin {
            op: self.op,
            args: self.args.clone(),
        }
    }

    fn is_numeric(&self) -> bool {
        self.op == Builtin::Sum && matches!(self.expected, Expected::Value(_))
    }

    /// Does this task fail whatever its inputs (a `fail`, a killer, or a sleep far over its
    /// time limit)?
    fn fails_by_itself(op: Builtin, args: &[String], timeout_ms: Option<u32>) -> bool {
        match (op, timeout_ms) {
            (Builtin::Fail | Builtin::Abort, _) => true,
            (Builtin::SleepMs, Some(limit)) => {
                let ms = sleep_arg(args);
                let limit = limit as u64;
                if ms >= limit + FREEZE_MS_MAX + TIME_LIMIT_SLACK_MS {
                    true
                } else {
                    assert!(
                        limit >= ms + TIME_LIMIT_SLACK_MS,
                        "a time-limited sleep of {ms} ms with a limit of {limit} ms could go \
                         either way"
                    );
                    false
                }
            }
            _ => false,
        }
    }

    /// How many of this task's own failures the scheduler may accept.
    pub fn failures_allowed(&self) -> u32 {
        match self.op {
            Builtin::Fail => self.retries + 1,
            Builtin::SleepMs if Self::fails_by_itself(self.op, &self.args, self.timeout_ms) => {
                self.retries + 1
            }
            _ => self.flaky,
        }
    }

    /// Is this a killer: a task whose start kills the worker process running it?
    pub fn is_killer(&self) -> bool {
        self.op == Builtin::Abort
    }
}

fn sleep_arg(args: &[String]) -> u64 {
    args.first()
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The start of the error of a task the scheduler failed as a poison task.
fn poison_error(key: &str, max_worker_deaths: u32) -> ErrorPattern {
    ErrorPattern::Prefix(format!(
        "task {key:?} is a poison task: it was running on {max_worker_deaths} workers that died \
         (limit RUSK_TASK_MAX_WORKER_DEATHS={max_worker_deaths}): "
    ))
}

/// A graph to submit together with the outcome of each of its tasks.
#[derive(Clone, Debug)]
pub struct GraphModel {
    /// Tasks in model order (dependencies before dependents).
    pub tasks: Vec<ModelTask>,
    /// Position of each model task in `spec.tasks` (the spec may list tasks in any order).
    pub spec_pos: Vec<u32>,
    /// Model index of each task of `spec.tasks`.
    pub model_of: Vec<usize>,
    /// Output tasks (model indexes) in the order `GraphFinished` reports them.
    pub outputs: Vec<usize>,
    pub spec: GraphSpec,
    pub detach: bool,
}

impl GraphModel {
    /// The model task behind index `spec_index` of the submitted spec (a `TaskRef::index`).
    pub fn task(&self, spec_index: u32) -> Option<&ModelTask> {
        self.model_of
            .get(spec_index as usize)
            .map(|&m| &self.tasks[m])
    }

    /// Every error the scheduler may report for model task `m`: the failure of any task that
    /// can only fail, itself or upstream, and of any task the scheduler was seen to fail as a
    /// poison task (`poisoned`, model indexes: any task can become one when the workers
    /// running it keep dying), as the scheduler words them.
    pub fn acceptable_errors(
        &self,
        m: usize,
        max_worker_deaths: u32,
        poisoned: &BTreeSet<usize>,
    ) -> Vec<ErrorPattern> {
        let mut roots = self.tasks[m].fail_roots.clone();
        if !poisoned.is_empty() {
            roots.extend(self.upstream(m).intersection(poisoned).copied());
        }
        roots
            .iter()
            .map(|&r| {
                let root = &self.tasks[r];
                // A task is failed once: as a poison task if it was seen as one, else as
                // the kind of task it is.
                let own = match (root.op, root.timeout_ms) {
                    _ if poisoned.contains(&r) => poison_error(&root.key, max_worker_deaths),
                    (Builtin::Fail, _) => ErrorPattern::Exact(format!(
                        "task {:?} failed: {}",
                        root.key,
                        fail_message(&root.args)
                    )),
                    (Builtin::SleepMs, Some(limit)) => ErrorPattern::Exact(format!(
                        "task {:?} failed: exceeded its time limit of {limit} ms and was killed",
                        root.key
                    )),
                    _ => poison_error(&root.key, max_worker_deaths),
                };
                if r == m {
                    own
                } else {
                    own.downstream(&root.key)
                }
            })
            .collect()
    }

    /// Like [`GraphModel::acceptable_errors`] across scheduler restarts: a task failed as a
    /// poison task only by an earlier scheduler life (`earlier`) runs again under the next one
    /// (a resumed graph starts from its spec: outcomes are not journaled), so its own failure
    /// is as acceptable as the poison error. Tasks in `poisoned` (the current life) are held
    /// to the poison error.
    pub fn acceptable_errors_across(
        &self,
        m: usize,
        max_worker_deaths: u32,
        poisoned: &BTreeSet<usize>,
        earlier: &BTreeSet<usize>,
    ) -> Vec<ErrorPattern> {
        let mut all = self.acceptable_errors(m, max_worker_deaths, poisoned);
        if !earlier.is_empty() {
            let union: BTreeSet<usize> = poisoned.union(earlier).copied().collect();
            all.extend(self.acceptable_errors(m, max_worker_deaths, &union));
        }
        all
    }

    /// Task `m` and every task it depends on, transitively.
    pub fn upstream(&self, m: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![m];
        while let Some(t) = stack.pop() {
            if seen.insert(t) {
                stack.extend(self.tasks[t].deps.iter().copied());
            }
        }
        seen
    }

    /// A random graph of between `tasks_min` and `tasks_max` tasks (approximately: tree shapes
    /// round to whole levels).
    /// `names`: worker ids a task may be restricted to (empty: no `workers` restrictions).
    pub fn random(
        rng: &mut impl Rng,
        tasks_min: u32,
        tasks_max: u32,
        name: &str,
        names: &[String],
    ) -> GraphModel {
        // Most graphs are small so that many seeds run quickly; a few are large.
        let n = if rng.gen_bool(0.5) {
            rng.gen_range(tasks_min..=tasks_max.min(tasks_min.max(60)))
        } else {
            rng.gen_range(tasks_min..=tasks_max)
        } as usize;
        let mut b = GraphBuilder::new(name);
        match rng.gen_range(0..10) {
            0..=4 => random_dag(&mut b, rng, n),
            5..=6 => {
                let leaves = (n / 2).max(2);
                tree_reduction(&mut b, rng, leaves);
            }
            7 => {
                chain(&mut b, rng, n);
            }
            _ => {
                // A mix: a chain and a reduction feeding a final join.
                let c = chain(&mut b, rng, n / 3 + 1);
                let r = tree_reduction(&mut b, rng, n / 3 + 2);
                b.sum(&[rng.gen_range(-5..=5)], &[c, r]);
            }
        }
        if rng.gen_bool(0.3) {
            add_failures(&mut b, rng);
        }
        if rng.gen_bool(0.12) {
            add_killer(&mut b, rng);
        }
        if rng.gen_bool(0.12) {
            add_time_limits(&mut b, rng);
        }
        if rng.gen_bool(0.35) {
            add_placement(&mut b, rng, names);
        }
        if rng.gen_bool(0.3) {
            // Explicit outputs, including some intermediate tasks.
            let k = rng.gen_range(1..=4.min(b.tasks.len()));
            for _ in 0..k {
                let o = rng.gen_range(0..b.tasks.len());
                b.output(o);
            }
        }
        let detach = rng.gen_bool(0.2);
        b.build(Some(rng), detach)
    }
}

fn fail_message(args: &[String]) -> String {
    if args.is_empty() {
        "task failed on purpose (builtin fail)".to_string()
    } else {
        args.join(" ")
    }
}

/// Builds a [`GraphModel`] task by task, working out each expected value as it goes.
/// Dependencies must be added before their dependents.
#[derive(Clone, Debug)]
pub struct GraphBuilder {
    prefix: String,
    tasks: Vec<ModelTask>,
    outputs: Vec<usize>,
}

impl GraphBuilder {
    /// `prefix` starts every key, so that keys of different graphs differ in traces.
    pub fn new(prefix: &str) -> GraphBuilder {
        GraphBuilder {
            prefix: prefix.to_string(),
            tasks: Vec::new(),
            outputs: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// `sum` of `args` and the (numeric) results of `deps`.
    pub fn sum(&mut self, args: &[i64], deps: &[usize]) -> usize {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.push(Builtin::Sum, args, deps, 0)
    }

    /// `concat` of `args` then the results of `deps`.
    pub fn concat(&mut self, args: &[&str], deps: &[usize]) -> usize {
        let args = args.iter().map(|a| a.to_string()).collect();
        self.push(Builtin::Concat, args, deps, 0)
    }

    pub fn noop(&mut self, deps: &[usize]) -> usize {
        self.push(Builtin::Noop, Vec::new(), deps, 0)
    }

    /// A task that sleeps `ms` virtual milliseconds and returns nothing.
    pub fn sleep_ms(&mut self, ms: u64, deps: &[usize]) -> usize {
        self.push(Builtin::SleepMs, vec![ms.to_string()], deps, 0)
    }

    /// A task that always fails, however often it is retried.
    pub fn fail(&mut self, message: &str, retries: u32, deps: &[usize]) -> usize {
        let args = if message.is_empty() {
            Vec::new()
        } else {
            vec![message.to_string()]
        };
        self.push(Builtin::Fail, args, deps, retries)
    }

    /// A killer (`abort`): every simulated worker that starts it dies, until the scheduler
    /// fails it as a poison task.
    pub fn killer(&mut self, deps: &[usize]) -> usize {
        self.push(Builtin::Abort, Vec::new(), deps, 0)
    }

    /// A `sleep_ms` with a time limit. It must either fit (`limit_ms` at least
    /// `ms` + 100) or be far over it (`ms` = [`TIME_LIMITED_SLEEP_MS`]), in which case every
    /// attempt is failed by the worker's timer.
    pub fn sleep_with_limit(
        &mut self,
        ms: u64,
        limit_ms: u32,
        retries: u32,
        deps: &[usize],
    ) -> usize {
        self.push_with_limit(
            Builtin::SleepMs,
            vec![ms.to_string()],
            deps,
            retries,
            Some(limit_ms),
        )
    }

    /// Make task `t` fail its first `failures` executions, and give it enough retries.
    pub fn flaky(&mut self, t: usize, failures: u32) {
        self.tasks[t].flaky = failures;
        self.tasks[t].retries = self.tasks[t].retries.max(failures);
    }

    pub fn output(&mut self, t: usize) {
        if !self.outputs.contains(&t) {
            self.outputs.push(t);
        }
    }

    fn push(&mut self, op: Builtin, args: Vec<String>, deps: &[usize], retries: u32) -> usize {
        self.push_with_limit(op, args, deps, retries, None)
    }

    fn push_with_limit(
        &mut self,
        op: Builtin,
        args: Vec<String>,
        deps: &[usize],
        retries: u32,
        timeout_ms: Option<u32>,
    ) -> usize {
        let m = self.tasks.len();
        assert!(
            deps.iter().all(|&d| d < m),
            "dependencies are added before dependents"
        );
        let mut fail_roots: BTreeSet<usize> = BTreeSet::new();
        for &d in deps {
            fail_roots.extend(self.tasks[d].fail_roots.iter().copied());
        }
        let fails = ModelTask::fails_by_itself(op, &args, timeout_ms);
        if fails {
            fail_roots.insert(m);
        }
        let upstream_failed = deps
            .iter()
            .any(|&d| self.tasks[d].expected == Expected::Failed);
        let expected = if upstream_failed || fails {
            Expected::Failed
        } else {
            Expected::Value(self.value_of(op, &args, deps))
        };
        self.tasks.push(ModelTask {
            key: format!("{}-{m}", self.prefix),
            op,
            args,
            deps: deps.to_vec(),
            retries,
            flaky: 0,
            timeout_ms,
            expected,
            fail_roots,
            placement: Placement::default(),
            adopt: None,
        });
        m
    }

    /// An adopt task: its value is `src`'s, expected to be `expected` (worked out by the
    /// caller from the source's own model).
    pub fn adopt(&mut self, src: AdoptModel, expected: Expected) -> usize {
        let m = self.tasks.len();
        self.tasks.push(ModelTask {
            key: format!("{}-{m}", self.prefix),
            op: Builtin::Noop,
            args: Vec::new(),
            deps: Vec::new(),
            retries: 0,
            flaky: 0,
            timeout_ms: None,
            expected,
            fail_roots: BTreeSet::new(),
            placement: Placement::default(),
            adopt: Some(src),
        });
        m
    }

    /// The tasks so far, in model order.
    pub fn tasks(&self) -> &[ModelTask] {
        &self.tasks
    }

    /// Task `m` as a client submits it.
    pub fn task_spec(&self, m: usize) -> TaskSpec {
        let t = &self.tasks[m];
        let adopt = t.adopt.as_ref().map(|a| AdoptSpec {
            graph: a.graph,
            key: a.key.clone(),
        });
        TaskSpec {
            key: t.key.clone(),
            builtin: adopt.is_none().then(|| t.op.name().to_string()),
            cmd: None,
            args: t.args.clone(),
            deps: t.deps.iter().map(|&d| self.tasks[d].key.clone()).collect(),
            env: Default::default(),
            cwd: None,
            retries: t.retries,
            timeout: t.timeout_ms.map(|ms| format!("{ms}ms")),
            put: None,
            adopt,
            python: None,
            priority: t.placement.priority,
            order: None,
            resources: t
                .placement
                .gpu
                .map(|g| (GPU_RESOURCE.to_string(), g))
                .into_iter()
                .collect(),
            workers: t.placement.workers.clone(),
            allow_other_workers: t.placement.allow_other_workers,
        }
    }

    /// Set task `t`'s placement controls.
    pub fn place(&mut self, t: usize, placement: Placement) {
        self.tasks[t].placement = placement;
    }

    fn value_of(&self, op: Builtin, args: &[String], deps: &[usize]) -> Bytes {
        let dep_values = deps.iter().map(|&d| match &self.tasks[d].expected {
            Expected::Value(v) => v.clone(),
            Expected::Failed => unreachable!("checked by the caller"),
        });
        match op {
            Builtin::Sum => {
                let mut total: i128 = 0;
                for a in args {
                    total += a
                        .parse::<i128>()
                        .expect("sum arguments are generated as integers");
                }
                for v in dep_values {
                    let text = std::str::from_utf8(&v).expect("numeric results are ASCII");
                    total += text
                        .parse::<i128>()
                        .expect("sum only depends on numeric tasks");
                }
                Bytes::from(total.to_string())
            }
            Builtin::Concat => {
                let mut out = Vec::new();
                for a in args {
                    out.extend_from_slice(a.as_bytes());
                }
                for v in dep_values {
                    out.extend_from_slice(&v);
                }
                Bytes::from(out)
            }
            Builtin::Noop | Builtin::SleepMs => Bytes::new(),
            Builtin::Fail | Builtin::Abort | Builtin::BlockLoop | Builtin::AllocMb => {
                unreachable!("{op:?} has no value")
            }
        }
    }

    /// The expected magnitude or size if `op` were added with these inputs, to keep values
    /// bounded.
    fn too_big(&self, op: Builtin, args: &[String], deps: &[usize]) -> bool {
        if deps
            .iter()
            .any(|&d| self.tasks[d].expected == Expected::Failed)
        {
            return false;
        }
        let v = self.value_of(op, args, deps);
        match op {
            Builtin::Sum => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<i128>().ok())
                .is_none_or(|x| x.abs() > SUM_MAGNITUDE_MAX),
            _ => v.len() > CONCAT_BYTES_MAX,
        }
    }

    /// Finish the graph. With an RNG the spec lists the tasks in a shuffled order (the
    /// scheduler must not assume topological order); `detach` is passed on to `Submit`.
    pub fn build(self, rng: Option<&mut dyn rand::RngCore>, detach: bool) -> GraphModel {
        let n = self.tasks.len();
        let mut model_of: Vec<usize> = (0..n).collect();
        if let Some(rng) = rng {
            model_of.shuffle(rng);
        }
        let mut spec_pos = vec![0u32; n];
        for (pos, &m) in model_of.iter().enumerate() {
            spec_pos[m] = pos as u32;
        }
        let tasks_spec = model_of.iter().map(|&m| self.task_spec(m)).collect();
        let outputs = if self.outputs.is_empty() {
            let mut has_dependent = vec![false; n];
            for t in &self.tasks {
                for &d in &t.deps {
                    has_dependent[d] = true;
                }
            }
            // The scheduler lists default outputs in spec order.
            let mut sinks: Vec<usize> = (0..n).filter(|&m| !has_dependent[m]).collect();
            sinks.sort_by_key(|&m| spec_pos[m]);
            sinks
        } else {
            self.outputs.clone()
        };
        let spec = GraphSpec {
            tasks: tasks_spec,
            outputs: self
                .outputs
                .iter()
                .map(|&o| self.tasks[o].key.clone())
                .collect(),
        };
        GraphModel {
            tasks: self.tasks,
            spec_pos,
            model_of,
            outputs,
            spec,
            detach,
        }
    }
}

// === shapes ===

/// Priorities, GPU amounts and worker restrictions on some tasks of the graph.
fn add_placement(b: &mut GraphBuilder, rng: &mut impl Rng, names: &[String]) {
    for t in 0..b.tasks.len() {
        let mut p = Placement::default();
        if rng.gen_bool(0.4) {
            p.priority = rng.gen_range(-3..=3);
        }
        if rng.gen_bool(0.25) {
            p.gpu = Some(if rng.gen_bool(0.5) {
                0.5
            } else {
                GPU_DECLARED_MIN
            });
        }
        if !names.is_empty() && rng.gen_bool(0.15) {
            let k = rng.gen_range(1..=2.min(names.len()));
            p.workers = Some(names.choose_multiple(rng, k).cloned().collect());
            p.allow_other_workers = rng.gen_bool(0.5);
        }
        b.place(t, p);
    }
}

/// Random DAG: each task depends on up to three recent tasks of a compatible type.
fn random_dag(b: &mut GraphBuilder, rng: &mut impl Rng, n: usize) {
    const WINDOW: usize = 12;
    for _ in 0..n {
        let m = b.len();
        let lo = m.saturating_sub(WINDOW);
        let want = if m == 0 {
            0
        } else {
            rng.gen_range(0..=3.min(m))
        };
        let op = match rng.gen_range(0..20) {
            0..=11 => Builtin::Sum,
            12..=15 => Builtin::Concat,
            16..=17 => Builtin::Noop,
            _ => Builtin::SleepMs,
        };
        let mut deps: Vec<usize> = Vec::new();
        for _ in 0..want {
            let d = rng.gen_range(lo..m);
            let ok = op != Builtin::Sum
                || b.tasks[d].is_numeric()
                || b.tasks[d].expected == Expected::Failed;
            if ok && !deps.contains(&d) {
                deps.push(d);
            }
        }
        add_random_task(b, rng, op, &deps);
    }
}

fn add_random_task(b: &mut GraphBuilder, rng: &mut impl Rng, op: Builtin, deps: &[usize]) -> usize {
    match op {
        Builtin::Sum => {
            let args: Vec<String> = (0..rng.gen_range(0..=2))
                .map(|_| rng.gen_range(-50i64..=100).to_string())
                .collect();
            if b.too_big(Builtin::Sum, &args, deps) {
                return b.noop(deps);
            }
            b.push(Builtin::Sum, args, deps, 0)
        }
        Builtin::Concat => {
            let args: Vec<String> = (0..rng.gen_range(0..=2))
                .map(|_| {
                    let len = rng.gen_range(1..=4);
                    (0..len)
                        .map(|_| rng.gen_range(b'a'..=b'z') as char)
                        .collect()
                })
                .collect();
            if b.too_big(Builtin::Concat, &args, deps) {
                return b.noop(deps);
            }
            b.push(Builtin::Concat, args, deps, 0)
        }
        Builtin::SleepMs => b.sleep_ms(rng.gen_range(1..=SLEEP_MS_MAX), deps),
        _ => b.noop(deps),
    }
}

/// A sum reduction: `leaves` numbers, combined 2 to 4 at a time up to one root.
fn tree_reduction(b: &mut GraphBuilder, rng: &mut impl Rng, leaves: usize) -> usize {
    let mut level: Vec<usize> = (0..leaves.max(1))
        .map(|_| b.sum(&[rng.gen_range(-100..=1000)], &[]))
        .collect();
    while level.len() > 1 {
        let fan_in = rng.gen_range(2..=4);
        level = level.chunks(fan_in).map(|c| b.sum(&[], c)).collect();
    }
    level[0]
}

/// A chain of `len` sums, each adding a small number to its predecessor.
fn chain(b: &mut GraphBuilder, rng: &mut impl Rng, len: usize) -> usize {
    let mut prev = b.sum(&[rng.gen_range(0..=10)], &[]);
    for _ in 1..len.max(1) {
        prev = b.sum(&[rng.gen_range(-3..=7)], &[prev]);
    }
    prev
}

/// A killer somewhere, sometimes with a dependent (which must fail with it) and a sibling on
/// the same inputs (which must not).
fn add_killer(b: &mut GraphBuilder, rng: &mut impl Rng) {
    let n = b.len();
    let deps: Vec<usize> = if n > 0 && rng.gen_bool(0.5) {
        vec![rng.gen_range(0..n)]
    } else {
        Vec::new()
    };
    let k = b.killer(&deps);
    if rng.gen_bool(0.5) {
        b.concat(&["k"], &[k]);
    }
    if rng.gen_bool(0.5) {
        b.sleep_ms(rng.gen_range(1..=SLEEP_MS_MAX), &deps);
    }
}

/// A task that always exceeds its time limit (with a dependent) and one that always fits.
fn add_time_limits(b: &mut GraphBuilder, rng: &mut impl Rng) {
    let n = b.len();
    let deps: Vec<usize> = if n > 0 && rng.gen_bool(0.5) {
        vec![rng.gen_range(0..n)]
    } else {
        Vec::new()
    };
    let limit = rng.gen_range(20..=150);
    let t = b.sleep_with_limit(TIME_LIMITED_SLEEP_MS, limit, rng.gen_range(0..=1), &deps);
    if rng.gen_bool(0.5) {
        b.noop(&[t]);
    }
    let ms = rng.gen_range(1..=SLEEP_MS_MAX);
    let slack = rng.gen_range(TIME_LIMIT_SLACK_MS..=3 * TIME_LIMIT_SLACK_MS);
    b.sleep_with_limit(ms, (ms + slack) as u32, 0, &deps);
}

/// Sprinkle `fail` tasks (with retries that cannot help) and flaky tasks (whose retries do).
fn add_failures(b: &mut GraphBuilder, rng: &mut impl Rng) {
    let n = b.len();
    for _ in 0..rng.gen_range(1..=2) {
        let d = rng.gen_range(0..n);
        let f = b.fail("boom", rng.gen_range(0..=2), &[d]);
        if rng.gen_bool(0.5) {
            // Something downstream of the failure.
            b.concat(&["x"], &[f]);
        }
    }
    for _ in 0..rng.gen_range(0..=2) {
        let t = rng.gen_range(0..n);
        if b.tasks[t].op != Builtin::Fail {
            b.flaky(t, rng.gen_range(1..=2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn builder_computes_values_and_errors() {
        let mut b = GraphBuilder::new("g");
        let a = b.sum(&[1, 2], &[]);
        let c = b.sum(&[10], &[a]);
        let s = b.concat(&["x"], &[c, a]);
        let f = b.fail("bad", 1, &[]);
        let d = b.noop(&[f, s]);
        let m = b.build(None, false);
        assert_eq!(m.tasks[c].expected, Expected::Value(Bytes::from("13")));
        assert_eq!(m.tasks[s].expected, Expected::Value(Bytes::from("x133")));
        assert_eq!(m.tasks[d].expected, Expected::Failed);
        let none = BTreeSet::new();
        assert_eq!(
            m.acceptable_errors(f, 3, &none),
            vec![ErrorPattern::Exact("task \"g-3\" failed: bad".to_string())]
        );
        assert_eq!(
            m.acceptable_errors(d, 3, &none),
            vec![ErrorPattern::Exact(
                "dependency \"g-3\" failed: task \"g-3\" failed: bad".to_string()
            )]
        );
        assert_eq!(m.outputs, vec![d]);
        // A task seen poisoned: its error and its dependents' become acceptable.
        let poisoned: BTreeSet<usize> = [a].into();
        let errors = m.acceptable_errors(s, 3, &poisoned);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].matches(
            "dependency \"g-0\" failed: task \"g-0\" is a poison task: it was running on 3 \
             workers that died (limit RUSK_TASK_MAX_WORKER_DEATHS=3): w0 (inc#4): ..."
        ));
    }

    #[test]
    fn killers_and_time_limits_can_only_fail() {
        let mut b = GraphBuilder::new("k");
        let a = b.sum(&[1], &[]);
        let k = b.killer(&[a]);
        let after = b.concat(&["x"], &[k]);
        let slow = b.sleep_with_limit(TIME_LIMITED_SLEEP_MS, 50, 1, &[]);
        let fits = b.sleep_with_limit(20, 200, 0, &[a]);
        let m = b.build(None, false);
        assert_eq!(m.tasks[k].expected, Expected::Failed);
        assert_eq!(m.tasks[after].expected, Expected::Failed);
        assert_eq!(m.tasks[slow].expected, Expected::Failed);
        assert_eq!(m.tasks[fits].expected, Expected::Value(Bytes::new()));
        assert_eq!(m.tasks[slow].failures_allowed(), 2);
        assert_eq!(m.tasks[k].failures_allowed(), 0);
        let none = BTreeSet::new();
        assert_eq!(
            m.acceptable_errors(slow, 3, &none),
            vec![ErrorPattern::Exact(
                "task \"k-3\" failed: exceeded its time limit of 50 ms and was killed".into()
            )]
        );
        assert!(m.acceptable_errors(after, 2, &none)[0].matches(
            "dependency \"k-1\" failed: task \"k-1\" is a poison task: it was running on 2 \
             workers that died (limit RUSK_TASK_MAX_WORKER_DEATHS=2): ..."
        ));
        assert_eq!(m.spec.tasks[slow].timeout.as_deref(), Some("50ms"));
    }

    #[test]
    fn random_graphs_compile_and_keep_values_bounded() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for i in 0..200 {
            let names = ["a".to_string(), "b".to_string()];
            let m = GraphModel::random(&mut rng, 5, 300, &format!("g{i}"), &names);
            let compiled = rusk_core::graph::compile(m.spec.clone()).expect("valid graph");
            assert_eq!(compiled.tasks.len(), m.tasks.len());
            let outs: Vec<usize> = compiled
                .outputs
                .iter()
                .map(|&o| m.model_of[o as usize])
                .collect();
            assert_eq!(outs, m.outputs);
            for t in &m.tasks {
                if let Expected::Value(v) = &t.expected {
                    assert!(v.len() <= CONCAT_BYTES_MAX + 40);
                }
            }
        }
    }
}
