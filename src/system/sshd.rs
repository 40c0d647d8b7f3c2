//! Asking the real sshd for its effective configuration (`sshd -T -C`), so
//! `Match` blocks for the support address count. If sshd cannot be run we
//! say so and the engine refuses the grant instead of guessing.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::Config;
use crate::sshd_config::{SshdEffective, SshdParseError};
use crate::system::exec::{self, ExecError};
use crate::types::{canonical_ip, Username};

#[derive(Debug, thiserror::Error)]
pub enum SshdError {
    #[error("cannot learn sshd's effective configuration: `{sshd} -T` failed: {source}{hint}; supportauth will not guess who may log in, so fix this and retry")]
    CannotRun {
        sshd: String,
        source: ExecError,
        hint: &'static str,
    },
    #[error("cannot understand `{sshd} -T` output: {source}")]
    Parse {
        sshd: String,
        source: SshdParseError,
    },
}

/// The effective sshd configuration for a login of `user` from `from`.
pub trait SshdProbe: Send + Sync {
    fn effective(&self, user: &Username, from: IpAddr) -> Result<SshdEffective, SshdError>;
}

/// Runs the configured sshd binary in test mode (`-T`), which validates the
/// configuration and prints it, without touching the running daemon.
#[derive(Debug, Clone)]
pub struct SshdCommand {
    pub sshd: PathBuf,
    pub config_file: PathBuf,
    /// Host name for `Match Host` (sshd -T requires one).
    pub host: String,
    /// Local address for `Match LocalAddress`; "" = 0.0.0.0 or :: to match `from`.
    pub laddr: String,
    /// Local port for `Match LocalPort`; 0 = the first `Port` sshd reports.
    pub lport: u16,
}

impl SshdCommand {
    /// From configuration: `tools.sshd`, `paths.sshd_config` under the root
    /// prefix, and `access.sshd_host/laddr/lport` (host defaults to this
    /// machine's host name).
    pub fn from_config(cfg: &Config) -> Self {
        let host = if cfg.access.sshd_host.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_string())
        } else {
            cfg.access.sshd_host.clone()
        };
        SshdCommand {
            sshd: cfg.tools.sshd.clone(),
            config_file: cfg.host_path(&cfg.paths.sshd_config),
            host,
            laddr: cfg.access.sshd_laddr.clone(),
            lport: cfg.access.sshd_lport,
        }
    }

    fn run_t(&self, extra: &[String]) -> Result<SshdEffective, SshdError> {
        let mut args: Vec<std::ffi::OsString> = vec!["-T".into()];
        args.extend(extra.iter().map(Into::into));
        args.push("-f".into());
        args.push(self.config_file.clone().into());
        let sshd = self.sshd.display().to_string();
        let out = exec::run(&self.sshd, &args, None).map_err(|source| {
            let hint = match &source {
                ExecError::Failed { stderr, .. }
                    if stderr.contains("privilege separation directory") =>
                {
                    " (sshd -T needs its privilege separation directory, usually /run/sshd, which exists while sshd runs: start sshd or create it root:root 0755)"
                }
                _ => "",
            };
            SshdError::CannotRun {
                sshd: sshd.clone(),
                source,
                hint,
            }
        })?;
        SshdEffective::parse(&out.stdout).map_err(|source| SshdError::Parse { sshd, source })
    }

    /// The `-C` connection specification for a login of `user` from `from`.
    pub fn connection_spec(&self, user: &Username, from: IpAddr, lport: u16) -> String {
        let from = canonical_ip(from);
        let laddr = if !self.laddr.is_empty() {
            self.laddr.clone()
        } else if from.is_ipv4() {
            "0.0.0.0".to_string()
        } else {
            "::".to_string()
        };
        // Commas separate -C fields; Username and IpAddr cannot contain one,
        // and the host name comes from the admin's config or the kernel.
        let host: String = self.host.chars().filter(|c| *c != ',').collect();
        format!("user={user},host={host},addr={from},laddr={laddr},lport={lport}")
    }
}

impl SshdProbe for SshdCommand {
    fn effective(&self, user: &Username, from: IpAddr) -> Result<SshdEffective, SshdError> {
        if self.lport != 0 {
            let spec = self.connection_spec(user, from, self.lport);
            return self.run_t(&["-C".to_string(), spec]);
        }
        // Ports are global (not allowed in Match), so any full connection
        // spec reports them. A plain `sshd -T` is not enough: it refuses a
        // config with `Match LocalPort` unless lport is given.
        let guess = 22;
        let first = self.run_t(&["-C".to_string(), self.connection_spec(user, from, guess)])?;
        let lport = first.ports.first().copied().unwrap_or(guess);
        if lport == guess {
            return Ok(first);
        }
        let spec = self.connection_spec(user, from, lport);
        self.run_t(&["-C".to_string(), spec])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A scratch sshd setup. sshd -T refuses to run without its privilege
    /// separation directory (/run/sshd), which does not exist on this host
    /// while sshd is stopped; creating it would change the host, so the
    /// real /usr/sbin/sshd runs through a test-only wrapper in a private
    /// mount namespace with a tmpfs on /run.
    struct Scratch {
        dir: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Option<Scratch> {
            if !nix::unistd::geteuid().is_root() {
                crate::test_skip!("SKIPPED: sshd -T tests need root for unshare -m");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let key = dir.path().join("hostkey");
            exec::run(
                Path::new("/usr/bin/ssh-keygen"),
                [
                    "-q".as_ref(),
                    "-t".as_ref(),
                    "ed25519".as_ref(),
                    "-N".as_ref(),
                    "".as_ref(),
                    "-f".as_ref(),
                    key.as_os_str(),
                ],
                None,
            )
            .unwrap();
            let wrapper = dir.path().join("sshd-wrapper");
            std::fs::write(
                &wrapper,
                "#!/bin/sh\nexec /usr/bin/unshare -m /bin/sh -c 'mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd \"$@\"' sshd \"$@\"\n",
            )
            .unwrap();
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
            Some(Scratch { dir })
        }

        fn probe(&self, body: &str) -> SshdCommand {
            let cfg = self.dir.path().join("sshd_config");
            let key = self.dir.path().join("hostkey");
            // Global options first: sshd -T rejects them after a Match block.
            std::fs::write(&cfg, format!("HostKey {}\n{body}", key.display())).unwrap();
            SshdCommand {
                sshd: self.dir.path().join("sshd-wrapper"),
                config_file: cfg,
                host: "test.example".into(),
                laddr: String::new(),
                lport: 0,
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prohibit_password_allows_root() {
        let run_sshd_existed = Path::new("/run/sshd").exists();
        let Some(s) = Scratch::new() else { return };
        let p = s.probe("Port 2222\nPermitRootLogin prohibit-password\n");
        let e = p.effective(&Username::root(), ip("198.51.100.4")).unwrap();
        assert!(e.root_key_login_allowed());
        assert_eq!(e.ports, vec![2222]);
        // The private /run never leaks to the host.
        assert_eq!(Path::new("/run/sshd").exists(), run_sshd_existed);
    }

    #[test]
    fn no_refuses_root() {
        let Some(s) = Scratch::new() else { return };
        let p = s.probe("PermitRootLogin no\n");
        let e = p.effective(&Username::root(), ip("198.51.100.4")).unwrap();
        assert!(!e.root_key_login_allowed());
        assert!(!e
            .login_blockers(&Username::root(), &["root".into()], ip("198.51.100.4"))
            .is_empty());
    }

    #[test]
    fn match_address_block_counts() {
        let Some(s) = Scratch::new() else { return };
        let p = s.probe("PermitRootLogin yes\nMatch Address 203.0.113.7\n    PermitRootLogin no\n");
        let root = Username::root();
        assert!(!p
            .effective(&root, ip("203.0.113.7"))
            .unwrap()
            .root_key_login_allowed());
        assert!(p
            .effective(&root, ip("203.0.113.8"))
            .unwrap()
            .root_key_login_allowed());
        // IPv4-mapped IPv6 as a dual-stack socket reports it.
        assert!(!p
            .effective(&root, ip("::ffff:203.0.113.7"))
            .unwrap()
            .root_key_login_allowed());
    }

    #[test]
    fn match_local_port_uses_first_port() {
        let Some(s) = Scratch::new() else { return };
        let p = s.probe("Port 2200\nPort 22\nPermitRootLogin yes\nMatch LocalPort 2200\n    PermitRootLogin no\n");
        let e = p.effective(&Username::root(), ip("192.0.2.1")).unwrap();
        assert!(!e.root_key_login_allowed());
        let fixed = SshdCommand { lport: 22, ..p };
        assert!(fixed
            .effective(&Username::root(), ip("192.0.2.1"))
            .unwrap()
            .root_key_login_allowed());
    }

    #[test]
    fn allow_users_reported() {
        let Some(s) = Scratch::new() else { return };
        let p = s.probe("PermitRootLogin no\nAllowUsers admin root@192.0.2.0/24\n");
        let user = Username::parse("cp123.ssh").unwrap();
        let from = ip("203.0.113.7");
        let e = p.effective(&user, from).unwrap();
        assert_eq!(e.allow_users, vec!["admin", "root@192.0.2.0/24"]);
        let b = e.login_blockers(&user, &["sudo".into()], from);
        assert!(b.iter().any(|r| r.contains("AllowUsers")), "{b:?}");
        let e = s
            .probe("AllowUsers admin cp*.ssh\n")
            .effective(&user, from)
            .unwrap();
        assert!(e.login_blockers(&user, &["sudo".into()], from).is_empty());
    }

    #[test]
    fn sshd_that_cannot_run_is_an_error() {
        let Some(s) = Scratch::new() else { return };
        // A broken configuration: sshd -T exits non-zero.
        let p = s.probe("PermitRootLogin perhaps\n");
        let err = p.effective(&Username::root(), ip("192.0.2.1")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("will not guess"), "{msg}");
        assert!(msg.contains("perhaps"), "{msg}");
        let missing = SshdCommand {
            sshd: "/nonexistent/sshd".into(),
            ..p
        };
        assert!(matches!(
            missing.effective(&Username::root(), ip("192.0.2.1")),
            Err(SshdError::CannotRun { .. })
        ));
    }

    #[test]
    fn privsep_dir_hint() {
        // Without the wrapper the real sshd fails here for want of /run/sshd
        // (when that directory is absent on this host): the error must say so.
        if Path::new("/run/sshd").exists() {
            eprintln!("SKIPPED: /run/sshd exists on this host, cannot show the hint");
            return;
        }
        let Some(s) = Scratch::new() else { return };
        let p = SshdCommand {
            sshd: "/usr/sbin/sshd".into(),
            ..s.probe("PermitRootLogin yes\n")
        };
        let msg = p
            .effective(&Username::root(), ip("192.0.2.1"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/run/sshd"), "{msg}");
        assert!(msg.contains("start sshd"), "{msg}");
    }

    #[test]
    fn connection_spec_shape() {
        let p = SshdCommand {
            sshd: "/usr/sbin/sshd".into(),
            config_file: "/etc/ssh/sshd_config".into(),
            host: "h.example".into(),
            laddr: String::new(),
            lport: 0,
        };
        assert_eq!(
            p.connection_spec(&Username::root(), ip("2001:db8::1"), 22),
            "user=root,host=h.example,addr=2001:db8::1,laddr=::,lport=22"
        );
        assert_eq!(
            p.connection_spec(&Username::root(), ip("::ffff:192.0.2.1"), 2222),
            "user=root,host=h.example,addr=192.0.2.1,laddr=0.0.0.0,lport=2222"
        );
    }
}
