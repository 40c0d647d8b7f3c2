//! Notifications through the real daemon on a scratch root (real grants
//! and revokes: useradd --prefix, sshd -T): a webhook receiver on loopback
//! (a small tokio/hyper server in this test) checks every signature with
//! its own HMAC-SHA256 (constant-time compare); mail goes to the program
//! named by `notify.mail.sendmail_path`, here a script that keeps each
//! message it reads. The receiver is down for a while and the daemon
//! restarts meanwhile: every event still arrives once, in order.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "s3cret-for-the-test-receiver-0123";

/// Upper bound for deliveries to arrive; not an assertion of speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    event: String,
    seq: u64,
    body: Value,
    /// The signature header matched the body under the secret.
    signed: bool,
}

/// The test's webhook receiver, listening on 127.0.0.1:`port` until dropped.
struct Receiver {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn signature_ok(body: &[u8], header: Option<&str>) -> bool {
    let Some(sig) = header
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig).is_ok()
}

impl Receiver {
    fn start(port: u16, got: Arc<Mutex<Vec<Delivery>>>) -> Receiver {
        Receiver::start_with(port, got, None)
    }

    /// Over TLS when `tls` is given.
    fn start_with(
        port: u16,
        got: Arc<Mutex<Vec<Delivery>>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Receiver {
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind the receiver's port");
                ready_tx.send(()).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        a = listener.accept() => a.unwrap(),
                        _ = &mut stop_rx => return,
                    };
                    let got = Arc::clone(&got);
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            None => {
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = http.serve_connection(io, service(got)).await;
                            }
                            Some(tls) => {
                                let Ok(stream) = tls.accept(stream).await else {
                                    return;
                                };
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = http.serve_connection(io, service(got)).await;
                            }
                        }
                    });
                }
            });
        });
        ready_rx
            .recv_timeout(PATIENCE)
            .expect("the receiver starts");
        Receiver {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

type Reply = Result<hyper::Response<http_body_util::Full<hyper::body::Bytes>>, hyper::Error>;

/// Records each request; 200 when its signature is right, else 401.
fn service(
    got: Arc<Mutex<Vec<Delivery>>>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<http_body_util::Full<hyper::body::Bytes>>,
    Error = hyper::Error,
    Future = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>,
> {
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let got = Arc::clone(&got);
        Box::pin(async move {
            use http_body_util::BodyExt;
            let header = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let sig = header("x-supportauth-signature");
            let id = header("x-supportauth-delivery").unwrap_or_default();
            let event = header("x-supportauth-event").unwrap_or_default();
            let ok_path =
                req.method() == hyper::Method::POST && req.uri().path() == "/hooks/supportauth";
            let bytes = req.into_body().collect().await?.to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let signed = ok_path && signature_ok(&bytes, sig.as_deref());
            got.lock().unwrap().push(Delivery {
                id,
                event,
                seq: body["seq"].as_u64().unwrap_or(0),
                body,
                signed,
            });
            let status = if signed { 200 } else { 401 };
            Ok(hyper::Response::builder()
                .status(status)
                .body(http_body_util::Full::new(hyper::body::Bytes::new()))
                .unwrap())
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>
    })
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The scratch root's secret file (root's, 0600) and the recording
/// sendmail; returns the `[notify]` configuration text.
fn notify_setup(root: &Path, port: u16, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("etc/supportauth");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outside = root.parent().unwrap();
    let mails = outside.join("mail");
    std::fs::create_dir_all(&mails).unwrap();
    let sendmail = outside.join("sendmail-recorder");
    std::fs::write(
        &sendmail,
        format!(
            // Whole messages only: written aside, then renamed into place.
            "#!/bin/sh\n[ \"$*\" = \"-t -oi\" ] || exit 64\nf=$(mktemp {m}/.part.XXXXXX) || exit 75\ncat > \"$f\" && mv \"$f\" {m}/msg.\"${{f##*.}}\"\n",
            m = mails.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "[notify]\nretry_initial_ms = 100\nretry_max_ms = 400\n{extra}\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{port}/hooks/supportauth\"\n\
         secret_file = \"/etc/supportauth/webhook.secret\"\n\
         [notify.mail]\nto = [\"ops@example.com\"]\nfrom = \"supportauth@scratch.example\"\n\
         sendmail_path = \"{}\"\n",
        sendmail.display()
    )
}

/// (event, seq) of each mail the recorder kept, in seq order.
fn mails(d: &Daemon) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(d.dir.path().join("mail")) else {
        return out;
    };
    for e in dir {
        let path = e.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("msg.")
        {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let event = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Supportauth-Event: "))
            .unwrap_or_default()
            .to_string();
        let seq = text
            .lines()
            .find_map(|l| l.strip_prefix("audit seq "))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.push((event, seq));
    }
    out.sort_by_key(|m| m.1);
    out
}

/// (event, seq) of the audit records notified by default, in log order.
fn notable_records(d: &Daemon) -> Vec<(String, u64)> {
    let notable = ["grant", "revoke", "expire", "revoke_all", "revoke_closed"];
    d.read("var/cpanel/logs/supportauth/audit.log")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| notable.contains(&r["event"].as_str().unwrap()))
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_string(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ok(v: &Value) -> &Value {
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    &v["data"]
}

fn webhook_status(d: &Daemon) -> Value {
    let v = d.call("notify_status", &[]);
    ok(&v)["receivers"][0].clone()
}

fn cli(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&d.config)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn key(dir: &Path, name: &str) -> String {
    let sub: PathBuf = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    support_key(&sub)
}

#[test]
fn every_event_arrives_signed_once_and_in_order_across_an_outage_and_a_restart() {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED notify: {why}");
        return;
    }
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let receiver = Receiver::start(port, Arc::clone(&got));
    let mut d = Daemon::start_configured("", "", |root| {
        let notify = notify_setup(root, port, "max_attempts = 1000");
        format!(
            "{}\n{notify}",
            scratch_root_config(root, "PermitRootLogin prohibit-password")
        )
    });
    let (k1, k2) = (key(d.dir.path(), "k1"), key(d.dir.path(), "k2"));
    let grant = |d: &Daemon, ticket: &str, key: &str| {
        ok(&d.call(
            "ticket_grant",
            &[
                ("ticket_id", ticket),
                ("server_num", "1"),
                ("ssh_key", key),
                ("ttl", "3600"),
            ],
        ));
    };
    let revoke = |d: &Daemon, ticket: &str| {
        ok(&d.call(
            "ticket_revoke",
            &[
                ("ticket_id", ticket),
                ("server_num", "1"),
                ("ssh_username", "root"),
            ],
        ));
    };

    // Up: the grant arrives, signed, with the record.
    grant(&d, "1001", &k1);
    wait_until("the first delivery", || got.lock().unwrap().len() == 1);
    {
        let first = got.lock().unwrap()[0].clone();
        assert!(first.signed, "{first:?}");
        assert_eq!(first.event, "grant");
        assert_eq!(first.body["record"]["ticket_id"], 1001);
        assert_eq!(first.body["record"]["ssh_username"], "root");
        assert_eq!(first.id, first.body["record"]["hash"].as_str().unwrap());
    }

    // Down: events wait, the status says why.
    drop(receiver);
    grant(&d, "1002", &k2);
    revoke(&d, "1001");
    wait_until("a failed attempt in notify_status", || {
        let s = webhook_status(&d);
        s["pending"] == 2 && s["last_error"].is_string() && s["next_attempt_at"].is_i64()
    });
    let s = webhook_status(&d);
    assert_eq!(
        s["receiver"],
        format!("webhook:http://127.0.0.1:{port}/hooks/supportauth")
    );
    assert_eq!(s["delivered"], 1);
    assert!(s["last_success_at"].is_i64(), "{s}");
    assert!(
        s["last_error"].as_str().unwrap().contains("cannot connect"),
        "{s}"
    );
    let text = cli(&d, &["notify", "status"]);
    assert!(
        text.contains("PENDING") && text.contains("/hooks/supportauth"),
        "{text}"
    );
    assert!(text.contains("last error at"), "{text}");

    // A restart while the receiver is still down, and one more event.
    d.stop();
    let child = d.spawn();
    d.adopt(child);
    revoke(&d, "1002");
    wait_until("three pending after the restart", || {
        webhook_status(&d)["pending"] == 3
    });
    // And a crash (SIGKILL) while they wait: nothing is lost either. (Not
    // while a mail is being handed over: a crash then sends it twice,
    // with the same Message-ID.)
    wait_until("mail caught up", || {
        let v = d.call("notify_status", &[]);
        ok(&v)["receivers"][1]["pending"] == 0
    });
    let mut crashed = d.take_child().unwrap();
    crashed.kill().unwrap();
    crashed.wait().unwrap();
    let child = d.spawn();
    d.adopt(child);
    assert_eq!(webhook_status(&d)["pending"], 3);

    // Up again: everything arrives, in order, once.
    let receiver = Receiver::start(port, Arc::clone(&got));
    wait_until("every delivery", || got.lock().unwrap().len() >= 4);
    wait_until("every mail", || mails(&d).len() >= 4);
    // Room for a duplicate to show up, were one to be sent.
    std::thread::sleep(Duration::from_secs(1));
    let deliveries = got.lock().unwrap().clone();
    assert!(deliveries.iter().all(|x| x.signed), "{deliveries:?}");
    let sent: Vec<(String, u64)> = deliveries
        .iter()
        .map(|x| (x.event.clone(), x.seq))
        .collect();
    let expected = notable_records(&d);
    assert_eq!(sent, expected, "deliveries vs the audit log");
    assert_eq!(
        expected.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["grant", "grant", "revoke", "revoke"]
    );
    let ids: BTreeSet<&str> = deliveries.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(ids.len(), deliveries.len(), "delivery ids are unique");
    assert_eq!(mails(&d), expected, "mails vs the audit log");
    wait_until("nothing pending", || webhook_status(&d)["pending"] == 0);
    let s = webhook_status(&d);
    // Delivered counts this daemon's deliveries since the row was made: all four.
    assert_eq!(s["delivered"], 4, "{s}");
    let v = d.call("notify_status", &[]);
    assert_eq!(ok(&v)["receivers"][1]["receiver"], "mail");
    assert_eq!(ok(&v)["receivers"][1]["pending"], 0);
    drop(receiver);
    d.stop();
}

#[test]
fn a_delivery_that_keeps_failing_is_given_up_and_audited() {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED notify: {why}");
        return;
    }
    // Nobody listens on this port.
    let port = free_port();
    let mut d = Daemon::start_configured("", "", |root| {
        let notify = notify_setup(root, port, "max_attempts = 3");
        format!(
            "{}\n{notify}",
            scratch_root_config(root, "PermitRootLogin prohibit-password")
        )
    });
    let k = key(d.dir.path(), "k");
    ok(&d.call(
        "ticket_grant",
        &[("ticket_id", "2001"), ("server_num", "1"), ("ssh_key", &k)],
    ));
    let failed = || {
        d.read("var/cpanel/logs/supportauth/audit.log")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["event"] == "notify_failed")
    };
    wait_until("notify_failed in the audit log", || failed().is_some());
    let rec = failed().unwrap();
    assert_eq!(rec["outcome"], "failed");
    let details = &rec["details"];
    assert_eq!(details["event"], "grant");
    assert_eq!(details["attempts"], 3);
    assert!(details["receiver"]
        .as_str()
        .unwrap()
        .starts_with("webhook:"));
    // The cursor moves past it just after the record is written.
    wait_until("given up in notify_status", || {
        webhook_status(&d)["given_up"] == 1
    });
    assert_eq!(webhook_status(&d)["pending"], 0);
    // Mail works and hears of the webhook's failure; the webhook does not
    // queue news of its own outage.
    wait_until("the mails", || {
        mails(&d).iter().any(|m| m.0 == "notify_failed")
    });
    let m: Vec<String> = mails(&d).into_iter().map(|m| m.0).collect();
    assert_eq!(m, ["grant", "notify_failed"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(webhook_status(&d)["pending"], 0);
    d.stop();
}

#[test]
fn beyond_max_pending_the_oldest_are_dropped_and_audited() {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED notify: {why}");
        return;
    }
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let mut d = Daemon::start_configured("", "", |root| {
        let notify = notify_setup(root, port, "max_attempts = 1000\nmax_pending = 2");
        format!(
            "{}\n{notify}",
            scratch_root_config(root, "PermitRootLogin prohibit-password")
        )
    });
    let (k1, k2) = (key(d.dir.path(), "k1"), key(d.dir.path(), "k2"));
    // The receiver is down for four events.
    for (ticket, k) in [("3001", &k1), ("3002", &k2)] {
        ok(&d.call(
            "ticket_grant",
            &[("ticket_id", ticket), ("server_num", "1"), ("ssh_key", k)],
        ));
    }
    for ticket in ["3001", "3002"] {
        ok(&d.call(
            "ticket_revoke",
            &[
                ("ticket_id", ticket),
                ("server_num", "1"),
                ("ssh_username", "root"),
            ],
        ));
    }
    let dropped = || -> u64 {
        d.read("var/cpanel/logs/supportauth/audit.log")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| {
                r["event"] == "notify_dropped"
                    && r["details"]["receiver"]
                        .as_str()
                        .is_some_and(|x| x.starts_with("webhook:"))
            })
            .map(|r| r["details"]["count"].as_u64().unwrap())
            .sum()
    };
    wait_until("two dropped", || dropped() == 2);
    let receiver = Receiver::start(port, Arc::clone(&got));
    wait_until("the newest two", || got.lock().unwrap().len() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    let sent: Vec<(String, u64)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|x| (x.event.clone(), x.seq))
        .collect();
    let notable = notable_records(&d);
    assert_eq!(sent, notable[2..], "the two newest, in order");
    assert_eq!(dropped(), 2);
    // Mail was up all along: it got all four, and news of the drop.
    wait_until("the mails", || mails(&d).len() >= 5);
    let (drops, access): (Vec<_>, Vec<_>) =
        mails(&d).into_iter().partition(|m| m.0 == "notify_dropped");
    assert_eq!(access, notable);
    assert!(!drops.is_empty());
    drop(receiver);
    d.stop();
}

fn openssl(args: &[&str], dir: &Path) -> bool {
    matches!(
        Command::new("openssl").args(args).current_dir(dir).output(),
        Ok(o) if o.status.success()
    )
}

/// A throw-away CA (ca.pem) and a certificate for 127.0.0.1 signed by it
/// (cert.pem, key.pem), as in tests/portal_tls.rs.
fn make_cert(dir: &Path) -> bool {
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let ca = format!("req -x509 {ec} -days 2 -subj /CN=testCA -keyout ca.key -out ca.pem");
    let csr = format!("req -new {ec} -subj /CN=hooks.test -keyout key.pem -out leaf.csr");
    let sign = "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out cert.pem";
    [ca.as_str(), csr.as_str(), sign]
        .iter()
        .all(|a| openssl(&a.split(' ').collect::<Vec<_>>(), dir))
}

fn acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let certs = rustls_pemfile::certs(&mut std::fs::read(dir.join("cert.pem")).unwrap().as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls_pemfile::private_key(&mut std::fs::read(dir.join("key.pem")).unwrap().as_slice())
            .unwrap()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[test]
fn over_https_with_the_configured_ca() {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED notify: {why}");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    if !make_cert(certs.path()) {
        supportauth::test_skip!("SKIPPED notify https: openssl cannot make a test certificate");
        return;
    }
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let receiver = Receiver::start_with(port, Arc::clone(&got), Some(acceptor(certs.path())));
    let ca = certs.path().join("ca.pem");
    let mut d = Daemon::start_configured("", "", |root| {
        let notify = notify_setup(root, port, &format!("ca_file = \"{}\"", ca.display()))
            .replace("http://127.0.0.1", "https://127.0.0.1");
        format!(
            "{}\n{notify}",
            scratch_root_config(root, "PermitRootLogin prohibit-password")
        )
    });
    let k = key(d.dir.path(), "k");
    ok(&d.call(
        "ticket_grant",
        &[("ticket_id", "4001"), ("server_num", "1"), ("ssh_key", &k)],
    ));
    wait_until("the https delivery", || got.lock().unwrap().len() == 1);
    let first = got.lock().unwrap()[0].clone();
    assert!(first.signed, "{first:?}");
    assert_eq!(
        (
            first.event.as_str(),
            first.body["record"]["ticket_id"].as_u64()
        ),
        ("grant", Some(4001))
    );
    assert!(webhook_status(&d)["receiver"]
        .as_str()
        .unwrap()
        .starts_with("webhook:https://"));
    drop(receiver);
    d.stop();
}

#[test]
fn config_validate_refuses_a_secret_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"/\"\n[[notify.webhook]]\nurl = \"https://hooks.example.com/x\"\nsecret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let validate = || {
        Command::new(BIN)
            .args(["config", "validate"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = validate();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("mode 0600") && err.contains("webhook.secret"),
        "{err}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = validate();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if nix::unistd::geteuid().is_root() {
        assert!(out.status.success(), "{text}");
        assert!(text.starts_with("OK"), "{text}");
    } else {
        assert!(text.contains("owned by root"), "{text}");
    }
}

#[test]
fn a_receiver_that_cannot_start_does_not_stop_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let port = free_port();
    let mut d = Daemon::start_configured("", "", |root| {
        let notify = notify_setup(root, port, "");
        let secret = root.join("etc/supportauth/webhook.secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        notify
    });
    let v = d.call("notify_status", &[]);
    let list = &ok(&v)["receivers"];
    let hook = &list[0];
    assert!(
        hook["last_error"]
            .as_str()
            .unwrap()
            .starts_with("not started: ")
            && hook["last_error"].as_str().unwrap().contains("mode 0600"),
        "{hook}"
    );
    assert_eq!(list[1]["receiver"], "mail");
    assert!(list[1]["last_error"].is_null(), "{}", list[1]);
    d.stop();
}

#[test]
fn events_waiting_in_rotated_and_compressed_files_still_arrive() {
    const LOGROTATE: &str = "/usr/sbin/logrotate";
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED notify: {why}");
        return;
    }
    if !Path::new(LOGROTATE).exists() {
        supportauth::test_skip!("SKIPPED notify logrotate: {LOGROTATE} is not installed");
        return;
    }
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let mut d = Daemon::start_configured("", "", |root| {
        let notify = notify_setup(root, port, "max_attempts = 1000");
        format!(
            "{}\n{notify}",
            scratch_root_config(root, "PermitRootLogin prohibit-password")
        )
    });
    // The shipped policy (compress, delaycompress, create), on this log.
    let log = d.root().join("var/cpanel/logs/supportauth/audit.log");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/supportauth.logrotate"),
    )
    .unwrap();
    let conf = d.dir.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        shipped.replace(
            "/var/cpanel/logs/supportauth/audit.log",
            log.to_str().unwrap(),
        ),
    )
    .unwrap();
    let rotate = || {
        let out = Command::new(LOGROTATE)
            .arg("-f")
            .arg("-s")
            .arg(d.dir.path().join("logrotate.state"))
            .arg(&conf)
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let (k1, k2) = (key(d.dir.path(), "k1"), key(d.dir.path(), "k2"));
    // The receiver is down throughout: each event ends up in another file.
    let grant = |t: &str, k: &str| {
        ok(&d.call(
            "ticket_grant",
            &[("ticket_id", t), ("server_num", "1"), ("ssh_key", k)],
        ));
    };
    grant("5001", &k1);
    rotate();
    grant("5002", &k2);
    rotate();
    ok(&d.call(
        "ticket_revoke",
        &[
            ("ticket_id", "5001"),
            ("server_num", "1"),
            ("ssh_username", "root"),
        ],
    ));
    let dir = log.parent().unwrap();
    assert!(dir.join("audit.log.2.gz").exists() && dir.join("audit.log.1").exists());
    wait_until("three pending", || webhook_status(&d)["pending"] == 3);
    let receiver = Receiver::start(port, Arc::clone(&got));
    wait_until("three deliveries", || got.lock().unwrap().len() >= 3);
    std::thread::sleep(Duration::from_millis(500));
    let sent: Vec<(String, u64)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|x| (x.event.clone(), x.seq))
        .collect();
    let ticket: Vec<u64> = got
        .lock()
        .unwrap()
        .iter()
        .map(|x| x.body["record"]["ticket_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ticket, [5001, 5002, 5001]);
    assert_eq!(
        sent.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["grant", "grant", "revoke"]
    );
    assert!(sent.windows(2).all(|w| w[0].1 < w[1].1), "{sent:?}");
    drop(receiver);
    d.stop();
}
