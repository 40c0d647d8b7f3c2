//! Ending a grant's open support sessions when its access ends (revoke,
//! expiry, closed ticket, kill switch). The sessions are those the login
//! watcher recorded for the grant's key: an admin's own sessions are never
//! in the store and never touched. The choice is the matcher's
//! ([`crate::logins::matcher::sessions_to_end`]); the signals are
//! [`crate::system::sessions::end_session`]'s.

use std::time::Duration;

use serde_json::json;

use super::Engine;
use crate::audit::{events, Outcome};
use crate::domain::caller::Caller;
use crate::logins::matcher::sessions_to_end;
use crate::store::grants::GrantRow;
use crate::system::sessions::{end_session, Ended};

/// Time sshd gets to end a session on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(1000);

impl Engine {
    /// Ends `row`'s open support sessions and audits each
    /// (`support_session_ended`); never fails: problems are logged and an
    /// audit failure becomes the `audit_log` non-fatal.
    pub async fn end_support_sessions(
        &self,
        caller: &Caller,
        row: &GrantRow,
        reason: &str,
        non_fatals: &mut Vec<String>,
    ) {
        let open = match self.store.open_sessions().await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the open support sessions to end them");
                return;
            }
        };
        for s in sessions_to_end(&open, row.id) {
            let (Some(pid), Some(start)) = (s.pid, s.pid_start) else {
                continue;
            };
            let ended = tokio::task::block_in_place(|| end_session(pid, start, TERM_GRACE));
            let now = self.clock.now();
            let outcome = match ended {
                Ended::Survived => Outcome::Failed,
                _ => Outcome::Ok,
            };
            tracing::info!(ticket = %row.ticket, pid, result = ended.as_str(), "support session ended");
            let ev = Self::event_for(
                caller,
                events::SUPPORT_SESSION_ENDED,
                row,
                outcome,
                json!({
                    "address": s.addr.to_string(),
                    "port": s.port,
                    "fingerprint": s.fingerprint,
                    "pid": pid,
                    "session_id": s.id,
                    "session_secs": (now - s.started_at).max(0),
                    "reason": reason,
                    "result": ended.as_str(),
                }),
            )
            .user(s.user.as_str());
            let head = match self.audit.append_closing(&[ev]).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "support_session_ended could not be written");
                    if !non_fatals.iter().any(|n| n == "audit_log") {
                        non_fatals.push("audit_log".into());
                    }
                    None
                }
            };
            if ended == Ended::Survived {
                // Still open: left for the next end to try again.
                continue;
            }
            let head_ref = head.as_ref().map(|h| (h.seq, h.hash.as_str()));
            match self
                .store
                .end_session(s.id, now, reason, None, head_ref)
                .await
            {
                Ok(()) => {
                    if let Some(h) = &head {
                        self.audit.head_committed(h).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot record the end of a support session"),
            }
        }
    }
}
