//! Issue 20: `GET /metrics` after real grants, revokes and failed logins,
//! parsed strictly as OpenMetrics text, with the counts right; and who may
//! scrape (root on the socket, a `metrics-read` token over TCP).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::e2e::daemon::CONFIG;
use crate::e2e::sandbox::Sandbox;
use crate::e2e::scene::*;

const SOCKET: &str = "/run/supportauth/supportauth.sock";
const BAD_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// One HTTP/1.1 GET with `Connection: close`: (status, body).
fn get(mut stream: impl Read + Write, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: whm root:{t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

fn over_socket(path: &str, token: Option<&str>) -> (u16, String) {
    let s = UnixStream::connect(SOCKET).expect("connect to the daemon's socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    get(s, path, token)
}

fn over_tcp(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the TCP listener");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    get(s, path, token)
}

/// A series: metric name and its labels in the order written.
type Series = (String, Vec<(String, String)>);

/// A strict parser of the OpenMetrics text format as far as a scrape of
/// counters, gauges and histograms uses it: every line is a `# HELP`,
/// `# TYPE`, `# UNIT` or a sample of a declared family, values are
/// numbers, no series twice, and the text ends with `# EOF`.
fn parse(text: &str) -> BTreeMap<Series, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let rest = parts.next().unwrap_or("");
            assert!(!name.is_empty(), "bad line {line:?}");
            match kind {
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "stateset",
                            "unknown"
                        ]
                        .contains(&rest),
                        "bad type in {line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), rest.to_string()).is_none(),
                        "family {name} declared twice"
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let labels = inner
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
                        assert!(!v.contains('"') && !v.contains('\\'), "{line:?}");
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(&name);
        assert!(
            types.contains_key(family),
            "sample {name} of an undeclared family:\n{text}"
        );
        assert!(
            samples.insert((name.clone(), labels), value).is_none(),
            "series twice: {line:?}"
        );
    }
    samples
}

fn value(m: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    );
    *m.get(&key)
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in {:#?}", m.keys()))
}

pub fn scrape_after_grants_revokes_and_failed_logins(sb: &Sandbox) {
    let mut scene = Scene::new(
        sb,
        &SceneSetup {
            reconcile_secs: 1,
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    // A TCP listener too (loopback, tokens): restart the daemon with it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let conf = std::fs::read_to_string(CONFIG).expect("read config");
    assert!(conf.contains("tcp = []"), "{conf}");
    std::fs::write(
        CONFIG,
        conf.replace("tcp = []", &format!("tcp = [\"127.0.0.1:{port}\"]")),
    )
    .expect("write config");
    scene.daemon.kill9();
    scene.daemon.restart();

    let token = |name: &str, acl: &str| {
        let data = scene
            .daemon
            .call_ok("api_token_create", &[("token_name", name), ("acl-0", acl)]);
        data["token"].as_str().expect("token value").to_string()
    };
    let scraper = token("scraper", "metrics-read");
    let lister = token("lister", "tickets-list");

    scene.grant(301, &[]);
    scene.grant(302, &[]);
    scene.revoke(301, "root");
    // Refused before touching the host: not a key.
    let refused = scene
        .daemon
        .try_call(
            "ticket_grant",
            &[
                ("ticket_id", "303"),
                ("server_num", "1"),
                ("ssh_key", "not a key"),
            ],
        )
        .expect("an answer");
    assert_eq!(crate::e2e::daemon::result(&refused), 0, "{refused}");
    // Three failed logins over TCP, one over the socket.
    for _ in 0..3 {
        let (status, _) = over_tcp(port, "/json-api/ticket_list?api.version=1", Some(BAD_TOKEN));
        assert_eq!(status, 401);
    }
    assert_eq!(
        over_socket("/json-api/ticket_list?api.version=1", Some(BAD_TOKEN)).0,
        401
    );

    let (status, body) = over_tcp(port, "/metrics", Some(&scraper));
    assert_eq!(status, 200, "{body}");
    eprintln!("scrape:\n{body}");
    let m = parse(&body);
    let v = |name: &str, labels: &[(&str, &str)]| value(&m, name, labels);
    assert_eq!(v("supportauth_grants_total", &[("outcome", "ok")]), 2.0);
    assert_eq!(
        v(
            "supportauth_revokes_total",
            &[("reason", "revoke"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(v("supportauth_active_grants", &[("kind", "root")]), 1.0);
    assert_eq!(
        v("supportauth_active_grants", &[("kind", "temporary")]),
        0.0
    );
    assert_eq!(v("supportauth_auth_failures_total", &[]), 4.0);
    assert_eq!(
        v("supportauth_audit_records_total", &[("event", "grant")]),
        2.0
    );
    assert_eq!(
        v("supportauth_audit_records_total", &[("event", "revoke")]),
        1.0
    );
    // A source's first failure gets a record of its own (loopback over
    // TCP, uid 0 on the socket); the others go into the window's summary.
    assert_eq!(
        v(
            "supportauth_audit_records_total",
            &[("event", "auth_failure")]
        ),
        2.0
    );
    assert_eq!(
        v(
            "supportauth_api_calls_total",
            &[("function", "ticket_grant"), ("result", "1")]
        ),
        2.0
    );
    assert_eq!(
        v(
            "supportauth_api_calls_total",
            &[("function", "ticket_grant"), ("result", "0")]
        ),
        1.0
    );
    assert_eq!(v("supportauth_audit_verify_ok", &[]), 1.0);
    assert_eq!(v("supportauth_portal_connected", &[]), 0.0);
    let oldest = v("supportauth_oldest_active_grant_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(oldest > now - 600.0 && oldest <= now, "{oldest} vs {now}");
    for outcome in ["ok", "failed"] {
        assert_eq!(
            v(
                "supportauth_reconcile_repairs_total",
                &[("outcome", outcome)]
            ),
            0.0
        );
    }
    // sshd -T ran for each grant (at least once each).
    assert!(
        v(
            "supportauth_tool_duration_seconds_count",
            &[("tool", "sshd")]
        ) >= 2.0
    );
    let sshd_sum = v("supportauth_tool_duration_seconds_sum", &[("tool", "sshd")]);
    assert!(sshd_sum > 0.0, "{sshd_sum}");

    // Who may scrape: not a token without metrics-read (403), not without
    // a token over TCP (401, counted); root over the socket may.
    assert_eq!(over_tcp(port, "/metrics", Some(&lister)).0, 403);
    assert_eq!(over_tcp(port, "/metrics", None).0, 401);
    let (status, body) = over_socket("/metrics", None);
    assert_eq!(status, 200, "{body}");
    let m = parse(&body);
    assert_eq!(value(&m, "supportauth_auth_failures_total", &[]), 5.0);

    // A grant whose time runs out: the daemon's own expiry, counted.
    scene.grant(305, &[("ttl", "2".into())]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = parse(&over_socket("/metrics", None).1);
        if value(&m, "supportauth_expiries_total", &[("outcome", "ok")]) >= 1.0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no expiry counted in 60s\n{}",
            scene.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        value(&m, "supportauth_expiries_total", &[("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        value(&m, "supportauth_grants_total", &[("outcome", "ok")]),
        3.0
    );
    assert_eq!(
        value(&m, "supportauth_active_grants", &[("kind", "root")]),
        1.0
    );

    // Someone removes grant 302's key: the reconciler ends the grant (it
    // never puts a key back) and counts the repair.
    let keys = std::fs::read_to_string(ROOT_KEYS).expect("root keys");
    let without: String = keys
        .split_inclusive('\n')
        .filter(|l| !l.contains("302_server_"))
        .collect();
    assert_ne!(keys, without, "no key of 302:\n{keys}");
    std::fs::write(ROOT_KEYS, without).expect("remove the key");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = parse(&over_socket("/metrics", None).1);
        if value(
            &m,
            "supportauth_reconcile_repairs_total",
            &[("outcome", "ok")],
        ) >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no repair counted in 60s\n{}",
            scene.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        scene
            .listed(302)
            .iter()
            .all(|(_, status)| status != "AUTHED"),
        "{:?}",
        scene.listed(302)
    );

    // An edited audit log shows as a failed verification at the next
    // verification (the API's, which updates the gauge).
    let cfg = supportauth::config::Config::load(Some(std::path::Path::new(CONFIG)))
        .expect("config")
        .0;
    let log = cfg.audit_log_path();
    let text = std::fs::read_to_string(&log).expect("read audit log");
    std::fs::write(&log, text.replacen("302", "309", 1)).expect("edit audit log");
    let verified = scene.daemon.call_ok("audit_log_verify", &[]);
    assert_eq!(verified["ok"], 0, "{verified}");
    let m = parse(&over_socket("/metrics", None).1);
    assert_eq!(value(&m, "supportauth_audit_verify_ok", &[]), 0.0);
    assert_eq!(
        value(&m, "supportauth_active_grants", &[("kind", "root")]),
        0.0
    );
    assert_eq!(
        value(&m, "supportauth_oldest_active_grant_timestamp_seconds", &[]),
        0.0
    );
}
