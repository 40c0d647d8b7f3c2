//! OpenSSH's pattern semantics (match.c / addrmatch.c), reimplemented so we
//! can predict what `AllowUsers`/`DenyUsers`/`AllowGroups`/`DenyGroups` will
//! do to a login. `sshd -T -C` evaluates `Match` blocks but not these lists.

use std::net::IpAddr;

use ipnet::IpNet;

/// `match_pattern()`: `*` matches any run, `?` one character; nothing else
/// is special (in particular `!` is literal here).
pub fn glob(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative wildcard match with single-star backtracking.
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Outcome of matching against a comma-separated pattern list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMatch {
    NoMatch,
    Match,
    /// A `!pattern` matched: sshd treats this as a definite "no".
    Negated,
    /// sshd rejects the pattern (e.g. a CIDR with host bits set) and would
    /// refuse to evaluate it.
    Invalid,
}

/// `match_pattern_list()` with lower-casing (as for host names): any negated
/// match wins, else any positive match.
pub fn pattern_list(s: &str, list: &str) -> ListMatch {
    let s = s.to_ascii_lowercase();
    let mut got = ListMatch::NoMatch;
    for entry in list.split(',') {
        let (neg, pat) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        if glob(&s, &pat.to_ascii_lowercase()) {
            if neg {
                return ListMatch::Negated;
            }
            got = ListMatch::Match;
        }
    }
    got
}

/// `addr_match_list()`: entries are CIDR blocks / addresses (preferred) or
/// wildcard patterns over the address text, each optionally `!`-negated.
pub fn addr_list(addr: IpAddr, list: &str) -> ListMatch {
    let text = addr.to_string();
    let mut got = ListMatch::NoMatch;
    for entry in list.split(',') {
        let (neg, pat) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        if pat.is_empty() {
            return ListMatch::Invalid;
        }
        let hit = match parse_cidr(pat) {
            CidrParse::Net(net) => net.contains(&addr),
            CidrParse::Inconsistent => return ListMatch::Invalid,
            CidrParse::NotCidr => glob(&text, pat),
        };
        if hit {
            if neg {
                return ListMatch::Negated;
            }
            got = ListMatch::Match;
        }
    }
    got
}

enum CidrParse {
    Net(IpNet),
    Inconsistent,
    NotCidr,
}

fn parse_cidr(s: &str) -> CidrParse {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return CidrParse::Net(IpNet::from(ip));
    }
    match s.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => CidrParse::Net(net),
        // sshd: "inconsistent mask length for match network".
        Ok(_) => CidrParse::Inconsistent,
        Err(_) => CidrParse::NotCidr,
    }
}

/// `match_host_and_ip()` with no reverse DNS: the host name sshd compares
/// is the address text (what it uses with `UseDNS no`).
pub fn host_and_ip(addr: IpAddr, list: &str) -> ListMatch {
    let mip = addr_list(addr, list);
    match mip {
        ListMatch::Invalid => return ListMatch::Invalid,
        ListMatch::Negated => return ListMatch::NoMatch,
        _ => {}
    }
    let mhost = pattern_list(&addr.to_string(), list);
    if mhost == ListMatch::Negated {
        return ListMatch::NoMatch;
    }
    if mhost == ListMatch::NoMatch && mip == ListMatch::NoMatch {
        return ListMatch::NoMatch;
    }
    ListMatch::Match
}

/// `match_user()`: `user` or `user@hostlist`; the user part is a plain glob.
pub fn user_entry(user: &str, addr: IpAddr, pattern: &str) -> ListMatch {
    match pattern.rfind('@') {
        None => bool_match(glob(user, pattern)),
        Some(at) => {
            let (upat, hosts) = (&pattern[..at], &pattern[at + 1..]);
            if !glob(user, upat) {
                return ListMatch::NoMatch;
            }
            host_and_ip(addr, hosts)
        }
    }
}

fn bool_match(b: bool) -> ListMatch {
    if b {
        ListMatch::Match
    } else {
        ListMatch::NoMatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob("cp123.ssh", "cp*.ssh"));
        assert!(glob("cp123.ssh", "cp???.ssh"));
        assert!(!glob("cp1234.ssh", "cp???.ssh"));
        assert!(glob("anything", "*"));
        assert!(glob("", "*"));
        assert!(!glob("root", "roo"));
        assert!(glob("aXbXc", "a*b*c"));
        assert!(!glob("aXbXd", "a*b*c"));
        assert!(glob("a*b", "a*b"));
        assert!(!glob("Root", "root"), "user names are case-sensitive");
        assert!(glob("!x", "!x"), "! is literal in a plain glob");
    }

    #[test]
    fn address_lists() {
        let a = ip("203.0.113.7");
        assert_eq!(addr_list(a, "203.0.113.0/24"), ListMatch::Match);
        assert_eq!(addr_list(a, "203.0.113.7"), ListMatch::Match);
        assert_eq!(addr_list(a, "203.0.113.*"), ListMatch::Match);
        assert_eq!(addr_list(a, "203.0.113.?"), ListMatch::Match);
        assert_eq!(addr_list(a, "10.0.0.0/8"), ListMatch::NoMatch);
        assert_eq!(
            addr_list(a, "203.0.113.0/24,!203.0.113.7"),
            ListMatch::Negated
        );
        assert_eq!(addr_list(a, "203.0.113.1/24"), ListMatch::Invalid);
        assert_eq!(
            addr_list(ip("2001:db8::1"), "2001:db8::/32"),
            ListMatch::Match
        );
    }

    #[test]
    fn user_entries() {
        let a = ip("203.0.113.7");
        assert_eq!(user_entry("root", a, "root"), ListMatch::Match);
        assert_eq!(
            user_entry("root", a, "root@203.0.113.0/24"),
            ListMatch::Match
        );
        assert_eq!(
            user_entry("root", a, "root@192.0.2.0/24"),
            ListMatch::NoMatch
        );
        assert_eq!(user_entry("root", a, "*@203.0.113.*"), ListMatch::Match);
        assert_eq!(
            user_entry("root", a, "root@*,!203.0.113.7"),
            ListMatch::NoMatch
        );
        assert_eq!(user_entry("alice", a, "root@*"), ListMatch::NoMatch);
        assert_eq!(
            user_entry("root", a, "root@203.0.113.9/24"),
            ListMatch::Invalid
        );
    }
}
