//! Parsing of `sshd -T` output and login decisions. Pure: no I/O.
//!
//! `sshd -T -C user=..,addr=..` prints the effective configuration after
//! `Match` blocks, one lower-case `key value` per line (list options repeat
//! the key). From that we decide whether root may log in with a key and what
//! else (AllowUsers, AuthorizedKeysFile, ...) would still refuse a key login.

pub mod patterns;

use std::net::IpAddr;
use std::path::Path;

use crate::types::{canonical_ip, Username};
use patterns::ListMatch;

/// sshd's effective `PermitRootLogin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitRootLogin {
    Yes,
    /// `prohibit-password`, also spelled `without-password` (what sshd -T prints).
    ProhibitPassword,
    ForcedCommandsOnly,
    No,
}

impl PermitRootLogin {
    fn parse(v: &str) -> Option<Self> {
        match v {
            "yes" => Some(Self::Yes),
            "prohibit-password" | "without-password" => Some(Self::ProhibitPassword),
            "forced-commands-only" => Some(Self::ForcedCommandsOnly),
            "no" => Some(Self::No),
            _ => None,
        }
    }

    /// True when root may log in with an ordinary (option-free apart from
    /// `from=`/`expiry-time=`) public key.
    pub fn root_key_login_allowed(self) -> bool {
        matches!(self, Self::Yes | Self::ProhibitPassword)
    }
}

/// The parts of sshd's effective configuration that decide a key login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdEffective {
    pub permit_root_login: PermitRootLogin,
    pub ports: Vec<u16>,
    /// `ListenAddress` entries as `sshd -T` prints them (`addr:port`,
    /// `[v6]:port`), in order.
    pub listen_addresses: Vec<std::net::SocketAddr>,
    pub pubkey_authentication: bool,
    pub password_authentication: bool,
    /// `AuthorizedKeysFile` entries as printed (tokens such as `%h` unexpanded);
    /// `["none"]` when disabled.
    pub authorized_keys_files: Vec<String>,
    pub allow_users: Vec<String>,
    pub deny_users: Vec<String>,
    pub allow_groups: Vec<String>,
    pub deny_groups: Vec<String>,
    /// `AuthenticationMethods` lists (`["any"]` by default).
    pub authentication_methods: Vec<String>,
    /// `ForceCommand`, when not `none`.
    pub force_command: Option<String>,
    /// `UseDNS`: when on, host patterns may be compared with a resolved name
    /// we cannot predict; we only compare with the address.
    pub use_dns: bool,
}

/// `sshd -T` printed something we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshdParseError {
    #[error("sshd -T output has no `{0}` line; is this really OpenSSH's sshd?")]
    Missing(&'static str),
    #[error("sshd -T printed `{key} {value}`, which supportauth does not understand")]
    BadValue { key: String, value: String },
}

impl SshdEffective {
    /// Where support's SSH connection goes: the first address sshd listens
    /// on by name, else its IPv4 wildcard (0.0.0.0: every address), and
    /// that entry's port.
    pub fn endpoint(&self) -> std::net::SocketAddr {
        let specific = self
            .listen_addresses
            .iter()
            .find(|a| !a.ip().is_unspecified());
        let v4_any = self.listen_addresses.iter().find(|a| a.is_ipv4());
        specific
            .or(v4_any)
            .or(self.listen_addresses.first())
            .copied()
            .unwrap_or_else(|| {
                let port = self.ports.first().copied().unwrap_or(22);
                std::net::SocketAddr::from(([0, 0, 0, 0], port))
            })
    }

    /// Parses the full output of `sshd -T`.
    pub fn parse(text: &str) -> Result<Self, SshdParseError> {
        let mut permit_root_login = None;
        let mut pubkey_authentication = None;
        let mut password_authentication = false;
        let mut use_dns = false;
        let mut eff = SshdEffective {
            permit_root_login: PermitRootLogin::No,
            ports: Vec::new(),
            listen_addresses: Vec::new(),
            pubkey_authentication: false,
            password_authentication: false,
            authorized_keys_files: Vec::new(),
            allow_users: Vec::new(),
            deny_users: Vec::new(),
            allow_groups: Vec::new(),
            deny_groups: Vec::new(),
            authentication_methods: Vec::new(),
            force_command: None,
            use_dns: false,
        };
        for line in text.lines() {
            let line = line.trim();
            let (key, value) = match line.split_once(' ') {
                Some((k, v)) => (k, v.trim()),
                None => continue,
            };
            let bad = || SshdParseError::BadValue {
                key: key.to_string(),
                value: crate::types::printable(value),
            };
            let words = || value.split_whitespace().map(str::to_string);
            match key {
                "permitrootlogin" => {
                    permit_root_login = Some(PermitRootLogin::parse(value).ok_or_else(bad)?)
                }
                "port" => eff.ports.push(value.parse().map_err(|_| bad())?),
                // `sshd -T` may add ` rdomain NAME`; the address comes first.
                "listenaddress" => eff.listen_addresses.push(
                    value
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.parse().ok())
                        .ok_or_else(bad)?,
                ),
                "pubkeyauthentication" => {
                    pubkey_authentication = Some(yes_no(value).ok_or_else(bad)?)
                }
                "passwordauthentication" => {
                    password_authentication = yes_no(value).ok_or_else(bad)?
                }
                "usedns" => use_dns = yes_no(value).ok_or_else(bad)?,
                "authorizedkeysfile" => eff.authorized_keys_files.extend(words()),
                "allowusers" => eff.allow_users.extend(words()),
                "denyusers" => eff.deny_users.extend(words()),
                "allowgroups" => eff.allow_groups.extend(words()),
                "denygroups" => eff.deny_groups.extend(words()),
                "authenticationmethods" => eff.authentication_methods.extend(words()),
                "forcecommand" if value != "none" => eff.force_command = Some(value.to_string()),
                _ => {}
            }
        }
        eff.permit_root_login =
            permit_root_login.ok_or(SshdParseError::Missing("permitrootlogin"))?;
        eff.pubkey_authentication =
            pubkey_authentication.ok_or(SshdParseError::Missing("pubkeyauthentication"))?;
        eff.password_authentication = password_authentication;
        eff.use_dns = use_dns;
        if eff.ports.is_empty() {
            return Err(SshdParseError::Missing("port"));
        }
        if eff.authentication_methods.is_empty() {
            eff.authentication_methods.push("any".into());
        }
        Ok(eff)
    }

    pub fn root_key_login_allowed(&self) -> bool {
        self.permit_root_login.root_key_login_allowed()
    }

    /// Why a key login of `user` (member of `groups`, primary included) from
    /// `from` would still be refused. Empty means nothing we know of stops it.
    /// Absolute `AuthorizedKeysFile` paths are not resolved (no home known):
    /// use [`Self::login_blockers_at_home`] for that.
    pub fn login_blockers(&self, user: &Username, groups: &[String], from: IpAddr) -> Vec<String> {
        self.login_blockers_at_home(user, None, groups, from)
    }

    /// Like [`Self::login_blockers`], also accepting an absolute
    /// `AuthorizedKeysFile` entry (e.g. `/home/%u/.ssh/authorized_keys`) when it
    /// expands to `<home>/.ssh/authorized_keys`.
    pub fn login_blockers_at_home(
        &self,
        user: &Username,
        home: Option<&Path>,
        groups: &[String],
        from: IpAddr,
    ) -> Vec<String> {
        let from = canonical_ip(from);
        let mut out = Vec::new();
        if !self.pubkey_authentication {
            out.push(
                "sshd has PubkeyAuthentication no for this connection, so no key can log in"
                    .to_string(),
            );
        }
        if user.is_root() && !self.root_key_login_allowed() {
            out.push(format!(
                "sshd's PermitRootLogin is {} for this connection, so root cannot log in with a key",
                match self.permit_root_login {
                    PermitRootLogin::No => "no",
                    PermitRootLogin::ForcedCommandsOnly => "forced-commands-only",
                    _ => "restricted",
                }
            ));
        }
        if !self
            .authorized_keys_files
            .iter()
            .any(|f| is_home_authorized_keys(f, user, home))
        {
            out.push(format!(
                "sshd's AuthorizedKeysFile is “{}”, which does not include ~/.ssh/authorized_keys where the support key is installed",
                self.authorized_keys_files.join(" ")
            ));
        }
        if !self
            .authentication_methods
            .iter()
            .any(|m| m == "any" || m == "publickey")
        {
            out.push(format!(
                "sshd's AuthenticationMethods “{}” requires more than a public key",
                self.authentication_methods.join(" ")
            ));
        }
        if let Some(cmd) = &self.force_command {
            out.push(format!(
                "sshd forces the command “{}” for this connection, so support would get no shell",
                crate::types::printable(cmd)
            ));
        }
        out.extend(self.user_list_blockers(user, from));
        out.extend(self.group_list_blockers(user, groups));
        out
    }

    /// sshd's `allowed_user()` order: DenyUsers, then AllowUsers.
    fn user_list_blockers(&self, user: &Username, from: IpAddr) -> Vec<String> {
        let mut out = Vec::new();
        for pat in &self.deny_users {
            match patterns::user_entry(user.as_str(), from, pat) {
                ListMatch::Match => out.push(format!(
                    "sshd's DenyUsers entry “{}” refuses {} from {}",
                    crate::types::printable(pat),
                    user,
                    from
                )),
                ListMatch::Invalid => out.push(invalid_pattern("DenyUsers", pat)),
                _ => {}
            }
        }
        if !self.allow_users.is_empty() {
            let mut allowed = false;
            for pat in &self.allow_users {
                match patterns::user_entry(user.as_str(), from, pat) {
                    ListMatch::Match => {
                        allowed = true;
                        break;
                    }
                    ListMatch::Invalid => out.push(invalid_pattern("AllowUsers", pat)),
                    _ => {}
                }
            }
            if !allowed {
                out.push(format!(
                    "sshd's AllowUsers (“{}”) does not list {} from {}; add “{}@{}” to AllowUsers",
                    crate::types::printable(&self.allow_users.join(" ")),
                    user,
                    from,
                    user,
                    from
                ));
            }
        }
        out
    }

    /// sshd's `ga_match()`: plain globs over the user's group names.
    fn group_list_blockers(&self, user: &Username, groups: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        if self.deny_groups.is_empty() && self.allow_groups.is_empty() {
            return out;
        }
        if groups.is_empty() {
            out.push(format!(
                "sshd has AllowGroups/DenyGroups but {user} is in no group, which sshd refuses"
            ));
            return out;
        }
        for pat in &self.deny_groups {
            if let Some(g) = groups.iter().find(|g| patterns::glob(g, pat)) {
                out.push(format!(
                    "sshd's DenyGroups entry “{}” refuses {user} (member of {g})",
                    crate::types::printable(pat)
                ));
            }
        }
        if !self.allow_groups.is_empty()
            && !groups
                .iter()
                .any(|g| self.allow_groups.iter().any(|p| patterns::glob(g, p)))
        {
            out.push(format!(
                "sshd's AllowGroups (“{}”) contains none of {user}'s groups ({})",
                crate::types::printable(&self.allow_groups.join(" ")),
                groups.join(", ")
            ));
        }
        out
    }
}

fn invalid_pattern(option: &str, pat: &str) -> String {
    format!(
        "sshd's {option} entry “{}” is invalid (sshd refuses logins it cannot evaluate); fix it",
        crate::types::printable(pat)
    )
}

fn yes_no(v: &str) -> Option<bool> {
    match v {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// True when an `AuthorizedKeysFile` entry names `~/.ssh/authorized_keys`.
/// Conservative: only `%h`, `%u` and `%%` are expanded; anything we cannot
/// resolve does not count.
fn is_home_authorized_keys(entry: &str, user: &Username, home: Option<&Path>) -> bool {
    if entry == "none" {
        return false;
    }
    if entry == ".ssh/authorized_keys" || entry == "%h/.ssh/authorized_keys" {
        return true;
    }
    let Some(home) = home.and_then(Path::to_str) else {
        return false;
    };
    let mut expanded = String::new();
    let mut chars = entry.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            expanded.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => expanded.push_str(home),
            Some('u') => expanded.push_str(user.as_str()),
            Some('%') => expanded.push('%'),
            _ => return false,
        }
    }
    let want = format!("{}/.ssh/authorized_keys", home.trim_end_matches('/'));
    let rel_ok = !expanded.starts_with('/') && format!("{home}/{expanded}") == want;
    expanded == want || rel_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("fixtures/default_prohibit_password.txt");
    const RESTRICTED: &str = include_str!("fixtures/restricted.txt");

    #[test]
    fn endpoint_is_the_first_listen_address_and_its_port() {
        let any = SshdEffective::parse(DEFAULT).unwrap();
        assert_eq!(any.endpoint(), "0.0.0.0:2222".parse().unwrap());
        let one = DEFAULT.replacen(
            "listenaddress [::]:2222",
            "listenaddress 192.0.2.7:2022 rdomain blue",
            1,
        );
        let one = SshdEffective::parse(&one).unwrap();
        assert_eq!(one.endpoint(), "192.0.2.7:2022".parse().unwrap());
        assert!(SshdEffective::parse(&DEFAULT.replacen("[::]:2222", "nonsense", 1)).is_err());
    }

    fn u(s: &str) -> Username {
        Username::parse(s).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn with(base: &str, replace: &[(&str, &str)]) -> SshdEffective {
        let mut text: String = base.to_string();
        for (from, to) in replace {
            assert!(text.contains(from), "fixture lacks {from}");
            text = text.replace(from, to);
        }
        SshdEffective::parse(&text).unwrap()
    }

    #[test]
    fn parses_real_default_output() {
        let e = SshdEffective::parse(DEFAULT).unwrap();
        assert_eq!(e.permit_root_login, PermitRootLogin::ProhibitPassword);
        assert!(e.root_key_login_allowed());
        assert_eq!(e.ports, vec![2222]);
        assert!(e.pubkey_authentication);
        assert_eq!(
            e.authorized_keys_files,
            vec![".ssh/authorized_keys", ".ssh/authorized_keys2"]
        );
        assert!(e.allow_users.is_empty() && e.deny_users.is_empty());
        assert_eq!(e.authentication_methods, vec!["any"]);
        assert_eq!(e.force_command, None);
        assert!(e
            .login_blockers(&Username::root(), &["root".into()], ip("203.0.113.7"))
            .is_empty());
    }

    #[test]
    fn parses_real_restricted_output() {
        let e = SshdEffective::parse(RESTRICTED).unwrap();
        assert_eq!(e.permit_root_login, PermitRootLogin::No);
        assert_eq!(e.ports, vec![22, 2200]);
        assert_eq!(e.endpoint().port(), e.ports[0]);
        assert!(!e.pubkey_authentication);
        assert_eq!(
            e.allow_users,
            vec!["alice", "root@203.0.113.0/24", "cp*.ssh", "bob@192.0.2.?"]
        );
        assert_eq!(e.deny_users, vec!["mallory"]);
        assert_eq!(e.allow_groups, vec!["wheel", "sudo"]);
        assert_eq!(e.deny_groups, vec!["banned"]);
        assert_eq!(
            e.authorized_keys_files,
            vec!["%h/.ssh/authorized_keys", "/etc/ssh/keys/%u"]
        );
    }

    #[test]
    fn permit_root_login_spellings() {
        for (v, allowed) in [
            ("yes", true),
            ("prohibit-password", true),
            ("without-password", true),
            ("forced-commands-only", false),
            ("no", false),
        ] {
            let e = with(
                DEFAULT,
                &[(
                    "permitrootlogin without-password",
                    &format!("permitrootlogin {v}"),
                )],
            );
            assert_eq!(e.root_key_login_allowed(), allowed, "{v}");
            let blockers = e.login_blockers(&Username::root(), &["root".into()], ip("192.0.2.1"));
            assert_eq!(blockers.is_empty(), allowed, "{v}: {blockers:?}");
        }
        // PermitRootLogin does not concern other users.
        let e = with(
            DEFAULT,
            &[("permitrootlogin without-password", "permitrootlogin no")],
        );
        assert!(e
            .login_blockers(&u("cp123.ssh"), &["sudo".into()], ip("192.0.2.1"))
            .is_empty());
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            SshdEffective::parse("port 22\n"),
            Err(SshdParseError::Missing("permitrootlogin"))
        );
        let e = SshdEffective::parse(
            &DEFAULT.replace("permitrootlogin without-password", "permitrootlogin maybe"),
        );
        assert!(matches!(e, Err(SshdParseError::BadValue { .. })), "{e:?}");
        assert!(SshdEffective::parse("").is_err());
    }

    #[test]
    fn pubkey_disabled_blocks() {
        let e = with(
            DEFAULT,
            &[("pubkeyauthentication yes", "pubkeyauthentication no")],
        );
        let b = e.login_blockers(&Username::root(), &[], ip("192.0.2.1"));
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].contains("PubkeyAuthentication"));
    }

    #[test]
    fn authorized_keys_file_forms() {
        let user = u("cp7.ssh");
        let home = Path::new("/home/cp7.ssh");
        let check = |line: &str, home: Option<&Path>| {
            let e = with(
                DEFAULT,
                &[(
                    "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2",
                    line,
                )],
            );
            e.login_blockers_at_home(&user, home, &[], ip("192.0.2.1"))
                .is_empty()
        };
        assert!(check("authorizedkeysfile .ssh/authorized_keys", None));
        assert!(check("authorizedkeysfile %h/.ssh/authorized_keys", None));
        assert!(check(
            "authorizedkeysfile /etc/keys/%u %h/.ssh/authorized_keys",
            None
        ));
        assert!(!check("authorizedkeysfile none", None));
        assert!(!check("authorizedkeysfile /etc/ssh/keys/%u", Some(home)));
        assert!(!check(
            "authorizedkeysfile .ssh/authorized_keys2",
            Some(home)
        ));
        assert!(!check(
            "authorizedkeysfile /home/%u/.ssh/authorized_keys",
            None
        ));
        assert!(check(
            "authorizedkeysfile /home/%u/.ssh/authorized_keys",
            Some(home)
        ));
        assert!(!check(
            "authorizedkeysfile /home/%u/.ssh/authorized_keys",
            Some(Path::new("/srv/cp7"))
        ));
        assert!(check(
            "authorizedkeysfile %h/.ssh/authorized_keys",
            Some(Path::new("/home/cp7.ssh/"))
        ));
    }

    #[test]
    fn allow_and_deny_users() {
        let e = SshdEffective::parse(
            &RESTRICTED.replace("pubkeyauthentication no", "pubkeyauthentication yes"),
        )
        .unwrap();
        let sudo = vec!["sudo".to_string()];
        // cp*.ssh is allowed from anywhere (and sudo is an allowed group).
        assert!(e
            .login_blockers(&u("cp42.ssh"), &sudo, ip("198.51.100.1"))
            .is_empty());
        // root only from 203.0.113.0/24 (plus PermitRootLogin no here).
        let b = e.login_blockers(&Username::root(), &["wheel".into()], ip("198.51.100.1"));
        assert!(b.iter().any(|r| r.contains("AllowUsers")), "{b:?}");
        let b = e.login_blockers(&Username::root(), &["wheel".into()], ip("203.0.113.9"));
        assert!(!b.iter().any(|r| r.contains("AllowUsers")), "{b:?}");
        // IPv4-mapped IPv6 source counts as IPv4, as sshd normalises it.
        let b = e.login_blockers(
            &Username::root(),
            &["wheel".into()],
            ip("::ffff:203.0.113.9"),
        );
        assert!(!b.iter().any(|r| r.contains("AllowUsers")), "{b:?}");
        // bob@192.0.2.? : single-character wildcard over the address text.
        assert!(e
            .login_blockers(&u("bob"), &sudo, ip("192.0.2.5"))
            .is_empty());
        assert!(!e
            .login_blockers(&u("bob"), &sudo, ip("192.0.2.50"))
            .is_empty());
        // mallory is denied outright.
        let b = e.login_blockers(&u("mallory"), &sudo, ip("192.0.2.5"));
        assert!(b.iter().any(|r| r.contains("DenyUsers")), "{b:?}");
    }

    #[test]
    fn host_negation_and_invalid_patterns() {
        let base = DEFAULT.to_string();
        let e = SshdEffective::parse(&format!(
            "{base}allowusers root@203.0.113.0/24,!203.0.113.7\n"
        ))
        .unwrap();
        assert!(e
            .login_blockers(&Username::root(), &[], ip("203.0.113.8"))
            .is_empty());
        assert!(!e
            .login_blockers(&Username::root(), &[], ip("203.0.113.7"))
            .is_empty());
        let e = SshdEffective::parse(&format!("{base}denyusers *@203.0.113.1/24\n")).unwrap();
        let b = e.login_blockers(&Username::root(), &[], ip("192.0.2.1"));
        assert!(b.iter().any(|r| r.contains("invalid")), "{b:?}");
    }

    #[test]
    fn allow_and_deny_groups() {
        let e = SshdEffective::parse(
            &RESTRICTED.replace("pubkeyauthentication no", "pubkeyauthentication yes"),
        )
        .unwrap();
        let user = u("cp42.ssh");
        let from = ip("192.0.2.1");
        assert!(e
            .login_blockers(&user, &["cp42.ssh".into(), "wheel".into()], from)
            .is_empty());
        let b = e.login_blockers(&user, &["cp42.ssh".into()], from);
        assert!(b.iter().any(|r| r.contains("AllowGroups")), "{b:?}");
        let b = e.login_blockers(&user, &["sudo".into(), "banned".into()], from);
        assert!(b.iter().any(|r| r.contains("DenyGroups")), "{b:?}");
        let b = e.login_blockers(&user, &[], from);
        assert!(b.iter().any(|r| r.contains("no group")), "{b:?}");
        let e = SshdEffective::parse(&format!("{DEFAULT}allowgroups wh??l\n")).unwrap();
        assert!(e.login_blockers(&user, &["wheel".into()], from).is_empty());
    }

    #[test]
    fn authentication_methods_and_force_command() {
        let e = with(
            DEFAULT,
            &[(
                "authenticationmethods any",
                "authenticationmethods publickey,password",
            )],
        );
        let b = e.login_blockers(&Username::root(), &[], ip("192.0.2.1"));
        assert!(
            b.iter().any(|r| r.contains("AuthenticationMethods")),
            "{b:?}"
        );
        let e = with(
            DEFAULT,
            &[(
                "authenticationmethods any",
                "authenticationmethods publickey,password publickey",
            )],
        );
        assert!(e
            .login_blockers(&Username::root(), &[], ip("192.0.2.1"))
            .is_empty());
        let e = with(
            DEFAULT,
            &[("forcecommand none", "forcecommand internal-sftp")],
        );
        assert_eq!(e.force_command.as_deref(), Some("internal-sftp"));
        let b = e.login_blockers(&Username::root(), &[], ip("192.0.2.1"));
        assert!(b.iter().any(|r| r.contains("internal-sftp")), "{b:?}");
    }
}
