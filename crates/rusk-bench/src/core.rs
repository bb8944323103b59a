//! `rusk-bench core`: the scheduler state machine alone, in process, no network.
//!
//! The real [`Scheduler`] is driven the way the scheduler shell drives it: every message is one
//! `handle_into` call, and commands are carried out after a batch of events. The workers are
//! simulated: each turn, every worker answers *all* the `Assign`s it has received (one frame's
//! worth, as a real worker batches its results) with `TaskDone`, instantly. So the time measured
//! is the scheduler's own work (compiling the graph, state transitions, placement, building
//! assignments and releases) plus the negligible cost of routing commands.
//!
//! Memory is measured with the counting allocator of this crate: the live heap bytes once the
//! `Submit` has been handled (the spec has been moved into the scheduler, compiled and dropped)
//! minus the live bytes before the spec was built, divided by the number of tasks.
use crate::alloc;
use crate::graphs::{self, Shape};
use crate::report::{median, Record, Target};
use rusk_core::scheduler::{Command, Event, Scheduler, SchedulerConfig};
use rusk_proto::msg::{
    Assignment, ClientToScheduler, SchedulerToClient, SchedulerToWorker, WorkerInfo,
    WorkerToScheduler,
};
use rusk_proto::{ClientId, Incarnation};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Targets from the core-engine issue.
pub const TRANSITIONS_PER_SEC_TARGET: f64 = 1_000_000.0;
pub const BYTES_PER_TASK_TARGET: f64 = 1024.0;

pub struct CoreOptions {
    pub tasks: u64,
    pub repeat: u32,
    pub workers: u32,
    pub nthreads: u32,
    pub shapes: Vec<Shape>,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct CoreRun {
    pub tasks: u64,
    pub transitions: u64,
    /// Handling the `Submit` (compile and add the graph).
    pub submit: Duration,
    /// From the start of the `Submit` to `GraphFinished`.
    pub total: Duration,
    /// Bytes of the `GraphSpec` itself (not held by the scheduler; for context).
    pub spec_bytes: usize,
    /// Live bytes held once the submit was handled, over the baseline.
    pub held_bytes: usize,
    pub held_allocs: usize,
    /// Peak live bytes over the baseline while the submit was handled (spec included).
    pub peak_submit_bytes: usize,
    /// Peak live bytes over the baseline from the end of the submit to the end of the run.
    pub peak_run_bytes: usize,
    pub assigns: u64,
    pub releases: u64,
    pub turns: u64,
}

struct SimWorker {
    incarnation: Incarnation,
    inbox: Vec<Arc<Assignment>>,
}

/// Run one graph to completion on a fresh scheduler.
pub fn run_once(shape: Shape, tasks: u64, workers: u32, nthreads: u32) -> Result<CoreRun, String> {
    let config = SchedulerConfig {
        // Simulated workers never send heartbeats; the shell's clock still runs.
        worker_ttl: Duration::from_secs(3600),
        // The simulated workers run every task at once: nothing to balance.
        work_stealing: false,
        journal: std::env::var_os("RUSK_BENCH_CORE_JOURNAL").is_some(),
        ..SchedulerConfig::default()
    };
    let mut sched = Scheduler::new(config);
    let mut out: Vec<Command> = Vec::new();
    let clock = Instant::now();
    let mut sims: Vec<SimWorker> = Vec::new();
    for i in 0..workers {
        let incarnation = Incarnation(i as u64 + 1);
        let info = WorkerInfo {
            name: format!("sim-{i}"),
            host: "127.0.0.1".into(),
            pid: 0,
            nthreads,
            data_address: format!("127.0.0.1:{}", 40_000 + i),
            nanny: None,
            slot: None,
            resources: Default::default(),
            held: Vec::new(),
            running: Vec::new(),
        };
        sched.handle_into(
            clock.elapsed(),
            Event::WorkerJoined { incarnation, info },
            &mut out,
        );
        sims.push(SimWorker {
            incarnation,
            inbox: Vec::new(),
        });
    }
    let client = ClientId(1);
    sched.handle_into(clock.elapsed(), Event::ClientJoined { client }, &mut out);
    out.clear();
    out.shrink_to_fit();

    let baseline = alloc::live();
    let graph = graphs::build(shape, tasks);
    let n = graph.spec.tasks.len() as u64;
    let spec_bytes = alloc::live().bytes.saturating_sub(baseline.bytes);

    alloc::reset_peak();
    let t0 = Instant::now();
    let submit = ClientToScheduler::Submit {
        graph: graph.spec,
        detach: false,
    };
    sched.handle_into(
        clock.elapsed(),
        Event::ClientMessage {
            client,
            msg: submit,
        },
        &mut out,
    );
    let submit_time = t0.elapsed();
    let peak_submit_bytes = alloc::peak().saturating_sub(baseline.bytes);
    let held = alloc::live();
    let held_bytes = held.bytes.saturating_sub(baseline.bytes);
    let held_allocs = held.allocs.saturating_sub(baseline.allocs);
    alloc::reset_peak();

    let mut assigns = 0u64;
    let mut releases = 0u64;
    let mut turns = 0u64;
    let mut finished = false;
    let mut batch: Vec<Arc<Assignment>> = Vec::new();
    loop {
        // Carry out the commands of the last batch of events.
        for cmd in out.drain(..) {
            match cmd {
                Command::ToWorker { incarnation, msg } => match msg {
                    SchedulerToWorker::Assign(a) => {
                        assigns += 1;
                        let w = sims
                            .iter_mut()
                            .find(|w| w.incarnation == incarnation)
                            .ok_or_else(|| format!("assignment to unknown worker {incarnation}"))?;
                        w.inbox.push(a);
                    }
                    SchedulerToWorker::Release { tasks } => releases += tasks.len() as u64,
                    SchedulerToWorker::Welcome { .. }
                    | SchedulerToWorker::Cancel { .. }
                    | SchedulerToWorker::Upload { .. } => {}
                    SchedulerToWorker::Steal { .. } => {
                        return Err("a steal with stealing off".into());
                    }
                    SchedulerToWorker::Replicate { .. } => {
                        return Err("a replicate nobody asked for".into());
                    }
                },
                Command::ToClient { msg, .. } => match msg {
                    SchedulerToClient::GraphFinished { outputs, .. } => {
                        finished = true;
                        let failed = outputs
                            .iter()
                            .filter(|o| {
                                !matches!(o.result, rusk_proto::msg::OutputResult::Ready { .. })
                            })
                            .count();
                        if failed > 0 {
                            return Err(format!("{failed} output(s) failed"));
                        }
                    }
                    SchedulerToClient::Rejected { error } => {
                        return Err(format!("graph rejected: {error}"));
                    }
                    _ => {}
                },
                Command::DropWorker { incarnation, cause } => {
                    return Err(format!("scheduler dropped worker {incarnation}: {cause}"));
                }
                Command::Recovery(note) => {
                    return Err(format!("unexpected recovery: {note:?}"));
                }
                Command::Log(_) | Command::ToNanny { .. } | Command::Journal(_) => {}
            }
        }
        if finished {
            break;
        }
        // Every worker answers everything it was sent, as one batch of events.
        let mut answered = 0usize;
        for w in sims.iter_mut() {
            std::mem::swap(&mut batch, &mut w.inbox);
            let now = clock.elapsed();
            for a in batch.drain(..) {
                answered += 1;
                let msg = WorkerToScheduler::TaskDone {
                    task: a.task,
                    attempt: a.attempt,
                    size: 8,
                };
                sched.handle_into(
                    now,
                    Event::WorkerMessage {
                        incarnation: w.incarnation,
                        msg,
                    },
                    &mut out,
                );
            }
        }
        turns += 1;
        let now = clock.elapsed();
        if now >= sched.next_timeout() {
            sched.handle_into(now, Event::Tick, &mut out);
        }
        sched.flush_journal(&mut out);
        if answered == 0 && out.is_empty() {
            return Err(format!(
                "the run stalled after {assigns} assignments: nothing assigned, graph not \
                 finished (task counts: {:?})",
                sched.task_counts()
            ));
        }
    }
    let total = t0.elapsed();
    let peak_run_bytes = alloc::peak().saturating_sub(baseline.bytes);
    let counts = sched.task_counts();
    let done =
        counts.get("memory").copied().unwrap_or(0) + counts.get("released").copied().unwrap_or(0);
    if done != n {
        return Err(format!(
            "graph finished with {done} of {n} tasks done (task counts: {counts:?})"
        ));
    }
    let transitions = sched.stats().transitions;
    drop(sched);
    Ok(CoreRun {
        tasks: n,
        transitions,
        submit: submit_time,
        total,
        spec_bytes,
        held_bytes,
        held_allocs,
        peak_submit_bytes,
        peak_run_bytes,
        assigns,
        releases,
        turns,
    })
}

/// Run every requested graph `repeat` times; report medians.
pub fn run(opts: &CoreOptions) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    for &shape in &opts.shapes {
        let mut runs = Vec::new();
        for i in 0..opts.repeat {
            let r = run_once(shape, opts.tasks, opts.workers, opts.nthreads)
                .map_err(|e| format!("core {shape}: {e}"))?;
            eprintln!(
                "core {shape} run {}/{}: {} tasks, {} transitions in {:.3} s (submit {:.3} s), \
                 {:.0} transitions/s, {:.0} tasks/s, {:.0} B/task held, {} assigns, {} releases, {} turns",
                i + 1,
                opts.repeat,
                r.tasks,
                r.transitions,
                r.total.as_secs_f64(),
                r.submit.as_secs_f64(),
                r.transitions as f64 / r.total.as_secs_f64(),
                r.tasks as f64 / r.total.as_secs_f64(),
                r.held_bytes as f64 / r.tasks as f64,
                r.assigns,
                r.releases,
                r.turns,
            );
            runs.push(r);
        }
        let suite = "core";
        let n = runs[0].tasks as f64;
        let med = |f: &dyn Fn(&CoreRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        records.push(
            Record::new(
                suite,
                format!("{shape} {}: transitions/s", runs[0].tasks),
                med(&|r| r.transitions as f64 / r.total.as_secs_f64()),
                "1/s",
            )
            .target(Target::AtLeast(TRANSITIONS_PER_SEC_TARGET)),
        );
        records.push(Record::new(
            suite,
            format!("{shape} {}: tasks/s", runs[0].tasks),
            med(&|r| r.tasks as f64 / r.total.as_secs_f64()),
            "1/s",
        ));
        records.push(Record::new(
            suite,
            format!("{shape} {}: submit (compile + add)", runs[0].tasks),
            med(&|r| r.submit.as_secs_f64()),
            "s",
        ));
        records.push(
            Record::new(
                suite,
                format!("{shape} {}: scheduler memory/task", runs[0].tasks),
                med(&|r| r.held_bytes as f64) / n,
                "B",
            )
            .target(Target::Below(BYTES_PER_TASK_TARGET)),
        );
        records.push(Record::new(
            suite,
            format!("{shape} {}: live allocations/task", runs[0].tasks),
            med(&|r| r.held_allocs as f64) / n,
            "",
        ));
        records.push(Record::new(
            suite,
            format!("{shape} {}: peak during submit/task", runs[0].tasks),
            med(&|r| r.peak_submit_bytes as f64) / n,
            "B",
        ));
        records.push(Record::new(
            suite,
            format!("{shape} {}: peak during run/task", runs[0].tasks),
            med(&|r| r.peak_run_bytes as f64) / n,
            "B",
        ));
        records.push(Record::new(
            suite,
            format!("{shape} {}: GraphSpec size/task (not held)", runs[0].tasks),
            med(&|r| r.spec_bytes as f64) / n,
            "B",
        ));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_graphs_run_to_completion() {
        for shape in Shape::ALL {
            let r = run_once(shape, 2_000, 2, 1).unwrap();
            assert!(r.tasks >= 1_999);
            assert_eq!(r.assigns, r.tasks);
            // Waiting -> Ready -> Assigned -> Memory at least.
            assert!(r.transitions >= 3 * r.tasks);
            assert!(r.held_bytes > 0);
        }
    }
}
