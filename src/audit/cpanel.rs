//! cPanel's classic audit line, for sites whose parsers expect it.
//!
//! cPanel (Whostmgr::API::1::TicketSupport) writes, per change:
//!
//! ```text
//! <localtime>:GRANT:<remote user>:<unix user>:<remote addr>:<key file>
//! <localtime>:REVOKE:<remote user>:<unix user>:<remote addr>:<key file>
//! <localtime>:SSH_TEST:<remote user>:<unix user>:<remote addr>:Test for '<ticket>' server <n> was '<result>'
//! ```
//!
//! `<localtime>` is Perl's scalar `localtime(time())`, i.e. C `ctime` without
//! the newline in the host's time zone: `Mon Nov 23 13:28:53 2026` (day of
//! month padded with a space). `<remote user>` is WHM's `REMOTE_USER`,
//! `<unix user>` the process user (`$ENV{USER}`, root under WHM), and a
//! missing remote user or address is written as `undef`, like cPanel.
//!
//! Our mapping from a [`Record`]: remote user = the WHM user of a token actor
//! (`token:<user>:<name>` gives `<user>`), `root` for `uid:0`, the number for
//! other `uid:<n>`, `system` for the daemon itself; unix user = the user
//! support logs in as (`ssh_username`: `root`, or the temporary user
//! `cp<ticket>.ssh`), `root` for records without one; remote addr = the
//! record's `remote`; key file = `details.key_file` (the authorized_keys
//! the key went into or left). Only `grant` maps to GRANT; `revoke`, `expire`,
//! `revoke_closed` and `revoke_all` map to REVOKE; `ssh_test` to SSH_TEST.

use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};

use super::events;
use super::record::{Outcome, Record};

/// cPanel's classic line for the record (without the newline), or `None`
/// when cPanel has no line for this event (or it did not succeed).
pub fn render_cpanel(rec: &Record) -> Option<String> {
    render_cpanel_in(rec, local_offset)
}

/// The classic line when there is one; otherwise the same six colon-separated
/// fields with the event name upper-cased and a `key=value` summary last, so
/// the classic-format file still records every change.
pub fn render_cpanel_line(rec: &Record) -> String {
    render_cpanel_line_in(rec, local_offset)
}

/// [`render_cpanel`] with the time zone given (tests use UTC).
pub fn render_cpanel_in(rec: &Record, offset: impl Fn(i64) -> UtcOffset) -> Option<String> {
    if rec.outcome != Outcome::Ok {
        return None;
    }
    let (kind, last) = match rec.event.as_str() {
        events::GRANT => ("GRANT", key_file(rec)),
        events::REVOKE | events::EXPIRE | events::REVOKE_CLOSED | events::REVOKE_ALL => {
            ("REVOKE", key_file(rec))
        }
        events::SSH_TEST => {
            let result = rec
                .details
                .get("result")
                .and_then(Value::as_str)
                .unwrap_or("UNKNOWN");
            (
                "SSH_TEST",
                format!(
                    "Test for '{}' server {} was '{}'",
                    opt_num(rec.ticket_id),
                    opt_num(rec.server_num),
                    result
                ),
            )
        }
        _ => return None,
    };
    Some(prefix_and(rec, kind, &last, offset))
}

/// [`render_cpanel_line`] with the time zone given.
pub fn render_cpanel_line_in(rec: &Record, offset: impl Fn(i64) -> UtcOffset + Copy) -> String {
    if let Some(line) = render_cpanel_in(rec, offset) {
        return line;
    }
    let mut summary = Vec::new();
    if let Some(t) = rec.ticket_id {
        summary.push(format!("ticket_id={t}"));
    }
    if let Some(s) = rec.server_num {
        summary.push(format!("server_num={s}"));
    }
    if let Some(u) = &rec.ssh_username {
        summary.push(format!("ssh_username={u}"));
    }
    let outcome = match rec.outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "failed",
    };
    summary.push(format!("outcome={outcome}"));
    if rec.details.as_object().is_some_and(|o| !o.is_empty()) {
        summary.push(format!("details={}", rec.details));
    }
    prefix_and(
        rec,
        &rec.event.to_ascii_uppercase(),
        &summary.join(" "),
        offset,
    )
}

fn prefix_and(rec: &Record, kind: &str, last: &str, offset: impl Fn(i64) -> UtcOffset) -> String {
    let remote = rec.remote.as_deref().unwrap_or("undef");
    let unix_user = rec
        .ssh_username
        .as_deref()
        .filter(|u| !u.is_empty())
        .unwrap_or("root");
    let line = format!(
        "{}:{}:{}:{}:{}:{}",
        localtime(&rec.time, offset),
        kind,
        remote_user(&rec.actor),
        unix_user.replace(':', "_"),
        if remote.is_empty() { "undef" } else { remote },
        last
    );
    // A newline in a value would forge a second line.
    line.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn key_file(rec: &Record) -> String {
    rec.details
        .get("key_file")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("undef")
        .to_string()
}

fn opt_num(n: Option<u64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_else(|| "undef".into())
}

/// WHM's REMOTE_USER equivalent of an actor (never contains a colon).
pub fn remote_user(actor: &str) -> String {
    let mut parts = actor.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("token"), Some(user), Some(_)) if !user.is_empty() => user.to_string(),
        (Some("uid"), Some("0"), None) => "root".to_string(),
        (Some("uid"), Some(n), None) if !n.is_empty() => n.to_string(),
        _ if actor.is_empty() => "undef".to_string(),
        _ => actor.replace(':', "_"),
    }
}

/// Perl's scalar `localtime`: `Mon Nov 23 13:28:53 2026`. A time that does
/// not parse as RFC 3339 is passed through unchanged.
fn localtime(rfc3339: &str, offset: impl Fn(i64) -> UtcOffset) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| {
            let t = t.to_offset(offset(t.unix_timestamp()));
            t.format(&fmt).ok()
        })
        .unwrap_or_else(|| rfc3339.to_string())
}

/// The host's UTC offset at `epoch` (TZ / /etc/localtime), via the
/// re-entrant `localtime_r`; UTC if that fails.
pub fn local_offset(epoch: i64) -> UtcOffset {
    let t = epoch as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r is thread-safe and both pointers are valid for the call.
    let res = unsafe { libc::localtime_r(&t, &mut tm) };
    if res.is_null() {
        return UtcOffset::UTC;
    }
    UtcOffset::from_whole_seconds(tm.tm_gmtoff as i32).unwrap_or(UtcOffset::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS_HASH;
    use serde_json::json;

    fn rec(event: &str, actor: &str, details: Value) -> Record {
        Record {
            v: 1,
            seq: 1,
            time: "2026-11-03T09:05:07Z".into(),
            event: event.into(),
            actor: actor.into(),
            remote: Some("203.0.113.9".into()),
            ticket_id: Some(12345),
            server_num: Some(2),
            ssh_username: Some("root".into()),
            outcome: Outcome::Ok,
            details,
            prev: GENESIS_HASH.into(),
            hash: None,
        }
    }

    fn utc(_: i64) -> UtcOffset {
        UtcOffset::UTC
    }

    #[test]
    fn classic_lines() {
        let g = rec(
            "grant",
            "token:root:deploy",
            json!({"key_file": "12345_server_2@cpanel.net_1794000000"}),
        );
        assert_eq!(
            render_cpanel_in(&g, utc).unwrap(),
            "Tue Nov  3 09:05:07 2026:GRANT:root:root:203.0.113.9:12345_server_2@cpanel.net_1794000000"
        );
        let mut r = rec("expire", "system", json!({}));
        r.remote = None;
        assert_eq!(
            render_cpanel_in(&r, utc).unwrap(),
            "Tue Nov  3 09:05:07 2026:REVOKE:system:root:undef:undef"
        );
        let t = rec("ssh_test", "uid:0", json!({"result": "SUCCESS"}));
        assert_eq!(
            render_cpanel_in(&t, utc).unwrap(),
            "Tue Nov  3 09:05:07 2026:SSH_TEST:root:root:203.0.113.9:Test for '12345' server 2 was 'SUCCESS'"
        );
        assert!(render_cpanel_in(&rec("key_added", "system", json!({})), utc).is_none());
        // A temporary user's grant and revoke carry that user and the key
        // file, as cPanel's do.
        let mut tg = rec(
            "grant",
            "uid:0",
            json!({"key_file": "/home/cp12345.ssh/.ssh/authorized_keys"}),
        );
        tg.ssh_username = Some("cp12345.ssh".into());
        assert_eq!(
            render_cpanel_in(&tg, utc).unwrap(),
            "Tue Nov  3 09:05:07 2026:GRANT:root:cp12345.ssh:203.0.113.9:/home/cp12345.ssh/.ssh/authorized_keys"
        );
        let mut tr = rec(
            "revoke",
            "uid:0",
            json!({"key_file": "/home/cp12345.ssh/.ssh/authorized_keys", "fingerprint": "SHA256:x"}),
        );
        tr.ssh_username = Some("cp12345.ssh".into());
        assert_eq!(
            render_cpanel_in(&tr, utc).unwrap(),
            "Tue Nov  3 09:05:07 2026:REVOKE:root:cp12345.ssh:203.0.113.9:/home/cp12345.ssh/.ssh/authorized_keys"
        );
        let mut failed = g.clone();
        failed.outcome = Outcome::Failed;
        assert!(render_cpanel_in(&failed, utc).is_none());
    }

    #[test]
    fn extended_lines_and_sanitising() {
        let w = rec(
            "whitelist_added",
            "uid:1000",
            json!({"backend": "nftables", "address": "a\nb"}),
        );
        let line = render_cpanel_line_in(&w, utc);
        assert!(line.starts_with("Tue Nov  3 09:05:07 2026:WHITELIST_ADDED:1000:root:203.0.113.9:ticket_id=12345 server_num=2 ssh_username=root outcome=ok details="));
        assert!(!line.contains('\n'));
        assert_eq!(remote_user("token:reseller:x"), "reseller");
        assert_eq!(remote_user("odd:thing:here:x"), "odd_thing_here_x");
    }

    #[test]
    fn host_offset_is_sane() {
        let o = local_offset(1_800_000_000);
        assert!(o.whole_hours().abs() <= 14);
    }
}
