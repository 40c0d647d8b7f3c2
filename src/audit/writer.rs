//! The durable appender.
//!
//! Each append, under the in-process mutex: save a chain head the store
//! may not hold yet (below); reopen the path if logrotate moved it
//! (`create` mode), repairing a torn tail of the file found there (see
//! [`super::tail`]); take an exclusive `flock` on the file (other processes
//! never interleave); write the whole batch with one `O_APPEND` write
//! (correct under `copytruncate` too; cut back off if the write or its
//! fsync fails), `fdatasync`, then save the new chain head in the store.
//! Only after all that does the caller get `Ok`.
//!
//! # The bound
//!
//! The log is never more than one batch ([`MAX_BATCH`] records) past the
//! chain head the store holds. [`AuditLog::append_closing`] leaves its
//! head to the caller, who commits it with its done mark in one store
//! transaction and then calls [`AuditLog::head_committed`]; any append
//! that finds a head not known to be saved saves it first and writes
//! nothing if that fails (a failed save after an append leaves the head
//! for the next append to retry). So a crash leaves at most one batch past
//! the stored head, which the next open adopts when it chains from it;
//! `audit verify` reports that many as pending and fails on more. The
//! store only moves the head forward: a caller's late commit of an older
//! head never undoes a newer one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::Mutex;

use super::cpanel::render_cpanel_line;
use super::journald::JournaldSink;
use super::record::{AuditEvent, Record, GENESIS_HASH};
use super::tail::{self, TailRepair};
use crate::clock::{rfc3339, Clock};
use crate::config::{AuditFormat, Config};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("audit chain head in the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot serialise audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The most records written with one fsync, and the most the log is ever
/// past the chain head the store holds.
pub const MAX_BATCH: usize = 2;

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
    /// After the last durable record.
    head: ChainHead,
    open: Option<OpenFile>,
    /// Damaged tails cut from the file whose records are not written yet.
    repairs: Vec<TailRepair>,
    /// Records whose append failed, oldest first, kept (in the store too)
    /// until the log can be written again.
    kept: Vec<Kept>,
    /// Records dropped because `kept` was full, reported when it drains.
    dropped: u64,
}

/// A record waiting for the log; `id` is its row in the store's backlog
/// (`None` when the store could not take it either).
struct Kept {
    id: Option<i64>,
    event: AuditEvent,
}

/// The most records kept while the log cannot be written: a failing disk
/// must not make memory grow without bound. Past it, records are counted
/// and the count is recorded when the log works again.
pub const MAX_KEPT: usize = 10_000;

pub struct AuditLog {
    path: PathBuf,
    store: Store,
    clock: Arc<dyn Clock>,
    format: AuditFormat,
    journald: Option<JournaldSink>,
    tail_missing: Option<TailMissing>,
    /// The newest head seq known to be in the store.
    saved_seq: AtomicU64,
    /// How many records wait in `State::kept` (read without the lock).
    kept_len: AtomicU64,
    /// Notified when records start to wait, for whoever retries them.
    kept_notify: Arc<tokio::sync::Notify>,
    /// The seq of the last record written and fsynced: readers of the file
    /// (the notifier) read no further, and wake when it moves.
    durable: tokio::sync::watch::Sender<u64>,
    state: Mutex<State>,
    /// The daemon's metrics: every durable record is counted here.
    metrics: Arc<crate::metrics::Metrics>,
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
    /// when missing; a symlink is refused) and loads the chain head from
    /// the store, adopting the file's last records when they are the store
    /// head's direct successors, at most [`MAX_BATCH`] (left by a crash
    /// before the head reached the store; when the live file holds no
    /// record, those of the newest plain rotated file, where the chain then
    /// ends). A torn or damaged tail is cut and saved aside (see
    /// [`super::tail`]) and its `audit_tail_damaged` record written here,
    /// before anything else.
    ///
    /// `AuditFormat::Cpanel` writes cPanel's classic lines instead of JSON:
    /// no chain in the file and the store head is left alone (sequence
    /// numbers continue in memory and still go to journald); a partial last
    /// line is ended before the first append.
    pub async fn open_with(
        path: &Path,
        store: Store,
        clock: Arc<dyn Clock>,
        format: AuditFormat,
        journald: Option<JournaldSink>,
    ) -> Result<AuditLog, AuditError> {
        let stored = load_head(&store).await?;
        let start = stored.clone().unwrap_or_else(ChainHead::genesis);
        let path_buf = path.to_path_buf();
        let now = clock.now();
        let (open, checked) = tokio::task::spawn_blocking(move || {
            let open = open_for_append(&path_buf)?;
            check_chain_end(&path_buf, open, format, now, &start)
        })
        .await
        .map_err(|e| io_err(path, format!("open task failed: {e}")))??;
        let head = checked.head;
        let tail_missing = match (checked.records.last(), format, &stored) {
            (Some(rec), AuditFormat::Json, Some(stored))
                if rec.seq < stored.seq
                    || (rec.seq == stored.seq
                        && rec.hash.as_deref() != Some(stored.hash.as_str())) =>
            {
                tracing::warn!(
                    file_last_seq = rec.seq,
                    store_head_seq = stored.seq,
                    path = %path.display(),
                    "audit log ends before the store's chain head: its tail is missing or rewritten"
                );
                Some(TailMissing {
                    file_last_seq: rec.seq,
                    store_head_seq: stored.seq,
                })
            }
            _ => None,
        };
        if let (Some(rec), AuditFormat::Json) = (checked.records.last(), format) {
            if rec.seq > head.seq {
                // Not ours to adopt: a crash leaves the file at most one
                // batch ahead. Continuing from the store's head keeps
                // whatever was appended behind our back visible to
                // `audit verify`.
                tracing::warn!(
                    file_last_seq = rec.seq,
                    store_head_seq = head.seq,
                    path = %path.display(),
                    "audit log holds records past the store's chain head that the daemon did not write"
                );
            }
        }
        let kept = load_kept(&store).await;
        let pending = !checked.repairs.is_empty() || !kept.is_empty();
        let log = AuditLog {
            path: path.to_path_buf(),
            store,
            clock,
            format,
            journald,
            tail_missing,
            saved_seq: AtomicU64::new(stored.map_or(0, |h| h.seq)),
            kept_len: AtomicU64::new(kept.len() as u64),
            kept_notify: Arc::new(tokio::sync::Notify::new()),
            durable: tokio::sync::watch::Sender::new(head.seq),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            state: Mutex::new(State {
                head,
                open: Some(open),
                repairs: checked.repairs,
                kept,
                dropped: 0,
            }),
        };
        // A log that cannot be written yet (a full disk) must not keep the
        // daemon from starting: revokes go on, and these wait.
        if pending {
            if let Err(e) = log.flush_kept().await {
                tracing::error!(error = %e, "audit records wait for the log to be writable");
            }
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metrics registry this log counts its records into (the
    /// daemon's one registry, see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
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

    /// Appends one record durably, its chain head saved in the store;
    /// returns its sequence number.
    pub async fn append(&self, ev: AuditEvent) -> Result<u64, AuditError> {
        let seqs = self.append_all(std::slice::from_ref(&ev)).await?;
        Ok(seqs.last().copied().unwrap_or_default())
    }

    /// Appends consecutive records with one write, one fsync and one
    /// chain-head save per [`MAX_BATCH`] records (a grant's `key_added` +
    /// `grant` cost one durable append instead of two); each batch becomes
    /// durable whole or not at all. Returns their sequence numbers.
    pub async fn append_all(&self, events: &[AuditEvent]) -> Result<Vec<u64>, AuditError> {
        let mut seqs = Vec::with_capacity(events.len());
        for batch in events.chunks(MAX_BATCH) {
            seqs.extend(self.append_batch(batch, true).await?.0);
        }
        Ok(seqs)
    }

    /// Appends a grant's or revoke's closing records (at most
    /// [`MAX_BATCH`]) durably, leaving their chain head unsaved: the caller
    /// commits it with its done mark in one store transaction, then calls
    /// [`Self::head_committed`]. Returns the head (`None` for cPanel's
    /// format, which keeps no chain, or for no records). Until then (or if
    /// that commit fails), the next append saves it first.
    pub async fn append_closing(
        &self,
        events: &[AuditEvent],
    ) -> Result<Option<ChainHead>, AuditError> {
        if events.len() > MAX_BATCH {
            return Err(io_err(
                &self.path,
                format!("closing records are one batch: at most {MAX_BATCH}"),
            ));
        }
        let (_, head) = self.append_batch(events, false).await?;
        Ok(head.filter(|_| self.format == AuditFormat::Json))
    }

    /// How many records wait for the log (see [`MAX_KEPT`]).
    pub fn kept(&self) -> u64 {
        self.kept_len.load(Ordering::SeqCst)
    }

    /// Notified whenever an append fails and its records start to wait.
    pub fn kept_notify(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.kept_notify)
    }

    /// Appends the records that wait (a repair of a torn tail, records
    /// whose append failed) now; returns how many still wait.
    pub async fn flush_kept(&self) -> Result<u64, AuditError> {
        self.append_batch(&[], true).await?;
        Ok(self.kept())
    }

    /// The seq of the last durable record, updated after each fsync (see
    /// `crate::notify`, which reads the log up to it).
    pub fn durable_seq(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Tells the writer the store now holds `head` (from
    /// [`Self::append_closing`]), so the next append need not save it.
    pub async fn head_committed(&self, head: &ChainHead) {
        self.saved_seq.fetch_max(head.seq, Ordering::SeqCst);
    }

    /// One batch (at most [`MAX_BATCH`] records; none just writes pending
    /// repair records), after saving an unsaved head; its own head saved
    /// too when `save`. Returns the seqs and the new head.
    /// When the append fails, `events` are kept (see [`Self::keep`]) and
    /// the error returned: the caller decides whether to go on.
    async fn append_batch(
        &self,
        events: &[AuditEvent],
        save: bool,
    ) -> Result<(Vec<u64>, Option<ChainHead>), AuditError> {
        let mut state = self.state.lock().await;
        let mut durable = false;
        let written = self
            .append_locked(&mut state, events, save, &mut durable)
            .await;
        // Records already in the file (only their head's save failed) are
        // not kept: the next append saves that head.
        if written.is_err() && !durable && !events.is_empty() {
            self.keep(&mut state, events).await;
            self.kept_notify.notify_one();
        }
        self.kept_len
            .store(state.kept.len() as u64, Ordering::SeqCst);
        written
    }

    /// Sets `durable` once `events` are in the file.
    async fn append_locked(
        &self,
        state: &mut State,
        events: &[AuditEvent],
        save: bool,
        durable: &mut bool,
    ) -> Result<(Vec<u64>, Option<ChainHead>), AuditError> {
        // The bound: nothing is written while the log is past the store.
        self.save_pending(state).await?;
        self.reopen_if_moved(state).await?;
        while !state.repairs.is_empty() {
            let n = state.repairs.len().min(MAX_BATCH);
            let records: Vec<AuditEvent> = state.repairs[..n].iter().map(|r| r.event()).collect();
            self.write_batch(state, &records).await?;
            state.repairs.drain(..n);
            self.save_pending(state).await?;
        }
        // What waited goes first, so the log keeps the order of events.
        while !state.kept.is_empty() {
            let n = state.kept.len().min(MAX_BATCH);
            let records: Vec<AuditEvent> =
                state.kept[..n].iter().map(|k| k.event.clone()).collect();
            self.write_batch(state, &records).await?;
            let ids: Vec<i64> = state.kept.drain(..n).filter_map(|k| k.id).collect();
            // Should this fail, a restart appends them again: twice in the
            // log is better than never.
            if let Err(e) = self.store.forget_audit_records(&ids).await {
                tracing::error!(error = %e, "cannot forget audit records now in the log");
            }
            self.save_pending(state).await?;
        }
        if state.dropped > 0 {
            let overflow = AuditEvent::new(super::events::AUDIT_RECORDS_DROPPED, "system")
                .outcome(super::Outcome::Failed)
                .details(serde_json::json!({"count": state.dropped, "kept_at_most": MAX_KEPT}));
            self.write_batch(state, &[overflow]).await?;
            state.dropped = 0;
            self.save_pending(state).await?;
        }
        let written = self.write_batch(state, events).await?;
        *durable = true;
        if save {
            self.save_pending(state).await?;
        }
        Ok(written)
    }

    /// Keeps records whose append failed, in the store and in memory, with
    /// the time they were made (`delayed_since`): they are appended before
    /// anything else once the log can be written, so no change goes
    /// unrecorded.
    async fn keep(&self, state: &mut State, events: &[AuditEvent]) {
        let since = rfc3339(self.clock.now());
        for ev in events {
            if state.kept.len() >= MAX_KEPT {
                state.dropped += 1;
                continue;
            }
            let mut ev = ev.clone();
            if let serde_json::Value::Object(details) = &mut ev.details {
                details.insert("delayed_since".into(), since.clone().into());
            }
            let id = match serde_json::to_string(&ev) {
                Ok(json) => self.store.keep_audit_record(&json).await,
                Err(e) => Err(crate::store::StoreError::Corrupt(e.to_string())),
            };
            let id = id
                .map_err(|e| tracing::error!(error = %e, event = %ev.event, "audit record kept in memory only"))
                .ok();
            state.kept.push(Kept { id, event: ev });
        }
    }

    /// Saves the in-memory head unless the store is known to hold it.
    async fn save_pending(&self, state: &State) -> Result<(), AuditError> {
        let head = &state.head;
        if self.format != AuditFormat::Json || head.seq <= self.saved_seq.load(Ordering::SeqCst) {
            return Ok(());
        }
        save_head(&self.store, head).await?;
        self.saved_seq.fetch_max(head.seq, Ordering::SeqCst);
        Ok(())
    }

    /// Opens the path again when logrotate moved the file away (or a
    /// failed write dropped it), repairing the tail of the file found.
    async fn reopen_if_moved(&self, state: &mut State) -> Result<(), AuditError> {
        if let Some(open) = &state.open {
            if still_current(&self.path, open) {
                return Ok(());
            }
        }
        state.open = None;
        let (path, format, now) = (self.path.clone(), self.format, self.clock.now());
        let head = state.head.clone();
        let (open, checked) = tokio::task::spawn_blocking(move || {
            let open = open_for_append(&path)?;
            check_tail(&path, open, format, now, |_| head)
        })
        .await
        .map_err(|e| io_err(&self.path, format!("reopen task failed: {e}")))??;
        for r in checked.repairs {
            if !state.repairs.iter().any(|p| p.saved_to == r.saved_to) {
                state.repairs.push(r);
            }
        }
        state.open = Some(open);
        Ok(())
    }

    /// Writes and fsyncs one batch; returns the seqs and the new head
    /// (`None` for an empty batch).
    async fn write_batch(
        &self,
        state: &mut State,
        events: &[AuditEvent],
    ) -> Result<(Vec<u64>, Option<ChainHead>), AuditError> {
        let Some(sealed) = self.seal(state, events)? else {
            return Ok((Vec::new(), None));
        };
        let open = state
            .open
            .take()
            .ok_or_else(|| io_err(&self.path, "not open"))?;
        let path = self.path.clone();
        let Sealed {
            bytes,
            records,
            head,
        } = sealed;
        let written = tokio::task::spawn_blocking(move || write_durably(&path, open, &bytes))
            .await
            .map_err(|e| io_err(&self.path, format!("write task failed: {e}")))?;
        state.open = Some(written?);
        // Durable: move the head now, so a failing store save can never
        // make the next record reuse these seqs.
        state.head = head.clone();
        self.durable.send_replace(head.seq);
        let mut seqs = Vec::with_capacity(records.len());
        for (mut rec, hash) in records {
            seqs.push(rec.seq);
            self.metrics.audit_record(&rec.event, rec.outcome);
            if let Some(journald) = &self.journald {
                rec.hash = Some(hash);
                journald.emit(&rec);
            }
            tracing::debug!(seq = rec.seq, event = %rec.event, "audit record appended");
        }
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

/// The records a failing log left in the store's backlog, oldest first
/// (an unreadable one is logged and left there).
async fn load_kept(store: &Store) -> Vec<Kept> {
    let rows = match store.kept_audit_records().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit backlog");
            return Vec::new();
        }
    };
    rows.into_iter()
        .filter_map(|(id, json)| match serde_json::from_str(&json) {
            Ok(event) => Some(Kept {
                id: Some(id),
                event,
            }),
            Err(e) => {
                tracing::error!(error = %e, id, "unreadable record in the audit backlog");
                None
            }
        })
        .collect()
}

/// The chain head the store holds (None before the first record).
pub async fn load_head(store: &Store) -> Result<Option<ChainHead>, AuditError> {
    let head = store.audit_head().await?;
    Ok(head.map(|(seq, hash)| ChainHead { seq, hash }))
}

/// Saves `head` unless the store already holds a newer one.
async fn save_head(store: &Store, head: &ChainHead) -> Result<(), AuditError> {
    Ok(store.save_audit_head(head.seq, &head.hash).await?)
}

/// Opens the log for appending, creating its directory (0700) and the file
/// (0600) when missing; refuses symlinks and non-regular files.
fn open_for_append(path: &Path) -> Result<OpenFile, AuditError> {
    // The directory is ours alone (created 0700 when missing): nobody else
    // may be able to swap the log for something else.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::system::safefile::ensure_private_dir(dir)
            .map_err(|e| io_err(path, format!("its directory: {e}")))?;
    }
    let file = OpenOptions::new()
        .append(true)
        .read(true)
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

/// Runs `f` on the file under an exclusive `flock` (every appender takes
/// it); the file comes back whatever `f` returns.
fn locked<R>(
    path: &Path,
    open: OpenFile,
    f: impl FnOnce(&File) -> R,
) -> Result<(OpenFile, R), AuditError> {
    let (dev, ino) = (open.dev, open.ino);
    let lock = Flock::lock(open.file, FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err(path, format!("cannot lock: {e}")))?;
    let r = f(&lock);
    let file = lock
        .unlock()
        .map_err(|(_, e)| io_err(path, format!("cannot unlock: {e}")))?;
    Ok((OpenFile { file, dev, ino }, r))
}

fn write_durably(path: &Path, open: OpenFile, line: &[u8]) -> Result<OpenFile, AuditError> {
    let (open, written) = locked(path, open, |file| {
        let before = file.metadata()?.len();
        // One write() of the whole batch with O_APPEND: concurrent
        // appenders (who also lock) never interleave partial lines.
        let r = (&*file).write_all(line).and_then(|_| file.sync_data());
        if r.is_err() {
            // Leave no fragment for the next record to be glued onto
            // (if this fails too, the reopen's tail check cuts it).
            let _ = file.set_len(before).and_then(|_| file.sync_all());
        }
        r
    })?;
    written.map_err(|e| io_err(path, format!("cannot write and fsync: {e}")))?;
    Ok(open)
}

/// What [`check_tail`] found and did.
struct Checked {
    /// The file's last complete records, oldest first (JSON format).
    records: Vec<Record>,
    /// The chain head the writer continues from.
    head: ChainHead,
    /// Damaged tails cut and saved, to be recorded.
    repairs: Vec<TailRepair>,
}

/// Before the first write to a file just opened: finds its last records
/// (at most [`MAX_BATCH`]) and, under its lock, repairs a torn tail.
/// `head_after` gives the chain head the writer continues from.
fn check_tail(
    path: &Path,
    open: OpenFile,
    format: AuditFormat,
    now: i64,
    head_after: impl FnOnce(&[Record]) -> ChainHead,
) -> Result<(OpenFile, Checked), AuditError> {
    let (open, checked) = locked(path, open, |file| match format {
        AuditFormat::Cpanel => tail::end_line(file).map(|()| Checked {
            records: Vec::new(),
            head: head_after(&[]),
            repairs: Vec::new(),
        }),
        AuditFormat::Json => {
            let found = tail::scan(file, MAX_BATCH)?;
            let head = head_after(&found.records);
            let repairs = tail::repair(path, file, &found, head.seq, now)?;
            Ok(Checked {
                records: found.records,
                head,
                repairs,
            })
        }
    })?;
    let checked =
        checked.map_err(|e| io_err(path, format!("cannot check or repair the tail: {e}")))?;
    Ok((open, checked))
}

/// At open: [`check_tail`] of the live file, and when it holds no
/// complete record (logrotate made it, e.g. at boot after a power cut)
/// of the newest rotated plain file too, where the chain then ends: its
/// records are adopted and its torn tail repaired the same way.
fn check_chain_end(
    path: &Path,
    open: OpenFile,
    format: AuditFormat,
    now: i64,
    stored: &ChainHead,
) -> Result<(OpenFile, Checked), AuditError> {
    let mut rotated: Result<Option<Checked>, AuditError> = Ok(None);
    let (open, mut checked) = check_tail(path, open, format, now, |records| {
        if records.is_empty() && format == AuditFormat::Json {
            rotated = check_rotated(path, now, stored);
            if let Ok(Some(r)) = &rotated {
                return r.head.clone();
            }
        }
        adopt(stored, records)
    })?;
    // Its records only decide the head (checked.head came from it): the
    // live file alone is compared with the store's head for a missing tail.
    match rotated {
        Ok(Some(mut r)) => {
            r.repairs.append(&mut checked.repairs);
            checked.repairs = r.repairs;
        }
        Ok(None) => {}
        // A secondary file: the daemon still starts, from the store's head.
        Err(e) => tracing::error!(error = %e, "cannot check the newest rotated audit log"),
    }
    Ok((open, checked))
}

/// The newest rotated file next to the live `path` that is not
/// compressed, checked and repaired like the live one (no one appends to
/// it: no lock).
fn check_rotated(path: &Path, now: i64, stored: &ChainHead) -> Result<Option<Checked>, AuditError> {
    let newest = super::files::discover(path)
        .map_err(|e| io_err(path, format!("cannot list rotated files: {e}")))?
        .into_iter()
        .filter(|f| f != path && super::files::is_gzip(f).is_ok_and(|gz| !gz))
        .filter_map(|f| Some((std::fs::symlink_metadata(&f).ok()?.modified().ok()?, f)))
        .max();
    let Some((_, rotated)) = newest else {
        return Ok(None);
    };
    let fail =
        |e: std::io::Error| io_err(&rotated, format!("cannot check or repair the tail: {e}"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&rotated)
        .map_err(fail)?;
    let found = tail::scan(&file, MAX_BATCH).map_err(fail)?;
    let head = adopt(stored, &found.records);
    let repairs = tail::repair(&rotated, &file, &found, head.seq, now).map_err(fail)?;
    Ok(Some(Checked {
        records: found.records,
        head,
        repairs,
    }))
}

/// The head to continue from: the store's, or the last of `tail` when the
/// records there continue the chain at the store's head directly (some
/// record is its successor and every later one follows it, so at most the
/// [`MAX_BATCH`] records a crash may leave unsaved are adopted).
fn adopt(stored: &ChainHead, tail: &[Record]) -> ChainHead {
    let Some(start) = tail
        .iter()
        .position(|r| r.seq == stored.seq + 1 && r.prev == stored.hash)
    else {
        return stored.clone();
    };
    let chained = tail[start..]
        .windows(2)
        .all(|w| w[1].seq == w[0].seq + 1 && Some(&w[1].prev) == w[0].hash.as_ref());
    match tail.last() {
        Some(Record {
            seq,
            hash: Some(hash),
            ..
        }) if chained => ChainHead {
            seq: *seq,
            hash: hash.clone(),
        },
        _ => stored.clone(),
    }
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

    fn clock() -> Arc<dyn Clock> {
        Arc::new(ManualClock::new(1_800_000_000))
    }

    fn lines(path: &Path) -> Vec<Record> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| open_line(l).unwrap())
            .collect()
    }

    fn events(names: &[&str]) -> Vec<AuditEvent> {
        names
            .iter()
            .map(|e| AuditEvent::new(*e, "system"))
            .collect()
    }

    /// Puts the stored head back, as a crash before its save would leave it.
    async fn set_head(store: &Store, head: &ChainHead) {
        sqlx::query("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
            .bind(head.seq as i64)
            .bind(&head.hash)
            .execute(store.pool())
            .await
            .unwrap();
    }

    async fn stored_seq(store: &Store) -> u64 {
        load_head(store).await.unwrap().map_or(0, |h| h.seq)
    }

    /// `audit verify` of `files` against the stored head, which must pass.
    async fn assert_verifies(files: &[PathBuf], store: &Store) -> crate::audit::VerifyReport {
        let report = crate::audit::verify_files(files, load_head(store).await.unwrap());
        assert!(report.is_ok(), "{report}");
        report
    }

    /// A store that refuses (`true`) or accepts again every chain-head write.
    async fn refuse_head_writes(store: &Store, refuse: bool) {
        let sql = if refuse {
            "CREATE TRIGGER refuse_insert BEFORE INSERT ON audit_head BEGIN SELECT RAISE(ABORT, 'refused'); END;
             CREATE TRIGGER refuse_update BEFORE UPDATE ON audit_head BEGIN SELECT RAISE(ABORT, 'refused'); END;"
        } else {
            "DROP TRIGGER refuse_insert; DROP TRIGGER refuse_update;"
        };
        sqlx::raw_sql(sql).execute(store.pool()).await.unwrap();
    }

    #[tokio::test]
    async fn appends_chain_and_modes() {
        let (_d, store, path) = setup().await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
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
        assert_eq!(stored_seq(&store).await, 2);
    }

    #[tokio::test]
    async fn chain_continues_across_restart_and_rotation() {
        let (_d, store, path) = setup().await;
        {
            let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
            log.append(AuditEvent::new("a", "system")).await.unwrap();
        }
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
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
    async fn adopts_one_batch_past_the_stored_head_but_no_more() {
        let (_d, store, path) = setup().await;
        let first = {
            let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
            log.append(AuditEvent::new("a", "system")).await.unwrap();
            let first = log.head().await;
            log.append_all(&events(&["b", "c"])).await.unwrap();
            first
        };
        // A crash after the fsync of a batch, before its head was saved.
        set_head(&store, &first).await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        assert_eq!(log.head().await.seq, 1 + MAX_BATCH as u64);
        assert_eq!(log.append(AuditEvent::new("d", "system")).await.unwrap(), 4);
        drop(log);
        // More than one batch past the head was not written by the
        // daemon: not adopted.
        set_head(&store, &first).await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        assert_eq!(log.head().await.seq, 1, "{:?}", lines(&path).len());
    }

    #[tokio::test]
    async fn append_all_chains_several_records_in_one_write() {
        let (_d, store, path) = setup().await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        log.append(AuditEvent::new("a", "system")).await.unwrap();
        let seqs = log.append_all(&events(&["b", "c"])).await.unwrap();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(log.append_all(&[]).await.unwrap(), Vec::<u64>::new());
        assert_eq!(log.append(AuditEvent::new("d", "system")).await.unwrap(), 4);
        let recs = lines(&path);
        let names: Vec<&str> = recs.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        for w in recs.windows(2) {
            assert_eq!(w[1].prev, w[0].hash.clone().unwrap());
        }
        let head = load_head(&store).await.unwrap().unwrap();
        assert_eq!((head.seq, Some(head.hash)), (4, recs[3].hash.clone()));
        let report =
            crate::audit::verify_files(std::slice::from_ref(&path), Some(log.head().await));
        assert!(report.is_ok(), "{report}");
    }

    /// Finding 6 of issue 14: a closing batch left to its caller, another
    /// one, and an append from elsewhere used to leave 5 records past the
    /// stored head. Now every append first saves what is pending.
    #[tokio::test]
    async fn closing_heads_are_saved_before_anything_else_is_written() {
        let (_d, store, path) = setup().await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        log.append(AuditEvent::new("a", "system")).await.unwrap();
        let past_store = |store: Store, path: PathBuf| async move {
            let file_seq = lines(&path).last().map_or(0, |r| r.seq);
            file_seq - stored_seq(&store).await
        };
        let head = log
            .append_closing(&events(&["key_added", "grant"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.seq, stored_seq(&store).await),
            (3, 1),
            "left to the caller"
        );
        assert_eq!(log.head().await, head);
        // No done mark committed, another closing batch: the first one's
        // head reaches the store before the second is written.
        log.append_closing(&events(&["key_removed", "revoke"]))
            .await
            .unwrap();
        assert_eq!(stored_seq(&store).await, 3);
        assert!(past_store(store.clone(), path.clone()).await <= MAX_BATCH as u64);
        assert_eq!(log.append(AuditEvent::new("x", "system")).await.unwrap(), 6);
        assert_eq!(past_store(store.clone(), path.clone()).await, 0);

        // The caller commits its head and says so: nothing left to save,
        // so a closing batch needs no store write of its own.
        let head = log
            .append_closing(&events(&["key_added", "grant"]))
            .await
            .unwrap()
            .unwrap();
        save_head(&store, &head).await.unwrap();
        log.head_committed(&head).await;
        refuse_head_writes(&store, true).await;
        let next = log
            .append_closing(&events(&["key_removed", "revoke"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.seq, 10);
        refuse_head_writes(&store, false).await;
        // A caller committing an older head after a newer one was saved
        // changes nothing.
        log.append(AuditEvent::new("y", "system")).await.unwrap();
        save_head(&store, &head).await.unwrap();
        assert_eq!(stored_seq(&store).await, 11);

        let too_many = log.append_closing(&events(&["x", "y", "z"])).await;
        assert!(too_many.is_err(), "at most one batch");
        assert_verifies(std::slice::from_ref(&path), &store).await;
    }

    #[tokio::test]
    async fn a_store_that_refuses_the_head_stops_the_next_append_and_restart_reuses_no_seq() {
        let (_d, store, path) = setup().await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        log.append(AuditEvent::new("a", "system")).await.unwrap();
        refuse_head_writes(&store, true).await;
        // Durable, but its head cannot be saved: the append fails and the
        // head stays pending.
        assert!(log.append(AuditEvent::new("b", "system")).await.is_err());
        assert_eq!(log.head().await.seq, 2);
        let before = std::fs::read(&path).unwrap();
        // The next appends would go past the bound: they write nothing.
        assert!(log.append(AuditEvent::new("c", "system")).await.is_err());
        assert!(log.append_closing(&events(&["d"])).await.is_err());
        assert!(log.append_all(&events(&["e", "f"])).await.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before, "file unchanged");
        assert_eq!(stored_seq(&store).await, 1);
        // The refused records wait in the store: "b" is in the file, the
        // others are kept, in order.
        assert_eq!(log.kept(), 4);
        drop(log);

        // A restart adopts the record (one past the head), never reusing
        // its seq, and appends what waited, in order.
        refuse_head_writes(&store, false).await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        assert_eq!(log.kept(), 0);
        assert_eq!(log.append(AuditEvent::new("g", "system")).await.unwrap(), 7);
        // Or, the store back in order, the pending head is saved first.
        refuse_head_writes(&store, true).await;
        let head = log.append_closing(&events(&["h"])).await.unwrap().unwrap();
        assert!(log.append(AuditEvent::new("i", "system")).await.is_err());
        refuse_head_writes(&store, false).await;
        assert_eq!(log.flush_kept().await.unwrap(), 0);
        assert_eq!(head.seq, 8);
        let recs = lines(&path);
        let names: Vec<&str> = recs.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        assert!(
            recs[2].details.get("delayed_since").is_some(),
            "{:?}",
            recs[2]
        );
        assert!(store.kept_audit_records().await.unwrap().is_empty());
        assert_verifies(std::slice::from_ref(&path), &store).await;
    }

    #[tokio::test]
    async fn concurrent_appends_never_interleave() {
        let (_d, store, path) = setup().await;
        let log = Arc::new(AuditLog::open(&path, store, clock()).await.unwrap());
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
        {
            let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
            assert_eq!(log.tail_missing(), None);
            for e in ["a", "b", "c"] {
                log.append(AuditEvent::new(e, "system")).await.unwrap();
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        std::fs::write(&path, format!("{first}\n")).unwrap();
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
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

    /// The saved damaged tails next to `path`.
    fn damaged_copies(path: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(tail::DAMAGED_INFIX))
            .collect();
        v.sort();
        v
    }

    /// What a power cut during the append of `log`'s last record can
    /// leave: the start of the line, then a block of NULs.
    fn torn(log: &[u8]) -> Vec<u8> {
        let body = &log[..log.len() - 1];
        let last = &body[body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)..];
        let mut damage = last[..last.len() / 2].to_vec();
        damage.extend(std::iter::repeat_n(0u8, 4096));
        damage
    }

    /// Finding 2 of issue 14: a half-written line and a NUL block at the
    /// end (a power cut) used to have the next record glued onto them.
    #[tokio::test]
    async fn a_torn_tail_is_cut_saved_and_recorded_and_the_chain_goes_on() {
        let (_d, store, path) = setup().await;
        {
            let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
            log.append_all(&events(&["a", "b", "c"])).await.unwrap();
        }
        let intact = std::fs::read(&path).unwrap();
        let damage = torn(&intact);
        std::fs::write(&path, [intact.clone(), damage.clone()].concat()).unwrap();

        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        let copies = damaged_copies(&path);
        assert_eq!(copies.len(), 1);
        assert_eq!(std::fs::read(&copies[0]).unwrap(), damage, "byte-identical");
        assert_eq!(std::fs::metadata(&copies[0]).unwrap().mode() & 0o777, 0o600);
        assert!(copies[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("audit.log.damaged-3-1800000000"));
        let recs = lines(&path);
        assert_eq!(recs.len(), 4);
        let repair = &recs[3];
        assert_eq!(repair.event, crate::audit::events::AUDIT_TAIL_DAMAGED);
        assert_eq!(repair.details["offset"], intact.len() as u64);
        assert_eq!(repair.details["length"], damage.len() as u64);
        assert_eq!(
            repair.details["sha256"],
            crate::audit::record::sha256_hex(&damage)
        );
        assert_eq!(repair.details["saved_to"], copies[0].display().to_string());
        assert_eq!(log.append(AuditEvent::new("d", "system")).await.unwrap(), 5);
        let report = assert_verifies(std::slice::from_ref(&path), &store).await;
        assert!(
            report.to_string().contains(&format!(
                "tail damaged and repaired at seq 4: {} bytes at offset {} saved to {}",
                damage.len(),
                intact.len(),
                copies[0].display()
            )),
            "{report}"
        );
        drop(log);
        // Opening again repairs nothing more.
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        assert_eq!(log.head().await.seq, 5);
        assert_eq!((lines(&path).len(), damaged_copies(&path).len()), (5, 1));
    }

    #[tokio::test]
    async fn repairing_survives_a_crash_at_any_step() {
        let (_d, store, path) = setup().await;
        {
            let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
            log.append_all(&events(&["a", "b"])).await.unwrap();
        }
        let intact = std::fs::read(&path).unwrap();
        let damage = torn(&intact);
        let copy = path.with_file_name("audit.log.damaged-2-1700000000");
        // A crash after the copy, before the cut: the copy is reused.
        std::fs::write(&path, [intact.clone(), damage.clone()].concat()).unwrap();
        std::fs::write(&copy, &damage).unwrap();
        drop(AuditLog::open(&path, store.clone(), clock()).await.unwrap());
        assert_eq!(damaged_copies(&path), std::slice::from_ref(&copy));
        let recs = lines(&path);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].details["saved_to"], copy.display().to_string());

        // A crash after the cut, before the record: the copy nobody names
        // yet is recorded.
        let intact = std::fs::read(&path).unwrap();
        let copy = path.with_file_name("audit.log.damaged-3-1700000001");
        std::fs::write(&copy, torn(&intact)).unwrap();
        drop(AuditLog::open(&path, store.clone(), clock()).await.unwrap());
        let recs = lines(&path);
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[3].details["saved_to"], copy.display().to_string());
        assert_eq!(recs[3].details["offset"], intact.len() as u64);

        // A record whole but for its newline is kept, and given one.
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        log.append(AuditEvent::new("e", "system")).await.unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        assert_eq!(log.head().await.seq, 5);
        assert_eq!(std::fs::read(&path).unwrap(), [&bytes[..], b"\n"].concat());
        assert_eq!(damaged_copies(&path).len(), 2);
        assert_verifies(std::slice::from_ref(&path), &store).await;
    }

    /// logrotate `create` made a new file that ends in a fragment: the
    /// writer repairs it when it reopens the path.
    #[tokio::test]
    async fn a_reopened_file_is_repaired_too() {
        let (_d, store, path) = setup().await;
        let log = AuditLog::open(&path, store.clone(), clock()).await.unwrap();
        log.append(AuditEvent::new("a", "system")).await.unwrap();
        let rotated = path.with_extension("log.1");
        std::fs::rename(&path, &rotated).unwrap();
        let fragment = torn(&std::fs::read(&rotated).unwrap());
        std::fs::write(&path, &fragment).unwrap();
        assert_eq!(log.append(AuditEvent::new("b", "system")).await.unwrap(), 3);
        let recs = lines(&path);
        let names: Vec<&str> = recs.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(names, ["audit_tail_damaged", "b"]);
        assert_eq!(recs[0].details["offset"], 0);
        let copies = damaged_copies(&path);
        assert_eq!(std::fs::read(&copies[0]).unwrap(), fragment);
        let files = crate::audit::files::discover(&path).unwrap();
        assert_eq!(
            files,
            [path.clone(), rotated],
            "copies are not in the chain"
        );
        assert_verifies(&files, &store).await;
    }

    #[tokio::test]
    async fn classic_format_never_appends_onto_a_partial_line() {
        let (_d, store, path) = setup().await;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"Mon Nov 23 13:28:53 2026:GRANT:root:ro").unwrap();
        let log = AuditLog::open_with(&path, store, clock(), AuditFormat::Cpanel, None)
            .await
            .unwrap();
        log.append(AuditEvent::new("grant", "system"))
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], "Mon Nov 23 13:28:53 2026:GRANT:root:ro");
        assert!(lines[1].contains(":GRANT:"), "{text}");
    }
}
