//! The ticket system (cPanel Customer Portal, reference §6): OAuth2
//! session, tickets, support keys and IPs, log entries and the SSH test.
//!
//! Calls, relative to the base URL (`portal.base_url`, else
//! `TICKETS_SERVER_URL` from cpsources.conf, else
//! [`DEFAULT_PORTAL_URL`](crate::config::DEFAULT_PORTAL_URL)); bodies are
//! JSON unless noted, every call but the token exchange carries
//! `Authorization: Bearer <access token>`:
//!
//! | call | path | answer |
//! |---|---|---|
//! | token (form: `grant_type=authorization_code`, `code`, `redirect_uri`; or `grant_type=refresh_token`, `refresh_token`) | `POST /oauth2/token` | `{access_token, refresh_token, expires_in}` |
//! | support IPs | `GET /support/access_ips` | `[{ip}]` |
//! | support info | `GET /support/info` | any JSON object |
//! | open tickets | `GET /tickets/open` | `[{ticket_id, ticket_subject, servers?}]` |
//! | server entries | `GET /tickets/{id}` | `{server_num: {server_name, ssh_username, ssh_ip, ssh_port, whm_ip, root_escalation_method}}`; 404 none |
//! | record details, fetch key | `POST /tickets/{id}/servers/{n}/ssh_key` | entry + `ssh_public_key` |
//! | login details after the grant | `POST /tickets/{id}/servers/{n}/login` `{ssh_user, root_escalation_method, wheel_pass?}` | 2xx |
//! | log entry | `POST /tickets/{id}/servers/{n}/log` `{event_type}` | 201 |
//! | SSH test start | `POST /ssh_tests` `{ticket_id, server_num}` | `{test_id}` |
//! | SSH test result | `GET /ssh_tests/{test_id}` | 202 while testing; 200 `{result}` or `{results: {n: result}}` |
//!
//! The key is fetched before the grant because the engine needs it; the
//! engine then decides the login user (root or a temporary wheel user with
//! a fresh password), and that user, the escalation method and the password
//! go to the portal in the `login` call. Nothing is sent until an admin
//! connects: without a session the daemon never contacts the portal.
//!
//! Only GETs are retried (with backoff); a POST may have been applied.

pub mod http;
pub mod poller;
pub mod preflight;
/// The OAuth2 session is kept by the store, which owns all SQL.
pub use crate::store::portal_session as session;
pub mod sshtest;
pub mod url;
pub mod wire;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::{Config, PortalConfig, DEFAULT_PORTAL_URL};
use crate::store::Store;
use crate::types::{ServerNum, SupportIp, TicketId};
use http::{Body, HttpClient, Reply};
use session::Tokens;
use url::BaseUrl;
use wire::{check_status, parse, KeyAnswer, OpenTicket, PortalError, ServerEntry, TestAnswer};

/// Refresh the access token when it has less than this left.
const REFRESH_MARGIN_SECS: i64 = 60;

pub struct Portal {
    client: Result<HttpClient, String>,
    settings: PortalConfig,
    store: Store,
    clock: Arc<dyn Clock>,
    /// Serialises token refreshes (a refresh token may be single-use).
    refresh: Mutex<()>,
    ips_cache: Mutex<Option<(Instant, Vec<SupportIp>)>>,
    /// Whether a session is stored ([`SESSION_UNKNOWN`], [`SESSION_NONE`],
    /// [`SESSION_STORED`]): ticket_list asks on every call. Only
    /// [`session::save`] (called from `token_call`) writes the session and
    /// nothing deletes it; the store is this process's alone.
    session_state: AtomicU8,
}

const SESSION_UNKNOWN: u8 = 0;
const SESSION_NONE: u8 = 1;
const SESSION_STORED: u8 = 2;

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The base URL in force: configured, else cpsources, else the default.
pub fn base_url(cfg: &Config) -> String {
    if !cfg.portal.base_url.is_empty() {
        return cfg.portal.base_url.clone();
    }
    std::fs::read_to_string(cfg.host_path(&cfg.paths.cpsources))
        .ok()
        .and_then(|t| url::from_cpsources(&t))
        .unwrap_or_else(|| DEFAULT_PORTAL_URL.to_string())
}

impl Portal {
    pub fn from_config(cfg: &Config, store: Store, clock: Arc<dyn Clock>) -> Portal {
        let raw = base_url(cfg);
        let client = BaseUrl::parse(&raw)
            .map(|b| HttpClient::new(b, &cfg.portal, &cfg.portal.ca_file))
            .map_err(|e| format!("the ticket system URL is unusable: {e}"));
        if let Err(e) = &client {
            tracing::warn!("{e}; portal features are off");
        }
        Portal {
            client,
            settings: cfg.portal.clone(),
            store,
            clock,
            refresh: Mutex::new(()),
            ips_cache: Mutex::new(None),
            session_state: AtomicU8::new(SESSION_UNKNOWN),
        }
    }

    pub fn settings(&self) -> &PortalConfig {
        &self.settings
    }

    fn client(&self) -> Result<&HttpClient, PortalError> {
        self.client
            .as_ref()
            .map_err(|e| PortalError::Connect(e.clone()))
    }

    /// Whether an admin has connected this server (a session is stored).
    pub async fn is_connected(&self) -> bool {
        match self.session_state.load(Ordering::Acquire) {
            SESSION_STORED => return true,
            SESSION_NONE => return false,
            _ => {}
        }
        let found = match session::load(&self.store).await {
            Ok(found) => found.is_some(),
            // Not remembered: the next call asks the store again.
            Err(_) => return false,
        };
        let known = if found { SESSION_STORED } else { SESSION_NONE };
        // Only from "unknown": a save that finished meanwhile wins.
        let _ = self.session_state.compare_exchange(
            SESSION_UNKNOWN,
            known,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        found
    }

    /// Calls the token endpoint and stores the answer. `keep_refresh` is
    /// kept when a refresh answer carries no new refresh token.
    async fn token_call(
        &self,
        form: &[(&str, &str)],
        keep_refresh: &str,
    ) -> Result<Tokens, PortalError> {
        let body = Body {
            content_type: "application/x-www-form-urlencoded",
            bytes: wire::form_encode(form).into_bytes(),
        };
        let r = self
            .client()?
            .send("POST", "/oauth2/token", None, Some(body))
            .await?;
        check_status(r.status, "this authorization code")?;
        let t: wire::TokenAnswer = parse(&r.body)?;
        if t.access_token.is_empty() {
            return Err(PortalError::Malformed("empty access_token".into()));
        }
        let now = self.clock.now();
        let tokens = Tokens {
            access: t.access_token,
            refresh: if t.refresh_token.is_empty() {
                keep_refresh.to_string()
            } else {
                t.refresh_token
            },
            expires_at: now.saturating_add(i64::try_from(t.expires_in).unwrap_or(i64::MAX)),
        };
        let saved = session::save(&self.store, &tokens, now).await;
        // A failed save may still have landed: ask the store next time.
        self.session_state.store(
            if saved.is_ok() {
                SESSION_STORED
            } else {
                SESSION_UNKNOWN
            },
            Ordering::Release,
        );
        saved.map_err(|e| PortalError::Store(e.to_string()))?;
        Ok(tokens)
    }

    /// Exchanges an authorization code for tokens and stores them.
    pub async fn connect(&self, code: &str, redirect_uri: &str) -> Result<(), PortalError> {
        let _one = self.refresh.lock().await;
        self.token_call(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ],
            "",
        )
        .await
        .map(|_| ())
    }

    /// A usable access token, refreshed first when it is about to expire.
    async fn access_token(&self) -> Result<String, PortalError> {
        let _one = self.refresh.lock().await;
        let t = session::load(&self.store)
            .await
            .map_err(|e| PortalError::Store(e.to_string()))?
            .ok_or(PortalError::NotConnected)?;
        if t.expires_at - self.clock.now() > REFRESH_MARGIN_SECS {
            return Ok(t.access);
        }
        if t.refresh.is_empty() {
            return Err(PortalError::SessionExpired);
        }
        tracing::info!("refreshing the ticket system session");
        let new = self
            .token_call(
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &t.refresh),
                ],
                &t.refresh,
            )
            .await?;
        Ok(new.access)
    }

    /// A GET, retried with backoff on transient failures.
    async fn get(&self, call: &str) -> Result<Reply, PortalError> {
        let token = self.access_token().await?;
        let client = self.client()?;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match client.send("GET", call, Some(&token), None).await {
                Ok(r) if !(500..=599).contains(&r.status) => return Ok(r),
                Ok(r) if attempt >= self.settings.get_attempts => return Ok(r),
                Err(e) if !e.is_transient() || attempt >= self.settings.get_attempts => {
                    return Err(e)
                }
                _ => {}
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    /// A POST of a JSON body; never retried.
    async fn post(&self, call: &str, body: &Value) -> Result<Reply, PortalError> {
        let token = self.access_token().await?;
        let bytes = serde_json::to_vec(body).map_err(|e| PortalError::Malformed(e.to_string()))?;
        self.client()?
            .send(
                "POST",
                call,
                Some(&token),
                Some(Body {
                    content_type: "application/json",
                    bytes,
                }),
            )
            .await
    }

    /// Support's source addresses, cached for `support_ips_ttl_secs`.
    pub async fn support_ips(&self) -> Result<Vec<SupportIp>, PortalError> {
        let ttl = Duration::from_secs(self.settings.support_ips_ttl_secs);
        let mut cache = self.ips_cache.lock().await;
        if let Some((at, ips)) = cache.as_ref() {
            if at.elapsed() < ttl {
                return Ok(ips.clone());
            }
        }
        let r = self.get("/support/access_ips").await?;
        check_status(r.status, "support access IPs")?;
        let list: Vec<wire::AccessIp> = parse(&r.body)?;
        let ips = list
            .iter()
            .map(|a| SupportIp::parse(&a.ip))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PortalError::Malformed(format!("support IP: {e}")))?;
        *cache = Some((Instant::now(), ips.clone()));
        Ok(ips)
    }

    pub async fn support_info(&self) -> Result<Value, PortalError> {
        let r = self.get("/support/info").await?;
        check_status(r.status, "support information")?;
        parse(&r.body)
    }

    pub async fn open_tickets(&self) -> Result<Vec<OpenTicket>, PortalError> {
        let r = self.get("/tickets/open").await?;
        check_status(r.status, "open tickets")?;
        parse(&r.body)
    }

    /// The server entries of a ticket (empty when the portal has none).
    pub async fn ticket_servers(
        &self,
        ticket: TicketId,
    ) -> Result<BTreeMap<String, ServerEntry>, PortalError> {
        let r = self.get(&format!("/tickets/{ticket}")).await?;
        if r.status == 404 {
            return Ok(BTreeMap::new());
        }
        check_status(r.status, &format!("ticket {ticket}"))?;
        parse(&r.body)
    }

    /// Records this server's details and fetches support's public key.
    pub async fn fetch_key(
        &self,
        ticket: TicketId,
        server: ServerNum,
        details: &wire::ServerDetails,
    ) -> Result<KeyAnswer, PortalError> {
        let body =
            serde_json::to_value(details).map_err(|e| PortalError::Malformed(e.to_string()))?;
        let r = self
            .post(
                &format!("/tickets/{ticket}/servers/{server}/ssh_key"),
                &body,
            )
            .await?;
        check_status(r.status, &format!("ticket {ticket} server {server}"))?;
        parse(&r.body)
    }

    /// Tells the portal who support logs in as (and the wheel password).
    pub async fn send_login(
        &self,
        ticket: TicketId,
        server: ServerNum,
        login: &wire::LoginDetails<'_>,
    ) -> Result<(), PortalError> {
        let body =
            serde_json::to_value(login).map_err(|e| PortalError::Malformed(e.to_string()))?;
        let r = self
            .post(&format!("/tickets/{ticket}/servers/{server}/login"), &body)
            .await?;
        check_status(r.status, &format!("ticket {ticket} server {server}"))
    }

    /// Adds `ssh_key_grant` / `ssh_key_revoke` to the ticket's log.
    pub async fn log_event(
        &self,
        ticket: TicketId,
        server: ServerNum,
        event_type: &str,
    ) -> Result<(), PortalError> {
        let r = self
            .post(
                &format!("/tickets/{ticket}/servers/{server}/log"),
                &serde_json::json!({ "event_type": event_type }),
            )
            .await?;
        check_status(r.status, &format!("ticket {ticket} server {server}"))
    }

    pub async fn start_test(
        &self,
        ticket: TicketId,
        server: ServerNum,
    ) -> Result<String, PortalError> {
        let r = self
            .post(
                "/ssh_tests",
                &serde_json::json!({ "ticket_id": ticket.get(), "server_num": server.get() }),
            )
            .await?;
        check_status(r.status, &format!("ticket {ticket} server {server}"))?;
        let s: wire::TestStarted = parse(&r.body)?;
        if s.test_id.is_empty()
            || !s
                .test_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(PortalError::Malformed(
                "test_id is not a plain identifier".into(),
            ));
        }
        Ok(s.test_id)
    }

    /// `None` while the portal is still testing (202).
    pub async fn test_result(&self, test_id: &str) -> Result<Option<TestAnswer>, PortalError> {
        let r = self.get(&format!("/ssh_tests/{test_id}")).await?;
        if r.status == 202 {
            return Ok(None);
        }
        check_status(r.status, &format!("SSH test {test_id}"))?;
        parse(&r.body).map(Some)
    }
}

/// Where to reach a ticket's SSH address from here: the local side of a
/// 1:1 NAT mapping when the portal knows the public one.
pub fn local_side(nat: &BTreeMap<String, String>, ssh_ip: IpAddr) -> IpAddr {
    nat.iter()
        .find(|(_, public)| public.parse::<IpAddr>().ok() == Some(ssh_ip))
        .and_then(|(local, _)| local.parse().ok())
        .unwrap_or(ssh_ip)
}

/// Whether `ssh_ip` is an address of this host, directly or through NAT.
pub fn is_bound(
    nat: &BTreeMap<String, String>,
    local: &std::collections::BTreeSet<IpAddr>,
    ssh_ip: &str,
) -> bool {
    ssh_ip
        .parse::<IpAddr>()
        .is_ok_and(|ip| local.contains(&local_side(nat, ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_mapping_counts_as_bound() {
        let mut nat = BTreeMap::new();
        nat.insert("127.0.0.1".to_string(), "203.0.113.5".to_string());
        let local: std::collections::BTreeSet<IpAddr> = ["127.0.0.1".parse().unwrap()].into();
        assert!(is_bound(&nat, &local, "203.0.113.5"));
        assert!(is_bound(&nat, &local, "127.0.0.1"));
        assert!(!is_bound(&nat, &local, "203.0.113.6"));
        assert!(!is_bound(&nat, &local, ""));
    }
}
