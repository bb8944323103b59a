//! The oracle: what the pool reports (starts, finishes, logs) and whom it kills, checked
//! against what the executors did ([`PoolViolation`]).
use super::*;

impl PoolSim {
    pub(super) fn on_started(&mut self, attempt: AttemptId) -> Result<(), FailureKind> {
        let job = self.by_attempt[&attempt];
        let Cause::Started(exec, started) = self.handling else {
            return Err(FailureKind::Pool(PoolViolation::BadStart {
                job: job.0,
                why: "not while handling an executor's start",
            }));
        };
        let j = self.jobs.get_mut(&job).expect("exists");
        if started != job || j.owner.is_some() || j.finished {
            return Err(FailureKind::Pool(PoolViolation::BadStart {
                job: job.0,
                why: "for another job, twice, or after it finished",
            }));
        }
        j.owner = Some(exec);
        Ok(())
    }

    pub(super) fn on_finished(
        &mut self,
        attempt: AttemptId,
        result: Result<Bytes, Failure>,
    ) -> Result<(), FailureKind> {
        let job = self.by_attempt[&attempt];
        let j = self.jobs.get_mut(&job).expect("exists");
        if j.finished {
            return Err(FailureKind::Pool(PoolViolation::FinishedTwice {
                job: job.0,
            }));
        }
        j.finished = true;
        let (owner, submitted, abandoned) = (j.owner, j.submitted, j.abandoned);
        let unjustified = |failure: &Failure, why| {
            Err(FailureKind::Pool(PoolViolation::UnjustifiedFailure {
                job: job.0,
                failure: format!("{failure:?}"),
                why,
            }))
        };
        let plan = owner.and_then(|o| self.procs[&o].plans.get(&job).copied());
        match result {
            Ok(v) => {
                self.report.values += 1;
                if owner.is_none_or(|o| v != value_of(job, o)) {
                    return Err(FailureKind::Pool(PoolViolation::WrongValue {
                        job: job.0,
                        got: String::from_utf8_lossy(&v).into_owned(),
                        owner: owner.map(|o| o.0),
                    }));
                }
                if matches!(plan, Some(TaskPlan::Busy { .. })) {
                    self.report.busy_survived += 1;
                }
            }
            Err(f) => match &f {
                Failure::Raised(e) => {
                    self.report.raised += 1;
                    let ok = owner.is_some_and(|o| e.message == raised_of(job, o))
                        && matches!(plan, Some(TaskPlan::Raise(_)));
                    if !ok {
                        return unjustified(&f, "its owner did not raise it");
                    }
                }
                Failure::Abandoned => {
                    self.report.abandoned += 1;
                    if !abandoned || self.handling != Cause::Abandon(job) {
                        return unjustified(&f, "the worker did not abandon it now");
                    }
                }
                Failure::Lost(loss) => {
                    self.report.lost += 1;
                    let Some(o) = owner else {
                        return unjustified(&f, "it never started: queued jobs are not charged");
                    };
                    let p = &self.procs[&o];
                    if p.pid != loss.pid || p.alive {
                        return unjustified(&f, "its owner is another process, or alive");
                    }
                    // Its output closed and its exit came late: if it died by itself, that
                    // is what it died of.
                    let closed_output = Some(Death::Protocol(ProtocolError::ClosedOutput));
                    if loss.death == closed_output && !p.killed {
                        return unjustified(&f, "it died by itself, not of the kill");
                    }
                    let ok = match (&loss.death, plan) {
                        (None, Some(TaskPlan::Crash(_))) => !p.killed,
                        (None, _) => false,
                        (Some(Death::Hung { .. }), Some(TaskPlan::Hang)) => true,
                        (Some(Death::Hung { .. }), Some(TaskPlan::BusyThenStuck { .. })) => true,
                        (Some(Death::BusyTooLong { silent }), Some(TaskPlan::Busy { .. }))
                        | (
                            Some(Death::BusyTooLong { silent }),
                            Some(TaskPlan::BusyThenStuck { .. }),
                        ) => *silent > self.busy,
                        (
                            Some(Death::Protocol(_)),
                            Some(
                                TaskPlan::CloseOutput(_)
                                | TaskPlan::ReadError(_)
                                | TaskPlan::AnswerUnknown(_),
                            ),
                        ) => true,
                        _ => false,
                    };
                    if !ok {
                        return unjustified(&f, "its executor did not die that way");
                    }
                    let killed_at = p.kill.map_or(self.now, |(at, _)| at);
                    if matches!(loss.death, Some(Death::Hung { .. }))
                        && matches!(plan, Some(TaskPlan::BusyThenStuck { .. }))
                        && p.silence_at(killed_at)
                            .is_some_and(|s| s.computing_at(killed_at))
                    {
                        return unjustified(&f, "judged stuck while computing");
                    }
                }
                Failure::NoExecutor(_) => {
                    self.report.no_executor += 1;
                    if owner.is_some() {
                        return unjustified(&f, "it had started");
                    }
                    let recent = self
                        .start_failures
                        .iter()
                        .any(|&t| t + START_RETRY_DELAY >= submitted);
                    if !recent {
                        return unjustified(&f, "no start failed since it was submitted");
                    }
                }
            },
        }
        Ok(())
    }

    pub(super) fn on_log(&mut self, l: Log) -> Result<(), FailureKind> {
        match &l {
            Log::BusySilent { pid, .. } => {
                let busy = self
                    .procs
                    .values()
                    .find(|p| p.pid == *pid)
                    .is_some_and(|p| p.silence_at(self.prev_check).is_some_and(|s| s.computed));
                // (The silence it was in when the pool last looked: it may since have ended,
                // unread.)
                if !busy {
                    return Err(FailureKind::Pool(PoolViolation::BadLog {
                        log: format!("{l:?}"),
                        why: "the executor never computed in this silence",
                    }));
                }
            }
            Log::StartFailed { pid: Some(pid), .. } => {
                self.report.start_failures += 1;
                let failed = self
                    .procs
                    .values()
                    .find(|p| p.pid == *pid)
                    .is_some_and(|p| !p.ready && !p.alive);
                if !failed {
                    return Err(FailureKind::Pool(PoolViolation::BadLog {
                        log: format!("{l:?}"),
                        why: "that executor did start (or lives)",
                    }));
                }
                // Jobs fail for want of an executor from when the pool learns of it.
                self.start_failures.push(self.now);
            }
            Log::StartFailed { pid: None, .. } => self.start_failures.push(self.now),
            Log::ExecutorReplaced { .. } => {}
        }
        Ok(())
    }

    /// A stuck executor is killed within a bound of the hang timeout, a silently computing one
    /// of the busy timeout (both counted from the end of the last stall, if later).
    pub(super) fn check_detection(&self) -> Result<(), FailureKind> {
        let since_stall = |s: Duration| match self.stalls.last() {
            Some(&(_, b)) => s.max(b),
            None => s,
        };
        let period = executor::PING_INTERVAL;
        for p in self.procs.values() {
            let (true, None, false, Some(s)) = (
                p.alive,
                p.kill,
                p.output_closed,
                p.silences.last().copied().filter(Silence::ongoing),
            ) else {
                continue;
            };
            let silent = self.now.saturating_sub(since_stall(s.since));
            if !s.computed && silent > self.hang + self.hang / 2 + 4 * period {
                return Err(FailureKind::Pool(PoolViolation::HangNotDetected {
                    pid: p.pid,
                    silent,
                    hang_timeout: self.hang,
                }));
            }
            let busy_bound = self.busy.max(self.hang) + self.hang + 4 * period;
            if s.computing_at(self.now) && silent > busy_bound {
                return Err(FailureKind::Pool(PoolViolation::BusyNotDetected {
                    pid: p.pid,
                    silent,
                    busy_timeout: self.busy,
                }));
            }
        }
        Ok(())
    }
}
