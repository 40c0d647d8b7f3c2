//! A real OpenSSH server on the sandbox's loopback and the real client.
//! The server's configuration is written to /etc/ssh/sshd_config (in the
//! overlay) because that is the file the daemon asks `sshd -T` about.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd;
use super::sandbox::Sandbox;

pub const SSHD: &str = "/usr/sbin/sshd";
pub const SSH: &str = "/usr/bin/ssh";
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
const HOST_KEY: &str = "/etc/ssh/ssh_host_e2e_ed25519_key";
/// sshd writes its log here (`-E`), as rsyslog would on Debian: the file
/// the daemon's login watcher follows (`logins.source = "auto"`).
pub const AUTH_LOG: &str = "/var/log/auth.log";

/// An ed25519 key pair made with the real ssh-keygen.
pub struct KeyPair {
    pub private: PathBuf,
    /// The public key line ("ssh-ed25519 AAAA... comment").
    pub public_line: String,
}

impl KeyPair {
    pub fn generate(private: &Path, comment: &str) -> KeyPair {
        let args: [&std::ffi::OsStr; 9] = [
            "-q".as_ref(),
            "-t".as_ref(),
            "ed25519".as_ref(),
            "-N".as_ref(),
            "".as_ref(),
            "-C".as_ref(),
            comment.as_ref(),
            "-f".as_ref(),
            private.as_os_str(),
        ];
        cmd::run_ok(Path::new(SSH_KEYGEN), &args);
        let public_line = std::fs::read_to_string(private.with_extension("pub"))
            .expect("read the public key")
            .trim_end()
            .to_string();
        KeyPair {
            private: private.to_path_buf(),
            public_line,
        }
    }
}

/// What a scenario wants from sshd.
pub struct SshdSetup<'a> {
    /// PermitRootLogin in the global section.
    pub permit_root_login: &'a str,
    /// Appended verbatim at the end (Match blocks must come last).
    pub tail: &'a str,
    /// Addresses besides 127.0.0.1 to listen on (they must exist).
    pub also_listen: &'a [&'a str],
    /// Log through syslog(3) (/dev/log: journald, see
    /// [`super::sandbox::start_journald`]) instead of to [`AUTH_LOG`].
    pub syslog: bool,
}

pub struct Sshd {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Sshd {
    /// Writes the configuration, checks it with `sshd -t`, starts
    /// `sshd -D -E /var/log/auth.log` and waits (bounded) until the port
    /// accepts.
    pub fn start(sb: &Sandbox, setup: &SshdSetup) -> Sshd {
        if !Path::new(HOST_KEY).exists() {
            KeyPair::generate(Path::new(HOST_KEY), "e2e-host");
        }
        let port = free_port();
        let also: String = setup
            .also_listen
            .iter()
            .map(|a| format!("ListenAddress {a}\n"))
            .collect();
        let config = format!(
            "# written by the supportauth e2e harness\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             {also}\
             HostKey {HOST_KEY}\n\
             PidFile /run/sshd-e2e.pid\n\
             UsePAM yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             AuthorizedKeysFile .ssh/authorized_keys\n\
             PermitRootLogin {}\n\
             {}\n",
            setup.permit_root_login, setup.tail
        );
        std::fs::write(SSHD_CONFIG, config).expect("write sshd_config");
        cmd::run_ok(Path::new(SSHD), &["-t", "-f", SSHD_CONFIG]);
        let log = sb.path(&format!("sshd-{port}.log"));
        let log_file = File::create(&log).expect("sshd log");
        let log_args: &[&str] = if setup.syslog { &[] } else { &["-E", AUTH_LOG] };
        let child = Command::new(SSHD)
            .arg("-D")
            .args(log_args)
            .args(["-f", SSHD_CONFIG])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd { child, port, log };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("sshd exited ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd not listening on port {} after 15s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// sshd's own output and its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
            + &std::fs::read_to_string(AUTH_LOG).unwrap_or_default()
    }

    /// Connects with `key` as `user` and runs `remote` (argv, joined by
    /// ssh), feeding `stdin` to it.
    pub fn login(&self, key: &KeyPair, user: &str, remote: &[&str], stdin: &[u8]) -> Login {
        self.login_via(None, "127.0.0.1", key, user, remote, stdin)
    }

    /// Like [`Sshd::login`], to `addr`, from the network namespace `netns`
    /// (`ip netns exec`) when given.
    pub fn login_via(
        &self,
        netns: Option<&str>,
        addr: &str,
        key: &KeyPair,
        user: &str,
        remote: &[&str],
        stdin: &[u8],
    ) -> Login {
        let port = self.port.to_string();
        let dest = format!("{user}@{addr}");
        let mut args: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(ns) = netns {
            for a in ["netns", "exec", ns, SSH] {
                args.push(std::ffi::OsStr::new(a));
            }
        }
        args.extend::<[&std::ffi::OsStr; 4]>([
            "-i".as_ref(),
            key.private.as_os_str(),
            "-p".as_ref(),
            port.as_ref(),
        ]);
        for o in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "ConnectTimeout=5",
            "LogLevel=ERROR",
        ] {
            args.push("-o".as_ref());
            args.push(o.as_ref());
        }
        args.push(dest.as_ref());
        args.extend(remote.iter().map(std::ffi::OsStr::new));
        let prog = match netns {
            Some(_) => cmd::tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]),
            None => PathBuf::from(SSH),
        };
        let out = cmd::run_with_stdin(&prog, &args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.code() {
            Some(255) if stderr.contains("Permission denied") => Login::Refused { stderr },
            // A firewall's drop (timeout) or reset: sshd never saw us.
            Some(255)
                if stderr.contains("timed out")
                    || stderr.contains("Connection refused")
                    || stderr.contains("No route") =>
            {
                Login::Unreachable { stderr }
            }
            Some(255) => panic!(
                "ssh {dest} failed without reaching authentication:\n{stderr}\nsshd log:\n{}",
                self.log()
            ),
            code => Login::Ran {
                code,
                stdout,
                stderr,
            },
        }
    }

    /// Starts `ssh user@127.0.0.1 remote...` without waiting for it: an
    /// open support session.
    pub fn open_session(&self, key: &KeyPair, user: &str, remote: &[&str]) -> Child {
        let port = self.port.to_string();
        Command::new(SSH)
            .args(["-i".as_ref(), key.private.as_os_str()])
            .args(["-p", &port])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@127.0.0.1"))
            .args(remote)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh session")
    }

    /// Asserts that `user` logs in with `key` and `remote` prints "0" (its
    /// uid, directly or through sudo).
    pub fn assert_root(&self, key: &KeyPair, user: &str, remote: &[&str], stdin: &[u8]) {
        match self.login(key, user, remote, stdin) {
            Login::Ran {
                code: Some(0),
                stdout,
                ..
            } if stdout.trim() == "0" => {}
            other => panic!(
                "expected {user} to log in and get uid 0 from {remote:?}, got {other:?}\nsshd log:\n{}",
                self.log()
            ),
        }
    }

    /// Asserts that sshd refuses `key` for `user`.
    pub fn assert_refused(&self, key: &KeyPair, user: &str) {
        match self.login(key, user, &["id", "-u"], b"") {
            Login::Refused { .. } => {}
            other => panic!(
                "expected sshd to refuse {user}, got {other:?}\nsshd log:\n{}",
                self.log()
            ),
        }
    }
}

impl Sshd {
    /// Stops sshd (the listening socket closes with it).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The texts are read through Debug in failure messages.
#[allow(dead_code)]
#[derive(Debug)]
pub enum Login {
    /// Authentication failed ("Permission denied").
    Refused { stderr: String },
    /// No connection (dropped or rejected before sshd).
    Unreachable { stderr: String },
    /// Logged in; the remote command ended with `code`.
    Ran {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
}

/// A port nothing listens on in this (fresh) network namespace.
fn free_port() -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind a probe port");
    l.local_addr().expect("probe port").port()
}
