//! firewalld: two ipsets of our own (`<base>-v4`, `<base>-v6`, hash:net)
//! bound as sources of the `trusted` zone, in the permanent configuration
//! and, when the daemon runs, in the runtime one too.
//!
//! Permanent changes go through `firewall-cmd --permanent` while firewalld
//! runs, else through `firewall-offline-cmd` (with `--system-config` under
//! the root prefix when that is not "/"). Runtime entries are changed in
//! place; only when our ipset does not exist at runtime yet (the first
//! grant) is `firewall-cmd --reload` needed, because firewalld cannot create
//! an ipset at runtime. Entries go in before stale ones come out.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{parse_net, push_change, show_net, Backend, ChangeAction, FwError, Observed};
use super::{WhitelistChange, CHAIN_STATUS};
use crate::system::exec;

pub const ZONE: &str = "trusted";

pub struct Firewalld {
    pub cmd: PathBuf,
    pub offline: PathBuf,
    /// `--system-config` for the offline tool (scratch roots); None on the
    /// real host. A scratch root never talks to a running daemon.
    pub system_config: Option<PathBuf>,
    /// ipset name prefix.
    pub base: String,
}

struct Set {
    name: String,
    family: &'static str,
    v6: bool,
}

/// One side of the configuration: permanent or runtime.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Permanent,
    Runtime,
}

/// Parses `--get-entries` / `--list-sources` / `--get-ipsets` output.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

pub fn parse_entries(text: &str) -> BTreeSet<IpNet> {
    text.split_whitespace().filter_map(parse_net).collect()
}

impl Firewalld {
    fn sets(&self) -> [Set; 2] {
        [
            Set {
                name: format!("{}-v4", self.base),
                family: "inet",
                v6: false,
            },
            Set {
                name: format!("{}-v6", self.base),
                family: "inet6",
                v6: true,
            },
        ]
    }

    /// Whether a firewalld daemon is running (never for a scratch root).
    pub fn running(&self) -> bool {
        self.system_config.is_none()
            && self.cmd.exists()
            && exec::run_unchecked(&self.cmd, ["--state"], None).is_ok_and(|(st, _)| st.success())
    }

    fn run(&self, side: Side, running: bool, args: &[String]) -> Result<String, FwError> {
        let (tool, mut argv) = match (side, running) {
            (Side::Runtime, _) => (&self.cmd, Vec::new()),
            (Side::Permanent, true) => (&self.cmd, vec!["--permanent".to_string()]),
            (Side::Permanent, false) => {
                let mut v = Vec::new();
                if let Some(dir) = &self.system_config {
                    v.push("--system-config".to_string());
                    v.push(dir.display().to_string());
                }
                (&self.offline, v)
            }
        };
        argv.extend_from_slice(args);
        Ok(exec::run(tool, &argv, None)?.stdout)
    }

    fn ipsets(&self, side: Side, running: bool) -> Result<Vec<String>, FwError> {
        Ok(words(&self.run(side, running, &["--get-ipsets".into()])?))
    }

    fn entries(&self, side: Side, running: bool, set: &str) -> Result<BTreeSet<IpNet>, FwError> {
        Ok(parse_entries(&self.run(
            side,
            running,
            &[format!("--ipset={set}"), "--get-entries".into()],
        )?))
    }

    fn bound(&self, side: Side, running: bool, set: &str) -> Result<bool, FwError> {
        let src = format!("ipset:{set}");
        let out = self.run(
            side,
            running,
            &[format!("--zone={ZONE}"), "--list-sources".into()],
        )?;
        Ok(words(&out).contains(&src))
    }

    /// Brings one side's ipset to `want`; returns the entries it had.
    fn converge_side(
        &self,
        side: Side,
        running: bool,
        set: &Set,
        want: &BTreeSet<IpNet>,
    ) -> Result<BTreeSet<IpNet>, FwError> {
        let have = self.entries(side, running, &set.name)?;
        for n in want.difference(&have) {
            self.run(
                side,
                running,
                &[
                    format!("--ipset={}", set.name),
                    format!("--add-entry={}", show_net(n)),
                ],
            )?;
        }
        if !self.bound(side, running, &set.name)? {
            self.run(
                side,
                running,
                &[
                    format!("--zone={ZONE}"),
                    format!("--add-source=ipset:{}", set.name),
                ],
            )?;
        }
        for n in have.difference(want) {
            self.run(
                side,
                running,
                &[
                    format!("--ipset={}", set.name),
                    format!("--remove-entry={}", show_net(n)),
                ],
            )?;
        }
        Ok(have)
    }

    fn converge(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        let running = self.running();
        let mut need_reload = false;
        for set in self.sets() {
            let want: BTreeSet<IpNet> = want
                .iter()
                .filter(|n| matches!(n, IpNet::V6(_)) == set.v6)
                .copied()
                .collect();
            if !self.ipsets(Side::Permanent, running)?.contains(&set.name) {
                self.run(
                    Side::Permanent,
                    running,
                    &[
                        format!("--new-ipset={}", set.name),
                        "--type=hash:net".into(),
                        format!("--option=family={}", set.family),
                    ],
                )?;
            }
            let before = self.converge_side(Side::Permanent, running, &set, &want)?;
            if running {
                if self.ipsets(Side::Runtime, true)?.contains(&set.name) {
                    self.converge_side(Side::Runtime, true, &set, &want)?;
                } else {
                    need_reload = true;
                }
            }
            for n in want.difference(&before) {
                push_change(changes, self.name(), ChangeAction::Added, n);
            }
            for n in before.difference(&want) {
                push_change(changes, self.name(), ChangeAction::Removed, n);
            }
        }
        if need_reload {
            self.run(Side::Runtime, true, &["--reload".into()])?;
        }
        Ok(())
    }
}

impl Backend for Firewalld {
    fn name(&self) -> &'static str {
        "firewalld"
    }
    fn status_key(&self) -> &'static str {
        CHAIN_STATUS
    }
    fn ensure(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        self.converge(want, changes)
    }
    fn clear(&self, changes: &mut Vec<WhitelistChange>) -> Result<(), FwError> {
        let running = self.running();
        for set in self.sets() {
            // Runtime first: access ends now, not at the next reload. The
            // empty runtime ipset goes at firewalld's next reload.
            if running && self.ipsets(Side::Runtime, true)?.contains(&set.name) {
                if self.bound(Side::Runtime, true, &set.name)? {
                    self.run(
                        Side::Runtime,
                        true,
                        &[
                            format!("--zone={ZONE}"),
                            format!("--remove-source=ipset:{}", set.name),
                        ],
                    )?;
                }
                for n in self.entries(Side::Runtime, true, &set.name)? {
                    self.run(
                        Side::Runtime,
                        true,
                        &[
                            format!("--ipset={}", set.name),
                            format!("--remove-entry={}", show_net(&n)),
                        ],
                    )?;
                }
            }
            if !self.ipsets(Side::Permanent, running)?.contains(&set.name) {
                continue;
            }
            let before = self.entries(Side::Permanent, running, &set.name)?;
            if self.bound(Side::Permanent, running, &set.name)? {
                self.run(
                    Side::Permanent,
                    running,
                    &[
                        format!("--zone={ZONE}"),
                        format!("--remove-source=ipset:{}", set.name),
                    ],
                )?;
            }
            self.run(
                Side::Permanent,
                running,
                &[format!("--delete-ipset={}", set.name)],
            )?;
            for n in &before {
                push_change(changes, self.name(), ChangeAction::Removed, n);
            }
        }
        Ok(())
    }
    fn observe(&self) -> Result<Observed, FwError> {
        let running = self.running();
        let mut obs = Observed {
            plumbing_ok: true,
            ..Observed::default()
        };
        for set in self.sets() {
            if !self.ipsets(Side::Permanent, running)?.contains(&set.name) {
                obs.plumbing_ok = false;
                continue;
            }
            let perm = self.entries(Side::Permanent, running, &set.name)?;
            if !self.bound(Side::Permanent, running, &set.name)? {
                obs.plumbing_ok = false;
            }
            if running {
                let rt_ok = self.ipsets(Side::Runtime, true)?.contains(&set.name)
                    && self.entries(Side::Runtime, true, &set.name)? == perm
                    && self.bound(Side::Runtime, true, &set.name)?;
                obs.plumbing_ok &= rt_ok;
            }
            obs.ours.extend(perm);
        }
        Ok(obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_output() {
        assert_eq!(
            parse_entries("192.0.2.1\n198.51.100.0/24\n"),
            [
                parse_net("192.0.2.1").unwrap(),
                parse_net("198.51.100.0/24").unwrap()
            ]
            .into()
        );
        assert_eq!(
            words("ipset:supportauth-v4 192.0.2.10\n"),
            vec!["ipset:supportauth-v4", "192.0.2.10"]
        );
    }
}
