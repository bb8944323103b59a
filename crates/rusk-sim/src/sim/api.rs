//! What scripted scenarios drive a [`Sim`] with: time, state to look at, chosen faults,
//! stepping and finishing.
use super::{nanny, net, Death, FaultCounts, LifeState, Phase, Sim, SimReport, MAIN_CLIENT};
use crate::error::{FailureKind, SimFailure};
use crate::oracle::Accepted;
use crate::workload::GraphModel;
use rusk_core::scheduler::Scheduler;
use rusk_proto::{GraphId, Incarnation};
use std::sync::Arc;
use std::time::Duration;

impl Sim {
    /// Current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Results the scheduler accepted so far, in order.
    pub fn accepted(&self) -> &[Accepted] {
        &self.oracle.accepted
    }

    /// The slot of the worker life that was given `inc`.
    pub fn slot_of(&self, inc: Incarnation) -> Option<u32> {
        self.inc_to_life.get(&inc).map(|&l| self.lives[l].slot)
    }

    /// The graph id the scheduler gave to the graph submitted as `model`, once known.
    pub fn graph_id(&self, model: usize) -> Option<GraphId> {
        self.clients
            .values()
            .flat_map(|c| c.graphs.iter())
            .find(|(_, g)| g.model == model)
            .map(|(id, _)| *id)
    }

    /// The spec index (`TaskRef::index`) of model task `m` of graph model `model`.
    pub fn spec_index(&self, model: usize, m: usize) -> u32 {
        self.models[model].spec_pos[m]
    }

    /// Fetches between workers that have started and not resolved yet, as
    /// `(requesting slot, peer address)`.
    pub fn worker_fetches_in_flight(&self) -> Vec<(u32, Arc<str>)> {
        self.net
            .fetches
            .values()
            .filter(|f| !f.resolved)
            .filter_map(|f| match f.requester {
                net::Requester::Worker(l) => Some((self.lives[l].slot, f.peer.clone())),
                net::Requester::Client { .. } | net::Requester::Shared { .. } => None,
            })
            .collect()
    }

    /// The slot whose current life listens on `address`, if that life is still up.
    pub fn slot_at(&self, address: &str) -> Option<u32> {
        let &l = self.addresses.get(address)?;
        matches!(self.lives[l].state, LifeState::Running | LifeState::Frozen)
            .then_some(self.lives[l].slot)
    }

    /// Tasks currently running on the executor of `slot`'s life.
    pub fn running_on(&self, slot: u32) -> u32 {
        self.slots[slot as usize]
            .life
            .map_or(0, |l| self.lives[l].threads_busy)
    }

    /// The last events (as many as `SimConfig::trace_len`), one per line, for debugging a
    /// scenario.
    pub fn trace(&self) -> String {
        self.trace.render()
    }

    /// Faults injected so far.
    pub fn fault_counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// Submit a graph from the main client now; returns its model number.
    pub fn submit(&mut self, model: GraphModel) -> usize {
        let m = self.add_model(model);
        let now = self.now;
        self.plan_submit(MAIN_CLIENT, now, m);
        m
    }

    /// Crash `slot`'s current life. With `silent` the scheduler hears nothing (the host
    /// vanished) and must notice by the missing heartbeats; for a slot with a nanny, the whole
    /// host vanishes (a worker cannot die silently under its nanny's eyes).
    pub fn kill(&mut self, slot: u32, silent: bool) -> Result<(), SimFailure> {
        self.guarded(|s| {
            match (s.slots[slot as usize].sup, silent) {
                (Some(sup), true) => s.vanish_host(sup.host),
                _ => {
                    if let Some(life) = s.slots[slot as usize].life {
                        s.kill_life(life, if silent { Death::Silent } else { Death::Crash });
                    }
                }
            }
            Ok(())
        })
    }

    /// Break `slot`'s worker↔scheduler connection while both are healthy (a partition): the
    /// worker exits with `EXIT_CONNECTION_LOST` and is restarted.
    pub fn break_connection(&mut self, slot: u32) -> Result<(), SimFailure> {
        self.guarded(|s| {
            if let Some(life) = s.slots[slot as usize].life {
                s.counts.link_breaks += 1;
                s.break_link(life);
            }
            Ok(())
        })
    }

    /// Every worker the nanny of `slot` starts during the next `d` dies while starting (or
    /// cannot be started); the current one crashes now.
    pub fn crash_loop(&mut self, slot: u32, d: Duration) -> Result<(), SimFailure> {
        self.guarded(|s| {
            s.start_crash_loop(slot, d);
            Ok(())
        })
    }

    /// The nanny process of `host` dies (its workers with it).
    pub fn kill_nanny(&mut self, host: usize) -> Result<(), SimFailure> {
        self.guarded(|s| {
            if let Some(n) = s.hosts[host].nanny {
                s.counts.nanny_deaths += 1;
                s.end_nanny(n, nanny::NannyEnd::Crash);
            }
            Ok(())
        })
    }

    /// `rusk restart <nanny>/<slot>` for worker slot `slot`, through the scheduler.
    pub fn operator_restart_slot(&mut self, slot: u32) {
        self.operator_restart(slot);
    }

    /// Hand the nanny of `slot` a `RestartWorker` for `incarnation` after `late`, as if the
    /// scheduler had sent it.
    pub fn send_restart_request(&mut self, slot: u32, incarnation: Incarnation, late: Duration) {
        self.inject_stale_restart(slot, incarnation, late);
    }

    /// The id each worker slot's workers have (`w3`, or `nanny/slot`): stable over its lives.
    pub fn slot_names(&self) -> Vec<String> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| match s.sup {
                Some(sup) => format!("{}/{}", self.hosts[sup.host].name, sup.index),
                None => format!("w{i}"),
            })
            .collect()
    }

    /// The state of `slot` as its nanny sees it (`running`, `backing-off`, `failed`, ...):
    /// `unsupervised` without a nanny, `no nanny` while none runs.
    pub fn slot_status(&self, slot: u32) -> String {
        self.slot_state(slot)
    }

    /// Restarts of `slot` its nanny counted.
    pub fn slot_restarts(&self, slot: u32) -> u32 {
        let Some(sup) = self.slots[slot as usize].sup else {
            return 0;
        };
        self.hosts[sup.host].nanny.map_or(0, |n| {
            self.nannies[n].core.statuses()[sup.index as usize].restarts
        })
    }

    /// The pid of `slot`'s live worker process.
    pub fn slot_pid(&self, slot: u32) -> Option<u32> {
        let life = self.slots[slot as usize].life?;
        self.lives[life].is_alive().then_some(self.lives[life].pid)
    }

    /// The incarnation `slot`'s live worker joined the scheduler as.
    pub fn slot_incarnation(&self, slot: u32) -> Option<Incarnation> {
        let life = self.slots[slot as usize].life?;
        self.lives[life].incarnation
    }

    /// Whether `slot` runs a worker that its nanny and the scheduler both count on.
    pub fn slot_is_up(&self, slot: u32) -> bool {
        self.slot_up(slot)
    }

    /// Tasks poisoned so far, as the oracle counted them.
    pub fn poisoned(&self) -> usize {
        self.oracle.poisoned.len()
    }

    /// Stop `slot`'s current life (no processing, no heartbeats) for `d`.
    pub fn freeze(&mut self, slot: u32, d: Duration) {
        if let Some(life) = self.slots[slot as usize].life {
            self.freeze_life(life, d);
        }
    }

    /// Crash the scheduler now, between two of its turns (needs
    /// `SimConfig::scheduler_crashes`): it restarts from its journal after a short while and
    /// everyone reconnects (`sim/crash.rs`).
    pub fn crash_scheduler(&mut self) -> Result<(), SimFailure> {
        assert!(
            self.crash.enabled,
            "crashing the scheduler needs SimConfig::scheduler_crashes"
        );
        self.guarded(|s| {
            if !s.crash.down {
                s.crash_counts.between_turns += 1;
                s.crash_now("between turns (scripted)");
            }
            Ok(())
        })
    }

    /// Deliver the next worker packet that carries a `TaskDone` twice.
    pub fn duplicate_next_task_done(&mut self) {
        self.dup_next_task_done = true;
    }

    /// Process events until `pred` holds (checked after every step) or `limit` of virtual
    /// time has passed; returns whether `pred` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, SimFailure> {
        let end = self.now + limit;
        while self.peek_time().is_some_and(|t| t <= end) {
            self.step()?;
            if pred(self) {
                return Ok(true);
            }
        }
        Ok(pred(self))
    }

    /// Heal all faults now (if the liveness phase has not started) and run until everything
    /// submitted has finished and been checked, or the liveness bound passes.
    pub fn finish(mut self) -> Result<SimReport, SimFailure> {
        if !self.heal_planned && self.phase == Phase::Safety {
            self.guarded(|s| s.heal())?;
        }
        loop {
            if let Phase::Liveness { deadline } = self.phase {
                if self.client_done() && self.all_slots_up() {
                    return self.settle_and_report();
                }
                if self.now > deadline {
                    let pending = self.pending_summary();
                    return Err(self.failure(FailureKind::Liveness {
                        bound: self.config.liveness_bound,
                        pending,
                    }));
                }
            }
            self.step()?;
        }
    }
}
