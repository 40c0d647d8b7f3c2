//! Upgrades: a store, audit log and host made by main at 4c52863 (before
//! the packages; `tests/fixtures/store-4c52863`) open under this release.
//! The migrations run on it, its token still authenticates, its grant is
//! still managed, and the audit chain continues in the same file.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-4c52863");
const TOKEN: &str = "421MQMFE2NA3MZNTDCYVAK35T3JCJCWO";
/// Grant 1001's end (see the fixture's README).
const GRANT_ENDS: i64 = 1_798_946_064;
const FIXTURE_RECORDS: usize = 9;

fn place(from: &str, root: &Path, to: &str) {
    let dest = root.join(to);
    let dir = dest.parent().expect("a parent");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(Path::new(FIXTURE).join(from), &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn store_of_main_4c52863_opens_and_the_chain_continues() {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED upgrade: {why}");
        return;
    }
    let d = Daemon::start_configured("", "", |root| {
        let cfg = scratch_root_config(root, "PermitRootLogin prohibit-password");
        place("state.db", root, "var/lib/supportauth/state.db");
        place("audit.log", root, "var/cpanel/logs/supportauth/audit.log");
        place("authorized_keys", root, "root/.ssh/authorized_keys");
        place(
            "cpanel_support_1001_1.pub",
            root,
            "root/.ssh/cpanel_support_1001_1.pub",
        );
        cfg
    });
    let old_log = std::fs::read(Path::new(FIXTURE).join("audit.log")).unwrap();
    let key = std::fs::read_to_string(Path::new(FIXTURE).join("support_key.pub")).unwrap();
    let key_blob = key.split_whitespace().nth(1).unwrap().to_string();

    // The old token still authenticates (tokens table and its hashes).
    let r = d.tcp(&get(
        "/json-api/ticket_list?api.version=1",
        Some(&format!("whm root:{TOKEN}")),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let listed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let auths = listed["data"]["auths"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has_1001 = auths.iter().any(|a| a["ticket_id"] == 1001);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if now < GRANT_ENDS {
        // The old grant is live and this release revokes it.
        assert!(
            has_1001,
            "grant 1001 not listed after the upgrade: {listed}"
        );
        assert!(d.read("root/.ssh/authorized_keys").contains(&key_blob));
        let v = d.call(
            "ticket_revoke",
            &[("ticket_id", "1001"), ("ssh_username", "root")],
        );
        assert_eq!(v["metadata"]["result"], 1, "{v}");
        assert_eq!(v["data"]["revoked_keys"], 1, "{v}");
    } else {
        // Past its end: the new daemon expired it at start.
        assert!(!has_1001, "an ended grant is still listed: {listed}");
    }
    assert!(
        !d.read("root/.ssh/authorized_keys").contains(&key_blob),
        "grant 1001's key is still installed"
    );

    // The chain continues in the same file: the old records untouched,
    // new ones linked to them, and the whole file verifies against the
    // upgraded store's head.
    let log = std::fs::read(d.root().join("var/cpanel/logs/supportauth/audit.log")).unwrap();
    assert!(log.starts_with(&old_log), "the old audit records changed");
    let new_records = log[old_log.len()..]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(new_records >= 2, "no new audit records after the upgrade");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&d.config)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!(
        "OK: {} records, seq 1..{}",
        FIXTURE_RECORDS + new_records,
        FIXTURE_RECORDS + new_records
    );
    assert!(text.contains(&want), "{text} (wanted {want})");
}
