//! Token lifecycle against the real daemon: create over the socket as root,
//! use over TCP, list (no values), update, revoke; and the token never
//! reaches the daemon's log.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{assert_refused, get, post, Daemon};
use serde_json::json;

#[test]
fn token_lifecycle_over_socket_and_tcp() {
    let d = Daemon::start();

    // Create as uid 0 over the Unix socket: POST body merged with the query.
    let r = d.unix(&post(
        "/json-api/api_token_create?api.version=1&token_name=ci",
        None,
        b"acl-0=tokens-admin&acl-1=tickets-list&whitelist_ip-0=127.0.0.1&whitelist_ip-1=2001%3Adb8%3A%3A%2F32",
    ));
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    let data = &v["data"];
    let token = data["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    assert_eq!(data["name"], "ci");
    assert_eq!(data["acls"], json!(["tickets-list", "tokens-admin"]));
    assert_eq!(data["expires_at"], json!(null));
    assert!(data["create_time"].as_i64().unwrap() > 0);

    // A duplicate name is refused with a reason.
    let r = d.unix(&get(
        "/json-api/api_token_create?api.version=1&token_name=ci",
        None,
    ));
    let v = r.json();
    assert_eq!((r.status, v["metadata"]["result"].clone()), (200, json!(0)));
    assert!(
        v["metadata"]["reason"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{v}"
    );

    // Bad inputs are refused with reasons.
    for bad in [
        "token_name=bad.name",
        "token_name=x&acl-0=root",
        "token_name=x&expires_at=1000",
        "token_name=x&whitelist_ip-0=not-an-ip",
        "token_name=x&bogus=1",
        "",
    ] {
        let r = d.unix(&get(
            &format!("/json-api/api_token_create?api.version=1&{bad}"),
            None,
        ));
        let v = r.json();
        assert_eq!(r.status, 200);
        assert_eq!(v["metadata"]["result"], 0, "{bad}: {v}");
    }

    // Use it over TCP.
    let auth = format!("whm root:{token}");
    let r = d.tcp(&get("/json-api/api_token_list?api.version=1", Some(&auth)));
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["metadata"]["result"], 1);
    // The list never shows a token value.
    assert!(!r.text().contains(&token));
    assert_eq!(
        v["data"]["tokens"]["ci"],
        json!({
            "name": "ci",
            "create_time": data["create_time"],
            "expires_at": null,
            "acls": {"all": 0, "tickets-list": 1, "tickets-grant": 0, "tokens-admin": 1, "audit-read": 0, "metrics-read": 0},
            "whitelist_ips": ["127.0.0.1", "2001:db8::/32"],
        })
    );

    // A tokens-admin token cannot mint an `all` token.
    let r = d.tcp(&get(
        "/json-api/api_token_create?api.version=1&token_name=escalate",
        Some(&auth),
    ));
    assert_eq!(r.json()["metadata"]["result"], 0);

    // Update: rename, new ACLs, expiry, drop the whitelist.
    let r = d.unix(&get(
        "/json-api/api_token_update?api.version=1&token_name=ci&new_name=ci2&acl-0=tickets-list&acl-1=tokens-admin&expires_at=4102444800&whitelist_ip=",
        None,
    ));
    let v = r.json();
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    assert_eq!(v["data"]["name"], "ci2");
    assert_eq!(v["data"]["expires_at"], 4102444800i64);
    assert_eq!(v["data"]["whitelist_ips"], json!(null));
    let r = d.tcp(&get("/json-api/api_token_list?api.version=1", Some(&auth)));
    let v = r.json();
    assert_eq!(
        v["metadata"]["result"], 1,
        "the same token still works after update: {v}"
    );
    assert!(v["data"]["tokens"].get("ci").is_none());
    assert_eq!(v["data"]["tokens"]["ci2"]["expires_at"], 4102444800i64);

    // Revoke: it no longer works.
    let r = d.unix(&get(
        "/json-api/api_token_revoke?api.version=1&token_name-0=ci2",
        None,
    ));
    assert_eq!(r.json()["metadata"]["result"], 1, "{}", r.text());
    let r = d.tcp(&get("/json-api/api_token_list?api.version=1", Some(&auth)));
    assert_refused(&r, 401, &token);
    let r = d.unix(&get(
        "/json-api/api_token_revoke?api.version=1&token_name=ci2",
        None,
    ));
    assert_eq!(r.json()["metadata"]["result"], 0);

    // The token never appears in the daemon's log.
    let log = d.stderr();
    assert!(log.contains("API token created"), "log captured: {log}");
    assert!(!log.contains(&token), "the token leaked into the log");
}

#[test]
fn cli_creates_lists_and_revokes_over_the_socket() {
    let d = Daemon::start();
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&d.config)
            .args(args)
            .output()
            .expect("run the CLI")
    };
    let out = run(&[
        "--json",
        "token",
        "create",
        "cli",
        "--acl",
        "tickets-list",
        "--expires",
        "+30d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["data"]["token"].as_str().unwrap().to_string();

    let out = run(&["token", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("cli") && text.contains("tickets-list"),
        "{text}"
    );
    assert!(!text.contains(&token));

    // The token works over TCP through the CLI too.
    let url = format!("http://127.0.0.1:{}", d.port);
    let out = std::process::Command::new(common::BIN)
        .args(["--url", &url, "call", "api_token_list"])
        .env("SUPPORTAUTH_TOKEN", &token)
        .output()
        .unwrap();
    // tickets-list lacks tokens-admin: HTTP 403, non-zero exit.
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    let out = run(&["call", "no_such_function"]);
    assert!(!out.status.success(), "result 0 exits non-zero");

    let out = run(&["token", "revoke", "cli"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["token", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No API tokens"));
    assert!(!d.stderr().contains(&token));
}

#[test]
fn token_changes_are_audited_and_an_unauditable_create_is_refused() {
    let d = Daemon::start();
    let audit_log = d
        .dir
        .path()
        .join("root/var/cpanel/logs/supportauth/audit.log");
    let token = d.create_token("token_name=audited&acl-0=tickets-list");
    let r = d.unix(&get(
        "/json-api/api_token_update?api.version=1&token_name=audited&new_name=audited2",
        None,
    ));
    assert_eq!(r.json()["metadata"]["result"], 1);
    let r = d.tcp(&get(
        "/json-api/api_token_list?api.version=1",
        Some("whm root:ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
    ));
    assert_refused(&r, 401, "");
    let r = d.unix(&get(
        "/json-api/api_token_revoke?api.version=1&token_name=audited2",
        None,
    ));
    let v = r.json();
    assert_eq!(v["metadata"]["result"], 1);
    assert_eq!(v["data"]["non_fatals"], json!([]));

    let text = std::fs::read_to_string(&audit_log).unwrap();
    for ev in [
        "daemon_start",
        "api_token_create",
        "api_token_update",
        "auth_failure",
        "api_token_revoke",
    ] {
        assert!(
            text.contains(&format!("\"event\":\"{ev}\"")),
            "{ev} missing:\n{text}"
        );
    }
    assert!(text.contains("\"actor\":\"uid:0\""), "{text}");
    assert!(
        !text.contains(&token),
        "the token leaked into the audit log"
    );

    let cli = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&d.config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["audit", "show", "--event", "api_token_update"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("audited2"));

    // The audit log cannot be written: a token must not be created.
    std::fs::rename(&audit_log, audit_log.with_extension("moved")).unwrap();
    std::fs::create_dir(&audit_log).unwrap();
    let r = d.unix(&get(
        "/json-api/api_token_create?api.version=1&token_name=unaudited",
        None,
    ));
    let v = r.json();
    assert_eq!(v["metadata"]["result"], 0, "{v}");
    assert!(
        v["metadata"]["reason"]
            .as_str()
            .unwrap()
            .contains("not created"),
        "{v}"
    );
    let r = d.unix(&get("/json-api/api_token_list?api.version=1", None));
    assert_eq!(r.json()["data"]["tokens"], json!({}));
}
