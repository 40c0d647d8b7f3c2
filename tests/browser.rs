//! The web page (issue 17) in a real headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` from tests/browser_js) against
//! the real daemon, real sshd and the stub portal, all inside the e2e
//! namespace sandbox (tests/e2e). The browser works in phases; between
//! them this test checks the host: the key is there after a grant from
//! the page and gone after its revoke.
//!
//! Missing chromium, node or `npm ci --prefix tests/browser_js` prints
//! `SKIPPED browser: <why>`; under SUPPORTAUTH_TESTS_MUST_RUN that fails.
//! `SUPPORTAUTH_SCREENSHOTS=<dir>` also writes the README's screenshots.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod e2e {
    pub mod cmd;
    pub mod daemon;
    pub mod host_guard;
    pub mod outer;
    pub mod sandbox;
    pub mod scene;
    pub mod sshd;
}
mod portal_stub;
mod browser_support {
    pub mod whm_host;
}

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::daemon::CONFIG;
use e2e::outer;
use e2e::sandbox::Sandbox;
use e2e::scene::{key_files, Scene, SceneSetup};
use portal_stub::Stub;

const NODE: &[&str] = &["/usr/bin/node", "/usr/local/bin/node"];
const CHROMIUM: &[&str] = &["/usr/bin/chromium"];
const SCREENSHOTS_ENV: &str = "SUPPORTAUTH_SCREENSHOTS";

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser_js")
}

/// Why the browser cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    if e2e::cmd::find_tool(NODE).is_none() {
        return Some("node is not installed (apt-get install nodejs)".into());
    }
    if e2e::cmd::find_tool(CHROMIUM).is_none() {
        return Some("chromium is not installed (apt-get install chromium chromium-driver)".into());
    }
    if !script_dir().join("node_modules/playwright-core").is_dir() {
        return Some("playwright-core is not installed (npm ci --prefix tests/browser_js)".into());
    }
    None
}

/// The outer half: skip loudly without a browser, else the sandbox run.
fn run(name: &str, body: fn(&Sandbox)) {
    if std::env::var_os(outer::INNER_ENV).is_none() {
        if let Some(why) = browser_missing() {
            let _ =
                std::io::stderr().write_all(format!("SKIPPED browser: {name}: {why}\n").as_bytes());
            assert!(
                std::env::var_os(outer::MUST_RUN_ENV).is_none(),
                "{} is set, but the browser test cannot run: {why}",
                outer::MUST_RUN_ENV
            );
            return;
        }
    }
    outer::run(name, body);
}

#[test]
fn browser_page_end_to_end() {
    run("browser_page_end_to_end", page_end_to_end);
}

#[test]
fn browser_inside_whm() {
    run("browser_inside_whm", inside_whm);
}

#[test]
fn browser_temporary_user_password() {
    run("browser_temporary_user_password", temporary_user_password);
}

struct Rig {
    scene: Scene,
    stub: Stub,
    base_url: String,
    token: String,
}

impl Rig {
    /// Runs one phase of tests/browser_js/page_test.mjs; it must pass.
    /// Returns what it printed.
    fn phase(&self, phase: &str) -> String {
        self.phase_with(phase, &[])
    }

    /// [`Rig::phase`] with more environment for the script.
    fn phase_with(&self, phase: &str, env: &[(&str, String)]) -> String {
        let mut c = Command::new(e2e::cmd::tool(NODE));
        c.arg(script_dir().join("page_test.mjs"))
            .arg(phase)
            .current_dir(script_dir())
            .env("BASE_URL", &self.base_url)
            .env("SA_USER", "root")
            .env("SA_TOKEN", &self.token)
            .env("SUPPORT_KEY", &self.scene.support.public_line)
            .env("PORTAL_ORIGIN", format!("http://{}", self.stub.addr))
            .env("HOME", "/root")
            .envs(env.iter().map(|(k, v)| (k, v)));
        match std::env::var_os(SCREENSHOTS_ENV) {
            // Relative to the package (node runs in tests/browser_js).
            Some(dir) => c.env(
                "SCREENSHOTS",
                Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            ),
            None => c.env_remove("SCREENSHOTS"),
        };
        let out = c.output().expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "browser phase {phase} failed ({}):\n{stdout}\n{stderr}\ndaemon log:\n{}",
            out.status,
            self.scene.daemon.log()
        );
        stdout.into_owned()
    }

    fn grant_api(&self, ticket: u64) {
        self.scene.grant(ticket, &[]);
    }
}

/// A port nobody in the sandbox listens on.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The scene's daemon (sshd with `PermitRootLogin permit_root_login`),
/// restarted with a TCP listener and the stub portal.
fn rig(sb: &Sandbox, permit_root_login: &str) -> Rig {
    // nftables in the sandbox's own network namespace: the page shows a
    // real backend's whitelist.
    let mut scene = Scene::new(
        sb,
        &SceneSetup {
            firewall: "nftables",
            ..SceneSetup::root_login(permit_root_login)
        },
    );
    let stub = Stub::start(&scene.support.public_line);
    let port = free_port();
    let text = std::fs::read_to_string(CONFIG).expect("read the daemon config");
    let text = text.replacen("tcp = []", &format!("tcp = [\"127.0.0.1:{port}\"]"), 1)
        + &format!(
            "[portal]\nbase_url = \"{}\"\npoll_interval_secs = 0\nread_timeout_secs = 5\n\
             test_poll_fast_ms = 50\ntest_fast_phase_ms = 200\ntest_poll_slow_ms = 100\n\
             test_give_up_ms = 5000\npreflight_timeout_secs = 10\n",
            stub.base_url()
        );
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    std::fs::write(CONFIG, &text).expect("write the daemon config");
    if let Err(e) = supportauth::config::Config::parse(&text, Path::new(CONFIG)) {
        panic!("invalid browser-test config: {e}\n{text}");
    }
    scene.daemon.kill9();
    scene.daemon.restart();
    let made = scene.daemon.call_ok(
        "api_token_create",
        &[("token_name", "browser"), ("acl-0", "all")],
    );
    let token = made["token"].as_str().expect("token").to_string();
    Rig {
        scene,
        stub,
        base_url: format!("http://127.0.0.1:{port}/"),
        token,
    }
}

/// `GET path` on the TCP listener: (status line, lower-cased headers, body).
fn http_get(base: &str, path: &str) -> (String, Vec<(String, String)>, String) {
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect to the daemon");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// The page and its files carry the strict policy and hardening headers;
/// nothing of the page needs a token, everything of the API does.
fn check_headers(rig: &Rig) {
    for (path, ctype) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/oauth2-callback", "text/html; charset=utf-8"),
    ] {
        let (status, h, body) = http_get(&rig.base_url, path);
        assert!(status.contains(" 200 "), "{path}: {status}");
        assert_eq!(header(&h, "content-type"), ctype, "{path}");
        let csp = header(&h, "content-security-policy");
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: CSP {csp:?} lacks {part}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains("http")
        );
        assert_eq!(header(&h, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&h, "referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header(&h, "x-frame-options"), "DENY", "{path}");
        assert!(!body.is_empty());
    }
    let (status, _, body) = http_get(&rig.base_url, "/json-api/ticket_list?api.version=1");
    assert!(
        status.contains(" 401 "),
        "the API still needs a token: {status} {body}"
    );
    let (status, _, _) = http_get(&rig.base_url, "/assets/nope.js");
    assert!(status.contains(" 404 "), "{status}");
}

fn ticket_keys(ticket: u64) -> Vec<PathBuf> {
    let mark = format!("{ticket}_server_");
    key_files()
        .into_iter()
        .filter(|f| {
            f.file_name().is_some_and(|n| n == "authorized_keys")
                && std::fs::read_to_string(f).is_ok_and(|t| t.contains(&mark))
        })
        .collect()
}

fn page_end_to_end(sb: &Sandbox) {
    let rig = rig(sb, "prohibit-password");
    check_headers(&rig);

    rig.phase("signin");

    rig.phase("grant");
    assert_eq!(
        ticket_keys(4242),
        vec![PathBuf::from("/root/.ssh/authorized_keys")],
        "the grant from the page put the key in root's authorized_keys"
    );
    rig.phase("test_revoke");
    rig.scene.assert_no_trace(4242);

    rig.grant_api(4301);
    rig.grant_api(4302);
    rig.phase("killswitch");
    rig.scene.assert_no_trace(4301);
    rig.scene.assert_no_trace(4302);

    let port = rig.scene.sshd.port;
    for t in [5001, 5002, 5003] {
        rig.stub.add_ticket(t, 1, "127.0.0.1", port);
    }
    rig.phase("portal_connect");
    assert_eq!(rig.stub.received("GET /oauth2/authorize").len(), 1);
    for t in [5001, 5002, 5003] {
        assert_eq!(ticket_keys(t).len(), 1, "ticket {t}'s key is installed");
    }
    rig.stub.with(|s| {
        for t in [5002, 5003] {
            if let Some(ticket) = s.tickets.get_mut(&t) {
                ticket.open = false;
            }
        }
    });
    rig.phase("portal_closed");
    rig.stub
        .with(|s| s.open_mode = portal_stub::Mode::Status(503));
    rig.phase("portal_unreachable");
    rig.scene.assert_no_trace(5002);
    rig.scene.assert_no_trace(5003);
    assert_eq!(ticket_keys(5001).len(), 1, "the open ticket keeps its key");
    rig.scene.revoke(5001, "root");
    rig.scene.assert_no_trace(5001);
    rig.scene.assert_admin_intact();
    e2e::scene::assert_no_firewall_trace();
    e2e::daemon::assert_audit_verifies();
}

/// The password the page showed is the temporary user's real one: with it
/// support becomes root through sudo.
fn temporary_user_password(sb: &Sandbox) {
    let rig = rig(sb, "no");
    let out = rig.phase("temp_password");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("PASSWORD "))
        .expect("the phase prints the password it saw")
        .trim()
        .to_string();
    e2e::scene::assert_temp_user_becomes_root(&rig.scene, "cp4400.ssh", &password);
    rig.scene.revoke(4400, "cp4400.ssh");
    rig.scene.assert_no_trace(4400);
    rig.scene.assert_admin_intact();
}

/// The page inside WHM: served by `whm-cgi` behind a CGI host like
/// cpsrvd's, signed in by WHM (no token), acting as root on the socket.
fn inside_whm(sb: &Sandbox) {
    let rig = rig(sb, "prohibit-password");
    let host = browser_support::whm_host::WhmHost::start(e2e::daemon::binary(), CONFIG);
    rig.grant_api(4500);
    rig.phase_with("whm", &[("WHM_URL", host.url())]);
    rig.scene.assert_no_trace(4500);
    let audit = std::fs::read_to_string("/var/cpanel/logs/supportauth/audit.log")
        .expect("read the audit log");
    let revoked = audit
        .lines()
        .find(|l| l.contains("\"event\":\"revoke\"") && l.contains("\"ticket_id\":4500"))
        .expect("the revoke from WHM is audited");
    assert!(revoked.contains("\"actor\":\"uid:0\""), "{revoked}");
    rig.scene.assert_admin_intact();
}
