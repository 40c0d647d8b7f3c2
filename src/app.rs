//! The daemon's shared state, handed to every request as `Arc<App>`.
//!
//! Kept deliberately small: configuration (swapped whole on SIGHUP), the
//! store, the clock, the audit log, the access engine, and the
//! authentication failure limiter.

use std::sync::{Arc, RwLock};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::limiter::FailureLimiter;
use crate::portal::Portal;
use crate::store::Store;

pub struct App {
    /// The live configuration. Readers take a cheap `Arc` snapshot so a
    /// reload never changes settings under a running request.
    config: RwLock<Arc<Config>>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// Every change is recorded here before it is acknowledged.
    pub audit: Arc<AuditLog>,
    /// Grants, revokes, expiry and reconciliation; the only path to the host.
    pub engine: Arc<Engine>,
    /// The ticket system (settings fixed at start).
    pub portal: Portal,
    /// Slows down addresses that keep failing authentication.
    pub limiter: FailureLimiter,
    /// The Prometheus registry (the audit log's, which counts from the
    /// daemon's first record on).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Every dispatched call holds a read guard; shutdown takes the write
    /// guard to wait until in-flight calls (which may be changing the host)
    /// have finished.
    pub inflight: Arc<tokio::sync::RwLock<()>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Store,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditLog>,
        engine: Arc<Engine>,
    ) -> Arc<App> {
        let portal = Portal::from_config(&config, store.clone(), Arc::clone(&clock));
        Arc::new(App {
            metrics: Arc::clone(audit.metrics()),
            portal,
            config: RwLock::new(Arc::new(config)),
            store,
            clock,
            audit,
            engine,
            limiter: FailureLimiter::default(),
            inflight: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// A snapshot of the current configuration.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(g) => Arc::clone(&g),
            // A panic while holding the lock cannot leave a half-written Arc.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the configuration (after the caller validated it).
    pub fn set_config(&self, cfg: Config) {
        let new = Arc::new(cfg);
        match self.config.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}
