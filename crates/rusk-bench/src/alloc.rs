//! A counting global allocator: [`std::alloc::System`] plus counters of live heap bytes, live
//! allocations and the peak of live bytes.
//!
//! The counts are of *requested* bytes (`Layout::size`). The system allocator adds its own
//! per-allocation overhead on top (8–16 bytes with glibc malloc), which is why the benchmarks
//! also report the number of live allocations.
//!
//! The counters are relaxed atomics: exact when one thread allocates (the core benchmark is
//! single-threaded), approximate only for the peak under concurrent allocation.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = LIVE_BYTES.fetch_add(size, Relaxed) + size;
    // Cheap common case: only touch the peak when it is exceeded.
    if now > PEAK_BYTES.load(Relaxed) {
        PEAK_BYTES.fetch_max(now, Relaxed);
    }
}

fn shrank(size: usize) {
    LIVE_BYTES.fetch_sub(size, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is exactly `System`'s; the counters are updated only on success.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
            LIVE_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
            LIVE_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// A reading of the counters.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub bytes: usize,
    pub allocs: usize,
}

/// Live heap bytes and allocations right now.
pub fn live() -> Snapshot {
    Snapshot {
        bytes: LIVE_BYTES.load(Relaxed),
        allocs: LIVE_ALLOCS.load(Relaxed),
    }
}

/// Highest live byte count since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK_BYTES.load(Relaxed)
}

/// Start a new peak measurement from the current live byte count.
pub fn reset_peak() {
    PEAK_BYTES.store(LIVE_BYTES.load(Relaxed), Relaxed);
}
