//! The SQLite state store: open, lock, migrate.
//!
//! One daemon owns a state directory at a time (an exclusive `flock` on
//! `daemon.lock`). The directory is 0700 and the database 0600; WAL and a
//! busy timeout let the CLI's read-only commands run beside the daemon.

pub mod audit_backlog;
pub mod grants;
pub mod logins;
pub mod notify;
pub mod portal_session;
pub mod token_table;
pub mod tokens;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

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
/// state directory's lock; the CLI goes through the API). SQLite is the one
/// source of truth for grants; the token table is also kept in memory for
/// authentication, written through (see `token_table`). Every commit is
/// fsynced (`synchronous=FULL`): nothing the daemon answered for is ever
/// lost on a power cut.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    tokens: Arc<token_table::TokenTable>,
}

/// Held for the daemon's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    _lock: Flock<File>,
}

/// Creates the state directory (0700) if needed and refuses one that is a
/// symlink, not a directory, not owned by us, or writable by others.
pub fn ensure_private_dir(path: &Path) -> Result<(), StoreError> {
    crate::system::safefile::ensure_private_dir(path).map_err(|e| StoreError::Directory {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
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

/// A read-only connection for the tools that run beside the daemon
/// (`audit verify`, `doctor`); it never creates, migrates or writes. With
/// no WAL file no daemon has the database open, so it is read as
/// immutable and SQLite creates no -wal/-shm files; with one, a plain
/// read-only connection shares the daemon's WAL.
pub async fn open_read_only(db: &Path) -> Result<sqlx::SqliteConnection, String> {
    use sqlx::ConnectOptions;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let immutable = !Path::new(&wal).exists();
    SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| e.to_string())?
        .filename(db)
        .read_only(true)
        .immutable(immutable)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("cannot open {} read-only: {e}", db.display()))
}

/// Write transactions: `BEGIN IMMEDIATE` on one pooled connection, the
/// statements, `COMMIT`; on any error the connection is closed instead of
/// going back to the pool (SQLite rolls back on close). Why not sqlx's
/// `Transaction`: when COMMIT failed on a full or failing disk, the pooled
/// connection kept sqlx's transaction depth, so the next "transaction" on
/// it was a deferred SAVEPOINT that ran into SQLITE_BUSY_SNAPSHOT ("database
/// is locked", code 517) and kept the daemon from recovering once the disk
/// healed (issue 16, failing-disk sweep). IMMEDIATE takes the write lock
/// first, waiting out `busy_timeout`, where a deferred BEGIN's snapshot
/// fails at once when another connection commits meanwhile.
pub(crate) struct WriteTx(sqlx::pool::PoolConnection<sqlx::Sqlite>);

impl WriteTx {
    pub(crate) async fn begin(pool: &SqlitePool) -> Result<WriteTx, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(e);
        }
        Ok(WriteTx(conn))
    }

    pub(crate) fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.0
    }

    /// Commits; the result of `body` decides first: an error closes the
    /// connection (rolled back), nothing half-done returns to the pool.
    pub(crate) async fn finish<T>(
        mut self,
        body: Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let done = match body {
            Ok(v) => sqlx::query("COMMIT").execute(&mut *self.0).await.map(|_| v),
            Err(e) => Err(e),
        };
        if done.is_err() {
            self.0.close_on_drop();
        }
        done
    }
}

/// Runs a write script (`BEGIN IMMEDIATE; <statements>; [SELECT ...;]
/// COMMIT`) as one request to the connection's SQLite thread, where a
/// [`WriteTx`] makes one per statement; returns the rows its SELECTs
/// yield. Parameters are numbered (`?1`..) across the whole script. On
/// any error the connection is closed (SQLite rolls back), as with
/// [`WriteTx`].
pub(crate) async fn write_script<'q>(
    pool: &SqlitePool,
    script: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let rows = script.fetch_all(&mut *conn).await;
    if rows.is_err() {
        conn.close_on_drop();
    }
    rows
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
        // WAL side files inherit the umask; tighten them too.
        for suffix in ["-wal", "-shm"] {
            let mut p = db_path.as_os_str().to_owned();
            p.push(suffix);
            let _ = crate::system::safefile::restrict_mode(Path::new(&p), 0o600);
        }
        let tokens = Arc::new(token_table::TokenTable::load(&pool).await?);
        Ok(Store { pool, tokens })
    }

    /// The raw pool, for tests and benchmarks that must reach under the
    /// named methods (to break a table on purpose, say). The daemon's own
    /// code outside `store/` never uses it.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn tokens(&self) -> &token_table::TokenTable {
        &self.tokens
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
