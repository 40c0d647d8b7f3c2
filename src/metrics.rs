//! Prometheus metrics (`GET /metrics`, OpenMetrics text), one registry per
//! daemon, held by the audit log (which counts every record it writes,
//! from the first one at start-up) and shared with [`crate::app::App`].
//!
//! Lifecycle counters are derived from the audit records, the one place
//! every grant, revoke, expiry and repair passes through durably; gauges
//! that mirror state (active grants, portal) are read at scrape time from
//! their source of truth, so they can never drift from it.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::audit::{events, Outcome};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevokeLabels {
    reason: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    function: String,
    result: &'static str,
}

fn tool_histogram() -> Histogram {
    // 1 ms .. ~16 s: sshd -T takes ~10 ms, useradd tens, a firewalld
    // reload seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The login kinds of active grants.
pub const KINDS: [&str; 3] = ["root", "temporary", "existing"];

pub struct Metrics {
    registry: Registry,
    grants: Family<OutcomeLabel, Counter>,
    revokes: Family<RevokeLabels, Counter>,
    expiries: Family<OutcomeLabel, Counter>,
    repairs: Family<OutcomeLabel, Counter>,
    audit_records: Family<EventLabel, Counter>,
    verify_ok: Gauge,
    verify_time: Gauge,
    /// When the last verification ran (Unix seconds; 0 = never), for
    /// deciding whether a scrape must verify again.
    verified_at: AtomicI64,
    auth_failures: Counter,
    api_calls: Family<CallLabels, Counter>,
    active_grants: Family<KindLabel, Gauge>,
    oldest_grant: Gauge,
    portal_connected: Gauge,
    tool_seconds: Family<ToolLabel, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("supportauth");
        let m = Metrics {
            grants: Family::default(),
            revokes: Family::default(),
            expiries: Family::default(),
            repairs: Family::default(),
            audit_records: Family::default(),
            verify_ok: Gauge::default(),
            verify_time: Gauge::default(),
            verified_at: AtomicI64::new(0),
            auth_failures: Counter::default(),
            api_calls: Family::default(),
            active_grants: Family::default(),
            oldest_grant: Gauge::default(),
            portal_connected: Gauge::default(),
            tool_seconds: Family::new_with_constructor(tool_histogram as fn() -> Histogram),
            registry: Registry::default(),
        };
        registry.register(
            "grants",
            "Grants that became active (ok) or were rolled back, from the audit records",
            m.grants.clone(),
        );
        registry.register(
            "revokes",
            "Grants revoked, by reason (revoke, closed, revoke_all) and outcome",
            m.revokes.clone(),
        );
        registry.register(
            "expiries",
            "Grants revoked because their time ran out, by outcome",
            m.expiries.clone(),
        );
        registry.register(
            "reconcile_repairs",
            "Differences between the store and the host the reconciler repaired (ok) or failed to (failed)",
            m.repairs.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records written (durably), by event",
            m.audit_records.clone(),
        );
        registry.register(
            "audit_verify_ok",
            "Result of the last audit chain verification: 1 passed, 0 failed, -1 not run yet",
            m.verify_ok.clone(),
        );
        registry.register(
            "audit_verify_timestamp_seconds",
            "When the audit chain was last verified (Unix time)",
            m.verify_time.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed API authentications (HTTP 401)",
            m.auth_failures.clone(),
        );
        registry.register(
            "api_calls",
            "API calls by authenticated callers, by function and result (1 ok, 0 refused)",
            m.api_calls.clone(),
        );
        registry.register(
            "active_grants",
            "Active grants by login kind (root, temporary user, existing user), read from the store",
            m.active_grants.clone(),
        );
        registry.register(
            "oldest_active_grant_timestamp_seconds",
            "When the oldest active grant was made (Unix time; 0 when none is active)",
            m.oldest_grant.clone(),
        );
        registry.register(
            "portal_connected",
            "1 when a ticket system session is stored, else 0",
            m.portal_connected.clone(),
        );
        registry.register(
            "tool_duration_seconds",
            "Run time of external tools (sshd -T, useradd, nft, ...), by tool",
            m.tool_seconds.clone(),
        );
        m.verify_ok.set(-1);
        // Every counter series exists from the start at 0, so rate() and
        // increase() see the first event.
        for outcome in ["ok", "failed"] {
            drop(m.grants.get_or_create(&OutcomeLabel { outcome }));
            drop(m.expiries.get_or_create(&OutcomeLabel { outcome }));
            drop(m.repairs.get_or_create(&OutcomeLabel { outcome }));
            for reason in ["revoke", "closed", "revoke_all"] {
                drop(m.revokes.get_or_create(&RevokeLabels { reason, outcome }));
            }
        }
        drop(m.grants.get_or_create(&OutcomeLabel {
            outcome: "rolled_back",
        }));
        m.set_active_grants(&[]);
        Metrics { registry, ..m }
    }

    /// Counts one durable audit record (and the lifecycle it reports).
    pub fn audit_record(&self, event: &str, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        };
        let known = events::ALL.iter().find(|e| **e == event).copied();
        self.audit_records
            .get_or_create(&EventLabel {
                event: known.unwrap_or("other").to_string(),
            })
            .inc();
        let revoke = |reason| {
            self.revokes
                .get_or_create(&RevokeLabels { reason, outcome })
                .inc();
        };
        match known {
            Some(events::GRANT) => {
                self.grants.get_or_create(&OutcomeLabel { outcome }).inc();
            }
            Some(events::GRANT_ROLLED_BACK) => {
                self.grants
                    .get_or_create(&OutcomeLabel {
                        outcome: "rolled_back",
                    })
                    .inc();
            }
            Some(events::REVOKE) => revoke("revoke"),
            Some(events::REVOKE_CLOSED) => revoke("closed"),
            Some(events::REVOKE_ALL) => revoke("revoke_all"),
            Some(events::EXPIRE) => {
                self.expiries.get_or_create(&OutcomeLabel { outcome }).inc();
            }
            Some(events::DRIFT_REPAIRED) => {
                self.repairs.get_or_create(&OutcomeLabel { outcome }).inc();
            }
            _ => {}
        }
    }

    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// An authenticated API call's answer (`function` must be a known
    /// function's name, or it is counted as "unknown": bounded labels).
    pub fn api_call(&self, function: &str, ok: bool) {
        let known = crate::api::FUNCTIONS.iter().any(|f| f.name == function);
        self.api_calls
            .get_or_create(&CallLabels {
                function: if known { function } else { "unknown" }.to_string(),
                result: if ok { "1" } else { "0" },
            })
            .inc();
    }

    /// An external tool's run time.
    pub fn tool_ran(&self, tool: &Path, took: Duration) {
        let name = tool
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into());
        self.tool_seconds
            .get_or_create(&ToolLabel { tool: name })
            .observe(took.as_secs_f64());
    }

    pub fn set_verify(&self, ok: bool, at: i64) {
        self.verify_ok.set(i64::from(ok));
        self.verify_time.set(at);
        self.verified_at.store(at, Ordering::Relaxed);
    }

    /// When the chain was last verified (0: never).
    pub fn verified_at(&self) -> i64 {
        self.verified_at.load(Ordering::Relaxed)
    }

    /// Sets the active-grant gauges from counts by kind (missing kinds: 0).
    pub fn set_active_grants(&self, counts: &[(&str, i64)]) {
        for kind in KINDS {
            let n = counts
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| *n)
                .sum();
            self.active_grants.get_or_create(&KindLabel { kind }).set(n);
        }
    }

    /// The creation time of the oldest active grant (None: no grant).
    pub fn set_oldest_grant(&self, created_at: Option<i64>) {
        self.oldest_grant.set(created_at.unwrap_or(0));
    }

    pub fn set_portal_connected(&self, connected: bool) {
        self.portal_connected.set(i64::from(connected));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// How old the last audit verification may be before a scrape runs it
/// again (a scrape every 15-60 s must not re-read the whole log each time).
pub const VERIFY_EVERY_SECS: i64 = 600;

/// Brings the state gauges up to date before a scrape: active grants from
/// the store, the portal session, and the audit chain when its last
/// verification is older than [`VERIFY_EVERY_SECS`].
pub async fn refresh(app: &std::sync::Arc<crate::app::App>) {
    let m = &app.metrics;
    let rows: Result<Vec<(String, i64)>, sqlx::Error> = sqlx::query_as(
        "SELECT CASE WHEN ssh_username = 'root' THEN 'root' \
                     WHEN temp_user = 1 THEN 'temporary' ELSE 'existing' END, count(*) \
         FROM grants WHERE state = 'active' GROUP BY 1",
    )
    .fetch_all(app.store.pool())
    .await;
    match rows {
        Ok(rows) => {
            let counts: Vec<(&str, i64)> = rows.iter().map(|(k, n)| (k.as_str(), *n)).collect();
            m.set_active_grants(&counts);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count active grants"),
    }
    let oldest: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT min(created_at) FROM grants WHERE state = 'active'")
            .fetch_one(app.store.pool())
            .await;
    match oldest {
        Ok(t) => m.set_oldest_grant(t),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the oldest grant"),
    }
    m.set_portal_connected(app.portal.is_connected().await);
    if app.clock.now() - m.verified_at() >= VERIFY_EVERY_SECS {
        if let Err(e) = crate::api::audit_log::verify_now(app).await {
            tracing::warn!(error = %e.reason, "metrics: cannot verify the audit log");
            m.set_verify(false, app.clock.now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_drive_the_lifecycle_counters() {
        let m = Metrics::new();
        m.audit_record(events::GRANT, Outcome::Ok);
        m.audit_record(events::GRANT, Outcome::Ok);
        m.audit_record(events::GRANT_ROLLED_BACK, Outcome::Ok);
        m.audit_record(events::REVOKE, Outcome::Ok);
        m.audit_record(events::REVOKE_ALL, Outcome::Failed);
        m.audit_record(events::EXPIRE, Outcome::Ok);
        m.audit_record(events::DRIFT_REPAIRED, Outcome::Ok);
        m.audit_record("no_such_event", Outcome::Ok);
        m.auth_failure();
        m.api_call("ticket_grant", false);
        m.api_call("../../etc", true);
        m.set_active_grants(&[("root", 2)]);
        m.tool_ran(Path::new("/usr/sbin/sshd"), Duration::from_millis(12));
        let text = m.encode();
        for line in [
            "supportauth_grants_total{outcome=\"ok\"} 2",
            "supportauth_grants_total{outcome=\"rolled_back\"} 1",
            "supportauth_revokes_total{reason=\"revoke\",outcome=\"ok\"} 1",
            "supportauth_revokes_total{reason=\"revoke_all\",outcome=\"failed\"} 1",
            "supportauth_expiries_total{outcome=\"ok\"} 1",
            "supportauth_reconcile_repairs_total{outcome=\"ok\"} 1",
            "supportauth_reconcile_repairs_total{outcome=\"failed\"} 0",
            "supportauth_expiries_total{outcome=\"failed\"} 0",
            "supportauth_revokes_total{reason=\"closed\",outcome=\"ok\"} 0",
            "supportauth_audit_records_total{event=\"grant\"} 2",
            "supportauth_audit_records_total{event=\"other\"} 1",
            "supportauth_auth_failures_total 1",
            "supportauth_api_calls_total{function=\"ticket_grant\",result=\"0\"} 1",
            "supportauth_api_calls_total{function=\"unknown\",result=\"1\"} 1",
            "supportauth_active_grants{kind=\"root\"} 2",
            "supportauth_active_grants{kind=\"temporary\"} 0",
            "supportauth_audit_verify_ok -1",
            "supportauth_tool_duration_seconds_count{tool=\"sshd\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Every metric the documented alert rules use exists.
    #[test]
    fn alert_rules_use_real_metrics() {
        let m = Metrics::new();
        for e in events::ALL {
            m.audit_record(e, Outcome::Ok);
        }
        m.auth_failure();
        m.api_call("ticket_list", true);
        m.tool_ran(Path::new("/usr/sbin/nft"), Duration::from_millis(1));
        m.set_active_grants(&[]);
        let text = m.encode();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let rules = include_str!("../docs/prometheus/supportauth-alerts.yml");
        let mut used = 0;
        for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("supportauth_") {
                continue;
            }
            used += 1;
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            assert!(
                families.contains(&family),
                "{word} is not a metric: {families:?}"
            );
        }
        assert!(used >= 4, "the rules use {used} metrics");
    }
}
