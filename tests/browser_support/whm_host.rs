//! A stand-in for cpsrvd's CGI side, for the browser: plain HTTP on
//! 127.0.0.1 that runs the real `supportauth whm-cgi` per request under
//! `/cpsess<token>/cgi/supportauth/index.cgi`, with the CGI environment WHM
//! gives (REMOTE_USER of the signed-in administrator, PATH_INFO, ...), and
//! turns its `Status:` answer back into HTTP. Only what a CGI host does;
//! WHM's own sign-in is out of scope (REMOTE_USER is given).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const SCRIPT: &str = "/cpsess0123456789/cgi/supportauth/index.cgi";

pub struct WhmHost {
    pub port: u16,
}

impl WhmHost {
    /// Serves in a thread for the rest of the (sandboxed) test process.
    pub fn start(binary: PathBuf, config: &'static str) -> WhmHost {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the WHM stand-in");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let binary = binary.clone();
                std::thread::spawn(move || serve(s, &binary, config));
            }
        });
        WhmHost { port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{SCRIPT}", self.port)
    }
}

fn serve(s: TcpStream, binary: &PathBuf, config: &str) {
    let mut r = BufReader::new(s.try_clone().expect("clone stream"));
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (mut ctype, mut length) = (String::new(), 0usize);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => ctype = v.trim().to_string(),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let answer = match path.strip_prefix(SCRIPT) {
        Some(path_info) => run_cgi(binary, config, &method, path_info, query, &ctype, &body),
        None => b"Status: 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
    };
    let _ = write_http(s, &answer);
}

fn run_cgi(
    binary: &PathBuf,
    config: &str,
    method: &str,
    path_info: &str,
    query: &str,
    ctype: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut child = Command::new(binary)
        .args(["--config", config, "whm-cgi"])
        .env_clear()
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REMOTE_USER", "root")
        .env("REQUEST_METHOD", method)
        .env("SCRIPT_NAME", SCRIPT)
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", ctype)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run whm-cgi");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body);
    }
    child.wait_with_output().expect("whm-cgi output").stdout
}

/// `Status: 200 OK\r\n...` from the CGI becomes `HTTP/1.1 200 OK\r\n...`.
fn write_http(mut s: TcpStream, cgi: &[u8]) -> std::io::Result<()> {
    let split = cgi
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(cgi.len());
    let head = String::from_utf8_lossy(&cgi[..split]);
    let mut status = "502 Bad Gateway".to_string();
    let mut out = String::new();
    for h in head.split("\r\n") {
        match h.strip_prefix("Status:") {
            Some(st) => status = st.trim().to_string(),
            None if !h.is_empty() => out.push_str(&format!("{h}\r\n")),
            None => {}
        }
    }
    let body = cgi.get(split + 4..).unwrap_or_default();
    write!(s, "HTTP/1.1 {status}\r\n{out}Connection: close\r\n\r\n")?;
    s.write_all(body)
}
