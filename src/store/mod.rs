//! The SQLite state store: open, lock, migrate.
//!
//! One daemon owns a state directory at a time (an exclusive `flock` on
//! `daemon.lock`). The directory is 0700 and the database 0600; WAL and a
//! busy timeout let the CLI's read-only commands run beside the daemon.

pub mod grants;
pub mod live;
pub mod token_table;
pub mod tokens;

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, SqlitePool};
use tokio::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {message}")]
    Directory { path: PathBuf, message: String },
    #[error("another supportauth daemon is already running on {path} (its lock is held)")]
    Locked { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// Embedded migrations from `migrations/`, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Only this process opens the store while it runs (the daemon holds the
/// state directory's lock; the CLI goes through the API), so what it keeps
/// in memory — the token table and the live grants — is authoritative as
/// long as every write goes through these types (see `token_table` and
/// `live`).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The connection a grant's or revoke's intent commits through
    /// (`synchronous=FULL`). It is kept out of the pool: sqlx pings a
    /// pooled connection every time it goes back, a round trip to SQLite's
    /// thread that would compete for the CPU with the rest of the grant.
    intents: Dedicated,
    /// One connection with `synchronous=NORMAL`: its commits reach the WAL
    /// (surviving a crash of this process) but are not fsynced on their
    /// own; the next fsynced commit takes them along. Used only for the
    /// "done" mark of a grant or revoke, whose intent was fsynced before
    /// the host was touched and whose audit records are already durable,
    /// so a power cut losing the mark leaves the intent, which the
    /// reconciler finishes (revoke) or completes from those records
    /// (grant).
    relaxed: Dedicated,
    tokens: Arc<token_table::TokenTable>,
    /// The live grants, in memory (see [`live::LiveGrants`]).
    live: live::LiveGrants,
}

/// Held for the daemon's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    _lock: Flock<File>,
}

/// Creates the state directory (0700) if needed and refuses one that is a
/// symlink, not a directory, not owned by us, or writable by others.
pub fn ensure_private_dir(path: &Path) -> Result<(), StoreError> {
    let err = |message: String| StoreError::Directory {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| err(format!("cannot create: {e}")))?;
            // recursive() applies the mode to the last component only if umask allows it.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(format!("cannot set mode 0700: {e}")))?;
        }
        Err(e) => return Err(err(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(err("is not a directory (symlinks are refused)".into()));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(err(format!("is owned by uid {}, not by us", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(err(format!(
            "is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

impl DaemonLock {
    /// Takes the exclusive lock of a state directory, failing at once if
    /// another daemon holds it.
    pub fn acquire(lock_path: &Path) -> Result<DaemonLock, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(lock_path)
            .map_err(|source| StoreError::Lock {
                path: lock_path.to_path_buf(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DaemonLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Locked {
                path: lock_path.to_path_buf(),
            }),
            Err((_, e)) => Err(StoreError::Lock {
                path: lock_path.to_path_buf(),
                source: e.into(),
            }),
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database at `db_path`, with mode 0600,
    /// WAL, a busy timeout, and every migration applied.
    pub async fn open(db_path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = db_path.parent() {
            ensure_private_dir(dir)?;
        }
        // Create the file ourselves so it is 0600 from its first byte.
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(db_path)
            .map_err(|e| StoreError::Directory {
                path: db_path.to_path_buf(),
                message: format!("cannot create database file: {e}"),
            })?;
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(db_path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // No liveness ping before each use: a local SQLite file cannot drop
        // the connection, and the ping doubles every query's thread hops.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let intents = Dedicated::connect(&opts).await?;
        let relaxed = Dedicated::connect(&opts.synchronous(SqliteSynchronous::Normal)).await?;
        // WAL side files inherit the umask; tighten them too.
        for suffix in ["-wal", "-shm"] {
            let mut p = db_path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
        let tokens = Arc::new(token_table::TokenTable::load(&pool).await?);
        let live = live::LiveGrants::load(&pool).await?;
        Ok(Store {
            pool,
            intents,
            relaxed,
            tokens,
            live,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// See [`Store::intents`].
    pub(crate) fn intents(&self) -> &Dedicated {
        &self.intents
    }

    /// See [`Store::relaxed`]: only for marks whose loss on a power cut
    /// the reconciler repairs from a durable intent.
    pub(crate) fn relaxed(&self) -> &Dedicated {
        &self.relaxed
    }

    fn tokens(&self) -> &token_table::TokenTable {
        &self.tokens
    }

    fn live(&self) -> &live::LiveGrants {
        &self.live
    }

    pub async fn close(&self) {
        if let Err(e) = self.flush_done_marks().await {
            // The closing audit records complete these grants at the next
            // start (`Repair::CompleteGranting`).
            tracing::error!(error = %e, "cannot write pending grant done marks at close");
        }
        self.intents.close().await;
        self.relaxed.close().await;
        self.pool.close().await;
    }
}

/// A connection of the store's own, outside the pool, used by one caller
/// at a time.
#[derive(Clone, Debug)]
pub(crate) struct Dedicated(Arc<Mutex<Option<SqliteConnection>>>);

impl Dedicated {
    async fn connect(opts: &SqliteConnectOptions) -> Result<Dedicated, StoreError> {
        let conn = opts.connect().await?;
        Ok(Dedicated(Arc::new(Mutex::new(Some(conn)))))
    }

    /// The connection, once the previous user is done with it; an error
    /// after [`Store::close`].
    pub(crate) async fn lock(&self) -> Result<DedicatedGuard<'_>, StoreError> {
        let guard = self.0.lock().await;
        if guard.is_none() {
            return Err(StoreError::Sql(sqlx::Error::PoolClosed));
        }
        Ok(DedicatedGuard(guard))
    }

    /// Drops a connection left in an unknown state (a failed rollback):
    /// later users get an error rather than a half-done transaction.
    pub(crate) fn discard(guard: DedicatedGuard<'_>) {
        let mut guard = guard.0;
        guard.take();
    }

    async fn close(&self) {
        if let Some(conn) = self.0.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

pub(crate) struct DedicatedGuard<'a>(MutexGuard<'a, Option<SqliteConnection>>);

impl std::ops::Deref for DedicatedGuard<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        // `lock` only hands out a guard over a connection.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked in Dedicated::lock"))
    }
}

impl std::ops::DerefMut for DedicatedGuard<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("checked in Dedicated::lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_private_database_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let db = state.join("state.db");
        let store = Store::open(&db).await.unwrap();
        let mode = std::fs::metadata(&db).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(&state).unwrap().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM grants")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.lock");
        let first = DaemonLock::acquire(&p).unwrap();
        assert!(matches!(
            DaemonLock::acquire(&p),
            Err(StoreError::Locked { .. })
        ));
        drop(first);
        DaemonLock::acquire(&p).unwrap();
    }

    #[test]
    fn refuses_symlinked_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(ensure_private_dir(&link).is_err());
    }
}
