//! Which freed shared-memory segments a process keeps for reuse, pure.
//!
//! Memory a process already has is much cheaper to fill than fresh memory: a fresh page must be
//! allocated (and, on a VM, often backed by the host) before the first byte lands in it. On
//! this project's 2-core VM a copy into warm memory runs at 2.3–2.5 GB/s every time, while the
//! same copy into fresh memory runs anywhere from 2.2 GB/s down to 0.2 GB/s. So a segment whose
//! last user is gone is not freed at once: it is kept here, and the next segment of about the
//! same size is written into its pages instead of new ones.
//!
//! Only segments that no other process can still see are ever offered to the pool (the shell's
//! business: a worker keeps a value while an executor maps it, and never pools one it gave a
//! command or a client). The pool itself decides:
//!
//! - what to reuse: the smallest kept segment of at least the size asked and at most twice it
//!   (the caller truncates it to the size asked);
//! - what to keep: at most `max_bytes` in all (the oldest go first), nothing bigger than
//!   `max_bytes`;
//! - for how long: a segment kept [`SEGMENT_POOL_IDLE`] without reuse is freed
//!   ([`SegmentPool::expire`]), so an idle worker gives its memory back.
use std::time::Duration;

/// A kept segment unused for this long is freed.
pub const SEGMENT_POOL_IDLE: Duration = Duration::from_secs(10);
/// The most a process keeps for reuse (a worker with a memory limit keeps at most an eighth of
/// it, see [`pool_bound`]).
pub const SEGMENT_POOL_MAX_BYTES: u64 = 2 << 30;

/// The pool's bound for a process with this memory limit.
pub fn pool_bound(memory_limit: Option<u64>) -> u64 {
    match memory_limit {
        Some(l) => (l / 8).min(SEGMENT_POOL_MAX_BYTES),
        None => SEGMENT_POOL_MAX_BYTES,
    }
}

struct Kept<T> {
    len: u64,
    since: Duration,
    item: T,
}

/// Kept segments (`T`: whatever names one, e.g. its file descriptor), oldest first.
pub struct SegmentPool<T> {
    kept: Vec<Kept<T>>,
    bytes: u64,
    max_bytes: u64,
}

impl<T> SegmentPool<T> {
    pub const fn new(max_bytes: u64) -> SegmentPool<T> {
        SegmentPool {
            kept: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes kept now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Change the bound; returns what no longer fits (to be freed).
    pub fn set_max_bytes(&mut self, max_bytes: u64) -> Vec<T> {
        self.max_bytes = max_bytes;
        self.shrink_to(max_bytes)
    }

    /// A kept segment for a new value of `len` bytes, with its current length: the smallest of
    /// at least `len` and at most `2 * len`.
    pub fn take(&mut self, len: u64) -> Option<(T, u64)> {
        let i = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, k)| k.len >= len && k.len / 2 <= len)
            .min_by_key(|(_, k)| k.len)
            .map(|(i, _)| i)?;
        let k = self.kept.remove(i);
        self.bytes -= k.len;
        Some((k.item, k.len))
    }

    /// Offer a segment of `len` bytes whose last user is gone. Returns what must be freed: the
    /// segment itself when it does not fit, or the oldest kept ones it displaced.
    pub fn put(&mut self, now: Duration, len: u64, item: T) -> Vec<T> {
        if len == 0 || len > self.max_bytes {
            return vec![item];
        }
        let mut out = self.shrink_to(self.max_bytes - len);
        out.extend(self.expire(now));
        self.kept.push(Kept {
            len,
            since: now,
            item,
        });
        self.bytes += len;
        out
    }

    /// The segments kept unused for [`SEGMENT_POOL_IDLE`] or longer (to be freed).
    pub fn expire(&mut self, now: Duration) -> Vec<T> {
        let n = self
            .kept
            .iter()
            .take_while(|k| now.saturating_sub(k.since) >= SEGMENT_POOL_IDLE)
            .count();
        self.drain_oldest(n)
    }

    /// Everything kept (memory is needed elsewhere).
    pub fn clear(&mut self) -> Vec<T> {
        self.drain_oldest(self.kept.len())
    }

    /// When the next kept segment expires.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.kept.first().map(|k| k.since + SEGMENT_POOL_IDLE)
    }

    fn shrink_to(&mut self, bytes: u64) -> Vec<T> {
        let mut n = 0;
        let mut left = self.bytes;
        while left > bytes && n < self.kept.len() {
            left -= self.kept[n].len;
            n += 1;
        }
        self.drain_oldest(n)
    }

    fn drain_oldest(&mut self, n: usize) -> Vec<T> {
        let out: Vec<T> = self
            .kept
            .drain(..n)
            .map(|k| {
                self.bytes -= k.len;
                k.item
            })
            .collect();
        debug_assert_eq!(self.bytes, self.kept.iter().map(|k| k.len).sum::<u64>());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn reuses_the_smallest_fit_within_twice_the_size() {
        let mut p = SegmentPool::new(1000);
        assert!(p.put(S, 100, "a").is_empty());
        assert!(p.put(S, 300, "b").is_empty());
        assert!(p.put(S, 150, "c").is_empty());
        assert_eq!(p.bytes(), 550);
        // 120: "c" (150) fits and is smaller than "b"; "a" is too small.
        assert_eq!(p.take(120), Some(("c", 150)));
        // 140: "b" is more than twice 140, "a" too small.
        assert_eq!(p.take(140), None);
        assert_eq!(p.take(150), Some(("b", 300)));
        assert_eq!(p.take(100), Some(("a", 100)));
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn the_bound_frees_the_oldest_and_refuses_what_cannot_fit() {
        let mut p = SegmentPool::new(1000);
        p.put(S, 400, 1);
        p.put(2 * S, 400, 2);
        assert_eq!(p.put(3 * S, 400, 3), vec![1]);
        assert_eq!(p.put(3 * S, 1001, 4), vec![4]);
        assert_eq!(p.put(3 * S, 0, 5), vec![5]);
        assert_eq!(p.bytes(), 800);
        assert_eq!(p.set_max_bytes(500), vec![2]);
        assert_eq!(p.clear(), vec![3]);
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn idle_segments_expire() {
        let mut p = SegmentPool::new(1000);
        p.put(S, 10, 1);
        p.put(5 * S, 10, 2);
        assert_eq!(p.next_expiry(), Some(S + SEGMENT_POOL_IDLE));
        assert!(p.expire(S + SEGMENT_POOL_IDLE - S / 2).is_empty());
        assert_eq!(p.expire(S + SEGMENT_POOL_IDLE), vec![1]);
        // Putting also frees what has expired.
        assert_eq!(p.put(5 * S + SEGMENT_POOL_IDLE, 10, 3), vec![2]);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_bound_follows_the_memory_limit() {
        assert_eq!(pool_bound(None), SEGMENT_POOL_MAX_BYTES);
        assert_eq!(pool_bound(Some(8 << 30)), 1 << 30);
        assert_eq!(pool_bound(Some(1 << 50)), SEGMENT_POOL_MAX_BYTES);
    }
}
