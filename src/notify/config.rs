//! `[notify]`: where notifications go and how hard delivery tries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::events;

/// What a receiver hears about when it names no `events`: access given and
/// taken, support logins, repaired drift and damage to the audit log.
pub const DEFAULT_EVENTS: &[&str] = &[
    events::GRANT,
    events::REVOKE,
    events::EXPIRE,
    events::REVOKE_CLOSED,
    events::REVOKE_ALL,
    events::GRANT_ROLLED_BACK,
    events::SUPPORT_LOGIN,
    events::SUPPORT_LOGOUT,
    events::SUPPORT_SESSION_ENDED,
    events::DRIFT_REPAIRED,
    events::AUDIT_TAIL_MISSING,
    events::AUDIT_TAIL_DAMAGED,
    events::AUDIT_RECORDS_DROPPED,
    events::NOTIFY_FAILED,
    events::NOTIFY_DROPPED,
];

/// Whether a receiver may ask for `event`: any audit event name.
pub fn is_known_event(event: &str) -> bool {
    events::ALL.contains(&event) || DEFAULT_EVENTS.contains(&event)
}

fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect()
}

fn default_sendmail() -> PathBuf {
    PathBuf::from("/usr/sbin/sendmail")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Most undelivered events per receiver; beyond it the oldest are
    /// skipped and a `notify_dropped` record says how many.
    pub max_pending: usize,
    /// Retry delays: `retry_initial_ms` after the first failure, doubling
    /// up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// A delivery is given up (audited `notify_failed`) after this many
    /// failed attempts, or once its first failure is `max_age_secs` old.
    pub max_attempts: u32,
    pub max_age_secs: u64,
    /// Webhook time limits; `timeout_secs` also bounds a sendmail run.
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    /// PEM bundle of trusted roots for https webhooks; "" = the system bundle.
    pub ca_file: String,
    /// `[[notify.webhook]]` tables.
    pub webhook: Vec<WebhookConfig>,
    /// `[notify.mail]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            max_pending: 10_000,
            retry_initial_ms: 5_000,
            retry_max_ms: 3_600_000,
            max_attempts: 20,
            max_age_secs: 2 * 86_400,
            connect_timeout_secs: 10,
            timeout_secs: 30,
            ca_file: String::new(),
            webhook: Vec::new(),
            mail: None,
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// https URL (plain http only for loopback addresses).
    pub url: String,
    /// The HMAC key (at least 16 bytes). Prefer `secret_file`: a file owned
    /// by root, mode 0600 (no access for group or others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Audit event names delivered; default [`DEFAULT_EVENTS`].
    #[serde(default = "default_events")]
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("events", &self.events)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Recipients (plain addresses, `ops@example.com`).
    pub to: Vec<String>,
    /// Sender address.
    pub from: String,
    /// Audit event names mailed; default [`DEFAULT_EVENTS`].
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// The sendmail-compatible program, run as `<path> -t -oi` with the
    /// message on stdin (absolute path; default /usr/sbin/sendmail, which
    /// Postfix, Exim, msmtp-mta and others provide).
    #[serde(default = "default_sendmail")]
    pub sendmail_path: PathBuf,
}

/// Whether `s` is a plain mail address safe in a header: `local@domain`,
/// printable ASCII without spaces, quotes, angle brackets or commas.
pub fn is_plain_address(s: &str) -> bool {
    let ok_chars = s.bytes().all(|b| {
        b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"' | b'(' | b')' | b';' | b'\\')
    });
    let parts: Vec<&str> = s.split('@').collect();
    ok_chars && s.len() <= 254 && parts.len() == 2 && parts.iter().all(|p| !p.is_empty())
}

impl NotifyConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self, json_audit: bool) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| (format!("notify.{k}"), m);
        let any = !self.webhook.is_empty() || self.mail.is_some();
        if any && !json_audit {
            return Err(bad(
                "webhook",
                "notifications read the hash-chained JSON audit log: they need audit.format = \"json\"".into(),
            ));
        }
        if self.max_pending == 0 {
            return Err(bad("max_pending", "must be at least 1".into()));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(bad(
                "retry_initial_ms",
                "must be at least 1 and not above notify.retry_max_ms".into(),
            ));
        }
        if self.max_attempts == 0 || self.max_age_secs == 0 {
            return Err(bad(
                "max_attempts",
                "max_attempts and max_age_secs must be at least 1".into(),
            ));
        }
        if self.connect_timeout_secs == 0 || self.timeout_secs == 0 {
            return Err(bad(
                "timeout_secs",
                "timeouts must be at least 1 second".into(),
            ));
        }
        if !self.ca_file.is_empty() && !Path::new(&self.ca_file).is_absolute() {
            return Err(bad("ca_file", "must be an absolute path".into()));
        }
        let mut urls = std::collections::BTreeSet::new();
        for w in &self.webhook {
            crate::portal::url::BaseUrl::parse(&w.url).map_err(|e| bad("webhook.url", e))?;
            if !urls.insert(w.url.as_str()) {
                return Err(bad("webhook.url", format!("{:?} is listed twice", w.url)));
            }
            match (&w.secret, &w.secret_file) {
                (Some(s), None) if s.len() >= 16 => {}
                (Some(_), None) => {
                    return Err(bad("webhook.secret", "must be at least 16 bytes".into()))
                }
                (None, Some(p)) if p.is_absolute() => {}
                (None, Some(_)) => {
                    return Err(bad(
                        "webhook.secret_file",
                        "must be an absolute path".into(),
                    ))
                }
                _ => {
                    return Err(bad(
                        "webhook.secret_file",
                        "set exactly one of secret_file (preferred) and secret".into(),
                    ))
                }
            }
            check_events(&w.events).map_err(|m| bad("webhook.events", m))?;
        }
        if let Some(m) = &self.mail {
            if m.to.is_empty() {
                return Err(bad("mail.to", "name at least one recipient".into()));
            }
            for a in m.to.iter().chain(std::iter::once(&m.from)) {
                if !is_plain_address(a) {
                    return Err(bad(
                        "mail.to",
                        format!("{a:?} is not a plain address such as ops@example.com"),
                    ));
                }
            }
            if !m.sendmail_path.is_absolute() {
                return Err(bad("mail.sendmail_path", "must be an absolute path".into()));
            }
            check_events(&m.events).map_err(|m| bad("mail.events", m))?;
        }
        Ok(())
    }
}

fn check_events(list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err("name at least one event".into());
    }
    for e in list {
        if !is_known_event(e) {
            return Err(format!("unknown event {e:?}"));
        }
    }
    Ok(())
}

/// Reads a webhook's secret: inline, or from `secret_file` (under the
/// configured root), which must be a regular file owned by root with no
/// access for group or others.
pub fn load_secret(
    w: &WebhookConfig,
    host_path: impl Fn(&Path) -> PathBuf,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if let Some(s) = &w.secret {
        return Ok(s.as_bytes().to_vec());
    }
    let Some(file) = &w.secret_file else {
        return Err("no secret configured".into());
    };
    let path = host_path(file);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be owned by root with mode 0600 (it is uid {}, mode {:o})",
            path.display(),
            meta.uid(),
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    f.by_ref()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.len() < 16 {
        return Err(format!(
            "{}: the secret must be at least 16 bytes",
            path.display()
        ));
    }
    Ok(secret.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secret_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let w = WebhookConfig {
            url: "https://a.example/h".into(),
            secret: None,
            secret_file: Some(file.clone()),
            events: default_events(),
        };
        let same = |p: &Path| p.to_path_buf();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_secret(&w, same).unwrap_err();
        assert!(err.contains("mode 0600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(load_secret(&w, same).unwrap(), b"0123456789abcdef0123");
        } else {
            // Not root's file: refused as well.
            assert!(load_secret(&w, same).unwrap_err().contains("owned by root"));
        }
        std::fs::write(&file, "short\n").unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(load_secret(&w, same).unwrap_err().contains("at least 16"));
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let w = WebhookConfig {
            secret_file: Some(link),
            ..w
        };
        assert!(load_secret(&w, same).is_err());
    }

    #[test]
    fn debug_output_hides_an_inline_secret() {
        let w = WebhookConfig {
            url: "https://a.example/h".into(),
            secret: Some("do-not-print-me-0123".into()),
            secret_file: None,
            events: default_events(),
        };
        assert!(!format!("{w:?}").contains("do-not-print-me"));
    }
}
