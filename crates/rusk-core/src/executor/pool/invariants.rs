//! The pool's cross-checks of its own indexes (`PoolCore::check_invariants`), run after every
//! step by its unit tests and the pool simulator.
use super::*;

impl PoolCore {
    /// Cross-check every index; panics on the first violation.
    pub fn check_invariants(&self) {
        for w in self.execs.windows(2) {
            assert!(w[0].id < w[1].id, "executors out of order");
        }
        assert!(
            self.slots_held() <= self.config.size,
            "{} executors hold slots in a pool of {}",
            self.slots_held(),
            self.config.size
        );
        for x in &self.execs {
            let id = x.id;
            if x.pid.is_none() {
                assert!(
                    x.running.is_none() && x.live() && x.hello == Hello::Waiting,
                    "{id} is being spawned but has news"
                );
            }
            if let Some((r, _)) = x.running {
                assert!(x.queue.contains(&r), "{id} runs job {r}, not in its queue");
            }
            assert!(
                x.queue.len() <= PIPELINE_DEPTH_SHORT,
                "{id} was sent {} jobs ahead",
                x.queue.len()
            );
            for (i, j) in x.queue.iter().enumerate() {
                assert!(!x.queue[..i].contains(j), "job {j} twice in {id}'s queue");
                let job = self.jobs.get(j).unwrap_or_else(|| {
                    panic!("{id} holds job {j}, which the pool forgot");
                });
                assert!(
                    job.on.contains(&id),
                    "{id} holds job {j}, which lost track of it"
                );
            }
            if x.death.is_some() && x.exited.is_none() {
                assert!(x.kill_sent, "{id} condemned but not killed");
            }
        }
        assert_eq!(
            self.by_attempt.len(),
            self.jobs.len(),
            "by_attempt out of step"
        );
        let pending: rustc_hash::FxHashSet<JobId> = self.pending.iter().copied().collect();
        assert_eq!(pending.len(), self.pending.len(), "a job pending twice");
        for (&id, job) in &self.jobs {
            assert_eq!(
                self.by_attempt.get(&(job.task, job.attempt)),
                Some(&id),
                "job {id} not found by its attempt"
            );
            // A job on two executors at once could run twice but for its claim.
            assert!(
                job.on.len() <= 1 || job.claim.is_some(),
                "job {id} copied without a claim"
            );
            for (i, e) in job.on.iter().enumerate() {
                assert!(!job.on[..i].contains(e), "job {id} on {e} twice");
                assert!(
                    self.exec(*e).is_some_and(|x| x.queue.contains(&id)),
                    "job {id} on {e}, which does not hold it"
                );
            }
            let pending = pending.contains(&id);
            if job.reported {
                assert!(!pending, "finished job {id} is pending");
                assert!(
                    !job.on.is_empty(),
                    "finished job {id} held by nobody but kept"
                );
                continue;
            }
            assert!(!job.abandoned, "abandoned job {id} not finished");
            // Nothing waits forever: an unfinished job waits for an executor or is with one.
            assert!(
                pending == job.on.is_empty(),
                "job {id}: pending {pending}, on {:?}",
                job.on
            );
            if let Some(o) = job.owner {
                let x = self.exec(o).unwrap_or_else(|| {
                    panic!("job {id} owned by {o}, which is gone, and not finished")
                });
                assert_eq!(
                    x.running.map(|(r, _)| r),
                    Some(id),
                    "job {id} owned by {o}, which runs something else"
                );
            }
        }
        if !self.pending.is_empty() {
            assert!(
                self.execs.iter().any(Exec::live),
                "jobs wait and no executor is coming"
            );
            assert!(self.active, "jobs wait in an inactive pool");
        }
    }
}
