//! rusk's logic as pure state machines.
//!
//! Nothing in this crate does I/O, reads a clock or draws a random number: time comes in as a
//! `now: Duration` argument, inputs come in as events, and outputs go out as commands. The tokio
//! shells in the `rusk` crate carry the commands out; the simulator in `rusk-sim` feeds the same
//! machines virtual time and injected faults. That is what makes recovery logic testable.
//!
//! - [`graph`]: validation of submitted graphs;
//! - [`scheduler`]: task states, placement, fencing, worker-loss recovery;
//! - [`worker`]: a worker's queue, dependency fetches, result store, heartbeats;
//! - [`nanny`]: the per-host supervisor's restart state machine, one per worker slot;
//! - [`memory`]: a worker's stored results, spilling and pausing;
//! - [`segment_pool`]: which freed shared-memory segments a process keeps for reuse;
//! - [`executor`]: the Python executor pool (`PoolCore`) and its hang policy;
//! - [`builtins`]: the functions compiled into every worker.
#![forbid(unsafe_code)]

pub mod builtins;
pub mod executor;
pub mod graph;
pub mod journal;
pub mod memory;
pub mod nanny;
pub mod scheduler;
pub mod segment_pool;
pub mod worker;
