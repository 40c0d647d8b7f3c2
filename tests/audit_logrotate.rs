//! The shipped logrotate policy, run by the real logrotate, in both modes
//! (`create` and `copytruncate`): verification stays green and the chain
//! continues across every rotated file, compressed ones included.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use supportauth::audit::files::discover;
use supportauth::audit::record::{open_line, sha256_hex};
use supportauth::audit::verify::HeadCheck;
use supportauth::audit::writer::load_head;
use supportauth::audit::{verify_files, AuditEvent, AuditLog};
use supportauth::clock::{Clock, ManualClock};
use supportauth::store::Store;

const LOGROTATE: &str = "/usr/sbin/logrotate";
const SHIPPED_PATH: &str = "/var/cpanel/logs/supportauth/audit.log";

fn can_run() -> bool {
    if !Path::new(LOGROTATE).exists() {
        supportauth::test_skip!("SKIPPED: {LOGROTATE} is not installed");
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        supportauth::test_skip!("SKIPPED: `create 0600 root root` needs root");
        return false;
    }
    true
}

/// The shipped policy pointed at `log`, with `create` swapped for
/// `copytruncate` when asked.
fn write_conf(dir: &Path, log: &Path, copytruncate: bool) -> PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/supportauth.logrotate"),
    )
    .unwrap();
    assert!(shipped.contains(SHIPPED_PATH));
    assert!(shipped.contains("create 0600 root root"));
    let mut conf = shipped.replace(SHIPPED_PATH, log.to_str().unwrap());
    if copytruncate {
        conf = conf.replace("create 0600 root root", "copytruncate");
    }
    let path = dir.join("logrotate.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

fn logrotate(conf: &Path, state: &Path) {
    let out = Command::new(LOGROTATE)
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch directory with a store, the log's path, a clock and the
/// shipped policy (in `copytruncate` mode when asked) with its state file.
struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    log_path: PathBuf,
    clock: Arc<dyn Clock>,
    conf: PathBuf,
    state: PathBuf,
}

impl Rig {
    /// The store, the log's path, the clock, the policy and its state file.
    fn parts(&self) -> (&Store, &Path, &Arc<dyn Clock>, &Path, &Path) {
        (
            &self.store,
            &self.log_path,
            &self.clock,
            &self.conf,
            &self.state,
        )
    }
}

/// The rig and the log opened in it (None: cannot run here).
async fn rig(copytruncate: bool) -> Option<(Rig, AuditLog)> {
    if !can_run() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state/state.db"))
        .await
        .unwrap();
    let log_path = dir.path().join("logs/supportauth/audit.log");
    let conf = write_conf(dir.path(), &log_path, copytruncate);
    let state = dir.path().join("logrotate.state");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000));
    let log = AuditLog::open(&log_path, store.clone(), clock.clone())
        .await
        .unwrap();
    let rig = Rig {
        _dir: dir,
        store,
        log_path,
        clock,
        conf,
        state,
    };
    Some((rig, log))
}

async fn rotate_between_appends(copytruncate: bool) {
    let Some((r, log)) = rig(copytruncate).await else {
        return;
    };
    let (store, log_path, clock, conf, state) = r.parts();
    let mut log = log;
    let mut seq = 0;
    for round in 0..4 {
        for _ in 0..3 {
            seq = log
                .append(AuditEvent::new("config_reload", "system"))
                .await
                .unwrap();
        }
        logrotate(conf, state);
        if round == 1 {
            // A daemon restart between rotations changes nothing.
            drop(log);
            log = AuditLog::open(log_path, store.clone(), clock.clone())
                .await
                .unwrap();
        }
    }
    let last = log
        .append(AuditEvent::new("daemon_stop", "system"))
        .await
        .unwrap();
    assert_eq!(last, seq + 1);

    let files = discover(log_path).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // delaycompress: .1 stays plain, older ones are gzipped.
    assert!(names.contains(&"audit.log.1".to_string()), "{names:?}");
    assert!(names.contains(&"audit.log.2.gz".to_string()), "{names:?}");
    assert!(names.contains(&"audit.log.4.gz".to_string()), "{names:?}");
    for f in &files {
        assert_eq!(std::fs::metadata(f).unwrap().mode() & 0o077, 0, "{f:?}");
    }
    let head = load_head(store).await.unwrap().unwrap();
    let report = verify_files(&files, Some(head));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.head, HeadCheck::Matches);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(13)));
    assert_eq!(report.records, 13);
    // The live file starts where the last rotated one ended.
    let live = std::fs::read_to_string(log_path).unwrap();
    let first_live = open_line(live.lines().next().unwrap()).unwrap();
    assert_eq!(first_live.seq, 13);
}

#[tokio::test]
async fn logrotate_create_mode_keeps_the_chain() {
    rotate_between_appends(false).await;
}

#[tokio::test]
async fn logrotate_copytruncate_mode_keeps_the_chain() {
    rotate_between_appends(true).await;
}

/// A power cut tears the last line and leaves a batch unsaved in the
/// store; logrotate (at boot) moves that file away before the daemon
/// starts. The restart finds the chain's end in the rotated file: adopts
/// the batch there (no seq is reused), cuts the torn tail off it (saved
/// byte for byte) and records the repair in the new live file.
#[tokio::test]
async fn a_torn_tail_rotated_away_before_the_restart_is_repaired() {
    let Some((r, log)) = rig(false).await else {
        return;
    };
    let (store, log_path, clock, conf, state) = r.parts();
    for _ in 0..3 {
        log.append(AuditEvent::new("config_reload", "system"))
            .await
            .unwrap();
    }
    let closing = [
        AuditEvent::new("key_added", "system"),
        AuditEvent::new("grant", "system"),
    ];
    let head = log.append_closing(&closing).await.unwrap().unwrap();
    assert_eq!(head.seq, 5);
    assert_eq!(load_head(store).await.unwrap().unwrap().seq, 3);
    drop(log);
    let intact = std::fs::read(log_path).unwrap();
    let mut damage = b"{\"v\":1,\"seq\":6,\"time\":\"2027-01".to_vec();
    damage.extend([0u8; 4096]);
    std::fs::write(log_path, [&intact[..], &damage[..]].concat()).unwrap();
    logrotate(conf, state);
    let rotated = log_path.with_file_name("audit.log.1");
    assert_eq!(std::fs::metadata(log_path).unwrap().len(), 0);

    let log = AuditLog::open(log_path, store.clone(), clock.clone())
        .await
        .unwrap();
    let started = AuditEvent::new("daemon_start", "system");
    assert_eq!(log.append(started).await.unwrap(), 7);
    assert_eq!(
        std::fs::read(&rotated).unwrap(),
        intact,
        "cut back to its records"
    );
    let live = std::fs::read_to_string(log_path).unwrap();
    let repair = open_line(live.lines().next().unwrap()).unwrap();
    assert_eq!(
        (repair.seq, repair.event.as_str()),
        (6, "audit_tail_damaged")
    );
    assert_eq!(repair.details["file"], rotated.display().to_string());
    let saved_to = PathBuf::from(repair.details["saved_to"].as_str().unwrap());
    assert_eq!(std::fs::read(&saved_to).unwrap(), damage);
    assert_eq!(repair.details["sha256"], sha256_hex(&damage));

    let files = discover(log_path).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let report = verify_files(&files, load_head(store).await.unwrap());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.head, HeadCheck::Matches);
    assert!(
        report
            .to_string()
            .contains("tail damaged and repaired at seq 6"),
        "{report}"
    );
}
