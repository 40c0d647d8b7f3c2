//! Shared helpers for the integration tests: start the real daemon binary
//! on a scratch root, and a tiny HTTP/1.1 client over the Unix socket and
//! TCP (`Connection: close`, so a response ends at EOF).

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_supportauth");

/// Upper bound for the daemon to come up or go down; not an assertion.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub stderr_path: PathBuf,
    child: Option<Child>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with("", "")
    }

    /// `listen_extra` goes into `[listen]`, `extra` at the end of the file.
    pub fn start_with(listen_extra: &str, extra: &str) -> Daemon {
        Daemon::start_with_setup(listen_extra, extra, |_| {})
    }

    /// Like [`start_with`](Self::start_with); `setup` prepares the scratch
    /// root before the daemon starts.
    pub fn start_with_setup(listen_extra: &str, extra: &str, setup: impl FnOnce(&Path)) -> Daemon {
        Daemon::start_configured(listen_extra, extra, |root| {
            setup(root);
            String::new()
        })
    }

    /// Like [`start_with_setup`](Self::start_with_setup), but `setup`
    /// returns more configuration text (it may depend on the root's path).
    pub fn start_configured(
        listen_extra: &str,
        extra: &str,
        setup: impl FnOnce(&Path) -> String,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let more = setup(&root);
        let extra = format!("{extra}\n{more}");
        let extra = extra.as_str();
        let port = free_port();
        let config = dir.path().join("config.toml");
        // Tests may bring their own [auth]; the default never slows them.
        let auth = if extra.contains("[auth]") {
            ""
        } else {
            "[auth]\nfailures_before_delay = 100000\n"
        };
        let text = format!(
            "root = \"{root}\"\n\
             [listen]\n\
             tcp = [\"127.0.0.1:{port}\"]\n\
             max_body_bytes = 4096\n\
             {listen_extra}\n\
             {auth}\
             [log]\n\
             level = \"debug\"\n\
             {extra}\n",
            root = root.display()
        );
        std::fs::write(&config, text).expect("write config");
        let socket = root.join("run/supportauth/supportauth.sock");
        let stderr_path = dir.path().join("daemon.stderr");
        let mut d = Daemon {
            config,
            socket,
            port,
            stderr_path,
            child: None,
            dir,
        };
        let child = d.spawn();
        d.child = Some(child);
        d.wait_ready();
        d
    }

    /// Starts another daemon process on this configuration.
    pub fn spawn(&self) -> Child {
        self.spawn_env(&[])
    }

    /// Like [`spawn`](Self::spawn) with extra environment variables (e.g.
    /// `SUPPORTAUTH_FAULT` for crash tests).
    pub fn spawn_env(&self, env: &[(&str, &str)]) -> Child {
        let err = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("stderr file");
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("daemon")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn the daemon")
    }

    /// Makes `child` the daemon under test and waits until it serves.
    pub fn adopt(&mut self, child: Child) {
        self.child = Some(child);
        self.wait_ready();
    }

    /// Hands the running daemon process to the caller (e.g. to kill it).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("daemon exited early ({status}):\n{}", self.stderr());
                }
            }
            if UnixStream::connect(&self.socket).is_ok()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            if start.elapsed() > PATIENCE {
                panic!("daemon did not become ready:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Waits (bounded) until the daemon's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            if start.elapsed() > PATIENCE {
                panic!("log never showed {needle:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("root/var/lib/supportauth/state.db")
    }

    pub fn unix(&self, raw: &[u8]) -> Response {
        let mut s = UnixStream::connect(&self.socket).expect("connect to the socket");
        s.set_read_timeout(Some(PATIENCE)).ok();
        exchange(&mut s, raw)
    }

    pub fn tcp(&self, raw: &[u8]) -> Response {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect over TCP");
        s.set_read_timeout(Some(PATIENCE)).ok();
        exchange(&mut s, raw)
    }

    /// The scratch root the daemon runs on.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A file under the scratch root ("" when missing).
    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.root().join(p)).unwrap_or_default()
    }

    /// Calls an API function as root over the socket; asserts HTTP 200 and
    /// returns the envelope.
    pub fn call(&self, function: &str, params: &[(&str, &str)]) -> Value {
        let q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let r = self.unix(&get(
            &format!("/json-api/{function}?api.version=1&{}", q.join("&")),
            None,
        ));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Creates a token as root over the socket; returns its value.
    pub fn create_token(&self, params: &str) -> String {
        let r = self.unix(&get(
            &format!("/json-api/api_token_create?api.version=1&{params}"),
            None,
        ));
        let v = r.json();
        assert_eq!(r.status, 200, "{v}");
        assert_eq!(v["metadata"]["result"], 1, "{v}");
        v["data"]["token"]
            .as_str()
            .expect("token in answer")
            .to_string()
    }

    /// Waits (bounded) for the daemon to exit by itself.
    pub fn stop_wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_with_patience(&mut child)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        wait_with_patience(&mut child)
    }
}

/// Sets a token's expiry in the past, directly in the database. Only the
/// daemon may write its store while it runs (it keeps the tokens in
/// memory), so it is stopped for the edit and started again.
pub fn expire_in_db(d: &mut Daemon, name: &str) {
    d.stop();
    let db = d.database();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let r = sqlx::query("UPDATE api_tokens SET expires_at = ? WHERE name = ?")
            .bind(1_000_i64)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(r.rows_affected(), 1);
        pool.close().await;
    });
    let child = d.spawn();
    d.adopt(child);
}

pub fn wait_with_patience(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("process did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): HTTP {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A GET request with `Connection: close` and an optional Authorization.
pub fn get(path: &str, auth: Option<&str>) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(a) = auth {
        r.push_str(&format!("Authorization: {a}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A form POST with `Connection: close`.
pub fn post(path: &str, auth: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        r.push_str(&format!("Authorization: {a}\r\n"));
    }
    r.push_str("\r\n");
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

pub fn exchange<S: Read + Write>(s: &mut S, raw: &[u8]) -> Response {
    // The server may answer (413) before reading everything; a failed write
    // is then fine as long as the answer can be read.
    let _ = s.write_all(raw);
    let _ = s.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => panic!("no answer: {e}"),
            Err(_) => break,
        }
    }
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Response {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[i + 2 + size + 2..];
    }
    out
}

/// The answer must be a refusal: given status, JSON, result 0, no `data`,
/// and never the token.
pub fn assert_refused(r: &Response, status: u16, token: &str) {
    let v = r.json();
    assert_eq!(r.status, status, "{v}");
    assert!(v.get("data").is_none(), "refusals carry no data: {v}");
    assert_eq!(v["metadata"]["result"], 0, "{v}");
    assert!(v["metadata"]["reason"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    if !token.is_empty() {
        assert!(!r.text().contains(token), "token echoed: {}", r.text());
    }
}

pub fn path_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

include!("scratch_root.rs");

/// [`populate_scratch_root`] plus the `[tools]`/`[access]`/`[firewall]`
/// config text that points the daemon at it.
pub fn scratch_root_config(root: &Path, sshd_body: &str) -> String {
    let wrapper = populate_scratch_root(root, sshd_body);
    format!(
        "[tools]\nsshd = \"{}\"\n[access]\nsupport_ips = [\"203.0.113.5\"]\nsshd_host = \"scratch.example\"\nsshd_lport = 22\n[firewall]\nbackends = [\"none\"]\n",
        wrapper.display()
    )
}

/// A fresh support key pair made by the real ssh-keygen; returns the
/// public key line.
pub fn support_key(dir: &Path) -> String {
    let key = dir.join("support_key");
    if !key.exists() {
        let st = Command::new("/usr/bin/ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "support@example"])
            .arg("-f")
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
