//! The audit trail: one hash-chained JSON record per change, appended and
//! fsync'ed before the change is acknowledged.
//!
//! - [`record`]: the versioned record schema and the chain arithmetic (pure).
//! - [`writer`]: the durable appender ([`AuditLog`]).

pub mod record;
pub mod writer;

pub use record::{AuditEvent, Outcome, Record};
pub use writer::{AuditError, AuditLog};
