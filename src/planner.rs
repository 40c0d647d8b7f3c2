//! Pure decisions: who support logs in as, how long a grant lasts, which
//! addresses it opens, and what the reconciler must repair. No I/O here:
//! the engine gathers facts from the host, asks the planner, then acts.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::grants::{GrantRow, GrantState};
use crate::types::{InputError, ServerNum, SupportIp, TicketId, Username};

/// Grant lifetime policy (from `[access]`).
#[derive(Debug, Clone)]
pub struct TtlPolicy {
    pub default_ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub allow_unlimited: bool,
}

/// When a grant requested at `now` with `ttl` ends (None: never, only when
/// allowed). Every grant ends unless the admin opted into unlimited ones.
pub fn grant_end(
    now: i64,
    ttl: Option<u64>,
    policy: &TtlPolicy,
) -> Result<Option<i64>, InputError> {
    let ttl = ttl.unwrap_or(policy.default_ttl_secs);
    if ttl == 0 {
        if policy.allow_unlimited {
            return Ok(None);
        }
        return Err(InputError::new(
            "“ttl=0” (no expiry) is not allowed here; give a ttl in seconds, or set access.allow_unlimited = true.",
        ));
    }
    if ttl > policy.max_ttl_secs {
        return Err(InputError::new(format!(
            "“ttl” {ttl} is longer than the {} seconds allowed (access.max_ttl_secs).",
            policy.max_ttl_secs
        )));
    }
    let ttl = i64::try_from(ttl).map_err(|_| InputError::new("“ttl” is out of range."))?;
    Ok(Some(now.saturating_add(ttl)))
}

/// The support addresses a grant opens: those requested, else the
/// configured defaults; sorted and de-duplicated.
pub fn grant_ips(
    requested: &[SupportIp],
    defaults: &[SupportIp],
) -> Result<Vec<SupportIp>, InputError> {
    let chosen = if requested.is_empty() {
        defaults
    } else {
        requested
    };
    if chosen.is_empty() {
        return Err(InputError::new(
            "No support IP addresses: pass “access_ip-0=…”, or configure access.support_ips.",
        ));
    }
    let set: BTreeSet<SupportIp> = chosen.iter().copied().collect();
    Ok(set.into_iter().collect())
}

/// The union of the addresses every live grant needs, for the whitelist.
pub fn whitelist_ips(live: &[GrantRow]) -> Vec<SupportIp> {
    let set: BTreeSet<SupportIp> = live
        .iter()
        .filter(|g| matches!(g.state, GrantState::Active | GrantState::Granting))
        .flat_map(|g| g.access_ips.iter().copied())
        .collect();
    set.into_iter().collect()
}

/// The epoch in a new grant's key comment
/// (`<ticket>_server_<n>@cpanel.net_<epoch>`, cPanel's pattern): `now`,
/// or one past the latest any earlier grant of the same slot carried, so
/// every grant's comment is unique even when a slot is granted, revoked
/// and granted again within one second.
pub fn key_epoch(now: i64, earlier_comments: &[String]) -> i64 {
    earlier_comments
        .iter()
        .filter_map(|c| crate::authorized_keys::KeyMark::parse_comment(c))
        .map(|m| m.epoch.saturating_add(1))
        .fold(now, i64::max)
}

/// Whether a live grant other than `row` logs in as `row`'s temporary
/// user: then that user (and the ticket's sudoers drop-in) must stay.
pub fn temp_user_shared(live: &[GrantRow], row: &GrantRow) -> bool {
    row.temp_user
        && live.iter().any(|g| {
            g.id != row.id && g.temp_user && g.ssh_username == row.ssh_username && g.state.is_live()
        })
}

/// What sshd and sudo allow, as gathered by the engine.
#[derive(Debug, Clone)]
pub struct LoginFacts {
    /// For each support address: whether root may log in with a key from
    /// it (PermitRootLogin yes / prohibit-password / without-password).
    pub root_key_login: Vec<(SupportIp, bool)>,
    /// Other reasons root's key login would fail (AllowUsers, ...).
    pub root_blockers: Vec<String>,
    /// Reasons the temporary user's key login would fail.
    pub temp_blockers: Vec<String>,
    /// The group temporary users join (wheel/sudo), or why there is none.
    pub wheel_group: Result<String, String>,
    /// sudo is installed.
    pub sudo_present: bool,
    /// sudoers already lets `wheel_group` run everything.
    pub group_allows_sudo: bool,
    /// sudoers reads the drop-in directory.
    pub includes_dropins: bool,
    /// A requested non-root, non-temporary user: whether it exists, its
    /// login blockers, and whether it can become root with sudo.
    pub requested_exists: bool,
    pub requested_blockers: Vec<String>,
    pub requested_can_escalate: bool,
    /// Where sshd listens for support, from its effective configuration.
    pub ssh_endpoint: Option<std::net::SocketAddr>,
}

impl Default for LoginFacts {
    fn default() -> Self {
        LoginFacts {
            root_key_login: Vec::new(),
            root_blockers: Vec::new(),
            temp_blockers: Vec::new(),
            wheel_group: Err("not looked up".into()),
            sudo_present: false,
            group_allows_sudo: false,
            includes_dropins: false,
            requested_exists: false,
            requested_blockers: Vec::new(),
            requested_can_escalate: false,
            ssh_endpoint: None,
        }
    }
}

/// Who support logs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginPlan {
    Root,
    /// The temporary wheel user `cp<ticket>.ssh` (reference §4.2).
    Temporary {
        user: Username,
        group: String,
        sudoers_dropin: bool,
    },
    /// An existing account the admin named.
    Existing {
        user: Username,
    },
}

impl LoginPlan {
    pub fn user(&self) -> Username {
        match self {
            LoginPlan::Root => Username::root(),
            LoginPlan::Temporary { user, .. } | LoginPlan::Existing { user } => user.clone(),
        }
    }
}

/// Whether the login user must be decided from sshd (root vs temporary).
pub enum LoginRequest<'a> {
    Automatic,
    Root,
    Temporary,
    Existing(&'a Username),
}

/// Classifies the optional `ssh_username` of a grant.
pub fn classify_request<'a>(
    ticket: TicketId,
    requested: Option<&'a Username>,
) -> Result<LoginRequest<'a>, InputError> {
    match requested {
        None => Ok(LoginRequest::Automatic),
        Some(u) if u.is_root() => Ok(LoginRequest::Root),
        Some(u) => match u.temporary_ticket() {
            Some(t) if t == ticket => Ok(LoginRequest::Temporary),
            Some(t) => Err(InputError::new(format!(
                "“{u}” is the temporary user of ticket {t}, not of ticket {ticket}."
            ))),
            None => Ok(LoginRequest::Existing(u)),
        },
    }
}

/// Decides the login user. Root is used when sshd lets root log in with a
/// key from every support address; otherwise the temporary wheel user,
/// provided sudo can make it root.
pub fn decide_login(
    ticket: TicketId,
    request: &LoginRequest<'_>,
    facts: &LoginFacts,
) -> Result<LoginPlan, InputError> {
    let root_denied: Vec<String> = facts
        .root_key_login
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(ip, _)| ip.to_string())
        .collect();
    let root_ok = root_denied.is_empty() && facts.root_blockers.is_empty();
    match request {
        LoginRequest::Root if root_ok => Ok(LoginPlan::Root),
        LoginRequest::Root => {
            let mut why = Vec::new();
            if !root_denied.is_empty() {
                why.push(format!(
                    "sshd's PermitRootLogin does not allow root to log in with a key from {}",
                    root_denied.join(", ")
                ));
            }
            why.extend(facts.root_blockers.iter().cloned());
            Err(InputError::new(format!(
                "Root cannot be used: {}. Omit ssh_username to use a temporary wheel user, or set “PermitRootLogin prohibit-password” in sshd_config.",
                why.join("; ")
            )))
        }
        LoginRequest::Automatic if root_ok => Ok(LoginPlan::Root),
        LoginRequest::Automatic | LoginRequest::Temporary => temporary_plan(ticket, facts),
        LoginRequest::Existing(user) => {
            if !facts.requested_exists {
                return Err(InputError::new(format!(
                    "The user “{user}” does not exist on this server."
                )));
            }
            if !facts.requested_blockers.is_empty() {
                return Err(InputError::new(format!(
                    "sshd would refuse “{user}”: {}.",
                    facts.requested_blockers.join("; ")
                )));
            }
            if !facts.requested_can_escalate {
                return Err(InputError::new(format!(
                    "The user “{user}” cannot escalate to root: it is not in a group that sudoers allows to run every command. Add it to the wheel/sudo group, or omit ssh_username."
                )));
            }
            Ok(LoginPlan::Existing {
                user: (*user).clone(),
            })
        }
    }
}

fn temporary_plan(ticket: TicketId, facts: &LoginFacts) -> Result<LoginPlan, InputError> {
    let user = Username::temporary_for(ticket);
    let group = facts.wheel_group.clone().map_err(|why| {
        InputError::new(format!(
            "Root cannot log in over SSH and no wheel group is available for a temporary user ({why}). Enable “PermitRootLogin prohibit-password”, or set access.wheel_group."
        ))
    })?;
    if !facts.sudo_present {
        return Err(InputError::new(
            "Root cannot log in over SSH and sudo is not installed, so a temporary user could not become root. Enable “PermitRootLogin prohibit-password” or install sudo.",
        ));
    }
    if !facts.group_allows_sudo && !facts.includes_dropins {
        return Err(InputError::new(format!(
            "Root cannot log in over SSH, sudoers does not let “{group}” run commands, and it does not read a drop-in directory. Enable “PermitRootLogin prohibit-password”, or allow %{group} in sudoers."
        )));
    }
    if !facts.temp_blockers.is_empty() {
        return Err(InputError::new(format!(
            "sshd would refuse the temporary user “{user}”: {}.",
            facts.temp_blockers.join("; ")
        )));
    }
    Ok(LoginPlan::Temporary {
        user,
        group,
        sudoers_dropin: !facts.group_allows_sudo,
    })
}

/// One of our keys as found on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObservedKey {
    pub user: Username,
    pub ticket: TicketId,
    pub server: ServerNum,
    pub comment: String,
    /// Whether the copy WHM lists is in place with the right content.
    pub copy_intact: bool,
    /// The line's `expiry-time` value (`YYYYMMDDHHMMSSZ`), if it has one.
    pub expiry: Option<String>,
}

/// What the reconciler found on the host.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Users whose authorized_keys were read (keys of other users unknown).
    pub scanned_users: BTreeSet<Username>,
    pub keys: Vec<ObservedKey>,
    /// Temporary users that carry our marker.
    pub temp_users: BTreeSet<Username>,
    /// Our sudoers drop-ins, by ticket.
    pub sudoers: BTreeSet<TicketId>,
}

/// A repair that brings the host back to the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Repair {
    /// A grant interrupted before its done mark: the caller never heard
    /// "yes", so undo it.
    RollBackGranting { grant_id: i64 },
    /// A revoke interrupted before it completed: finish it.
    FinishRevoking { grant_id: i64 },
    /// An active grant's key is gone (an admin removed it, or a revoke the
    /// store could not record did): access is gone, so end the grant. The
    /// reconciler never puts a key back.
    EndGrantKeyGone { grant_id: i64 },
    /// An active grant's key is in place but the copy WHM lists is missing
    /// or damaged (someone else's hand): rewrite it (it grants nothing).
    RewriteKeyCopy { grant_id: i64 },
    /// An active grant's key line carries another `expiry-time` than the
    /// store's end (an extension interrupted before its done mark, or a
    /// hand edit): rewrite the line to the store's end, the truth.
    RewriteKeyExpiry { grant_id: i64 },
    /// An active grant's sudoers drop-in is missing: put it back.
    ReinstallSudoers { grant_id: i64 },
    /// An active grant's temporary user was deleted by someone else: the
    /// access is gone, so end the grant rather than resurrect the account.
    EndGrantUserGone { grant_id: i64 },
    /// A key with our mark that no live grant owns.
    RemoveOrphanKey { user: Username, comment: String },
    /// A temporary user of ours that no live grant uses.
    DeleteOrphanUser { user: Username },
    /// A sudoers drop-in of ours that no live grant uses.
    RemoveOrphanSudoers { ticket: TicketId },
}

impl Repair {
    /// A short name, for fault points and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Repair::RollBackGranting { .. } => "roll_back_granting",
            Repair::FinishRevoking { .. } => "finish_revoking",
            Repair::EndGrantKeyGone { .. } => "end_grant_key_gone",
            Repair::RewriteKeyCopy { .. } => "rewrite_key_copy",
            Repair::RewriteKeyExpiry { .. } => "rewrite_key_expiry",
            Repair::ReinstallSudoers { .. } => "reinstall_sudoers",
            Repair::EndGrantUserGone { .. } => "end_grant_user_gone",
            Repair::RemoveOrphanKey { .. } => "remove_orphan_key",
            Repair::DeleteOrphanUser { .. } => "delete_orphan_user",
            Repair::RemoveOrphanSudoers { .. } => "remove_orphan_sudoers",
        }
    }
}

/// Compares the store's live grants with the host and lists the repairs,
/// in the order they must run (finish interrupted work first, then fix
/// active grants, then sweep orphans).
pub fn plan_reconcile(live: &[GrantRow], seen: &Observation) -> Vec<Repair> {
    let mut repairs = Vec::new();
    // Keys that a live grant legitimately owns: (user, comment).
    let mut owned: BTreeSet<(Username, String)> = BTreeSet::new();
    let mut users_in_use: BTreeSet<Username> = BTreeSet::new();
    let mut sudoers_in_use: BTreeSet<TicketId> = BTreeSet::new();
    // (user, comment) -> the key as found.
    let present: BTreeMap<(Username, String), &ObservedKey> = seen
        .keys
        .iter()
        .map(|k| ((k.user.clone(), k.comment.clone()), k))
        .collect();

    for g in live {
        match g.state {
            GrantState::Granting => repairs.push(Repair::RollBackGranting { grant_id: g.id }),
            GrantState::Revoking => repairs.push(Repair::FinishRevoking { grant_id: g.id }),
            GrantState::Active => {
                owned.insert((g.ssh_username.clone(), g.key_comment.clone()));
                if g.temp_user {
                    users_in_use.insert(g.ssh_username.clone());
                    if !seen.temp_users.contains(&g.ssh_username) {
                        repairs.push(Repair::EndGrantUserGone { grant_id: g.id });
                        continue;
                    }
                }
                if g.sudoers_dropin {
                    sudoers_in_use.insert(g.ticket);
                    if !seen.sudoers.contains(&g.ticket) {
                        repairs.push(Repair::ReinstallSudoers { grant_id: g.id });
                    }
                }
                if seen.scanned_users.contains(&g.ssh_username) {
                    match present.get(&(g.ssh_username.clone(), g.key_comment.clone())) {
                        None => repairs.push(Repair::EndGrantKeyGone { grant_id: g.id }),
                        Some(k) => {
                            if k.expiry != g.expires_at.map(crate::clock::openssh_expiry) {
                                repairs.push(Repair::RewriteKeyExpiry { grant_id: g.id });
                            }
                            if !k.copy_intact {
                                repairs.push(Repair::RewriteKeyCopy { grant_id: g.id });
                            }
                        }
                    }
                }
            }
            GrantState::Revoked | GrantState::Failed => {}
        }
    }
    // Interrupted grants and revokes clean up their own footprint, so their
    // keys, users and drop-ins are not orphans to sweep separately.
    for g in live
        .iter()
        .filter(|g| matches!(g.state, GrantState::Granting | GrantState::Revoking))
    {
        owned.insert((g.ssh_username.clone(), g.key_comment.clone()));
        if g.temp_user {
            users_in_use.insert(g.ssh_username.clone());
        }
        if g.sudoers_dropin {
            sudoers_in_use.insert(g.ticket);
        }
    }
    for k in &seen.keys {
        if !owned.contains(&(k.user.clone(), k.comment.clone())) {
            repairs.push(Repair::RemoveOrphanKey {
                user: k.user.clone(),
                comment: k.comment.clone(),
            });
        }
    }
    for u in &seen.temp_users {
        if !users_in_use.contains(u) {
            repairs.push(Repair::DeleteOrphanUser { user: u.clone() });
        }
    }
    for t in &seen.sudoers {
        if !sudoers_in_use.contains(t) {
            repairs.push(Repair::RemoveOrphanSudoers { ticket: *t });
        }
    }
    repairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> SupportIp {
        SupportIp::parse(s).unwrap()
    }
    fn t(s: &str) -> TicketId {
        TicketId::parse(s).unwrap()
    }

    fn policy() -> TtlPolicy {
        TtlPolicy {
            default_ttl_secs: 3600,
            max_ttl_secs: 7200,
            allow_unlimited: false,
        }
    }

    #[test]
    fn every_grant_ends() {
        assert_eq!(grant_end(1000, None, &policy()), Ok(Some(4600)));
        assert_eq!(grant_end(1000, Some(60), &policy()), Ok(Some(1060)));
        assert!(grant_end(1000, Some(0), &policy()).is_err());
        assert!(grant_end(1000, Some(7201), &policy()).is_err());
        let open = TtlPolicy {
            allow_unlimited: true,
            ..policy()
        };
        assert_eq!(grant_end(1000, Some(0), &open), Ok(None));
    }

    #[test]
    fn ips_default_and_dedupe() {
        let d = [ip("203.0.113.5")];
        assert_eq!(grant_ips(&[], &d).unwrap(), vec![ip("203.0.113.5")]);
        let r = [ip("198.51.100.2"), ip("198.51.100.1"), ip("198.51.100.2")];
        assert_eq!(grant_ips(&r, &d).unwrap().len(), 2);
        assert!(grant_ips(&[], &[]).is_err());
    }

    fn facts(root_ok: bool) -> LoginFacts {
        LoginFacts {
            root_key_login: vec![(ip("203.0.113.5"), root_ok), (ip("203.0.113.6"), true)],
            wheel_group: Ok("wheel".into()),
            sudo_present: true,
            group_allows_sudo: true,
            includes_dropins: true,
            ..LoginFacts::default()
        }
    }

    #[test]
    fn root_when_sshd_allows_it_from_every_address() {
        let plan = decide_login(t("1234"), &LoginRequest::Automatic, &facts(true)).unwrap();
        assert_eq!(plan, LoginPlan::Root);
    }

    #[test]
    fn temporary_user_when_root_is_refused_from_any_address() {
        let plan = decide_login(t("1234"), &LoginRequest::Automatic, &facts(false)).unwrap();
        assert_eq!(
            plan,
            LoginPlan::Temporary {
                user: Username::parse("cp1234.ssh").unwrap(),
                group: "wheel".into(),
                sudoers_dropin: false
            }
        );
        let mut f = facts(false);
        f.group_allows_sudo = false;
        let plan = decide_login(t("1234"), &LoginRequest::Automatic, &f).unwrap();
        assert!(matches!(
            plan,
            LoginPlan::Temporary {
                sudoers_dropin: true,
                ..
            }
        ));
    }

    #[test]
    fn refusals_say_what_to_do() {
        let err = decide_login(t("1234"), &LoginRequest::Root, &facts(false)).unwrap_err();
        assert!(err.0.contains("PermitRootLogin"), "{err}");
        assert!(err.0.contains("203.0.113.5"), "{err}");
        let mut f = facts(false);
        f.sudo_present = false;
        let err = decide_login(t("1234"), &LoginRequest::Automatic, &f).unwrap_err();
        assert!(err.0.contains("sudo"), "{err}");
        let mut f = facts(false);
        f.group_allows_sudo = false;
        f.includes_dropins = false;
        assert!(decide_login(t("1234"), &LoginRequest::Automatic, &f).is_err());
        let mut f = facts(false);
        f.temp_blockers = vec!["AllowUsers does not list it".into()];
        let err = decide_login(t("1234"), &LoginRequest::Automatic, &f).unwrap_err();
        assert!(err.0.contains("AllowUsers"), "{err}");
        let admin = Username::parse("admin").unwrap();
        let err =
            decide_login(t("1234"), &LoginRequest::Existing(&admin), &facts(true)).unwrap_err();
        assert!(err.0.contains("does not exist"), "{err}");
    }

    #[test]
    fn classify_temporary_names() {
        let own = Username::parse("cp1234.ssh").unwrap();
        let other = Username::parse("cp9999.ssh").unwrap();
        assert!(matches!(
            classify_request(t("1234"), Some(&own)),
            Ok(LoginRequest::Temporary)
        ));
        assert!(classify_request(t("1234"), Some(&other)).is_err());
    }

    fn row(id: i64, ticket: &str, state: GrantState, user: &str, temp: bool) -> GrantRow {
        GrantRow {
            id,
            ticket: t(ticket),
            server: ServerNum::parse("1").unwrap(),
            state,
            source: crate::domain::GrantSource::Local,
            ssh_username: Username::parse(user).unwrap(),
            temp_user: temp,
            sudoers_dropin: temp,
            ssh_dir_created: false,
            ssh_key: "ssh-ed25519 AAAA".into(),
            key_fingerprint: String::new(),
            key_comment: format!("{ticket}_server_1@cpanel.net_1"),
            access_ips: vec![ip("203.0.113.5")],
            server_name: String::new(),
            ticket_subject: String::new(),
            ssh_ip: String::new(),
            ssh_port: 22,
            whm_ip: String::new(),
            ticket_status: crate::domain::TicketStatus::Open,
            created_at: 0,
            expires_at: Some(10),
            ended_at: None,
            end_reason: None,
            granted_by: String::new(),
        }
    }

    fn key(user: &str, ticket: &str) -> ObservedKey {
        ObservedKey {
            user: Username::parse(user).unwrap(),
            ticket: t(ticket),
            server: ServerNum::parse("1").unwrap(),
            comment: format!("{ticket}_server_1@cpanel.net_1"),
            copy_intact: true,
            // The rows' end (expires_at 10).
            expiry: Some(crate::clock::openssh_expiry(10)),
        }
    }

    #[test]
    fn reconcile_converges_each_kind_of_drift() {
        let live = vec![
            row(1, "1001", GrantState::Granting, "root", false),
            row(2, "1002", GrantState::Revoking, "root", false),
            row(3, "1003", GrantState::Active, "root", false),
            row(4, "1004", GrantState::Active, "cp1004.ssh", true),
            row(5, "1005", GrantState::Active, "cp1005.ssh", true),
            // Granting at start: the caller never heard "yes", even with
            // its key in place.
            row(6, "1006", GrantState::Granting, "root", false),
        ];
        let seen = Observation {
            scanned_users: ["root", "cp1004.ssh"]
                .iter()
                .map(|u| Username::parse(u).unwrap())
                .collect(),
            keys: vec![
                key("root", "1001"),
                key("root", "9999"),
                key("cp1004.ssh", "1004"),
                key("root", "1006"),
            ],
            temp_users: ["cp1004.ssh", "cp7777.ssh"]
                .iter()
                .map(|u| Username::parse(u).unwrap())
                .collect(),
            sudoers: [t("7777")].into_iter().collect(),
        };
        let repairs = plan_reconcile(&live, &seen);
        assert_eq!(
            repairs,
            vec![
                Repair::RollBackGranting { grant_id: 1 },
                Repair::FinishRevoking { grant_id: 2 },
                Repair::EndGrantKeyGone { grant_id: 3 },
                Repair::ReinstallSudoers { grant_id: 4 },
                Repair::EndGrantUserGone { grant_id: 5 },
                Repair::RollBackGranting { grant_id: 6 },
                Repair::RemoveOrphanKey {
                    user: Username::root(),
                    comment: "9999_server_1@cpanel.net_1".into()
                },
                Repair::DeleteOrphanUser {
                    user: Username::parse("cp7777.ssh").unwrap()
                },
                Repair::RemoveOrphanSudoers { ticket: t("7777") },
            ]
        );
    }

    #[test]
    fn a_damaged_whm_copy_is_rewritten_and_a_missing_key_ends_its_grant() {
        let live = vec![
            row(3, "1003", GrantState::Active, "root", false),
            row(6, "1006", GrantState::Active, "root", false),
        ];
        let mut damaged = key("root", "1003");
        damaged.copy_intact = false;
        let seen = Observation {
            scanned_users: [Username::root()].into_iter().collect(),
            keys: vec![damaged],
            ..Observation::default()
        };
        assert_eq!(
            plan_reconcile(&live, &seen),
            vec![
                Repair::RewriteKeyCopy { grant_id: 3 },
                Repair::EndGrantKeyGone { grant_id: 6 },
            ]
        );
    }

    /// The store's end is the truth: a key line whose expiry-time differs
    /// (an extension interrupted before its done mark) is rewritten; a
    /// grant without an end wants a line without one.
    #[test]
    fn a_key_line_with_another_end_than_the_store_is_rewritten() {
        let mut unlimited = row(4, "1004", GrantState::Active, "root", false);
        unlimited.expires_at = None;
        let live = vec![
            row(3, "1003", GrantState::Active, "root", false),
            unlimited,
            row(5, "1005", GrantState::Active, "root", false),
        ];
        let mut moved = key("root", "1003");
        moved.expiry = Some(crate::clock::openssh_expiry(99_999));
        let with_end = key("root", "1004");
        let mut none = key("root", "1005");
        none.expiry = None;
        let seen = Observation {
            scanned_users: [Username::root()].into_iter().collect(),
            keys: vec![moved, with_end, none],
            ..Observation::default()
        };
        assert_eq!(
            plan_reconcile(&live, &seen),
            vec![
                Repair::RewriteKeyExpiry { grant_id: 3 },
                Repair::RewriteKeyExpiry { grant_id: 4 },
                Repair::RewriteKeyExpiry { grant_id: 5 },
            ]
        );
        // In step: nothing to do.
        let seen = Observation {
            scanned_users: [Username::root()].into_iter().collect(),
            keys: vec![key("root", "1003")],
            ..Observation::default()
        };
        assert!(plan_reconcile(&live[..1], &seen).is_empty());
    }

    /// Issue 14, finding 5: same-second re-grants of a slot get distinct
    /// comments, all in cPanel's pattern.
    #[test]
    fn every_grant_of_a_slot_gets_its_own_comment() {
        let slot = |epoch| {
            crate::authorized_keys::KeyMark::new(t("1001"), ServerNum::parse("1").unwrap(), epoch)
        };
        let mut comments = Vec::new();
        for _ in 0..3 {
            let mark = slot(key_epoch(500, &comments));
            assert_eq!(
                crate::authorized_keys::KeyMark::parse_comment(&mark.comment()),
                Some(mark)
            );
            assert!(!comments.contains(&mark.comment()), "{comments:?}");
            comments.push(mark.comment());
        }
        assert_eq!(comments[0], "1001_server_1@cpanel.net_500");
        // Time moving on is used as is; foreign text is ignored.
        comments.push("not ours".into());
        assert_eq!(key_epoch(900, &comments), 900);
    }

    /// Issue 14, finding 1: a temporary user stays while another live grant
    /// of its ticket logs in as it.
    #[test]
    fn a_temporary_user_belongs_to_every_live_grant_using_it() {
        let first = row(1, "1004", GrantState::Active, "cp1004.ssh", true);
        let mut second = row(2, "1004", GrantState::Granting, "cp1004.ssh", true);
        second.server = ServerNum::parse("2").unwrap();
        let live = [first.clone(), second.clone()];
        assert!(temp_user_shared(&live, &second));
        assert!(temp_user_shared(&live, &first));
        assert!(!temp_user_shared(&live[..1], &first));
        let mut ended = second.clone();
        ended.state = GrantState::Failed;
        assert!(!temp_user_shared(&[first.clone(), ended], &first));
        let root = row(3, "1005", GrantState::Active, "root", false);
        assert!(!temp_user_shared(&[root.clone(), root.clone()], &root));
    }

    #[test]
    fn converged_host_needs_no_repair() {
        let live = vec![row(3, "1003", GrantState::Active, "root", false)];
        let seen = Observation {
            scanned_users: [Username::root()].into_iter().collect(),
            keys: vec![key("root", "1003")],
            ..Observation::default()
        };
        assert!(plan_reconcile(&live, &seen).is_empty());
    }

    #[test]
    fn whitelist_is_union_of_live_grants() {
        let mut a = row(1, "1001", GrantState::Active, "root", false);
        a.access_ips = vec![ip("203.0.113.5"), ip("203.0.113.6")];
        let b = row(2, "1002", GrantState::Revoking, "root", false);
        let c = row(3, "1003", GrantState::Active, "root", false);
        assert_eq!(whitelist_ips(&[a, b, c]).len(), 2);
        assert!(whitelist_ips(&[]).is_empty());
    }
}
