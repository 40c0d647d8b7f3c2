//! ConfigServer Firewall: `csf -a IP cPanel-support-access` to add,
//! `csf -ar IP` to remove. csf.allow is only read: an address there without
//! our comment is the admin's and is never added or removed by us.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ipnet::IpNet;

use super::{atomic, parse_net, push_change, show_net, Backend, ChangeAction, FwError, Observed};
use super::{WhitelistChange, CSF_STATUS, TAG};
use crate::system::exec;

pub struct Csf {
    pub tool: PathBuf,
    /// `<csf_dir>/csf.allow` under the root prefix.
    pub allow_file: atomic::HostFile,
}

/// Who holds an address in csf.allow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Holders {
    pub ours: bool,
    pub admin: bool,
}

/// Parses csf.allow: plain `IP[/len] # comment` lines. Advanced filters
/// (`tcp|in|d=22|s=IP`) and Include lines are the admin's and not ours;
/// they are ignored (never touched).
pub fn parse_allow(text: &str) -> BTreeMap<IpNet, Holders> {
    let mut out: BTreeMap<IpNet, Holders> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (entry, comment) = match line.split_once('#') {
            Some((e, c)) => (e.trim(), c.trim()),
            None => (line, ""),
        };
        let Some(net) = parse_net(entry) else {
            continue;
        };
        let h = out.entry(net).or_default();
        if comment.starts_with(TAG) {
            h.ours = true;
        } else {
            h.admin = true;
        }
    }
    out
}

/// What to run: addresses to add (`csf -a`), then to remove (`csf -ar`),
/// and wanted addresses the admin already has.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Vec<IpNet>,
    pub remove: Vec<IpNet>,
    pub preexisting: Vec<IpNet>,
    /// Stale ours that the admin also lists: `csf -ar` would drop the
    /// admin's line too, so ours stays (access is unchanged either way).
    pub kept_for_admin: Vec<IpNet>,
}

pub fn plan(held: &BTreeMap<IpNet, Holders>, want: &BTreeSet<IpNet>) -> Plan {
    let mut p = Plan::default();
    for n in want {
        let h = held.get(n).copied().unwrap_or_default();
        if h.admin {
            p.preexisting.push(*n);
        } else if !h.ours {
            p.add.push(*n);
        }
    }
    for (n, h) in held {
        if h.ours && !want.contains(n) {
            if h.admin {
                p.kept_for_admin.push(*n);
            } else {
                p.remove.push(*n);
            }
        }
    }
    p
}

impl Csf {
    fn read(&self) -> Result<BTreeMap<IpNet, Holders>, FwError> {
        let bytes = self.allow_file.read()?.ok_or_else(|| {
            FwError::unexpected(
                self.allow_file.path().display().to_string(),
                "does not exist; is CSF installed?",
            )
        })?;
        Ok(parse_allow(&String::from_utf8_lossy(&bytes)))
    }

    fn converge(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        let p = plan(&self.read()?, want);
        for n in &p.preexisting {
            push_change(changes, self.name(), ChangeAction::Preexisting, n);
        }
        for n in &p.add {
            exec::run(&self.tool, ["-a", &show_net(n), TAG], None)?;
            push_change(changes, self.name(), ChangeAction::Added, n);
        }
        for n in &p.remove {
            exec::run(&self.tool, ["-ar", &show_net(n)], None)?;
            push_change(changes, self.name(), ChangeAction::Removed, n);
        }
        // Verify: csf prints errors but may exit 0.
        let after = plan(&self.read()?, want);
        if !after.add.is_empty() || !after.remove.is_empty() {
            let list = |v: &[IpNet]| v.iter().map(show_net).collect::<Vec<_>>().join(", ");
            return Err(FwError::unexpected(
                self.allow_file.path().display().to_string(),
                format!(
                    "after running csf, still missing [{}] and still present [{}]",
                    list(&after.add),
                    list(&after.remove)
                ),
            ));
        }
        Ok(())
    }
}

impl Backend for Csf {
    fn name(&self) -> &'static str {
        "csf"
    }
    fn status_key(&self) -> &'static str {
        CSF_STATUS
    }
    fn ensure(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        self.converge(want, changes)
    }
    fn observe(&self) -> Result<Observed, FwError> {
        let held = self.read()?;
        Ok(Observed {
            ours: held
                .iter()
                .filter(|(_, h)| h.ours)
                .map(|(n, _)| *n)
                .collect(),
            admins: held
                .iter()
                .filter(|(_, h)| h.admin)
                .map(|(n, _)| *n)
                .collect(),
            plumbing_ok: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = "\
###############################################################################
# Copyright 2006-2023, Way to the Web Limited
###############################################################################
# The following IP addresses will be allowed through iptables.
Include /etc/csf/cpanel.allow
tcp|in|d=22|s=203.0.113.50
192.0.2.10 # admin office - Tue Mar  5 10:00:00 2024
198.51.100.0/24 # cPanel-support-access - Mon Nov 23 13:00:00 2026
192.0.2.20 # cPanel-support-access - Mon Nov 23 13:00:00 2026
192.0.2.20 # admin also
";

    fn n(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    #[test]
    fn parses_ownership() {
        let h = parse_allow(ALLOW);
        assert_eq!(
            h[&n("192.0.2.10")],
            Holders {
                ours: false,
                admin: true
            }
        );
        assert_eq!(
            h[&n("198.51.100.0/24")],
            Holders {
                ours: true,
                admin: false
            }
        );
        assert_eq!(
            h[&n("192.0.2.20")],
            Holders {
                ours: true,
                admin: true
            }
        );
        assert!(!h.contains_key(&n("203.0.113.50")));
    }

    #[test]
    fn plan_never_touches_admin_entries() {
        let h = parse_allow(ALLOW);
        let want: BTreeSet<IpNet> = [n("192.0.2.10"), n("192.0.2.30")].into();
        let p = plan(&h, &want);
        assert_eq!(p.add, vec![n("192.0.2.30")]);
        assert_eq!(p.preexisting, vec![n("192.0.2.10")]);
        assert_eq!(p.remove, vec![n("198.51.100.0/24")]);
        assert_eq!(p.kept_for_admin, vec![n("192.0.2.20")]);
    }
}
