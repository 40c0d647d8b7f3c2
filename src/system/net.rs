//! The host's own addresses (for `bound` in ticket_list).

use std::collections::BTreeSet;
use std::net::IpAddr;

/// Every address configured on an interface of this host (in the daemon's
/// network namespace). Empty when the kernel cannot be asked.
pub fn local_addresses() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let Some(addr) = ifa.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                out.insert(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                out.insert(IpAddr::V6(v6.ip()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_local() {
        let addrs = super::local_addresses();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
    }
}
