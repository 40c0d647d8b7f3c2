//! The daemon's own work: revoke grants when their time is up and converge
//! the host to the store, without being asked.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Engine;

/// How often records that wait for the audit log are retried.
const KEPT_RETRY: Duration = Duration::from_secs(5);

/// Runs until `shutdown` turns true. Wakes at the next expiry (or after
/// `reconcile_every`, whichever is sooner), and recomputes that whenever a
/// grant is made: no busy polling, and no grant outlives its end by more
/// than the clock's one-second resolution.
pub async fn run(
    engine: Arc<Engine>,
    reconcile_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next_reconcile = engine.now() + reconcile_every.as_secs() as i64;
    let granted = engine.grants_changed();
    let kept = engine.audit().kept_notify();
    loop {
        let now = engine.now();
        let next_expiry = engine.store().next_expiry().await.ok().flatten();
        let wake_at = next_expiry.map_or(next_reconcile, |t| t.min(next_reconcile));
        let mut wait = Duration::from_secs(wake_at.saturating_sub(now).clamp(0, 3600) as u64);
        // Audit records wait for a log that could not be written (a full
        // disk): try again every few seconds until they are in.
        if engine.audit().kept() > 0 {
            wait = wait.min(KEPT_RETRY);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = granted.notified() => continue,
            _ = kept.notified() => continue,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        if *shutdown.borrow() {
            return;
        }
        if engine.audit().kept() > 0 {
            match engine.audit().flush_kept().await {
                Ok(0) => {
                    tracing::info!("the audit log is writable again: waiting records appended")
                }
                Ok(n) => tracing::warn!(waiting = n, "audit records still wait for the log"),
                Err(e) => {
                    tracing::warn!(error = %e, waiting = engine.audit().kept(), "the audit log still cannot be written")
                }
            }
        }
        match engine.expire_due().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "expired grants revoked"),
            Err(e) => tracing::error!(error = %e, "expiry pass failed"),
        }
        if engine.now() >= next_reconcile {
            match engine.reconcile().await {
                Ok(r) if r.repairs.is_empty() && r.errors.is_empty() => {}
                Ok(r) => tracing::info!(
                    repairs = r.repairs.len(),
                    errors = r.errors.len(),
                    "reconciliation pass"
                ),
                Err(e) => tracing::error!(error = %e, "reconciliation pass failed"),
            }
            next_reconcile = engine.now() + reconcile_every.as_secs() as i64;
        }
    }
}
