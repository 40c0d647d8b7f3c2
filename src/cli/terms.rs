//! The API's reasons in the CLI's words: the daemon names its arguments
//! (`“access_ip-0=…”`, `“ttl”`), the administrator typed flags.

/// API argument names and the flag that sets each.
const FLAGS: [(&str, &str); 11] = [
    ("ticket_id", "--ticket-id"),
    ("server_num", "--server-num"),
    ("ssh_username", "--ssh-username"),
    ("ssh_key", "--ssh-key-file"),
    ("ttl", "--ttl"),
    ("access_ip", "--access-ip"),
    ("acl", "--acl"),
    ("expires_at", "--expires"),
    ("whitelist_ip", "--whitelist-ip"),
    ("new_name", "--new-name"),
    ("token_name", "the token's name"),
];

/// The flag for a quoted API argument: `ttl`, `ttl=0`, `access_ip-0=…`.
fn flag_of(quoted: &str) -> Option<String> {
    let (name, value) = match quoted.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (quoted, None),
    };
    // A numbered argument (`access_ip-0`) is the repeatable flag.
    let base = match name.rsplit_once('-') {
        Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => b,
        _ => name,
    };
    let flag = FLAGS.iter().find(|(api, _)| *api == base)?.1;
    Some(match value {
        Some(v) if v != "…" && !v.is_empty() => format!("{flag} {v}"),
        _ => flag.to_string(),
    })
}

/// `reason` with every quoted API argument name replaced by its flag;
/// other quoted text (values, key types) is left alone.
pub fn in_cli_terms(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(open) = rest.find('“') {
        let after = &rest[open + '“'.len_utf8()..];
        let Some(close) = after.find('”') else {
            break;
        };
        out.push_str(&rest[..open]);
        let quoted = &after[..close];
        match flag_of(quoted) {
            Some(flag) => out.push_str(&flag),
            None => {
                out.push('“');
                out.push_str(quoted);
                out.push('”');
            }
        }
        rest = &after[close + '”'.len_utf8()..];
    }
    out.push_str(rest);
    // A few fixed phrases that name an argument without quotes.
    out.replace("give a ttl in seconds", "give a --ttl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_become_flags() {
        assert_eq!(
            in_cli_terms(
                "No support IP addresses: pass “access_ip-0=…”, or configure access.support_ips."
            ),
            "No support IP addresses: pass --access-ip, or configure access.support_ips."
        );
        assert_eq!(
            in_cli_terms("“ttl=0” (no expiry) is not allowed here; give a ttl in seconds, or set access.allow_unlimited = true."),
            "--ttl 0 (no expiry) is not allowed here; give a --ttl, or set access.allow_unlimited = true."
        );
        assert_eq!(
            in_cli_terms("The “ticket_id” argument must be 3 to 64 word characters; got “12”."),
            "The --ticket-id argument must be 3 to 64 word characters; got “12”."
        );
        assert_eq!(
            in_cli_terms(
                "“ttl” 99999 is longer than the 86400 seconds allowed (access.max_ttl_secs)."
            ),
            "--ttl 99999 is longer than the 86400 seconds allowed (access.max_ttl_secs)."
        );
        // Values and unknown names stay quoted; an unclosed quote is kept.
        assert_eq!(
            in_cli_terms("“bogus” is not a valid Linux user name “x"),
            "“bogus” is not a valid Linux user name “x"
        );
        assert_eq!(
            in_cli_terms("“whitelist_ip-3=10.0.0.1” bad"),
            "--whitelist-ip 10.0.0.1 bad"
        );
    }
}
