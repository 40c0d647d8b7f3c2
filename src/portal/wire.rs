//! What the portal sends and answers (pure: no I/O), and how an HTTP answer
//! becomes a [`PortalError`] an admin can act on.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a portal call did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortalError {
    #[error("This server is not connected to the ticket system. Connect it first (ticket_validate_oauth2_code with the code from the portal's authorization page).")]
    NotConnected,
    #[error("The ticket system session has expired or was revoked (HTTP 401). Reconnect via ticket_validate_oauth2_code.")]
    SessionExpired,
    #[error("The ticket system has no authorization data for {0} (HTTP 404).")]
    NotFound(String),
    #[error("The ticket system failed (HTTP {0}); try again later.")]
    ServerError(u16),
    #[error("The ticket system answered with unexpected HTTP status {0}.")]
    Status(u16),
    #[error("The ticket system did not answer within {0} seconds.")]
    Timeout(u64),
    #[error("Cannot reach the ticket system at {0}.")]
    Connect(String),
    #[error("The ticket system sent an answer supportauth cannot understand: {0}")]
    Malformed(String),
    #[error("The ticket system's answer is larger than {0} bytes; refused.")]
    TooLarge(usize),
    #[error("The portal session could not be read or stored: {0}")]
    Store(String),
}

impl PortalError {
    /// Worth another try for an idempotent call.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PortalError::ServerError(_) | PortalError::Timeout(_) | PortalError::Connect(_)
        )
    }
}

/// Maps a final HTTP status to the error for `what` (used for 404).
pub fn check_status(status: u16, what: &str) -> Result<(), PortalError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(PortalError::SessionExpired),
        404 => Err(PortalError::NotFound(what.to_string())),
        500..=599 => Err(PortalError::ServerError(status)),
        s => Err(PortalError::Status(s)),
    }
}

/// Parses a JSON body into `T`, naming what did not fit.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, PortalError> {
    serde_json::from_slice(body).map_err(|e| PortalError::Malformed(e.to_string()))
}

/// A number or a string holding one (portals differ).
fn de_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum T {
        S(String),
        N(u64),
    }
    Ok(match T::deserialize(d)? {
        T::S(s) => s,
        T::N(n) => n.to_string(),
    })
}

fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let s = de_text(d)?;
    if s.is_empty() {
        return Ok(22);
    }
    s.trim().parse().map_err(serde::de::Error::custom)
}

fn default_port() -> u16 {
    22
}

/// OAuth2 token endpoint answer.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAnswer { .. }")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccessIp {
    pub ip: String,
}

/// One server entry of a ticket.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ServerEntry {
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub ssh_username: String,
    #[serde(default)]
    pub ssh_ip: String,
    #[serde(default = "default_port", deserialize_with = "de_port")]
    pub ssh_port: u16,
    #[serde(default)]
    pub whm_ip: String,
    #[serde(default)]
    pub root_escalation_method: String,
}

/// An open ticket; `servers` is optional in the listing.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenTicket {
    #[serde(deserialize_with = "de_text")]
    pub ticket_id: String,
    #[serde(default)]
    pub ticket_subject: String,
    #[serde(default)]
    pub servers: Option<BTreeMap<String, ServerEntry>>,
}

/// The answer to "record server details, fetch key".
#[derive(Debug, Clone, Deserialize)]
pub struct KeyAnswer {
    #[serde(flatten)]
    pub server: ServerEntry,
    pub ssh_public_key: String,
}

/// What is sent to record the server details (reference §6).
#[derive(Debug, Serialize)]
pub struct ServerDetails {
    pub ticket_id: u64,
    pub server_num: u64,
    pub secure_id: String,
    pub hostname: String,
    pub shorthostname: String,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub root_escalation_method: String,
}

/// Sent after the grant: who support logs in as, and (for a temporary wheel
/// user) the password sudo asks for.
#[derive(Serialize)]
pub struct LoginDetails<'a> {
    pub ssh_user: &'a str,
    pub root_escalation_method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wheel_pass: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct TestStarted {
    #[serde(deserialize_with = "de_text")]
    pub test_id: String,
}

/// A finished SSH test: one `result`, or `results` per server number.
#[derive(Debug, Deserialize)]
pub struct TestAnswer {
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub results: Option<BTreeMap<String, String>>,
}

impl TestAnswer {
    pub fn result_for(&self, server: u64) -> SshTestResult {
        let raw = self
            .results
            .as_ref()
            .and_then(|m| m.get(&server.to_string()).cloned())
            .or_else(|| self.result.clone())
            .unwrap_or_default();
        SshTestResult::parse(&raw)
    }
}

/// The SSH test vocabulary (seed 002), shared by the portal's test and the
/// local preflight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshTestResult {
    Success,
    Timeout,
    Escalate,
    Auth,
    Unreachable,
    Refused,
    Protocol,
    Environment,
    Unknown,
    TicketSystemTimeout,
}

impl SshTestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SshTestResult::Success => "SUCCESS",
            SshTestResult::Timeout => "TIMEOUT",
            SshTestResult::Escalate => "ESCALATE",
            SshTestResult::Auth => "AUTH",
            SshTestResult::Unreachable => "UNREACHABLE",
            SshTestResult::Refused => "REFUSED",
            SshTestResult::Protocol => "PROTOCOL",
            SshTestResult::Environment => "ENVIRONMENT",
            SshTestResult::Unknown => "UNKNOWN",
            SshTestResult::TicketSystemTimeout => "TICKET_SYSTEM_TIMEOUT",
        }
    }

    pub fn parse(s: &str) -> SshTestResult {
        match s.trim().to_ascii_uppercase().as_str() {
            "SUCCESS" => SshTestResult::Success,
            "TIMEOUT" => SshTestResult::Timeout,
            "ESCALATE" => SshTestResult::Escalate,
            "AUTH" => SshTestResult::Auth,
            "UNREACHABLE" => SshTestResult::Unreachable,
            "REFUSED" => SshTestResult::Refused,
            "PROTOCOL" => SshTestResult::Protocol,
            "ENVIRONMENT" => SshTestResult::Environment,
            "TICKET_SYSTEM_TIMEOUT" => SshTestResult::TicketSystemTimeout,
            _ => SshTestResult::Unknown,
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_reasons() {
        assert!(check_status(200, "x").is_ok());
        assert_eq!(check_status(401, "x"), Err(PortalError::SessionExpired));
        assert!(check_status(404, "ticket 5 server 1")
            .unwrap_err()
            .to_string()
            .contains("no authorization data for ticket 5 server 1"));
        assert!(check_status(503, "x").unwrap_err().is_transient());
        assert!(!check_status(418, "x").unwrap_err().is_transient());
    }

    #[test]
    fn lenient_numbers_and_defaults() {
        let t: Vec<OpenTicket> = parse(
            br#"[{"ticket_id": 12345, "ticket_subject": "s", "servers": {"1": {"ssh_ip": "10.0.0.1", "ssh_port": "2222"}}},
                 {"ticket_id": "777"}]"#,
        )
        .unwrap();
        assert_eq!(t[0].ticket_id, "12345");
        assert_eq!(t[0].servers.as_ref().unwrap()["1"].ssh_port, 2222);
        assert_eq!(t[1].ticket_id, "777");
        assert!(t[1].servers.is_none());
        assert!(matches!(
            parse::<Vec<OpenTicket>>(b"{nope"),
            Err(PortalError::Malformed(_))
        ));
    }

    #[test]
    fn test_results() {
        let a: TestAnswer = parse(br#"{"results": {"1": "auth", "2": "SUCCESS"}}"#).unwrap();
        assert_eq!(a.result_for(1), SshTestResult::Auth);
        assert_eq!(a.result_for(3), SshTestResult::Unknown);
        let b: TestAnswer = parse(br#"{"result": "SUCCESS"}"#).unwrap();
        assert_eq!(b.result_for(9).as_str(), "SUCCESS");
    }

    #[test]
    fn token_answer_debug_hides_tokens() {
        let t: TokenAnswer =
            parse(br#"{"access_token": "sekrit", "refresh_token": "r", "expires_in": 60}"#)
                .unwrap();
        assert!(!format!("{t:?}").contains("sekrit"));
    }

    #[test]
    fn form() {
        assert_eq!(
            form_encode(&[("a", "b c"), ("r", "http://x/")]),
            "a=b%20c&r=http%3A%2F%2Fx%2F"
        );
    }
}
