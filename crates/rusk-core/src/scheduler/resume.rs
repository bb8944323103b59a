//! The journal's side of the scheduler: emitting records, resuming from them after a restart,
//! and adopting the results workers kept while the scheduler was away.
//!
//! After a restart the scheduler holds back placement (for at most `resume_grace`) until every
//! worker the journal names as a holder has registered again: a result that still exists is
//! adopted, not recomputed. Graphs no client claims within the same grace (`LocateOutputs`)
//! are released, unless they were detached.
use super::*;
use crate::journal::{Record, Resume, ATTEMPTS_RESERVED_PER_RECORD};

#[derive(Default)]
pub(super) struct ResumeState {
    /// Results that reached memory since the last [`Scheduler::flush_journal`].
    pub(super) mem: Vec<(TaskRef, u64, Arc<str>)>,
    /// Attempt ids below this are covered by a journaled `Reserved`.
    pub(super) reserved: u64,
    /// Workers (by name) that held results before the restart and have not registered again.
    pub(super) awaiting: FxHashSet<Arc<str>>,
    /// Until when placement waits for `awaiting` and graphs wait to be claimed (set by the
    /// first event after the restart, from its `now`).
    pub(super) grace_until: Option<Duration>,
    /// Resumed and still waiting for the grace to start.
    pub(super) pending: bool,
}

impl Scheduler {
    /// A scheduler that resumes the work the journal describes. Its first commands (the id
    /// reservation, to be journaled at once) are in the returned vector.
    pub fn resume(config: SchedulerConfig, from: Resume) -> (Scheduler, Vec<Command>) {
        let mut s = Scheduler::new(config);
        s.next_attempt = from.next_attempt.max(1);
        s.next_graph = from.next_graph.max(1);
        s.reserve_attempts();
        for (id, g) in from.graphs {
            if g.session {
                s.open_session(None, Some(id));
                for (tasks, outputs) in g.extensions {
                    // A journaled extension compiled before; if it no longer does (its adopt
                    // source is gone), the graph resumes without it.
                    let _ = s.extend_graph(id, tasks, outputs);
                }
            } else {
                match compile(g.spec) {
                    Ok(compiled) => {
                        s.add_graph(None, compiled, g.detach, Some(id));
                    }
                    // Accepted once, so it compiles; a journal from another version might not.
                    Err(_) => continue,
                }
            }
            if g.delivered {
                if let Some(graph) = s.graphs.get_mut(&id) {
                    graph.notify_finished = false;
                }
            }
        }
        let mut awaited = 0u64;
        for (task, (_, holder)) in from.in_memory {
            if s.task(task).is_some() {
                awaited += 1;
                s.resume.awaiting.insert(holder);
            }
        }
        s.resume.pending = true;
        let mut r = Scheduler::scheduler_record(s.config.host.clone());
        r.cause = "scheduler-restart".into();
        r.observed = format!(
            "started from its journal: {} graph(s), {} result(s) held by {} worker(s) before",
            s.graphs.len(),
            awaited,
            s.resume.awaiting.len()
        );
        r.action = format!(
            "graphs resumed; placement waits up to {} ms for those workers to register again",
            s.config.resume_grace.as_millis()
        );
        s.record(Duration::ZERO, r);
        let out = std::mem::take(&mut s.out);
        (s, out)
    }

    /// Queue a journal record (nothing without a journal).
    pub(super) fn journal(&mut self, r: Record) {
        if self.config.journal {
            self.out.push(Command::Journal(r));
        }
    }

    /// Journal a result that reached memory: batched until [`Scheduler::flush_journal`].
    pub(super) fn journal_in_memory(&mut self, task: TaskRef, size: u64, holder: Incarnation) {
        if self.config.journal {
            let name = self.workers[&holder].name.clone();
            self.resume.mem.push((task, size, name));
        }
    }

    /// The records batched over the events of one loop turn: the shell calls this once per
    /// turn, before it writes the turn's journal records.
    pub fn flush_journal(&mut self, out: &mut Vec<Command>) {
        if !self.resume.mem.is_empty() {
            out.push(Command::Journal(Record::InMemory(std::mem::take(
                &mut self.resume.mem,
            ))));
        }
    }

    /// Journal a new attempt-id floor before ids reach the old one.
    pub(super) fn reserve_attempts(&mut self) {
        if self.config.journal && self.next_attempt >= self.resume.reserved {
            self.resume.reserved = self.next_attempt + ATTEMPTS_RESERVED_PER_RECORD;
            self.journal(Record::Reserved {
                attempts: self.resume.reserved,
                graphs: self.next_graph,
            });
        }
    }

    /// Start the grace at the first event after a restart; end it when it runs out.
    pub(super) fn resume_tick(&mut self, now: Duration) {
        if self.resume.pending {
            self.resume.pending = false;
            self.resume.grace_until = Some(now + self.config.resume_grace);
            return;
        }
        let Some(until) = self.resume.grace_until else {
            return;
        };
        if now < until {
            return;
        }
        self.resume.grace_until = None;
        self.resume.awaiting.clear();
        // Graphs nobody claimed: their clients are not coming back.
        let mut unclaimed: Vec<GraphId> = self
            .graphs
            .iter()
            .filter(|(id, g)| g.resumed && !self.detached.contains(id))
            .map(|(id, _)| *id)
            .collect();
        unclaimed.sort_unstable();
        for id in unclaimed {
            self.retire_graph(id);
        }
        for g in self.graphs.values_mut() {
            g.resumed = false;
        }
    }

    /// Is placement held back, waiting for holders to register again?
    pub(super) fn resume_holding(&self) -> bool {
        self.resume.pending
            || (self.resume.grace_until.is_some() && !self.resume.awaiting.is_empty())
    }

    /// A worker that registered naming results it already stores: take over those still
    /// needed and not yet in memory; tell it to drop the others.
    pub(super) fn adopt_held(&mut self, inc: Incarnation, held: Vec<(TaskRef, u64)>) {
        let name = self.workers[&inc].name.clone();
        self.resume.awaiting.remove(&name);
        let mut release = Vec::new();
        let reported = held.len();
        for (task, size) in held {
            let adoptable = self.task(task).is_some_and(|t| {
                matches!(t.state, TaskState::Waiting | TaskState::Ready)
                    && (t.is_output || t.unfinished_dependents > 0)
            });
            if !adoptable {
                release.push(task);
                continue;
            }
            let attempt = AttemptId(self.next_attempt);
            self.next_attempt += 1;
            self.reserve_attempts();
            self.workers
                .get_mut(&inc)
                .expect("just joined")
                .assigned
                .insert(task);
            let t = self.task_mut(task).expect("checked");
            t.attempt = attempt;
            t.started = false;
            t.started_at = None;
            t.est_us = 0;
            self.set_state(task, TaskState::Assigned { worker: inc });
            self.on_task_done(inc, task, attempt, size);
        }
        let adopted = (reported - release.len()) as u64;
        self.stats.results_adopted += adopted;
        let info = self.workers[&inc].info.clone();
        let mut r = self.worker_record(&info, inc);
        r.cause = "rejoin".into();
        r.observed = format!("registered again holding {reported} result(s)");
        r.action = format!(
            "adopted {adopted} (not recomputed); {} no longer needed, released",
            release.len()
        );
        let now = self.now;
        self.record(now, r);
        if !release.is_empty() {
            self.out.push(Command::ToWorker {
                incarnation: inc,
                msg: SchedulerToWorker::Release { tasks: release },
            });
        }
    }
}
