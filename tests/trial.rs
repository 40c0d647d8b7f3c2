//! `supportauth trial DIR`, as the README tells a new user: prepare, start
//! the daemon with the printed config, then grant, list, revoke and verify
//! with nothing but `SUPPORTAUTH_CONFIG` set, while this host's account
//! files stay byte-identical. Also the CLI's advice when it cannot connect.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Output};

use common::*;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn trial_dir_grants_and_revokes_without_touching_the_host() {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED trial: {why}");
        return;
    }
    let host_files = ["/etc/passwd", "/etc/group", "/etc/shadow"];
    let before: Vec<Vec<u8>> = host_files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trial");
    let out = Command::new(BIN).arg("trial").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let cfg = dir.join("supportauth.toml");
    assert!(printed.contains(&format!("export SUPPORTAUTH_CONFIG={}", cfg.display())));
    assert!(printed.contains(&std::fs::read_to_string(&cfg).unwrap()));

    // A second trial in the same place is refused, the first left as is.
    let again = Command::new(BIN).arg("trial").arg(&dir).output().unwrap();
    assert!(!again.status.success());
    assert!(text(&again).contains("is not empty"), "{}", text(&again));

    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("daemon")
        .stderr(std::fs::File::create(tmp.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("SUPPORTAUTH_CONFIG", &cfg)
            .env_remove("SUPPORTAUTH_SOCKET")
            .output()
            .unwrap()
    };
    // The daemon is up once the socket answers (bounded, not a timing
    // assertion).
    let start = std::time::Instant::now();
    while !cli(&["list"]).status.success() {
        assert!(
            start.elapsed().as_secs() < 60,
            "the trial daemon never answered:\n{}",
            std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let key = dir.join("support_key.pub");
    let key = key.to_str().unwrap();
    let out = cli(&[
        "grant",
        "--ticket-id",
        "1001",
        "--server-num",
        "1",
        "--ssh-key-file",
        key,
        "--access-ip",
        "203.0.113.10",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let blob = std::fs::read_to_string(key).unwrap();
    let blob = blob.split_whitespace().nth(1).unwrap().to_string();
    let keys = std::fs::read_to_string(dir.join("root/.ssh/authorized_keys")).unwrap();
    assert!(keys.contains(&blob), "{keys}");
    let allow = std::fs::read_to_string(dir.join("etc/hosts.allow")).unwrap();
    assert!(allow.contains("203.0.113.10"), "{allow}");
    let out = cli(&["list"]);
    assert!(text(&out).contains("1001"), "{}", text(&out));
    let out = cli(&["revoke", "--ticket-id", "1001", "--ssh-username", "root"]);
    assert!(out.status.success(), "{}", text(&out));
    // Gone with the ~/.ssh the grant created, when the host's root had none.
    let keys = std::fs::read_to_string(dir.join("root/.ssh/authorized_keys")).unwrap_or_default();
    assert!(!keys.contains(&blob), "{keys}");
    let out = cli(&["audit", "verify"]);
    assert!(text(&out).starts_with("OK: "), "{}", text(&out));

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
    let after: Vec<Vec<u8>> = host_files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    assert!(
        before == after,
        "the trial changed this host's account files"
    );
}

/// Without the trial's config the CLI looks elsewhere, and says how to
/// point it at the right daemon.
#[test]
fn cannot_connect_names_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("version = 1\nroot = \"{}\"\n", tmp.path().display()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["list"])
        .env("SUPPORTAUTH_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains(&format!("listen.socket of {}", cfg.display())),
        "{msg}"
    );
    assert!(msg.contains("SUPPORTAUTH_CONFIG=PATH"), "{msg}");
    let sock = tmp.path().join("elsewhere.sock");
    let out = Command::new(BIN)
        .args(["list", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(text(&out).contains(&format!("{} (--socket)", sock.display())));
}
