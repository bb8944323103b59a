//! The scheduler's journal on disk (`rusk scheduler --journal PATH`): a redb database with the
//! cluster's identity and the core's journal records (`rusk_core::journal`).
//!
//! - `meta`: `identity` → the cluster's token, TLS material and address (JSON).
//! - `log`: sequence number → one loop turn's records (postcard).
//!
//! One write transaction per batch of loop turns that produced records (the writer thread
//! takes every turn queued since its last write), committed durably (fsync). redb's
//! non-durable commits do not survive even a `kill -9` of the process (the file's header
//! still names the last durable commit), and losing the results-in-memory records makes a
//! restarted scheduler recompute results its workers still hold, so every commit is durable;
//! the loop waits only for turns with a record that must be on disk before their replies go
//! out (`Record::needs_sync`), so the fsyncs cost it nothing otherwise. At start-up the log is
//! replayed and compacted into one entry; while running it is compacted again once
//! [`COMPACT_AFTER_BYTES`] have been appended since. A log entry that does not decode ends the
//! replay there: recovery up to the last good record, with a warning.
use crate::metrics::JournalMetrics;
use anyhow::{Context, Result};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use rusk_core::journal::{replay, Record, Resume};
use rusk_net::TlsSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// What a journal's commit survives once it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum JournalSync {
    /// Each commit is fsynced: it survives the scheduler process dying and the machine
    /// crashing or losing power. For a scheduler on its own host (`rusk scheduler`).
    #[default]
    Machine,
    /// Each commit is written to the operating system but not fsynced: it survives the
    /// scheduler process dying (kill -9 included); a machine crash may lose the newest
    /// commits. For clusters on one machine (`rusk local`, the Python `LocalCluster`), whose
    /// workers and clients a machine crash takes down too; an fsync per commit would cost
    /// every Python `submit` its latency.
    Process,
}

/// The journal's file: redb's own file backend, with `sync_data` skipped under
/// [`JournalSync::Process`] (the writes themselves still reach the operating system, in
/// order, before each commit returns).
#[derive(Debug)]
struct JournalFile {
    file: redb::backends::FileBackend,
    sync: JournalSync,
}

impl redb::StorageBackend for JournalFile {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        match self.sync {
            JournalSync::Machine => self.file.sync_data(eventual),
            JournalSync::Process => Ok(()),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write(offset, data)
    }
}

/// Open (or create) the journal's database at `path`.
fn open_database(path: &Path, sync: JournalSync) -> Result<Database, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| e.to_string())?;
    let file = redb::backends::FileBackend::new(file).map_err(|e| e.to_string())?;
    Database::builder()
        .create_with_backend(JournalFile { file, sync })
        .map_err(|e| e.to_string())
}

/// The format of the records this rusk writes and reads. 2: task specs stored encoded
/// (`rusk_core::journal::Encoded`). A journal without the mark is format 1 (rusk before
/// 2026-12-07). A journal of another format is refused with a clear error rather than
/// replayed up to its first record this version cannot read (and then compacted without
/// the rest).
pub const JOURNAL_FORMAT: u32 = 2;
const FORMAT_KEY: &str = "format";

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
    /// Bytes of records written since the journal was opened.
    written: u64,
    /// Records not yet written (a write failed); retried with the next turn.
    pending: Vec<Record>,
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
    pub fn open(path: &Path, sync: JournalSync) -> Result<(Journal, Option<Identity>, Resume)> {
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
                let db = open_database(path, sync).map_err(unreadable)?;
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
            written: 0,
            state: state.clone(),
            pending: Vec::new(),
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
            t.insert(FORMAT_KEY, JOURNAL_FORMAT.to_le_bytes().as_slice())?;
        }
        txn.commit()
            .with_context(|| format!("cannot write the journal {}", self.path.display()))?;
        Ok(())
    }

    /// Bytes of records appended since the journal was opened (compactions not counted).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Write one turn's records. On failure (disk full) they are kept and retried with the
    /// next call, up to [`PENDING_RECORDS_MAX`]; the error is returned for the caller to log.
    pub fn append(&mut self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        self.pending.extend(records);
        let bytes = postcard::to_allocvec(&self.pending).expect("records serialise");
        match self.write_entry(&bytes) {
            Ok(()) => {
                self.appended += bytes.len() as u64;
                self.written += bytes.len() as u64;
                for r in self.pending.drain(..) {
                    self.state.apply(r);
                }
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

    fn write_entry(&mut self, bytes: &[u8]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
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
            let mut m = txn.open_table(META)?;
            m.insert(FORMAT_KEY, JOURNAL_FORMAT.to_le_bytes().as_slice())?;
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
/// loop nothing. Batches are written in order, each durably. A batch with a record that
/// [`needs_sync`](Record::needs_sync) gets a ticket that completes once it is on disk: the
/// loop holds that turn's replies to clients (and, for an id floor, everything) until then
/// ([`HeldReplies`]). Failed writes are retried with the next batch (see [`Journal::append`])
/// and logged here, rate-limited. At most [`JOURNAL_QUEUE_TURNS_MAX`] turns wait for the thread.
pub struct JournalWriter {
    tx: std::sync::mpsc::SyncSender<Batch>,
    /// Times the loop waited for a full queue.
    waits: std::sync::atomic::AtomicU64,
    metrics: JournalMetrics,
}

/// One turn's records, and who waits for them to be on disk.
type Batch = (Vec<Record>, Option<tokio::sync::oneshot::Sender<()>>);

/// Turns of records queued for the journal's thread at most. A loop that gets this far ahead of
/// the disk waits for it (and the inbound event queue then fills, so the connections' readers
/// wait in turn): a slow disk slows the cluster down rather than growing the scheduler's memory.
pub const JOURNAL_QUEUE_TURNS_MAX: usize = 1024;

/// How long records nobody waits for (results that reached memory) wait for more before the
/// writer commits them: at most this much of them is lost with a `kill -9` (their holders name
/// them again when they register), and a stream of them costs at most ~1/this commits a second.
pub const JOURNAL_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Failed-write warnings per [`WARN_WINDOW`].
const WARNINGS_PER_WINDOW: u32 = 5;
const WARN_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// A turn's records are on disk when this completes (or the writer is gone).
pub type Ticket = tokio::sync::oneshot::Receiver<()>;

impl JournalWriter {
    pub fn spawn(j: Journal, metrics: JournalMetrics) -> Result<JournalWriter> {
        JournalWriter::spawn_bounded(j, JOURNAL_QUEUE_TURNS_MAX, metrics)
    }

    fn spawn_bounded(
        mut j: Journal,
        turns: usize,
        metrics: JournalMetrics,
    ) -> Result<JournalWriter> {
        let m = metrics.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(turns);
        std::thread::Builder::new()
            .name("rusk-journal".into())
            .spawn(move || {
                let (mut window, mut warned) = (std::time::Instant::now(), 0u32);
                while let Ok((mut records, ack)) = rx.recv() {
                    let mut acks: Vec<_> = ack.into_iter().collect();
                    // Whatever else is queued goes in the same write; records nobody waits
                    // for linger up to JOURNAL_LINGER for more, so that a stream of results
                    // costs a few commits (fsyncs) a second, not one per turn.
                    let linger_until = std::time::Instant::now() + JOURNAL_LINGER;
                    loop {
                        let next = if acks.is_empty() {
                            let left = linger_until.saturating_duration_since(std::time::Instant::now());
                            rx.recv_timeout(left).ok()
                        } else {
                            rx.try_recv().ok()
                        };
                        let Some((more, ack)) = next else { break };
                        records.extend(more);
                        acks.extend(ack);
                    }
                    let (started, written) = (std::time::Instant::now(), j.bytes_written());
                    let appended = j.append(records);
                    m.commit_seconds.observe(started.elapsed().as_secs_f64());
                    m.bytes.inc_by(j.bytes_written() - written);
                    match &appended {
                        Ok(()) => m.commits.inc(),
                        Err(_) => m.write_failures.inc(),
                    };
                    if let Err(e) = appended {
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
        Ok(JournalWriter {
            tx,
            waits: Default::default(),
            metrics,
        })
    }

    /// Hand over one turn's records; a ticket when any must be on disk before the turn's
    /// replies go out. Waits while [`JOURNAL_QUEUE_TURNS_MAX`] turns are queued already.
    pub async fn write(&self, records: Vec<Record>) -> Option<Ticket> {
        if records.is_empty() {
            return None;
        }
        let (ack, done) = if records.iter().any(Record::needs_sync) {
            let (ack, done) = tokio::sync::oneshot::channel();
            (Some(ack), Some(done))
        } else {
            (None, None)
        };
        match self.tx.try_send((records, ack)) {
            Ok(()) => done,
            Err(std::sync::mpsc::TrySendError::Full(batch)) => {
                self.metrics.queue_waits.inc();
                let waits = self
                    .waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if waits.is_multiple_of(1000) {
                    warn!(
                        queued = JOURNAL_QUEUE_TURNS_MAX,
                        times = waits + 1,
                        "the journal's disk is behind: the scheduler's loop waits for it"
                    );
                }
                let tx = self.tx.clone();
                match tokio::task::spawn_blocking(move || tx.send(batch)).await {
                    Ok(Ok(())) => done,
                    _ => None,
                }
            }
            // The writer is gone (it only stops with the process).
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => None,
        }
    }
}

/// Replies to clients held until the journal has what they acknowledge, in order: a turn's
/// replies wait for its ticket, and later turns' replies queue behind them.
#[derive(Default)]
pub struct HeldReplies<M> {
    queue: std::collections::VecDeque<(Option<Ticket>, M)>,
}

impl<M> HeldReplies<M> {
    /// Whether nothing is held (a turn without a ticket may then reply at once).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn hold(&mut self, ticket: Option<Ticket>, replies: M) {
        self.queue.push_back((ticket, replies));
    }

    /// The replies whose records are on disk now, oldest first.
    pub fn ready(&mut self) -> Vec<M> {
        let mut out = Vec::new();
        while let Some((ticket, _)) = self.queue.front_mut() {
            if let Some(t) = ticket {
                // Otherwise written, or the writer is gone (nothing left to wait for).
                if let Err(tokio::sync::oneshot::error::TryRecvError::Empty) = t.try_recv() {
                    break;
                }
            }
            out.push(self.queue.pop_front().expect("front exists").1);
        }
        out
    }

    /// Completes when the oldest held batch's records are on disk (never when none waits).
    pub async fn next_written(&mut self) {
        match self.queue.iter_mut().find(|(t, _)| t.is_some()) {
            Some((t, _)) => {
                let _ = t.as_mut().expect("found").await;
                // Done: a completed receiver must not be polled again.
                *t = None;
            }
            None => std::future::pending().await,
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
    let (identity, format) = match txn.open_table(META) {
        Ok(t) => {
            let identity = match t.get("identity").map_err(|e| unreadable(e.to_string()))? {
                Some(v) => Some(
                    serde_json::from_slice::<Identity>(v.value())
                        .map_err(|e| unreadable(format!("its identity does not decode: {e}")))?,
                ),
                None => None,
            };
            let format = match t.get(FORMAT_KEY).map_err(|e| unreadable(e.to_string()))? {
                Some(v) => Some(
                    <[u8; 4]>::try_from(v.value())
                        .map(u32::from_le_bytes)
                        .map_err(|_| unreadable("its format mark does not decode".into()))?,
                ),
                None => None,
            };
            (identity, format)
        }
        Err(redb::TableError::TableDoesNotExist(_)) => (None, None),
        Err(e) => return Err(unreadable(e.to_string()).into()),
    };
    // A journal that holds anything without a format mark was written before the mark.
    let format = format.or(identity.as_ref().map(|_| 1));
    if let Some(f) = format.filter(|&f| f != JOURNAL_FORMAT) {
        return Err(unreadable(format!(
            "it was written in journal format {f} by {} rusk; this rusk reads format \
             {JOURNAL_FORMAT}. Finish its work with the version that wrote it, or move it \
             away to start a new cluster",
            if f < JOURNAL_FORMAT {
                "an earlier"
            } else {
                "a later"
            }
        ))
        .into());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_wait_for_their_records_and_later_replies_keep_their_order() {
        let mut held: HeldReplies<&str> = HeldReplies::default();
        let (written1, ticket1) = tokio::sync::oneshot::channel();
        let (written2, ticket2) = tokio::sync::oneshot::channel();
        held.hold(Some(ticket1), "submitted");
        held.hold(None, "progress"); // needs nothing on disk, but comes after "submitted"
        held.hold(Some(ticket2), "extended");
        assert!(held.ready().is_empty());
        written1.send(()).unwrap();
        held.next_written().await;
        assert_eq!(held.ready(), vec!["submitted", "progress"]);
        assert!(!held.is_empty());
        // A writer that is gone releases what waited for it (nothing more will be written).
        drop(written2);
        held.next_written().await;
        assert_eq!(held.ready(), vec!["extended"]);
        assert!(held.is_empty());
    }

    /// More turns than the queue holds, handed over without waiting for any: the loop waits
    /// for room instead of queueing without bound, and every record reaches the disk, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_full_queue_makes_the_loop_wait_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let (j, _, _) = Journal::open(&path, JournalSync::Machine).unwrap();
        let metrics = JournalMetrics::default();
        let w = JournalWriter::spawn_bounded(j, 2, metrics.clone()).unwrap();
        let mut tickets = Vec::new();
        for g in 1..=200u64 {
            let mut records = vec![Record::Opened {
                graph: rusk_proto::GraphId(g),
            }];
            if g % 2 == 0 {
                records.push(Record::Retired {
                    graph: rusk_proto::GraphId(g),
                });
            }
            tickets.push(w.write(records).await.expect("a ticket"));
        }
        for t in tickets {
            t.await.expect("written");
        }
        assert!(w.waits.load(std::sync::atomic::Ordering::Relaxed) > 0);
        assert_eq!(
            metrics.queue_waits.get(),
            w.waits.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert!(metrics.commits.get() > 0 && metrics.bytes.get() > 0);
        assert_eq!(metrics.write_failures.get(), 0);
        drop(w);
        // The thread lets go of the file once its queue closes.
        let reopened = (0..100).find_map(|_| match Journal::open(&path, JournalSync::Machine) {
            Ok(r) => Some(r),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                None
            }
        });
        let (_, _, state) = reopened.expect("the journal reopens");
        let open: Vec<u64> = state.graphs.keys().map(|g| g.0).collect();
        assert_eq!(open, (1..=200).step_by(2).collect::<Vec<_>>());
        assert_eq!(state.next_graph, 201);
    }

    /// A journal of another format (an earlier rusk's, without the mark, or a later one's)
    /// is refused with a clear error, and left as it is.
    #[test]
    fn a_journal_of_another_format_is_refused_clearly_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            token: "t".into(),
            tls: None,
            address: "127.0.0.1:1".into(),
        };
        for (name, mark) in [("old", None), ("new", Some(JOURNAL_FORMAT + 1))] {
            let path = dir.path().join(format!("{name}.redb"));
            let (mut j, _, _) = Journal::open(&path, JournalSync::Machine).unwrap();
            j.write_identity(&identity).unwrap();
            drop(j);
            {
                let db = Database::create(&path).unwrap();
                let txn = db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(META).unwrap();
                    match mark {
                        None => {
                            t.remove(FORMAT_KEY).unwrap();
                        }
                        Some(f) => {
                            t.insert(FORMAT_KEY, f.to_le_bytes().as_slice()).unwrap();
                        }
                    }
                }
                txn.commit().unwrap();
            }
            let before = std::fs::read(&path).unwrap();
            let e = Journal::open(&path, JournalSync::Machine)
                .err()
                .expect("refused")
                .to_string();
            let expect = match mark {
                None => "journal format 1 by an earlier rusk; this rusk reads format 2",
                Some(_) => "journal format 3 by a later rusk; this rusk reads format 2",
            };
            assert!(e.contains(expect), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), before, "left as it was");
        }
        // A journal of this format opens, and keeps its identity.
        let path = dir.path().join("this.redb");
        let (mut j, _, _) = Journal::open(&path, JournalSync::Machine).unwrap();
        j.write_identity(&identity).unwrap();
        drop(j);
        let (_, id, _) = Journal::open(&path, JournalSync::Machine).unwrap();
        assert_eq!(id.unwrap().token, "t");
    }

    #[test]
    fn a_journal_written_then_reopened_resumes_its_graphs_and_id_floors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let (mut j, identity, state) = Journal::open(&path, JournalSync::Machine).unwrap();
        assert!(identity.is_none() && state.graphs.is_empty());
        j.append(vec![
            Record::Reserved {
                attempts: 1 << 20,
                graphs: 1 << 20,
            },
            Record::Opened {
                graph: rusk_proto::GraphId(7),
            },
        ])
        .unwrap();
        drop(j);
        let (_, _, state) = Journal::open(&path, JournalSync::Machine).unwrap();
        assert!(state.graphs.contains_key(&rusk_proto::GraphId(7)));
        assert_eq!((state.next_attempt, state.next_graph), (1 << 20, 1 << 20));
    }
}
