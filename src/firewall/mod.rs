//! Firewall whitelist backends: open the support IPs while a grant is
//! active, close them after, never touch the admin's own entries.
//!
//! Each backend module has a pure part (render the wanted state, parse the
//! observed state, diff) and a thin host part that runs tools only through
//! [`crate::system::exec`]. [`Whitelist`] runs every detected backend; one
//! failing backend is reported and does not stop the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::system::exec::ExecError;
use crate::types::SupportIp;

mod atomic;
pub mod cphulk;
pub mod csf;
pub mod detect;
pub mod firewalld;
pub mod hosts_allow;
pub mod iptables;
pub mod nft;

/// The comment that marks entries as ours (cPanel's name, so existing
/// tooling and admins recognise it).
pub const TAG: &str = "cPanel-support-access";

/// A backend failure, with what an admin needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum FwError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Unexpected { what: String, message: String },
}

impl FwError {
    pub(crate) fn unexpected(what: impl Into<String>, message: impl Into<String>) -> Self {
        FwError::Unexpected {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// A whitelist status as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WlStatus {
    Active,
    Inactive,
    ErrSetup,
    ErrUnsetup,
    ErrUnknown,
}

impl WlStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WlStatus::Active => "ACTIVE",
            WlStatus::Inactive => "INACTIVE",
            WlStatus::ErrSetup => "ERR_SETUP",
            WlStatus::ErrUnsetup => "ERR_UNSETUP",
            WlStatus::ErrUnknown => "ERR_UNKNOWN",
        }
    }
    fn is_err(self) -> bool {
        matches!(
            self,
            WlStatus::ErrSetup | WlStatus::ErrUnsetup | WlStatus::ErrUnknown
        )
    }
    /// Two backends sharing one status field (nftables and iptables under
    /// `chain_status`): an error wins, then ACTIVE.
    fn merge(self, other: WlStatus) -> WlStatus {
        if self.is_err() {
            self
        } else if other.is_err() {
            other
        } else if self == WlStatus::Active || other == WlStatus::Active {
            WlStatus::Active
        } else {
            WlStatus::Inactive
        }
    }
}

/// What happened to one address on one backend (for the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeAction {
    Added,
    Removed,
    /// The admin already allowed it: we neither added nor will remove it.
    Preexisting,
}

impl ChangeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Added => "added",
            ChangeAction::Removed => "removed",
            ChangeAction::Preexisting => "preexisting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistChange {
    pub backend: &'static str,
    pub action: ChangeAction,
    pub address: String,
}

/// Outcome of [`Whitelist::ensure`] / [`Whitelist::clear`].
#[derive(Debug, Clone, Default)]
pub struct WhitelistReport {
    /// `chain_status`, `csf_wl_status`, `hulk_wl_status`,
    /// `host_access_wl_status`; absent backends are left out.
    pub statuses: BTreeMap<&'static str, WlStatus>,
    pub changes: Vec<WhitelistChange>,
    /// "<backend>: <reason>" for every backend that failed.
    pub errors: Vec<String>,
}

impl WhitelistReport {
    /// The status fields for an API answer (`{"chain_status":"ACTIVE",...}`).
    pub fn to_json(&self) -> Value {
        statuses_json(&self.statuses)
    }
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// `problem` of `ticket_whitelist_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    No,
    NeedSetup,
    NeedUnsetup,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::No => "NO",
            Problem::NeedSetup => "NEED_SETUP",
            Problem::NeedUnsetup => "NEED_UNSETUP",
        }
    }
}

/// One backend's observed state against the wanted set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendCheck {
    pub backend: &'static str,
    /// Our entries present now.
    pub ours: Vec<String>,
    /// Wanted but neither ours nor the admin's.
    pub missing: Vec<String>,
    /// Ours but no longer wanted.
    pub stale: Vec<String>,
    /// Wanted addresses the admin already allows.
    pub preexisting: Vec<String>,
    /// Whether the plumbing (jumps, hook rules) is in place.
    pub plumbing_ok: bool,
}

/// Outcome of [`Whitelist::check`].
#[derive(Debug, Clone)]
pub struct WhitelistCheck {
    pub statuses: BTreeMap<&'static str, WlStatus>,
    pub problem: Problem,
    pub backends: Vec<BackendCheck>,
    pub errors: Vec<String>,
}

impl WhitelistCheck {
    /// `ticket_whitelist_check`'s data: the status fields plus `problem`.
    pub fn to_json(&self) -> Value {
        let mut v = statuses_json(&self.statuses);
        if let Value::Object(m) = &mut v {
            m.insert("problem".into(), json!(self.problem.as_str()));
        }
        v
    }
}

fn statuses_json(statuses: &BTreeMap<&'static str, WlStatus>) -> Value {
    let mut m = Map::new();
    for (k, s) in statuses {
        m.insert((*k).to_string(), json!(s.as_str()));
    }
    Value::Object(m)
}

/// What a backend finds on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Addresses carrying our mark.
    pub ours: BTreeSet<IpNet>,
    /// Addresses the admin allows without our mark.
    pub admins: BTreeSet<IpNet>,
    /// Jumps / hook rules / own chains in place.
    pub plumbing_ok: bool,
}

/// One whitelist mechanism on the host.
pub(crate) trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn status_key(&self) -> &'static str;
    /// Converge to exactly `want` (ours), adding before removing.
    fn ensure(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError>;
    /// Remove everything ours: by default, converge to nothing.
    fn clear(&self, changes: &mut Vec<WhitelistChange>) -> Result<(), FwError> {
        self.ensure(&BTreeSet::new(), changes)
    }
    fn observe(&self) -> Result<Observed, FwError>;
}

pub const CHAIN_STATUS: &str = "chain_status";
pub const CSF_STATUS: &str = "csf_wl_status";
pub const HULK_STATUS: &str = "hulk_wl_status";
pub const HOSTS_STATUS: &str = "host_access_wl_status";

/// The whitelist backends detected (or configured) on this host.
pub struct Whitelist {
    backends: Vec<Box<dyn Backend>>,
}

impl std::fmt::Debug for Whitelist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whitelist")
            .field("backends", &self.backends())
            .finish()
    }
}

impl Whitelist {
    /// Backends from `cfg.firewall.backends` ("auto" probes the host).
    pub fn detect(cfg: &Config) -> Whitelist {
        Whitelist {
            backends: detect::backends(cfg),
        }
    }

    /// Backend names, e.g. `["nftables", "csf"]`.
    pub fn backends(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// Makes every backend hold exactly `ips` (idempotent; converges after
    /// a crash). New entries go in before stale ones go out. An empty list
    /// is the same as [`clear`](Self::clear).
    pub fn ensure(&self, ips: &[SupportIp]) -> WhitelistReport {
        let want = wanted(ips);
        if want.is_empty() {
            return self.clear();
        }
        self.run_each(WlStatus::Active, WlStatus::ErrSetup, |b, ch| {
            b.ensure(&want, ch)
        })
    }

    /// Removes everything ours from every backend.
    pub fn clear(&self) -> WhitelistReport {
        self.run_each(WlStatus::Inactive, WlStatus::ErrUnsetup, |b, ch| {
            b.clear(ch)
        })
    }

    fn run_each(
        &self,
        ok: WlStatus,
        err: WlStatus,
        f: impl Fn(&dyn Backend, &mut Vec<WhitelistChange>) -> Result<(), FwError>,
    ) -> WhitelistReport {
        let mut report = WhitelistReport::default();
        for b in &self.backends {
            let status = match f(b.as_ref(), &mut report.changes) {
                Ok(()) => ok,
                Err(e) => {
                    report.errors.push(format!("{}: {e}", b.name()));
                    err
                }
            };
            merge_status(&mut report.statuses, b.status_key(), status);
        }
        report
    }

    /// Each backend's observed state, read-only (for `doctor`).
    pub fn observe_each(&self) -> Vec<(&'static str, Result<Observed, String>)> {
        self.backends
            .iter()
            .map(|b| (b.name(), b.observe().map_err(|e| e.to_string())))
            .collect()
    }

    /// What is there now against what `ips` requires.
    pub fn check(&self, ips: &[SupportIp]) -> WhitelistCheck {
        let want = wanted(ips);
        let mut statuses = BTreeMap::new();
        let mut backends = Vec::new();
        let mut errors = Vec::new();
        let mut problem = Problem::No;
        for b in &self.backends {
            match b.observe() {
                Ok(obs) => {
                    let c = compare(b.name(), &want, &obs);
                    let status = if obs.ours.is_empty() {
                        WlStatus::Inactive
                    } else {
                        WlStatus::Active
                    };
                    merge_status(&mut statuses, b.status_key(), status);
                    let p = problem_of(&want, &c);
                    if p != Problem::No && problem == Problem::No {
                        problem = p;
                    }
                    backends.push(c);
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", b.name()));
                    merge_status(&mut statuses, b.status_key(), WlStatus::ErrUnknown);
                    if problem == Problem::No {
                        problem = if want.is_empty() {
                            Problem::NeedUnsetup
                        } else {
                            Problem::NeedSetup
                        };
                    }
                }
            }
        }
        WhitelistCheck {
            statuses,
            problem,
            backends,
            errors,
        }
    }

    #[cfg(test)]
    pub(crate) fn from_backends(backends: Vec<Box<dyn Backend>>) -> Whitelist {
        Whitelist { backends }
    }
}

fn merge_status(map: &mut BTreeMap<&'static str, WlStatus>, key: &'static str, s: WlStatus) {
    let merged = match map.get(key) {
        Some(prev) => prev.merge(s),
        None => s,
    };
    map.insert(key, merged);
}

fn problem_of(want: &BTreeSet<IpNet>, c: &BackendCheck) -> Problem {
    if want.is_empty() {
        if c.stale.is_empty() {
            Problem::No
        } else {
            Problem::NeedUnsetup
        }
    } else if !c.missing.is_empty() || !c.stale.is_empty() || !c.plumbing_ok {
        Problem::NeedSetup
    } else {
        Problem::No
    }
}

/// Pure diff of one backend's observation against the wanted set.
pub fn compare(backend: &'static str, want: &BTreeSet<IpNet>, obs: &Observed) -> BackendCheck {
    let show = |s: &mut dyn Iterator<Item = &IpNet>| s.map(show_net).collect::<Vec<_>>();
    BackendCheck {
        backend,
        ours: show(&mut obs.ours.iter()),
        missing: show(
            &mut want
                .iter()
                .filter(|n| !obs.ours.contains(n) && !obs.admins.contains(n)),
        ),
        // An address the admin also allows is not ours to take away.
        stale: show(
            &mut obs
                .ours
                .iter()
                .filter(|n| !want.contains(n) && !obs.admins.contains(n)),
        ),
        preexisting: show(
            &mut want
                .iter()
                .filter(|n| obs.admins.contains(n) && !obs.ours.contains(n)),
        ),
        // With nothing wanted and nothing ours, absent plumbing is right.
        plumbing_ok: obs.plumbing_ok || (want.is_empty() && obs.ours.is_empty()),
    }
}

/// The wanted set, normalised (IPv4-mapped IPv6 as IPv4, host bits clear).
pub fn wanted(ips: &[SupportIp]) -> BTreeSet<IpNet> {
    ips.iter().map(|ip| ip.cidr().net().trunc()).collect()
}

/// An address as tools print it: a bare address for a single host.
pub fn show_net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Parses "192.0.2.1", "192.0.2.0/24" or "2001:db8::1/128" as a normalised
/// network; None for anything else (ranges, names, junk).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>().ok()?
    } else {
        IpNet::from(s.parse::<IpAddr>().ok()?)
    };
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok()?,
            None => net,
        },
        other => other,
    };
    Some(net.trunc())
}

pub(crate) fn push_change(
    changes: &mut Vec<WhitelistChange>,
    backend: &'static str,
    action: ChangeAction,
    net: &IpNet,
) {
    changes.push(WhitelistChange {
        backend,
        action,
        address: show_net(net),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn ip(s: &str) -> SupportIp {
        SupportIp::parse(s).unwrap()
    }

    /// An in-memory backend to test the orchestration (not a host stand-in).
    struct Mem {
        name: &'static str,
        key: &'static str,
        fail: bool,
        state: Mutex<Observed>,
    }

    impl Backend for Mem {
        fn name(&self) -> &'static str {
            self.name
        }
        fn status_key(&self) -> &'static str {
            self.key
        }
        fn ensure(
            &self,
            want: &BTreeSet<IpNet>,
            ch: &mut Vec<WhitelistChange>,
        ) -> Result<(), FwError> {
            if self.fail {
                return Err(FwError::unexpected("mem", "broken on purpose"));
            }
            let mut st = self.state.lock().unwrap();
            for n in want {
                if st.ours.insert(*n) {
                    push_change(ch, self.name, ChangeAction::Added, n);
                }
            }
            let stale: Vec<IpNet> = st.ours.difference(want).copied().collect();
            for n in stale {
                st.ours.remove(&n);
                push_change(ch, self.name, ChangeAction::Removed, &n);
            }
            st.plumbing_ok = true;
            Ok(())
        }
        fn clear(&self, ch: &mut Vec<WhitelistChange>) -> Result<(), FwError> {
            self.ensure(&BTreeSet::new(), ch)
        }
        fn observe(&self) -> Result<Observed, FwError> {
            Ok(self.state.lock().unwrap().clone())
        }
    }

    fn mem(name: &'static str, key: &'static str, fail: bool) -> Box<dyn Backend> {
        Box::new(Mem {
            name,
            key,
            fail,
            state: Mutex::new(Observed::default()),
        })
    }

    #[test]
    fn one_failing_backend_does_not_stop_the_others() {
        let wl = Whitelist::from_backends(vec![
            mem("nftables", CHAIN_STATUS, false),
            mem("csf", CSF_STATUS, true),
            mem("hosts_allow", HOSTS_STATUS, false),
        ]);
        let r = wl.ensure(&[ip("192.0.2.1")]);
        assert_eq!(r.statuses[CHAIN_STATUS], WlStatus::Active);
        assert_eq!(r.statuses[CSF_STATUS], WlStatus::ErrSetup);
        assert_eq!(r.statuses[HOSTS_STATUS], WlStatus::Active);
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].starts_with("csf: "), "{:?}", r.errors);
        assert_eq!(
            r.to_json(),
            json!({"chain_status":"ACTIVE","csf_wl_status":"ERR_SETUP","host_access_wl_status":"ACTIVE"})
        );
        assert!(!r.statuses.contains_key(HULK_STATUS));
        let r = wl.clear();
        assert_eq!(r.statuses[CSF_STATUS], WlStatus::ErrUnsetup);
        assert_eq!(r.statuses[CHAIN_STATUS], WlStatus::Inactive);
    }

    #[test]
    fn check_reports_problems() {
        let wl = Whitelist::from_backends(vec![mem("nftables", CHAIN_STATUS, false)]);
        let c = wl.check(&[ip("192.0.2.1")]);
        assert_eq!(c.problem, Problem::NeedSetup);
        assert_eq!(
            c.to_json(),
            json!({"chain_status":"INACTIVE","problem":"NEED_SETUP"})
        );
        wl.ensure(&[ip("192.0.2.1")]);
        assert_eq!(wl.check(&[ip("192.0.2.1")]).problem, Problem::No);
        let c = wl.check(&[]);
        assert_eq!(c.problem, Problem::NeedUnsetup);
        assert_eq!(c.statuses[CHAIN_STATUS], WlStatus::Active);
        let r = wl.ensure(&[]);
        assert_eq!(r.statuses[CHAIN_STATUS], WlStatus::Inactive);
        assert_eq!(r.changes[0].action, ChangeAction::Removed);
        assert_eq!(wl.check(&[]).problem, Problem::No);
    }

    #[test]
    fn two_chain_backends_merge_into_one_status() {
        assert_eq!(
            WlStatus::Active.merge(WlStatus::ErrSetup),
            WlStatus::ErrSetup
        );
        assert_eq!(WlStatus::Inactive.merge(WlStatus::Active), WlStatus::Active);
    }

    #[test]
    fn parse_and_show_normalise() {
        assert_eq!(show_net(&parse_net("192.0.2.1/32").unwrap()), "192.0.2.1");
        assert_eq!(
            show_net(&parse_net("::ffff:192.0.2.1").unwrap()),
            "192.0.2.1"
        );
        assert_eq!(
            show_net(&parse_net("2001:db8::/64").unwrap()),
            "2001:db8::/64"
        );
        assert!(parse_net("192.0.2.1-192.0.2.5").is_none());
        assert!(parse_net("tcp|in|d=22|s=192.0.2.1").is_none());
    }
}
