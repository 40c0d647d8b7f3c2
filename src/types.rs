//! Validated newtypes for everything that arrives from outside.
//!
//! A value of one of these types has passed its checks; code that holds one
//! never re-validates. Every constructor returns a [`InputError`] whose text
//! is shown to the admin as the API `reason`, so it says what to fix.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why a piece of input was refused. The message is for a human.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    pub fn new(msg: impl Into<String>) -> Self {
        InputError(msg.into())
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses a positive integer given as `min..=max` word characters, with the
/// cPanel rule that leading zeros are stripped.
fn parse_positive_id(
    field: &str,
    raw: &str,
    min_len: usize,
    max_len: usize,
) -> Result<u64, InputError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(InputError::new(format!("The “{field}” argument is empty.")));
    }
    if s.len() < min_len || s.len() > max_len || !s.chars().all(is_word_char) {
        return Err(InputError::new(format!(
            "The “{field}” argument must be {min_len} to {max_len} word characters; got “{}”.",
            printable(s)
        )));
    }
    if !s.chars().all(|c| c.is_ascii_digit()) {
        return Err(InputError::new(format!(
            "The “{field}” argument must be a positive integer; got “{}”.",
            printable(s)
        )));
    }
    let digits = s.trim_start_matches('0');
    let value: u64 = digits.parse().map_err(|_| {
        InputError::new(format!(
            "The “{field}” argument is out of range; got “{}”.",
            printable(s)
        ))
    })?;
    if value == 0 || value > i64::MAX as u64 {
        return Err(InputError::new(format!(
            "The “{field}” argument must be a positive integer; got “{}”.",
            printable(s)
        )));
    }
    Ok(value)
}

/// Whether `c` must not reach a terminal or a reader as itself: control
/// characters, Unicode format characters (general category Cf: bidi
/// overrides such as U+202E, zero-width characters, the BOM, tags) and the
/// line and paragraph separators. They can reorder or hide what an auditor
/// reads.
pub fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}')
}

/// Writes `c` escaped (`\n`, `\u{202e}`) when it is hidden, else as is.
pub fn push_visible(out: &mut String, c: char) {
    if is_hidden_char(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// Renders untrusted text safely for a reason string or a log line.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(80) {
        push_visible(&mut out, c);
    }
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// A support ticket number (reference §3: 3-64 word characters, leading
/// zeros stripped, in practice a positive integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketId(u64);

impl TicketId {
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        parse_positive_id("ticket_id", raw, 3, 64).map(TicketId)
    }
    pub fn from_stored(v: i64) -> Result<Self, InputError> {
        u64::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .map(TicketId)
            .ok_or_else(|| InputError::new(format!("stored ticket_id {v} is not positive")))
    }
    pub fn get(self) -> u64 {
        self.0
    }
    /// SQLite integers are signed; parse() keeps values within i64.
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A server's number within a ticket (reference §3: 1-64 word characters,
/// in practice a positive integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerNum(u64);

impl ServerNum {
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        parse_positive_id("server_num", raw, 1, 64).map(ServerNum)
    }
    pub fn from_stored(v: i64) -> Result<Self, InputError> {
        u64::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .map(ServerNum)
            .ok_or_else(|| InputError::new(format!("stored server_num {v} is not positive")))
    }
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }
}

impl fmt::Display for ServerNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Linux user name that is safe to pass to useradd/userdel and to use as a
/// path component: 1-32 characters of `[A-Za-z0-9_.-]`, not starting with
/// `-` or `.`, optionally ending in `$` (Samba machine accounts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        let s = raw.trim();
        let body = s.strip_suffix('$').unwrap_or(s);
        let ok = !body.is_empty()
            && s.len() <= 32
            && !body.starts_with('-')
            && !body.starts_with('.')
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(InputError::new(format!(
                "“{}” is not a valid Linux user name (1-32 characters of letters, digits, “_”, “.” and “-”, not starting with “-” or “.”).",
                printable(s)
            )));
        }
        Ok(Username(s.to_string()))
    }
    pub fn root() -> Self {
        Username("root".to_string())
    }
    /// The temporary wheel user for a ticket (reference §4.2).
    pub fn temporary_for(ticket: TicketId) -> Self {
        Username(format!("cp{ticket}.ssh"))
    }
    /// True when the name has the shape of one of our temporary users.
    pub fn temporary_ticket(&self) -> Option<TicketId> {
        let digits = self.0.strip_prefix("cp")?.strip_suffix(".ssh")?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok().filter(|v| *v > 0).map(TicketId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_root(&self) -> bool {
        self.0 == "root"
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Username {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Username::parse(&s)
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

/// An API token's name (reference §2: at most 50 of `[A-Za-z0-9_-]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        let s = raw.trim();
        if s.is_empty()
            || s.len() > 50
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(InputError::new(format!(
                "“{}” is not a valid token name (1-50 characters of letters, digits, “_” and “-”).",
                printable(s)
            )));
        }
        Ok(TokenName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TokenName {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TokenName::parse(&s)
    }
}

impl From<TokenName> for String {
    fn from(u: TokenName) -> String {
        u.0
    }
}

/// An IPv4/IPv6 address or CIDR range, normalised (a bare address becomes
/// /32 or /128; host bits must be zero). Used for token whitelists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        let s = raw.trim();
        let net = if s.contains('/') {
            let net = IpNet::from_str(s).map_err(|_| {
                InputError::new(format!(
                    "“{}” is not an IPv4/IPv6 address or CIDR range.",
                    printable(s)
                ))
            })?;
            if net.trunc() != net {
                return Err(InputError::new(format!(
                    "“{}” has host bits set; did you mean “{}”?",
                    printable(s),
                    net.trunc()
                )));
            }
            unmap(net)
        } else {
            let ip = IpAddr::from_str(s).map_err(|_| {
                InputError::new(format!(
                    "“{}” is not an IPv4/IPv6 address or CIDR range.",
                    printable(s)
                ))
            })?;
            IpNet::from(canonical_ip(ip))
        };
        Ok(Cidr(net))
    }
    pub fn net(&self) -> IpNet {
        self.0
    }
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical_ip(ip))
    }
    pub fn is_single_host(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }
    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }
}

/// An IPv4-mapped IPv6 range (`::ffff:a.b.c.d/N`, N >= 96) as the IPv4
/// range it is: one spelling per range, so width rules, whitelists and the
/// firewall (which lists such rules as IPv4) all see the same thing.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// The first address of the IPv4-mapped block `::ffff:0:0/96`: after
/// [`unmap`], an IPv6 range containing it contains the whole block.
const MAPPED_START: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0));

/// Maps IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, as a dual-stack socket
/// reports them) to plain IPv4 so whitelists match either form.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single_host() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Cidr::parse(&s)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// A support source address or range that may be opened to SSH: a [`Cidr`]
/// that is not so wide it would open the host to everyone, and not an
/// unspecified, multicast or broadcast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SupportIp(Cidr);

/// The narrowest ranges we accept for support access: anything wider is
/// almost certainly a mistake (0.0.0.0/0 opens the host to the internet).
pub const MIN_SUPPORT_PREFIX_V4: u8 = 24;
pub const MIN_SUPPORT_PREFIX_V6: u8 = 48;

impl SupportIp {
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        let cidr = Cidr::parse(raw)?;
        let net = cidr.net();
        let min = if cidr.is_ipv4() {
            MIN_SUPPORT_PREFIX_V4
        } else {
            MIN_SUPPORT_PREFIX_V6
        };
        if net.prefix_len() < min {
            return Err(InputError::new(format!(
                "“{cidr}” is too wide to open to support: ranges must be /{min} or narrower."
            )));
        }
        // An IPv6 range that still covers IPv4-mapped space after
        // normalisation (e.g. `::/80`) would open IPv4 addresses through a
        // rule no IPv4 tool shows.
        if !cidr.is_ipv4() && net.contains(&MAPPED_START) {
            return Err(InputError::new(format!(
                "“{cidr}” covers the IPv4-mapped range ::ffff:0:0/96; give the IPv4 addresses instead."
            )));
        }
        let addr = net.addr();
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(InputError::new(format!(
                "“{cidr}” cannot be a support address (unspecified or multicast)."
            )));
        }
        if let IpAddr::V4(v4) = addr {
            if v4.is_broadcast() {
                return Err(InputError::new(format!(
                    "“{cidr}” cannot be a support address (broadcast)."
                )));
            }
        }
        Ok(SupportIp(cidr))
    }
    pub fn cidr(&self) -> Cidr {
        self.0
    }
    pub fn is_ipv4(&self) -> bool {
        self.0.is_ipv4()
    }
}

/// Most support addresses or ranges one grant (or the configured default
/// list) may open: each costs firewall rules on every backend.
pub const MAX_SUPPORT_IPS: usize = 16;
/// Most IPv4 addresses one grant may open in total (four /24s).
pub const MAX_SUPPORT_V4_ADDRESSES: u64 = 4 * 256;
/// Most IPv6 space one grant may open in total, in /64 networks (four
/// /48s).
pub const MAX_SUPPORT_V6_NETS: u128 = 4 * (1 << 16);

/// Checks a grant's list of support addresses against the caps above, so
/// one grant cannot make the firewall work for minutes (nor open a
/// continent through many narrow ranges).
pub fn check_support_ips(ips: &[SupportIp]) -> Result<(), InputError> {
    if ips.len() > MAX_SUPPORT_IPS {
        return Err(InputError::new(format!(
            "Too many support addresses: {} given, at most {MAX_SUPPORT_IPS} per grant.",
            ips.len()
        )));
    }
    let (mut v4, mut v6) = (0u64, 0u128);
    for ip in ips {
        match ip.cidr().net() {
            IpNet::V4(n) => v4 += 1u64 << (32 - n.prefix_len()),
            IpNet::V6(n) => v6 += 1u128 << 64u8.saturating_sub(n.prefix_len()),
        }
    }
    if v4 > MAX_SUPPORT_V4_ADDRESSES {
        return Err(InputError::new(format!(
            "The support addresses cover {v4} IPv4 addresses; at most {MAX_SUPPORT_V4_ADDRESSES} (four /24s) per grant."
        )));
    }
    if v6 > MAX_SUPPORT_V6_NETS {
        return Err(InputError::new(format!(
            "The support addresses cover {v6} IPv6 /64 networks; at most {MAX_SUPPORT_V6_NETS} (four /48s) per grant."
        )));
    }
    Ok(())
}

impl fmt::Display for SupportIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for SupportIp {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SupportIp::parse(&s)
    }
}

impl From<SupportIp> for String {
    fn from(c: SupportIp) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_ids() {
        assert_eq!(TicketId::parse(" 12345 ").map(|t| t.get()), Ok(12345));
        assert_eq!(TicketId::parse("000123").map(|t| t.get()), Ok(123));
        assert!(TicketId::parse("12").is_err(), "too short");
        assert!(TicketId::parse("000").is_err(), "zero");
        assert!(TicketId::parse("12a45").is_err());
        assert!(TicketId::parse("1;rm -rf").is_err());
        assert!(TicketId::parse("99999999999999999999").is_err());
        assert!(TicketId::parse("").is_err());
    }

    #[test]
    fn server_nums() {
        assert_eq!(ServerNum::parse("1").map(|t| t.get()), Ok(1));
        assert!(ServerNum::parse("0").is_err());
        assert!(ServerNum::parse("-1").is_err());
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("root").is_ok());
        assert!(Username::parse("cp123.ssh").is_ok());
        assert!(Username::parse("machine$").is_ok());
        for bad in [
            "",
            "-rf",
            ".hidden",
            "a/b",
            "a b",
            "x\ny",
            "..",
            &"a".repeat(33),
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        let t = TicketId::parse("4242").unwrap();
        let u = Username::temporary_for(t);
        assert_eq!(u.as_str(), "cp4242.ssh");
        assert_eq!(u.temporary_ticket(), Some(t));
        assert_eq!(Username::root().temporary_ticket(), None);
    }

    #[test]
    fn token_names() {
        assert!(TokenName::parse("deploy-bot_1").is_ok());
        assert!(TokenName::parse(&"a".repeat(51)).is_err());
        assert!(TokenName::parse("a.b").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(Cidr::parse("10.0.0.1").unwrap().to_string(), "10.0.0.1");
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(Cidr::parse("10.0.0.1/8").is_err(), "host bits");
        assert!(Cidr::parse("2001:db8::/32").is_ok());
        assert!(Cidr::parse("::ffff:10.1.2.3").unwrap().is_ipv4());
        assert!(Cidr::parse("nonsense").is_err());
        let c = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(c.contains("192.0.2.9".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!c.contains("192.0.3.9".parse().unwrap()));
    }

    #[test]
    fn support_ips() {
        assert!(SupportIp::parse("203.0.113.5").is_ok());
        assert!(SupportIp::parse("203.0.113.0/24").is_ok());
        assert!(SupportIp::parse("127.0.0.1").is_ok());
        assert!(SupportIp::parse("0.0.0.0/0").is_err());
        assert!(SupportIp::parse("10.0.0.0/8").is_err());
        assert!(SupportIp::parse("::/0").is_err());
        assert!(SupportIp::parse("0.0.0.0").is_err());
        assert!(SupportIp::parse("255.255.255.255").is_err());
        assert!(SupportIp::parse("224.0.0.1").is_err());
        assert!(SupportIp::parse("2001:db8::/64").is_ok());
    }

    #[test]
    fn mapped_ranges_are_ipv4_or_refused() {
        let m = SupportIp::parse("::ffff:203.0.113.10/128").unwrap();
        assert!(m.is_ipv4());
        assert_eq!(m.to_string(), "203.0.113.10");
        assert_eq!(
            SupportIp::parse("::ffff:203.0.113.0/120")
                .unwrap()
                .to_string(),
            "203.0.113.0/24"
        );
        // All of IPv4 spelled as IPv6 meets the IPv4 width rule.
        assert!(SupportIp::parse("::ffff:0.0.0.0/96").is_err());
        assert!(SupportIp::parse("::ffff:10.0.0.0/104").is_err());
        // IPv6 ranges that contain the mapped block.
        assert!(SupportIp::parse("::/80").is_err());
        assert!(SupportIp::parse("::/64").is_err());
        assert!(Cidr::parse("::ffff:192.0.2.0/120")
            .unwrap()
            .contains("192.0.2.5".parse().unwrap()));
    }

    #[test]
    fn support_lists_are_capped() {
        let ips = |n: u32, prefix: u8| -> Vec<SupportIp> {
            (0..n)
                .map(|i| {
                    SupportIp::parse(&format!("10.{}.{}.0/{prefix}", i / 256, i % 256)).unwrap()
                })
                .collect()
        };
        assert!(check_support_ips(&ips(4, 24)).is_ok());
        assert!(check_support_ips(&ips(5, 24)).is_err(), "five /24s");
        assert!(check_support_ips(&ips(512, 24)).is_err());
        assert!(check_support_ips(&ips(16, 28)).is_ok());
        assert!(check_support_ips(&ips(17, 32)).is_err(), "too many entries");
        let v6: Vec<SupportIp> = (0..5)
            .map(|i| SupportIp::parse(&format!("2001:db8:{i}::/48")).unwrap())
            .collect();
        assert!(check_support_ips(&v6[..4]).is_ok());
        assert!(check_support_ips(&v6).is_err());
    }

    #[test]
    fn hidden_characters_are_escaped() {
        assert_eq!(
            printable("a\u{202E}b\u{200B}c\n"),
            "a\\u{202e}b\\u{200b}c\\n"
        );
        assert_eq!(printable("ticket ✓"), "ticket ✓");
    }
}
