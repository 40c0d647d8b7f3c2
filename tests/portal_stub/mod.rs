//! A stub ticket system (the calls documented in `supportauth::portal`),
//! written with axum, on 127.0.0.1:0 in its own thread and runtime. Tests
//! change its state (tickets, failure modes) and read what it received.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const GOOD_CODE: &str = "good-code-42";
pub const ACCESS_PREFIX: &str = "stub-access-token-";
pub const REFRESH_TOKEN: &str = "stub-refresh-token-SECRET";

/// How the stub answers a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Status(u16),
    /// Answers after this long (beyond the daemon's read timeout).
    Slow(Duration),
    Malformed,
    Huge,
}

#[derive(Debug, Clone)]
pub struct Ticket {
    pub subject: String,
    pub open: bool,
    /// server_num -> entry (JSON object).
    pub servers: BTreeMap<String, Value>,
}

#[derive(Debug)]
pub struct StubState {
    pub tickets: BTreeMap<u64, Ticket>,
    pub access_ips: Vec<String>,
    pub key: String,
    /// Lifetime of issued access tokens.
    pub expires_in: u64,
    pub issued: u32,
    /// The access token currently valid ("" = none).
    pub access: String,
    /// Mode for `GET /tickets/open`.
    pub open_mode: Mode,
    /// Leave `servers` out of the open-ticket list (the client must then
    /// ask `GET /tickets/{id}`).
    pub omit_servers: bool,
    /// Mode for every other call but the token exchange.
    pub mode: Mode,
    /// SSH test: 202 this many times, then `test_result` (None: forever).
    pub test_pending: u32,
    pub test_result: Option<String>,
    pub test_polls: u32,
    /// (method + path, body) of every request received.
    pub received: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct Stub {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<StubState>>,
}

type S = Arc<Mutex<StubState>>;

impl Stub {
    pub fn start(key: &str) -> Stub {
        let state = Arc::new(Mutex::new(StubState {
            tickets: BTreeMap::new(),
            access_ips: vec!["203.0.113.9".into()],
            key: key.to_string(),
            expires_in: 3600,
            issued: 0,
            access: String::new(),
            open_mode: Mode::Normal,
            omit_servers: false,
            mode: Mode::Normal,
            test_pending: 2,
            test_result: Some("SUCCESS".into()),
            test_polls: 0,
            received: Vec::new(),
        }));
        let app = Router::new()
            .route("/api/oauth2/authorize", get(authorize))
            .route("/api/oauth2/token", post(token))
            .route("/api/support/access_ips", get(access_ips))
            .route("/api/support/info", get(info))
            .route("/api/tickets/open", get(open))
            .route("/api/tickets/{id}", get(ticket))
            .route("/api/tickets/{id}/servers/{n}/ssh_key", post(ssh_key))
            .route("/api/tickets/{id}/servers/{n}/login", post(login))
            .route("/api/tickets/{id}/servers/{n}/log", post(log))
            .route("/api/ssh_tests", post(test_start))
            .route("/api/ssh_tests/{id}", get(test_result))
            .with_state(Arc::clone(&state));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Stub { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut StubState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn received(&self, needle: &str) -> Vec<(String, String)> {
        self.with(|s| {
            s.received
                .iter()
                .filter(|(p, _)| p.contains(needle))
                .cloned()
                .collect()
        })
    }

    /// Adds an open ticket with one server entry.
    pub fn add_ticket(&self, id: u64, server: u64, ssh_ip: &str, ssh_port: u16) {
        self.with(|s| {
            let t = s.tickets.entry(id).or_insert_with(|| Ticket {
                subject: format!("Ticket {id} subject"),
                open: true,
                servers: BTreeMap::new(),
            });
            t.servers.insert(
                server.to_string(),
                json!({
                    "server_name": format!("srv{server}.example"),
                    "ssh_username": "root",
                    "ssh_ip": ssh_ip,
                    "ssh_port": ssh_port,
                    "whm_ip": "",
                    "root_escalation_method": "",
                }),
            );
        });
    }
}

fn record(s: &S, what: String, body: String) {
    s.lock().unwrap().received.push((what, body));
}

/// The failure-mode answer for `mode`, or None to answer normally.
async fn failure(mode: Mode) -> Option<Response> {
    match mode {
        Mode::Normal => None,
        Mode::Status(c) => Some(
            (
                StatusCode::from_u16(c).unwrap(),
                Json(json!({"error": "stub failure"})),
            )
                .into_response(),
        ),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Mode::Malformed => {
            Some(([("content-type", "application/json")], "{\"tickets\": [").into_response())
        }
        Mode::Huge => Some(
            (
                [("content-type", "application/json")],
                format!("[\"{}\"]", "x".repeat(4 * 1024 * 1024)),
            )
                .into_response(),
        ),
    }
}

/// Checks the bearer token and the general failure mode.
async fn guard(s: &S, h: &HeaderMap, what: String, body: String) -> Option<Response> {
    record(s, what, body);
    let (mode, access) = {
        let st = s.lock().unwrap();
        (st.mode.clone(), st.access.clone())
    };
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if access.is_empty() || auth != format!("Bearer {access}") {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "unauthorized"})),
            )
                .into_response(),
        );
    }
    failure(mode).await
}

/// The portal's authorization window, as after the administrator signed
/// in: an "Allow Access" link back to `redirect_uri` with [`GOOD_CODE`].
async fn authorize(State(s): State<S>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    record(&s, "GET /oauth2/authorize".into(), redirect.clone());
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let target = escape(&format!("{redirect}{sep}code={GOOD_CODE}"));
    (
        [("content-type", "text/html; charset=utf-8")],
        format!(
            "<!doctype html><title>cPanel Authorization Request</title>\
             <h1>cPanel Authorization Request</h1><a id=\"allow\" href=\"{target}\">Allow Access</a>"
        ),
    )
        .into_response()
}

async fn token(State(s): State<S>, Form(f): Form<BTreeMap<String, String>>) -> Response {
    record(
        &s,
        "POST /oauth2/token".into(),
        f.get("grant_type").cloned().unwrap_or_default(),
    );
    let ok = match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            f.get("code").map(String::as_str) == Some(GOOD_CODE) && f.contains_key("redirect_uri")
        }
        Some("refresh_token") => f.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN),
        _ => false,
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let mut st = s.lock().unwrap();
    st.issued += 1;
    st.access = format!("{ACCESS_PREFIX}{}-SECRET", st.issued);
    Json(json!({
        "access_token": st.access,
        "refresh_token": REFRESH_TOKEN,
        "expires_in": st.expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn access_ips(State(s): State<S>, h: HeaderMap) -> Response {
    if let Some(r) = guard(&s, &h, "GET /support/access_ips".into(), String::new()).await {
        return r;
    }
    let ips = s.lock().unwrap().access_ips.clone();
    Json(ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()).into_response()
}

async fn info(State(s): State<S>, h: HeaderMap) -> Response {
    if let Some(r) = guard(&s, &h, "GET /support/info".into(), String::new()).await {
        return r;
    }
    Json(json!({"phone": "+1 555 0100", "hours": "24/7"})).into_response()
}

async fn open(State(s): State<S>, h: HeaderMap) -> Response {
    if let Some(r) = guard(&s, &h, "GET /tickets/open".into(), String::new()).await {
        return r;
    }
    let mode = s.lock().unwrap().open_mode.clone();
    if let Some(r) = failure(mode).await {
        return r;
    }
    let st = s.lock().unwrap();
    let list: Vec<Value> = st
        .tickets
        .iter()
        .filter(|(_, t)| t.open)
        .map(|(id, t)| {
            if st.omit_servers {
                // Ids as strings here: portals differ, the client copes.
                json!({"ticket_id": id.to_string(), "ticket_subject": t.subject})
            } else {
                json!({"ticket_id": id, "ticket_subject": t.subject, "servers": t.servers})
            }
        })
        .collect();
    Json(list).into_response()
}

async fn ticket(State(s): State<S>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Some(r) = guard(&s, &h, format!("GET /tickets/{id}"), String::new()).await {
        return r;
    }
    let st = s.lock().unwrap();
    match st.tickets.get(&id) {
        Some(t) if !t.servers.is_empty() => Json(json!(t.servers)).into_response(),
        _ => (StatusCode::NOT_FOUND, Json(json!({"error": "no data"}))).into_response(),
    }
}

async fn ssh_key(
    State(s): State<S>,
    h: HeaderMap,
    Path((id, n)): Path<(u64, String)>,
    body: String,
) -> Response {
    if let Some(r) = guard(
        &s,
        &h,
        format!("POST /tickets/{id}/servers/{n}/ssh_key"),
        body,
    )
    .await
    {
        return r;
    }
    let st = s.lock().unwrap();
    let Some(entry) = st.tickets.get(&id).and_then(|t| t.servers.get(&n)) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no data"}))).into_response();
    };
    let mut answer = entry.clone();
    answer["ssh_public_key"] = json!(st.key);
    Json(answer).into_response()
}

async fn login(
    State(s): State<S>,
    h: HeaderMap,
    Path((id, n)): Path<(u64, String)>,
    body: String,
) -> Response {
    if let Some(r) = guard(
        &s,
        &h,
        format!("POST /tickets/{id}/servers/{n}/login"),
        body,
    )
    .await
    {
        return r;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn log(
    State(s): State<S>,
    h: HeaderMap,
    Path((id, n)): Path<(u64, String)>,
    body: String,
) -> Response {
    if let Some(r) = guard(&s, &h, format!("POST /tickets/{id}/servers/{n}/log"), body).await {
        return r;
    }
    StatusCode::CREATED.into_response()
}

async fn test_start(State(s): State<S>, h: HeaderMap, body: String) -> Response {
    if let Some(r) = guard(&s, &h, "POST /ssh_tests".into(), body).await {
        return r;
    }
    s.lock().unwrap().test_polls = 0;
    Json(json!({"test_id": "t-1"})).into_response()
}

async fn test_result(State(s): State<S>, h: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = guard(&s, &h, format!("GET /ssh_tests/{id}"), String::new()).await {
        return r;
    }
    let mut st = s.lock().unwrap();
    st.test_polls += 1;
    match (&st.test_result, st.test_polls > st.test_pending) {
        (Some(res), true) => Json(json!({"result": res})).into_response(),
        _ => (StatusCode::ACCEPTED, Json(json!({"status": "testing"}))).into_response(),
    }
}
