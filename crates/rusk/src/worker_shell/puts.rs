//! Values clients put on this worker (`Client.scatter`) before the scheduler has the task that
//! adopts them: the data server stores each under its token, and the `TaskKind::Put` task
//! takes it as its result. Put values nobody adopted are dropped after [`PUT_PENDING_TTL`]; all
//! of them together are bounded by [`PUTS_PENDING_MAX_BYTES`].
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A put value waits this long for its task (the client sends the task right after the put).
pub const PUT_PENDING_TTL: Duration = Duration::from_secs(120);
/// Bytes of put values waiting for their tasks, at most: a bigger put is refused with a clear
/// error (the client may scatter it in parts, or to another worker).
pub const PUTS_PENDING_MAX_BYTES: u64 = 16 << 30;

#[derive(Clone, Default)]
pub(super) struct Puts(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    values: HashMap<u128, (Bytes, Instant)>,
    bytes: u64,
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        let before = self.values.len();
        self.values
            .retain(|_, (_, at)| now.duration_since(*at) < PUT_PENDING_TTL);
        if self.values.len() != before {
            self.bytes = self.values.values().map(|(v, _)| v.len() as u64).sum();
        }
    }
}

impl Puts {
    /// Whether `size` more bytes fit; `Err` says why not.
    pub(super) fn admit(&self, size: u64) -> Result<(), String> {
        let mut inner = self.0.lock().expect("not poisoned");
        inner.expire(Instant::now());
        if inner.bytes.saturating_add(size) > PUTS_PENDING_MAX_BYTES {
            return Err(format!(
                "{size} bytes would take the values put on this worker and not yet adopted over \
                 {PUTS_PENDING_MAX_BYTES} bytes (PUTS_PENDING_MAX_BYTES; {} held)",
                inner.bytes
            ));
        }
        Ok(())
    }

    pub(super) fn insert(&self, token: u128, value: Bytes) {
        let mut inner = self.0.lock().expect("not poisoned");
        inner.bytes += value.len() as u64;
        if let Some((old, _)) = inner.values.insert(token, (value, Instant::now())) {
            inner.bytes -= old.len() as u64;
        }
    }

    /// The value put under `token`, removed.
    pub(super) fn take(&self, token: u128) -> Option<Bytes> {
        let mut inner = self.0.lock().expect("not poisoned");
        let (v, _) = inner.values.remove(&token)?;
        inner.bytes -= v.len() as u64;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_are_bounded_and_taken_once() {
        let p = Puts::default();
        assert!(p.admit(PUTS_PENDING_MAX_BYTES).is_ok());
        assert!(p.admit(PUTS_PENDING_MAX_BYTES + 1).is_err());
        p.insert(7, Bytes::from_static(b"abc"));
        assert!(p.admit(PUTS_PENDING_MAX_BYTES - 3).is_ok());
        let err = p.admit(PUTS_PENDING_MAX_BYTES - 2).unwrap_err();
        assert!(err.contains("PUTS_PENDING_MAX_BYTES"), "{err}");
        assert_eq!(p.take(7).as_deref(), Some(&b"abc"[..]));
        assert_eq!(p.take(7), None);
        assert!(p.admit(PUTS_PENDING_MAX_BYTES).is_ok());
    }
}
