//! Making a grant. Fails closed: the intent is stored first, every host
//! change is audited as it happens, and anything short of a fully applied
//! and audited grant is rolled back before the caller hears "no".

use std::future::Future;
use std::net::IpAddr;
use std::task::Poll;

use serde_json::json;

use super::Engine;
use crate::api::caller::Caller;
use crate::audit::writer::ChainHead;
use crate::audit::{AuditEvent, Outcome};
use crate::authorized_keys::{render_line, KeyMark};
use crate::config::AuditFormat;
use crate::engine::WhitelistOutcome;
use crate::planner::{self, LoginFacts, LoginPlan, LoginRequest};
use crate::sshkey::SupportKey;
use crate::store::grants::{GrantRow, GrantState, InsertError, NewGrant};
use crate::system::keystore::{KeyAccount, KeyStoreError};
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
    /// "local" or "portal".
    pub source: String,
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
    pub password: Option<Secret>,
    pub whitelist: WhitelistOutcome,
    pub non_fatals: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Refused before anything was touched; the host is unchanged.
    #[error("{0}")]
    Refused(String),
    /// Something failed part-way; everything done was rolled back.
    #[error("{0}")]
    RolledBack(String),
}

/// How [`Engine::apply_grant`] gets the key in place.
enum KeyStep {
    /// Already done (or failed), staged while the intent committed, into
    /// the account returned; when the key went in, `audited` is the append
    /// of the closing records.
    Staged {
        installed: Result<KeyAccount, String>,
        audited: Option<Result<Option<ChainHead>, String>>,
    },
    /// To install now, into the temporary user's account.
    Now,
}

/// A host change made during a grant, undone in reverse on failure.
enum Done {
    UserCreated(Username),
    SudoersInstalled(TicketId),
    KeyInstalled(KeyAccount, KeyMark),
}

impl Engine {
    pub async fn grant(&self, caller: &Caller, req: GrantRequest) -> Result<Granted, GrantError> {
        let started = std::time::Instant::now();
        let _serial = self.changes.lock().await;
        let now = self.clock.now();
        let policy = self.policy();
        let expires_at =
            planner::grant_end(now, req.ttl, &policy.ttl).map_err(|e| GrantError::Refused(e.0))?;
        let ips = planner::grant_ips(&req.access_ips, &policy.default_ips)
            .map_err(|e| GrantError::Refused(e.0))?;

        if let Some(existing) = self
            .store
            .list_live(Some(req.ticket), Some(req.server), None)
            .await
            .map_err(|e| GrantError::Refused(format!("The state database failed: {e}")))?
            .into_iter()
            .next()
        {
            return Err(GrantError::Refused(format!(
                "A key for ticket {} server {} is already present (as “{}”). Revoke it first.",
                req.ticket, req.server, existing.ssh_username
            )));
        }

        let request = planner::classify_request(req.ticket, req.ssh_username.as_ref())
            .map_err(|e| GrantError::Refused(e.0))?;
        // Time in external tools (sshd -T), logged apart from our own work
        // so benchmarks can compare the rest with the durable-write floor.
        let facts_started = std::time::Instant::now();
        let facts = tokio::task::block_in_place(|| self.login_facts(&request, req.ticket, &ips))
            .map_err(GrantError::Refused)?;
        let facts_us = facts_started.elapsed().as_micros() as u64;
        let plan = planner::decide_login(req.ticket, &request, &facts)
            .map_err(|e| GrantError::Refused(e.0))?;
        let user = plan.user();

        let temp_user = matches!(plan, LoginPlan::Temporary { .. });
        // A key of ours for this ticket and server already on the host
        // (left by someone else's hand) is refused rather than doubled. For
        // an existing login user the install checks that itself, under the
        // lock on ~/.ssh, and its account is looked up while the intent
        // commits.
        let existing_temp = if temp_user {
            self.host.key_account_of(&user).ok().flatten()
        } else {
            None
        };
        if let Some(acct) = &existing_temp {
            let keys = self.host.keys.clone();
            let present = tokio::task::block_in_place(|| keys.list_ours(acct)).map_err(|e| {
                GrantError::Refused(format!("Cannot read {}'s authorized_keys: {e}", user))
            })?;
            if present
                .iter()
                .any(|k| k.mark.ticket == req.ticket && k.mark.server == req.server)
            {
                return Err(GrantError::Refused(format!(
                    "A key for ticket {} server {} is already present in {}'s authorized_keys. Revoke it first.",
                    req.ticket, req.server, user
                )));
            }
        }

        let mark = KeyMark::new(req.ticket, req.server, now);
        let line = render_line(&req.key, &ips, expires_at, &mark)
            .map_err(|e| GrantError::Refused(e.to_string()))?;
        let (sudoers_dropin, group) = match &plan {
            LoginPlan::Temporary {
                group,
                sudoers_dropin,
                ..
            } => (*sudoers_dropin, Some(group.clone())),
            _ => (false, None),
        };
        let new = NewGrant {
            ticket: req.ticket,
            server: req.server,
            source: req.source.clone(),
            ssh_username: user.clone(),
            temp_user,
            sudoers_dropin,
            ssh_key: req.key.openssh(),
            key_fingerprint: req.key.fingerprint(),
            key_comment: mark.comment(),
            access_ips: ips.clone(),
            server_name: req.server_name.clone(),
            ticket_subject: req.ticket_subject.clone(),
            ssh_ip: req.ssh_ip.clone(),
            ssh_port: req.ssh_port,
            whm_ip: req.whm_ip.clone(),
            created_at: now,
            expires_at,
            granted_by: caller.actor(),
        };
        // For an account that exists already, one blocking section does the
        // durable work in order, with no hand-off between threads: the key
        // is staged (written and fsynced under a temp name, which grants
        // nothing), the intent is committed from the install's gate, the key
        // is renamed in, and the closing records are appended. A temporary
        // user's key waits for the user, which waits for the intent.
        let (intent, key_step) = match temp_user {
            false => {
                let keys = self.host.keys.clone();
                // Polled once here, the INSERT is already running on
                // SQLite's thread while the key is staged below; the gate
                // then waits for it on this thread.
                let mut recording = Box::pin(self.store.insert_granting(&new));
                let mut early =
                    std::future::poll_fn(|cx| Poll::Ready(recording.as_mut().poll(cx))).await;
                let mut intent = None;
                let (installed, audited) = tokio::task::block_in_place(|| {
                    let acct = match self.host.key_account_of(&user) {
                        Ok(Some(acct)) => acct,
                        Ok(None) => return (Err(format!("the user {user} does not exist")), None),
                        Err(e) => return (Err(e), None),
                    };
                    let handle = tokio::runtime::Handle::current();
                    let mut closing = None;
                    let installed = keys.install_new(&acct, &line, &mark, &mut || {
                        let recorded = match std::mem::replace(&mut early, Poll::Pending) {
                            Poll::Ready(done) => done,
                            Poll::Pending => handle.block_on(recording.as_mut()),
                        };
                        closing = recorded
                            .as_ref()
                            .ok()
                            .map(|row| Self::closing_events(caller, row, &acct));
                        intent = Some(recorded);
                        match closing {
                            Some(_) => {
                                super::fault::point("after_intent");
                                Ok(())
                            }
                            None => Err("the grant's intent was not recorded".into()),
                        }
                    });
                    let audited = match (&installed, closing) {
                        (Ok(()), Some(events)) => {
                            super::fault::point("after_key_installed");
                            Some(
                                handle
                                    .block_on(self.audit.append_closing(&events))
                                    .map_err(|e| e.to_string()),
                            )
                        }
                        _ => None,
                    };
                    let installed = installed.map(|()| acct).map_err(|e| match e {
                        KeyStoreError::SlotTaken { .. } => format!(
                            "a key for ticket {} server {} is already present in {}'s authorized_keys; revoke it first",
                            req.ticket, req.server, user
                        ),
                        e => e.to_string(),
                    });
                    (installed, audited)
                });
                // A refusal before the gate (a key of ours already in that
                // slot, an unsafe ~/.ssh) still finds the intent recorded:
                // it is rolled back like any failure after it.
                let intent = match (intent, early) {
                    (Some(recorded), _) => recorded,
                    (None, Poll::Ready(recorded)) => recorded,
                    (None, Poll::Pending) => recording.await,
                };
                (intent, KeyStep::Staged { installed, audited })
            }
            true => {
                let intent = self.store.insert_granting(&new).await;
                if intent.is_ok() {
                    super::fault::point("after_intent");
                }
                (intent, KeyStep::Now)
            }
        };
        let row = match intent {
            Ok(row) => row,
            Err(InsertError::AlreadyLive(e)) => {
                return Err(GrantError::Refused(format!(
                    "A key for ticket {} server {} is already present. Revoke it first.",
                    e.ticket, e.server
                )))
            }
            Err(InsertError::Store(e)) => {
                return Err(GrantError::Refused(format!(
                    "The state database failed: {e}"
                )))
            }
        };

        let mut done: Vec<Done> = Vec::new();
        let mut password = None;
        let applied = self
            .apply_grant(
                caller,
                &row,
                &line,
                &mark,
                group.as_deref(),
                key_step,
                &mut done,
                &mut password,
            )
            .await;
        // The grant is done when its closing records are durable. In the
        // hash-chained log they are what the reconciler completes it from
        // after a crash, so its "done" mark (with their chain head) follows
        // the answer (see `settle`); cPanel's log format has no chain to
        // trust, so there the mark is committed before the answer.
        let applied = match applied {
            Ok(head) if self.audit.format() == AuditFormat::Json => {
                self.store
                    .finish_later(row.id, head.as_ref().map(|h| (h.seq, h.hash.as_str())));
                Ok(())
            }
            Ok(head) => self
                .store
                .finish(
                    row.id,
                    GrantState::Active,
                    None,
                    head.as_ref().map(|h| (h.seq, h.hash.as_str())),
                )
                .await
                .map_err(|e| format!("the state database failed: {e}")),
            Err(why) => Err(why),
        };
        if let Err(why) = applied {
            self.roll_back(caller, &row, done, &why).await;
            return Err(GrantError::RolledBack(format!(
                "The grant for ticket {} server {} failed and was rolled back: {why}",
                row.ticket, row.server
            )));
        }
        // A login user's key went in without WHM's copy (`install_new`);
        // it follows the answer, with the done mark.
        self.settle_soon((!row.temp_user).then_some(row.id));
        let row = GrantRow {
            state: GrantState::Active,
            ..row
        };
        // The whitelist is best effort per backend and reported in the
        // answer (reference §3), like cPanel: each backend says its status.
        let mut non_fatals = Vec::new();
        let whitelist = self.converge_whitelist(caller, &mut non_fatals).await;
        tracing::debug!(
            ticket = %row.ticket,
            facts_us,
            total_us = started.elapsed().as_micros() as u64,
            "grant timing"
        );
        Ok(Granted {
            row,
            password,
            whitelist,
            non_fatals,
        })
    }

    /// Applies the plan, auditing each step; the final `grant` record is
    /// the commit point. Returns that record's chain head, for the caller
    /// to save with the grant's "done" mark.
    #[allow(clippy::too_many_arguments)]
    async fn apply_grant(
        &self,
        caller: &Caller,
        row: &GrantRow,
        line: &str,
        mark: &KeyMark,
        group: Option<&str>,
        key_step: KeyStep,
        done: &mut Vec<Done>,
        password: &mut Option<Secret>,
    ) -> Result<Option<ChainHead>, String> {
        let user = &row.ssh_username;
        if row.temp_user {
            let group = group.ok_or("no wheel group for the temporary user")?;
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
            .map_err(|e| format!("the audit log could not be written: {e}"))?;
            let secret = Secret::generate().map_err(|e| format!("no random password: {e}"))?;
            tokio::task::block_in_place(|| users.set_password(user, &secret))
                .map_err(|e| format!("setting the temporary user's password failed: {e}"))?;
            self.audit_for(caller, "password_set", row, Outcome::Ok, json!({}))
                .await
                .map_err(|e| format!("the audit log could not be written: {e}"))?;
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
                .map_err(|e| format!("the audit log could not be written: {e}"))?;
            }
        }
        let (acct, audited) = match key_step {
            KeyStep::Staged { installed, audited } => (
                installed.map_err(|e| format!("installing the key for {user} failed: {e}"))?,
                audited,
            ),
            KeyStep::Now => {
                let acct = self
                    .host
                    .key_account_of(user)?
                    .ok_or_else(|| format!("the user {user} does not exist"))?;
                let keys = self.host.keys.clone();
                tokio::task::block_in_place(|| keys.install(&acct, line, mark))
                    .map_err(|e| format!("installing the key for {user} failed: {e}"))?;
                super::fault::point("after_key_installed");
                (acct, None)
            }
        };
        done.push(Done::KeyInstalled(acct.clone(), *mark));
        // One durable append for both records: the grant's commit point.
        let head = match audited {
            Some(appended) => appended,
            None => self
                .audit
                .append_closing(&Self::closing_events(caller, row, &acct))
                .await
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("the audit log could not be written: {e}"))?;
        super::fault::point("after_grant_audited");
        Ok(head)
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
            match step {
                Done::KeyInstalled(acct, mark) => {
                    let keys = self.host.keys.clone();
                    let r = tokio::task::block_in_place(|| {
                        keys.remove(&acct, &|m: &KeyMark| {
                            m.ticket == mark.ticket && m.server == mark.server
                        })
                    });
                    let outcome = if r.is_ok() {
                        Outcome::Ok
                    } else {
                        Outcome::Failed
                    };
                    self.audit_nonfatal(
                        caller,
                        "key_removed",
                        row,
                        outcome,
                        json!({"rollback": true}),
                        &mut non_fatals,
                    )
                    .await;
                }
                Done::SudoersInstalled(ticket) => {
                    let sudoers = self.host.sudoers.clone();
                    let r = tokio::task::block_in_place(|| sudoers.remove(ticket));
                    let outcome = if r.is_ok() {
                        Outcome::Ok
                    } else {
                        Outcome::Failed
                    };
                    self.audit_nonfatal(
                        caller,
                        "sudoers_removed",
                        row,
                        outcome,
                        json!({"rollback": true}),
                        &mut non_fatals,
                    )
                    .await;
                }
                Done::UserCreated(user) => {
                    let users = self.host.users.clone();
                    let r = tokio::task::block_in_place(|| users.delete_temp(&user));
                    let outcome = if r.is_ok() {
                        Outcome::Ok
                    } else {
                        Outcome::Failed
                    };
                    self.audit_nonfatal(
                        caller,
                        "user_deleted",
                        row,
                        outcome,
                        json!({"rollback": true}),
                        &mut non_fatals,
                    )
                    .await;
                }
            }
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

    /// Asks sshd and sudo what they allow, for the planner.
    fn login_facts(
        &self,
        request: &LoginRequest<'_>,
        ticket: TicketId,
        ips: &[SupportIp],
    ) -> Result<LoginFacts, String> {
        let mut facts = LoginFacts::default();
        let sshd = &self.host.sshd;
        let users = &self.host.users;
        let sshd_err = |e: &dyn std::fmt::Display| {
            format!("Cannot determine sshd's effective configuration ({e}); refusing to guess who may log in.")
        };
        let root = Username::root();
        let root_groups = users.groups_of(&root).map_err(|e| e.to_string())?;
        for ip in ips {
            let addr: IpAddr = ip.cidr().net().addr();
            let eff = sshd.effective(&root, addr).map_err(|e| sshd_err(&e))?;
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
        let root_ok =
            facts.root_key_login.iter().all(|(_, ok)| *ok) && facts.root_blockers.is_empty();
        if root_ok && matches!(request, LoginRequest::Automatic | LoginRequest::Root) {
            return Ok(facts);
        }
        facts.sudo_present = self.host.sudo_present();
        facts.wheel_group = users.wheel_group().map_err(|e| e.to_string());
        let sudoers = &self.host.sudoers;
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
}
