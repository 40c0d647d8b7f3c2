//! End-to-end proof (issue 7): real sshd, useradd, chpasswd, visudo, sudo,
//! nft and the real `supportauth daemon`, each scenario inside its own
//! throwaway mount + network + pid namespace (see `e2e/outer.rs` for how,
//! `e2e/sandbox.rs` for what is copied). The host is snapshotted around
//! every scenario and must come out byte-identical.
//!
//! Not root / no namespaces: each test prints `SKIPPED e2e: <why>` and
//! returns; `SUPPORTAUTH_E2E_REQUIRE=1` or `SUPPORTAUTH_TESTS_MUST_RUN`
//! (set by .ci/run) turns that into a failure.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

/// The harness; `e2e/*.rs`.
mod e2e {
    pub mod cmd;
    pub mod daemon;
    pub mod host_guard;
    pub mod outer;
    pub mod powerfs;
    pub mod sandbox;
    pub mod scenarios;
    pub mod scene;
    pub mod selftest;
    pub mod sshd;
}

use e2e::{outer, scenarios, selftest};

/// One `#[test]` per scenario: the outer run re-executes exactly this test
/// inside the sandbox, where `$body` runs.
macro_rules! e2e_test {
    ($(#[$attr:meta])* $name:ident => $body:path) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            outer::run(stringify!($name), $body);
        }
    };
    // A scenario that needs more than the sandbox (`$needs` says why not).
    ($(#[$attr:meta])* $name:ident => $body:path, needs $needs:path) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            outer::run_needing(stringify!($name), $body, Some($needs));
        }
    };
}

e2e_test!(harness_root_key_login => selftest::root_key_login);
e2e_test!(harness_user_sudo_login => selftest::user_sudo_login);

/// The harness can fail: a sandbox body that panics must fail the test.
#[test]
fn harness_inner_failure_is_reported() {
    outer::run_expecting_failure(
        "harness_inner_failure_is_reported",
        selftest::deliberate_failure,
        selftest::DELIBERATE,
    );
}

// Scenarios of issue 7 against the real daemon.
e2e_test!(s1_root_prohibit_password => scenarios::access::root_prohibit_password);
e2e_test!(s2_root_login_no_temp_user => scenarios::access::root_login_no);
e2e_test!(s2_root_login_no_sudoers_dropin => scenarios::access::root_login_no_sudoers_dropin);
e2e_test!(
    /// Revoking while support is still logged in ends the session too.
    s2_revoke_during_open_session => scenarios::access::revoke_during_open_session
);
e2e_test!(s3_match_address_forbids_root => scenarios::access::match_address_forbids_root);
e2e_test!(s3_ssh_test_follows_sshds_own_port => scenarios::access::ssh_test_follows_sshds_own_port);
e2e_test!(
    /// Issue 18: real logins with a granted key are audited; an admin's are not.
    s18_support_logins_are_audited => scenarios::logins::support_logins_are_audited
);
e2e_test!(
    /// Issue 18: a daemon restart during a session loses and repeats nothing.
    s18_login_watch_restart_loses_and_repeats_nothing => scenarios::logins::restart_loses_and_repeats_nothing
);
e2e_test!(
    /// Issue 18: a revoke ends support's open root session, not the admin's.
    s18_revoke_ends_the_support_session_only => scenarios::logins::revoke_ends_the_support_session_only
);
e2e_test!(
    /// Issue 18: expiry and the kill switch end open support sessions.
    s18_expiry_and_kill_switch_end_sessions => scenarios::logins::expiry_and_kill_switch_end_sessions
);
e2e_test!(
    /// Issue 18: a login read only after its grant was revoked is ended then.
    s18_login_read_after_revoke_is_ended => scenarios::logins::login_read_after_revoke_is_ended
);
e2e_test!(
    /// Issue 18: the same through a real journald (`journalctl -o json`).
    s18_journal_logins => scenarios::logins::journal_logins,
    needs scenarios::logins::journal_needs
);
e2e_test!(s4_ttl_expires_without_api_call => scenarios::access::ttl_expires_without_api_call);
e2e_test!(s4_ttl_backstop_with_daemon_down => scenarios::access::ttl_backstop_with_daemon_down);
e2e_test!(s4_extend_moves_sshds_expiry => scenarios::access::extend_moves_sshds_expiry);
e2e_test!(s5_crash_external_kill_during_burst => scenarios::mix::crash_external_kill_during_burst);
e2e_test!(s6_firewall_default_drop => scenarios::firewall::firewall_default_drop);
e2e_test!(s7_parallel_mixed_operations => scenarios::mix::parallel_mixed_operations);
e2e_test!(
    /// A full disk under the audit log: no change goes unrecorded.
    s8_full_audit_disk => scenarios::disk::full_audit_disk
);

// Issue 20: `supportauth doctor` on healthy and broken hosts.
e2e_test!(doctor_healthy_host => scenarios::doctor::healthy_host);
e2e_test!(doctor_sshd_forbids_support => scenarios::doctor::sshd_forbids_support);
e2e_test!(doctor_no_firewall_backend => scenarios::doctor::no_firewall_backend);
e2e_test!(doctor_edited_audit_log => scenarios::doctor::edited_audit_log);
e2e_test!(
    /// `/metrics` after grants, revokes and failed logins, parsed strictly.
    metrics_scrape_counts => scenarios::metrics::scrape_after_grants_revokes_and_failed_logins
);
// Issue 16: power loss at every fsync (powerfs, see e2e/powerfs.rs).
e2e_test!(powerloss_grant_root => scenarios::powerloss::grant_root, needs e2e::powerfs::needs);
e2e_test!(powerloss_grant_temp => scenarios::powerloss::grant_temp, needs e2e::powerfs::needs);
e2e_test!(powerloss_revoke_root => scenarios::powerloss::revoke_root, needs e2e::powerfs::needs);
e2e_test!(powerloss_revoke_temp => scenarios::powerloss::revoke_temp, needs e2e::powerfs::needs);
e2e_test!(powerloss_token_change => scenarios::powerloss::token_change, needs e2e::powerfs::needs);
e2e_test!(powerloss_expiry_temp => scenarios::powerloss::expiry_temp, needs e2e::powerfs::needs);
e2e_test!(powerloss_reconcile_repair => scenarios::powerloss::reconcile_repair, needs e2e::powerfs::needs);
e2e_test!(
    /// ENOSPC and EIO at every write, fsync, rename and open under the
    /// state, audit and ~/.ssh directories, during a grant / a revoke.
    disk_failing_grant => scenarios::disk::failing_disk_grant, needs e2e::powerfs::needs
);
e2e_test!(disk_failing_revoke => scenarios::disk::failing_disk_revoke, needs e2e::powerfs::needs);

// Issue 19: the packaged product.
e2e_test!(
    /// `systemd-analyze verify` on systemd/supportauth.service, installed
    /// in the sandbox as the packages install it.
    unit_verifies => scenarios::package::unit_verifies,
    needs scenarios::package::unit_check_needs
);
e2e_test!(
    /// dpkg -i, the unit's own start lines, grant and revoke through the
    /// CLI, an upgrade, dpkg --purge: no grant, key, user or firewall
    /// entry left.
    package_deb_install_grant_revoke_purge => scenarios::package::deb_lifecycle,
    needs scenarios::package::deb_needs
);

/// Scenario 5: one test per fault point of the daemon (`SUPPORTAUTH_FAULT`).
macro_rules! crash_tests {
    ($($name:ident => $kind:ident($($arg:expr),*);)*) => {
        $(
            #[test]
            fn $name() {
                fn body(sb: &e2e::sandbox::Sandbox) {
                    scenarios::crash::$kind(sb, $($arg),*)
                }
                outer::run(stringify!($name), body);
            }
        )*
    };
}

use scenarios::crash::{Root, Temp};

crash_tests! {
    s5_crash_temp_after_intent => crash_grant(Temp, "after_intent");
    s5_crash_temp_after_user_created => crash_grant(Temp, "after_user_created");
    s5_crash_temp_after_password_set => crash_grant(Temp, "after_password_set");
    s5_crash_temp_after_sudoers_installed => crash_grant(Temp, "after_sudoers_installed");
    s5_crash_temp_after_key_installed => crash_grant(Temp, "after_key_installed");
    s5_crash_temp_after_grant_audited => crash_grant(Temp, "after_grant_audited");
    s5_crash_temp_after_grant_done => crash_grant(Temp, "after_grant_done");
    s5_crash_temp_revoke_after_intent => crash_revoke(Temp, "revoke_after_intent");
    s5_crash_temp_revoke_after_key_removed => crash_revoke(Temp, "revoke_after_key_removed");
    s5_crash_temp_revoke_after_user_deleted => crash_revoke(Temp, "revoke_after_user_deleted");
    s5_crash_temp_revoke_after_audited => crash_revoke(Temp, "revoke_after_audited");
    s5_crash_root_after_intent => crash_grant(Root, "after_intent");
    s5_crash_root_after_key_installed => crash_grant(Root, "after_key_installed");
    s5_crash_root_after_grant_audited => crash_grant(Root, "after_grant_audited");
    s5_crash_root_after_grant_done => crash_grant(Root, "after_grant_done");
    s5_crash_root_revoke_after_intent => crash_revoke(Root, "revoke_after_intent");
    s5_crash_root_revoke_after_key_removed => crash_revoke(Root, "revoke_after_key_removed");
    s5_crash_root_revoke_after_audited => crash_revoke(Root, "revoke_after_audited");
    s5_crash_second_server_after_intent => crash_second_server("after_intent");
    s5_crash_second_server_after_key_installed => crash_second_server("after_key_installed");
    s5_crash_second_server_after_grant_audited => crash_second_server("after_grant_audited");
    s5_crash_second_server_after_grant_done => crash_second_server("after_grant_done");
    s5_crash_inside_rollback_repair => crash_inside_repair("after_key_installed", "roll_back_granting");
    s5_crash_inside_finish_revoking_repair => crash_inside_repair("revoke_after_key_removed", "finish_revoking");
    s5_answered_grant_survives_kill_and_rotation => answered_grant_survives_kill_and_rotation();
    s5_torn_audit_tail_is_repaired_at_restart => torn_audit_tail_is_repaired_at_restart();
}

/// The guard itself must see a change in content, mode and listing; this
/// runs on a tempdir, no sandbox needed.
#[test]
fn host_guard_detects_changes() {
    use e2e::host_guard::Snapshot;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("authorized_keys");
    let snap = || Snapshot::of_trees(&[dir.path()]);
    std::fs::write(&f, "ssh-ed25519 AAAA admin\n").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = snap();
    assert!(before.differences(&snap()).is_empty());
    std::fs::write(&f, "ssh-ed25519 AAAA admin\r\n").expect("write");
    assert_eq!(before.differences(&snap()).len(), 1, "content change");
    std::fs::write(&f, "ssh-ed25519 AAAA admin\n").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(before.differences(&snap()).len(), 1, "mode change");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(before.differences(&snap()).is_empty());
    std::fs::write(dir.path().join("new"), "").expect("write");
    assert!(!before.differences(&snap()).is_empty(), "new file");
}
