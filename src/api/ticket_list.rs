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

use axum::body::Bytes;
use serde::Serialize;

use crate::api::envelope::{ApiError, Data, DataResult, Params};
use crate::api::tickets::reject_unknown;
use crate::app::App;
use crate::domain::caller::Caller;
use crate::domain::{GrantSource, TicketStatus};
use crate::portal::wire::{OpenTicket, ServerEntry};
use crate::store::grants::{GrantRow, GrantState};
use crate::types::{ServerNum, SupportIp, TicketId, Username};

// The answer is serialized straight from these borrowed structs (no
// `serde_json::Value` tree). Their fields are declared in sorted order so
// the bytes are exactly what the former `json!` maps (sorted) printed.

#[derive(Serialize)]
struct ListOut<'a> {
    auths: Vec<TicketOut<'a>>,
    ticket_system: &'static str,
    ticket_system_error: Option<String>,
}

#[derive(Serialize)]
struct TicketOut<'a> {
    servers: Servers<'a>,
    ticket_id: u64,
    ticket_status: &'static str,
    ticket_subject: &'a str,
}

/// A ticket's servers by number, serialized as an array in number order.
/// A sorted Vec, not a BTreeMap: a ticket has one or a few servers, and a
/// map node per ticket (~2 KB) made a 10 000-grant answer allocate ~20 MB.
#[derive(Default)]
struct Servers<'a>(Vec<(ServerNum, ServerOut<'a>)>);

impl<'a> Servers<'a> {
    /// Adds or replaces (like a map) the entry of server `n`.
    fn insert(&mut self, n: ServerNum, out: ServerOut<'a>) {
        match self.0.binary_search_by_key(&n, |(k, _)| *k) {
            Ok(i) => self.0[i].1 = out,
            Err(i) => self.0.insert(i, (n, out)),
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

impl Serialize for Servers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(_, out)| out))
    }
}

#[derive(Serialize)]
struct ServerOut<'a> {
    access_ips: Option<&'a [SupportIp]>,
    auth_status: &'static str,
    auth_time: Option<i64>,
    bound: u8,
    expires_at: Option<i64>,
    /// The grant's own state (granting, active, revoking) while a grant
    /// row exists: a grant or revoke in progress shows as such.
    grant_state: Option<&'static str>,
    key_fingerprint: Option<&'a str>,
    /// When the grant's key last logged in (epoch), as sshd's log showed.
    last_login: Option<i64>,
    /// How many times the grant's key logged in.
    login_count: Option<u64>,
    server_name: &'a str,
    server_num: u64,
    source: Option<&'a str>,
    ssh: String,
    ssh_username: &'a str,
    whm_ip: &'a str,
}

/// A server entry's fields, from the portal or from a grant row.
#[derive(Clone, Copy)]
struct EntryRef<'a> {
    server_name: &'a str,
    ssh_username: &'a str,
    ssh_ip: &'a str,
    ssh_port: u16,
    whm_ip: &'a str,
}

impl<'a> From<&'a ServerEntry> for EntryRef<'a> {
    fn from(e: &'a ServerEntry) -> Self {
        EntryRef {
            server_name: &e.server_name,
            ssh_username: &e.ssh_username,
            ssh_ip: &e.ssh_ip,
            ssh_port: e.ssh_port,
            whm_ip: &e.whm_ip,
        }
    }
}

fn entry_of(g: &GrantRow) -> EntryRef<'_> {
    EntryRef {
        server_name: &g.server_name,
        ssh_username: g.ssh_username.as_str(),
        ssh_ip: &g.ssh_ip,
        ssh_port: g.ssh_port,
        whm_ip: &g.whm_ip,
    }
}

fn grant_auth_status(g: &GrantRow, now: i64, ticket_closed: bool) -> &'static str {
    match g.state {
        GrantState::Active if ticket_closed => "EXPIRED",
        GrantState::Active if g.expires_at.is_some_and(|t| t <= now) => "EXPIRED",
        GrantState::Active => "AUTHED",
        _ => "NOT_AUTHED",
    }
}

struct Ctx<'a> {
    now: i64,
    local: Arc<std::collections::BTreeSet<std::net::IpAddr>>,
    nat: &'a BTreeMap<String, String>,
    /// Logins per grant id (see `crate::logins`).
    logins: std::collections::HashMap<i64, crate::store::logins::LoginStats>,
}

fn server_out<'a>(
    ctx: &Ctx<'_>,
    server: ServerNum,
    entry: EntryRef<'a>,
    grant: Option<&'a GrantRow>,
    auth: &'static str,
) -> ServerOut<'a> {
    let ssh = if entry.ssh_ip.is_empty() {
        String::new()
    } else {
        format!("{}:{}", entry.ssh_ip, entry.ssh_port)
    };
    let bound = crate::portal::is_bound(ctx.nat, &ctx.local, entry.ssh_ip);
    let logins = grant.map(|g| ctx.logins.get(&g.id).copied().unwrap_or_default());
    ServerOut {
        access_ips: grant.map(|g| g.access_ips.as_slice()),
        auth_status: auth,
        auth_time: grant.map(|g| g.created_at),
        bound: u8::from(bound),
        expires_at: grant.and_then(|g| g.expires_at),
        grant_state: grant.map(|g| g.state.as_str()),
        key_fingerprint: grant.map(|g| g.key_fingerprint.as_str()),
        last_login: logins.and_then(|l| l.last),
        login_count: logins.map(|l| l.count),
        server_name: entry.server_name,
        server_num: server.get(),
        source: grant.map(|g| g.source.as_str()),
        ssh,
        ssh_username: grant.map_or(entry.ssh_username, |g| g.ssh_username.as_str()),
        whm_ip: entry.whm_ip,
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

pub async fn ticket_list(app: &Arc<App>, _caller: &Caller, params: &Params) -> DataResult {
    reject_unknown(params, &["ticket_id", "server_num", "ssh_username"])?;
    let ticket = params.get("ticket_id").map(TicketId::parse).transpose()?;
    let server = params.get("server_num").map(ServerNum::parse).transpose()?;
    let user = params
        .get("ssh_username")
        .map(Username::parse)
        .transpose()?;
    let live = app
        .engine
        .store()
        .live_snapshot()
        .await
        .map_err(ApiError::from)?;
    let ctx = Ctx {
        now: app.engine.now(),
        local: crate::system::net::local_addresses_cached(),
        nat: &app.portal.settings().nat,
        logins: app
            .engine
            .store()
            .login_stats()
            .await
            .map_err(|e| ApiError::new(format!("The state database failed: {e}")))?,
    };
    let connected = app.portal.is_connected().await;
    let rows: Vec<&GrantRow> = live
        .iter()
        .filter(|g| g.matches(ticket, server, user.as_ref()))
        .collect();
    let (system, error, open) = if !connected {
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
                servers: Servers::default(),
                ticket_id: id.get(),
                ticket_status: "OPEN",
                ticket_subject: subject,
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
                    .insert(num, server_out(&ctx, num, entry.into(), grant, auth));
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
            Some(false) if g.source == GrantSource::Portal => "CLOSED",
            _ if g.ticket_status == TicketStatus::Closed => "CLOSED",
            _ => "UNKNOWN",
        };
        let gone = g.source == GrantSource::Portal && ticket_open.is_some();
        let auth = grant_auth_status(g, ctx.now, status == "CLOSED" || gone);
        let t = tickets.entry(g.ticket).or_insert_with(|| TicketOut {
            servers: Servers::default(),
            ticket_id: g.ticket.get(),
            ticket_status: status,
            ticket_subject: &g.ticket_subject,
        });
        t.servers.insert(
            g.server,
            server_out(&ctx, g.server, entry_of(g), Some(g), auth),
        );
    }
    let out = ListOut {
        auths: tickets.into_values().collect(),
        ticket_system: system,
        ticket_system_error: error,
    };
    // Sized for the usual ~400 bytes per server up front: growing a
    // multi-megabyte buffer by doubling copies it again and again.
    let servers: usize = out.auths.iter().map(|t| t.servers.len()).sum();
    let mut json = Vec::with_capacity(servers.saturating_mul(448).saturating_add(128));
    serde_json::to_writer(&mut json, &out).map_err(|e| {
        tracing::error!(error = %e, "cannot serialize ticket_list");
        ApiError::new("Internal error: the answer could not be serialized; see the daemon log.")
    })?;
    Ok(Data::Json(Bytes::from(json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant() -> GrantRow {
        GrantRow {
            id: 1,
            ticket: TicketId::parse("12345").unwrap(),
            server: ServerNum::parse("2").unwrap(),
            state: GrantState::Active,
            source: GrantSource::Local,
            ssh_username: Username::parse("cp12345.ssh").unwrap(),
            temp_user: true,
            sudoers_dropin: false,
            ssh_dir_created: false,
            ssh_key: "ssh-ed25519 AAAA".into(),
            key_fingerprint: "SHA256:abc\"def".into(),
            key_comment: "12345_server_2@cpanel.net_1".into(),
            access_ips: vec![
                SupportIp::parse("203.0.113.5").unwrap(),
                SupportIp::parse("2001:db8::/64").unwrap(),
            ],
            server_name: "srv “one”".into(),
            ticket_subject: "Help\nme".into(),
            ssh_ip: "127.0.0.1".into(),
            ssh_port: 2222,
            whm_ip: "198.51.100.1".into(),
            ticket_status: TicketStatus::Open,
            created_at: 100,
            expires_at: Some(200),
            ended_at: None,
            end_reason: None,
            granted_by: "uid:0".into(),
        }
    }

    fn g_id() -> i64 {
        grant().id
    }

    /// The former `json!` rendering of a server entry: the reference the
    /// typed structs must match byte for byte.
    fn reference(
        ctx: &Ctx<'_>,
        server: ServerNum,
        entry: &ServerEntry,
        grant: Option<&GrantRow>,
        auth: &str,
    ) -> serde_json::Value {
        let ssh = if entry.ssh_ip.is_empty() {
            String::new()
        } else {
            format!("{}:{}", entry.ssh_ip, entry.ssh_port)
        };
        let bound = crate::portal::is_bound(ctx.nat, &ctx.local, &entry.ssh_ip);
        json!({
            "server_num": server.get(),
            "server_name": entry.server_name,
            "ssh_username": grant.map(|g| g.ssh_username.as_str().to_string()).unwrap_or_else(|| entry.ssh_username.clone()),
            "ssh": ssh,
            "whm_ip": entry.whm_ip,
            "auth_status": auth,
            "auth_time": grant.map(|g| g.created_at),
            "bound": bound as u8,
            "grant_state": grant.map(|g| g.state.as_str()),
            "expires_at": grant.and_then(|g| g.expires_at),
            "access_ips": grant.map(|g| g.access_ips.clone()),
            "key_fingerprint": grant.map(|g| g.key_fingerprint.clone()),
            "last_login": grant.map(|_| 140),
            "login_count": grant.map(|_| 2),
            "source": grant.map(|g| g.source),
        })
    }

    #[test]
    fn servers_are_listed_by_number_and_replaced_like_a_map() {
        let nat = BTreeMap::new();
        let ctx = Ctx {
            now: 0,
            local: Arc::default(),
            nat: &nat,
            logins: Default::default(),
        };
        let g = grant();
        let mut servers = Servers::default();
        for (n, auth) in [(3, "A"), (1, "B"), (2, "C"), (1, "D")] {
            let n = ServerNum::parse(&n.to_string()).unwrap();
            servers.insert(n, server_out(&ctx, n, entry_of(&g), Some(&g), auth));
        }
        assert_eq!(servers.len(), 3);
        let v = serde_json::to_value(&servers).unwrap();
        let got: Vec<(u64, &str)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["server_num"].as_u64().unwrap(),
                    s["auth_status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, vec![(1, "D"), (2, "C"), (3, "A")]);
    }

    #[test]
    fn typed_answer_is_byte_identical_to_the_json_maps() {
        let nat = BTreeMap::new();
        let ctx = Ctx {
            now: 150,
            local: Arc::new(["127.0.0.1".parse().unwrap()].into()),
            nat: &nat,
            logins: [(
                g_id(),
                crate::store::logins::LoginStats {
                    count: 2,
                    last: Some(140),
                },
            )]
            .into(),
        };
        let g = grant();
        let portal_entry = ServerEntry {
            server_name: "portal name".into(),
            ssh_username: "root".into(),
            ssh_ip: String::new(),
            ssh_port: 22,
            whm_ip: String::new(),
            root_escalation_method: String::new(),
        };
        let own_entry = ServerEntry {
            server_name: g.server_name.clone(),
            ssh_username: g.ssh_username.as_str().to_string(),
            ssh_ip: g.ssh_ip.clone(),
            ssh_port: g.ssh_port,
            whm_ip: g.whm_ip.clone(),
            root_escalation_method: String::new(),
        };
        for (entry, grant, via_grant) in [
            (&own_entry, Some(&g), true),
            (&portal_entry, Some(&g), false),
            (&portal_entry, None, false),
        ] {
            let typed = if via_grant {
                server_out(&ctx, g.server, entry_of(&g), grant, "AUTHED")
            } else {
                server_out(&ctx, g.server, entry.into(), grant, "AUTHED")
            };
            let want = reference(&ctx, g.server, entry, grant, "AUTHED");
            let mut servers = Servers::default();
            servers.insert(g.server, typed);
            let out = ListOut {
                auths: vec![TicketOut {
                    servers,
                    ticket_id: g.ticket.get(),
                    ticket_status: "UNKNOWN",
                    ticket_subject: &g.ticket_subject,
                }],
                ticket_system: "NOT_CONNECTED",
                ticket_system_error: Some("x \"y\"".into()),
            };
            let want = json!({
                "auths": [json!({
                    "ticket_id": g.ticket.get(),
                    "ticket_subject": g.ticket_subject,
                    "ticket_status": "UNKNOWN",
                    "servers": vec![want],
                })],
                "ticket_system": "NOT_CONNECTED",
                "ticket_system_error": Some("x \"y\""),
            });
            assert_eq!(serde_json::to_string(&out).unwrap(), want.to_string());
        }
    }
}
