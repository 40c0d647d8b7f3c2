//! Verifying the chain across the log and its rotated files.
//!
//! One streaming pass per file (a large `BufReader`, one reused line buffer,
//! no per-line allocation): each line's own hash, then seq +1 and `prev` =
//! previous `hash` within the file; then the files are put in chain order by
//! their first record and each file's first record must follow the previous
//! file's last; finally the last record must be the store's chain head.
//! The first problem is reported with its file, line number and a reason an
//! auditor can act on (edited line, deleted line, swapped pair, removed
//! rotated file, truncated tail).
//!
//! For speed a line is parsed into borrowed fields only (the full JSON
//! syntax and schema's field set are still checked); the canonical-form
//! check of [`super::record::open_line`] is left to `show`, since the hash
//! chain already pins every byte of every line.

use std::borrow::Cow;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::files::open_reader;
use super::record::{Outcome, SCHEMA_VERSION};
use super::writer::ChainHead;

type Hash = [u8; 32];
const GENESIS: Hash = [0u8; 32];
const HASH_PREFIX: &[u8] = b",\"hash\":\"";
const TAIL: usize = 9 + 64 + 2;

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read: {0}")]
    Io(String),
    #[error(
        "not a sealed audit record (no trailing hash member; a foreign or cPanel-format line?)"
    )]
    NoHash,
    #[error("the line's hash does not match its content: the line was edited")]
    Edited,
    #[error("not a valid schema v{SCHEMA_VERSION} record: {0}")]
    Invalid(String),
    #[error("unsupported schema version {0}")]
    Version(u32),
    #[error("the last line has no newline: a write was cut short")]
    Incomplete,
    #[error("empty line")]
    EmptyLine,
    #[error("seq {found} follows seq {previous}: {} record(s) missing here (deleted lines)", found - previous - 1)]
    Deleted { previous: u64, found: u64 },
    #[error("seq {found} comes before seq {next} here: lines {line} and {} are swapped", line + 1)]
    Swapped { line: u64, found: u64, next: u64 },
    #[error("seq {found} after seq {previous}: records are out of order or duplicated")]
    OutOfOrder { previous: u64, found: u64 },
    #[error("prev does not match the previous record's hash: the previous line was replaced or re-hashed")]
    PrevMismatch,
    #[error("seq 1 must link to the genesis hash (64 zeros)")]
    BadGenesis,
    #[error("seq {found} follows seq {previous} at the end of {}: {} record(s) missing between the files (a rotated file was removed?)", previous_file.display(), found - previous - 1)]
    FileGap {
        previous_file: PathBuf,
        previous: u64,
        found: u64,
    },
    #[error("starts at seq {found}, which {} already holds (a duplicate copy of a rotated file?)", previous_file.display())]
    FileOverlap { previous_file: PathBuf, found: u64 },
    #[error("the first record does not link to the last record of {} (files replaced or re-hashed)", previous_file.display())]
    FileLink { previous_file: PathBuf },
    #[error("the log ends at seq {last} but the store's chain head is seq {head}: the tail was truncated ({} record(s) missing)", head - last)]
    Truncated { last: u64, head: u64 },
    #[error("the record at seq {seq} differs from the store's chain head: the tail was rewritten")]
    HeadMismatch { seq: u64 },
    #[error("the log continues to seq {last}, past the store's chain head seq {head}: records were appended outside the daemon")]
    BeyondHead { last: u64, head: u64 },
}

/// Where verification failed: `line` is 1-based (0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub file: PathBuf,
    pub line: u64,
    pub problem: Problem,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.problem)
        } else {
            write!(f, "{}: {}", self.file.display(), self.problem)
        }
    }
}

/// How the log's end compares with the store's chain head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadCheck {
    /// No head was supplied.
    NotChecked,
    Matches,
    /// One record past the head: written and fsync'ed, then a crash before
    /// the store update (the daemon adopts it at its next start).
    OneAhead,
    Failed,
}

/// One file's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    pub path: PathBuf,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// In chain order.
    pub files: Vec<FileSummary>,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// False when the oldest file starts after seq 1 (older files rotated
    /// away, e.g. by logrotate's `rotate` count).
    pub starts_at_genesis: bool,
    pub head: HeadCheck,
    pub failure: Option<Failure>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(fail) = &self.failure {
            return write!(f, "FAIL: {fail}");
        }
        write!(f, "OK: {} records", self.records)?;
        if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
            write!(f, ", seq {a}..{b}")?;
        }
        if !self.starts_at_genesis {
            write!(
                f,
                " (records before seq {} are no longer present: rotated away)",
                self.first_seq.unwrap_or(0)
            )?;
        }
        match self.head {
            HeadCheck::NotChecked => write!(f, ", no store head to compare"),
            HeadCheck::Matches => write!(f, ", head matches store"),
            HeadCheck::OneAhead => write!(
                f,
                ", one record past the store head (a crash before the head update; adopted at the next daemon start)"
            ),
            HeadCheck::Failed => Ok(()),
        }
    }
}

/// The fields verification needs, borrowed from the line; every schema
/// field must be present and no other (as in [`super::record::Record`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // fields are checked for presence and type only
struct View<'a> {
    v: u32,
    seq: u64,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    remote: Option<Cow<'a, str>>,
    ticket_id: Option<u64>,
    server_num: Option<u64>,
    #[serde(borrow)]
    ssh_username: Option<Cow<'a, str>>,
    outcome: Outcome,
    details: IgnoredAny,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

/// One checked line.
struct Link {
    seq: u64,
    prev: Hash,
    hash: Hash,
}

fn decode_hash(hex_str: &[u8]) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).ok()?;
    Some(out)
}

/// Checks one line (without its newline) on its own.
fn check_line(line: &[u8]) -> Result<Link, Problem> {
    if line.is_empty() {
        return Err(Problem::EmptyLine);
    }
    if line.len() < TAIL + 2 {
        return Err(Problem::NoHash);
    }
    let (head, tail) = line.split_at(line.len() - TAIL);
    if !tail.starts_with(HASH_PREFIX) || !tail.ends_with(b"\"}") {
        return Err(Problem::NoHash);
    }
    let claimed =
        decode_hash(&tail[HASH_PREFIX.len()..HASH_PREFIX.len() + 64]).ok_or(Problem::NoHash)?;
    let actual: Hash = Sha256::new()
        .chain_update(head)
        .chain_update(b"}")
        .finalize()
        .into();
    if actual != claimed {
        return Err(Problem::Edited);
    }
    let view: View<'_> =
        serde_json::from_slice(line).map_err(|e| Problem::Invalid(e.to_string()))?;
    if view.v != SCHEMA_VERSION {
        return Err(Problem::Version(view.v));
    }
    let prev = decode_hash(view.prev.as_bytes())
        .filter(|_| view.prev.len() == 64)
        .ok_or_else(|| Problem::Invalid("prev is not 64 hex digits".into()))?;
    Ok(Link {
        seq: view.seq,
        prev,
        hash: claimed,
    })
}

/// What one file contributes to the chain.
struct Scan {
    path: PathBuf,
    records: u64,
    lines: u64,
    first: Option<(u64, Hash)>,
    last: Option<(u64, Hash)>,
    /// The hash of the record whose seq is the store head's.
    at_head: Option<Hash>,
    error: Option<(u64, Problem)>,
}

fn scan_file(path: &Path, head_seq: Option<u64>) -> Scan {
    let mut scan = Scan {
        path: path.to_path_buf(),
        records: 0,
        lines: 0,
        first: None,
        last: None,
        at_head: None,
        error: None,
    };
    let mut reader = match open_reader(path) {
        Ok(r) => r,
        Err(e) => {
            scan.error = Some((0, Problem::Io(e.to_string())));
            return scan;
        }
    };
    if let Err((line, problem)) = scan_lines(&mut reader, head_seq, &mut scan) {
        scan.error = Some((line, problem));
    }
    scan
}

fn scan_lines(
    reader: &mut dyn BufRead,
    head_seq: Option<u64>,
    scan: &mut Scan,
) -> Result<(), (u64, Problem)> {
    let mut buf = Vec::with_capacity(4096);
    // A seq gap is held back one line to tell a swapped pair from a deletion.
    let mut pending_gap: Option<(u64, u64, u64)> = None; // (line, previous, found)
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| (scan.lines + 1, Problem::Io(e.to_string())))?;
        if n == 0 {
            break;
        }
        scan.lines += 1;
        let line_no = scan.lines;
        if buf.last() != Some(&b'\n') {
            return Err((line_no, Problem::Incomplete));
        }
        let link = check_line(&buf[..buf.len() - 1]).map_err(|p| (line_no, p))?;
        if let Some((gap_line, previous, found)) = pending_gap.take() {
            return Err(if link.seq == previous + 1 && found == previous + 2 {
                (
                    gap_line,
                    Problem::Swapped {
                        line: gap_line,
                        found,
                        next: link.seq,
                    },
                )
            } else {
                (gap_line, Problem::Deleted { previous, found })
            });
        }
        if let Some((last_seq, last_hash)) = scan.last {
            if link.seq <= last_seq {
                return Err((
                    line_no,
                    Problem::OutOfOrder {
                        previous: last_seq,
                        found: link.seq,
                    },
                ));
            }
            if link.seq > last_seq + 1 {
                pending_gap = Some((line_no, last_seq, link.seq));
                continue;
            }
            if link.prev != last_hash {
                return Err((line_no, Problem::PrevMismatch));
            }
        } else {
            scan.first = Some((link.seq, link.prev));
        }
        if (link.seq == 1) != (link.prev == GENESIS) {
            return Err((line_no, Problem::BadGenesis));
        }
        if Some(link.seq) == head_seq {
            scan.at_head = Some(link.hash);
        }
        scan.last = Some((link.seq, link.hash));
        scan.records += 1;
    }
    if let Some((gap_line, previous, found)) = pending_gap {
        return Err((gap_line, Problem::Deleted { previous, found }));
    }
    Ok(())
}

/// Verifies `files` (any order: they are put in chain order) against the
/// store's chain head when one is given.
pub fn verify_files(files: &[PathBuf], head: Option<ChainHead>) -> VerifyReport {
    let head_seq = head.as_ref().map(|h| h.seq);
    let head_hash = head.as_ref().and_then(|h| decode_hash(h.hash.as_bytes()));
    let mut scans: Vec<Scan> = scan_all(files, head_seq);
    // Chain order: by first record; files with nothing readable first, so
    // their problem is reported before anything that depends on them.
    scans.sort_by_key(|s| (s.first.map(|f| f.0).unwrap_or(0), s.error.is_none()));

    let mut report = VerifyReport {
        files: scans
            .iter()
            .map(|s| FileSummary {
                path: s.path.clone(),
                records: s.records,
                first_seq: s.first.map(|f| f.0),
                last_seq: s.last.map(|l| l.0),
            })
            .collect(),
        records: scans.iter().map(|s| s.records).sum(),
        first_seq: None,
        last_seq: None,
        last_hash: None,
        starts_at_genesis: true,
        head: HeadCheck::NotChecked,
        failure: None,
    };
    let fail = |file: &Path, line: u64, problem: Problem| Failure {
        file: file.to_path_buf(),
        line,
        problem,
    };

    let mut prev: Option<(&Scan, u64, Hash)> = None;
    for scan in &scans {
        if let Some((first_seq, first_prev)) = scan.first {
            match prev {
                None => {
                    report.first_seq = Some(first_seq);
                    report.starts_at_genesis = first_seq == 1;
                }
                Some((pscan, last_seq, last_hash)) => {
                    let problem = if first_seq > last_seq + 1 {
                        Some(Problem::FileGap {
                            previous_file: pscan.path.clone(),
                            previous: last_seq,
                            found: first_seq,
                        })
                    } else if first_seq <= last_seq {
                        Some(Problem::FileOverlap {
                            previous_file: pscan.path.clone(),
                            found: first_seq,
                        })
                    } else if first_prev != last_hash {
                        Some(Problem::FileLink {
                            previous_file: pscan.path.clone(),
                        })
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        report.failure = Some(fail(&scan.path, 1, problem));
                        return report;
                    }
                }
            }
        }
        if let Some((line, problem)) = &scan.error {
            report.failure = Some(fail(&scan.path, *line, problem.clone()));
            return report;
        }
        if let Some((seq, hash)) = scan.last {
            prev = Some((scan, seq, hash));
        }
    }
    report.last_seq = prev.map(|p| p.1);
    report.last_hash = prev.map(|p| hex::encode(p.2));

    if let Some(head) = head {
        let (last_file, last_line) = scans
            .last()
            .map(|s| (s.path.clone(), s.lines))
            .unwrap_or_default();
        let at_head = scans.iter().find_map(|s| s.at_head);
        let last = report.last_seq.unwrap_or(0);
        let problem = if last < head.seq {
            Some(Problem::Truncated {
                last,
                head: head.seq,
            })
        } else if last > head.seq + 1 {
            Some(Problem::BeyondHead {
                last,
                head: head.seq,
            })
        } else {
            let found = if head.seq == 0 {
                Some(GENESIS)
            } else {
                at_head
            };
            // A head whose record was rotated away cannot be compared.
            let comparable = head.seq == 0 || report.first_seq.is_some_and(|f| f <= head.seq);
            if comparable && found != head_hash {
                Some(Problem::HeadMismatch { seq: head.seq })
            } else {
                None
            }
        };
        match problem {
            Some(p) => {
                report.head = HeadCheck::Failed;
                report.failure = Some(fail(&last_file, last_line + 1, p));
            }
            None if last == head.seq => report.head = HeadCheck::Matches,
            None => report.head = HeadCheck::OneAhead,
        }
    }
    report
}

/// Scans the files, two at a time when there are several (the machine's
/// cores are shared; more threads would not help a disk-bound pass).
fn scan_all(files: &[PathBuf], head_seq: Option<u64>) -> Vec<Scan> {
    if files.len() < 2 {
        return files.iter().map(|f| scan_file(f, head_seq)).collect();
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(files.len()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                let scan = scan_file(f, head_seq);
                if let Ok(mut r) = results.lock() {
                    r.push(scan);
                }
            });
        }
    });
    results.into_inner().unwrap_or_default()
}
