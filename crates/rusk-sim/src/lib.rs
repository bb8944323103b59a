//! rusk's deterministic cluster simulator: the headline test of the cores.
//!
//! It runs the real pure cores, `rusk_core::scheduler::Scheduler`, a
//! `rusk_core::nanny::NannyCore` per host and the `rusk_core::worker::WorkerCore`s they
//! supervise (plus some workers without a nanny), against each other under a virtual clock,
//! over an in-memory network that delays, reorders (across connections), duplicates and loses
//! messages, while workers crash, hang, vanish, crash-loop and get cut off, nannies die or lose
//! their link, stale restart requests arrive late and twice, killer tasks take down the workers
//! that start them, and an operator restarts and stops things. One `u64` seed drives all of
//! it, so any failure replays exactly:
//!
//! ```text
//! RUSK_SIM_SEED=<N> cargo test -p rusk-sim
//! ```
//!
//! Each run has a *safety phase* with faults, in which after every step the cores'
//! `check_invariants()` and the simulator's own cross-checks must hold (no result accepted from
//! a fenced incarnation or twice for one assignment, every task executed with the true values
//! of its inputs, never two live worker processes in one slot, nanny signals only ever hitting
//! the worker they are meant for, restart requests only for incarnations the scheduler
//! dropped, poison tasks failed exactly when their attempts that had *started* were running on
//! `task_max_worker_deaths` workers that died), then a *liveness phase* with faults healed, in
//! which every supervised slot must run a registered worker again within a bound derived from
//! the nanny's tunables (failed slots revived by an operator restart), and every submitted
//! graph must finish, every output being the value (or the error: failure, poison task, time
//! limit) the simulator worked out independently, within a virtual-time bound.
//!
//! With `SimConfig::scheduler_crashes` (the `crash_seeds` test; `RUSK_SIM_CRASH_SEED=<N>`
//! replays one), the scheduler itself dies one to three times in the safety phase and is
//! restarted from its journal (`SchedulerConfig::journal`, `Scheduler::resume`): between two
//! loop turns, or inside one before or after the turn's journal write (so the turn's records
//! are lost with its messages, or kept without them), and journal entries written without
//! fsync (results reaching memory) after the last durable one may be lost. What was on its way
//! to the dead scheduler is lost; what it sent still arrives. Workers keep their results and
//! running attempts, reconnect with back-off and register naming what they hold; nannies
//! reconnect; clients reconnect, claim their unfinished graphs (`LocateOutputs`), release
//! again the ones they were done with and resubmit what was never acknowledged. All the
//! checks above still hold, judged per scheduler life where the scheduler's memory is what
//! they check (which attempt is current, what was accepted, charged or poisoned): a stale
//! report from before a crash must not be accepted, every output must reach its client
//! correct, once, and nothing may be left on the workers at the end.
//!
//! The Python executor pool of a worker has its own simulation ([`pool`]): the real
//! `rusk_core::executor::PoolCore` against executor processes that crash, hang, compute
//! silently (which must not be killed before the busy timeout), break the protocol and fail to
//! start, with the pool's own loop stalling.
//!
//! - [`run_seed`]: one run with a random workload and random faults;
//! - [`run_pool_seed`]: one run of the executor pool;
//! - [`Sim`]: the cluster itself, for scripted scenarios;
//! - [`workload`]: graphs with known expected results.
#![forbid(unsafe_code)]

mod config;
mod error;
mod oracle;
pub mod pool;
mod sim;
mod timed;
mod trace;
pub mod workload;

pub use config::SimConfig;
pub use error::{FailureKind, SimFailure};
pub use oracle::Accepted;
pub use pool::{run_pool_seed, PoolReport, PoolSimConfig};
pub use sim::{CrashCounts, Death, FaultCounts, SharedCounts, Sim, SimReport};

/// Run one seed: a random cluster, workload and fault plan, a safety phase, then a liveness
/// phase. `Err` carries the seed and the last events.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    Sim::new(seed, config).finish()
}
