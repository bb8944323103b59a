//! The simulated executor processes: hello, reading between tasks, running each task to its
//! plan, dying.
use super::*;

impl PoolSim {
    // === the executor processes ===

    /// Write a frame to the process's output; the reader delivers it a little later, in order.
    pub(super) fn write(&mut self, exec: ExecId, out: Out) {
        let lat = self.us(PIPE_US_MAX);
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("writing processes exist");
        if p.output_closed {
            return;
        }
        p.writes.push(now);
        let late = matches!(out, Out::Eof(None)) && !p.alive && self.rng.gen_bool(0.1);
        let mut at = (now + lat).max(p.last_delivery);
        if late {
            at += Duration::from_millis(self.rng.gen_range(0..=LATE_EOF_MS_MAX));
        }
        p.last_delivery = at;
        self.push(at, Ev::Deliver { exec, out });
    }

    pub(super) fn on_proc_hello(&mut self, exec: ExecId, gen: u32) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        if p.gen != gen || !p.alive {
            return;
        }
        match p.start {
            StartPlan::Ready(_) => {
                p.ready = true;
                p.start_pinging(now);
                self.write(exec, Out::Hello(None));
                self.proc_wake(exec);
            }
            StartPlan::Refuse(_) => {
                self.write(
                    exec,
                    Out::Hello(Some(
                        "the Python executor (sim-python) cannot import cloudpickle".into(),
                    )),
                );
                let at = now + Duration::from_millis(1);
                self.push(
                    at,
                    Ev::ProcDies {
                        exec,
                        exit: Exit::Code(1),
                        tail: "",
                    },
                );
            }
            StartPlan::DieEarly(_) | StartPlan::Mute => unreachable!("no hello"),
        }
    }

    /// Between tasks: read what arrived (cancels drop queued tasks), start the next task.
    pub(super) fn proc_wake(&mut self, exec: ExecId) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        if !p.alive || !p.ready || p.current.is_some() {
            return;
        }
        let mut skipped = Vec::new();
        while p.input.front().is_some_and(|(at, _)| *at <= now) {
            let (_, frame) = p.input.pop_front().expect("checked");
            match frame {
                In::Task(j, claim) => p.queue.push_back((j, claim)),
                In::Cancel(j) => {
                    if let Some(pos) = p.queue.iter().position(|&(q, _)| q == j) {
                        p.queue.remove(pos);
                        skipped.push(j);
                    }
                }
            }
        }
        // The first task whose claim is free (a claimed one is skipped: another executor
        // took it).
        let mut next = None;
        while let Some((j, claim)) = p.queue.pop_front() {
            match claim {
                Some(c) if !self.claims.insert((j, c)) => skipped.push(j),
                _ => {
                    next = Some(j);
                    break;
                }
            }
        }
        for j in skipped {
            self.write(exec, Out::Answer(j, Answer::Skipped));
        }
        if let Some(j) = next {
            self.start_task(exec, j);
        }
    }

    pub(super) fn draw_plan(&mut self) -> TaskPlan {
        let d = match self.rng.gen_range(0..100) {
            0..=39 => Duration::from_micros(self.rng.gen_range(50..=900)),
            40..=84 => Duration::from_micros(self.rng.gen_range(1_000..=30_000)),
            _ => Duration::from_millis(self.rng.gen_range(100..=2_000)),
        };
        if self.healed {
            return TaskPlan::Value(d);
        }
        let f = &self.faults;
        let (crash, hang, busy, stuck, raise, protocol) = (
            f.crash,
            f.hang,
            f.busy,
            f.busy_then_stuck,
            f.raise,
            f.protocol,
        );
        let x: f64 = self.rng.gen();
        let rate = self.rng.gen_range(BUSY_RATE_MIN..=1.0);
        let mut acc = crash;
        if x < acc {
            return TaskPlan::Crash(d);
        }
        acc += hang;
        if x < acc {
            return TaskPlan::Hang;
        }
        acc += busy;
        if x < acc {
            // Meant to survive: anywhere under the budget, or just under it (the edge).
            let short = self.busy.saturating_sub(BUSY_MARGIN);
            let edge = short.saturating_sub(Duration::from_millis(300));
            let run = if self.rng.gen_bool(0.6) && short > Duration::ZERO {
                if self.rng.gen_bool(0.5) {
                    self.rng.gen_range(edge..=short)
                } else {
                    self.rng.gen_range(Duration::ZERO..=short)
                }
            } else {
                self.busy + Duration::from_millis(self.rng.gen_range(100..=3_000))
            };
            return TaskPlan::Busy { run, rate };
        }
        acc += stuck;
        if x < acc {
            let run =
                Duration::from_millis(self.rng.gen_range(0..=3 * self.hang.as_millis() as u64));
            return TaskPlan::BusyThenStuck { run, rate };
        }
        acc += raise;
        if x < acc {
            return TaskPlan::Raise(d);
        }
        acc += protocol;
        if x < acc {
            return match self.rng.gen_range(0..3) {
                0 => TaskPlan::CloseOutput(d),
                1 => TaskPlan::ReadError(d),
                _ => TaskPlan::AnswerUnknown(d),
            };
        }
        TaskPlan::Value(d)
    }

    pub(super) fn start_task(&mut self, exec: ExecId, job: JobId) {
        // Its code runs once: again only after every process that started it died or was
        // condemned (a job put back in line is run again, uncharged).
        let j = self.jobs.get_mut(&job).expect("started jobs exist");
        let other = j.ran_on.iter().copied().find(|o| {
            let p = &self.procs[o];
            p.alive && p.kill.is_none()
        });
        j.ran_on.push(exec);
        if let Some(other) = other {
            self.violation.get_or_insert(PoolViolation::RanTwice {
                job: job.0,
                exec: exec.0,
                other: other.0,
            });
        }
        let plan = self.draw_plan();
        let now = self.now;
        self.write(exec, Out::Started(job));
        let p = self.procs.get_mut(&exec).expect("exists");
        p.plans.insert(job, plan);
        p.current = Some(job);
        p.gen += 1;
        let gen = p.gen;
        let silent = |p: &mut Proc, rate: f64| {
            p.silences.push(Silence {
                since: now,
                until: None,
                computed: rate > 0.0,
                cpu_stops: None,
            });
            p.stop_pinging(now);
            p.set_cpu(now, rate);
        };
        match plan {
            TaskPlan::Value(d) | TaskPlan::Raise(d) => {
                self.push(now + d, Ev::ProcDone { exec, gen })
            }
            TaskPlan::Crash(d) => {
                self.report.crashes += 1;
                self.push(now + d, Ev::ProcCrash { exec, gen })
            }
            TaskPlan::Hang => {
                self.report.hangs += 1;
                silent(p, 0.0)
            }
            TaskPlan::Busy { run, rate } => {
                silent(p, rate);
                self.push(now + run, Ev::ProcDone { exec, gen });
                if run > self.busy {
                    self.report.busy_long += 1;
                } else {
                    self.report.busy_short += 1;
                    // Aimed: the pool's loop stalls from just before the computation ends to
                    // just after its budget runs out, so that its answer waits unread.
                    let at = (now + run).saturating_sub(self.us(100_000));
                    let length = (now + self.busy + self.us(100_000)).saturating_sub(at);
                    if length < Duration::from_millis(STALL_SHORT_MS_MAX) && self.rng.gen_bool(0.5)
                    {
                        self.push(
                            at,
                            Ev::Stall {
                                length: Some(length),
                            },
                        );
                    }
                }
            }
            TaskPlan::BusyThenStuck { run, rate } => {
                self.report.hangs += 1;
                silent(p, rate);
                self.push(now + run, Ev::ProcCpuStops { exec, gen });
            }
            TaskPlan::CloseOutput(d) | TaskPlan::ReadError(d) => {
                self.report.protocol_faults += 1;
                self.push(now + d, Ev::ProcCloses { exec, gen });
            }
            TaskPlan::AnswerUnknown(d) => {
                self.report.protocol_faults += 1;
                self.push(now + d, Ev::ProcBogus { exec, gen });
            }
        }
    }

    pub(super) fn on_proc_done(&mut self, exec: ExecId, gen: u32) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        if p.gen != gen || !p.alive {
            return;
        }
        let job = p.current.take().expect("a task ends");
        if let Some(s) = p.ongoing_silence() {
            s.until = Some(now);
            p.start_pinging(now);
        }
        p.set_cpu(now, ACTIVE_RATE);
        let answer = match p.plans[&job] {
            TaskPlan::Raise(_) => Answer::Error(TaskError {
                message: raised_of(job, exec),
                exit_code: None,
                detail: None,
            }),
            _ => Answer::Value(value_of(job, exec)),
        };
        self.write(exec, Out::Answer(job, answer));
        self.proc_wake(exec);
    }

    /// The process ends: its output closes after what it wrote, and `wait()` returns.
    pub(super) fn die(&mut self, exec: ExecId, exit: Exit, tail: &'static str) {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("exists");
        debug_assert!(p.alive);
        let pid = p.pid;
        p.alive = false;
        p.gen += 1;
        p.set_cpu(now, 0.0);
        p.stop_pinging(now);
        if let Some(s) = p.ongoing_silence() {
            s.until = Some(now);
        }
        p.exit = Some(exit.clone());
        p.stderr_tail = tail;
        if !p.output_closed {
            self.write(exec, Out::Eof(None));
            self.procs.get_mut(&exec).expect("exists").output_closed = true;
        }
        let at = now + self.us(REAP_US_MAX);
        self.push(at, Ev::Reaped { exec });
        self.note(|| format!("pid {pid} ({exec}) dies: {exit}"));
    }
}
