//! Crash-test fault points. In a build with the `fault-injection` feature
//! (the test suite's), a daemon started with `SUPPORTAUTH_FAULT=<step>`
//! kills itself with SIGKILL on reaching that step, so tests can prove that
//! a restart converges from any point. A release build carries none: every
//! point compiles to nothing.
//!
//! Steps: after_intent, after_user_created, after_password_set,
//! after_sudoers_installed, after_key_installed, after_grant_audited,
//! after_grant_done, revoke_after_intent, revoke_after_key_removed,
//! revoke_after_user_deleted, revoke_after_audited, extend_after_key_rewritten,
//! extend_after_audited, extend_after_done, and
//! `repair_<name>` after each reconciler repair's host change.

#[cfg(feature = "fault-injection")]
pub fn point(step: &str) {
    use std::sync::OnceLock;
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    let armed = FAULT.get_or_init(|| std::env::var("SUPPORTAUTH_FAULT").ok());
    if armed.as_deref() == Some(step) {
        tracing::warn!(
            step,
            "fault point reached: killing the daemon (SUPPORTAUTH_FAULT)"
        );
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_step: &str) {}
