//! Scenarios 1-4: support gets root (directly or through a temporary
//! wheel user and sudo) and loses it again, by revoke or by expiry.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::e2e::cmd;
use crate::e2e::daemon;
use crate::e2e::sandbox::{self, Sandbox};
use crate::e2e::scene::*;

// ---- scenario 1 -------------------------------------------------------

pub fn root_prohibit_password(sb: &Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    let data = scene.grant(101, &[]);
    assert_eq!(str_field(&data, "ssh_username"), "root", "{data}");
    assert!(data.get("wheel_password").is_none(), "{data}");
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.revoke(101, "root");
    scene.sshd.assert_refused(&scene.support, "root");
    scene.assert_no_trace(101);
    scene.assert_admin_intact();
    scene
        .sshd
        .assert_root(&scene.admin, "root", &["id", "-u"], b"");
    daemon::assert_audit_verifies();
}

// ---- scenarios 2 and 3 -------------------------------------------------

fn temp_user_round_trip(scene: &Scene, ticket: u64, expect_dropin: bool) {
    let data = scene.grant(ticket, &[]);
    let user = format!("cp{ticket}.ssh");
    assert_eq!(str_field(&data, "ssh_username"), user, "{data}");
    let password = str_field(&data, "wheel_password").to_string();
    let dropin = format!("/etc/sudoers.d/ticket{ticket}");
    if expect_dropin {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(&dropin).unwrap_or_else(|e| panic!("{dropin} not installed: {e}"));
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o440, 0, 0)
        );
    }
    assert!(
        Path::new(&dropin).exists()
            || group_members("sudo").contains(&user)
            || group_members("wheel").contains(&user),
        "{user} has neither a sudoers drop-in nor a wheel/sudo group"
    );
    scene.sshd.assert_refused(&scene.support, "root");
    assert_temp_user_becomes_root(scene, &user, &password);
    wait_logged_out(&user);
    scene.revoke(ticket, &user);
    scene.assert_no_trace(ticket);
    assert_no_firewall_trace();
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

pub fn root_login_no(sb: &Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("no"));
    temp_user_round_trip(&scene, 102, false);
}

/// As above, on a host whose sudoers has no rule for the wheel/sudo group:
/// the daemon's /etc/sudoers.d/ticket<id> is what makes sudo work.
pub fn root_login_no_sudoers_dropin(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            group_sudo_rule: false,
            ..SceneSetup::root_login("no")
        },
    );
    temp_user_round_trip(&scene, 106, true);
}

pub fn match_address_forbids_root(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            sshd_tail: "Match Address 127.0.0.1\n    PermitRootLogin no\n",
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    // The block forbids root for the support address only: from anywhere
    // else sshd would still let root in with a key.
    let effective = |addr: &str| {
        let spec = format!(
            "user=root,host=e2e.test,addr={addr},laddr=127.0.0.1,lport={}",
            scene.sshd.port
        );
        let out = cmd::run_ok(
            Path::new(crate::e2e::sshd::SSHD),
            &["-T", "-C", &spec, "-f", crate::e2e::sshd::SSHD_CONFIG],
        );
        out.lines()
            .find_map(|l| l.strip_prefix("permitrootlogin "))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(effective("127.0.0.1"), "no");
    assert!(
        ["prohibit-password", "without-password"].contains(&effective("192.0.2.7").as_str()),
        "root elsewhere: {}",
        effective("192.0.2.7")
    );
    temp_user_round_trip(&scene, 103, false);
}

/// Support is still logged in when access is revoked: the revoke must
/// still take the user away (and with it the session).
pub fn revoke_during_open_session(sb: &Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("no"));
    let data = scene.grant(108, &[]);
    let user = str_field(&data, "ssh_username").to_string();
    let mut session = scene
        .sshd
        .open_session(&scene.support, &user, &["sleep", "600"]);
    let uid = lookup_user(&user).expect("temp user").uid.as_raw();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sandbox::process_uids().iter().any(|(_, u)| *u == uid) {
        assert!(Instant::now() < deadline, "the session never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = scene.revoke(108, &user);
    eprintln!("revoke with an open session: {answer}");
    scene.assert_no_trace(108);
    let deadline = Instant::now() + Duration::from_secs(30);
    while session.try_wait().expect("wait ssh").is_none() {
        assert!(
            Instant::now() < deadline,
            "the support session outlived the revoke by 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

// ---- scenario 4 ---------------------------------------------------------

/// ttl short enough to watch pass, long enough that the first login
/// surely happens before it (the assertion is "refused eventually").
const SHORT_TTL: &str = "15";
const EXPIRY_LIMIT: Duration = Duration::from_secs(90);

pub fn ttl_expires_without_api_call(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            reconcile_secs: 1,
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    scene.grant(104, &[("ttl", SHORT_TTL.into())]);
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.wait_refused("root", EXPIRY_LIMIT);
    // The daemon's own expiry, not only sshd's expiry-time: the key and
    // the listing must go too (bounded wait for the next reconcile).
    let deadline = Instant::now() + EXPIRY_LIMIT;
    while key_files().iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains("104_server_")
    }) {
        assert!(Instant::now() < deadline, "expired key never removed");
        std::thread::sleep(Duration::from_millis(500));
    }
    scene.assert_no_trace(104);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// The daemon is down when the ttl passes: the key's expiry-time option
/// alone makes sshd refuse it; the restarted daemon then removes it.
pub fn ttl_backstop_with_daemon_down(sb: &Sandbox) {
    let mut scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    scene.grant(105, &[("ttl", SHORT_TTL.into())]);
    let keys = std::fs::read_to_string(ROOT_KEYS).expect("root keys");
    let ours = keys
        .lines()
        .find(|l| l.contains("105_server_"))
        .unwrap_or_else(|| panic!("no key line for ticket 105:\n{keys}"));
    assert!(ours.contains("expiry-time=\""), "no expiry-time: {ours}");
    scene.daemon.kill9();
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.wait_refused("root", EXPIRY_LIMIT);
    assert!(
        std::fs::read_to_string(ROOT_KEYS)
            .expect("root keys")
            .contains("105_server_"),
        "the key was removed, so this did not test expiry-time"
    );
    scene.daemon.restart();
    scene.assert_no_trace(105);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// Issue 18, SSH info: a local grant reports where sshd really listens
/// (here a random port, not 22), and `ticket_ssh_test`'s preflight checks
/// that: SUCCESS while sshd runs, REFUSED once it stops.
pub fn ssh_test_follows_sshds_own_port(sb: &Sandbox) {
    let mut scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    assert_ne!(scene.sshd.port, 22);
    let data = scene.grant(400, &[]);
    assert_eq!(
        data["ssh_port"].as_u64(),
        Some(u64::from(scene.sshd.port)),
        "{data}"
    );
    assert_eq!(data["ssh_ip"], "127.0.0.1", "{data}");
    let listed = scene.daemon.call_ok("ticket_list", &[("ticket_id", "400")]);
    let ssh = listed["auths"][0]["servers"][0]["ssh"]
        .as_str()
        .unwrap_or("");
    assert_eq!(ssh, format!("127.0.0.1:{}", scene.sshd.port), "{listed}");
    let args = [("ticket_id", "400"), ("server_num", "1")];
    let tested = scene.daemon.call_ok("ticket_ssh_test", &args);
    assert_eq!(tested["result"], "SUCCESS", "{tested}");
    scene.sshd.stop();
    let tested = scene.daemon.call_ok("ticket_ssh_test", &args);
    assert_eq!(tested["result"], "REFUSED", "{tested}");
}

/// `supportauth extend` moves the end sshd enforces: with the daemon
/// killed (so only the key line's expiry-time decides), a grant of 15 s
/// extended to an hour still lets support in after those 15 s; extended
/// back to 15 s from now, sshd refuses it once they pass, the key line
/// still in place. The restarted daemon then ends the grant.
pub fn extend_moves_sshds_expiry(sb: &Sandbox) {
    let mut scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    let granted = Instant::now();
    scene.grant(107, &[("ttl", SHORT_TTL.into())]);
    let extend = |ttl: &str| {
        let out = cmd::run(
            &daemon::binary(),
            &[
                "--config",
                daemon::CONFIG,
                "extend",
                "--ticket-id",
                "107",
                "--server-num",
                "1",
                "--ttl",
                ttl,
            ],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "extend --ttl {ttl}: {text}");
        assert!(text.contains("access now ends"), "{text}");
    };
    extend("1h");
    scene.daemon.kill9();
    // Past the first end (15 s after the grant, plus a margin).
    let first_end = granted + Duration::from_secs(SHORT_TTL.parse::<u64>().unwrap() + 5);
    std::thread::sleep(first_end.saturating_duration_since(Instant::now()));
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.daemon.restart();
    extend(SHORT_TTL);
    scene.daemon.kill9();
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.wait_refused("root", EXPIRY_LIMIT);
    assert!(
        std::fs::read_to_string(ROOT_KEYS)
            .expect("root keys")
            .contains("107_server_"),
        "the key was removed, so this did not test expiry-time"
    );
    scene.daemon.restart();
    scene.assert_no_trace(107);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}
