//! Taking access away. Never fails closed: every step is attempted, a
//! failed audit write is reported as the `audit_log` non-fatal, and a grant
//! whose footprint could not be fully removed, or whose end the store could
//! not record, stays live for the reconciler to finish; the answer says so.

use serde_json::json;

use super::{Engine, EngineError, WhitelistOutcome};
use crate::audit::{AuditEvent, Outcome};
use crate::authorized_keys::KeyMark;
use crate::domain::caller::Caller;
use crate::planner;
use crate::store::grants::{GrantRow, GrantState};
use crate::types::{ServerNum, TicketId, Username};

/// Why access ends; also the lifecycle event name in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Revoke,
    Expire,
    RevokeClosed,
    RevokeAll,
    /// The reconciler found the grant's temporary user gone.
    Reconcile,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Revoke => "revoke",
            EndReason::Expire => "expire",
            EndReason::RevokeClosed => "revoke_closed",
            EndReason::RevokeAll => "revoke_all",
            EndReason::Reconcile => "revoke",
        }
    }
    pub fn parse(s: &str) -> EndReason {
        match s {
            "expire" => EndReason::Expire,
            "revoke_closed" => EndReason::RevokeClosed,
            "revoke_all" => EndReason::RevokeAll,
            _ => EndReason::Revoke,
        }
    }
}

/// What a revoke did.
#[derive(Debug, Default)]
pub struct Revoked {
    pub revoked_keys: u64,
    pub grants: Vec<GrantRow>,
    pub whitelist: WhitelistOutcome,
    pub non_fatals: Vec<String>,
    /// Steps that failed; their grants stay `revoking` for the reconciler.
    pub errors: Vec<String>,
    /// The live grants as the last grant's done mark left them; `None`
    /// when that grant's revoke did not finish (see
    /// `Engine::converge_whitelist`).
    live_after: Option<Vec<GrantRow>>,
}

impl Engine {
    /// Revokes the live grants of `ticket` for `user` (one server or all),
    /// and any stray key of ours for that ticket in the user's file.
    pub async fn revoke(
        &self,
        caller: &Caller,
        ticket: TicketId,
        server: Option<ServerNum>,
        user: &Username,
    ) -> Result<Revoked, EngineError> {
        let serial = self.changes.lock().await;
        // 1. The intent, for every grant this revoke ends, in the statement
        // that finds them. When the store cannot record it (a full disk),
        // access is still taken away.
        let reason = EndReason::Revoke;
        let (rows, intent) = match self
            .store
            .mark_revoking_matching(ticket, server, user, reason.as_str())
            .await
        {
            Ok(rows) => (rows, Ok(())),
            Err(e) => (
                self.store
                    .list_live(Some(ticket), server, Some(user))
                    .await?,
                Err(e.to_string()),
            ),
        };
        let mut out = Revoked::default();
        for row in &rows {
            self.end_marked_grant(caller, row, reason, intent.clone(), &mut out)
                .await;
        }
        // Keys of ours for this ticket that no grant row knows of (left by
        // a crash or an older installation) are removed too. For one server
        // whose grant was just removed cleanly from this user's file, that
        // removal already took every key of ours for (ticket, server).
        let covered = server.is_some() && !rows.is_empty() && out.errors.is_empty();
        let stray_scan = if covered {
            None
        } else {
            self.host.key_account_of(user).ok().flatten()
        };
        if let Some(acct) = stray_scan {
            let keys = self.host.keys.clone();
            let select = |m: &KeyMark| m.ticket == ticket && server.is_none_or(|s| m.server == s);
            match tokio::task::block_in_place(|| keys.remove(&acct, &select)) {
                Ok(n) if n > 0 => {
                    out.revoked_keys += n as u64;
                    let ev = crate::audit::AuditEvent::new("key_removed", caller.actor())
                        .remote(caller.remote())
                        .ticket(ticket, server)
                        .user(user.as_str())
                        .details(json!({"stray": true, "count": n}));
                    if self.audit.append(ev).await.is_err() {
                        push_unique(&mut out.non_fatals, "audit_log");
                    }
                }
                Ok(_) => {}
                Err(e) => out
                    .errors
                    .push(format!("removing keys from {user}'s authorized_keys: {e}")),
            }
        }
        if rows.is_empty() && out.revoked_keys == 0 {
            let which = server.map(|s| format!(" server {s}")).unwrap_or_default();
            return Err(EngineError::Refused(format!(
                "No keys for ticket {ticket}{which} were found for the user “{user}”; nothing was revoked."
            )));
        }
        let live = out.live_after.take();
        out.whitelist = self
            .converge_whitelist(serial, live, caller, &mut out.non_fatals)
            .await;
        Ok(out)
    }

    /// Revokes every live grant (the kill switch), or those matching `only`.
    pub async fn revoke_where(
        &self,
        caller: &Caller,
        reason: EndReason,
        only: &(dyn Fn(&GrantRow) -> bool + Sync),
    ) -> Result<Revoked, EngineError> {
        let serial = self.changes.lock().await;
        let rows = self.store.live_grants().await?;
        let mut out = Revoked::default();
        for row in rows
            .iter()
            .filter(|r| r.state == GrantState::Active && only(r))
        {
            self.end_grant(caller, row, reason, &mut out).await;
        }
        if !out.grants.is_empty() {
            let live = out.live_after.take();
            out.whitelist = self
                .converge_whitelist(serial, live, caller, &mut out.non_fatals)
                .await;
        }
        Ok(out)
    }

    /// Revokes active grants whose time is up. Returns how many ended.
    pub async fn expire_due(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let due = self.store.due_for_expiry(now).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = due.iter().map(|g| g.id).collect();
        let out = self
            .revoke_where(&Caller::System, EndReason::Expire, &|r: &GrantRow| {
                ids.contains(&r.id) && r.expires_at.is_some_and(|t| t <= now)
            })
            .await?;
        for e in &out.errors {
            tracing::warn!(error = %e, "expiry could not finish a revoke; the reconciler will retry");
        }
        Ok(out.grants.len())
    }

    /// Takes one grant's access away, as a straight line that never stops
    /// early (caller holds the change lock):
    ///
    /// 1. intent: `revoking` and why, committed (fsynced);
    /// 2. host: the key, then (when no other live grant shares it) the
    ///    ticket's sudoers drop-in and temporary user;
    /// 3. the closing records `key_removed` + `<reason>`, fsynced;
    /// 4. the done mark (`revoked`) and the chain head, one fsynced commit.
    ///
    /// Every step is attempted even when an earlier one failed. Anything
    /// that failed is in `out.errors` (the answer says so) and the grant
    /// stays live for the reconciler, which only ever finishes a revoke.
    pub(super) async fn end_grant(
        &self,
        caller: &Caller,
        row: &GrantRow,
        reason: EndReason,
        out: &mut Revoked,
    ) {
        let intent = self
            .store
            .mark_revoking(row.id, reason.as_str())
            .await
            .map_err(|e| e.to_string());
        self.end_marked_grant(caller, row, reason, intent, out)
            .await
    }

    /// [`Self::end_grant`] from step 2, after the caller committed the
    /// intent (`Err`: it could not).
    async fn end_marked_grant(
        &self,
        caller: &Caller,
        row: &GrantRow,
        reason: EndReason,
        intent: Result<(), String>,
        out: &mut Revoked,
    ) {
        let user = &row.ssh_username;
        let mut failed = false;
        out.live_after = None;
        if let Err(e) = intent {
            failed = true;
            out.errors.push(format!(
                "the state database could not record the revoke ({e}); access is still taken away"
            ));
        }
        super::fault::point("revoke_after_intent");
        // 2. The key.
        let mut removed = None;
        // The file the key left, for the record (cPanel's line names it).
        let mut key_file = None;
        match self.host.key_account_of(user) {
            Ok(Some(acct)) => {
                key_file = Some(
                    crate::system::keystore::authorized_keys_path(&acct)
                        .display()
                        .to_string(),
                );
                let keys = self.host.keys.clone();
                let mark = KeyMark::parse_comment(&row.key_comment);
                let (t, s) = (row.ticket, row.server);
                let select = |m: &KeyMark| m.ticket == t && m.server == s;
                match tokio::task::block_in_place(|| keys.remove(&acct, &select)) {
                    Ok(n) => {
                        out.revoked_keys += n as u64;
                        removed = Some(n);
                        self.tidy_ssh_dir(row, &acct);
                    }
                    Err(e) => {
                        failed = true;
                        out.errors.push(format!(
                            "removing the key from {user}'s authorized_keys: {e}"
                        ));
                        self.audit_nonfatal(
                            caller,
                            "key_removed",
                            row,
                            Outcome::Failed,
                            json!({"error": e.to_string(), "comment": mark.map(|m| m.comment())}),
                            &mut out.non_fatals,
                        )
                        .await;
                    }
                }
            }
            // The account is gone, and its keys with it.
            Ok(None) => removed = Some(0),
            Err(e) => {
                failed = true;
                out.errors.push(format!("looking up {user}: {e}"));
            }
        }
        super::fault::point("revoke_after_key_removed");
        // 2a. Its open support sessions (the key is gone: none can start).
        self.end_support_sessions(caller, row, reason.as_str(), &mut out.non_fatals)
            .await;
        // 2b. The temporary user, unless another live grant uses it.
        let mut events = Vec::new();
        if let Some(n) = removed {
            events.push(Self::key_removed_event(caller, row, n));
        }
        if row.temp_user && removed.is_some() {
            let live = self.store.live_grants().await;
            // Unreadable, the store cannot say the user is free: keep it.
            let shared = live
                .as_deref()
                .map_or(true, |l| planner::temp_user_shared(l, row));
            if !shared {
                // The log keeps the order things happened in.
                if let Err(e) = self.audit.append_all(&events).await {
                    tracing::error!(error = %e, "audit records could not be written");
                    push_unique(&mut out.non_fatals, "audit_log");
                }
                events.clear();
                failed |= !self
                    .remove_temp_user(caller, row, &mut out.errors, &mut out.non_fatals)
                    .await;
            }
        }
        // 3. The closing records; an audit failure never stops a revoke.
        if !failed {
            let mut details = json!({"fingerprint": row.key_fingerprint});
            if let Some(f) = key_file {
                details["key_file"] = json!(f);
            }
            events.push(Self::event_for(
                caller,
                reason.as_str(),
                row,
                Outcome::Ok,
                details,
            ));
        }
        let appended = match events.is_empty() {
            true => Ok(None),
            false => self.audit.append_closing(&events).await,
        };
        let head = match appended {
            Ok(head) => head,
            Err(e) => {
                tracing::error!(error = %e, "audit records could not be written");
                push_unique(&mut out.non_fatals, "audit_log");
                None
            }
        };
        super::fault::point("revoke_after_audited");
        if failed {
            // Left `revoking` (or `active` when even the intent failed):
            // the reconciler finishes it, and never puts a key back. The
            // records' chain head is saved with the next append.
            return;
        }
        // 4. The done mark.
        let now = self.clock.now();
        match self
            .store
            .finish(
                row.id,
                GrantState::Revoked,
                Some((now, reason.as_str())),
                head.as_ref().map(|h| (h.seq, h.hash.as_str())),
            )
            .await
        {
            Ok(live) => {
                if let Some(head) = &head {
                    self.audit.head_committed(head).await;
                }
                out.live_after = Some(live);
                let mut ended = row.clone();
                ended.state = GrantState::Revoked;
                out.grants.push(ended);
            }
            Err(e) => out.errors.push(format!(
                "access was taken away but the state database could not record it ({e}); \
                 supportauth records it at its next reconciliation pass"
            )),
        }
    }

    /// Removes a temporary user no live grant needs any more, with the
    /// ticket's sudoers drop-in; returns whether both went.
    pub(super) async fn remove_temp_user(
        &self,
        caller: &Caller,
        row: &GrantRow,
        errors: &mut Vec<String>,
        non_fatals: &mut Vec<String>,
    ) -> bool {
        let user = &row.ssh_username;
        let mut ok = true;
        let sudoers = self.host.sudoers.clone();
        match tokio::task::block_in_place(|| sudoers.remove(row.ticket)) {
            Ok(true) => {
                self.audit_nonfatal(
                    caller,
                    "sudoers_removed",
                    row,
                    Outcome::Ok,
                    json!({}),
                    non_fatals,
                )
                .await
            }
            Ok(false) => {}
            Err(e) => {
                ok = false;
                errors.push(format!("removing the sudoers drop-in: {e}"));
            }
        }
        let users = self.host.users.clone();
        // Deleting ends the user's open sessions first (see `delete_temp`).
        match tokio::task::block_in_place(|| users.delete_temp(user)) {
            Ok(true) => {
                super::fault::point("revoke_after_user_deleted");
                self.audit_nonfatal(
                    caller,
                    "user_deleted",
                    row,
                    Outcome::Ok,
                    json!({}),
                    non_fatals,
                )
                .await;
            }
            Ok(false) => {}
            Err(e) => {
                ok = false;
                errors.push(format!("deleting the temporary user {user}: {e}"));
                self.audit_nonfatal(
                    caller,
                    "user_deleted",
                    row,
                    Outcome::Failed,
                    json!({"error": e.to_string()}),
                    non_fatals,
                )
                .await;
            }
        }
        ok
    }

    /// Removes the `~/.ssh` a grant's install created, once nothing but
    /// an empty authorized_keys is left in it (best effort: a leftover
    /// empty directory grants nothing).
    pub(super) fn tidy_ssh_dir(&self, row: &GrantRow, acct: &crate::system::keystore::KeyAccount) {
        if !row.ssh_dir_created {
            return;
        }
        let keys = self.host.keys.clone();
        match tokio::task::block_in_place(|| keys.remove_empty_ssh_dir(acct)) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(user = %acct.user, error = %e, "cannot remove the ~/.ssh a grant created")
            }
        }
    }

    fn key_removed_event(caller: &Caller, row: &GrantRow, n: usize) -> AuditEvent {
        Self::event_for(
            caller,
            "key_removed",
            row,
            Outcome::Ok,
            json!({"count": n, "fingerprint": row.key_fingerprint}),
        )
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}
