//! Admission of connections that have not authenticated yet, for every listener (the
//! scheduler's port, each worker's data server).
//!
//! A stranger costs a socket and a task until its handshake completes or its deadline
//! (`auth::HANDSHAKE_TIMEOUT_MS`) passes. Handshakes in flight are bounded in all
//! (`HANDSHAKES_IN_FLIGHT_MAX`) and per source address (`HANDSHAKES_PER_ADDRESS_MAX`), so a
//! flood from one address holds at most a few places and everyone else still gets in. An
//! authenticated connection gives its place back at once and is never counted: peers that
//! proved the token are never refused because strangers are waiting. A refused connection is
//! closed at once, before anything is read from it.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Unauthenticated connections in their handshake at once, per listener.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Unauthenticated connections in their handshake at once from one source address.
pub const HANDSHAKES_PER_ADDRESS_MAX: usize = 8;

/// The handshakes in flight of one listener.
#[derive(Clone, Default)]
pub struct Admission {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `HANDSHAKES_IN_FLIGHT_MAX` strangers are in their handshake already.
    Full,
    /// `HANDSHAKES_PER_ADDRESS_MAX` strangers from this address are.
    Address,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full => write!(
                f,
                "{HANDSHAKES_IN_FLIGHT_MAX} connections are in their handshake already \
                 (HANDSHAKES_IN_FLIGHT_MAX)"
            ),
            Refusal::Address => write!(
                f,
                "{HANDSHAKES_PER_ADDRESS_MAX} connections from this address are in their \
                 handshake already (HANDSHAKES_PER_ADDRESS_MAX)"
            ),
        }
    }
}

/// A place in the handshake queue; given back when dropped (handshake done or failed).
pub struct Ticket {
    admission: Admission,
    address: IpAddr,
}

impl Admission {
    pub fn new() -> Admission {
        Admission::default()
    }

    /// Admit a connection from `address` to its handshake, or say why not.
    pub fn admit(&self, address: IpAddr) -> Result<Ticket, Refusal> {
        let mut s = self.state.lock().expect("not poisoned");
        let mine = s.by_address.get(&address).copied().unwrap_or(0);
        if mine >= HANDSHAKES_PER_ADDRESS_MAX {
            return Err(Refusal::Address);
        }
        if s.total >= HANDSHAKES_IN_FLIGHT_MAX {
            return Err(Refusal::Full);
        }
        s.total += 1;
        *s.by_address.entry(address).or_default() += 1;
        Ok(Ticket {
            admission: self.clone(),
            address,
        })
    }

    /// Handshakes in flight (all, from `address`).
    pub fn in_flight(&self, address: IpAddr) -> (usize, usize) {
        let s = self.state.lock().expect("not poisoned");
        (s.total, s.by_address.get(&address).copied().unwrap_or(0))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.admission.state.lock().expect("not poisoned");
        s.total -= 1;
        if let Some(n) = s.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_a_few_places_and_others_still_get_in() {
        let a = Admission::new();
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let honest: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Ticket> = (0..HANDSHAKES_PER_ADDRESS_MAX)
            .map(|_| a.admit(flood).expect("within the bound"))
            .collect();
        assert_eq!(a.admit(flood).err(), Some(Refusal::Address));
        let t = a.admit(honest).expect("another address gets in");
        assert_eq!(
            a.in_flight(flood),
            (HANDSHAKES_PER_ADDRESS_MAX + 1, HANDSHAKES_PER_ADDRESS_MAX)
        );
        drop(t);
        drop(held);
        assert_eq!(a.in_flight(flood), (0, 0));
        assert!(a.admit(flood).is_ok());
    }

    #[test]
    fn the_total_is_bounded_across_addresses() {
        let a = Admission::new();
        let mut held = Vec::new();
        for i in 0..HANDSHAKES_IN_FLIGHT_MAX {
            let ip = IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
            held.push(a.admit(ip).expect("within the bound"));
        }
        assert_eq!(
            a.admit("10.9.9.9".parse().unwrap()).err(),
            Some(Refusal::Full)
        );
        held.pop();
        assert!(a.admit("10.9.9.9".parse().unwrap()).is_ok());
    }
}
