//! Every authentication failure path, with its exact HTTP status and no
//! `data` in the answer.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{assert_refused, expire_in_db, get, Daemon};

const LIST: &str = "/json-api/api_token_list?api.version=1";

#[test]
fn every_failure_path_is_refused_without_data() {
    let mut d = Daemon::start();
    let good = d.create_token("token_name=good&acl-0=tokens-admin");

    // Sanity: the good token works over TCP.
    let r = d.tcp(&get(LIST, Some(&format!("whm root:{good}"))));
    assert_eq!(
        (r.status, r.json()["metadata"]["result"].clone()),
        (200, 1.into())
    );

    // No header.
    let r = d.tcp(&get(LIST, None));
    assert_refused(&r, 401, "");
    assert!(r.header("www-authenticate").is_some());

    // Malformed headers.
    for h in [
        format!("Bearer {good}"),
        format!("whm root{good}"),
        "whm".to_string(),
        format!("whm :{good}"),
        "whm root:".to_string(),
        "whm root:short".to_string(),
        format!("whm root:{}", good.to_lowercase()),
    ] {
        let r = d.tcp(&get(LIST, Some(&h)));
        assert_refused(&r, 401, &good);
    }

    // Wrong user.
    let r = d.tcp(&get(LIST, Some(&format!("whm bob:{good}"))));
    assert_refused(&r, 401, &good);

    // Wrong token (well-formed, unknown).
    let wrong = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let r = d.tcp(&get(LIST, Some(&format!("whm root:{wrong}"))));
    assert_refused(&r, 401, wrong);

    // Expired.
    let exp = d.create_token("token_name=old&expires_at=4102444800");
    expire_in_db(&mut d, "old");
    let r = d.tcp(&get(LIST, Some(&format!("whm root:{exp}"))));
    assert_refused(&r, 401, &exp);
    // The client learns nothing; the log says why.
    assert!(!r.text().contains("expired"), "{}", r.text());
    assert!(d.stderr().contains("has expired"));

    // Revoked.
    let gone = d.create_token("token_name=gone");
    let r = d.unix(&get(
        "/json-api/api_token_revoke?api.version=1&token_name=gone",
        None,
    ));
    assert_eq!(r.json()["metadata"]["result"], 1);
    let r = d.tcp(&get(LIST, Some(&format!("whm root:{gone}"))));
    assert_refused(&r, 401, &gone);

    // Source address outside the whitelist.
    let fenced = d.create_token("token_name=fenced&whitelist_ip-0=192.0.2.0%2F24");
    let r = d.tcp(&get(LIST, Some(&format!("whm root:{fenced}"))));
    assert_refused(&r, 401, &fenced);
    // ... and inside it, it works.
    let inside = d.create_token("token_name=inside&whitelist_ip-0=127.0.0.0%2F8");
    let r = d.tcp(&get(LIST, Some(&format!("whm root:{inside}"))));
    assert_eq!(r.json()["metadata"]["result"], 1);

    // Valid token without the needed ACL: 403.
    let lister = d.create_token("token_name=lister&acl-0=tickets-list");
    let r = d.tcp(&get(LIST, Some(&format!("whm root:{lister}"))));
    assert_refused(&r, 403, &lister);
    assert!(r.json()["metadata"]["reason"]
        .as_str()
        .unwrap()
        .contains("tokens-admin"));

    // Over the socket, root with a bad token is checked like anyone else.
    let r = d.unix(&get(LIST, Some(&format!("whm root:{wrong}"))));
    assert_refused(&r, 401, wrong);

    let log = d.stderr();
    assert!(log.contains("authentication failed"), "{log}");
    for t in [&good, &exp, &gone, &fenced, &inside, &lister] {
        assert!(!log.contains(t.as_str()), "a token leaked into the log");
    }
    assert!(
        !log.contains(wrong),
        "a presented token leaked into the log"
    );
}

#[test]
fn non_root_local_peer_needs_a_token() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        supportauth::test_skip!("SKIPPED: not root, cannot run a client as another uid");
        return;
    }
    let Some(group) = nix::unistd::Group::from_name("nogroup").ok().flatten() else {
        supportauth::test_skip!("SKIPPED: no group “nogroup” to give the socket to");
        return;
    };
    let d = Daemon::start_with("socket_group = \"nogroup\"", "");
    // Let uid 65534 reach the socket (the state directory stays 0700).
    for p in [d.dir.path().to_path_buf(), d.dir.path().join("root")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let token = d.create_token("token_name=local&acl-0=tokens-admin");
    // uid 65534 cannot reach the build's binary when the checkout lives in
    // a private (0700) directory: it runs a copy in the 0755 test dir.
    let bin = d.dir.path().join("supportauth-client");
    std::fs::copy(common::BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |token: Option<&str>| {
        let mut c = std::process::Command::new(&bin);
        c.arg("--config")
            .arg(&d.config)
            .args(["--json", "call", "api_token_list"])
            .env_remove("SUPPORTAUTH_TOKEN")
            .uid(65534)
            .gid(group.gid.as_raw());
        if let Some(t) = token {
            c.env("SUPPORTAUTH_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = run(None);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(v.get("data").is_none(), "{v}");
    assert!(
        v["metadata"]["reason"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{v}"
    );
    assert!(d.stderr().contains("uid 65534 is not root"));

    let out = run(Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = d.stderr();
    assert!(log.contains("actor=token:root:local"), "{log}");
    assert!(!log.contains(&token));
}

#[test]
fn repeated_failures_are_slowed_down() {
    let d = Daemon::start_with(
        "",
        "[auth]\nfailures_before_delay = 2\nfailure_window_secs = 600\nmax_delay_ms = 1",
    );
    for _ in 0..3 {
        let r = d.tcp(&get(
            LIST,
            Some("whm root:ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
        ));
        assert_refused(&r, 401, "");
    }
    let log = d.stderr();
    assert!(log.contains("failures=1 delay_ms=0"), "{log}");
    assert!(log.contains("failures=2 delay_ms=1"), "{log}");
    assert!(log.contains("failures=3 delay_ms=1"), "{log}");
}
