//! Pure authorized_keys line editing (no I/O).
//!
//! The file is treated as bytes. Lines we do not own are never re-encoded:
//! CRLF, a missing final newline, comments, options and invalid UTF-8 pass
//! through untouched. Our lines are inserted at the top, each ended by `\n`,
//! so the admin's bytes are always an untouched suffix and removing our line
//! (with its newline) gives back exactly the bytes we started from.
//!
//! A line is "ours" when it is a valid key line (options allowed) whose
//! comment is exactly a [`KeyMark`] comment; anything else is foreign.

use russh::keys::PublicKey;

use crate::clock::openssh_expiry;
use crate::sshkey::SupportKey;
use crate::types::{ServerNum, SupportIp, TicketId};

/// What identifies one of our keys: cPanel's comment
/// `<ticket>_server_<server>@cpanel.net_<epoch>` (reference §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyMark {
    pub ticket: TicketId,
    pub server: ServerNum,
    /// When the grant was made (seconds since the epoch).
    pub epoch: i64,
}

const SERVER_SEP: &str = "_server_";
const DOMAIN_SEP: &str = "@cpanel.net_";

impl KeyMark {
    pub fn new(ticket: TicketId, server: ServerNum, epoch: i64) -> Self {
        KeyMark {
            ticket,
            server,
            epoch,
        }
    }

    pub fn comment(&self) -> String {
        format!(
            "{}{SERVER_SEP}{}{DOMAIN_SEP}{}",
            self.ticket, self.server, self.epoch
        )
    }

    /// Parses a comment written by [`KeyMark::comment`]. Only the canonical
    /// form matches (no leading zeros, no extra text), so a look-alike
    /// comment on an admin's key is never mistaken for ours.
    ///
    /// The ticket is read as the number the comment holds, not re-checked
    /// as API input: `ticket_id=012` is ticket 12 (leading zeros are
    /// stripped), whose comment `12_server_…` must be found again.
    pub fn parse_comment(s: &str) -> Option<KeyMark> {
        let (ticket, rest) = s.split_once(SERVER_SEP)?;
        let (server, epoch) = rest.split_once(DOMAIN_SEP)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ticket) || !digits(server) || !digits(epoch) {
            return None;
        }
        let mark = KeyMark {
            ticket: TicketId::from_stored(ticket.parse().ok()?).ok()?,
            server: ServerNum::parse(server).ok()?,
            epoch: epoch.parse().ok()?,
        };
        (mark.comment() == s).then_some(mark)
    }

    /// True when both marks name the same ticket and server (one grant slot),
    /// whatever their time stamps.
    pub fn same_slot(&self, other: &KeyMark) -> bool {
        self.ticket == other.ticket && self.server == other.server
    }
}

/// Why a line could not be rendered or added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no support source address was given; a key without a from= restriction would accept logins from anywhere")]
    NoSourceAddresses,
    #[error("refusing to add a line that contains a newline, NUL or other control character")]
    NotOneLine,
}

/// Renders our authorized_keys line (no trailing newline):
/// `from="ip1,ip2",expiry-time="YYYYMMDDHHMMSSZ" <type> <base64> <comment>`.
pub fn render_line(
    key: &SupportKey,
    from: &[SupportIp],
    expiry: Option<i64>,
    mark: &KeyMark,
) -> Result<String, LineError> {
    if from.is_empty() {
        return Err(LineError::NoSourceAddresses);
    }
    let ips: Vec<String> = from.iter().map(|ip| ip.to_string()).collect();
    let mut options = format!("from=\"{}\"", ips.join(","));
    if let Some(t) = expiry {
        options.push_str(&format!(",expiry-time=\"{}\"", openssh_expiry(t)));
    }
    Ok(format!("{options} {} {}", key.openssh(), mark.comment()))
}

/// One of our lines found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurLine {
    pub mark: KeyMark,
    /// Canonical `type base64` of the key.
    pub key: String,
    /// The whole line, without its line terminator.
    pub line: String,
}

/// A parsed key line: options (possibly empty), key and comment.
#[derive(Debug, Clone)]
pub struct KeyLine<'a> {
    pub options: &'a str,
    pub key: PublicKey,
    pub comment: &'a str,
}

/// Splits bytes into lines, each keeping its `\n` (the last may lack one).
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split_inclusive(|b| *b == b'\n')
}

/// Content of a line without its terminator (`\n` or `\r\n`).
fn line_body(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits off the first blank-separated token.
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(is_blank);
    if s.is_empty() {
        return None;
    }
    let end = s.find(is_blank).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// Skips an option list the way OpenSSH does: up to the first blank that
/// is not inside double quotes (`\"` does not end a quote).
fn skip_options(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => break,
            _ => {}
        }
        i += 1;
    }
    (&s[..i], &s[i..])
}

fn parse_key_at(s: &str) -> Option<(PublicKey, &str)> {
    let (kind, rest) = token(s)?;
    let (blob, rest) = token(rest)?;
    let key = PublicKey::from_openssh(&format!("{kind} {blob}")).ok()?;
    Some((key, rest.trim_matches(is_blank)))
}

/// Parses one authorized_keys line (without terminator) into options, key
/// and comment; `None` for blank lines, comments and anything unparsable.
pub fn parse_key_line(line: &str) -> Option<KeyLine<'_>> {
    let s = line.trim_start_matches(is_blank);
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    if let Some((key, comment)) = parse_key_at(s) {
        return Some(KeyLine {
            options: "",
            key,
            comment,
        });
    }
    let (options, rest) = skip_options(s);
    let (key, comment) = parse_key_at(rest)?;
    Some(KeyLine {
        options,
        key,
        comment,
    })
}

/// Recognises one of our lines (given with or without its terminator).
pub fn parse_ours(line: &[u8]) -> Option<OurLine> {
    let body = std::str::from_utf8(line_body(line)).ok()?;
    // Cheap test first: a 100 000-line file should not decode every key.
    let comment = body.trim_end_matches(is_blank);
    let start = comment.rfind(is_blank)? + 1;
    KeyMark::parse_comment(&comment[start..])?;
    let parsed = parse_key_line(body)?;
    let mark = KeyMark::parse_comment(parsed.comment)?;
    let mut bare = parsed.key;
    bare.set_comment("");
    let key = bare.to_openssh().ok()?;
    Some(OurLine {
        mark,
        key,
        line: body.to_string(),
    })
}

/// The value of a line's `expiry-time` option (`None` without one): what
/// sshd holds the key to, compared by the reconciler with the store's end.
pub fn expiry_option(line: &str) -> Option<String> {
    let parsed = parse_key_line(line)?;
    let lower = parsed.options.to_ascii_lowercase();
    let start = lower.find("expiry-time=\"")? + "expiry-time=\"".len();
    let len = parsed.options[start..].find('"')?;
    Some(parsed.options[start..start + len].to_string())
}

/// Every line of ours in the file, in file order.
pub fn list_ours(bytes: &[u8]) -> Vec<OurLine> {
    split_lines(bytes).filter_map(parse_ours).collect()
}

/// Inserts `line` (one line, no terminator) at the top of the file.
pub fn add_line(bytes: &[u8], line: &str) -> Result<Vec<u8>, LineError> {
    if line.chars().any(|c| c.is_control()) {
        return Err(LineError::NotOneLine);
    }
    let mut out = Vec::with_capacity(line.len() + 1 + bytes.len());
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(bytes);
    Ok(out)
}

/// Removes every line of ours whose mark matches, with its terminator.
/// Returns the new bytes and how many lines were removed.
pub fn remove_ours(bytes: &[u8], select: &dyn Fn(&KeyMark) -> bool) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(bytes.len());
    let mut removed = 0;
    for line in split_lines(bytes) {
        match parse_ours(line) {
            Some(ours) if select(&ours.mark) => removed += 1,
            _ => out.extend_from_slice(line),
        }
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshkey::tests::{ECDSA256, ED25519, RSA2048};

    fn mark(t: u64, s: u64, e: i64) -> KeyMark {
        KeyMark::new(
            TicketId::parse(&t.to_string()).unwrap(),
            ServerNum::parse(&s.to_string()).unwrap(),
            e,
        )
    }

    fn ours(key: &str, m: &KeyMark) -> String {
        let k = SupportKey::parse(key).unwrap();
        let ips = [
            SupportIp::parse("203.0.113.5").unwrap(),
            SupportIp::parse("2001:db8::/64").unwrap(),
        ];
        render_line(&k, &ips, Some(1_795_000_000), m).unwrap()
    }

    fn roundtrip(original: &[u8]) {
        let m = mark(12345, 1, 1_700_000_000);
        let line = ours(ED25519, &m);
        let added = add_line(original, &line).unwrap();
        let listed = list_ours(&added);
        let before = list_ours(original).len();
        assert_eq!(listed.len(), before + 1);
        assert_eq!(listed[0].mark, m);
        assert_eq!(listed[0].line, line);
        let (back, n) = remove_ours(&added, &|k| *k == m);
        assert_eq!(n, 1);
        assert_eq!(
            back, original,
            "add-then-remove must restore the exact bytes"
        );
    }

    #[test]
    fn comment_format() {
        let m = mark(12345, 2, 1_700_000_000);
        assert_eq!(m.comment(), "12345_server_2@cpanel.net_1700000000");
        assert_eq!(KeyMark::parse_comment(&m.comment()), Some(m));
        for bad in [
            "012345_server_2@cpanel.net_1700000000",
            "12345_server_02@cpanel.net_1700000000",
            "12345_server_2@cpanel.net_1700000000 ",
            "12345_server_2@cpanel.net_",
            "12345_server_2@cpanel.net_17x",
            "12345_server_2@cpanel.org_1700000000",
            "012_server_2@cpanel.net_1700000000",
            "12345_server_0@cpanel.net_1700000000",
            "x12345_server_2@cpanel.net_1700000000",
            "12345_server_2@cpanel.net_-5",
            "",
        ] {
            assert_eq!(KeyMark::parse_comment(bad), None, "{bad}");
        }
    }

    /// Found by the `authorized_keys` fuzz target: `ticket_id=060` is
    /// ticket 60, and its line (`60_server_…`) was not recognised as ours,
    /// so it could never be listed, revoked or expired.
    #[test]
    fn short_ticket_numbers_are_found_again() {
        for raw in ["060", "001", "099", "100"] {
            let m = KeyMark::new(
                TicketId::parse(raw).unwrap(),
                ServerNum::parse("2").unwrap(),
                170_020_300,
            );
            assert_eq!(KeyMark::parse_comment(&m.comment()), Some(m), "{raw}");
            let line = ours(RSA2048, &m);
            let added = add_line(b"# admin\n", &line).unwrap();
            let found = list_ours(&added);
            assert_eq!(found.len(), 1, "{raw}: {line}");
            assert_eq!(found[0].mark, m);
            let (back, n) = remove_ours(&added, &|k| *k == m);
            assert_eq!((back.as_slice(), n), (&b"# admin\n"[..], 1));
        }
    }

    #[test]
    fn renders_cpanel_style_line() {
        let m = mark(12345, 1, 1_700_000_000);
        let line = ours(ED25519, &m);
        let key = SupportKey::parse(ED25519).unwrap().openssh();
        assert_eq!(
            line,
            format!("from=\"203.0.113.5,2001:db8::/64\",expiry-time=\"20261118110640Z\" {key} 12345_server_1@cpanel.net_1700000000")
        );
        let k = SupportKey::parse(ED25519).unwrap();
        let ip = [SupportIp::parse("203.0.113.5").unwrap()];
        assert_eq!(
            render_line(&k, &ip, None, &m).unwrap(),
            format!("from=\"203.0.113.5\" {key} 12345_server_1@cpanel.net_1700000000")
        );
        assert_eq!(
            render_line(&k, &[], None, &m),
            Err(LineError::NoSourceAddresses)
        );
        let parsed = parse_ours(line.as_bytes()).unwrap();
        assert_eq!(parsed.key, key);
        assert_eq!(parsed.mark, m);
    }

    #[test]
    fn roundtrips_hostile_files() {
        roundtrip(b"");
        roundtrip(b"\n");
        roundtrip(b"\r\n\r\n");
        roundtrip(format!("{RSA2048}\r\n# admin comment\r\n{ECDSA256}").as_bytes());
        roundtrip(RSA2048.as_bytes());
        roundtrip(
            format!("# keys\n\n   \ncommand=\"echo \\\"hi there\\\"\",no-pty {ED25519}\n")
                .as_bytes(),
        );
        let mut invalid = b"\xff\xfe garbage \x00 bytes\n".to_vec();
        invalid.extend_from_slice(ED25519.as_bytes());
        invalid.extend_from_slice(b"\n\xc3\x28");
        roundtrip(&invalid);
    }

    #[test]
    fn our_lines_with_options_and_without() {
        let m = mark(555, 3, 1);
        let key = SupportKey::parse(RSA2048).unwrap().openssh();
        // cPanel itself writes lines without options.
        let plain = format!("{key} {}", m.comment());
        assert_eq!(parse_ours(plain.as_bytes()).unwrap().mark, m);
        let tricky = format!(
            "command=\"echo a b\",from=\"1.2.3.4\"\t{key}  {}  \r\n",
            m.comment()
        );
        let got = parse_ours(tricky.as_bytes()).unwrap();
        assert_eq!(got.mark, m);
        assert_eq!(got.key, key);
    }

    #[test]
    fn foreign_and_broken_lines_are_untouched() {
        let m = mark(12345, 1, 1_700_000_000);
        let key = SupportKey::parse(ED25519).unwrap().openssh();
        let similar = [
            format!("{key} 12345_server_1@cpanel.net_1700000000x"),
            format!("{key} 12345_server_1@cpanel.com_1700000000"),
            format!("{key} admin 12345_server_1@cpanel.net_1700000000 x"),
            format!("{key} 012345_server_1@cpanel.net_1700000000"),
            // our comment but the key is corrupt: not parseable, so not ours
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICB4 {}", m.comment()),
            // our comment on a comment line
            format!("# {key} {}", m.comment()),
        ];
        let file = similar.join("\n") + "\n";
        assert!(list_ours(file.as_bytes()).is_empty());
        let (out, n) = remove_ours(file.as_bytes(), &|_| true);
        assert_eq!(n, 0);
        assert_eq!(out, file.as_bytes());
    }

    #[test]
    fn duplicate_marks_all_removed_others_kept() {
        let a = mark(100, 1, 10);
        let b = mark(100, 2, 10);
        let file = format!(
            "{}\n{ED25519}\n{}\n{}\n",
            ours(ED25519, &a),
            ours(RSA2048, &a),
            ours(ECDSA256, &b)
        );
        assert_eq!(list_ours(file.as_bytes()).len(), 3);
        let (out, n) = remove_ours(file.as_bytes(), &|k| k.same_slot(&a));
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{ED25519}\n{}\n", ours(ECDSA256, &b))
        );
    }

    #[test]
    fn huge_file() {
        let mut file = Vec::new();
        for i in 0..100_000 {
            if i % 3 == 0 {
                file.extend_from_slice(format!("# line {i}\r\n").as_bytes());
            } else {
                file.extend_from_slice(format!("{ED25519} user{i}@host\n").as_bytes());
            }
        }
        roundtrip(&file);
    }

    /// OpenSSH's own parser reads our lines: same fingerprint, same comment.
    #[test]
    fn ssh_keygen_reads_our_lines() {
        let tool = std::path::Path::new("/usr/bin/ssh-keygen");
        if !tool.exists() {
            crate::test_skip!(
                "SKIPPED: ssh_keygen_reads_our_lines: /usr/bin/ssh-keygen not installed"
            );
            return;
        }
        let keys = [ED25519, ECDSA256, RSA2048];
        let mut file = String::new();
        for (i, k) in keys.iter().enumerate() {
            let m = mark(4000 + i as u64, 1, 1_700_000_000);
            file.push_str(&ours(k, &m));
            file.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, &file).unwrap();
        let out = crate::system::exec::run(
            tool,
            ["-l", "-E", "sha256", "-f"]
                .iter()
                .map(std::ffi::OsStr::new)
                .chain([path.as_os_str()]),
            None,
        )
        .unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), keys.len(), "{}", out.stdout);
        for (i, (k, l)) in keys.iter().zip(lines).enumerate() {
            let fp = SupportKey::parse(k).unwrap().fingerprint();
            let comment = format!("{}_server_1@cpanel.net_1700000000", 4000 + i);
            assert!(l.contains(&fp) && l.contains(&comment), "{l}");
        }
    }

    #[test]
    fn add_refuses_multi_line() {
        assert_eq!(add_line(b"", "a\nb"), Err(LineError::NotOneLine));
        assert_eq!(add_line(b"", "a\0b"), Err(LineError::NotOneLine));
        assert_eq!(add_line(b"x", "a").unwrap(), b"a\nx");
    }
}
