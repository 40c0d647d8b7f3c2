//! Mail through the local `sendmail`: the message is built here (pure),
//! then handed to `<sendmail_path> -t -oi` on stdin (absolute path,
//! argument vector, cleared environment, exit status checked, as
//! `system::exec` runs tools; bounded in time here). Recipients come from the `To:` header (`-t`); `-oi`
//! keeps a line holding a single dot from ending the message.

use std::process::Stdio;
use std::time::Duration;

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use super::config::MailConfig;
use super::payload::delivery_id;
use crate::audit::Record;

/// Header text with anything that could end the header or start another
/// one replaced (values come from validated fields, but a header is no
/// place to trust that).
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One line per fact an admin reads first.
fn summary(rec: &Record) -> String {
    let mut s = rec.event.clone();
    if let Some(t) = rec.ticket_id {
        s.push_str(&format!(" ticket {t}"));
        if let Some(n) = rec.server_num {
            s.push_str(&format!(" server {n}"));
        }
    }
    if let Some(u) = &rec.ssh_username {
        s.push_str(&format!(" as {u}"));
    }
    if rec.outcome == crate::audit::Outcome::Failed {
        s.push_str(" (failed)");
    }
    s
}

/// The whole message (headers, blank line, body), CRLF-free LF lines as
/// sendmail expects on stdin.
pub fn message(cfg: &MailConfig, rec: &Record, host: &str, now: i64) -> String {
    let date = OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_default();
    let id = delivery_id(rec);
    let host_h = header_safe(host);
    let mut m = String::new();
    m.push_str(&format!("From: {}\n", header_safe(&cfg.from)));
    m.push_str(&format!("To: {}\n", header_safe(&cfg.to.join(", "))));
    m.push_str(&format!(
        "Subject: [supportauth] {host_h}: {}\n",
        header_safe(&summary(rec))
    ));
    m.push_str(&format!("Date: {date}\n"));
    m.push_str(&format!("Message-ID: <{id}@{host_h}>\n"));
    m.push_str(&format!("X-Supportauth-Delivery: {id}\n"));
    m.push_str(&format!(
        "X-Supportauth-Event: {}\n",
        header_safe(&rec.event)
    ));
    m.push_str("Auto-Submitted: auto-generated\n");
    m.push_str("MIME-Version: 1.0\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\n");
    m.push_str("Content-Transfer-Encoding: 8bit\n\n");
    m.push_str(&format!("{} on {host}\n\n", summary(rec)));
    m.push_str(&format!("time:   {}\n", rec.time));
    m.push_str(&format!("actor:  {}\n", rec.actor));
    if let Some(r) = &rec.remote {
        m.push_str(&format!("remote: {r}\n"));
    }
    m.push_str(&format!("audit seq {}\n\nThe audit record:\n", rec.seq));
    let pretty = serde_json::to_string_pretty(rec).unwrap_or_default();
    m.push_str(&pretty);
    m.push('\n');
    m
}

/// Hands the message to sendmail and waits for it, at most `limit` (a
/// sendmail that hangs is killed and the attempt counts as failed).
pub async fn send(cfg: &MailConfig, message: &str, limit: Duration) -> Result<(), String> {
    use crate::system::exec::{describe_status, summarise, SAFE_ENV};
    let tool = cfg.sendmail_path.display().to_string();
    if !cfg.sendmail_path.is_absolute() {
        return Err(format!("{tool} is not an absolute path"));
    }
    let mut child = tokio::process::Command::new(&cfg.sendmail_path)
        .args(["-t", "-oi"])
        .env_clear()
        .envs(SAFE_ENV.iter().copied())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    let work = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A sendmail that exits early closes the pipe; its status says why.
            let _ = stdin.write_all(message.as_bytes()).await;
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(limit, work).await {
        Err(_) => {
            return Err(format!(
                "{tool} did not finish within {} seconds",
                limit.as_secs()
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot run {tool}: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} failed ({}): {}",
            describe_status(&out.status),
            summarise(
                &String::from_utf8_lossy(&out.stderr),
                &String::from_utf8_lossy(&out.stdout)
            )
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;
    use crate::types::{ServerNum, TicketId};

    fn cfg(path: &str) -> MailConfig {
        MailConfig {
            to: vec!["ops@example.com".into(), "sec@example.com".into()],
            from: "supportauth@web1.example.com".into(),
            events: vec!["grant".into()],
            sendmail_path: path.into(),
        }
    }

    fn record() -> Record {
        let ev = AuditEvent::new("grant", "token:root:desk")
            .ticket(
                TicketId::parse("4321").unwrap(),
                Some(ServerNum::parse("2").unwrap()),
            )
            .user("root");
        let mut rec = Record::from_event(&ev, 9, "2026-11-23T13:28:53Z".into(), "00");
        rec.hash = Some("cd".repeat(32));
        rec
    }

    #[test]
    fn message_has_headers_sendmail_reads_and_the_record() {
        let m = message(
            &cfg("/usr/sbin/sendmail"),
            &record(),
            "web1\nBcc: x@y",
            1_795_000_000,
        );
        let (head, body) = m.split_once("\n\n").unwrap();
        assert!(
            head.contains("\nTo: ops@example.com, sec@example.com\n"),
            "{head}"
        );
        assert!(
            head.starts_with("From: supportauth@web1.example.com\n"),
            "{head}"
        );
        assert!(
            head.contains(
                "Subject: [supportauth] web1 Bcc: x@y: grant ticket 4321 server 2 as root\n"
            ),
            "{head}"
        );
        // The injected header stayed inside the Subject line.
        assert!(!head.lines().any(|l| l.starts_with("Bcc:")), "{head}");
        assert!(head.contains(&format!("X-Supportauth-Delivery: {}\n", "cd".repeat(32))));
        assert!(head.contains("Date: "), "{head}");
        assert!(body.contains("\"ticket_id\": 4321"), "{body}");
    }

    #[tokio::test]
    async fn sendmail_gets_the_message_on_stdin_and_its_status_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let script = dir.path().join("sendmail");
        // A recording stand-in: what it read and its arguments, then exit 0.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" > {o}.args\nenv > {o}.env\ncat > {o}\n",
                o = out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::env::set_var("SUPPORTAUTH_MAIL_LEAK", "1");
        let c = cfg(script.to_str().unwrap());
        let m = message(&c, &record(), "web1", 0);
        let limit = Duration::from_secs(30);
        send(&c, &m, limit).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), m);
        assert_eq!(
            std::fs::read_to_string(format!("{}.args", out.display())).unwrap(),
            "-t -oi\n"
        );
        let env = std::fs::read_to_string(format!("{}.env", out.display())).unwrap();
        assert!(!env.contains("SUPPORTAUTH_MAIL_LEAK"), "{env}");
        // A failing sendmail is an error with its message.
        std::fs::write(&script, "#!/bin/sh\necho 'no route' >&2\nexit 75\n").unwrap();
        let err = send(&c, &m, limit).await.unwrap_err();
        assert!(
            err.contains("exit status 75") && err.contains("no route"),
            "{err}"
        );
        // One that hangs is cut off.
        std::fs::write(&script, "#!/bin/sh\ncat >/dev/null\nexec sleep 30\n").unwrap();
        let err = send(&c, &m, Duration::from_millis(300)).await.unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
