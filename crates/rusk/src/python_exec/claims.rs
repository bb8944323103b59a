//! The claims directory of a pool: where executors claim the jobs that more than one of them
//! may hold (`K` frames), so that a job's code never starts twice.
//!
//! A claim is the file `<job>.<claim>`, created by the executor with `O_CREAT | O_EXCL` (atomic
//! between processes) just before it starts the job; an executor that finds it there skips the
//! job. The pool removes a job's claim files after it forgets the job, [`RELEASE_BATCH`] at a
//! time on a blocking thread (a removal costs about as much as a claim, and the pool's loop
//! has better things to do). Each pool has its own
//! directory, `claims-<pid>-<n>`, under `/dev/shm` (a claim costs about 3 µs there, three
//! times less than on a disk) or, where that is not writable, under the work dir. Directories
//! of dead workers are removed when a pool starts.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusk_core::executor::JobId;
use tracing::warn;

/// Prefix of a pool's claims directory: `claims-<pid>-<n>`.
const PREFIX: &str = "claims-";
/// Preferred parent of the claims directories (memory, not disk).
const SHM_BASE: &str = "/dev/shm/rusk-claims";
/// Claim files of forgotten jobs removed together (at most this many are left behind).
pub const RELEASE_BATCH: usize = 256;

pub(super) struct ClaimsDir {
    dir: PathBuf,
    /// Claim files of forgotten jobs, not removed yet.
    released: Vec<PathBuf>,
}

impl ClaimsDir {
    /// This pool's directory, created (empty) under `/dev/shm`, else under `work_dir`.
    pub(super) fn new(work_dir: &Path) -> ClaimsDir {
        static POOLS: AtomicU64 = AtomicU64::new(0);
        let n = POOLS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        let mut last_err = None;
        for base in [Path::new(SHM_BASE), work_dir] {
            let _ = std::fs::create_dir_all(base);
            crate::spill::sweep_dead(base, PREFIX);
            let dir = base.join(&name);
            let _ = std::fs::remove_dir_all(&dir); // a previous process with our pid
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    return ClaimsDir {
                        dir,
                        released: Vec::new(),
                    }
                }
                Err(e) => last_err = Some((dir, e)),
            }
        }
        let (dir, e) = last_err.expect("tried at least once");
        // Without it, an executor reports each failed claim on its stderr and runs the task.
        warn!(dir = %dir.display(), error = %e, "cannot create the executors' claims directory");
        ClaimsDir {
            dir,
            released: Vec::new(),
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// The job is forgotten: its claim file (if an executor took the claim) goes, with the
    /// next batch. Call within a tokio runtime.
    pub(super) fn release(&mut self, job: JobId, claim: u32) {
        self.released
            .push(self.dir.join(format!("{}.{claim}", job.0)));
        if self.released.len() >= RELEASE_BATCH {
            let batch = std::mem::take(&mut self.released);
            tokio::task::spawn_blocking(move || {
                for path in batch {
                    let _ = std::fs::remove_file(path);
                }
            });
        }
    }
}

impl Drop for ClaimsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
