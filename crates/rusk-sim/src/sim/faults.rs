//! Random fault injection during the safety phase.
//!
//! Each seed draws its own intensity, so that some runs are nearly calm (where subtle races
//! show) and some are hostile (where recovery piles on recovery). Process faults (crash,
//! silent death, freeze, restart, broken connection) come as events at random intervals;
//! packet faults (loss, duplication, delay) and fetch failures are drawn per packet in `net`.
use super::{Death, Sim};
use crate::error::FailureKind;
use crate::trace::What;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// How hard this seed injects faults.
#[derive(Clone, Debug)]
pub(crate) struct FaultPlan {
    pub(crate) enabled: bool,
    /// Per packet on a worker link: lost (the connection breaks), duplicated, delayed.
    pub(crate) p_drop: f64,
    pub(crate) p_dup: f64,
    pub(crate) p_delay: f64,
    /// Per fetch: the connection fails.
    pub(crate) p_fetch_fail: f64,
    /// Mean virtual time between process faults, in milliseconds.
    mean_gap_ms: f64,
}

impl FaultPlan {
    pub(crate) fn none() -> FaultPlan {
        FaultPlan {
            enabled: false,
            p_drop: 0.0,
            p_dup: 0.0,
            p_delay: 0.0,
            p_fetch_fail: 0.0,
            mean_gap_ms: f64::INFINITY,
        }
    }

    pub(crate) fn random(rng: &mut ChaCha8Rng) -> FaultPlan {
        let level = rng.gen_range(0..4);
        let (p_drop, p_dup, p_delay, p_fetch_fail, mean_gap_ms) = match level {
            0 => (0.0, 0.005, 0.005, 0.005, 3_000.0),
            1 => (0.0005, 0.01, 0.01, 0.02, 1_500.0),
            2 => (0.001, 0.02, 0.02, 0.05, 800.0),
            _ => (0.003, 0.05, 0.04, 0.1, 400.0),
        };
        FaultPlan {
            enabled: true,
            p_drop,
            p_dup,
            p_delay,
            p_fetch_fail,
            mean_gap_ms,
        }
    }

    /// Exponentially distributed time to the next process fault.
    pub(crate) fn next_gap(&self, rng: &mut ChaCha8Rng) -> Duration {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        Duration::from_secs_f64((-u.ln() * self.mean_gap_ms / 1000.0).min(3600.0))
    }
}

/// Faults injected in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub crashes: u32,
    pub silent_deaths: u32,
    pub freezes: u32,
    pub link_breaks: u32,
    pub duplicates: u32,
    pub delays: u32,
    pub fetch_failures: u32,
    /// Worker processes started (the first start of each slot included).
    pub restarts: u32,
}

impl Sim {
    pub(crate) fn on_fault(&mut self) -> Result<(), FailureKind> {
        if !self.faults_active() {
            return Ok(());
        }
        let gap = self.plan.next_gap(&mut self.rng);
        self.push(self.now + gap, super::Ev::Fault);
        let slot = self.rng.gen_range(0..self.slots.len());
        let Some(life) = self.slots[slot].life else {
            return Ok(());
        };
        let ttl = self.config.worker_ttl;
        match self.rng.gen_range(0..100) {
            0..=24 => {
                self.counts.crashes += 1;
                self.note(What::Note(format!("fault: crash w{slot}")));
                self.kill_life(life, Death::Crash);
            }
            25..=37 => {
                self.counts.silent_deaths += 1;
                self.note(What::Note(format!("fault: w{slot} vanishes silently")));
                self.kill_life(life, Death::Silent);
            }
            38..=57 => {
                let d = ttl.mul_f64(self.rng.gen_range(0.02..0.8));
                self.freeze_life(life, d);
            }
            58..=69 => {
                let d = ttl.mul_f64(self.rng.gen_range(1.2..3.0));
                self.freeze_life(life, d);
            }
            70..=84 => {
                // Restart at once as a new incarnation.
                self.counts.crashes += 1;
                self.note(What::Note(format!("fault: restart w{slot}")));
                self.kill_life(life, Death::Crash);
                let at = self.now + Duration::from_millis(1);
                self.push(at, super::Ev::Restart { slot: slot as u32 });
            }
            _ => {
                self.counts.link_breaks += 1;
                self.note(What::Note(format!("fault: w{slot}'s connection breaks")));
                self.kill_life(life, Death::LinkBroke);
            }
        }
        Ok(())
    }
}
