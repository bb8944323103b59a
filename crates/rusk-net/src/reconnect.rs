//! Getting back to a lost scheduler: the one back-off every endpoint follows (worker, nanny,
//! CLI client, Python client), and [`reconnect`], which retries until connected, refused, or
//! out of time.
//!
//! A scheduler restarted from its journal is the same cluster (same address, token and CA), so
//! the peers that lost it connect again and carry on; one that stays away longer than the
//! caller's bound (`--scheduler-lost-timeout`, 60 s by default) is given up on. A refusal
//! ([`crate::Refused`]: another cluster answers now) ends the attempts at once.
use crate::{connect, is_refusal, Conn, Credentials};
use rusk_proto::auth::Role;
use std::time::{Duration, Instant};

/// The first wait after a failed connection attempt.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);

/// The longest wait between two attempts: a restarted scheduler is found within this much of
/// its start.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

/// Doubling waits between attempts, from [`RECONNECT_DELAY_MIN`] to a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(RECONNECT_DELAY_MAX)
    }
}

impl Backoff {
    /// Waits from [`RECONNECT_DELAY_MIN`] doubling up to `max`.
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: RECONNECT_DELAY_MIN.min(max),
            max,
        }
    }

    /// The wait before the next attempt (and the one after doubles, up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A connection succeeded: the next failure starts again from the shortest wait.
    pub fn reset(&mut self) {
        self.next = RECONNECT_DELAY_MIN.min(self.max);
    }
}

/// Why [`reconnect`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// Another cluster answers at the address (wrong token, CA or role): retrying cannot help.
    #[error("the scheduler at {address} refused us: {source:#}")]
    Refused {
        address: String,
        source: anyhow::Error,
    },
    /// Nothing answered for `waited`.
    #[error("the scheduler at {address} stayed unreachable for {:.1} s: {last:#}", waited.as_secs_f64())]
    TimedOut {
        address: String,
        waited: Duration,
        last: anyhow::Error,
    },
}

/// Connect to the scheduler at `address` as `role`, retrying with [`Backoff`] until it answers,
/// refuses, or `give_up_after` has passed (zero: one attempt). `attempt_failed` sees each
/// failure with the wait before the next attempt (for logging).
pub async fn reconnect(
    address: &str,
    creds: &Credentials,
    role: Role,
    give_up_after: Duration,
    mut attempt_failed: impl FnMut(&anyhow::Error, Duration),
) -> Result<Conn, Unreachable> {
    let since = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        match connect(address, creds, role).await {
            Ok(conn) => return Ok(conn),
            Err(e) if is_refusal(&e) => {
                return Err(Unreachable::Refused {
                    address: address.to_string(),
                    source: e,
                })
            }
            Err(e) => {
                let delay = backoff.next_delay();
                if since.elapsed() + delay > give_up_after {
                    return Err(Unreachable::TimedOut {
                        address: address.to_string(),
                        waited: since.elapsed(),
                        last: e,
                    });
                }
                attempt_failed(&e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), RECONNECT_DELAY_MIN);
    }

    #[tokio::test]
    async fn nothing_listening_gives_up_after_the_bound() {
        // A port that was free a moment ago: connections are refused by the kernel.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut failures = 0;
        let r = reconnect(
            &address,
            &Credentials::plain(b"t"),
            Role::Client,
            Duration::from_millis(700),
            |_, _| failures += 1,
        )
        .await;
        match r {
            Err(Unreachable::TimedOut { .. }) => {}
            Err(e) => panic!("gave up for another reason: {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
        assert!(failures >= 2, "retried {failures} times");
    }
}
