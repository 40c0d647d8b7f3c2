//! Crash-test fault points. When the daemon is started with
//! `SUPPORTAUTH_FAULT=<step>`, it kills itself with SIGKILL on reaching that
//! step, so tests can prove that a restart converges from any point. The
//! variable is read once; without it every point is a no-op.
//!
//! Steps: after_intent, after_user_created, after_password_set,
//! after_sudoers_installed, after_key_installed, after_grant_audited,
//! revoke_after_intent, revoke_after_key_removed, revoke_after_user_deleted.

use std::sync::OnceLock;

static FAULT: OnceLock<Option<String>> = OnceLock::new();

pub fn point(step: &str) {
    let armed = FAULT.get_or_init(|| std::env::var("SUPPORTAUTH_FAULT").ok());
    if armed.as_deref() == Some(step) {
        tracing::warn!(
            step,
            "fault point reached: killing the daemon (SUPPORTAUTH_FAULT)"
        );
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
}
