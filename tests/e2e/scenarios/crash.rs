//! Scenario 5: the daemon is killed (SIGKILL) at each fault point of
//! grant and revoke; a restart must converge the host.

use std::path::Path;

use crate::e2e::daemon;
use crate::e2e::sandbox::Sandbox;
use crate::e2e::scene::*;
use crate::e2e::sshd::Login;

// ---- scenario 5 ---------------------------------------------------------

/// Before the restart, the host must show the step the daemon died at:
/// proof that the restart (not a grant that never started, or a revoke
/// that had finished) is what cleaned up.
fn assert_half_done(step: &str, ticket: u64) {
    let user = format!("cp{ticket}.ssh");
    let user_exists = passwd_line(&user).is_some();
    let dropin = Path::new(&format!("/etc/sudoers.d/ticket{ticket}")).exists();
    let mark = format!("{ticket}_server_");
    let key = key_files().iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains(&mark)
    });
    let want = match step {
        "after_intent" => (false, false, false),
        "after_user_created" | "after_password_set" => (true, false, false),
        "after_sudoers_installed" => (true, true, false),
        "after_key_installed" | "after_grant_audited" | "revoke_after_intent" => (true, true, true),
        "revoke_after_key_removed" => (true, true, false),
        "revoke_after_user_deleted" => (false, dropin, false),
        other => panic!("unknown fault step {other}"),
    };
    assert_eq!(
        (user_exists, dropin, key),
        want,
        "host at the {step} crash: (user, sudoers drop-in, key)"
    );
}

/// `kill -9` at a grant step, restart: the grant is either complete (and
/// works) or gone without a trace; then a revoke leaves nothing.
pub fn crash_grant(sb: &Sandbox, step: &str) {
    let ticket = 200;
    let user = format!("cp{ticket}.ssh");
    let mut scene = Scene::new(
        sb,
        &SceneSetup {
            fault: Some(step),
            group_sudo_rule: false,
            firewall: "nftables",
            ..SceneSetup::root_login("no")
        },
    );
    scene.grant_unanswered(ticket);
    scene.daemon.wait_killed();
    assert_half_done(step, ticket);
    scene.daemon.restart();
    let listed = scene.listed(ticket);
    let rolled_forward = listed.iter().any(|(_, s)| s == "AUTHED");
    eprintln!("crash at {step}: after restart ticket_list shows {listed:?} (rolled forward: {rolled_forward})");
    // Once the closing `grant` record is durable the grant happened: the
    // restart completes it from the log; before that it is rolled back.
    assert_eq!(
        rolled_forward,
        step == "after_grant_audited",
        "crash at {step}: listed {listed:?}"
    );
    if rolled_forward {
        // Rolled forward: it must really work (the password never reached
        // the caller, so only the key login is checked).
        match scene.sshd.login(&scene.support, &user, &["id", "-un"], b"") {
            Login::Ran {
                code: Some(0),
                stdout,
                ..
            } => assert_eq!(stdout.trim(), user),
            other => panic!("listed AUTHED after {step} but login fails: {other:?}"),
        }
        wait_logged_out(&user);
        scene.revoke(ticket, &user);
    }
    scene.assert_no_trace(ticket);
    assert_no_firewall_trace();
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// `kill -9` at a revoke step, restart: the revoke is finished.
pub fn crash_revoke(sb: &Sandbox, step: &str) {
    let ticket = 201;
    let mut scene = Scene::new(
        sb,
        &SceneSetup {
            fault: Some(step),
            group_sudo_rule: false,
            firewall: "nftables",
            ..SceneSetup::root_login("no")
        },
    );
    let data = scene.grant(ticket, &[]);
    let user = str_field(&data, "ssh_username").to_string();
    let password = str_field(&data, "wheel_password").to_string();
    assert_temp_user_becomes_root(&scene, &user, &password);
    wait_logged_out(&user);
    let t = ticket.to_string();
    let _ = scene.daemon.try_call(
        "ticket_revoke",
        &[("ticket_id", &t), ("ssh_username", &user)],
    );
    scene.daemon.wait_killed();
    scene.daemon.restart();
    scene.assert_no_trace(ticket);
    assert_no_firewall_trace();
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}
