//! The scheduler's side of the simulation: each step of the real `Scheduler` core, its
//! commands carried out (and checked) as its shell would, and what reaches it over the
//! workers' links.
use super::*;

impl Sim {
    /// One `Scheduler::handle` call, its invariant checks and the oracle's, then its commands.
    pub(crate) fn sched_step(&mut self, ev: scheduler::Event) -> Result<(), FailureKind> {
        if self.crash.down {
            return Ok(()); // the scheduler process is dead: nobody handles it
        }
        let report = match &ev {
            scheduler::Event::WorkerMessage { incarnation, msg } => {
                Some((*incarnation, msg.clone()))
            }
            _ => None,
        };
        let stale_before = self.scheduler.stats().stale_reports;
        let mut out = std::mem::take(&mut self.sbuf);
        self.scheduler.handle_into(self.now, ev, &mut out);
        self.scheduler.check_invariants();
        if let Some((inc, msg)) = report {
            let accepted = self.scheduler.stats().stale_reports == stale_before;
            self.oracle
                .on_report(self.now, inc, &msg, accepted, &self.models)?;
        }
        if let Err(failure) = self.end_turn(&mut out) {
            // The scheduler died in this turn: its messages never went out (or only those to
            // workers and nannies, carried out already).
            out.clear();
            self.sbuf = out;
            return failure.map_or(Ok(()), Err);
        }
        let r = self.carry_out_sched(&mut out);
        out.clear();
        self.sbuf = out;
        r?;
        let logged = std::mem::take(&mut self.poison_logged);
        self.oracle.check_poison(logged)?;
        let next = self.scheduler.next_timeout().max(self.now);
        if self.sched_tick_at != Some(next) {
            self.sched_tick_at = Some(next);
            self.push(next, Ev::SchedTick { due: next });
        }
        Ok(())
    }

    pub(crate) fn carry_out_sched(
        &mut self,
        out: &mut Vec<scheduler::Command>,
    ) -> Result<(), FailureKind> {
        let mut batches: Vec<(Incarnation, Vec<SchedulerToWorker>)> = Vec::new();
        let mut drops: Vec<Incarnation> = Vec::new();
        let mut to_nannies: Vec<(NannyId, Vec<SchedulerToNanny>)> = Vec::new();
        for cmd in out.drain(..) {
            match cmd {
                scheduler::Command::ToWorker { incarnation, msg } => {
                    if self.oracle.is_removed(incarnation) {
                        let what = match &msg {
                            SchedulerToWorker::Welcome { .. } => "Welcome",
                            SchedulerToWorker::Assign(_) => "Assign",
                            SchedulerToWorker::Cancel { .. } => "Cancel",
                            SchedulerToWorker::Release { .. } => "Release",
                            SchedulerToWorker::Upload { .. } => "Upload",
                            SchedulerToWorker::Steal { .. } => "Steal",
                            SchedulerToWorker::Replicate { .. } => "Replicate",
                        };
                        return Err(FailureKind::SentToDroppedWorker { incarnation, what });
                    }
                    match &msg {
                        SchedulerToWorker::Assign(a) => {
                            self.oracle.on_assign(incarnation, a, &self.models)?
                        }
                        SchedulerToWorker::Cancel { task, attempt } => {
                            self.oracle.on_cancel(incarnation, *task, *attempt)
                        }
                        SchedulerToWorker::Welcome { .. }
                        | SchedulerToWorker::Release { .. }
                        | SchedulerToWorker::Upload { .. } => {}
                        SchedulerToWorker::Steal { .. } | SchedulerToWorker::Replicate { .. } => {}
                    }
                    match batches.iter_mut().find(|(i, _)| *i == incarnation) {
                        Some((_, b)) => b.push(msg),
                        None => batches.push((incarnation, vec![msg])),
                    }
                }
                scheduler::Command::ToClient { client, msg } => {
                    if self.is_shared_client(client) {
                        self.shared_on_emit(client, &msg)?;
                    }
                    if let (SchedulerToClient::Submitted { graph, .. }, Some(m)) =
                        (&msg, self.submit_model)
                    {
                        self.oracle.graph_submitted(*graph, m);
                    }
                    self.send_to_client(client, msg);
                }
                scheduler::Command::DropWorker { incarnation, cause } => {
                    self.note(What::Note(format!("sched drops {incarnation}: {cause}")));
                    self.oracle.removed(incarnation, &self.models);
                    drops.push(incarnation);
                }
                scheduler::Command::ToNanny { nanny, msg } => {
                    self.check_to_nanny(nanny, &msg)?;
                    match to_nannies.iter_mut().find(|(n, _)| *n == nanny) {
                        Some((_, b)) => b.push(msg),
                        None => to_nannies.push((nanny, vec![msg])),
                    }
                }
                scheduler::Command::Log(r) => {
                    if r.cause == rusk_proto::msg::EventCause::PoisonTask {
                        self.poison_logged.push(r.observed.clone());
                    }
                    self.note(What::Note(format!(
                        "event {}: {} -> {}",
                        r.cause, r.observed, r.action
                    )));
                }
                scheduler::Command::Recovery(n) => {
                    self.note(What::Note(format!(
                        "recovery {} {}: {}, rescheduled {}, lost {}, recomputing {}",
                        n.worker,
                        n.incarnation,
                        n.cause,
                        n.rescheduled,
                        n.results_lost,
                        n.recomputing
                    )));
                }
                // Written in `end_turn`, before the turn's messages go out.
                scheduler::Command::Journal(_) => {}
            }
        }
        for (inc, batch) in batches {
            let life = *self
                .inc_to_life
                .get(&inc)
                .expect("the scheduler only knows incarnations the sim gave it");
            // An earlier incarnation of a worker that reconnected: its connection is gone.
            if self.lives[life].incarnation == Some(inc) {
                self.send_to_worker(life, batch);
            }
        }
        for inc in drops {
            let life = *self
                .inc_to_life
                .get(&inc)
                .expect("the scheduler only knows incarnations the sim gave it");
            if self.lives[life].incarnation == Some(inc) {
                self.on_drop_worker(life);
            }
        }
        for (conn, batch) in to_nannies {
            self.send_sched_to_nanny(conn, batch);
        }
        Ok(())
    }

    /// What the scheduler sends a nanny: only to a connection it has not been told is gone,
    /// and a restart request only for an incarnation it already dropped, of that nanny's slot.
    fn check_to_nanny(&self, nanny: NannyId, msg: &SchedulerToNanny) -> Result<(), FailureKind> {
        let what = match msg {
            SchedulerToNanny::Welcome => "Welcome",
            SchedulerToNanny::RestartWorker { .. } => "RestartWorker",
            SchedulerToNanny::OperatorRestart { .. } => "OperatorRestart",
            SchedulerToNanny::Stop => "Stop",
        };
        let Some(conn) = self.nanny_conns.get(&nanny) else {
            return Err(FailureKind::SentToGoneNanny { nanny, what });
        };
        if conn.left {
            return Err(FailureKind::SentToGoneNanny { nanny, what });
        }
        if let SchedulerToNanny::RestartWorker {
            slot, incarnation, ..
        } = msg
        {
            let incarnation = Incarnation(*incarnation);
            let bad = |why: String| {
                Err(FailureKind::BadRestartRequest {
                    nanny,
                    incarnation,
                    why,
                })
            };
            if !self.oracle.is_removed(incarnation) {
                return bad("the scheduler still counts it as a live worker".into());
            }
            let Some(&life) = self.inc_to_life.get(&incarnation) else {
                return bad("no worker ever joined as that incarnation".into());
            };
            let host = self.nannies[conn.nanny].host;
            match self.slots[self.lives[life].slot as usize].sup {
                Some(sup) if sup.host == host && sup.index == *slot => {}
                _ => {
                    return bad(format!(
                        "it is not slot {slot} of {}",
                        self.hosts[host].name
                    ))
                }
            }
        }
        Ok(())
    }

    /// A batch from a worker reaches the scheduler's shell: the first `Register` of a link
    /// allocates its incarnation; everything else is tagged with it.
    pub(super) fn on_to_sched(
        &mut self,
        life: LifeId,
        link: u32,
        batch: Vec<WorkerToScheduler>,
    ) -> Result<(), FailureKind> {
        let l = &self.lives[life];
        if !(l.link_open || l.flush_to_sched) || link != l.link {
            return Ok(()); // lost with the connection
        }
        let node = l.node();
        self.note(What::Deliver {
            from: node,
            to: Node::Scheduler,
            inc: l.incarnation,
            msgs: batch.iter().map(Msg::of_worker).collect(),
        });
        for msg in batch {
            match (self.lives[life].incarnation, msg) {
                (None, WorkerToScheduler::Register(info)) => {
                    let inc = Incarnation(self.next_incarnation);
                    self.next_incarnation += 1;
                    self.lives[life].incarnation = Some(inc);
                    self.lives[life].incarnations.push(inc);
                    self.inc_to_life.insert(inc, life);
                    let slot = self.lives[life].slot as usize;
                    self.slots[slot].incarnations.push(inc);
                    self.oracle.joined(inc, &info);
                    self.note(What::Note(format!("{node} joins as {inc}")));
                    let running = info.running.clone();
                    self.sched_step(scheduler::Event::WorkerJoined {
                        incarnation: inc,
                        info,
                    })?;
                    // Attempts it was still running that the scheduler took over: its
                    // assignments from now on, under their old ids.
                    for (task, attempt) in running {
                        if self.scheduler.assigned_attempt(task) == Some((inc, attempt)) {
                            self.oracle.adopted_running(inc, task, attempt)?;
                        }
                    }
                }
                (None, _) => {
                    // Before `Register` the shell accepts nothing (only possible with reordering).
                }
                (Some(incarnation), msg) => {
                    self.sched_step(scheduler::Event::WorkerMessage { incarnation, msg })?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_link_closed(
        &mut self,
        life: LifeId,
        inc: Option<Incarnation>,
        reason: &'static str,
    ) -> Result<(), FailureKind> {
        let Some(incarnation) = inc else {
            return Ok(()); // never registered: the scheduler never knew it
        };
        if self.oracle.is_removed(incarnation) {
            return Ok(());
        }
        let l = &mut self.lives[life];
        if l.incarnation == Some(incarnation) {
            if l.sched_forgot {
                return Ok(());
            }
            l.sched_forgot = true;
        }
        let node = l.node();
        self.note(What::Note(format!(
            "sched sees {node} ({incarnation}) leave: {reason}"
        )));
        self.oracle.removed(incarnation, &self.models);
        self.sched_step(scheduler::Event::WorkerLeft {
            incarnation,
            reason: reason.to_string(),
        })
    }
}
