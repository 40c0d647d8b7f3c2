//! supportauth: time-boxed, audited SSH access for hosting support staff.
//!
//! Layout (deciding is kept apart from acting):
//! - [`types`], [`domain`], [`config`], [`clock`]: validated input, the shared
//!   facts (grants, their states and sources), strict configuration, time.
//! - [`sshkey`], [`authorized_keys`], [`sshd_config`], [`planner`]: pure
//!   decisions (parse, plan), no I/O.
//! - [`system`]: the only module that touches the host (files, users, tools).
//! - [`firewall`]: whitelist backends (pure rule rendering + host actions via `system`).
//! - [`engine`]: executes plans through `system`, records intent and audits.
//! - [`store`]: SQLite state; [`audit`]: the hash-chained audit trail.
//! - [`api`], [`server`]: WHM API 1 endpoint; [`cli`]: the client; [`daemon`]: lifecycle.

// Unit tests build their scratch files with plain std::fs (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod api;
pub mod app;
pub mod audit;
pub mod authorized_keys;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod domain;
pub mod engine;
pub mod firewall;
pub mod limiter;
pub mod logins;
pub mod metrics;
pub mod notify;
pub mod planner;
pub mod portal;
pub mod server;
pub mod sshd_config;
pub mod sshkey;
pub mod store;
pub mod system;
#[cfg(test)]
pub mod testing;
pub mod types;
pub mod web;

/// For tests that cannot run on this machine (not root, a tool missing, no
/// namespaces): prints one loud `SKIPPED: …` line. When
/// `SUPPORTAUTH_TESTS_MUST_RUN` is set (CI sets it), the test fails
/// instead, so a skip can never pass for a success there.
#[doc(hidden)]
#[macro_export]
macro_rules! test_skip {
    ($($arg:tt)*) => {{
        let msg = format!($($arg)*);
        eprintln!("{msg}");
        if std::env::var_os("SUPPORTAUTH_TESTS_MUST_RUN").is_some() {
            panic!("{msg} (SUPPORTAUTH_TESTS_MUST_RUN is set: every test must run here)");
        }
    }};
}
