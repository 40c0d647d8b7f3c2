//! nftables: our own table `inet <table>` holding the named interval sets
//! `support_v4` / `support_v6` and input/output chains that accept them.
//!
//! Why we also add "hook rules" to other tables: in nftables an `accept` only
//! ends evaluation of the current base chain. Every other base chain on the
//! same hook (the admin's `inet filter input` with `policy drop`, for
//! instance) still sees the packet, and a drop there is final. Priority alone
//! can never let a packet past another table's drop, and sets cannot be
//! referenced across tables. So for each filter base chain on the input or
//! output hook in another ip/ip6/inet table we insert, at its top, one rule
//! accepting the support addresses, tagged with the comment
//! [`HOOK_COMMENT`]. iptables-nft's own `INPUT`/`OUTPUT` chains are left to
//! the iptables backend.
//!
//! Every update (sets, our chains, hook rules) is ONE `nft -f -` batch, which
//! the kernel applies atomically: there is no moment with support locked out
//! or stale addresses still open. Removal deletes our table and the tagged
//! hook rules in one batch.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::Value;

use super::{parse_net, push_change, Backend, ChangeAction, FwError, Observed};
use super::{WhitelistChange, CHAIN_STATUS};
use crate::system::exec;

/// Comment on the rules we insert into other tables' base chains.
pub const HOOK_COMMENT: &str = "supportauth cPanel-support-access";

/// Our chains run before the usual filter priority (0) so our counters
/// see the traffic first; see the module comment for why that is not
/// what makes the accept effective.
pub const PRIORITY: i32 = -10;

pub struct Nft {
    pub tool: PathBuf,
    pub table: String,
}

/// A base chain of another table that needs a hook rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignChain {
    pub family: String,
    pub table: String,
    pub name: String,
    /// "input" or "output".
    pub hook: String,
}

/// One of our tagged hook rules found in another table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRule {
    pub chain: ForeignChain,
    pub handle: u64,
    pub addrs: BTreeSet<IpNet>,
}

/// What `nft -j list ruleset` shows that concerns us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub table_exists: bool,
    pub v4: BTreeSet<IpNet>,
    pub v6: BTreeSet<IpNet>,
    /// Set elements we could not read as address/prefix (ranges).
    pub odd_elements: bool,
    pub has_sets: bool,
    /// Rules per own chain ("input", "output").
    pub own_rules: Vec<(String, usize)>,
    pub foreign: Vec<ForeignChain>,
    pub hooks: Vec<HookRule>,
    /// Tables that are not ours and not iptables-nft's (anything in use).
    pub other_tables: usize,
}

impl Ruleset {
    pub fn ours(&self) -> BTreeSet<IpNet> {
        self.v4.union(&self.v6).copied().collect()
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// iptables-nft's built-in chains: managed by the iptables backend.
fn is_xtables_chain(family: &str, name: &str) -> bool {
    (family == "ip" || family == "ip6")
        && matches!(
            name,
            "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING"
        )
}

/// Reads one set element / match operand: "192.0.2.1", {"prefix":...},
/// {"elem":{"val":...}}, {"set":[...]} (anonymous set).
fn collect_addrs(v: &Value, out: &mut BTreeSet<IpNet>, odd: &mut bool) {
    match v {
        Value::String(s) => match parse_net(s) {
            Some(n) => {
                out.insert(n);
            }
            None => *odd = true,
        },
        Value::Object(m) => {
            if let Some(p) = m.get("prefix") {
                let addr = p["addr"].as_str().unwrap_or("");
                let len = p["len"].as_u64().unwrap_or(999);
                match parse_net(&format!("{addr}/{len}")) {
                    Some(n) => {
                        out.insert(n);
                    }
                    None => *odd = true,
                }
            } else if let Some(e) = m.get("elem") {
                collect_addrs(&e["val"], out, odd);
            } else if let Some(Value::Array(items)) = m.get("set") {
                for i in items {
                    collect_addrs(i, out, odd);
                }
            } else {
                *odd = true;
            }
        }
        Value::Array(items) => {
            for i in items {
                collect_addrs(i, out, odd);
            }
        }
        _ => *odd = true,
    }
}

/// Parses `nft -j list ruleset` for table `table` (family inet).
pub fn parse_ruleset(json: &str, table: &str) -> Result<Ruleset, FwError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| FwError::unexpected("nft -j list ruleset", format!("not JSON: {e}")))?;
    let items = v["nftables"].as_array().ok_or_else(|| {
        FwError::unexpected("nft -j list ruleset", "no \"nftables\" array in the output")
    })?;
    let mut rs = Ruleset::default();
    let is_ours = |o: &Value| o["family"] == "inet" && o["table"] == table;
    for item in items {
        if let Some(t) = item.get("table") {
            let fam = t["family"].as_str().unwrap_or("");
            let name = t["name"].as_str().unwrap_or("");
            if fam == "inet" && name == table {
                rs.table_exists = true;
            }
        } else if let Some(s) = item.get("set") {
            if !is_ours(s) {
                continue;
            }
            let target = match s["name"].as_str() {
                Some("support_v4") => &mut rs.v4,
                Some("support_v6") => &mut rs.v6,
                _ => continue,
            };
            rs.has_sets = true;
            if let Some(e) = s.get("elem") {
                collect_addrs(e, target, &mut rs.odd_elements);
            }
        } else if let Some(c) = item.get("chain") {
            let fam = c["family"].as_str().unwrap_or("");
            let tab = c["table"].as_str().unwrap_or("");
            let name = c["name"].as_str().unwrap_or("");
            if is_ours(c) {
                if !rs.own_rules.iter().any(|(n, _)| n == name) {
                    rs.own_rules.push((name.to_string(), 0));
                }
                continue;
            }
            let hook = c["hook"].as_str().unwrap_or("");
            if !matches!(fam, "ip" | "ip6" | "inet")
                || c["type"] != "filter"
                || !matches!(hook, "input" | "output")
                || is_xtables_chain(fam, name)
            {
                continue;
            }
            rs.foreign.push(ForeignChain {
                family: fam.into(),
                table: tab.into(),
                name: name.into(),
                hook: hook.into(),
            });
        } else if let Some(r) = item.get("rule") {
            if is_ours(r) {
                let chain = r["chain"].as_str().unwrap_or("");
                match rs.own_rules.iter_mut().find(|(n, _)| n == chain) {
                    Some(e) => e.1 += 1,
                    None => rs.own_rules.push((chain.to_string(), 1)),
                }
                continue;
            }
            if r["comment"] != HOOK_COMMENT {
                continue;
            }
            let (fam, tab, ch) = (
                r["family"].as_str().unwrap_or(""),
                r["table"].as_str().unwrap_or(""),
                r["chain"].as_str().unwrap_or(""),
            );
            let mut addrs = BTreeSet::new();
            let mut odd = false;
            for e in r["expr"].as_array().into_iter().flatten() {
                if let Some(m) = e.get("match") {
                    let field = m["left"]["payload"]["field"].as_str().unwrap_or("");
                    if field == "saddr" || field == "daddr" {
                        collect_addrs(&m["right"], &mut addrs, &mut odd);
                    }
                }
            }
            rs.hooks.push(HookRule {
                chain: ForeignChain {
                    family: fam.into(),
                    table: tab.into(),
                    name: ch.into(),
                    hook: String::new(),
                },
                handle: r["handle"].as_u64().unwrap_or(0),
                addrs,
            });
        }
    }
    // Chains may be listed after their rules: fill in the hooks now.
    for h in &mut rs.hooks {
        if let Some(f) = rs.foreign.iter().find(|f| {
            f.family == h.chain.family && f.table == h.chain.table && f.name == h.chain.name
        }) {
            h.chain.hook = f.hook.clone();
        }
    }
    let mut tables = BTreeSet::new();
    for item in items {
        if let Some(t) = item.get("table") {
            let fam = t["family"].as_str().unwrap_or("");
            let name = t["name"].as_str().unwrap_or("");
            let ours = fam == "inet" && name == table;
            let xt = (fam == "ip" || fam == "ip6")
                && matches!(name, "filter" | "nat" | "mangle" | "raw" | "security");
            if !ours && !xt {
                tables.insert((fam.to_string(), name.to_string()));
            }
        }
    }
    rs.other_tables = tables.len();
    Ok(rs)
}

fn elements(set: &BTreeSet<IpNet>) -> String {
    set.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn split(want: &BTreeSet<IpNet>) -> (BTreeSet<IpNet>, BTreeSet<IpNet>) {
    want.iter().partition(|n| matches!(n, IpNet::V4(_)))
}

/// The hook rules a foreign chain must hold for `want`: (match, addresses).
fn hook_rules_for(fc: &ForeignChain, want: &BTreeSet<IpNet>) -> Vec<String> {
    let (v4, v6) = split(want);
    let dir = if fc.hook == "input" { "saddr" } else { "daddr" };
    let l4 = if fc.hook == "input" {
        " meta l4proto tcp"
    } else {
        ""
    };
    let mut out = Vec::new();
    if fc.family != "ip6" && !v4.is_empty() {
        out.push(format!("ip {dir} {{ {} }}{l4} accept", elements(&v4)));
    }
    if fc.family != "ip" && !v6.is_empty() {
        out.push(format!("ip6 {dir} {{ {} }}{l4} accept", elements(&v6)));
    }
    out
}

/// Whether the tagged hook rules match exactly what `want` needs.
fn hooks_complete(rs: &Ruleset, want: &BTreeSet<IpNet>) -> bool {
    let (v4, v6) = split(want);
    for fc in &rs.foreign {
        let mut expect = Vec::new();
        if fc.family != "ip6" && !v4.is_empty() {
            expect.push(v4.clone());
        }
        if fc.family != "ip" && !v6.is_empty() {
            expect.push(v6.clone());
        }
        let mut found: Vec<BTreeSet<IpNet>> = rs
            .hooks
            .iter()
            .filter(|h| &h.chain == fc)
            .map(|h| h.addrs.clone())
            .collect();
        found.sort();
        expect.sort();
        if found != expect {
            return false;
        }
    }
    // No tagged rules left in chains we no longer hook.
    rs.hooks.iter().all(|h| rs.foreign.contains(&h.chain))
}

/// Whether the host already matches `want` (nothing to do).
pub fn converged(rs: &Ruleset, want: &BTreeSet<IpNet>) -> bool {
    if want.is_empty() {
        return !rs.table_exists && rs.hooks.is_empty();
    }
    let own_ok = rs.table_exists
        && rs.has_sets
        && !rs.odd_elements
        && rs.own_rules.iter().any(|(n, c)| n == "input" && *c == 2)
        && rs.own_rules.iter().any(|(n, c)| n == "output" && *c == 2);
    own_ok && rs.ours() == *want && hooks_complete(rs, want)
}

fn check_names(rs: &Ruleset) -> Result<(), FwError> {
    for fc in rs.foreign.iter().chain(rs.hooks.iter().map(|h| &h.chain)) {
        if !is_name(&fc.table) || !is_name(&fc.name) {
            return Err(FwError::unexpected(
                "nftables",
                format!(
                    "table {:?} chain {:?} has a name supportauth does not quote; add the support addresses there by hand",
                    fc.table, fc.name
                ),
            ));
        }
    }
    Ok(())
}

/// The single `nft -f` batch that makes the host hold exactly `want`.
pub fn render_ensure(table: &str, rs: &Ruleset, want: &BTreeSet<IpNet>) -> Result<String, FwError> {
    check_names(rs)?;
    let (v4, v6) = split(want);
    let t = format!("inet {table}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(
        s,
        "add set {t} support_v4 {{ type ipv4_addr; flags interval; }}"
    );
    let _ = writeln!(
        s,
        "add set {t} support_v6 {{ type ipv6_addr; flags interval; }}"
    );
    for (chain, hook) in [("input", "input"), ("output", "output")] {
        let _ = writeln!(
            s,
            "add chain {t} {chain} {{ type filter hook {hook} priority {PRIORITY}; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    let _ = writeln!(
        s,
        "add rule {t} input ip saddr @support_v4 meta l4proto tcp counter accept"
    );
    let _ = writeln!(
        s,
        "add rule {t} input ip6 saddr @support_v6 meta l4proto tcp counter accept"
    );
    let _ = writeln!(s, "add rule {t} output ip daddr @support_v4 counter accept");
    let _ = writeln!(
        s,
        "add rule {t} output ip6 daddr @support_v6 counter accept"
    );
    let _ = writeln!(s, "flush set {t} support_v4");
    let _ = writeln!(s, "flush set {t} support_v6");
    if !v4.is_empty() {
        let _ = writeln!(s, "add element {t} support_v4 {{ {} }}", elements(&v4));
    }
    if !v6.is_empty() {
        let _ = writeln!(s, "add element {t} support_v6 {{ {} }}", elements(&v6));
    }
    // Old hook rules out and new ones in, inside the same transaction.
    for h in &rs.hooks {
        let c = &h.chain;
        let _ = writeln!(
            s,
            "delete rule {} {} {} handle {}",
            c.family, c.table, c.name, h.handle
        );
    }
    for fc in &rs.foreign {
        for rule in hook_rules_for(fc, want) {
            let _ = writeln!(
                s,
                "insert rule {} {} {} {rule} comment \"{HOOK_COMMENT}\"",
                fc.family, fc.table, fc.name
            );
        }
    }
    Ok(s)
}

/// The batch that removes everything ours (empty when nothing is there).
pub fn render_clear(table: &str, rs: &Ruleset) -> Result<String, FwError> {
    check_names(rs)?;
    let mut s = String::new();
    if rs.table_exists {
        let _ = writeln!(s, "delete table inet {table}");
    }
    for h in &rs.hooks {
        let c = &h.chain;
        let _ = writeln!(
            s,
            "delete rule {} {} {} handle {}",
            c.family, c.table, c.name, h.handle
        );
    }
    Ok(s)
}

impl Nft {
    pub fn ruleset(&self) -> Result<Ruleset, FwError> {
        let out = exec::run(&self.tool, ["-j", "list", "ruleset"], None)?;
        parse_ruleset(&out.stdout, &self.table)
    }

    fn apply(&self, script: &str) -> Result<(), FwError> {
        exec::run(&self.tool, ["-f", "-"], Some(script.as_bytes()))?;
        Ok(())
    }
}

impl Backend for Nft {
    fn name(&self) -> &'static str {
        "nftables"
    }
    fn status_key(&self) -> &'static str {
        CHAIN_STATUS
    }
    fn ensure(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        let rs = self.ruleset()?;
        if converged(&rs, want) {
            return Ok(());
        }
        self.apply(&render_ensure(&self.table, &rs, want)?)?;
        let before = rs.ours();
        for n in want.difference(&before) {
            push_change(changes, self.name(), ChangeAction::Added, n);
        }
        for n in before.difference(want) {
            push_change(changes, self.name(), ChangeAction::Removed, n);
        }
        Ok(())
    }
    fn clear(&self, changes: &mut Vec<WhitelistChange>) -> Result<(), FwError> {
        let rs = self.ruleset()?;
        let script = render_clear(&self.table, &rs)?;
        if !script.is_empty() {
            self.apply(&script)?;
        }
        for n in rs.ours() {
            push_change(changes, self.name(), ChangeAction::Removed, &n);
        }
        Ok(())
    }
    fn observe(&self) -> Result<Observed, FwError> {
        let rs = self.ruleset()?;
        let ours = rs.ours();
        Ok(Observed {
            plumbing_ok: converged(&rs, &ours),
            ours,
            admins: BTreeSet::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    /// Shape of `nft -j list ruleset` (nftables 1.0.6) with an admin table
    /// and our table holding one address and one prefix.
    const JSON: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "admin", "handle": 1}},
 {"chain": {"family": "inet", "table": "admin", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
 {"chain": {"family": "inet", "table": "admin", "name": "fwd", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
 {"rule": {"family": "inet", "table": "admin", "chain": "in", "handle": 9, "comment": "supportauth cPanel-support-access", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"set": ["192.0.2.1", {"prefix": {"addr": "198.51.100.0", "len": 24}}]}}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "admin", "chain": "in", "handle": 3, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": null}]}},
 {"table": {"family": "ip", "name": "filter", "handle": 2}},
 {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
 {"table": {"family": "inet", "name": "supportauth", "handle": 3}},
 {"set": {"family": "inet", "name": "support_v4", "table": "supportauth", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": ["192.0.2.1", {"prefix": {"addr": "198.51.100.0", "len": 24}}]}},
 {"set": {"family": "inet", "name": "support_v6", "table": "supportauth", "type": "ipv6_addr", "handle": 2, "flags": ["interval"]}},
 {"chain": {"family": "inet", "table": "supportauth", "name": "input", "handle": 3, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "supportauth", "name": "output", "handle": 4, "type": "filter", "hook": "output", "prio": -10, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "supportauth", "chain": "input", "handle": 5, "expr": []}},
 {"rule": {"family": "inet", "table": "supportauth", "chain": "input", "handle": 6, "expr": []}},
 {"rule": {"family": "inet", "table": "supportauth", "chain": "output", "handle": 7, "expr": []}},
 {"rule": {"family": "inet", "table": "supportauth", "chain": "output", "handle": 8, "expr": []}}
]}"#;

    #[test]
    fn parses_sets_foreign_chains_and_hooks() {
        let rs = parse_ruleset(JSON, "supportauth").unwrap();
        assert!(rs.table_exists);
        assert_eq!(rs.ours(), [n("192.0.2.1"), n("198.51.100.0/24")].into());
        assert_eq!(
            rs.foreign.len(),
            1,
            "forward hook and iptables-nft INPUT are skipped"
        );
        assert_eq!(rs.foreign[0].name, "in");
        assert_eq!(rs.hooks.len(), 1);
        assert_eq!(rs.hooks[0].handle, 9);
        assert_eq!(rs.hooks[0].addrs, rs.ours());
        assert_eq!(rs.other_tables, 1);
        assert!(converged(&rs, &rs.ours()));
        assert!(!converged(&rs, &[n("192.0.2.1")].into()));
    }

    #[test]
    fn ensure_batch_replaces_everything_atomically() {
        let rs = parse_ruleset(JSON, "supportauth").unwrap();
        let want = [n("192.0.2.7"), n("2001:db8::/64")].into();
        let s = render_ensure("supportauth", &rs, &want).unwrap();
        assert!(s.contains("flush set inet supportauth support_v4\n"));
        assert!(s.contains("add element inet supportauth support_v4 { 192.0.2.7/32 }\n"));
        assert!(s.contains("add element inet supportauth support_v6 { 2001:db8::/64 }\n"));
        assert!(s.contains("delete rule inet admin in handle 9\n"));
        assert!(s.contains(
            "insert rule inet admin in ip saddr { 192.0.2.7/32 } meta l4proto tcp accept comment \"supportauth cPanel-support-access\"\n"
        ));
        assert!(s.contains(
            "insert rule inet admin in ip6 saddr { 2001:db8::/64 } meta l4proto tcp accept"
        ));
        let c = render_clear("supportauth", &rs).unwrap();
        assert_eq!(
            c,
            "delete table inet supportauth\ndelete rule inet admin in handle 9\n"
        );
    }

    #[test]
    fn refuses_unquotable_names() {
        let mut rs = parse_ruleset(JSON, "supportauth").unwrap();
        rs.foreign[0].name = "in; flush ruleset".into();
        assert!(render_ensure("supportauth", &rs, &[n("192.0.2.7")].into()).is_err());
    }
}
