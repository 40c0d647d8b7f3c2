//! Strict, versioned TOML configuration.
//!
//! Every host path the daemon touches lives here, with defaults right for a
//! real cPanel / AlmaLinux / Ubuntu host. `root` redirects every *data* path
//! (files and directories) under a scratch directory; tool binaries are
//! executables and are always run from their configured absolute paths,
//! with `--prefix`/`-f` arguments pointing them at the scratch root where
//! the tool supports it.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::SupportIp;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/supportauth/config.toml";
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: invalid value for `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Schema version of this file; must be 1.
    pub version: u32,
    /// Prefix for every data path (not tool binaries). "/" on a real host.
    pub root: PathBuf,
    pub listen: ListenConfig,
    pub paths: PathsConfig,
    pub tools: ToolsConfig,
    pub access: AccessConfig,
    pub audit: AuditConfig,
    pub auth: AuthConfig,
    pub firewall: FirewallConfig,
    pub log: LogConfig,
    pub portal: PortalConfig,
    /// Webhooks and mail about grants, revokes, logins and audit damage
    /// (see [`crate::notify`]).
    pub notify: crate::notify::config::NotifyConfig,
    pub logins: LoginsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Unix control socket (local CLI; uid 0 peers act as root).
    pub socket: PathBuf,
    /// Octal mode of the socket, as a string ("0660").
    pub socket_mode: String,
    /// Group that owns the socket ("" keeps root's group).
    pub socket_group: String,
    /// TCP listeners. Loopback only, unless `tls_cert`/`tls_key` are set.
    pub tcp: Vec<SocketAddr>,
    /// PEM certificate chain and key for TLS on the TCP listeners.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// TCP connections (and non-root Unix-socket connections) served at
    /// once; further ones wait. Root's Unix-socket connections have a
    /// budget of their own of the same size, so they are never crowded out.
    pub max_connections: usize,
    /// Connections one source may hold at once: an address (IPv6 by /64,
    /// all of loopback counting as one) or a local uid. Beyond it a
    /// connection is answered 503 and closed.
    pub max_connections_per_source: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time allowed to send the request headers.
    pub header_timeout_secs: u64,
    /// Time allowed for a whole request, body and handling included.
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Directory of the SQLite state database and its lock (0700).
    pub state_dir: PathBuf,
    /// Append-only audit log (its directory is created 0700).
    pub audit_log: PathBuf,
    pub sshd_config: PathBuf,
    pub sudoers_dir: PathBuf,
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub hosts_allow: PathBuf,
    pub hosts_deny: PathBuf,
    pub csf_dir: PathBuf,
    /// cPHulk's presence marker (cPanel installs it with cPanel & WHM).
    pub cphulk_marker: PathBuf,
    /// cPanel's ticket system source file (TICKETS_SERVER_URL).
    pub cpsources: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    pub sshd: PathBuf,
    pub useradd: PathBuf,
    pub userdel: PathBuf,
    pub chpasswd: PathBuf,
    pub visudo: PathBuf,
    pub sudo: PathBuf,
    pub nft: PathBuf,
    pub iptables: PathBuf,
    pub ip6tables: PathBuf,
    pub firewall_cmd: PathBuf,
    pub firewall_offline_cmd: PathBuf,
    pub csf: PathBuf,
    pub whmapi1: PathBuf,
    pub journalctl: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Support source IPs used when a grant names none (and the portal has
    /// none). Empty: every grant must name its `access_ip-N`.
    pub support_ips: Vec<SupportIp>,
    /// Lifetime of a grant without `ttl`.
    pub default_ttl_secs: u64,
    /// Longest `ttl` accepted.
    pub max_ttl_secs: u64,
    /// Whether `ttl=0` (no expiry) is accepted. Off: every grant ends.
    pub allow_unlimited: bool,
    /// Group for temporary users: "" picks `wheel` if it exists, else `sudo`.
    pub wheel_group: String,
    /// Host name, local address and port passed to `sshd -T -C` ("" / 0:
    /// the machine's host name, 0.0.0.0 and the first `port` sshd reports).
    pub sshd_host: String,
    pub sshd_laddr: String,
    pub sshd_lport: u16,
    /// How often the reconciler compares the host with the store.
    pub reconcile_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// "json" (hash-chained JSON lines) or "cpanel" (cPanel's classic
    /// colon-separated lines, for sites whose parsers expect them).
    pub format: AuditFormat,
    /// Also emit each record to journald with structured fields.
    pub journald: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditFormat {
    Json,
    Cpanel,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed authentications from one address before answers slow down.
    pub failures_before_delay: u32,
    /// Window in which failures are counted.
    pub failure_window_secs: u64,
    /// Longest delay imposed on a repeatedly failing address.
    pub max_delay_ms: u64,
    /// Failed authentications audited one by one per window, from all
    /// sources together; the rest are counted in one summary record per
    /// window (count, sources, first and last time).
    pub audit_records_per_window: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// "auto", or a list of backends to use: nftables, iptables, firewalld,
    /// csf, cphulk, hosts_allow, none.
    pub backends: Vec<String>,
    /// nftables table (family inet) that holds our sets and rules.
    pub nft_table: String,
    /// iptables chain name (cPanel's name, so existing tooling recognises it).
    pub iptables_chain: String,
}

/// The ticket system (cPanel Customer Portal or anything speaking the same
/// calls, see [`crate::portal`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// Base URL of the ticket system's API. "" = `TICKETS_SERVER_URL` from
    /// `paths.cpsources` when present, else [`DEFAULT_PORTAL_URL`]. Must be
    /// https, except for loopback addresses (tests, local proxies).
    pub base_url: String,
    /// PEM bundle of trusted roots for https; "" = the system bundle.
    pub ca_file: String,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    /// Largest answer accepted from the portal.
    pub max_body_bytes: usize,
    /// Attempts for idempotent GETs (with backoff); POSTs are tried once.
    pub get_attempts: u32,
    /// How often open tickets are fetched to revoke closed ones; 0 = never.
    pub poll_interval_secs: u64,
    /// How long the portal's support IPs are reused before asking again.
    pub support_ips_ttl_secs: u64,
    /// 1:1 NAT: local address -> public address the portal knows, e.g.
    /// `nat = { "10.0.0.5" = "203.0.113.5" }`.
    pub nat: std::collections::BTreeMap<String, String>,
    /// SSH test polling (reference §6): every `test_poll_fast_ms` for the
    /// first `test_fast_phase_ms`, then every `test_poll_slow_ms`, giving up
    /// after `test_give_up_ms` with TICKET_SYSTEM_TIMEOUT.
    pub test_poll_fast_ms: u64,
    pub test_fast_phase_ms: u64,
    pub test_poll_slow_ms: u64,
    pub test_give_up_ms: u64,
    /// Time allowed for each step of the local SSH preflight.
    pub preflight_timeout_secs: u64,
}

/// Used when neither `portal.base_url` nor cpsources names one.
pub const DEFAULT_PORTAL_URL: &str = "https://tickets.cpanel.net/json-api/supportauth";

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            base_url: String::new(),
            ca_file: String::new(),
            connect_timeout_secs: 10,
            read_timeout_secs: 30,
            max_body_bytes: 1024 * 1024,
            get_attempts: 3,
            poll_interval_secs: 300,
            support_ips_ttl_secs: 120,
            nat: std::collections::BTreeMap::new(),
            test_poll_fast_ms: 1000,
            test_fast_phase_ms: 5000,
            test_poll_slow_ms: 3000,
            test_give_up_ms: 150_000,
            preflight_timeout_secs: 10,
        }
    }
}

/// Login watching: support logins read from sshd's log (see [`crate::logins`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoginsConfig {
    /// "auto": `path` if set; else the journal when journald runs (its
    /// socket exists) and `tools.journalctl` is there; else the first of
    /// /var/log/auth.log and /var/log/secure that exists (off when none
    /// is). "file": `path`. "journal": `journalctl`. "off": none.
    pub source: LoginSource,
    /// The file sshd's authentication messages go to.
    pub path: Option<PathBuf>,
    /// How often the file is read for new lines.
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LoginSource {
    Auto,
    File,
    Journal,
    Off,
}

/// What the login watcher follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginLog {
    File(PathBuf),
    /// The journal, through this journalctl.
    Journal(PathBuf),
}

/// journald's native socket: it exists while journald runs.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where sshd's messages usually go (Debian/Ubuntu, then RHEL family).
pub const AUTH_LOGS: [&str; 2] = ["/var/log/auth.log", "/var/log/secure"];

impl Default for LoginsConfig {
    fn default() -> Self {
        LoginsConfig {
            source: LoginSource::Auto,
            path: None,
            poll_interval_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "supportauth=debug".
    pub level: String,
    /// Optional log file (daily rotation by tracing-appender); "" for none.
    pub file: Option<PathBuf>,
    /// Send diagnostics to journald instead of stderr when running under
    /// systemd.
    pub journald: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            root: PathBuf::from("/"),
            listen: ListenConfig::default(),
            paths: PathsConfig::default(),
            tools: ToolsConfig::default(),
            access: AccessConfig::default(),
            audit: AuditConfig::default(),
            auth: AuthConfig::default(),
            firewall: FirewallConfig::default(),
            log: LogConfig::default(),
            portal: PortalConfig::default(),
            notify: Default::default(),
            logins: LoginsConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            socket: PathBuf::from("/run/supportauth/supportauth.sock"),
            socket_mode: "0660".into(),
            socket_group: String::new(),
            tcp: vec![SocketAddr::from(([127, 0, 0, 1], 2090))],
            tls_cert: None,
            tls_key: None,
            max_connections: 64,
            max_connections_per_source: 16,
            max_body_bytes: 64 * 1024,
            header_timeout_secs: 10,
            request_timeout_secs: 60,
        }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            state_dir: "/var/lib/supportauth".into(),
            audit_log: "/var/cpanel/logs/supportauth/audit.log".into(),
            sshd_config: "/etc/ssh/sshd_config".into(),
            sudoers_dir: "/etc/sudoers.d".into(),
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
            hosts_allow: "/etc/hosts.allow".into(),
            hosts_deny: "/etc/hosts.deny".into(),
            csf_dir: "/etc/csf".into(),
            cphulk_marker: "/usr/local/cpanel/bin/cphulk_pam_ctl".into(),
            cpsources: "/etc/cpsources.conf".into(),
        }
    }
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            sshd: "/usr/sbin/sshd".into(),
            useradd: "/usr/sbin/useradd".into(),
            userdel: "/usr/sbin/userdel".into(),
            chpasswd: "/usr/sbin/chpasswd".into(),
            visudo: "/usr/sbin/visudo".into(),
            sudo: "/usr/bin/sudo".into(),
            nft: "/usr/sbin/nft".into(),
            iptables: "/usr/sbin/iptables".into(),
            ip6tables: "/usr/sbin/ip6tables".into(),
            firewall_cmd: "/usr/bin/firewall-cmd".into(),
            firewall_offline_cmd: "/usr/bin/firewall-offline-cmd".into(),
            csf: "/usr/sbin/csf".into(),
            whmapi1: "/usr/local/cpanel/bin/whmapi1".into(),
            journalctl: "/usr/bin/journalctl".into(),
        }
    }
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            support_ips: Vec::new(),
            default_ttl_secs: 72 * 3600,
            max_ttl_secs: 30 * 24 * 3600,
            allow_unlimited: false,
            wheel_group: String::new(),
            sshd_host: String::new(),
            sshd_laddr: String::new(),
            sshd_lport: 0,
            reconcile_interval_secs: 60,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            format: AuditFormat::Json,
            journald: false,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            failures_before_delay: 5,
            failure_window_secs: 300,
            max_delay_ms: 5000,
            audit_records_per_window: 20,
        }
    }
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            backends: vec!["auto".into()],
            nft_table: "supportauth".into(),
            iptables_chain: "cPanel-support-access".into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            file: None,
            journald: false,
        }
    }
}

pub const FIREWALL_BACKENDS: &[&str] = &[
    "auto",
    "nftables",
    "iptables",
    "firewalld",
    "csf",
    "cphulk",
    "hosts_allow",
    "none",
];

/// Where the configuration came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    BuiltInDefaults,
}

impl Config {
    /// Loads `path`; when `path` is the default location and no file exists,
    /// returns the built-in defaults (the caller says so in the log).
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        let explicit = path.is_some();
        let path = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Config::parse(&text, &path)?, ConfigSource::File(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok((Config::default(), ConfigSource::BuiltInDefaults))
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks every value; the error names the offending key.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if self.version != CONFIG_VERSION {
            return Err(bad(
                "version",
                format!("this supportauth understands version {CONFIG_VERSION}"),
            ));
        }
        if !self.root.is_absolute() {
            return Err(bad("root", "must be an absolute path".into()));
        }
        let abs_paths: [(&str, &Path); 12] = [
            ("listen.socket", &self.listen.socket),
            ("paths.state_dir", &self.paths.state_dir),
            ("paths.audit_log", &self.paths.audit_log),
            ("paths.sshd_config", &self.paths.sshd_config),
            ("paths.sudoers_dir", &self.paths.sudoers_dir),
            ("paths.passwd", &self.paths.passwd),
            ("paths.group", &self.paths.group),
            ("paths.hosts_allow", &self.paths.hosts_allow),
            ("paths.hosts_deny", &self.paths.hosts_deny),
            ("paths.csf_dir", &self.paths.csf_dir),
            ("paths.cphulk_marker", &self.paths.cphulk_marker),
            ("paths.cpsources", &self.paths.cpsources),
        ];
        for (key, p) in abs_paths {
            check_clean_absolute(p).map_err(|m| bad(key, m))?;
        }
        let tools: [(&str, &Path); 14] = [
            ("tools.sshd", &self.tools.sshd),
            ("tools.useradd", &self.tools.useradd),
            ("tools.userdel", &self.tools.userdel),
            ("tools.chpasswd", &self.tools.chpasswd),
            ("tools.visudo", &self.tools.visudo),
            ("tools.sudo", &self.tools.sudo),
            ("tools.nft", &self.tools.nft),
            ("tools.iptables", &self.tools.iptables),
            ("tools.ip6tables", &self.tools.ip6tables),
            ("tools.firewall_cmd", &self.tools.firewall_cmd),
            (
                "tools.firewall_offline_cmd",
                &self.tools.firewall_offline_cmd,
            ),
            ("tools.csf", &self.tools.csf),
            ("tools.whmapi1", &self.tools.whmapi1),
            ("tools.journalctl", &self.tools.journalctl),
        ];
        for (key, p) in tools {
            check_clean_absolute(p).map_err(|m| bad(key, m))?;
        }
        for (key, p) in [
            ("listen.tls_cert", &self.listen.tls_cert),
            ("listen.tls_key", &self.listen.tls_key),
            ("log.file", &self.log.file),
            ("logins.path", &self.logins.path),
        ] {
            if let Some(p) = p {
                check_clean_absolute(p).map_err(|m| bad(key, m))?;
            }
        }
        self.socket_mode()
            .map_err(|m| bad("listen.socket_mode", m))?;
        let tls = self.tls_configured();
        if self.listen.tls_cert.is_some() != self.listen.tls_key.is_some() {
            return Err(bad(
                "listen.tls_cert",
                "tls_cert and tls_key must be set together".into(),
            ));
        }
        for addr in &self.listen.tcp {
            if !addr.ip().is_loopback() && !tls {
                return Err(bad(
                    "listen.tcp",
                    format!("{addr} is not a loopback address; set listen.tls_cert and listen.tls_key to serve it over TLS"),
                ));
            }
        }
        if self.listen.max_connections == 0 {
            return Err(bad("listen.max_connections", "must be at least 1".into()));
        }
        if self.listen.max_connections_per_source == 0 {
            return Err(bad(
                "listen.max_connections_per_source",
                "must be at least 1".into(),
            ));
        }
        if self.listen.max_body_bytes < 1024 {
            return Err(bad("listen.max_body_bytes", "must be at least 1024".into()));
        }
        if self.listen.header_timeout_secs == 0 || self.listen.request_timeout_secs == 0 {
            return Err(bad(
                "listen.header_timeout_secs",
                "timeouts must be at least 1 second".into(),
            ));
        }
        let a = &self.access;
        if let Err(e) = crate::types::check_support_ips(&a.support_ips) {
            return Err(bad("access.support_ips", e.0));
        }
        if a.default_ttl_secs == 0 {
            return Err(bad(
                "access.default_ttl_secs",
                "must be positive: every grant ends".into(),
            ));
        }
        if a.max_ttl_secs < a.default_ttl_secs {
            return Err(bad(
                "access.max_ttl_secs",
                "must not be shorter than access.default_ttl_secs".into(),
            ));
        }
        if !a.wheel_group.is_empty() && crate::types::Username::parse(&a.wheel_group).is_err() {
            return Err(bad("access.wheel_group", "not a valid group name".into()));
        }
        if !a.sshd_laddr.is_empty() && a.sshd_laddr.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("access.sshd_laddr", "not an IP address".into()));
        }
        if self.logins.source == LoginSource::File && self.logins.path.is_none() {
            return Err(bad(
                "logins.path",
                "logins.source = \"file\" needs the file's path".into(),
            ));
        }
        if !(50..=60_000).contains(&self.logins.poll_interval_ms) {
            return Err(bad(
                "logins.poll_interval_ms",
                "must be between 50 and 60000".into(),
            ));
        }
        if a.reconcile_interval_secs == 0 {
            return Err(bad(
                "access.reconcile_interval_secs",
                "must be at least 1".into(),
            ));
        }
        if self.firewall.backends.is_empty() {
            return Err(bad(
                "firewall.backends",
                "name at least one backend (or \"auto\" / \"none\")".into(),
            ));
        }
        for b in &self.firewall.backends {
            if !FIREWALL_BACKENDS.contains(&b.as_str()) {
                return Err(bad(
                    "firewall.backends",
                    format!(
                        "unknown backend {b:?}; known: {}",
                        FIREWALL_BACKENDS.join(", ")
                    ),
                ));
            }
        }
        let name_ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(&self.firewall.nft_table, 64) {
            return Err(bad(
                "firewall.nft_table",
                "1-64 characters of letters, digits, _ and -".into(),
            ));
        }
        if !name_ok(&self.firewall.iptables_chain, 28) {
            return Err(bad(
                "firewall.iptables_chain",
                "1-28 characters of letters, digits, _ and -".into(),
            ));
        }
        if self.auth.failure_window_secs == 0 {
            return Err(bad("auth.failure_window_secs", "must be at least 1".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| bad("log.level", e.to_string()))?;
        self.validate_portal().map_err(|(k, m)| bad(k, m))?;
        self.notify
            .validate(self.audit.format == AuditFormat::Json)
            .map_err(|(k, m)| bad(&k, m))?;
        Ok(())
    }

    fn validate_portal(&self) -> Result<(), (&'static str, String)> {
        let p = &self.portal;
        if !p.base_url.is_empty() {
            crate::portal::url::BaseUrl::parse(&p.base_url).map_err(|e| ("portal.base_url", e))?;
        }
        if !p.ca_file.is_empty() {
            check_clean_absolute(Path::new(&p.ca_file)).map_err(|m| ("portal.ca_file", m))?;
        }
        if p.connect_timeout_secs == 0 || p.read_timeout_secs == 0 || p.preflight_timeout_secs == 0
        {
            return Err((
                "portal.connect_timeout_secs",
                "timeouts must be at least 1 second".into(),
            ));
        }
        if p.max_body_bytes < 1024 {
            return Err(("portal.max_body_bytes", "must be at least 1024".into()));
        }
        if p.get_attempts == 0 {
            return Err(("portal.get_attempts", "must be at least 1".into()));
        }
        if p.test_poll_fast_ms == 0 || p.test_poll_slow_ms == 0 {
            return Err(("portal.test_poll_fast_ms", "must be at least 1".into()));
        }
        for (local, public) in &p.nat {
            if local.parse::<std::net::IpAddr>().is_err()
                || public.parse::<std::net::IpAddr>().is_err()
            {
                return Err((
                    "portal.nat",
                    format!("{local:?} = {public:?}: both sides must be IP addresses"),
                ));
            }
        }
        Ok(())
    }

    pub fn tls_configured(&self) -> bool {
        self.listen.tls_cert.is_some() && self.listen.tls_key.is_some()
    }

    pub fn socket_mode(&self) -> Result<u32, String> {
        let s = self.listen.socket_mode.trim();
        let digits = s.strip_prefix("0o").unwrap_or(s);
        let mode = u32::from_str_radix(digits, 8)
            .map_err(|_| format!("{s:?} is not an octal mode such as \"0660\""))?;
        if mode > 0o777 {
            return Err(format!("{s:?} has bits outside 0777"));
        }
        if mode & 0o007 != 0 {
            return Err(format!(
                "{s:?} gives other users access to the control socket"
            ));
        }
        Ok(mode)
    }

    /// Resolves a configured absolute data path under `root`.
    pub fn host_path(&self, p: &Path) -> PathBuf {
        under_root(&self.root, p)
    }

    /// What the login watcher follows (None: off).
    pub fn login_log(&self) -> Option<LoginLog> {
        let journal = LoginLog::Journal(self.tools.journalctl.clone());
        match (self.logins.source, &self.logins.path) {
            (LoginSource::Off, _) => None,
            (LoginSource::Journal, _) => Some(journal),
            (_, Some(p)) => Some(LoginLog::File(self.host_path(p))),
            (LoginSource::File, None) => None,
            (LoginSource::Auto, None) => {
                let journald = self.host_path(Path::new(JOURNAL_SOCKET)).exists()
                    && self.tools.journalctl.exists();
                if journald {
                    return Some(journal);
                }
                AUTH_LOGS
                    .iter()
                    .map(|p| self.host_path(Path::new(p)))
                    .find(|p| p.exists())
                    .map(LoginLog::File)
            }
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.host_path(&self.paths.state_dir)
    }
    pub fn database_path(&self) -> PathBuf {
        self.state_dir().join("state.db")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir().join("daemon.lock")
    }
    pub fn audit_log_path(&self) -> PathBuf {
        self.host_path(&self.paths.audit_log)
    }
    pub fn socket_path(&self) -> PathBuf {
        self.host_path(&self.listen.socket)
    }
    /// True when `root` is "/", i.e. this is the real host.
    pub fn is_real_root(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// Joins an absolute path under `root` ("/" leaves it unchanged).
pub fn under_root(root: &Path, p: &Path) -> PathBuf {
    let rel: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(rel)
}

fn check_clean_absolute(p: &Path) -> Result<(), String> {
    if !p.is_absolute() {
        return Err(format!("{} must be an absolute path", p.display()));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("{} must not contain “.” or “..”", p.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("test.toml")
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate(p()).unwrap();
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        let text = include_str!("../config.example.toml");
        let cfg = Config::parse(text, Path::new("config.example.toml")).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Config::parse("version = 1\n[listen]\nsockett = \"/x\"\n", p()).unwrap_err();
        assert!(err.to_string().contains("sockett"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("version = 2", "version"),
            ("[listen]\ntcp = [\"192.0.2.1:2090\"]", "listen.tcp"),
            ("[listen]\nsocket_mode = \"0666\"", "listen.socket_mode"),
            ("[paths]\nstate_dir = \"relative\"", "paths.state_dir"),
            ("[tools]\nsshd = \"/usr/../sbin/sshd\"", "tools.sshd"),
            ("[access]\ndefault_ttl_secs = 0", "access.default_ttl_secs"),
            ("[firewall]\nbackends = [\"pf\"]", "firewall.backends"),
            ("[log]\nlevel = \"nonsense[\"", "log.level"),
            (
                "[portal]\nbase_url = \"http://192.0.2.1/\"",
                "portal.base_url",
            ),
            ("[portal]\nnat = { \"10.0.0.1\" = \"x\" }", "portal.nat"),
            (
                "[[notify.webhook]]\nurl = \"http://192.0.2.1/hook\"\nsecret_file = \"/etc/s\"",
                "notify.webhook.url",
            ),
            (
                "[[notify.webhook]]\nurl = \"https://x.example/h\"\nsecret = \"short\"",
                "notify.webhook.secret",
            ),
            (
                "[[notify.webhook]]\nurl = \"https://x.example/h\"",
                "notify.webhook.secret_file",
            ),
            (
                "[[notify.webhook]]\nurl = \"https://x.example/h\"\nsecret_file = \"/etc/s\"\nevents = [\"grnat\"]",
                "notify.webhook.events",
            ),
            (
                "[notify.mail]\nto = [\"ops@example.com\\nBcc: x@y\"]\nfrom = \"a@b\"",
                "notify.mail.to",
            ),
            (
                "[audit]\nformat = \"cpanel\"\n[notify.mail]\nto = [\"ops@example.com\"]\nfrom = \"a@b\"",
                "notify.webhook",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(text, p()).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{key}`")),
                "{text}: {err}"
            );
        }
        let err = Config::parse("[access]\nsupport_ips = [\"0.0.0.0/0\"]", p()).unwrap_err();
        assert!(err.to_string().contains("too wide"), "{err}");
    }

    #[test]
    fn root_prefix_redirects_data_paths() {
        let cfg = Config {
            root: "/tmp/scratch".into(),
            ..Config::default()
        };
        assert_eq!(
            cfg.audit_log_path(),
            Path::new("/tmp/scratch/var/cpanel/logs/supportauth/audit.log")
        );
        assert_eq!(
            cfg.database_path(),
            Path::new("/tmp/scratch/var/lib/supportauth/state.db")
        );
        assert_eq!(
            Config::default().socket_path(),
            Path::new("/run/supportauth/supportauth.sock")
        );
    }

    #[test]
    fn non_loopback_allowed_with_tls() {
        let text = "[listen]\ntcp = [\"0.0.0.0:2091\"]\ntls_cert = \"/etc/supportauth/cert.pem\"\ntls_key = \"/etc/supportauth/key.pem\"\n";
        Config::parse(text, p()).unwrap();
    }
}
