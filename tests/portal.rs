//! The ticket-system integration through the REAL daemon, against a stub
//! portal (tests/portal_stub, axum on 127.0.0.1:0): connecting (OAuth2
//! code exchange, tokens never in the daemon's log), ticket_list merging in
//! every state, grants through the portal, closed tickets revoked on demand
//! and by the poller, the SSH test (pending, result, timeout) after the
//! local preflight against a real sshd, and every failure mode the stub
//! can produce (401, 404, 500, slow, malformed, huge).
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;
mod portal_stub;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use portal_stub::{Mode, Stub, GOOD_CODE};
use serde_json::Value;

/// Upper bound for something the daemon does by itself; not an assertion.
const PATIENCE: Duration = Duration::from_secs(30);

struct Rig {
    d: Daemon,
    stub: Stub,
    key: String,
}

fn portal_config(stub: &Stub, poll: u64) -> String {
    format!(
        "[portal]\nbase_url = \"{}\"\nconnect_timeout_secs = 2\nread_timeout_secs = 1\n\
         max_body_bytes = 65536\nget_attempts = 2\npoll_interval_secs = {poll}\n\
         test_poll_fast_ms = 50\ntest_fast_phase_ms = 200\ntest_poll_slow_ms = 100\n\
         test_give_up_ms = 3000\npreflight_timeout_secs = 2\n\
         nat = {{ \"127.0.0.1\" = \"198.51.100.7\" }}\n",
        stub.base_url()
    )
}

/// A daemon on a plain scratch dir (no host tools), connected to a stub.
fn plain_rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let key = support_key(dir.path());
    let stub = Stub::start(&key);
    let cfg = portal_config(&stub, 0);
    let d = Daemon::start_with("", &cfg);
    Rig { d, stub, key }
}

/// A daemon on a scratch root with the real useradd/visudo/sshd -T.
fn host_rig(sshd_body: &str, poll: u64) -> Option<Rig> {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED portal: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = support_key(dir.path());
    let stub = Stub::start(&key);
    let cfg = portal_config(&stub, poll);
    let d = Daemon::start_configured("", "", |root| {
        // populate's [access] section must not be split by ours.
        format!("{}\n{cfg}", scratch_root_config(root, sshd_body))
    });
    Some(Rig { d, stub, key })
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
    fn connect(&self) {
        let v = self.call(
            "ticket_validate_oauth2_code",
            &[
                ("code", GOOD_CODE),
                ("redirect_uri", "https://whm.example/cb"),
            ],
        );
        ok(&v);
    }
    fn list(&self) -> Value {
        ok(&self.call("ticket_list", &[])).clone()
    }
    fn audit_log(&self) -> String {
        self.read("var/cpanel/logs/supportauth/audit.log")
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

/// Bodies of the log entries posted for `ticket` server 1.
fn log_entries(stub: &Stub, ticket: u64) -> Vec<String> {
    let path = format!("POST /tickets/{ticket}/servers/1/log");
    stub.received(&path)
        .into_iter()
        .filter(|(p, _)| *p == path)
        .map(|(_, b)| b)
        .collect()
}

fn ticket(list: &Value, id: u64) -> Option<&Value> {
    list["auths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ticket_id"] == id)
}

fn server_of(list: &Value, id: u64) -> Value {
    ticket(list, id).unwrap_or_else(|| panic!("ticket {id} not in {list}"))["servers"][0].clone()
}

#[test]
fn connect_list_and_every_failure_mode() {
    let rig = plain_rig();
    rig.stub.add_ticket(1001, 1, "127.0.0.1", 22);
    rig.stub.add_ticket(1002, 1, "192.0.2.77", 22);
    rig.stub.add_ticket(1003, 2, "198.51.100.7", 2222);

    // Not connected: nothing is sent, the list is local and not an error.
    let l = rig.list();
    assert_eq!(l["ticket_system"], "NOT_CONNECTED");
    assert_eq!(l["auths"], serde_json::json!([]));
    assert!(rig.stub.received("").is_empty());

    let v = rig.call(
        "ticket_validate_oauth2_code",
        &[
            ("code", "wrong"),
            ("redirect_uri", "https://whm.example/cb"),
        ],
    );
    refused(&v, "authorization code");
    refused(
        &rig.call("ticket_validate_oauth2_code", &[("code", GOOD_CODE)]),
        "redirect_uri",
    );
    rig.connect();

    let l = rig.list();
    assert_eq!(l["ticket_system"], "CONNECTED", "{l}");
    assert_eq!(ticket(&l, 1001).unwrap()["ticket_status"], "OPEN");
    assert_eq!(
        ticket(&l, 1001).unwrap()["ticket_subject"],
        "Ticket 1001 subject"
    );
    let s = server_of(&l, 1001);
    assert_eq!(s["auth_status"], "NOT_AUTHED");
    assert_eq!(s["bound"], 1);
    assert_eq!(s["ssh"], "127.0.0.1:22");
    assert_eq!(server_of(&l, 1002)["bound"], 0);
    // 1:1 NAT: the public address maps to a local one.
    let s = server_of(&l, 1003);
    assert_eq!(
        (s["bound"].clone(), s["server_num"].clone()),
        (1.into(), 2.into())
    );

    // Open tickets listed without their servers: each ticket is asked.
    rig.stub.with(|s| s.omit_servers = true);
    let l2 = rig.list();
    assert_eq!(l2["auths"], l["auths"], "{l2}");
    assert!(!rig.stub.received("GET /tickets/1003").is_empty());
    rig.stub.with(|s| s.omit_servers = false);

    let v = rig.call("ticket_get_support_info", &[]);
    assert_eq!(ok(&v)["support_info"]["hours"], "24/7");

    // Failure modes of the portal: the list still answers (result 1) with
    // the local grants and says why the portal could not be asked.
    let cases = [
        (Mode::Status(500), "HTTP 500"),
        (Mode::Status(503), "HTTP 503"),
        (
            Mode::Slow(Duration::from_secs(3)),
            "did not answer within 1 seconds",
        ),
        (Mode::Malformed, "cannot understand"),
        (Mode::Huge, "larger than 65536 bytes"),
    ];
    let gets = || rig.stub.received("GET /tickets/open").len();
    for (mode, needle) in cases {
        rig.stub.with(|s| s.open_mode = mode.clone());
        let before = gets();
        let l = rig.list();
        assert_eq!(l["ticket_system"], "UNREACHABLE", "{mode:?}: {l}");
        let err = l["ticket_system_error"].as_str().unwrap();
        assert!(err.contains(needle), "{mode:?}: {err}");
        // GETs are retried (get_attempts = 2) only when trying again can help.
        let tries = match mode {
            Mode::Status(_) | Mode::Slow(_) => 2,
            _ => 1,
        };
        assert_eq!(gets() - before, tries, "{mode:?}");
    }
    rig.stub.with(|s| s.open_mode = Mode::Normal);

    // 404: no data for that ticket and server.
    let v = rig.call(
        "ticket_grant",
        &[("ticket_id", "4040"), ("server_num", "1")],
    );
    refused(&v, "no authorization data for ticket 4040 server 1");

    // 401: the session was revoked on the portal side.
    rig.stub.with(|s| s.access.clear());
    let l = rig.list();
    assert!(
        l["ticket_system_error"]
            .as_str()
            .unwrap()
            .contains("Reconnect via ticket_validate_oauth2_code"),
        "{l}"
    );
    let v = rig.call(
        "ticket_grant",
        &[("ticket_id", "1001"), ("server_num", "1")],
    );
    refused(&v, "session has expired");

    // A token about to expire is refreshed before use.
    rig.stub.with(|s| s.expires_in = 30);
    rig.connect();
    let before = rig.stub.with(|s| s.issued);
    assert_eq!(rig.list()["ticket_system"], "CONNECTED");
    assert!(rig.stub.with(|s| s.issued) > before, "no refresh happened");
    assert!(rig
        .stub
        .received("oauth2/token")
        .iter()
        .any(|(_, b)| b == "refresh_token"));

    // Tokens never reach the daemon's log (level debug here) or the audit log.
    let log = rig.d.stderr();
    assert!(
        !log.contains("SECRET"),
        "a token leaked into the log:\n{log}"
    );
    assert!(!rig.audit_log().contains("SECRET"));
    assert!(rig.audit_log().contains("portal_connect"));
    let _ = &rig.key;
}

/// Something listening on a loopback port (the ticket's "sshd" for the
/// precondition check); real sshd is used where SSH itself matters.
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    (l, p)
}

fn temp_user_home(rig: &Rig, user: &str) -> String {
    rig.read("etc/passwd")
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .map(|l| {
            l.split(':')
                .nth(5)
                .unwrap()
                .trim_start_matches('/')
                .to_string()
        })
        .unwrap_or_default()
}

#[test]
fn grant_through_the_portal_then_closed_ticket_removed() {
    let Some(rig) = host_rig("PermitRootLogin no", 0) else {
        return;
    };
    let (_sshd, port) = listener();
    rig.stub.add_ticket(1001, 1, "127.0.0.1", port);
    rig.stub.add_ticket(1005, 1, "192.0.2.77", port);
    rig.stub.add_ticket(1006, 1, "127.0.0.1", free_port());
    rig.stub.add_ticket(1007, 1, "127.0.0.1", port);
    rig.connect();

    // Preconditions of reference §3, each with its own reason.
    let g = |t: &str, extra: &[(&str, &str)]| {
        let mut p = vec![("ticket_id", t), ("server_num", "1")];
        p.extend_from_slice(extra);
        rig.call("ticket_grant", &p)
    };
    refused(&g("1005", &[]), "192.0.2.77 is not bound on this server");
    refused(&g("1006", &[]), "sshd is not listening");
    refused(
        &g("1001", &[("ssh_username", "nosuchuser")]),
        "does not exist",
    );
    rig.stub
        .with(|s| s.key = "ssh-ed25519 this-is-not-base64".into());
    refused(&g("1007", &[]), "not an SSH public key");
    rig.stub.with(|s| s.key = rig.key.clone());
    assert!(!rig.read("etc/passwd").contains("cp100"));

    let v = g("1001", &[]);
    let data = ok(&v);
    assert_eq!(data["source"], "portal");
    assert_eq!(data["ssh_username"], "cp1001.ssh");
    assert_eq!(data["temporary_user"], 1);
    assert_eq!(data["server_name"], "srv1.example");
    assert_eq!(data["access_ips"], serde_json::json!(["203.0.113.9"]));
    assert_eq!(data["non_fatals"], serde_json::json!([]));
    let pw = data["wheel_password"].as_str().unwrap().to_string();
    // The key came from the portal, the password went back to it.
    let home = temp_user_home(&rig, "cp1001.ssh");
    let ak = rig.read(&format!("{home}/.ssh/authorized_keys"));
    let key_b64 = rig.key.split_whitespace().nth(1).unwrap();
    assert!(ak.contains(key_b64) && ak.contains("203.0.113.9"), "{ak}");
    let login = rig.stub.received("/tickets/1001/servers/1/login");
    assert_eq!(login.len(), 1);
    let body: Value = serde_json::from_str(&login[0].1).unwrap();
    assert_eq!(body["ssh_user"], "cp1001.ssh");
    assert_eq!(body["root_escalation_method"], "sudo");
    assert_eq!(body["wheel_pass"], pw.as_str());
    let logs = log_entries(&rig.stub, 1001);
    assert_eq!(logs, ["{\"event_type\":\"ssh_key_grant\"}"], "{logs:?}");
    let details = rig.stub.received("/tickets/1001/servers/1/ssh_key");
    let sent: Value = serde_json::from_str(&details[0].1).unwrap();
    assert_eq!(sent["ssh_port"], port);
    assert!(
        !rig.d.stderr().contains(&pw),
        "the wheel password was logged"
    );

    let l = rig.list();
    assert_eq!(ticket(&l, 1001).unwrap()["ticket_status"], "OPEN");
    let s = server_of(&l, 1001);
    assert_eq!(
        (s["auth_status"].as_str(), s["source"].as_str()),
        (Some("AUTHED"), Some("portal"))
    );

    // Portal down: the grant is listed as UNKNOWN and nothing is revoked.
    rig.stub.with(|s| s.open_mode = Mode::Status(500));
    let l = rig.list();
    assert_eq!(ticket(&l, 1001).unwrap()["ticket_status"], "UNKNOWN", "{l}");
    assert_eq!(server_of(&l, 1001)["auth_status"], "AUTHED");
    refused(&rig.call("ticket_remove_closed", &[]), "no closed tickets");
    rig.stub.with(|s| s.open_mode = Mode::Normal);

    // The ticket closes on the portal: CLOSED / EXPIRED, then removed.
    rig.stub
        .with(|s| s.tickets.get_mut(&1001).unwrap().open = false);
    let l = rig.list();
    assert_eq!(ticket(&l, 1001).unwrap()["ticket_status"], "CLOSED", "{l}");
    assert_eq!(server_of(&l, 1001)["auth_status"], "EXPIRED");
    let v = rig.call("ticket_remove_closed", &[]);
    assert_eq!(ok(&v)["revoked_keys"], 1, "{v}");
    assert!(ticket(&rig.list(), 1001).is_none());
    assert!(!rig.read("etc/passwd").contains("cp1001.ssh"));
    let logs = log_entries(&rig.stub, 1001);
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs[1].contains("ssh_key_revoke"), "{logs:?}");
    assert!(rig.audit_log().contains("revoke_closed"));
}

#[test]
fn the_poller_revokes_a_closed_ticket_and_leaves_local_grants() {
    let Some(rig) = host_rig("PermitRootLogin prohibit-password", 1) else {
        return;
    };
    let (_sshd, port) = listener();
    rig.stub.add_ticket(1001, 1, "127.0.0.1", port);
    rig.stub.add_ticket(1003, 1, "127.0.0.1", port);
    rig.connect();
    ok(&rig.call(
        "ticket_grant",
        &[("ticket_id", "1001"), ("server_num", "1")],
    ));
    let v = rig.call(
        "ticket_grant",
        &[("ticket_id", "1003"), ("server_num", "1")],
    );
    assert_eq!(ok(&v)["access_ips"], serde_json::json!(["203.0.113.9"]));
    // The support IPs were asked for once: cached for the second grant.
    assert_eq!(rig.stub.received("GET /support/access_ips").len(), 1);
    // A local grant (key given by the admin) is not the portal's to close.
    ok(&rig.call(
        "ticket_grant",
        &[
            ("ticket_id", "2002"),
            ("server_num", "1"),
            ("ssh_key", &rig.key),
        ],
    ));
    assert!(rig
        .read("root/.ssh/authorized_keys")
        .contains("1001_server_1@"));

    rig.stub
        .with(|s| s.tickets.get_mut(&1001).unwrap().open = false);
    let start = Instant::now();
    while ticket(&rig.list(), 1001).is_some() {
        assert!(start.elapsed() < PATIENCE, "the poller never revoked 1001");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!rig
        .read("root/.ssh/authorized_keys")
        .contains("1001_server_1@"));
    let l = rig.list();
    assert_eq!(server_of(&l, 2002)["auth_status"], "AUTHED", "{l}");
    assert_eq!(ticket(&l, 2002).unwrap()["ticket_status"], "UNKNOWN");
    assert!(log_entries(&rig.stub, 1001)
        .iter()
        .any(|b| b.contains("ssh_key_revoke")));
    assert!(rig.audit_log().contains("revoke_closed"));
}

/// A real sshd on 127.0.0.1:`port` with the scratch root's configuration,
/// through the scratch root's private-/run wrapper. Killed on drop.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sshd(root: &Path) -> (Sshd, u16) {
    let port = free_port();
    let child = Command::new(root.join("sshd-in-private-run"))
        .args([
            "-D",
            "-e",
            "-p",
            &port.to_string(),
            "-o",
            "ListenAddress=127.0.0.1",
            "-f",
        ])
        .arg(root.join("etc/ssh/sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sshd = Sshd(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < PATIENCE, "sshd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (sshd, port)
}

#[test]
fn ssh_test_preflight_then_portal_pending_result_and_timeout() {
    let Some(rig) = host_rig("PermitRootLogin no", 0) else {
        return;
    };
    let (_sshd, port) = start_sshd(&rig.root());
    rig.stub.add_ticket(1001, 1, "127.0.0.1", port);
    rig.connect();
    // The portal's support IPs are unusable: the configured list is used.
    rig.stub.with(|s| s.access_ips = vec!["0.0.0.0/0".into()]);
    let v = rig.call(
        "ticket_grant",
        &[("ticket_id", "1001"), ("server_num", "1")],
    );
    assert_eq!(ok(&v)["access_ips"], serde_json::json!(["203.0.113.5"]));
    let t = [("ticket_id", "1001"), ("server_num", "1")];

    // Preflight passes (TCP, banner, key exchange, key, sudo); the portal
    // says "testing" twice, then SUCCESS.
    let v = rig.call("ticket_ssh_test", &t);
    let d = ok(&v);
    assert_eq!(d["result"], "SUCCESS", "{v}");
    assert_eq!(d["stage"], "portal");
    assert_eq!(rig.stub.with(|s| s.test_polls), 3);

    // The portal never finishes: TICKET_SYSTEM_TIMEOUT.
    rig.stub.with(|s| s.test_result = None);
    let v = rig.call("ticket_ssh_test", &t);
    assert_eq!(ok(&v)["result"], "TICKET_SYSTEM_TIMEOUT", "{v}");

    // In the background: {} at once, the result lands in the audit log.
    rig.stub.with(|s| s.test_result = Some("AUTH".into()));
    let n_before = rig.audit_log().matches("\"ssh_test\"").count();
    let v = rig.call("ticket_ssh_test_start", &t);
    assert_eq!(ok(&v), &serde_json::json!({}));
    let start = Instant::now();
    while !rig.audit_log().contains("\"AUTH\"") {
        assert!(start.elapsed() < PATIENCE, "background test never audited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = rig.audit_log();
    assert!(log.matches("\"ssh_test\"").count() >= n_before + 2);
    assert!(log.contains("TICKET_SYSTEM_TIMEOUT") && log.contains("\"preflight\""));

    // The portal fails to start the test: a POST is tried once only.
    rig.stub.with(|s| s.mode = Mode::Status(500));
    let starts = rig.stub.received("POST /ssh_tests").len();
    let v = rig.call("ticket_ssh_test", &t);
    assert_eq!(ok(&v)["result"], "TICKET_SYSTEM_TIMEOUT", "{v}");
    assert!(ok(&v)["detail"].as_str().unwrap().contains("HTTP 500"));
    assert_eq!(rig.stub.received("POST /ssh_tests").len(), starts + 1);
    rig.stub.with(|s| s.mode = Mode::Normal);
    // The escalation path gone: ESCALATE, without asking the portal.
    let polls = rig.stub.received("/ssh_tests").len();
    let dropin = rig.root().join("etc/sudoers.d/ticket1001");
    let group_file = rig.root().join("etc/group");
    let group_before = std::fs::read_to_string(&group_file).unwrap();
    if dropin.exists() {
        std::fs::remove_file(&dropin).unwrap();
    } else {
        let stripped: String = group_before
            .lines()
            .map(|l| {
                let l = l.replace(",cp1001.ssh", "").replace(":cp1001.ssh,", ":");
                let l = if l.ends_with(":cp1001.ssh") {
                    l.trim_end_matches("cp1001.ssh").to_string()
                } else {
                    l
                };
                format!("{l}\n")
            })
            .collect();
        std::fs::write(&group_file, stripped).unwrap();
    }
    let v = rig.call("ticket_ssh_test", &t);
    assert_eq!(ok(&v)["result"], "ESCALATE", "{v}");
    assert_eq!(ok(&v)["stage"], "preflight");
    assert_eq!(rig.stub.received("/ssh_tests").len(), polls);

    // The key gone from authorized_keys: AUTH.
    let home = temp_user_home(&rig, "cp1001.ssh");
    let ak = rig.root().join(format!("{home}/.ssh/authorized_keys"));
    std::fs::write(&ak, "").unwrap();
    let v = rig.call("ticket_ssh_test", &t);
    assert_eq!(ok(&v)["result"], "AUTH", "{v}");

    // sshd stopped: REFUSED.
    drop(_sshd);
    let v = rig.call("ticket_ssh_test", &t);
    assert_eq!(ok(&v)["result"], "REFUSED", "{v}");

    // No such grant: a reason, not a result.
    refused(
        &rig.call(
            "ticket_ssh_test",
            &[("ticket_id", "999"), ("server_num", "1")],
        ),
        "No access is granted for ticket 999",
    );
}

#[test]
fn ssh_test_of_a_local_grant_is_the_preflight_only() {
    let Some(rig) = host_rig("PermitRootLogin prohibit-password", 0) else {
        return;
    };
    ok(&rig.call(
        "ticket_grant",
        &[
            ("ticket_id", "2002"),
            ("server_num", "1"),
            ("ssh_key", &rig.key),
        ],
    ));
    let v = rig.call(
        "ticket_ssh_test",
        &[("ticket_id", "2002"), ("server_num", "1")],
    );
    let d = ok(&v);
    assert_eq!(d["preflight_only"], 1, "{v}");
    assert_eq!(d["stage"], "preflight");
    assert!(rig.stub.received("").is_empty(), "the portal was contacted");
    assert!(rig.audit_log().contains("\"ssh_test\""));
}
