//! `audit show`: the records matching a filter, as JSON lines (exactly as
//! stored) or as cPanel's classic lines.

use std::io::{self, Write};
use std::path::PathBuf;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::cpanel::render_cpanel;
use super::files::{chain_order, Records};
use super::record::Record;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShowError {
    #[error("'{0}' is not a time: give RFC 3339 (2026-11-23T13:00:00Z) or epoch seconds")]
    BadTime(String),
}

/// Parses RFC 3339 or epoch seconds.
pub fn parse_time(raw: &str) -> Result<i64, ShowError> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<i64>() {
        return Ok(n);
    }
    OffsetDateTime::parse(raw, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| ShowError::BadTime(raw.to_string()))
}

/// Which records to show; every given criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub ticket: Option<u64>,
    pub event: Option<String>,
    /// The whole actor (`token:root:deploy`, `uid:0`, `system`), a leading
    /// part of it (`token:root`) or its last part (a token's name).
    pub actor: Option<String>,
    /// Inclusive bounds, epoch seconds.
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Filter {
    pub fn matches(&self, rec: &Record) -> bool {
        if self.ticket.is_some() && rec.ticket_id != self.ticket {
            return false;
        }
        if self.event.as_deref().is_some_and(|e| e != rec.event) {
            return false;
        }
        if let Some(a) = self.actor.as_deref() {
            let hit = rec.actor == a
                || rec
                    .actor
                    .strip_prefix(a)
                    .is_some_and(|r| r.starts_with(':'))
                || rec.actor.strip_suffix(a).is_some_and(|r| r.ends_with(':'));
            if !hit {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Ok(t) = OffsetDateTime::parse(&rec.time, &Rfc3339).map(|t| t.unix_timestamp())
            else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowFormat {
    /// An aligned table for people (the records are gathered first).
    Table,
    Json,
    /// cPanel's classic lines; records cPanel has no line for are left out.
    Cpanel,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShowStats {
    pub shown: u64,
    pub bad_lines: u64,
}

/// A JSON line with every hidden character (Unicode format characters
/// such as U+202E, line separators) written as a `\uXXXX` escape: the same
/// JSON value, but nothing that reorders or hides text on a terminal.
/// (serde_json already escapes control characters.)
fn visible_json(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if crate::types::is_hidden_char(c) && !c.is_control() {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A text line with hidden characters escaped (`\u{202e}`).
fn visible_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        crate::types::push_visible(&mut out, c);
    }
    out
}

/// Refuses an event name schema v1 does not define, listing those it does
/// (a misspelt filter would otherwise match nothing, silently).
pub fn check_event(event: &str) -> Result<(), String> {
    if super::events::ALL.contains(&event) {
        return Ok(());
    }
    let mut known = super::events::ALL.to_vec();
    known.sort_unstable();
    Err(format!(
        "unknown event {:?}; the events are: {}",
        visible_text(event),
        known.join(", ")
    ))
}

/// One record as a table row: time, event, outcome, ticket, server, user,
/// actor, details.
fn table_row(rec: &Record) -> Vec<String> {
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let details = match rec.details.as_object() {
        Some(o) if !o.is_empty() => rec.details.to_string(),
        _ => String::new(),
    };
    let outcome = match rec.outcome {
        super::record::Outcome::Ok => "ok",
        super::record::Outcome::Failed => "FAILED",
    };
    [
        rec.time.clone(),
        rec.event.clone(),
        outcome.to_string(),
        opt(rec.ticket_id),
        opt(rec.server_num),
        rec.ssh_username.clone().unwrap_or_else(|| "-".into()),
        rec.actor.clone(),
        details,
    ]
    .iter()
    .map(|c| visible_text(c))
    .collect()
}

const TABLE_HEADERS: [&str; 8] = [
    "TIME", "EVENT", "OUTCOME", "TICKET", "SERVER", "USER", "ACTOR", "DETAILS",
];

/// Rows held at most to size the table's columns: memory stays bounded
/// however long the log; later rows use the widths of the first ones.
const TABLE_WINDOW: usize = 5_000;

/// Records as an aligned table (or a line saying there are none).
pub fn records_table(records: &[Record]) -> String {
    if records.is_empty() {
        return "No matching audit records.\n".into();
    }
    let rows: Vec<Vec<String>> = records.iter().map(table_row).collect();
    crate::cli::output::table(&TABLE_HEADERS, &rows)
}

/// The table of [`ShowFormat::Table`], written as records come: the first
/// [`TABLE_WINDOW`] rows size the columns.
#[derive(Default)]
struct TableOut {
    rows: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

impl TableOut {
    fn push(&mut self, rec: &Record, out: &mut dyn Write) -> io::Result<()> {
        self.rows.push(table_row(rec));
        if self.rows.len() >= TABLE_WINDOW {
            self.flush(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut dyn Write) -> io::Result<()> {
        use crate::cli::output::{column_widths, table, table_rows};
        match &self.widths {
            None if self.rows.is_empty() => {}
            None => {
                out.write_all(table(&TABLE_HEADERS, &self.rows).as_bytes())?;
                self.widths = Some(column_widths(&TABLE_HEADERS, &self.rows));
            }
            Some(w) => out.write_all(table_rows(&self.rows, w).as_bytes())?,
        }
        self.rows.clear();
        Ok(())
    }

    fn finish(mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.widths.is_none() && self.rows.is_empty() {
            return out.write_all(b"No matching audit records.\n");
        }
        self.flush(out)
    }
}

/// Writes one record in `format` (not [`ShowFormat::Table`], which is
/// written whole by [`records_table`]); false when the format has no line
/// for it.
pub fn write_record(rec: &Record, format: ShowFormat, out: &mut dyn Write) -> io::Result<bool> {
    match format {
        ShowFormat::Json => {
            let (line, _) = rec.seal().map_err(io::Error::other)?;
            out.write_all(visible_json(&line).as_bytes())?;
        }
        ShowFormat::Cpanel => match render_cpanel(rec) {
            Some(line) => writeln!(out, "{}", visible_text(&line))?,
            None => return Ok(false),
        },
        ShowFormat::Table => return Ok(false),
    }
    Ok(true)
}

/// Writes the matching records of `files` (put in chain order) to `out`;
/// lines that are not valid records are reported to `warn` and skipped.
pub fn show(
    files: &[PathBuf],
    filter: &Filter,
    format: ShowFormat,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> io::Result<ShowStats> {
    let mut stats = ShowStats::default();
    let mut table = TableOut::default();
    for item in Records::new(&chain_order(files)) {
        let rec = match item {
            Ok(rec) => rec,
            Err(e) => {
                stats.bad_lines += 1;
                writeln!(warn, "warning: skipped {e}")?;
                continue;
            }
        };
        if !filter.matches(&rec) {
            continue;
        }
        if format == ShowFormat::Table {
            table.push(&rec, out)?;
        } else if !write_record(&rec, format, out)? {
            continue;
        }
        stats.shown += 1;
    }
    if format == ShowFormat::Table {
        table.finish(out)?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_escaped_and_json_stays_the_same_value() {
        let line = serde_json::json!({"function": "x\u{202E}gpj.exe\u{2028}", "ok": "ticket ✓"})
            .to_string();
        assert!(line.contains('\u{202E}'), "serde_json leaves it raw");
        let shown = visible_json(&line);
        assert!(
            !shown.contains('\u{202E}') && !shown.contains('\u{2028}'),
            "{shown}"
        );
        assert!(shown.contains("\\u202e") && shown.contains("✓"), "{shown}");
        let a: serde_json::Value = serde_json::from_str(&line).unwrap();
        let b: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(a, b);
        assert_eq!(visible_text("a\u{202E}b\tc"), "a\\u{202e}b\\tc");
    }

    #[test]
    fn a_long_table_keeps_the_first_rows_widths_and_bounded_memory() {
        use crate::audit::record::{Outcome, GENESIS_HASH};
        let rec = |actor: &str| Record {
            v: 1,
            seq: 1,
            time: "2026-12-04T10:00:00Z".into(),
            event: "grant".into(),
            actor: actor.into(),
            remote: None,
            ticket_id: Some(123),
            server_num: Some(1),
            ssh_username: Some("root".into()),
            outcome: Outcome::Ok,
            details: serde_json::json!({}),
            prev: GENESIS_HASH.into(),
            hash: None,
        };
        let mut t = TableOut::default();
        let mut out = Vec::new();
        for _ in 0..TABLE_WINDOW {
            t.push(&rec("uid:0"), &mut out).unwrap();
        }
        assert!(t.rows.is_empty(), "the window was written out");
        t.push(&rec("uid:0"), &mut out).unwrap();
        t.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), TABLE_WINDOW + 2);
        assert!(lines[0].starts_with("TIME "), "{}", lines[0]);
        let col = lines[0].find("ACTOR").unwrap();
        assert_eq!(&lines[TABLE_WINDOW + 1][col..col + 5], "uid:0");
        let mut empty = Vec::new();
        TableOut::default().finish(&mut empty).unwrap();
        assert_eq!(empty, b"No matching audit records.\n");
    }

    #[test]
    fn unknown_events_are_refused_with_the_known_ones() {
        assert!(check_event("grant").is_ok());
        assert!(check_event("grant_extended").is_ok());
        let e = check_event("grnat").unwrap_err();
        assert!(e.contains("\"grnat\"") && e.contains("revoke_all"), "{e}");
        assert!(e.contains("grant_extended"), "{e}");
    }
}
