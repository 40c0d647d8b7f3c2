//! The portal functions: ticket_validate_oauth2_code,
//! ticket_get_support_info, ticket_ssh_test, ticket_ssh_test_start.

use std::sync::Arc;

use serde_json::json;

use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::api::tickets::reject_unknown;
use crate::app::App;
use crate::audit::{AuditEvent, Outcome};
use crate::domain::caller::Caller;
use crate::store::grants::GrantRow;
use crate::types::{ServerNum, TicketId};

/// `ticket_validate_oauth2_code code redirect_uri`: result 1 when a portal
/// session was obtained. The tokens are never shown, logged or audited.
pub async fn ticket_validate_oauth2_code(
    app: &Arc<App>,
    caller: &Caller,
    params: &Params,
) -> ApiResult {
    reject_unknown(params, &["code", "redirect_uri"])?;
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let res = app.portal.connect(code, redirect_uri).await;
    let ev = AuditEvent::new("portal_connect", caller.actor())
        .remote(caller.remote())
        .outcome(if res.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        })
        .details(json!({ "error": res.as_ref().err().map(|e| e.to_string()) }));
    if let Err(e) = app.audit.append(ev).await {
        tracing::error!(error = %e, "cannot audit the portal connection");
    }
    match res {
        Ok(()) => Ok(json!({})),
        Err(crate::portal::wire::PortalError::SessionExpired) => Err(ApiError::new(
            "The ticket system refused the authorization code (expired or already used); log in to the portal again.",
        )),
        Err(e) => Err(ApiError::new(e.to_string())),
    }
}

/// `ticket_get_support_info`: what the portal says about support.
pub async fn ticket_get_support_info(
    app: &Arc<App>,
    _caller: &Caller,
    params: &Params,
) -> ApiResult {
    reject_unknown(params, &[])?;
    let info = app
        .portal
        .support_info()
        .await
        .map_err(|e| ApiError::new(e.to_string()))?;
    Ok(json!({ "support_info": info }))
}

async fn live_grant(app: &App, params: &Params) -> Result<GrantRow, ApiError> {
    reject_unknown(params, &["ticket_id", "server_num"])?;
    let ticket = TicketId::parse(params.require("ticket_id")?)?;
    let server = ServerNum::parse(params.require("server_num")?)?;
    app.engine
        .store()
        .list_live(Some(ticket), Some(server), None)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::new(format!(
                "No access is granted for ticket {ticket} server {server}; grant it before testing."
            ))
        })
}

/// `ticket_ssh_test ticket_id server_num`: the local preflight, then the
/// portal's test for a portal grant.
pub async fn ticket_ssh_test(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    let row = live_grant(app, params).await?;
    let out = crate::portal::sshtest::run(app, caller, &row)
        .await
        .map_err(ApiError::new)?;
    Ok(json!({
        "result": out.result.as_str(),
        "stage": out.stage,
        "detail": out.detail,
        "preflight_only": out.preflight_only as u8,
        "non_fatals": out.non_fatals,
    }))
}

/// `ticket_ssh_test_start ticket_id server_num`: the same test in the
/// background; its result goes to the audit log (`ssh_test`).
pub async fn ticket_ssh_test_start(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    let row = live_grant(app, params).await?;
    let app = Arc::clone(app);
    let caller = caller.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::portal::sshtest::run(&app, &caller, &row).await {
            tracing::warn!(error = %e, ticket = %row.ticket, "background SSH test failed");
        }
    });
    Ok(json!({}))
}
