//! Shared-memory segments: the memory a worker's stored values live in.
//!
//! A value of at least [`INLINE_VALUE_MAX`] bytes lives in its own `memfd` (anonymous shared
//! memory, unaffected by the size of `/dev/shm`), mapped read-only into the worker and handed
//! around as a [`Bytes`] whose owner is the mapping. Executors and command tasks map the same
//! memory through `/proc/<worker pid>/fd/<fd>`, so nothing is copied to give a task its inputs.
//! A segment is freed when its last `Bytes` is dropped (and the last process that mapped it
//! unmaps it): nothing is left behind by a worker or an executor killed at any point, because
//! the kernel frees a memfd with its last reference.
//!
//! Every live segment is listed in a registry keyed by its address, so the shell can tell, for
//! any `Bytes` the core hands it, whether it is a whole segment (and which fd names it).
//!
//! Warm memory is reused: a segment this process made ([`SegmentWriter`]: a received value, or
//! a task's result an executor wrote into the segment its worker granted it) is, when its last `Bytes` goes, kept in a pool ([`rusk_core::segment_pool`] decides
//! what to keep and for how long) and the next value of about its size is written into its
//! pages, which are much cheaper to fill than fresh ones. Such a segment is therefore not
//! sealed. It never goes back to the pool once something could hold it without this process
//! knowing: one handed out by [`proc_path`] (to a command), [`dup_fd`] (to Python in a
//! client) is freed, not kept; one lent to a socket ([`lend_to_socket`]: the kernel's socket
//! buffers keep references to the pages `sendfile` gave them) is kept only if it was given
//! back ([`give_back`]: the peer read it) before it was freed. A worker keeps a value its executors map alive until they
//! say they unmapped it (see `python_exec`), so that one is only pooled once nobody sees it.
use bytes::Bytes;
use rusk_core::segment_pool::SegmentPool;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Values smaller than this stay on the worker's heap and travel inline through executor
/// pipes; larger ones get a segment (one file descriptor each).
pub const INLINE_VALUE_MAX: usize = 64 * 1024;

/// `memfd_create` flags: close-on-exec (children get only the fds they are given) and sealing
/// (a sealed segment cannot be written or resized by anyone).
const MFD_FLAGS: libc::c_uint = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_SEGMENTS: AtomicU64 = AtomicU64::new(0);

/// A live segment of this process.
#[derive(Clone, Copy)]
struct Entry {
    len: usize,
    fd: RawFd,
    /// Kept for reuse when its last `Bytes` goes (written by this process, never handed out).
    poolable: bool,
    /// Sends (`sendfile`) whose socket may still hold its pages: while any is out, its memory
    /// is not kept for reuse ([`lend_to_socket`], [`give_back`]).
    lent: u32,
    /// Tells this segment from a later one mapped at the same address.
    generation: u64,
}

/// A segment's pages lent to a socket by [`lend_to_socket`], until [`give_back`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lent {
    addr: usize,
    generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Address -> entry, for every live segment of this process.
static REGISTRY: Mutex<BTreeMap<usize, Entry>> = Mutex::new(BTreeMap::new());

/// Freed segments kept for reuse (the fd keeps the memory).
/// Off (bound 0) until the process says otherwise: a worker turns it on with
/// [`set_pool_bound`]; clients keep nothing.
static POOL: Mutex<SegmentPool<OwnedFd>> = Mutex::new(SegmentPool::new(0));
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn now() -> std::time::Duration {
    EPOCH.get_or_init(std::time::Instant::now).elapsed()
}

/// Bound the memory kept for reuse (a worker: `segment_pool::pool_bound` of its memory limit).
pub fn set_pool_bound(bytes: u64) {
    let freed = POOL.lock().expect("not poisoned").set_max_bytes(bytes);
    drop(freed);
}

/// Free the kept segments that have been idle for `SEGMENT_POOL_IDLE` (or all of them:
/// memory is needed elsewhere). Returns the bytes still kept.
pub fn trim_pool(all: bool) -> u64 {
    let mut pool = POOL.lock().expect("not poisoned");
    let freed = if all {
        pool.clear()
    } else {
        pool.expire(now())
    };
    let left = pool.bytes();
    drop(pool);
    drop(freed);
    left
}

/// Bytes and count of segments kept for reuse.
pub fn pooled() -> (u64, usize) {
    let pool = POOL.lock().expect("not poisoned");
    (pool.bytes(), pool.len())
}

/// Bytes and count of live segments in this process.
pub fn live() -> (u64, u64) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_SEGMENTS.load(Ordering::Relaxed),
    )
}

/// Raise this process's open-file limit to its hard limit: each stored segment holds an fd.
/// Returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// A new segment being filled through its file, never through a mapping: fresh shared memory
/// written with `pwrite` or `splice` gets its pages without the page faults and zeroing of a
/// first touch through a mapping (two to three times faster on this project's machines).
/// [`SegmentWriter::finish`] seals it and maps it read-only as a value. Dropped unfinished, it
/// is freed.
pub struct SegmentWriter {
    fd: OwnedFd,
    len: usize,
}

/// A mapping of a memfd; unmapped and closed on drop.
struct Mapping {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    registered: bool,
    /// Written by this process: may be kept for reuse (unless the registry says it was
    /// handed out meanwhile).
    poolable: bool,
}

// SAFETY: the mapping is plain memory owned by this value; `Bytes` only ever reads it.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        let mut poolable = self.poolable;
        if self.registered {
            let entry = REGISTRY
                .lock()
                .expect("not poisoned")
                .remove(&(self.ptr as usize));
            poolable &= entry.is_some_and(|e| e.poolable && e.lent == 0);
            LIVE_BYTES.fetch_sub(self.len as u64, Ordering::Relaxed);
            LIVE_SEGMENTS.fetch_sub(1, Ordering::Relaxed);
        }
        if poolable {
            if let Ok(fd) = self.fd.try_clone() {
                let freed = POOL
                    .lock()
                    .expect("not poisoned")
                    .put(now(), self.len as u64, fd);
                drop(freed);
            }
        }
        // SAFETY: ptr/len came from a successful mmap and nothing borrows the memory any more
        // (the last `Bytes` owning it is being dropped).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a live mapping of `len` readable bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn map(fd: &OwnedFd, len: usize) -> io::Result<*mut u8> {
    // SAFETY: mapping a file we hold open; the result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

impl SegmentWriter {
    /// A new segment of `len` (> 0) bytes, to be written whole: the memory of a freed
    /// segment kept for reuse (old bytes until overwritten), or fresh (zeros).
    pub fn create(len: usize) -> io::Result<SegmentWriter> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty segment"));
        }
        let kept = POOL.lock().expect("not poisoned").take(len as u64);
        if let Some((fd, old)) = kept {
            // Reusable only while nobody sealed it (adopting it through its path would have).
            // SAFETY: plain fcntls and ftruncate on our fd (shrinking frees the pages past
            // `len`).
            let unsealed = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) } == 0;
            if unsealed
                && (old == len as u64
                    || unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } == 0)
            {
                return Ok(SegmentWriter { fd, len });
            }
        }
        let fd = memfd("rusk-value")?;
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SegmentWriter { fd, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment's file, for `splice` into it at an offset below [`SegmentWriter::len`].
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Another handle on the same segment (its file duplicated), to write part of it from
    /// another thread. Only the original is finished; a copy dropped frees nothing.
    pub fn try_clone(&self) -> io::Result<SegmentWriter> {
        Ok(SegmentWriter {
            fd: self.fd.try_clone()?,
            len: self.len,
        })
    }

    /// Write all of `buf` at `offset`; the segment's size does not change.
    pub fn write_at(&self, buf: &[u8], offset: usize) -> io::Result<()> {
        if offset + buf.len() > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes at {offset} overrun a segment of {}",
                    buf.len(),
                    self.len
                ),
            ));
        }
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: writing from our buffer to our fd at a checked offset.
            let n = unsafe {
                libc::pwrite(
                    self.fd.as_raw_fd(),
                    buf[done..].as_ptr().cast(),
                    buf.len() - done,
                    (offset + done) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Hand the value out, mapped read-only. It is not sealed: its memory is reused once its
    /// last `Bytes` goes (see the module's documentation).
    pub fn finish(self) -> io::Result<Bytes> {
        let SegmentWriter { fd, len } = self;
        map_registered(fd, len, true)
    }
}

/// An empty memfd to hand to a child process as a file it writes (a command's stdout);
/// [`adopt_fd`] maps what it wrote.
pub fn anonymous_file() -> io::Result<OwnedFd> {
    memfd("rusk-output")
}

fn memfd(name: &str) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), MFD_FLAGS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Best effort: a memfd not created with sealing allowed, or still mapped writable somewhere,
/// stays unsealed (it is still only reachable by this worker's own processes).
fn seal(fd: &OwnedFd) {
    // SAFETY: plain fcntl on our fd.
    unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL,
        )
    };
}

/// Map `len` bytes of `fd` read-only and list the mapping as a live segment.
fn map_registered(fd: OwnedFd, len: usize, poolable: bool) -> io::Result<Bytes> {
    let ptr = map(&fd, len)?;
    Ok(register(Mapping {
        fd,
        ptr,
        len,
        registered: false,
        poolable,
    }))
}

fn register(map: Mapping) -> Bytes {
    let mut map = map;
    REGISTRY.lock().expect("not poisoned").insert(
        map.ptr as usize,
        Entry {
            len: map.len,
            fd: map.fd.as_raw_fd(),
            poolable: map.poolable,
            lent: 0,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        },
    );
    map.registered = true;
    LIVE_BYTES.fetch_add(map.len as u64, Ordering::Relaxed);
    LIVE_SEGMENTS.fetch_add(1, Ordering::Relaxed);
    Bytes::from_owner(map)
}

/// Map the whole of a file this process holds (a memfd a child wrote, or one it opened) as a
/// read-only value. An empty file gives an empty `Bytes`.
pub fn adopt_fd(fd: OwnedFd) -> io::Result<Bytes> {
    // SAFETY: fstat into a local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = st.st_size as usize;
    if len == 0 {
        return Ok(Bytes::new());
    }
    if len < INLINE_VALUE_MAX {
        // Small: keep it on the heap and give the fd back.
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            // SAFETY: reading into our buffer at a known offset.
            let n = unsafe {
                libc::pread(
                    fd.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    len - got,
                    got as libc::off_t,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                buf.truncate(got);
                break;
            }
            got += n as usize;
        }
        return Ok(Bytes::from(buf));
    }
    seal(&fd);
    map_registered(fd, len, false)
}

/// Map the first `len` (> 0) bytes of a file read-only as a value (a spill file: its data,
/// without the trailer that follows it). The value names the file's fd like a segment, so
/// executors map it in place too.
pub fn map_prefix(fd: OwnedFd, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    map_registered(fd, len, false)
}

/// Open and map another process's memfd (`/proc/<pid>/fd/<fd>`), checking its size.
pub fn adopt_path(path: &Path, expect_len: usize) -> io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len != expect_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds {len} bytes, expected {expect_len}",
                path.display()
            ),
        ));
    }
    adopt_fd(OwnedFd::from(file))
}

/// Where `value` lives when it is a whole segment of this process: the fd that names it.
pub fn fd_of(value: &Bytes) -> Option<RawFd> {
    entry_of(value, false)
}

/// The fd of `value`'s segment; `hand_out`: another process may keep it without our knowing,
/// so its memory must never be reused.
fn entry_of(value: &Bytes, hand_out: bool) -> Option<RawFd> {
    with_entry(value, |entry| {
        if hand_out && entry.poolable {
            seal_handed_out(entry);
        }
        entry.fd
    })
}

/// `f` on the registry entry of `value`, when it is a whole segment of this process.
fn with_entry<R>(value: &Bytes, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    if value.len() < INLINE_VALUE_MAX {
        return None;
    }
    let addr = value.as_ptr() as usize;
    let mut reg = REGISTRY.lock().expect("not poisoned");
    let (&start, entry) = reg.range_mut(..=addr).next_back()?;
    if start != addr || entry.len != value.len() {
        return None;
    }
    Some(f(entry))
}

/// Never kept for reuse, and nobody may change it from now on (a command given its path could
/// open it for writing otherwise). Our read-only mapping of a file we opened read-write counts
/// as writable for F_SEAL_WRITE, so this seals future writes.
fn seal_handed_out(entry: &mut Entry) {
    entry.poolable = false;
    // SAFETY: plain fcntl on an fd the registry keeps open.
    unsafe {
        libc::fcntl(
            entry.fd,
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | F_SEAL_FUTURE_WRITE,
        )
    };
}

/// `F_SEAL_FUTURE_WRITE` (Linux 5.1): no new writes or writable mappings, by anyone.
const F_SEAL_FUTURE_WRITE: libc::c_int = 0x0010;

/// Never reuse `value`'s memory (something outside this process's knowledge may still read
/// it: the children of an executor that died, say), and seal it.
pub fn never_reuse(value: &Bytes) {
    entry_of(value, true);
}

/// The fd of `value`'s segment, to `sendfile` it. The socket then holds references to its
/// pages after the call returns, until the peer has them (on loopback, until it reads them;
/// over a network, until they are acknowledged), so its memory is not reused while the
/// returned [`Lent`] is out: [`give_back`] once the peer has shown it read them all (it said
/// so, or sent its next request, which it only does after reading). A segment freed while
/// lent is freed, not kept.
pub fn lend_to_socket(value: &Bytes) -> Option<(RawFd, Lent)> {
    let addr = value.as_ptr() as usize;
    with_entry(value, |entry| {
        entry.lent += 1;
        (
            entry.fd,
            Lent {
                addr,
                generation: entry.generation,
            },
        )
    })
}

/// The peer has read what these sends gave its socket: the segments' memory may be reused
/// once they are freed (those freed meanwhile were freed, not kept).
pub fn give_back(lent: impl IntoIterator<Item = Lent>) {
    let mut reg = REGISTRY.lock().expect("not poisoned");
    for l in lent {
        if let Some(e) = reg.get_mut(&l.addr) {
            if e.generation == l.generation {
                e.lent = e.lent.saturating_sub(1);
            }
        }
    }
}

/// A new close-on-exec fd of the segment that is `value`, when it is a whole segment (its
/// memory is then never reused).
pub fn dup_fd(value: &Bytes) -> Option<OwnedFd> {
    let fd = entry_of(value, true)?;
    // SAFETY: duplicating an fd this process holds (the registry entry keeps it open while
    // `value` lives); the result is checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    // SAFETY: a fresh fd we own.
    (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
}

/// A path another process of this user can open to read `value` in place: when it is a whole
/// segment whose file holds exactly the value (a command reads the whole file). The segment's
/// memory is then never reused.
pub fn proc_path(value: &Bytes) -> Option<String> {
    let fd = entry_of(value, true)?;
    // SAFETY: fstat into a local struct, on an fd the registry keeps open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_size as usize != value.len() {
        return None;
    }
    Some(format!("/proc/{}/fd/{fd}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_shared_through_proc_and_freed_with_its_last_bytes() {
        const LEN: usize = (1 << 20) + 4096; // a size no other test of this process uses
        set_pool_bound(1 << 30);
        let (bytes0, segs0) = live();
        let s = SegmentWriter::create(LEN).unwrap();
        s.write_at(b"hello", 0).unwrap();
        assert!(s.write_at(b"x", LEN).is_err());
        let v = s.finish().unwrap();
        assert_eq!(&v[..5], b"hello");
        let path = proc_path(&v).expect("a whole segment");
        // Another open of the same memory sees the same bytes, and nobody can write it any
        // more (handing out its path sealed it).
        let again = adopt_path(Path::new(&path), LEN).unwrap();
        assert_eq!(&again[..5], b"hello");
        assert!(std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
            .is_err());
        // A slice is not a whole segment.
        assert_eq!(fd_of(&v.slice(1..)), None);
        assert!(live().1 >= segs0 + 2);
        drop((v, again));
        assert!(live().0 <= bytes0 + LEN as u64);
        // Handed out by path: freed, never kept for reuse.
        assert!(POOL.lock().unwrap().take(LEN as u64).is_none());
    }

    fn inode(fd: RawFd) -> u64 {
        // SAFETY: fstat into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        st.st_ino
    }

    #[test]
    fn a_freed_segment_is_reused_unless_it_was_handed_out() {
        const LEN: usize = 3 << 20; // a size no other test of this process uses
        set_pool_bound(1 << 30);
        let s = SegmentWriter::create(LEN).unwrap();
        s.write_at(&vec![1u8; LEN], 0).unwrap();
        let v = s.finish().unwrap();
        let ino = inode(fd_of(&v).unwrap());
        drop(v);
        // Kept: the next value of about its size (here a little smaller) gets its memory.
        let s = SegmentWriter::create(LEN - 100).unwrap();
        assert_eq!(inode(s.raw_fd()), ino, "the freed segment's memory");
        s.write_at(&vec![2u8; LEN - 100], 0).unwrap();
        let v = s.finish().unwrap();
        assert_eq!(v.len(), LEN - 100);
        assert!(v.iter().all(|&b| b == 2));
        // Given to another process (a dup of its fd): freed when we are done, not kept.
        let fd = dup_fd(&v).unwrap();
        drop(v);
        // Nor is one whose reader we lost track of.
        let s = SegmentWriter::create(LEN).unwrap();
        s.write_at(&vec![4u8; LEN], 0).unwrap();
        let lost = s.finish().unwrap();
        never_reuse(&lost);
        let lost_ino = inode(fd_of(&lost).unwrap());
        drop(lost);
        let s = SegmentWriter::create(LEN - 100).unwrap();
        assert_ne!(inode(s.raw_fd()), ino);
        assert_ne!(inode(s.raw_fd()), lost_ino);
        drop((fd, s));
        // Kept segments expire; trimming everything frees them.
        let s = SegmentWriter::create(LEN).unwrap();
        s.write_at(&vec![3u8; LEN], 0).unwrap();
        drop(s.finish().unwrap());
        assert!(pooled().0 >= LEN as u64);
        trim_pool(true);
        assert_eq!(pooled(), (0, 0));
    }

    #[test]
    fn a_childs_output_file_is_adopted_small_on_the_heap_large_as_a_segment() {
        use std::io::Write;
        for len in [0usize, 10, INLINE_VALUE_MAX + 1] {
            let fd = anonymous_file().unwrap();
            let mut f = std::fs::File::from(fd.try_clone().unwrap());
            f.write_all(&vec![7u8; len]).unwrap();
            let v = adopt_fd(fd).unwrap();
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&b| b == 7));
            assert_eq!(fd_of(&v).is_some(), len >= INLINE_VALUE_MAX);
            if let Some(path) = proc_path(&v) {
                // A child's output is sealed: nobody can write it any more.
                assert!(std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(b"x"))
                    .is_err());
            }
        }
    }
}
