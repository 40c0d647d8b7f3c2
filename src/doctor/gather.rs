//! Reads the host into [`Facts`], changing nothing: `sshd -T`, the
//! firewall tools' listings, the audit log, the store (read-only), file
//! modes, the socket and the portal's TCP port.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::checks::PROBE_TICKET;
use super::facts::*;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::engine::grant::login_facts;
use crate::engine::Host;
use crate::firewall::Whitelist;
use crate::planner::LoginRequest;
use crate::types::{SupportIp, TicketId};

/// Stands in for "any address" when no support address is configured
/// (TEST-NET-1, RFC 5737).
const STAND_IN: &str = "192.0.2.1";

pub fn gather(cfg: &Config) -> Facts {
    let whitelist = Arc::new(Whitelist::detect(cfg));
    let firewall = FirewallFacts {
        configured: cfg.firewall.backends.clone(),
        backends: whitelist.observe_each(),
    };
    let host = Host::from_config(cfg, whitelist);
    let store = store(cfg);
    let connected = matches!(&store.opened, Some(Ok(i)) if i.portal_connected);
    Facts {
        now: SystemClock.now(),
        euid: nix::unistd::geteuid().as_raw(),
        sshd: sshd(cfg, &host),
        firewall,
        audit: audit(cfg),
        store,
        listen: listen(cfg),
        portal: portal(cfg, connected),
    }
}

fn sshd(cfg: &Config, host: &Host) -> SshdFacts {
    let configured: Vec<SupportIp> = cfg.access.support_ips.clone();
    let (ips, stand_in) = if configured.is_empty() {
        (SupportIp::parse(STAND_IN).into_iter().collect(), true)
    } else {
        (configured.clone(), false)
    };
    let probes = match TicketId::parse(PROBE_TICKET) {
        Ok(ticket) => ips
            .iter()
            .map(|ip| AddressProbe {
                address: ip.to_string(),
                stand_in,
                facts: login_facts(
                    host,
                    &LoginRequest::Automatic,
                    ticket,
                    std::slice::from_ref(ip),
                ),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    SshdFacts {
        support_ips: configured.iter().map(ToString::to_string).collect(),
        config_file: cfg.host_path(&cfg.paths.sshd_config),
        probes,
    }
}

fn audit(cfg: &Config) -> AuditFacts {
    let log = cfg.audit_log_path();
    let head = crate::audit::cli::read_store_head(&cfg.database_path());
    let stored_seq = head.as_ref().ok().and_then(|h| h.as_ref().map(|h| h.seq));
    let verify = head.and_then(|head| {
        let files = crate::audit::files::discover(&log)
            .map_err(|e| format!("cannot list its directory: {e}"))?;
        let report = crate::audit::verify::verify_files(&files, head);
        Ok((report.is_ok(), report.to_string()))
    });
    AuditFacts {
        exists: log.exists(),
        stored_seq,
        log,
        cpanel_format: cfg.audit.format == crate::config::AuditFormat::Cpanel,
        verify,
    }
}

fn owner_mode(p: &Path) -> Option<(u32, u32)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.uid(), m.mode()))
}

fn store(cfg: &Config) -> StoreFacts {
    let db = cfg.database_path();
    let opened = db.exists().then(|| read_store(&db));
    StoreFacts {
        dir: owner_mode(&cfg.state_dir()),
        db,
        opened,
        known_migrations: crate::store::MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect(),
    }
}

/// Opens the store read-only beside a running daemon (as `audit verify`
/// does: immutable when no WAL exists, so SQLite creates no side files).
fn read_store(db: &Path) -> Result<StoreInfo, String> {
    let db = db.to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async move {
        let mut conn = crate::store::open_read_only(&db).await?;
        let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT max(t) FROM (SELECT max(created_at) AS t FROM grants \
             UNION ALL SELECT max(ended_at) FROM grants)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap_or(None);
        let portal_connected: bool =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM portal_session")
                .fetch_one(&mut conn)
                .await
                .map(|n| n > 0)
                .unwrap_or(false);
        Ok(StoreInfo {
            integrity: integrity.join("; "),
            applied_migrations: applied,
            newest_time: newest,
            portal_connected,
        })
    })
}

fn listen(cfg: &Config) -> ListenFacts {
    let socket = cfg.socket_path();
    let socket_file = std::fs::symlink_metadata(&socket).ok().map(|m| {
        use std::os::unix::fs::FileTypeExt;
        (m.file_type().is_socket(), m.uid(), m.mode())
    });
    let tls_key = cfg.listen.tls_key.as_ref().map(|k| {
        let key = cfg.host_path(k);
        let mode = std::fs::metadata(&key).ok().map(|m| m.mode());
        (key, mode)
    });
    ListenFacts {
        socket_dir: socket.parent().and_then(owner_mode),
        answers: std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        socket_file,
        socket,
        socket_mode: cfg.socket_mode(),
        tcp: cfg.listen.tcp.clone(),
        tls_key,
    }
}

fn portal(cfg: &Config, connected: bool) -> PortalFacts {
    let base_url = crate::portal::base_url(cfg);
    let reachable = connected.then(|| reach(&base_url, cfg.portal.connect_timeout_secs));
    PortalFacts {
        base_url,
        connected,
        reachable,
    }
}

/// A TCP connection to the portal's host and port (no request is sent).
fn reach(base_url: &str, timeout_secs: u64) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let url = crate::portal::url::BaseUrl::parse(base_url)?;
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let timeout = Duration::from_secs(timeout_secs.clamp(1, 10));
    let mut last = format!("{} has no address", url.host);
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_store(db: &Path) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = crate::store::Store::open(db).await.unwrap();
            s.close().await;
        });
    }

    #[test]
    fn a_fresh_store_reads_sound_and_fully_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: dir.path().to_path_buf(),
            ..Config::default()
        };
        make_store(&cfg.database_path());
        let facts = store(&cfg);
        let info = facts.opened.clone().unwrap().unwrap();
        assert_eq!(info.integrity, "ok");
        assert_eq!(info.applied_migrations, facts.known_migrations);
        assert!(!info.portal_connected);
        assert_eq!(
            crate::doctor::checks::store(&facts).status,
            crate::doctor::Status::Ok
        );
    }

    #[test]
    fn a_damaged_store_fails() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state").join("state.db");
        make_store(&db);
        // Fold the WAL in, then overwrite every page after the first.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query("PRAGMA journal_mode = DELETE")
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        });
        let mut bytes = std::fs::read(&db).unwrap();
        assert!(bytes.len() > 4096, "{}", bytes.len());
        for b in &mut bytes[4096..] {
            *b = 0xA5;
        }
        std::fs::write(&db, &bytes).unwrap();
        let facts = StoreFacts {
            db: db.clone(),
            dir: None,
            opened: Some(read_store(&db)),
            known_migrations: vec![],
        };
        let c = crate::doctor::checks::store(&facts);
        assert_eq!(c.status, crate::doctor::Status::Fail, "{c:?}");
    }
}
