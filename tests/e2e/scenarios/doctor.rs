//! Issue 20: `supportauth doctor` on a healthy host and on broken ones
//! (sshd refuses every support login, no firewall backend, an edited
//! audit log), against the real sshd, nft, daemon and store.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::e2e::cmd;
use crate::e2e::daemon::{self, binary, CONFIG};
use crate::e2e::sandbox::Sandbox;
use crate::e2e::scene::*;
use crate::e2e::sshd::SSHD_CONFIG;

fn doctor(config: &str, json: bool) -> Output {
    let mut args = vec!["--config", config, "doctor"];
    if json {
        args.push("--json");
    }
    cmd::run(&binary(), &args)
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The report's checks, from `--json`.
fn checks(config: &str) -> (Output, Vec<Value>) {
    let out = doctor(config, true);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}):\n{}", text(&out)));
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    assert!(!checks.is_empty(), "no checks: {v}");
    (out, checks)
}

/// The FAIL lines of the human report for `check` (there must be one).
fn failing<'a>(report: &'a str, check: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = report
        .lines()
        .filter(|l| {
            l.starts_with("FAIL")
                && l.split_whitespace().nth(1) == Some(check)
                && l.contains(" -- fix: ")
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "no FAIL line with a fix for {check}:\n{report}"
    );
    lines
}

/// Only `check` fails; everything else is as on a healthy host.
fn only_failing(report: &str, check: &str) {
    let verdicts = report
        .lines()
        .filter(|l| ["OK ", "WARN ", "FAIL "].iter().any(|v| l.starts_with(v)));
    for l in verdicts {
        let name = l.split_whitespace().nth(1).unwrap_or("");
        if name != check {
            assert!(l.starts_with("OK"), "{name} is not OK:\n{report}");
        }
    }
}

fn healthy_scene(sb: &Sandbox) -> Scene {
    Scene::new(
        sb,
        &SceneSetup {
            firewall: "nftables",
            ..SceneSetup::root_login("prohibit-password")
        },
    )
}

/// Everything in order, with a grant active: every check OK, exit 0, and
/// the report says who may log in, where, and what the firewall holds.
pub fn healthy_host(sb: &Sandbox) {
    let scene = healthy_scene(sb);
    scene.grant(201, &[]);
    let out = doctor(CONFIG, false);
    let report = text(&out);
    eprintln!("{report}");
    assert!(out.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for l in stdout.lines().filter(|l| !l.starts_with("doctor:")) {
        assert!(l.starts_with("OK "), "not OK: {l}\n{report}");
    }
    let port = scene.sshd.port;
    assert!(
        stdout.contains(&format!(
            "root may log in with a key from 127.0.0.1; sshd listens on 127.0.0.1:{port}"
        )),
        "{report}"
    );
    assert!(
        stdout.contains("nftables: works; support addresses open now: 127.0.0.1"),
        "{report}"
    );
    for check in [
        "sshd", "firewall", "audit", "store", "socket", "clock", "portal",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(check)),
            "no {check} line:\n{report}"
        );
    }
    let (out, checks) = checks(CONFIG);
    assert!(out.status.success());
    assert!(checks.iter().all(|c| c["status"] == "OK"), "{checks:?}");
    scene.revoke(201, "root");
    let after = doctor(CONFIG, false);
    assert!(after.status.success(), "{}", text(&after));
    assert!(
        String::from_utf8_lossy(&after.stdout)
            .contains("nftables: works; no support address open now"),
        "{}",
        text(&after)
    );
}

/// sshd lets neither root nor a temporary user in from the support
/// address: doctor says so with the fix, and the daemon agrees (a grant
/// is refused). Then the same for `DenyUsers *`.
pub fn sshd_forbids_support(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            sshd_tail: &format!("AllowUsers {ADMIN_USER}\n"),
            firewall: "nftables",
            ..SceneSetup::root_login("no")
        },
    );
    let out = doctor(CONFIG, false);
    let report = text(&out);
    eprintln!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    let lines = failing(&report, "sshd");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no grant would work from 127.0.0.1")
                && l.contains("PermitRootLogin is no")
                && l.contains("AllowUsers")
                && l.contains("cp*.ssh@127.0.0.1")),
        "{report}"
    );
    only_failing(&report, "sshd");
    let refused = scene
        .daemon
        .try_call(
            "ticket_grant",
            &[
                ("ticket_id", "202"),
                ("server_num", "1"),
                ("ssh_key", &scene.support.public_line),
                ("access_ip-0", "127.0.0.1"),
            ],
        )
        .expect("an answer");
    assert_eq!(daemon::result(&refused), 0, "the daemon granted: {refused}");

    // `DenyUsers *` with root otherwise allowed: sshd -T reads the file on
    // each call, so rewriting it is enough.
    let conf = std::fs::read_to_string(SSHD_CONFIG).expect("read sshd_config");
    let conf = conf
        .replace("PermitRootLogin no", "PermitRootLogin prohibit-password")
        .replace(&format!("AllowUsers {ADMIN_USER}"), "DenyUsers *");
    std::fs::write(SSHD_CONFIG, conf).expect("write sshd_config");
    let out = doctor(CONFIG, false);
    let report = text(&out);
    eprintln!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    let lines = failing(&report, "sshd");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DenyUsers") && l.contains("PermitRootLogin prohibit-password")),
        "{report}"
    );
    let (_, checks) = checks(CONFIG);
    let sshd = checks
        .iter()
        .find(|c| c["check"] == "sshd")
        .expect("sshd check");
    assert_eq!(sshd["status"], "FAIL", "{sshd}");
    assert!(
        sshd["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{sshd}"
    );

    // Root refused but nothing else in the way: grants use a temporary
    // user, which doctor reports as fine (and so does the daemon).
    let conf = std::fs::read_to_string(SSHD_CONFIG).expect("read sshd_config");
    let conf = conf
        .replace("PermitRootLogin prohibit-password", "PermitRootLogin no")
        .replace("DenyUsers *", "");
    std::fs::write(SSHD_CONFIG, conf).expect("write sshd_config");
    let out = doctor(CONFIG, false);
    let report = text(&out);
    eprintln!("{report}");
    assert!(out.status.success(), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("OK")
            && l.contains("root may not log in from 127.0.0.1")
            && l.contains("temporary user cp<ticket>.ssh")),
        "{report}"
    );
    let granted = scene.grant(204, &[]);
    assert_eq!(
        str_field(&granted, "ssh_username"),
        "cp204.ssh",
        "{granted}"
    );
    scene.revoke(204, "cp204.ssh");
}

/// `firewall.backends = ["auto"]` on a host with no firewall tool and no
/// hosts.allow: FAIL, naming what to install or configure.
pub fn no_firewall_backend(sb: &Sandbox) {
    let _scene = Scene::new(sb, &SceneSetup::root_login("prohibit-password"));
    let conf = std::fs::read_to_string(CONFIG).expect("read config");
    assert!(conf.contains("backends = [\"none\"]"), "{conf}");
    let conf = conf.replace("backends = [\"none\"]", "backends = [\"auto\"]")
        + "[tools]\n\
           nft = \"/nonexistent/nft\"\n\
           iptables = \"/nonexistent/iptables\"\n\
           ip6tables = \"/nonexistent/ip6tables\"\n\
           firewall_cmd = \"/nonexistent/firewall-cmd\"\n\
           [paths]\n\
           hosts_allow = \"/nonexistent/hosts.allow\"\n\
           hosts_deny = \"/nonexistent/hosts.deny\"\n\
           csf_dir = \"/nonexistent/csf\"\n\
           cphulk_marker = \"/nonexistent/cphulk\"\n";
    let path = "/etc/supportauth/no-firewall.toml";
    std::fs::write(path, &conf).expect("write config");
    supportauth::config::Config::parse(&conf, Path::new(path))
        .unwrap_or_else(|e| panic!("bad test config: {e}\n{conf}"));
    let out = doctor(path, false);
    let report = text(&out);
    eprintln!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    let lines = failing(&report, "firewall");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no firewall backend found") && l.contains("install nftables")),
        "{report}"
    );
    only_failing(&report, "firewall");
}

/// One byte of an answered record changed in the audit log: FAIL, with
/// the line and what to do.
pub fn edited_audit_log(sb: &Sandbox) {
    let scene = healthy_scene(sb);
    scene.grant(203, &[]);
    scene.revoke(203, "root");
    let ok = doctor(CONFIG, false);
    assert!(ok.status.success(), "{}", text(&ok));
    let cfg = supportauth::config::Config::load(Some(Path::new(CONFIG)))
        .expect("config")
        .0;
    let log = cfg.audit_log_path();
    let before = std::fs::read_to_string(&log).expect("read the audit log");
    let line = before
        .lines()
        .position(|l| l.contains("203"))
        .unwrap_or_else(|| panic!("no record of ticket 203:\n{before}"));
    let edited: String = before
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == line {
                l.replacen("203", "204", 1)
            } else {
                l.to_string()
            };
            l + "\n"
        })
        .collect();
    assert_ne!(edited, before);
    std::fs::write(&log, edited).expect("edit the audit log");
    let out = doctor(CONFIG, false);
    let report = text(&out);
    eprintln!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    let lines = failing(&report, "audit");
    assert!(
        lines.iter().any(|l| l.contains("does not verify")
            && l.contains(&format!(":{}:", line + 1))
            && l.contains("evidence")),
        "{report}"
    );
    only_failing(&report, "audit");
}
