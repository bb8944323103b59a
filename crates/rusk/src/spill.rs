//! Spill files: where a worker's store (`rusk_core::memory`) puts results it moves out of
//! memory, one file per result, in the same bytes as in memory, so a spilled value is mapped
//! from disk (the page cache) without a second copy.
//!
//! A file is the value's bytes followed by a 16-byte trailer: `b"RSKS"`, the CRC-32 of the
//! bytes (u32 LE) and their length (u64 LE). The trailer is checked every time the file is
//! mapped back: a file that is missing, short or corrupt means the result is lost (the core
//! reports it and the scheduler recomputes it from its lineage).
use anyhow::{anyhow, Result};
use bytes::Bytes;
use rusk_core::memory::SpillError;
use rusk_proto::TaskRef;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"RSKS";
const TRAILER_LEN: u64 = 16;

#[derive(Clone, Debug)]
pub struct SpillDir {
    dir: PathBuf,
}

/// Prefix of a worker process's own spill directory, `spill-<pid>` under the spill dir.
const OWN_DIR_PREFIX: &str = "spill-";

impl SpillDir {
    /// This process's spill directory, `spill-<pid>` under `base`; the directories of dead
    /// workers there (killed before they could clean up) are removed first.
    pub fn new(base: &Path) -> Result<SpillDir> {
        std::fs::create_dir_all(base)
            .map_err(|e| anyhow!("cannot create the spill directory {}: {e}", base.display()))?;
        sweep_dead(base, OWN_DIR_PREFIX);
        let dir = base.join(format!("{OWN_DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // a previous process with our pid
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow!("cannot create the spill directory {}: {e}", dir.display()))?;
        Ok(SpillDir { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, task: TaskRef) -> PathBuf {
        self.dir
            .join(format!("g{}-t{}.spill", task.graph.0, task.index))
    }

    /// Write a value's spill file (blocking).
    pub fn write(&self, task: TaskRef, data: &[u8]) -> Result<(), SpillError> {
        let path = self.path(task);
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(data)?;
            let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
            trailer.extend_from_slice(MAGIC);
            trailer.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
            trailer.extend_from_slice(&(data.len() as u64).to_le_bytes());
            f.write_all(&trailer)?;
            Ok(())
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&path);
            match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                    SpillError::DiskFull(format!("{}: {e}", self.dir.display()))
                }
                _ => SpillError::Io(format!("{}: {e}", path.display())),
            }
        })
    }

    /// Map a spilled value back (blocking: its checksum is verified, which reads it).
    pub fn read(&self, task: TaskRef, size: u64) -> Result<Bytes> {
        let path = self.path(task);
        let mut f = std::fs::File::open(&path)
            .map_err(|e| anyhow!("spill file {} is unreadable: {e}", path.display()))?;
        let file_len = f.metadata()?.len();
        if file_len != size + TRAILER_LEN {
            return Err(anyhow!(
                "spill file {} holds {file_len} bytes, expected {}",
                path.display(),
                size + TRAILER_LEN
            ));
        }
        f.seek(SeekFrom::Start(size))?;
        let mut trailer = [0u8; TRAILER_LEN as usize];
        f.read_exact(&mut trailer)?;
        let crc = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
        if &trailer[..4] != MAGIC || len != size {
            return Err(anyhow!("spill file {} has a bad trailer", path.display()));
        }
        let value = rusk_net::segment::map_prefix(OwnedFd::from(f), size as usize)?;
        if crc32fast::hash(&value) != crc {
            return Err(anyhow!(
                "spill file {} is corrupt (checksum mismatch)",
                path.display()
            ));
        }
        Ok(value)
    }

    pub fn remove(&self, task: TaskRef) {
        let _ = std::fs::remove_file(self.path(task));
    }
}

/// Remove `<prefix><pid>` (or `<prefix><pid>-<anything>`) directories under `base` whose
/// process is gone.
pub fn sweep_dead(base: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.split('-').next()?.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
            tracing::info!(pid, dir = %e.path().display(), "removed what a dead worker left behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusk_proto::GraphId;

    fn tr(i: u32) -> TaskRef {
        TaskRef {
            graph: GraphId(3),
            index: i,
        }
    }

    #[test]
    fn a_spilled_value_reads_back_and_corruption_or_loss_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        // What a dead worker left behind is swept.
        let dead = tmp.path().join("spill").join("spill-999999999");
        std::fs::create_dir_all(&dead).unwrap();
        let d = SpillDir::new(&tmp.path().join("spill")).unwrap();
        assert!(!dead.exists());
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        d.write(tr(1), &data).unwrap();
        let back = d.read(tr(1), data.len() as u64).unwrap();
        assert_eq!(&back[..], &data[..]);
        // The mapping names the file like a segment: executors can map it in place.
        assert!(rusk_net::segment::fd_of(&back).is_some());
        drop(back);
        // Flip one byte: the checksum catches it.
        let path = d.path(tr(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = d.read(tr(1), data.len() as u64).unwrap_err();
        assert!(format!("{err}").contains("corrupt"), "{err}");
        d.remove(tr(1));
        assert!(d.read(tr(1), data.len() as u64).is_err());
    }

    /// Fuzz (with rusk-fuzz's engine) what a worker reads back from its spill directory:
    /// real spill files, written by `SpillDir::write`, mutated (bits and bytes flipped, runs
    /// inserted, deleted and duplicated, truncated, extended, spliced with another spill
    /// file, length fields overwritten) and read as the store reads them. Reading never
    /// panics, and gives a value only for an unchanged file, byte for byte the original; an
    /// unchanged file always reads back. (A changed file whose CRC-32 still matched would
    /// fail this: 2^-32 for a random change, and none in the recorded runs.)
    ///
    /// An input is one byte choosing the original (its value's size is what the store asks
    /// for), then the file's bytes. `RUSK_FUZZ_ITERATIONS` sets the run (50,000 by default,
    /// a few seconds: each execution writes and maps a file; the long run's figure is in
    /// fuzz/README.md).
    #[test]
    fn spill_files_fuzz() {
        use std::cell::Cell;
        let tmp = tempfile::tempdir().unwrap();
        let d = SpillDir::new(tmp.path()).unwrap();
        // Values around the trailer's size, and larger ones (all under the engine's input
        // bound, so a mutated file is never cut short by the engine alone).
        let values: Vec<Vec<u8>> = vec![
            vec![],
            b"x".to_vec(),
            (0..15).collect(),
            (0..16).collect(),
            (0..17).collect(),
            b"RSKS".repeat(8),
            (0..1000u32).map(|i| (i * 7) as u8).collect(),
            vec![0; 4096],
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ];
        let originals: Vec<Vec<u8>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                d.write(tr(i as u32), v).unwrap();
                std::fs::read(d.path(tr(i as u32))).unwrap()
            })
            .collect();
        let seeds: Vec<Vec<u8>> = originals
            .iter()
            .enumerate()
            .map(|(i, f)| [&[i as u8][..], f].concat())
            .collect();
        let fuzzed = tr(u32::MAX);
        let (read_back, rejected) = (Cell::new(0u64), Cell::new(0u64));
        let check = |input: &[u8]| {
            let (choice, file) = input.split_first().unwrap_or((&0, &[]));
            let which = *choice as usize % originals.len();
            // A new file each time (removed, not truncated: ext4 flushes a file truncated to
            // zero on close, which costs more than the rest of the run).
            d.remove(fuzzed);
            std::fs::write(d.path(fuzzed), file).unwrap();
            let unchanged = file == &originals[which][..];
            match d.read(fuzzed, values[which].len() as u64) {
                Ok(value) => {
                    assert!(unchanged, "a changed spill file was read back");
                    assert_eq!(&value[..], &values[which][..]);
                    read_back.set(read_back.get() + 1);
                }
                Err(e) => {
                    assert!(!unchanged, "an unchanged spill file was rejected: {e}");
                    rejected.set(rejected.get() + 1);
                }
            }
        };
        let iterations = std::env::var("RUSK_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_000);
        let r = rusk_fuzz::run("spill-files", seeds, iterations, 5, None, &check);
        eprintln!(
            "spill-files: {} executions, {} read back unchanged, {} rejected",
            r.executions,
            read_back.get(),
            rejected.get()
        );
        assert!(r.crashes.is_empty(), "{:?}", r.crashes);
        assert!(read_back.get() >= originals.len() as u64);
        assert!(rejected.get() > r.executions / 2);
    }
}
