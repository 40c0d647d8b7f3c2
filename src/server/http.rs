//! The axum side: `GET`/`POST /json-api/<function>`, body limits,
//! authentication, and handing the call to the dispatcher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::api::auth::{self, AuthHeader, Peer};
use crate::api::dispatch::{self, refusal};
use crate::api::envelope::Params;
use crate::app::App;
use crate::audit::{events, AuditEvent, Outcome};
use crate::domain::caller::Acl;
use crate::limiter::{FailureSummary, LimitKey};
use crate::server::{form, Slot};
use crate::types::printable;

/// How much of an oversized body we still read (and drop) so the client
/// can see the 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 1024 * 1024;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        // HEAD is refused explicitly: axum would otherwise answer it with
        // the GET handler, i.e. run the function.
        .route(
            "/json-api/{function}",
            get(api_call).post(api_call).head(method_not_allowed),
        )
        .route("/metrics", get(metrics_scrape).head(method_not_allowed))
        .merge(crate::web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

fn json(status: StatusCode, body: &Value) -> Response {
    json_bytes(status, Bytes::from(body.to_string()))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// A refusal (no `data`), optionally closing the connection.
fn refuse(status: StatusCode, command: &str, reason: &str) -> Response {
    json(status, &refusal(command, reason))
}

async fn not_found(req: Request) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "",
        &format!(
            "No such endpoint “{}”; call /json-api/<function>?api.version=1.",
            printable(req.uri().path())
        ),
    )
}

async fn method_not_allowed() -> Response {
    let mut r = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        "",
        "Only GET and POST are supported.",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    r
}

/// The body of the 503 a connection over its source's share gets.
pub(crate) fn busy_body() -> String {
    refusal(
        "",
        "Too many connections from this address (listen.max_connections_per_source); close some and retry.",
    )
    .to_string()
}

/// Audits a window's summary of failed authentications that have no
/// record of their own: with the individual records, it accounts for
/// every failure.
async fn audit_summary(app: &App, s: FailureSummary) {
    let window = app.config().auth.failure_window_secs;
    let ev = AuditEvent::new(events::AUTH_FAILURE, "unauthenticated")
        .outcome(Outcome::Failed)
        .details(json!({
            "summary": true,
            "count": s.count,
            "sources": s.sources,
            "sources_total": s.sources_total,
            "first": s.first,
            "last": s.last,
            "window_secs": window,
        }));
    if let Err(e) = app.audit.append(ev).await {
        tracing::error!(error = %e, "cannot audit a summary of authentication failures");
    }
}

/// Writes each window's failure summary when the window ends (not only
/// when the next failure comes), and the current one at shutdown.
pub(crate) async fn summarise_failures(
    app: Arc<App>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let every = Duration::from_secs(app.config().auth.failure_window_secs.max(1));
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let cfg = app.config();
        if let Some(s) = app
            .limiter
            .take_summary(Instant::now(), &cfg.auth, stopping)
        {
            audit_summary(&app, s).await;
        }
        if stopping {
            return;
        }
    }
}

enum BodyError {
    TooLarge,
    Failed(String),
}

/// Reads at most `max` bytes; beyond that, drains up to [`DRAIN_LIMIT`]
/// and reports [`BodyError::TooLarge`].
async fn read_body(body: Body, max: usize) -> Result<Bytes, BodyError> {
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Failed(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > max {
                if seen > DRAIN_LIMIT {
                    return Err(BodyError::TooLarge);
                }
                continue;
            }
            buf.extend_from_slice(&data);
        }
    }
    if seen > max {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(buf))
}

/// The answer to a failed authentication: counted against its source,
/// audited within the global budget (or counted in the window's summary),
/// held back by the source's delay without holding a connection slot, and
/// the same generic reason for every failure; the connection is closed.
async fn refuse_unauthenticated(
    app: &App,
    peer: &Peer,
    function: &str,
    fail: auth::AuthFailure,
    slot: Option<Slot>,
) -> Response {
    let cfg = app.config();
    let mut delay = Duration::ZERO;
    if fail.status == 401 {
        app.metrics.auth_failure();
        let p = app.limiter.record(
            LimitKey::for_peer(peer),
            &peer.describe(),
            Instant::now(),
            app.clock.now(),
            &cfg.auth,
        );
        delay = p.delay;
        tracing::warn!(
            peer = %peer.describe(),
            function = %printable(function),
            failures = p.failures,
            delay_ms = delay.as_millis() as u64,
            reason = %fail.reason,
            "authentication failed"
        );
        if let Some(s) = p.summary {
            audit_summary(app, s).await;
        }
        if p.audit {
            let ev = AuditEvent::new(events::AUTH_FAILURE, peer.actor_hint())
                .remote(Some(peer.describe()))
                .outcome(Outcome::Failed)
                .details(json!({
                    "function": printable(function),
                    "reason": fail.reason,
                    "failures": p.failures,
                }));
            if let Err(e) = app.audit.append(ev).await {
                tracing::error!(error = %e, "cannot audit an authentication failure");
            }
        }
    }
    if let Some(slot) = slot {
        slot.release();
    }
    tokio::time::sleep(delay).await;
    let status = StatusCode::from_u16(fail.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = refuse(status, function, auth::DENIED);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("whm realm=\"supportauth\""),
        );
    }
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The request's Authorization header(s).
fn auth_header(req: &Request) -> AuthHeader<'_> {
    let mut headers = req.headers().get_all(header::AUTHORIZATION).iter();
    match (headers.next(), headers.next()) {
        (None, _) => AuthHeader::None,
        (Some(h), None) => AuthHeader::One(h.as_bytes()),
        (Some(_), Some(_)) => AuthHeader::Several,
    }
}

/// `GET /metrics` (Prometheus, OpenMetrics text), authenticated as the
/// API is: root over the Unix socket, otherwise a token holding
/// `metrics-read` (or `all`); failures count and slow down like the API's.
async fn metrics_scrape(State(app): State<Arc<App>>, req: Request) -> Response {
    const WHAT: &str = "metrics";
    let Some(peer) = req.extensions().get::<Peer>().copied() else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            WHAT,
            "Internal error: connection details missing.",
        );
    };
    let caller = match auth::authenticate(&app, &peer, auth_header(&req)).await {
        Ok(c) => c,
        Err(fail) => {
            let slot = req.extensions().get::<Slot>().cloned();
            return refuse_unauthenticated(&app, &peer, WHAT, fail, slot).await;
        }
    };
    if !caller.allows(Acl::MetricsRead) {
        return refuse(
            StatusCode::FORBIDDEN,
            WHAT,
            "Access denied: this API token lacks the “metrics-read” ACL needed for /metrics.",
        );
    }
    crate::metrics::refresh(&app).await;
    let mut resp = (StatusCode::OK, app.metrics.encode()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

async fn api_call(State(app): State<Arc<App>>, req: Request) -> Response {
    let function = req
        .uri()
        .path()
        .strip_prefix("/json-api/")
        .unwrap_or("")
        .to_string();
    let Some(peer) = req.extensions().get::<Peer>().copied() else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &function,
            "Internal error: connection details missing.",
        );
    };
    let cfg = app.config();

    // Authenticate before reading anything else the client sent.
    let caller = match auth::authenticate(&app, &peer, auth_header(&req)).await {
        Ok(c) => c,
        Err(fail) => {
            let slot = req.extensions().get::<Slot>().cloned();
            return refuse_unauthenticated(&app, &peer, &function, fail, slot).await;
        }
    };

    tracing::debug!(function = %printable(&function), actor = %caller, peer = %peer.describe(), "request authenticated");
    let (parts, body) = req.into_parts();
    let mut pairs = match form::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &function,
                &format!("Bad query string: {e}."),
            )
        }
    };
    if parts.method == Method::POST {
        let ctype = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/x-www-form-urlencoded");
        if !ctype
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
        {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &function,
                "POST bodies must be application/x-www-form-urlencoded.",
            );
        }
        let max = cfg.listen.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            let mut r = refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &function,
                &format!("The request body is larger than the limit of {max} bytes (listen.max_body_bytes)."),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        };
        if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
            return too_large();
        }
        let timeout = Duration::from_secs(cfg.listen.request_timeout_secs);
        match tokio::time::timeout(timeout, read_body(body, max)).await {
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    &function,
                    "The request body was not received in time.",
                )
            }
            Ok(Err(BodyError::TooLarge)) => return too_large(),
            Ok(Err(BodyError::Failed(e))) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &function,
                    &format!("Cannot read the request body: {}.", printable(&e)),
                )
            }
            Ok(Ok(bytes)) => match form::parse(&bytes) {
                Ok(more) => pairs.extend(more),
                Err(e) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        &function,
                        &format!("Bad form body: {e}."),
                    )
                }
            },
        }
    }
    let params = Params::new(pairs);

    // Run the call in its own task: a client that disconnects must not
    // cancel a host change (or a portal session refresh) half-way. The
    // in-flight guard lets shutdown wait.
    let read_only = dispatch::lookup(&function).is_some_and(|f| f.read_only());
    let guard = Arc::clone(&app.inflight).read_owned().await;
    let task = {
        let app = Arc::clone(&app);
        let function = function.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let answer = dispatch::call(&app, &caller, &function, &params).await;
            (answer, caller)
        })
    };
    let (answer, caller) = match task.await {
        Ok(done) => {
            app.metrics
                .api_call(&function, done.0.status == 200 && done.0.result == 1);
            done
        }
        Err(e) => {
            tracing::error!(function = %printable(&function), error = %e, "API call task failed");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &function,
                "Internal error while handling the call; see the daemon log.",
            );
        }
    };
    // Successful read-only calls are frequent (polling) and change nothing:
    // logged at debug, not a line per poll at info.
    macro_rules! log_call {
        ($level:expr) => {
            tracing::event!(
                $level,
                function = %printable(&function),
                actor = %caller,
                peer = %peer.describe(),
                status = answer.status,
                result = answer.result,
                "API call"
            )
        };
    }
    if read_only && answer.status == 200 && answer.result == 1 {
        log_call!(tracing::Level::DEBUG);
    } else {
        log_call!(tracing::Level::INFO);
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    json_bytes(status, answer.body)
}
