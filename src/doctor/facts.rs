//! What `doctor` found on the host: plain data, filled by [`super::gather`]
//! and judged by [`super::checks`] (so every decision is unit-testable).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::firewall::Observed;
use crate::planner::LoginFacts;

#[derive(Debug, Clone)]
pub struct Facts {
    pub now: i64,
    /// Who runs the checks (they need root).
    pub euid: u32,
    pub sshd: SshdFacts,
    pub firewall: FirewallFacts,
    pub audit: AuditFacts,
    pub store: StoreFacts,
    pub listen: ListenFacts,
    pub portal: PortalFacts,
}

#[derive(Debug, Clone)]
pub struct SshdFacts {
    /// `access.support_ips` as configured.
    pub support_ips: Vec<String>,
    /// The sshd_config file asked about.
    pub config_file: PathBuf,
    /// One probe per support address (or one stand-in address when none
    /// is configured): what sshd and sudo allow, as the engine asks before
    /// a grant, or why that could not be learnt.
    pub probes: Vec<AddressProbe>,
}

#[derive(Debug, Clone)]
pub struct AddressProbe {
    pub address: String,
    /// True when no address is configured and a documentation address
    /// (outside any `Match Address` block, presumably) stands in.
    pub stand_in: bool,
    pub facts: Result<LoginFacts, String>,
}

#[derive(Debug, Clone)]
pub struct FirewallFacts {
    /// `firewall.backends` as configured (`auto`, a list, or `none`).
    pub configured: Vec<String>,
    /// Each backend detected (or configured) and what it holds now.
    pub backends: Vec<(&'static str, Result<Observed, String>)>,
}

#[derive(Debug, Clone)]
pub struct AuditFacts {
    pub log: PathBuf,
    /// Whether the live log file exists.
    pub exists: bool,
    /// The chain head's seq in the store (records ever written), if any.
    pub stored_seq: Option<u64>,
    pub cpanel_format: bool,
    /// `audit verify` of the log and its rotated siblings against the
    /// store's chain head: (passed, its one-line summary).
    pub verify: Result<(bool, String), String>,
}

#[derive(Debug, Clone)]
pub struct StoreFacts {
    pub db: PathBuf,
    /// The state directory's owner uid and mode, when it exists.
    pub dir: Option<(u32, u32)>,
    /// None: no database yet.
    pub opened: Option<Result<StoreInfo, String>>,
    /// Migration versions this binary knows.
    pub known_migrations: Vec<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct StoreInfo {
    /// `PRAGMA integrity_check`'s answer ("ok" when sound).
    pub integrity: String,
    /// Versions recorded as applied.
    pub applied_migrations: Vec<i64>,
    /// The newest time the store recorded (grants, portal session).
    pub newest_time: Option<i64>,
    pub portal_connected: bool,
}

#[derive(Debug, Clone)]
pub struct ListenFacts {
    pub socket: PathBuf,
    /// Owner uid and mode of the socket's directory.
    pub socket_dir: Option<(u32, u32)>,
    /// (is a socket, owner uid, mode) of the socket file.
    pub socket_file: Option<(bool, u32, u32)>,
    /// Whether something accepts connections on the socket.
    pub answers: bool,
    /// `listen.socket_mode`, parsed.
    pub socket_mode: Result<u32, String>,
    pub tcp: Vec<SocketAddr>,
    /// TLS key path and its mode, when TLS is configured.
    pub tls_key: Option<(PathBuf, Option<u32>)>,
}

#[derive(Debug, Clone)]
pub struct PortalFacts {
    pub base_url: String,
    pub connected: bool,
    /// Only tried when connected: a TCP connection to the portal's host.
    pub reachable: Option<Result<(), String>>,
}
