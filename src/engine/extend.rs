//! Moving a grant's end (`ticket_grant_extend`), as a straight line like a
//! grant (the caller holds nothing; this takes the change lock):
//!
//! 1. decide: the active grant of (ticket, server) and its new end, by the
//!    same policy as a grant's ttl (counted from now);
//! 2. host: the key line rewritten with the new `expiry-time` (durable);
//! 3. the record `grant_extended` with the old and the new end, fsynced;
//! 4. the done mark: the store's end and the chain head, one commit.
//!
//! The store's end time is the truth. A crash before 4 leaves a key line
//! whose `expiry-time` the store does not have: the start-up
//! reconciliation rewrites the line to the store's end, so the extension
//! is undone as a whole (the caller never heard "yes"). After 4 it stands.
//! A failure at 3 or 4 (no crash) puts the old line back before answering.

use serde_json::json;

use super::Engine;
use crate::audit::{events, Outcome};
use crate::authorized_keys::{render_line, KeyMark};
use crate::domain::caller::Caller;
use crate::planner;
use crate::sshkey::SupportKey;
use crate::store::grants::{GrantRow, GrantState};
use crate::types::{ServerNum, TicketId};

/// A grant whose end moved.
#[derive(Debug)]
pub struct Extended {
    pub row: GrantRow,
    pub previous_expires_at: Option<i64>,
}

/// The authorized_keys line a grant row stands for, with its end.
pub(super) fn key_line(
    row: &GrantRow,
    expires_at: Option<i64>,
) -> Result<(String, KeyMark), String> {
    let mark =
        KeyMark::parse_comment(&row.key_comment).ok_or("the stored key comment is not ours")?;
    let key = SupportKey::parse(&row.ssh_key).map_err(|e| e.to_string())?;
    let line = render_line(&key, &row.access_ips, expires_at, &mark).map_err(|e| e.to_string())?;
    Ok((line, mark))
}

impl Engine {
    pub async fn extend(
        &self,
        caller: &Caller,
        ticket: TicketId,
        server: ServerNum,
        ttl: u64,
    ) -> Result<Extended, String> {
        let now = self.clock.now();
        let policy = self.policy();
        let new_end = planner::grant_end(now, Some(ttl), &policy.ttl).map_err(|e| e.0)?;
        let _serial = self.changes.lock().await;
        // 1. The grant and what its line becomes.
        let live = self
            .store
            .live_grants()
            .await
            .map_err(|e| format!("The state database failed: {e}"))?;
        let Some(row) = live
            .into_iter()
            .find(|g| g.ticket == ticket && g.server == server)
        else {
            return Err(format!(
                "Ticket {ticket} server {server} has no grant to extend; grant access first."
            ));
        };
        if row.state != GrantState::Active {
            return Err(format!(
                "The grant for ticket {ticket} server {server} is being {}; it cannot be extended.",
                if row.state == GrantState::Granting {
                    "made"
                } else {
                    "revoked"
                }
            ));
        }
        let old_end = row.expires_at;
        let (line, mark) = key_line(&row, new_end)?;
        let (old_line, _) = key_line(&row, old_end)?;
        let acct = self
            .host
            .key_account_of(&row.ssh_username)?
            .ok_or_else(|| format!("the user {} does not exist", row.ssh_username))?;
        // 2. The host: `install` replaces the slot's line in place of the old.
        let keys = self.host.keys.clone();
        tokio::task::block_in_place(|| keys.install(&acct, &line, &mark)).map_err(|e| {
            format!(
                "rewriting the key line for {} failed: {e}",
                row.ssh_username
            )
        })?;
        super::fault::point("extend_after_key_rewritten");
        // 3. The record, durable.
        let ev = Self::event_for(
            caller,
            events::GRANT_EXTENDED,
            &row,
            Outcome::Ok,
            json!({"previous_expires_at": old_end, "expires_at": new_end}),
        );
        let head = match self.audit.append_closing(&[ev]).await {
            Ok(h) => h,
            Err(e) => {
                let why = format!("the audit log could not be written: {e}");
                return Err(self
                    .undo_extend(caller, &row, &acct, &old_line, &mark, false, why)
                    .await);
            }
        };
        super::fault::point("extend_after_audited");
        // 4. The done mark.
        let committed = self
            .store
            .set_expiry(
                row.id,
                new_end,
                head.as_ref().map(|h| (h.seq, h.hash.as_str())),
            )
            .await;
        let why = match committed {
            Ok(true) => None,
            Ok(false) => Some("the grant is no longer active".to_string()),
            Err(e) => Some(format!("the state database failed: {e}")),
        };
        if let Some(why) = why {
            return Err(self
                .undo_extend(caller, &row, &acct, &old_line, &mark, true, why)
                .await);
        }
        if let Some(head) = &head {
            self.audit.head_committed(head).await;
        }
        super::fault::point("extend_after_done");
        self.grants_changed.notify_one();
        Ok(Extended {
            row: GrantRow {
                expires_at: new_end,
                ..row
            },
            previous_expires_at: old_end,
        })
    }

    /// Puts the old key line back after a failed step 3 or 4; when the
    /// `grant_extended` record was written, a failed one says it was
    /// undone. Returns the reason for the answer.
    #[allow(clippy::too_many_arguments)]
    async fn undo_extend(
        &self,
        caller: &Caller,
        row: &GrantRow,
        acct: &crate::system::keystore::KeyAccount,
        old_line: &str,
        mark: &KeyMark,
        audited: bool,
        why: String,
    ) -> String {
        let keys = self.host.keys.clone();
        if let Err(e) = tokio::task::block_in_place(|| keys.install(acct, old_line, mark)) {
            tracing::error!(error = %e, "cannot put the old key line back; the reconciler will");
        }
        if audited {
            let mut nf = Vec::new();
            self.audit_nonfatal(
                caller,
                events::GRANT_EXTENDED,
                row,
                Outcome::Failed,
                json!({"undone": true, "error": why, "expires_at": row.expires_at}),
                &mut nf,
            )
            .await;
        }
        format!(
            "Extending ticket {} server {} failed and was undone: {why}",
            row.ticket, row.server
        )
    }
}
