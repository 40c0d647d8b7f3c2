//! `ticket_list`: the portal's open tickets merged with the live grants.
//!
//! - Portal reachable: every server entry of every open ticket is listed,
//!   AUTHED when a live grant exists (EXPIRED once its time is up),
//!   NOT_AUTHED otherwise. A portal grant whose ticket is no longer open is
//!   CLOSED / EXPIRED (the poller revokes it); one whose server entry is
//!   gone is EXPIRED. A local grant the portal does not list is UNKNOWN.
//! - Portal not connected or unreachable: the live grants with UNKNOWN
//!   (CLOSED if an earlier poll saw them closed); not an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::caller::Caller;
use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::api::tickets::reject_unknown;
use crate::app::App;
use crate::portal::wire::{OpenTicket, ServerEntry};
use crate::store::grants::{GrantRow, GrantState};
use crate::types::{ServerNum, TicketId, Username};

struct TicketOut {
    subject: String,
    status: &'static str,
    servers: BTreeMap<ServerNum, Value>,
}

fn grant_auth_status(g: &GrantRow, now: i64, ticket_closed: bool) -> &'static str {
    match g.state {
        GrantState::Active if ticket_closed => "EXPIRED",
        GrantState::Active if g.expires_at.is_some_and(|t| t <= now) => "EXPIRED",
        GrantState::Active => "AUTHED",
        _ => "NOT_AUTHED",
    }
}

struct Ctx {
    now: i64,
    local: Arc<std::collections::BTreeSet<std::net::IpAddr>>,
    nat: BTreeMap<String, String>,
}

fn server_json(
    ctx: &Ctx,
    server: ServerNum,
    entry: &ServerEntry,
    grant: Option<&GrantRow>,
    auth: &str,
) -> Value {
    let ssh = if entry.ssh_ip.is_empty() {
        String::new()
    } else {
        format!("{}:{}", entry.ssh_ip, entry.ssh_port)
    };
    let bound = crate::portal::is_bound(&ctx.nat, &ctx.local, &entry.ssh_ip);
    json!({
        "server_num": server.get(),
        "server_name": entry.server_name,
        "ssh_username": grant.map(|g| g.ssh_username.as_str().to_string()).unwrap_or_else(|| entry.ssh_username.clone()),
        "ssh": ssh,
        "whm_ip": entry.whm_ip,
        "auth_status": auth,
        "auth_time": grant.map(|g| g.created_at),
        "bound": bound as u8,
        "expires_at": grant.and_then(|g| g.expires_at),
        "access_ips": grant.map(|g| g.access_ips.clone()),
        "key_fingerprint": grant.map(|g| g.key_fingerprint.clone()),
        "source": grant.map(|g| g.source.clone()),
    })
}

fn entry_of(g: &GrantRow) -> ServerEntry {
    ServerEntry {
        server_name: g.server_name.clone(),
        ssh_username: g.ssh_username.as_str().to_string(),
        ssh_ip: g.ssh_ip.clone(),
        ssh_port: g.ssh_port,
        whm_ip: g.whm_ip.clone(),
        root_escalation_method: String::new(),
    }
}

/// The open tickets with their server entries (fetched when the listing
/// leaves them out; a failure there leaves that ticket without servers).
async fn open_with_servers(
    app: &App,
    open: Vec<OpenTicket>,
    only: Option<TicketId>,
) -> Vec<(TicketId, String, BTreeMap<String, ServerEntry>)> {
    let mut out = Vec::new();
    for t in open {
        let Ok(id) = TicketId::parse(&t.ticket_id) else {
            continue;
        };
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let servers = match t.servers {
            Some(s) => s,
            None => app.portal.ticket_servers(id).await.unwrap_or_default(),
        };
        out.push((id, t.ticket_subject, servers));
    }
    out
}

pub async fn ticket_list(app: &Arc<App>, _caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &["ticket_id", "server_num", "ssh_username"])?;
    let ticket = params.get("ticket_id").map(TicketId::parse).transpose()?;
    let server = params.get("server_num").map(ServerNum::parse).transpose()?;
    let user = params
        .get("ssh_username")
        .map(Username::parse)
        .transpose()?;
    // The live grants from memory (see store::live), filtered here.
    let live = app
        .engine
        .store()
        .live_snapshot()
        .await
        .map_err(|e| ApiError::new(format!("The state database failed: {e}")))?;
    let rows: Vec<&GrantRow> = live
        .iter()
        .filter(|g| g.matches(ticket, server, user.as_ref()))
        .collect();
    let ctx = Ctx {
        now: app.engine.now(),
        local: crate::system::net::local_addresses_cached(),
        nat: app.portal.settings().nat.clone(),
    };
    let (system, error, open) = if !app.portal.is_connected().await {
        ("NOT_CONNECTED", None, None)
    } else {
        match app.portal.open_tickets().await {
            Ok(o) => (
                "CONNECTED",
                None,
                Some(open_with_servers(app, o, ticket).await),
            ),
            Err(e) => ("UNREACHABLE", Some(e.to_string()), None),
        }
    };
    let mut tickets: BTreeMap<TicketId, TicketOut> = BTreeMap::new();
    let mut listed: Vec<(TicketId, ServerNum)> = Vec::new();
    if let Some(open) = &open {
        for (id, subject, servers) in open {
            let t = tickets.entry(*id).or_insert_with(|| TicketOut {
                subject: subject.clone(),
                status: "OPEN",
                servers: BTreeMap::new(),
            });
            for (num, entry) in servers {
                let Ok(num) = ServerNum::parse(num) else {
                    continue;
                };
                if server.is_some_and(|s| s != num) {
                    continue;
                }
                let grant = rows
                    .iter()
                    .copied()
                    .find(|g| g.ticket == *id && g.server == num);
                let shown_user = grant
                    .map(|g| g.ssh_username.as_str())
                    .unwrap_or(&entry.ssh_username);
                if user.as_ref().is_some_and(|u| u.as_str() != shown_user) {
                    continue;
                }
                let auth = grant.map_or("NOT_AUTHED", |g| grant_auth_status(g, ctx.now, false));
                t.servers
                    .insert(num, server_json(&ctx, num, entry, grant, auth));
                listed.push((*id, num));
            }
        }
    }
    for &g in &rows {
        if listed.contains(&(g.ticket, g.server)) {
            continue;
        }
        let ticket_open = open
            .as_ref()
            .map(|o| o.iter().any(|(id, _, _)| *id == g.ticket));
        let status = match ticket_open {
            // The portal knows this ticket is open, but not this server.
            Some(true) => "OPEN",
            Some(false) if g.source == "portal" => "CLOSED",
            _ if g.ticket_status == "CLOSED" => "CLOSED",
            _ => "UNKNOWN",
        };
        let gone = g.source == "portal" && ticket_open.is_some();
        let auth = grant_auth_status(g, ctx.now, status == "CLOSED" || gone);
        let t = tickets.entry(g.ticket).or_insert_with(|| TicketOut {
            subject: g.ticket_subject.clone(),
            status,
            servers: BTreeMap::new(),
        });
        t.servers.insert(
            g.server,
            server_json(&ctx, g.server, &entry_of(g), Some(g), auth),
        );
    }
    let auths: Vec<Value> = tickets
        .into_iter()
        .map(|(t, out)| {
            json!({
                "ticket_id": t.get(),
                "ticket_subject": out.subject,
                "ticket_status": out.status,
                "servers": out.servers.into_values().collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "auths": auths, "ticket_system": system, "ticket_system_error": error }))
}
