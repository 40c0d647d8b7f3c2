//! The support-access functions (reference §3): ticket_grant,
//! ticket_revoke, ticket_list, ticket_remove_closed, and the kill switch
//! ticket_revoke_all.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::app::App;
use crate::domain::caller::Caller;
use crate::engine::grant::{GrantRequest, Granted};
use crate::engine::revoke::{EndReason, Revoked};
use crate::engine::EngineError;
use crate::sshkey::SupportKey;
use crate::store::grants::GrantRow;
use crate::types::{InputError, ServerNum, SupportIp, TicketId, Username};

pub fn reject_unknown(params: &Params, allowed: &[&str]) -> Result<(), ApiError> {
    let unknown = params.unknown(allowed);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(format!(
            "Unknown argument(s): {}. This function takes: {}.",
            unknown
                .iter()
                .map(|u| crate::types::printable(u))
                .collect::<Vec<_>>()
                .join(", "),
            allowed.join(", ")
        )))
    }
}

fn parse_ttl(raw: Option<&str>) -> Result<Option<u64>, InputError> {
    raw.map(|s| {
        s.parse::<u64>().map_err(|_| {
            InputError::new(format!(
                "“ttl” must be a whole number of seconds; got “{}”.",
                crate::types::printable(s)
            ))
        })
    })
    .transpose()
}

/// `ticket_grant ticket_id server_num ssh_key [ssh_username] [ttl] [access_ip-N]`
pub async fn ticket_grant(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(
        params,
        &[
            "ticket_id",
            "server_num",
            "ssh_key",
            "ssh_username",
            "ttl",
            "access_ip",
            "secure_id",
        ],
    )?;
    let ticket = TicketId::parse(params.require("ticket_id")?)?;
    let server = ServerNum::parse(params.require("server_num")?)?;
    let ssh_username = params
        .get("ssh_username")
        .map(Username::parse)
        .transpose()?;
    let ttl = parse_ttl(params.get("ttl"))?;
    let access_ips = params
        .list("access_ip")
        .into_iter()
        .map(SupportIp::parse)
        .collect::<Result<Vec<_>, _>>()?;
    crate::types::check_support_ips(&access_ips)?;
    let Some(raw_key) = params.get("ssh_key") else {
        // No key given: the ticket system provides it (reference §3).
        let base = GrantBase {
            ticket,
            server,
            ssh_username,
            ttl,
            access_ips,
            secure_id: params.get("secure_id").unwrap_or("").to_string(),
        };
        return crate::api::portal_grant::grant(app, caller, base).await;
    };
    let key = SupportKey::parse(raw_key)?;
    let req = GrantRequest {
        ticket,
        server,
        key,
        ssh_username,
        ttl,
        access_ips,
        source: crate::domain::GrantSource::Local,
        server_name: String::new(),
        ticket_subject: String::new(),
        ssh_ip: String::new(),
        ssh_port: 22,
        whm_ip: String::new(),
    };
    match app.engine.grant(caller, req).await {
        Ok(g) => Ok(Value::Object(granted_data(&g))),
        Err(e) => Err(ApiError::new(e.to_string())),
    }
}

/// `ticket_grant_extend ticket_id server_num ttl`: the grant now ends
/// `ttl` seconds from now (0: no expiry, where allowed), by the policy of
/// a grant's ttl; the key line's `expiry-time` follows.
pub async fn ticket_grant_extend(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &["ticket_id", "server_num", "ttl"])?;
    let ticket = TicketId::parse(params.require("ticket_id")?)?;
    let server = ServerNum::parse(params.require("server_num")?)?;
    let ttl = parse_ttl(Some(params.require("ttl")?))?.unwrap_or_default();
    let out = app
        .engine
        .extend(caller, ticket, server, ttl)
        .await
        .map_err(ApiError::new)?;
    Ok(json!({
        "ticket_id": out.row.ticket.get(),
        "server_num": out.row.server.get(),
        "ssh_username": out.row.ssh_username.as_str(),
        "expires_at": out.row.expires_at,
        "previous_expires_at": out.previous_expires_at,
        "key_fingerprint": out.row.key_fingerprint,
    }))
}

/// The validated inputs of a grant, before the key is known.
#[derive(Debug)]
pub struct GrantBase {
    pub ticket: TicketId,
    pub server: ServerNum,
    pub ssh_username: Option<Username>,
    pub ttl: Option<u64>,
    pub access_ips: Vec<SupportIp>,
    pub secure_id: String,
}

/// The answer to a successful grant (local or portal).
pub fn granted_data(g: &Granted) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("ticket_id".into(), json!(g.row.ticket.get()));
    data.insert("server_num".into(), json!(g.row.server.get()));
    data.insert("server_name".into(), json!(g.row.server_name));
    data.insert("ssh_username".into(), json!(g.row.ssh_username.as_str()));
    data.insert("auth_status".into(), json!("AUTHED"));
    data.insert("auth_time".into(), json!(g.row.created_at));
    data.insert("ticket_status".into(), json!("OPEN"));
    data.insert("expires_at".into(), json!(g.row.expires_at));
    // Where support connects: sshd's own listen address and port for a
    // local grant (0.0.0.0 = every address), the portal's for a portal one.
    data.insert("ssh_ip".into(), json!(g.row.ssh_ip));
    data.insert("ssh_port".into(), json!(g.row.ssh_port));
    data.insert("access_ips".into(), json!(g.row.access_ips));
    data.insert("key_fingerprint".into(), json!(g.row.key_fingerprint));
    data.insert("temporary_user".into(), json!(g.row.temp_user as u8));
    // 1 when another server's grant of this ticket created the temporary
    // user: its password was shown with that grant and is not reset.
    data.insert("shared_temporary_user".into(), json!(g.shared_user as u8));
    data.insert("source".into(), json!(g.row.source));
    if let Some(pw) = &g.password {
        // Shown once so the admin can hand it to support for sudo;
        // never stored, logged or audited.
        data.insert("wheel_password".into(), json!(pw.expose()));
    }
    data.insert("non_fatals".into(), json!(g.non_fatals));
    g.whitelist.merge_into(&mut data);
    data
}

fn revoked_data(out: &Revoked, base: Map<String, Value>) -> Value {
    let mut data = base;
    data.insert("revoked_keys".into(), json!(out.revoked_keys));
    data.insert("non_fatals".into(), json!(out.non_fatals));
    out.whitelist.merge_into(&mut data);
    Value::Object(data)
}

fn revoke_result(out: Revoked, base: Map<String, Value>) -> ApiResult {
    let data = revoked_data(&out, base);
    if out.errors.is_empty() {
        Ok(data)
    } else {
        Err(ApiError::with_data(
            format!(
                "Access was only partly removed; supportauth will keep retrying: {}",
                out.errors.join("; ")
            ),
            data,
        ))
    }
}

/// `ticket_revoke ticket_id ssh_username [server_num]`
pub async fn ticket_revoke(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &["ticket_id", "server_num", "ssh_username"])?;
    let ticket = TicketId::parse(params.require("ticket_id")?)?;
    let user = Username::parse(params.require("ssh_username")?)?;
    let server = params.get("server_num").map(ServerNum::parse).transpose()?;
    let mut out = match app.engine.revoke(caller, ticket, server, &user).await {
        Ok(out) => out,
        // Nothing found: `result: 0` as in cPanel, marked so a client can
        // tell it from a failure.
        Err(EngineError::Refused(reason)) => {
            return Err(ApiError::with_data(
                reason,
                json!({"revoked_keys": 0, "nothing_to_revoke": 1}),
            ))
        }
        Err(e) => return Err(ApiError::new(e)),
    };
    crate::portal::poller::log_revokes(app, &mut out).await;
    let mut base = Map::new();
    base.insert("ticket_id".into(), json!(ticket.get()));
    base.insert("server_num".into(), json!(server.map(ServerNum::get)));
    base.insert("ssh_username".into(), json!(user.as_str()));
    revoke_result(out, base)
}

/// `ticket_remove_closed`: revoke every grant whose ticket is closed. When
/// connected, the portal's open tickets are fetched first; a portal that
/// cannot be asked closes nothing (grants already marked CLOSED still go)
/// and the answer says why in `ticket_system_error`.
pub async fn ticket_remove_closed(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &[])?;
    let mut portal_error = None;
    if app.portal.is_connected().await {
        if let Err(e) = crate::portal::poller::mark_closed(app).await {
            tracing::warn!(error = %e, "cannot ask the portal which tickets are closed");
            portal_error = Some(e.to_string());
        }
    }
    let out = crate::portal::poller::revoke_closed(app, caller)
        .await
        .map_err(ApiError::new)?;
    if out.grants.is_empty() && out.errors.is_empty() {
        let mut reason = "There are no closed tickets with access to remove.".to_string();
        if let Some(e) = &portal_error {
            reason.push_str(&format!(" (The ticket system could not be asked: {e})"));
        }
        // `result: 0` as in cPanel; `nothing_to_remove` lets a client
        // (the CLI, a cron job) tell this from a failure.
        return Err(ApiError::with_data(
            reason,
            json!({"revoked_keys": 0, "nothing_to_remove": 1}),
        ));
    }
    let mut base = Map::new();
    base.insert("ticket_system_error".into(), json!(portal_error));
    revoke_result(out, base)
}

/// `ticket_revoke_all`: the kill switch. Revokes every active grant at
/// once; succeeds (with 0) when there is nothing to revoke, so an
/// emergency script never fails for the wrong reason.
pub async fn ticket_revoke_all(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &[])?;
    let mut out = app
        .engine
        .revoke_where(caller, EndReason::RevokeAll, &|_: &GrantRow| true)
        .await
        .map_err(ApiError::new)?;
    // After the revoke, never before: the portal must not slow the switch.
    crate::portal::poller::log_revokes(app, &mut out).await;
    let mut base = Map::new();
    base.insert("revoked_grants".into(), json!(out.grants.len()));
    revoke_result(out, base)
}

/// `ticket_list [ticket_id] [server_num] [ssh_username]`: see
/// [`crate::api::ticket_list`].
pub async fn ticket_list(
    app: &Arc<App>,
    caller: &Caller,
    params: &Params,
) -> crate::api::envelope::DataResult {
    crate::api::ticket_list::ticket_list(app, caller, params).await
}
