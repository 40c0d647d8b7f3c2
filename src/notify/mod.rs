//! Notifications: grants, revokes, expiry, support logins, repaired drift
//! and audit damage announced to HTTPS webhooks (signed JSON) and/or mail
//! through the local sendmail.
//!
//! # The queue is the audit log
//!
//! Every event worth announcing is an audit record, already durable
//! (fsynced, hash-chained) before the change it describes is answered. So
//! the audit log *is* the outbox: each receiver keeps one cursor in the
//! store (`notify_receivers.delivered_seq`, the seq of the last record it
//! is done with) and its pending events are the records after it, up to
//! the log's durable end ([`crate::audit::AuditLog::durable_seq`]), read
//! from the live file and its rotated siblings, plain or gzip (see
//! [`queue`]). One source of truth: no second copy of an event to keep in
//! step with the log, so no crash between "audited" and "queued" can lose
//! one; nothing is written on the grant/revoke path at all. (The other
//! design, outbox rows in the transaction that commits the chain head,
//! would need rows for the records a crash leaves past the stored head
//! and for records that waited in the audit backlog: three places to get
//! right instead of none.)
//!
//! Delivery is per receiver, one record at a time in seq order; the
//! cursor moves after each success (or give-up), so a receiver that is
//! down, or a restart, loses nothing. A crash between a receiver's 2xx and
//! the cursor's commit sends that one record again with the same delivery
//! id (its chain hash): receivers deduplicate by `X-Supportauth-Delivery`.
//! A delivery that keeps failing is retried with exponential backoff
//! ([`backoff`]), then given up and audited as `notify_failed`. Budget: at
//! most `notify.max_pending` records are read per receiver; older ones are
//! skipped and audited as `notify_dropped` (so are records rotated out of
//! the log before they could be sent). `notify_status` (ACL `audit-read`,
//! `supportauth notify status`) shows each receiver's state.
//!
//! Needs `audit.format = "json"` (the cPanel line format has no seqs).

pub mod backoff;
pub mod config;
pub mod mail;
pub mod payload;
pub mod queue;
pub mod status;
pub mod webhook;
pub mod worker;

use crate::audit::{events, Record};
use crate::config::Config;

/// A configured receiver, without its secret: enough to say what it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Its key in the store: `webhook:<url>` or `mail`.
    pub id: String,
    pub kind: &'static str,
    pub events: Vec<String>,
}

impl Spec {
    /// Whether this receiver is to hear of `rec`: an event it asked for,
    /// unless it is a `notify_*` record about this very receiver (a
    /// receiver that is down would otherwise queue news of its own outage
    /// forever).
    pub fn wants(&self, rec: &Record) -> bool {
        if !self.events.contains(&rec.event) {
            return false;
        }
        let about_notify =
            rec.event == events::NOTIFY_FAILED || rec.event == events::NOTIFY_DROPPED;
        !(about_notify && rec.details.get("receiver").and_then(|r| r.as_str()) == Some(&self.id))
    }
}

/// Every receiver the configuration names.
pub fn specs(cfg: &Config) -> Vec<Spec> {
    let mut out: Vec<Spec> = cfg
        .notify
        .webhook
        .iter()
        .map(|w| Spec {
            id: format!("webhook:{}", w.url),
            kind: "webhook",
            events: w.events.clone(),
        })
        .collect();
    if let Some(m) = &cfg.notify.mail {
        out.push(Spec {
            id: "mail".into(),
            kind: "mail",
            events: m.events.clone(),
        });
    }
    out
}

/// How a receiver is reached.
pub enum Channel {
    Webhook(webhook::Webhook),
    /// `limit`: how long sendmail may take (`notify.timeout_secs`).
    Mail {
        cfg: config::MailConfig,
        limit: std::time::Duration,
    },
}

pub struct Receiver {
    pub spec: Spec,
    pub channel: Channel,
}

impl Receiver {
    /// One attempt to deliver `rec`.
    pub async fn deliver(&self, rec: &Record, host: &str, now: i64) -> Result<(), String> {
        match &self.channel {
            Channel::Webhook(w) => w.deliver(rec, host).await,
            Channel::Mail { cfg, limit } => {
                mail::send(cfg, &mail::message(cfg, rec, host, now), *limit).await
            }
        }
    }
}

/// The receivers of `cfg`, each set up (its secret read: a secret file
/// must be root's, mode 0600) or the reason it cannot be.
pub fn receivers(cfg: &Config) -> Vec<Result<Receiver, (Spec, String)>> {
    let specs = specs(cfg);
    let webhooks = cfg.notify.webhook.iter().map(|w| {
        let secret = config::load_secret(w, |p| cfg.host_path(p))
            .map_err(|e| format!("notify.webhook {}: secret: {e}", w.url))?;
        webhook::Webhook::new(w, &cfg.notify, secret)
            .map(Channel::Webhook)
            .map_err(|e| format!("notify.webhook {}: {e}", w.url))
    });
    let limit = std::time::Duration::from_secs(cfg.notify.timeout_secs);
    let mail = cfg.notify.mail.iter().map(|m| {
        Ok(Channel::Mail {
            cfg: m.clone(),
            limit,
        })
    });
    specs
        .into_iter()
        .zip(webhooks.chain(mail))
        .map(|(spec, channel)| match channel {
            Ok(channel) => Ok(Receiver { spec, channel }),
            Err(e) => Err((spec, e)),
        })
        .collect()
}

/// This machine's name, as receivers see it.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    #[test]
    fn a_receiver_hears_its_events_but_not_of_its_own_failures() {
        let spec = Spec {
            id: "webhook:https://a.example/h".into(),
            kind: "webhook",
            events: vec!["grant".into(), "notify_failed".into()],
        };
        let rec = |ev: AuditEvent| Record::from_event(&ev, 1, "t".into(), "0");
        assert!(spec.wants(&rec(AuditEvent::new("grant", "system"))));
        assert!(!spec.wants(&rec(AuditEvent::new("revoke", "system"))));
        let failed = |who: &str| {
            rec(AuditEvent::new("notify_failed", "system")
                .details(serde_json::json!({ "receiver": who })))
        };
        assert!(spec.wants(&failed("mail")));
        assert!(!spec.wants(&failed("webhook:https://a.example/h")));
    }

    #[test]
    fn default_events_include_logins_and_damage() {
        let cfg = Config::parse(
            "[[notify.webhook]]\nurl = \"https://a.example/h\"\nsecret = \"0123456789abcdef\"\n\
             [notify.mail]\nto = [\"ops@example.com\"]\nfrom = \"sa@example.com\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let s = specs(&cfg);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].id, "webhook:https://a.example/h");
        assert_eq!(s[1].id, "mail");
        for e in [
            "grant",
            "revoke",
            "expire",
            "support_login",
            "support_logout",
            "drift_repaired",
            "audit_tail_damaged",
            "audit_records_dropped",
        ] {
            assert!(s[0].events.iter().any(|x| x == e), "{e}");
        }
        assert_eq!(receivers(&cfg).iter().filter(|r| r.is_ok()).count(), 2);
    }
}
