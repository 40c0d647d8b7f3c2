//! Making a grant, as a straight line. Fails closed: every step below is
//! durable before the next one starts, and anything short of the done mark
//! is undone before the caller hears "no".
//!
//! 1. intent: the `granting` row, committed (fsynced);
//! 2. host: temporary user, password, sudoers drop-in, key (each audited);
//! 3. the closing audit records `key_added` + `grant`, fsynced;
//! 4. the done mark (`active`) and the audit chain head, one fsynced commit;
//! 5. the answer.
//!
//! A crash before 4 leaves a `granting` row, which the next start rolls
//! back (the caller never heard "yes"); after 4 the grant stands.

use std::net::IpAddr;

use serde_json::json;

use super::Engine;
use crate::audit::{AuditEvent, Outcome};
use crate::authorized_keys::{render_line, KeyMark};
use crate::domain::caller::Caller;
use crate::domain::GrantSource;
use crate::engine::WhitelistOutcome;
use crate::planner::{self, LoginFacts, LoginPlan, LoginRequest};
use crate::sshkey::SupportKey;
use crate::store::grants::{GrantRow, GrantState, InsertError, NewGrant};
use crate::system::keystore::{InstalledKey, KeyAccount};
use crate::system::users::Secret;
use crate::types::{ServerNum, SupportIp, TicketId, Username};

/// A validated request for access.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub ticket: TicketId,
    pub server: ServerNum,
    pub key: SupportKey,
    pub ssh_username: Option<Username>,
    pub ttl: Option<u64>,
    pub access_ips: Vec<SupportIp>,
    pub source: GrantSource,
    pub server_name: String,
    pub ticket_subject: String,
    pub ssh_ip: String,
    pub ssh_port: u16,
    pub whm_ip: String,
}

/// A grant that is in force.
#[derive(Debug)]
pub struct Granted {
    pub row: GrantRow,
    /// The temporary user's password, shown once (never logged or stored).
    /// `None` for root, an existing user, and a temporary user that another
    /// live grant of the ticket created (its password was shown then).
    pub password: Option<Secret>,
    /// The temporary user was already there for another server's grant of
    /// the same ticket, and is shared.
    pub shared_user: bool,
    pub whitelist: WhitelistOutcome,
    pub non_fatals: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Against policy, or sshd/sudo would not let the login in; nothing
    /// was touched.
    #[error("{0}")]
    Refused(String),
    /// The ticket and server already have a key (in the store, or on the
    /// host by someone else's hand); nothing was touched.
    #[error(
        "A key for ticket {ticket} server {server} is already present{place}. Revoke it first."
    )]
    AlreadyPresent {
        ticket: TicketId,
        server: ServerNum,
        /// Where it was found, for the message (may be empty).
        place: String,
    },
    /// The store or the host could not be read to decide; nothing was
    /// touched.
    #[error(transparent)]
    Engine(#[from] super::EngineError),
    /// Something failed part-way; everything done was rolled back.
    #[error("The grant for ticket {ticket} server {server} failed and was rolled back: {why}")]
    RolledBack {
        ticket: TicketId,
        server: ServerNum,
        why: String,
    },
}

impl From<crate::store::StoreError> for GrantError {
    fn from(e: crate::store::StoreError) -> Self {
        GrantError::Engine(e.into())
    }
}

fn audit_failed(e: impl std::fmt::Display) -> String {
    format!("the audit log could not be written: {e}")
}

/// A host change made during a grant, undone in reverse on failure.
enum Done {
    UserCreated(Username),
    SudoersInstalled(TicketId),
    KeyInstalled(KeyAccount, KeyMark),
}

/// What the planner decided, before the change lock.
struct Planned {
    now: i64,
    expires_at: Option<i64>,
    ips: Vec<SupportIp>,
    plan: LoginPlan,
    ssh_endpoint: Option<std::net::SocketAddr>,
    /// Time spent asking sshd and sudo.
    facts_us: u64,
}

/// What the grant decided before touching anything.
struct Decided {
    line: String,
    mark: KeyMark,
    /// The wheel group, when this grant creates the temporary user.
    create_user_in: Option<String>,
    shared_user: bool,
    /// The account the key goes to, when it exists already.
    account: Option<KeyAccount>,
}

impl Engine {
    pub async fn grant(&self, caller: &Caller, req: GrantRequest) -> Result<Granted, GrantError> {
        // One grant at a time goes on from here, so a revoke or the kill
        // switch waits behind one grant's durable steps at most, never
        // behind a queue of grants; and what takes time (`sshd -T` for
        // every support address) runs before the change lock is taken.
        let _queued = self.grant_queue.lock().await;
        let started = std::time::Instant::now();
        let planned = self.plan_grant(&req)?;
        let facts_us = planned.facts_us;
        let serial = self.changes.lock().await;
        let (new, decided) = self.decide_grant(caller, &req, planned).await?;
        // 1. The intent.
        let row = match self.store.insert_granting(&new).await {
            Ok(row) => row,
            Err(InsertError::AlreadyLive(e)) => {
                return Err(GrantError::AlreadyPresent {
                    ticket: e.ticket,
                    server: e.server,
                    place: String::new(),
                })
            }
            Err(InsertError::Store(e)) => return Err(e.into()),
        };
        super::fault::point("after_intent");
        // 2-4. The host, the closing records, the done mark.
        let mut done = Vec::new();
        let mut password = None;
        let live = match self
            .apply_grant(caller, &row, &decided, &mut done, &mut password)
            .await
        {
            Ok(live) => live,
            Err(why) => {
                self.roll_back(caller, &row, done, &why).await;
                return Err(GrantError::RolledBack {
                    ticket: row.ticket,
                    server: row.server,
                    why,
                });
            }
        };
        let row = GrantRow {
            state: GrantState::Active,
            ..row
        };
        // The firewall follows the live grants, best effort per backend and
        // reported in the answer (reference §3), like cPanel.
        let mut non_fatals = Vec::new();
        let whitelist = self
            .converge_whitelist(serial, Some(live), caller, &mut non_fatals)
            .await;
        self.grants_changed.notify_one();
        // Time in external tools (sshd -T) apart from our own work, so the
        // benchmark can compare the rest with the durable-write floor.
        tracing::debug!(
            ticket = %row.ticket,
            facts_us,
            total_us = started.elapsed().as_micros() as u64,
            "grant timing"
        );
        Ok(Granted {
            row,
            password,
            shared_user: decided.shared_user,
            whitelist,
            non_fatals,
        })
    }

    /// What needs no lock: the request against policy, and who may log in
    /// according to sshd and sudo (the planner's decision).
    fn plan_grant(&self, req: &GrantRequest) -> Result<Planned, GrantError> {
        let now = self.clock.now();
        let policy = self.policy();
        let expires_at =
            planner::grant_end(now, req.ttl, &policy.ttl).map_err(|e| GrantError::Refused(e.0))?;
        let ips = planner::grant_ips(&req.access_ips, &policy.default_ips)
            .map_err(|e| GrantError::Refused(e.0))?;
        let request = planner::classify_request(req.ticket, req.ssh_username.as_ref())
            .map_err(|e| GrantError::Refused(e.0))?;
        let facts_started = std::time::Instant::now();
        let facts =
            tokio::task::block_in_place(|| login_facts(&self.host, &request, req.ticket, &ips))
                .map_err(GrantError::Refused)?;
        let facts_us = facts_started.elapsed().as_micros() as u64;
        let plan = planner::decide_login(req.ticket, &request, &facts)
            .map_err(|e| GrantError::Refused(e.0))?;
        Ok(Planned {
            now,
            expires_at,
            ips,
            plan,
            ssh_endpoint: facts.ssh_endpoint,
            facts_us,
        })
    }

    /// Under the change lock: checks the plan against the store and the
    /// host, and decides what goes into authorized_keys. Touches nothing.
    async fn decide_grant(
        &self,
        caller: &Caller,
        req: &GrantRequest,
        planned: Planned,
    ) -> Result<(NewGrant, Decided), GrantError> {
        let Planned {
            now,
            expires_at,
            ips,
            plan,
            ssh_endpoint,
            ..
        } = planned;
        // A local grant reports (and its SSH test checks) where sshd really
        // listens; a portal grant keeps the portal's values.
        let (ssh_ip, ssh_port) = match (req.source, ssh_endpoint) {
            (GrantSource::Local, Some(at)) => (at.ip().to_string(), at.port()),
            _ => (req.ssh_ip.clone(), req.ssh_port),
        };
        let user = plan.user();
        let (temp_user, sudoers_dropin, group) = match &plan {
            LoginPlan::Temporary {
                group,
                sudoers_dropin,
                ..
            } => (true, *sudoers_dropin, Some(group.clone())),
            _ => (false, false, None),
        };
        let context = self.store.grant_context(req.ticket, req.server).await?;
        let (account, present) =
            tokio::task::block_in_place(|| read_key_account(&self.host, &user))?;
        let live = &context.live;
        if let Some(existing) = live
            .iter()
            .find(|g| g.ticket == req.ticket && g.server == req.server)
        {
            return Err(GrantError::AlreadyPresent {
                ticket: req.ticket,
                server: req.server,
                place: format!(" (as “{}”)", existing.ssh_username),
            });
        }
        // Another live grant of this ticket may have created the temporary
        // user already: this one shares it (no new password, no new user).
        let shared_user = temp_user && live.iter().any(|g| g.temp_user && g.ssh_username == user);
        if temp_user && !shared_user && account.is_some() {
            return Err(GrantError::Refused(format!(
                "The temporary user {user} exists but no live grant uses it; supportauth removes \
                 such leftovers at its next reconciliation pass (access.reconcile_interval_secs, or \
                 a daemon restart). Grant again after that."
            )));
        }
        // A key of ours for this ticket and server already on the host
        // (left by someone else's hand) is refused rather than doubled.
        if present
            .iter()
            .flatten()
            .any(|k| k.mark.ticket == req.ticket && k.mark.server == req.server)
        {
            return Err(GrantError::AlreadyPresent {
                ticket: req.ticket,
                server: req.server,
                place: format!(" in {user}'s authorized_keys"),
            });
        }
        // An account without ~/.ssh gets one from the install; its revoke
        // takes it away again (a temporary user's goes with it).
        let ssh_dir_created = !temp_user && account.is_some() && present.is_none();
        let mark = KeyMark::new(
            req.ticket,
            req.server,
            planner::key_epoch(now, &context.slot_comments),
        );
        let line = render_line(&req.key, &ips, expires_at, &mark)
            .map_err(|e| GrantError::Refused(e.to_string()))?;
        let new = NewGrant {
            ticket: req.ticket,
            server: req.server,
            source: req.source,
            ssh_username: user,
            temp_user,
            sudoers_dropin,
            ssh_dir_created,
            ssh_key: req.key.openssh(),
            key_fingerprint: req.key.fingerprint(),
            key_comment: mark.comment(),
            access_ips: ips,
            server_name: req.server_name.clone(),
            ticket_subject: req.ticket_subject.clone(),
            ssh_ip,
            ssh_port,
            whm_ip: req.whm_ip.clone(),
            created_at: now,
            expires_at,
            granted_by: caller.actor(),
        };
        let decided = Decided {
            line,
            mark,
            create_user_in: group.filter(|_| !shared_user),
            shared_user,
            account,
        };
        Ok((new, decided))
    }

    /// Steps 2-4: the host changes (each audited), the closing records and
    /// the done mark. `done` collects what to undo on failure. Returns the
    /// live grants as the done mark left them.
    async fn apply_grant(
        &self,
        caller: &Caller,
        row: &GrantRow,
        decided: &Decided,
        done: &mut Vec<Done>,
        password: &mut Option<Secret>,
    ) -> Result<Vec<GrantRow>, String> {
        let user = &row.ssh_username;
        if let Some(group) = &decided.create_user_in {
            let users = self.host.users.clone();
            let created = tokio::task::block_in_place(|| users.create_temp(user, group))
                .map_err(|e| format!("creating the temporary user {user} failed: {e}"))?;
            done.push(Done::UserCreated(user.clone()));
            super::fault::point("after_user_created");
            self.audit_for(
                caller,
                "user_created",
                row,
                Outcome::Ok,
                json!({"group": group, "uid": created.uid}),
            )
            .await
            .map_err(audit_failed)?;
            let secret = Secret::generate().map_err(|e| format!("no random password: {e}"))?;
            tokio::task::block_in_place(|| users.set_password(user, &secret))
                .map_err(|e| format!("setting the temporary user's password failed: {e}"))?;
            self.audit_for(caller, "password_set", row, Outcome::Ok, json!({}))
                .await
                .map_err(audit_failed)?;
            *password = Some(secret);
            super::fault::point("after_password_set");
            if row.sudoers_dropin {
                let sudoers = self.host.sudoers.clone();
                tokio::task::block_in_place(|| sudoers.install(row.ticket, user))
                    .map_err(|e| format!("installing the sudoers drop-in failed: {e}"))?;
                done.push(Done::SudoersInstalled(row.ticket));
                super::fault::point("after_sudoers_installed");
                self.audit_for(
                    caller,
                    "sudoers_added",
                    row,
                    Outcome::Ok,
                    json!({"file": format!("ticket{}", row.ticket)}),
                )
                .await
                .map_err(audit_failed)?;
            }
        }
        let acct = match &decided.account {
            Some(acct) => acct.clone(),
            None => self
                .host
                .key_account_of(user)?
                .ok_or_else(|| format!("the user {user} does not exist"))?,
        };
        let keys = self.host.keys.clone();
        tokio::task::block_in_place(|| keys.install(&acct, &decided.line, &decided.mark))
            .map_err(|e| format!("installing the key for {user} failed: {e}"))?;
        done.push(Done::KeyInstalled(acct.clone(), decided.mark));
        super::fault::point("after_key_installed");
        // 3. One durable append for both closing records.
        let head = self
            .audit
            .append_closing(&Self::closing_events(caller, row, &acct))
            .await
            .map_err(audit_failed)?;
        super::fault::point("after_grant_audited");
        // 4. The done mark, with the chain head those records moved to.
        let live = self
            .store
            .finish(
                row.id,
                GrantState::Active,
                None,
                head.as_ref().map(|h| (h.seq, h.hash.as_str())),
            )
            .await
            .map_err(|e| format!("the state database failed: {e}"))?;
        if let Some(head) = &head {
            self.audit.head_committed(head).await;
        }
        super::fault::point("after_grant_done");
        Ok(live)
    }

    /// The records that close a grant: the key went in, access granted.
    fn closing_events(caller: &Caller, row: &GrantRow, acct: &KeyAccount) -> [AuditEvent; 2] {
        let key_added = Self::event_for(
            caller,
            "key_added",
            row,
            Outcome::Ok,
            json!({"fingerprint": row.key_fingerprint, "comment": row.key_comment,
                   "home": acct.home.display().to_string()}),
        );
        let granted = Self::event_for(
            caller,
            "grant",
            row,
            Outcome::Ok,
            json!({
                "expires_at": row.expires_at,
                "access_ips": row.access_ips,
                "fingerprint": row.key_fingerprint,
                "temp_user": row.temp_user,
                "key_file": acct.home.join(".ssh/authorized_keys").display().to_string(),
                "source": row.source,
            }),
        );
        [key_added, granted]
    }

    /// Undoes what a failed grant did, newest first; every undo is
    /// attempted even when an earlier one fails.
    async fn roll_back(&self, caller: &Caller, row: &GrantRow, done: Vec<Done>, why: &str) {
        let mut non_fatals = Vec::new();
        for step in done.into_iter().rev() {
            let (event, undone) = match step {
                Done::KeyInstalled(acct, mark) => {
                    let keys = self.host.keys.clone();
                    let r = tokio::task::block_in_place(|| {
                        keys.remove(&acct, &|m: &KeyMark| m.same_slot(&mark))
                    });
                    if r.is_ok() {
                        self.tidy_ssh_dir(row, &acct);
                    }
                    ("key_removed", r.map(|_| ()).map_err(|e| e.to_string()))
                }
                Done::SudoersInstalled(ticket) => {
                    let sudoers = self.host.sudoers.clone();
                    let r = tokio::task::block_in_place(|| sudoers.remove(ticket));
                    ("sudoers_removed", r.map(|_| ()).map_err(|e| e.to_string()))
                }
                Done::UserCreated(user) => {
                    let users = self.host.users.clone();
                    let r = tokio::task::block_in_place(|| users.delete_temp(&user));
                    ("user_deleted", r.map(|_| ()).map_err(|e| e.to_string()))
                }
            };
            let (outcome, details) = match &undone {
                Ok(()) => (Outcome::Ok, json!({"rollback": true})),
                Err(e) => (Outcome::Failed, json!({"rollback": true, "error": e})),
            };
            self.audit_nonfatal(caller, event, row, outcome, details, &mut non_fatals)
                .await;
        }
        self.audit_nonfatal(
            caller,
            "grant_rolled_back",
            row,
            Outcome::Ok,
            json!({"reason": why}),
            &mut non_fatals,
        )
        .await;
        let now = self.clock.now();
        if let Err(e) = self
            .store
            .set_grant_state(row.id, GrantState::Failed, Some((now, "rollback")))
            .await
        {
            tracing::error!(error = %e, grant = row.id, "rolled back but could not mark the grant failed; the reconciler will retry");
        }
    }
}

/// The account `user` logs in as (`None`: no such user) and our keys in
/// its `~/.ssh` (`None`: it has none).
fn read_key_account(
    host: &super::Host,
    user: &Username,
) -> Result<(Option<KeyAccount>, Option<Vec<InstalledKey>>), super::EngineError> {
    let Some(acct) = host
        .key_account_of(user)
        .map_err(super::EngineError::Host)?
    else {
        return Ok((None, None));
    };
    let keys = host.keys.ssh_dir_keys(&acct).map_err(|e| {
        super::EngineError::Host(format!("Cannot read {user}'s authorized_keys: {e}"))
    })?;
    Ok((Some(acct), keys))
}

/// Asks sshd and sudo what they allow, for the planner (the engine
/// before a grant, `doctor` to say whether one would work).
pub fn login_facts(
    host: &super::Host,
    request: &LoginRequest<'_>,
    ticket: TicketId,
    ips: &[SupportIp],
) -> Result<LoginFacts, String> {
    let mut facts = LoginFacts::default();
    let sshd = &host.sshd;
    let users = &host.users;
    let sshd_err = |e: &dyn std::fmt::Display| {
        format!("Cannot determine sshd's effective configuration ({e}); refusing to guess who may log in.")
    };
    let root = Username::root();
    let root_groups = users.groups_of(&root).map_err(|e| e.to_string())?;
    for ip in ips {
        let addr: IpAddr = ip.cidr().net().addr();
        let eff = sshd.effective(&root, addr).map_err(|e| sshd_err(&e))?;
        facts.ssh_endpoint.get_or_insert(eff.endpoint());
        facts
            .root_key_login
            .push((*ip, eff.root_key_login_allowed()));
        for b in eff.login_blockers(&root, &root_groups, addr) {
            if !facts.root_blockers.contains(&b) {
                facts.root_blockers.push(b);
            }
        }
    }
    // When root may log in and root is what the request gets, the
    // temporary user's facts are never used: skip them, and with them
    // one `sshd -T` per support address (the bulk of a root grant's time).
    let root_ok = facts.root_key_login.iter().all(|(_, ok)| *ok) && facts.root_blockers.is_empty();
    if root_ok && matches!(request, LoginRequest::Automatic | LoginRequest::Root) {
        return Ok(facts);
    }
    facts.sudo_present = host.sudo_present();
    facts.wheel_group = users.wheel_group().map_err(|e| e.to_string());
    let sudoers = &host.sudoers;
    facts.includes_dropins = sudoers.includes_dropins().map_err(|e| e.to_string())?;
    if let Ok(group) = &facts.wheel_group {
        facts.group_allows_sudo = sudoers
            .group_allows_sudo(group)
            .map_err(|e| e.to_string())?;
        let temp = Username::temporary_for(ticket);
        let groups = vec![group.clone()];
        for ip in ips {
            let addr: IpAddr = ip.cidr().net().addr();
            let eff = sshd.effective(&temp, addr).map_err(|e| sshd_err(&e))?;
            for b in eff.login_blockers(&temp, &groups, addr) {
                if !facts.temp_blockers.contains(&b) {
                    facts.temp_blockers.push(b);
                }
            }
        }
    }
    if let LoginRequest::Existing(user) = request {
        if let Some(_acct) = users.lookup(user).map_err(|e| e.to_string())? {
            facts.requested_exists = true;
            let groups = users.groups_of(user).map_err(|e| e.to_string())?;
            let mut allowed = false;
            for g in &groups {
                allowed |= sudoers.group_allows_sudo(g).map_err(|e| e.to_string())?;
            }
            facts.requested_can_escalate = facts.sudo_present && allowed;
            for ip in ips {
                let addr: IpAddr = ip.cidr().net().addr();
                let eff = sshd.effective(user, addr).map_err(|e| sshd_err(&e))?;
                for b in eff.login_blockers(user, &groups, addr) {
                    if !facts.requested_blockers.contains(&b) {
                        facts.requested_blockers.push(b);
                    }
                }
            }
        }
    }
    Ok(facts)
}
