//! The verdicts: pure functions from [`Facts`] to [`Check`]s.

use std::net::SocketAddr;

use super::facts::*;
use super::{Check, Status};
use crate::planner::{decide_login, LoginPlan, LoginRequest};
use crate::types::TicketId;

/// The ticket the sshd probe asks about (its temporary user is
/// `cp1000.ssh`; sshd's decision is the same for every `cp<N>.ssh`).
pub const PROBE_TICKET: &str = "1000";

/// A time no correct clock can be before: this release's date
/// (2026-12-01T00:00:00Z). Raise it with each release.
pub const CLOCK_FLOOR: i64 = 1_796_083_200;

/// How far in the future a stored time may be before the clock is
/// suspected of having gone back (NTP steps are well below this).
pub const FUTURE_SLACK_SECS: i64 = 300;

pub fn all(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    if f.euid != 0 {
        out.push(Check::warn(
            "user",
            format!("running as uid {}: sshd -T, the firewall tools and the store need root, so the checks below may fail for that reason alone", f.euid),
            "run it as root: `sudo supportauth doctor`",
        ));
    }
    out.extend(sshd(&f.sshd, f.store_portal_connected()));
    out.extend(firewall(&f.firewall));
    out.push(audit(&f.audit));
    out.push(store(&f.store));
    out.extend(listen(&f.listen));
    out.push(clock(f.now, f.store_newest_time()));
    out.push(portal(&f.portal));
    out
}

impl Facts {
    fn store_info(&self) -> Option<&StoreInfo> {
        self.store.opened.as_ref().and_then(|r| r.as_ref().ok())
    }
    fn store_portal_connected(&self) -> bool {
        self.store_info().is_some_and(|i| i.portal_connected)
    }
    fn store_newest_time(&self) -> Option<i64> {
        self.store_info().and_then(|i| i.newest_time)
    }
}

/// Who may log in from the support addresses, on which address and port:
/// the planner's own decision for a grant without `ssh_username`.
pub fn sshd(f: &SshdFacts, portal_connected: bool) -> Vec<Check> {
    let mut out = Vec::new();
    if f.support_ips.is_empty() {
        if portal_connected {
            out.push(Check::ok(
                "support",
                "no default support addresses configured; grants use the ticket system's",
            ));
        } else {
            out.push(Check::warn(
                "support",
                "no default support addresses (access.support_ips is empty) and no ticket system connected: every grant must name --access-ip",
                "set access.support_ips in the configuration, or always pass --access-ip",
            ));
        }
    } else {
        out.push(Check::ok(
            "support",
            format!("support addresses: {}", f.support_ips.join(", ")),
        ));
    }
    let Ok(ticket) = TicketId::parse(PROBE_TICKET) else {
        return out;
    };
    for p in &f.probes {
        out.push(sshd_probe(f, p, ticket));
    }
    out
}

fn sshd_probe(f: &SshdFacts, p: &AddressProbe, ticket: TicketId) -> Check {
    let from = if p.stand_in {
        format!("{} (standing in for any address)", p.address)
    } else {
        p.address.clone()
    };
    let cfg = f.config_file.display();
    let facts = match &p.facts {
        Ok(facts) => facts,
        Err(e) => {
            return Check::fail(
                "sshd",
                format!("cannot tell who may log in from {from}: {e}"),
                format!("run `sshd -t -f {cfg}` and fix what it reports; grants are refused until `sshd -T` works"),
            )
        }
    };
    let at = facts
        .ssh_endpoint
        .map(|e: SocketAddr| format!("; sshd listens on {e}"))
        .unwrap_or_default();
    match decide_login(ticket, &LoginRequest::Automatic, facts) {
        Ok(LoginPlan::Root) => Check::ok(
            "sshd",
            format!("root may log in with a key from {from}{at}"),
        ),
        Ok(LoginPlan::Temporary { group, sudoers_dropin, .. }) => Check::ok(
            "sshd",
            format!(
                "root may not log in from {from} ({}), so grants create a temporary user cp<ticket>.ssh in group {group}{}, which may{at}",
                root_reasons(facts),
                if sudoers_dropin { " with a sudoers drop-in" } else { "" }
            ),
        ),
        Ok(LoginPlan::Existing { .. }) => Check::ok("sshd", format!("support may log in from {from}{at}")),
        Err(e) => Check::fail(
            "sshd",
            format!(
                "no grant would work from {from}: root may not log in ({}); {}",
                root_reasons(facts),
                e.0
            ),
            format!(
                "let root log in with a key from {addr} (`PermitRootLogin prohibit-password`, root not matched by DenyUsers, listed in AllowUsers if that is set), or let the temporary users in (e.g. add `cp*.ssh@{addr}` to AllowUsers); check with `sshd -T -C user=root,addr={addr} -f {cfg}`",
                addr = p.address
            ),
        ),
    }
}

fn root_reasons(facts: &crate::planner::LoginFacts) -> String {
    if facts.root_blockers.is_empty() {
        "sshd's PermitRootLogin forbids it".to_string()
    } else {
        facts.root_blockers.join("; ")
    }
}

/// Each firewall backend found, and what it holds now.
pub fn firewall(f: &FirewallFacts) -> Vec<Check> {
    if f.configured.iter().all(|b| b == "none") {
        return vec![Check::warn(
            "firewall",
            "firewall.backends = [\"none\"]: support addresses are whitelisted nowhere",
            "fine when nothing filters sshd's port; otherwise set firewall.backends = [\"auto\"]",
        )];
    }
    if f.backends.is_empty() {
        return vec![Check::fail(
            "firewall",
            format!(
                "no firewall backend found (firewall.backends = [{}]; looked for firewalld, nftables, iptables, CSF, cPHulk and hosts.allow): grants cannot open the firewall for support",
                f.configured.iter().map(|b| format!("\"{b}\"")).collect::<Vec<_>>().join(", ")
            ),
            "install nftables or iptables (or name the backend in firewall.backends and its tool in [tools]); if nothing filters sshd's port, set firewall.backends = [\"none\"]",
        )];
    }
    f.backends
        .iter()
        .map(|(name, observed)| match observed {
            Ok(obs) => {
                let open: Vec<String> = obs.ours.iter().map(crate::firewall::show_net).collect();
                let what = if open.is_empty() {
                    format!("{name}: works; no support address open now")
                } else if obs.plumbing_ok {
                    format!("{name}: works; support addresses open now: {}", open.join(", "))
                } else {
                    return Check::fail(
                        "firewall",
                        format!("{name}: support addresses {} are listed but the rules that let them through are missing", open.join(", ")),
                        "run `supportauth call ticket_whitelist_setup` to put them back",
                    );
                };
                Check::ok("firewall", what)
            }
            Err(e) => Check::fail(
                "firewall",
                format!("{name}: cannot read its state: {e}"),
                format!("make {name} work (its tool is configured in [tools]), or leave it out of firewall.backends"),
            ),
        })
        .collect()
}

/// The audit chain, as `audit verify` checks it.
pub fn audit(f: &AuditFacts) -> Check {
    let log = f.log.display();
    if !f.exists {
        return match f.stored_seq.filter(|seq| *seq > 0) {
            None => Check::warn(
                "audit",
                format!("no audit log at {log} yet"),
                "start the daemon (`systemctl start supportauth`); it creates the log",
            ),
            Some(seq) => Check::fail(
                "audit",
                format!("{log} is gone, but the store says {seq} records were written to it"),
                "restore it (and its rotated files) from a backup or the journald copy, and find out who removed it; `supportauth audit verify` shows what is missing",
            ),
        };
    }
    match &f.verify {
        Err(e) => Check::fail(
            "audit",
            format!("cannot verify {log}: {e}"),
            format!("make {log} and the state store readable by root, then run `supportauth audit verify`"),
        ),
        Ok((false, summary)) => Check::fail(
            "audit",
            format!("the audit log does not verify: {summary}"),
            format!("the log was changed after it was written: keep {log} and its rotated files as evidence, find out who changed them (compare with backups or the journald copy), and do not edit them back; `supportauth audit verify` names the first bad line"),
        ),
        Ok((true, summary)) if f.cpanel_format => Check::warn(
            "audit",
            format!("{log}: {summary}"),
            "audit.format = \"cpanel\" writes classic lines without a hash chain; set it to \"json\" so edits can be detected",
        ),
        Ok((true, summary)) => Check::ok("audit", format!("{log}: {summary}")),
    }
}

/// The state store opens, is sound, and carries this binary's migrations.
pub fn store(f: &StoreFacts) -> Check {
    let db = f.db.display();
    if let Some((uid, mode)) = f.dir {
        if uid != 0 || mode & 0o077 != 0 {
            return Check::fail(
                "store",
                format!("the state directory of {db} is owned by uid {uid} with mode {:04o}: others could read tokens' hashes or change grants", mode & 0o7777),
                "chown root:root and chmod 0700 the state directory",
            );
        }
    }
    let info = match &f.opened {
        None => {
            return Check::warn(
                "store",
                format!("no state store at {db} yet"),
                "start the daemon (`systemctl start supportauth`); it creates the store",
            )
        }
        Some(Err(e)) => {
            return Check::fail(
                "store",
                format!("cannot open {db}: {e}"),
                "check the file's owner and mode (root, 0600) and the disk; restore it from a backup if it is damaged",
            )
        }
        Some(Ok(info)) => info,
    };
    if info.integrity != "ok" {
        return Check::fail(
            "store",
            format!("{db} is damaged: {}", info.integrity),
            "stop the daemon, keep a copy of the file, and restore it from a backup",
        );
    }
    let unknown: Vec<String> = info
        .applied_migrations
        .iter()
        .filter(|v| !f.known_migrations.contains(v))
        .map(i64::to_string)
        .collect();
    if !unknown.is_empty() {
        return Check::fail(
            "store",
            format!("{db} carries migrations this supportauth does not know ({}): it was made by a newer release", unknown.join(", ")),
            "install that newer release again (a downgrade cannot read its store)",
        );
    }
    let pending = f
        .known_migrations
        .iter()
        .filter(|v| !info.applied_migrations.contains(v))
        .count();
    if pending > 0 {
        return Check::warn(
            "store",
            format!("{db}: {pending} migration(s) not applied yet"),
            "restart the daemon; it migrates the store when it starts",
        );
    }
    Check::ok(
        "store",
        format!(
            "{db}: opens, integrity ok, {} migrations applied",
            info.applied_migrations.len()
        ),
    )
}

/// The control socket, its directory, and the TCP listeners.
pub fn listen(f: &ListenFacts) -> Vec<Check> {
    let mut out = Vec::new();
    let sock = f.socket.display();
    let dir_ok = match f.socket_dir {
        Some((uid, mode)) if uid != 0 || mode & 0o022 != 0 => {
            out.push(Check::fail(
                "socket",
                format!("the socket's directory is owned by uid {uid} with mode {:04o}: whoever can write there can put their own socket in place of {sock}", mode & 0o7777),
                "chown root and chmod 0755 the socket's directory",
            ));
            false
        }
        _ => true,
    };
    match (f.socket_file, f.answers) {
        (Some((true, uid, mode)), true) => {
            let expected = f.socket_mode.clone().unwrap_or(0o660);
            if uid != 0 || mode & 0o7777 & !expected != 0 {
                out.push(Check::fail(
                    "socket",
                    format!("{sock} is owned by uid {uid} with mode {:04o}, more open than listen.socket_mode {:04o}: more users than intended may call the API as root", mode & 0o7777, expected),
                    "restart the daemon (it sets the socket's owner and mode), and check listen.socket_mode",
                ));
            } else if dir_ok {
                out.push(Check::ok(
                    "socket",
                    format!("{sock}: daemon answers; mode {:04o}, owned by root", mode & 0o7777),
                ));
            }
        }
        _ => out.push(Check::fail(
            "socket",
            format!("nothing answers on {sock}: the daemon is not running, so no grant can be made"),
            "start it: `systemctl start supportauth` (or `supportauth daemon`); `journalctl -u supportauth` says why it stopped",
        )),
    }
    for addr in &f.tcp {
        if addr.ip().is_loopback() {
            out.push(Check::ok(
                "listener",
                format!("{addr}: loopback only, API tokens required"),
            ));
            continue;
        }
        match &f.tls_key {
            // The daemon refuses to start so; a warning, as the brief of
            // this check is the configuration file's state, not the daemon's.
            None => out.push(Check::warn(
                "listener",
                format!("{addr} is not a loopback address and has no TLS: tokens would cross the network in clear (the daemon refuses to start so)"),
                "set listen.tls_cert and listen.tls_key, or listen on 127.0.0.1 only",
            )),
            Some((key, Some(mode))) if mode & 0o077 != 0 => out.push(Check::fail(
                "listener",
                format!("{addr}: TLS key {} has mode {:04o}: other users can read it", key.display(), mode & 0o7777),
                format!("chmod 0600 {}", key.display()),
            )),
            Some((key, None)) => out.push(Check::fail(
                "listener",
                format!("{addr}: TLS key {} cannot be read", key.display()),
                "install the key (root, 0600) at listen.tls_key",
            )),
            Some(_) => out.push(Check::ok("listener", format!("{addr}: TLS"))),
        }
    }
    out
}

/// The clock: not before this release, not behind what the store saw.
pub fn clock(now: i64, newest_stored: Option<i64>) -> Check {
    let fix = "set the clock right (`timedatectl set-ntp true`, chrony or ntpd): grants end and tokens expire by it";
    if now < CLOCK_FLOOR {
        return Check::fail(
            "clock",
            format!(
                "the clock says {}, before this release was made",
                show_time(now)
            ),
            fix,
        );
    }
    if let Some(t) = newest_stored.filter(|t| *t > now + FUTURE_SLACK_SECS) {
        return Check::fail(
            "clock",
            format!(
                "the store recorded {} but the clock says {}: the clock went back",
                show_time(t),
                show_time(now)
            ),
            fix,
        );
    }
    Check::ok("clock", show_time(now))
}

/// The ticket system: connected? reachable?
pub fn portal(f: &PortalFacts) -> Check {
    if !f.connected {
        return Check::ok(
            "portal",
            format!(
                "not connected to a ticket system ({}); local grants only",
                f.base_url
            ),
        );
    }
    match &f.reachable {
        Some(Err(e)) => Check::warn(
            "portal",
            format!("connected to {}, which cannot be reached: {e}", f.base_url),
            "check DNS, the outgoing firewall and any proxy for that host (and portal.ca_file for https); closed tickets are not revoked while it is unreachable",
        ),
        _ => Check::ok("portal", format!("connected to {}; reachable", f.base_url)),
    }
}

fn show_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// The worst verdict (for tests and callers that want one word).
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::Observed;
    use crate::planner::LoginFacts;
    use crate::types::SupportIp;

    fn probe(facts: Result<LoginFacts, String>) -> SshdFacts {
        SshdFacts {
            support_ips: vec!["203.0.113.10".into()],
            config_file: "/etc/ssh/sshd_config".into(),
            probes: vec![AddressProbe {
                address: "203.0.113.10".into(),
                stand_in: false,
                facts,
            }],
        }
    }

    fn ip() -> SupportIp {
        SupportIp::parse("203.0.113.10").unwrap()
    }

    #[test]
    fn root_allowed_is_ok_with_the_endpoint() {
        let facts = LoginFacts {
            root_key_login: vec![(ip(), true)],
            ssh_endpoint: Some("0.0.0.0:2222".parse().unwrap()),
            ..LoginFacts::default()
        };
        let c = sshd(&probe(Ok(facts)), false);
        assert_eq!(worst(&c), Status::Ok, "{c:?}");
        assert!(c[1].what.contains("root may log in"), "{c:?}");
        assert!(c[1].what.contains("0.0.0.0:2222"), "{c:?}");
    }

    #[test]
    fn temporary_user_path_is_ok() {
        let facts = LoginFacts {
            root_key_login: vec![(ip(), false)],
            root_blockers: vec!["PermitRootLogin is no".into()],
            wheel_group: Ok("wheel".into()),
            sudo_present: true,
            group_allows_sudo: true,
            includes_dropins: true,
            ..LoginFacts::default()
        };
        let c = sshd(&probe(Ok(facts)), false);
        assert_eq!(worst(&c), Status::Ok, "{c:?}");
        assert!(c[1].what.contains("temporary user"), "{c:?}");
    }

    #[test]
    fn nobody_may_log_in_fails_with_a_fix() {
        let facts = LoginFacts {
            root_key_login: vec![(ip(), false)],
            root_blockers: vec!["PermitRootLogin is no".into()],
            temp_blockers: vec!["sshd's AllowUsers (“admin”) does not list cp1000.ssh".into()],
            wheel_group: Ok("wheel".into()),
            sudo_present: true,
            group_allows_sudo: true,
            includes_dropins: true,
            ..LoginFacts::default()
        };
        let c = sshd(&probe(Ok(facts)), false);
        let fail = &c[1];
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.what.contains("AllowUsers"), "{fail:?}");
        assert!(fail
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("cp*.ssh@203.0.113.10"));
        let c = sshd(&probe(Err("sshd -T failed".into())), false);
        assert_eq!(c[1].status, Status::Fail);
    }

    #[test]
    fn no_support_addresses_warns_unless_the_portal_gives_them() {
        let mut f = probe(Err("x".into()));
        f.support_ips.clear();
        f.probes.clear();
        assert_eq!(sshd(&f, false)[0].status, Status::Warn);
        assert_eq!(sshd(&f, true)[0].status, Status::Ok);
    }

    #[test]
    fn firewall_verdicts() {
        let none = FirewallFacts {
            configured: vec!["none".into()],
            backends: vec![],
        };
        assert_eq!(worst(&firewall(&none)), Status::Warn);
        let nothing = FirewallFacts {
            configured: vec!["auto".into()],
            backends: vec![],
        };
        let c = firewall(&nothing);
        assert_eq!(worst(&c), Status::Fail);
        assert!(c[0].what.contains("no firewall backend"));
        let mut obs = Observed::default();
        obs.ours.insert("192.0.2.1/32".parse().unwrap());
        let broken = FirewallFacts {
            configured: vec!["auto".into()],
            backends: vec![
                ("nftables", Ok(obs.clone())),
                ("iptables", Err("gone".into())),
            ],
        };
        let c = firewall(&broken);
        assert_eq!(c[0].status, Status::Fail, "plumbing missing: {c:?}");
        assert_eq!(c[1].status, Status::Fail);
        obs.plumbing_ok = true;
        let good = FirewallFacts {
            configured: vec!["nftables".into()],
            backends: vec![("nftables", Ok(obs))],
        };
        let c = firewall(&good);
        assert_eq!(worst(&c), Status::Ok);
        assert!(c[0].what.contains("192.0.2.1"), "{c:?}");
    }

    #[test]
    fn audit_verdicts() {
        let f = |verify, cpanel_format| AuditFacts {
            log: "/var/log/a".into(),
            exists: true,
            stored_seq: Some(3),
            cpanel_format,
            verify,
        };
        assert_eq!(
            audit(&f(Ok((true, "OK: 3 records".into())), false)).status,
            Status::Ok
        );
        assert_eq!(
            audit(&f(Ok((true, "OK".into())), true)).status,
            Status::Warn
        );
        let bad = audit(&f(Ok((false, "FAIL: a:2: hash".into())), false));
        assert_eq!(bad.status, Status::Fail);
        assert!(bad.fix.unwrap().contains("evidence"));
        assert_eq!(audit(&f(Err("EACCES".into()), false)).status, Status::Fail);
        let missing = |stored_seq| AuditFacts {
            exists: false,
            stored_seq,
            ..f(Err("ENOENT".into()), false)
        };
        assert_eq!(audit(&missing(None)).status, Status::Warn);
        assert_eq!(audit(&missing(Some(0))).status, Status::Warn);
        assert_eq!(audit(&missing(Some(7))).status, Status::Fail);
    }

    #[test]
    fn store_verdicts() {
        let info = StoreInfo {
            integrity: "ok".into(),
            applied_migrations: vec![1, 2, 3],
            ..StoreInfo::default()
        };
        let f = |dir, opened| StoreFacts {
            db: "/var/lib/supportauth/state.db".into(),
            dir,
            opened,
            known_migrations: vec![1, 2, 3],
        };
        assert_eq!(
            store(&f(Some((0, 0o40700)), Some(Ok(info.clone())))).status,
            Status::Ok
        );
        assert_eq!(
            store(&f(Some((0, 0o40755)), Some(Ok(info.clone())))).status,
            Status::Fail
        );
        assert_eq!(store(&f(None, None)).status, Status::Warn);
        assert_eq!(
            store(&f(None, Some(Err("locked".into())))).status,
            Status::Fail
        );
        let damaged = StoreInfo {
            integrity: "*** in database main ***".into(),
            ..info.clone()
        };
        assert_eq!(store(&f(None, Some(Ok(damaged)))).status, Status::Fail);
        let newer = StoreInfo {
            applied_migrations: vec![1, 2, 3, 4],
            ..info.clone()
        };
        assert_eq!(store(&f(None, Some(Ok(newer)))).status, Status::Fail);
        let older = StoreInfo {
            applied_migrations: vec![1, 2],
            ..info
        };
        assert_eq!(store(&f(None, Some(Ok(older)))).status, Status::Warn);
    }

    #[test]
    fn listen_verdicts() {
        let base = ListenFacts {
            socket: "/run/supportauth/supportauth.sock".into(),
            socket_dir: Some((0, 0o40755)),
            socket_file: Some((true, 0, 0o140660)),
            answers: true,
            socket_mode: Ok(0o660),
            tcp: vec!["127.0.0.1:2090".parse().unwrap()],
            tls_key: None,
        };
        assert_eq!(worst(&listen(&base)), Status::Ok);
        let down = ListenFacts {
            answers: false,
            ..base.clone()
        };
        assert_eq!(worst(&listen(&down)), Status::Fail);
        let open_dir = ListenFacts {
            socket_dir: Some((0, 0o41777)),
            ..base.clone()
        };
        assert_eq!(worst(&listen(&open_dir)), Status::Fail);
        let wide = ListenFacts {
            socket_file: Some((true, 0, 0o140666)),
            ..base.clone()
        };
        assert_eq!(worst(&listen(&wide)), Status::Fail);
        let clear = ListenFacts {
            tcp: vec!["192.0.2.1:2090".parse().unwrap()],
            ..base.clone()
        };
        assert_eq!(worst(&listen(&clear)), Status::Warn);
        let tls = ListenFacts {
            tcp: vec!["192.0.2.1:2090".parse().unwrap()],
            tls_key: Some(("/etc/k.pem".into(), Some(0o100600))),
            ..base.clone()
        };
        assert_eq!(worst(&listen(&tls)), Status::Ok);
        let readable = ListenFacts {
            tls_key: Some(("/etc/k.pem".into(), Some(0o100644))),
            ..tls
        };
        assert_eq!(worst(&listen(&readable)), Status::Fail);
    }

    #[test]
    fn clock_verdicts() {
        let now = CLOCK_FLOOR + 86_400;
        assert_eq!(clock(now, None).status, Status::Ok);
        assert_eq!(clock(now, Some(now + 60)).status, Status::Ok);
        assert_eq!(clock(now, Some(now + 3600)).status, Status::Fail);
        assert_eq!(clock(0, None).status, Status::Fail);
    }

    #[test]
    fn portal_verdicts() {
        let f = |connected, reachable| PortalFacts {
            base_url: "https://tickets.example".into(),
            connected,
            reachable,
        };
        assert_eq!(portal(&f(false, None)).status, Status::Ok);
        assert_eq!(portal(&f(true, Some(Ok(())))).status, Status::Ok);
        assert_eq!(
            portal(&f(true, Some(Err("refused".into())))).status,
            Status::Warn
        );
    }
}
