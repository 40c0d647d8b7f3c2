//! The queue is the audit log itself: what a receiver has pending is every
//! record after its cursor, up to the log's durable end, that it wants.
//! Read from the live file and its rotated siblings (plain or gzip),
//! starting at the newest file that begins at or before the cursor.

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use crate::audit::files::{discover, is_gzip, open_reader, Records};
use crate::audit::record::open_line;
use crate::audit::Record;

/// What is pending for one receiver.
#[derive(Debug, Default)]
pub struct Pending {
    /// Wanted records after the cursor, oldest first, at most the budget.
    pub records: Vec<Record>,
    /// Wanted records skipped because more than the budget were pending
    /// (the oldest ones), and the seq of the last of them.
    pub over_budget: u64,
    pub over_budget_to: u64,
    /// Seqs after the cursor that no file holds (rotated away, or a hole).
    pub missing: u64,
    /// The highest seq looked at (at most `upto`): once `records` are done
    /// with, the cursor may move here.
    pub scanned_to: u64,
    /// No record after the cursor could be read at all, though the log's
    /// durable end is past it: a reading problem, not a gap to skip.
    pub unreadable: bool,
}

/// The first record's seq of each file, in chain order (0 for a file whose
/// first line is not a record: it sorts first). A gzip copy sorts before
/// the plain file with the same first record, so while logrotate is still
/// compressing a file, its complete plain original is the one started from.
fn files_with_first_seq(log: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut keyed: Vec<(u64, bool, PathBuf)> = discover(log)?
        .into_iter()
        .map(|f| {
            let seq = open_reader(&f)
                .ok()
                .and_then(|mut r| {
                    let mut line = String::new();
                    r.read_line(&mut line).ok()?;
                    open_line(&line).ok()
                })
                .map_or(0, |rec| rec.seq);
            let plain = is_gzip(&f).is_ok_and(|gz| !gz);
            (seq, plain, f)
        })
        .collect();
    keyed.sort();
    Ok(keyed.into_iter().map(|(seq, _, f)| (seq, f)).collect())
}

/// The records with `after < seq <= upto` that `wanted` accepts, the
/// newest `budget` of them (see [`Pending`]). Blocking: call it from
/// `spawn_blocking`.
pub fn pending(
    log: &Path,
    after: u64,
    upto: u64,
    wanted: impl Fn(&Record) -> bool,
    budget: usize,
) -> io::Result<Pending> {
    let mut out = Pending {
        scanned_to: after,
        ..Pending::default()
    };
    if upto <= after {
        return Ok(out);
    }
    let files = files_with_first_seq(log)?;
    let start = files
        .iter()
        .rposition(|(first, _)| *first <= after + 1)
        .unwrap_or(0);
    let paths: Vec<PathBuf> = files[start..].iter().map(|(_, p)| p.clone()).collect();
    let mut kept: VecDeque<Record> = VecDeque::new();
    let mut first_found = None;
    for rec in Records::new(&paths) {
        // A torn or foreign line is the verifier's business, not ours.
        let Ok(rec) = rec else { continue };
        // Seqs only go forward: a file seen twice (during logrotate's
        // compression) or a stray older copy adds nothing.
        if rec.seq <= out.scanned_to {
            continue;
        }
        if rec.seq > upto {
            break;
        }
        match first_found {
            None => first_found = Some(rec.seq),
            // A hole in the middle (a file gone, or unreadable part-way):
            // counted, never skipped silently.
            Some(_) if rec.seq > out.scanned_to + 1 => out.missing += rec.seq - out.scanned_to - 1,
            Some(_) => {}
        }
        out.scanned_to = rec.seq;
        if !wanted(&rec) {
            continue;
        }
        if kept.len() == budget {
            if let Some(old) = kept.pop_front() {
                out.over_budget += 1;
                out.over_budget_to = old.seq;
            }
        }
        kept.push_back(rec);
    }
    out.missing += match first_found {
        Some(first) => first - after - 1,
        None => upto - after,
    };
    out.unreadable = first_found.is_none();
    out.records = kept.into();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS_HASH;
    use crate::audit::AuditEvent;
    use std::io::Write;

    /// A chained log of `events` starting at seq 1; returns its lines.
    fn lines(events: &[&str]) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_string();
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let rec = Record::from_event(
                &AuditEvent::new(*e, "system"),
                i as u64 + 1,
                "2026-11-23T13:28:53Z".into(),
                &prev,
            );
            let (line, hash) = rec.seal().unwrap();
            prev = hash;
            out.push(line);
        }
        out
    }

    fn grants(p: &Pending) -> Vec<u64> {
        p.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn reads_across_rotated_and_gzip_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let all = lines(&["grant", "key_added", "grant", "revoke", "grant", "ssh_test"]);
        // seq 1-2 gzip'd, 3-4 rotated plain, 5-6 live.
        let gz = std::fs::File::create(dir.path().join("audit.log.2.gz")).unwrap();
        let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
        enc.write_all(all[..2].concat().as_bytes()).unwrap();
        enc.finish().unwrap();
        std::fs::write(dir.path().join("audit.log.1"), all[2..4].concat()).unwrap();
        std::fs::write(&log, all[4..].concat()).unwrap();
        let want = |r: &Record| r.event == "grant" || r.event == "revoke";
        let p = pending(&log, 0, 6, want, 100).unwrap();
        assert_eq!(grants(&p), [1, 3, 4, 5]);
        assert_eq!((p.scanned_to, p.missing, p.over_budget), (6, 0, 0));
        // From a cursor inside the plain rotated file; up to the durable end.
        let p = pending(&log, 3, 5, want, 100).unwrap();
        assert_eq!(grants(&p), [4, 5]);
        assert_eq!(p.scanned_to, 5);
        // Nothing after the end.
        let p = pending(&log, 6, 6, want, 100).unwrap();
        assert!(p.records.is_empty());
        assert_eq!(p.scanned_to, 6);
        // Over budget: the newest stay, the oldest are counted.
        let p = pending(&log, 0, 6, want, 2).unwrap();
        assert_eq!(grants(&p), [4, 5]);
        assert_eq!((p.over_budget, p.over_budget_to), (2, 3));
        // logrotate compressing the plain rotated file: a partial .gz copy
        // beside the complete original changes nothing.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // (as far as it got: the first of its two records).
        enc.write_all(all[2].as_bytes()).unwrap();
        std::fs::write(dir.path().join("audit.log.1.gz"), enc.finish().unwrap()).unwrap();
        let p = pending(&log, 2, 6, want, 100).unwrap();
        assert_eq!(grants(&p), [3, 4, 5]);
        assert_eq!(p.missing, 0);
        std::fs::remove_file(dir.path().join("audit.log.1.gz")).unwrap();
        // A file gone from the middle: a hole, counted.
        let saved = std::fs::read(dir.path().join("audit.log.1")).unwrap();
        std::fs::remove_file(dir.path().join("audit.log.1")).unwrap();
        let p = pending(&log, 0, 6, want, 100).unwrap();
        assert_eq!(grants(&p), [1, 5]);
        assert_eq!((p.missing, p.scanned_to), (2, 6));
        std::fs::write(dir.path().join("audit.log.1"), saved).unwrap();
        // The gzip'd file gone: its seqs are missing.
        std::fs::remove_file(dir.path().join("audit.log.2.gz")).unwrap();
        let p = pending(&log, 0, 6, want, 100).unwrap();
        assert_eq!(grants(&p), [3, 4, 5]);
        assert_eq!(p.missing, 2);
        assert!(!p.unreadable);
        // Nothing readable after the cursor at all: said so, not skipped.
        std::fs::write(&log, "").unwrap();
        let p = pending(&log, 4, 6, want, 100).unwrap();
        assert!(p.unreadable && p.records.is_empty());
        assert_eq!(p.scanned_to, 4);
    }
}
