//! Verifying the chain across the log and its rotated files.
//!
//! One streaming pass per file, read in 4 MiB chunks of whole lines that
//! worker threads check (each line's own hash and frame) while the reading
//! thread applies the chain rules in file order (seq +1, `prev` = previous
//! `hash`); memory stays bounded (a few chunks in flight); then the files are put in chain order by
//! their first record and each file's first record must follow the previous
//! file's last; finally the last record must be the store's chain head.
//! The first problem is reported with its file, line number and a reason an
//! auditor can act on (edited line, deleted line, swapped pair, removed
//! rotated file, truncated tail). Up to one batch of records past the
//! store's head is pending, not a failure (see [`super::writer`]); each
//! `audit_tail_damaged` record is reported with the OK line.
//!
//! For speed, seq and prev are read from the line's canonical frame rather
//! than by a JSON parse (see `check_line`); the full parse and canonical-form
//! check of [`super::record::open_line`] is `show`'s and `replay`'s, since
//! the hash chain already pins every byte of every line.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use sha2::{Digest, Sha256};

use super::files::open_reader;
use super::record::{open_line, SCHEMA_VERSION};
use super::tail::TailDamage;
use super::writer::{ChainHead, MAX_BATCH};

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
    /// Up to [`MAX_BATCH`] records past the head, chained to it: durable,
    /// their head not saved yet (closing records whose done mark is being
    /// committed, or a crash before the head was saved; the daemon adopts
    /// them at its next start).
    Ahead(u64),
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
    /// The `audit_tail_damaged` records, in chain order.
    pub repairs: Vec<TailDamage>,
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
            HeadCheck::Ahead(n) => write!(
                f,
                ", {n} record(s) past the store head (durable, their head not saved yet: a done mark being committed, or a crash before the head was saved; adopted at the next daemon start)"
            ),
            HeadCheck::Failed => Ok(()),
        }?;
        for r in &self.repairs {
            write!(f, "\n{r}")?;
        }
        Ok(())
    }
}

/// One checked line.
#[derive(Debug, Clone)]
struct Link {
    seq: u64,
    prev: Hash,
    hash: Hash,
    /// What an `audit_tail_damaged` record reports.
    damage: Option<Box<TailDamage>>,
}

fn decode_hash(hex_str: &[u8]) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).ok()?;
    Some(out)
}

const SEQ_PREFIX: &[u8] = b"{\"v\":";
const TIME_MARK: &[u8] = b",\"time\":\"";
const PREV_MARK: &[u8] = b",\"prev\":\"";
const TAIL_DAMAGED: &[u8] = b"\",\"event\":\"audit_tail_damaged\"";

/// Checks one line (without its newline) on its own: its hash, then the
/// canonical frame around it (`{"v":1,"seq":N,"time":"…` … `"prev":"<hex>"`),
/// from which seq and prev are read without a JSON parse. The hash pins the
/// bytes, so a line that passes can only differ from the writer's by being
/// forged whole, which the chain and the store head catch.
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
    let invalid = |what: &str| Problem::Invalid(what.to_string());
    std::str::from_utf8(line).map_err(|_| invalid("not UTF-8"))?;
    let rest = line
        .strip_prefix(SEQ_PREFIX)
        .ok_or_else(|| invalid("does not start with {\"v\":"))?;
    let (version, rest) = leading_number(rest).ok_or_else(|| invalid("bad v"))?;
    if version != u64::from(SCHEMA_VERSION) {
        return Err(Problem::Version(u32::try_from(version).unwrap_or(u32::MAX)));
    }
    let rest = rest
        .strip_prefix(b",\"seq\":")
        .ok_or_else(|| invalid("seq is not the second member"))?;
    let (seq, rest) = leading_number(rest).ok_or_else(|| invalid("bad seq"))?;
    let Some(time) = rest.strip_prefix(TIME_MARK) else {
        return Err(invalid("time is not the third member"));
    };
    let prev = head
        .strip_suffix(b"\"")
        .filter(|h| h.len() >= 64 + PREV_MARK.len())
        .and_then(|h| {
            let (before, hex_part) = h.split_at(h.len() - 64);
            before.ends_with(PREV_MARK).then_some(hex_part)
        })
        .and_then(decode_hash)
        .ok_or_else(|| invalid("prev is not the last member or not 64 hex digits"))?;
    Ok(Link {
        seq,
        prev,
        hash: claimed,
        damage: tail_damage(line, time),
    })
}

/// The damage an `audit_tail_damaged` record reports; `time` is the part
/// of `line` from its time value on (only these rare records are parsed
/// whole).
fn tail_damage(line: &[u8], time: &[u8]) -> Option<Box<TailDamage>> {
    let end = memchr::memchr(b'"', time)?;
    if !time[end..].starts_with(TAIL_DAMAGED) {
        return None;
    }
    let rec = open_line(std::str::from_utf8(line).ok()?).ok()?;
    TailDamage::of(&rec).map(Box::new)
}

/// A decimal number at the start of `s` (no sign, no leading zeros) and the rest.
fn leading_number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if digits == 0 || (digits > 1 && s[0] == b'0') {
        return None;
    }
    let n = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
    Some((n, &s[digits..]))
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
    repairs: Vec<TailDamage>,
    error: Option<(u64, Problem)>,
}

/// The in-file chain rules, fed one checked line at a time, in order.
struct Chain<'a> {
    scan: &'a mut Scan,
    head_seq: Option<u64>,
    /// A seq gap is held back one line to tell a swapped pair from a deletion.
    pending_gap: Option<(u64, u64, u64)>, // (line, previous, found)
}

impl Chain<'_> {
    fn push(&mut self, checked: Result<Link, Problem>) -> Result<(), (u64, Problem)> {
        self.scan.lines += 1;
        let line_no = self.scan.lines;
        if let Some((gap_line, previous, found)) = self.pending_gap.take() {
            return Err(match checked {
                Ok(link) if link.seq == previous + 1 && found == previous + 2 => (
                    gap_line,
                    Problem::Swapped {
                        line: gap_line,
                        found,
                        next: link.seq,
                    },
                ),
                _ => (gap_line, Problem::Deleted { previous, found }),
            });
        }
        let link = checked.map_err(|p| (line_no, p))?;
        if let Some((last_seq, last_hash)) = self.scan.last {
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
                self.pending_gap = Some((line_no, last_seq, link.seq));
                return Ok(());
            }
            if link.prev != last_hash {
                return Err((line_no, Problem::PrevMismatch));
            }
        } else {
            self.scan.first = Some((link.seq, link.prev));
        }
        if (link.seq == 1) != (link.prev == GENESIS) {
            return Err((line_no, Problem::BadGenesis));
        }
        if Some(link.seq) == self.head_seq {
            self.scan.at_head = Some(link.hash);
        }
        self.scan.last = Some((link.seq, link.hash));
        self.scan.records += 1;
        if let Some(damage) = link.damage {
            self.scan.repairs.push(*damage);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), (u64, Problem)> {
        match self.pending_gap.take() {
            Some((line, previous, found)) => Err((line, Problem::Deleted { previous, found })),
            None => Ok(()),
        }
    }
}

fn scan_file(path: &Path, head_seq: Option<u64>) -> Scan {
    let mut scan = Scan {
        path: path.to_path_buf(),
        records: 0,
        lines: 0,
        first: None,
        last: None,
        at_head: None,
        repairs: Vec::new(),
        error: None,
    };
    let mut reader = match open_reader(path) {
        Ok(r) => r,
        Err(e) => {
            scan.error = Some((0, Problem::Io(e.to_string())));
            return scan;
        }
    };
    let mut chain = Chain {
        scan: &mut scan,
        head_seq,
        pending_gap: None,
    };
    let result = scan_chunks(&mut reader, &mut chain).and_then(|()| chain.finish());
    if let Err(e) = result {
        scan.error = Some(e);
    }
    scan
}

const CHUNK: usize = 4 << 20;

/// Reads the next chunk of whole lines (the last chunk may end without a
/// newline); `carry` holds the partial line left over from the last read.
fn next_chunk(reader: &mut dyn Read, carry: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = std::mem::take(carry);
    loop {
        let mut filled = buf.len();
        buf.resize(filled + CHUNK, 0);
        let mut eof = false;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        if eof {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        if let Some(pos) = memchr::memrchr(b'\n', &buf) {
            *carry = buf.split_off(pos + 1);
            return Ok(Some(buf));
        }
        // One line longer than a chunk: keep reading.
    }
}

/// Checks every line of a chunk on its own (the parallel part).
fn check_chunk(chunk: &[u8]) -> Vec<Result<Link, Problem>> {
    let mut out = Vec::with_capacity(chunk.len() / 256 + 1);
    let mut start = 0;
    while start < chunk.len() {
        match memchr::memchr(b'\n', &chunk[start..]) {
            Some(len) => {
                let checked = check_line(&chunk[start..start + len]);
                let stop = checked.is_err();
                out.push(checked);
                start += len + 1;
                if stop {
                    // Nothing after a bad line is needed but the line right
                    // after it (to classify a gap); the chain stops there.
                    if let Some(next) = memchr::memchr(b'\n', &chunk[start..]) {
                        out.push(check_line(&chunk[start..start + next]));
                    }
                    break;
                }
            }
            None => {
                out.push(Err(Problem::Incomplete));
                break;
            }
        }
    }
    out
}

/// Streams the file in chunks: this thread reads, workers hash and check
/// lines, and the chain rules are applied in order as results come back.
fn scan_chunks(reader: &mut dyn Read, chain: &mut Chain<'_>) -> Result<(), (u64, Problem)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    if workers == 1 {
        let mut carry = Vec::new();
        let read_err = |chain: &Chain<'_>, e: std::io::Error| {
            (chain.scan.lines + 1, Problem::Io(e.to_string()))
        };
        while let Some(chunk) = next_chunk(reader, &mut carry).map_err(|e| read_err(chain, e))? {
            for checked in check_chunk(&chunk) {
                chain.push(checked)?;
            }
        }
        return Ok(());
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(workers * 2);
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<(u64, Vec<Result<Link, Problem>>)>();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => break,
                };
                let Ok((idx, chunk)) = job else { break };
                if res_tx.send((idx, check_chunk(&chunk))).is_err() {
                    break;
                }
            });
        }
        drop(res_tx);
        let outcome = feed_in_order(reader, chain, &job_tx, &res_rx, workers * 2);
        // Workers stop once the job channel closes, even after an early error.
        drop(job_tx);
        outcome
    })
}

type Checked = Vec<Result<Link, Problem>>;

/// Sends chunks to the workers (at most `ahead` in flight) and applies their
/// results to the chain in file order.
fn feed_in_order(
    reader: &mut dyn Read,
    chain: &mut Chain<'_>,
    jobs: &mpsc::SyncSender<(u64, Vec<u8>)>,
    results: &mpsc::Receiver<(u64, Checked)>,
    ahead: usize,
) -> Result<(), (u64, Problem)> {
    let mut carry = Vec::new();
    let mut pending: BTreeMap<u64, Checked> = BTreeMap::new();
    let (mut sent, mut next) = (0u64, 0u64);
    let mut read_error = None;
    loop {
        while read_error.is_none() && sent - next < ahead as u64 {
            match next_chunk(reader, &mut carry) {
                Ok(Some(chunk)) => {
                    if jobs.send((sent, chunk)).is_err() {
                        break;
                    }
                    sent += 1;
                }
                Ok(None) => break,
                Err(e) => read_error = Some(Problem::Io(e.to_string())),
            }
        }
        if next == sent {
            break;
        }
        let Ok((idx, checked)) = results.recv() else {
            break;
        };
        pending.insert(idx, checked);
        while let Some(checked) = pending.remove(&next) {
            next += 1;
            for c in checked {
                chain.push(c)?;
            }
        }
    }
    match read_error {
        // Lines read before the error were checked first.
        Some(p) => Err((chain.scan.lines + 1, p)),
        None => Ok(()),
    }
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
        repairs: scans.iter().flat_map(|s| s.repairs.clone()).collect(),
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
        } else if last > head.seq + MAX_BATCH as u64 {
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
            None => report.head = HeadCheck::Ahead(last - head.seq),
        }
    }
    report
}

/// Scans the files one after another (each file's lines are checked in
/// parallel already).
fn scan_all(files: &[PathBuf], head_seq: Option<u64>) -> Vec<Scan> {
    files.iter().map(|f| scan_file(f, head_seq)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Outcome, Record, GENESIS_HASH};

    /// A sealed chain of `n` records, `pad` bytes of details each.
    fn chain(n: u64, pad: impl Fn(u64) -> usize) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let rec = Record {
                    v: 1,
                    seq,
                    time: "2026-11-23T00:00:00Z".into(),
                    event: "drift_repaired".into(),
                    actor: "system".into(),
                    remote: None,
                    ticket_id: None,
                    server_num: None,
                    ssh_username: None,
                    outcome: Outcome::Ok,
                    details: serde_json::json!({"pad": "p".repeat(pad(seq))}),
                    prev: prev.clone(),
                    hash: None,
                };
                let (line, hash) = rec.seal().unwrap();
                prev = hash;
                line
            })
            .collect()
    }

    fn write(dir: &Path, lines: &[String]) -> PathBuf {
        let p = dir.join("audit.log");
        std::fs::write(&p, lines.concat()).unwrap();
        p
    }

    #[test]
    fn many_chunks_and_a_line_longer_than_a_chunk() {
        let d = tempfile::tempdir().unwrap();
        // ~12 MiB over several chunks, with one 5 MiB line in the middle.
        let lines = chain(40_000, |s| {
            if s == 20_000 {
                5 << 20
            } else {
                100 + (s % 300) as usize
            }
        });
        let p = write(d.path(), &lines);
        let r = verify_files(std::slice::from_ref(&p), None);
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.records, 40_000);

        // Damage deep in a later chunk: the right line number comes back.
        let mut bad = lines.clone();
        bad[33_333] = bad[33_333].replacen("\"pad\":\"p", "\"pad\":\"q", 1);
        let p = write(d.path(), &bad);
        let f = verify_files(std::slice::from_ref(&p), None)
            .failure
            .unwrap();
        assert_eq!((f.line, f.problem), (33_334, Problem::Edited));

        // A deletion followed at once by an edited line: the deletion is first.
        let mut bad = lines.clone();
        bad.remove(30_000);
        bad[30_001] = bad[30_001].replacen("\"pad\":\"p", "\"pad\":\"q", 1);
        let p = write(d.path(), &bad);
        let f = verify_files(&[p], None).failure.unwrap();
        assert_eq!(f.line, 30_001);
        assert_eq!(
            f.problem,
            Problem::Deleted {
                previous: 30_000,
                found: 30_002
            }
        );
    }

    #[test]
    fn frame_checks() {
        let line = chain(1, |_| 3).remove(0);
        let body = line.trim_end();
        assert!(check_line(body.as_bytes()).is_ok());
        assert_eq!(check_line(b"").unwrap_err(), Problem::EmptyLine);
        assert_eq!(check_line(b"hello").unwrap_err(), Problem::NoHash);
        assert_eq!(leading_number(b"012,"), None);
        assert_eq!(leading_number(b"0,"), Some((0, &b","[..])));
    }
}
