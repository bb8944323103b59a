//! Admission of connections that have not authenticated yet, for every listener (the
//! scheduler's port, each worker's data server).
//!
//! A stranger costs a socket and a task until its handshake completes or its deadline
//! (`auth::HANDSHAKE_TIMEOUT_MS`) passes. Per source address, at most
//! `HANDSHAKES_PER_ADDRESS_MAX` handshakes run at once; more connections from that address
//! wait their turn in its queue (up to `WAITING_PER_ADDRESS_MAX`, then they are refused), so
//! a burst of honest connections from one host (a nanny's workers, a client's) is served a
//! few at a time within milliseconds, while a flood from one address holds only its own
//! places and queue: everyone else still gets in at once. In all, at most
//! `ADMITTED_MAX` connections are in a handshake or waiting for one. An authenticated
//! connection gives its place back at once and is never counted: peers that proved the token
//! are never refused because strangers are waiting. A refused connection is closed at once,
//! before anything is read from it.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Handshakes running at once from one source address.
pub const HANDSHAKES_PER_ADDRESS_MAX: usize = 8;
/// Connections from one source address in a handshake or waiting for one.
pub const WAITING_PER_ADDRESS_MAX: usize = 512;
/// Connections in a handshake or waiting for one, per listener.
pub const ADMITTED_MAX: usize = 4096;

/// The strangers of one listener.
#[derive(Clone, Default)]
pub struct Admission {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    total: usize,
    by_address: HashMap<IpAddr, Place>,
}

struct Place {
    /// Admitted from this address (in a handshake or waiting).
    admitted: usize,
    /// `HANDSHAKES_PER_ADDRESS_MAX` turns.
    turns: Arc<Semaphore>,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `ADMITTED_MAX` strangers are in or waiting for their handshake already.
    Full,
    /// `WAITING_PER_ADDRESS_MAX` strangers from this address are.
    Address,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full => write!(
                f,
                "{ADMITTED_MAX} connections are in or waiting for their handshake already \
                 (ADMITTED_MAX)"
            ),
            Refusal::Address => write!(
                f,
                "{WAITING_PER_ADDRESS_MAX} connections from this address are in or waiting for \
                 their handshake already (WAITING_PER_ADDRESS_MAX)"
            ),
        }
    }
}

/// An admitted connection: wait for its turn ([`Ticket::turn`]), then run the handshake; its
/// place is given back when the ticket is dropped.
pub struct Ticket {
    admission: Admission,
    address: IpAddr,
    turns: Arc<Semaphore>,
    turn: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    /// Wait until fewer than `HANDSHAKES_PER_ADDRESS_MAX` handshakes from this address run.
    pub async fn turn(&mut self) {
        if self.turn.is_none() {
            let p = self.turns.clone().acquire_owned().await;
            self.turn = Some(p.expect("the semaphore is never closed"));
        }
    }
}

impl Admission {
    pub fn new() -> Admission {
        Admission::default()
    }

    /// Admit a connection from `address`, or say why not.
    pub fn admit(&self, address: IpAddr) -> Result<Ticket, Refusal> {
        let mut s = self.state.lock().expect("not poisoned");
        if s.by_address
            .get(&address)
            .is_some_and(|p| p.admitted >= WAITING_PER_ADDRESS_MAX)
        {
            return Err(Refusal::Address);
        }
        if s.total >= ADMITTED_MAX {
            return Err(Refusal::Full);
        }
        s.total += 1;
        let place = s.by_address.entry(address).or_insert_with(|| Place {
            admitted: 0,
            turns: Arc::new(Semaphore::new(HANDSHAKES_PER_ADDRESS_MAX)),
        });
        place.admitted += 1;
        Ok(Ticket {
            admission: self.clone(),
            address,
            turns: place.turns.clone(),
            turn: None,
        })
    }

    /// Connections admitted (all, from `address`).
    pub fn admitted(&self, address: IpAddr) -> (usize, usize) {
        let s = self.state.lock().expect("not poisoned");
        (
            s.total,
            s.by_address.get(&address).map_or(0, |p| p.admitted),
        )
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.turn.take();
        let mut s = self.admission.state.lock().expect("not poisoned");
        s.total -= 1;
        if let Some(p) = s.by_address.get_mut(&self.address) {
            p.admitted -= 1;
            if p.admitted == 0 {
                s.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_address_runs_a_few_handshakes_at_once_and_others_get_in_at_once() {
        let a = Admission::new();
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let honest: IpAddr = "10.0.0.2".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..HANDSHAKES_PER_ADDRESS_MAX {
            let mut t = a.admit(flood).expect("within the bound");
            t.turn().await;
            held.push(t);
        }
        // The next one from the flood waits its turn; another address does not.
        let mut waiting = a.admit(flood).expect("admitted, to wait");
        let no_turn = tokio::time::timeout(Duration::from_millis(50), waiting.turn()).await;
        assert!(
            no_turn.is_err(),
            "a ninth handshake from one address ran at once"
        );
        let mut t = a.admit(honest).expect("another address gets in");
        tokio::time::timeout(Duration::from_millis(50), t.turn())
            .await
            .expect("and starts at once");
        drop(t);
        // One flood handshake ends: the waiting one gets its turn.
        held.pop();
        tokio::time::timeout(Duration::from_millis(50), waiting.turn())
            .await
            .expect("its turn came");
        drop(waiting);
        drop(held);
        assert_eq!(a.admitted(flood), (0, 0));
    }

    #[test]
    fn the_queue_of_one_address_and_the_total_are_bounded() {
        let a = Admission::new();
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let held: Vec<Ticket> = (0..WAITING_PER_ADDRESS_MAX)
            .map(|_| a.admit(flood).expect("within the bound"))
            .collect();
        assert_eq!(a.admit(flood).err(), Some(Refusal::Address));
        let mut more = Vec::new();
        for i in 0..ADMITTED_MAX - WAITING_PER_ADDRESS_MAX {
            let ip = IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
            more.push(a.admit(ip).expect("within the total"));
        }
        assert_eq!(
            a.admit("10.9.9.9".parse().unwrap()).err(),
            Some(Refusal::Full)
        );
        drop(held);
        assert!(a.admit("10.9.9.9".parse().unwrap()).is_ok());
    }
}
