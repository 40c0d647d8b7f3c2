//! The portal client over https for real: a local TLS server with a
//! certificate made by openssl, trusted through `portal.ca_file`; the same
//! server refused when the client trusts only the system roots.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use supportauth::config::PortalConfig;
use supportauth::portal::http::HttpClient;
use supportauth::portal::url::BaseUrl;
use supportauth::portal::wire::PortalError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

fn openssl(args: &[&str], dir: &Path) -> bool {
    matches!(
        Command::new("openssl").args(args).current_dir(dir).output(),
        Ok(o) if o.status.success()
    )
}

/// A throw-away CA (ca.pem) and a server certificate for 127.0.0.1 signed
/// by it (cert.pem, key.pem): webpki refuses a CA certificate as the
/// server's own.
fn make_cert(dir: &Path) -> bool {
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    let mut csr = vec!["req", "-new"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-subj",
        "/CN=portal.test",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&ca, dir)
        && openssl(&csr, dir)
        && openssl(
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                "cert.pem",
            ],
            dir,
        )
}

/// Serves one canned JSON answer per connection, over TLS.
async fn tls_server(dir: &Path) -> u16 {
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
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = br#"[{"ip": "203.0.113.9"}]"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_with_the_configured_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    if !make_cert(dir.path()) {
        supportauth::test_skip!("SKIPPED portal_tls: openssl cannot make a test certificate");
        return;
    }
    let port = tls_server(dir.path()).await;
    let base = BaseUrl::parse(&format!("https://127.0.0.1:{port}/api")).unwrap();
    let ca = dir.path().join("ca.pem").display().to_string();
    let client = HttpClient::new(base.clone(), &PortalConfig::default(), &ca);
    let r = client
        .send("GET", "/support/access_ips", Some("t"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("203.0.113.9"));

    // Only the system roots: the self-made certificate is not trusted.
    let client = HttpClient::new(base, &PortalConfig::default(), "");
    match client
        .send("GET", "/support/access_ips", Some("t"), None)
        .await
    {
        Err(PortalError::Connect(m)) => assert!(m.contains("TLS"), "{m}"),
        other => panic!("an untrusted certificate was accepted: {other:?}"),
    }
}
