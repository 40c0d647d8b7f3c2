//! A minimal HTTP/1.1 client for the control endpoint: the Unix socket by
//! default, or plain HTTP to a loopback TCP listener with a token.

use std::path::PathBuf;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, Clone)]
pub enum Target {
    /// The socket, and where its path came from (for the error's advice).
    Unix(PathBuf, SocketFrom),
    Tcp {
        host: String,
        port: u16,
    },
}

/// How the CLI found the socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketFrom {
    /// `--socket` or `SUPPORTAUTH_SOCKET`.
    Flag,
    /// `listen.socket` of this configuration file.
    Config(PathBuf),
    /// No configuration file: the built-in default.
    Defaults,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {source}\n{advice}")]
    Connect {
        target: String,
        source: std::io::Error,
        advice: String,
    },
    #[error(
        "bad --url {0:?}: expected http://HOST[:PORT] (HTTPS is for remote clients such as curl)"
    )]
    Url(String),
    #[error("HTTP error talking to the daemon: {0}")]
    Http(String),
    #[error("the daemon answered HTTP {status} with something that is not JSON: {body}")]
    NotJson { status: u16, body: String },
}

impl Target {
    /// Parses `http://host[:port][/]`; the port defaults to 2090.
    pub fn from_url(url: &str) -> Result<Target, ClientError> {
        let bad = || ClientError::Url(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 2090,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (authority.to_string(), 2090),
            }
        };
        Ok(Target::Tcp { host, port })
    }

    fn describe(&self) -> String {
        match self {
            Target::Unix(p, SocketFrom::Flag) => format!("{} (--socket)", p.display()),
            Target::Unix(p, SocketFrom::Config(c)) => {
                format!("{} (listen.socket of {})", p.display(), c.display())
            }
            Target::Unix(p, SocketFrom::Defaults) => {
                format!("{} (built-in default: no configuration file)", p.display())
            }
            Target::Tcp { host, port } => format!("{host}:{port}"),
        }
    }

    /// What to do when the connection fails: start the daemon, or point
    /// the CLI at the one that runs (a trial's, say) and how.
    fn advice(&self, e: &std::io::Error) -> String {
        let start = "Is the daemon running? `systemctl status supportauth`, or start it with \
                     `supportauth [--config PATH] daemon`.";
        let elsewhere = "A daemon started with another configuration (a trial, say) is \
                         reached with --config PATH or SUPPORTAUTH_CONFIG=PATH (or \
                         --socket PATH / SUPPORTAUTH_SOCKET=PATH).";
        match (self, e.kind()) {
            (Target::Tcp { .. }, _) => {
                format!("Is the daemon running and listening there (listen.tcp)? {start}")
            }
            (Target::Unix(..), std::io::ErrorKind::PermissionDenied) => format!(
                "The socket is for root and listen.socket_group: run as root (sudo), or \
                 use --url http://127.0.0.1:2090 with SUPPORTAUTH_TOKEN. {elsewhere}"
            ),
            (Target::Unix(..), _) => format!("{start} {elsewhere}"),
        }
    }
}

/// Form-encodes pairs (everything but unreserved characters escaped).
pub fn encode_form(pairs: &[(String, String)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

/// POSTs `function` with `params` (form body, api.version=1 in the query)
/// and returns the HTTP status and the JSON answer.
pub async fn call(
    target: &Target,
    token: Option<&str>,
    function: &str,
    params: &[(String, String)],
) -> Result<(u16, Value), ClientError> {
    let connect_err = |source: std::io::Error| ClientError::Connect {
        target: target.describe(),
        advice: target.advice(&source),
        source,
    };
    match target {
        Target::Unix(p, _) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(connect_err)?;
            exchange(s, "localhost", token, function, params).await
        }
        Target::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_err)?;
            exchange(s, host, token, function, params).await
        }
    }
}

async fn exchange<S>(
    stream: S,
    host: &str,
    token: Option<&str>,
    function: &str,
    params: &[(String, String)],
) -> Result<(u16, Value), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: &dyn std::fmt::Display| ClientError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::post(format!("/json-api/{function}?api.version=1"))
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::CONNECTION, "close");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("whm root:{t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(encode_form(params))))
        .map_err(|e| http(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    driver.abort();
    serde_json::from_slice::<Value>(&body)
        .map(|v| (status, v))
        .map_err(|_| ClientError::NotJson {
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(matches!(
            Target::from_url("http://127.0.0.1:2091"),
            Ok(Target::Tcp { port: 2091, .. })
        ));
        assert!(matches!(
            Target::from_url("http://localhost/"),
            Ok(Target::Tcp { port: 2090, .. })
        ));
        assert!(matches!(
            Target::from_url("http://[::1]:5"),
            Ok(Target::Tcp { port: 5, .. })
        ));
        assert!(Target::from_url("https://x").is_err());
        assert!(Target::from_url("http://u@x").is_err());
    }

    #[test]
    fn connection_errors_name_the_fix() {
        let t = Target::Unix(
            PathBuf::from("/tmp/t/run/supportauth/supportauth.sock"),
            SocketFrom::Defaults,
        );
        let e = ClientError::Connect {
            target: t.describe(),
            advice: t.advice(&std::io::Error::from(std::io::ErrorKind::NotFound)),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
        .to_string();
        assert!(e.contains("built-in default"), "{e}");
        assert!(e.contains("SUPPORTAUTH_CONFIG=PATH"), "{e}");
        assert!(e.contains("--config PATH"), "{e}");
        let denied = t.advice(&std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(denied.contains("SUPPORTAUTH_TOKEN"), "{denied}");
    }

    #[test]
    fn form_encoding() {
        let s = encode_form(&[("a b".into(), "x&y=z/\u{201c}".into())]);
        assert_eq!(s, "a%20b=x%26y%3Dz%2F%E2%80%9C");
    }
}
