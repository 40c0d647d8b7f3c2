//! TLS for TCP listeners (rustls, certificates from PEM files).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::server::ServerError;

pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerError> {
    let err = |path: &Path, message: String| ServerError::Tls {
        path: path.to_path_buf(),
        message,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| err(cert, e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(err(cert, "contains no certificate".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| err(key, e.to_string()))?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| err(key, format!("not a PEM private key: {e}")))?
        .ok_or_else(|| err(key, "contains no private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            err(
                cert,
                format!("certificate and key do not form a usable pair: {e}"),
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
