//! What every simulator here shares: events due at a virtual time, and core panics turned
//! into failures.
use crate::error::FailureKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// An event due at a virtual time. Ties keep the order they were scheduled in (`seq`), so a
/// run depends on nothing but its seed.
pub(crate) struct Queued<E> {
    pub(crate) at: Duration,
    pub(crate) seq: u64,
    pub(crate) ev: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Queued<E> {}
impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Queued<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Run one step; a panic in it (a core's assertion or `check_invariants()`) becomes
/// [`FailureKind::CorePanic`] with its message.
pub(crate) fn catch_core_panic(
    f: impl FnOnce() -> Result<(), FailureKind>,
) -> Result<(), FailureKind> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-text panic".into());
        Err(FailureKind::CorePanic { message })
    })
}
