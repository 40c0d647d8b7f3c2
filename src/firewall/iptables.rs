//! iptables / ip6tables: our own chain (`cPanel-support-access`) with
//! `-s IP -j ACCEPT` and `-d IP -j ACCEPT` per address, jumped to from
//! position 1 of INPUT and OUTPUT (all ports, as cPanel's own chain does:
//! see the README's Security model).
//!
//! Converging costs one read (`iptables -S`) and, when something differs,
//! one write per family: an `iptables-restore --noflush` batch that
//! declares our chain (which empties it), fills it with the wanted rules
//! and adds missing jumps, committed as one transaction. So support is
//! never locked out half-way and a grant costs one tool run per family,
//! not one per address.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{parse_net, push_change, Backend, ChangeAction, FwError, Observed};
use super::{WhitelistChange, CHAIN_STATUS};
use crate::system::exec;

/// One family's tool (iptables for IPv4, ip6tables for IPv6).
pub struct Family {
    pub tool: PathBuf,
    pub v6: bool,
}

pub struct Iptables {
    pub chain: String,
    pub families: Vec<Family>,
}

/// A rule in our chain, as `iptables -S <chain>` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChainRule {
    Src(IpNet),
    Dst(IpNet),
    /// Anything else (someone edited our chain): its `-S` arguments after
    /// `-A <chain>`, deleted on convergence.
    Other(Vec<String>),
}

impl ChainRule {
    /// Arguments after `-A/-D <chain>`.
    pub fn spec(&self) -> Vec<String> {
        match self {
            ChainRule::Src(n) => vec!["-s".into(), n.to_string(), "-j".into(), "ACCEPT".into()],
            ChainRule::Dst(n) => vec!["-d".into(), n.to_string(), "-j".into(), "ACCEPT".into()],
            ChainRule::Other(v) => v.clone(),
        }
    }
}

/// Parses `iptables -S <chain>`; None when a line is not understood.
pub fn parse_chain(chain: &str, text: &str) -> Vec<ChainRule> {
    let mut out = Vec::new();
    for line in text.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.len() < 2 || toks[0] != "-A" || toks[1] != chain {
            continue;
        }
        let rest = &toks[2..];
        let rule = match rest {
            ["-s", a, "-j", "ACCEPT"] => parse_net(a).map(ChainRule::Src),
            ["-d", a, "-j", "ACCEPT"] => parse_net(a).map(ChainRule::Dst),
            _ => None,
        };
        out.push(
            rule.unwrap_or_else(|| ChainRule::Other(rest.iter().map(|s| s.to_string()).collect())),
        );
    }
    out
}

/// How many `-A <builtin> -j <chain>` jumps `iptables -S <builtin>` shows.
pub fn count_jumps(builtin: &str, chain: &str, text: &str) -> usize {
    let want = format!("-A {builtin} -j {chain}");
    text.lines().filter(|l| l.trim() == want).count()
}

/// The rules our chain must hold for `want` (of one family).
pub fn desired_rules(want: &BTreeSet<IpNet>) -> BTreeSet<ChainRule> {
    want.iter()
        .flat_map(|n| [ChainRule::Src(*n), ChainRule::Dst(*n)])
        .collect()
}

/// Rules to append, then rules to delete.
pub fn diff(have: &[ChainRule], want: &BTreeSet<IpNet>) -> (Vec<ChainRule>, Vec<ChainRule>) {
    let desired = desired_rules(want);
    let have_set: BTreeSet<&ChainRule> = have.iter().collect();
    let add = desired
        .iter()
        .filter(|r| !have_set.contains(r))
        .cloned()
        .collect();
    let mut seen = BTreeSet::new();
    // Duplicates of a wanted rule go too (only the first copy stays).
    let del = have
        .iter()
        .filter(|r| !desired.contains(r) || !seen.insert((*r).clone()))
        .cloned()
        .collect();
    (add, del)
}

const BUILTINS: [&str; 2] = ["INPUT", "OUTPUT"];

impl Family {
    fn run(&self, args: &[&str]) -> Result<String, FwError> {
        let mut argv = vec!["-w", "5"];
        argv.extend_from_slice(args);
        Ok(exec::run(&self.tool, &argv, None)?.stdout)
    }

    /// Our chain's rules, or None when the chain does not exist. Read from
    /// the full `-S` listing: iptables-nft 1.8.9 answers `-S <missing chain>`
    /// with a misleading "incompatible" error instead of "No chain".
    fn list_chain(&self, chain: &str) -> Result<Option<Vec<ChainRule>>, FwError> {
        Ok(self.listing(chain)?.rules)
    }

    /// One `-S` read: our chain's rules and the jumps to it.
    fn listing(&self, chain: &str) -> Result<Listing, FwError> {
        let text = self.run(&["-S"])?;
        let declared = format!("-N {chain}");
        let rules = text
            .lines()
            .any(|l| l.trim() == declared)
            .then(|| parse_chain(chain, &text));
        let jumps = BUILTINS.map(|b| count_jumps(b, chain, &text));
        Ok(Listing { rules, jumps })
    }

    /// `iptables-restore` beside `iptables` (`ip6tables-restore` beside
    /// `ip6tables`, `iptables-nft-restore` beside `iptables-nft`).
    fn restore_tool(&self) -> PathBuf {
        let mut name = self.tool.file_name().unwrap_or_default().to_os_string();
        name.push("-restore");
        self.tool.with_file_name(name)
    }

    fn jumps(&self, builtin: &str, chain: &str) -> Result<usize, FwError> {
        Ok(count_jumps(builtin, chain, &self.run(&["-S", builtin])?))
    }

    fn of_family(&self, want: &BTreeSet<IpNet>) -> BTreeSet<IpNet> {
        want.iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == self.v6)
            .copied()
            .collect()
    }

    fn ensure(
        &self,
        chain: &str,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        let want = self.of_family(want);
        let listing = self.listing(chain)?;
        let have = listing.rules.clone().unwrap_or_default();
        let (add, del) = diff(&have, &want);
        let before: BTreeSet<IpNet> = have.iter().filter_map(src_of).collect();
        let jumps_missing: Vec<&str> = BUILTINS
            .iter()
            .zip(listing.jumps)
            .filter(|(_, n)| *n == 0)
            .map(|(b, _)| *b)
            .collect();
        if listing.rules.is_none()
            || !add.is_empty()
            || !del.is_empty()
            || !jumps_missing.is_empty()
        {
            let script = restore_script(chain, &want, &jumps_missing);
            exec::run(
                &self.restore_tool(),
                ["-w", "5", "--noflush"],
                Some(script.as_bytes()),
            )?;
        }
        for n in want.difference(&before) {
            push_change(changes, "iptables", ChangeAction::Added, n);
        }
        for n in before.difference(&want) {
            push_change(changes, "iptables", ChangeAction::Removed, n);
        }
        Ok(())
    }

    fn clear(&self, chain: &str, changes: &mut Vec<WhitelistChange>) -> Result<(), FwError> {
        let Some(have) = self.list_chain(chain)? else {
            return Ok(());
        };
        for b in BUILTINS {
            // Bounded: one delete per jump listed.
            for _ in 0..self.jumps(b, chain)? {
                self.run(&["-D", b, "-j", chain])?;
            }
        }
        self.run(&["-F", chain])?;
        self.run(&["-X", chain])?;
        let before: BTreeSet<IpNet> = have.iter().filter_map(src_of).collect();
        for n in &before {
            push_change(changes, "iptables", ChangeAction::Removed, n);
        }
        Ok(())
    }

    fn observe(&self, chain: &str, obs: &mut Observed) -> Result<(), FwError> {
        let listing = self.listing(chain)?;
        let Some(have) = listing.rules else {
            obs.plumbing_ok = false;
            return Ok(());
        };
        let srcs: BTreeSet<IpNet> = have.iter().filter_map(src_of).collect();
        let complete = desired_rules(&srcs).iter().all(|r| have.contains(r))
            && !have.iter().any(|r| matches!(r, ChainRule::Other(_)));
        if listing.jumps.contains(&0) {
            obs.plumbing_ok = false;
        }
        if !complete {
            obs.plumbing_ok = false;
        }
        obs.ours.extend(srcs);
        Ok(())
    }
}

/// What one `iptables -S` shows of ours.
#[derive(Debug, Clone, Default)]
struct Listing {
    /// None: our chain does not exist.
    rules: Option<Vec<ChainRule>>,
    /// Jumps to it from INPUT and OUTPUT.
    jumps: [usize; 2],
}

/// The `iptables-restore --noflush` batch that makes our chain hold exactly
/// the rules for `want` (declaring a chain empties it, in the same
/// transaction) and adds the jumps that are missing.
pub fn restore_script(chain: &str, want: &BTreeSet<IpNet>, jumps_missing: &[&str]) -> String {
    let mut s = format!("*filter\n:{chain} - [0:0]\n");
    for r in desired_rules(want) {
        s.push_str(&format!("-A {chain} {}\n", r.spec().join(" ")));
    }
    for b in jumps_missing {
        s.push_str(&format!("-I {b} 1 -j {chain}\n"));
    }
    s.push_str("COMMIT\n");
    s
}

fn src_of(r: &ChainRule) -> Option<IpNet> {
    match r {
        ChainRule::Src(n) => Some(*n),
        _ => None,
    }
}

impl Backend for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }
    fn status_key(&self) -> &'static str {
        CHAIN_STATUS
    }
    fn ensure(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        let v6_wanted = want.iter().any(|n| matches!(n, IpNet::V6(_)));
        if v6_wanted && !self.families.iter().any(|f| f.v6) {
            return Err(FwError::unexpected(
                "ip6tables",
                "IPv6 support addresses are configured but ip6tables is not available",
            ));
        }
        // Each family on its own: a failing ip6tables still lets IPv4 in.
        let mut first_err = None;
        for f in &self.families {
            if let Err(e) = f.ensure(&self.chain, want, changes) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
    fn clear(&self, changes: &mut Vec<WhitelistChange>) -> Result<(), FwError> {
        let mut first_err = None;
        for f in &self.families {
            if let Err(e) = f.clear(&self.chain, changes) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
    fn observe(&self) -> Result<Observed, FwError> {
        let mut obs = Observed {
            plumbing_ok: true,
            ..Observed::default()
        };
        for f in &self.families {
            f.observe(&self.chain, &mut obs)?;
        }
        Ok(obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "cPanel-support-access";

    fn n(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    #[test]
    fn parses_chain_listing() {
        let text = "-N cPanel-support-access\n-A cPanel-support-access -s 192.0.2.1/32 -j ACCEPT\n-A cPanel-support-access -d 192.0.2.1/32 -j ACCEPT\n-A cPanel-support-access -p tcp -j DROP\n";
        let r = parse_chain(CH, text);
        assert_eq!(
            r,
            vec![
                ChainRule::Src(n("192.0.2.1")),
                ChainRule::Dst(n("192.0.2.1")),
                ChainRule::Other(vec!["-p".into(), "tcp".into(), "-j".into(), "DROP".into()]),
            ]
        );
    }

    #[test]
    fn diff_adds_before_removing_and_drops_strays() {
        let have = parse_chain(
            CH,
            "-A cPanel-support-access -s 192.0.2.1/32 -j ACCEPT\n-A cPanel-support-access -d 192.0.2.1/32 -j ACCEPT\n-A cPanel-support-access -s 192.0.2.2/32 -j ACCEPT\n-A cPanel-support-access -s 192.0.2.2/32 -j ACCEPT\n",
        );
        let want: BTreeSet<IpNet> = [n("192.0.2.2"), n("198.51.100.0/24")].into();
        let (add, del) = diff(&have, &want);
        assert_eq!(
            add,
            vec![
                ChainRule::Src(n("192.0.2.2")),
                ChainRule::Src(n("198.51.100.0/24")),
                ChainRule::Dst(n("192.0.2.2")),
                ChainRule::Dst(n("198.51.100.0/24")),
            ]
            .into_iter()
            .filter(|r| *r != ChainRule::Src(n("192.0.2.2")))
            .collect::<Vec<_>>()
        );
        assert_eq!(
            del,
            vec![
                ChainRule::Src(n("192.0.2.1")),
                ChainRule::Dst(n("192.0.2.1")),
                ChainRule::Src(n("192.0.2.2")),
            ]
        );
    }

    #[test]
    fn one_restore_batch_replaces_the_chain() {
        let want: BTreeSet<IpNet> = [n("192.0.2.2"), n("198.51.100.0/24")].into();
        assert_eq!(
            restore_script(CH, &want, &["OUTPUT"]),
            "*filter\n:cPanel-support-access - [0:0]\n\
             -A cPanel-support-access -s 192.0.2.2/32 -j ACCEPT\n\
             -A cPanel-support-access -s 198.51.100.0/24 -j ACCEPT\n\
             -A cPanel-support-access -d 192.0.2.2/32 -j ACCEPT\n\
             -A cPanel-support-access -d 198.51.100.0/24 -j ACCEPT\n\
             -I OUTPUT 1 -j cPanel-support-access\nCOMMIT\n"
        );
    }

    #[test]
    fn counts_jumps() {
        let t = "-P INPUT DROP\n-A INPUT -j cPanel-support-access\n-A INPUT -i lo -j ACCEPT\n";
        assert_eq!(count_jumps("INPUT", CH, t), 1);
        assert_eq!(count_jumps("OUTPUT", CH, t), 0);
    }
}
