//! One receiver's delivery loop: read what is pending after its cursor,
//! deliver it in order, move the cursor, back off on failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::backoff::Retry;
use super::queue;
use super::Receiver;
use crate::audit::{events, AuditEvent, AuditLog, Outcome};
use crate::clock::Clock;
use crate::store::Store;

/// What every receiver's loop shares.
pub struct Ctx {
    pub store: Store,
    pub audit: Arc<AuditLog>,
    pub clock: Arc<dyn Clock>,
    pub log_path: PathBuf,
    pub retry: Retry,
    pub budget: usize,
    pub host: String,
}

/// Wait after the store or the log could not be read.
const TROUBLE_WAIT: Duration = Duration::from_secs(5);

/// Sleeps `d`; false when `shutdown` turned true meanwhile.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*shutdown.borrow(),
        r = shutdown.changed() => r.is_ok() && !*shutdown.borrow(),
    }
}

async fn audit(ctx: &Ctx, ev: AuditEvent) {
    // A record that cannot be written now waits in the audit backlog.
    if let Err(e) = ctx.audit.append(ev).await {
        tracing::error!(error = %e, "cannot audit a notification outcome");
    }
}

/// Runs until `shutdown` turns true; a delivery under way is finished
/// first (it is bounded by the webhook timeouts).
pub async fn run(
    rcv: Receiver,
    ctx: Arc<Ctx>,
    mut durable: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = rcv.spec.id.clone();
    'outer: loop {
        if *shutdown.borrow() {
            return;
        }
        let upto = *durable.borrow_and_update();
        // The row was made at start; made here only should it be gone.
        let state = match ctx.store.notify_receiver_state(&id).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => ctx.store.notify_receiver(&id, upto).await,
            Err(e) => Err(e),
        };
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(receiver = %id, error = %e, "cannot read the notification cursor");
                if pause(TROUBLE_WAIT, &mut shutdown).await {
                    continue;
                }
                return;
            }
        };
        let cursor = state.delivered_seq.max(0) as u64;
        let (log, spec, budget) = (ctx.log_path.clone(), rcv.spec.clone(), ctx.budget);
        let read = tokio::task::spawn_blocking(move || {
            queue::pending(&log, cursor, upto, |r| spec.wants(r), budget)
        })
        .await;
        let pending = match read {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(receiver = %id, error = %e, "cannot read the audit log for notifications");
                if pause(TROUBLE_WAIT, &mut shutdown).await {
                    continue;
                }
                return;
            }
            Err(e) => {
                tracing::error!(receiver = %id, error = %e, "notification read task failed");
                if pause(TROUBLE_WAIT, &mut shutdown).await {
                    continue;
                }
                return;
            }
        };
        if pending.unreadable {
            // Never skipped as a gap: news of the skip would be one more
            // record this loop cannot read.
            tracing::error!(receiver = %id, after = cursor, upto, "the audit log holds no readable record after the notification cursor; will retry");
            if pause(TROUBLE_WAIT, &mut shutdown).await {
                continue;
            }
            return;
        }
        if pending.missing > 0 || pending.over_budget > 0 {
            let (reason, count) = if pending.over_budget > 0 {
                ("more pending than notify.max_pending", pending.over_budget)
            } else {
                ("no longer in the audit log", pending.missing)
            };
            tracing::warn!(receiver = %id, count, reason, "notifications dropped");
            let ev = AuditEvent::new(events::NOTIFY_DROPPED, "system")
                .outcome(Outcome::Failed)
                .details(serde_json::json!({
                    "receiver": id,
                    "count": pending.over_budget + pending.missing,
                    "reason": reason,
                    "from_seq": cursor + 1,
                    "to_seq": pending.records.first().map_or(pending.scanned_to, |r| r.seq - 1),
                }));
            audit(&ctx, ev).await;
            let to = pending
                .records
                .first()
                .map_or(pending.scanned_to, |r| r.seq - 1);
            if let Err(e) = ctx.store.notify_skip_to(&id, to, 0).await {
                tracing::error!(receiver = %id, error = %e, "cannot move the notification cursor");
            }
        }
        let mut attempts = state.attempts.max(0) as u32;
        let mut first_failed = state.first_failed_at;
        for rec in &pending.records {
            if *shutdown.borrow() {
                return;
            }
            let now = ctx.clock.now();
            match rcv.deliver(rec, &ctx.host, now).await {
                Ok(()) => {
                    tracing::info!(receiver = %id, seq = rec.seq, event = %rec.event, "notification delivered");
                    attempts = 0;
                    first_failed = None;
                    if let Err(e) = ctx
                        .store
                        .notify_delivered(&id, rec.seq, ctx.clock.now())
                        .await
                    {
                        // Sent again after a restart, with the same delivery id.
                        tracing::error!(receiver = %id, error = %e, "cannot store the notification cursor");
                        if pause(TROUBLE_WAIT, &mut shutdown).await {
                            continue 'outer;
                        }
                        return;
                    }
                }
                Err(error) => {
                    let now = ctx.clock.now();
                    attempts += 1;
                    let first = *first_failed.get_or_insert(now);
                    let delay = ctx.retry.delay(attempts);
                    let next_at = now + delay.as_secs() as i64;
                    if let Err(e) = ctx
                        .store
                        .notify_failed_attempt(&id, &error, now, next_at)
                        .await
                    {
                        tracing::error!(receiver = %id, error = %e, "cannot store the notification state");
                    }
                    if ctx.retry.give_up(attempts, first, now) {
                        tracing::error!(receiver = %id, seq = rec.seq, attempts, %error, "notification given up");
                        let ev = AuditEvent::new(events::NOTIFY_FAILED, "system")
                            .outcome(Outcome::Failed)
                            .details(serde_json::json!({
                                "receiver": id,
                                "seq": rec.seq,
                                "event": rec.event,
                                "attempts": attempts,
                                "error": error,
                            }));
                        audit(&ctx, ev).await;
                        if let Err(e) = ctx.store.notify_skip_to(&id, rec.seq, 1).await {
                            tracing::error!(receiver = %id, error = %e, "cannot move the notification cursor");
                        }
                        attempts = 0;
                        first_failed = None;
                        continue;
                    }
                    tracing::warn!(receiver = %id, seq = rec.seq, attempts, %error, retry_in = ?delay, "notification failed; will retry");
                    if pause(delay, &mut shutdown).await {
                        continue 'outer;
                    }
                    return;
                }
            }
        }
        // Everything read is done with: records it did not want too.
        if pending.scanned_to > cursor {
            if let Err(e) = ctx.store.notify_skip_to(&id, pending.scanned_to, 0).await {
                tracing::error!(receiver = %id, error = %e, "cannot move the notification cursor");
            }
        }
        if *durable.borrow() != upto {
            continue;
        }
        tokio::select! {
            r = durable.changed() => if r.is_err() { return },
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// Starts one loop per receiver.
pub fn start(
    receivers: Vec<Receiver>,
    ctx: Arc<Ctx>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    receivers
        .into_iter()
        .map(|r| {
            tokio::spawn(run(
                r,
                Arc::clone(&ctx),
                ctx.audit.durable_seq(),
                shutdown.clone(),
            ))
        })
        .collect()
}
