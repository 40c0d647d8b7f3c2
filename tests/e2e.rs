//! End-to-end proof (issue 7): real sshd, useradd, chpasswd, visudo, sudo,
//! nft and the real `supportauth daemon`, each scenario inside its own
//! throwaway mount + network + pid namespace (see `e2e/outer.rs` for how,
//! `e2e/sandbox.rs` for what is copied). The host is snapshotted around
//! every scenario and must come out byte-identical.
//!
//! Not root / no namespaces: each test prints `SKIPPED e2e: <why>` and
//! returns; `SUPPORTAUTH_E2E_REQUIRE=1` turns that into a failure (CI).

/// The harness; `e2e/*.rs`.
mod e2e {
    pub mod cmd;
    pub mod host_guard;
    pub mod outer;
    pub mod sandbox;
    pub mod selftest;
    pub mod sshd;
}

use e2e::{outer, selftest};

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
}

e2e_test!(harness_root_key_login => selftest::root_key_login);
e2e_test!(harness_user_sudo_login => selftest::user_sudo_login);

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
