//! Deciding what an sshd event means for supportauth (pure: no I/O).
//!
//! A login is a support login when its key's fingerprint is a grant's
//! (any grant ever made: a support key used after its grant ended is the
//! case an auditor most wants to see). It is *in the window* when that
//! grant was live for that user at the time and the address is one of the
//! grant's support addresses; otherwise it is audited as a warning.
//! An admin's own key matches no grant and is never recorded.

use std::net::IpAddr;

use super::parse::SshdEvent;
use crate::domain::{GrantRow, GrantState};
use crate::types::Username;

/// A support session the store knows to be open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub id: i64,
    pub grant_id: i64,
    pub user: Username,
    pub addr: IpAddr,
    pub port: u16,
    pub fingerprint: String,
    pub pid: Option<u32>,
    /// The pid's start time (clock ticks since boot), to tell a reused pid.
    pub pid_start: Option<u64>,
    pub started_at: i64,
}

/// What to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// Not a support login or the end of a known session.
    Nothing,
    Login {
        grant: &'a GrantRow,
        in_window: bool,
        /// Why not, for the warning.
        warning: Option<&'static str>,
    },
    Logout {
        session: &'a OpenSession,
    },
}

/// `grants`: the rows whose fingerprint is the event's (or all; others are
/// ignored). `open`: the sessions not ended yet. `pid`: sshd's pid from the
/// line, when it had one.
pub fn decide<'a>(
    event: &SshdEvent,
    pid: Option<u32>,
    at: i64,
    grants: &'a [GrantRow],
    open: &'a [OpenSession],
) -> Decision<'a> {
    match event {
        SshdEvent::Accepted {
            user,
            addr,
            fingerprint,
            ..
        } => {
            let mut same_key: Vec<&GrantRow> = grants
                .iter()
                .filter(|g| &g.key_fingerprint == fingerprint)
                .collect();
            // The newest first: a key granted again belongs to its latest grant.
            same_key.sort_by_key(|g| std::cmp::Reverse((g.created_at, g.id)));
            let in_window = |g: &&GrantRow| {
                &g.ssh_username == user
                    && live_at(g, at)
                    && g.access_ips
                        .iter()
                        .any(|ip| ip.cidr().contains(crate::types::canonical_ip(*addr)))
            };
            if let Some(g) = same_key.iter().find(|g| in_window(g)) {
                return Decision::Login {
                    grant: g,
                    in_window: true,
                    warning: None,
                };
            }
            let Some(g) = same_key
                .iter()
                .find(|g| &g.ssh_username == user)
                .or(same_key.first())
            else {
                return Decision::Nothing;
            };
            let warning = if &g.ssh_username != user {
                "a support key logged in as a user its grant was not for"
            } else if !live_at(g, at) {
                "a support key logged in outside its grant's window"
            } else {
                "a support key logged in from an address its grant does not allow"
            };
            Decision::Login {
                grant: g,
                in_window: false,
                warning: Some(warning),
            }
        }
        SshdEvent::Disconnected { user, addr, port } => open
            .iter()
            .find(|s| &s.user == user && s.addr == *addr && s.port == *port)
            .map_or(Decision::Nothing, |session| Decision::Logout { session }),
        SshdEvent::SessionClosed { user } => match pid {
            Some(pid) => open
                .iter()
                .find(|s| &s.user == user && s.pid == Some(pid))
                .map_or(Decision::Nothing, |session| Decision::Logout { session }),
            None => Decision::Nothing,
        },
    }
}

/// Whether the grant gave access at `at`.
fn live_at(g: &GrantRow, at: i64) -> bool {
    let ended = g.ended_at.or(match g.state {
        GrantState::Failed => Some(g.created_at),
        _ => None,
    });
    let end = match (ended, g.expires_at) {
        (Some(e), Some(x)) => Some(e.min(x)),
        (e, x) => e.or(x),
    };
    at >= g.created_at && end.is_none_or(|end| at <= end)
}

/// The open sessions of a grant that can be ended safely: those whose
/// sshd process is known by pid and start time. (The grant's support
/// sessions only: an admin's sessions are never in the store.)
pub fn sessions_to_end(open: &[OpenSession], grant_id: i64) -> Vec<&OpenSession> {
    open.iter()
        .filter(|s| s.grant_id == grant_id && s.pid.is_some() && s.pid_start.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{GrantSource, TicketStatus};
    use crate::types::{ServerNum, SupportIp, TicketId};

    const FP: &str = "SHA256:p5vO2Z7v6D0e7Dy44Xgcf5jj0FVD09g/YAiFIxLLJ4w";

    fn grant(id: i64, user: &str, created: i64, expires: i64, ended: Option<i64>) -> GrantRow {
        GrantRow {
            id,
            ticket: TicketId::parse(&format!("{}", 100 + id)).unwrap(),
            server: ServerNum::parse("1").unwrap(),
            state: if ended.is_some() {
                GrantState::Revoked
            } else {
                GrantState::Active
            },
            source: GrantSource::Local,
            ssh_username: Username::parse(user).unwrap(),
            temp_user: false,
            sudoers_dropin: false,
            ssh_dir_created: false,
            ssh_key: String::new(),
            key_fingerprint: FP.into(),
            key_comment: String::new(),
            access_ips: vec![SupportIp::parse("203.0.113.0/24").unwrap()],
            server_name: String::new(),
            ticket_subject: String::new(),
            ssh_ip: String::new(),
            ssh_port: 22,
            whm_ip: String::new(),
            ticket_status: TicketStatus::Open,
            created_at: created,
            expires_at: Some(expires),
            ended_at: ended,
            end_reason: None,
            granted_by: String::new(),
        }
    }

    fn login(user: &str, addr: &str, fp: &str) -> SshdEvent {
        SshdEvent::Accepted {
            user: Username::parse(user).unwrap(),
            addr: addr.parse().unwrap(),
            port: 5000,
            key_type: "ED25519".into(),
            fingerprint: fp.into(),
        }
    }

    #[test]
    fn logins_in_and_outside_the_window() {
        let grants = [
            grant(1, "root", 100, 200, Some(150)),
            grant(2, "root", 300, 400, None),
        ];
        let ev = login("root", "203.0.113.9", FP);
        let d = decide(&ev, None, 120, &grants, &[]);
        assert!(
            matches!(d, Decision::Login { grant, in_window: true, .. } if grant.id == 1),
            "{d:?}"
        );
        let d = decide(&ev, None, 350, &grants, &[]);
        assert!(matches!(d, Decision::Login { grant, in_window: true, .. } if grant.id == 2));
        // After the revoke of 1, before 2: the newest grant, as a warning.
        for at in [160, 99, 401] {
            let d = decide(&ev, None, at, &grants, &[]);
            assert!(
                matches!(d, Decision::Login { grant, in_window: false, warning: Some(w) } if grant.id == 2 && w.contains("window")),
                "{at}: {d:?}"
            );
        }
        // Wrong user, wrong address.
        let d = decide(&login("admin", "203.0.113.9", FP), None, 350, &grants, &[]);
        assert!(
            matches!(d, Decision::Login { in_window: false, warning: Some(w), .. } if w.contains("user"))
        );
        let d = decide(&login("root", "198.51.100.1", FP), None, 350, &grants, &[]);
        assert!(
            matches!(d, Decision::Login { in_window: false, warning: Some(w), .. } if w.contains("address"))
        );
    }

    #[test]
    fn an_admins_key_is_nothing() {
        let grants = [grant(2, "root", 300, 400, None)];
        let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            decide(
                &login("root", "203.0.113.9", other),
                None,
                350,
                &grants,
                &[]
            ),
            Decision::Nothing
        );
        assert_eq!(
            decide(&login("root", "203.0.113.9", FP), None, 350, &[], &[]),
            Decision::Nothing
        );
    }

    #[test]
    fn logouts_match_the_connection_or_the_pid() {
        let s = OpenSession {
            id: 7,
            grant_id: 2,
            user: Username::root(),
            addr: "203.0.113.9".parse().unwrap(),
            port: 5000,
            fingerprint: FP.into(),
            pid: Some(42),
            pid_start: Some(1),
            started_at: 350,
        };
        let open = [s.clone()];
        let bye = SshdEvent::Disconnected {
            user: Username::root(),
            addr: "203.0.113.9".parse().unwrap(),
            port: 5000,
        };
        assert!(
            matches!(decide(&bye, None, 360, &[], &open), Decision::Logout { session } if session.id == 7)
        );
        let other_port = SshdEvent::Disconnected {
            user: Username::root(),
            addr: "203.0.113.9".parse().unwrap(),
            port: 5001,
        };
        assert_eq!(
            decide(&other_port, None, 360, &[], &open),
            Decision::Nothing
        );
        let closed = SshdEvent::SessionClosed {
            user: Username::root(),
        };
        assert!(matches!(
            decide(&closed, Some(42), 360, &[], &open),
            Decision::Logout { .. }
        ));
        assert_eq!(
            decide(&closed, Some(43), 360, &[], &open),
            Decision::Nothing
        );
        assert_eq!(decide(&closed, None, 360, &[], &open), Decision::Nothing);
        let mut unknown = s.clone();
        unknown.id = 8;
        unknown.grant_id = 3;
        unknown.pid_start = None;
        let both = [s, unknown];
        let ends = sessions_to_end(&both, 2);
        assert_eq!(ends.len(), 1);
        assert!(sessions_to_end(&both, 3).is_empty());
    }
}
