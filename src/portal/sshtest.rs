//! `ticket_ssh_test`: the local preflight, then (for a portal grant) the
//! portal's own test, polled as cPanel does (reference §6). Both audited
//! as `ssh_test` with `details.result`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::preflight;
use super::wire::{PortalError, SshTestResult};
use crate::app::App;
use crate::audit::{AuditEvent, Outcome};
use crate::domain::caller::Caller;
use crate::store::grants::GrantRow;

/// What the test found.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub result: SshTestResult,
    /// "preflight" or "portal": which test gave the result.
    pub stage: &'static str,
    pub detail: String,
    /// True when only the local preflight ran (a local grant, or no portal).
    pub preflight_only: bool,
    pub non_fatals: Vec<String>,
}

/// The address support's SSH connection would arrive at, as seen from here.
pub fn target(app: &App, row: &GrantRow) -> SocketAddr {
    let ip = row
        .ssh_ip
        .parse::<IpAddr>()
        .map(|ip| super::local_side(&app.portal.settings().nat, ip))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, row.ssh_port)
}

async fn audit(
    app: &App,
    caller: &Caller,
    row: &GrantRow,
    stage: &str,
    result: SshTestResult,
    detail: &str,
) -> bool {
    let ev = AuditEvent::new(crate::audit::events::SSH_TEST, caller.actor())
        .remote(caller.remote())
        .ticket(row.ticket, Some(row.server))
        .user(row.ssh_username.as_str())
        .outcome(if result == SshTestResult::Success {
            Outcome::Ok
        } else {
            Outcome::Failed
        })
        .details(json!({ "result": result.as_str(), "stage": stage, "detail": detail }));
    match app.audit.append(ev).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot audit the SSH test");
            false
        }
    }
}

/// Polls the portal until it has a result, or gives up.
async fn poll(app: &App, test_id: &str, server: u64) -> Result<SshTestResult, PortalError> {
    let s = app.portal.settings();
    let fast = Duration::from_millis(s.test_poll_fast_ms);
    let slow = Duration::from_millis(s.test_poll_slow_ms);
    let fast_phase = Duration::from_millis(s.test_fast_phase_ms);
    let give_up = Duration::from_millis(s.test_give_up_ms);
    let start = tokio::time::Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= give_up {
            return Ok(SshTestResult::TicketSystemTimeout);
        }
        let step = if elapsed < fast_phase { fast } else { slow };
        tokio::time::sleep(step.min(give_up - elapsed)).await;
        match app.portal.test_result(test_id).await {
            Ok(Some(a)) => return Ok(a.result_for(server)),
            Ok(None) => {}
            // A slow or briefly failing portal is what the deadline is for.
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "SSH test poll failed; retrying")
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the test for `row`. `Err` only for a portal refusal (session
/// expired, no data); results, failures included, are `Ok`.
pub async fn run(app: &Arc<App>, caller: &Caller, row: &GrantRow) -> Result<TestOutcome, String> {
    let mut non_fatals = Vec::new();
    let limit = Duration::from_secs(app.portal.settings().preflight_timeout_secs);
    let v = preflight::run(app.engine.host(), row, target(app, row), limit).await;
    if !audit(app, caller, row, "preflight", v.result, &v.detail).await {
        non_fatals.push("audit_log".to_string());
    }
    let portal_grant = row.source == crate::domain::GrantSource::Portal;
    if v.result != SshTestResult::Success || !portal_grant {
        let detail = if !portal_grant && v.result == SshTestResult::Success {
            "local preflight only: this grant was not made through the ticket system, so support's own test is not run".to_string()
        } else {
            v.detail
        };
        return Ok(TestOutcome {
            result: v.result,
            stage: "preflight",
            detail,
            preflight_only: true,
            non_fatals,
        });
    }
    let outcome = match app.portal.start_test(row.ticket, row.server).await {
        Ok(id) => poll(app, &id, row.server.get()).await,
        Err(e) => Err(e),
    };
    let (result, detail) = match outcome {
        Ok(r) => (r, String::new()),
        Err(e) if e.is_transient() => (SshTestResult::TicketSystemTimeout, e.to_string()),
        Err(e) => {
            audit(
                app,
                caller,
                row,
                "portal",
                SshTestResult::Unknown,
                &e.to_string(),
            )
            .await;
            return Err(e.to_string());
        }
    };
    if !audit(app, caller, row, "portal", result, &detail).await
        && !non_fatals.iter().any(|n| n == "audit_log")
    {
        non_fatals.push("audit_log".to_string());
    }
    Ok(TestOutcome {
        result,
        stage: "portal",
        detail,
        preflight_only: false,
        non_fatals,
    })
}
