//! Following sshd's entries in the systemd journal: `journalctl -o json
//! --follow _COMM=sshd _COMM=sshd-session`, run by absolute path with a
//! cleared environment, from the stored cursor (or, on a first start, from
//! the time reading began). `_COMM` and `_PID` are the journal's own
//! (trusted) fields, so no other program's line is taken for sshd's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::parse::{parse_message, parse_pid, LogLine};
use super::source::Mark;

/// Most entries taken per poll (the rest wait for the next one).
const MAX_ENTRIES: usize = 1000;
/// Entries longer than this (JSON) are not sshd's.
const MAX_ENTRY: usize = 64 * 1024;

pub struct JournalFollower {
    tool: PathBuf,
    /// After the last entry read (a cursor), or where reading starts.
    mark: Mark,
    running: Option<(Child, Lines<BufReader<ChildStdout>>)>,
}

impl JournalFollower {
    /// `mark`: the stored cursor or start time; a first start reads
    /// from `now`.
    pub fn new(tool: &Path, mark: Option<Mark>, now: i64) -> JournalFollower {
        let mark = match mark {
            Some(m @ (Mark::Cursor(_) | Mark::Since(_))) => m,
            _ => Mark::Since(now),
        };
        JournalFollower {
            tool: tool.to_path_buf(),
            mark,
            running: None,
        }
    }

    pub fn mark(&self) -> &Mark {
        &self.mark
    }

    fn spawn(&self) -> std::io::Result<(Child, Lines<BufReader<ChildStdout>>)> {
        let from = match &self.mark {
            Mark::Cursor(c) => format!("--after-cursor={c}"),
            Mark::Since(t) => format!("--since=@{t}"),
            Mark::File(_) => format!("--since=@{}", 0),
        };
        let mut child = Command::new(&self.tool)
            .args([
                "--output=json",
                "--no-pager",
                "--follow",
                "--lines=all",
                &from,
                "_COMM=sshd",
                "_COMM=sshd-session",
            ])
            .env_clear()
            .envs(crate::system::exec::SAFE_ENV.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("journalctl without stdout"))?;
        Ok((child, BufReader::new(stdout).lines()))
    }

    /// The entries journalctl has printed since the last poll, each with
    /// the cursor after it. A journalctl that ended is started again at
    /// the next poll, from the last cursor.
    pub async fn poll(&mut self) -> std::io::Result<Vec<(Option<LogLine>, Mark)>> {
        if self.running.is_none() {
            self.running = Some(self.spawn()?);
        }
        let mut out = Vec::new();
        while out.len() < MAX_ENTRIES {
            let Some((_, lines)) = self.running.as_mut() else {
                break;
            };
            // `next_line` is cancel-safe: a line half-read stays buffered.
            match tokio::time::timeout(Duration::from_millis(5), lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if line.len() > MAX_ENTRY {
                        continue;
                    }
                    if let Some((parsed, cursor)) = entry(&line) {
                        self.mark = Mark::Cursor(cursor);
                        out.push((parsed, self.mark.clone()));
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    tracing::warn!("journalctl ended; starting it again");
                    self.running = None;
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }
}

/// One `journalctl -o json` line: the event (None when the entry is not
/// an sshd event) and the entry's cursor; None when it is not an entry.
pub fn entry(json: &str) -> Option<(Option<LogLine>, String)> {
    let v: Value = serde_json::from_str(json).ok()?;
    let cursor = v.get("__CURSOR")?.as_str()?.to_string();
    if cursor.is_empty() || cursor.len() > 512 {
        return None;
    }
    let comm_ok = matches!(
        v.get("_COMM").and_then(Value::as_str),
        Some("sshd" | "sshd-session")
    );
    let message = match v.get("MESSAGE") {
        Some(Value::String(s)) => Some(s.clone()),
        // Not valid UTF-8: journalctl prints the bytes as an array.
        Some(Value::Array(bytes)) => {
            let b: Option<Vec<u8>> = bytes
                .iter()
                .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            b.map(|b| String::from_utf8_lossy(&b).into_owned())
        }
        _ => None,
    };
    let pid = v.get("_PID").and_then(Value::as_str).and_then(parse_pid);
    let time = v
        .get("__REALTIME_TIMESTAMP")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<i64>().ok())
        .map(|usec| usec / 1_000_000);
    let event = message
        .filter(|_| comm_ok && pid.is_some())
        .and_then(|m| parse_message(&m));
    Some((event.map(|event| LogLine { pid, time, event }), cursor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logins::parse::SshdEvent;

    /// Entries as journalctl 252 (Debian 12) printed them for a real sshd
    /// 9.2 login (fields trimmed).
    #[test]
    fn real_entries() {
        let accepted = r#"{"PRIORITY":"6","MESSAGE":"Accepted publickey for root from 127.0.0.1 port 57940 ssh2: ED25519 SHA256:p5vO2Z7v6D0e7Dy44Xgcf5jj0FVD09g/YAiFIxLLJ4w","_EXE":"/usr/sbin/sshd","SYSLOG_TIMESTAMP":"Dec  4 09:49:49 ","_CMDLINE":"\"sshd: root [priv]\"","SYSLOG_IDENTIFIER":"sshd","__REALTIME_TIMESTAMP":"1796377789984269","SYSLOG_PID":"32","_COMM":"sshd","_PID":"32","_TRANSPORT":"syslog","__CURSOR":"s=956e623dca9d492a9e44e8e860a6d026;i=4;b=933757d715f343749cfc8bf55d236692;m=60ca3b660;t=661cbcbfa9d87;x=21bf62f7dae4f208"}"#;
        let (line, cursor) = entry(accepted).unwrap();
        let line = line.unwrap();
        assert!(cursor.starts_with("s=956e"));
        assert_eq!((line.pid, line.time), (Some(32), Some(1_796_377_789)));
        assert!(matches!(
            line.event,
            SshdEvent::Accepted { port: 57940, .. }
        ));
        let closed = r#"{"MESSAGE":"pam_unix(sshd:session): session closed for user root","_COMM":"sshd","_PID":"32","__REALTIME_TIMESTAMP":"1796377790356710","__CURSOR":"s=9;i=9"}"#;
        let (line, _) = entry(closed).unwrap();
        assert!(matches!(
            line.unwrap().event,
            SshdEvent::SessionClosed { .. }
        ));
        // Not an event, but its cursor still counts.
        let other = r#"{"MESSAGE":"Server listening on 127.0.0.1 port 2299.","_COMM":"sshd","_PID":"29","__CURSOR":"s=9;i=3"}"#;
        assert_eq!(entry(other), Some((None, "s=9;i=3".into())));
    }

    #[test]
    fn another_program_or_garbage_is_no_event() {
        // `logger -t sshd`: SYSLOG_IDENTIFIER says sshd, _COMM does not.
        let forged = r#"{"MESSAGE":"Accepted publickey for root from 127.0.0.1 port 1 ssh2: ED25519 SHA256:p5vO2Z7v6D0e7Dy44Xgcf5jj0FVD09g/YAiFIxLLJ4w","SYSLOG_IDENTIFIER":"sshd","_COMM":"logger","_PID":"5","__CURSOR":"c"}"#;
        assert_eq!(entry(forged), Some((None, "c".into())));
        let no_pid = r#"{"MESSAGE":"Disconnected from user root 127.0.0.1 port 1","_COMM":"sshd","__CURSOR":"c"}"#;
        assert_eq!(entry(no_pid), Some((None, "c".into())));
        let bytes = r#"{"MESSAGE":[68,105,115,255],"_COMM":"sshd","_PID":"5","__CURSOR":"c"}"#;
        assert_eq!(entry(bytes), Some((None, "c".into())));
        for bad in [
            "",
            "{}",
            "[]",
            "null",
            r#"{"__CURSOR":""}"#,
            r#"{"__CURSOR":7}"#,
            "{\"__CURSOR\":\"c\"",
        ] {
            assert_eq!(entry(bad), None, "{bad}");
        }
    }
}
