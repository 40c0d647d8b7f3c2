//! The scenarios of issue 7, against the real daemon. Each starts from the
//! same scene: a real sshd with the scenario's policy, a support key pair,
//! an admin whose own root key and user must come through untouched, and
//! the daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cmd;
use super::daemon::{self, Daemon, DaemonSetup};
use super::sandbox::{self, mkdir_mode, Sandbox};
use super::sshd::{KeyPair, Login, Sshd, SshdSetup};

const ADMIN_USER: &str = "siteadmin";
const ROOT_KEYS: &str = "/root/.ssh/authorized_keys";

pub struct Scene {
    pub sshd: Sshd,
    pub daemon: Daemon,
    pub support: KeyPair,
    pub admin: KeyPair,
    root_keys_before: Vec<u8>,
    admin_keys_before: Vec<u8>,
    admin_passwd_line: String,
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

const SUPPORT_NETNS: &str = "support";
const HOST_VETH_IP: &str = "10.200.0.1";
const SUPPORT_IP: &str = "10.200.0.2";

fn ip_tool() -> std::path::PathBuf {
    cmd::tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"])
}

/// The support side of the network: its own namespace on a veth pair.
fn make_support_netns() {
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
fn drop_group_sudo_rules() {
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

fn write_0600(p: &Path, bytes: &[u8], uid: u32, gid: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, bytes).expect("write key file");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

fn lookup_user(name: &str) -> Option<nix::unistd::User> {
    nix::unistd::User::from_name(name).ok().flatten()
}

fn passwd_line(user: &str) -> Option<String> {
    let prefix = format!("{user}:");
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map(str::to_string)
}

/// Every regular file in /root/.ssh and /home/*/.ssh.
fn key_files() -> Vec<std::path::PathBuf> {
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

fn str_field<'v>(data: &'v Value, key: &str) -> &'v str {
    data[key]
        .as_str()
        .unwrap_or_else(|| panic!("grant answer has no string {key}: {data}"))
}

/// Temporary-user path: ssh as the user, `sudo -S` with the password.
fn assert_temp_user_becomes_root(scene: &Scene, user: &str, password: &str) {
    scene.sshd.assert_root(
        &scene.support,
        user,
        &["sudo", "-S", "-p", "''", "id", "-u"],
        format!("{password}\n").as_bytes(),
    );
}

/// The support person has logged out: their sshd session is gone.
fn wait_logged_out(user: &str) {
    if let Some(pw) = lookup_user(user) {
        sandbox::wait_no_processes_of(pw.uid.as_raw());
    }
}

// ---- scenario 1 -------------------------------------------------------

pub fn root_prohibit_password(sb: &Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    let data = scene.grant(101, &[]);
    assert_eq!(str_field(&data, "ssh_username"), "root", "{data}");
    assert!(data.get("wheel_password").is_none(), "{data}");
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.revoke(101, "root");
    scene.sshd.assert_refused(&scene.support, "root");
    scene.assert_no_trace(101);
    scene.assert_admin_intact();
    scene
        .sshd
        .assert_root(&scene.admin, "root", &["id", "-u"], b"");
    daemon::assert_audit_verifies();
}

// ---- scenarios 2 and 3 -------------------------------------------------

fn temp_user_round_trip(scene: &Scene, ticket: u64, expect_dropin: bool) {
    let data = scene.grant(ticket, &[]);
    let user = format!("cp{ticket}.ssh");
    assert_eq!(str_field(&data, "ssh_username"), user, "{data}");
    let password = str_field(&data, "wheel_password").to_string();
    let dropin = format!("/etc/sudoers.d/ticket{ticket}");
    if expect_dropin {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(&dropin).unwrap_or_else(|e| panic!("{dropin} not installed: {e}"));
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o440, 0, 0)
        );
    }
    assert!(
        Path::new(&dropin).exists()
            || group_members("sudo").contains(&user)
            || group_members("wheel").contains(&user),
        "{user} has neither a sudoers drop-in nor a wheel/sudo group"
    );
    scene.sshd.assert_refused(&scene.support, "root");
    assert_temp_user_becomes_root(scene, &user, &password);
    wait_logged_out(&user);
    scene.revoke(ticket, &user);
    scene.assert_no_trace(ticket);
    assert_no_firewall_trace();
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

pub fn root_login_no(sb: &Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("no"));
    temp_user_round_trip(&scene, 102, false);
}

/// As above, on a host whose sudoers has no rule for the wheel/sudo group:
/// the daemon's /etc/sudoers.d/ticket<id> is what makes sudo work.
pub fn root_login_no_sudoers_dropin(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            group_sudo_rule: false,
            ..SceneSetup::root_login("no")
        },
    );
    temp_user_round_trip(&scene, 106, true);
}

pub fn match_address_forbids_root(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            sshd_tail: "Match Address 127.0.0.1\n    PermitRootLogin no\n",
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    // The block forbids root for the support address only: from anywhere
    // else sshd would still let root in with a key.
    let effective = |addr: &str| {
        let spec = format!(
            "user=root,host=e2e.test,addr={addr},laddr=127.0.0.1,lport={}",
            scene.sshd.port
        );
        let out = cmd::run_ok(
            Path::new(super::sshd::SSHD),
            &["-T", "-C", &spec, "-f", super::sshd::SSHD_CONFIG],
        );
        out.lines()
            .find_map(|l| l.strip_prefix("permitrootlogin "))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(effective("127.0.0.1"), "no");
    assert!(
        ["prohibit-password", "without-password"].contains(&effective("192.0.2.7").as_str()),
        "root elsewhere: {}",
        effective("192.0.2.7")
    );
    temp_user_round_trip(&scene, 103, false);
}

/// Support is still logged in when access is revoked: the revoke must
/// still take the user away (and with it the session).
pub fn revoke_during_open_session(sb: &Sandbox) {
    let scene = Scene::new(sb, &SceneSetup::root_login("no"));
    let data = scene.grant(108, &[]);
    let user = str_field(&data, "ssh_username").to_string();
    let mut session = scene
        .sshd
        .open_session(&scene.support, &user, &["sleep", "600"]);
    let uid = lookup_user(&user).expect("temp user").uid.as_raw();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sandbox::process_uids().iter().any(|(_, u)| *u == uid) {
        assert!(Instant::now() < deadline, "the session never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = scene.revoke(108, &user);
    eprintln!("revoke with an open session: {answer}");
    scene.assert_no_trace(108);
    let deadline = Instant::now() + Duration::from_secs(30);
    while session.try_wait().expect("wait ssh").is_none() {
        assert!(
            Instant::now() < deadline,
            "the support session outlived the revoke by 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

fn group_members(group: &str) -> Vec<String> {
    nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.mem)
        .unwrap_or_default()
}

// ---- scenario 4 ---------------------------------------------------------

/// ttl short enough to watch pass, long enough that the first login
/// surely happens before it (the assertion is "refused eventually").
const SHORT_TTL: &str = "15";
const EXPIRY_LIMIT: Duration = Duration::from_secs(90);

pub fn ttl_expires_without_api_call(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            reconcile_secs: 1,
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    scene.grant(104, &[("ttl", SHORT_TTL.into())]);
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.wait_refused("root", EXPIRY_LIMIT);
    // The daemon's own expiry, not only sshd's expiry-time: the key and
    // the listing must go too (bounded wait for the next reconcile).
    let deadline = Instant::now() + EXPIRY_LIMIT;
    while key_files().iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains("104_server_")
    }) {
        assert!(Instant::now() < deadline, "expired key never removed");
        std::thread::sleep(Duration::from_millis(500));
    }
    scene.assert_no_trace(104);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// The daemon is down when the ttl passes: the key's expiry-time option
/// alone makes sshd refuse it; the restarted daemon then removes it.
pub fn ttl_backstop_with_daemon_down(sb: &Sandbox) {
    let mut scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    scene.grant(105, &[("ttl", SHORT_TTL.into())]);
    let keys = std::fs::read_to_string(ROOT_KEYS).expect("root keys");
    let ours = keys
        .lines()
        .find(|l| l.contains("105_server_"))
        .unwrap_or_else(|| panic!("no key line for ticket 105:\n{keys}"));
    assert!(ours.contains("expiry-time=\""), "no expiry-time: {ours}");
    scene.daemon.kill9();
    scene
        .sshd
        .assert_root(&scene.support, "root", &["id", "-u"], b"");
    scene.wait_refused("root", EXPIRY_LIMIT);
    assert!(
        std::fs::read_to_string(ROOT_KEYS)
            .expect("root keys")
            .contains("105_server_"),
        "the key was removed, so this did not test expiry-time"
    );
    scene.daemon.restart();
    scene.assert_no_trace(105);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

// ---- scenario 5 ---------------------------------------------------------

/// Before the restart, the host must show the step the daemon died at:
/// proof that the restart (not a grant that never started, or a revoke
/// that had finished) is what cleaned up.
fn assert_half_done(step: &str, ticket: u64) {
    let user = format!("cp{ticket}.ssh");
    let user_exists = passwd_line(&user).is_some();
    let dropin = Path::new(&format!("/etc/sudoers.d/ticket{ticket}")).exists();
    let mark = format!("{ticket}_server_");
    let key = key_files().iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains(&mark)
    });
    let want = match step {
        "after_intent" => (false, false, false),
        "after_user_created" | "after_password_set" => (true, false, false),
        "after_sudoers_installed" => (true, true, false),
        "after_key_installed" | "after_grant_audited" | "revoke_after_intent" => (true, true, true),
        "revoke_after_key_removed" => (true, true, false),
        "revoke_after_user_deleted" => (false, dropin, false),
        other => panic!("unknown fault step {other}"),
    };
    assert_eq!(
        (user_exists, dropin, key),
        want,
        "host at the {step} crash: (user, sudoers drop-in, key)"
    );
}

/// `kill -9` at a grant step, restart: the grant is either complete (and
/// works) or gone without a trace; then a revoke leaves nothing.
pub fn crash_grant(sb: &Sandbox, step: &str) {
    let ticket = 200;
    let user = format!("cp{ticket}.ssh");
    let mut scene = Scene::new(
        sb,
        &SceneSetup {
            fault: Some(step),
            group_sudo_rule: false,
            firewall: "nftables",
            ..SceneSetup::root_login("no")
        },
    );
    scene.grant_unanswered(ticket);
    scene.daemon.wait_killed();
    assert_half_done(step, ticket);
    scene.daemon.restart();
    let listed = scene.listed(ticket);
    let rolled_forward = listed.iter().any(|(_, s)| s == "AUTHED");
    eprintln!("crash at {step}: after restart ticket_list shows {listed:?} (rolled forward: {rolled_forward})");
    if rolled_forward {
        // Rolled forward: it must really work (the password never reached
        // the caller, so only the key login is checked).
        match scene.sshd.login(&scene.support, &user, &["id", "-un"], b"") {
            Login::Ran {
                code: Some(0),
                stdout,
                ..
            } => assert_eq!(stdout.trim(), user),
            other => panic!("listed AUTHED after {step} but login fails: {other:?}"),
        }
        wait_logged_out(&user);
        scene.revoke(ticket, &user);
    }
    scene.assert_no_trace(ticket);
    assert_no_firewall_trace();
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// `kill -9` at a revoke step, restart: the revoke is finished.
pub fn crash_revoke(sb: &Sandbox, step: &str) {
    let ticket = 201;
    let mut scene = Scene::new(
        sb,
        &SceneSetup {
            fault: Some(step),
            group_sudo_rule: false,
            firewall: "nftables",
            ..SceneSetup::root_login("no")
        },
    );
    let data = scene.grant(ticket, &[]);
    let user = str_field(&data, "ssh_username").to_string();
    let password = str_field(&data, "wheel_password").to_string();
    assert_temp_user_becomes_root(&scene, &user, &password);
    wait_logged_out(&user);
    let t = ticket.to_string();
    let _ = scene.daemon.try_call(
        "ticket_revoke",
        &[("ticket_id", &t), ("ssh_username", &user)],
    );
    scene.daemon.wait_killed();
    scene.daemon.restart();
    scene.assert_no_trace(ticket);
    assert_no_firewall_trace();
    scene.sshd.assert_refused(&scene.support, &user);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

// ---- scenario 6 ---------------------------------------------------------

/// The admin's firewall: default drop on input, loopback and replies only.
const ADMIN_RULESET: &str = "table inet admin {\n\
    chain in {\n\
        type filter hook input priority 0; policy drop;\n\
        iif \"lo\" accept\n\
        ct state established,related accept\n\
    }\n\
}\n";

fn nft_tool() -> std::path::PathBuf {
    cmd::tool(&["/usr/sbin/nft", "/sbin/nft"])
}

/// No table, set element or hook rule of ours is left in the ruleset
/// (the sandbox starts with an empty one).
fn assert_no_firewall_trace() {
    let ruleset = cmd::run_ok(&nft_tool(), &["list", "ruleset"]);
    assert!(
        !ruleset.contains("supportauth"),
        "nftables still holds our state with no grant active:\n{ruleset}"
    );
}

/// Support at 10.200.0.2 (another netns) reaches sshd through the admin's
/// default-drop nftables only while its grant is active; afterwards the
/// admin's ruleset is back byte for byte.
pub fn firewall_default_drop(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            firewall: "nftables",
            support_netns: true,
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    let rules = sb.path("admin.nft");
    std::fs::write(&rules, ADMIN_RULESET).expect("write admin ruleset");
    cmd::run_ok(&nft_tool(), &["-f".as_ref(), rules.as_os_str()]);
    let admin_listing = cmd::run_ok(&nft_tool(), &["list", "ruleset"]);
    let from_support = |scene: &Scene| {
        scene.sshd.login_via(
            Some(SUPPORT_NETNS),
            HOST_VETH_IP,
            &scene.support,
            "root",
            &["id", "-u"],
            b"",
        )
    };
    match from_support(&scene) {
        Login::Unreachable { .. } => {}
        other => panic!("default drop let support through before any grant: {other:?}"),
    }
    let data = scene.grant(107, &[("access_ip-0", SUPPORT_IP.into())]);
    match from_support(&scene) {
        Login::Ran {
            code: Some(0),
            stdout,
            ..
        } if stdout.trim() == "0" => {}
        other => panic!(
            "granted support at {SUPPORT_IP} cannot log in: {other:?}\ngrant: {data}\nruleset:\n{}\ndaemon log:\n{}",
            cmd::run_ok(&nft_tool(), &["list", "ruleset"]),
            scene.daemon.log()
        ),
    }
    scene.revoke(107, "root");
    match from_support(&scene) {
        Login::Unreachable { .. } => {}
        other => panic!("support still reaches sshd after revoke: {other:?}"),
    }
    assert_eq!(
        cmd::run_ok(&nft_tool(), &["list", "ruleset"]),
        admin_listing,
        "the admin's ruleset is not back as it was"
    );
    scene.assert_no_trace(107);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

// ---- scenario 7 ---------------------------------------------------------

const MIX_THREADS: u64 = 8;
const MIX_OPS_PER_THREAD: u64 = 25;
const MIX_FIRST_TICKET: u64 = 500;
const MIX_TICKETS: u64 = 16;

/// Even tickets come from 127.0.0.1 (root may log in), odd ones from
/// 10.9.0.x, where a Match block forbids root: both paths at once.
fn mix_identity(ticket: u64) -> (String, String) {
    if ticket % 2 == 0 {
        ("127.0.0.1".into(), "root".into())
    } else {
        (
            format!("10.9.0.{}", ticket % 250),
            format!("cp{ticket}.ssh"),
        )
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

type Access = std::collections::BTreeSet<(u64, String)>;

fn mix_scene(sb: &Sandbox) -> Scene {
    Scene::new(
        sb,
        &SceneSetup {
            sshd_tail: "Match Address 10.9.0.0/16\n    PermitRootLogin no\n",
            reconcile_secs: 1,
            group_sudo_rule: false,
            firewall: "nftables",
            ..SceneSetup::root_login("prohibit-password")
        },
    )
}

fn mix_seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("parallel mix seed {seed}");
    seed
}

/// `threads` clients doing `ops` random grant / revoke / list calls each;
/// `done` counts finished calls. With `daemon_may_die`, a client stops at
/// its first call without an answer instead of failing.
fn mixed_ops(
    scene: &Scene,
    seed: u64,
    threads: u64,
    ops: u64,
    done: &std::sync::atomic::AtomicU64,
    daemon_may_die: bool,
) -> std::collections::BTreeMap<String, u32> {
    let counts = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let counts = &counts;
            s.spawn(move || {
                let mut rng = XorShift(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..ops {
                    let ticket = MIX_FIRST_TICKET + rng.next(MIX_TICKETS);
                    let (ip, user) = mix_identity(ticket);
                    let tk = ticket.to_string();
                    let roll = rng.next(100);
                    let (label, answer) = if roll < 50 {
                        let ttl = if rng.next(3) == 0 { "2" } else { "3600" };
                        let args = [
                            ("ticket_id", tk.as_str()),
                            ("server_num", "1"),
                            ("ssh_key", scene.support.public_line.as_str()),
                            ("access_ip-0", ip.as_str()),
                            ("ttl", ttl),
                        ];
                        ("grant", scene.daemon.try_call("ticket_grant", &args))
                    } else if roll < 85 {
                        let args = [("ticket_id", tk.as_str()), ("ssh_username", user.as_str())];
                        ("revoke", scene.daemon.try_call("ticket_revoke", &args))
                    } else {
                        ("list", scene.daemon.try_call("ticket_list", &[]))
                    };
                    let key = match answer {
                        Ok(v) if daemon::result(&v) == 0 => {
                            // Refusals are expected (already granted,
                            // nothing to revoke); their reasons are shown.
                            let reason = v
                                .pointer("/metadata/reason")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .chars()
                                .take(60)
                                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                                .collect::<String>();
                            format!("{label} result 0: {reason}")
                        }
                        Ok(v) => format!("{label} result {}", daemon::result(&v)),
                        Err(_) if daemon_may_die => {
                            *counts
                                .lock()
                                .expect("counts")
                                .entry(format!("{label} unanswered"))
                                .or_default() += 1;
                            return;
                        }
                        Err(e) => {
                            panic!("{label} {ticket}: {e}\ndaemon log:\n{}", scene.daemon.log())
                        }
                    };
                    *counts.lock().expect("counts").entry(key).or_default() += 1;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let counts = counts.into_inner().expect("counts");
    eprintln!("parallel mix outcomes: {counts:?}");
    counts
}

/// Waits (bounded) until no grant is left to end by itself, then
/// requires host keys, temporary users, drop-ins, the store and the audit
/// replay to describe the same access; returns it.
fn assert_converged(scene: &Scene, seed: u64) -> Access {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (store, pending) = store_access(scene);
        let host = host_access();
        let replay = replay_access();
        let users = temp_users_on_host();
        let dropins = dropins_on_host();
        let want_users: Access = store.iter().filter(|(_, u)| u != "root").cloned().collect();
        let want_dropins: std::collections::BTreeSet<u64> =
            want_users.iter().map(|(t, _)| *t).collect();
        let agree = pending == 0
            && store == host
            && store == replay
            && users == want_users
            && dropins == want_dropins;
        if agree {
            eprintln!("parallel mix converged: {} grants active", store.len());
            return store;
        }
        assert!(
            Instant::now() < deadline,
            "host, store and audit replay disagree after 60s (seed {seed}):\n\
             store {store:?} ({pending} expired or expiring)\nhost keys {host:?}\n\
             replay {replay:?}\ntemp users {users:?}\ndrop-ins {dropins:?}\ndaemon log:\n{}",
            scene.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every remaining grant works from its support address only: root ones
/// from 127.0.0.1; temporary users carry from="10.9.0.x", so the same key
/// from 127.0.0.1 must be refused for them.
fn assert_access_works(scene: &Scene, store: &Access) {
    for (ticket, user) in store {
        if user == "root" {
            scene
                .sshd
                .assert_root(&scene.support, "root", &["id", "-u"], b"");
        } else {
            let (ip, _) = mix_identity(*ticket);
            let ak = Path::new("/home").join(user).join(".ssh/authorized_keys");
            let text =
                std::fs::read_to_string(&ak).unwrap_or_else(|e| panic!("{}: {e}", ak.display()));
            assert!(
                text.contains(&format!("from=\"{ip}\"")),
                "{} lacks from=\"{ip}\":\n{text}",
                ak.display()
            );
            scene.sshd.assert_refused(&scene.support, user);
        }
    }
    for (_, user) in store.iter().filter(|(_, u)| u != "root") {
        wait_logged_out(user);
    }
}

/// The kill switch: afterwards nothing of any ticket is left anywhere.
fn revoke_all_leaves_nothing(scene: &Scene) {
    scene.daemon.call_ok("ticket_revoke_all", &[]);
    for t in MIX_FIRST_TICKET..MIX_FIRST_TICKET + MIX_TICKETS {
        scene.assert_no_trace(t);
    }
    assert!(replay_access().is_empty(), "replay after revoke_all");
    assert_no_firewall_trace();
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// 200 grant / revoke / list calls from 8 parallel clients, some grants
/// expiring on their own; then the host, the store and the audit replay
/// must describe the same access.
pub fn parallel_mixed_operations(sb: &Sandbox) {
    let scene = mix_scene(sb);
    let seed = mix_seed();
    let done = std::sync::atomic::AtomicU64::new(0);
    let counts = mixed_ops(&scene, seed, MIX_THREADS, MIX_OPS_PER_THREAD, &done, false);
    // The only refusals a race-free engine gives here: granting what is
    // granted, revoking what is not.
    for refusal in counts.keys().filter(|k| k.contains("result 0")) {
        assert!(
            refusal.contains("already present") || refusal.contains("No keys for ticket"),
            "unexpected refusal under concurrency: {refusal}"
        );
    }
    for needed in ["grant result 1", "revoke result 1"] {
        assert!(
            counts.get(needed).copied().unwrap_or(0) >= 5,
            "too few successful operations ({needed}) to prove anything: {counts:?}"
        );
    }
    let store = assert_converged(&scene, seed);
    assert_access_works(&scene, &store);
    revoke_all_leaves_nothing(&scene);
}

/// Scenario 5 without a fault point: `kill -9` from outside while
/// parallel clients are granting and revoking, then restart: the same
/// agreement as scenario 7 must hold.
pub fn crash_external_kill_during_burst(sb: &Sandbox) {
    let mut scene = mix_scene(sb);
    let seed = mix_seed();
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let clients = s.spawn(|| mixed_ops(&scene, seed, 4, 1000, &done, true));
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(std::sync::atomic::Ordering::SeqCst) < 40 {
            assert!(Instant::now() < deadline, "the burst never got going");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Mid-burst, with calls in flight.
        scene.daemon.kill_pid_9();
        let counts = clients.join().expect("clients");
        assert!(
            counts.keys().any(|k| k.ends_with("unanswered")),
            "no call was cut off by the kill: {counts:?}"
        );
    });
    scene.daemon.reap();
    scene.daemon.restart();
    let store = assert_converged(&scene, seed);
    assert_access_works(&scene, &store);
    revoke_all_leaves_nothing(&scene);
}

/// (ticket, user) AUTHED in `ticket_list`, and how many grants are still
/// to end on their own: EXPIRED ones not yet removed, and short-ttl ones
/// still running (they would end in the middle of the comparison).
fn store_access(scene: &Scene) -> (Access, usize) {
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
        + 600;
    let data = scene.daemon.call_ok("ticket_list", &[]);
    let mut access = Access::new();
    let mut expired = 0;
    for auth in data["auths"].as_array().into_iter().flatten() {
        let Some(t) = auth["ticket_id"].as_u64() else {
            continue;
        };
        for s in auth["servers"].as_array().into_iter().flatten() {
            match s["auth_status"].as_str() {
                Some("AUTHED") if s["expires_at"].as_i64().is_some_and(|e| e < soon) => {
                    expired += 1
                }
                Some("AUTHED") => {
                    access.insert((t, s["ssh_username"].as_str().unwrap_or("").to_string()));
                }
                Some("EXPIRED") => expired += 1,
                _ => {}
            }
        }
    }
    (access, expired)
}

/// (ticket, account) for every key line of ours in any account's .ssh.
fn host_access() -> Access {
    let mut access = Access::new();
    for f in key_files() {
        let owner = match f.strip_prefix("/home") {
            Ok(rest) => rest
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default(),
            Err(_) => "root".to_string(),
        };
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            let Some(comment) = line.split_whitespace().last() else {
                continue;
            };
            let Some((t, rest)) = comment.split_once("_server_") else {
                continue;
            };
            if let (Ok(t), true) = (t.parse::<u64>(), rest.contains("@cpanel.net_")) {
                access.insert((t, owner.clone()));
            }
        }
    }
    access
}

/// Active grants according to the audit log alone.
fn replay_access() -> Access {
    let text = std::fs::read_to_string("/var/cpanel/logs/supportauth/audit.log")
        .expect("read the audit log");
    let records = text.lines().map(|l| {
        supportauth::audit::record::open_line(l)
            .unwrap_or_else(|e| panic!("bad audit line {l:?}: {e:?}"))
    });
    supportauth::audit::replay::active_grants(records)
        .into_iter()
        .map(|((t, _), g)| (t, g.ssh_username))
        .collect()
}

fn temp_users_on_host() -> Access {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|name| {
            let t = name.strip_prefix("cp")?.strip_suffix(".ssh")?;
            Some((t.parse().ok()?, name.to_string()))
        })
        .collect()
}

fn dropins_on_host() -> std::collections::BTreeSet<u64> {
    std::fs::read_dir("/etc/sudoers.d")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("ticket")?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
