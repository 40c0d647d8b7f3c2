//! Support SSH public keys.
//!
//! A [`SupportKey`] is one OpenSSH public key line that passed our policy:
//! Ed25519, ECDSA (nistp256/384/521) or RSA of at least 2048 bits, no
//! options, no second key, no control characters. The key is parsed and
//! re-serialised by russh's key module, so what we write is canonical and
//! never contains bytes the portal sent us verbatim.

use std::fmt;

use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, HashAlg, PublicKey};

use crate::types::{printable, InputError};

/// Longest key line we look at; a 16384-bit RSA key is about 2.8 KB.
const MAX_LINE_LEN: usize = 8192;
/// Weakest RSA modulus we accept (NIST, OpenSSH defaults).
pub const MIN_RSA_BITS: usize = 2048;
/// OpenSSH refuses RSA keys above this size.
const MAX_RSA_BITS: usize = 16384;

const POLICY: &str = "support keys must be RSA of at least 2048 bits, ECDSA or Ed25519";

/// Key types we accept, as they appear first on an OpenSSH line.
const ALLOWED_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// A validated support public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportKey {
    key: PublicKey,
    /// Canonical "type base64", computed once so accessors cannot fail.
    openssh: String,
}

/// True when `token` names an SSH key or certificate type that OpenSSH knows
/// (used to spot options and a second key on the line).
fn looks_like_key_type(token: &str) -> bool {
    ALLOWED_TYPES.contains(&token)
        || token == "ssh-dss"
        || token.starts_with("sk-")
        || token.contains("-cert-v01@openssh.com")
}

/// Base64 of an SSH key blob always starts with "AAAA" (the 4-byte length of
/// the type name, which is < 2^24).
fn looks_like_key_blob(token: &str) -> bool {
    token.len() >= 16
        && token.starts_with("AAAA")
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

fn refuse(msg: impl Into<String>) -> InputError {
    InputError::new(msg)
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_len(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    while let [0, tail @ ..] = rest {
        rest = tail;
    }
    match rest.first() {
        Some(first) => rest.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

impl SupportKey {
    /// Parses exactly one OpenSSH public key line `type base64 [comment]`.
    pub fn parse(line: &str) -> Result<SupportKey, InputError> {
        let line = line.trim();
        if line.is_empty() {
            return Err(refuse(
                "The SSH key is empty; paste one OpenSSH public key line such as “ssh-ed25519 AAAA… comment”.",
            ));
        }
        if line.len() > MAX_LINE_LEN {
            return Err(refuse(format!(
                "The SSH key is {} bytes long; a public key line is at most {MAX_LINE_LEN} bytes. Paste only the .pub line.",
                line.len()
            )));
        }
        if line.contains("PRIVATE KEY") {
            return Err(refuse(
                "This is a private key; give the public key instead (the .pub file, one line such as “ssh-ed25519 AAAA… comment”), and keep the private key to yourself.",
            ));
        }
        if line.contains(['\n', '\r']) {
            return Err(refuse(
                "The SSH key spans several lines; paste exactly one OpenSSH public key line.",
            ));
        }
        if let Some(c) = line.chars().find(|c| c.is_control()) {
            return Err(refuse(format!(
                "The SSH key contains the control character {}; paste the plain .pub line without tabs or NUL bytes.",
                c.escape_default()
            )));
        }

        let mut tokens = line.split(' ').filter(|t| !t.is_empty());
        let kind = tokens.next().unwrap_or_default();
        let blob = tokens.next();
        let comment: Vec<&str> = tokens.collect();

        Self::check_type(kind)?;
        let blob = blob.ok_or_else(|| {
            refuse(format!(
                "The SSH key has the type “{kind}” but no key data; paste the whole .pub line."
            ))
        })?;
        if comment
            .iter()
            .any(|t| looks_like_key_type(t) || looks_like_key_blob(t))
        {
            return Err(refuse(
                "The SSH key line holds more than one key; paste exactly one key.",
            ));
        }

        let key = Self::decode(kind, blob)?;
        Self::check_strength(&key)?;
        let mut bare = key.clone();
        bare.set_comment("");
        let openssh = bare.to_openssh().map_err(|e| {
            refuse(format!(
                "The SSH key could not be re-encoded ({e}); generate a new key with ssh-keygen."
            ))
        })?;
        Ok(SupportKey { key: bare, openssh })
    }

    fn check_type(kind: &str) -> Result<(), InputError> {
        if ALLOWED_TYPES.contains(&kind) {
            return Ok(());
        }
        if kind == "ssh-dss" {
            return Err(refuse(format!(
                "The key is DSA, which OpenSSH no longer accepts; {POLICY}."
            )));
        }
        if kind.starts_with("sk-") {
            return Err(refuse(format!(
                "The key “{}” needs a hardware security key that support staff cannot share; {POLICY}.",
                printable(kind)
            )));
        }
        if kind.contains("-cert-v01@openssh.com") {
            return Err(refuse(format!(
                "The key is an OpenSSH certificate; paste the plain public key ({POLICY})."
            )));
        }
        if kind.contains(['=', ',', '"']) || looks_like_option(kind) {
            return Err(refuse(
                "The SSH key starts with authorized_keys options; paste only “type base64 [comment]”, the options are added by supportauth.",
            ));
        }
        Err(refuse(format!(
            "“{}” is not an OpenSSH public key type; paste a line such as “ssh-ed25519 AAAA… comment” ({POLICY}).",
            printable(kind)
        )))
    }

    fn decode(kind: &str, blob: &str) -> Result<PublicKey, InputError> {
        match PublicKey::from_openssh(&format!("{kind} {blob}")) {
            Ok(key) => Ok(key),
            Err(_) => {
                // Find out whether the data is a valid key of another type, to
                // give a precise reason.
                if let Ok(other) = russh::keys::parse_public_key_base64(blob) {
                    let actual = other.algorithm();
                    if actual.as_str() != kind {
                        return Err(refuse(format!(
                            "The SSH key says “{kind}” but its data is a “{}” key; the line was edited or mixed up. Paste the .pub line unchanged.",
                            actual.as_str()
                        )));
                    }
                }
                Err(refuse(format!(
                    "The SSH key data is not a valid “{kind}” key (bad base64 or truncated); paste the .pub line unchanged."
                )))
            }
        }
    }

    fn check_strength(key: &PublicKey) -> Result<(), InputError> {
        match key.key_data() {
            KeyData::Ed25519(_) => Ok(()),
            KeyData::Ecdsa(_) => Ok(()),
            KeyData::Rsa(rsa) => {
                let bits = rsa.n().as_positive_bytes().map(bit_len).unwrap_or(0);
                if bits < MIN_RSA_BITS {
                    Err(refuse(format!("The key is RSA {bits} bits; {POLICY}.")))
                } else if bits > MAX_RSA_BITS {
                    Err(refuse(format!(
                        "The key is RSA {bits} bits, larger than OpenSSH accepts ({MAX_RSA_BITS}); {POLICY}."
                    )))
                } else {
                    Ok(())
                }
            }
            other => Err(refuse(format!(
                "The key type “{}” is not accepted; {POLICY}.",
                other.algorithm().as_str()
            ))),
        }
    }

    /// Canonical `type base64` (the pasted comment is dropped).
    pub fn openssh(&self) -> String {
        self.openssh.clone()
    }

    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The key type, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> String {
        self.key.algorithm().as_str().to_string()
    }

    /// True for RSA keys (callers may prefer to mention SHA-2 signatures).
    pub fn is_rsa(&self) -> bool {
        matches!(self.key.algorithm(), Algorithm::Rsa { .. })
    }
}

/// Options such as `command="..."` or `no-pty` come before the type; when a
/// key type appears later on a line whose first token is unknown, the first
/// token is an option list.
fn looks_like_option(token: &str) -> bool {
    token.starts_with("no-") || token.starts_with("restrict") || token.starts_with("cert-authority")
}

impl fmt::Display for SupportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.openssh)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Produced by `ssh-keygen -t ... -N ''` (OpenSSH 9.2p1).
    pub const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICB4vafQSnsv3bDYYiG8B789n5ZvxYvX222J5kElsBaO c_ed25519";
    pub const ED25519_FP: &str = "SHA256:Jr0f5OI7CGMZoGLhSkYLa7QyCmV3rK9vzl/QwvJDRZk";
    pub const ECDSA256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDCzXaDV21nla3TpUaF7zGaYz014eGNM0EFhGL2sdjeA140nIHis/AS7eVpfzMJG+ljxcVnjw6FiFZmklu7SbEQ= c_ecdsab256";
    pub const ECDSA384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBKl3zs1Dv35YLPD4akFAXJ7KxiurgwF14Ojmrnlgdo1dDrqpd+YnJzJSr2+Lv01LoYhcpyEGS63l8XZTqYZvnL90NFuwf4XEwgtQgAbfNoGNpPOjqc111WLvYl6mu6PdbQ== c_ecdsab384";
    pub const ECDSA521: &str = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAAhAoreYjXsyI3y+cDDOz+iXXW+0cGGdSudNi9/LyVkuZ0iRlaMkxIfYRS/rO2/dws5twP4Ou5Tm+kry/Wf2I7lvAHTEOwDM08d5i2tVbLyrYUjOkYhqCxFVxWk8MDyLM0L/Z2j3jIi9vySt3FxjhhVnzn+P5LvJ8wNanlIWy6WXvP8rg== c_ecdsab521";
    pub const RSA2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCIdqKfIWneJnOiLFQNjXNzj1R7SWgl5YxjX/FZ1BvB9E1tzKxsnyEGqXPiuPXVpOSAGUw+J52BQpzfAd4RO0zzw4KDSEBelqIeqGL/ZtOmRC5LSCnxWcaI6rQ+eho1lDRHXzW02gGqsBIyzeYBNdVcZqBSQhB05rrJooc9/S3ViSrCmrDwqCsUI5PtowgG24b6RR/a2fXHos+OFpN8fkKxAQGIRVR8uwiza3yC3O1BmJBNBNZKi3Qh+/lYl3+dN9Kd87705aJJ/76mIZvUCaw6QyoJzPH8bnpQObiclWyir7pExRQGlGz6iSVZEEVY7h3fVL1LV77Ge2cDTx4n4Bp7 c_rsab2048";
    pub const RSA2048_FP: &str = "SHA256:ZaO9LgBQb0F70Z4PCcvbN0RXSRtoekuaOam/Yr+OlGI";
    pub const RSA1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDWjCZH20NTyN0D48Jj3jWQT8r1CZpUHY+HyH+sRF5LlM4Ttp2zdGxcIrPdr+2gqT/1jZ17VOdo7gKWN+UZdgx1/C1TizHsy43rYC7yFCt8stw/nKlMRZrBmX/YYD6ImRvq09TloXmDAFygLjmGCl5vaJiV0evHotD2GcQ8KFjonw== c_rsab1024";
    pub const DSA: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBAJYpiMUV/TFhvaEMhqzusynxFDr40/zfLY7kfrxF4lZr4TpWf5bVgOv54zhpUwGlB2+WRGI606JxICNVHiacaAJY2U1qC3socnNIerDyv9MBXCdS9wAtGf2tPuN+GSZC6HXqf3Emo1oSg4uxlLQUb8i+v9TwMWHCEsHyqIp8/ParAAAAFQDX3wrcoB27M6sT4bB6rbFjrhVAfQAAAIBHoN5+vprf7sY1v/Xo6oWkAg8lpu3MY0KUP1rv18CwHIRndcksZe7MGC5hjr0GstMKRa1tvF+PLB0r0iFt/Gsbrms8vre1gVRb7nib7F7ba2gQw+A3vcdvPxZCWOiiBTBA6OnJHDj40Tj6GipbSScrEsb5GEK/dH3pb/1P+NOQkAAAAIBErgcLlzD8Awgt6YfVLOoj8bV2zSEbMZu9G82hLJ+raTriemRukT08FXZnY3SFnJtXQj9zXsaFvhEGfQ7A7NuM/mxJCYPDdRYd/5UGFuR0zOM7akJ6Y3qtup/vk4VQIOrTAfAoOpYUxeY3ckk8pkF6v1TvUHzo39hvQQu51oRCPA== c_dsa";

    fn blob(line: &str) -> &str {
        line.split(' ').nth(1).unwrap()
    }

    fn err(line: &str) -> String {
        SupportKey::parse(line).unwrap_err().0
    }

    #[test]
    fn accepts_allowed_types_and_reserialises() {
        for (line, alg) in [
            (ED25519, "ssh-ed25519"),
            (ECDSA256, "ecdsa-sha2-nistp256"),
            (ECDSA384, "ecdsa-sha2-nistp384"),
            (ECDSA521, "ecdsa-sha2-nistp521"),
            (RSA2048, "ssh-rsa"),
        ] {
            let k = SupportKey::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(k.algorithm(), alg);
            assert_eq!(k.openssh(), format!("{alg} {}", blob(line)));
            assert_eq!(k.to_string(), k.openssh());
        }
        assert_eq!(
            SupportKey::parse(ED25519).unwrap().fingerprint(),
            ED25519_FP
        );
        assert_eq!(
            SupportKey::parse(RSA2048).unwrap().fingerprint(),
            RSA2048_FP
        );
    }

    #[test]
    fn trims_and_tolerates_missing_comment_and_spaces() {
        let bare = format!("ssh-ed25519 {}", blob(ED25519));
        assert_eq!(SupportKey::parse(&bare).unwrap().openssh(), bare);
        let padded = format!("  \n{ED25519}\r\n ");
        assert_eq!(SupportKey::parse(&padded).unwrap().openssh(), bare);
        let comment = format!("ssh-ed25519   {}   a b c", blob(ED25519));
        assert_eq!(SupportKey::parse(&comment).unwrap().openssh(), bare);
    }

    #[test]
    fn rejects_weak_and_unsupported_types() {
        let e = err(RSA1024);
        assert!(e.contains("RSA 1024 bits"), "{e}");
        assert!(e.contains("at least 2048"), "{e}");
        assert!(err(DSA).contains("DSA"));

        let sk = PublicKey::new(
            KeyData::SkEd25519(russh::keys::ssh_key::public::SkEd25519::new(
                russh::keys::ssh_key::public::Ed25519PublicKey([7u8; 32]),
                "ssh:",
            )),
            "",
        )
        .to_openssh()
        .unwrap();
        assert!(sk.starts_with("sk-ssh-ed25519@openssh.com "), "{sk}");
        assert!(err(&sk).contains("hardware security key"));
    }

    #[test]
    fn rejects_options_control_chars_and_second_key() {
        let e = err(&format!("from=\"1.2.3.4\" {ED25519}"));
        assert!(e.contains("options"), "{e}");
        let e = err(&format!("no-pty {ED25519}"));
        assert!(e.contains("options"), "{e}");
        let e = err(&format!("restrict,command=\"x\" {ED25519}"));
        assert!(e.contains("options"), "{e}");
        let e = err(&format!("{ED25519}\n{RSA2048}"));
        assert!(e.contains("several lines"), "{e}");
        let e = err(&format!("{ED25519}\rfoo"));
        assert!(e.contains("several lines"), "{e}");
        let e = err(&format!("ssh-ed25519 {}\0x", blob(ED25519)));
        assert!(e.contains("control character"), "{e}");
        let e = err(&format!("ssh-ed25519\t{}", blob(ED25519)));
        assert!(e.contains("control character"), "{e}");
        let e = err(&format!("{ED25519} {RSA2048}"));
        assert!(e.contains("more than one key"), "{e}");
        let e = err(&format!("ssh-ed25519 {} {}", blob(ED25519), blob(RSA2048)));
        assert!(e.contains("more than one key"), "{e}");
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let e = err(&format!("ssh-ed25519 {}", blob(RSA2048)));
        assert!(e.contains("its data is a “ssh-rsa” key"), "{e}");
        let e = err(&format!("ssh-rsa {}", blob(ECDSA256)));
        assert!(e.contains("ecdsa-sha2-nistp256"), "{e}");
        let e = err("ssh-ed25519 AAAAnotbase64!!");
        assert!(e.contains("not a valid"), "{e}");
        let truncated = &blob(ED25519)[..40];
        assert!(err(&format!("ssh-ed25519 {truncated}")).contains("not a valid"));
        assert!(err("ssh-ed25519").contains("no key data"));
        assert!(err("").contains("empty"));
        assert!(err("   ").contains("empty"));
        assert!(err("hello world").contains("not an OpenSSH public key type"));
        assert!(err(&"A".repeat(MAX_LINE_LEN + 1)).contains("at most"));
    }
}
