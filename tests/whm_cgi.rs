//! `supportauth whm-cgi` as WHM runs it: the real binary with a CGI's
//! environment (REMOTE_USER, REQUEST_METHOD, PATH_INFO, QUERY_STRING,
//! CONTENT_TYPE, CONTENT_LENGTH, SCRIPT_NAME) and body on stdin, against
//! the real daemon's Unix socket on a scratch root. Root's uid on the
//! socket is what makes the CGI's calls root's, so this needs root.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Daemon, BIN};
use serde_json::Value;

struct CgiOut {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl CgiOut {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Runs the CGI like cpsrvd: a cleared environment with the CGI
/// variables, `body` on stdin.
fn cgi(config: &std::path::Path, vars: &[(&str, &str)], body: &[u8]) -> CgiOut {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("whm-cgi")
        .env_clear()
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SCRIPT_NAME", "/cpsess0123456789/cgi/supportauth/index.cgi")
        .env("CONTENT_LENGTH", body.len().to_string())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run whm-cgi");
    // A CGI may answer (a refusal) without reading its body: a closed
    // pipe is not an error then.
    match child.stdin.take().expect("stdin").write_all(body) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("write the body"),
    }
    let out = child.wait_with_output().expect("wait whm-cgi");
    assert!(
        out.status.success(),
        "whm-cgi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("CGI header end");
    let head = String::from_utf8(out.stdout[..split].to_vec()).expect("UTF-8 headers");
    let mut status = String::new();
    let mut headers = Vec::new();
    for line in head.split("\r\n") {
        let (k, v) = line.split_once(':').expect("header line");
        if k == "Status" {
            status = v.trim().to_string();
        } else {
            headers.push((k.to_string(), v.trim().to_string()));
        }
    }
    let body = out.stdout[split + 4..].to_vec();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "Content-Length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("Content-Length");
    assert_eq!(len, body.len(), "Content-Length matches the body");
    CgiOut {
        status,
        headers,
        body,
    }
}

#[test]
fn whm_cgi_forwards_the_page_and_the_api_as_root() {
    if !nix::unistd::geteuid().is_root() {
        supportauth::test_skip!(
            "SKIPPED whm_cgi: needs root (the CGI is root by its uid on the socket)"
        );
        return;
    }
    let d = Daemon::start();
    let cfg = d.config.clone();

    // The page, with the policy relaxed only to WHM's own frame.
    let page = cgi(
        &cfg,
        &[
            ("REMOTE_USER", "root"),
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/"),
        ],
        b"",
    );
    assert_eq!(page.status, "200 OK");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("Content-Security-Policy").expect("CSP");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    assert_eq!(page.header("X-Frame-Options"), Some("SAMEORIGIN"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(String::from_utf8_lossy(&page.body).contains("assets/app.js"));
    let js = cgi(
        &cfg,
        &[
            ("REMOTE_USER", "root"),
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/assets/api.js"),
        ],
        b"",
    );
    assert_eq!(js.status, "200 OK");
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );

    // An API call with a form body: root, without any token.
    let body = b"token_name=via_whm&acl-0=tickets-list";
    let made = cgi(
        &cfg,
        &[
            ("REMOTE_USER", "root"),
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/json-api/api_token_create"),
            ("QUERY_STRING", "api.version=1"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ],
        body,
    );
    assert_eq!(made.status, "200 OK");
    assert_eq!(
        made.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let v = made.json();
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    assert_eq!(
        v["data"]["acls"],
        serde_json::json!(["tickets-list"]),
        "{v}"
    );
    let list = cgi(
        &cfg,
        &[
            ("REMOTE_USER", "root"),
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/json-api/api_token_list"),
            ("QUERY_STRING", "api.version=1"),
        ],
        b"",
    );
    assert!(list.json()["data"]["tokens"]["via_whm"].is_object());
    let audit = d.read("var/cpanel/logs/supportauth/audit.log");
    let created = audit
        .lines()
        .find(|l| l.contains("\"api_token_create\""))
        .expect("the token creation is audited");
    assert!(created.contains("\"actor\":\"uid:0\""), "{created}");

    // A reason from the API comes back as the API gave it.
    let bad = cgi(
        &cfg,
        &[
            ("REMOTE_USER", "root"),
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/json-api/ticket_revoke"),
            ("QUERY_STRING", "api.version=1"),
        ],
        b"ticket_id=12345",
    );
    assert_eq!(bad.status, "200 OK");
    assert_eq!(bad.json()["metadata"]["result"], 0);
    assert!(bad.json()["metadata"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("ssh_username")));

    // What WHM did not authenticate, or what is not the page, never
    // reaches the daemon.
    let before = d.read("var/cpanel/logs/supportauth/audit.log");
    let anon = cgi(
        &cfg,
        &[
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/json-api/api_token_create"),
            ("QUERY_STRING", "api.version=1"),
        ],
        b"token_name=sneaky&acl-0=all",
    );
    assert_eq!(anon.status, "403 Forbidden");
    for (path, want) in [
        ("/etc/passwd", "404 Not Found"),
        ("/json-api/../../x", "404 Not Found"),
        ("", "302 Found"),
    ] {
        let r = cgi(
            &cfg,
            &[
                ("REMOTE_USER", "root"),
                ("REQUEST_METHOD", "GET"),
                ("PATH_INFO", path),
            ],
            b"",
        );
        assert_eq!(r.status, want, "{path:?}");
        if path.is_empty() {
            assert_eq!(r.header("Location"), Some("index.cgi/"));
        }
    }
    assert_eq!(d.read("var/cpanel/logs/supportauth/audit.log"), before);
    let v = d.call("api_token_list", &[]);
    assert!(v["data"]["tokens"]["sneaky"].is_null(), "{v}");

    // The daemon down: a gateway error that says what to do.
    let other = tempfile::tempdir().expect("tempdir");
    let down = other.path().join("config.toml");
    std::fs::write(
        &down,
        format!("root = \"{}\"\n", other.path().join("root").display()),
    )
    .expect("write config");
    let r = cgi(
        &down,
        &[
            ("REMOTE_USER", "root"),
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/"),
        ],
        b"",
    );
    assert_eq!(r.status, "502 Bad Gateway");
    assert!(String::from_utf8_lossy(&r.body).contains("cannot connect to the supportauth daemon"));
}
