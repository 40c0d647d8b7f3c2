//! The support-access functions (reference §3): ticket_grant,
//! ticket_revoke, ticket_list, ticket_remove_closed, and the kill switch
//! ticket_revoke_all.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::api::caller::Caller;
use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::app::App;
use crate::engine::grant::{GrantError, GrantRequest};
use crate::engine::revoke::{EndReason, Revoked};
use crate::sshkey::SupportKey;
use crate::store::grants::{GrantRow, GrantState};
use crate::types::{InputError, ServerNum, SupportIp, TicketId, Username};

fn reject_unknown(params: &Params, allowed: &[&str]) -> Result<(), ApiError> {
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
    let key = SupportKey::parse(params.require("ssh_key")?)?;
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
    let req = GrantRequest {
        ticket,
        server,
        key,
        ssh_username,
        ttl,
        access_ips,
        source: "local".into(),
        server_name: String::new(),
        ticket_subject: String::new(),
        ssh_ip: String::new(),
        ssh_port: 22,
        whm_ip: String::new(),
    };
    match app.engine.grant(caller, req).await {
        Ok(g) => {
            let mut data = Map::new();
            data.insert("ticket_id".into(), json!(g.row.ticket.get()));
            data.insert("server_num".into(), json!(g.row.server.get()));
            data.insert("server_name".into(), json!(g.row.server_name));
            data.insert("ssh_username".into(), json!(g.row.ssh_username.as_str()));
            data.insert("auth_status".into(), json!("AUTHED"));
            data.insert("auth_time".into(), json!(g.row.created_at));
            data.insert("ticket_status".into(), json!("OPEN"));
            data.insert("expires_at".into(), json!(g.row.expires_at));
            data.insert("access_ips".into(), json!(g.row.access_ips));
            data.insert("key_fingerprint".into(), json!(g.row.key_fingerprint));
            data.insert("temporary_user".into(), json!(g.row.temp_user as u8));
            if let Some(pw) = &g.password {
                // Shown once so the admin can hand it to support for sudo;
                // never stored, logged or audited.
                data.insert("wheel_password".into(), json!(pw.expose()));
            }
            data.insert("non_fatals".into(), json!(g.non_fatals));
            g.whitelist.merge_into(&mut data);
            Ok(Value::Object(data))
        }
        Err(GrantError::Refused(reason)) | Err(GrantError::RolledBack(reason)) => {
            Err(ApiError::new(reason))
        }
    }
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
    let out = app
        .engine
        .revoke(caller, ticket, server, &user)
        .await
        .map_err(ApiError::new)?;
    let mut base = Map::new();
    base.insert("ticket_id".into(), json!(ticket.get()));
    base.insert("server_num".into(), json!(server.map(ServerNum::get)));
    base.insert("ssh_username".into(), json!(user.as_str()));
    revoke_result(out, base)
}

/// `ticket_remove_closed`: revoke every grant whose ticket is closed.
pub async fn ticket_remove_closed(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &[])?;
    let out = app
        .engine
        .revoke_where(caller, EndReason::RevokeClosed, &|g: &GrantRow| {
            g.ticket_status == "CLOSED"
        })
        .await
        .map_err(ApiError::new)?;
    if out.grants.is_empty() && out.errors.is_empty() {
        return Err(ApiError::new(
            "There are no closed tickets with access to remove.",
        ));
    }
    revoke_result(out, Map::new())
}

/// `ticket_revoke_all`: the kill switch. Revokes every active grant at
/// once; succeeds (with 0) when there is nothing to revoke, so an
/// emergency script never fails for the wrong reason.
pub async fn ticket_revoke_all(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &[])?;
    let out = app
        .engine
        .revoke_where(caller, EndReason::RevokeAll, &|_: &GrantRow| true)
        .await
        .map_err(ApiError::new)?;
    let mut base = Map::new();
    base.insert("revoked_grants".into(), json!(out.grants.len()));
    revoke_result(out, base)
}

fn auth_status(g: &GrantRow, now: i64) -> &'static str {
    match g.state {
        GrantState::Active if g.ticket_status == "CLOSED" => "EXPIRED",
        GrantState::Active if g.expires_at.is_some_and(|t| t <= now) => "EXPIRED",
        GrantState::Active => "AUTHED",
        _ => "NOT_AUTHED",
    }
}

/// `ticket_list [ticket_id] [server_num] [ssh_username]`
pub async fn ticket_list(app: &Arc<App>, _caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &["ticket_id", "server_num", "ssh_username"])?;
    let ticket = params.get("ticket_id").map(TicketId::parse).transpose()?;
    let server = params.get("server_num").map(ServerNum::parse).transpose()?;
    let user = params
        .get("ssh_username")
        .map(Username::parse)
        .transpose()?;
    let rows = app
        .engine
        .store()
        .list_live(ticket, server, user.as_ref())
        .await
        .map_err(|e| ApiError::new(format!("The state database failed: {e}")))?;
    let now = app.engine.now();
    let local = crate::system::net::local_addresses();
    let mut tickets: BTreeMap<TicketId, (String, String, Vec<Value>)> = BTreeMap::new();
    for g in &rows {
        let entry = tickets.entry(g.ticket).or_insert_with(|| {
            (
                g.ticket_subject.clone(),
                g.ticket_status.clone(),
                Vec::new(),
            )
        });
        let ssh = if g.ssh_ip.is_empty() {
            String::new()
        } else {
            format!("{}:{}", g.ssh_ip, g.ssh_port)
        };
        let bound = g
            .ssh_ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| local.contains(&ip));
        entry.2.push(json!({
            "server_num": g.server.get(),
            "server_name": g.server_name,
            "ssh_username": g.ssh_username.as_str(),
            "ssh": ssh,
            "whm_ip": g.whm_ip,
            "auth_status": auth_status(g, now),
            "auth_time": g.created_at,
            "bound": bound as u8,
            "expires_at": g.expires_at,
            "access_ips": g.access_ips,
            "key_fingerprint": g.key_fingerprint,
            "source": g.source,
        }));
    }
    let auths: Vec<Value> = tickets
        .into_iter()
        .map(|(t, (subject, status, servers))| {
            json!({
                "ticket_id": t.get(),
                "ticket_subject": subject,
                "ticket_status": status,
                "servers": servers,
            })
        })
        .collect();
    Ok(json!({ "auths": auths }))
}
