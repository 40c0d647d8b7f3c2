//! Login watching (issue 18): who actually came in with a support key.
//!
//! - [`parse`]: sshd's log lines into events (pure).
//! - [`matcher`]: which grant a login belongs to, which session a logout
//!   ends, which sessions a revoke must end (pure).
//! - [`source`]: following the log file across rotation.
//! - [`watch`]: the daemon task: read, decide, audit, remember.
//!
//! sshd's session processes are found and ended in
//! [`crate::system::sessions`]; the engine ends a grant's sessions when the
//! grant ends (see `engine::sessions`).

pub mod journal;
pub mod matcher;
pub mod parse;
pub mod source;
pub mod watch;
