//! sshd's authentication events, from one log line (pure: no I/O).
//!
//! Lines come in these forms, all handled:
//!
//! ```text
//! 2026-12-04T09:35:55.123456+00:00 web1 sshd[1234]: Accepted publickey for ...   (rsyslog, Debian 12)
//! Dec  4 09:35:55 web1 sshd[1234]: Accepted publickey for ...                   (classic syslog, /var/log/secure)
//! Dec  4 09:35:55 web1 sshd-session[1234]: Accepted publickey for ...           (OpenSSH 9.8+)
//! Accepted publickey for root from 127.0.0.1 port 58552 ssh2: ED25519 SHA256:...\r  (sshd -E FILE / -e)
//! ```
//!
//! and, from the journal, the bare `MESSAGE` with the pid beside it.
//! Every field is checked strictly (a user name, an IP address, a port, a
//! `SHA256:` fingerprint): anything else is not an event. Other programs can
//! write lines that look like sshd's (syslog lets any local user pick its tag),
//! which is why the watcher also checks the pid when it has one.

use std::net::IpAddr;

use crate::types::Username;

/// What sshd reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshdEvent {
    /// `Accepted publickey for USER from ADDR port P ssh2: TYPE SHA256:FP`
    Accepted {
        user: Username,
        addr: IpAddr,
        port: u16,
        key_type: String,
        fingerprint: String,
    },
    /// `Disconnected from user USER ADDR port P`: an authenticated
    /// connection ended.
    Disconnected {
        user: Username,
        addr: IpAddr,
        port: u16,
    },
    /// `pam_unix(sshd:session): session closed for user USER` (only the
    /// pid says which session).
    SessionClosed { user: Username },
}

/// One event with what the line's prefix said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// sshd's pid (`sshd[PID]:`), when the line has a syslog prefix.
    pub pid: Option<u32>,
    /// Epoch seconds from an RFC 3339 syslog timestamp (classic
    /// timestamps carry no year or zone and are not used).
    pub time: Option<i64>,
    pub event: SshdEvent,
}

/// The longest line considered; longer ones are not sshd's.
pub const MAX_LINE: usize = 4096;

/// Parses one line of an auth log (any of the forms above).
pub fn parse_line(line: &str) -> Option<LogLine> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.len() > MAX_LINE {
        return None;
    }
    if let Some(event) = parse_message(line) {
        return Some(LogLine {
            pid: None,
            time: None,
            event,
        });
    }
    let (time, rest) = split_timestamp(line)?;
    // HOST TAG[PID]: MESSAGE
    let (_host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ")?;
    let (program, pid) = tag.strip_suffix(']')?.split_once('[')?;
    if !matches!(program, "sshd" | "sshd-session") {
        return None;
    }
    let pid = parse_pid(pid)?;
    Some(LogLine {
        pid: Some(pid),
        time,
        event: parse_message(message)?,
    })
}

/// A decimal pid, 1..=i32::MAX, without sign or leading zeros.
pub fn parse_pid(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse::<u32>().ok().filter(|p| *p <= i32::MAX as u32)
}

/// Splits off an RFC 3339 or classic (`Mmm dd hh:mm:ss`) timestamp.
fn split_timestamp(line: &str) -> Option<(Option<i64>, &str)> {
    let (first, rest) = line.split_once(' ')?;
    if first.len() >= 20 && first.as_bytes().get(4) == Some(&b'-') {
        let t = time::OffsetDateTime::parse(first, &time::format_description::well_known::Rfc3339)
            .ok()?;
        return Some((Some(t.unix_timestamp()), rest));
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if !MONTHS.contains(&first) {
        return None;
    }
    let rest = rest.trim_start_matches(' ');
    let (day, rest) = rest.split_once(' ')?;
    let (clock, rest) = rest.split_once(' ')?;
    let day_ok = matches!(day.parse::<u8>(), Ok(1..=31));
    let clock_ok = clock.len() == 8
        && clock.bytes().enumerate().all(|(i, b)| {
            if i == 2 || i == 5 {
                b == b':'
            } else {
                b.is_ascii_digit()
            }
        });
    (day_ok && clock_ok).then_some((None, rest))
}

/// Parses sshd's message text (without any prefix).
pub fn parse_message(message: &str) -> Option<SshdEvent> {
    let message = message.trim_end_matches(['\n', '\r']);
    if message.len() > MAX_LINE {
        return None;
    }
    if let Some(rest) = message.strip_prefix("Accepted publickey for ") {
        return accepted(rest);
    }
    if let Some(rest) = message.strip_prefix("Disconnected from user ") {
        let t: Vec<&str> = rest.split(' ').collect();
        let [user, addr, "port", port] = t[..] else {
            return None;
        };
        return Some(SshdEvent::Disconnected {
            user: Username::parse(user).ok()?,
            addr: addr.parse().ok()?,
            port: parse_port(port)?,
        });
    }
    if let Some(rest) = message.strip_prefix("pam_unix(sshd:session): session closed for user ") {
        return Some(SshdEvent::SessionClosed {
            user: Username::parse(rest).ok()?,
        });
    }
    None
}

fn accepted(rest: &str) -> Option<SshdEvent> {
    let t: Vec<&str> = rest.split(' ').collect();
    // A certificate login goes on with "ID ... (serial N) CA ...".
    let [user, "from", addr, "port", port, "ssh2:", key_type, fingerprint, ..] = t[..] else {
        return None;
    };
    let key_ok = !key_type.is_empty()
        && key_type.len() <= 32
        && key_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'@' || b == b'.');
    let fp = fingerprint.strip_prefix("SHA256:")?;
    // 32 bytes in unpadded base64.
    let fp_ok = fp.len() == 43
        && fp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !key_ok || !fp_ok {
        return None;
    }
    Some(SshdEvent::Accepted {
        user: Username::parse(user).ok()?,
        addr: addr.parse().ok()?,
        port: parse_port(port)?,
        key_type: key_type.to_string(),
        fingerprint: fingerprint.to_string(),
    })
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:p5vO2Z7v6D0e7Dy44Xgcf5jj0FVD09g/YAiFIxLLJ4w";

    fn accepted(user: &str, addr: &str, port: u16) -> SshdEvent {
        SshdEvent::Accepted {
            user: Username::parse(user).unwrap(),
            addr: addr.parse().unwrap(),
            port,
            key_type: "ED25519".into(),
            fingerprint: FP.into(),
        }
    }

    /// Debian 12's OpenSSH 9.2 with `sshd -E FILE` (seen in the e2e
    /// sandbox, CRLF line ends included).
    #[test]
    fn sshd_dash_e_lines() {
        let l = parse_line(&format!(
            "Accepted publickey for root from 127.0.0.1 port 58552 ssh2: ED25519 {FP}\r\n"
        ))
        .unwrap();
        assert_eq!(l.pid, None);
        assert_eq!(l.event, accepted("root", "127.0.0.1", 58552));
        let l = parse_line("Disconnected from user root 127.0.0.1 port 58552\r").unwrap();
        assert_eq!(
            l.event,
            SshdEvent::Disconnected {
                user: Username::root(),
                addr: "127.0.0.1".parse().unwrap(),
                port: 58552
            }
        );
        for other in [
            "Server listening on 127.0.0.1 port 2299.\r",
            "Received disconnect from 127.0.0.1 port 58552:11: disconnected by user\r",
            "Received signal 15; terminating.\r",
        ] {
            assert_eq!(parse_line(other), None, "{other}");
        }
    }

    /// rsyslog's default on Debian 12 (RFC 3339 timestamps).
    #[test]
    fn debian12_rsyslog_lines() {
        let l = parse_line(&format!(
            "2026-12-04T09:35:55.123456+00:00 web1 sshd[1234]: Accepted publickey for cp108.ssh from 2001:db8::7 port 40000 ssh2: ED25519 {FP}"
        ))
        .unwrap();
        assert_eq!(l.pid, Some(1234));
        assert_eq!(l.time, Some(1_796_376_955));
        assert_eq!(l.event, accepted("cp108.ssh", "2001:db8::7", 40000));
        let l = parse_line(
            "2026-12-04T09:40:01.000001+01:00 web1 sshd[1234]: pam_unix(sshd:session): session closed for user cp108.ssh",
        )
        .unwrap();
        assert_eq!(l.pid, Some(1234));
        assert_eq!(l.time, Some(1_796_373_601));
        assert_eq!(
            l.event,
            SshdEvent::SessionClosed {
                user: Username::parse("cp108.ssh").unwrap()
            }
        );
    }

    /// Classic syslog (AlmaLinux /var/log/secure) and OpenSSH 9.8+'s
    /// per-session binary.
    #[test]
    fn classic_and_sshd_session_lines() {
        let l = parse_line(&format!(
            "Dec  4 09:35:55 web1 sshd-session[98765]: Accepted publickey for root from 203.0.113.5 port 51000 ssh2: RSA {FP}"
        ))
        .unwrap();
        assert_eq!((l.pid, l.time), (Some(98765), None));
        assert!(matches!(l.event, SshdEvent::Accepted { ref key_type, .. } if key_type == "RSA"));
        let l = parse_line(
            "Dec 14 10:00:00 web1 sshd[77]: Disconnected from user root 203.0.113.5 port 51000",
        )
        .unwrap();
        assert_eq!(l.pid, Some(77));
        // A certificate login carries more after the fingerprint.
        let l = parse_line(&format!(
            "Dec  4 09:35:55 web1 sshd[5]: Accepted publickey for root from 203.0.113.5 port 51000 ssh2: ED25519-CERT {FP} ID support (serial 9) CA ED25519 {FP}"
        ))
        .unwrap();
        assert!(
            matches!(l.event, SshdEvent::Accepted { ref key_type, .. } if key_type == "ED25519-CERT")
        );
    }

    /// Lines other programs (or a hostile local user) may write.
    #[test]
    fn hostile_and_foreign_lines_are_not_events() {
        let long_user = "a".repeat(5000);
        let cases = [
            String::new(),
            "\r\n".into(),
            // Another program's tag, even with sshd's text.
            format!("Dec  4 09:35:55 web1 sudo[1]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            format!("Dec  4 09:35:55 web1 xsshd[1]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            // Bad pid, port, address, user, fingerprint.
            format!("Dec  4 09:35:55 web1 sshd[0]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            format!("Dec  4 09:35:55 web1 sshd[-1]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            format!("Dec  4 09:35:55 web1 sshd[99999999999]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            format!("Accepted publickey for root from 1.2.3.4 port 0 ssh2: ED25519 {FP}"),
            format!("Accepted publickey for root from 1.2.3.4 port 65536 ssh2: ED25519 {FP}"),
            format!("Accepted publickey for root from 1.2.3.999 port 22 ssh2: ED25519 {FP}"),
            format!("Accepted publickey for root from host.example port 22 ssh2: ED25519 {FP}"),
            format!("Accepted publickey for ro ot from 1.2.3.4 port 22 ssh2: ED25519 {FP}"),
            format!("Accepted publickey for ../../x from 1.2.3.4 port 22 ssh2: ED25519 {FP}"),
            format!("Accepted publickey for {long_user} from 1.2.3.4 port 22 ssh2: ED25519 {FP}"),
            "Accepted publickey for root from 1.2.3.4 port 22 ssh2: ED25519 SHA256:short".into(),
            "Accepted publickey for root from 1.2.3.4 port 22 ssh2: ED25519 MD5:aa:bb".into(),
            format!("Accepted publickey for root from 1.2.3.4 port 22 ssh2: ED25519 {FP}x"),
            format!("Accepted publickey for root from 1.2.3.4 port 22 ssh2: ED2\u{0}5519 {FP}"),
            format!("Accepted publickey for root  from 1.2.3.4 port 22 ssh2: ED25519 {FP}"),
            "Accepted password for root from 1.2.3.4 port 22 ssh2".into(),
            "Accepted publickey for root from 1.2.3.4 port 22".into(),
            "Disconnected from user root 1.2.3.4 port".into(),
            "Disconnected from user root 1.2.3.4 port 22 extra".into(),
            "Disconnected from authenticating user root 1.2.3.4 port 22 [preauth]".into(),
            "pam_unix(sshd:session): session closed for user ".into(),
            "pam_unix(sshd:session): session closed for user root extra".into(),
            // Timestamps that are not.
            format!("Foo  4 09:35:55 web1 sshd[1]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            format!("Dec 99 09:35:55 web1 sshd[1]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            format!("2026-13-04T09:35:55Z web1 sshd[1]: Accepted publickey for root from 1.2.3.4 port 1 ssh2: ED25519 {FP}"),
            format!("{} sshd[1]: x", "\u{feff}".repeat(3000)),
            format!("Dec  4 09:35:55 web1 sshd[1]: {}", "A".repeat(10_000)),
        ];
        for c in &cases {
            assert_eq!(parse_line(c), None, "{c:?}");
        }
        // Every prefix of a good line, and the line with any one byte
        // dropped, parses or is refused without panicking.
        let good = format!(
            "2026-12-04T09:35:55+00:00 web1 sshd[1234]: Accepted publickey for root from 127.0.0.1 port 58552 ssh2: ED25519 {FP}"
        );
        for i in 0..good.len() {
            let _ = parse_line(&good[..i]);
            let mut cut = good.clone();
            cut.remove(i);
            let _ = parse_line(&cut);
        }
        assert!(parse_line(&good).is_some());
    }
}
