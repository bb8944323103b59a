//! Unit tests of the executor pool's core, without Python: exact commands for each step, and
//! the invariants after every one.
use super::*;
use rusk_proto::GraphId;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
const HANG: Duration = Duration::from_secs(6);
const BUSY: Duration = Duration::from_secs(60);
const SIGKILL: Exit = Exit::Signal {
    signal: 9,
    name: "SIGKILL",
};

fn attempt_of(i: u64) -> (TaskRef, AttemptId) {
    (
        TaskRef {
            graph: GraphId(1),
            index: i as u32,
        },
        AttemptId(100 + i),
    )
}

fn e(n: u64) -> ExecId {
    ExecId(n)
}

fn j(n: u64) -> JobId {
    JobId(n)
}

fn pid(x: u64) -> u32 {
    1000 + x as u32
}

/// The value executor `x` computes for job `i`: who computed it shows.
fn value_of(x: u64, i: u64) -> Bytes {
    Bytes::from(format!("v{i}@{x}"))
}

/// Job `i` sent to executor `x` to start next (unclaimed: never copied).
fn send(x: u64, i: u64) -> Command {
    Command::Send {
        exec: e(x),
        job: j(i),
        claim: None,
    }
}

/// Job `i` sent to executor `x` under claim `gen`: it may wait there, or it is a copy.
fn send_claimed(x: u64, i: u64, gen: u32) -> Command {
    Command::Send {
        exec: e(x),
        job: j(i),
        claim: Some(gen),
    }
}

fn cancel(x: u64, i: u64) -> Command {
    Command::Cancel {
        exec: e(x),
        job: j(i),
    }
}

fn started(i: u64) -> Command {
    let (task, attempt) = attempt_of(i);
    Command::Started { task, attempt }
}

fn finished(i: u64, result: Result<Bytes, Failure>) -> Command {
    let (task, attempt) = attempt_of(i);
    Command::Finished {
        task,
        attempt,
        result,
    }
}

fn forget(i: u64) -> Command {
    Command::ForgetJob { job: j(i) }
}

fn kill(x: u64, capture_stacks: bool) -> Command {
    Command::Kill {
        exec: e(x),
        capture_stacks,
    }
}

/// The failure of a `Finished` for job `i` in `out`.
fn failure_of(out: &[Command], i: u64) -> Failure {
    let (task, attempt) = attempt_of(i);
    out.iter()
        .find_map(|c| match c {
            Command::Finished {
                task: t,
                attempt: a,
                result: Err(f),
            } if *t == task && *a == attempt => Some(f.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no failure of job {i} in {out:#?}"))
}

fn sends(out: &[Command]) -> Vec<(u64, u64)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Send { exec, job, .. } => Some((exec.0, job.0)),
            _ => None,
        })
        .collect()
}

fn kills(out: &[Command]) -> Vec<Command> {
    out.iter()
        .filter(|c| matches!(c, Command::Kill { .. }))
        .cloned()
        .collect()
}

struct Pool {
    core: PoolCore,
    now: Duration,
}

impl Pool {
    fn new(size: usize, eager: bool) -> Pool {
        Pool::with_timeouts(size, eager, HANG, BUSY)
    }

    fn with_timeouts(size: usize, eager: bool, hang: Duration, busy: Duration) -> Pool {
        Pool {
            core: PoolCore::new(PoolConfig {
                size,
                hang_timeout: hang,
                busy_timeout: busy,
                eager,
                python: "python3".into(),
            }),
            now: Duration::ZERO,
        }
    }

    /// An eager pool of `size` executors (ids and spawn order `1..=size`), all ready.
    fn ready(size: usize) -> Pool {
        Pool::ready_with(size, HANG, BUSY)
    }

    fn ready_with(size: usize, hang: Duration, busy: Duration) -> Pool {
        let mut p = Pool::with_timeouts(size, true, hang, busy);
        let out = p.core.start(p.now);
        let spawns: Vec<Command> = (1..=size as u64)
            .map(|x| Command::Spawn { exec: e(x) })
            .collect();
        assert_eq!(out, spawns);
        p.core.check_invariants();
        for x in 1..=size as u64 {
            assert_eq!(p.spawned(x), vec![]);
            assert_eq!(p.hello(x), vec![]);
        }
        p
    }

    fn step(&mut self, ev: Event) -> Vec<Command> {
        let out = self.core.handle(self.now, ev);
        self.core.check_invariants();
        out
    }

    fn execute(&mut self, i: u64) -> Vec<Command> {
        let (task, attempt) = attempt_of(i);
        self.step(Event::Execute {
            job: j(i),
            task,
            attempt,
        })
    }

    fn abandon(&mut self, i: u64) -> Vec<Command> {
        let (task, attempt) = attempt_of(i);
        self.step(Event::Abandon { task, attempt })
    }

    fn spawned(&mut self, x: u64) -> Vec<Command> {
        self.step(Event::Spawned {
            exec: e(x),
            pid: pid(x),
        })
    }

    fn hello(&mut self, x: u64) -> Vec<Command> {
        self.step(Event::Hello {
            exec: e(x),
            error: None,
        })
    }

    fn start(&mut self, x: u64, i: u64) -> Vec<Command> {
        self.step(Event::Started {
            exec: e(x),
            job: j(i),
        })
    }

    fn answer(&mut self, x: u64, i: u64) -> Vec<Command> {
        self.step(Event::Answered {
            exec: e(x),
            job: j(i),
            answer: Answer::Value(value_of(x, i)),
        })
    }

    fn skip(&mut self, x: u64, i: u64) -> Vec<Command> {
        self.step(Event::Answered {
            exec: e(x),
            job: j(i),
            answer: Answer::Skipped,
        })
    }

    fn closed(&mut self, x: u64) -> Vec<Command> {
        self.step(Event::Closed {
            exec: e(x),
            error: None,
        })
    }

    /// The process ends: of the pool's kill if `SIGKILL`, else by itself.
    fn exited(&mut self, x: u64, exit: Exit, stacks: Option<&str>, tail: &str) -> Vec<Command> {
        self.step(Event::Exited {
            exec: e(x),
            killed: exit == SIGKILL,
            exit,
            stacks: stacks.map(str::to_string),
            stderr_tail: tail.to_string(),
        })
    }

    /// Ticks every 100 ms for `d`, executor `x` silent since `since` with CPU time `cpu(now)`
    /// (every other executor just pinged). Stops at the first `Kill` and returns the commands.
    fn tick_silent(
        &mut self,
        x: u64,
        since: Duration,
        d: Duration,
        cpu: impl Fn(Duration) -> Duration,
    ) -> Vec<Command> {
        let until = self.now + d;
        let hang = self.core.config().hang_timeout;
        let mut all = Vec::new();
        while self.now < until {
            self.now += 100 * MS;
            let samples = self
                .core
                .execs
                .iter()
                .map(|ex| {
                    let last = if ex.id == e(x) { since } else { self.now };
                    let silent = self.now - last;
                    Sample {
                        exec: ex.id,
                        last_activity: Some(last),
                        cpu: samples_cpu(silent, hang).then(|| cpu(self.now)),
                    }
                })
                .collect();
            let out = self.step(Event::Tick { samples });
            let killed = !kills(&out).is_empty();
            all.extend(out);
            if killed {
                break;
            }
        }
        all
    }
}

#[test]
fn an_eager_pool_spawns_its_executors_and_sends_two_ahead_to_the_least_loaded() {
    let mut p = Pool::ready(2);
    assert_eq!(p.execute(0), vec![send(1, 0)]);
    assert_eq!(p.execute(1), vec![send(2, 1)]);
    // Queued behind a job: claimed, as they may be stolen while they wait.
    assert_eq!(p.execute(2), vec![send_claimed(1, 2, 0)]);
    assert_eq!(p.execute(3), vec![send_claimed(2, 3, 0)]);
    assert_eq!(p.execute(4), vec![], "both executors have two ahead");
    assert_eq!(p.start(1, 0), vec![started(0)]);
    p.now += 5 * MS;
    assert_eq!(
        p.answer(1, 0),
        vec![
            finished(0, Ok(value_of(1, 0))),
            forget(0),
            send_claimed(1, 4, 0)
        ]
    );
    assert_eq!(p.core.executors_alive(), 2);
}

#[test]
fn short_tasks_are_pipelined_sixteen_deep_and_long_ones_two() {
    let mut p = Pool::ready(1);
    let mut out = Vec::new();
    for i in 0..40 {
        out.extend(p.execute(i));
    }
    assert_eq!(sends(&out), vec![(1, 0), (1, 1)]);
    p.start(1, 0);
    p.now += 500 * Duration::from_micros(1);
    let out = p.answer(1, 0);
    assert_eq!(out[..2], [finished(0, Ok(value_of(1, 0))), forget(0)]);
    // Averaging 0.5 ms a task: 16 ahead (one was still queued).
    assert_eq!(sends(&out), (2..=16).map(|i| (1, i)).collect::<Vec<_>>());
    // A 50 ms task brings the average over 1 ms: back to two ahead, so nothing is sent until
    // the queue drains below that.
    p.start(1, 1);
    p.now += 50 * MS;
    assert_eq!(
        p.answer(1, 1),
        vec![finished(1, Ok(value_of(1, 1))), forget(1)]
    );
}

#[test]
fn a_job_behind_a_long_one_is_stolen_and_the_other_copy_cancelled() {
    let mut p = Pool::ready(2);
    for i in 0..3 {
        p.execute(i);
    }
    // 0 and 2 on executor 1, 1 on executor 2.
    let t0 = p.now;
    assert_eq!(p.start(1, 0), vec![started(0)]);
    assert_eq!(p.start(2, 1), vec![started(1)]);
    p.now += 5 * MS;
    // Executor 2 is idle, but 0 has run only 5 ms: not worth a copy yet.
    assert_eq!(
        p.answer(2, 1),
        vec![finished(1, Ok(value_of(2, 1))), forget(1)]
    );
    assert_eq!(p.core.next_timeout(), Some(t0 + STEAL_AFTER));
    p.now = t0 + STEAL_AFTER;
    let samples = vec![1, 2]
        .into_iter()
        .map(|x| Sample {
            exec: e(x),
            last_activity: Some(p.now),
            cpu: None,
        })
        .collect();
    // The copy shares the claim of the one it was sent with.
    assert_eq!(p.step(Event::Tick { samples }), vec![send_claimed(2, 2, 0)]);
    // The thief starts it first: it owns it, the other copy is cancelled.
    assert_eq!(p.start(2, 2), vec![started(2), cancel(1, 2)]);
    assert_eq!(
        p.core.next_timeout(),
        Some(t0 + STEAL_AFTER + 100 * MS),
        "nothing left to steal: the next periodic check"
    );
    // The cancel came too late: executor 1 finishes 0 and finds its copy of 2 claimed by
    // executor 2, so it skips it. The job is forgotten only when both have answered.
    assert_eq!(
        p.answer(1, 0),
        vec![finished(0, Ok(value_of(1, 0))), forget(0)]
    );
    assert_eq!(p.skip(1, 2), vec![]);
    assert_eq!(
        p.answer(2, 2),
        vec![finished(2, Ok(value_of(2, 2))), forget(2)]
    );
}

/// Two executors: 0 and 2 on executor 1, 1 on executor 2; 0 and 1 start, and 20 ms later
/// (executor 2 about to answer 1) job 2 is stealable.
fn two_behind_a_long_one() -> Pool {
    let mut p = Pool::ready(2);
    for i in 0..3 {
        p.execute(i);
    }
    p.start(1, 0);
    p.start(2, 1);
    p.now += 20 * MS;
    p
}

#[test]
fn a_cancelled_copy_skips_and_the_job_is_forgotten_after_both_answers() {
    let mut p = two_behind_a_long_one();
    // Idle and 0 running for 20 ms: the copy goes at once.
    assert_eq!(
        p.answer(2, 1),
        vec![
            finished(1, Ok(value_of(2, 1))),
            forget(1),
            send_claimed(2, 2, 0)
        ]
    );
    assert_eq!(p.start(2, 2), vec![started(2), cancel(1, 2)]);
    assert_eq!(
        p.answer(2, 2),
        vec![finished(2, Ok(value_of(2, 2)))],
        "executor 1 still holds it"
    );
    assert_eq!(p.skip(1, 2), vec![forget(2)]);
}

#[test]
fn a_claim_taken_by_an_executor_that_died_before_its_start_was_seen_is_renewed() {
    // 2 waits behind 0 on executor 1 and is copied to executor 2, which takes the claim and
    // dies before its `S` is read. Executor 1 then finds the claim taken and skips 2. Nobody
    // holds it any more: it goes back in line under claim 1 (claim 0 may be taken for good).
    let mut p = two_behind_a_long_one();
    p.answer(2, 1);
    assert_eq!(p.core.jobs[&j(2)].claim, Some(0));
    p.closed(2);
    let out = p.exited(2, SIGKILL, None, "");
    assert!(sends(&out).is_empty(), "executor 1 still holds 2: {out:?}");
    // To the replacement, still starting (so claimed).
    assert_eq!(p.skip(1, 2), vec![send_claimed(3, 2, 1)]);
}

#[test]
fn a_job_behind_a_starting_executor_is_stolen_at_once() {
    // Executor 1 is still starting when a job waits behind it: an idle one takes a copy at
    // once. Abandoned, the job is cancelled on both and forgotten once both have skipped it.
    let mut p = Pool::new(2, true);
    p.core.start(p.now);
    p.spawned(1);
    p.spawned(2);
    p.hello(2);
    p.execute(0); // to 2 (ready)
    p.execute(1); // to 1 (starting)
    p.start(2, 0);
    p.now += 3 * MS;
    assert_eq!(
        p.answer(2, 0),
        vec![
            finished(0, Ok(value_of(2, 0))),
            forget(0),
            send_claimed(2, 1, 0)
        ],
        "a job behind a starting executor is stolen at once"
    );
    p.abandon(1);
    assert_eq!(p.skip(1, 1), vec![]);
    assert_eq!(p.skip(2, 1), vec![forget(1)]);
}

#[test]
fn a_hung_executor_is_killed_with_its_stacks_and_replaced() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.execute(1);
    p.start(1, 0);
    let since = p.now;
    let out = p.tick_silent(1, since, 10 * S, |_| 2 * S);
    // Condemned, it no longer counts: its replacement starts at once.
    assert_eq!(out, vec![kill(1, true), Command::Spawn { exec: e(2) }]);
    let silent = p.now - since;
    // Judged on the silence up to the previous check (a tick ago).
    assert!(
        silent > HANG + 100 * MS && silent <= HANG + 300 * MS,
        "{silent:?}"
    );
    assert_eq!(p.closed(1), vec![]);
    let out = p.exited(1, SIGKILL, Some("File \"t.py\", line 1 in <lambda>"), "");
    assert_eq!(
        out[0],
        Command::Log(Log::ExecutorReplaced {
            pid: pid(1),
            death: Some(Death::Hung { silent }),
            exit: SIGKILL
        })
    );
    let m = failure_of(&out, 0).into_task_error().message;
    assert!(m.contains("sent no ping") && m.contains("GIL"), "{m}");
    assert!(m.contains("RUSK_EXECUTOR_HANG_TIMEOUT (now 6s)"), "{m}");
    assert!(
        m.ends_with(
            "Python stacks of the executor when it was killed:\nFile \"t.py\", line 1 in <lambda>"
        ),
        "{m}"
    );
    // The queued job runs in the replacement, uncharged.
    assert_eq!(
        out[1..],
        [
            out[1].clone(),
            forget(0),
            Command::ForgetExec { exec: e(1) },
            send_claimed(2, 1, 1)
        ]
    );
}

#[test]
fn a_busy_silent_executor_is_left_until_the_busy_timeout() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    let since = p.now;
    // Half a core while silent: busy, not stuck. Warned once, killed only past 60 s.
    let out = p.tick_silent(1, since, 2 * BUSY, |now| (now - since) / 2);
    let busy_logs: Vec<&Command> = out
        .iter()
        .filter(|c| matches!(c, Command::Log(Log::BusySilent { .. })))
        .collect();
    assert_eq!(busy_logs.len(), 1, "{busy_logs:?}");
    assert_eq!(kills(&out), vec![kill(1, true)]);
    // A CPU window must be half a hang timeout long to decide anything, and windows restart
    // every hang timeout: the kill may come that much after the busy timeout.
    let silent = p.now - since;
    assert!(
        silent > BUSY && silent <= BUSY + HANG / 2 + 300 * MS,
        "{silent:?}"
    );
    p.closed(1);
    let out = p.exited(1, SIGKILL, None, "");
    let m = failure_of(&out, 0).into_task_error().message;
    assert!(
        m.contains("over the busy timeout of 60s") && m.contains("RUSK_EXECUTOR_BUSY_TIMEOUT"),
        "{m}"
    );
}

#[test]
fn a_busy_executor_whose_answer_waits_unread_behind_a_stall_is_not_killed() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    let since = p.now;
    let cpu = move |now: Duration| (now - since) / 2;
    let out = p.tick_silent(1, since, BUSY - 300 * MS, cpu);
    assert_eq!(kills(&out), vec![]);
    // It answers 100 ms before its budget runs out, but the pool's loop is held up for 400 ms
    // (less than it takes for a stall of its own): the tick comes first and sees it silent
    // past the budget. Only the silence up to the previous check counts: it is left alone.
    p.now += 400 * MS;
    let samples = vec![Sample {
        exec: e(1),
        last_activity: Some(since),
        cpu: Some(cpu(p.now)),
    }];
    assert!(p.now - since > BUSY);
    assert_eq!(p.step(Event::Tick { samples }), vec![]);
    assert_eq!(
        p.answer(1, 0),
        vec![finished(0, Ok(value_of(1, 0))), forget(0)]
    );
}

#[test]
fn a_busy_executor_that_answered_and_died_behind_a_stall_is_not_judged_hung() {
    // A short hang timeout, so that CPU windows are short: half a second, checks every 100 ms.
    let (hang, busy_timeout) = (500 * MS, 2 * S);
    let mut p = Pool::ready_with(1, hang, busy_timeout);
    p.execute(0);
    p.execute(1);
    p.start(1, 0);
    let since = p.now;
    let busy = move |now: Duration| (now - since) / 2;
    // Computing silently; its CPU window restarts at 1.3 s (at the check of 1.4 s).
    let out = p.tick_silent(1, since, 1400 * MS, busy);
    assert_eq!(kills(&out), vec![]);
    // Right after that check it answers 0, starts 1 and crashes: its CPU stops. The pool's
    // loop is held up for 450 ms (not long enough to count as a stall of its own), and the
    // tick runs before the readers: silent for 1.85 s, and the window since 1.3 s shows 50 ms
    // of CPU in 550 ms, under a tenth. Judged on what was known at the previous check (busy
    // all along), it is left alone...
    let stopped = p.now;
    p.now += 450 * MS;
    let samples = vec![Sample {
        exec: e(1),
        last_activity: Some(since),
        cpu: Some(busy(stopped)),
    }];
    assert_eq!(p.step(Event::Tick { samples }), vec![]);
    // ...and what the readers then deliver settles it: 0 succeeded, 1 was lost in the crash.
    assert_eq!(
        p.answer(1, 0),
        vec![finished(0, Ok(value_of(1, 0))), forget(0)]
    );
    assert_eq!(p.start(1, 1), vec![started(1)]);
    p.closed(1);
    let segv = Exit::Signal {
        signal: 11,
        name: "SIGSEGV",
    };
    let out = p.exited(1, segv, None, "");
    assert!(matches!(
        failure_of(&out, 1),
        Failure::Lost(l) if l.death.is_none()
    ));
}

#[test]
fn a_busy_executor_that_stops_computing_is_judged_stuck_within_a_window() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    let since = p.now;
    let stops = since + 20 * S;
    let out = p.tick_silent(1, since, 2 * BUSY, |now| (now.min(stops) - since) / 2);
    assert_eq!(kills(&out), vec![kill(1, true)]);
    let killed_after = p.now - stops;
    assert!(
        killed_after <= 2 * HANG && p.now - since < BUSY,
        "killed {killed_after:?} after it stopped"
    );
    p.closed(1);
    let out = p.exited(1, SIGKILL, None, "");
    assert!(matches!(
        failure_of(&out, 0),
        Failure::Lost(l) if matches!(l.death, Some(Death::Hung { .. }))
    ));
}

#[test]
fn a_stalled_loop_judges_nobody() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    // The pool's own loop was held up for 8 s: the executor looks silent, but its pings are
    // waiting unread in the pipe.
    let since = p.now;
    p.now += 8 * S;
    let samples = vec![Sample {
        exec: e(1),
        last_activity: Some(since),
        cpu: Some(Duration::ZERO),
    }];
    assert_eq!(p.step(Event::Tick { samples }), vec![]);
    // The next check sees them.
    let out = p.tick_silent(1, p.now, 100 * MS, |_| Duration::ZERO);
    assert_eq!(out, vec![]);
}

#[test]
fn a_crash_fails_the_running_job_and_requeues_the_others_uncharged() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.execute(1);
    assert_eq!(p.start(1, 0), vec![started(0)]);
    assert_eq!(
        p.closed(1),
        vec![Command::Spawn { exec: e(2) }],
        "replaced at once, but not settled before its exit is seen"
    );
    let segv = Exit::Signal {
        signal: 11,
        name: "SIGSEGV",
    };
    let out = p.exited(
        1,
        segv.clone(),
        None,
        "Fatal Python error: Segmentation fault\n",
    );
    let loss = Loss {
        pid: pid(1),
        death: None,
        exit: segv.clone(),
        stacks: None,
        stderr_tail: "Fatal Python error: Segmentation fault\n".into(),
        hang_timeout: HANG,
        busy_timeout: BUSY,
    };
    assert_eq!(
        out,
        vec![
            Command::Log(Log::ExecutorReplaced {
                pid: pid(1),
                death: None,
                exit: segv
            }),
            finished(0, Err(Failure::Lost(Box::new(loss.clone())))),
            forget(0),
            Command::ForgetExec { exec: e(1) },
            // Put back in line, under a new claim (the dead one might have taken the old one).
            send_claimed(2, 1, 1),
        ]
    );
    assert_eq!(
        loss.to_string(),
        "the Python executor (pid 1001) running this task was killed by signal 11 (SIGSEGV); \
         the worker replaced it; its stderr ended with: Fatal Python error: Segmentation fault"
    );
    p.spawned(2);
    p.hello(2);
    assert_eq!(p.start(2, 1), vec![started(1)]);
    assert_eq!(
        p.answer(2, 1),
        vec![finished(1, Ok(value_of(2, 1))), forget(1)]
    );
    // Events of the settled executor are ignored.
    assert_eq!(p.closed(1), vec![]);
}

#[test]
fn an_exit_without_end_of_output_settles_after_the_grace() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    assert_eq!(
        p.exited(1, Exit::Code(3), None, ""),
        vec![Command::Spawn { exec: e(2) }]
    );
    let out = p.tick_silent(1, p.now, EXIT_GRACE + 100 * MS, |_| Duration::ZERO);
    let m = failure_of(&out, 0).into_task_error().message;
    assert!(m.contains("exited with code 3"), "{m}");
    assert_eq!(out.last(), Some(&Command::ForgetExec { exec: e(1) }));
}

#[test]
fn an_executor_that_closes_its_output_but_lives_is_killed() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    let at = p.now;
    assert_eq!(p.closed(1), vec![Command::Spawn { exec: e(2) }]);
    let out = p.tick_silent(1, at, S, |_| Duration::ZERO);
    assert_eq!(out, vec![kill(1, false)]);
    assert!(p.now - at > EXIT_GRACE);
    let out = p.exited(1, SIGKILL, None, "");
    let m = failure_of(&out, 0).into_task_error().message;
    assert!(m.contains("broke the protocol (closed its output)"), "{m}");
}

#[test]
fn an_exit_seen_late_after_the_output_closed_is_reported_as_what_it_was() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    let at = p.now;
    // Its output ends (a crash), its exit is slow to be seen: the pool condemns it for
    // closing its output, but it had died of a segfault.
    p.closed(1);
    assert_eq!(
        p.tick_silent(1, at, S, |_| Duration::ZERO),
        vec![kill(1, false)]
    );
    let segv = Exit::Signal {
        signal: 11,
        name: "SIGSEGV",
    };
    let out = p.exited(1, segv.clone(), None, "");
    assert_eq!(
        out[0],
        Command::Log(Log::ExecutorReplaced {
            pid: pid(1),
            death: None,
            exit: segv
        })
    );
    let m = failure_of(&out, 0).into_task_error().message;
    assert!(m.contains("was killed by signal 11 (SIGSEGV)"), "{m}");
}

#[test]
fn abandoning_a_queued_job_cancels_it_and_a_running_one_kills_its_executor() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.execute(1);
    p.start(1, 0);
    assert_eq!(
        p.abandon(1),
        vec![finished(1, Err(Failure::Abandoned)), cancel(1, 1)]
    );
    assert_eq!(p.abandon(1), vec![], "already finished");
    assert_eq!(
        p.abandon(0),
        vec![
            finished(0, Err(Failure::Abandoned)),
            kill(1, false),
            Command::Spawn { exec: e(2) }
        ]
    );
    assert_eq!(
        Failure::Abandoned.into_task_error().message,
        "abandoned",
        "the message the worker reports"
    );
    // Its answer, after the kill, changes nothing.
    assert_eq!(p.answer(1, 0), vec![]);
    p.closed(1);
    assert_eq!(
        p.exited(1, SIGKILL, None, ""),
        vec![
            Command::Log(Log::ExecutorReplaced {
                pid: pid(1),
                death: Some(Death::Abandoned),
                exit: SIGKILL
            }),
            forget(1),
            forget(0),
            Command::ForgetExec { exec: e(1) },
        ]
    );
    let (task, attempt) = attempt_of(7);
    assert_eq!(p.step(Event::Abandon { task, attempt }), vec![], "unknown");
}

#[test]
fn a_queued_job_abandoned_and_started_before_the_cancel_kills_its_executor() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.execute(1);
    p.start(1, 0);
    p.answer(1, 0);
    p.abandon(1);
    // The executor read `T` but not yet `C`: it starts the job. It is killed; no `Started`.
    assert_eq!(
        p.start(1, 1),
        vec![kill(1, false), Command::Spawn { exec: e(2) }]
    );
}

#[test]
fn a_spawn_failure_fails_waiting_jobs_and_starts_are_retried_after_the_delay() {
    let mut p = Pool::new(1, false);
    assert_eq!(p.core.next_timeout(), None);
    assert_eq!(
        p.execute(0),
        vec![Command::Spawn { exec: e(1) }, send_claimed(1, 0, 0)]
    );
    let m = "cannot start the Python executor with \"/nonexistent/python\"".to_string();
    let failure = StartFailure::Spawn(m.clone());
    assert_eq!(
        p.step(Event::SpawnFailed {
            exec: e(1),
            message: m.clone()
        }),
        vec![
            Command::Log(Log::StartFailed {
                pid: None,
                failure: failure.clone()
            }),
            Command::ForgetExec { exec: e(1) },
            finished(0, Err(Failure::NoExecutor(failure.clone()))),
            forget(0),
        ]
    );
    assert_eq!(
        Failure::NoExecutor(failure.clone())
            .into_task_error()
            .message,
        m
    );
    assert_eq!(
        p.core.next_timeout(),
        None,
        "no executors: nothing to check"
    );
    p.now += START_RETRY_DELAY / 2;
    assert_eq!(
        p.execute(1),
        vec![finished(1, Err(Failure::NoExecutor(failure))), forget(1)],
        "within the retry delay: fail at once, no new start"
    );
    p.now += START_RETRY_DELAY / 2;
    assert_eq!(
        p.execute(2),
        vec![Command::Spawn { exec: e(2) }, send_claimed(2, 2, 0)]
    );
}

#[test]
fn an_executor_that_refuses_or_dies_before_its_hello_fails_its_jobs_with_the_reason() {
    let mut p = Pool::new(2, false);
    assert_eq!(
        p.execute(0),
        vec![
            Command::Spawn { exec: e(1) },
            Command::Spawn { exec: e(2) },
            send_claimed(1, 0, 0)
        ]
    );
    p.execute(1);
    p.spawned(1);
    p.spawned(2);
    let refusal =
        "the Python executor (python3) cannot import cloudpickle: No module named 'cloudpickle'";
    assert_eq!(
        p.step(Event::Hello {
            exec: e(1),
            error: Some(refusal.into())
        }),
        vec![]
    );
    // Its output ends: it no longer counts, a replacement starts at once.
    assert_eq!(p.closed(1), vec![Command::Spawn { exec: e(3) }]);
    let out = p.exited(1, Exit::Code(1), None, "");
    let failure = StartFailure::Refused(refusal.into());
    assert_eq!(
        out,
        vec![
            Command::Log(Log::StartFailed {
                pid: Some(pid(1)),
                failure: failure.clone()
            }),
            finished(0, Err(Failure::NoExecutor(failure))),
            forget(0),
            Command::ForgetExec { exec: e(1) },
        ]
    );
    // The other one dies before its hello, with a reason on stderr: no new start within the
    // retry delay.
    assert_eq!(p.closed(2), vec![]);
    let out = p.exited(2, Exit::Code(1), None, "ModuleNotFoundError: x\n");
    assert_eq!(
        failure_of(&out, 1).into_task_error().message,
        "the Python executor (python3) exited with code 1 before it was ready; its stderr \
         ended with: ModuleNotFoundError: x"
    );
    assert_eq!(p.core.executors_alive(), 1, "executor 3");
}

#[test]
fn a_spawn_failure_gives_its_jobs_to_the_other_executors() {
    let mut p = Pool::new(2, false);
    p.execute(0);
    assert_eq!(p.execute(1), vec![send_claimed(2, 1, 0)]);
    let out = p.step(Event::SpawnFailed {
        exec: e(1),
        message: "no".into(),
    });
    assert_eq!(
        out[1..],
        [Command::ForgetExec { exec: e(1) }, send_claimed(2, 0, 1)]
    );
}

#[test]
fn an_executor_silent_from_the_start_is_killed_after_the_start_timeout() {
    let mut p = Pool::new(1, false);
    p.execute(0);
    p.spawned(1);
    let mut out = Vec::new();
    while kills(&out).is_empty() {
        p.now += 100 * MS;
        out = p.step(Event::Tick {
            samples: vec![Sample {
                exec: e(1),
                last_activity: None,
                cpu: None,
            }],
        });
        assert!(p.now <= START_TIMEOUT + S);
    }
    assert_eq!(out, vec![kill(1, false), Command::Spawn { exec: e(2) }]);
    assert!(p.now > START_TIMEOUT);
    p.closed(1);
    let out = p.exited(1, SIGKILL, None, "");
    assert_eq!(
        failure_of(&out, 0).into_task_error().message,
        "the Python executor (python3) did not start within 30s and was killed"
    );
}

#[test]
fn answers_from_a_condemned_executor_are_ignored() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.execute(1);
    p.start(1, 0);
    let since = p.now;
    let out = p.tick_silent(1, since, 10 * S, |_| Duration::ZERO);
    assert_eq!(out, vec![kill(1, true), Command::Spawn { exec: e(2) }]);
    // It was only slow: its answers arrive while the stacks are captured. The verdict stands.
    assert_eq!(p.answer(1, 0), vec![]);
    assert_eq!(p.start(1, 1), vec![]);
    assert_eq!(p.answer(1, 1), vec![]);
    p.closed(1);
    let out = p.exited(1, SIGKILL, Some("stacks"), "");
    assert!(matches!(failure_of(&out, 0), Failure::Lost(_)));
    // Job 1 was never started as far as the pool knows: it runs again, uncharged.
    assert_eq!(
        out[out.len() - 2..],
        [Command::ForgetExec { exec: e(1) }, send_claimed(2, 1, 1)]
    );
}

#[test]
fn protocol_violations_kill_the_executor_and_say_what_it_did() {
    let mut p = Pool::ready(1);
    p.execute(0);
    assert_eq!(
        p.start(1, 9),
        vec![kill(1, false), Command::Spawn { exec: e(2) }]
    );
    p.closed(1);
    let out = p.exited(1, SIGKILL, None, "");
    // Job 0 had not started: it is not charged.
    assert_eq!(sends(&out), vec![(2, 0)]);
    p.spawned(2);
    p.hello(2);
    p.start(2, 0);
    assert_eq!(
        p.step(Event::Closed {
            exec: e(2),
            error: Some("unknown frame kind 'Z'".into())
        }),
        vec![kill(2, false), Command::Spawn { exec: e(3) }]
    );
    let out = p.exited(2, SIGKILL, None, "");
    assert_eq!(
        failure_of(&out, 0).into_task_error().message,
        "the Python executor (pid 1002) running this task broke the protocol (unknown frame \
         kind 'Z') and was killed and replaced"
    );
    // A skip of a started job, and an answer before any start, are out of order.
    p.spawned(3);
    p.hello(3);
    assert_eq!(p.execute(1), vec![send(3, 1)]);
    p.start(3, 1);
    assert_eq!(
        p.skip(3, 1),
        vec![kill(3, false), Command::Spawn { exec: e(4) }]
    );
}

#[test]
fn an_answer_nobody_started_is_out_of_order() {
    let mut p = Pool::ready(1);
    p.execute(0);
    assert_eq!(
        p.answer(1, 0),
        vec![kill(1, false), Command::Spawn { exec: e(2) }]
    );
}

#[test]
fn exits_read_as_before() {
    assert_eq!(Exit::Code(3).to_string(), "exited with code 3");
    assert_eq!(SIGKILL.to_string(), "was killed by signal 9 (SIGKILL)");
    assert_eq!(Exit::Other.to_string(), "ended");
}

#[test]
fn a_seceded_job_gives_its_slot_to_a_new_executor_which_takes_the_queue_then_one_retires() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.execute(1); // waits behind 0 on executor 1, claimed
    p.start(1, 0);
    // 0 secedes (it waits for tasks it submitted): a second executor starts for the slot.
    let out = p.step(Event::Seceded {
        exec: e(1),
        job: j(0),
    });
    let (task, attempt) = attempt_of(0);
    assert_eq!(
        out,
        vec![
            Command::Seceded { task, attempt },
            Command::Spawn { exec: e(2) }
        ]
    );
    p.spawned(2);
    // Ready, it takes a copy of 1 at once (no STEAL_AFTER wait behind a seceded job).
    assert_eq!(p.hello(2), vec![send_claimed(2, 1, 0)]);
    assert_eq!(p.start(2, 1), vec![started(1), cancel(1, 1)]);
    assert_eq!(p.answer(2, 1), vec![finished(1, Ok(value_of(2, 1)))]);
    // 0 finishes on executor 1, then 1's stale copy is skipped: executor 1, one too many and
    // idle, retires (and no executor is started in its place).
    assert_eq!(
        p.answer(1, 0),
        vec![finished(0, Ok(value_of(1, 0))), forget(0)]
    );
    let out = p.skip(1, 1);
    assert_eq!(out, vec![forget(1), kill(1, false)]);
    p.closed(1);
    let out = p.exited(1, SIGKILL, None, "");
    assert!(
        !out.iter().any(|c| matches!(c, Command::Spawn { .. })),
        "{out:?}"
    );
    assert!(out.contains(&Command::Log(Log::ExecutorReplaced {
        pid: pid(1),
        death: Some(Death::Retired),
        exit: SIGKILL,
    })));
    assert_eq!(
        Log::ExecutorReplaced {
            pid: pid(1),
            death: Some(Death::Retired),
            exit: SIGKILL,
        }
        .worker_event(),
        None,
        "retiring is routine, not a recovery"
    );
    assert_eq!(p.core.executors_alive(), 1);
}

#[test]
fn a_secede_of_a_job_not_running_breaks_the_protocol() {
    let mut p = Pool::ready(1);
    p.execute(0);
    let out = p.step(Event::Seceded {
        exec: e(1),
        job: j(0),
    });
    assert_eq!(out, vec![kill(1, false), Command::Spawn { exec: e(2) }]);
}

#[test]
fn a_rejoined_job_takes_its_slot_back_and_the_executor_that_took_it_retires_once_idle() {
    let mut p = Pool::ready(1);
    p.execute(0);
    p.start(1, 0);
    let (task, attempt) = attempt_of(0);
    let out = p.step(Event::Seceded {
        exec: e(1),
        job: j(0),
    });
    assert_eq!(
        out,
        vec![
            Command::Seceded { task, attempt },
            Command::Spawn { exec: e(2) }
        ]
    );
    p.spawned(2);
    p.hello(2);
    // Executor 2 holds the slot and runs job 1.
    assert_eq!(p.execute(1), vec![send(2, 1)]);
    p.start(2, 1);
    // Job 0 rejoins: its executor holds the slot again, and executor 2, one too many, takes
    // nothing new (job 2 waits) and retires once its job is done.
    let out = p.step(Event::Rejoined {
        exec: e(1),
        job: j(0),
    });
    assert_eq!(out, vec![Command::Rejoined { task, attempt }]);
    let out = p.execute(2);
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::Send { exec, .. } if *exec == e(2))),
        "{out:?}"
    );
    let out = p.answer(2, 1);
    assert!(out.contains(&finished(1, Ok(value_of(2, 1)))), "{out:?}");
    assert!(out.contains(&kill(2, false)), "{out:?}");
    // A second rejoin (not seceded) changes nothing; a rejoin of a job not running breaks the
    // protocol.
    assert!(p
        .step(Event::Rejoined {
            exec: e(1),
            job: j(0),
        })
        .is_empty());
    let out = p.step(Event::Rejoined {
        exec: e(1),
        job: j(7),
    });
    assert!(out.contains(&kill(1, false)), "{out:?}");
}

#[test]
fn executors_that_keep_dying_idle_are_a_start_failure_not_replaced_forever() {
    // An eager pool: executors are kept even with no job, as a worker keeps them.
    let mut p = Pool::ready(1);
    for x in 1..IDLE_DEATHS_MAX as u64 {
        let mut out = p.closed(x);
        out.extend(p.exited(x, Exit::Code(1), None, "killed by a thread\n"));
        assert!(out.contains(&Command::Spawn { exec: e(x + 1) }), "{out:?}");
        assert!(!out
            .iter()
            .any(|c| matches!(c, Command::Log(Log::StartFailed { .. }))));
        p.spawned(x + 1);
        p.hello(x + 1);
    }
    // The third in a row: a start failure (logged with its reason), and the pool backs off:
    // the executor started as its output closed is the last one for `START_RETRY_DELAY`.
    let last = IDLE_DEATHS_MAX as u64;
    p.closed(last);
    let out = p.exited(last, Exit::Code(1), None, "killed by a thread\n");
    let failure = out
        .iter()
        .find_map(|c| match c {
            Command::Log(Log::StartFailed { failure, .. }) => Some(failure.clone()),
            _ => None,
        })
        .expect("logged");
    assert!(
        failure
            .to_string()
            .contains("died by themselves while idle"),
        "{failure}"
    );
    p.spawned(last + 1);
    p.hello(last + 1);
    let mut out = p.closed(last + 1);
    out.extend(p.exited(last + 1, Exit::Code(1), None, ""));
    assert!(
        !out.iter().any(|c| matches!(c, Command::Spawn { .. })),
        "{out:?}"
    );
    // No executor and backing off: a job fails with the reason instead of waiting forever.
    let out = p.execute(0);
    assert!(
        out.iter().any(|c| matches!(c, Command::Finished { result: Err(Failure::NoExecutor(f)), .. } if f.to_string().contains("while idle"))),
        "{out:?}"
    );
}

#[test]
fn an_executor_that_ran_a_job_and_died_is_replaced_and_resets_the_count() {
    let mut p = Pool::ready(1);
    // Two idle deaths, then one that ran a job: the count starts again.
    for x in 1..=2 {
        p.closed(x);
        p.exited(x, Exit::Code(1), None, "");
        p.spawned(x + 1);
        p.hello(x + 1);
    }
    p.execute(0);
    p.start(3, 0);
    p.answer(3, 0);
    for x in 3..=5 {
        let mut out = p.closed(x);
        out.extend(p.exited(x, Exit::Code(1), None, ""));
        assert!(out.contains(&Command::Spawn { exec: e(x + 1) }), "{out:?}");
        assert!(!out
            .iter()
            .any(|c| matches!(c, Command::Log(Log::StartFailed { .. }))));
        p.spawned(x + 1);
        p.hello(x + 1);
    }
}
