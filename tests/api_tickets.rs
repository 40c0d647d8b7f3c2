//! The ticket functions through the real daemon on a scratch root, over
//! real HTTP: grant, list, revoke, the kill switch, bad input leaving the
//! host unchanged, ACLs, the CLI, and convergence after a crash mid-grant.
//! The real useradd/userdel/chpasswd (--prefix), visudo and sshd -T run.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

struct Rig {
    d: Daemon,
    key: String,
}

fn rig(sshd_body: &str) -> Option<Rig> {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED api_tickets: {why}");
        return None;
    }
    let d = Daemon::start_configured("", "", |root| scratch_root_config(root, sshd_body));
    let key = support_key(d.dir.path());
    Some(Rig { d, key })
}

impl Rig {
    fn root(&self) -> PathBuf {
        self.d.root()
    }
    fn read(&self, p: &str) -> String {
        self.d.read(p)
    }
    fn call(&self, function: &str, params: &[(&str, &str)]) -> Value {
        self.d.call(function, params)
    }
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&self.d.config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
    /// Every file under the scratch root but the daemon's own state, audit
    /// log and socket, and shadow's backup files (rewritten by design).
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let s = p.to_string_lossy();
                if s.contains("/var/lib/supportauth")
                    || s.contains("/var/cpanel/logs")
                    || s.contains("/run/")
                    || s.ends_with('-')
                    || s.ends_with(".pwd.lock")
                {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root(), &mut out);
        out
    }
}

fn ok(v: &Value) -> &Value {
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    &v["data"]
}

fn refused(v: &Value, needle: &str) {
    assert_eq!(v["metadata"]["result"], 0, "{v}");
    let reason = v["metadata"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(needle),
        "reason {reason:?} should mention {needle:?}"
    );
}

#[test]
fn grant_list_revoke_over_http_with_documented_fields() {
    let Some(rig) = rig("PermitRootLogin prohibit-password") else {
        return;
    };
    let v = rig.call(
        "ticket_grant",
        &[
            ("ticket_id", "12345"),
            ("server_num", "1"),
            ("ssh_key", &rig.key),
            ("ttl", "3600"),
        ],
    );
    let data = ok(&v);
    assert_eq!(data["ticket_id"], 12345);
    assert_eq!(data["server_num"], 1);
    assert_eq!(data["ssh_username"], "root");
    assert_eq!(data["auth_status"], "AUTHED");
    assert_eq!(data["ticket_status"], "OPEN");
    assert!(data["auth_time"].is_i64());
    assert_eq!(data["non_fatals"], serde_json::json!([]));
    assert!(data.get("wheel_password").is_none());
    let ak = rig.read("root/.ssh/authorized_keys");
    assert!(ak.contains("from=\"203.0.113.5\",expiry-time=\""), "{ak}");
    assert!(ak.contains(" 12345_server_1@cpanel.net_"), "{ak}");

    let v = rig.call("ticket_list", &[]);
    let auths = &ok(&v)["auths"];
    assert_eq!(auths[0]["ticket_id"], 12345);
    assert_eq!(auths[0]["servers"][0]["server_num"], 1);
    assert_eq!(auths[0]["servers"][0]["auth_status"], "AUTHED");
    assert_eq!(auths[0]["servers"][0]["ssh_username"], "root");

    // Revoke over TCP with a token that may grant.
    let token = rig
        .d
        .create_token("token_name=support-desk&acl-0=tickets-grant");
    let r = rig.d.tcp(&get(
        "/json-api/ticket_revoke?api.version=1&ticket_id=12345&ssh_username=root",
        Some(&format!("whm root:{token}")),
    ));
    let v = r.json();
    let data = ok(&v);
    assert_eq!(data["revoked_keys"], 1);
    assert_eq!(data["ticket_id"], 12345);
    assert!(!rig.read("root/.ssh/authorized_keys").contains("cpanel.net"));
    assert_eq!(
        ok(&rig.call("ticket_list", &[]))["auths"],
        serde_json::json!([])
    );

    let (pass, out) = rig.cli(&["audit", "verify"]);
    assert!(pass, "{out}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn a_token_that_may_only_list_cannot_grant() {
    let Some(rig) = rig("PermitRootLogin prohibit-password") else {
        return;
    };
    let token = rig.d.create_token("token_name=viewer&acl-0=tickets-list");
    let auth = format!("whm root:{token}");
    let r = rig.d.tcp(&get(
        &format!(
            "/json-api/ticket_grant?api.version=1&ticket_id=12345&server_num=1&ssh_key={}",
            enc(&rig.key)
        ),
        Some(&auth),
    ));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!rig.read("root/.ssh/authorized_keys").contains("cpanel.net"));
    let r = rig
        .d
        .tcp(&get("/json-api/ticket_list?api.version=1", Some(&auth)));
    assert_eq!(r.status, 200);
}

#[test]
fn bad_input_is_refused_with_a_reason_and_the_host_is_unchanged() {
    let Some(rig) = rig("PermitRootLogin prohibit-password") else {
        return;
    };
    let key = rig.key.clone();
    let with_option = format!("command=\"sh\" {key}");
    let before = rig.snapshot();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("server_num", "1"), ("ssh_key", &key)], "ticket_id"),
        (
            vec![
                ("ticket_id", "12;rm"),
                ("server_num", "1"),
                ("ssh_key", &key),
            ],
            "ticket_id",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", "ssh-rsa AAAA garbage"),
            ],
            "key",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &with_option),
            ],
            "option",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &key),
                ("access_ip-0", "0.0.0.0/0"),
            ],
            "too wide",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &key),
                ("access_ip-0", "not-an-ip"),
            ],
            "not-an-ip",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &key),
                ("ssh_username", "nosuchuser"),
            ],
            "does not exist",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &key),
                ("ssh_username", "../../etc"),
            ],
            "not a valid Linux user name",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &key),
                ("ttl", "0"),
            ],
            "ttl",
        ),
        (
            vec![
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &key),
                ("bogus", "1"),
            ],
            "bogus",
        ),
    ];
    for (params, needle) in &cases {
        refused(&rig.call("ticket_grant", params), needle);
    }
    refused(
        &rig.call(
            "ticket_revoke",
            &[("ticket_id", "12345"), ("ssh_username", "root")],
        ),
        "No keys",
    );
    refused(&rig.call("ticket_remove_closed", &[]), "no closed tickets");
    assert_eq!(before, rig.snapshot(), "host byte-for-byte unchanged");

    // A duplicate grant is refused and leaves the first one in place.
    ok(&rig.call(
        "ticket_grant",
        &[
            ("ticket_id", "12345"),
            ("server_num", "1"),
            ("ssh_key", &key),
        ],
    ));
    let granted = rig.snapshot();
    refused(
        &rig.call(
            "ticket_grant",
            &[
                ("ticket_id", "12345"),
                ("server_num", "1"),
                ("ssh_key", &key),
            ],
        ),
        "already present",
    );
    assert_eq!(granted, rig.snapshot());
}

#[test]
fn temporary_user_through_the_cli_and_the_kill_switch() {
    let Some(rig) = rig("PermitRootLogin no") else {
        return;
    };
    let keyfile = rig.d.dir.path().join("support_key.pub");
    let (pass, out) = rig.cli(&[
        "--json",
        "grant",
        "--ticket-id",
        "777",
        "--server-num",
        "2",
        "--ssh-key-file",
        keyfile.to_str().unwrap(),
    ]);
    assert!(pass, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let data = ok(&v);
    assert_eq!(data["ssh_username"], "cp777.ssh");
    assert_eq!(data["wheel_password"].as_str().unwrap().len(), 64);
    assert!(rig.read("etc/passwd").contains("cp777.ssh:"));
    assert!(rig
        .read("home/cp777.ssh/.ssh/authorized_keys")
        .contains("777_server_2@cpanel.net"));
    // The password is shown once and never logged.
    let pw = data["wheel_password"].as_str().unwrap();
    assert!(!rig.d.stderr().contains(pw));
    assert!(!rig
        .read("var/cpanel/logs/supportauth/audit.log")
        .contains(pw));

    // The readable table for people.
    let (pass, out) = rig.cli(&["list"]);
    assert!(pass, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("777 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("cp777.ssh") && row.contains("AUTHED") && row.contains("203.0.113.5"),
        "{out}"
    );

    let (pass, out) = rig.cli(&["--json", "revoke-all"]);
    assert!(pass, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ok(&v)["revoked_grants"], 1);
    assert!(!rig.read("etc/passwd").contains("cp777.ssh:"));
    assert!(!rig.root().join("home/cp777.ssh").exists());
    // The kill switch with nothing left to revoke still succeeds.
    let (pass, out) = rig.cli(&["--json", "revoke-all"]);
    assert!(pass, "{out}");
}

#[test]
fn a_daemon_killed_mid_grant_converges_on_restart() {
    let Some(mut rig) = rig("PermitRootLogin no") else {
        return;
    };
    let admin = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop\n";
    let ak = rig.root().join("root/.ssh/authorized_keys");
    std::fs::create_dir_all(ak.parent().unwrap()).unwrap();
    std::fs::write(&ak, admin).unwrap();
    // sudoers that does not let the group run anything, so the grant goes
    // through every step, drop-in included.
    std::fs::write(
        rig.root().join("etc/sudoers"),
        "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
    )
    .unwrap();
    let before = rig.snapshot();
    for fault in [
        "after_intent",
        "after_user_created",
        "after_password_set",
        "after_sudoers_installed",
        "after_key_installed",
        "after_grant_audited",
        "after_grant_done",
    ] {
        // Restart the daemon armed with the fault point, then grant.
        let mut old = rig.d.take_child().unwrap();
        let _ = old.kill();
        let _ = old.wait();
        let child = rig.d.spawn_env(&[("SUPPORTAUTH_FAULT", fault)]);
        rig.d.adopt(child);
        let q = format!(
            "/json-api/ticket_grant?api.version=1&ticket_id=4321&server_num=1&ssh_key={}",
            enc(&rig.key)
        );
        // The daemon dies while answering: the connection just closes.
        {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&rig.d.socket).unwrap();
            s.write_all(&get(&q, None)).unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            assert!(
                answer.is_empty(),
                "{fault}: no answer expected, got {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let mut dead = rig.d.take_child().unwrap();
        let status = wait_with_patience(&mut dead);
        assert!(
            !status.success(),
            "{fault}: the daemon should have been killed"
        );
        // Restart normally: start-up reconciliation converges.
        let child = rig.d.spawn();
        rig.d.adopt(child);
        rig.d.wait_for_log("start-up reconciliation done");
        let list = rig.call("ticket_list", &[]);
        let auths = ok(&list)["auths"].as_array().unwrap().clone();
        // Before its done mark is committed the grant is rolled back as a
        // whole (and the log says so); once that commit is durable the
        // grant stands, whether or not the answer got out.
        if fault == "after_grant_done" {
            assert_eq!(auths.len(), 1, "{fault}: {list}");
            let server = &auths[0]["servers"][0];
            assert_eq!(server["auth_status"], "AUTHED", "{fault}: {list}");
            assert_eq!(server["ssh_username"], "cp4321.ssh", "{fault}: {list}");
            assert!(
                std::fs::read_to_string(rig.root().join("home/cp4321.ssh/.ssh/authorized_keys"))
                    .unwrap()
                    .contains(" 4321_server_1@cpanel.net_"),
                "{fault}: the key is still in place"
            );
            let (pass, out) = rig.cli(&["audit", "verify"]);
            assert!(pass, "{fault}: {out}");
            ok(&rig.call(
                "ticket_revoke",
                &[("ticket_id", "4321"), ("ssh_username", "cp4321.ssh")],
            ));
        } else {
            assert!(auths.is_empty(), "{fault}: {list}");
        }
        assert_eq!(
            before,
            rig.snapshot(),
            "{fault}: host back to its state before the grant"
        );
        assert_eq!(
            std::fs::read_to_string(&ak).unwrap(),
            admin,
            "{fault}: admin's keys untouched"
        );
        let (pass, out) = rig.cli(&["audit", "verify"]);
        assert!(pass, "{fault}: {out}");
    }
}

#[test]
fn a_daemon_killed_mid_revoke_finishes_the_revoke_on_restart() {
    let Some(mut rig) = rig("PermitRootLogin no") else {
        return;
    };
    std::fs::write(
        rig.root().join("etc/sudoers"),
        "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
    )
    .unwrap();
    let before = rig.snapshot();
    for fault in [
        "revoke_after_intent",
        "revoke_after_key_removed",
        "revoke_after_user_deleted",
        "revoke_after_audited",
    ] {
        let v = rig.call(
            "ticket_grant",
            &[
                ("ticket_id", "9876"),
                ("server_num", "1"),
                ("ssh_key", &rig.key),
            ],
        );
        assert_eq!(ok(&v)["ssh_username"], "cp9876.ssh");
        let mut old = rig.d.take_child().unwrap();
        let _ = old.kill();
        let _ = old.wait();
        let child = rig.d.spawn_env(&[("SUPPORTAUTH_FAULT", fault)]);
        rig.d.adopt(child);
        {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&rig.d.socket).unwrap();
            s.write_all(&get(
                "/json-api/ticket_revoke?api.version=1&ticket_id=9876&ssh_username=cp9876.ssh",
                None,
            ))
            .unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            assert!(answer.is_empty(), "{fault}: no answer expected");
        }
        let mut dead = rig.d.take_child().unwrap();
        assert!(!wait_with_patience(&mut dead).success(), "{fault}");
        let child = rig.d.spawn();
        rig.d.adopt(child);
        rig.d.wait_for_log("start-up reconciliation done");
        assert_eq!(
            ok(&rig.call("ticket_list", &[]))["auths"],
            serde_json::json!([]),
            "{fault}"
        );
        assert_eq!(
            before,
            rig.snapshot(),
            "{fault}: user, home, drop-in and key all gone"
        );
        let (pass, out) = rig.cli(&["audit", "verify"]);
        assert!(pass, "{fault}: {out}");
    }
}

/// Issue 15, finding 8: a login user whose passwd home is not its own
/// (`/root`, `/`) gets no key and no `~/.ssh` there.
#[test]
fn a_grant_into_a_home_the_user_does_not_own_is_refused() {
    let Some(rig) = rig("PermitRootLogin no") else {
        return;
    };
    let root = rig.root();
    // Two login users that may use sudo, with homes owned by root.
    let mut passwd = rig.read("etc/passwd");
    passwd.push_str("helper:x:4242:4242::/root:/bin/bash\nslash:x:4243:4243::/:/bin/bash\n");
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    let group: String = rig
        .read("etc/group")
        .lines()
        .map(|l| {
            if l.starts_with("sudo:") {
                let sep = if l.ends_with(':') { "" } else { "," };
                format!("{l}{sep}helper,slash\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect::<String>()
        + "helper:x:4242:\nslash:x:4243:\n";
    std::fs::write(root.join("etc/group"), group).unwrap();
    let before = rig.snapshot();
    for (i, user) in ["helper", "slash"].iter().enumerate() {
        let ticket = format!("{}", 5550 + i);
        let v = rig.call(
            "ticket_grant",
            &[
                ("ticket_id", &ticket),
                ("server_num", "1"),
                ("ssh_key", &rig.key),
                ("ssh_username", user),
            ],
        );
        assert_eq!(v["metadata"]["result"], 0, "{user}: {v}");
        let reason = v["metadata"]["reason"].as_str().unwrap();
        assert!(reason.contains("owned by"), "{user}: {reason}");
    }
    assert!(
        !path_exists(&root.join("root/.ssh")),
        "~/.ssh made in /root"
    );
    assert!(!path_exists(&root.join(".ssh")), "~/.ssh made in /");
    assert_eq!(rig.snapshot(), before, "the host changed");
}
