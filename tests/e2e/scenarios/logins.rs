//! Issue 18: who actually came in. A real sshd writes its log to
//! /var/log/auth.log (`-E`, OpenSSH's own line format); the daemon follows
//! that file, audits support logins and logouts, and ends a grant's open
//! sessions when the grant ends.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e::cmd;
use crate::e2e::daemon::{self, binary, CONFIG};
use crate::e2e::scene::*;
use crate::e2e::sshd::{KeyPair, AUTH_LOG, SSH_KEYGEN};

/// Generous: the watcher reads every 500 ms; the machine is shared.
const WAIT: Duration = Duration::from_secs(20);

/// `supportauth audit show --event EVENT`: the records, oldest first.
fn records(event: &str) -> Vec<Value> {
    let out = cmd::run(
        &binary(),
        &[
            "--config", CONFIG, "audit", "show", "--json", "--event", event,
        ],
    );
    assert!(
        out.status.success(),
        "audit show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (bounded) until at least `n` records of `event` exist.
fn wait_records(scene: &Scene, event: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = records(event);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} {event} record(s) after {WAIT:?}, expected {n}: {got:?}\nsshd log:\n{}\ndaemon log:\n{}",
            got.len(),
            scene.sshd.log(),
            scene.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fingerprint(key: &KeyPair) -> String {
    let out = cmd::run_ok(
        Path::new(SSH_KEYGEN),
        &[
            "-l",
            "-f",
            &key.private.with_extension("pub").display().to_string(),
        ],
    );
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {out:?}"))
        .to_string()
}

fn assert_support_record(rec: &Value, ticket: u64, fp: &str) {
    assert_eq!(rec["ticket_id"], ticket, "{rec}");
    assert_eq!(rec["server_num"], 1, "{rec}");
    assert_eq!(rec["ssh_username"], "root", "{rec}");
    assert_eq!(rec["details"]["address"], "127.0.0.1", "{rec}");
    assert_eq!(rec["details"]["fingerprint"], fp, "{rec}");
    assert!(rec["details"]["port"].as_u64().unwrap_or(0) > 0, "{rec}");
}

/// Real logins with the granted key become `support_login` and
/// `support_logout`; the admin's own key produces nothing.
pub fn support_logins_are_audited(sb: &crate::e2e::sandbox::Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    let fp = fingerprint(&scene.support);
    scene.grant(500, &[]);
    // The admin first: once the support logout (a later line) is recorded,
    // the admin's lines have been read too.
    scene
        .sshd
        .assert_root(&scene.admin, "root", &["id", "-u"], b"");
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    let logouts = wait_records(&scene, "support_logout", 1);
    let logins = records("support_login");
    assert_eq!(
        logins.len(),
        1,
        "the admin's login was recorded: {logins:?}"
    );
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_support_record(&logins[0], 500, &fp);
    assert_eq!(logins[0]["details"]["in_window"], true, "{}", logins[0]);
    assert!(logins[0]["details"].get("warning").is_none());
    assert_support_record(&logouts[0], 500, &fp);
    assert_eq!(
        logins[0]["details"]["port"], logouts[0]["details"]["port"],
        "the logout is the login's connection"
    );
    assert!(logouts[0]["details"]["session_secs"].as_i64().is_some());
    // Shown in ticket_list.
    let listed = scene.daemon.call_ok("ticket_list", &[("ticket_id", "500")]);
    let server = &listed["auths"][0]["servers"][0];
    assert_eq!(server["login_count"], 1, "{listed}");
    assert!(server["last_login"].as_i64().is_some(), "{listed}");
    scene.revoke(500, "root");
    // No session was open: nothing to end.
    assert!(records("support_session_ended").is_empty());
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// The daemon is killed while a support session is open; the session ends
/// and a whole other one happens while it is down. After the restart every
/// event is recorded exactly once.
pub fn restart_loses_and_repeats_nothing(sb: &crate::e2e::sandbox::Sandbox) {
    let mut scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    let fp = fingerprint(&scene.support);
    scene.grant(501, &[]);
    // Ends by itself a few seconds later (sshd writes a logout line only
    // when the session ends, not when the client vanishes).
    let mut session = scene
        .sshd
        .open_session(&scene.support, "root", &["sleep", "6"]);
    wait_records(&scene, "support_login", 1);
    scene.daemon.kill9();
    wait_exit(&mut session, Duration::from_secs(60));
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.daemon.restart();
    wait_records(&scene, "support_logout", 2);
    // One more round after the restart; then the counts are exact.
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    let logouts = wait_records(&scene, "support_logout", 3);
    let logins = records("support_login");
    assert_eq!(logins.len(), 3, "{logins:?}");
    assert_eq!(logouts.len(), 3, "{logouts:?}");
    for rec in logins.iter().chain(&logouts) {
        assert_support_record(rec, 501, &fp);
    }
    let ports = |recs: &[Value]| {
        let mut p: Vec<u64> = recs
            .iter()
            .map(|r| r["details"]["port"].as_u64().unwrap_or(0))
            .collect();
        p.sort_unstable();
        p
    };
    assert_eq!(ports(&logins), ports(&logouts), "each login has its logout");
    daemon::assert_audit_verifies();
}

/// Revoking while support is logged in as root ends that session; the
/// admin's own root session on the same host stays open.
pub fn revoke_ends_the_support_session_only(sb: &crate::e2e::sandbox::Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    scene.grant(502, &[]);
    let mut admin = scene
        .sshd
        .open_session(&scene.admin, "root", &["sleep", "600"]);
    let mut support = scene
        .sshd
        .open_session(&scene.support, "root", &["sleep", "600"]);
    wait_records(&scene, "support_login", 1);
    // A local user forges (through syslog, in real life) a support login
    // line naming the admin's connection: audited as a warning, but that
    // session must never become one a revoke ends.
    let admin_fp = fingerprint(&scene.admin);
    let admin_port = accepted_port(&admin_fp);
    let support_fp = fingerprint(&scene.support);
    let forged = format!(
        "Accepted publickey for root from 127.0.0.1 port {admin_port} ssh2: ED25519 {support_fp}\r\n"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(AUTH_LOG)
        .and_then(|mut f| std::io::Write::write_all(&mut f, forged.as_bytes()))
        .expect("append to the auth log");
    let logins = wait_records(&scene, "support_login", 2);
    assert_eq!(logins[1]["details"]["port"], admin_port, "{}", logins[1]);
    assert_eq!(logins[1]["details"]["in_window"], false, "{}", logins[1]);
    assert!(
        logins[1]["details"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("forged")),
        "{}",
        logins[1]
    );
    scene.revoke(502, "root");
    wait_exit(&mut support, Duration::from_secs(10));
    let ended = wait_records(&scene, "support_session_ended", 1);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["ticket_id"], 502, "{}", ended[0]);
    assert_eq!(ended[0]["details"]["reason"], "revoke", "{}", ended[0]);
    assert_eq!(ended[0]["details"]["result"], "terminated", "{}", ended[0]);
    // The admin's session is still there.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        admin.try_wait().expect("wait ssh").is_none(),
        "the admin's root session was ended"
    );
    scene
        .sshd
        .assert_root(&scene.admin, "root", &["id", "-u"], b"");
    let _ = admin.kill();
    let _ = admin.wait();
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// Expiry and the kill switch end open support sessions too (the same
/// path as a revoke), each audited with its reason.
pub fn expiry_and_kill_switch_end_sessions(sb: &crate::e2e::sandbox::Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            reconcile_secs: 1,
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    // Long enough for the login to happen first; the wait is generous.
    scene.grant(503, &[("ttl", "10".into())]);
    let mut first = scene
        .sshd
        .open_session(&scene.support, "root", &["sleep", "600"]);
    let logins = wait_records(&scene, "support_login", 1);
    assert_eq!(logins[0]["ticket_id"], 503, "{}", logins[0]);
    wait_exit(&mut first, Duration::from_secs(90));
    let ended = wait_records(&scene, "support_session_ended", 1);
    assert_eq!(ended[0]["ticket_id"], 503, "{}", ended[0]);
    assert_eq!(ended[0]["details"]["reason"], "expire", "{}", ended[0]);
    scene.grant(504, &[]);
    let mut second = scene
        .sshd
        .open_session(&scene.support, "root", &["sleep", "600"]);
    let logins = wait_records(&scene, "support_login", 2);
    assert_eq!(logins[1]["ticket_id"], 504, "{}", logins[1]);
    assert_eq!(logins[1]["details"]["in_window"], true, "{}", logins[1]);
    scene.daemon.call_ok("ticket_revoke_all", &[]);
    wait_exit(&mut second, Duration::from_secs(10));
    let ended = wait_records(&scene, "support_session_ended", 2);
    assert_eq!(ended[1]["ticket_id"], 504, "{}", ended[1]);
    assert_eq!(ended[1]["details"]["reason"], "revoke_all", "{}", ended[1]);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// A login the daemon reads only after its grant was revoked (the revoke
/// could not know the session) is ended as soon as it is read.
pub fn login_read_after_revoke_is_ended(sb: &crate::e2e::sandbox::Sandbox) {
    let mut scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    // Read at start, then only a minute later.
    let config = std::fs::read_to_string(CONFIG).expect("read the daemon config");
    assert!(
        config.trim_end().ends_with("[logins]\nsource = \"auto\""),
        "{config}"
    );
    std::fs::write(CONFIG, config + "poll_interval_ms = 60000\n").expect("write the config");
    scene.daemon.kill9();
    scene.daemon.restart();
    scene.grant(505, &[]);
    let support_fp = fingerprint(&scene.support);
    let mut session = scene
        .sshd
        .open_session(&scene.support, "root", &["sleep", "600"]);
    accepted_port(&support_fp);
    scene.revoke(505, "root");
    assert!(
        records("support_login").is_empty(),
        "the login was read before the revoke: this did not test the late read"
    );
    assert!(
        session.try_wait().expect("wait ssh").is_none(),
        "session ended early"
    );
    wait_exit(&mut session, Duration::from_secs(120));
    let ended = wait_records(&scene, "support_session_ended", 1);
    assert_eq!(ended[0]["ticket_id"], 505, "{}", ended[0]);
    assert_eq!(ended[0]["details"]["reason"], "revoke", "{}", ended[0]);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// The port of the (one) connection that logged in with this key, once
/// sshd has logged it (bounded wait).
fn accepted_port(fp: &str) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(AUTH_LOG).expect("read the auth log");
        let ports: Vec<u64> = log
            .lines()
            .filter(|l| l.starts_with("Accepted publickey") && l.trim_end().ends_with(fp))
            .filter_map(|l| l.split(' ').nth(7).and_then(|p| p.parse().ok()))
            .collect();
        assert!(ports.len() <= 1, "{log}");
        if let Some(p) = ports.first() {
            return *p;
        }
        assert!(Instant::now() < deadline, "no login with {fp}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait ssh").is_none() {
        assert!(
            Instant::now() < deadline,
            "the ssh session is still open after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const JOURNALD: [&str; 2] = [
    "/usr/lib/systemd/systemd-journald",
    "/lib/systemd/systemd-journald",
];

/// Why the journal scenario cannot run here.
pub fn journal_needs() -> Option<String> {
    if !JOURNALD.iter().any(|p| Path::new(p).exists()) {
        return Some("systemd-journald is missing (apt-get install systemd)".into());
    }
    (!Path::new("/usr/bin/journalctl").exists())
        .then(|| "/usr/bin/journalctl is missing (apt-get install systemd)".into())
}

/// The same through the journal: a real journald in the sandbox, sshd
/// logging to it by syslog, the daemon reading `journalctl -o json`.
/// A line another program writes with sshd's tag is not taken for sshd's;
/// a revoke ends the open session, whose pid the journal gave.
pub fn journal_logins(sb: &crate::e2e::sandbox::Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            journal: true,
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    let fp = fingerprint(&scene.support);
    scene.grant(510, &[]);
    scene
        .sshd
        .assert_root(&scene.admin, "root", &["id", "-u"], b"");
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    wait_records(&scene, "support_logout", 1);
    // Anyone can write to syslog as "sshd"; the journal knows better.
    cmd::run_ok(
        Path::new("/usr/bin/logger"),
        &[
            "-t",
            "sshd",
            &format!("Accepted publickey for root from 127.0.0.1 port 7 ssh2: ED25519 {fp}"),
        ],
    );
    let mut session = scene
        .sshd
        .open_session(&scene.support, "root", &["sleep", "600"]);
    let logins = wait_records(&scene, "support_login", 2);
    assert_eq!(logins.len(), 2, "the forged line was taken: {logins:?}");
    for rec in &logins {
        assert_support_record(rec, 510, &fp);
        assert!(rec["details"]["pid"].as_u64().is_some(), "{rec}");
    }
    assert_eq!(records("support_logout").len(), 1);
    scene.revoke(510, "root");
    wait_exit(&mut session, Duration::from_secs(10));
    let ended = wait_records(&scene, "support_session_ended", 1);
    assert_eq!(ended[0]["details"]["result"], "terminated", "{}", ended[0]);
    assert_eq!(
        ended[0]["details"]["pid"], logins[1]["details"]["pid"],
        "{ended:?}"
    );
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}
