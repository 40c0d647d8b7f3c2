//! Issue 19: the packaged product. The repository's unit passes
//! `systemd-analyze verify` once installed; the .deb installs with dpkg
//! (its maintainer scripts run), the daemon runs with the unit's own
//! ExecStartPre/ExecStart lines on a host without cPanel, grants and
//! revokes through the CLI, an upgrade keeps a grant, and `dpkg --purge`
//! takes every grant away
//! first and leaves no key, user, sudoers file or firewall entry. All of it
//! inside the sandbox (/usr, /etc, /var are overlays there).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::cmd;
use crate::e2e::daemon;
use crate::e2e::sandbox::{self, Sandbox};
use crate::e2e::scene::*;

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/systemd/supportauth.service"
));
const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";
const DPKG: &str = "/usr/bin/dpkg";
const INSTALLED_BIN: &str = "/usr/sbin/supportauth";
const SUPPORT_IP: &str = "203.0.113.10";

/// Why the unit check cannot run here.
pub fn unit_check_needs() -> Option<String> {
    (!Path::new(SYSTEMD_ANALYZE).exists())
        .then(|| format!("{SYSTEMD_ANALYZE} is missing (apt-get install systemd)"))
}

/// Why the package scenario cannot run here.
pub fn deb_needs() -> Option<String> {
    if !Path::new(DPKG).exists() {
        return Some(format!("{DPKG} is missing"));
    }
    if super::super::outer::built_deb().is_none() {
        return Some("no target/debian/supportauth_*.deb: run `bash packaging/build` first".into());
    }
    unit_check_needs()
}

/// `systemd-analyze verify` on the repository's unit, installed as the
/// packages install it (binary, man page, README) in the sandbox.
pub fn unit_verifies(_sb: &Sandbox) {
    install_file(&daemon::binary(), INSTALLED_BIN, 0o755);
    let unit = "/etc/systemd/system/supportauth.service";
    std::fs::write(unit, UNIT).expect("install the unit");
    std::fs::create_dir_all("/usr/share/doc/supportauth").expect("doc dir");
    std::fs::write("/usr/share/doc/supportauth/README.md", README).expect("README");
    let out = cmd::run_ok(
        Path::new(INSTALLED_BIN),
        &["generate-docs", "--out", "/run/e2e/docs"],
    );
    assert!(out.contains("supportauth.8"), "{out}");
    std::fs::create_dir_all("/usr/share/man/man8").expect("man dir");
    std::fs::copy(
        "/run/e2e/docs/man/supportauth.8",
        "/usr/share/man/man8/supportauth.8",
    )
    .expect("install the man page");
    assert_verifies("supportauth.service");
}

fn assert_verifies(unit: &str) {
    // --man=no: `man` itself may be absent; the page's presence is checked
    // by the callers.
    let out = cmd::run(Path::new(SYSTEMD_ANALYZE), &["verify", "--man=no", unit]);
    let text = both(&out);
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("supportauth")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {unit} ({}):\n{text}",
        out.status
    );
}

fn install_file(from: &Path, to: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy to {to}: {e}"));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The whole life of the .deb on a host without cPanel.
pub fn deb_lifecycle(sb: &Sandbox) {
    assert!(!Path::new(INSTALLED_BIN).exists(), "already installed?");
    // The package's own state directory, not the sandbox's tmpfs (purge
    // removes the directory itself, which a mount point refuses).
    cmd::run_ok(
        &cmd::tool(&["/usr/bin/umount", "/bin/umount"]),
        &["/var/lib/supportauth"],
    );
    let _ = std::fs::remove_dir_all("/var/lib/supportauth");
    // No cPanel: no /var/cpanel at all (the unit must create what it needs).
    cmd::run_ok(
        &cmd::tool(&["/usr/bin/umount", "/bin/umount"]),
        &["/var/cpanel"],
    );
    let _ = std::fs::remove_dir_all("/var/cpanel");
    assert!(!Path::new("/var/cpanel").exists());
    // Root may not log in: grants make a temporary user, and without a
    // group rule in sudoers also a sudoers drop-in.
    std::fs::create_dir_all("/etc/ssh/sshd_config.d").expect("sshd_config.d");
    std::fs::write("/etc/ssh/sshd_config.d/00-e2e.conf", "PermitRootLogin no\n")
        .expect("sshd drop-in");
    assert!(
        std::fs::read_to_string("/etc/ssh/sshd_config")
            .unwrap_or_default()
            .contains("Include /etc/ssh/sshd_config.d/"),
        "the host's sshd_config does not include sshd_config.d"
    );
    drop_group_sudo_rules();
    let key = sb.path("support");
    cmd::run_ok(
        Path::new("/usr/bin/ssh-keygen"),
        &["-q", "-t", "ed25519", "-N", "", "-C", "support@pkg", "-f"]
            .iter()
            .map(|s| s.to_string())
            .chain([key.display().to_string()])
            .collect::<Vec<_>>(),
    );
    let key_pub = format!("{}.pub", key.display());

    // Install.
    let out = cmd::run_ok(Path::new(DPKG), &["-i", sandbox::DEB_INSIDE]);
    println!("dpkg -i:\n{out}");
    assert!(out.contains("supportauth: installed"), "{out}");
    for f in [
        INSTALLED_BIN,
        "/usr/share/man/man8/supportauth.8.gz",
        "/usr/share/bash-completion/completions/supportauth",
        "/usr/share/doc/supportauth/README.md",
        "/etc/logrotate.d/supportauth",
    ] {
        assert!(
            Path::new(f).exists() || Path::new(&f.replace(".gz", "")).exists(),
            "{f} not installed"
        );
    }
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/supportauth.conffiles")
        .expect("the package lists conffiles");
    assert!(
        conffiles.contains("/etc/supportauth/config.toml"),
        "{conffiles}"
    );
    let unit_path = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .map(|d| format!("{d}/supportauth.service"))
        .find(|p| Path::new(p).exists())
        .expect("the unit is installed");
    assert_verifies(&unit_path);
    let unit = std::fs::read_to_string(&unit_path).expect("read the unit");

    // Start as systemd would: ExecStartPre lines, then ExecStart.
    let mut d = start_like_systemd(&unit, sb);
    let cli = |args: &[&str]| {
        let out = Command::new(INSTALLED_BIN)
            .args(args)
            .env_remove("SUPPORTAUTH_CONFIG")
            .env_remove("SUPPORTAUTH_SOCKET")
            .output()
            .expect("run the installed CLI");
        (out.status.success(), both(&out))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cli(&["list"]).0 {
        if let Ok(Some(st)) = d.try_wait() {
            panic!("the daemon exited ({st}):\n{}", daemon_log(sb));
        }
        assert!(Instant::now() < deadline, "no answer:\n{}", daemon_log(sb));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Path::new("/var/cpanel/logs/supportauth/audit.log").exists());

    let grant = |ticket: &str| {
        let (ok, text) = cli(&[
            "grant",
            "--ticket-id",
            ticket,
            "--server-num",
            "1",
            "--ssh-key-file",
            &key_pub,
            "--access-ip",
            SUPPORT_IP,
        ]);
        assert!(ok, "grant {ticket}: {text}\n{}", daemon_log(sb));
        text
    };
    let text = grant("7001");
    println!("supportauth grant:\n{text}");
    assert!(text.contains("cp7001.ssh"), "{text}");
    assert!(passwd_line("cp7001.ssh").is_some());
    assert!(Path::new("/etc/sudoers.d/ticket7001").exists());
    let fw = firewall_view();
    assert!(fw.contains(SUPPORT_IP), "{fw}");
    let (ok, text) = cli(&[
        "revoke",
        "--ticket-id",
        "7001",
        "--ssh-username",
        "cp7001.ssh",
    ]);
    assert!(ok, "{text}");
    assert_no_host_trace(7001);

    // A grant left active for the removal to take away, with the daemon
    // stopped (as `systemctl stop` would): the package starts one.
    grant("7002");
    assert!(passwd_line("cp7002.ssh").is_some());
    // An upgrade (the package over itself: prerm "upgrade", postinst
    // "configure <old version>") keeps the grant.
    let out = cmd::run_ok(Path::new(DPKG), &["-i", sandbox::DEB_INSIDE]);
    println!("dpkg -i (upgrade):\n{out}");
    assert!(out.contains("supportauth: upgraded from"), "{out}");
    assert!(!out.contains("revoking"), "{out}");
    assert!(passwd_line("cp7002.ssh").is_some(), "the upgrade revoked");
    let (ok, text) = cli(&["list", "--ticket-id", "7002"]);
    assert!(ok && text.contains("AUTHED"), "{text}");
    stop(&mut d);
    let out = Command::new(DPKG)
        .args(["--purge", "supportauth"])
        .stdin(Stdio::null())
        .output()
        .expect("run dpkg --purge");
    let text = both(&out);
    println!("dpkg --purge:\n{text}");
    assert!(out.status.success(), "dpkg --purge failed:\n{text}");
    assert!(
        text.contains("revoked every grant before removal"),
        "{text}"
    );
    assert!(text.contains("KEPT the audit log"), "{text}");

    assert_no_host_trace(7002);
    let fw = firewall_view();
    assert!(!fw.contains(SUPPORT_IP), "{fw}");
    for ours in ["supportauth", "cPanel-support-access"] {
        assert!(!fw.contains(ours), "{ours} left in the firewall:\n{fw}");
    }
    assert!(!Path::new(INSTALLED_BIN).exists());
    assert!(!Path::new(&unit_path).exists());
    assert!(
        !Path::new("/var/lib/supportauth").exists(),
        "state left after purge"
    );
    assert!(
        !Path::new("/etc/supportauth").exists(),
        "config left after purge"
    );
    let log = std::fs::read_to_string("/var/cpanel/logs/supportauth/audit.log")
        .expect("the audit log is kept");
    assert!(log.contains("\"revoke_all\""), "{log}");
    let status = cmd::run(Path::new(DPKG), &["-s", "supportauth"]);
    assert!(!status.status.success(), "still known to dpkg");
}

/// stdout and stderr of a finished command, for assertions and messages.
fn both(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every place `firewall.backends = auto` may whitelist in the sandbox:
/// the nftables ruleset, iptables' rules and hosts.allow.
fn firewall_view() -> String {
    let iptables = cmd::tool(&["/usr/sbin/iptables", "/sbin/iptables"]);
    format!(
        "nft:\n{}\niptables:\n{}\nhosts.allow:\n{}",
        cmd::run_ok(&nft_tool(), &["list", "ruleset"]),
        cmd::run_ok(&iptables, &["-S"]),
        std::fs::read_to_string("/etc/hosts.allow").unwrap_or_default()
    )
}

fn daemon_log(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path("packaged-daemon.log")).unwrap_or_default()
}

/// Runs the unit's ExecStartPre lines (a "+" only lifts the sandbox,
/// which this harness does not apply) and spawns its ExecStart with an
/// environment as empty as systemd's.
fn start_like_systemd(unit: &str, sb: &Sandbox) -> Child {
    let argv = |line: &str| -> Vec<String> {
        line.trim_start_matches(['+', '-', '@', '!'])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut start = None;
    for line in unit.lines() {
        if let Some(cmdline) = line.strip_prefix("ExecStartPre=") {
            let a = argv(cmdline);
            cmd::run_ok(Path::new(&a[0]), &a[1..]);
        } else if let Some(cmdline) = line.strip_prefix("ExecStart=") {
            start = Some(argv(cmdline));
        }
    }
    let a = start.expect("the unit has an ExecStart line");
    assert_eq!(a[0], INSTALLED_BIN, "ExecStart runs the packaged binary");
    let log = std::fs::File::create(sb.path("packaged-daemon.log")).expect("log file");
    Command::new(&a[0])
        .args(&a[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the packaged daemon")
}

fn stop(d: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(d.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let st = d.wait().expect("wait for the daemon");
    assert!(st.success(), "the daemon stopped with {st}");
}
