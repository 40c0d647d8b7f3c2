//! Two processes appending to the same audit file never interleave partial
//! lines: each append holds an exclusive flock and writes its whole line
//! with one O_APPEND write. The test binary re-runs itself as the writers.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use supportauth::audit::record::open_line;
use supportauth::audit::{AuditEvent, AuditLog};
use supportauth::clock::{Clock, ManualClock};
use supportauth::store::Store;

const ROLE: &str = "SUPPORTAUTH_TEST_AUDIT_WRITER";
const LOG: &str = "SUPPORTAUTH_TEST_AUDIT_LOG";
const DB: &str = "SUPPORTAUTH_TEST_AUDIT_DB";
const RECORDS: u64 = 150;
const TEST_NAME: &str = "two_processes_append_whole_lines";

/// The child's part: its own store (its own chain), the shared file.
async fn writer(role: &str) {
    let log_path = PathBuf::from(std::env::var(LOG).unwrap());
    let db = PathBuf::from(std::env::var(DB).unwrap());
    let store = Store::open(&db).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000));
    let log = AuditLog::open(&log_path, store, clock).await.unwrap();
    for i in 0..RECORDS {
        // Lines well past a page and a pipe buffer, of varying length.
        let pad = "x".repeat(20_000 + (i as usize % 7) * 9_000);
        log.append(
            AuditEvent::new("drift_repaired", format!("system:{role}"))
                .details(serde_json::json!({"i": i, "pad": pad})),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn two_processes_append_whole_lines() {
    if let Ok(role) = std::env::var(ROLE) {
        writer(&role).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("logs/audit.log");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|role| {
            Command::new(&exe)
                .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env(ROLE, role)
                .env(LOG, &log_path)
                .env(DB, dir.path().join(format!("state-{role}/state.db")))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a writer process failed");
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.ends_with('\n'));
    let mut next = [1u64, 1u64];
    let mut switches = 0;
    let mut last_writer = None;
    for (n, line) in text.lines().enumerate() {
        let rec = open_line(line).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let w = match rec.actor.as_str() {
            "system:a" => 0,
            "system:b" => 1,
            other => panic!("unexpected actor {other}"),
        };
        // Each writer's own records arrive whole and in order. (Seq numbers
        // are not compared: one chain has one writer, the daemon, which its
        // state lock guarantees; here each process keeps its own.)
        assert_eq!(rec.details["i"], next[w] - 1, "line {}", n + 1);
        next[w] += 1;
        if last_writer.is_some_and(|l| l != w) {
            switches += 1;
        }
        last_writer = Some(w);
    }
    assert_eq!(next, [RECORDS + 1, RECORDS + 1]);
    eprintln!("writers alternated {switches} times in the file");
}
