//! tcp_wrappers: a tagged `sshd : <ips> : ALLOW` rule at the top of
//! hosts.allow (first match wins, so it precedes any admin DENY). Only our
//! two lines are ever rewritten; every other byte is kept as it was.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{atomic, parse_net, push_change, Backend, ChangeAction, FwError, Observed};
use super::{WhitelistChange, HOSTS_STATUS};

/// The comment line that precedes our rule.
pub const MARKER: &str =
    "# supportauth: cPanel-support-access (managed by supportauth; do not edit the next line)";

pub struct HostsAllow {
    pub file: atomic::HostFile,
}

/// An address in tcp_wrappers syntax: IPv6 in brackets, IPv4 prefixes as a
/// netmask (tcp_wrappers does not understand /24 for IPv4).
pub fn wrappers_addr(n: &IpNet) -> String {
    match n {
        IpNet::V4(v4) if v4.prefix_len() == 32 => v4.addr().to_string(),
        IpNet::V4(v4) => format!("{}/{}", v4.network(), v4.netmask()),
        IpNet::V6(v6) if v6.prefix_len() == 128 => format!("[{}]", v6.addr()),
        IpNet::V6(v6) => format!("[{}]/{}", v6.network(), v6.prefix_len()),
    }
}

fn parse_wrappers_addr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        return match tail.strip_prefix('/') {
            Some(len) => parse_net(&format!("{addr}/{len}")),
            None if tail.is_empty() => parse_net(addr),
            None => None,
        };
    }
    match s.split_once('/') {
        Some((a, mask)) if mask.contains('.') => {
            let m: std::net::Ipv4Addr = mask.parse().ok()?;
            let len = u32::from(m).leading_ones();
            if u32::from(m).checked_shl(len).unwrap_or(0) != 0 {
                return None;
            }
            parse_net(&format!("{a}/{len}"))
        }
        _ => parse_net(s),
    }
}

/// Splits a hosts.allow line on the ':' that separate its fields, ignoring
/// those inside `[...]` (IPv6 addresses).
fn fields(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in line.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                out.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&line[start..]);
    out
}

/// Our rule line for `want`.
pub fn render_rule(want: &BTreeSet<IpNet>) -> String {
    let addrs: Vec<String> = want.iter().map(wrappers_addr).collect();
    format!("sshd : {} : ALLOW", addrs.join(", "))
}

/// Lines with their terminators, so unchanged ones are copied byte for byte.
fn lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|b| *b == b'\n').collect()
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn is_our_rule(line: &[u8]) -> bool {
    trim_eol(line).starts_with(b"sshd : ")
}

/// Splits the file into our addresses and the admin's lines (kept verbatim).
pub fn parse(text: &[u8]) -> (BTreeSet<IpNet>, Vec<&[u8]>) {
    let mut ours = BTreeSet::new();
    let mut rest = Vec::new();
    let all = lines(text);
    let mut i = 0;
    while i < all.len() {
        if trim_eol(all[i]) == MARKER.as_bytes() {
            if let Some(next) = all.get(i + 1).filter(|l| is_our_rule(l)) {
                if let Ok(s) = std::str::from_utf8(trim_eol(next)) {
                    let addrs = fields(s).get(1).copied().unwrap_or("");
                    ours.extend(addrs.split(',').filter_map(parse_wrappers_addr));
                }
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        rest.push(all[i]);
        i += 1;
    }
    (ours, rest)
}

/// Addresses the admin's own lines allow for sshd (or ALL), to report as
/// pre-existing. A best effort: only plain address lists are understood.
fn admin_addrs(rest: &[&[u8]]) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for line in rest {
        let Ok(s) = std::str::from_utf8(trim_eol(line)) else {
            continue;
        };
        let s = s.trim();
        if s.starts_with('#') {
            continue;
        }
        let parts = fields(s);
        let (Some(daemons), Some(clients)) = (parts.first(), parts.get(1)) else {
            continue;
        };
        let tail = parts[2..].join(":").to_ascii_uppercase();
        if tail.contains("DENY") {
            continue;
        }
        let d = daemons.trim();
        if d.split([',', ' ']).any(|x| x == "sshd" || x == "ALL") {
            out.extend(clients.split([',', ' ']).filter_map(parse_wrappers_addr));
        }
    }
    out
}

/// The new file: our two lines first (when `want` is not empty), then the
/// admin's lines untouched.
pub fn render(text: &[u8], want: &BTreeSet<IpNet>) -> Vec<u8> {
    let (_, rest) = parse(text);
    let mut out = Vec::with_capacity(text.len() + 128);
    if !want.is_empty() {
        out.extend_from_slice(MARKER.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(render_rule(want).as_bytes());
        out.push(b'\n');
    }
    for l in rest {
        out.extend_from_slice(l);
    }
    out
}

impl HostsAllow {
    fn converge(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        let mut before = BTreeSet::new();
        let mut admins = BTreeSet::new();
        self.file.replace_with(|old| {
            let old = old.unwrap_or(b"");
            let (ours, rest) = parse(old);
            before = ours;
            admins = admin_addrs(&rest);
            let new = render(old, want);
            if new == old || (old.is_empty() && want.is_empty()) {
                None
            } else {
                Some(new)
            }
        })?;
        for n in want.difference(&before) {
            push_change(changes, self.name(), ChangeAction::Added, n);
            if admins.contains(n) {
                push_change(changes, self.name(), ChangeAction::Preexisting, n);
            }
        }
        for n in before.difference(want) {
            push_change(changes, self.name(), ChangeAction::Removed, n);
        }
        Ok(())
    }
}

impl Backend for HostsAllow {
    fn name(&self) -> &'static str {
        "hosts_allow"
    }
    fn status_key(&self) -> &'static str {
        HOSTS_STATUS
    }
    fn ensure(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        self.converge(want, changes)
    }
    fn observe(&self) -> Result<Observed, FwError> {
        let text = self.file.read()?.unwrap_or_default();
        let (ours, rest) = parse(&text);
        // Our rule must be the very first line to win over the admin's.
        let first_ok =
            ours.is_empty() || lines(&text).first().map(|l| trim_eol(l)) == Some(MARKER.as_bytes());
        Ok(Observed {
            ours,
            admins: admin_addrs(&rest),
            plumbing_ok: first_ok,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<IpNet> {
        v.iter().map(|s| parse_net(s).unwrap()).collect()
    }

    #[test]
    fn wrappers_syntax() {
        let want = set(&[
            "192.0.2.1",
            "198.51.100.0/24",
            "2001:db8::1",
            "2001:db8:1::/64",
        ]);
        assert_eq!(
            render_rule(&want),
            "sshd : 192.0.2.1, 198.51.100.0/255.255.255.0, [2001:db8::1], [2001:db8:1::]/64 : ALLOW"
        );
        for n in &want {
            assert_eq!(parse_wrappers_addr(&wrappers_addr(n)), Some(*n));
        }
    }

    #[test]
    fn admin_bytes_preserved_and_rule_on_top() {
        let admin: &[u8] = b"# admin's file\r\nsshd: 203.0.113.7\n\xff odd bytes\nALL: LOCAL";
        let want = set(&["192.0.2.1"]);
        let new = render(admin, &want);
        let expect_head = format!("{MARKER}\nsshd : 192.0.2.1 : ALLOW\n");
        assert!(new.starts_with(expect_head.as_bytes()));
        assert_eq!(&new[expect_head.len()..], admin);
        // Idempotent and reversible.
        assert_eq!(render(&new, &want), new);
        assert_eq!(render(&new, &BTreeSet::new()), admin);
        let (ours, _) = parse(&new);
        assert_eq!(ours, want);
        let v6 = set(&["2001:db8::1", "2001:db8:1::/64", "192.0.2.0/24"]);
        assert_eq!(parse(&render(admin, &v6)).0, v6);
    }

    #[test]
    fn admin_addresses_are_seen_as_preexisting() {
        let (_, rest) =
            parse(b"sshd, vsftpd : 192.0.2.1, [2001:db8::1] : ALLOW\nsshd : 192.0.2.9 : DENY\n");
        assert_eq!(admin_addrs(&rest), set(&["192.0.2.1", "2001:db8::1"]));
    }
}
