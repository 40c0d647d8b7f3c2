//! Scenario 5: the daemon is killed (SIGKILL) at each fault point of a
//! grant and a revoke, for root and for a temporary user, for the second
//! server of a shared temporary user, and inside the reconciler's repairs;
//! a restart must converge the host: no orphan key, user, sudoers file or
//! firewall entry, no lost answered grant, `audit verify` OK.

use std::path::Path;

use crate::e2e::daemon;
use crate::e2e::sandbox::Sandbox;
use crate::e2e::scene::*;
use crate::e2e::sshd::Login;

/// Who support logs in as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Who {
    /// sshd lets root in with a key: the key goes to root.
    Root,
    /// sshd forbids root: a temporary wheel user `cp<ticket>.ssh`.
    Temp,
}
pub use Who::{Root, Temp};

pub fn scene(sb: &Sandbox, who: Who, fault: Option<&str>) -> Scene {
    let setup = match who {
        Root => SceneSetup::root_login("prohibit-password"),
        Temp => SceneSetup {
            group_sudo_rule: false,
            ..SceneSetup::root_login("no")
        },
    };
    Scene::new(
        sb,
        &SceneSetup {
            fault,
            firewall: "nftables",
            ..setup
        },
    )
}

pub fn login_user(who: Who, ticket: u64) -> String {
    match who {
        Root => "root".into(),
        Temp => format!("cp{ticket}.ssh"),
    }
}

/// Whether a key line of `ticket` server `server` is in any key file.
fn key_present(ticket: u64, server: u64) -> bool {
    let mark = format!("{ticket}_server_{server}@");
    key_files().iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains(&mark)
    })
}

/// Before the restart, the host must show the step the daemon died at:
/// proof that the restart (not a grant that never started, or a revoke
/// that had finished) is what cleaned up.
fn assert_half_done(step: &str, who: Who, ticket: u64) {
    let user = format!("cp{ticket}.ssh");
    let user_exists = passwd_line(&user).is_some();
    let dropin = Path::new(&format!("/etc/sudoers.d/ticket{ticket}")).exists();
    let key = key_present(ticket, 1);
    let want = match step {
        "after_intent" => (false, false, false),
        "after_user_created" | "after_password_set" => (true, false, false),
        "after_sudoers_installed" => (true, true, false),
        "after_key_installed"
        | "after_grant_audited"
        | "after_grant_done"
        | "revoke_after_intent" => (true, true, true),
        "revoke_after_key_removed" => (true, true, false),
        "revoke_after_user_deleted" | "revoke_after_audited" => (false, false, false),
        other => panic!("unknown fault step {other}"),
    };
    let want = match who {
        Temp => want,
        Root => (false, false, want.2),
    };
    assert_eq!(
        (user_exists, dropin, key),
        want,
        "host at the {step} crash ({who:?}): (user, sudoers drop-in, key)"
    );
}

/// Support can log in as `user` and run a command.
pub fn assert_login_works(scene: &Scene, user: &str) {
    match scene.sshd.login(&scene.support, user, &["id", "-un"], b"") {
        Login::Ran {
            code: Some(0),
            stdout,
            ..
        } => assert_eq!(stdout.trim(), user),
        other => panic!("listed AUTHED but login as {user} fails: {other:?}"),
    }
    if user != "root" {
        wait_logged_out(user);
    }
}

/// Nothing of `ticket` left, access refused, the admin's files intact,
/// the audit chain verifies.
pub fn assert_converged(scene: &Scene, ticket: u64, user: &str) {
    scene.assert_no_trace(ticket);
    assert_no_firewall_trace();
    scene.sshd.assert_refused(&scene.support, user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// `kill -9` at a grant step, restart: a grant the store marked done
/// stands and works; anything before that is rolled back without a trace
/// (the caller never heard "yes"). Then a revoke leaves nothing.
pub fn crash_grant(sb: &Sandbox, who: Who, step: &str) {
    let ticket = 200;
    let user = login_user(who, ticket);
    let mut scene = scene(sb, who, Some(step));
    scene.grant_unanswered(ticket);
    scene.daemon.wait_killed();
    assert_half_done(step, who, ticket);
    scene.daemon.restart();
    let listed = scene.listed(ticket);
    let stands = listed.iter().any(|(_, s)| s == "AUTHED");
    assert_eq!(
        stands,
        step == "after_grant_done",
        "crash at {step}: listed {listed:?}"
    );
    if stands {
        assert_login_works(&scene, &user);
        scene.revoke(ticket, &user);
    }
    assert_converged(&scene, ticket, &user);
}

/// `kill -9` at a revoke step, restart: the revoke is finished.
pub fn crash_revoke(sb: &Sandbox, who: Who, step: &str) {
    let ticket = 201;
    let mut scene = scene(sb, who, Some(step));
    let data = scene.grant(ticket, &[]);
    let user = str_field(&data, "ssh_username").to_string();
    assert_eq!(user, login_user(who, ticket));
    match who {
        Temp => {
            let password = str_field(&data, "wheel_password").to_string();
            assert_temp_user_becomes_root(&scene, &user, &password);
            wait_logged_out(&user);
        }
        Root => assert_login_works(&scene, &user),
    }
    let t = ticket.to_string();
    let _ = scene.daemon.try_call(
        "ticket_revoke",
        &[("ticket_id", &t), ("ssh_username", &user)],
    );
    scene.daemon.wait_killed();
    assert_half_done(step, who, ticket);
    scene.daemon.restart();
    assert_converged(&scene, ticket, &user);
}

/// A second server's grant of a ticket whose temporary user the first
/// created, killed at `step`: after the restart the first server's access
/// still works (user, password, key, sudoers), the second stands only if
/// its done mark was committed; revoking both leaves nothing.
pub fn crash_second_server(sb: &Sandbox, step: &str) {
    let ticket = 202;
    let mut scene = scene(sb, Temp, None);
    let data = scene.grant(ticket, &[]);
    let user = str_field(&data, "ssh_username").to_string();
    let password = str_field(&data, "wheel_password").to_string();
    scene.daemon.restart_armed(step);
    let args = [
        ("ticket_id", ticket.to_string()),
        ("server_num", "2".to_string()),
        ("ssh_key", scene.support.public_line.clone()),
        ("access_ip-0", "127.0.0.1".to_string()),
    ];
    let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _ = scene.daemon.try_call("ticket_grant", &args);
    scene.daemon.wait_killed();
    scene.daemon.restart();
    // The first server's access is whole: the user, its password, sudo.
    assert!(key_present(ticket, 1), "server 1's key is gone");
    assert_temp_user_becomes_root(&scene, &user, &password);
    wait_logged_out(&user);
    assert_eq!(
        key_present(ticket, 2),
        step == "after_grant_done",
        "server 2's key after a crash at {step}"
    );
    let listed = scene.listed(ticket);
    let authed = listed.iter().filter(|(_, s)| s == "AUTHED").count();
    assert_eq!(
        authed,
        if step == "after_grant_done" { 2 } else { 1 },
        "{listed:?}"
    );
    scene.revoke(ticket, &user);
    assert_converged(&scene, ticket, &user);
}

/// A crash at `first` leaves work for the reconciler; the restart is
/// killed again inside that repair (`repair_<name>`); the next restart
/// still converges.
pub fn crash_inside_repair(sb: &Sandbox, first: &str, repair: &str) {
    let ticket = 203;
    let user = login_user(Temp, ticket);
    let mut scene = scene(sb, Temp, Some(first));
    if first.starts_with("revoke_") {
        scene.grant(ticket, &[]);
        let t = ticket.to_string();
        let _ = scene.daemon.try_call(
            "ticket_revoke",
            &[("ticket_id", &t), ("ssh_username", &user)],
        );
    } else {
        scene.grant_unanswered(ticket);
    }
    scene.daemon.wait_killed();
    scene.daemon.restart_killed_at(&format!("repair_{repair}"));
    scene.daemon.restart();
    assert_converged(&scene, ticket, &user);
}

/// Issue 14, finding 8: an answered grant, `kill -9`, then logrotate moves
/// the log before the restart: the grant stands, the chain verifies.
pub fn answered_grant_survives_kill_and_rotation(sb: &Sandbox) {
    let ticket = 204;
    let mut scene = scene(sb, Root, None);
    scene.grant(ticket, &[]);
    scene.daemon.kill9();
    let log = Path::new("/var/cpanel/logs/supportauth/audit.log");
    std::fs::rename(log, log.with_extension("log.1")).expect("rotate the audit log");
    scene.daemon.restart();
    let listed = scene.listed(ticket);
    assert_eq!(listed, [("root".to_string(), "AUTHED".to_string())]);
    assert_login_works(&scene, "root");
    daemon::assert_audit_verifies();
    scene.revoke(ticket, "root");
    assert_converged(&scene, ticket, "root");
}

/// Issue 14, finding 2: what a power cut leaves at the end of the log (a
/// half-written line and a block of NUL bytes) is cut off and kept aside at
/// the restart; the chain goes on and `audit verify` passes and says so.
pub fn torn_audit_tail_is_repaired_at_restart(sb: &Sandbox) {
    use std::io::Write;
    let ticket = 205;
    let mut scene = scene(sb, Root, None);
    scene.grant(ticket, &[]);
    scene.daemon.kill9();
    let log = Path::new("/var/cpanel/logs/supportauth/audit.log");
    let mut torn = b"{\"v\":1,\"seq\":99,\"time\":\"2026-12-0".to_vec();
    torn.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(&torn))
        .expect("leave a torn tail");
    scene.daemon.restart();
    scene.revoke(ticket, "root");
    let out = daemon::audit_verify();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "audit verify after the repair: {text}"
    );
    assert!(text.contains("tail damaged and repaired"), "{text}");
    let saved: Vec<_> = std::fs::read_dir(log.parent().expect("log dir"))
        .expect("read log dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert_eq!(saved.len(), 1, "the cut bytes are kept aside");
    assert_eq!(std::fs::read(saved[0].path()).expect("read saved"), torn);
    assert_converged(&scene, ticket, "root");
}
