//! A torn or damaged end of the live log, found and repaired before the
//! writer's first write to a file (at open, and when logrotate made a new
//! file that the writer reopens).
//!
//! A power cut during an append can leave a half-written line and blocks
//! of NUL bytes at the end of the file (ext4 and XFS extend the size before
//! the data reaches the disk). Appending after them would glue the next
//! record onto the fragment and break the chain for good. So the writer
//! finds the end of the last complete record line (one that parses and
//! verifies on its own and ends in `\n`), copies every byte after it to a
//! sibling file `<log>.damaged-<seq>-<unix time>` (0600, `O_EXCL`,
//! `O_NOFOLLOW`, fsynced, directory fsynced; `<seq>` is the chain head the
//! next record follows), cuts the live file there (fsync), and the chain
//! continues with an `audit_tail_damaged` record naming what was cut. A
//! record complete but for its newline is kept and given one: no record
//! that verifies is ever cut.
//!
//! Idempotent across crashes: a crash after the copy finds the same bytes
//! again and reuses the copy; a crash after the cut finds a copy that no
//! record names yet (its `<seq>` is still the chain head) and records it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::events;
use super::record::{open_line, AuditEvent, Record};

/// What marks a saved damaged tail in its file name; `files::discover`
/// leaves these out of the chain.
pub const DAMAGED_INFIX: &str = ".damaged-";

const CHUNK: usize = 64 << 10;

/// A damaged tail cut from the live log: the details of its
/// `audit_tail_damaged` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    /// The live file that was cut.
    pub file: PathBuf,
    /// The live file's length after the cut: where the next record starts.
    pub offset: u64,
    /// How many bytes were cut.
    pub length: u64,
    /// SHA-256 (hex) of the bytes cut.
    pub sha256: String,
    /// The sibling file holding them, byte for byte.
    pub saved_to: PathBuf,
}

impl TailRepair {
    pub fn event(&self) -> AuditEvent {
        AuditEvent::new(events::AUDIT_TAIL_DAMAGED, "system").details(json!({
            "file": self.file.display().to_string(),
            "offset": self.offset,
            "length": self.length,
            "sha256": self.sha256,
            "saved_to": self.saved_to.display().to_string(),
        }))
    }
}

/// An `audit_tail_damaged` record as `audit verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailDamage {
    pub seq: u64,
    pub offset: u64,
    pub length: u64,
    pub saved_to: String,
}

impl TailDamage {
    /// The damage a record reports (None for any other record).
    pub fn of(rec: &Record) -> Option<TailDamage> {
        if rec.event != events::AUDIT_TAIL_DAMAGED {
            return None;
        }
        let d = &rec.details;
        Some(TailDamage {
            seq: rec.seq,
            offset: d.get("offset")?.as_u64()?,
            length: d.get("length")?.as_u64()?,
            saved_to: d.get("saved_to")?.as_str()?.to_string(),
        })
    }
}

impl std::fmt::Display for TailDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tail damaged and repaired at seq {}: {} bytes at offset {} saved to {}",
            self.seq, self.length, self.offset, self.saved_to
        )
    }
}

/// The end of a file as found.
#[derive(Debug)]
pub struct TailScan {
    pub len: u64,
    /// Where the bytes to keep end.
    pub good_end: u64,
    /// The last kept record lacks its newline.
    pub newline_missing: bool,
    /// The last complete records, oldest first (at most the number asked).
    pub records: Vec<Record>,
}

impl TailScan {
    pub fn is_damaged(&self) -> bool {
        self.good_end < self.len || self.newline_missing
    }
}

fn record_of(line: &[u8]) -> Option<Record> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|l| open_line(l).ok())
}

/// Finds the last complete record line of `file` and up to `keep` (at
/// least one) complete records before it, reading backwards.
pub fn scan(file: &File, keep: usize) -> std::io::Result<TailScan> {
    let len = file.metadata()?.len();
    let mut out = TailScan {
        len,
        good_end: 0,
        newline_missing: false,
        records: Vec::new(),
    };
    lines_backwards(file, len, |start, line, terminated| {
        if out.records.is_empty() {
            // Still in the damage: a NUL block may follow a record whose
            // newline did not make it.
            let candidate = match terminated {
                true => line,
                false => &line[..memchr::memchr(0, line).unwrap_or(line.len())],
            };
            let Some(rec) = record_of(candidate) else {
                return true;
            };
            out.good_end = start + candidate.len() as u64 + u64::from(terminated);
            out.newline_missing = !terminated;
            out.records.push(rec);
        } else {
            match record_of(line) {
                Some(rec) if terminated => out.records.push(rec),
                _ => return false,
            }
        }
        out.records.len() < keep.max(1)
    })?;
    out.records.reverse();
    Ok(out)
}

/// Calls `visit(offset, line, terminated)` for each line of the first
/// `len` bytes of `file`, last first (only the last can be unterminated),
/// until it returns false.
fn lines_backwards(
    file: &File,
    len: u64,
    mut visit: impl FnMut(u64, &[u8], bool) -> bool,
) -> std::io::Result<()> {
    // `buf` holds the bytes [pos, end) not visited yet.
    let (mut pos, mut end) = (len, len);
    let mut buf: Vec<u8> = Vec::new();
    while end > 0 {
        if buf.is_empty() {
            pos = grow(file, pos, &mut buf)?;
        }
        let terminated = buf.last() == Some(&b'\n');
        let body_end = end - u64::from(terminated);
        let start = loop {
            if let Some(i) = memchr::memrchr(b'\n', &buf[..(body_end - pos) as usize]) {
                break pos + i as u64 + 1;
            }
            if pos == 0 {
                break 0;
            }
            pos = grow(file, pos, &mut buf)?;
        };
        let line = &buf[(start - pos) as usize..(body_end - pos) as usize];
        if !visit(start, line, terminated) {
            return Ok(());
        }
        buf.truncate((start - pos) as usize);
        end = start;
    }
    Ok(())
}

/// Prepends the bytes before `pos` to `buf` (as many as it holds, at least
/// a chunk: a long line costs linear time); returns the new `pos`.
fn grow(file: &File, pos: u64, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    let n = (buf.len().max(CHUNK) as u64).min(pos);
    let mut more = vec![0u8; n as usize];
    file.read_exact_at(&mut more, pos - n)?;
    more.extend_from_slice(buf);
    *buf = more;
    Ok(pos - n)
}

/// Repairs what [`scan`] found in `file` (the live log at `path`, locked
/// by the caller) and returns every saved damaged tail that follows chain
/// head `head_seq` (none when the file was intact and no earlier repair
/// was left unrecorded). `now` (epoch seconds) names a new copy.
pub fn repair(
    path: &Path,
    file: &File,
    found: &TailScan,
    head_seq: u64,
    now: i64,
) -> std::io::Result<Vec<TailRepair>> {
    let prefix = damaged_prefix(path, head_seq)?;
    if found.is_damaged() {
        if found.good_end < found.len {
            let (length, sha) = digest(file, found.good_end, found.len)?;
            let saved = saved_copies(path, &prefix)?;
            if !saved.iter().any(|s| s.length == length && s.sha256 == sha) {
                let to = save_copy(path, &prefix, now, file, found.good_end, found.len)?;
                tracing::warn!(
                    path = %path.display(),
                    offset = found.good_end,
                    length,
                    saved_to = %to.display(),
                    "audit log ends in a torn or damaged tail: cut and saved"
                );
            }
        }
        file.set_len(found.good_end)?;
        if found.newline_missing {
            // At `good_end`, the end of the file (O_APPEND or not).
            file.write_all_at(b"\n", found.good_end)?;
        }
        file.sync_all()?;
    }
    let offset = file.metadata()?.len();
    Ok(saved_copies(path, &prefix)?
        .into_iter()
        .map(|s| TailRepair {
            file: path.to_path_buf(),
            offset,
            length: s.length,
            sha256: s.sha256,
            saved_to: s.path,
        })
        .collect())
}

/// Adds the missing final newline of a file in cPanel's format (no chain
/// to repair, but a record must never be glued onto a partial line).
pub fn end_line(file: &File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let mut last = [0u8; 1];
    if len > 0 {
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            file.write_all_at(b"\n", len)?;
            file.sync_data()?;
        }
    }
    Ok(())
}

/// `<file name>.damaged-<seq>-`: the start of the names of the copies
/// that follow chain head `seq`.
fn damaged_prefix(path: &Path, seq: u64) -> std::io::Result<String> {
    let base = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("the log's file name is not UTF-8"))?;
    Ok(format!("{base}{DAMAGED_INFIX}{seq}-"))
}

struct SavedCopy {
    path: PathBuf,
    length: u64,
    sha256: String,
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The regular files named `<prefix>*` next to `path`, by name.
fn saved_copies(path: &Path, prefix: &str) -> std::io::Result<Vec<SavedCopy>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir_of(path))? {
        let entry = entry?;
        let name = entry.file_name();
        let named = name.to_str().is_some_and(|n| n.starts_with(prefix));
        // Symlinks are not ours: file_type() does not follow them.
        if !named || !entry.file_type()?.is_file() {
            continue;
        }
        let f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(entry.path())?;
        let len = f.metadata()?.len();
        let (length, sha256) = digest(&f, 0, len)?;
        out.push(SavedCopy {
            path: entry.path(),
            length,
            sha256,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The length and SHA-256 (hex) of bytes [from, to) of `file`.
fn digest(file: &File, from: u64, to: u64) -> std::io::Result<(u64, String)> {
    let mut sha = Sha256::new();
    each_chunk(file, from, to, |c| {
        sha.update(c);
        Ok(())
    })?;
    Ok((to - from, hex::encode(sha.finalize())))
}

fn each_chunk(
    file: &File,
    from: u64,
    to: u64,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(CHUNK);
        file.read_exact_at(&mut buf[..n], at)?;
        f(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Copies bytes [from, to) of `file` to a new sibling `<prefix><now>`
/// (`.<k>` added when taken), durably; returns its path.
fn save_copy(
    path: &Path,
    prefix: &str,
    now: i64,
    file: &File,
    from: u64,
    to: u64,
) -> std::io::Result<PathBuf> {
    let dir = dir_of(path);
    let mut k = 0;
    let (to_path, mut copy) = loop {
        let name = match k {
            0 => format!("{prefix}{now}"),
            k => format!("{prefix}{now}.{k}"),
        };
        let p = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
        {
            Ok(f) => break (p, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && k < 1000 => k += 1,
            Err(e) => return Err(e),
        }
    };
    each_chunk(file, from, to, |c| copy.write_all(c))?;
    copy.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(to_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_backwards_sees_every_line_once_with_its_offset() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        // A line longer than a chunk, an empty line, an unterminated end.
        let long = "x".repeat(3 * CHUNK + 7);
        let text = format!("a\n{long}\n\nbc\ntail");
        std::fs::write(&p, &text).unwrap();
        let f = File::open(&p).unwrap();
        let mut seen = Vec::new();
        lines_backwards(&f, text.len() as u64, |at, line, term| {
            seen.push((at, line.len(), line.first().copied(), term));
            true
        })
        .unwrap();
        let l = long.len() as u64;
        assert_eq!(
            seen,
            [
                (l + 7, 4, Some(b't'), false),
                (l + 4, 2, Some(b'b'), true),
                (l + 3, 0, None, true),
                (2, long.len(), Some(b'x'), true),
                (0, 1, Some(b'a'), true),
            ]
        );
    }
}
