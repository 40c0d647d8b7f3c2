//! The audit trail: one hash-chained JSON record per change, appended and
//! fsync'ed before the change is acknowledged.
//!
//! - [`record`]: the versioned record schema and the chain arithmetic (pure).
//! - [`events`]: the event names.
//! - [`writer`]: the durable appender ([`AuditLog`]); [`tail`]: finding and
//!   repairing a torn end of the file.
//! - [`cpanel`]: cPanel's classic line format; [`journald`]: the journal copy.
//! - [`verify`], [`show`], [`replay`]: the auditor's tools; [`cli`]: their
//!   command-line entry points; [`files`]: rotated files, plain or gzip.
//!
//! # Schema v1
//!
//! The log (default `/var/cpanel/logs/supportauth/audit.log`, directory 0700,
//! file 0600) holds one JSON object per line, its members always in this
//! order and serialised compactly (no spaces):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `v` | int | schema version, `1` |
//! | `seq` | int | 1, 2, 3, ... across the whole log and its rotated files |
//! | `time` | string | UTC, RFC 3339 (`2026-11-23T13:28:53Z`) |
//! | `event` | string | what happened (below) |
//! | `actor` | string | who: `token:<whm user>:<token name>` (API token), `uid:<n>` (local caller, from the socket's peer credentials), `system` (expiry, reconciliation, daemon lifecycle) |
//! | `remote` | string/null | the caller's address (`203.0.113.9`), `unix` for the local socket, null for `system` |
//! | `ticket_id` | int/null | |
//! | `server_num` | int/null | |
//! | `ssh_username` | string/null | the login user the change concerns |
//! | `outcome` | string | `ok` or `failed` (a failed attempt is recorded too) |
//! | `details` | object | event-specific (below) |
//! | `prev` | string | the previous record's `hash`; 64 zeros ("genesis") for seq 1 |
//! | `hash` | string | SHA-256 (hex) of this line without its `,"hash":"…"` member, i.e. of the bytes up to `prev`'s closing quote followed by `}` |
//!
//! Editing a line breaks its own `hash`; deleting, inserting or reordering
//! lines breaks `seq` and `prev`; a file's first record links to the last
//! record of the file before it (rotation keeps the chain); truncating the
//! tail is caught by the chain head (`seq`, `hash` of the last record) that
//! the state database keeps (table `audit_head`), saved after each fsync
//! (for a grant's or revoke's closing records, by the caller in the same
//! commit as its "done" mark; see `AuditLog::append_closing`). The log is
//! never more than one batch (`MAX_BATCH` records) past the stored head:
//! an append first saves a head not known to be saved, and writes nothing
//! if it cannot. A crash leaves at most that batch, which the next open
//! adopts; `audit verify` reports it as pending and fails on more.
//!
//! A torn tail (a half-written line, NUL blocks: what a power cut leaves)
//! is cut before the next write, its bytes saved next to the log as
//! `<log>.damaged-<seq>-<time>`, and recorded as `audit_tail_damaged`
//! (see [`tail`]); `audit verify` reports each such repair.
//!
//! # Events
//!
//! Lifecycle (replay uses only these, with outcome `ok`):
//! - `grant`: access for (ticket_id, server_num) is now active as
//!   ssh_username. details: `expires_at` (epoch or null), `access_ips`,
//!   `fingerprint`, `temp_user` (bool), `key_file`.
//! - `revoke`, `expire`, `revoke_closed`, `revoke_all`, `grant_rolled_back`:
//!   access for (ticket_id, server_num) is gone.
//!
//! Steps (one host change each): `key_added`, `key_removed`, `user_created`,
//! `user_deleted`, `password_set`, `sudoers_added`, `sudoers_removed`,
//! `whitelist_added`, `whitelist_removed` (details `backend`, `address`).
//!
//! Others: `api_token_create`, `api_token_update`, `api_token_revoke`,
//! `auth_failure` (rate-limited), `config_reload`, `drift_repaired`,
//! `ssh_test` (details `result`), `daemon_start`, `daemon_stop`,
//! `audit_tail_missing`, `audit_tail_damaged` (details `file`, `offset`,
//! `length`, `sha256`, `saved_to`), `audit_records_dropped`,
//! `notify_failed` and `notify_dropped` (see `crate::notify`).
//!
//! Support sessions, from sshd's log (actor `system`; ticket, server and
//! user of the grant whose key logged in): `support_login` (details
//! `address`, `port`, `fingerprint`, `key_type`, `pid`, `grant_id`,
//! `in_window`; `warning` when the key was used outside its grant's window,
//! user or addresses), `support_logout` (also `session_secs`),
//! `support_session_ended` (a revoke, expiry, closed ticket or kill switch
//! ended it: also `reason`, `result`).
//!
//! # Classic format
//!
//! With `audit.format = "cpanel"` the file holds cPanel's colon-separated
//! lines instead (see [`cpanel`]); they carry no chain and cannot be
//! verified. `audit.journald = true` also sends every record to journald
//! with `SUPPORTAUTH_*` fields (see [`journald`]).

pub mod cli;
pub mod cpanel;
pub mod events;
pub mod files;
pub mod journald;
pub mod record;
pub mod replay;
pub mod show;
pub mod tail;
pub mod verify;
pub mod writer;

pub use cpanel::render_cpanel;
pub use journald::JournaldSink;
pub use record::{AuditEvent, Outcome, Record};
pub use replay::{active_grants, ReplayedGrant};
pub use verify::{verify_files, VerifyReport};
pub use writer::{AuditError, AuditLog, ChainHead, TailMissing};
