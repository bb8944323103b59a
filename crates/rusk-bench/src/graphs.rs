//! The benchmark graphs, shared by the in-process and the end-to-end benchmarks.
//!
//! - *independent*: `n` `noop` tasks with no dependencies; every task is an output.
//! - *tree*: a binary tree reduction of `sum` tasks. Leaf `i` (1-based) has the argument `i`;
//!   each inner task sums its two children; the root is the only output and must equal
//!   `leaves * (leaves + 1) / 2`. A level of odd length carries its last task up unchanged, so
//!   the tree has exactly `2 * leaves - 1` tasks: `n` for odd `n`, `n - 1` for even `n`.
use rusk_proto::graph::{GraphSpec, TaskSpec};
use std::fmt;
use std::str::FromStr;

/// Which graph shape to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Independent,
    Tree,
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::Independent, Shape::Tree];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Independent => "independent",
            Shape::Tree => "tree",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Shape, String> {
        Shape::ALL
            .into_iter()
            .find(|sh| sh.name() == s)
            .ok_or_else(|| format!("unknown graph {s:?} (known: independent, tree)"))
    }
}

/// A generated graph and what its output must be.
pub struct BenchGraph {
    pub spec: GraphSpec,
    /// For the tree: the root's key and the sum it must produce.
    pub expected_root: Option<(String, u128)>,
}

fn task(key: String, builtin: &str, args: Vec<String>, deps: Vec<String>) -> TaskSpec {
    TaskSpec {
        key,
        builtin: Some(builtin.to_string()),
        cmd: None,
        args,
        deps,
        env: Default::default(),
        cwd: None,
        retries: 0,
        timeout: None,
        put: None,
        python: None,
        ..Default::default()
    }
}

/// Build a graph of `tasks` tasks (`tasks - 1` for an even-sized tree).
pub fn build(shape: Shape, tasks: u64) -> BenchGraph {
    match shape {
        Shape::Independent => independent(tasks),
        Shape::Tree => tree(tasks.div_ceil(2)),
    }
}

/// `n` independent `noop` tasks, all outputs (the default when `outputs` is empty).
pub fn independent(n: u64) -> BenchGraph {
    let tasks = (0..n)
        .map(|i| task(format!("t{i}"), "noop", vec![], vec![]))
        .collect();
    BenchGraph {
        spec: GraphSpec {
            tasks,
            outputs: vec![],
        },
        expected_root: None,
    }
}

/// A binary tree reduction over `leaves` leaves (`2 * leaves - 1` tasks), leaves first, then
/// each level in order, so that siblings are neighbours. Every inner task has two inputs.
pub fn tree(leaves: u64) -> BenchGraph {
    let leaves = leaves.max(1);
    let mut tasks = Vec::with_capacity((2 * leaves) as usize);
    let mut level: Vec<String> = (1..=leaves)
        .map(|i| {
            let key = format!("leaf-{i}");
            tasks.push(task(key.clone(), "sum", vec![i.to_string()], vec![]));
            key
        })
        .collect();
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        level = level
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| match pair {
                [single] => single.clone(),
                _ => {
                    let key = format!("sum-{depth}-{i}");
                    tasks.push(task(key.clone(), "sum", vec![], pair.to_vec()));
                    key
                }
            })
            .collect();
    }
    let root = level.pop().unwrap_or_default();
    let l = leaves as u128;
    BenchGraph {
        spec: GraphSpec {
            tasks,
            outputs: vec![root.clone()],
        },
        expected_root: Some((root, l * (l + 1) / 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_has_two_leaves_minus_one_tasks_and_one_root() {
        assert_eq!(build(Shape::Tree, 1_000_000).spec.tasks.len(), 999_999);
        assert_eq!(build(Shape::Tree, 100_001).spec.tasks.len(), 100_001);
        for leaves in [1u64, 2, 3, 5, 8, 1000, 15_625] {
            let g = tree(leaves);
            assert_eq!(g.spec.tasks.len() as u64, 2 * leaves - 1);
            let (root, sum) = g.expected_root.unwrap();
            assert_eq!(g.spec.outputs, vec![root.clone()]);
            assert_eq!(sum, (leaves as u128) * (leaves as u128 + 1) / 2);
            assert!(g.spec.tasks.iter().all(|t| t.deps.len() != 1));
            assert!(rusk_core::graph::compile(g.spec).is_ok());
        }
    }

    #[test]
    fn independent_has_n_tasks() {
        let g = independent(10);
        assert_eq!(g.spec.tasks.len(), 10);
        assert!(g.spec.outputs.is_empty());
        assert!(rusk_core::graph::compile(g.spec).is_ok());
    }
}
