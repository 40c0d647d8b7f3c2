//! Finding a grant's closing records at the end of the log.
//!
//! A grant is complete once its closing batch (`key_added` + `grant`, one
//! write and one fsync) is durable; its "done" mark reaches the store a
//! moment later (`Store::finish_later`). When the daemon dies in between,
//! the restart finds the row still `granting` and looks here: if the batch
//! is in the log, at or before the chain head the log was opened with, the
//! grant is completed rather than rolled back (`Repair::CompleteGranting`).
//!
//! The search reads the live file backwards and stops at records older
//! than the oldest grant asked about, so it costs what was logged since.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::events;
use super::record::{open_line, Outcome, Record};
use crate::types::{ServerNum, TicketId};

/// A grant whose closing records are looked for.
#[derive(Debug, Clone)]
pub struct GrantClosing {
    pub id: i64,
    pub ticket: TicketId,
    pub server: ServerNum,
    /// Unique per grant: it carries the grant's start time.
    pub key_comment: String,
    /// The grant's start (epoch seconds); its records are not older.
    pub since: i64,
}

/// How far back the search reads at most; past that the grants not found
/// are rolled back, as they were before this search existed.
const MAX_SCAN_BYTES: u64 = 64 << 20;
/// A backwards clock step between a grant's start and its records that is
/// still searched past.
const CLOCK_SLACK_SECS: i64 = 300;
const CHUNK: u64 = 64 << 10;

/// The ids of `wanted` whose closing batch is in the live log at `path`,
/// at or before seq `head_seq` (records past the head were not adopted as
/// the daemon's own).
pub fn completed_grants(
    path: &Path,
    head_seq: u64,
    wanted: &[GrantClosing],
) -> std::io::Result<BTreeSet<i64>> {
    let mut found = BTreeSet::new();
    let Some(oldest) = wanted.iter().map(|w| w.since).min() else {
        return Ok(found);
    };
    let stop_before = oldest.saturating_sub(CLOCK_SLACK_SECS);
    // The record after the one being looked at (the log is read backwards).
    let mut later: Option<Record> = None;
    lines_backwards(path, MAX_SCAN_BYTES, |line| {
        let Some(rec) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| open_line(l).ok())
        else {
            // A torn last line or a foreign one: not a closing record.
            later = None;
            return true;
        };
        if rec.seq > head_seq {
            return true;
        }
        if record_time(&rec).is_some_and(|t| t < stop_before) {
            return false;
        }
        if let Some(next) = &later {
            for w in wanted {
                if closes(&rec, next, w) {
                    found.insert(w.id);
                }
            }
        }
        later = Some(rec);
        found.len() < wanted.len()
    })?;
    Ok(found)
}

/// Whether `key_added` then `next` are `w`'s closing batch.
fn closes(key_added: &Record, next: &Record, w: &GrantClosing) -> bool {
    let about_w = |r: &Record| {
        r.outcome == Outcome::Ok
            && r.ticket_id == Some(w.ticket.get())
            && r.server_num == Some(w.server.get())
    };
    key_added.event == events::KEY_ADDED
        && about_w(key_added)
        && key_added.details.get("comment").and_then(|c| c.as_str()) == Some(w.key_comment.as_str())
        && next.event == events::GRANT
        && about_w(next)
        && next.seq == key_added.seq + 1
        && Some(&next.prev) == key_added.hash.as_ref()
}

fn record_time(rec: &Record) -> Option<i64> {
    OffsetDateTime::parse(&rec.time, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Calls `visit` with each complete line of the file, last first, until it
/// returns false or `budget` bytes were read. Symlinks are refused.
fn lines_backwards(
    path: &Path,
    budget: u64,
    mut visit: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let floor = len.saturating_sub(budget);
    let mut pos = len;
    // The start of a line whose beginning lies in an earlier chunk.
    let mut partial: Vec<u8> = Vec::new();
    while pos > floor {
        let n = CHUNK.min(pos - floor);
        pos -= n;
        let mut data = vec![0u8; n as usize];
        file.read_exact_at(&mut data, pos)?;
        data.extend_from_slice(&partial);
        // Unless this chunk starts the file (or the budget), its first
        // line may be cut: keep it for the next round.
        let cut = if pos > floor {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => {
                    partial = data;
                    continue;
                }
            }
        } else {
            0
        };
        for line in data[cut..].rsplit(|b| *b == b'\n') {
            if !line.is_empty() && !visit(line) {
                return Ok(());
            }
        }
        data.truncate(cut);
        partial = data;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::AuditEvent;
    use serde_json::json;

    /// Writes sealed records for `events` (time = `t0` + index) to `path`.
    fn write_log(path: &Path, t0: i64, events: &[AuditEvent]) -> Vec<Record> {
        let mut prev = crate::audit::record::GENESIS_HASH.to_string();
        let mut text = String::new();
        let mut out = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let time = crate::clock::rfc3339(t0 + i as i64);
            let mut rec = Record::from_event(ev, i as u64 + 1, time, &prev);
            let (line, hash) = rec.seal().unwrap();
            text.push_str(&line);
            prev = hash.clone();
            rec.hash = Some(hash);
            out.push(rec);
        }
        std::fs::write(path, text).unwrap();
        out
    }

    fn t(n: u64) -> TicketId {
        TicketId::parse(&n.to_string()).unwrap()
    }
    fn one() -> ServerNum {
        ServerNum::parse("1").unwrap()
    }

    fn closing(ticket: u64, comment: &str) -> [AuditEvent; 2] {
        [
            AuditEvent::new(events::KEY_ADDED, "uid:0")
                .ticket(t(ticket), Some(one()))
                .details(json!({"comment": comment})),
            AuditEvent::new(events::GRANT, "uid:0").ticket(t(ticket), Some(one())),
        ]
    }

    fn noise(n: usize) -> Vec<AuditEvent> {
        (0..n)
            .map(|i| {
                AuditEvent::new(events::AUTH_FAILURE, "system")
                    .details(json!({"n": i, "pad": "x".repeat(300)}))
            })
            .collect()
    }

    #[test]
    fn finds_a_closing_batch_behind_many_chunks_and_only_at_or_before_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut evs = noise(10);
        evs.extend(closing(5001, "cpanel_support_5001_server_1_A"));
        // Enough records after it that the search crosses chunk borders.
        evs.extend(noise(1000));
        evs.extend(closing(5002, "cpanel_support_5002_server_1_B"));
        let recs = write_log(&path, 1_800_000_000, &evs);
        let last = recs.last().unwrap().seq;
        let w = |id, ticket, comment: &str| GrantClosing {
            id,
            ticket: t(ticket),
            server: one(),
            key_comment: comment.to_string(),
            since: 1_800_000_000,
        };
        let wanted = [
            w(1, 5001, "cpanel_support_5001_server_1_A"),
            w(2, 5002, "cpanel_support_5002_server_1_B"),
            // Same ticket, another grant's comment: not this grant's records.
            w(3, 5001, "cpanel_support_5001_server_1_OTHER"),
        ];
        let found = completed_grants(&path, last, &wanted).unwrap();
        assert_eq!(found, BTreeSet::from([1, 2]));
        // Records past the head the log was opened with do not count.
        let found = completed_grants(&path, last - 1, &wanted).unwrap();
        assert_eq!(found, BTreeSet::from([1]));
        // No file: nothing found, no error.
        let none = completed_grants(&dir.path().join("missing"), last, &wanted).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn a_half_batch_an_edited_line_or_an_older_grant_is_not_a_completion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let [key_added, granted] = closing(6001, "c6001");
        // key_added alone, then something else: not a closing batch.
        let recs = write_log(
            &path,
            1_800_000_000,
            &[key_added.clone(), noise(1).remove(0), granted.clone()],
        );
        let w = [GrantClosing {
            id: 7,
            ticket: t(6001),
            server: one(),
            key_comment: "c6001".into(),
            since: 1_800_000_000,
        }];
        assert!(completed_grants(&path, 3, &w).unwrap().is_empty());

        // The whole batch, but its grant record edited by hand.
        write_log(&path, 1_800_000_000, &[key_added.clone(), granted.clone()]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(completed_grants(&path, 2, &w).unwrap(), BTreeSet::from([7]));
        let edited = text.replace("\"details\":{}", "\"details\":{\"x\":1}");
        assert_ne!(edited, text, "the grant record has empty details");
        std::fs::write(&path, edited).unwrap();
        assert!(completed_grants(&path, 2, &w).unwrap().is_empty());

        // Records from long before the grant started stop the search.
        write_log(&path, 1_700_000_000, &[key_added, granted]);
        assert!(completed_grants(&path, 2, &w).unwrap().is_empty());
        drop(recs);
    }
}
