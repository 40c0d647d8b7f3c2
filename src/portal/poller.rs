//! Closed tickets: the portal's open-ticket list decides which portal
//! grants are still wanted. A grant whose ticket is no longer open is
//! marked CLOSED and revoked (cPanel only asks the admin to do this).
//! Portal unreachable: nothing changes (UNKNOWN is not CLOSED). Grants made
//! locally (`source` local) are never closed by the portal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::wire::PortalError;
use crate::app::App;
use crate::domain::caller::Caller;
use crate::domain::{GrantSource, TicketStatus};
use crate::engine::revoke::{EndReason, Revoked};
use crate::store::grants::{GrantRow, GrantState};
use crate::types::TicketId;

/// The ids of the portal's open tickets.
pub async fn open_ticket_ids(app: &App) -> Result<BTreeSet<TicketId>, PortalError> {
    let open = app.portal.open_tickets().await?;
    Ok(open
        .iter()
        .filter_map(|t| TicketId::parse(&t.ticket_id).ok())
        .collect())
}

/// Marks live portal grants OPEN or CLOSED from the portal's list; returns
/// how many are CLOSED.
pub async fn mark_closed(app: &App) -> Result<usize, PortalError> {
    let open = open_ticket_ids(app).await?;
    let live = app
        .engine
        .store()
        .live_grants()
        .await
        .map_err(|e| PortalError::Store(e.to_string()))?;
    let mut closed = 0;
    for g in live.iter().filter(|g| g.source == GrantSource::Portal) {
        let status = if open.contains(&g.ticket) {
            TicketStatus::Open
        } else {
            TicketStatus::Closed
        };
        if status == TicketStatus::Closed {
            closed += 1;
        }
        if g.ticket_status != status {
            app.engine
                .store()
                .set_ticket_status(g.id, status)
                .await
                .map_err(|e| PortalError::Store(e.to_string()))?;
        }
    }
    Ok(closed)
}

/// Posts `ssh_key_revoke` for the portal grants in `out`; a failure adds the
/// `ticket_system_log_entry` non-fatal.
pub async fn log_revokes(app: &App, out: &mut Revoked) {
    let grants: Vec<GrantRow> = out
        .grants
        .iter()
        .filter(|g| g.source == GrantSource::Portal)
        .cloned()
        .collect();
    for g in grants {
        if let Err(e) = app
            .portal
            .log_event(g.ticket, g.server, "ssh_key_revoke")
            .await
        {
            tracing::warn!(error = %e, ticket = %g.ticket, "cannot add the revoke to the ticket's log");
            if !out
                .non_fatals
                .iter()
                .any(|n| n == "ticket_system_log_entry")
            {
                out.non_fatals.push("ticket_system_log_entry".into());
            }
        }
    }
}

/// Revokes every live grant marked CLOSED.
pub async fn revoke_closed(app: &App, caller: &Caller) -> Result<Revoked, String> {
    let mut out = app
        .engine
        .revoke_where(caller, EndReason::RevokeClosed, &|g: &GrantRow| {
            g.ticket_status == TicketStatus::Closed && g.state == GrantState::Active
        })
        .await?;
    log_revokes(app, &mut out).await;
    Ok(out)
}

/// Runs until `shutdown`: every `poll_interval_secs`, when connected.
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let every = app.portal.settings().poll_interval_secs;
    if every == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        if !app.portal.is_connected().await {
            continue;
        }
        match mark_closed(&app).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(count = n, "grants of closed tickets found; revoking");
                match revoke_closed(&app, &Caller::System).await {
                    Ok(out) => tracing::info!(
                        grants = out.grants.len(),
                        errors = out.errors.len(),
                        "closed tickets revoked"
                    ),
                    Err(e) => tracing::error!(error = %e, "revoking closed tickets failed"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the portal for closed tickets; nothing revoked")
            }
        }
    }
}
