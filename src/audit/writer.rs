//! The durable appender.
//!
//! Each append: take the in-process mutex and an exclusive `flock` on the
//! file (other processes, e.g. a second tool, never interleave), reopen the
//! path if logrotate moved it (`create` mode), write the whole line with one
//! `O_APPEND` write (correct under `copytruncate` too), `fsync`, then record
//! the new chain head in the store so truncating the tail is detectable.
//! Only after all that does the caller get `Ok(seq)`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::Mutex;

use super::cpanel::render_cpanel_line;
use super::journald::JournaldSink;
use super::record::{open_line, AuditEvent, Record, GENESIS_HASH};
use crate::clock::{rfc3339, Clock};
use crate::config::{AuditFormat, Config};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("audit chain head in the store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("cannot serialise audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The most records written with one fsync.
pub const MAX_BATCH: usize = 2;

/// The most records the daemon leaves past the store's chain head: the
/// closing batch of a grant whose done mark (and head) waits for the
/// store's next write (`Store::finish_later`; a grant's intent takes it
/// along), plus one batch whose head is saved just after its fsync. A
/// crash keeps at most these, which the next open adopts (absent a failed
/// write to the store, which keeps its head for the next one); more than
/// that were not ours. `audit verify` accepts as many.
pub const MAX_UNSAVED: usize = 2 * MAX_BATCH;

/// The chain position after the last durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// Found at open: the live file's last record is behind the store's chain
/// head (its tail was truncated, or rewritten when the seqs are equal),
/// while the daemon was down. The daemon records `audit_tail_missing`.
/// (An empty live file is not reported: logrotate leaves one behind;
/// `audit verify` over the rotated files settles that case.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailMissing {
    pub file_last_seq: u64,
    pub store_head_seq: u64,
}

struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
}

struct State {
    head: ChainHead,
    open: Option<OpenFile>,
}

pub struct AuditLog {
    path: PathBuf,
    store: Store,
    clock: Arc<dyn Clock>,
    format: AuditFormat,
    journald: Option<JournaldSink>,
    tail_missing: Option<TailMissing>,
    state: Mutex<State>,
}

impl AuditLog {
    /// The hash-chained JSON log at `path`, without journald; see [`Self::open_with`].
    pub async fn open(
        path: &Path,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditError> {
        Self::open_with(path, store, clock, AuditFormat::Json, None).await
    }

    /// The log as configured: `audit.format`, and `audit.journald` sending
    /// to the journal socket under the configured root.
    pub async fn from_config(
        cfg: &Config,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditError> {
        let journald = cfg
            .audit
            .journald
            .then(|| JournaldSink::at(&cfg.host_path(Path::new(super::journald::SYSTEM_SOCKET))));
        Self::open_with(
            &cfg.audit_log_path(),
            store,
            clock,
            cfg.audit.format,
            journald,
        )
        .await
    }

    /// Prepares the log at `path` (directory 0700 and file 0600, created
    /// when missing) and loads the chain head from the store, adopting the
    /// file's last records when they are the store head's direct
    /// successors, at most [`MAX_UNSAVED`] (left by a crash before the
    /// store update).
    ///
    /// `AuditFormat::Cpanel` writes cPanel's classic lines instead of JSON:
    /// no chain in the file and the store head is left alone (sequence
    /// numbers continue in memory and still go to journald).
    pub async fn open_with(
        path: &Path,
        store: Store,
        clock: Arc<dyn Clock>,
        format: AuditFormat,
        journald: Option<JournaldSink>,
    ) -> Result<AuditLog, AuditError> {
        let stored = load_head(&store).await?;
        let path_buf = path.to_path_buf();
        let (open, tail) = tokio::task::spawn_blocking(move || -> Result<_, AuditError> {
            let open = open_for_append(&path_buf)?;
            let tail = last_records(&path_buf, MAX_UNSAVED)?;
            Ok((open, tail))
        })
        .await
        .map_err(|e| io_err(path, format!("open task failed: {e}")))??;
        let mut head = stored.unwrap_or_else(ChainHead::genesis);
        let last = tail.last().cloned();
        let tail_missing = match (&last, format) {
            (Some(rec), AuditFormat::Json)
                if rec.seq < head.seq
                    || (rec.seq == head.seq && rec.hash.as_deref() != Some(head.hash.as_str())) =>
            {
                tracing::warn!(
                    file_last_seq = rec.seq,
                    store_head_seq = head.seq,
                    path = %path.display(),
                    "audit log ends before the store's chain head: its tail is missing or rewritten"
                );
                Some(TailMissing {
                    file_last_seq: rec.seq,
                    store_head_seq: head.seq,
                })
            }
            _ => None,
        };
        if let (Some(rec), AuditFormat::Json) = (last, format) {
            if chains_from(&tail, &head) {
                if let Some(hash) = rec.hash.clone() {
                    head = ChainHead { seq: rec.seq, hash };
                    save_head(&store, &head).await?;
                }
            } else if rec.seq > head.seq {
                // Not ours to adopt: a crash leaves the file at most
                // MAX_UNSAVED records ahead. Continuing
                // from the store's head keeps whatever was appended behind
                // our back visible to `audit verify`.
                tracing::warn!(
                    file_last_seq = rec.seq,
                    store_head_seq = head.seq,
                    path = %path.display(),
                    "audit log holds records past the store's chain head that the daemon did not write"
                );
            }
        }
        Ok(AuditLog {
            path: path.to_path_buf(),
            store,
            clock,
            format,
            journald,
            tail_missing,
            state: Mutex::new(State {
                head,
                open: Some(open),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> AuditFormat {
        self.format
    }

    /// Whether the live file was found behind the store's head at open.
    pub fn tail_missing(&self) -> Option<TailMissing> {
        self.tail_missing
    }

    /// The current chain head (for verification against the file).
    pub async fn head(&self) -> ChainHead {
        self.state.lock().await.head.clone()
    }

    /// The ids of `wanted` (grants found `granting` at start-up) whose
    /// closing records this log holds at or before its chain head: those
    /// grants completed (see [`super::closing`]). Empty for cPanel's log
    /// format, which keeps no chain to trust.
    pub async fn completed_grants(
        &self,
        wanted: Vec<super::closing::GrantClosing>,
    ) -> Result<std::collections::BTreeSet<i64>, AuditError> {
        if self.format != AuditFormat::Json || wanted.is_empty() {
            return Ok(Default::default());
        }
        let head_seq = self.head().await.seq;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            super::closing::completed_grants(&path, head_seq, &wanted)
                .map_err(|e| io_err(&path, format!("searching for closing records: {e}")))
        })
        .await
        .map_err(|e| io_err(&self.path, format!("search task failed: {e}")))?
    }

    /// Appends one record durably; returns its sequence number.
    pub async fn append(&self, ev: AuditEvent) -> Result<u64, AuditError> {
        let seqs = self.append_all(std::slice::from_ref(&ev)).await?;
        Ok(seqs.last().copied().unwrap_or_default())
    }

    /// Appends consecutive records with one write, one fsync and one
    /// chain-head update per [`MAX_BATCH`] records (a grant's `key_added` +
    /// `grant` cost one durable append instead of two); each batch becomes
    /// durable whole or not at all. Returns their sequence numbers.
    pub async fn append_all(&self, events: &[AuditEvent]) -> Result<Vec<u64>, AuditError> {
        let mut seqs = Vec::with_capacity(events.len());
        for batch in events.chunks(MAX_BATCH) {
            seqs.extend(self.append_batch(batch).await?);
        }
        Ok(seqs)
    }

    /// Appends one batch (at most [`MAX_BATCH`] records) durably but leaves
    /// the chain head for the caller to commit with its own state change
    /// (`Store::finish`, or `Store::finish_later` for a grant), saving a
    /// commit: a grant's or revoke's closing records and its "done" mark go
    /// out as one append and at most one commit. Returns the head to save
    /// (`None` when the log's format keeps no chain). A crash before the
    /// caller's commit leaves this batch past the stored head, which the
    /// next open adopts (see [`MAX_UNSAVED`]).
    pub async fn append_batch_head_deferred(
        &self,
        events: &[AuditEvent],
    ) -> Result<Option<ChainHead>, AuditError> {
        self.check_deferred_batch(events)?;
        let mut state = self.state.lock().await;
        let (_, head) = self.write_batch(&mut state, events).await?;
        // The caller's save only moves the head forward, so a later
        // record's head saved first (under this lock) is never undone.
        Ok(head.filter(|_| self.format == AuditFormat::Json))
    }

    async fn append_batch(&self, events: &[AuditEvent]) -> Result<Vec<u64>, AuditError> {
        let mut state = self.state.lock().await;
        let (seqs, head) = self.write_batch(&mut state, events).await?;
        // Saved under the lock: heads reach the store in chain order.
        if let (Some(head), AuditFormat::Json) = (head, self.format) {
            save_head(&self.store, &head).await?;
        }
        Ok(seqs)
    }

    /// A deferred-head batch is one fsync's worth: the bound
    /// [`MAX_UNSAVED`] counts on it.
    fn check_deferred_batch(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        if events.len() > MAX_BATCH {
            return Err(io_err(
                &self.path,
                format!("a deferred-head batch holds at most {MAX_BATCH} records"),
            ));
        }
        Ok(())
    }

    /// [`append_batch_head_deferred`](Self::append_batch_head_deferred)
    /// for a caller on a blocking thread (never a runtime worker): the
    /// whole append runs on the caller's thread, without a hand-off to
    /// another one, for a grant or revoke whose host change was made there.
    pub fn append_batch_head_deferred_blocking(
        &self,
        events: &[AuditEvent],
    ) -> Result<Option<ChainHead>, AuditError> {
        self.check_deferred_batch(events)?;
        let mut state = self.state.blocking_lock();
        let Some(sealed) = self.seal(&state, events)? else {
            return Ok(None);
        };
        let written = write_durably(&self.path, state.open.take(), &sealed.bytes);
        let (_, head) = self.settle(&mut state, written, sealed.records, sealed.head)?;
        Ok(Some(head).filter(|_| self.format == AuditFormat::Json))
    }

    /// Writes and fsyncs one batch; returns the seqs and the new head
    /// (`None` for an empty batch), not yet saved in the store.
    async fn write_batch(
        &self,
        state: &mut State,
        events: &[AuditEvent],
    ) -> Result<(Vec<u64>, Option<ChainHead>), AuditError> {
        let Some(sealed) = self.seal(state, events)? else {
            return Ok((Vec::new(), None));
        };
        let open = state.open.take();
        let path = self.path.clone();
        let Sealed {
            bytes,
            records,
            head,
        } = sealed;
        let written = tokio::task::spawn_blocking(move || write_durably(&path, open, &bytes))
            .await
            .map_err(|e| io_err(&self.path, format!("write task failed: {e}")))?;
        let (seqs, head) = self.settle(state, written, records, head)?;
        Ok((seqs, Some(head)))
    }

    /// Chains and renders `events` after the current head (`None` for an
    /// empty batch).
    fn seal(&self, state: &State, events: &[AuditEvent]) -> Result<Option<Sealed>, AuditError> {
        let mut head = state.head.clone();
        let mut bytes = Vec::new();
        let mut records = Vec::with_capacity(events.len());
        for ev in events {
            let seq = head.seq + 1;
            let rec = Record::from_event(ev, seq, rfc3339(self.clock.now()), &head.hash);
            let (line, hash) = rec.seal()?;
            match self.format {
                AuditFormat::Json => bytes.extend_from_slice(line.as_bytes()),
                AuditFormat::Cpanel => {
                    bytes.extend_from_slice(render_cpanel_line(&rec).as_bytes());
                    bytes.push(b'\n');
                }
            }
            head = ChainHead {
                seq,
                hash: hash.clone(),
            };
            records.push((rec, hash));
        }
        if records.is_empty() {
            return Ok(None);
        }
        Ok(Some(Sealed {
            bytes,
            records,
            head,
        }))
    }

    /// After the write of a sealed batch: on success moves the head to
    /// `head` and reports the records; returns their seqs and the head.
    fn settle(
        &self,
        state: &mut State,
        written: Result<OpenFile, AuditError>,
        records: Vec<(Record, String)>,
        head: ChainHead,
    ) -> Result<(Vec<u64>, ChainHead), AuditError> {
        state.open = Some(written?);
        // The records are durable: move the head now, so a failing store
        // update below can never make the next record reuse these seqs.
        state.head = head.clone();
        let mut seqs = Vec::with_capacity(records.len());
        for (mut rec, hash) in records {
            seqs.push(rec.seq);
            if let Some(journald) = &self.journald {
                rec.hash = Some(hash);
                journald.emit(&rec);
            }
            tracing::debug!(seq = rec.seq, event = %rec.event, "audit record appended");
        }
        Ok((seqs, head))
    }
}

/// A batch rendered and chained, not yet written.
struct Sealed {
    bytes: Vec<u8>,
    records: Vec<(Record, String)>,
    head: ChainHead,
}

fn io_err(path: &Path, message: impl Into<String>) -> AuditError {
    AuditError::Io {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The chain head the store holds (None before the first record).
pub async fn load_head(store: &Store) -> Result<Option<ChainHead>, AuditError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(store.pool())
            .await?;
    Ok(row.map(|(seq, hash)| ChainHead {
        seq: seq.max(0) as u64,
        hash,
    }))
}

async fn save_head(store: &Store, head: &ChainHead) -> Result<(), AuditError> {
    sqlx::query(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(head.seq as i64)
    .bind(&head.hash)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Opens the log for appending, creating its directory (0700) and the file
/// (0600) when missing; refuses symlinks and non-regular files.
fn open_for_append(path: &Path) -> Result<OpenFile, AuditError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err(path, format!("cannot create directory: {e}")))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_err(path, format!("cannot set directory mode: {e}")))?;
        }
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err(path, format!("cannot open for appending: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| io_err(path, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(io_err(path, "is not a regular file"));
    }
    if meta.mode() & 0o077 != 0 {
        // A file made by logrotate with a looser mode: tighten it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err(path, format!("cannot set mode 0600: {e}")))?;
    }
    Ok(OpenFile {
        dev: meta.dev(),
        ino: meta.ino(),
        file,
    })
}

/// Whether the path still names the file we hold open (logrotate's
/// `create` mode renames it away and makes a new one).
fn still_current(path: &Path, open: &OpenFile) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.dev() == open.dev && m.ino() == open.ino,
        Err(_) => false,
    }
}

fn write_durably(path: &Path, open: Option<OpenFile>, line: &[u8]) -> Result<OpenFile, AuditError> {
    let open = match open {
        Some(o) if still_current(path, &o) => o,
        _ => open_for_append(path)?,
    };
    let locked = Flock::lock(open.file, FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err(path, format!("cannot lock: {e}")))?;
    // One write() of the whole line with O_APPEND: concurrent appenders
    // (who also lock) never interleave partial lines.
    let write_result = (&*locked).write_all(line).and_then(|_| locked.sync_data());
    let file = locked
        .unlock()
        .map_err(|(_, e)| io_err(path, format!("cannot unlock: {e}")))?;
    write_result.map_err(|e| io_err(path, format!("cannot write and fsync: {e}")))?;
    Ok(OpenFile {
        file,
        dev: open.dev,
        ino: open.ino,
    })
}

/// Up to `n` complete records at the end of the file, oldest first: the
/// last lines that parse and verify, stopping at the first that does not.
fn last_records(path: &Path, n: usize) -> Result<Vec<Record>, AuditError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e.to_string())),
    };
    let len = f.metadata().map_err(|e| io_err(path, e.to_string()))?.len();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start))
        .map_err(|e| io_err(path, e.to_string()))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)
        .map_err(|e| io_err(path, e.to_string()))?;
    let text = String::from_utf8_lossy(&tail);
    let mut out: Vec<Record> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map_while(|l| open_line(l).ok())
        .collect();
    out.reverse();
    Ok(out)
}

/// Whether the records at the end of `tail` continue the chain at `head`
/// directly: some record is head's successor and every later one follows
/// it (so at most [`MAX_UNSAVED`] records, the ones the daemon may have
/// left unsaved, are adopted).
fn chains_from(tail: &[Record], head: &ChainHead) -> bool {
    let Some(start) = tail
        .iter()
        .position(|r| r.seq == head.seq + 1 && r.prev == head.hash)
    else {
        return false;
    };
    tail[start..]
        .windows(2)
        .all(|w| w[1].seq == w[0].seq + 1 && Some(&w[1].prev) == w[0].hash.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::open_line;
    use crate::clock::ManualClock;

    async fn setup() -> (tempfile::TempDir, Store, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state/state.db"))
            .await
            .unwrap();
        let log = dir.path().join("logs/supportauth/audit.log");
        (dir, store, log)
    }

    fn lines(path: &Path) -> Vec<Record> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| open_line(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_chain_and_modes() {
        let (_d, store, path) = setup().await;
        let log = AuditLog::open(
            &path,
            store.clone(),
            Arc::new(ManualClock::new(1_800_000_000)),
        )
        .await
        .unwrap();
        assert_eq!(log.append(AuditEvent::new("a", "system")).await.unwrap(), 1);
        assert_eq!(log.append(AuditEvent::new("b", "system")).await.unwrap(), 2);
        let recs = lines(&path);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].prev, GENESIS_HASH);
        assert_eq!(recs[1].prev, recs[0].hash.clone().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(load_head(&store).await.unwrap().unwrap().seq, 2);
    }

    #[tokio::test]
    async fn chain_continues_across_restart_and_rotation() {
        let (_d, store, path) = setup().await;
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000));
        {
            let log = AuditLog::open(&path, store.clone(), clock.clone())
                .await
                .unwrap();
            log.append(AuditEvent::new("a", "system")).await.unwrap();
        }
        let log = AuditLog::open(&path, store.clone(), clock.clone())
            .await
            .unwrap();
        // logrotate `create`: move the file away; the next append starts a new one.
        let rotated = path.with_extension("log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.append(AuditEvent::new("b", "system")).await.unwrap();
        // logrotate `copytruncate`: copy then truncate in place.
        let rotated2 = path.with_extension("log.0");
        std::fs::copy(&path, &rotated2).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        log.append(AuditEvent::new("c", "system")).await.unwrap();
        let a = lines(&rotated);
        let b = lines(&rotated2);
        let c = lines(&path);
        assert_eq!((a[0].seq, b[0].seq, c[0].seq), (1, 2, 3));
        assert_eq!(b[0].prev, a[0].hash.clone().unwrap());
        assert_eq!(c[0].prev, b[0].hash.clone().unwrap());
    }

    #[tokio::test]
    async fn adopts_durable_record_missing_from_store() {
        let (_d, store, path) = setup().await;
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000));
        {
            let log = AuditLog::open(&path, store.clone(), clock.clone())
                .await
                .unwrap();
            log.append(AuditEvent::new("a", "system")).await.unwrap();
            log.append(AuditEvent::new("b", "system")).await.unwrap();
        }
        // Simulate a crash after the fsync of record 2 but before the head update.
        let first = lines(&path)[0].clone();
        save_head(
            &store,
            &ChainHead {
                seq: 1,
                hash: first.hash.unwrap(),
            },
        )
        .await
        .unwrap();
        let log = AuditLog::open(&path, store.clone(), clock).await.unwrap();
        assert_eq!(log.head().await.seq, 2);
        assert_eq!(log.append(AuditEvent::new("c", "system")).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn append_all_chains_several_records_in_one_write() {
        let (_d, store, path) = setup().await;
        let log = AuditLog::open(
            &path,
            store.clone(),
            Arc::new(ManualClock::new(1_800_000_000)),
        )
        .await
        .unwrap();
        log.append(AuditEvent::new("a", "system")).await.unwrap();
        let seqs = log
            .append_all(&[
                AuditEvent::new("b", "system"),
                AuditEvent::new("c", "system"),
            ])
            .await
            .unwrap();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(log.append_all(&[]).await.unwrap(), Vec::<u64>::new());
        assert_eq!(log.append(AuditEvent::new("d", "system")).await.unwrap(), 4);
        let recs = lines(&path);
        let events: Vec<&str> = recs.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(events, ["a", "b", "c", "d"]);
        for w in recs.windows(2) {
            assert_eq!(w[1].prev, w[0].hash.clone().unwrap());
        }
        let head = load_head(&store).await.unwrap().unwrap();
        assert_eq!((head.seq, Some(head.hash)), (4, recs[3].hash.clone()));
        let report =
            crate::audit::verify_files(std::slice::from_ref(&path), Some(log.head().await));
        assert!(report.is_ok(), "{report}");
    }

    #[tokio::test]
    async fn adopts_what_the_daemon_may_leave_unsaved_but_no_more() {
        let (_d, store, path) = setup().await;
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000));
        let first = {
            let log = AuditLog::open(&path, store.clone(), clock.clone())
                .await
                .unwrap();
            log.append(AuditEvent::new("a", "system")).await.unwrap();
            let first = log.head().await;
            for pair in [["b", "c"], ["d", "e"]] {
                log.append_all(&pair.map(|e| AuditEvent::new(e, "system")))
                    .await
                    .unwrap();
            }
            first
        };
        // A crash with a grant's done mark pending and the next batch's
        // head not saved: MAX_UNSAVED records past the stored head.
        save_head(&store, &first).await.unwrap();
        let log = AuditLog::open(&path, store.clone(), clock.clone())
            .await
            .unwrap();
        assert_eq!(log.head().await.seq, 1 + MAX_UNSAVED as u64);
        drop(log);
        // One more than that was not written by the daemon: not adopted.
        save_head(&store, &first).await.unwrap();
        let log = AuditLog::open(&path, store.clone(), clock.clone())
            .await
            .unwrap();
        log.append(AuditEvent::new("f", "system")).await.unwrap();
        drop(log);
        save_head(&store, &first).await.unwrap();
        let log = AuditLog::open(&path, store.clone(), clock).await.unwrap();
        assert_eq!(log.head().await.seq, 1, "{:?}", lines(&path).len());
    }

    /// The blocking append (a grant's closing records, written on the
    /// thread that changed the key file) chains like the async one, moves
    /// the in-memory head, and leaves the stored head to the caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_deferred_append_chains_like_the_async_one() {
        let (_d, store, path) = setup().await;
        let log = Arc::new(
            AuditLog::open(
                &path,
                store.clone(),
                Arc::new(ManualClock::new(1_800_000_000)),
            )
            .await
            .unwrap(),
        );
        log.append(AuditEvent::new("a", "system")).await.unwrap();
        let stored_before = load_head(&store).await.unwrap();
        let blocking = Arc::clone(&log);
        let head = tokio::task::spawn_blocking(move || {
            blocking.append_batch_head_deferred_blocking(&[
                AuditEvent::new("key_added", "system"),
                AuditEvent::new("grant", "system"),
            ])
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        assert_eq!(head.seq, 3);
        assert_eq!(log.head().await, head);
        assert_eq!(
            load_head(&store).await.unwrap(),
            stored_before,
            "left to the caller"
        );
        let three = [
            AuditEvent::new("x", "system"),
            AuditEvent::new("y", "system"),
            AuditEvent::new("z", "system"),
        ];
        let blocking = Arc::clone(&log);
        let too_many = tokio::task::spawn_blocking(move || {
            blocking.append_batch_head_deferred_blocking(&three)
        })
        .await
        .unwrap();
        assert!(too_many.is_err(), "at most one batch per deferred head");
        log.append(AuditEvent::new("b", "system")).await.unwrap();
        let recs = lines(&path);
        let events: Vec<&str> = recs.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(events, ["a", "key_added", "grant", "b"]);
        let report =
            crate::audit::verify_files(std::slice::from_ref(&path), Some(log.head().await));
        assert!(report.is_ok(), "{report}");
    }

    #[tokio::test]
    async fn concurrent_appends_never_interleave() {
        let (_d, store, path) = setup().await;
        let log = Arc::new(
            AuditLog::open(&path, store, Arc::new(ManualClock::new(1_800_000_000)))
                .await
                .unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..40 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(
                    AuditEvent::new(format!("e{i}"), "system")
                        .details(serde_json::json!({"pad": "x".repeat(5000)})),
                )
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let recs = lines(&path);
        assert_eq!(recs.len(), 40);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1);
        }
    }

    #[tokio::test]
    async fn reports_a_truncated_tail_at_open() {
        let (_d, store, path) = setup().await;
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000));
        {
            let log = AuditLog::open(&path, store.clone(), clock.clone())
                .await
                .unwrap();
            assert_eq!(log.tail_missing(), None);
            for e in ["a", "b", "c"] {
                log.append(AuditEvent::new(e, "system")).await.unwrap();
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        std::fs::write(&path, format!("{first}\n")).unwrap();
        let log = AuditLog::open(&path, store.clone(), clock).await.unwrap();
        assert_eq!(
            log.tail_missing(),
            Some(TailMissing {
                file_last_seq: 1,
                store_head_seq: 3
            })
        );
        // The chain continues from the store's head, never reusing seqs.
        assert_eq!(log.append(AuditEvent::new("d", "system")).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn refuses_symlinked_log() {
        let (d, store, path) = setup().await;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let r = AuditLog::open(&path, store, Arc::new(ManualClock::new(0))).await;
        assert!(r.is_err());
    }
}
