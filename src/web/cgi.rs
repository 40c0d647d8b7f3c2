//! `supportauth whm-cgi`: the page inside WHM. cpsrvd authenticates the
//! WHM user (and checks the AppConfig's `acls`), runs this CGI as root
//! with the request in the environment and on stdin, and sends what it
//! prints. The CGI forwards the request to the daemon's Unix socket, where
//! its uid 0 makes it root (SO_PEERCRED), so no token is involved, and
//! relays the answer.
//!
//! Only the page's files and `/json-api/<function>` are forwarded, taken
//! from `PATH_INFO` (`.../index.cgi/json-api/ticket_list`); the bare
//! `index.cgi` redirects to `index.cgi/` so the page's relative URLs land
//! on the CGI. WHM frames its plugins, so the daemon's
//! `frame-ancestors 'none'` becomes `'self'` (WHM's own origin) here.
//! Cross-site requests cannot reach the CGI: WHM's URLs carry the
//! session's `cpsess` token.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::types::printable;

/// Largest request body forwarded (the daemon applies its own, smaller cap).
const MAX_BODY: usize = 1024 * 1024;
/// Largest answer relayed (a long audit listing fits easily).
const MAX_ANSWER: usize = 32 * 1024 * 1024;
/// An SSH test may wait for the portal for 150 s.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// What WHM hands a CGI, read from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgiEnv {
    pub remote_user: String,
    pub method: String,
    pub path_info: String,
    pub query: String,
    pub content_type: String,
    pub content_length: String,
    pub script_name: String,
}

impl CgiEnv {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> CgiEnv {
        let var = |k: &str| get(k).unwrap_or_default();
        CgiEnv {
            remote_user: var("REMOTE_USER"),
            method: var("REQUEST_METHOD"),
            path_info: var("PATH_INFO"),
            query: var("QUERY_STRING"),
            content_type: var("CONTENT_TYPE"),
            content_length: var("CONTENT_LENGTH"),
            script_name: var("SCRIPT_NAME"),
        }
    }
}

/// The CGI's decision before anything is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Forward `method path?query` with a body of `body_len` bytes.
    Forward {
        method: String,
        target: String,
        content_type: String,
        body_len: usize,
    },
    /// Answer directly: CGI status, extra headers, body.
    Answer(CgiAnswer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiAnswer {
    pub status: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CgiAnswer {
    fn text(status: &'static str, body: &str) -> CgiAnswer {
        CgiAnswer {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: format!("{body}\n").into_bytes(),
        }
    }

    /// The CGI response: `Status:`, headers, blank line, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("Status: {}\r\n", self.status);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn is_function_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Decides what to do with the request WHM passed (pure).
pub fn plan(env: &CgiEnv) -> Plan {
    if env.remote_user.trim().is_empty() {
        return Plan::Answer(CgiAnswer::text(
            "403 Forbidden",
            "No REMOTE_USER: this CGI runs only inside WHM, which signs the administrator in.",
        ));
    }
    let method = env.method.to_ascii_uppercase();
    if method != "GET" && method != "POST" {
        let mut a = CgiAnswer::text("405 Method Not Allowed", "Only GET and POST are supported.");
        a.headers.push(("Allow".into(), "GET, POST".into()));
        return Plan::Answer(a);
    }
    let path = env.path_info.as_str();
    if path.is_empty() {
        // The page's relative URLs need the trailing slash.
        let script = env
            .script_name
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("index.cgi");
        let mut a = CgiAnswer::text("302 Found", "The page is at index.cgi/.");
        a.headers.push(("Location".into(), format!("{script}/")));
        return Plan::Answer(a);
    }
    let allowed = crate::web::is_asset(path)
        || path
            .strip_prefix("/json-api/")
            .is_some_and(is_function_name);
    if !allowed {
        return Plan::Answer(CgiAnswer::text(
            "404 Not Found",
            &format!("No such page: {}.", printable(path)),
        ));
    }
    let body_len = match env.content_length.trim() {
        "" => 0,
        n => match n.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            Ok(_) => {
                return Plan::Answer(CgiAnswer::text(
                    "413 Content Too Large",
                    &format!("The request body is larger than {MAX_BODY} bytes."),
                ))
            }
            Err(_) => {
                return Plan::Answer(CgiAnswer::text(
                    "400 Bad Request",
                    "CONTENT_LENGTH is not a number.",
                ))
            }
        },
    };
    if env.query.bytes().any(|b| b.is_ascii_control() || b == b' ')
        || env.content_type.bytes().any(|b| b.is_ascii_control())
    {
        return Plan::Answer(CgiAnswer::text(
            "400 Bad Request",
            "Control characters in the request.",
        ));
    }
    let target = if env.query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", env.query)
    };
    Plan::Forward {
        method,
        target,
        content_type: env.content_type.clone(),
        body_len,
    }
}

/// The HTTP/1.1 request sent to the daemon. No Authorization header: the
/// CGI is root by its uid on the socket.
pub fn request_bytes(method: &str, target: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if method == "POST" {
        let ctype = if content_type.is_empty() {
            "application/x-www-form-urlencoded"
        } else {
            content_type
        };
        head.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Headers relayed from the daemon to WHM (the rest are hop-by-hop, or
/// set by the CGI itself).
const RELAYED: &[&str] = &[
    "content-type",
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "cache-control",
    "cross-origin-resource-policy",
    "allow",
];

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "200 OK",
        400 => "400 Bad Request",
        401 => "401 Unauthorized",
        403 => "403 Forbidden",
        404 => "404 Not Found",
        405 => "405 Method Not Allowed",
        408 => "408 Request Timeout",
        413 => "413 Content Too Large",
        415 => "415 Unsupported Media Type",
        500 => "500 Internal Server Error",
        503 => "503 Service Unavailable",
        _ => "502 Bad Gateway",
    }
}

fn decode_chunked(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Turns the daemon's HTTP answer into the CGI answer (pure).
pub fn relay(http: &[u8]) -> Result<CgiAnswer, String> {
    let split = http
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the daemon's answer has no header end")?;
    let head = std::str::from_utf8(&http[..split]).map_err(|_| "non-UTF-8 headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", printable(status_line)))?;
    let mut headers = Vec::new();
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
        if name == "content-security-policy" {
            headers.push((
                "Content-Security-Policy".to_string(),
                value.replace("frame-ancestors 'none'", "frame-ancestors 'self'"),
            ));
        } else if RELAYED.contains(&name.as_str()) {
            headers.push((name, value.to_string()));
        }
    }
    if headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-security-policy"))
    {
        headers.push(("X-Frame-Options".into(), "SAMEORIGIN".into()));
    }
    let raw_body = &http[split + 4..];
    let body = if chunked {
        decode_chunked(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Ok(CgiAnswer {
        status: reason_phrase(code),
        headers,
        body,
    })
}

fn exchange(socket: &Path, request: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to the supportauth daemon at {}: {e} (is it running? systemctl start supportauth)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(ANSWER_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    s.write_all(request)
        .map_err(|e| format!("cannot send the request to the daemon: {e}"))?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER as u64 + 1)
        .read_to_end(&mut answer)
        .map_err(|e| format!("cannot read the daemon's answer: {e}"))?;
    if answer.len() > MAX_ANSWER {
        return Err(format!(
            "the daemon's answer is larger than {MAX_ANSWER} bytes"
        ));
    }
    Ok(answer)
}

fn serve(config: Option<&Path>, env: &CgiEnv, stdin: &mut dyn Read) -> CgiAnswer {
    let (method, target, content_type, body_len) = match plan(env) {
        Plan::Answer(a) => return a,
        Plan::Forward {
            method,
            target,
            content_type,
            body_len,
        } => (method, target, content_type, body_len),
    };
    let mut body = Vec::with_capacity(body_len);
    if let Err(e) = stdin.take(body_len as u64).read_to_end(&mut body) {
        return CgiAnswer::text(
            "400 Bad Request",
            &format!("Cannot read the request body: {e}."),
        );
    }
    let cfg = match crate::config::Config::load(config) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            return CgiAnswer::text(
                "500 Internal Server Error",
                &format!("supportauth's configuration cannot be loaded: {e}"),
            )
        }
    };
    let request = request_bytes(&method, &target, &content_type, &body);
    match exchange(&cfg.socket_path(), &request).and_then(|a| relay(&a)) {
        Ok(a) => a,
        Err(e) => CgiAnswer::text("502 Bad Gateway", &e),
    }
}

/// `supportauth whm-cgi`: one CGI request from the environment and stdin.
pub fn main(config: Option<&Path>) -> ExitCode {
    let env = CgiEnv::from_env(|k| std::env::var(k).ok());
    let answer = serve(config, &env, &mut std::io::stdin().lock());
    let mut out = std::io::stdout().lock();
    match out.write_all(&answer.to_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(user: &str, method: &str, path: &str) -> CgiEnv {
        CgiEnv {
            remote_user: user.into(),
            method: method.into(),
            path_info: path.into(),
            query: "api.version=1".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            content_length: "7".into(),
            script_name: "/cpsess123/cgi/supportauth/index.cgi".into(),
        }
    }

    fn status(p: Plan) -> &'static str {
        match p {
            Plan::Answer(a) => a.status,
            Plan::Forward { .. } => "forward",
        }
    }

    #[test]
    fn plans_only_what_whm_authenticated_and_the_page_needs() {
        assert_eq!(
            plan(&env("root", "POST", "/json-api/ticket_list")),
            Plan::Forward {
                method: "POST".into(),
                target: "/json-api/ticket_list?api.version=1".into(),
                content_type: "application/x-www-form-urlencoded".into(),
                body_len: 7,
            }
        );
        for (user, method, path, want) in [
            ("root", "GET", "/", "forward"),
            ("root", "GET", "/assets/app.js", "forward"),
            ("", "GET", "/", "403 Forbidden"),
            ("root", "PUT", "/", "405 Method Not Allowed"),
            ("root", "GET", "/etc/passwd", "404 Not Found"),
            ("root", "GET", "/json-api/../x", "404 Not Found"),
            ("root", "GET", "/assets/../../x", "404 Not Found"),
        ] {
            assert_eq!(
                status(plan(&env(user, method, path))),
                want,
                "{method} {path}"
            );
        }
        let Plan::Answer(a) = plan(&env("root", "GET", "")) else {
            panic!("bare index.cgi must redirect")
        };
        assert_eq!(a.status, "302 Found");
        assert!(a
            .headers
            .contains(&("Location".into(), "index.cgi/".into())));
        let mut big = env("root", "POST", "/json-api/ticket_grant");
        big.content_length = (MAX_BODY + 1).to_string();
        assert_eq!(status(plan(&big)), "413 Content Too Large");
        big.content_length = "x".into();
        assert_eq!(status(plan(&big)), "400 Bad Request");
        let mut smuggle = env("root", "GET", "/json-api/ticket_list");
        smuggle.query = "a=1 HTTP/1.1\r\nX: y".into();
        assert_eq!(status(plan(&smuggle)), "400 Bad Request");
    }

    #[test]
    fn request_has_no_credentials_and_a_length() {
        let r = request_bytes("POST", "/json-api/ticket_list?api.version=1", "", b"a=1");
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("POST /json-api/ticket_list?api.version=1 HTTP/1.1\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.contains("Content-Type: application/x-www-form-urlencoded\r\n"));
        assert!(!text.to_ascii_lowercase().contains("authorization"));
        assert!(text.ends_with("\r\n\r\na=1"));
    }

    #[test]
    fn relays_status_headers_and_chunked_bodies() {
        let http = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\n\
content-security-policy: default-src 'self'; frame-ancestors 'none'\r\n\
transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let a = relay(http).unwrap();
        assert_eq!(a.status, "200 OK");
        assert_eq!(a.body, b"abcde");
        assert!(a
            .headers
            .iter()
            .any(|(n, v)| n == "Content-Security-Policy" && v.ends_with("frame-ancestors 'self'")));
        assert!(!a.headers.iter().any(|(n, _)| n == "connection"));
        let out = String::from_utf8(a.to_bytes()).unwrap();
        assert!(out.starts_with("Status: 200 OK\r\n"));
        assert!(out.contains("Content-Length: 5\r\n\r\nabcde"));
        assert!(relay(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(relay(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\nab").is_err());
    }
}
