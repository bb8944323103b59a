//! `rusk-bench`: the benchmarks of the core-engine issue.
//!
//! - `rusk-bench core`: the scheduler state machine alone, in process, with simulated workers
//!   that answer every assignment at once: transitions/s, tasks/s and scheduler memory per task
//!   for 1,000,000-task graphs (see [`core`]).
//! - `rusk-bench e2e`: a real cluster (`rusk local`: a scheduler and 2 single-threaded workers
//!   on loopback) running 100,000-task graphs: median tasks/s over 5 runs (see [`e2e`]).
//!
//! - `rusk-bench net`: what TLS costs (tasks/s and transfer GB/s against plaintext) and what a
//!   flood of unauthenticated connections costs a graph (see [`net`]).
//! - `rusk-bench journal`: what the scheduler's journal costs in tasks/s, and the time from a
//!   killed scheduler to its graph making progress again (see [`journal`]).
//!
//! All print a table of figures with their targets, or with `--tsv` one line per figure for
//! `bench/run` to collect (format in [`report`]). Progress goes to stderr. Exit status: 0 when
//! the benchmarks ran (whatever the verdicts), 1 when a run failed, 2 on bad usage.
mod alloc;
mod core;
mod e2e;
mod graphs;
mod journal;
mod link;
mod net;
mod report;

use graphs::Shape;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const USAGE: &str = "\
usage: rusk-bench core [--tasks N] [--repeat N] [--workers N] [--nthreads N]
                       [--graph independent|tree|all] [--tsv]
       rusk-bench e2e  [--tasks N] [--repeat N] [--workers N] [--nthreads N]
                       [--graph independent|tree|all] [--rusk PATH] [--timeout SECS] [--tsv]
       rusk-bench net  [--tasks N] [--repeat N] [--rusk PATH] [--timeout SECS]
                       [--only tasks|transfer|flood] [--link-gbit N] [--tsv]
       rusk-bench journal [--tasks N] [--repeat N] [--rusk PATH] [--timeout SECS] [--tsv]

core: the scheduler core in process with instant simulated workers
      (defaults: --tasks 1000000 --repeat 3 --workers 2 --nthreads 1)
e2e:  `rusk local GRAPH --json` with real processes on loopback
      (defaults: --tasks 100000 --repeat 5 --workers 2 --nthreads 1 --timeout 600,
       --rusk: the rusk binary next to rusk-bench, else target/release/rusk)
net:  TLS against plaintext (tasks/s of `rusk local`, GB/s of a 1 GiB transfer over loopback
      and, as root, over a --link-gbit link between two network namespaces, 0: not) and a
      graph with and without 2,000 unauthenticated connections held (defaults: --tasks 100000
      --repeat 3 --link-gbit 10)
journal: tasks/s of `rusk local` with and without its journal, and kill -9 of a journaled
      scheduler to its graph progressing again (defaults: --tasks 100000 --repeat 3)
A tree graph of --tasks N has N/2 leaves, so N-1 tasks.";

/// Options common to both suites, with their suite-specific defaults applied.
struct Args {
    suite: String,
    tasks: u64,
    repeat: u32,
    workers: u32,
    nthreads: u32,
    shapes: Vec<Shape>,
    rusk: Option<PathBuf>,
    timeout: Duration,
    tsv: bool,
    only: Option<String>,
    link_gbit: u32,
}

fn number<T>(flag: &str, value: Option<String>, min: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let v = value.ok_or_else(|| format!("{flag} needs a value"))?;
    let n: T = v
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{flag}: {v:?} is not a number"))?;
    if n < min {
        return Err(format!("{flag} must be at least {min}"));
    }
    Ok(n)
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let suite = it.next().ok_or("no suite given")?;
    let (tasks, repeat) = match suite.as_str() {
        "core" => (1_000_000, 3),
        "e2e" => (100_000, 5),
        "net" | "journal" => (100_000, 3),
        "help" | "-h" | "--help" => return Err(String::new()),
        other => return Err(format!("unknown suite {other:?}")),
    };
    let mut a = Args {
        suite,
        tasks,
        repeat,
        workers: 2,
        nthreads: 1,
        shapes: Shape::ALL.to_vec(),
        rusk: None,
        timeout: Duration::from_secs(600),
        tsv: false,
        only: None,
        link_gbit: 10,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--tasks" => a.tasks = number(&flag, it.next(), 2)?,
            "--repeat" => a.repeat = number(&flag, it.next(), 1)?,
            "--workers" => a.workers = number(&flag, it.next(), 1)?,
            "--nthreads" => a.nthreads = number(&flag, it.next(), 1)?,
            "--timeout" => a.timeout = Duration::from_secs(number(&flag, it.next(), 1)?),
            "--rusk" => a.rusk = Some(it.next().ok_or("--rusk needs a path")?.into()),
            "--graph" => {
                let v = it.next().ok_or("--graph needs a value")?;
                a.shapes = match v.as_str() {
                    "all" => Shape::ALL.to_vec(),
                    other => vec![other.parse()?],
                };
            }
            "--tsv" => a.tsv = true,
            "--link-gbit" => a.link_gbit = number(&flag, it.next(), 0)?,
            "--only" => {
                let v = it.next().ok_or("--only needs a value")?;
                if !net::PARTS.contains(&v.as_str()) || a.suite != "net" {
                    return Err(format!(
                        "--only {v:?}: the net suite's parts are {:?}",
                        net::PARTS
                    ));
                }
                a.only = Some(v);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if a.tasks > rusk_core::graph::MAX_TASKS_PER_GRAPH as u64 {
        return Err(format!(
            "--tasks is above the scheduler's limit of {} tasks per graph",
            rusk_core::graph::MAX_TASKS_PER_GRAPH
        ));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rusk-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if a.suite == "net" {
        net::run(&net::NetOptions {
            tasks: a.tasks,
            repeat: a.repeat,
            rusk: a.rusk.unwrap_or_else(e2e::default_rusk),
            timeout: a.timeout,
            transfer_mib: 1024,
            only: a.only,
            link_gbit: a.link_gbit,
        })
    } else if a.suite == "journal" {
        journal::run(&journal::JournalOptions {
            tasks: a.tasks,
            repeat: a.repeat,
            rusk: a.rusk.unwrap_or_else(e2e::default_rusk),
            timeout: a.timeout,
        })
    } else if a.suite == "core" {
        core::run(&core::CoreOptions {
            tasks: a.tasks,
            repeat: a.repeat,
            workers: a.workers,
            nthreads: a.nthreads,
            shapes: a.shapes,
        })
    } else {
        e2e::run(&e2e::E2eOptions {
            tasks: a.tasks,
            repeat: a.repeat,
            workers: a.workers,
            nthreads: a.nthreads,
            shapes: a.shapes,
            rusk: a.rusk.unwrap_or_else(e2e::default_rusk),
            timeout: a.timeout,
            local_args: Vec::new(),
        })
    };
    match result {
        Ok(records) => {
            report::print(&records, a.tsv);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rusk-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults_and_flags() {
        let a = args("core").unwrap();
        assert_eq!((a.tasks, a.repeat, a.workers), (1_000_000, 3, 2));
        let a = args("e2e --tasks 1_000 --graph tree --tsv").unwrap();
        assert_eq!((a.tasks, a.repeat), (1000, 5));
        assert_eq!(a.shapes, vec![Shape::Tree]);
        assert!(a.tsv);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(args("").is_err());
        assert!(args("nope").is_err());
        assert!(args("core --tasks").is_err());
        assert!(args("core --tasks x").is_err());
        assert!(args("core --tasks 1").is_err());
        assert!(args("core --repeat 0").is_err());
        assert!(args("core --graph cube").is_err());
        assert!(args("core --frobnicate").is_err());
        assert!(args("core --tasks 99999999999").is_err());
    }
}
