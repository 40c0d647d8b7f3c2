//! `notify_status`: each configured receiver's cursor, pending count, last
//! success, last error and next attempt.

use std::path::Path;

use serde_json::{json, Value};

use super::{queue, Spec};
use crate::store::Store;

/// One object per receiver in `specs`; `upto` is the log's durable end.
pub async fn report(
    specs: &[Spec],
    store: &Store,
    log: &Path,
    upto: u64,
    budget: usize,
) -> Result<Vec<Value>, String> {
    let rows = store.notify_receivers().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for spec in specs {
        let row = rows.iter().find(|r| r.receiver == spec.id);
        let cursor = row.map_or(upto, |r| r.delivered_seq.max(0) as u64);
        let (log, s) = (log.to_path_buf(), spec.clone());
        let pending = tokio::task::spawn_blocking(move || {
            queue::pending(&log, cursor, upto, |r| s.wants(r), budget)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the audit log: {e}"))?;
        out.push(json!({
            "receiver": spec.id,
            "kind": spec.kind,
            "events": spec.events,
            "delivered_seq": cursor,
            "pending": pending.records.len() as u64 + pending.over_budget + pending.missing,
            "oldest_pending_seq": pending.records.first().map(|r| r.seq),
            "delivered": row.map_or(0, |r| r.delivered),
            "given_up": row.map_or(0, |r| r.given_up),
            "attempts": row.map_or(0, |r| r.attempts),
            "last_success_at": row.and_then(|r| r.last_success_at),
            "last_error": row.and_then(|r| r.last_error.clone()),
            "last_error_at": row.and_then(|r| r.last_error_at),
            "next_attempt_at": row.and_then(|r| r.next_attempt_at),
        }));
    }
    Ok(out)
}
