//! `ticket_grant` without `ssh_key`: the grant goes through the ticket
//! system. Order: the ticket's server entry, the preconditions of
//! reference §3 (SSH IP bound, sshd listening on the ticket's port, the
//! user valid and existing), record the details and fetch the key, the
//! engine's grant, then the login details (user, escalation method, wheel
//! password) and the `ssh_key_grant` log entry. The last two are
//! non-fatal (`ticket_system_log_entry`): access is in place and the
//! answer carries the password for the admin to pass on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::envelope::{ApiError, ApiResult};
use crate::api::tickets::{granted_data, GrantBase};
use crate::app::App;
use crate::domain::caller::Caller;
use crate::engine::grant::GrantRequest;
use crate::portal::wire::{LoginDetails, PortalError, ServerDetails};
use crate::sshkey::SupportKey;

fn portal_err(e: PortalError) -> ApiError {
    ApiError::new(e.to_string())
}

fn host_names() -> (String, String) {
    let full = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let short = full.split('.').next().unwrap_or("").to_string();
    (full, short)
}

/// The ticket's SSH address must be this host's, and sshd must answer there.
async fn check_reachable(app: &App, what: &str, ip: &str, port: u16) -> Result<(), ApiError> {
    let parsed: IpAddr = ip.parse().map_err(|_| {
        ApiError::new(format!(
            "The ticket's {what} “{}” is not an IP address; correct the server entry in the ticket.",
            crate::types::printable(ip)
        ))
    })?;
    let nat = &app.portal.settings().nat;
    let local = crate::system::net::local_addresses();
    if !crate::portal::is_bound(nat, &local, ip) {
        return Err(ApiError::new(format!(
            "The ticket's {what} {ip} is not bound on this server (a 1:1 NAT public address counts when listed in portal.nat)."
        )));
    }
    if port == 0 {
        return Ok(());
    }
    let addr = SocketAddr::new(crate::portal::local_side(nat, parsed), port);
    let limit = Duration::from_secs(app.portal.settings().preflight_timeout_secs);
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ApiError::new(format!(
            "sshd is not listening on the ticket's SSH address {ip} port {port} ({e})."
        ))),
        Err(_) => Err(ApiError::new(format!(
            "sshd does not answer on the ticket's SSH address {ip} port {port}."
        ))),
    }
}

pub async fn grant(app: &Arc<App>, caller: &Caller, base: GrantBase) -> ApiResult {
    let (ticket, server) = (base.ticket, base.server);
    let servers = app
        .portal
        .ticket_servers(ticket)
        .await
        .map_err(portal_err)?;
    let entry = servers.get(&server.to_string()).cloned().ok_or_else(|| {
        portal_err(PortalError::NotFound(format!(
            "ticket {ticket} server {server}"
        )))
    })?;
    check_reachable(app, "SSH IP", &entry.ssh_ip, entry.ssh_port).await?;
    if !entry.whm_ip.is_empty() {
        check_reachable(app, "WHM IP", &entry.whm_ip, 0).await?;
    }
    if let Some(u) = &base.ssh_username {
        if !u.is_root() {
            let users = Arc::clone(&app.engine.host().users);
            let u2 = u.clone();
            let found = tokio::task::spawn_blocking(move || users.lookup(&u2))
                .await
                .map_err(|e| ApiError::new(e.to_string()))?
                .map_err(|e| ApiError::new(e.to_string()))?;
            if found.is_none() {
                return Err(ApiError::new(format!(
                    "The user “{u}” does not exist on this server."
                )));
            }
        }
    }
    let (hostname, shorthostname) = host_names();
    let requested = base.ssh_username.as_ref().map(|u| u.as_str().to_string());
    let details = ServerDetails {
        ticket_id: ticket.get(),
        server_num: server.get(),
        secure_id: base.secure_id.clone(),
        hostname,
        shorthostname,
        ssh_port: entry.ssh_port,
        ssh_user: requested.clone().unwrap_or_default(),
        root_escalation_method: match &requested {
            Some(u) if u != "root" => "sudo".into(),
            _ => String::new(),
        },
    };
    let answer = app
        .portal
        .fetch_key(ticket, server, &details)
        .await
        .map_err(portal_err)?;
    let key = SupportKey::parse(&answer.ssh_public_key).map_err(|e| {
        ApiError::new(format!(
            "The ticket system returned something that is not an SSH public key: {e}"
        ))
    })?;
    let access_ips = if !base.access_ips.is_empty() {
        base.access_ips
    } else {
        match app.portal.support_ips().await {
            // The portal is a remote party: its list gets the same caps.
            Ok(ips) => {
                crate::types::check_support_ips(&ips).map_err(|e| {
                    ApiError::new(format!("The ticket system's support addresses: {e}"))
                })?;
                ips
            }
            Err(e) => {
                // Empty: the engine falls back to access.support_ips.
                tracing::warn!(error = %e, "cannot get support IPs from the portal; using access.support_ips");
                Vec::new()
            }
        }
    };
    let subject = app
        .portal
        .open_tickets()
        .await
        .ok()
        .and_then(|o| o.into_iter().find(|t| t.ticket_id == ticket.to_string()))
        .map(|t| t.ticket_subject)
        .unwrap_or_default();
    let pick = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let req = GrantRequest {
        ticket,
        server,
        key,
        ssh_username: base.ssh_username,
        ttl: base.ttl,
        access_ips,
        source: crate::domain::GrantSource::Portal,
        server_name: pick(&answer.server.server_name, &entry.server_name),
        ticket_subject: subject,
        ssh_ip: entry.ssh_ip.clone(),
        ssh_port: entry.ssh_port,
        whm_ip: entry.whm_ip.clone(),
    };
    let mut g = match app.engine.grant(caller, req).await {
        Ok(g) => g,
        Err(e) => return Err(ApiError::new(e.to_string())),
    };
    let user = g.row.ssh_username.as_str().to_string();
    let method = if g.row.ssh_username.is_root() {
        ""
    } else {
        "sudo"
    };
    let login = LoginDetails {
        ssh_user: &user,
        root_escalation_method: method,
        wheel_pass: g.password.as_ref().map(|p| p.expose()),
    };
    let mut failed = Vec::new();
    if let Err(e) = app.portal.send_login(ticket, server, &login).await {
        failed.push(format!("login details: {e}"));
    }
    if let Err(e) = app.portal.log_event(ticket, server, "ssh_key_grant").await {
        failed.push(format!("log entry: {e}"));
    }
    if !failed.is_empty() {
        tracing::warn!(problems = %failed.join("; "), "the ticket system was not fully told about the grant");
        g.non_fatals.push("ticket_system_log_entry".into());
    }
    let mut data = granted_data(&g);
    data.insert("root_escalation_method".into(), json!(method));
    if !failed.is_empty() {
        data.insert("ticket_system_problems".into(), json!(failed));
    }
    Ok(Value::Object(data))
}
