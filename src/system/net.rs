//! The host's own addresses (for `bound` in ticket_list).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`local_addresses_cached`] reuses an answer. Staleness bound:
/// an address added to or removed from an interface shows in ticket_list's
/// `bound` at most this long after the change (addresses rarely change;
/// ticket_list asks on every call, and `getifaddrs` was ~6% of the daemon's
/// CPU under load).
pub const ADDRESS_CACHE_TTL: Duration = Duration::from_secs(5);

static CACHE: Mutex<Option<(Instant, Arc<BTreeSet<IpAddr>>)>> = Mutex::new(None);

/// [`local_addresses`], at most [`ADDRESS_CACHE_TTL`] old. An empty answer
/// (the kernel could not be asked) is not cached.
pub fn local_addresses_cached() -> Arc<BTreeSet<IpAddr>> {
    let now = Instant::now();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, addrs)) = &*cache {
        if now.saturating_duration_since(*at) < ADDRESS_CACHE_TTL {
            return Arc::clone(addrs);
        }
    }
    let fresh = Arc::new(local_addresses());
    if !fresh.is_empty() {
        *cache = Some((now, Arc::clone(&fresh)));
    }
    fresh
}

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

    #[test]
    fn cached_answer_is_the_kernels_and_is_reused() {
        let a = super::local_addresses_cached();
        assert_eq!(*a, super::local_addresses());
        let b = super::local_addresses_cached();
        // Within the TTL (5 s) the same answer is handed out, unless this
        // test straddled an expiry; then the content is still the same.
        assert_eq!(a, b);
    }
}
