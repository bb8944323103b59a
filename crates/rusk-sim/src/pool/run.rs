//! The run: setting a seed up, the event loop and its dispatch, the pool's steps, and the
//! worker that submits and abandons attempts.
use super::*;

impl PoolSim {
    pub(super) fn new(seed: u64, config: &PoolSimConfig) -> PoolSim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005E_ED0F_E7EC);
        let size = rng.gen_range(1..=config.size_max.max(1));
        let hang =
            Duration::from_millis(HANG_TIMEOUTS_MS[rng.gen_range(0..HANG_TIMEOUTS_MS.len())]);
        // Mostly a few hang timeouts, so that silent computations end within the safety
        // phase (with its stalls); sometimes long.
        let busy_ms = if rng.gen_bool(0.7) {
            rng.gen_range(0..=3 * hang.as_millis() as u64)
        } else {
            rng.gen_range(0..=BUSY_TIMEOUT_MS_MAX)
        };
        let busy = (hang + Duration::from_millis(busy_ms))
            .min(Duration::from_millis(BUSY_TIMEOUT_MS_MAX).max(hang));
        let eager = rng.gen_bool(0.3);
        let f = config.faults;
        let mut rate = |max: f64| {
            if f && rng.gen_bool(0.8) {
                rng.gen_range(0.0..max)
            } else {
                0.0
            }
        };
        let mut faults = Faults {
            crash: rate(0.04),
            hang: rate(0.02),
            busy: rate(0.03),
            busy_then_stuck: rate(0.01),
            raise: rate(0.1),
            protocol: rate(0.01),
            spawn_fail: rate(0.1),
            start_fail: rate(0.15),
            broken: Vec::new(),
        };
        if f {
            for _ in 0..rng.gen_range(0..=2) {
                let at = Duration::from_millis(rng.gen_range(0..config.safety.as_millis() as u64));
                let d = Duration::from_millis(rng.gen_range(300..=4_000));
                faults.broken.push((at, at + d));
            }
        }
        let core = PoolCore::new(PoolConfig {
            size,
            hang_timeout: hang,
            busy_timeout: busy,
            eager,
            python: "sim-python".into(),
        });
        let jobs_left = rng.gen_range(config.jobs_min..=config.jobs_max.max(config.jobs_min));
        let mut sim = PoolSim {
            seed,
            config: config.clone(),
            rng,
            now: Duration::ZERO,
            seq: 0,
            steps_at_now: 0,
            queue: BinaryHeap::new(),
            core,
            hang,
            busy,
            procs: BTreeMap::new(),
            next_pid: 100,
            jobs: BTreeMap::new(),
            by_attempt: BTreeMap::new(),
            claims: BTreeSet::new(),
            jobs_left,
            faults,
            healed: false,
            healed_at: Duration::ZERO,
            tick_at: None,
            stall: None,
            deferred: VecDeque::new(),
            stalls: Vec::new(),
            readers_behind: false,
            start_failures: Vec::new(),
            last_check: Duration::ZERO,
            prev_check: Duration::ZERO,
            handling: Cause::Other,
            report: PoolReport {
                seed,
                size,
                ..PoolReport::default()
            },
            trace: VecDeque::new(),
            broken_run: false,
            violation: None,
        };
        sim.push(Duration::ZERO, Ev::Submit);
        let safety = sim.config.safety;
        for _ in 0..sim.rng.gen_range(0..=8) {
            let at = sim.rng.gen_range(Duration::ZERO..safety);
            sim.push(at, Ev::AbandonSome);
        }
        if f {
            for _ in 0..sim.rng.gen_range(0..=6) {
                let at = sim.rng.gen_range(Duration::ZERO..safety);
                sim.push(at, Ev::Stall { length: None });
            }
        }
        sim.push(safety, Ev::Heal);
        sim
    }

    pub(super) fn run(mut self) -> Result<PoolReport, SimFailure> {
        self.guarded(|s| {
            let out = s.core.start(s.now);
            s.core.check_invariants();
            s.carry_out(out)?;
            s.reschedule_tick();
            Ok(())
        })?;
        loop {
            if self.healed {
                if self.all_done() {
                    self.report.virtual_time = self.now;
                    return Ok(self.report);
                }
                if self.now > self.healed_at + self.config.liveness_bound {
                    let pending = self.pending_summary();
                    return Err(self.failure(FailureKind::Liveness {
                        bound: self.config.liveness_bound,
                        pending,
                    }));
                }
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                let pending = self.pending_summary();
                return Err(self.failure(FailureKind::Liveness {
                    bound: self.config.liveness_bound,
                    pending: format!("the event queue ran dry: {pending}"),
                }));
            };
            if q.at == self.now {
                self.steps_at_now += 1;
                if self.steps_at_now > STEPS_AT_ONE_INSTANT_MAX {
                    return Err(self.failure(FailureKind::Liveness {
                        bound: Duration::ZERO,
                        pending: "livelock: too many events at one virtual instant".into(),
                    }));
                }
            } else {
                self.steps_at_now = 0;
            }
            self.now = q.at;
            self.report.steps += 1;
            self.guarded(|s| s.dispatch(q.ev))?;
        }
    }

    pub(super) fn all_done(&self) -> bool {
        self.jobs_left == 0
            && self.jobs.values().all(|j| j.finished && j.forgotten)
            && self.procs.values().all(Proc::at_rest)
    }

    pub(super) fn pending_summary(&self) -> String {
        let jobs: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| !(j.finished && j.forgotten))
            .take(10)
            .map(|(id, j)| {
                format!(
                    "job {} (finished {}, forgotten {}, sent to {:?})",
                    id.0, j.finished, j.forgotten, j.sent_to
                )
            })
            .collect();
        let procs: Vec<String> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.at_rest())
            .take(10)
            .map(|(id, p)| {
                format!(
                    "{id} (pid {}, alive {}, kill {:?}, closed {}, exited {})",
                    p.pid, p.alive, p.kill, p.core_closed, p.core_exited
                )
            })
            .collect();
        format!("jobs: {}; executors: {}", jobs.join(", "), procs.join(", "))
    }

    pub(super) fn guarded(
        &mut self,
        f: impl FnOnce(&mut PoolSim) -> Result<(), FailureKind>,
    ) -> Result<(), SimFailure> {
        if self.broken_run {
            return Err(self.failure(FailureKind::CorePanic {
                message: "the simulation already failed".into(),
            }));
        }
        catch_core_panic(|| f(self)).map_err(|kind| {
            self.broken_run = true;
            self.failure(kind)
        })
    }

    pub(super) fn failure(&self, kind: FailureKind) -> SimFailure {
        let trace = self
            .trace
            .iter()
            .map(|(at, t)| match t {
                TraceItem::In(e) => format!("{at:>12?}  -> {e:?}"),
                TraceItem::Out(c) => format!("{at:>12?}  <- {c:?}"),
                TraceItem::Note(n) => format!("{at:>12?}     {n}"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        SimFailure {
            seed: self.seed,
            at: self.now,
            step: self.report.steps,
            kind: Box::new(kind),
            trace: format!(
                "pool of {} (hang timeout {:?}, busy timeout {:?})\n{trace}",
                self.report.size, self.hang, self.busy
            ),
        }
    }

    pub(super) fn record(&mut self, item: TraceItem) {
        if self.trace.len() >= self.config.trace_len.max(1) {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, item));
    }

    pub(super) fn note(&mut self, what: impl FnOnce() -> String) {
        if self.config.trace_len > 0 {
            let n = what();
            self.record(TraceItem::Note(n));
        }
    }

    pub(super) fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    pub(super) fn us(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.rng.gen_range(0..=max))
    }

    pub(super) fn fingerprint(&mut self, words: [u64; 3]) {
        let mut h = self.report.fingerprint ^ self.now.as_nanos() as u64;
        for w in words {
            h = (h ^ w).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
        }
        self.report.fingerprint = h;
    }

    // === dispatch ===

    pub(super) fn dispatch(&mut self, ev: Ev) -> Result<(), FailureKind> {
        self.dispatch_event(ev)?;
        match self.violation.take() {
            Some(v) => Err(FailureKind::Pool(v)),
            None => Ok(()),
        }
    }

    fn dispatch_event(&mut self, ev: Ev) -> Result<(), FailureKind> {
        if self.stall.is_some() && ev.on_pool_loop() {
            self.deferred.push_back(ev);
            return Ok(());
        }
        match ev {
            Ev::Submit => self.on_submit(),
            Ev::AbandonSome => self.on_abandon_some(),
            Ev::SpawnAnswer { exec } => self.on_spawn_answer(exec),
            Ev::Deliver { exec, out } => self.on_deliver(exec, out),
            Ev::Reaped { exec } => {
                let p = self.procs.get_mut(&exec).expect("reaped processes exist");
                p.core_exited = true;
                let exit = p.exit.clone().expect("reaped processes died");
                let stacks = p
                    .kill
                    .filter(|(_, capture)| *capture)
                    .map(|_| format!("stacks of pid {}", p.pid));
                let stderr_tail = p.stderr_tail.to_string();
                let killed = p.killed;
                self.core_step(Event::Exited {
                    exec,
                    exit,
                    killed,
                    stacks,
                    stderr_tail,
                })
            }
            Ev::Tick { due } => {
                if self.tick_at != Some(due) {
                    return Ok(());
                }
                self.tick_at = None;
                self.check_detection()?;
                let samples = self.samples();
                self.prev_check = self.last_check;
                self.last_check = self.now;
                self.core_step(Event::Tick { samples })
            }
            Ev::ProcWake { exec } => {
                self.proc_wake(exec);
                Ok(())
            }
            Ev::ProcHello { exec, gen } => {
                self.on_proc_hello(exec, gen);
                Ok(())
            }
            Ev::ProcDone { exec, gen } => {
                self.on_proc_done(exec, gen);
                Ok(())
            }
            Ev::ProcCrash { exec, gen } => {
                if self.procs[&exec].gen == gen && self.procs[&exec].alive {
                    let (exit, tail) = if self.rng.gen_bool(0.5) {
                        (
                            Exit::Signal {
                                signal: 11,
                                name: "SIGSEGV",
                            },
                            "Fatal Python error: Segmentation fault",
                        )
                    } else {
                        (Exit::Code(3), "")
                    };
                    self.die(exec, exit, tail);
                }
                Ok(())
            }
            Ev::ProcCpuStops { exec, gen } => {
                let now = self.now;
                let p = self.procs.get_mut(&exec).expect("exists");
                if p.gen == gen && p.alive {
                    p.set_cpu(now, 0.0);
                    if let Some(s) = p.ongoing_silence() {
                        s.cpu_stops = Some(now);
                    }
                }
                Ok(())
            }
            Ev::ProcCloses { exec, gen } => {
                let p = &self.procs[&exec];
                if p.gen == gen && p.alive && !p.output_closed {
                    let error = match p.plans.get(&p.current.expect("running")) {
                        Some(TaskPlan::ReadError(_)) => Some(
                            "reading its output: Connection reset by peer (os error 104)".into(),
                        ),
                        _ => None,
                    };
                    self.write(exec, Out::Eof(error));
                    let p = self.procs.get_mut(&exec).expect("exists");
                    p.output_closed = true;
                }
                Ok(())
            }
            Ev::ProcBogus { exec, gen } => {
                let p = &self.procs[&exec];
                if p.gen == gen && p.alive {
                    let bogus = JobId(BOGUS_JOB + exec.0);
                    self.write(exec, Out::Answer(bogus, Answer::Value(Bytes::new())));
                }
                Ok(())
            }
            Ev::ProcDies { exec, exit, tail } => {
                if self.procs[&exec].alive {
                    self.die(exec, exit, tail);
                }
                Ok(())
            }
            Ev::KillNow { exec } => {
                if self.procs[&exec].alive {
                    self.procs.get_mut(&exec).expect("exists").killed = true;
                    self.die(exec, SIGKILL, "");
                }
                Ok(())
            }
            Ev::Stall { length } => {
                if self.healed || self.stall.is_some() {
                    return Ok(());
                }
                let max = if self.rng.gen_bool(0.5) {
                    STALL_SHORT_MS_MAX
                } else {
                    STALL_MS_MAX
                };
                let d = length.unwrap_or_else(|| {
                    Duration::from_millis(self.rng.gen_range(STALL_MS_MIN..=max))
                });
                self.report.stalls += 1;
                self.stall = Some((self.now, self.now + d));
                self.note(|| format!("the pool's loop stalls for {d:?}"));
                self.push(self.now + d, Ev::StallEnd);
                Ok(())
            }
            Ev::StallEnd => {
                let (start, end) = self.stall.take().expect("stalled");
                self.stalls.push((start, end));
                // The tick (if one is due) may come before the readers caught up.
                self.readers_behind = self.rng.gen_bool(0.5);
                let deferred = std::mem::take(&mut self.deferred);
                let (ticks, rest): (Vec<Ev>, Vec<Ev>) = deferred
                    .into_iter()
                    .partition(|e| matches!(e, Ev::Tick { .. }));
                let tick = ticks.into_iter().last();
                if self.readers_behind {
                    if let Some(t) = tick {
                        self.dispatch(t)?;
                    }
                    self.readers_behind = false;
                    for e in rest {
                        self.dispatch(e)?;
                    }
                } else {
                    for e in rest {
                        self.dispatch(e)?;
                    }
                    if let Some(t) = tick {
                        self.dispatch(t)?;
                    }
                }
                self.reschedule_tick();
                Ok(())
            }
            Ev::Heal => {
                self.healed = true;
                self.healed_at = self.now;
                self.jobs_left = 0;
                self.note(|| "faults heal".into());
                Ok(())
            }
        }
    }

    pub(super) fn reschedule_tick(&mut self) {
        let next = self.core.next_timeout().map(|t| t.max(self.now));
        if next != self.tick_at {
            self.tick_at = next;
            if let Some(t) = next {
                self.push(t, Ev::Tick { due: t });
            }
        }
    }

    /// Hand the pool an event, check its invariants, carry out its commands.
    pub(super) fn core_step(&mut self, ev: Event) -> Result<(), FailureKind> {
        self.handling = match &ev {
            Event::Started { exec, job } => Cause::Started(*exec, *job),
            Event::Abandon { attempt, .. } => self
                .by_attempt
                .get(attempt)
                .map_or(Cause::Other, |&j| Cause::Abandon(j)),
            _ => Cause::Other,
        };
        if self.config.trace_len > 0 {
            self.record(TraceItem::In(ev.clone()));
        }
        let out = self.core.handle(self.now, ev);
        self.core.check_invariants();
        self.carry_out(out)?;
        self.handling = Cause::Other;
        self.reschedule_tick();
        Ok(())
    }

    // === the worker ===

    pub(super) fn on_submit(&mut self) -> Result<(), FailureKind> {
        if self.jobs_left == 0 {
            return Ok(());
        }
        let burst = if self.rng.gen_bool(0.2) {
            self.rng.gen_range(2..=20)
        } else {
            1
        };
        for _ in 0..burst.min(self.jobs_left) {
            self.jobs_left -= 1;
            let job = JobId(self.jobs.len() as u64 + 1);
            let (task, attempt) = attempt_of(job);
            self.jobs.insert(
                job,
                Job {
                    task,
                    attempt,
                    submitted: self.now,
                    sent_to: BTreeSet::new(),
                    owner: None,
                    ran_on: Vec::new(),
                    finished: false,
                    forgotten: false,
                    abandoned: false,
                },
            );
            self.by_attempt.insert(attempt, job);
            self.report.jobs += 1;
            self.core_step(Event::Execute { job, task, attempt })?;
        }
        if self.jobs_left > 0 {
            let gap_ms = self.config.safety.as_millis() as u64 / (self.jobs_left as u64 + 1);
            let at = self.now + Duration::from_millis(self.rng.gen_range(0..=2 * gap_ms.max(1)));
            self.push(at, Ev::Submit);
        }
        Ok(())
    }

    pub(super) fn on_abandon_some(&mut self) -> Result<(), FailureKind> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        // Mostly an unfinished attempt; sometimes one that already finished (a no-op).
        let unfinished: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.finished)
            .map(|(&id, _)| id)
            .collect();
        let job = if !unfinished.is_empty() && self.rng.gen_bool(0.8) {
            unfinished[self.rng.gen_range(0..unfinished.len())]
        } else {
            JobId(self.rng.gen_range(1..=self.jobs.len() as u64))
        };
        let j = self.jobs.get_mut(&job).expect("drawn from the jobs");
        if !j.finished {
            j.abandoned = true;
        }
        let (task, attempt) = (j.task, j.attempt);
        self.core_step(Event::Abandon { task, attempt })
    }
}
