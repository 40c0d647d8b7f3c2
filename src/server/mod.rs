//! Listeners for the control endpoint: the Unix socket and TCP (optionally
//! TLS), with our own accept loop so we control the connection budgets
//! (see [`budget`]), header and idle timeouts and graceful shutdown.

mod budget;
pub mod form;
mod http;
mod tls;
mod unix;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::auth::Peer;
use crate::app::App;
use crate::config::Config;

pub use budget::Slot;
pub use http::router;

use budget::{Budgets, SourceClaim};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("control socket {path}: {message}")]
    Socket { path: PathBuf, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS file {path}: {message}")]
    Tls { path: PathBuf, message: String },
}

/// Bound listeners, ready to serve.
pub struct Listeners {
    unix: UnixListener,
    socket_path: PathBuf,
    tcp: Vec<(TcpListener, Option<TlsAcceptor>)>,
}

impl Listeners {
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket_path
    }
    /// The bound TCP addresses (with the real port when 0 was configured).
    pub fn tcp_addrs(&self) -> Vec<(std::net::SocketAddr, bool)> {
        self.tcp
            .iter()
            .filter_map(|(l, tls)| l.local_addr().ok().map(|a| (a, tls.is_some())))
            .collect()
    }
}

/// Binds the Unix socket and every TCP listener of `cfg`.
pub fn bind(cfg: &Config) -> Result<Listeners, ServerError> {
    let socket_path = cfg.socket_path();
    let mode = cfg.socket_mode().map_err(|message| ServerError::Socket {
        path: socket_path.clone(),
        message,
    })?;
    let unix = unix::bind(&socket_path, mode, &cfg.listen.socket_group)?;
    let acceptor = match (&cfg.listen.tls_cert, &cfg.listen.tls_key) {
        (Some(c), Some(k)) => Some(tls::acceptor(&cfg.host_path(c), &cfg.host_path(k))?),
        _ => None,
    };
    let mut tcp = Vec::new();
    for addr in &cfg.listen.tcp {
        let std_l = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ServerError::Tcp {
                addr: *addr,
                source,
            })?;
        let l = TcpListener::from_std(std_l).map_err(|source| ServerError::Tcp {
            addr: *addr,
            source,
        })?;
        tcp.push((l, acceptor.clone()));
    }
    Ok(Listeners {
        unix,
        socket_path,
        tcp,
    })
}

/// What every connection task needs.
struct Shared {
    app: Arc<App>,
    router: axum::Router,
    budgets: Arc<Budgets>,
    shutdown: watch::Receiver<bool>,
}

/// Serves until `shutdown` turns true, then stops accepting, lets open
/// connections finish their current request (bounded by the request
/// timeout), waits for in-flight calls, and removes the socket.
pub async fn serve(app: Arc<App>, listeners: Listeners, shutdown: watch::Receiver<bool>) {
    let cfg = app.config();
    let shared = Arc::new(Shared {
        router: router(Arc::clone(&app)),
        app: Arc::clone(&app),
        budgets: Budgets::new(
            cfg.listen.max_connections,
            cfg.listen.max_connections_per_source,
        ),
        shutdown: shutdown.clone(),
    });
    let mut loops = tokio::task::JoinSet::new();
    {
        let app = Arc::clone(&app);
        let stop = shutdown.clone();
        loops.spawn(async move { http::summarise_failures(app, stop).await });
    }
    {
        let shared = Arc::clone(&shared);
        let l = listeners.unix;
        loops.spawn(async move {
            accept_loop(&shared, || async {
                let (s, _) = l.accept().await?;
                let peer = unix::peer(&s)?;
                Ok((Conn::Unix(s), peer))
            })
            .await
        });
    }
    for (l, tls) in listeners.tcp {
        let shared = Arc::clone(&shared);
        loops.spawn(async move {
            accept_loop(&shared, || async {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                let conn = match &tls {
                    Some(a) => Conn::Tls(s, a.clone()),
                    None => Conn::Tcp(s),
                };
                Ok((conn, Peer::Tcp { addr }))
            })
            .await
        });
    }
    while loops.join_next().await.is_some() {}

    let grace = Duration::from_secs(cfg.listen.request_timeout_secs);
    if tokio::time::timeout(grace, shared.budgets.drained())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {grace:?}; closing them");
    }
    if tokio::time::timeout(grace, app.inflight.write())
        .await
        .is_err()
    {
        tracing::warn!("some API calls were still running after {grace:?}");
    }
    unix::remove(&listeners.socket_path);
}

/// Resolves once shutdown was requested (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
    Tls(tokio::net::TcpStream, TlsAcceptor),
}

async fn accept_loop<F, Fut>(shared: &Arc<Shared>, mut accept: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(Conn, Peer)>>,
{
    let mut stop = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = accept() => a,
            _ = stopped(&mut stop) => return,
        };
        match accepted {
            Ok((conn, peer)) => {
                // A source over its share is turned away at once; the
                // others wait for a slot in their own task, so a full pool
                // never stops this loop (root's socket connections are
                // accepted by the same loop as other local users').
                let Some(claim) = shared.budgets.admit(&peer) else {
                    tracing::debug!(peer = %peer.describe(), "too many connections from this source");
                    tokio::spawn(turn_away(conn));
                    continue;
                };
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    let mut stop = shared.shutdown.clone();
                    let slot = tokio::select! {
                        s = shared.budgets.slot(&peer) => s,
                        _ = stopped(&mut stop) => None,
                    };
                    if let Some(slot) = slot {
                        handle(&shared, conn, peer, slot, claim).await;
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The answer to a connection over its source's share (plain HTTP only; a
/// TLS client just sees the connection close).
async fn turn_away(conn: Conn) {
    let body = http::busy_body();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    async fn write<S: AsyncWrite + Unpin>(mut s: S, answer: &[u8]) {
        let _ = s.write_all(answer).await;
        let _ = s.shutdown().await;
    }
    // Bounded: a client that does not read cannot keep this task.
    let limit = Duration::from_secs(1);
    let _ = match conn {
        Conn::Unix(s) => tokio::time::timeout(limit, write(s, answer.as_bytes())).await,
        Conn::Tcp(s) => tokio::time::timeout(limit, write(s, answer.as_bytes())).await,
        Conn::Tls(..) => return,
    };
}

async fn handle(
    shared: &Arc<Shared>,
    conn: Conn,
    peer: Peer,
    slot: Slot,
    claim: Option<SourceClaim>,
) {
    let header_timeout = Duration::from_secs(shared.app.config().listen.header_timeout_secs);
    match conn {
        Conn::Unix(s) => serve_io(shared, s, peer, &slot).await,
        Conn::Tcp(s) => serve_io(shared, s, peer, &slot).await,
        Conn::Tls(s, acceptor) => {
            match tokio::time::timeout(header_timeout, acceptor.accept(s)).await {
                Ok(Ok(tls)) => serve_io(shared, tls, peer, &slot).await,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer.describe(), error = %e, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %peer.describe(), "TLS handshake timed out"),
            }
        }
    }
    slot.release();
    drop(claim);
}

async fn serve_io<I>(shared: &Arc<Shared>, io: I, peer: Peer, slot: &Slot)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = shared.app.config();
    let router = shared.router.clone();
    let slot = slot.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer);
        req.extensions_mut().insert(slot.clone());
        router.clone().oneshot(req)
    });
    // hyper arms the header timeout as soon as it waits for a request, so
    // it is also the idle keep-alive timeout: an idle connection gives its
    // slot back after `header_timeout_secs`.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.listen.header_timeout_secs))
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut stop = shared.shutdown.clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer.describe(), error = %e, "connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer.describe(), error = %e, "connection ended with an error");
            }
        }
    }
}
