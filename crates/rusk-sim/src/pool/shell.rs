//! The model of the pool's shell (`python_exec`): carrying out the pool's commands, sampling
//! the executors, delivering what they write.
use super::*;

impl PoolSim {
    // === the shell ===

    pub(super) fn carry_out(&mut self, out: Vec<Command>) -> Result<(), FailureKind> {
        let mut forgotten = Vec::new();
        for c in out {
            if self.config.trace_len > 0 {
                self.record(TraceItem::Out(c.clone()));
            }
            match c {
                Command::Spawn { exec } => {
                    self.fingerprint([1, exec.0, 0]);
                    self.spawn(exec);
                }
                Command::Send { exec, job, claim } => {
                    self.fingerprint([2, exec.0, job.0]);
                    self.on_send(exec, job, claim)?;
                }
                Command::Cancel { exec, job } => {
                    self.fingerprint([3, exec.0, job.0]);
                    self.report.cancels += 1;
                    let p = &self.procs[&exec];
                    if !p.sent.contains(&job) {
                        return Err(FailureKind::Pool(PoolViolation::CancelOfUnsent {
                            exec: exec.0,
                            job: job.0,
                        }));
                    }
                    if p.alive || !p.spawn_answered && !p.spawn_failed {
                        let at = self.now + self.us(PIPE_US_MAX);
                        let p = self.procs.get_mut(&exec).expect("exists");
                        p.input.push_back((at, In::Cancel(job)));
                        self.push(at, Ev::ProcWake { exec });
                    }
                }
                Command::Kill {
                    exec,
                    capture_stacks,
                } => {
                    self.fingerprint([4, exec.0, capture_stacks as u64]);
                    self.on_kill(exec, capture_stacks)?;
                }
                Command::Started { task, attempt } => {
                    self.fingerprint([5, task.index as u64, attempt.0]);
                    self.on_started(attempt)?;
                }
                // The simulated executors never secede.
                Command::Seceded { task, attempt } => {
                    self.fingerprint([10, task.index as u64, attempt.0]);
                }
                Command::Rejoined { task, attempt } => {
                    self.fingerprint([11, task.index as u64, attempt.0]);
                }
                Command::Finished {
                    task,
                    attempt,
                    result,
                } => {
                    self.fingerprint([6, task.index as u64, attempt.0]);
                    self.on_finished(attempt, result)?;
                }
                Command::ForgetJob { job } => {
                    self.fingerprint([7, job.0, 0]);
                    let j = self.jobs.get_mut(&job).expect("forgotten jobs exist");
                    if !j.finished || j.forgotten {
                        return Err(FailureKind::Pool(PoolViolation::ForgottenWrongly {
                            job: job.0,
                            why: "not finished, or forgotten before",
                        }));
                    }
                    j.forgotten = true;
                    forgotten.push(job);
                }
                Command::ForgetExec { exec } => {
                    self.fingerprint([8, exec.0, 0]);
                    let p = self
                        .procs
                        .get_mut(&exec)
                        .expect("forgotten executors exist");
                    if p.forgotten || !(p.core_exited || p.spawn_failed) {
                        return Err(FailureKind::Pool(PoolViolation::ExecForgottenWrongly {
                            exec: exec.0,
                            why: "forgotten before, or its exit was not seen",
                        }));
                    }
                    p.forgotten = true;
                }
                Command::Log(l) => {
                    self.fingerprint([9, 0, 0]);
                    self.on_log(l)?;
                }
            }
        }
        // A job is forgotten once no executor still holds it (checked after the whole batch:
        // an executor settled in it is forgotten after the jobs it held).
        for job in forgotten {
            if let Some((exec, _)) = self
                .procs
                .iter()
                .find(|(_, p)| !p.forgotten && p.unanswered.contains(&job))
            {
                return Err(FailureKind::Pool(PoolViolation::ExecForgottenWrongly {
                    exec: exec.0,
                    why: "a job it holds was forgotten while it may still answer it",
                }));
            }
        }
        Ok(())
    }

    pub(super) fn spawn(&mut self, exec: ExecId) {
        self.report.spawns += 1;
        let pid = self.next_pid;
        self.next_pid += 1;
        let broken = self
            .faults
            .broken
            .iter()
            .any(|&(a, b)| self.now >= a && self.now < b)
            && !self.healed;
        let fail_start = !self.healed && (broken || self.rng.gen_bool(self.faults.start_fail));
        let hello = Duration::from_millis(self.rng.gen_range(HELLO_MS_MIN..=HELLO_MS_MAX));
        let start = if !fail_start {
            StartPlan::Ready(hello)
        } else {
            match self.rng.gen_range(0..10) {
                0..=3 => StartPlan::Refuse(hello),
                4..=7 => StartPlan::DieEarly(hello),
                _ => StartPlan::Mute,
            }
        };
        let spawn_fails = !self.healed
            && (broken && self.rng.gen_bool(0.5) || self.rng.gen_bool(self.faults.spawn_fail));
        self.procs.insert(
            exec,
            Proc {
                pid,
                start,
                alive: false,
                spawn_answered: false,
                spawn_failed: spawn_fails,
                ready: false,
                exit: None,
                stderr_tail: "",
                input: VecDeque::new(),
                queue: VecDeque::new(),
                current: None,
                plans: BTreeMap::new(),
                gen: 0,
                pings: Vec::new(),
                silences: Vec::new(),
                cpu_acc: Duration::ZERO,
                cpu_rate: 0.0,
                cpu_since: self.now,
                writes: Vec::new(),
                last_delivery: self.now,
                output_closed: false,
                kill: None,
                killed: false,
                core_closed: false,
                core_exited: false,
                forgotten: false,
                unanswered: BTreeSet::new(),
                sent: BTreeSet::new(),
            },
        );
        let at = self.now + self.us(SPAWN_US_MAX);
        self.push(at, Ev::SpawnAnswer { exec });
    }

    pub(super) fn on_spawn_answer(&mut self, exec: ExecId) -> Result<(), FailureKind> {
        let now = self.now;
        let p = self.procs.get_mut(&exec).expect("spawned");
        p.spawn_answered = true;
        if p.spawn_failed {
            self.report.spawn_failures += 1;
            return self.core_step(Event::SpawnFailed {
                exec,
                message: "cannot start the Python executor with \"sim-python\": No such file or directory (os error 2)".into(),
            });
        }
        p.alive = true;
        p.cpu_since = now;
        p.cpu_rate = ACTIVE_RATE;
        let pid = p.pid;
        match p.start {
            StartPlan::Ready(d) | StartPlan::Refuse(d) => {
                self.push(now + d, Ev::ProcHello { exec, gen: 0 })
            }
            StartPlan::DieEarly(d) => self.push(
                now + d,
                Ev::ProcDies {
                    exec,
                    exit: Exit::Code(1),
                    tail: "ModuleNotFoundError: No module named 'encodings'",
                },
            ),
            StartPlan::Mute => {}
        }
        // Frames sent before the spawn was answered wait in its pipe.
        self.push(now, Ev::ProcWake { exec });
        self.core_step(Event::Spawned { exec, pid })
    }

    pub(super) fn on_send(
        &mut self,
        exec: ExecId,
        job: JobId,
        claim: Option<u32>,
    ) -> Result<(), FailureKind> {
        let p = self.procs.get(&exec).expect("sent to a spawned executor");
        let why = if p.forgotten {
            Some("settled")
        } else if p.kill.is_some() {
            Some("condemned")
        } else if p.core_closed {
            Some("closed")
        } else if p.core_exited {
            Some("exited")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(FailureKind::Pool(PoolViolation::SentToDeadExecutor {
                exec: exec.0,
                job: job.0,
                why,
            }));
        }
        let j = self.jobs.get_mut(&job).expect("sent jobs exist");
        if j.finished {
            return Err(FailureKind::Pool(PoolViolation::ForgottenWrongly {
                job: job.0,
                why: "sent after it finished",
            }));
        }
        // Sent again after it answered (skipped a job claimed elsewhere) is fine.
        if !j.sent_to.insert(exec) && self.procs[&exec].unanswered.contains(&job) {
            return Err(FailureKind::Pool(PoolViolation::SentToDeadExecutor {
                exec: exec.0,
                job: job.0,
                why: "had it already",
            }));
        }
        if j.sent_to.len() > 1 {
            self.report.copies += 1;
        }
        let at = self.now + self.us(PIPE_US_MAX);
        let p = self.procs.get_mut(&exec).expect("exists");
        p.sent.insert(job);
        p.unanswered.insert(job);
        // Frames to a process that is gone (or never started) are lost with the pipe.
        if p.alive || !p.spawn_answered && !p.spawn_failed {
            p.input.push_back((at, In::Task(job, claim)));
            self.push(at, Ev::ProcWake { exec });
        }
        Ok(())
    }

    pub(super) fn on_kill(&mut self, exec: ExecId, capture: bool) -> Result<(), FailureKind> {
        let (hang, busy) = (self.hang, self.busy);
        let now = self.now;
        let observed = self.observed_activity(exec, now);
        let p = self.procs.get_mut(&exec).expect("killed executors exist");
        if p.kill.is_some() || p.core_exited || !p.spawn_answered || p.spawn_failed {
            return Err(FailureKind::Pool(PoolViolation::BadKill {
                exec: exec.0,
                why: "twice, after its exit, or before it was spawned",
            }));
        }
        p.kill = Some((now, capture));
        if capture {
            self.report.hang_kills += 1;
            if p.alive {
                // Judged on the silence up to the pool's previous check (what came after may
                // be unread): it must have been silent through it, for longer than the hang
                // timeout, and for longer than the busy timeout if it was computing. (The pool
                // sees a silence begin at the ping before it: up to a ping interval early.)
                let prev = self.prev_check;
                let silence = p.silence_at(prev);
                let length = silence.map_or(Duration::ZERO, |s| prev - s.since);
                let silent = now.saturating_sub(observed.unwrap_or_default());
                if silence.is_none() || length + executor::PING_INTERVAL <= hang {
                    return Err(FailureKind::Pool(PoolViolation::HealthyKilled {
                        pid: p.pid,
                    }));
                }
                // Computing when the pool last looked, and its CPU ran on until now (or until
                // it answered): the pool's CPU window shows it busy, so only the busy timeout
                // may end it. (CPU that stopped meanwhile makes it stuck.)
                let stayed_busy = silence.is_some_and(|s| {
                    let end = s.until.unwrap_or(now).min(now);
                    s.computing_at(prev) && s.cpu_stops.is_none_or(|c| c >= end)
                });
                if stayed_busy && length + executor::PING_INTERVAL <= busy {
                    return Err(FailureKind::Pool(PoolViolation::BusyKilledEarly {
                        pid: p.pid,
                        silent,
                        busy_timeout: busy,
                    }));
                }
            }
            self.push(now + STACKS_WAIT, Ev::KillNow { exec });
        } else {
            self.report.other_kills += 1;
            let at = now + self.us(500);
            self.push(at, Ev::KillNow { exec });
        }
        Ok(())
    }

    /// The activity the shell's reader would have stamped by now (it stamps when it reads).
    pub(super) fn observed_activity(&self, exec: ExecId, now: Duration) -> Option<Duration> {
        let p = &self.procs[&exec];
        let raw = match (self.stall, self.stalls.last()) {
            // Stalled, or the stall just ended and the readers have not run yet: nothing read
            // since it began.
            (Some((a, _)), _) => p.raw_activity(a),
            (None, Some(&(a, _))) if self.readers_behind => p.raw_activity(a),
            _ => p.raw_activity(now),
        };
        // Written during a stall: read when it ended.
        raw.map(|w| {
            self.stalls
                .iter()
                .find(|&&(a, b)| w > a && w < b)
                .map_or(w, |&(_, b)| b)
        })
    }

    pub(super) fn samples(&self) -> Vec<Sample> {
        self.procs
            .iter()
            .filter(|(_, p)| p.spawn_answered && !p.spawn_failed && !p.forgotten)
            .map(|(&exec, p)| {
                let last_activity = self.observed_activity(exec, self.now);
                let cpu = last_activity
                    .filter(|&l| executor::samples_cpu(self.now.saturating_sub(l), self.hang))
                    .map(|_| p.cpu_at(self.now));
                Sample {
                    exec,
                    last_activity,
                    cpu,
                }
            })
            .collect()
    }

    pub(super) fn on_deliver(&mut self, exec: ExecId, out: Out) -> Result<(), FailureKind> {
        let p = self
            .procs
            .get_mut(&exec)
            .expect("delivering processes exist");
        let ev = match out {
            Out::Hello(error) => Event::Hello { exec, error },
            Out::Started(job) => Event::Started { exec, job },
            Out::Answer(job, answer) => {
                p.unanswered.remove(&job);
                Event::Answered { exec, job, answer }
            }
            Out::Eof(error) => {
                p.core_closed = true;
                Event::Closed { exec, error }
            }
        };
        self.core_step(ev)
    }
}
