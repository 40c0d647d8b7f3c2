//! Emitting records to journald (and through it to syslog) with structured
//! fields, so fleet log pipelines can collect them centrally.
//!
//! We speak the journal's native protocol directly: one datagram per record
//! to `/run/systemd/journal/socket`, made of `KEY=VALUE\n` fields, and for a
//! value containing a newline `KEY\n` + its length (u64 little endian) +
//! value + `\n`. Sending never blocks and never fails an append: the file
//! is the record of truth, journald a copy (a failure is logged by tracing).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::record::{Outcome, Record};

pub const SYSTEM_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_IDENTIFIER: &str = "supportauth-audit";

/// Where journald listens (injectable for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournaldSink {
    socket: PathBuf,
}

impl JournaldSink {
    /// The system journal.
    pub fn system() -> Self {
        Self::at(Path::new(SYSTEM_SOCKET))
    }
    /// A journal socket at `path`.
    pub fn at(path: &Path) -> Self {
        JournaldSink {
            socket: path.to_path_buf(),
        }
    }
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends the record; failures are reported by tracing, never returned.
    pub fn emit(&self, rec: &Record) {
        if let Err(e) = self.try_emit(rec) {
            tracing::warn!(
                socket = %self.socket.display(),
                seq = rec.seq,
                error = %e,
                "audit record not sent to journald (the audit file still has it)"
            );
        }
    }

    pub fn try_emit(&self, rec: &Record) -> io::Result<usize> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        sock.send_to(&encode(rec), &self.socket)
    }
}

/// The journal fields of a record.
pub fn fields(rec: &Record) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("MESSAGE", message(rec)),
        ("PRIORITY", priority(rec).to_string()),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.to_string()),
        ("SUPPORTAUTH_SCHEMA", rec.v.to_string()),
        ("SUPPORTAUTH_SEQ", rec.seq.to_string()),
        ("SUPPORTAUTH_TIME", rec.time.clone()),
        ("SUPPORTAUTH_EVENT", rec.event.clone()),
        ("SUPPORTAUTH_ACTOR", rec.actor.clone()),
        (
            "SUPPORTAUTH_OUTCOME",
            match rec.outcome {
                Outcome::Ok => "ok".into(),
                Outcome::Failed => "failed".into(),
            },
        ),
    ];
    if let Some(r) = &rec.remote {
        f.push(("SUPPORTAUTH_REMOTE", r.clone()));
    }
    if let Some(t) = rec.ticket_id {
        f.push(("SUPPORTAUTH_TICKET_ID", t.to_string()));
    }
    if let Some(s) = rec.server_num {
        f.push(("SUPPORTAUTH_SERVER_NUM", s.to_string()));
    }
    if let Some(u) = &rec.ssh_username {
        f.push(("SUPPORTAUTH_SSH_USERNAME", u.clone()));
    }
    f.push(("SUPPORTAUTH_DETAILS", rec.details.to_string()));
    f.push(("SUPPORTAUTH_PREV", rec.prev.clone()));
    if let Some(h) = &rec.hash {
        f.push(("SUPPORTAUTH_HASH", h.clone()));
    }
    f
}

/// The datagram for a record in the native journal protocol.
pub fn encode(rec: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    for (key, value) in fields(rec) {
        out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Parses a native-protocol datagram (the inverse of [`encode`]; for tests
/// and for anyone checking what we send).
pub fn decode(mut buf: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let nl = buf.iter().position(|&b| b == b'\n')?;
        let line = &buf[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8(line[..eq].to_vec()).ok()?,
                line[eq + 1..].to_vec(),
            ));
            buf = &buf[nl + 1..];
        } else {
            let key = String::from_utf8(line.to_vec()).ok()?;
            let rest = &buf[nl + 1..];
            let len_bytes: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            let len = usize::try_from(u64::from_le_bytes(len_bytes)).ok()?;
            let value = rest.get(8..8 + len)?.to_vec();
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            out.push((key, value));
            buf = &rest[8 + len + 1..];
        }
    }
    Some(out)
}

fn priority(rec: &Record) -> u8 {
    // notice for changes, warning for failures (auth failures included).
    if rec.outcome == Outcome::Failed || rec.event == super::events::AUTH_FAILURE {
        4
    } else {
        5
    }
}

fn message(rec: &Record) -> String {
    let mut m = format!("audit #{} {} by {}", rec.seq, rec.event, rec.actor);
    if let Some(t) = rec.ticket_id {
        m.push_str(&format!(" ticket {t}"));
    }
    if let Some(s) = rec.server_num {
        m.push_str(&format!(" server {s}"));
    }
    if let Some(u) = &rec.ssh_username {
        m.push_str(&format!(" user {u}"));
    }
    if let Some(r) = &rec.remote {
        m.push_str(&format!(" from {r}"));
    }
    if rec.outcome == Outcome::Failed {
        m.push_str(" FAILED");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS_HASH;
    use serde_json::json;

    fn rec() -> Record {
        Record {
            v: 1,
            seq: 9,
            time: "2026-11-23T00:00:00Z".into(),
            event: "grant".into(),
            actor: "uid:0".into(),
            remote: Some("unix".into()),
            ticket_id: Some(77),
            server_num: Some(1),
            ssh_username: Some("root".into()),
            outcome: Outcome::Ok,
            details: json!({"note": "two\nlines"}),
            prev: GENESIS_HASH.into(),
            hash: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn encode_decode_round_trip_with_binary_safe_values() {
        let mut r = rec();
        r.ssh_username = Some("multi\nline".into());
        let fields = decode(&encode(&r)).unwrap();
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(get("SUPPORTAUTH_SSH_USERNAME").unwrap(), "multi\nline");
        assert_eq!(get("SUPPORTAUTH_SEQ").unwrap(), "9");
        assert_eq!(get("SYSLOG_IDENTIFIER").unwrap(), SYSLOG_IDENTIFIER);
        assert!(get("MESSAGE").unwrap().contains("ticket 77"));
    }

    #[test]
    fn missing_socket_is_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let sink = JournaldSink::at(&d.path().join("nope"));
        assert!(sink.try_emit(&rec()).is_err());
        sink.emit(&rec()); // logs, does not panic or fail
    }
}
