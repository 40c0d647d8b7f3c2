//! Everything that touches the host lives below this module.
//!
//! The crate's clippy.toml forbids `std::fs` writes elsewhere; this is the
//! one place they belong (`safefile` wraps them for everyone else).
#![allow(clippy::disallowed_methods)]

pub mod accounts;
pub mod exec;
pub mod keystore;
pub mod net;
pub mod processes;
pub mod safefile;
pub mod sessions;
pub mod sshd;
pub mod sudoers;
pub mod users;
