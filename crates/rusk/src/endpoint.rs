//! Where a worker's data server listens, and the address it gives the scheduler for peers and
//! clients to fetch from (its *contact address*).
//!
//! By default both are the address of this host's interface that routes to the scheduler
//! (found with a connected UDP socket: the kernel picks the source address, no packet is
//! sent), so on a multi-host cluster workers are reachable where the scheduler reaches them,
//! and on a loopback cluster that is 127.0.0.1. `--listen-host` binds elsewhere (0.0.0.0 for
//! every interface); `--contact-address` overrides what is advertised. An unspecified address
//! (0.0.0.0, ::) is never advertised: nobody could connect to it.
use anyhow::{anyhow, Context, Result};
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};

/// The local address of the interface that routes to `scheduler` (`host:port`).
pub fn route_to(scheduler: &str) -> Result<IpAddr> {
    let to = scheduler
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the scheduler address {scheduler}"))?
        .next()
        .ok_or_else(|| anyhow!("the scheduler address {scheduler} resolves to nothing"))?;
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(any)?;
    sock.connect(to)
        .with_context(|| format!("no route to the scheduler at {to}"))?;
    Ok(sock.local_addr()?.ip())
}

/// `(host to bind, host to advertise)` for a data server, from `--listen-host`,
/// `--contact-address` and the scheduler's address.
pub fn data_endpoint(
    listen_host: Option<&str>,
    contact: Option<&str>,
    scheduler: &str,
) -> Result<(String, String)> {
    let route = || route_to(scheduler).map(|ip| ip.to_string());
    let bind = match listen_host {
        Some(h) => h.to_string(),
        None => route()?,
    };
    let advertise = match contact {
        Some(c) => c.to_string(),
        None if is_unspecified(&bind) => route()?,
        None => bind.clone(),
    };
    if is_unspecified(&advertise) {
        anyhow::bail!(
            "cannot advertise {advertise} to peers (it is not an address anyone can connect \
             to): give --contact-address"
        );
    }
    Ok((bind, advertise))
}

fn is_unspecified(host: &str) -> bool {
    host.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

/// `host:port`, with brackets around an IPv6 address.
pub fn join(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_by_default_on_a_loopback_cluster_and_never_an_unspecified_address() {
        let s = "127.0.0.1:8786";
        assert_eq!(route_to(s).unwrap().to_string(), "127.0.0.1");
        assert_eq!(
            data_endpoint(None, None, s).unwrap(),
            ("127.0.0.1".into(), "127.0.0.1".into())
        );
        // Bound to every interface: the routing interface is advertised, not 0.0.0.0.
        assert_eq!(
            data_endpoint(Some("0.0.0.0"), None, s).unwrap(),
            ("0.0.0.0".into(), "127.0.0.1".into())
        );
        assert_eq!(
            data_endpoint(Some("0.0.0.0"), Some("w1.example"), s).unwrap(),
            ("0.0.0.0".into(), "w1.example".into())
        );
        assert_eq!(
            data_endpoint(Some("127.0.0.5"), None, s).unwrap(),
            ("127.0.0.5".into(), "127.0.0.5".into())
        );
        let e = data_endpoint(None, Some("0.0.0.0"), s).unwrap_err();
        assert!(e.to_string().contains("--contact-address"), "{e}");
        assert!(data_endpoint(None, None, "no-such-host.invalid:1").is_err());
        assert_eq!(join("::1", 7), "[::1]:7");
        assert_eq!(join("10.0.0.1", 7), "10.0.0.1:7");
    }
}
