//! Daemon lifecycle: configuration, logging, the state lock, listeners,
//! systemd readiness and watchdog, SIGHUP reload, graceful SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::app::App;
use crate::audit::{events, AuditError, AuditEvent, AuditLog, Outcome};
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError, ConfigSource, DEFAULT_CONFIG_PATH};
use crate::engine::{Engine, Host, Policy};
use crate::firewall::Whitelist;
use crate::server::{self, ServerError};
use crate::store::{self, DaemonLock, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Server(#[from] ServerError),
    #[error("{0} (the daemon does not run without its audit log)")]
    Audit(#[from] AuditError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot set up logging: {0}")]
    Logging(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// `supportauth daemon`: runs in the foreground until SIGTERM/SIGINT.
pub fn run(config_path: Option<&Path>) -> ExitCode {
    let (cfg, source) = match Config::load(config_path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("supportauth: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logging = match init_logging(&cfg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("supportauth: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &source {
        ConfigSource::File(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        ConfigSource::BuiltInDefaults => tracing::warn!(
            "no configuration file at {DEFAULT_CONFIG_PATH}; running on the built-in defaults"
        ),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&logging, &DaemonError::Runtime(e)),
    };
    let path = config_path.map(Path::to_path_buf);
    match runtime.block_on(run_async(cfg, source, path)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fatal(&logging, &e),
    }
}

fn fatal(logging: &Logging, e: &DaemonError) -> ExitCode {
    tracing::error!("{e}");
    if !logging.to_stderr {
        eprintln!("supportauth: {e}");
    }
    let _ = sd_notify::notify(false, &[NotifyState::Status(&format!("failed: {e}"))]);
    ExitCode::FAILURE
}

/// Keeps the file writer's flushing thread alive for the daemon's life.
struct Logging {
    to_stderr: bool,
    _file_guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

fn init_logging(cfg: &Config) -> Result<Logging, DaemonError> {
    let filter =
        || EnvFilter::try_new(&cfg.log.level).map_err(|e| DaemonError::Logging(e.to_string()));
    let mut layers: Vec<Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>> = Vec::new();
    let to_stderr = !cfg.log.journald;
    if cfg.log.journald {
        let j = tracing_journald::layer()
            .map_err(|e| DaemonError::Logging(format!("journald: {e}")))?
            .with_syslog_identifier("supportauth".into());
        layers.push(j.with_filter(filter()?).boxed());
    } else {
        let f = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false);
        layers.push(f.with_filter(filter()?).boxed());
    }
    let mut guard = None;
    if let Some(file) = &cfg.log.file {
        let file = cfg.host_path(file);
        let (dir, name) = match (file.parent(), file.file_name()) {
            (Some(d), Some(n)) => (d.to_path_buf(), n.to_owned()),
            _ => {
                return Err(DaemonError::Logging(format!(
                    "log.file {} has no file name",
                    file.display()
                )))
            }
        };
        crate::system::safefile::ensure_own_dir(&dir, 0o700)
            .map_err(|e| DaemonError::Logging(format!("log directory: {e}")))?;
        let appender = tracing_appender::rolling::daily(dir, name);
        let (writer, g) = tracing_appender::non_blocking(appender);
        guard = Some(g);
        let f = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false);
        layers.push(f.with_filter(filter()?).boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| DaemonError::Logging(e.to_string()))?;
    Ok(Logging {
        to_stderr,
        _file_guard: guard,
    })
}

async fn run_async(
    cfg: Config,
    source: ConfigSource,
    config_path: Option<PathBuf>,
) -> Result<(), DaemonError> {
    // Handlers first: a SIGHUP/SIGTERM that arrives while starting (the
    // socket already accepts) must not kill the daemon with the default
    // action; it is handled once the loop below runs.
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    // The lock comes first: a second daemon must not touch the socket.
    store::ensure_private_dir(&cfg.state_dir())?;
    let _lock = DaemonLock::acquire(&cfg.lock_path())?;
    let store = Store::open(&cfg.database_path()).await?;
    tracing::info!(database = %cfg.database_path().display(), "state store open");

    let listeners = server::bind(&cfg)?;
    tracing::info!(socket = %listeners.socket_path().display(), "listening on the control socket");
    for (addr, tls) in listeners.tcp_addrs() {
        let scheme = if tls { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{addr}/json-api/");
    }

    let clock: Arc<dyn crate::clock::Clock> = Arc::new(SystemClock);
    let audit = AuditLog::from_config(&cfg, store.clone(), Arc::clone(&clock)).await?;
    tracing::info!(audit_log = %audit.path().display(), "audit log open");
    // Notification receivers get their rows before anything is recorded:
    // one added to the configuration hears of everything from this start
    // on. One that cannot be set up (a secret file with the wrong owner or
    // mode) does not keep the daemon from starting (revokes and expiry go
    // on): its events wait, and notify status says why.
    let head = audit.head().await.seq;
    let mut receivers = Vec::new();
    for r in crate::notify::receivers(&cfg) {
        match r {
            Ok(r) => {
                store.notify_receiver(&r.spec.id, head).await?;
                receivers.push(r);
            }
            Err((spec, e)) => {
                tracing::error!(
                    "notifications to {} are off until fixed and restarted: {e}",
                    spec.id
                );
                store.notify_receiver(&spec.id, head).await?;
                store
                    .notify_setup_failed(&spec.id, &format!("not started: {e}"), clock.now())
                    .await?;
            }
        }
    }
    if let Some(t) = audit.tail_missing() {
        let ev = AuditEvent::new(events::AUDIT_TAIL_MISSING, "system")
            .outcome(Outcome::Failed)
            .details(serde_json::json!({
                "file_last_seq": t.file_last_seq,
                "store_head_seq": t.store_head_seq,
            }));
        audit.append(ev).await?;
    }
    let start = AuditEvent::new(events::DAEMON_START, "system").details(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": source_name(&source),
        "socket": listeners.socket_path().display().to_string(),
        "tcp": listeners.tcp_addrs().iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
    }));
    audit.append(start).await?;
    let audit = Arc::new(audit);
    let metrics = Arc::clone(audit.metrics());
    crate::system::exec::observe_durations(Arc::new(move |tool, took| {
        metrics.tool_ran(tool, took)
    }));
    let firewall = Whitelist::detect(&cfg);
    tracing::info!(backends = ?firewall.backends(), "firewall backends");
    let host = Host::from_config(&cfg, Arc::new(firewall));
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::clone(&audit),
        host,
        Arc::clone(&clock),
        Policy::from_config(&cfg),
    ));
    // Before serving: revoke what expired while the daemon was down, then
    // finish or roll back whatever a crash left. A failure here is logged,
    // not fatal: revoking must stay possible.
    match engine.expire_due().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "grants that expired while stopped were revoked"),
        Err(e) => tracing::error!(error = %e, "start-up expiry failed; will retry"),
    }
    match engine.reconcile().await {
        Ok(r) => tracing::info!(
            repairs = r.repairs.len(),
            errors = r.errors.len(),
            "start-up reconciliation done"
        ),
        Err(e) => tracing::error!(error = %e, "start-up reconciliation failed; will retry"),
    }
    // Logins while the daemon was down are recorded before it serves.
    let logins = match cfg.login_log() {
        Some(log) => {
            tracing::info!(source = ?log, "watching sshd's log for support logins");
            let mut watcher = crate::logins::watch::Watcher::open(Arc::clone(&engine), &log).await;
            let n = watcher.catch_up().await;
            tracing::info!(lines = n, "sshd's log read up to its end");
            Some(watcher)
        }
        None => {
            tracing::warn!(
                "login watching is off (logins.source, or no sshd log found): support logins are not audited"
            );
            None
        }
    };
    let app = App::new(cfg, store.clone(), clock, audit, engine);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(Arc::clone(&app), listeners, stop_rx.clone()));
    let mut background = start_background_tasks(&app, logins, stop_rx.clone());
    if !receivers.is_empty() {
        tracing::info!(receivers = receivers.len(), "notifications on");
        let ctx = Arc::new(crate::notify::worker::Ctx {
            store: store.clone(),
            audit: Arc::clone(&app.audit),
            clock: Arc::clone(&app.clock),
            log_path: app.config().audit_log_path(),
            retry: crate::notify::backoff::Retry::from_config(&app.config().notify),
            budget: app.config().notify.max_pending,
            host: crate::notify::host_name(),
        });
        background.extend(crate::notify::worker::start(
            receivers,
            ctx,
            stop_rx.clone(),
        ));
    }
    let watchdog = start_watchdog(stop_rx.clone());

    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status("serving")]);
    tracing::info!("ready");

    loop {
        tokio::select! {
            _ = hup.recv() => reload(&app, config_path.as_deref()).await,
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }

    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    if let Err(e) = server.await {
        tracing::error!(error = %e, "server task failed");
    }
    let grace = Duration::from_secs(app.config().listen.request_timeout_secs);
    for task in background {
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("a background task did not stop within {grace:?}");
        }
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    let stop = AuditEvent::new(events::DAEMON_STOP, "system");
    if let Err(e) = app.audit.append(stop).await {
        tracing::error!(error = %e, "cannot audit the daemon stop");
    }
    store.close().await;
    Ok(())
}

fn source_name(source: &ConfigSource) -> String {
    match source {
        ConfigSource::File(p) => p.display().to_string(),
        ConfigSource::BuiltInDefaults => "built-in defaults".into(),
    }
}

/// The daemon's own work: grant expiry and the periodic reconciler. Every
/// task returns once `shutdown` turns true; the daemon waits for them
/// (bounded) before exiting.
fn start_background_tasks(
    app: &Arc<App>,
    logins: Option<crate::logins::watch::Watcher>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let cfg = app.config();
    let every = Duration::from_secs(cfg.access.reconcile_interval_secs);
    let mut tasks = vec![
        tokio::spawn(crate::engine::background::run(
            Arc::clone(&app.engine),
            every,
            shutdown.clone(),
        )),
        tokio::spawn(crate::portal::poller::run(
            Arc::clone(app),
            shutdown.clone(),
        )),
    ];
    if let Some(watcher) = logins {
        tasks.push(tokio::spawn(crate::logins::watch::run(
            watcher,
            Duration::from_millis(cfg.logins.poll_interval_ms),
            shutdown,
        )));
    }
    tasks
}

/// Pings systemd's watchdog at half its interval when `WATCHDOG_USEC` is set.
fn start_watchdog(mut shutdown: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    tracing::info!("systemd watchdog enabled; pinging every {every:?}");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => { let _ = sd_notify::notify(false, &[NotifyState::Watchdog]); }
                _ = shutdown.changed() => return,
            }
        }
    }))
}

/// SIGHUP: re-read and validate the configuration; keep the old one on any
/// error. Listener and state settings only change on restart.
async fn reload(app: &App, path: Option<&Path>) {
    let (ev, new) = match Config::load(path) {
        Ok((new, source)) => {
            let old = app.config();
            let mut restart_needed = Vec::new();
            if new.listen != old.listen {
                restart_needed.push("listen");
            }
            if new.paths != old.paths || new.root != old.root {
                restart_needed.push("paths");
            }
            if new.log != old.log {
                restart_needed.push("log");
            }
            if new.audit != old.audit {
                restart_needed.push("audit");
            }
            if new.portal != old.portal {
                restart_needed.push("portal");
            }
            if new.notify != old.notify {
                restart_needed.push("notify");
            }
            if new.logins != old.logins {
                restart_needed.push("logins");
            }
            if !restart_needed.is_empty() {
                tracing::warn!(
                    "changes to [{}] take effect only after a restart",
                    restart_needed.join("], [")
                );
            }
            let from = source_name(&source);
            tracing::info!(config = %from, "configuration reloaded (SIGHUP)");
            let ev = AuditEvent::new(events::CONFIG_RELOAD, "system").details(serde_json::json!({
                "config": from,
                "restart_needed": restart_needed,
            }));
            (ev, Some(new))
        }
        Err(e) => {
            tracing::error!("configuration NOT reloaded, keeping the running one: {e}");
            let ev = AuditEvent::new(events::CONFIG_RELOAD, "system")
                .outcome(Outcome::Failed)
                .details(serde_json::json!({ "error": e.to_string() }));
            (ev, None)
        }
    };
    if let Some(new) = new {
        let old_ips = app.config().access.support_ips.clone();
        let new_ips = new.access.support_ips.clone();
        app.engine.set_policy(Policy::from_config(&new));
        app.set_config(new);
        if old_ips != new_ips {
            match app.engine.follow_support_ips(&old_ips, &new_ips).await {
                Ok(n) => tracing::info!(grants = n, "support addresses changed; grants updated"),
                Err(e) => {
                    tracing::error!(error = %e, "support addresses changed but grants could not all follow")
                }
            }
        }
    }
    if let Err(e) = app.audit.append(ev).await {
        tracing::error!(error = %e, "cannot audit the configuration reload");
    }
}
