//! The facts every layer shares: what a grant is, where it came from, the
//! state of its ticket, and who is asking ([`caller`]: the caller and its
//! rights). The store persists them, the planner decides on
//! them, the engine acts on them, the API shows them; none of those owns
//! them. Pure data, no I/O.

pub mod caller;

use serde::Serialize;

use crate::types::{ServerNum, SupportIp, TicketId, Username};

/// Who asked for a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantSource {
    /// An administrator or a script, with the support key in the request.
    Local,
    /// The ticket portal, which supplied the key.
    Portal,
}

impl GrantSource {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantSource::Local => "local",
            GrantSource::Portal => "portal",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(GrantSource::Local),
            "portal" => Some(GrantSource::Portal),
            _ => None,
        }
    }
}

/// The last ticket status the portal reported for a grant's ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TicketStatus {
    #[serde(rename = "OPEN")]
    Open,
    #[serde(rename = "CLOSED")]
    Closed,
    /// The portal could not be asked.
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "OPEN",
            TicketStatus::Closed => "CLOSED",
            TicketStatus::Unknown => "UNKNOWN",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OPEN" => Some(TicketStatus::Open),
            "CLOSED" => Some(TicketStatus::Closed),
            "UNKNOWN" => Some(TicketStatus::Unknown),
            _ => None,
        }
    }
}

/// Lifecycle of a grant row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Recorded before the host is touched; a start that finds it rolls
    /// it back (the caller never heard "yes").
    Granting,
    /// Applied and audited.
    Active,
    /// Recorded before removal; finished if found at start.
    Revoking,
    Revoked,
    Failed,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Granting => "granting",
            GrantState::Active => "active",
            GrantState::Revoking => "revoking",
            GrantState::Revoked => "revoked",
            GrantState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "granting" => GrantState::Granting,
            "active" => GrantState::Active,
            "revoking" => GrantState::Revoking,
            "revoked" => GrantState::Revoked,
            "failed" => GrantState::Failed,
            _ => return None,
        })
    }
    /// Whether the grant may still have a footprint on the host.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            GrantState::Granting | GrantState::Active | GrantState::Revoking
        )
    }
}

/// What a new grant will install, recorded before anything is touched.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub ticket: TicketId,
    pub server: ServerNum,
    pub source: GrantSource,
    pub ssh_username: Username,
    pub temp_user: bool,
    pub sudoers_dropin: bool,
    /// The install creates the account's `~/.ssh` (it has none).
    pub ssh_dir_created: bool,
    pub ssh_key: String,
    pub key_fingerprint: String,
    pub key_comment: String,
    pub access_ips: Vec<SupportIp>,
    pub server_name: String,
    pub ticket_subject: String,
    pub ssh_ip: String,
    pub ssh_port: u16,
    pub whm_ip: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub granted_by: String,
}

impl NewGrant {
    /// The row this grant becomes once inserted as `id` (the columns it
    /// does not set take the schema's defaults; a unit test compares this
    /// with the row read back).
    pub(crate) fn stored_as(&self, id: i64) -> GrantRow {
        GrantRow {
            id,
            ticket: self.ticket,
            server: self.server,
            state: GrantState::Granting,
            source: self.source,
            ssh_username: self.ssh_username.clone(),
            temp_user: self.temp_user,
            sudoers_dropin: self.sudoers_dropin,
            ssh_dir_created: self.ssh_dir_created,
            ssh_key: self.ssh_key.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
            key_comment: self.key_comment.clone(),
            access_ips: self.access_ips.clone(),
            server_name: self.server_name.clone(),
            ticket_subject: self.ticket_subject.clone(),
            ssh_ip: self.ssh_ip.clone(),
            ssh_port: self.ssh_port,
            whm_ip: self.whm_ip.clone(),
            ticket_status: TicketStatus::Open,
            created_at: self.created_at,
            expires_at: self.expires_at,
            ended_at: None,
            end_reason: None,
            granted_by: self.granted_by.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrantRow {
    pub id: i64,
    pub ticket: TicketId,
    pub server: ServerNum,
    pub state: GrantState,
    pub source: GrantSource,
    pub ssh_username: Username,
    pub temp_user: bool,
    pub sudoers_dropin: bool,
    /// The grant's install created the account's `~/.ssh`.
    pub ssh_dir_created: bool,
    pub ssh_key: String,
    pub key_fingerprint: String,
    pub key_comment: String,
    pub access_ips: Vec<SupportIp>,
    pub server_name: String,
    pub ticket_subject: String,
    pub ssh_ip: String,
    pub ssh_port: u16,
    pub whm_ip: String,
    pub ticket_status: TicketStatus,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub granted_by: String,
}
