//! Taking access away. Never fails closed: every step is attempted, a
//! failed audit write is reported as the `audit_log` non-fatal, and a grant
//! whose footprint could not be fully removed stays `revoking` so the
//! reconciler finishes the job.

use std::future::Future;
use std::task::Poll;

use serde_json::json;

use super::{Engine, WhitelistOutcome};
use crate::api::caller::Caller;
use crate::audit::writer::ChainHead;
use crate::audit::{AuditEvent, Outcome};
use crate::authorized_keys::KeyMark;
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
    ) -> Result<Revoked, String> {
        let _serial = self.changes.lock().await;
        let rows = self
            .store
            .list_live(Some(ticket), server, Some(user))
            .await
            .map_err(|e| format!("The state database failed: {e}"))?;
        let mut out = Revoked::default();
        for row in &rows {
            self.end_grant(caller, row, EndReason::Revoke, &mut out)
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
            return Err(format!(
                "No keys for ticket {ticket}{which} were found for the user “{user}”; nothing was revoked."
            ));
        }
        out.whitelist = self.converge_whitelist(caller, &mut out.non_fatals).await;
        Ok(out)
    }

    /// Revokes every live grant (the kill switch), or those matching `only`.
    pub async fn revoke_where(
        &self,
        caller: &Caller,
        reason: EndReason,
        only: &(dyn Fn(&GrantRow) -> bool + Sync),
    ) -> Result<Revoked, String> {
        let _serial = self.changes.lock().await;
        let rows = self
            .store
            .live_grants()
            .await
            .map_err(|e| format!("The state database failed: {e}"))?;
        let mut out = Revoked::default();
        for row in rows
            .iter()
            .filter(|r| r.state == GrantState::Active && only(r))
        {
            self.end_grant(caller, row, reason, &mut out).await;
        }
        if !out.grants.is_empty() {
            out.whitelist = self.converge_whitelist(caller, &mut out.non_fatals).await;
        }
        Ok(out)
    }

    /// Revokes active grants whose time is up. Returns how many ended.
    pub async fn expire_due(&self) -> Result<usize, String> {
        let now = self.clock.now();
        let due = self
            .store
            .due_for_expiry(now)
            .await
            .map_err(|e| format!("The state database failed: {e}"))?;
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

    /// Removes one grant's footprint: key, sudoers drop-in, temporary user.
    /// Caller holds the change lock.
    pub(super) async fn end_grant(
        &self,
        caller: &Caller,
        row: &GrantRow,
        reason: EndReason,
        out: &mut Revoked,
    ) {
        let user = &row.ssh_username;
        self.unsettled.forget(row.id);
        let account = self.host.key_account_of(user);
        let mut failed = false;
        let mut pending = Vec::new();
        // The closing records, when the removal thread already appended them.
        let mut closed: Option<Result<Option<ChainHead>, String>> = None;
        match account {
            Ok(Some(acct)) => {
                // As in a grant: the intent's UPDATE runs on SQLite's thread
                // while the edit of authorized_keys is staged, and the edit
                // is renamed in once the intent is recorded (or failed to
                // be: removing access proceeds regardless, and the row is
                // fixed later; a key removed before its intent could be put
                // back by the reconciler). For a login user the closing
                // records follow on the same thread.
                let keys = self.host.keys.clone();
                let mut marking = Box::pin(self.store.mark_revoking(row.id, reason.as_str()));
                let mut early =
                    std::future::poll_fn(|cx| Poll::Ready(marking.as_mut().poll(cx))).await;
                let mut marked = None;
                let (t, s) = (row.ticket, row.server);
                let (r, audited) = tokio::task::block_in_place(|| {
                    let handle = tokio::runtime::Handle::current();
                    let select = |m: &KeyMark| m.ticket == t && m.server == s;
                    let r = keys.remove_gated(&acct, &select, &mut || {
                        marked = Some(match std::mem::replace(&mut early, Poll::Pending) {
                            Poll::Ready(done) => done,
                            Poll::Pending => handle.block_on(marking.as_mut()),
                        });
                        super::fault::point("revoke_after_intent");
                        Ok(())
                    });
                    let audited = match &r {
                        Ok(n) if !row.temp_user => {
                            super::fault::point("revoke_after_key_removed");
                            let events = [
                                Self::key_removed_event(caller, row, *n),
                                Self::event_for(
                                    caller,
                                    reason.as_str(),
                                    row,
                                    Outcome::Ok,
                                    json!({"fingerprint": row.key_fingerprint}),
                                ),
                            ];
                            Some(
                                handle
                                    .block_on(self.audit.append_closing(&events))
                                    .map_err(|e| e.to_string()),
                            )
                        }
                        _ => None,
                    };
                    (r, audited)
                });
                let marked = match (marked, early) {
                    (Some(done), _) | (None, Poll::Ready(done)) => done,
                    (None, Poll::Pending) => marking.await,
                };
                if let Err(e) = marked {
                    tracing::error!(error = %e, grant = row.id, "cannot record the revoke intent");
                }
                let r = r.map_err(|e| e.to_string());
                if let (Ok(n), Some(audited)) = (&r, audited) {
                    out.revoked_keys += *n as u64;
                    closed = Some(audited);
                } else {
                    match r {
                        Ok(n) => {
                            super::fault::point("revoke_after_key_removed");
                            out.revoked_keys += n as u64;
                            let ev = Self::key_removed_event(caller, row, n);
                            if row.temp_user {
                                self.audit_all_nonfatal(vec![ev], &mut out.non_fatals).await;
                            } else {
                                // Nothing else happens before the closing
                                // record: both go out in one durable append.
                                pending.push(ev);
                            }
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
                                json!({"error": e.to_string()}),
                                &mut out.non_fatals,
                            )
                            .await;
                        }
                    }
                }
            }
            Ok(None) => {
                // The account is gone, and its keys with it.
                self.record_revoking(row, reason).await;
            }
            Err(e) => {
                self.record_revoking(row, reason).await;
                failed = true;
                out.errors.push(format!("looking up {user}: {e}"));
            }
        }
        if row.temp_user && !failed {
            let shared = self
                .store
                .live_grants()
                .await
                .map(|l| {
                    l.iter()
                        .any(|g| g.id != row.id && g.temp_user && &g.ssh_username == user)
                })
                .unwrap_or(true);
            if !shared {
                let sudoers = self.host.sudoers.clone();
                match tokio::task::block_in_place(|| sudoers.remove(row.ticket)) {
                    Ok(removed) => {
                        if removed {
                            self.audit_nonfatal(
                                caller,
                                "sudoers_removed",
                                row,
                                Outcome::Ok,
                                json!({}),
                                &mut out.non_fatals,
                            )
                            .await;
                        }
                    }
                    Err(e) => {
                        failed = true;
                        out.errors
                            .push(format!("removing the sudoers drop-in: {e}"));
                    }
                }
                let users = self.host.users.clone();
                let exists = matches!(users.lookup(user), Ok(Some(_)));
                if exists {
                    match tokio::task::block_in_place(|| users.delete_temp(user)) {
                        Ok(_) => {
                            super::fault::point("revoke_after_user_deleted");
                            self.audit_nonfatal(
                                caller,
                                "user_deleted",
                                row,
                                Outcome::Ok,
                                json!({}),
                                &mut out.non_fatals,
                            )
                            .await;
                        }
                        Err(e) => {
                            failed = true;
                            out.errors
                                .push(format!("deleting the temporary user {user}: {e}"));
                            self.audit_nonfatal(
                                caller,
                                "user_deleted",
                                row,
                                Outcome::Failed,
                                json!({"error": e.to_string()}),
                                &mut out.non_fatals,
                            )
                            .await;
                        }
                    }
                }
            }
        }
        if failed {
            self.audit_all_nonfatal(pending, &mut out.non_fatals).await;
            return;
        }
        // The closing records (at most one batch) and the "done" mark with
        // their chain head: one append and one commit.
        let appended = match closed {
            Some(appended) => appended,
            None => {
                pending.push(Self::event_for(
                    caller,
                    reason.as_str(),
                    row,
                    Outcome::Ok,
                    json!({"fingerprint": row.key_fingerprint}),
                ));
                self.audit
                    .append_closing(&pending)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let head = match appended {
            Ok(head) => head,
            Err(e) => {
                tracing::error!(error = %e, "audit records could not be written");
                push_unique(&mut out.non_fatals, "audit_log");
                None
            }
        };
        let now = self.clock.now();
        if let Err(e) = self
            .store
            .finish(
                row.id,
                GrantState::Revoked,
                Some((now, reason.as_str())),
                head.as_ref().map(|h| (h.seq, h.hash.as_str())),
            )
            .await
        {
            tracing::error!(error = %e, grant = row.id, "access removed but the grant is not marked revoked; the reconciler will finish it");
        }
        let mut ended = row.clone();
        ended.state = GrantState::Revoked;
        out.grants.push(ended);
    }
}

impl Engine {
    /// Records the intent to revoke `row`; a failure is logged and the
    /// revoke goes on (the row is fixed later).
    async fn record_revoking(&self, row: &GrantRow, reason: EndReason) {
        if let Err(e) = self.store.mark_revoking(row.id, reason.as_str()).await {
            tracing::error!(error = %e, grant = row.id, "cannot record the revoke intent");
        }
        super::fault::point("revoke_after_intent");
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
