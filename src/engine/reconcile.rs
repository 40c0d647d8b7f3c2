//! Converging the host to the store: at start-up (after a crash, even a
//! `kill -9` mid-grant) and periodically (after someone edits files by
//! hand). Observes, asks the planner for repairs, applies and audits them.

use std::collections::BTreeSet;

use serde_json::json;

use super::revoke::{EndReason, Revoked};
use super::{Engine, EngineError};
use crate::audit::{AuditEvent, Outcome};
use crate::authorized_keys::KeyMark;
use crate::domain::caller::Caller;
use crate::planner::{self, Observation, ObservedKey, Repair};
use crate::store::grants::{GrantRow, GrantState};
use crate::types::Username;

/// What one pass did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    pub repairs: Vec<String>,
    pub errors: Vec<String>,
}

impl Engine {
    /// One reconciliation pass.
    pub async fn reconcile(&self) -> Result<ReconcileReport, EngineError> {
        let serial = self.changes.lock().await;
        let live = self.store.live_grants().await?;
        let seen = self.observe(&live).await?;
        let repairs = planner::plan_reconcile(&live, &seen);
        let mut report = ReconcileReport::default();
        let caller = Caller::System;
        for repair in repairs {
            let what = format!("{repair:?}");
            let done = self.repair(&caller, &live, &repair).await;
            super::fault::point(&format!("repair_{}", repair.name()));
            match done {
                Ok(()) => {
                    tracing::info!(repair = %what, "drift repaired");
                    let ev = AuditEvent::new("drift_repaired", caller.actor())
                        .details(json!({"repair": what}));
                    if let Err(e) = self.audit.append(ev).await {
                        tracing::error!(error = %e, "audit record could not be written");
                    }
                    report.repairs.push(what);
                }
                Err(e) => {
                    tracing::warn!(repair = %what, error = %e, "drift repair failed; will retry");
                    let ev = AuditEvent::new("drift_repaired", caller.actor())
                        .outcome(Outcome::Failed)
                        .details(json!({"repair": what, "error": e}));
                    let _ = self.audit.append(ev).await;
                    report.errors.push(format!("{what}: {e}"));
                }
            }
        }
        let mut non_fatals = Vec::new();
        let wl = self
            .converge_whitelist(serial, None, &caller, &mut non_fatals)
            .await;
        report.errors.extend(wl.errors);
        Ok(report)
    }

    /// Reads our footprint from the host: keys in the files of every user a
    /// grant ever used (plus root and our temporary users), our temporary
    /// users, our sudoers drop-ins.
    async fn observe(&self, live: &[GrantRow]) -> Result<Observation, EngineError> {
        let mut users: BTreeSet<Username> = self.store.grant_users().await?.into_iter().collect();
        users.insert(Username::root());
        users.extend(live.iter().map(|g| g.ssh_username.clone()));
        let host = self.host.clone();
        tokio::task::block_in_place(move || {
            let mut seen = Observation::default();
            let temp = host
                .users
                .list_temp()
                .map_err(|e| EngineError::Host(format!("listing temporary users: {e}")))?;
            seen.temp_users = temp.into_iter().collect();
            users.extend(seen.temp_users.iter().cloned());
            for user in &users {
                let Some(acct) = host.key_account_of(user).map_err(EngineError::Host)? else {
                    continue;
                };
                // Temp files a killed edit left hold a support key: sweep
                // them (no grant's edit runs now: we hold the change lock).
                match host.keys.sweep_staged(&acct) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(user = %user, count = n, "removed temp files an interrupted edit left in ~/.ssh")
                    }
                    Err(e) => {
                        tracing::warn!(user = %user, error = %e, "cannot sweep temp files in ~/.ssh")
                    }
                }
                let keys = host.keys.list_ours(&acct).map_err(|e| {
                    EngineError::Host(format!("reading {user}'s authorized_keys: {e}"))
                })?;
                seen.scanned_users.insert(user.clone());
                seen.keys.extend(keys.into_iter().map(|k| ObservedKey {
                    user: user.clone(),
                    ticket: k.mark.ticket,
                    server: k.mark.server,
                    comment: k.mark.comment(),
                    // Unreadable counts as damaged: the rewrite then says why.
                    copy_intact: host.keys.copy_intact(&acct, &k).unwrap_or(false),
                    expiry: crate::authorized_keys::expiry_option(&k.line),
                }));
            }
            seen.sudoers = host
                .sudoers
                .list_ours()
                .map_err(|e| EngineError::Host(format!("listing sudoers drop-ins: {e}")))?
                .into_iter()
                .collect();
            Ok(seen)
        })
    }

    async fn repair(
        &self,
        caller: &Caller,
        live: &[GrantRow],
        repair: &Repair,
    ) -> Result<(), String> {
        let find = |id: i64| {
            live.iter()
                .find(|g| g.id == id)
                .cloned()
                .ok_or_else(|| format!("grant {id} vanished"))
        };
        match repair {
            Repair::RollBackGranting { grant_id } => {
                let row = find(*grant_id)?;
                let mut out = Revoked::default();
                self.remove_footprint(caller, live, &row, &mut out).await;
                if !out.errors.is_empty() {
                    return Err(out.errors.join("; "));
                }
                let mut nf = Vec::new();
                self.audit_nonfatal(
                    caller,
                    "grant_rolled_back",
                    &row,
                    Outcome::Ok,
                    json!({"reason": "interrupted before it completed (found at start-up)"}),
                    &mut nf,
                )
                .await;
                self.store
                    .set_grant_state(
                        row.id,
                        GrantState::Failed,
                        Some((self.clock.now(), "rollback")),
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
            Repair::FinishRevoking { grant_id } => {
                let row = find(*grant_id)?;
                let reason = EndReason::parse(row.end_reason.as_deref().unwrap_or("revoke"));
                self.end_for_repair(caller, &row, reason).await
            }
            Repair::EndGrantUserGone { grant_id } | Repair::EndGrantKeyGone { grant_id } => {
                let row = find(*grant_id)?;
                self.end_for_repair(caller, &row, EndReason::Reconcile)
                    .await
            }
            Repair::RewriteKeyCopy { grant_id } => {
                let row = find(*grant_id)?;
                // Not an access change (the copy grants nothing): the
                // pass's `drift_repaired` record is its audit trail.
                tokio::task::block_in_place(|| write_key_copy(&self.host, &row))
            }
            Repair::RewriteKeyExpiry { grant_id } => {
                let row = find(*grant_id)?;
                let (line, mark) = super::extend::key_line(&row, row.expires_at)?;
                let acct = self
                    .host
                    .key_account_of(&row.ssh_username)?
                    .ok_or_else(|| format!("the user {} does not exist", row.ssh_username))?;
                let keys = self.host.keys.clone();
                tokio::task::block_in_place(|| keys.install(&acct, &line, &mark))
                    .map_err(|e| e.to_string())?;
                // The end that stands again, for the log's readers (and
                // replay): an extension the store never recorded is undone.
                let mut nf = Vec::new();
                self.audit_nonfatal(
                    caller,
                    crate::audit::events::GRANT_EXTENDED,
                    &row,
                    Outcome::Failed,
                    json!({"undone": true, "expires_at": row.expires_at,
                           "reason": "the key line's expiry-time was not the store's end (an interrupted extension, or a hand edit)"}),
                    &mut nf,
                )
                .await;
                Ok(())
            }
            Repair::ReinstallSudoers { grant_id } => {
                let row = find(*grant_id)?;
                let sudoers = self.host.sudoers.clone();
                tokio::task::block_in_place(|| sudoers.install(row.ticket, &row.ssh_username))
                    .map_err(|e| e.to_string())?;
                let mut nf = Vec::new();
                self.audit_nonfatal(
                    caller,
                    "sudoers_added",
                    &row,
                    Outcome::Ok,
                    json!({"reinstalled": true}),
                    &mut nf,
                )
                .await;
                Ok(())
            }
            Repair::RemoveOrphanKey { user, comment } => {
                let acct = self
                    .host
                    .key_account_of(user)?
                    .ok_or_else(|| format!("the user {user} does not exist"))?;
                let keys = self.host.keys.clone();
                let c = comment.clone();
                tokio::task::block_in_place(|| keys.remove(&acct, &|m: &KeyMark| m.comment() == c))
                    .map_err(|e| e.to_string())?;
                let ev = AuditEvent::new("key_removed", caller.actor())
                    .user(user.as_str())
                    .details(json!({"orphan": true, "comment": comment}));
                self.audit.append(ev).await.map_err(|e| e.to_string())?;
                Ok(())
            }
            Repair::DeleteOrphanUser { user } => {
                let sudoers = self.host.sudoers.clone();
                if let Some(t) = user.temporary_ticket() {
                    let still_used = live.iter().any(|g| g.ticket == t && g.sudoers_dropin);
                    if !still_used {
                        tokio::task::block_in_place(|| sudoers.remove(t))
                            .map_err(|e| e.to_string())?;
                    }
                }
                let users = self.host.users.clone();
                tokio::task::block_in_place(|| users.delete_temp(user))
                    .map_err(|e| e.to_string())?;
                let ev = AuditEvent::new("user_deleted", caller.actor())
                    .user(user.as_str())
                    .details(json!({"orphan": true}));
                self.audit.append(ev).await.map_err(|e| e.to_string())?;
                Ok(())
            }
            Repair::RemoveOrphanSudoers { ticket } => {
                let sudoers = self.host.sudoers.clone();
                let t = *ticket;
                tokio::task::block_in_place(|| sudoers.remove(t)).map_err(|e| e.to_string())?;
                let ev = AuditEvent::new("sudoers_removed", caller.actor())
                    .ticket(t, None)
                    .details(json!({"orphan": true}));
                self.audit.append(ev).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }

    /// Ends a grant for a repair; its errors are the repair's.
    async fn end_for_repair(
        &self,
        caller: &Caller,
        row: &GrantRow,
        reason: EndReason,
    ) -> Result<(), String> {
        let mut out = Revoked::default();
        self.end_grant(caller, row, reason, &mut out).await;
        if out.errors.is_empty() {
            Ok(())
        } else {
            Err(out.errors.join("; "))
        }
    }

    /// Removes whatever an interrupted grant may have installed; its
    /// temporary user only when no other live grant uses it.
    async fn remove_footprint(
        &self,
        caller: &Caller,
        live: &[GrantRow],
        row: &GrantRow,
        out: &mut Revoked,
    ) {
        if let Ok(Some(acct)) = self.host.key_account_of(&row.ssh_username) {
            let keys = self.host.keys.clone();
            let (t, s) = (row.ticket, row.server);
            match tokio::task::block_in_place(|| {
                keys.remove(&acct, &|m: &KeyMark| m.ticket == t && m.server == s)
            }) {
                Ok(n) if n > 0 => {
                    self.audit_nonfatal(
                        caller,
                        "key_removed",
                        row,
                        Outcome::Ok,
                        json!({"rollback": true}),
                        &mut out.non_fatals,
                    )
                    .await;
                    self.tidy_ssh_dir(row, &acct);
                }
                Ok(_) => self.tidy_ssh_dir(row, &acct),
                Err(e) => out.errors.push(format!("removing the key: {e}")),
            }
        }
        if row.temp_user && !planner::temp_user_shared(live, row) {
            self.remove_temp_user(caller, row, &mut out.errors, &mut out.non_fatals)
                .await;
        }
    }
}

/// Writes (durably) the copy of `row`'s key that WHM lists.
fn write_key_copy(host: &super::Host, row: &GrantRow) -> Result<(), String> {
    let mark =
        KeyMark::parse_comment(&row.key_comment).ok_or("the stored key comment is not ours")?;
    let acct = host
        .key_account_of(&row.ssh_username)?
        .ok_or_else(|| format!("the user {} does not exist", row.ssh_username))?;
    let key = crate::system::keystore::InstalledKey {
        mark,
        key: row.ssh_key.clone(),
        line: String::new(),
    };
    host.keys.write_copy(&acct, &key).map_err(|e| e.to_string())
}
