//! Group `audit`: `supportauth audit verify` (the release binary) over a
//! large generated hash-chained log, against `sha256sum` over the same
//! file, alternated, with the page cache warm for both.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use supportauth::audit::record::GENESIS_HASH;
use supportauth::audit::{AuditEvent, Outcome, Record};
use supportauth::clock::rfc3339;
use supportauth::types::{ServerNum, TicketId};

use crate::common::BIN;
use crate::util::{self, median, ms, Report};

/// Writes a valid chain of realistic grant-lifecycle records until the
/// file holds at least `bytes`; returns the record count.
fn generate(path: &std::path::Path, bytes: u64) -> u64 {
    let f = std::fs::File::create(path).expect("create log");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut prev = GENESIS_HASH.to_string();
    let (mut seq, mut size) = (0u64, 0u64);
    let events = ["key_added", "grant", "key_removed", "revoke"];
    while size < bytes {
        seq += 1;
        let ticket = TicketId::parse(&(10_000 + seq / 4).to_string()).expect("ticket");
        let ev = AuditEvent::new(events[(seq % 4) as usize], "root")
            .remote(Some("unix:uid=0".into()))
            .ticket(ticket, Some(ServerNum::parse("1").expect("server")))
            .user("root")
            .outcome(Outcome::Ok)
            .details(serde_json::json!({
                "fingerprint": "SHA256:2m7qYv3m0b0jO8c4f1bQ3m2Yt8x9k0l1m2n3o4p5q6r",
                "access_ips": ["203.0.113.5"],
                "expires_at": 1_800_000_000 + seq,
                "key_file": "/root/.ssh/authorized_keys",
            }));
        let rec = Record::from_event(&ev, seq, rfc3339(1_700_000_000 + seq as i64), &prev);
        let (line, hash) = rec.seal().expect("seal");
        w.write_all(line.as_bytes()).expect("write");
        size += line.len() as u64;
        prev = hash;
    }
    w.flush().expect("flush");
    seq
}

pub fn run(report: &mut Report) {
    let mb = util::env_usize("SA_BENCH_AUDIT_MB", 128) as u64;
    let reps = util::env_usize("SA_BENCH_AUDIT_REPS", 5);
    report.section(&format!(
        "4. audit verify vs sha256sum ({mb} MB log, {reps} runs each, warm cache)"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit-bench.log");
    let records = generate(&log, mb * 1_000_000);
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as f64;
    // A config whose live log is elsewhere: verify checks the chain only.
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "root = \"{}\"\n[listen]\ntcp = []\n",
            dir.path().join("root").display()
        ),
    )
    .expect("config");
    let verify = || {
        let t = Instant::now();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(["audit", "verify"])
            .arg(&log)
            .output()
            .expect("run audit verify");
        let took = ms(t.elapsed());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.starts_with("OK"), "{text}");
        took
    };
    let sha = || {
        let t = Instant::now();
        let out = Command::new("sha256sum")
            .arg(&log)
            .output()
            .expect("run sha256sum");
        assert!(out.status.success());
        ms(t.elapsed())
    };
    verify();
    sha();
    let (mut v, mut s) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        v.push(verify());
        s.push(sha());
    }
    let (vm, sm) = (median(&v), median(&s));
    let mbps = |t: f64| size / 1e6 / (t / 1000.0);
    report.row(
        &format!("sha256sum, {:.0} MB", size / 1e6),
        format!("{:.0} MB/s ({sm:.0} ms)", mbps(sm)),
        String::new(),
        "",
    );
    report.row(
        &format!("supportauth audit verify, {records} records"),
        format!("{:.0} MB/s ({vm:.0} ms)", mbps(vm)),
        format!("{:.2}x sha256sum", sm / vm),
        &format!(">= 0.7x: {}", util::verdict(sm / vm >= 0.7)),
    );
}
