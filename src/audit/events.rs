//! The event names of schema v1, shared by the engine (which writes them)
//! and by replay/rendering (which read them). Names are stable: auditors'
//! filters and log pipelines match on them.

// Lifecycle: access for (ticket_id, server_num) became active as ssh_username.
pub const GRANT: &str = "grant";

// Lifecycle: access for (ticket_id, server_num) is gone.
pub const REVOKE: &str = "revoke";
pub const EXPIRE: &str = "expire";
pub const REVOKE_CLOSED: &str = "revoke_closed";
pub const REVOKE_ALL: &str = "revoke_all";
pub const GRANT_ROLLED_BACK: &str = "grant_rolled_back";
// Lifecycle: a grant's end moved (details: previous_expires_at, expires_at).
pub const GRANT_EXTENDED: &str = "grant_extended";

// Steps: one host change each.
pub const KEY_ADDED: &str = "key_added";
pub const KEY_REMOVED: &str = "key_removed";
pub const USER_CREATED: &str = "user_created";
pub const USER_DELETED: &str = "user_deleted";
pub const PASSWORD_SET: &str = "password_set";
pub const SUDOERS_ADDED: &str = "sudoers_added";
pub const SUDOERS_REMOVED: &str = "sudoers_removed";
pub const WHITELIST_ADDED: &str = "whitelist_added";
pub const WHITELIST_REMOVED: &str = "whitelist_removed";
pub const WHITELIST_PREEXISTING: &str = "whitelist_preexisting";

// Everything else that changes something or that an auditor must see.
pub const API_TOKEN_CREATE: &str = "api_token_create";
pub const API_TOKEN_UPDATE: &str = "api_token_update";
pub const API_TOKEN_REVOKE: &str = "api_token_revoke";
pub const AUTH_FAILURE: &str = "auth_failure";
pub const CONFIG_RELOAD: &str = "config_reload";
pub const DRIFT_REPAIRED: &str = "drift_repaired";
pub const PORTAL_CONNECT: &str = "portal_connect";
pub const SSH_TEST: &str = "ssh_test";
pub const DAEMON_START: &str = "daemon_start";
pub const DAEMON_STOP: &str = "daemon_stop";
pub const AUDIT_TAIL_MISSING: &str = "audit_tail_missing";
/// Records whose append failed were kept and this many more dropped (the
/// backlog was full); details: count, kept_at_most.
pub const AUDIT_RECORDS_DROPPED: &str = "audit_records_dropped";
/// A torn or damaged end of the live file was cut and saved aside
/// (details `file`, `offset`, `length`, `sha256`, `saved_to`).
pub const AUDIT_TAIL_DAMAGED: &str = "audit_tail_damaged";
/// A notification was given up after its last attempt (details
/// `receiver`, `seq`, `event`, `attempts`, `error`).
pub const NOTIFY_FAILED: &str = "notify_failed";
/// Notifications skipped unsent: more were pending than `notify.max_pending`,
/// or their records had left the log (details `receiver`, `count`,
/// `reason`, `from_seq`, `to_seq`).
pub const NOTIFY_DROPPED: &str = "notify_dropped";

// Seen in sshd's log (issue 18): a login with a grant's key, its end, and
// a support session supportauth ended because its access ended.
/// details: `address`, `port`, `fingerprint`, `key_type`, `pid`,
/// `grant_id`, `in_window`, and `warning` when outside the window.
pub const SUPPORT_LOGIN: &str = "support_login";
/// details: `address`, `port`, `fingerprint`, `pid`, `grant_id`,
/// `session_id`, `session_secs`, `seen` (`log`, or `process_gone` when sshd wrote no
/// logout line).
pub const SUPPORT_LOGOUT: &str = "support_logout";
/// details: `address`, `port`, `fingerprint`, `pid`, `session_id`,
/// `session_secs`, `reason`, `result`.
pub const SUPPORT_SESSION_ENDED: &str = "support_session_ended";

/// Events after which access for (ticket_id, server_num) no longer exists.
pub const ENDING: [&str; 5] = [REVOKE, EXPIRE, REVOKE_CLOSED, REVOKE_ALL, GRANT_ROLLED_BACK];

/// Every event name schema v1 defines.
pub const ALL: [&str; 35] = [
    GRANT,
    GRANT_EXTENDED,
    REVOKE,
    EXPIRE,
    REVOKE_CLOSED,
    REVOKE_ALL,
    GRANT_ROLLED_BACK,
    KEY_ADDED,
    KEY_REMOVED,
    USER_CREATED,
    USER_DELETED,
    PASSWORD_SET,
    SUDOERS_ADDED,
    SUDOERS_REMOVED,
    WHITELIST_ADDED,
    WHITELIST_REMOVED,
    WHITELIST_PREEXISTING,
    API_TOKEN_CREATE,
    API_TOKEN_UPDATE,
    API_TOKEN_REVOKE,
    AUTH_FAILURE,
    CONFIG_RELOAD,
    DRIFT_REPAIRED,
    PORTAL_CONNECT,
    SSH_TEST,
    DAEMON_START,
    DAEMON_STOP,
    AUDIT_TAIL_MISSING,
    AUDIT_TAIL_DAMAGED,
    AUDIT_RECORDS_DROPPED,
    NOTIFY_FAILED,
    NOTIFY_DROPPED,
    SUPPORT_LOGIN,
    SUPPORT_LOGOUT,
    SUPPORT_SESSION_ENDED,
];

/// Whether `event` ends access for its (ticket_id, server_num).
pub fn is_ending(event: &str) -> bool {
    ENDING.contains(&event)
}
