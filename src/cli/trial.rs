//! `supportauth trial DIR`: a scratch root to try supportauth in without
//! changing the machine.
//!
//! It writes only inside the trial's own new scratch directory, never a
//! host file, so the crate's rule that host files go through `safefile`
//! does not apply here.
#![allow(clippy::disallowed_methods)]
//!
//! DIR gets copies of the host's account files, sudoers, skel and
//! sshd_config (with a host key of its own), an empty /home, root's
//! authorized_keys, a support key pair to grant, and `supportauth.toml`
//! with `root = DIR`. The real useradd/chpasswd/visudo/sshd -T then work
//! on the copies (`--prefix`, `-f`); a scratch root never touches the
//! kernel firewall, so the whitelist goes to DIR/etc/hosts.allow.
//! What to run next is printed; the CLI reaches this daemon through
//! `SUPPORTAUTH_CONFIG`.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Files copied from the host's /etc when they exist (useradd needs the
/// account files and its defaults, visudo the main sudoers).
const ETC_FILES: &[&str] = &[
    "passwd",
    "group",
    "shadow",
    "gshadow",
    "login.defs",
    "default/useradd",
    "sudoers",
    "hosts.allow",
    "hosts.deny",
];
/// Config file name inside DIR.
pub const CONFIG_NAME: &str = "supportauth.toml";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const UNSHARE: &str = "/usr/bin/unshare";
const SSHD: &str = "/usr/sbin/sshd";

pub fn run(dir: &Path) -> ExitCode {
    match prepare(dir) {
        Ok(t) => {
            print!("{}", t.instructions());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("supportauth: trial: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A prepared trial root.
pub struct Trial {
    pub dir: PathBuf,
    pub config_text: String,
    pub port: u16,
}

/// What the daemon's `[tools] sshd` must be: sshd itself while it runs
/// here (/run/sshd exists), else a wrapper giving `sshd -T` a private
/// /run/sshd (creating the real one would change the host).
fn sshd_tool(dir: &Path) -> Result<Option<PathBuf>, String> {
    if Path::new("/run/sshd").is_dir() {
        return Ok(None);
    }
    if !Path::new(UNSHARE).exists() {
        return Err(format!(
            "/run/sshd does not exist (sshd is not running) and {UNSHARE} is missing to give \
             `sshd -T` a private one; install util-linux or start sshd"
        ));
    }
    let wrapper = dir.join("sshd-in-private-run");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# sshd -T needs /run/sshd; give it a private /run instead of creating one.\n\
             exec {UNSHARE} -m /bin/sh -c 'mount -t tmpfs -o mode=755 tmpfs /run && \
             mkdir -m 755 /run/sshd && exec {SSHD} \"$@\"' sshd \"$@\"\n"
        ),
    )
    .map_err(|e| format!("write {}: {e}", wrapper.display()))?;
    set_mode(&wrapper, 0o755)?;
    Ok(Some(wrapper))
}

/// The trial's configuration: everything under DIR, TCP on `port`.
pub fn config_text(dir: &Path, port: u16, sshd: Option<&Path>) -> String {
    let mut s = format!(
        "# supportauth trial: every data path lives under `root`; this host's own\n\
         # files, users and firewall are never changed.\n\
         version = 1\n\
         root = {root}\n\
         \n\
         [listen]\n\
         # The socket is {root_sock}; the CLI finds it through\n\
         # SUPPORTAUTH_CONFIG or --config.\n\
         tcp = [\"127.0.0.1:{port}\"]\n",
        root = toml_str(dir),
        root_sock = dir.join("run/supportauth/supportauth.sock").display(),
    );
    if let Some(w) = sshd {
        let _ = write!(
            s,
            "\n[tools]\n# sshd -T with a private /run/sshd (sshd is not running here).\nsshd = {}\n",
            toml_str(w)
        );
    }
    s.push_str(
        "\n[firewall]\n# A scratch root never touches the kernel firewall: the whitelist\n\
         # goes to root/etc/hosts.allow instead.\nbackends = [\"hosts_allow\"]\n",
    );
    s
}

fn toml_str(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

impl Trial {
    /// The commands to run next, with this trial's paths.
    pub fn instructions(&self) -> String {
        let d = self.dir.display();
        let cfg = self.dir.join(CONFIG_NAME);
        let cfg = cfg.display();
        format!(
            "Prepared a supportauth trial in {d}\n\
             (copies of this host's accounts, sudoers and sshd_config; nothing outside it changes).\n\
             \n\
             Configuration ({cfg}):\n\
             \n{text}\n\
             Start the daemon (as root, in its own terminal; Ctrl-C stops it):\n\
             \n    supportauth --config {cfg} daemon\n\
             \n\
             Then, in another terminal, as root:\n\
             \n    export SUPPORTAUTH_CONFIG={cfg}\n\
             \x20   supportauth grant --ticket-id 1001 --server-num 1 --ssh-key-file {d}/support_key.pub --access-ip 203.0.113.10\n\
             \x20   supportauth list\n\
             \x20   cat {d}/root/.ssh/authorized_keys {d}/etc/hosts.allow\n\
             \x20   supportauth revoke --ticket-id 1001 --ssh-username root\n\
             \x20   supportauth audit verify\n\
             \x20   supportauth audit show\n\
             \n\
             Over HTTP: create a token (`supportauth token create me`) and call\n\
             http://127.0.0.1:{port}/json-api/ticket_list?api.version=1 with\n\
             `Authorization: whm root:<token>`.\n\
             \n\
             When done: stop the daemon and `rm -r {d}`.\n",
            text = self.config_text,
            port = self.port,
        )
    }
}

/// Builds the trial root in `dir` (which must be new or empty).
pub fn prepare(dir: &Path) -> Result<Trial, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "run it as root: it copies /etc/shadow, and the daemon runs useradd and visudo \
             on the copies"
                .into(),
        );
    }
    for tool in [SSH_KEYGEN, SSHD] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} is missing: install openssh-server"));
        }
    }
    let dir = absolute(dir)?;
    if dir == Path::new("/") {
        return Err("DIR must not be /".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let not_empty = std::fs::read_dir(&dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .next()
        .is_some();
    if not_empty {
        return Err(format!(
            "{} is not empty: choose a new directory (or remove this one)",
            dir.display()
        ));
    }
    // Home directories below DIR must be reachable by their users.
    set_mode(&dir, 0o755)?;
    copy_host_files(&dir)?;
    let sshd = sshd_tool(&dir)?;
    keygen(&dir.join("support_key"), "support@trial")?;
    let port = free_port();
    let config_text = config_text(&dir, port, sshd.as_deref());
    let cfg_path = dir.join(CONFIG_NAME);
    std::fs::write(&cfg_path, &config_text)
        .map_err(|e| format!("write {}: {e}", cfg_path.display()))?;
    set_mode(&cfg_path, 0o600)?;
    // The product's own parser checks what was written.
    crate::config::Config::parse(&config_text, &cfg_path).map_err(|e| e.to_string())?;
    Ok(Trial {
        dir,
        config_text,
        port,
    })
}

fn absolute(dir: &Path) -> Result<PathBuf, String> {
    let d = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current directory: {e}"))?
            .join(dir)
    };
    // A clean path: the configuration refuses "." and "..".
    let mut clean = PathBuf::from("/");
    for c in d.components() {
        match c {
            std::path::Component::Normal(n) => clean.push(n),
            std::path::Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    Ok(clean)
}

fn copy_host_files(dir: &Path) -> Result<(), String> {
    let etc = dir.join("etc");
    for sub in ["default", "ssh", "skel"] {
        mkdir(&etc.join(sub), 0o755)?;
    }
    for f in ETC_FILES {
        let from = Path::new("/etc").join(f);
        if from.exists() {
            copy(&from, &etc.join(f))?;
        }
    }
    mkdir(&etc.join("sudoers.d"), 0o750)?;
    if let Ok(rd) = std::fs::read_dir("/etc/skel") {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                copy(&e.path(), &etc.join("skel").join(e.file_name()))?;
            }
        }
    }
    mkdir(&dir.join("home"), 0o755)?;
    mkdir(&dir.join("root"), 0o700)?;
    let keys = Path::new("/root/.ssh/authorized_keys");
    if keys.is_file() {
        mkdir(&dir.join("root/.ssh"), 0o700)?;
        copy(keys, &dir.join("root/.ssh/authorized_keys"))?;
    }
    // The host's sshd_config with a host key of the trial's own first
    // (`sshd -T` needs one it can read; the host's keys stay unread).
    let host_cfg = Path::new("/etc/ssh/sshd_config");
    let body = std::fs::read_to_string(host_cfg).map_err(|e| {
        format!(
            "read {}: {e} (is openssh-server installed?)",
            host_cfg.display()
        )
    })?;
    let key = etc.join("ssh/ssh_host_ed25519_key");
    keygen(&key, "trial host key")?;
    let text = format!(
        "# supportauth trial: {} with the trial's own host key.\nHostKey {}\n{body}",
        host_cfg.display(),
        key.display()
    );
    std::fs::write(etc.join("ssh/sshd_config"), text).map_err(|e| format!("write sshd_config: {e}"))
}

fn keygen(path: &Path, comment: &str) -> Result<(), String> {
    let out = Command::new(SSH_KEYGEN)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .env_clear()
        .output()
        .map_err(|e| format!("{SSH_KEYGEN}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{SSH_KEYGEN} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

fn mkdir(p: &Path, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
    set_mode(p, mode)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// 2090 unless a daemon already listens there, then a free port.
fn free_port() -> u16 {
    for port in [2090, 0] {
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            if let Ok(a) = l.local_addr() {
                return a.port();
            }
        }
    }
    2090
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_root_and_validates() {
        let dir = Path::new("/tmp/a \"quoted\" trial");
        let text = config_text(dir, 2091, Some(&dir.join("sshd-in-private-run")));
        let cfg = crate::config::Config::parse(&text, Path::new("trial.toml")).unwrap();
        assert_eq!(cfg.root, dir);
        assert_eq!(cfg.firewall.backends, vec!["hosts_allow".to_string()]);
        assert_eq!(cfg.tools.sshd, dir.join("sshd-in-private-run"));
        assert_eq!(
            cfg.socket_path(),
            dir.join("run/supportauth/supportauth.sock")
        );
        let plain = config_text(Path::new("/srv/t"), 2090, None);
        let cfg = crate::config::Config::parse(&plain, Path::new("trial.toml")).unwrap();
        assert_eq!(cfg.tools.sshd, Path::new(SSHD));
    }

    #[test]
    fn relative_dirs_become_clean_absolute_paths() {
        let here = std::env::current_dir().unwrap();
        assert_eq!(absolute(Path::new("x/../y")).unwrap(), here.join("y"));
        assert_eq!(absolute(Path::new("/a/./b")).unwrap(), Path::new("/a/b"));
    }
}
