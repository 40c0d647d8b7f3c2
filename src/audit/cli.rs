//! `supportauth audit verify|show`: the auditor's commands (synchronous; a
//! clap front end calls these and exits with the code they return).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::files::discover;
use super::show::{show as show_records, Filter, ShowFormat};
use super::verify::verify_files;
use super::writer::ChainHead;
use crate::config::{AuditFormat, Config};

/// Reads the chain head from the state database without creating,
/// migrating or writing anything (`None` if the database or the head does
/// not exist yet). Runs on its own thread and runtime, so it works whether
/// or not the caller is inside a tokio runtime.
pub fn read_store_head(db: &Path) -> Result<Option<ChainHead>, String> {
    if !db.exists() {
        return Ok(None);
    }
    let db = db.to_path_buf();
    let worker = std::thread::spawn(move || -> Result<Option<ChainHead>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        rt.block_on(async move {
            let mut conn = crate::store::open_read_only(&db).await?;
            let row: Result<Option<(i64, String)>, sqlx::Error> =
                sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_optional(&mut conn)
                    .await;
            match row {
                Ok(row) => Ok(row.map(|(seq, hash)| ChainHead {
                    seq: seq.max(0) as u64,
                    hash,
                })),
                // A database the daemon never migrated has no head yet.
                Err(e) if e.to_string().contains("no such table") => Ok(None),
                Err(e) => Err(format!(
                    "cannot read the chain head from {}: {e}",
                    db.display()
                )),
            }
        })
    });
    worker
        .join()
        .map_err(|_| "the head reader thread failed".to_string())?
}

/// The configured log and its rotated siblings (none when its directory
/// does not exist: nothing was ever logged here).
fn configured_files(cfg: &Config) -> Result<Vec<PathBuf>, String> {
    let log = cfg.audit_log_path();
    match discover(&log) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        found => found,
    }
    .map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the log is root's: run as root, or read it through the daemon with \
             --url http://127.0.0.1:2090 and a token with audit-read)"
        } else {
            ""
        };
        format!(
            "cannot list the audit log directory of {}: {e}{hint}",
            log.display()
        )
    })
}

/// `audit verify [FILES...]`: prints `OK: ...` (exit 0) or
/// `FAIL: <file>:<line>: <why>` (exit 1). Without files, the configured log
/// and its rotated siblings. The store's chain head is compared when the
/// configured log is among the files verified.
pub fn verify(cfg: &Config, files: &[PathBuf]) -> ExitCode {
    let live = cfg.audit_log_path();
    let (files, check_head) = if files.is_empty() {
        match configured_files(cfg) {
            Ok(f) => (f, true),
            Err(e) => {
                println!("FAIL: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let live_canon = canon(&live);
        let includes_live = files.iter().any(|f| canon(f) == live_canon);
        (files.to_vec(), includes_live)
    };
    if cfg.audit.format == AuditFormat::Cpanel {
        eprintln!(
            "note: audit.format = \"cpanel\": classic lines carry no hash chain; only JSON records can be verified"
        );
    }
    let head = if check_head {
        match read_store_head(&cfg.database_path()) {
            Ok(h) => h,
            Err(e) => {
                println!("FAIL: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if files.is_empty() {
        return match head {
            // Records were written (the store's chain head says so) and
            // the log is gone: that is what verify is for.
            Some(h) => {
                println!(
                    "FAIL: {}: no audit log, but the state database says {} record(s) were written; the log was removed or moved",
                    live.display(),
                    h.seq
                );
                ExitCode::FAILURE
            }
            None => {
                println!("{}", no_log_here(cfg));
                ExitCode::SUCCESS
            }
        };
    }
    let report = verify_files(&files, head);
    println!("{report}");
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `audit verify`/`show` say when this host has no audit log: not an
/// alarm, and where else to look.
fn no_log_here(cfg: &Config) -> String {
    format!(
        "No audit log at {} on this host: nothing has been recorded here yet. A daemon \
         with another configuration is read with --config PATH, a running daemon's log \
         with --url http://127.0.0.1:2090 (token with audit-read).",
        cfg.audit_log_path().display()
    )
}

/// `audit show`: the configured log's records matching the filter, as a
/// table, JSON lines or cPanel's classic lines. Exit 0, or 1 on a read
/// error.
pub fn show(cfg: &Config, filter: &Filter, format: ShowFormat) -> ExitCode {
    let files = match configured_files(cfg) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if files.is_empty() {
        eprintln!("{}", no_log_here(cfg));
        return ExitCode::SUCCESS;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let stderr = std::io::stderr();
    let mut warn = stderr.lock();
    let result = show_records(&files, filter, format, &mut out, &mut warn).and_then(|s| {
        out.flush()?;
        Ok(s)
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(warn, "error: {e}");
            ExitCode::FAILURE
        }
    }
}
