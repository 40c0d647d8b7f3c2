//! The executor: gathers facts from the host, asks the [`planner`], applies
//! the plan through the host traits, records intent in the store before it
//! touches anything, and audits every change.
//!
//! - [`grant`]: make a grant (fail closed: rolled back unless fully applied and audited).
//! - [`revoke`]: take access away (never fails closed: proceeds and reports).
//! - [`reconcile`]: converge the host to the store after a crash or drift.
//!
//! All host-changing work is serialised by one lock: grants are rare and
//! short, and one order of events keeps every file and user consistent.
//!
//! [`planner`]: crate::planner

pub mod background;
pub mod extend;
pub mod fault;
pub mod grant;
pub mod host;
pub mod reconcile;
pub mod revoke;
pub mod sessions;
pub mod support_ips;

use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::caller::Caller;
use crate::planner::TtlPolicy;
use crate::store::grants::GrantRow;
use crate::store::Store;
use crate::types::SupportIp;

pub use host::{Host, HostFirewall, WhitelistOutcome};

/// Why an engine operation could not run at all (the answer's `reason`).
/// Failures of single host steps are reported per grant instead (see
/// `Revoked::errors`, `GrantError`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("The state database failed: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Nothing matched, or the request cannot be done; the host is as it was.
    #[error("{0}")]
    Refused(String),
    /// The host could not be read to decide what to do.
    #[error("{0}")]
    Host(String),
}

/// The API and the CLI show an engine error as its message.
impl From<EngineError> for String {
    fn from(e: EngineError) -> String {
        e.to_string()
    }
}

/// The parts of the configuration that may change on reload.
#[derive(Debug, Clone)]
pub struct Policy {
    pub ttl: TtlPolicy,
    pub default_ips: Vec<SupportIp>,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        Policy {
            ttl: TtlPolicy {
                default_ttl_secs: cfg.access.default_ttl_secs,
                max_ttl_secs: cfg.access.max_ttl_secs,
                allow_unlimited: cfg.access.allow_unlimited,
            },
            default_ips: cfg.access.support_ips.clone(),
        }
    }
}

pub struct Engine {
    store: Store,
    audit: Arc<AuditLog>,
    host: Host,
    clock: Arc<dyn Clock>,
    policy: RwLock<Policy>,
    /// Serialises every change to keys, users, sudoers and the store.
    changes: Arc<Mutex<()>>,
    /// Grants queue here before the change lock, one at a time (see
    /// [`Engine::grant`]).
    grant_queue: Mutex<()>,
    /// Serialises firewall updates; held apart from `changes`, so taking a
    /// key away never waits for a firewall tool.
    firewall: Mutex<()>,
    /// Woken when a grant is made, so the expiry timer can wake earlier.
    grants_changed: Arc<tokio::sync::Notify>,
}

impl Engine {
    pub fn new(
        store: Store,
        audit: Arc<AuditLog>,
        host: Host,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Engine {
        Engine {
            store,
            audit,
            host,
            clock,
            policy: RwLock::new(policy),
            changes: Arc::new(Mutex::new(())),
            grant_queue: Mutex::new(()),
            firewall: Mutex::new(()),
            grants_changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Notified after every grant: the expiry timer recomputes its wake-up
    /// (a new grant may end sooner than the one it sleeps for).
    pub fn grants_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.grants_changed)
    }

    pub fn set_policy(&self, policy: Policy) {
        if let Ok(mut p) = self.policy.write() {
            *p = policy;
        }
    }

    fn policy(&self) -> Policy {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// An audit record for `row`'s ticket.
    fn event_for(
        caller: &Caller,
        event: &str,
        row: &GrantRow,
        outcome: Outcome,
        details: Value,
    ) -> AuditEvent {
        AuditEvent::new(event, caller.actor())
            .remote(caller.remote())
            .ticket(row.ticket, Some(row.server))
            .user(row.ssh_username.as_str())
            .outcome(outcome)
            .details(details)
    }

    /// Appends an audit record for `row`'s ticket.
    async fn audit_for(
        &self,
        caller: &Caller,
        event: &str,
        row: &GrantRow,
        outcome: Outcome,
        details: Value,
    ) -> Result<u64, crate::audit::AuditError> {
        self.audit
            .append(Self::event_for(caller, event, row, outcome, details))
            .await
    }

    /// Audits a change on a path that must not fail (revoke): a failed
    /// write becomes the `audit_log` non-fatal.
    async fn audit_nonfatal(
        &self,
        caller: &Caller,
        event: &str,
        row: &GrantRow,
        outcome: Outcome,
        details: Value,
        non_fatals: &mut Vec<String>,
    ) {
        if let Err(e) = self.audit_for(caller, event, row, outcome, details).await {
            tracing::error!(error = %e, event, "audit record could not be written");
            if !non_fatals.iter().any(|n| n == "audit_log") {
                non_fatals.push("audit_log".into());
            }
        }
    }

    /// Brings every whitelist to the union of the live grants' addresses
    /// (or removes it when none is left), auditing each change. Called at
    /// the end of a change, with its change lock (`serial`) and the live
    /// grants its last commit left (`live`, from [`Store::finish`]; `None`
    /// when unknown). When the firewall is free, its lock is taken before
    /// the change lock is released: no change can come between, so `live`
    /// is current and needs no second read. When a firewall tool is still
    /// running, the change lock is released first (a change never waits
    /// for a firewall tool) and the grants are read once the firewall's
    /// turn comes. Either way the last convergence applies the current set.
    async fn converge_whitelist(
        &self,
        serial: MutexGuard<'_, ()>,
        live: Option<Vec<GrantRow>>,
        caller: &Caller,
        non_fatals: &mut Vec<String>,
    ) -> WhitelistOutcome {
        let (_firewall, live) = match (self.firewall.try_lock(), live) {
            (Ok(turn), Some(live)) => (turn, Ok(live)),
            (turn, _) => {
                drop(turn);
                drop(serial);
                let turn = self.firewall.lock().await;
                (turn, self.store.live_grants().await)
            }
        };
        let live = match live {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read grants to converge the whitelist");
                return WhitelistOutcome::default();
            }
        };
        let ips = crate::planner::whitelist_ips(&live);
        let fw = self.host.firewall.clone();
        let run = || {
            if ips.is_empty() {
                fw.clear()
            } else {
                fw.ensure(&ips)
            }
        };
        let outcome = tokio::task::block_in_place(run);
        self.audit_whitelist_changes(caller, &outcome, non_fatals)
            .await;
        outcome
    }

    /// Audits each whitelist entry added, removed or found pre-existing.
    async fn audit_whitelist_changes(
        &self,
        caller: &Caller,
        outcome: &WhitelistOutcome,
        non_fatals: &mut Vec<String>,
    ) {
        for change in &outcome.changes {
            let ev = AuditEvent::new(change.event(), caller.actor())
                .remote(caller.remote())
                .details(serde_json::json!({
                    "backend": change.backend,
                    "address": change.address,
                }));
            if self.audit.append(ev).await.is_err() && !non_fatals.iter().any(|n| n == "audit_log")
            {
                non_fatals.push("audit_log".into());
            }
        }
        for e in &outcome.errors {
            tracing::warn!(error = %e, "whitelist backend reported an error");
        }
    }
}

#[cfg(test)]
mod tests;

impl Engine {
    /// How many grants are live (granting, active or revoking).
    pub async fn active_grant_count(&self) -> Result<usize, EngineError> {
        Ok(self.store.live_grants().await?.len())
    }

    /// Converges the whitelist to the live grants.
    pub async fn whitelist_converge(&self, caller: &Caller) -> WhitelistOutcome {
        let mut non_fatals = Vec::new();
        let serial = self.changes.lock().await;
        self.converge_whitelist(serial, None, caller, &mut non_fatals)
            .await
    }

    /// What the firewall has, compared with what the live grants need.
    pub async fn whitelist_check(&self) -> Result<Value, EngineError> {
        let live = self.store.live_grants().await?;
        let ips = crate::planner::whitelist_ips(&live);
        let fw = self.host.firewall.clone();
        Ok(tokio::task::block_in_place(|| fw.check(&ips)))
    }
}
