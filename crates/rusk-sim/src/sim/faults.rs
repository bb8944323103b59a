//! Random fault injection during the safety phase.
//!
//! Each seed draws its own intensity, so that some runs are nearly calm (where subtle races
//! show) and some are hostile (where recovery piles on recovery). Process faults come as events
//! at random intervals: for any worker a crash, a freeze shorter or longer than the TTL, a
//! partition of its scheduler link; without a nanny also a silent death or an outside restart;
//! with one a hang (until the watchdog or the TTL ends it), a crash loop, the nanny's death,
//! the whole host vanishing, the nanny's link breaking, stale restart requests (late,
//! duplicated), operator restarts and (rarely) an operator stop. Packet faults (loss,
//! duplication, delay) and fetch failures are drawn per packet in `net`.
use super::{Death, Sim};
use crate::error::FailureKind;
use crate::trace::What;
use crate::workload::FREEZE_MS_MAX;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rusk_proto::Incarnation;
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
    /// Workers killed by a killer task they started.
    pub aborts: u32,
    pub crash_loops: u32,
    pub spawn_failures: u32,
    pub nanny_starts: u32,
    pub nanny_deaths: u32,
    pub host_vanishes: u32,
    pub nanny_link_breaks: u32,
    pub stale_restart_requests: u32,
    pub operator_restarts: u32,
    pub operator_stops: u32,
}

impl Sim {
    pub(crate) fn on_fault(&mut self) -> Result<(), FailureKind> {
        if !self.faults_active() {
            return Ok(());
        }
        let gap = self.plan.next_gap(&mut self.rng);
        self.push(self.now + gap, super::Ev::Fault);
        let slot = self.rng.gen_range(0..self.slots.len()) as u32;
        let sup = self.slots[slot as usize].sup;
        let life = self.slots[slot as usize]
            .life
            .filter(|&l| self.lives[l].is_alive());
        let ttl = self.config.worker_ttl;
        let roll = self.rng.gen_range(0..100);
        // Faults of a nanny's host or of a nanny slot, when the slot has one.
        if let Some(sup) = sup {
            match roll {
                70..=75 => {
                    let d = self.draw_crash_loop();
                    self.start_crash_loop(slot, d);
                    return Ok(());
                }
                76..=80 => {
                    if let Some(n) = self.hosts[sup.host].nanny {
                        self.counts.nanny_deaths += 1;
                        let name = self.nanny_name(n);
                        self.note(What::Note(format!("fault: {name} dies")));
                        self.end_nanny(n, super::nanny::NannyEnd::Crash);
                    }
                    return Ok(());
                }
                81..=82 => {
                    self.vanish_host(sup.host);
                    return Ok(());
                }
                83..=87 => {
                    let conn = self.hosts[sup.host]
                        .nanny
                        .and_then(|n| self.nannies[n].conn);
                    if let Some(conn) = conn {
                        self.counts.nanny_link_breaks += 1;
                        self.note(What::Note(format!("fault: nanny link {conn} breaks")));
                        self.break_nanny_link(conn);
                    }
                    return Ok(());
                }
                88..=94 => {
                    self.stale_restart_requests(slot);
                    return Ok(());
                }
                95..=97 => {
                    self.operator_restart(slot);
                    return Ok(());
                }
                98 => {
                    self.operator_stop(sup.host);
                    return Ok(());
                }
                _ => {}
            }
        }
        let Some(life) = life else {
            return Ok(());
        };
        match roll {
            0..=24 => {
                self.counts.crashes += 1;
                self.note(What::Note(format!("fault: crash w{slot}")));
                self.kill_life(life, Death::Crash);
            }
            25..=37 if sup.is_none() => {
                self.counts.silent_deaths += 1;
                self.note(What::Note(format!("fault: w{slot} vanishes silently")));
                self.kill_life(life, Death::Silent);
            }
            25..=37 => {
                // A hang: only the nanny's watchdog or the scheduler's TTL ends it.
                let d = Duration::from_millis(self.rng.gen_range(2_000..=FREEZE_MS_MAX));
                self.freeze_life(life, d);
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
                self.push(at, super::Ev::Restart { slot });
            }
            _ => {
                self.counts.link_breaks += 1;
                self.note(What::Note(format!("fault: w{slot}'s connection breaks")));
                self.break_link(life);
            }
        }
        Ok(())
    }

    /// How long an injected crash loop lasts: some end while the slot backs off, some outlast
    /// the crash-restart limit and leave the slot `failed`.
    fn draw_crash_loop(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(300..=8_000))
    }

    /// Every worker the slot's nanny starts until `d` from now dies while starting; the
    /// current one crashes now.
    pub(crate) fn start_crash_loop(&mut self, slot: u32, d: Duration) {
        if self.slots[slot as usize].sup.is_none() {
            return;
        }
        self.counts.crash_loops += 1;
        let name = self.slot_name(slot);
        self.note(What::Note(format!("fault: {name} crash-loops for {d:?}")));
        self.slots[slot as usize].crash_loop_until = Some(self.now + d);
        if let Some(life) = self.slots[slot as usize].life {
            self.kill_life(life, Death::Crash);
        }
    }

    /// The host vanishes with its nanny and workers: nothing closes, nothing answers.
    pub(crate) fn vanish_host(&mut self, host: usize) {
        if let Some(n) = self.hosts[host].nanny {
            self.counts.host_vanishes += 1;
            let name = self.nanny_name(n);
            self.note(What::Note(format!("fault: host of {name} vanishes")));
            self.end_nanny(n, super::nanny::NannyEnd::Vanish);
        }
    }

    /// Restart requests for incarnations of `slot` the scheduler already dropped, late and
    /// sometimes twice: the nanny must ignore every one that is not its current worker's.
    fn stale_restart_requests(&mut self, slot: u32) {
        let old: Vec<Incarnation> = self.slots[slot as usize]
            .incarnations
            .iter()
            .copied()
            .filter(|&i| self.oracle.is_removed(i))
            .collect();
        if old.is_empty() {
            return;
        }
        let inc = old[self.rng.gen_range(0..old.len())];
        let copies = self.rng.gen_range(1..=2);
        for _ in 0..copies {
            let late = Duration::from_millis(self.rng.gen_range(0..=2_000));
            self.inject_stale_restart(slot, inc, late);
        }
    }
}
