//! Locate-and-retry: the one policy every client follows when fetching an output from the
//! worker that holds it fails.
//!
//! A result stays on the worker that computed it. If that worker dies between "finished" and
//! the fetch, the client asks the scheduler to locate the outputs again (`LocateOutputs`); the
//! scheduler recomputes what was lost and reports the new holders. The CLI client
//! (`rusk::client`) and the Python extension (`rusk-py`, which `rusk._client` and `rusk._dask`
//! call) count attempts and back off with this one [`Locator`]; it is pure (no clock, no
//! sleeping): the caller waits the returned delay.
use std::time::Duration;

/// Times a client asks the scheduler to locate outputs again before it gives up. Each locate
/// follows a failed fetch; a dead holder's results are recomputed, so a few locates suffice
/// unless workers keep dying. With the back-off below, 20 locates wait 10.5 s in all.
pub const LOCATE_ATTEMPTS_MAX: u32 = 20;

/// The back-off grows by this much per attempt: the first locate comes quickly (most failures
/// are one dead worker, already noticed by the scheduler), later ones give recovery time.
pub const LOCATE_BACKOFF_STEP: Duration = Duration::from_millis(50);

/// The longest wait before one locate, so that a client never sleeps long past a recovery.
pub const LOCATE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The wait before locate number `attempt` (from 1): linear in `attempt`, capped.
pub fn backoff(attempt: u32) -> Duration {
    LOCATE_BACKOFF_STEP
        .saturating_mul(attempt)
        .min(LOCATE_BACKOFF_MAX)
}

/// The locate attempts of one gather.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    attempts: u32,
}

/// [`LOCATE_ATTEMPTS_MAX`] locates did not make the outputs reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("still unreachable after {attempts} attempts to locate them")]
pub struct GaveUp {
    pub attempts: u32,
}

impl Locator {
    pub fn new() -> Locator {
        Locator::default()
    }

    /// Locates asked for so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A fetch failed: how long to wait before asking the scheduler to locate the outputs
    /// again, or [`GaveUp`] once [`LOCATE_ATTEMPTS_MAX`] locates have not helped.
    pub fn failed(&mut self) -> Result<Duration, GaveUp> {
        if self.attempts >= LOCATE_ATTEMPTS_MAX {
            return Err(GaveUp {
                attempts: self.attempts,
            });
        }
        self.attempts += 1;
        Ok(backoff(self.attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_the_last_attempt_and_stays_given_up() {
        let mut l = Locator::new();
        let delays: Vec<Duration> = (0..LOCATE_ATTEMPTS_MAX)
            .map(|_| l.failed().expect("within the limit"))
            .collect();
        assert_eq!(l.attempts(), LOCATE_ATTEMPTS_MAX);
        let gave_up = GaveUp {
            attempts: LOCATE_ATTEMPTS_MAX,
        };
        assert_eq!(l.failed(), Err(gave_up));
        assert_eq!(l.failed(), Err(gave_up));
        assert_eq!(delays[0], Duration::from_millis(50));
        assert_eq!(delays[19], Duration::from_secs(1));
        assert_eq!(
            delays.iter().sum::<Duration>(),
            Duration::from_millis(10_500)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut previous = Duration::ZERO;
        for attempt in 0..=1_000 {
            let d = backoff(attempt);
            assert!(
                d >= previous && d <= LOCATE_BACKOFF_MAX,
                "attempt {attempt}: {d:?}"
            );
            previous = d;
        }
        assert_eq!(backoff(u32::MAX), LOCATE_BACKOFF_MAX);
    }
}
