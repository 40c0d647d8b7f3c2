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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::domain::caller::Caller;
use crate::limiter::LimitKey;
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

/// The one answer every authentication failure gets: a probe learns
/// nothing about whether a token exists, what it is called, whether it
/// expired or which addresses it allows. The detail goes to the audit
/// record and the daemon log ([`AuthFailure::reason`]).
pub const DENIED: &str = "Access denied: authentication failed. Send “Authorization: whm root:TOKEN” with a valid API token allowed from this address (or call over the Unix socket as root).";

/// Why a request was not authenticated. `reason` goes to the log and the
/// audit record, never to the client (it gets [`DENIED`]); it never
/// contains the token.
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

/// What the request carried in `Authorization`: nothing, one header, or
/// more than one (refused: which one counts would be a guess, and a proxy
/// and the daemon might guess differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthHeader<'a> {
    None,
    One(&'a [u8]),
    Several,
}

/// Decides who the caller is.
pub async fn authenticate(
    app: &App,
    peer: &Peer,
    header: AuthHeader<'_>,
) -> Result<Caller, AuthFailure> {
    let header = match header {
        AuthHeader::None => None,
        AuthHeader::One(h) => Some(h),
        AuthHeader::Several => {
            return Err(AuthFailure::denied("more than one Authorization header"))
        }
    };
    let header = match (header, peer) {
        (None, Peer::Unix { uid: 0, .. }) => return Ok(Caller::LocalRoot { uid: 0 }),
        (None, Peer::Unix { uid, .. }) => {
            return Err(AuthFailure::denied(format!(
                "local user uid {uid} is not root; send “Authorization: whm root:TOKEN”."
            )))
        }
        (None, Peer::Tcp { .. }) => {
            return Err(AuthFailure::denied(
                "send the header “Authorization: whm root:TOKEN”.",
            ))
        }
        (Some(h), _) => h,
    };
    let (user, token) = parse_header(header)?;
    if user != "root" {
        return Err(AuthFailure::denied(format!(
            "only root API tokens are supported, not user “{}”.",
            printable(user)
        )));
    }
    if !well_formed_token(token) {
        return Err(AuthFailure::denied(
            "an API token is 32 characters of A-Z and 0-9.",
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
                "the API token is not valid (unknown or revoked).",
            ))
        }
    };
    let rec: &TokenRecord = &entry.record;
    if rec.owner != user {
        return Err(AuthFailure::denied(
            "the API token is not valid (unknown or revoked).",
        ));
    }
    let now = app.clock.now();
    if rec.is_expired(now) {
        return Err(AuthFailure::denied(format!(
            "the API token “{}” has expired",
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
                "the API token “{}” may not be used from {from}",
                rec.name
            )));
        }
    }
    Ok(Caller::Token {
        user: user.to_string(),
        name: rec.name.clone(),
        acls: rec.acls.clone(),
        remote,
        limits: crate::domain::caller::TokenLimits {
            expires_at: rec.expires_at,
            whitelist: rec.whitelist_ips.clone(),
        },
    })
}

/// Splits `whm USER:TOKEN` (scheme case-insensitive, as HTTP schemes are).
fn parse_header(raw: &[u8]) -> Result<(&str, &str), AuthFailure> {
    let malformed =
        || AuthFailure::denied("malformed Authorization header; expected “whm root:TOKEN”.");
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

/// Whom a request's failures and connections count against.
impl LimitKey {
    pub fn for_peer(peer: &Peer) -> LimitKey {
        match (peer, peer.ip()) {
            (_, Some(ip)) if ip.is_loopback() => LimitKey::Loopback,
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
    #[test]
    fn all_of_loopback_is_one_source() {
        for a in [
            "127.0.0.1:1",
            "127.9.8.7:2",
            "[::1]:3",
            "[::ffff:127.3.3.3]:4",
        ] {
            let p = Peer::Tcp {
                addr: a.parse().unwrap(),
            };
            assert_eq!(LimitKey::for_peer(&p), LimitKey::Loopback, "{a}");
        }
    }
}
