//! A full disk under the audit log (a real, size-limited tmpfs): grants
//! fail closed with the host unchanged, revokes still take access away and
//! say the log could not be written, the daemon keeps serving, and the
//! records wait in the store until there is room again; then they are
//! appended in order and the chain verifies.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::e2e::daemon::{self, result};
use crate::e2e::sandbox::{self, Sandbox};
use crate::e2e::scene::*;

const LOG_DIR: &str = "/var/cpanel/logs/supportauth";

/// Fills the file system at `dir` to the last byte.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.write_all(&[0u8; 1]);
    let _ = f.sync_all();
    path
}

pub fn full_audit_disk(sb: &Sandbox) {
    let dir = Path::new(LOG_DIR);
    sandbox::mount_small_tmpfs(dir, 256 * 1024);
    let scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    scene.grant(300, &[]);
    let filler = fill(dir);
    // A grant that cannot be audited is refused, the host as it was. (The
    // log's last page may still have room for a grant or two: grant until
    // the log is really full.)
    let mut granted = vec![300];
    let mut refused = None;
    for ticket in 301..320 {
        let before = key_bytes();
        let t = ticket.to_string();
        let args = [
            ("ticket_id", t.as_str()),
            ("server_num", "1"),
            ("ssh_key", scene.support.public_line.as_str()),
            ("access_ip-0", "127.0.0.1"),
        ];
        let answer = scene
            .daemon
            .try_call("ticket_grant", &args)
            .expect("an answer");
        if result(&answer) == 1 {
            granted.push(ticket);
            continue;
        }
        let reason = answer["metadata"]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("audit log"), "{reason}");
        assert_eq!(before, key_bytes(), "key files changed by a refused grant");
        refused = Some(ticket);
        break;
    }
    let refused = refused.expect("a grant on a full disk was refused");

    // Revokes still take access away, and say the log failed.
    for &ticket in &granted {
        let revoked = scene.revoke(ticket, "root");
        let non_fatals = revoked["non_fatals"].to_string();
        assert!(non_fatals.contains("audit_log"), "{revoked}");
        assert!(scene.listed(ticket).iter().all(|(_, s)| s != "AUTHED"));
    }
    scene.sshd.assert_refused(&scene.support, "root");
    let log = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
    assert!(
        !log.contains("\"event\":\"revoke\""),
        "no revoke can be in the full log yet"
    );

    // Room again: the waiting records go in by themselves, in order.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
        if log.contains("\"event\":\"revoke\"") {
            assert!(log.contains("delayed_since"), "{log}");
            let rolled = log
                .find("\"grant_rolled_back\"")
                .expect("the refused grant is recorded");
            let revoke = log.find("\"event\":\"revoke\"").expect("revoke");
            assert!(rolled < revoke, "records keep the order things happened in");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the waiting records never reached the log:\n{}",
            scene.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon::assert_audit_verifies();
    for ticket in granted.into_iter().chain([refused]) {
        scene.assert_no_trace(ticket);
    }
    scene.assert_admin_intact();
}

/// Every key file's bytes.
fn key_bytes() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    key_files()
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap_or_default();
            (f, bytes)
        })
        .collect()
}
