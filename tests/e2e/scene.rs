//! The scene every scenario starts from: a real sshd with the scenario's
//! policy, a support key pair, an admin whose own root keys and user must
//! come through untouched, and the daemon; plus the host inspections the
//! scenarios assert with.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cmd;
use super::daemon::{self, Daemon, DaemonSetup};
use super::sandbox::{self, mkdir_mode, Sandbox};
use super::sshd::{KeyPair, Login, Sshd, SshdSetup};

pub const ADMIN_USER: &str = "siteadmin";
pub const ROOT_KEYS: &str = "/root/.ssh/authorized_keys";

pub struct Scene {
    pub sshd: Sshd,
    pub daemon: Daemon,
    pub support: KeyPair,
    pub admin: KeyPair,
    root_keys_before: Vec<u8>,
    admin_keys_before: Vec<u8>,
    admin_passwd_line: String,
    /// Dropped last: sshd and the daemon may still write to it.
    _journald: Option<sandbox::Journald>,
}

pub struct SceneSetup<'a> {
    pub permit_root_login: &'a str,
    pub sshd_tail: &'a str,
    pub reconcile_secs: u64,
    pub fault: Option<&'a str>,
    /// false: the sandbox's /etc/sudoers loses its `%sudo`/`%wheel` rules,
    /// so a temporary user needs the daemon's drop-in to become root.
    pub group_sudo_rule: bool,
    /// `firewall.backends` of the daemon.
    pub firewall: &'a str,
    /// Also make a second network namespace `support` joined by a veth
    /// pair: 10.200.0.2 there, 10.200.0.1 here (sshd listens on it too).
    pub support_netns: bool,
    /// Run journald in the sandbox; sshd logs to it and the daemon reads
    /// logins from the journal (otherwise from /var/log/auth.log).
    pub journal: bool,
}

impl<'a> SceneSetup<'a> {
    pub fn root_login(permit_root_login: &'a str) -> Self {
        SceneSetup {
            permit_root_login,
            sshd_tail: "",
            reconcile_secs: 60,
            fault: None,
            group_sudo_rule: true,
            firewall: "none",
            support_netns: false,
            journal: false,
        }
    }
}

impl Scene {
    pub fn new(sb: &Sandbox, setup: &SceneSetup) -> Scene {
        if !setup.group_sudo_rule {
            drop_group_sudo_rules();
        }
        if setup.support_netns {
            make_support_netns();
        }
        let journald = setup.journal.then(sandbox::start_journald);
        let support = KeyPair::generate(&sb.path("support"), "support@e2e");
        let admin = KeyPair::generate(&sb.path("admin"), "admin@e2e");
        let sshd = Sshd::start(
            sb,
            &SshdSetup {
                permit_root_login: setup.permit_root_login,
                tail: setup.sshd_tail,
                also_listen: if setup.support_netns {
                    &[HOST_VETH_IP]
                } else {
                    &[]
                },
                syslog: setup.journal,
            },
        );
        // The admin's own root keys: a comment, an option-bearing line, and
        // no final newline; all of it must survive byte for byte.
        if !Path::new("/root/.ssh").exists() {
            mkdir_mode("/root/.ssh", 0o700);
        }
        let root_keys = format!(
            "# admin keys, do not touch\n{}\nrestrict {}\n# end",
            admin.public_line, admin.public_line
        );
        write_0600(Path::new(ROOT_KEYS), root_keys.as_bytes(), 0, 0);
        // An admin user of the machine with a key of its own.
        cmd::run_ok(
            Path::new("/usr/sbin/useradd"),
            &["-m", "-s", "/bin/bash", ADMIN_USER],
        );
        let pw = lookup_user(ADMIN_USER).expect("admin user exists");
        let ssh_dir = Path::new("/home").join(ADMIN_USER).join(".ssh");
        mkdir_mode(&ssh_dir, 0o700);
        std::os::unix::fs::chown(&ssh_dir, Some(pw.uid.as_raw()), Some(pw.gid.as_raw()))
            .expect("chown");
        let admin_keys = format!("{}\n", admin.public_line);
        write_0600(
            &ssh_dir.join("authorized_keys"),
            admin_keys.as_bytes(),
            pw.uid.as_raw(),
            pw.gid.as_raw(),
        );
        daemon::write_config(&DaemonSetup {
            sshd_port: sshd.port,
            firewall: setup.firewall,
            reconcile_secs: setup.reconcile_secs,
            logins: if setup.journal { "journal" } else { "auto" },
        });
        let daemon = Daemon::start(sb, setup.fault);
        Scene {
            sshd,
            daemon,
            support,
            admin,
            root_keys_before: root_keys.into_bytes(),
            admin_keys_before: admin_keys.into_bytes(),
            admin_passwd_line: passwd_line(ADMIN_USER).expect("admin in passwd"),
            _journald: journald,
        }
    }

    fn grant_args(&self, ticket: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ticket_id", ticket.to_string()),
            ("server_num", "1".into()),
            ("ssh_key", self.support.public_line.clone()),
            ("access_ip-0", "127.0.0.1".into()),
        ]
    }

    /// `ticket_grant`, which must succeed; returns its `data`.
    pub fn grant(&self, ticket: u64, extra: &[(&'static str, String)]) -> Value {
        let mut args = self.grant_args(&ticket.to_string());
        args.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        args.extend(extra.iter().cloned());
        let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.daemon.call_ok("ticket_grant", &args)
    }

    /// `ticket_grant` that may not answer (the daemon dies at a fault).
    pub fn grant_unanswered(&self, ticket: u64) {
        let args = self.grant_args(&ticket.to_string());
        let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let _ = self.daemon.try_call("ticket_grant", &args);
    }

    pub fn revoke(&self, ticket: u64, user: &str) -> Value {
        let t = ticket.to_string();
        self.daemon.call_ok(
            "ticket_revoke",
            &[("ticket_id", &t), ("ssh_username", user)],
        )
    }

    /// `auth_status` of every grant of `ticket` in `ticket_list`.
    pub fn listed(&self, ticket: u64) -> Vec<(String, String)> {
        let t = ticket.to_string();
        let data = self.daemon.call_ok("ticket_list", &[("ticket_id", &t)]);
        let mut found = Vec::new();
        for auth in data["auths"].as_array().into_iter().flatten() {
            if auth["ticket_id"].as_u64() != Some(ticket) {
                continue;
            }
            for s in auth["servers"].as_array().into_iter().flatten() {
                found.push((
                    s["ssh_username"].as_str().unwrap_or("").to_string(),
                    s["auth_status"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        found
    }

    /// The admin's keys and user are exactly as the scene made them.
    pub fn assert_admin_intact(&self) {
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(ROOT_KEYS).unwrap_or_default()),
            String::from_utf8_lossy(&self.root_keys_before),
            "root's authorized_keys lost or changed the admin's lines"
        );
        let ak = Path::new("/home")
            .join(ADMIN_USER)
            .join(".ssh/authorized_keys");
        assert_eq!(
            std::fs::read(&ak).unwrap_or_default(),
            self.admin_keys_before,
            "{} changed",
            ak.display()
        );
        assert_eq!(
            passwd_line(ADMIN_USER).as_deref(),
            Some(self.admin_passwd_line.as_str()),
            "the admin user changed"
        );
    }

    /// Nothing of `ticket` on the host: no temporary user or home, no
    /// sudoers drop-in, no key line carrying the ticket's comment in any
    /// file under /root/.ssh or a home's .ssh.
    pub fn assert_no_trace(&self, ticket: u64) {
        assert_no_host_trace(ticket);
        for (u, status) in self.listed(ticket) {
            assert_ne!(status, "AUTHED", "ticket_list still shows {u} AUTHED");
        }
    }

    /// Waits (bounded) until `check` says login is refused: access must
    /// end without any API call.
    pub fn wait_refused(&self, user: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match self.sshd.login(&self.support, user, &["id", "-u"], b"") {
                Login::Refused { .. } => return,
                Login::Ran { .. } => {}
                Login::Unreachable { stderr } => panic!("sshd unreachable: {stderr}"),
            }
            assert!(
                Instant::now() < deadline,
                "support could still log in as {user} after {limit:?}\ndaemon log:\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The host half of [`Scene::assert_no_trace`]: no temporary user or
/// home, no sudoers drop-in, no key line of `ticket` anywhere.
pub fn assert_no_host_trace(ticket: u64) {
    let user = format!("cp{ticket}.ssh");
    assert!(passwd_line(&user).is_none(), "{user} still in /etc/passwd");
    assert!(
        !Path::new("/home").join(&user).exists(),
        "/home/{user} still exists"
    );
    let dropin = format!("/etc/sudoers.d/ticket{ticket}");
    assert!(!Path::new(&dropin).exists(), "{dropin} still exists");
    let mark = format!("{ticket}_server_");
    for f in key_files() {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(&mark),
            "{} still holds a key of ticket {ticket}:\n{text}",
            f.display()
        );
    }
}

pub const SUPPORT_NETNS: &str = "support";
pub const HOST_VETH_IP: &str = "10.200.0.1";
pub const SUPPORT_IP: &str = "10.200.0.2";

pub fn ip_tool() -> std::path::PathBuf {
    cmd::tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"])
}

/// The support side of the network: its own namespace on a veth pair.
pub fn make_support_netns() {
    let ip = ip_tool();
    let host_cidr = format!("{HOST_VETH_IP}/24");
    let support_cidr = format!("{SUPPORT_IP}/24");
    let steps: [&[&str]; 7] = [
        &["netns", "add", SUPPORT_NETNS],
        &[
            "link",
            "add",
            "e2e-host",
            "type",
            "veth",
            "peer",
            "name",
            "e2e-sup",
            "netns",
            SUPPORT_NETNS,
        ],
        &["addr", "add", &host_cidr, "dev", "e2e-host"],
        &["link", "set", "e2e-host", "up"],
        &[
            "-n",
            SUPPORT_NETNS,
            "addr",
            "add",
            &support_cidr,
            "dev",
            "e2e-sup",
        ],
        &["-n", SUPPORT_NETNS, "link", "set", "e2e-sup", "up"],
        &["-n", SUPPORT_NETNS, "link", "set", "lo", "up"],
    ];
    for args in steps {
        cmd::run_ok(&ip, args);
    }
}

/// Comments out the distribution's `%sudo`/`%wheel` rules in the
/// sandbox's /etc/sudoers (checked with visudo afterwards).
pub fn drop_group_sudo_rules() {
    let path = "/etc/sudoers";
    let text = std::fs::read_to_string(path).expect("read sandbox sudoers");
    let edited: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("%sudo") || t.starts_with("%wheel") {
                format!("# e2e removed: {l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(path, edited).expect("write sandbox sudoers");
    cmd::run_ok(Path::new("/usr/sbin/visudo"), &["-c"]);
}

pub fn write_0600(p: &Path, bytes: &[u8], uid: u32, gid: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, bytes).expect("write key file");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

pub fn lookup_user(name: &str) -> Option<nix::unistd::User> {
    nix::unistd::User::from_name(name).ok().flatten()
}

pub fn passwd_line(user: &str) -> Option<String> {
    let prefix = format!("{user}:");
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map(str::to_string)
}

/// Every regular file in /root/.ssh and /home/*/.ssh.
pub fn key_files() -> Vec<std::path::PathBuf> {
    let mut dirs = vec![std::path::PathBuf::from("/root/.ssh")];
    if let Ok(rd) = std::fs::read_dir("/home") {
        dirs.extend(rd.filter_map(|e| e.ok()).map(|e| e.path().join(".ssh")));
    }
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect()
}

pub fn str_field<'v>(data: &'v Value, key: &str) -> &'v str {
    data[key]
        .as_str()
        .unwrap_or_else(|| panic!("grant answer has no string {key}: {data}"))
}

/// Temporary-user path: ssh as the user, `sudo -S` with the password.
pub fn assert_temp_user_becomes_root(scene: &Scene, user: &str, password: &str) {
    scene.sshd.assert_root(
        &scene.support,
        user,
        &["sudo", "-S", "-p", "''", "id", "-u"],
        format!("{password}\n").as_bytes(),
    );
}

/// The support person has logged out: their sshd session is gone.
pub fn wait_logged_out(user: &str) {
    if let Some(pw) = lookup_user(user) {
        sandbox::wait_no_processes_of(pw.uid.as_raw());
    }
}

pub fn group_members(group: &str) -> Vec<String> {
    nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.mem)
        .unwrap_or_default()
}

pub fn nft_tool() -> std::path::PathBuf {
    cmd::tool(&["/usr/sbin/nft", "/sbin/nft"])
}

/// No table, set element or hook rule of ours is left in the ruleset
/// (the sandbox starts with an empty one).
pub fn assert_no_firewall_trace() {
    let ruleset = cmd::run_ok(&nft_tool(), &["list", "ruleset"]);
    assert!(
        !ruleset.contains("supportauth"),
        "nftables still holds our state with no grant active:\n{ruleset}"
    );
}
