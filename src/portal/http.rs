//! One HTTP/1.1 exchange with the portal over hyper, TLS by rustls (ring).
//! Every step is bounded: connect time, answer time, answer size.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::url::BaseUrl;
use super::wire::PortalError;

/// System CA bundles tried when `portal.ca_file` is empty.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
];

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A request body and its content type.
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct HttpClient {
    pub base: BaseUrl,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_body: usize,
    /// Built on first use: reading the CA bundle is not start-up work.
    tls: Option<Arc<std::sync::OnceLock<Result<TlsConnector, String>>>>,
    ca_file: String,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn tls_connector(ca_file: &str) -> Result<TlsConnector, String> {
    let path = if ca_file.is_empty() {
        SYSTEM_BUNDLES
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
            .map(|p| p.to_string())
            .ok_or_else(|| {
                "no system CA bundle found; set portal.ca_file (notify.ca_file for webhooks) to a PEM bundle".to_string()
            })?
    } else {
        ca_file.to_string()
    };
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{path}: {e}"))?;
        // A bundle may carry certificates rustls cannot use; skip those.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{path} holds no usable CA certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl HttpClient {
    pub fn new(base: BaseUrl, cfg: &crate::config::PortalConfig, ca_file: &str) -> HttpClient {
        HttpClient::for_url(
            base,
            Duration::from_secs(cfg.connect_timeout_secs),
            Duration::from_secs(cfg.read_timeout_secs),
            cfg.max_body_bytes,
            ca_file,
        )
    }

    /// A client for any https URL (loopback http allowed by [`BaseUrl`]),
    /// e.g. a notification webhook, with its own bounds.
    pub fn for_url(
        base: BaseUrl,
        connect_timeout: Duration,
        read_timeout: Duration,
        max_body: usize,
        ca_file: &str,
    ) -> HttpClient {
        let tls = base.tls.then(|| Arc::new(std::sync::OnceLock::new()));
        HttpClient {
            ca_file: ca_file.to_string(),
            base,
            connect_timeout,
            read_timeout,
            max_body,
            tls,
        }
    }

    fn where_(&self) -> String {
        format!("{}:{}", self.base.host, self.base.port)
    }

    async fn connect(&self) -> Result<TcpStream, PortalError> {
        let addr = (self.base.host.as_str(), self.base.port);
        let secs = self.connect_timeout.as_secs();
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => Err(PortalError::Timeout(secs)),
            Ok(Err(e)) => Err(PortalError::Connect(format!("{} ({e})", self.where_()))),
            Ok(Ok(s)) => Ok(s),
        }
    }

    /// Sends one request to `call` (a path under the base URL). The bearer
    /// token goes into a header only; nothing here logs it.
    pub async fn send(
        &self,
        method: &str,
        call: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> Result<Reply, PortalError> {
        let auth = bearer.map(|t| ("authorization", format!("Bearer {t}")));
        self.send_with_headers(method, call, auth.as_slice(), body)
            .await
    }

    /// Like [`Self::send`], with extra request headers (a webhook's
    /// signature and delivery id).
    pub async fn send_with_headers(
        &self,
        method: &str,
        call: &str,
        headers: &[(&'static str, String)],
        body: Option<Body>,
    ) -> Result<Reply, PortalError> {
        let tcp = self.connect().await?;
        let tls = self
            .tls
            .as_ref()
            .map(|cell| cell.get_or_init(|| tls_connector(&self.ca_file)));
        match tls {
            None => self.exchange(tcp, method, call, headers, body).await,
            Some(Err(e)) => Err(PortalError::Connect(format!(
                "{} (TLS: {e})",
                self.where_()
            ))),
            Some(Ok(tls)) => {
                let name = rustls::pki_types::ServerName::try_from(self.base.host.clone())
                    .map_err(|e| PortalError::Connect(format!("{} ({e})", self.where_())))?;
                let stream = match tokio::time::timeout(
                    self.connect_timeout,
                    tls.connect(name, tcp),
                )
                .await
                {
                    Err(_) => return Err(PortalError::Timeout(self.connect_timeout.as_secs())),
                    Ok(Err(e)) => {
                        return Err(PortalError::Connect(format!(
                            "{} (TLS handshake: {e})",
                            self.where_()
                        )))
                    }
                    Ok(Ok(s)) => s,
                };
                self.exchange(stream, method, call, headers, body).await
            }
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        method: &str,
        call: &str,
        headers: &[(&'static str, String)],
        body: Option<Body>,
    ) -> Result<Reply, PortalError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(self.base.target(call))
            .header("host", self.base.authority())
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("supportauth/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", b.content_type);
                b.bytes
            }
            None => Vec::new(),
        };
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| PortalError::Malformed(format!("cannot build the request: {e}")))?;
        let max = self.max_body;
        let where_ = self.where_();
        let work = async move {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| PortalError::Connect(format!("{where_} ({e})")))?;
            let conn = tokio::spawn(conn);
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| PortalError::Connect(format!("{where_} ({e})")))?;
            let status = res.status().as_u16();
            let declared = res
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|n| n > max) {
                conn.abort();
                return Err(PortalError::TooLarge(max));
            }
            let body = Limited::new(res.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        PortalError::TooLarge(max)
                    } else {
                        PortalError::Connect(format!("{where_} (reading the answer: {e})"))
                    }
                })?
                .to_bytes()
                .to_vec();
            conn.abort();
            Ok(Reply { status, body })
        };
        match tokio::time::timeout(self.read_timeout, work).await {
            Err(_) => Err(PortalError::Timeout(self.read_timeout.as_secs())),
            Ok(r) => r,
        }
    }
}
