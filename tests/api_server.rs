//! The endpoint as a server: envelope shape, limits, slow clients, bad
//! requests, the state lock, clean shutdown.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use common::{assert_refused, get, post, Daemon};
use serde_json::json;

const LIST: &str = "/json-api/api_token_list?api.version=1";

#[test]
fn envelope_has_the_exact_shape() {
    let d = Daemon::start();
    let r = d.unix(&get(LIST, None));
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        r.json(),
        json!({"metadata":{"version":1,"command":"api_token_list","result":1,"reason":"OK"},
               "data":{"tokens":{}}})
    );

    let r = d.unix(&get("/json-api/no_such_fn?api.version=1", None));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"metadata":{"version":1,"command":"no_such_fn","result":0,
               "reason":"Unknown function “no_such_fn”."},"data":null})
    );

    // api.version is required and must be 1.
    for q in ["", "?api.version=0", "?api.version=2"] {
        let r = d.unix(&get(&format!("/json-api/api_token_list{q}"), None));
        let v = r.json();
        assert_eq!(
            (r.status, v["metadata"]["result"].clone()),
            (200, json!(0)),
            "{q}"
        );
        assert!(v["metadata"]["reason"]
            .as_str()
            .unwrap()
            .contains("api.version"));
    }

    // Other paths and methods: JSON errors.
    let r = d.unix(&get("/elsewhere", None));
    assert_refused(&r, 404, "");
    let r =
        d.unix(b"DELETE /json-api/api_token_list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_refused(&r, 405, "");
    // A bad percent-escape: 400.
    let r = d.unix(&get("/json-api/api_token_list?api.version=1&x=%zz", None));
    assert_refused(&r, 400, "");
}

#[test]
fn oversized_and_malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    let d = Daemon::start();
    let big = vec![b'a'; 8192];
    let mut body = b"x=".to_vec();
    body.extend_from_slice(&big);

    let r = d.unix(&post(LIST, None, &body));
    assert_refused(&r, 413, "");
    let r = d.tcp(&post(
        LIST,
        Some("whm root:ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
        &body,
    ));
    // Authentication comes first: an unauthenticated body is never read.
    assert_refused(&r, 401, "");

    // Chunked, without a Content-Length.
    let mut chunked = format!(
        "POST {LIST} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    chunked.extend_from_slice(&body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = d.unix(&chunked);
    assert_refused(&r, 413, "");

    // A body just under the cap is fine.
    let r = d.unix(&post(LIST, None, b"api.version=1"));
    assert_eq!(r.json()["metadata"]["result"], 1);

    // Garbage instead of HTTP: 400, and the daemon goes on.
    let r = d.unix(b"THIS IS NOT HTTP\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = d.tcp(b"GET /json-api/x HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n");
    assert_eq!(r.status, 400);
    // A JSON body is not a form.
    let r = d.unix(
        b"POST /json-api/api_token_list?api.version=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_refused(&r, 415, "");

    let r = d.unix(&get(LIST, None));
    assert_eq!(r.json()["metadata"]["result"], 1);
    let r = d.tcp(&get(LIST, None));
    assert_refused(&r, 401, "");
}

#[test]
fn slow_clients_do_not_stop_others() {
    let d = Daemon::start();
    // Several clients send half a request and hold their connections.
    let mut slow = Vec::new();
    let mut unix_slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        s.write_all(b"GET /json-api/api_token_list?api.version=1 HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        slow.push(s);
        let mut u = UnixStream::connect(&d.socket).unwrap();
        u.write_all(b"POST /json-api/api_token_list HTTP/1.1\r\nContent-Length: 100\r\n\r\nx=")
            .unwrap();
        unix_slow.push(u);
    }
    for _ in 0..5 {
        let r = d.unix(&get(LIST, None));
        assert_eq!(r.json()["metadata"]["result"], 1);
        let r = d.tcp(&get(LIST, None));
        assert_refused(&r, 401, "");
    }
    drop(slow);
    drop(unix_slow);
}

/// When slow clients hold every connection slot, the header timeout frees
/// the slots and the next client is served (it waits, it is not refused).
#[test]
fn slow_clients_filling_every_slot_are_timed_out() {
    let d = Daemon::start_with("max_connections = 1\nheader_timeout_secs = 1", "");
    let mut slow = Vec::new();
    let mut unix_slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        slow.push(s);
        let mut u = UnixStream::connect(&d.socket).unwrap();
        u.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        unix_slow.push(u);
    }
    let r = d.unix(&get(LIST, None));
    assert_eq!(r.json()["metadata"]["result"], 1);
    drop(slow);
    drop(unix_slow);
}

#[test]
fn second_daemon_on_the_same_state_refuses_to_start() {
    let mut d = Daemon::start();
    let mut second = d.spawn();
    let status = common::wait_with_patience(&mut second);
    assert!(!status.success(), "second daemon must fail");
    let log = d.stderr();
    assert!(log.contains("lock"), "message mentions the lock: {log}");
    // The first one still serves, and its socket was not taken over.
    let r = d.unix(&get(LIST, None));
    assert_eq!(r.json()["metadata"]["result"], 1);

    // SIGTERM: clean exit, socket removed.
    let status = d.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(!common::path_exists(&d.socket));
}

#[test]
fn refuses_to_replace_a_file_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let sock = root.join("run/supportauth/supportauth.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    std::fs::write(&sock, "precious").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "root = \"{}\"\n[listen]\ntcp = [\"127.0.0.1:{}\"]\n",
            root.display(),
            common::free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("daemon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");
}

#[test]
fn config_validate_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[listen]\ntcp = [\"192.0.2.1:2090\"]\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["config", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen.tcp"));
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "version = 1\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["config", "validate"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK"));
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_otherwise() {
    use nix::sys::signal::{kill, Signal};
    let d = Daemon::start();
    let original = std::fs::read_to_string(&d.config).unwrap();

    std::fs::write(
        &d.config,
        original.replace("level = \"debug\"", "level = \"info\""),
    )
    .unwrap();
    kill(d.pid(), Signal::SIGHUP).unwrap();
    d.wait_for_log("configuration reloaded (SIGHUP)");

    std::fs::write(&d.config, "version = 2\n").unwrap();
    kill(d.pid(), Signal::SIGHUP).unwrap();
    d.wait_for_log("configuration NOT reloaded");
    assert!(d.stderr().contains("`version`"));

    let r = d.unix(&get(LIST, None));
    assert_eq!(r.json()["metadata"]["result"], 1);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    use nix::sys::signal::{kill, Signal};
    use std::io::Read;
    let mut d = Daemon::start();
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(
        b"POST /json-api/api_token_list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\napi.ver",
    )
    .unwrap();
    // The request is being served (authenticated, body still arriving).
    d.wait_for_log("request authenticated");
    kill(d.pid(), Signal::SIGTERM).unwrap();
    d.wait_for_log("SIGTERM: shutting down");
    s.write_all(b"sion=1").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let r = common::parse_response(&buf);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["result"], 1, "{}", r.text());
    let status = d.stop_wait();
    assert!(status.success(), "{status}");
}
