//! The scheduler's journal on disk (`rusk scheduler --journal PATH`): a redb database with the
//! cluster's identity and the core's journal records (`rusk_core::journal`).
//!
//! - `meta`: `identity` → the cluster's token, TLS material and address (JSON).
//! - `log`: sequence number → one loop turn's records (postcard).
//!
//! One write transaction per loop turn that produced records, committed durably (fsync) when
//! a record must survive a crash before the turn's replies go out (`Record::needs_sync`), and
//! without an fsync otherwise (a later durable commit persists it). At start-up the log is
//! replayed and compacted into one entry; while running it is compacted again once
//! [`COMPACT_AFTER_BYTES`] have been appended since. A log entry that does not decode ends the
//! replay there: recovery up to the last good record, with a warning.
use anyhow::{Context, Result};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use rusk_core::journal::{replay, Record, Resume};
use rusk_net::TlsSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// Bytes appended to the log after which it is compacted (rewritten as the state it
/// describes).
pub const COMPACT_AFTER_BYTES: u64 = 256 << 20;
/// Records kept in memory while the journal cannot be written (disk full): beyond this the
/// oldest results' locations are dropped first, then everything, and the journal is marked
/// incomplete until the next compaction writes the whole state again.
pub const PENDING_RECORDS_MAX: usize = 100_000;

/// Who the cluster is: the same after a restart, so joiners and clients get back in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub token: String,
    /// The cluster CA the scheduler made (with its key), when it made one.
    pub tls: Option<TlsSpec>,
    /// The address joiners dial.
    pub address: String,
}

pub struct Journal {
    path: PathBuf,
    db: Database,
    next_seq: u64,
    appended: u64,
    /// The state the log describes, kept to compact it.
    state: Resume,
    /// Records not yet written (a write failed); retried with the next turn.
    pending: Vec<Record>,
    pending_sync: bool,
    /// A write failed and records were dropped: the log is incomplete until compacted.
    incomplete: bool,
    failures: u64,
}

/// The typed failure of opening a journal: the file is not a journal, or is damaged beyond
/// what redb repairs.
#[derive(Debug, thiserror::Error)]
#[error("the journal {path} cannot be opened: {reason}")]
pub struct JournalUnreadable {
    pub path: String,
    pub reason: String,
}

impl Journal {
    /// Open (or create) the journal, read the identity and replay the log.
    pub fn open(path: &Path) -> Result<(Journal, Option<Identity>, Resume)> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let unreadable = |reason: String| JournalUnreadable {
            path: path.display().to_string(),
            reason,
        };
        // redb asserts on some damaged files (one cut short, say) instead of returning an
        // error: such a panic is caught here and reported as the unreadable journal it is.
        let opened = without_panic_output(|| {
            std::panic::catch_unwind(|| -> Result<_> {
                let db = Database::create(path).map_err(|e| unreadable(e.to_string()))?;
                let all = read_all(&db, path)?;
                Ok((db, all))
            })
        });
        let (db, (identity, records, next_seq)) = match opened {
            Ok(r) => r?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "damaged".into());
                return Err(unreadable(format!(
                    "the file is damaged ({what}); move it away to start a new cluster, or \
                     restore a copy"
                ))
                .into());
            }
        };
        let state = replay(records);
        let mut j = Journal {
            path: path.to_path_buf(),
            db,
            next_seq,
            appended: 0,
            state: state.clone(),
            pending: Vec::new(),
            pending_sync: false,
            incomplete: false,
            failures: 0,
        };
        j.compact().context("cannot compact the journal")?;
        info!(
            journal = %path.display(),
            graphs = state.graphs.len(),
            results = state.in_memory.len(),
            "journal opened"
        );
        Ok((j, identity, state))
    }

    pub fn write_identity(&mut self, id: &Identity) -> Result<()> {
        let bytes = serde_json::to_vec(id).expect("identity serialises");
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(META)?;
            t.insert("identity", bytes.as_slice())?;
        }
        txn.commit()
            .with_context(|| format!("cannot write the journal {}", self.path.display()))?;
        Ok(())
    }

    /// Write one turn's records. On failure (disk full) they are kept and retried with the
    /// next call, up to [`PENDING_RECORDS_MAX`]; the error is returned for the caller to log.
    pub fn append(&mut self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        self.pending_sync |= records.iter().any(Record::needs_sync);
        self.pending.extend(records);
        let bytes = postcard::to_allocvec(&self.pending).expect("records serialise");
        let sync = self.pending_sync;
        match self.write_entry(&bytes, sync) {
            Ok(()) => {
                self.appended += bytes.len() as u64;
                for r in self.pending.drain(..) {
                    self.state.apply(r);
                }
                self.pending_sync = false;
                if self.incomplete {
                    // The whole state again, so what was dropped is covered.
                    self.compact()?;
                } else if self.appended >= COMPACT_AFTER_BYTES {
                    self.compact()?;
                }
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                if self.pending.len() > PENDING_RECORDS_MAX {
                    self.pending.retain(|r| r.needs_sync());
                    if self.pending.len() > PENDING_RECORDS_MAX {
                        self.pending.clear();
                    }
                    self.incomplete = true;
                }
                Err(e)
            }
        }
    }

    /// Writes that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    fn write_entry(&mut self, bytes: &[u8], sync: bool) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if sync {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut t = txn.open_table(LOG)?;
            t.insert(self.next_seq, bytes)?;
        }
        txn.commit()
            .with_context(|| format!("cannot write the journal {}", self.path.display()))?;
        self.next_seq += 1;
        Ok(())
    }

    /// Rewrite the log as one entry holding the state it describes.
    fn compact(&mut self) -> Result<()> {
        let mut records = self.state.to_records();
        records.append(&mut self.pending);
        let bytes = postcard::to_allocvec(&records).expect("records serialise");
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut t = txn.open_table(LOG)?;
            t.retain(|_, _| false)?;
            t.insert(self.next_seq, bytes.as_slice())?;
        }
        txn.commit()
            .with_context(|| format!("cannot write the journal {}", self.path.display()))?;
        self.state = replay(records);
        self.next_seq += 1;
        self.appended = 0;
        self.incomplete = false;
        Ok(())
    }
}

/// The journal on its own thread, so that encoding and writing records costs the scheduler's
/// loop nothing, except where a turn must wait: a batch with a record that
/// [`needs_sync`](Record::needs_sync) is handed over and waited for (it is on disk, fsynced,
/// before the turn's replies go out); other batches are handed over and not waited for.
/// Batches are written in order. Failed writes are retried with the next batch (see
/// [`Journal::append`]) and logged here, rate-limited.
pub struct JournalWriter {
    tx: std::sync::mpsc::Sender<(Vec<Record>, Option<std::sync::mpsc::SyncSender<()>>)>,
}

/// Failed-write warnings per [`WARN_WINDOW`].
const WARNINGS_PER_WINDOW: u32 = 5;
const WARN_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl JournalWriter {
    pub fn spawn(mut j: Journal) -> Result<JournalWriter> {
        let (tx, rx) =
            std::sync::mpsc::channel::<(Vec<Record>, Option<std::sync::mpsc::SyncSender<()>>)>();
        std::thread::Builder::new()
            .name("rusk-journal".into())
            .spawn(move || {
                let (mut window, mut warned) = (std::time::Instant::now(), 0u32);
                while let Ok((mut records, ack)) = rx.recv() {
                    let mut acks: Vec<_> = ack.into_iter().collect();
                    // Whatever else is queued goes in the same write.
                    while let Ok((more, ack)) = rx.try_recv() {
                        records.extend(more);
                        acks.extend(ack);
                    }
                    if let Err(e) = j.append(records) {
                        if window.elapsed() >= WARN_WINDOW {
                            (window, warned) = (std::time::Instant::now(), 0);
                        }
                        if warned < WARNINGS_PER_WINDOW {
                            warned += 1;
                            warn!(error = %format!("{e:#}"), failures = j.failures(), "cannot write the journal (kept in memory, retried with the next write); a restart now could lose the newest graphs");
                        }
                    }
                    for a in acks {
                        let _ = a.send(());
                    }
                }
            })
            .context("cannot start the journal's thread")?;
        Ok(JournalWriter { tx })
    }

    /// Hand over one turn's records; returns once they are written when any must be.
    pub fn write(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        if records.iter().any(Record::needs_sync) {
            let (ack, done) = std::sync::mpsc::sync_channel(1);
            if self.tx.send((records, Some(ack))).is_ok() {
                let _ = done.recv();
            }
        } else {
            let _ = self.tx.send((records, None));
        }
    }
}

/// Run `f` with the panic message printing turned off (the caller reports what happened).
fn without_panic_output<T>(f: impl FnOnce() -> T) -> T {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = f();
    std::panic::set_hook(hook);
    r
}

/// The identity, the records in order (up to the first entry that does not decode), and the
/// next sequence number.
fn read_all(db: &Database, path: &Path) -> Result<(Option<Identity>, Vec<Record>, u64)> {
    let unreadable = |reason: String| JournalUnreadable {
        path: path.display().to_string(),
        reason,
    };
    let txn = db.begin_read().map_err(|e| unreadable(e.to_string()))?;
    let identity = match txn.open_table(META) {
        Ok(t) => match t.get("identity").map_err(|e| unreadable(e.to_string()))? {
            Some(v) => Some(
                serde_json::from_slice::<Identity>(v.value())
                    .map_err(|e| unreadable(format!("its identity does not decode: {e}")))?,
            ),
            None => None,
        },
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(unreadable(e.to_string()).into()),
    };
    let mut records = Vec::new();
    let mut next_seq = 0;
    match txn.open_table(LOG) {
        Ok(t) => {
            let total = t.len().unwrap_or(0);
            let mut read = 0u64;
            for entry in t.iter().map_err(|e| unreadable(e.to_string()))? {
                let (k, v) = entry.map_err(|e| unreadable(e.to_string()))?;
                match postcard::from_bytes::<Vec<Record>>(v.value()) {
                    Ok(batch) => {
                        records.extend(batch);
                        next_seq = k.value() + 1;
                        read += 1;
                    }
                    Err(e) => {
                        warn!(
                            journal = %path.display(),
                            entry = k.value(),
                            error = %e,
                            skipped = total - read,
                            "a journal entry does not decode: recovering up to the last good one"
                        );
                        next_seq = k.value() + 1;
                        break;
                    }
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(unreadable(e.to_string()).into()),
    }
    Ok((identity, records, next_seq))
}
