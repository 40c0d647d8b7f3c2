//! The administrator's web page: static HTML, CSS and JavaScript modules
//! compiled into the binary (no build step, no CDN: no request leaves the
//! machine), served at `/` next to `/json-api/`. The page signs in with an
//! API token it keeps in `sessionStorage` and sends as
//! `Authorization: whm USER:TOKEN` on every call; nothing here reads a
//! cookie, so a cross-site request can never act with it.
//!
//! Every answer carries a strict Content-Security-Policy (only this
//! origin's files, no inline script or style, no framing) and the other
//! hardening headers; `whm-cgi` (src/web/cgi.rs) serves the same files
//! inside WHM.

pub mod cgi;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The policy: everything from this origin only, nothing inline, never in
/// a frame, forms and `<base>` pinned.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// One compiled-in file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $ctype:expr) => {
        Asset {
            path: $path,
            content_type: $ctype,
            body: include_bytes!(concat!("assets/", $file)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/oauth2-callback", "callback.html", HTML),
    asset!("/assets/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/assets/app.js", "app.js", JS),
    asset!("/assets/api.js", "api.js", JS),
    asset!("/assets/dom.js", "dom.js", JS),
    asset!("/assets/tickets.js", "tickets.js", JS),
    asset!("/assets/panels.js", "panels.js", JS),
    asset!("/assets/callback.js", "callback.js", JS),
    asset!("/assets/icon.svg", "icon.svg", "image/svg+xml"),
];

/// Whether `path` is one of the page's files (the CGI forwards only these
/// and `/json-api/...`).
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

/// The hardening headers every page answer carries.
pub fn security_headers() -> [(HeaderName, HeaderValue); 6] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ]
}

fn serve(asset: &'static Asset) -> Response {
    let mut resp = (StatusCode::OK, asset.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    for (name, value) in security_headers() {
        h.insert(name, value);
    }
    resp
}

/// The page's routes, merged into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |r, a| {
        r.route(a.path, get(move || async move { serve(a) }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `on...=` attribute (onclick, onload...) inside a tag.
    fn has_event_attribute(html: &str) -> bool {
        html.split('<').skip(1).any(|tag| {
            let tag = tag.split('>').next().unwrap_or("");
            tag.split_whitespace()
                .any(|attr| attr.starts_with("on") && attr.contains('='))
        })
    }

    #[test]
    fn every_asset_is_referenced_and_no_inline_code() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for a in ASSETS.iter().filter(|a| a.path.starts_with("/assets/")) {
            let name = a.path.trim_start_matches('/');
            let used = ASSETS.iter().any(|b| {
                std::str::from_utf8(b.body)
                    .is_ok_and(|t| t.contains(name) || t.contains(&name["assets/".len()..]))
            });
            assert!(used, "{} is served but nothing refers to it", a.path);
        }
        for a in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(!text.contains("<style"), "{}: inline style element", a.path);
            assert!(
                !text.contains(" style="),
                "{}: inline style attribute",
                a.path
            );
            assert!(
                !has_event_attribute(text),
                "{}: inline event handler",
                a.path
            );
            for script in text.split("<script").skip(1) {
                let tag = script.split('>').next().unwrap_or("");
                assert!(tag.contains(" src=\""), "{}: inline script", a.path);
            }
        }
        assert!(html.contains("assets/app.js"));
    }
}
