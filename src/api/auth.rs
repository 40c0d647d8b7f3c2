//! Authentication: `Authorization: whm USER:TOKEN` (seed 000), root over
//! the Unix socket, and slowing down addresses that keep failing.
//!
//! Decisions (documented in the README's security model):
//! - Every authentication failure is HTTP 401: no/malformed header, a user
//!   other than root, an unknown, revoked or expired token, and a source
//!   address outside the token's whitelist (so a foreign address learns
//!   nothing about whether a token is valid). HTTP 403 is only for a valid
//!   token that lacks the ACL a function needs (see `dispatch`).
//! - A Unix-socket peer with uid 0 is root without a token. When it does
//!   send an Authorization header, the token is checked like any other
//!   (useful to try a token's ACLs locally).
//! - Over the Unix socket, a token with an IP whitelist is accepted only
//!   if the whitelist includes a loopback address.
//! - The token value is never logged, echoed or stored; only its SHA-256.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::caller::Caller;
use crate::app::App;
use crate::config::AuthConfig;
use crate::store::tokens::TokenRecord;
use crate::types::{canonical_ip, printable};

/// cPanel tokens: 32 characters of `[A-Z0-9]`.
pub const TOKEN_LEN: usize = 32;
const TOKEN_ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Where a request came from, as the listener saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A Unix-socket client and its kernel-reported credentials.
    Unix {
        uid: u32,
        gid: u32,
        pid: i32,
    },
    Tcp {
        addr: SocketAddr,
    },
}

impl Peer {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp { addr } => Some(canonical_ip(addr.ip())),
            Peer::Unix { .. } => None,
        }
    }
    /// The audit `actor` of a request that did not authenticate: `uid:N`
    /// for a local peer (the kernel vouches for it), `unauthenticated`
    /// otherwise.
    pub fn actor_hint(&self) -> String {
        match self {
            Peer::Unix { uid, .. } => format!("uid:{uid}"),
            Peer::Tcp { .. } => "unauthenticated".into(),
        }
    }

    /// For logs: the address or `unix:uid=N`.
    pub fn describe(&self) -> String {
        match self {
            Peer::Tcp { addr } => canonical_ip(addr.ip()).to_string(),
            Peer::Unix { uid, pid, .. } => format!("unix:uid={uid},pid={pid}"),
        }
    }
}

/// A new token from the OS random number generator (rejection sampling so
/// every character is equally likely).
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(TOKEN_LEN);
    let mut buf = [0u8; 64];
    while out.len() < TOKEN_LEN {
        getrandom::fill(&mut buf)?;
        for b in buf {
            // 252 = 7 * 36: bytes above it would bias the first characters.
            if b < 252 && out.len() < TOKEN_LEN {
                out.push(char::from(TOKEN_ALPHABET[usize::from(b % 36)]));
            }
        }
    }
    Ok(out)
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn well_formed_token(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Why a request was not authenticated. `reason` goes to the client and the
/// log; it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// 401 (500 is reserved for internal failures; the token table is in
    /// memory, so none can happen today).
    pub status: u16,
    pub reason: String,
}

impl AuthFailure {
    fn denied(reason: impl Into<String>) -> Self {
        AuthFailure {
            status: 401,
            reason: reason.into(),
        }
    }
}

/// Decides who the caller is. `header` is the raw Authorization header.
pub async fn authenticate(
    app: &App,
    peer: &Peer,
    header: Option<&[u8]>,
) -> Result<Caller, AuthFailure> {
    let header = match (header, peer) {
        (None, Peer::Unix { uid: 0, .. }) => return Ok(Caller::LocalRoot { uid: 0 }),
        (None, Peer::Unix { uid, .. }) => {
            return Err(AuthFailure::denied(format!(
                "Access denied: local user uid {uid} is not root; send “Authorization: whm root:TOKEN”."
            )))
        }
        (None, Peer::Tcp { .. }) => {
            return Err(AuthFailure::denied(
                "Access denied: send the header “Authorization: whm root:TOKEN”.",
            ))
        }
        (Some(h), _) => h,
    };
    let (user, token) = parse_header(header)?;
    if user != "root" {
        return Err(AuthFailure::denied(format!(
            "Access denied: only root API tokens are supported, not user “{}”.",
            printable(user)
        )));
    }
    if !well_formed_token(token) {
        return Err(AuthFailure::denied(
            "Access denied: an API token is 32 characters of A-Z and 0-9.",
        ));
    }
    let presented = hash_token(token);
    // From the in-memory token table (see store::token_table): no SQLite
    // round trip per request.
    let found = app.store.token_by_hash(&presented);
    // The lookup is by hash; still compare in constant time so nothing
    // about the stored value leaks through timing.
    let entry = match found {
        Some(entry) if bool::from(entry.hash[..].ct_eq(&presented[..])) => entry,
        _ => {
            return Err(AuthFailure::denied(
                "Access denied: the API token is not valid (unknown or revoked).",
            ))
        }
    };
    let rec: &TokenRecord = &entry.record;
    if rec.owner != user {
        return Err(AuthFailure::denied(
            "Access denied: the API token is not valid (unknown or revoked).",
        ));
    }
    let now = app.clock.now();
    if rec.is_expired(now) {
        return Err(AuthFailure::denied(format!(
            "Access denied: the API token “{}” has expired.",
            rec.name
        )));
    }
    let remote = peer.ip();
    if let Some(list) = &rec.whitelist_ips {
        let from = remote.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let allowed = match remote {
            Some(ip) => list.iter().any(|c| c.contains(ip)),
            None => list.iter().any(|c| {
                c.contains(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    || c.contains(IpAddr::V6(Ipv6Addr::LOCALHOST))
            }),
        };
        if !allowed {
            return Err(AuthFailure::denied(format!(
                "Access denied: the API token “{}” may not be used from {from}.",
                rec.name
            )));
        }
    }
    Ok(Caller::Token {
        user: user.to_string(),
        name: rec.name.clone(),
        acls: rec.acls.clone(),
        remote,
    })
}

/// Splits `whm USER:TOKEN` (scheme case-insensitive, as HTTP schemes are).
fn parse_header(raw: &[u8]) -> Result<(&str, &str), AuthFailure> {
    let malformed = || {
        AuthFailure::denied(
            "Access denied: malformed Authorization header; expected “whm root:TOKEN”.",
        )
    };
    let text = std::str::from_utf8(raw).map_err(|_| malformed())?.trim();
    let (scheme, rest) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("whm") {
        return Err(malformed());
    }
    let (user, token) = rest.trim().split_once(':').ok_or_else(malformed)?;
    if user.is_empty() || token.is_empty() {
        return Err(malformed());
    }
    Ok((user, token))
}

/// Whom failures are counted against: an address (IPv6 by /64, since one
/// host usually owns a whole /64) or a local uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Ip(IpAddr),
    Uid(u32),
}

impl LimitKey {
    pub fn for_peer(peer: &Peer) -> LimitKey {
        match (peer, peer.ip()) {
            (_, Some(IpAddr::V6(v6))) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                LimitKey::Ip(IpAddr::V6(Ipv6Addr::from(bits)))
            }
            (_, Some(ip)) => LimitKey::Ip(ip),
            (Peer::Unix { uid, .. }, None) => LimitKey::Uid(*uid),
            (Peer::Tcp { addr }, None) => LimitKey::Ip(addr.ip()),
        }
    }
}

/// Most addresses tracked at once, so a flood of sources cannot grow memory
/// without bound; the oldest windows are dropped first.
pub const MAX_TRACKED: usize = 4096;

/// First imposed delay; it doubles with every further failure.
const BASE_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Counts authentication failures per [`LimitKey`] within a window.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    windows: Mutex<HashMap<LimitKey, Window>>,
}

/// What [`FailureLimiter::record`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalty {
    /// Failures from this key in the current window, this one included.
    pub failures: u32,
    /// How long to hold the answer back.
    pub delay: Duration,
    /// Whether this failure should be audited: the first of a window and
    /// the one where slowing down starts (so a flood writes two records,
    /// not thousands).
    pub audit: bool,
}

impl FailureLimiter {
    pub fn record(&self, key: LimitKey, now: Instant, cfg: &AuthConfig) -> Penalty {
        let window = Duration::from_secs(cfg.failure_window_secs);
        let mut map = match self.windows.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            map.retain(|_, w| now.saturating_duration_since(w.start) < window);
            if map.len() >= MAX_TRACKED {
                if let Some(oldest) = map.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let w = map.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.start) >= window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        let failures = w.failures;
        let threshold = cfg.failures_before_delay;
        let delay = if failures >= threshold.max(1) {
            let steps = (failures - threshold.max(1)).min(20);
            (BASE_DELAY * (1u32 << steps)).min(Duration::from_millis(cfg.max_delay_ms))
        } else {
            Duration::ZERO
        };
        Penalty {
            failures,
            delay,
            audit: failures == 1 || failures == threshold,
        }
    }

    pub fn tracked(&self) -> usize {
        match self.windows.lock() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_uppercase_alphanumerics_and_differ() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert!(well_formed_token(&a), "{a}");
        assert_ne!(a, b);
        assert!(!well_formed_token("abc"));
        assert!(!well_formed_token(&"a".repeat(32)));
    }

    #[test]
    fn header_parsing() {
        assert_eq!(parse_header(b"whm root:ABC").unwrap(), ("root", "ABC"));
        assert_eq!(parse_header(b"WHM  root:ABC ").unwrap(), ("root", "ABC"));
        for bad in [
            &b"Basic cm9vdDp4"[..],
            b"whm rootABC",
            b"whm",
            b"whm :ABC",
            b"whm root:",
            b"whm \xff:x",
        ] {
            let e = parse_header(bad).unwrap_err();
            assert_eq!(e.status, 401);
        }
    }

    #[test]
    fn failures_are_slowed_then_capped_and_windows_reset() {
        let cfg = AuthConfig {
            failures_before_delay: 3,
            failure_window_secs: 60,
            max_delay_ms: 1000,
        };
        let l = FailureLimiter::default();
        let k = LimitKey::Ip("192.0.2.1".parse().unwrap());
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|_| l.record(k, t0, &cfg).delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![0, 0, 250, 500, 1000, 1000, 1000, 1000]);
        let p = l.record(k, t0 + Duration::from_secs(61), &cfg);
        assert_eq!((p.failures, p.delay, p.audit), (1, Duration::ZERO, true));
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let cfg = AuthConfig::default();
        let l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.record(
                LimitKey::Ip(ip),
                t0 + Duration::from_millis(u64::from(i)),
                &cfg,
            );
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
    }

    #[test]
    fn ipv6_is_keyed_by_prefix() {
        let a = Peer::Tcp {
            addr: "[2001:db8::1]:5".parse().unwrap(),
        };
        let b = Peer::Tcp {
            addr: "[2001:db8::2]:6".parse().unwrap(),
        };
        assert_eq!(LimitKey::for_peer(&a), LimitKey::for_peer(&b));
        let m = Peer::Tcp {
            addr: "[::ffff:192.0.2.1]:5".parse().unwrap(),
        };
        assert_eq!(
            LimitKey::for_peer(&m),
            LimitKey::Ip("192.0.2.1".parse().unwrap())
        );
    }
}
