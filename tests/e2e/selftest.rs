//! Proof that the sandbox can host every scenario, without the daemon:
//! the same real tools, driven by hand.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::cmd;
use super::sandbox::{self, mkdir_mode, Sandbox};
use super::sshd::{KeyPair, Login, Sshd, SshdSetup};

/// Root logs in with a key placed by hand and is refused once it is gone;
/// nft works on the sandbox's own ruleset.
pub fn root_key_login(sb: &Sandbox) {
    let key = KeyPair::generate(&sb.path("support"), "e2e-support");
    let sshd = Sshd::start(
        sb,
        &SshdSetup {
            permit_root_login: "prohibit-password",
            tail: "",
            also_listen: &[],
            syslog: false,
        },
    );
    if !Path::new("/root/.ssh").exists() {
        mkdir_mode("/root/.ssh", 0o700);
    }
    let ak = Path::new("/root/.ssh/authorized_keys");
    std::fs::write(ak, format!("{}\n", key.public_line)).expect("write authorized_keys");
    std::fs::set_permissions(ak, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    sshd.assert_root(&key, "root", &["id", "-u"], b"");

    std::fs::write(ak, "").expect("empty authorized_keys");
    sshd.assert_refused(&key, "root");

    // The firewall scenario needs nft on a private ruleset; the host guard
    // proves this table never reaches the host.
    if let Some(nft) = cmd::find_tool(&["/usr/sbin/nft", "/sbin/nft"]) {
        cmd::run_ok(&nft, &["add", "table", "inet", "supportauth_e2e_probe"]);
        let listed = cmd::run_ok(&nft, &["list", "tables"]);
        assert!(listed.contains("supportauth_e2e_probe"), "{listed}");
    }
}

/// What the temporary-user path needs: real useradd/chpasswd/visudo, a key
/// login as that user with root refused, `sudo -S` with the password, and
/// nothing left once the user is deleted.
pub fn user_sudo_login(sb: &Sandbox) {
    let key = KeyPair::generate(&sb.path("support"), "e2e-support");
    let sshd = Sshd::start(
        sb,
        &SshdSetup {
            permit_root_login: "no",
            tail: "",
            also_listen: &[],
            syslog: false,
        },
    );
    let user = "cp900001.ssh";
    let password = "e2e-Pa55word-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNO";
    cmd::run_ok(
        Path::new("/usr/sbin/useradd"),
        &["-m", "-G", "sudo", "-s", "/bin/bash", user],
    );
    cmd::run_ok_stdin(
        Path::new("/usr/sbin/chpasswd"),
        &[] as &[&str],
        format!("{user}:{password}\n").as_bytes(),
    );
    let dropin = Path::new("/etc/sudoers.d/ticket900001");
    let staged = sb.path("ticket900001.sudoers");
    std::fs::write(&staged, format!("{user} ALL=(ALL:ALL) ALL\n")).expect("stage drop-in");
    cmd::run_ok(
        Path::new("/usr/sbin/visudo"),
        &["-cf".as_ref(), staged.as_os_str()],
    );
    std::fs::copy(&staged, dropin).expect("install drop-in");
    std::fs::set_permissions(dropin, std::fs::Permissions::from_mode(0o440)).expect("chmod");

    let home = Path::new("/home").join(user);
    let ssh_dir = home.join(".ssh");
    mkdir_mode(&ssh_dir, 0o700);
    let ak = ssh_dir.join("authorized_keys");
    std::fs::write(&ak, format!("{}\n", key.public_line)).expect("write authorized_keys");
    let pw = nix::unistd::User::from_name(user)
        .expect("getpwnam")
        .expect("user exists");
    for p in [&ssh_dir, &ak] {
        std::os::unix::fs::chown(p, Some(pw.uid.as_raw()), Some(pw.gid.as_raw())).expect("chown");
    }

    // Same key for root: PermitRootLogin no must still refuse it.
    if !Path::new("/root/.ssh").exists() {
        mkdir_mode("/root/.ssh", 0o700);
    }
    std::fs::write(
        "/root/.ssh/authorized_keys",
        format!("{}\n", key.public_line),
    )
    .expect("root authorized_keys");
    sshd.assert_refused(&key, "root");

    match sshd.login(&key, user, &["id", "-un"], b"") {
        Login::Ran {
            code: Some(0),
            stdout,
            ..
        } => assert_eq!(stdout.trim(), user),
        other => panic!("login as {user} failed: {other:?}\n{}", sshd.log()),
    }
    sshd.assert_root(
        &key,
        user,
        &["sudo", "-S", "-p", "''", "id", "-u"],
        format!("{password}\n").as_bytes(),
    );
    // A wrong password must not make it root (proves sudo really checks).
    match sshd.login(
        &key,
        user,
        &["sudo", "-S", "-p", "''", "id", "-u"],
        b"wrong\n",
    ) {
        Login::Ran { code, stdout, .. } => {
            assert_ne!(code, Some(0), "sudo accepted a wrong password: {stdout}")
        }
        other => panic!("login as {user} failed: {other:?}"),
    }

    // sshd's per-session process for the last login may still be exiting;
    // userdel refuses a user with live processes.
    sandbox::wait_no_processes_of(pw.uid.as_raw());
    cmd::run_ok(Path::new("/usr/sbin/userdel"), &["-r", user]);
    std::fs::remove_file(dropin).expect("remove drop-in");
    assert!(!home.exists(), "userdel -r left {}", home.display());
    sshd.assert_refused(&key, user);
}

/// Marker of [`deliberate_failure`]'s panic.
pub const DELIBERATE: &str = "deliberate e2e failure: sshd refused as expected";

/// Fails on purpose, after real work in the sandbox: a refused login
/// asserted as a success.
pub fn deliberate_failure(sb: &Sandbox) {
    let key = KeyPair::generate(&sb.path("support"), "e2e-support");
    let sshd = Sshd::start(
        sb,
        &SshdSetup {
            permit_root_login: "prohibit-password",
            tail: "",
            also_listen: &[],
            syslog: false,
        },
    );
    if let Login::Refused { .. } = sshd.login(&key, "root", &["id", "-u"], b"") {
        panic!("{DELIBERATE}");
    }
}
