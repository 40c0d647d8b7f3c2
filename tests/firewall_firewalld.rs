//! firewalld backend through the real `firewall-offline-cmd` (Debian
//! package `firewalld`, daemon not running), pointed at a scratch
//! `--system-config` directory: the host's /etc/firewalld is never written.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use supportauth::config::Config;
use supportauth::firewall::{ChangeAction, Problem, Whitelist, WlStatus};
use supportauth::types::SupportIp;

const OFFLINE: &str = "/usr/bin/firewall-offline-cmd";

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

fn offline(sysconf: &Path, args: &[&str]) {
    let out = std::process::Command::new(OFFLINE)
        .arg("--system-config")
        .arg(sysconf)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn firewalld_offline_ipsets_in_trusted_zone_and_admin_source_survives() {
    if !Path::new(OFFLINE).exists() {
        supportauth::test_skip!(
            "SKIPPED: firewalld: {OFFLINE} not installed (apt package firewalld)"
        );
        return;
    }
    let host_before = snapshot(Path::new("/etc/firewalld"));
    let root = tempfile::tempdir().unwrap();
    let sysconf = root.path().join("etc/firewalld");
    std::fs::create_dir_all(&sysconf).unwrap();
    if let Ok(conf) = std::fs::read("/etc/firewalld/firewalld.conf") {
        std::fs::write(sysconf.join("firewalld.conf"), conf).unwrap();
    }
    // The admin already trusts 192.0.2.10.
    offline(&sysconf, &["--zone=trusted", "--add-source=192.0.2.10"]);
    let trusted = sysconf.join("zones/trusted.xml");
    let admin_trusted = std::fs::read_to_string(&trusted).unwrap();

    let mut cfg = Config {
        root: root.path().to_path_buf(),
        ..Config::default()
    };
    cfg.firewall.backends = vec!["firewalld".into()];
    cfg.tools.firewall_cmd = root.path().join("no-such-tool/firewall-cmd");
    let wl = Whitelist::detect(&cfg);
    assert_eq!(wl.backends(), vec!["firewalld"]);

    let ips: Vec<SupportIp> = ["192.0.2.10", "192.0.2.20", "198.51.100.0/24", "2001:db8::5"]
        .iter()
        .map(|s| SupportIp::parse(s).unwrap())
        .collect();
    assert_eq!(wl.check(&ips).problem, Problem::NeedSetup);
    let r = wl.ensure(&ips);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Active);
    assert_eq!(
        r.changes
            .iter()
            .filter(|c| c.action == ChangeAction::Added)
            .count(),
        4
    );
    let v4 = std::fs::read_to_string(sysconf.join("ipsets/supportauth-v4.xml")).unwrap();
    for e in ["192.0.2.10", "192.0.2.20", "198.51.100.0/24"] {
        assert!(v4.contains(&format!("<entry>{e}</entry>")), "{v4}");
    }
    let v6 = std::fs::read_to_string(sysconf.join("ipsets/supportauth-v6.xml")).unwrap();
    assert!(v6.contains("<entry>2001:db8::5</entry>"), "{v6}");
    assert!(v6.contains("inet6"), "{v6}");
    let t = std::fs::read_to_string(&trusted).unwrap();
    assert!(t.contains("<source ipset=\"supportauth-v4\"/>"), "{t}");
    assert!(t.contains("<source ipset=\"supportauth-v6\"/>"), "{t}");
    assert!(t.contains("<source address=\"192.0.2.10\"/>"), "{t}");
    assert_eq!(wl.check(&ips).problem, Problem::No);
    assert!(wl.ensure(&ips).changes.is_empty(), "idempotent");

    // Update: drop 192.0.2.20, add 192.0.2.30.
    let next: Vec<SupportIp> = ["192.0.2.10", "192.0.2.30"]
        .iter()
        .map(|s| SupportIp::parse(s).unwrap())
        .collect();
    let r = wl.ensure(&next);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let v4 = std::fs::read_to_string(sysconf.join("ipsets/supportauth-v4.xml")).unwrap();
    assert!(
        v4.contains("<entry>192.0.2.30</entry>") && !v4.contains("192.0.2.20"),
        "{v4}"
    );

    let r = wl.clear();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Inactive);
    assert!(!sysconf.join("ipsets/supportauth-v4.xml").exists());
    assert!(!sysconf.join("ipsets/supportauth-v6.xml").exists());
    // The admin's trusted source is still there; the zone is as before.
    assert_eq!(std::fs::read_to_string(&trusted).unwrap(), admin_trusted);
    assert_eq!(wl.check(&[]).problem, Problem::No);

    assert_eq!(
        snapshot(Path::new("/etc/firewalld")),
        host_before,
        "the host's /etc/firewalld changed"
    );
}
