//! The login watcher: reads sshd's log, audits support logins and logouts,
//! and keeps the sessions in the store.
//!
//! Restart-safe: each record's audit chain head is committed together with
//! the session change and the log position after its line (one
//! transaction), and lines that produce nothing only move the position. A
//! restart resumes at the stored position, so no line is missed or handled
//! twice; sessions open at a restart are in the store and still get their
//! logout. (A crash between the record's fsync and that commit can repeat
//! that one record.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::journal::JournalFollower;
use super::matcher::{decide, Decision, OpenSession};
use super::parse::{parse_line, LogLine, SshdEvent};
use super::source::{FileFollower, Mark};
use crate::audit::{events, AuditEvent};
use crate::config::LoginLog;
use crate::domain::caller::Caller;
use crate::domain::{GrantRow, GrantState};
use crate::engine::Engine;
use crate::store::logins::NewSession;
use crate::system::sessions;

/// What is read.
enum Follower {
    File(FileFollower),
    Journal(Box<JournalFollower>),
}

pub struct Watcher {
    engine: Arc<Engine>,
    follower: Follower,
    /// `file:<path>` or `journal`: the stored position belongs to it.
    source: String,
    proc: PathBuf,
    /// The position last stored.
    stored: Option<Mark>,
    /// Sessions whose process was found gone at the last idle poll.
    gone_once: std::collections::HashSet<i64>,
    /// The key fingerprint of every connection seen logging in (admins'
    /// too) and not seen ending: sshd writes one `Accepted` line per
    /// connection, so a second one with another key is forged (syslog
    /// lets any local user write lines tagged sshd), and its session must
    /// not be one supportauth would ever end.
    connections: std::collections::HashMap<(std::net::IpAddr, u16), String>,
    /// Warning logins recorded in the current minute, and those left out
    /// since the last one recorded (forged lines must not flood the log).
    warnings: (i64, u32),
    suppressed: u64,
}

/// Most warning logins (outside a window, forged) recorded per minute;
/// the next one recorded says how many were left out.
const MAX_WARNINGS_PER_MINUTE: u32 = 20;

/// Bound of [`Watcher::connections`] (forgotten all at once past it).
const MAX_CONNECTIONS: usize = 4096;

impl Watcher {
    /// Follows `log` from the position stored for it (from its end, or
    /// from now, when none is stored).
    pub async fn open(engine: Arc<Engine>, log: &LoginLog) -> Watcher {
        let source = match log {
            LoginLog::File(path) => format!("file:{}", path.display()),
            LoginLog::Journal(_) => "journal".to_string(),
        };
        let stored = match engine.store().login_position(&source).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the stored login log position; reading from the end");
                None
            }
        };
        let follower = match log {
            LoginLog::File(path) => {
                let pos = match &stored {
                    Some(Mark::File(p)) => Some(*p),
                    _ => None,
                };
                Follower::File(FileFollower::new(path, pos))
            }
            LoginLog::Journal(tool) => Follower::Journal(Box::new(JournalFollower::new(
                tool,
                stored.clone(),
                engine.now(),
            ))),
        };
        Watcher {
            follower,
            engine,
            source,
            proc: PathBuf::from("/proc"),
            stored,
            gone_once: Default::default(),
            connections: Default::default(),
            warnings: (0, 0),
            suppressed: 0,
        }
    }

    /// What is new, parsed, each with the position after it.
    async fn read(&mut self) -> std::io::Result<Vec<(Option<LogLine>, Mark)>> {
        match &mut self.follower {
            Follower::File(f) => {
                let lines = tokio::task::block_in_place(|| f.poll())?;
                Ok(lines
                    .into_iter()
                    .map(|(l, pos)| (parse_line(&l), Mark::File(pos)))
                    .collect())
            }
            Follower::Journal(j) => j.poll().await,
        }
    }

    /// Reads everything written while the daemon was down (the daemon
    /// does this before it serves, so its first answers already count
    /// those logins; a journal may still be starting and is caught up by
    /// [`run`]). Returns how many lines were read.
    pub async fn catch_up(&mut self) -> usize {
        let mut total = 0;
        loop {
            let n = self.poll().await;
            if n == 0 {
                return total;
            }
            total += n;
        }
    }

    /// Reads and handles what is new; returns how many lines were read.
    pub async fn poll(&mut self) -> usize {
        let lines = match self.read().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(source = %self.source, error = %e, "cannot read sshd's log");
                return 0;
            }
        };
        let mut pending = None;
        for (parsed, mark) in &lines {
            let stored = match parsed {
                Some(parsed) => self.handle(parsed, mark).await,
                None => false,
            };
            pending = (!stored).then_some(mark);
        }
        // The first position of a fresh start (the file's end, the time
        // reading began) is stored too, so lines written while the daemon
        // is down are not skipped.
        let start = match &self.follower {
            Follower::File(f) => f.position().map(Mark::File),
            Follower::Journal(j) => Some(j.mark().clone()),
        };
        if pending.is_none() && self.stored.is_none() {
            pending = start.as_ref();
        }
        if let Some(mark) = pending {
            match self
                .engine
                .store()
                .save_login_position((&self.source, mark))
                .await
            {
                Ok(()) => self.stored = Some(mark.clone()),
                Err(e) => tracing::error!(error = %e, "cannot store the login log position"),
            }
        }
        lines.len()
    }

    /// Called when the log has nothing new: a session whose sshd process
    /// is gone without a logout line (sshd writes none when the client
    /// vanishes or sshd is killed), twice in a row so that a line written
    /// just before the exit is read first, gets its logout now.
    pub async fn sweep(&mut self) {
        let open = match self.engine.store().open_sessions().await {
            Ok(o) => o,
            Err(_) => return,
        };
        let proc = self.proc.clone();
        let gone: Vec<&OpenSession> = open
            .iter()
            .filter(|s| match (s.pid, s.pid_start) {
                (Some(pid), Some(start)) => sessions::sshd_start_time(&proc, pid) != Some(start),
                _ => false,
            })
            .collect();
        let now = self.engine.now();
        let mut still = std::collections::HashSet::new();
        for s in gone {
            if self.gone_once.contains(&s.id) {
                self.logout(s, now, None).await;
            } else {
                still.insert(s.id);
            }
        }
        self.gone_once = still;
    }

    /// Records what one event means; returns whether the position was
    /// stored with it.
    async fn handle(&mut self, line: &LogLine, pos: &Mark) -> bool {
        let now = self.engine.now();
        let at = line.time.unwrap_or(now);
        let store = self.engine.store();
        let mut forged = false;
        match &line.event {
            SshdEvent::Accepted {
                addr,
                port,
                fingerprint,
                ..
            } => {
                if self.connections.len() >= MAX_CONNECTIONS {
                    self.connections.clear();
                }
                forged = self
                    .connections
                    .insert((*addr, *port), fingerprint.clone())
                    .is_some_and(|before| &before != fingerprint);
            }
            SshdEvent::Disconnected { addr, port, .. } => {
                self.connections.remove(&(*addr, *port));
            }
            SshdEvent::SessionClosed { .. } => {}
        }
        let (grants, open) = match &line.event {
            SshdEvent::Accepted { fingerprint, .. } => {
                (self.grants_of(fingerprint).await, Vec::new())
            }
            _ => (
                Vec::new(),
                store.open_sessions().await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read the open support sessions");
                    Vec::new()
                }),
            ),
        };
        match decide(&line.event, line.pid, at, &grants, &open) {
            Decision::Nothing => false,
            Decision::Login {
                grant,
                in_window,
                warning,
            } => {
                let warning = match forged {
                    true => Some(FORGED),
                    false => warning,
                };
                if warning.is_some() && !self.warning_budget(now) {
                    self.suppressed += 1;
                    tracing::warn!(ticket = %grant.ticket, "warning login not recorded: too many this minute");
                    return false;
                }
                self.login(line, at, grant, in_window && !forged, warning, pos, forged)
                    .await;
                true
            }
            Decision::Logout { session } => {
                self.logout(session, at, Some(pos)).await;
                true
            }
        }
    }

    /// Whether another warning login may be recorded in this minute.
    fn warning_budget(&mut self, now: i64) -> bool {
        take_budget(&mut self.warnings, now)
    }

    /// The grants of this key, by the fingerprint computed from each
    /// grant's stored key.
    async fn grants_of(&self, fingerprint: &str) -> Vec<GrantRow> {
        let rows = match self
            .engine
            .store()
            .grants_with_fingerprint(fingerprint)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read grants to match a login");
                return Vec::new();
            }
        };
        rows.into_iter()
            .filter(|g| {
                crate::sshkey::SupportKey::parse(&g.ssh_key)
                    .map(|k| k.fingerprint() == fingerprint)
                    .unwrap_or(false)
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    async fn login(
        &mut self,
        line: &LogLine,
        at: i64,
        grant: &GrantRow,
        in_window: bool,
        warning: Option<&str>,
        pos: &Mark,
        forged: bool,
    ) {
        let SshdEvent::Accepted {
            user,
            addr,
            port,
            key_type,
            fingerprint,
        } = &line.event
        else {
            return;
        };
        // The session's sshd process. The journal's `_PID` is the
        // kernel's word; a file's line is not, so there the process is the
        // sshd holding this connection (when the line names a pid, it must
        // be that one). None for a forged line: such a session is never
        // ended.
        let proc = self.proc.clone();
        let (addr_, port_) = (*addr, *port);
        let pid_attested = matches!(self.follower, Follower::Journal(_));
        let found = match (forged, line.pid) {
            (true, _) => None,
            (false, Some(pid)) if pid_attested => {
                tokio::task::block_in_place(|| sessions::sshd_start_time(&proc, pid))
                    .map(|start| (pid, start))
            }
            (false, _) => tokio::task::block_in_place(|| {
                sessions::sshd_of_connection(&proc, addr_, port_)
                    .filter(|(p, _)| line.pid.is_none_or(|lp| lp == *p))
            }),
        };
        if found.is_none() && !forged {
            tracing::warn!(
                address = %addr, port,
                "the sshd process of this support session was not found (the session ended already, or /proc/PID/fd is not readable: the unit needs CAP_SYS_PTRACE); it cannot be ended at revoke"
            );
        }
        let pid = found.map(|(p, _)| p).or(line.pid);
        let mut details = json!({
            "address": addr.to_string(),
            "port": port,
            "fingerprint": fingerprint,
            "key_type": key_type,
            "pid": pid,
            "in_window": in_window,
            "grant_id": grant.id,
        });
        if let Some(w) = warning {
            details["warning"] = json!(w);
            if self.suppressed > 0 {
                details["warnings_not_recorded_before"] = json!(self.suppressed);
                self.suppressed = 0;
            }
            tracing::warn!(ticket = %grant.ticket, user = %user, address = %addr, "{w}");
        }
        let ev = AuditEvent::new(events::SUPPORT_LOGIN, "system")
            .ticket(grant.ticket, Some(grant.server))
            .user(user.as_str())
            .details(details);
        let head = match self.engine.audit().append_closing(&[ev]).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "support_login could not be written to the audit log yet");
                None
            }
        };
        let session = NewSession {
            grant_id: grant.id,
            user: user.clone(),
            addr: *addr,
            port: *port,
            fingerprint: fingerprint.clone(),
            pid,
            pid_start: found.map(|(_, s)| s),
            in_window,
            started_at: at,
        };
        let saved = self
            .engine
            .store()
            .record_login(
                &session,
                (&self.source, pos),
                head.as_ref().map(|h| (h.seq, h.hash.as_str())),
            )
            .await;
        match saved {
            Ok(_) => {
                if let Some(h) = &head {
                    self.engine.audit().head_committed(h).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot record a support session"),
        }
        // Its grant is ending or ended (a login just before a revoke, read
        // just after it, or during it): that revoke may not have seen this
        // session, so it is ended here. The grant is read again now, after
        // the session is in the store.
        let current = self.engine.store().grant(grant.id).await.ok().flatten();
        let row = current.unwrap_or_else(|| grant.clone());
        if matches!(
            row.state,
            GrantState::Revoking | GrantState::Revoked | GrantState::Failed
        ) {
            let reason = row.end_reason.clone().unwrap_or_else(|| "revoke".into());
            let mut non_fatals = Vec::new();
            self.engine
                .end_support_sessions(&Caller::System, &row, &reason, &mut non_fatals)
                .await;
        }
    }

    /// `pos`: after the line that said so (None: the process was found gone).
    async fn logout(&self, session: &OpenSession, at: i64, pos: Option<&Mark>) {
        let store = self.engine.store();
        let grant = store.grant(session.grant_id).await.ok().flatten();
        let mut ev = AuditEvent::new(events::SUPPORT_LOGOUT, "system")
            .user(session.user.as_str())
            .details(json!({
                "address": session.addr.to_string(),
                "port": session.port,
                "fingerprint": session.fingerprint,
                "pid": session.pid,
                "session_id": session.id,
                "session_secs": (at - session.started_at).max(0),
                "grant_id": session.grant_id,
                "seen": if pos.is_some() { "log" } else { "process_gone" },
            }));
        if let Some(g) = &grant {
            ev = ev.ticket(g.ticket, Some(g.server));
        }
        let head = match self.engine.audit().append_closing(&[ev]).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "support_logout could not be written to the audit log yet");
                None
            }
        };
        match store
            .end_session(
                session.id,
                at,
                "logout",
                pos.map(|p| (self.source.as_str(), p)),
                head.as_ref().map(|h| (h.seq, h.hash.as_str())),
            )
            .await
        {
            Ok(()) => {
                if let Some(h) = &head {
                    self.engine.audit().head_committed(h).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot record the end of a support session"),
        }
    }
}

/// Counts one more in `used` (minute, count); whether it is within
/// [`MAX_WARNINGS_PER_MINUTE`].
fn take_budget(used: &mut (i64, u32), now: i64) -> bool {
    let minute = now.div_euclid(60);
    if used.0 != minute {
        *used = (minute, 0);
    }
    used.1 = used.1.saturating_add(1);
    used.1 <= MAX_WARNINGS_PER_MINUTE
}

const FORGED: &str =
    "a second login line for a connection already logged in with another key (forged?)";

/// The daemon task: polls every `every` until `shutdown` turns true.
pub async fn run(mut watcher: Watcher, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        // Drain a burst before sleeping.
        while watcher.poll().await > 0 {
            if *shutdown.borrow() {
                return;
            }
        }
        watcher.sweep().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_logins_are_budgeted_per_minute() {
        let mut used = (0, 0);
        let allowed = (0..100).filter(|_| take_budget(&mut used, 120)).count();
        assert_eq!(allowed, MAX_WARNINGS_PER_MINUTE as usize);
        assert!(!take_budget(&mut used, 179));
        assert!(take_budget(&mut used, 180));
    }
}
