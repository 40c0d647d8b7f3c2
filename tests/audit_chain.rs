//! Verification catches every kind of tampering; show, replay, the classic
//! format and the journald copy behave as documented.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use supportauth::audit::files::{discover, Records};
use supportauth::audit::record::{open_line, sha256_hex};
use supportauth::audit::show::{show, Filter, ShowFormat};
use supportauth::audit::verify::{HeadCheck, Problem};
use supportauth::audit::writer::load_head;
use supportauth::audit::{
    active_grants, cli, journald, verify_files, AuditEvent, AuditLog, ChainHead, JournaldSink,
    Outcome, ReplayedGrant,
};
use supportauth::clock::{Clock, ManualClock};
use supportauth::config::{AuditFormat, Config};
use supportauth::store::Store;
use supportauth::types::{ServerNum, TicketId};

struct Env {
    dir: tempfile::TempDir,
    store: Store,
    log: PathBuf,
    clock: Arc<ManualClock>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state/state.db"))
        .await
        .unwrap();
    let log = dir.path().join("logs/supportauth/audit.log");
    Env {
        dir,
        store,
        log,
        clock: Arc::new(ManualClock::new(1_800_000_000)),
    }
}

impl Env {
    async fn open(&self) -> AuditLog {
        let clock: Arc<dyn Clock> = self.clock.clone();
        AuditLog::open(&self.log, self.store.clone(), clock)
            .await
            .unwrap()
    }
    async fn head(&self) -> ChainHead {
        load_head(&self.store).await.unwrap().unwrap()
    }
}

fn tid(n: u64) -> TicketId {
    TicketId::parse(&n.to_string()).unwrap()
}
fn snum(n: u64) -> ServerNum {
    ServerNum::parse(&n.to_string()).unwrap()
}

async fn append_n(log: &AuditLog, n: u64) {
    for i in 0..n {
        log.append(
            AuditEvent::new("key_added", "system")
                .ticket(tid(1000 + i), Some(snum(1)))
                .details(json!({"i": i})),
        )
        .await
        .unwrap();
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(p, text).unwrap();
}

/// Re-seals a line after changing it, as a forger who knows the format would.
fn reseal(line: &str) -> String {
    let body = format!("{}}}", &line[..line.find(",\"hash\"").unwrap()]);
    format!(
        "{},\"hash\":\"{}\"}}",
        &body[..body.len() - 1],
        sha256_hex(body.as_bytes())
    )
}

#[tokio::test]
async fn intact_log_verifies_and_matches_the_store_head() {
    let e = env().await;
    let log = e.open().await;
    append_n(&log, 10).await;
    let r = verify_files(std::slice::from_ref(&e.log), Some(e.head().await));
    assert!(r.is_ok(), "{r}");
    assert_eq!(
        (r.records, r.first_seq, r.last_seq),
        (10, Some(1), Some(10))
    );
    assert_eq!(r.head, HeadCheck::Matches);
    assert_eq!(
        r.to_string(),
        "OK: 10 records, seq 1..10, head matches store"
    );
}

#[tokio::test]
async fn edited_line_is_named() {
    let e = env().await;
    append_n(&e.open().await, 8).await;
    let mut lines = read_lines(&e.log);
    lines[4] = lines[4].replace("\"ticket_id\":1004", "\"ticket_id\":9004");
    write_lines(&e.log, &lines);
    let r = verify_files(std::slice::from_ref(&e.log), None);
    let f = r.failure.unwrap();
    assert_eq!((f.line, f.problem), (5, Problem::Edited));

    // A forger who re-hashes the edited line breaks the next line's link.
    lines[4] = reseal(&lines[4]);
    assert!(open_line(&lines[4]).is_ok());
    write_lines(&e.log, &lines);
    let f = verify_files(std::slice::from_ref(&e.log), None)
        .failure
        .unwrap();
    assert_eq!((f.line, f.problem), (6, Problem::PrevMismatch));
    assert_eq!(f.file, e.log);
}

#[tokio::test]
async fn deleted_line_is_named() {
    let e = env().await;
    append_n(&e.open().await, 8).await;
    let mut lines = read_lines(&e.log);
    lines.remove(4); // seq 5
    write_lines(&e.log, &lines);
    let f = verify_files(std::slice::from_ref(&e.log), None)
        .failure
        .unwrap();
    assert_eq!(f.line, 5);
    assert_eq!(
        f.problem,
        Problem::Deleted {
            previous: 4,
            found: 6
        }
    );
    assert!(f.to_string().contains("1 record(s) missing"), "{f}");
}

#[tokio::test]
async fn swapped_pair_is_named() {
    let e = env().await;
    append_n(&e.open().await, 8).await;
    let mut lines = read_lines(&e.log);
    lines.swap(4, 5);
    write_lines(&e.log, &lines);
    let f = verify_files(std::slice::from_ref(&e.log), None)
        .failure
        .unwrap();
    assert_eq!(f.line, 5);
    assert_eq!(
        f.problem,
        Problem::Swapped {
            line: 5,
            found: 6,
            next: 5
        }
    );
    // The last two lines swapped: the held-back gap is resolved by the last line.
    let mut lines = read_lines(&e.log);
    lines.swap(4, 5);
    lines.swap(6, 7);
    write_lines(&e.log, &lines);
    let f = verify_files(std::slice::from_ref(&e.log), None)
        .failure
        .unwrap();
    assert_eq!(f.line, 7);
    assert!(matches!(f.problem, Problem::Swapped { .. }));
}

#[tokio::test]
async fn truncated_tail_is_caught_by_the_store_head() {
    let e = env().await;
    append_n(&e.open().await, 8).await;
    let head = e.head().await;
    let mut lines = read_lines(&e.log);
    lines.truncate(6);
    write_lines(&e.log, &lines);
    // The file alone is a valid, shorter chain ...
    assert!(verify_files(std::slice::from_ref(&e.log), None).is_ok());
    // ... but not the chain the store knows about.
    let r = verify_files(std::slice::from_ref(&e.log), Some(head.clone()));
    let f = r.failure.clone().unwrap();
    assert_eq!(f.problem, Problem::Truncated { last: 6, head: 8 });
    assert_eq!(r.head, HeadCheck::Failed);
    assert!(r.to_string().starts_with("FAIL: "), "{r}");

    // Emptying the file entirely is caught too.
    std::fs::write(&e.log, b"").unwrap();
    let f = verify_files(std::slice::from_ref(&e.log), Some(head.clone()))
        .failure
        .unwrap();
    assert_eq!(f.problem, Problem::Truncated { last: 0, head: 8 });

    // A rewritten last record (same seq, different content) is caught.
    let mut lines = read_lines_from(&e, 8).await;
    lines[7] = reseal(&lines[7].replace("\"i\":7", "\"i\":70"));
    write_lines(&e.log, &lines);
    let store_head = e.head().await;
    let f = verify_files(std::slice::from_ref(&e.log), Some(store_head))
        .failure
        .unwrap();
    assert_eq!(f.problem, Problem::HeadMismatch { seq: 8 });
}

/// A fresh log of `n` records in `e` (new store and file).
async fn read_lines_from(e: &Env, n: u64) -> Vec<String> {
    std::fs::remove_file(&e.log).ok();
    sqlx::query("DELETE FROM audit_head")
        .execute(e.store.pool())
        .await
        .unwrap();
    append_n(&e.open().await, n).await;
    read_lines(&e.log)
}

#[tokio::test]
async fn one_batch_past_the_head_is_pending_more_is_a_failure() {
    let e = env().await;
    append_n(&e.open().await, 6).await;
    let lines = read_lines(&e.log);
    let head_at = |seq: usize| ChainHead {
        seq: seq as u64,
        hash: open_line(&lines[seq - 1]).unwrap().hash.unwrap(),
    };
    // One batch past the head at most (a crash before its head was
    // saved, or closing records whose done mark is being committed).
    for (seq, ahead) in [(5, 1), (4, 2)] {
        let r = verify_files(std::slice::from_ref(&e.log), Some(head_at(seq)));
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.head, HeadCheck::Ahead(ahead));
    }
    let f = verify_files(std::slice::from_ref(&e.log), Some(head_at(3)))
        .failure
        .unwrap();
    assert_eq!(f.problem, Problem::BeyondHead { last: 6, head: 3 });
}

/// A configuration rooted in `e`'s directory and its store.
async fn configured(e: &Env) -> (Config, Store) {
    let cfg = Config {
        root: e.dir.path().to_path_buf(),
        ..Default::default()
    };
    let store = Store::open(&cfg.database_path()).await.unwrap();
    (cfg, store)
}

/// Rotates by renaming (logrotate `create` without compression).
async fn three_files(e: &Env) -> Vec<PathBuf> {
    let log = e.open().await;
    append_n(&log, 4).await;
    let f2 = e.log.with_file_name("audit.log.2");
    std::fs::rename(&e.log, &f2).unwrap();
    append_n(&log, 4).await;
    let f1 = e.log.with_file_name("audit.log.1");
    std::fs::rename(&e.log, &f1).unwrap();
    append_n(&log, 4).await;
    vec![f2, f1, e.log.clone()]
}

#[tokio::test]
async fn rotated_files_verify_in_any_order_and_gzipped() {
    let e = env().await;
    let files = three_files(&e).await;
    let head = e.head().await;
    // Given newest-first: the chain itself orders them.
    let mut rev = files.clone();
    rev.reverse();
    let r = verify_files(&rev, Some(head.clone()));
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.records, 12);
    assert_eq!(r.files[0].path, files[0]);
    // Compress the oldest, as logrotate's `compress` does.
    let gz = e.log.with_file_name("audit.log.2.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(&files[0]).unwrap()).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(&files[0]).unwrap();
    let found = discover(&e.log).unwrap();
    assert_eq!(found.len(), 3);
    let r = verify_files(&found, Some(head));
    assert!(r.is_ok(), "{r}");
    assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(12)));
}

#[tokio::test]
async fn removed_rotated_file_is_named() {
    let e = env().await;
    let files = three_files(&e).await;
    let head = e.head().await;
    std::fs::remove_file(&files[1]).unwrap();
    let f = verify_files(&discover(&e.log).unwrap(), Some(head.clone()))
        .failure
        .unwrap();
    assert_eq!(f.file, e.log);
    assert_eq!(f.line, 1);
    assert!(
        matches!(
            f.problem,
            Problem::FileGap {
                previous: 4,
                found: 9,
                ..
            }
        ),
        "{f}"
    );
    assert!(f.to_string().contains("a rotated file was removed"), "{f}");

    // Losing the oldest file (logrotate's retention) is reported, not failed.
    std::fs::remove_file(&files[0]).unwrap();
    let r = verify_files(&discover(&e.log).unwrap(), Some(head));
    assert!(r.is_ok(), "{r}");
    assert!(!r.starts_at_genesis);
    assert!(r.to_string().contains("no longer present"), "{r}");
}

#[tokio::test]
async fn torn_last_line_and_foreign_lines_fail() {
    let e = env().await;
    append_n(&e.open().await, 3).await;
    let mut bytes = std::fs::read(&e.log).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&e.log, &bytes).unwrap();
    let f = verify_files(std::slice::from_ref(&e.log), None)
        .failure
        .unwrap();
    assert_eq!((f.line, f.problem), (3, Problem::Incomplete));
    std::fs::write(
        &e.log,
        b"Mon Nov 23 13:28:53 2026:GRANT:root:root:undef:k\n",
    )
    .unwrap();
    let f = verify_files(std::slice::from_ref(&e.log), None)
        .failure
        .unwrap();
    assert_eq!((f.line, f.problem), (1, Problem::NoHash));
}

/// Issue 14, finding 2: a power cut leaves a half-written line and a NUL
/// block at the end of the log. The next open cuts them (saving them byte
/// for byte), the chain goes on, and `audit verify` passes and says so.
#[tokio::test]
async fn a_torn_tail_is_repaired_and_verify_reports_it() {
    let e = env().await;
    let (cfg, store) = configured(&e).await;
    let clock: Arc<dyn Clock> = e.clock.clone();
    let path = cfg.audit_log_path();
    let log = AuditLog::from_config(&cfg, store.clone(), clock.clone())
        .await
        .unwrap();
    append_n(&log, 4).await;
    drop(log);
    let intact = std::fs::read(&path).unwrap();
    let last_line = read_lines(&path).pop().unwrap();
    let mut damage = last_line.as_bytes()[..last_line.len() / 3].to_vec();
    damage.extend([0u8; 8192]);
    std::fs::write(&path, [&intact[..], &damage[..]].concat()).unwrap();
    // Without the repair `audit verify` fails on the torn line.
    assert_eq!(cli::verify(&cfg, &[]), std::process::ExitCode::FAILURE);

    let log = AuditLog::from_config(&cfg, store.clone(), clock)
        .await
        .unwrap();
    let started = AuditEvent::new("daemon_start", "system");
    assert_eq!(log.append(started).await.unwrap(), 6);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 6);
    let repair = open_line(&lines[4]).unwrap();
    assert_eq!(repair.event, "audit_tail_damaged");
    let saved_to = PathBuf::from(repair.details["saved_to"].as_str().unwrap());
    assert_eq!(saved_to.parent(), path.parent());
    assert_eq!(std::fs::read(&saved_to).unwrap(), damage, "byte-identical");
    assert_eq!(repair.details["sha256"], sha256_hex(&damage));

    let files = discover(&path).unwrap();
    assert_eq!(
        files,
        std::slice::from_ref(&path),
        "the saved tail is not part of the chain"
    );
    let r = verify_files(&files, load_head(&store).await.unwrap());
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.head, HeadCheck::Matches);
    assert_eq!(
        r.to_string(),
        format!(
            "OK: 6 records, seq 1..6, head matches store\n\
             tail damaged and repaired at seq 5: {} bytes at offset {} saved to {}",
            damage.len(),
            intact.len(),
            saved_to.display()
        )
    );
    assert_eq!(cli::verify(&cfg, &[]), std::process::ExitCode::SUCCESS);
}

#[tokio::test]
async fn cli_verify_uses_the_configured_log_and_the_store_read_only() {
    let e = env().await;
    let (cfg, store) = configured(&e).await;
    let clock: Arc<dyn Clock> = e.clock.clone();
    let log = AuditLog::from_config(&cfg, store.clone(), clock)
        .await
        .unwrap();
    append_n(&log, 5).await;
    let head = cli::read_store_head(&cfg.database_path()).unwrap().unwrap();
    assert_eq!(head.seq, 5);
    assert_eq!(cli::verify(&cfg, &[]), std::process::ExitCode::SUCCESS);
    let mut lines = read_lines(&cfg.audit_log_path());
    lines.pop();
    write_lines(&cfg.audit_log_path(), &lines);
    assert_eq!(cli::verify(&cfg, &[]), std::process::ExitCode::FAILURE);
    // An explicit copy elsewhere is checked on its own (no head comparison).
    let copy = e.dir.path().join("copy.log");
    std::fs::copy(cfg.audit_log_path(), &copy).unwrap();
    assert_eq!(cli::verify(&cfg, &[copy]), std::process::ExitCode::SUCCESS);
    // A WAL database without its -wal/-shm side files (the daemon gone)
    // still reads, and read-only means no side files appear.
    drop(log);
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let lone = e.dir.path().join("lone/state.db");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    std::fs::copy(cfg.database_path(), &lone).unwrap();
    assert_eq!(cli::read_store_head(&lone).unwrap().unwrap().seq, 5);
    let side_files = std::fs::read_dir(lone.parent().unwrap()).unwrap().count();
    assert_eq!(side_files, 1);
    // No database: nothing is created.
    let missing = e.dir.path().join("nothing/state.db");
    assert_eq!(cli::read_store_head(&missing).unwrap(), None);
    assert!(!missing.exists());
}

#[tokio::test]
async fn show_filters_and_renders_cpanel_lines() {
    let e = env().await;
    let log = e.open().await;
    log.append(
        AuditEvent::new("grant", "token:root:deploy")
            .remote(Some("203.0.113.9".into()))
            .ticket(tid(555), Some(snum(1)))
            .user("root")
            .details(json!({"key_file": "555_server_1@cpanel.net_1800000000", "expires_at": null})),
    )
    .await
    .unwrap();
    e.clock.advance(3600);
    log.append(AuditEvent::new("whitelist_added", "system").ticket(tid(555), Some(snum(1))))
        .await
        .unwrap();
    e.clock.advance(3600);
    log.append(
        AuditEvent::new("revoke", "uid:0")
            .remote(Some("unix".into()))
            .ticket(tid(556), Some(snum(1))),
    )
    .await
    .unwrap();
    let files = vec![e.log.clone()];
    let run = |filter: Filter, format: ShowFormat| {
        let mut out = Vec::new();
        let mut warn = Vec::new();
        let stats = show(&files, &filter, format, &mut out, &mut warn).unwrap();
        assert_eq!(stats.bad_lines, 0);
        String::from_utf8(out).unwrap()
    };
    let all = run(Filter::default(), ShowFormat::Json);
    assert_eq!(all.lines().count(), 3);
    assert_eq!(all, std::fs::read_to_string(&e.log).unwrap());
    let t555 = Filter {
        ticket: Some(555),
        ..Default::default()
    };
    assert_eq!(run(t555, ShowFormat::Json).lines().count(), 2);
    let by_token_name = Filter {
        actor: Some("deploy".into()),
        ..Default::default()
    };
    assert_eq!(run(by_token_name, ShowFormat::Json).lines().count(), 1);
    let window = Filter {
        since: Some(1_800_000_000 + 1800),
        until: Some(supportauth::audit::show::parse_time("2027-01-15T10:00:00Z").unwrap()),
        ..Default::default()
    };
    assert_eq!(run(window, ShowFormat::Json).lines().count(), 2);
    let revokes = Filter {
        event: Some("revoke".into()),
        ..Default::default()
    };
    assert_eq!(run(revokes, ShowFormat::Json).lines().count(), 1);
    let classic = run(Filter::default(), ShowFormat::Cpanel);
    let lines: Vec<&str> = classic.lines().collect();
    assert_eq!(lines.len(), 2, "{classic}");
    assert!(lines[0].contains(":GRANT:root:root:203.0.113.9:555_server_1@cpanel.net_1800000000"));
    assert!(lines[1].contains(":REVOKE:root:root:unix:undef"));
}

#[tokio::test]
async fn classic_format_writes_cpanel_lines_without_a_chain() {
    let e = env().await;
    let clock: Arc<dyn Clock> = e.clock.clone();
    let log = AuditLog::open_with(&e.log, e.store.clone(), clock, AuditFormat::Cpanel, None)
        .await
        .unwrap();
    log.append(
        AuditEvent::new("grant", "token:root:deploy")
            .ticket(tid(777), Some(snum(2)))
            .details(json!({"key_file": "777_server_2@cpanel.net_1800000000"})),
    )
    .await
    .unwrap();
    log.append(AuditEvent::new("api_token_create", "uid:0").details(json!({"name": "x"})))
        .await
        .unwrap();
    let lines = read_lines(&e.log);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].ends_with(":GRANT:root:root:undef:777_server_2@cpanel.net_1800000000"));
    assert!(lines[1].contains(":API_TOKEN_CREATE:root:root:undef:outcome=ok details="));
    assert!(load_head(&e.store).await.unwrap().is_none());
}

#[tokio::test]
async fn journald_receives_structured_fields() {
    let e = env().await;
    let sock_path = e.dir.path().join("journal.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let clock: Arc<dyn Clock> = e.clock.clone();
    let log = AuditLog::open_with(
        &e.log,
        e.store.clone(),
        clock,
        AuditFormat::Json,
        Some(JournaldSink::at(&sock_path)),
    )
    .await
    .unwrap();
    log.append(
        AuditEvent::new("grant", "token:root:deploy")
            .remote(Some("203.0.113.9".into()))
            .ticket(tid(4242), Some(snum(3)))
            .user("cp4242.ssh")
            .details(json!({"temp_user": true, "note": "line1\nline2"})),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).unwrap();
    let fields: BTreeMap<String, String> = journald::decode(&buf[..n])
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect();
    let rec = open_line(&read_lines(&e.log)[0]).unwrap();
    assert_eq!(fields["SYSLOG_IDENTIFIER"], "supportauth-audit");
    assert_eq!(fields["SUPPORTAUTH_EVENT"], "grant");
    assert_eq!(fields["SUPPORTAUTH_SEQ"], "1");
    assert_eq!(fields["SUPPORTAUTH_TICKET_ID"], "4242");
    assert_eq!(fields["SUPPORTAUTH_SERVER_NUM"], "3");
    assert_eq!(fields["SUPPORTAUTH_SSH_USERNAME"], "cp4242.ssh");
    assert_eq!(fields["SUPPORTAUTH_ACTOR"], "token:root:deploy");
    assert_eq!(fields["SUPPORTAUTH_REMOTE"], "203.0.113.9");
    assert_eq!(fields["SUPPORTAUTH_OUTCOME"], "ok");
    assert_eq!(fields["SUPPORTAUTH_HASH"], rec.hash.unwrap());
    let details: serde_json::Value = serde_json::from_str(&fields["SUPPORTAUTH_DETAILS"]).unwrap();
    assert_eq!(details["note"], "line1\nline2");
    assert!(fields["MESSAGE"].contains("grant"));

    // journald going away never fails an append.
    drop(sock);
    std::fs::remove_file(&sock_path).unwrap();
    assert_eq!(
        log.append(AuditEvent::new("config_reload", "system"))
            .await
            .unwrap(),
        2
    );
}

/// Deterministic pseudo-random numbers (Knuth's MMIX LCG).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn replay_equals_the_model_after_a_long_random_history_with_crashes() {
    let e = env().await;
    let mut rng = Lcg(0x5eed_0005);
    let mut model: BTreeMap<(u64, u64), ReplayedGrant> = BTreeMap::new();
    let mut log = e.open().await;
    let mut rotations = 0;
    let mut before_last = ChainHead::genesis();
    let mut crashes_before_head = 0;
    for _ in 0..1500 {
        let ticket = 100 + rng.below(12);
        let server = 1 + rng.below(3);
        let key = (ticket, server);
        let ev = match rng.below(10) {
            0..=3 if !model.contains_key(&key) => {
                let expires = if rng.below(4) == 0 {
                    None
                } else {
                    Some(e.clock.now() + 3600)
                };
                let user = if rng.below(2) == 0 {
                    "root".to_string()
                } else {
                    format!("cp{ticket}.ssh")
                };
                // Step records precede the lifecycle record, as in the engine.
                before_last = log.head().await;
                log.append(
                    AuditEvent::new("key_added", "system").ticket(tid(ticket), Some(snum(server))),
                )
                .await
                .unwrap();
                if rng.below(5) == 0 {
                    // The grant failed after its first step and was rolled back.
                    Some(
                        AuditEvent::new("grant_rolled_back", "system")
                            .ticket(tid(ticket), Some(snum(server))),
                    )
                } else {
                    let seq_next = log.head().await.seq + 1;
                    model.insert(
                        key,
                        ReplayedGrant {
                            ssh_username: user.clone(),
                            expires_at: expires,
                            granted_seq: seq_next,
                        },
                    );
                    Some(
                        AuditEvent::new("grant", "token:root:portal")
                            .ticket(tid(ticket), Some(snum(server)))
                            .user(user)
                            .details(json!({"expires_at": expires, "temp_user": false, "access_ips": [], "fingerprint": "SHA256:x", "key_file": "k"})),
                    )
                }
            }
            0..=3 => {
                // A failed grant attempt (already granted) changes nothing.
                Some(
                    AuditEvent::new("grant", "uid:0")
                        .ticket(tid(ticket), Some(snum(server)))
                        .user("root")
                        .outcome(Outcome::Failed),
                )
            }
            4 | 5 => {
                model.remove(&key);
                Some(AuditEvent::new("revoke", "uid:0").ticket(tid(ticket), Some(snum(server))))
            }
            6 => {
                model.remove(&key);
                e.clock.advance(3600);
                Some(AuditEvent::new("expire", "system").ticket(tid(ticket), Some(snum(server))))
            }
            7 => {
                model.retain(|k, _| k.0 != ticket);
                Some(AuditEvent::new("revoke_closed", "system").ticket(tid(ticket), None))
            }
            8 => {
                // Crash: the daemon restarts and reopens the log. Half the
                // time it died between the fsync of its last record and the
                // store's head update: the store is one record behind.
                drop(log);
                if rng.below(2) == 0 && before_last.seq > 0 {
                    sqlx::query("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
                        .bind(before_last.seq as i64)
                        .bind(&before_last.hash)
                        .execute(e.store.pool())
                        .await
                        .unwrap();
                    crashes_before_head += 1;
                }
                log = e.open().await;
                None
            }
            _ => {
                if rotations < 5 && rng.below(10) == 0 {
                    rotations += 1;
                    let to = e.log.with_file_name(format!("audit.log.r{rotations}"));
                    std::fs::rename(&e.log, &to).unwrap();
                }
                Some(
                    AuditEvent::new("whitelist_added", "system")
                        .details(json!({"backend": "nftables", "address": "192.0.2.1"})),
                )
            }
        };
        if let Some(ev) = ev {
            before_last = log.head().await;
            log.append(ev).await.unwrap();
        }
        e.clock.advance(7);
    }
    let files = discover(&e.log).unwrap();
    let report = verify_files(&files, Some(e.head().await));
    assert!(report.is_ok(), "{report}");
    let ordered: Vec<PathBuf> = report.files.iter().map(|f| f.path.clone()).collect();
    let replayed = active_grants(Records::new(&ordered).map(|r| r.unwrap()));
    assert!(!model.is_empty());
    assert!(crashes_before_head > 10);
    assert_eq!(replayed, model);
}
