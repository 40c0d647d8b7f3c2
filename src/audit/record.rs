//! Audit record schema, version 1 (pure: no I/O).
//!
//! A record is one line of JSON with the fields below, in this order:
//!
//! ```text
//! {"v":1,"seq":7,"time":"2026-11-23T13:28:53Z","event":"grant","actor":"uid:0",
//!  "remote":"unix","ticket_id":1234,"server_num":1,"ssh_username":"root",
//!  "outcome":"ok","details":{...},"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` is the SHA-256 of the line's bytes *without* the `,"hash":"…"`
//! member (the "body", which ends in `}`), so any edit to a line breaks its
//! own hash, and `prev` (the previous record's `hash`) makes deleting,
//! inserting or reordering lines break the chain. The first record of a
//! fresh installation has `prev` = 64 zeros and `seq` = 1.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::types::{ServerNum, TicketId};

pub const SCHEMA_VERSION: u32 = 1;
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether the change succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
}

/// What a caller asks to record; the writer adds seq, time and the chain.
/// (Serialised only to keep it in the store while the log cannot be
/// written.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// e.g. grant, revoke, expire, key_added, key_removed, user_created,
    /// user_deleted, sudoers_added, sudoers_removed, whitelist_added,
    /// whitelist_removed, api_token_create, auth_failure, config_reload,
    /// drift_repaired, ssh_test.
    pub event: String,
    /// `token:<user>:<name>`, `uid:<n>`, or `system`.
    pub actor: String,
    pub remote: Option<String>,
    pub ticket_id: Option<TicketId>,
    pub server_num: Option<ServerNum>,
    pub ssh_username: Option<String>,
    pub outcome: Outcome,
    pub details: Value,
}

impl AuditEvent {
    /// An event with no ticket context and `ok` outcome.
    pub fn new(event: impl Into<String>, actor: impl Into<String>) -> Self {
        AuditEvent {
            event: event.into(),
            actor: actor.into(),
            remote: None,
            ticket_id: None,
            server_num: None,
            ssh_username: None,
            outcome: Outcome::Ok,
            details: Value::Object(Default::default()),
        }
    }
    pub fn remote(mut self, remote: Option<String>) -> Self {
        self.remote = remote;
        self
    }
    pub fn ticket(mut self, ticket: TicketId, server: Option<ServerNum>) -> Self {
        self.ticket_id = Some(ticket);
        self.server_num = server;
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.ssh_username = Some(user.into());
        self
    }
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// A record as stored (field order is the serialisation order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub v: u32,
    pub seq: u64,
    pub time: String,
    pub event: String,
    pub actor: String,
    pub remote: Option<String>,
    pub ticket_id: Option<u64>,
    pub server_num: Option<u64>,
    pub ssh_username: Option<String>,
    pub outcome: Outcome,
    pub details: Value,
    pub prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Record {
    pub fn from_event(ev: &AuditEvent, seq: u64, time: String, prev: &str) -> Record {
        Record {
            v: SCHEMA_VERSION,
            seq,
            time,
            event: ev.event.clone(),
            actor: ev.actor.clone(),
            remote: ev.remote.clone(),
            ticket_id: ev.ticket_id.map(TicketId::get),
            server_num: ev.server_num.map(ServerNum::get),
            ssh_username: ev.ssh_username.clone(),
            outcome: ev.outcome,
            details: ev.details.clone(),
            prev: prev.to_string(),
            hash: None,
        }
    }

    /// Serialises the record (its `hash` is recomputed, never trusted) into
    /// a line ending in `\n`, returning the line and its hash.
    pub fn seal(&self) -> Result<(String, String), serde_json::Error> {
        let mut body_rec = self.clone();
        body_rec.hash = None;
        let body = serde_json::to_string(&body_rec)?;
        let hash = sha256_hex(body.as_bytes());
        let mut line = String::with_capacity(body.len() + 80);
        line.push_str(&body[..body.len() - 1]);
        line.push_str(",\"hash\":\"");
        line.push_str(&hash);
        line.push_str("\"}\n");
        Ok((line, hash))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why one line does not verify on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not a sealed record (no trailing hash member)")]
    NoHash,
    #[error("hash mismatch: the line was edited")]
    HashMismatch,
    #[error("not valid record JSON: {0}")]
    Json(String),
    #[error("unsupported schema version {0}")]
    Version(u32),
}

/// Checks one line's own hash (without the trailing newline) and parses it.
pub fn open_line(line: &str) -> Result<Record, LineError> {
    const TAIL: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.len() < TAIL + 2 || !line.is_char_boundary(line.len() - TAIL) {
        return Err(LineError::NoHash);
    }
    let (head, tail) = line.split_at(line.len() - TAIL);
    let claimed = tail
        .strip_prefix(",\"hash\":\"")
        .and_then(|t| t.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(LineError::NoHash)?;
    let mut body = String::with_capacity(head.len() + 1);
    body.push_str(head);
    body.push('}');
    if sha256_hex(body.as_bytes()) != claimed {
        return Err(LineError::HashMismatch);
    }
    let rec: Record = serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
    if rec.v != SCHEMA_VERSION {
        return Err(LineError::Version(rec.v));
    }
    // The body must be exactly our canonical serialisation, so two byte
    // sequences can never claim the same record.
    let (canonical, _) = rec.seal().map_err(|e| LineError::Json(e.to_string()))?;
    if canonical.trim_end_matches('\n') != line {
        return Err(LineError::Json("not in canonical form".into()));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev() -> AuditEvent {
        AuditEvent::new("grant", "uid:0")
            .ticket(
                TicketId::parse("12345").unwrap(),
                Some(ServerNum::parse("1").unwrap()),
            )
            .user("root")
            .details(json!({"fingerprint": "SHA256:abc"}))
    }

    #[test]
    fn seal_and_open_round_trip() {
        let rec = Record::from_event(&ev(), 1, "2026-11-23T00:00:00Z".into(), GENESIS_HASH);
        let (line, hash) = rec.seal().unwrap();
        assert!(line.ends_with("\"}\n"));
        assert!(line.starts_with("{\"v\":1,\"seq\":1,"));
        let back = open_line(&line).unwrap();
        assert_eq!(back.hash.as_deref(), Some(hash.as_str()));
        assert_eq!(back.ticket_id, Some(12345));
    }

    #[test]
    fn edited_line_is_detected() {
        let rec = Record::from_event(&ev(), 1, "2026-11-23T00:00:00Z".into(), GENESIS_HASH);
        let (line, _) = rec.seal().unwrap();
        let edited = line.replace("12345", "12346");
        assert_eq!(open_line(&edited), Err(LineError::HashMismatch));
        assert_eq!(open_line("{\"v\":1}"), Err(LineError::NoHash));
        assert_eq!(open_line(""), Err(LineError::NoHash));
    }

    /// Found by the `audit_line` fuzz target: a number in `details` that
    /// only fits a float (here an integer above u64::MAX) was sealed as
    /// `1.1844674407370955e+20`, which serde_json's default float parser
    /// read back one bit off, so the genuine line failed the canonical-form
    /// check (`show` and `replay` refused it). serde_json's
    /// `float_roundtrip` parses exactly.
    #[test]
    fn sealed_floats_reopen() {
        for text in [
            "118446744073709551615",
            "1.1844674407370955e+20",
            "0.1",
            "-2.5e-300",
        ] {
            let number: Value = serde_json::from_str(text).unwrap();
            let rec = Record::from_event(
                &ev().details(json!({"nested": [number]})),
                9,
                "2026-11-23T11:28:53Z".into(),
                GENESIS_HASH,
            );
            let (line, hash) = rec.seal().unwrap();
            let back = open_line(&line).unwrap_or_else(|e| panic!("{text}: {e}: {line}"));
            assert_eq!(back.hash.as_deref(), Some(hash.as_str()));
            assert_eq!(back.details, rec.details, "{text}");
        }
    }

    #[test]
    fn non_canonical_whitespace_is_refused() {
        let rec = Record::from_event(&ev(), 1, "t".into(), GENESIS_HASH);
        let (line, _) = rec.seal().unwrap();
        // Re-hash a body with extra whitespace: hash matches but form does not.
        let body = format!("{} }}", &line[..line.find(",\"hash\"").unwrap()]);
        let forged = format!(
            "{},\"hash\":\"{}\"}}",
            &body[..body.len() - 1],
            sha256_hex(body.as_bytes())
        );
        assert!(open_line(&forged).is_err());
    }
}
