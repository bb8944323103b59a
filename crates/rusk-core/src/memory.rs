//! A worker's stored results and its memory policy, pure: which results to spill, when to
//! pause, what the worker reports of its memory.
//!
//! Managed memory is the sum of the sizes of the results held in memory. The policy is graded,
//! like Dask's, and every step is a decision of this module, carried out by the shell:
//!
//! - above `target` (default 60 % of the memory limit) the least recently used results are
//!   spilled to disk (`Command::Spill`) until managed memory is back under the target;
//! - above `pause` (default 80 %) the worker pauses: the scheduler places nothing new on it,
//!   it runs what it already accepted one task at a time (so accepted work cannot deadlock),
//!   and it still serves its results; it resumes once memory is back under the threshold;
//! - when the spill disk is full (a spill fails with [`SpillError::DiskFull`]) the worker
//!   pauses too, with that reason, and tries spilling again after [`SPILL_RETRY_AFTER`];
//! - past `--memory-restart-fraction` (95 %) the nanny restarts the worker: the last resort,
//!   reached only when spilling cannot keep up (memory the store does not manage).
//!
//! A spilled result stays known here (its size, that it is on disk); the shell maps its file
//! whenever a task or a peer needs it, so it is never loaded back into managed memory.
use bytes::Bytes;
use rusk_proto::TaskRef;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::time::Duration;

/// After a spill failed because the disk is full, wait this long before spilling again.
pub const SPILL_RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    /// The worker's memory limit in bytes (`--memory-limit`); `None`: no spilling, no pause.
    pub limit: Option<u64>,
    /// Spill least recently used results above this fraction of the limit.
    pub target_fraction: f64,
    /// Pause (no new tasks) above this fraction of the limit.
    pub pause_fraction: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            limit: None,
            target_fraction: 0.6,
            pause_fraction: 0.8,
        }
    }
}

/// Why a spill failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpillError {
    /// No space left on the spill disk.
    DiskFull(String),
    /// Any other I/O error.
    Io(String),
}

/// Where a stored result is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Memory,
    /// Being written to disk; still in memory until the write is confirmed.
    Spilling,
    Disk,
}

struct Stored {
    data: Option<Bytes>,
    size: u64,
    place: Place,
    last_use: u64,
}

/// A stored result as a task or a peer gets it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Memory(Bytes),
    /// On disk: the shell maps its spill file.
    Spilled {
        task: TaskRef,
        size: u64,
    },
}

impl Value {
    pub fn len(&self) -> u64 {
        match self {
            Value::Memory(b) => b.len() as u64,
            Value::Spilled { size, .. } => *size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when the value is in memory.
    pub fn into_memory(self) -> Option<Bytes> {
        match self {
            Value::Memory(b) => Some(b),
            Value::Spilled { .. } => None,
        }
    }
}

/// What the store asks the shell to do.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreCommand {
    Spill {
        task: TaskRef,
        data: Bytes,
    },
    /// Delete a spill file (its result was released or lost).
    DropSpill {
        task: TaskRef,
    },
}

pub struct Store {
    config: MemoryConfig,
    items: FxHashMap<TaskRef, Stored>,
    /// Results in memory and not being spilled, least recently used first.
    lru: BTreeSet<(u64, TaskRef)>,
    clock: u64,
    memory_bytes: u64,
    spilling_bytes: u64,
    disk_bytes: u64,
    disk_results: u64,
    spills_total: u64,
    /// Spilling stopped (disk full) until this time.
    spill_blocked: Option<(Duration, String)>,
}

/// Memory figures for heartbeats, metrics and status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryReport {
    pub managed_bytes: u64,
    pub spilled_bytes: u64,
    pub spilled_results: u64,
    pub spills_total: u64,
    pub paused: Option<String>,
}

impl Store {
    pub fn new(config: MemoryConfig) -> Store {
        Store {
            config,
            items: FxHashMap::default(),
            lru: BTreeSet::new(),
            clock: 0,
            memory_bytes: 0,
            spilling_bytes: 0,
            disk_bytes: 0,
            disk_results: 0,
            spills_total: 0,
            spill_blocked: None,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, task: &TaskRef) -> bool {
        self.items.contains_key(task)
    }

    /// The size of a stored result, in memory or on disk.
    pub fn size_of(&self, task: &TaskRef) -> Option<u64> {
        self.items.get(task).map(|s| s.size)
    }

    /// Every stored result and its size, in memory or on disk (sorted, for a worker's
    /// re-registration with a scheduler that restarted).
    pub fn held(&self) -> Vec<(TaskRef, u64)> {
        let mut v: Vec<(TaskRef, u64)> = self.items.iter().map(|(t, s)| (*t, s.size)).collect();
        v.sort_unstable();
        v
    }

    /// Bytes of all stored results, in memory or on disk.
    pub fn total_bytes(&self) -> u64 {
        self.memory_bytes + self.disk_bytes
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn insert(&mut self, task: TaskRef, data: Bytes, out: &mut Vec<StoreCommand>) {
        self.remove(&task, out);
        let size = data.len() as u64;
        let last_use = self.tick();
        self.items.insert(
            task,
            Stored {
                data: Some(data),
                size,
                place: Place::Memory,
                last_use,
            },
        );
        self.lru.insert((last_use, task));
        self.memory_bytes += size;
    }

    /// Forget a result (released, or stale); deletes its spill file if it has one.
    pub fn remove(&mut self, task: &TaskRef, out: &mut Vec<StoreCommand>) -> bool {
        let Some(s) = self.items.remove(task) else {
            return false;
        };
        match s.place {
            Place::Memory => {
                self.lru.remove(&(s.last_use, *task));
                self.memory_bytes -= s.size;
            }
            Place::Spilling => {
                // Its write finishes later; `on_spilled` then finds nothing and drops the file.
                self.memory_bytes -= s.size;
                self.spilling_bytes -= s.size;
            }
            Place::Disk => {
                self.disk_bytes -= s.size;
                self.disk_results -= 1;
                out.push(StoreCommand::DropSpill { task: *task });
            }
        }
        true
    }

    /// The value for a task or a peer; marks it recently used.
    pub fn get(&mut self, task: &TaskRef) -> Option<Value> {
        let clock = self.clock + 1;
        let s = self.items.get_mut(task)?;
        if s.place == Place::Memory {
            self.lru.remove(&(s.last_use, *task));
            self.lru.insert((clock, *task));
        }
        s.last_use = clock;
        self.clock = clock;
        Some(match &s.data {
            Some(d) => Value::Memory(d.clone()),
            None => Value::Spilled {
                task: *task,
                size: s.size,
            },
        })
    }

    /// The in-memory bytes of a result (tests, the simulator).
    pub fn bytes(&self, task: &TaskRef) -> Option<&Bytes> {
        self.items.get(task).and_then(|s| s.data.as_ref())
    }

    /// A spill the shell was asked for is done.
    pub fn on_spilled(
        &mut self,
        now: Duration,
        task: TaskRef,
        result: Result<(), SpillError>,
        out: &mut Vec<StoreCommand>,
    ) {
        let Some(s) = self
            .items
            .get_mut(&task)
            .filter(|s| s.place == Place::Spilling)
        else {
            if result.is_ok() {
                out.push(StoreCommand::DropSpill { task });
            }
            return;
        };
        self.spilling_bytes -= s.size;
        match result {
            Ok(()) => {
                s.place = Place::Disk;
                s.data = None;
                self.memory_bytes -= s.size;
                self.disk_bytes += s.size;
                self.disk_results += 1;
                self.spills_total += 1;
            }
            Err(e) => {
                s.place = Place::Memory;
                self.lru.insert((s.last_use, task));
                let reason = match e {
                    SpillError::DiskFull(m) => format!("spill disk full ({m})"),
                    SpillError::Io(m) => format!("cannot spill ({m})"),
                };
                self.spill_blocked = Some((now + SPILL_RETRY_AFTER, reason));
            }
        }
    }

    /// A spilled result's file turned out corrupt or missing: the result is lost.
    pub fn on_lost(&mut self, task: &TaskRef, out: &mut Vec<StoreCommand>) {
        self.remove(task, out);
    }

    fn fraction(&self, f: f64) -> Option<u64> {
        self.config.limit.map(|l| (l as f64 * f) as u64)
    }

    /// Spill least recently used results while managed memory is over the target.
    pub fn spill(&mut self, now: Duration, out: &mut Vec<StoreCommand>) {
        if let Some((until, _)) = &self.spill_blocked {
            if now < *until {
                return;
            }
            self.spill_blocked = None;
        }
        let Some(target) = self.fraction(self.config.target_fraction) else {
            return;
        };
        while self.memory_bytes - self.spilling_bytes > target {
            let Some((_, task)) = self.lru.pop_first() else {
                return;
            };
            let s = self.items.get_mut(&task).expect("lru entries are stored");
            if s.size == 0 {
                continue;
            }
            s.place = Place::Spilling;
            self.spilling_bytes += s.size;
            out.push(StoreCommand::Spill {
                task,
                data: s.data.clone().expect("in memory"),
            });
        }
    }

    /// Why the worker must not start new tasks now, if it must not.
    pub fn paused(&self) -> Option<String> {
        if let Some((_, reason)) = &self.spill_blocked {
            let over_target = self
                .fraction(self.config.target_fraction)
                .is_some_and(|t| self.memory_bytes > t);
            if over_target {
                return Some(format!("paused: {reason}"));
            }
        }
        let pause = self.fraction(self.config.pause_fraction)?;
        (self.memory_bytes > pause).then(|| {
            format!(
                "paused: managed memory {} bytes is over {:.0}% of the memory limit",
                self.memory_bytes,
                self.config.pause_fraction * 100.0
            )
        })
    }

    /// When the store wants to be woken (to retry spilling after a full disk).
    pub fn next_timeout(&self) -> Option<Duration> {
        self.spill_blocked.as_ref().map(|(t, _)| *t)
    }

    pub fn report(&self) -> MemoryReport {
        MemoryReport {
            managed_bytes: self.memory_bytes,
            spilled_bytes: self.disk_bytes,
            spilled_results: self.disk_results,
            spills_total: self.spills_total,
            paused: self.paused(),
        }
    }

    pub fn check_invariants(&self) {
        let (mut mem, mut spilling, mut disk, mut n_disk) = (0, 0, 0, 0);
        for (t, s) in &self.items {
            match s.place {
                Place::Memory => {
                    mem += s.size;
                    assert!(
                        self.lru.contains(&(s.last_use, *t)),
                        "{t} in memory, not in lru"
                    );
                    assert!(s.data.is_some(), "{t} in memory without data");
                }
                Place::Spilling => {
                    mem += s.size;
                    spilling += s.size;
                    assert!(s.data.is_some(), "{t} spilling without data");
                }
                Place::Disk => {
                    disk += s.size;
                    n_disk += 1;
                    assert!(s.data.is_none(), "{t} on disk keeps its data");
                }
            }
        }
        assert_eq!(mem, self.memory_bytes, "memory bytes");
        assert_eq!(spilling, self.spilling_bytes, "spilling bytes");
        assert_eq!(disk, self.disk_bytes, "disk bytes");
        assert_eq!(n_disk, self.disk_results, "disk results");
        assert_eq!(
            self.lru.len(),
            self.items
                .values()
                .filter(|s| s.place == Place::Memory)
                .count(),
            "lru size"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusk_proto::GraphId;

    fn tr(i: u32) -> TaskRef {
        TaskRef {
            graph: GraphId(1),
            index: i,
        }
    }

    fn store(limit: u64) -> Store {
        Store::new(MemoryConfig {
            limit: Some(limit),
            ..MemoryConfig::default()
        })
    }

    fn spills(out: &[StoreCommand]) -> Vec<u32> {
        out.iter()
            .filter_map(|c| match c {
                StoreCommand::Spill { task, .. } => Some(task.index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn spills_least_recently_used_down_to_the_target_and_pauses_above_80_percent() {
        let mut s = store(1000);
        let mut out = Vec::new();
        for i in 0..5 {
            s.insert(tr(i), Bytes::from(vec![0u8; 200]), &mut out);
        }
        // 1000 bytes: over the pause threshold (800) and the target (600).
        assert!(s.paused().is_some());
        s.get(&tr(0)); // recently used: spilled last
        s.spill(Duration::ZERO, &mut out);
        assert_eq!(spills(&out), vec![1, 2]);
        s.check_invariants();
        // Still in memory until the writes are confirmed; no double spill meanwhile.
        out.clear();
        s.spill(Duration::ZERO, &mut out);
        assert!(out.is_empty());
        s.on_spilled(Duration::ZERO, tr(1), Ok(()), &mut out);
        s.on_spilled(Duration::ZERO, tr(2), Ok(()), &mut out);
        s.check_invariants();
        let r = s.report();
        assert_eq!(
            (r.managed_bytes, r.spilled_bytes, r.spilled_results),
            (600, 400, 2)
        );
        assert_eq!(r.paused, None);
        assert_eq!(
            s.get(&tr(1)),
            Some(Value::Spilled {
                task: tr(1),
                size: 200
            })
        );
        // Releasing a spilled result deletes its file.
        out.clear();
        s.remove(&tr(1), &mut out);
        assert_eq!(out, vec![StoreCommand::DropSpill { task: tr(1) }]);
        s.check_invariants();
    }

    #[test]
    fn a_full_disk_pauses_and_spilling_is_retried_later() {
        let mut s = store(1000);
        let mut out = Vec::new();
        for i in 0..4 {
            s.insert(tr(i), Bytes::from(vec![0u8; 200]), &mut out);
        }
        s.spill(Duration::ZERO, &mut out);
        assert_eq!(spills(&out), vec![0]);
        s.on_spilled(
            Duration::ZERO,
            tr(0),
            Err(SpillError::DiskFull("ENOSPC".into())),
            &mut out,
        );
        s.check_invariants();
        let paused = s.paused().expect("paused on a full disk");
        assert!(paused.contains("spill disk full"), "{paused}");
        out.clear();
        s.spill(Duration::from_secs(1), &mut out);
        assert!(out.is_empty(), "no retry before SPILL_RETRY_AFTER");
        s.spill(SPILL_RETRY_AFTER, &mut out);
        assert_eq!(spills(&out).len(), 1);
    }

    #[test]
    fn a_result_released_while_spilling_has_its_file_dropped() {
        let mut s = store(100);
        let mut out = Vec::new();
        s.insert(tr(0), Bytes::from(vec![0u8; 100]), &mut out);
        s.spill(Duration::ZERO, &mut out);
        out.clear();
        s.remove(&tr(0), &mut out);
        s.check_invariants();
        s.on_spilled(Duration::ZERO, tr(0), Ok(()), &mut out);
        assert_eq!(out, vec![StoreCommand::DropSpill { task: tr(0) }]);
        assert_eq!(s.report().managed_bytes, 0);
    }

    #[test]
    fn without_a_limit_nothing_is_spilled_or_paused() {
        let mut s = Store::new(MemoryConfig::default());
        let mut out = Vec::new();
        s.insert(tr(0), Bytes::from(vec![0u8; 1 << 20]), &mut out);
        s.spill(Duration::ZERO, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.paused(), None);
    }
}
