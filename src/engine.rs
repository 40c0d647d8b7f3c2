//! Executes plans on the host, recording intent and auditing.
