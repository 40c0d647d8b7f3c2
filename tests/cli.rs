//! The command-line client as an administrator uses it: the real binary
//! against the real daemon on a scratch root (real useradd, visudo,
//! sshd -T). Help texts, durations with units, errors in flag terms, exit
//! 0 when there is nothing to do, tables and --json, audit show's times
//! and events, --url for the audit commands, extend (and a crash in it),
//! revoke of a whole ticket, cPanel's lines, the token warning.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

struct Run {
    ok: bool,
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_with(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let out: Output = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SUPPORTAUTH_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(d: &Daemon, args: &[&str]) -> Run {
    run_with(&d.config, &[], args)
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn daemon(sshd_body: &str) -> Option<Daemon> {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED cli: {why}");
        return None;
    }
    Some(Daemon::start_configured("", "", |root| {
        scratch_root_config(root, sshd_body)
    }))
}

fn key_file(d: &Daemon) -> String {
    support_key(d.dir.path());
    d.dir
        .path()
        .join("support_key.pub")
        .to_string_lossy()
        .into_owned()
}

/// The expiry-time of ticket `t`'s line in root's authorized_keys.
fn expiry_in_file(d: &Daemon, t: &str) -> Option<String> {
    let text = d.read("root/.ssh/authorized_keys");
    let line = text
        .lines()
        .find(|l| l.contains(&format!(" {t}_server_1@cpanel.net_")))?;
    supportauth::authorized_keys::expiry_option(line)
}

#[test]
fn help_explains_every_ticket_flag() {
    let out = Command::new(BIN)
        .args(["grant", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for needle in [
        "--ticket-id <TICKET_ID>",
        "digits only, at least 3",
        "--server-num",
        "--ssh-username <USER>",
        "--ttl <DURATION>",
        "2h, 90m",
        "the .pub file",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    let out = Command::new(BIN)
        .args(["audit", "show", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("yesterday") && help.contains("2026-12-04"),
        "{help}"
    );
}

#[test]
fn no_local_audit_log_is_said_plainly_not_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("root = \"{}\"\n", dir.path().join("root").display()),
    )
    .unwrap();
    let r = run_with(&cfg, &[], &["audit", "verify"]);
    assert!(r.ok, "{r}");
    assert!(!r.stdout.contains("FAIL"), "{r}");
    assert!(r.stdout.contains("No audit log at"), "{r}");
    let r = run_with(&cfg, &[], &["audit", "show"]);
    assert!(r.ok, "{r}");
    assert!(r.stderr.contains("No audit log at"), "{r}");
    // An unknown event is refused before anything is read, with the list.
    let r = run_with(&cfg, &[], &["audit", "show", "--event", "grnat"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("unknown event \"grnat\"") && r.stderr.contains("revoke_all"),
        "{r}"
    );
    let r = run_with(&cfg, &[], &["audit", "show", "--since", "soon"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("--since") && r.stderr.contains("yesterday"),
        "{r}"
    );
}

#[test]
fn grant_extend_list_revoke_in_the_administrators_words() {
    let Some(d) = daemon("PermitRootLogin prohibit-password") else {
        return;
    };
    let key = key_file(&d);

    // Key files that are not a public key are named for what they are.
    let empty = d.dir.path().join("empty.pub");
    std::fs::write(&empty, "\n").unwrap();
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "123",
            "--server-num",
            "1",
            "--ssh-key-file",
            empty.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("is empty") && !r.stderr.contains("ticket system"),
        "{r}"
    );
    let private = d.dir.path().join("support_key");
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "123",
            "--server-num",
            "1",
            "--ssh-key-file",
            private.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("is a private key; give the .pub file"),
        "{r}"
    );
    // The API's argument names come back as flags.
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "12",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
        ],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("The --ticket-id argument"), "{r}");
    assert!(!r.stderr.contains("“ticket_id”"), "{r}");
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "123",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
            "--ttl",
            "0",
        ],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr.contains("--ttl 0 (no expiry) is not allowed"),
        "{r}"
    );
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "123",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
            "--ttl",
            "3y",
        ],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("--ttl: bad duration unit \"y\""), "{r}");

    // --ttl with units.
    let r = run(
        &d,
        &[
            "--json",
            "grant",
            "--ticket-id",
            "4711",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
            "--ttl",
            "2h",
        ],
    );
    assert!(r.ok, "{r}");
    let g: Value = serde_json::from_str(&r.stdout).unwrap();
    let start = g["data"]["auth_time"].as_i64().unwrap();
    assert_eq!(g["data"]["expires_at"].as_i64(), Some(start + 7200), "{g}");
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "4712",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
            "--ttl",
            "90m",
        ],
    );
    assert!(
        r.ok && r
            .stdout
            .starts_with("Granted ticket 4712 server 1 as root until "),
        "{r}"
    );

    // list: a table by default, the API's answer as it is under --json.
    let r = run(&d, &["list"]);
    assert!(r.ok, "{r}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("TICKET  SERVER  TICKET_STATUS  AUTH"),
        "{r}"
    );
    let col = lines[0].find("EXPIRES").unwrap();
    assert_eq!(lines.len(), 3, "{r}");
    for row in &lines[1..] {
        // Every row's end starts under the EXPIRES header.
        assert_eq!(row.get(col - 2..col + 2), Some("  20"), "aligned: {r}");
    }
    let r = run(&d, &["--json", "list"]);
    assert!(r.ok, "{r}");
    let cli: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(cli, d.call("ticket_list", &[]));

    // extend: the store's end and the key line's expiry-time move together.
    let before = expiry_in_file(&d, "4711").unwrap();
    let r = run(
        &d,
        &[
            "extend",
            "--ticket-id",
            "4711",
            "--server-num",
            "1",
            "--ttl",
            "5h",
        ],
    );
    assert!(r.ok, "{r}");
    assert!(
        r.stdout
            .contains("Ticket 4711 server 1 (root): access now ends"),
        "{r}"
    );
    let list = d.call("ticket_list", &[("ticket_id", "4711")]);
    let end = list["data"]["auths"][0]["servers"][0]["expires_at"]
        .as_i64()
        .unwrap();
    assert!(end >= start + 5 * 3600, "{list}");
    let after = expiry_in_file(&d, "4711").unwrap();
    assert_ne!(before, after);
    let expected = supportauth::clock::openssh_expiry(end);
    assert_eq!(after, expected);
    let r = run(
        &d,
        &[
            "extend",
            "--ticket-id",
            "999",
            "--server-num",
            "1",
            "--ttl",
            "1h",
        ],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("no grant to extend"), "{r}");

    // audit show: the extension with its old and new end, in a table; by
    // date and relative times; as stored under --json.
    let r = run(
        &d,
        &[
            "audit",
            "show",
            "--event",
            "grant_extended",
            "--since",
            "today",
        ],
    );
    assert!(r.ok, "{r}");
    assert!(r.stdout.starts_with("TIME "), "{r}");
    assert!(
        r.stdout.contains("grant_extended") && r.stdout.contains("4711"),
        "{r}"
    );
    assert!(r.stdout.contains(&format!("\"expires_at\":{end}")), "{r}");
    let r = run(
        &d,
        &[
            "audit", "show", "--since", "2h", "--until", "now", "--ticket", "4712",
        ],
    );
    assert!(r.ok && r.stdout.contains(" grant "), "{r}");
    let r = run(&d, &["audit", "show", "--until", "yesterday"]);
    assert!(
        r.ok && r.stdout.contains("No matching audit records."),
        "{r}"
    );
    let r = run(&d, &["--json", "audit", "show", "--event", "grant"]);
    assert!(r.ok, "{r}");
    let log = d.read("var/cpanel/logs/supportauth/audit.log");
    for line in r.stdout.lines() {
        assert!(log.lines().any(|l| l == line), "not as stored: {line}");
    }
    assert_eq!(r.stdout.lines().count(), 2, "{r}");

    // revoke without --ssh-username: every server of the ticket; then
    // nothing left is said and exits 0.
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "4711",
            "--server-num",
            "2",
            "--ssh-key-file",
            &key,
        ],
    );
    assert!(r.ok, "{r}");
    let r = run(&d, &["revoke", "--ticket-id", "4711"]);
    assert!(r.ok, "{r}");
    assert!(r.stdout.contains("root: Revoked 2 key(s)."), "{r}");
    assert!(!d
        .read("root/.ssh/authorized_keys")
        .contains(" 4711_server_"));
    let r = run(&d, &["revoke", "--ticket-id", "4711"]);
    assert!(r.ok, "{r}");
    assert!(
        r.stdout
            .contains("Nothing to revoke: ticket 4711 has no grant."),
        "{r}"
    );
    let r = run(
        &d,
        &["revoke", "--ticket-id", "4711", "--ssh-username", "root"],
    );
    assert!(r.ok, "{r}");
    assert!(
        r.stdout
            .contains("Nothing to revoke: No keys for ticket 4711"),
        "{r}"
    );

    // remove-closed with nothing closed: exit 0, said plainly.
    let r = run(&d, &["remove-closed"]);
    assert!(r.ok, "{r}");
    assert!(
        r.stdout
            .starts_with("Nothing to do: There are no closed tickets"),
        "{r}"
    );
    let r = run(&d, &["--json", "remove-closed"]);
    assert!(r.ok, "{r}");

    // cPanel's lines: the revoke names the key file it took the key from.
    let r = run(
        &d,
        &["audit", "show", "--format", "cpanel", "--ticket", "4711"],
    );
    assert!(r.ok, "{r}");
    let ak = d.root().join("root/.ssh/authorized_keys");
    let revokes: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains(":REVOKE:"))
        .collect();
    assert_eq!(revokes.len(), 2, "{r}");
    for l in revokes {
        // Over the socket, the remote address is `unix`.
        assert!(
            l.ends_with(&format!(":REVOKE:root:root:unix:{}", ak.display())),
            "{l}"
        );
    }

    let r = run(&d, &["audit", "verify"]);
    assert!(r.ok && r.stdout.starts_with("OK"), "{r}");
}

#[test]
fn a_temporary_users_cpanel_lines_carry_that_user() {
    let Some(d) = daemon("PermitRootLogin no") else {
        return;
    };
    let key = key_file(&d);
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "778",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
        ],
    );
    assert!(r.ok, "{r}");
    let r = run(&d, &["revoke", "--ticket-id", "778"]);
    assert!(r.ok, "{r}");
    assert!(r.stdout.contains("cp778.ssh: Revoked 1 key(s)."), "{r}");
    let r = run(
        &d,
        &["audit", "show", "--format", "cpanel", "--ticket", "778"],
    );
    assert!(r.ok, "{r}");
    let ak = d.root().join("home/cp778.ssh/.ssh/authorized_keys");
    let grant = r.stdout.lines().find(|l| l.contains(":GRANT:")).unwrap();
    assert!(
        grant.ends_with(&format!(":GRANT:root:cp778.ssh:unix:{}", ak.display())),
        "{r}"
    );
    let revoke = r.stdout.lines().find(|l| l.contains(":REVOKE:")).unwrap();
    assert!(
        revoke.ends_with(&format!(":REVOKE:root:cp778.ssh:unix:{}", ak.display())),
        "{r}"
    );
}

#[test]
fn tokens_and_the_audit_commands_over_url() {
    let Some(d) = daemon("PermitRootLogin prohibit-password") else {
        return;
    };
    // Every right and no end: made, with a warning.
    let r = run(&d, &["token", "create", "wide"]);
    assert!(r.ok, "{r}");
    assert!(
        r.stderr
            .contains("warning: this token may do everything (ACL all) and never expires"),
        "{r}"
    );
    let r = run(
        &d,
        &[
            "--json",
            "token",
            "create",
            "auditor",
            "--acl",
            "audit-read",
            "--expires",
            "30d",
        ],
    );
    assert!(r.ok, "{r}");
    assert!(!r.stderr.contains("warning"), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let token = v["data"]["token"].as_str().unwrap().to_string();
    let expires = v["data"]["expires_at"].as_i64().unwrap();
    let created = v["data"]["create_time"]
        .as_i64()
        .unwrap_or(expires - 30 * 86_400);
    assert!((expires - created - 30 * 86_400).abs() < 60, "{v}");

    let r = run(&d, &["token", "list"]);
    assert!(r.ok, "{r}");
    assert!(r.stdout.starts_with("NAME "), "{r}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("auditor ") && l.contains("audit-read")),
        "{r}"
    );
    let r = run(&d, &["--json", "token", "list"]);
    assert!(r.ok, "{r}");
    let cli: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(cli, d.call("api_token_list", &[]));

    let key = key_file(&d);
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "5150",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
        ],
    );
    assert!(r.ok, "{r}");

    // --url reads the daemon's log through the API, whatever the local
    // configuration says (here: one without a log).
    let empty = tempfile::tempdir().unwrap();
    let cfg = empty.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("root = \"{}\"\n", empty.path().join("r").display()),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}", d.port);
    let env = [("SUPPORTAUTH_TOKEN", token.as_str())];
    let r = run_with(&cfg, &env, &["--url", &url, "audit", "verify"]);
    assert!(r.ok && r.stdout.starts_with("OK"), "{r}");
    let r = run_with(
        &cfg,
        &env,
        &[
            "--url", &url, "audit", "show", "--ticket", "5150", "--since", "today",
        ],
    );
    assert!(r.ok, "{r}");
    assert!(
        r.stdout.starts_with("TIME ") && r.stdout.contains(" grant "),
        "{r}"
    );
    let r = run_with(
        &cfg,
        &env,
        &["--url", &url, "--json", "audit", "show", "--event", "grant"],
    );
    assert!(r.ok, "{r}");
    let log = d.read("var/cpanel/logs/supportauth/audit.log");
    assert_eq!(r.stdout.lines().count(), 1, "{r}");
    assert!(log.lines().any(|l| l == r.stdout.trim_end()), "{r}");
    // extend needs tickets-grant, like grant.
    let lister = d.create_token("token_name=lister&acl-0=tickets-list");
    let r = run_with(
        &cfg,
        &[("SUPPORTAUTH_TOKEN", lister.as_str())],
        &[
            "--url",
            &url,
            "extend",
            "--ticket-id",
            "5150",
            "--server-num",
            "1",
            "--ttl",
            "1h",
        ],
    );
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("lacks the “tickets-grant” ACL needed for “ticket_grant_extend”"),
        "{r}"
    );
    // A token without audit-read is told so.
    let r = run_with(
        &cfg,
        &[("SUPPORTAUTH_TOKEN", "nope")],
        &["--url", &url, "audit", "verify"],
    );
    assert_eq!(r.code, 1, "{r}");
}

/// A daemon killed in the middle of an extension: before the done mark the
/// key line goes back to the store's end at restart (the caller never
/// heard "yes"); after it, the new end stands. The log verifies either way.
#[test]
fn a_daemon_killed_mid_extend_converges_on_restart() {
    let Some(mut d) = daemon("PermitRootLogin prohibit-password") else {
        return;
    };
    let key = key_file(&d);
    let r = run(
        &d,
        &[
            "grant",
            "--ticket-id",
            "6060",
            "--server-num",
            "1",
            "--ssh-key-file",
            &key,
            "--ttl",
            "1h",
        ],
    );
    assert!(r.ok, "{r}");
    for (fault, stands) in [
        ("extend_after_key_rewritten", false),
        ("extend_after_audited", false),
        ("extend_after_done", true),
    ] {
        let stored = |d: &Daemon| {
            let l = d.call("ticket_list", &[("ticket_id", "6060")]);
            l["data"]["auths"][0]["servers"][0]["expires_at"]
                .as_i64()
                .unwrap()
        };
        let old_end = stored(&d);
        let mut old = d.take_child().unwrap();
        let _ = old.kill();
        let _ = old.wait();
        let child = d.spawn_env(&[("SUPPORTAUTH_FAULT", fault)]);
        d.adopt(child);
        let r = run(
            &d,
            &[
                "extend",
                "--ticket-id",
                "6060",
                "--server-num",
                "1",
                "--ttl",
                "20h",
            ],
        );
        assert!(!r.ok, "{fault}: the daemon dies mid-answer: {r}");
        let mut dead = d.take_child().unwrap();
        assert!(!wait_with_patience(&mut dead).success(), "{fault}");
        let child = d.spawn();
        d.adopt(child);
        d.wait_for_log("start-up reconciliation done");
        let end = stored(&d);
        if stands {
            assert!(end > old_end + 10 * 3600, "{fault}: {end} vs {old_end}");
        } else {
            assert_eq!(end, old_end, "{fault}");
        }
        assert_eq!(
            expiry_in_file(&d, "6060"),
            Some(supportauth::clock::openssh_expiry(end)),
            "{fault}: the key line follows the store"
        );
        // The log tells the same end (an undone extension says so).
        let log = d.read("var/cpanel/logs/supportauth/audit.log");
        let replayed = supportauth::audit::active_grants(
            log.lines()
                .map(|l| supportauth::audit::record::open_line(l).unwrap()),
        );
        assert_eq!(replayed[&(6060, 1)].expires_at, Some(end), "{fault}");
        let r = run(&d, &["audit", "verify"]);
        assert!(r.ok, "{fault}: {r}");
    }
}
