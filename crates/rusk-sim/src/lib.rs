//! rusk's deterministic cluster simulator: the headline test of the cores.
//!
//! It runs the real pure cores, `rusk_core::scheduler::Scheduler` and several
//! `rusk_core::worker::WorkerCore`s, against each other under a virtual clock, over an
//! in-memory network that delays, reorders (across connections), duplicates and loses
//! messages, while workers crash, vanish, freeze and restart. One `u64` seed drives all of it,
//! so any failure replays exactly:
//!
//! ```text
//! RUSK_SIM_SEED=<N> cargo test -p rusk-sim
//! ```
//!
//! Each run has a *safety phase* with faults, in which after every step the cores'
//! `check_invariants()` and the simulator's own cross-checks must hold (no result accepted from
//! a fenced incarnation or twice for one assignment, every task executed with the true values
//! of its inputs), then a *liveness phase* with faults healed, in which every submitted graph
//! must finish and every output must be the value (or the error) the simulator worked out
//! independently, within a virtual-time bound.
//!
//! - [`run_seed`]: one run with a random workload and random faults;
//! - [`Sim`]: the cluster itself, for scripted scenarios;
//! - [`workload`]: graphs with known expected results.
#![forbid(unsafe_code)]

mod config;
mod error;
mod oracle;
mod sim;
mod trace;
pub mod workload;

pub use config::SimConfig;
pub use error::{FailureKind, SimFailure};
pub use oracle::Accepted;
pub use sim::{Death, FaultCounts, Sim, SimReport};

/// Run one seed: a random cluster, workload and fault plan, a safety phase, then a liveness
/// phase. `Err` carries the seed and the last events.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    Sim::new(seed, config).finish()
}
