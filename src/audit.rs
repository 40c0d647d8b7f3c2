//! Hash-chained, fsync-durable audit trail (see the audit work).
