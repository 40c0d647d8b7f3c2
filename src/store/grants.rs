//! Grant rows: the desired state of access, and the intent log that makes
//! grants and revokes crash-safe (see migrations/0001_initial.sql).
//!
//! Every method that writes `grants` applies the same change to the
//! in-memory live-grant index once its statement succeeded, and re-reads
//! the row (or the whole index) when it failed, in case the failure came
//! after the commit (see `live`).

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::live::PendingDone;
use super::{Store, StoreError};
use crate::types::{ServerNum, SupportIp, TicketId, Username};

/// Lifecycle of a grant row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Recorded before the host is touched; found at start, rolled back,
    /// or completed when its closing audit records are durable.
    Granting,
    /// Applied and audited.
    Active,
    /// Recorded before removal; finished if found at start.
    Revoking,
    Revoked,
    Failed,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Granting => "granting",
            GrantState::Active => "active",
            GrantState::Revoking => "revoking",
            GrantState::Revoked => "revoked",
            GrantState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "granting" => GrantState::Granting,
            "active" => GrantState::Active,
            "revoking" => GrantState::Revoking,
            "revoked" => GrantState::Revoked,
            "failed" => GrantState::Failed,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown grant state {other:?}"
                )))
            }
        })
    }
    /// Whether the grant may still have a footprint on the host.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            GrantState::Granting | GrantState::Active | GrantState::Revoking
        )
    }
}

/// What a new grant will install, recorded before anything is touched.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub ticket: TicketId,
    pub server: ServerNum,
    pub source: String,
    pub ssh_username: Username,
    pub temp_user: bool,
    pub sudoers_dropin: bool,
    pub ssh_key: String,
    pub key_fingerprint: String,
    pub key_comment: String,
    pub access_ips: Vec<SupportIp>,
    pub server_name: String,
    pub ticket_subject: String,
    pub ssh_ip: String,
    pub ssh_port: u16,
    pub whm_ip: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub granted_by: String,
}

impl NewGrant {
    /// The row this grant becomes once inserted as `id` (the columns it
    /// does not set take the schema's defaults; a unit test compares this
    /// with the row read back).
    fn stored_as(&self, id: i64) -> GrantRow {
        GrantRow {
            id,
            ticket: self.ticket,
            server: self.server,
            state: GrantState::Granting,
            source: self.source.clone(),
            ssh_username: self.ssh_username.clone(),
            temp_user: self.temp_user,
            sudoers_dropin: self.sudoers_dropin,
            ssh_key: self.ssh_key.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
            key_comment: self.key_comment.clone(),
            access_ips: self.access_ips.clone(),
            server_name: self.server_name.clone(),
            ticket_subject: self.ticket_subject.clone(),
            ssh_ip: self.ssh_ip.clone(),
            ssh_port: self.ssh_port,
            whm_ip: self.whm_ip.clone(),
            ticket_status: "OPEN".into(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            ended_at: None,
            end_reason: None,
            granted_by: self.granted_by.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrantRow {
    pub id: i64,
    pub ticket: TicketId,
    pub server: ServerNum,
    pub state: GrantState,
    pub source: String,
    pub ssh_username: Username,
    pub temp_user: bool,
    pub sudoers_dropin: bool,
    pub ssh_key: String,
    pub key_fingerprint: String,
    pub key_comment: String,
    pub access_ips: Vec<SupportIp>,
    pub server_name: String,
    pub ticket_subject: String,
    pub ssh_ip: String,
    pub ssh_port: u16,
    pub whm_ip: String,
    pub ticket_status: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub granted_by: String,
}

/// A compile-time `SELECT <every column> FROM grants <tail>`: SQL text is
/// never assembled at run time.
macro_rules! select_grants {
    ($tail:literal) => {
        concat!(
            "SELECT id, ticket_id, server_num, state, source, ssh_username, temp_user, ",
            "sudoers_dropin, ssh_key, key_fingerprint, key_comment, access_ips, server_name, ",
            "ticket_subject, ssh_ip, ssh_port, whm_ip, ticket_status, created_at, expires_at, ",
            "ended_at, end_reason, granted_by FROM grants ",
            $tail
        )
    };
}

// Parameter numbering in the multi-statement texts below: sqlx binds the
// slots a statement does not name (those below its highest `?N`) from a
// running position and stops at the first it cannot fill, so every text
// numbers its parameters in the order its statements first use them, and
// the pending done marks travel as one JSON parameter, `?1`
// (`live::PendingDone::to_json`: `{"ids": [...], "seq": N, "hash": "..."}`,
// NULL when none are pending). The unit tests check each text's effect.

/// Marks the pending grants `?1` lists as active; a grant moves only from
/// `granting` (a revoke recorded meanwhile is kept).
macro_rules! mark_active {
    () => {
        "UPDATE grants SET state = 'active' WHERE state = 'granting' \
         AND id IN (SELECT value FROM json_each(?1, '$.ids')); "
    };
}

/// Saves an audit chain head (`$seq`, NULL for none, and `$hash`); it only
/// ever moves forward.
macro_rules! save_head {
    ($seq:expr, $hash:expr) => {
        concat!(
            "INSERT INTO audit_head (id, seq, hash) SELECT 1, ",
            $seq,
            ", ",
            $hash,
            " WHERE ",
            $seq,
            " IS NOT NULL ",
            "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash ",
            "WHERE excluded.seq > audit_head.seq; "
        )
    };
}

/// The statements that commit the pending done marks in `?1`.
macro_rules! write_done_marks {
    () => {
        concat!(
            mark_active!(),
            save_head!("json_extract(?1, '$.seq')", "json_extract(?1, '$.hash')")
        )
    };
}

/// A grant or revoke done (parameters 2-7: state, ended_at, end_reason,
/// id, head seq, head hash), after `$before` (which may use `?1`) in the
/// same transaction.
macro_rules! finish {
    ($before:expr) => {
        concat!(
            "BEGIN IMMEDIATE; ",
            $before,
            "UPDATE grants SET state = ?2, ",
            "ended_at = COALESCE(?3, ended_at), end_reason = COALESCE(?4, end_reason) WHERE id = ?5; ",
            save_head!("?6", "?7"),
            "COMMIT;"
        )
    };
}

/// A grant's intent (parameters 2-19).
macro_rules! insert_granting {
    () => {
        concat!(
            "INSERT INTO grants (ticket_id, server_num, state, source, ssh_username, temp_user, ",
            "sudoers_dropin, ssh_key, key_fingerprint, key_comment, access_ips, server_name, ",
            "ticket_subject, ssh_ip, ssh_port, whm_ip, created_at, expires_at, granted_by) ",
            "VALUES (?2, ?3, 'granting', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        )
    };
}

/// A revoke's intent (parameters 1-2).
macro_rules! mark_revoking {
    () => {
        "UPDATE grants SET state = 'revoking', end_reason = ?1 WHERE id = ?2 \
         AND state IN ('active','revoking','granting')"
    };
}

/// Every live row, for loading the in-memory index.
pub(super) const SELECT_LIVE: &str =
    select_grants!("WHERE state IN ('granting','active','revoking') ORDER BY id");

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(super) fn row_to_grant(r: &SqliteRow) -> Result<GrantRow, StoreError> {
    let ips_json: String = r.try_get("access_ips")?;
    let access_ips: Vec<SupportIp> = serde_json::from_str(&ips_json).map_err(corrupt)?;
    let port: i64 = r.try_get("ssh_port")?;
    Ok(GrantRow {
        id: r.try_get("id")?,
        ticket: TicketId::from_stored(r.try_get("ticket_id")?).map_err(corrupt)?,
        server: ServerNum::from_stored(r.try_get("server_num")?).map_err(corrupt)?,
        state: GrantState::parse(&r.try_get::<String, _>("state")?)?,
        source: r.try_get("source")?,
        ssh_username: Username::parse(&r.try_get::<String, _>("ssh_username")?).map_err(corrupt)?,
        temp_user: r.try_get::<i64, _>("temp_user")? != 0,
        sudoers_dropin: r.try_get::<i64, _>("sudoers_dropin")? != 0,
        ssh_key: r.try_get("ssh_key")?,
        key_fingerprint: r.try_get("key_fingerprint")?,
        key_comment: r.try_get("key_comment")?,
        access_ips,
        server_name: r.try_get("server_name")?,
        ticket_subject: r.try_get("ticket_subject")?,
        ssh_ip: r.try_get("ssh_ip")?,
        ssh_port: u16::try_from(port).map_err(corrupt)?,
        whm_ip: r.try_get("whm_ip")?,
        ticket_status: r.try_get("ticket_status")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        ended_at: r.try_get("ended_at")?,
        end_reason: r.try_get("end_reason")?,
        granted_by: r.try_get("granted_by")?,
    })
}

/// A live grant for this ticket and server already exists.
#[derive(Debug, thiserror::Error)]
#[error("a live grant for ticket {ticket} server {server} already exists")]
pub struct AlreadyLive {
    pub ticket: TicketId,
    pub server: ServerNum,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error(transparent)]
    AlreadyLive(#[from] AlreadyLive),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Records the intent to grant (state `granting`) and returns the row
    /// as stored; fails with [`AlreadyLive`] when (ticket, server) already
    /// has a live grant.
    pub async fn insert_granting(&self, g: &NewGrant) -> Result<GrantRow, InsertError> {
        let ips =
            serde_json::to_string(&g.access_ips).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Pending done marks commit with this intent (one fsync for both).
        let pending = self.live.pending();
        let sql = match pending {
            None => insert_granting!(),
            Some(_) => concat!(
                "BEGIN IMMEDIATE; ",
                write_done_marks!(),
                insert_granting!(),
                "; COMMIT;"
            ),
        };
        let insert = sqlx::query(sql)
            .bind(pending.as_ref().map(PendingDone::to_json))
            .bind(g.ticket.as_i64())
            .bind(g.server.as_i64())
            .bind(&g.source)
            .bind(g.ssh_username.as_str())
            .bind(g.temp_user as i64)
            .bind(g.sudoers_dropin as i64)
            .bind(&g.ssh_key)
            .bind(&g.key_fingerprint)
            .bind(&g.key_comment)
            .bind(ips)
            .bind(&g.server_name)
            .bind(&g.ticket_subject)
            .bind(&g.ssh_ip)
            .bind(i64::from(g.ssh_port))
            .bind(&g.whm_ip)
            .bind(g.created_at)
            .bind(g.expires_at)
            .bind(&g.granted_by);
        let res = {
            let mut conn = self.intents().lock().await?;
            let res = insert.execute(&mut *conn).await;
            if pending.is_some() {
                Self::end_failed_transaction(conn, &res).await;
            }
            res
        };
        match res {
            Ok(done) => {
                if let Some(p) = &pending {
                    self.live.settle_pending(p);
                }
                let row = g.stored_as(done.last_insert_rowid());
                self.live.put(row.clone());
                Ok(row)
            }
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(AlreadyLive {
                ticket: g.ticket,
                server: g.server,
            }
            .into()),
            Err(e) => {
                // The row's id is unknown; if the insert landed after all,
                // only a full reload finds it.
                self.live.reload(self.pool()).await;
                Err(StoreError::Sql(e).into())
            }
        }
    }

    /// After a multi-statement transaction failed part-way: rolls it back
    /// so the connection is never left inside it, or drops a connection
    /// that cannot say (it failed before BEGIN took, or is broken).
    async fn end_failed_transaction<T>(
        mut conn: super::DedicatedGuard<'_>,
        res: &Result<T, sqlx::Error>,
    ) {
        if res.is_err() && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
            super::Dedicated::discard(conn);
        }
    }

    /// Marks grant `id` done (active) in memory now and in SQLite with
    /// the next write (see `live::PendingDone`), together with `audit_head`,
    /// the chain head of its closing records. Only for a grant whose
    /// closing records are durable in the hash-chained log: that is what
    /// the reconciler completes it from if this process dies first.
    pub fn finish_later(&self, id: i64, audit_head: Option<(u64, &str)>) {
        self.live
            .complete_later(id, audit_head.map(|(seq, hash)| (seq, hash.to_string())));
    }

    /// Writes the pending done marks now (a moment after a grant, and at
    /// close), on the relaxed connection: they are in the audit log
    /// already, so a power cut that loses this commit loses nothing.
    pub async fn flush_done_marks(&self) -> Result<(), StoreError> {
        let Some(pending) = self.live.pending() else {
            return Ok(());
        };
        let res = {
            let mut conn = self.relaxed().lock().await?;
            let res = sqlx::query(concat!("BEGIN IMMEDIATE; ", write_done_marks!(), "COMMIT;"))
                .bind(pending.to_json())
                .execute(&mut *conn)
                .await;
            Self::end_failed_transaction(conn, &res).await;
            res
        };
        res?;
        self.live.settle_pending(&pending);
        Ok(())
    }

    /// Marks a grant or revoke done (`state`, and `ended` for a revoke)
    /// together with the audit chain head of its closing records, in one
    /// transaction that is not fsynced on its own (see [`Store`]'s
    /// `relaxed`): the intent was fsynced before the host was touched and
    /// the audit records are durable, so this mark is the only thing a
    /// power cut can lose, and the reconciler finishes the revoke or
    /// completes the grant from those records. The head only ever moves
    /// forward: a later record's head saved meanwhile is kept. Pending done
    /// marks of grants go along; when this write fails, its head joins them.
    pub async fn finish(
        &self,
        id: i64,
        state: GrantState,
        ended: Option<(i64, &str)>,
        audit_head: Option<(u64, &str)>,
    ) -> Result<(), StoreError> {
        let mut written = self.live.pending().unwrap_or_default();
        written.add_head(audit_head.map(|(seq, hash)| (seq, hash.to_string())));
        // This row's own mark is moot: it is set here.
        let others = written.ids.iter().any(|&other| other != id);
        let (seq, hash) = match &written.head {
            Some((seq, hash)) => (Some(*seq as i64), Some(hash.clone())),
            None => (None, None),
        };
        // One round trip to SQLite's thread: the statements run as one
        // transaction, and a failure part-way is rolled back right here so
        // the connection is never left inside a transaction.
        let mut conn = self.relaxed().lock().await?;
        let sql = if others {
            finish!(mark_active!())
        } else {
            finish!("")
        };
        let done = sqlx::query(sql)
            .bind(others.then(|| written.to_json()))
            .bind(state.as_str())
            .bind(ended.map(|(t, _)| t))
            .bind(ended.map(|(_, r)| r.to_string()))
            .bind(id)
            .bind(seq)
            .bind(hash)
            .execute(&mut *conn)
            .await;
        Self::end_failed_transaction(conn, &done).await;
        if let Err(e) = done {
            self.live.defer_head(written.head);
            self.resync_index(id).await;
            return Err(e.into());
        }
        self.live.settle_pending(&written);
        self.mark_in_index(id, state, ended).await
    }

    /// After a write of row `id`: on success applies `change` to the live
    /// index; on failure re-reads the row, in case it landed anyway.
    async fn settle_index(
        &self,
        id: i64,
        res: Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
        change: impl FnOnce(&mut GrantRow),
    ) -> Result<(), StoreError> {
        match res {
            Ok(_) => {
                self.live.update(id, change);
                Ok(())
            }
            Err(e) => {
                self.resync_index(id).await;
                Err(e.into())
            }
        }
    }

    /// Puts row `id` in the live index as SQLite has it (best effort: an
    /// unreadable row leaves the index as it was).
    async fn resync_index(&self, id: i64) {
        match self.grant(id).await {
            Ok(Some(row)) => self.live.put(row),
            Ok(None) => self.live.forget(id),
            Err(e) => {
                tracing::error!(error = %e, grant = id, "cannot re-read a grant after a failed write")
            }
        }
    }

    /// Mirrors a committed state change in the live index; a row that
    /// becomes live again (never done today) is read back from SQLite.
    async fn mark_in_index(
        &self,
        id: i64,
        state: GrantState,
        ended: Option<(i64, &str)>,
    ) -> Result<(), StoreError> {
        if !self.live.contains(id) && state.is_live() {
            if let Some(row) = self.grant(id).await? {
                self.live.put(row);
            }
            return Ok(());
        }
        self.live.update(id, |g| {
            g.state = state;
            if let Some((t, reason)) = ended {
                g.ended_at = Some(t);
                g.end_reason = Some(reason.to_string());
            }
        });
        Ok(())
    }

    /// Moves a grant to `state`; `ended` sets ended_at and end_reason.
    pub async fn set_grant_state(
        &self,
        id: i64,
        state: GrantState,
        ended: Option<(i64, &str)>,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE grants SET state = ?1, \
             ended_at = COALESCE(?2, ended_at), end_reason = COALESCE(?3, end_reason) WHERE id = ?4",
        )
        .bind(state.as_str())
        .bind(ended.map(|(t, _)| t))
        .bind(ended.map(|(_, r)| r.to_string()))
        .bind(id)
        .execute(self.pool())
        .await;
        if let Err(e) = res {
            self.resync_index(id).await;
            return Err(e.into());
        }
        self.mark_in_index(id, state, ended).await
    }

    /// Marks a grant as being revoked, remembering why (so a crash mid-way
    /// is finished with the same reason).
    pub async fn mark_revoking(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        // Pending done marks are left for the revoke's `finish`: this
        // intent stays one statement (see `audit::writer::MAX_UNSAVED`).
        let res = {
            let mut conn = self.intents().lock().await?;
            sqlx::query(mark_revoking!())
                .bind(reason)
                .bind(id)
                .execute(&mut *conn)
                .await
        };
        self.settle_index(id, res, |g| {
            g.state = GrantState::Revoking;
            g.end_reason = Some(reason.to_string());
        })
        .await?;
        Ok(())
    }

    /// Replaces a grant's support addresses (the configured list changed).
    pub async fn set_access_ips(&self, id: i64, ips: &[SupportIp]) -> Result<(), StoreError> {
        let json = serde_json::to_string(ips).map_err(corrupt)?;
        let res = sqlx::query("UPDATE grants SET access_ips = ?1 WHERE id = ?2")
            .bind(json)
            .bind(id)
            .execute(self.pool())
            .await;
        self.settle_index(id, res, |g| g.access_ips = ips.to_vec())
            .await?;
        Ok(())
    }

    pub async fn set_ticket_status(&self, id: i64, status: &str) -> Result<(), StoreError> {
        let res = sqlx::query("UPDATE grants SET ticket_status = ?1 WHERE id = ?2")
            .bind(status)
            .bind(id)
            .execute(self.pool())
            .await;
        self.settle_index(id, res, |g| g.ticket_status = status.to_string())
            .await?;
        Ok(())
    }

    pub async fn grant(&self, id: i64) -> Result<Option<GrantRow>, StoreError> {
        let q = select_grants!("WHERE id = ?1");
        let row = sqlx::query(q).bind(id).fetch_optional(self.pool()).await?;
        let mut row = row.as_ref().map(row_to_grant).transpose()?;
        if let Some(g) = &mut row {
            self.live.overlay(g);
        }
        Ok(row)
    }

    /// Grants that may have a footprint on the host, oldest first (from
    /// the in-memory index).
    pub async fn live_grants(&self) -> Result<Vec<GrantRow>, StoreError> {
        Ok(self.live.select(|_| true))
    }

    /// Active grants whose end time has come, soonest first.
    pub async fn due_for_expiry(&self, now: i64) -> Result<Vec<GrantRow>, StoreError> {
        let mut due = self
            .live
            .select(|g| g.state == GrantState::Active && g.expires_at.is_some_and(|t| t <= now));
        due.sort_by_key(|g| (g.expires_at, g.id));
        Ok(due)
    }

    /// The earliest end time of an active grant, for the expiry timer.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.live.earliest(|g| {
            (g.state == GrantState::Active)
                .then_some(g.expires_at)
                .flatten()
        }))
    }

    /// Every user a grant has ever used (where our keys could be).
    pub async fn grant_users(&self) -> Result<Vec<Username>, StoreError> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT ssh_username FROM grants ORDER BY ssh_username")
                .fetch_all(self.pool())
                .await?;
        names
            .iter()
            .map(|n| Username::parse(n).map_err(corrupt))
            .collect()
    }

    /// Live grants, optionally filtered, for ticket_list.
    pub async fn list_live(
        &self,
        ticket: Option<TicketId>,
        server: Option<ServerNum>,
        user: Option<&Username>,
    ) -> Result<Vec<GrantRow>, StoreError> {
        Ok(self
            .live
            .snapshot()
            .iter()
            .filter(|g| g.matches(ticket, server, user))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(ticket: &str, server: &str) -> NewGrant {
        NewGrant {
            ticket: TicketId::parse(ticket).unwrap(),
            server: ServerNum::parse(server).unwrap(),
            source: "local".into(),
            ssh_username: Username::root(),
            temp_user: false,
            sudoers_dropin: false,
            ssh_key: "ssh-ed25519 AAAA".into(),
            key_fingerprint: "SHA256:x".into(),
            key_comment: format!("{ticket}_server_{server}@cpanel.net_1"),
            access_ips: vec![SupportIp::parse("203.0.113.5").unwrap()],
            server_name: String::new(),
            ticket_subject: String::new(),
            ssh_ip: String::new(),
            ssh_port: 22,
            whm_ip: String::new(),
            created_at: 100,
            expires_at: Some(200),
            granted_by: "uid:0".into(),
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s/state.db")).await.unwrap();
        (d, s)
    }

    #[tokio::test]
    async fn one_live_grant_per_ticket_and_server() {
        let (_d, s) = store().await;
        let row = s.insert_granting(&sample("1234", "1")).await.unwrap();
        assert_eq!(row.state, GrantState::Granting);
        assert_eq!(row.ticket_status, "OPEN");
        // The row built in memory is the row SQLite stored.
        assert_eq!(s.grant(row.id).await.unwrap(), Some(row.clone()));
        let id = row.id;
        assert!(matches!(
            s.insert_granting(&sample("1234", "1")).await,
            Err(InsertError::AlreadyLive(_))
        ));
        s.insert_granting(&sample("1234", "2")).await.unwrap();
        s.set_grant_state(id, GrantState::Revoked, Some((150, "revoke")))
            .await
            .unwrap();
        // Once ended, the same ticket and server may be granted again.
        s.insert_granting(&sample("1234", "1")).await.unwrap();
        let row = s.grant(id).await.unwrap().unwrap();
        assert_eq!(row.state, GrantState::Revoked);
        assert_eq!(row.end_reason.as_deref(), Some("revoke"));
        assert_eq!(row.access_ips[0].to_string(), "203.0.113.5");
    }

    #[tokio::test]
    async fn expiry_queries() {
        let (_d, s) = store().await;
        let a = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        let b = s.insert_granting(&sample("1002", "1")).await.unwrap().id;
        s.set_grant_state(a, GrantState::Active, None)
            .await
            .unwrap();
        s.set_grant_state(b, GrantState::Active, None)
            .await
            .unwrap();
        assert_eq!(s.next_expiry().await.unwrap(), Some(200));
        assert!(s.due_for_expiry(199).await.unwrap().is_empty());
        assert_eq!(s.due_for_expiry(200).await.unwrap().len(), 2);
        let filtered = s
            .list_live(Some(TicketId::parse("1001").unwrap()), None, None)
            .await
            .unwrap();
        assert_eq!(filtered.len(), 1);
    }

    /// The audit chain head as SQLite has it.
    async fn stored_head(s: &Store) -> Option<(i64, String)> {
        crate::audit::writer::load_head(s)
            .await
            .unwrap()
            .map(|h| (h.seq as i64, h.hash))
    }

    #[tokio::test]
    async fn finish_marks_state_and_moves_the_audit_head_only_forward() {
        let (_d, s) = store().await;
        let a = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        s.finish(a, GrantState::Active, None, Some((5, "h5")))
            .await
            .unwrap();
        assert_eq!(s.grant(a).await.unwrap().unwrap().state, GrantState::Active);
        assert_eq!(stored_head(&s).await, Some((5, "h5".to_string())));
        // A later record's head saved first is not moved back.
        s.finish(
            a,
            GrantState::Revoked,
            Some((300, "revoke")),
            Some((4, "h4")),
        )
        .await
        .unwrap();
        let row = s.grant(a).await.unwrap().unwrap();
        assert_eq!(row.state, GrantState::Revoked);
        assert_eq!(
            (row.ended_at, row.end_reason.as_deref()),
            (Some(300), Some("revoke"))
        );
        assert_eq!(stored_head(&s).await, Some((5, "h5".to_string())));
        let b = s.insert_granting(&sample("1002", "1")).await.unwrap().id;
        s.finish(b, GrantState::Active, None, None).await.unwrap();
        assert_eq!(stored_head(&s).await, Some((5, "h5".to_string())));
    }

    #[tokio::test]
    async fn done_marks_left_for_later_ride_on_the_next_write() {
        let (_d, s) = store().await;
        // A row's state and the chain head's seq as SQLite has them.
        async fn raw(s: &Store, id: i64) -> (String, Option<i64>) {
            let state = sqlx::query_scalar("SELECT state FROM grants WHERE id = ?1")
                .bind(id)
                .fetch_one(s.pool())
                .await
                .unwrap();
            (state, stored_head(s).await.map(|h| h.0))
        }
        let a = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        s.finish_later(a, Some((5, "h5")));
        // Active in memory (and to readers of one row) before SQLite.
        assert_eq!(
            s.list_live(None, None, None).await.unwrap()[0].state,
            GrantState::Active
        );
        assert_eq!(s.grant(a).await.unwrap().unwrap().state, GrantState::Active);
        assert_eq!(raw(&s, a).await, ("granting".into(), None));
        // A reload from SQLite (after a failed write) keeps it active.
        s.live.reload(s.pool()).await;
        assert_eq!(s.live_grants().await.unwrap()[0].state, GrantState::Active);

        // The next grant's intent carries the mark and its head.
        let b = s.insert_granting(&sample("1002", "1")).await.unwrap().id;
        assert_eq!(raw(&s, a).await, ("active".into(), Some(5)));
        assert_eq!(raw(&s, b).await, ("granting".into(), Some(5)));
        assert!(s.live.pending().is_none());

        // A revoke's intent does not (one statement); its done mark does,
        // keeping the newer head; the revoked row's own mark is moot.
        s.finish_later(b, Some((7, "h7")));
        s.mark_revoking(b, "revoke").await.unwrap();
        assert_eq!(raw(&s, b).await, ("revoking".into(), Some(5)));
        s.finish(b, GrantState::Revoked, Some((9, "revoke")), Some((6, "h6")))
            .await
            .unwrap();
        assert_eq!(raw(&s, b).await, ("revoked".into(), Some(7)));
        assert!(s.live.pending().is_none());

        // Another grant's pending mark goes with a revoke's done mark too.
        let c = s.insert_granting(&sample("1003", "1")).await.unwrap().id;
        let d = s.insert_granting(&sample("1004", "1")).await.unwrap().id;
        s.finish_later(d, Some((11, "h11")));
        s.mark_revoking(c, "revoke").await.unwrap();
        s.finish(
            c,
            GrantState::Revoked,
            Some((9, "revoke")),
            Some((13, "h13")),
        )
        .await
        .unwrap();
        assert_eq!(raw(&s, d).await, ("active".into(), Some(13)));

        // Or the flush shortly after, on its own; a mark for a grant
        // revoked meanwhile does not bring it back.
        let e = s.insert_granting(&sample("1005", "1")).await.unwrap().id;
        s.finish_later(e, Some((15, "h15")));
        s.set_grant_state(e, GrantState::Revoked, Some((20, "revoke")))
            .await
            .unwrap();
        s.flush_done_marks().await.unwrap();
        assert_eq!(raw(&s, e).await, ("revoked".into(), Some(15)));
        assert!(s.live.pending().is_none());
        s.flush_done_marks().await.unwrap();

        // At close, what is still pending is written.
        let f = s.insert_granting(&sample("1006", "1")).await.unwrap().id;
        s.finish_later(f, Some((17, "h17")));
        s.close().await;
        let s = Store::open(&_d.path().join("s/state.db")).await.unwrap();
        assert_eq!(raw(&s, f).await, ("active".into(), Some(17)));
    }

    #[tokio::test]
    async fn finish_failing_part_way_changes_nothing_and_the_next_one_works() {
        let (_d, s) = store().await;
        let a = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        sqlx::query("ALTER TABLE audit_head RENAME TO audit_head_away")
            .execute(s.pool())
            .await
            .unwrap();
        assert!(s
            .finish(a, GrantState::Active, None, Some((1, "h1")))
            .await
            .is_err());
        let row = s.grant(a).await.unwrap().unwrap();
        assert_eq!(
            row.state,
            GrantState::Granting,
            "the update was rolled back"
        );
        sqlx::query("ALTER TABLE audit_head_away RENAME TO audit_head")
            .execute(s.pool())
            .await
            .unwrap();
        s.finish(a, GrantState::Active, None, Some((1, "h1")))
            .await
            .unwrap();
        assert_eq!(s.grant(a).await.unwrap().unwrap().state, GrantState::Active);
    }

    /// The live rows as SQLite has them (the index must agree).
    async fn live_on_disk(s: &Store) -> Vec<GrantRow> {
        let rows = sqlx::query(SELECT_LIVE).fetch_all(s.pool()).await.unwrap();
        rows.iter().map(|r| row_to_grant(r).unwrap()).collect()
    }

    #[tokio::test]
    async fn the_live_index_follows_every_write_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s/state.db");
        let s = Store::open(&path).await.unwrap();
        let agree = |s: Store| async move {
            assert_eq!(s.live_grants().await.unwrap(), live_on_disk(&s).await);
        };
        let a = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        let b = s.insert_granting(&sample("1002", "2")).await.unwrap().id;
        agree(s.clone()).await;
        s.finish(a, GrantState::Active, None, None).await.unwrap();
        s.set_grant_state(b, GrantState::Active, None)
            .await
            .unwrap();
        agree(s.clone()).await;
        s.set_access_ips(a, &[SupportIp::parse("198.51.100.0/24").unwrap()])
            .await
            .unwrap();
        s.set_ticket_status(b, "CLOSED").await.unwrap();
        agree(s.clone()).await;
        s.mark_revoking(a, "expire").await.unwrap();
        agree(s.clone()).await;
        assert_eq!(
            s.due_for_expiry(1_000).await.unwrap().len(),
            1,
            "only b is active"
        );
        s.finish(a, GrantState::Revoked, Some((150, "expire")), None)
            .await
            .unwrap();
        agree(s.clone()).await;
        assert_eq!(s.live_grants().await.unwrap().len(), 1);
        let only_b = s
            .list_live(
                None,
                Some(ServerNum::parse("2").unwrap()),
                Some(&Username::root()),
            )
            .await
            .unwrap();
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].ticket_status, "CLOSED");
        // A revoked row is history: marking it again changes nothing live.
        s.mark_revoking(a, "revoke").await.unwrap();
        agree(s.clone()).await;
        // A failed statement leaves the index as it was.
        sqlx::query("ALTER TABLE grants RENAME TO grants_away")
            .execute(s.pool())
            .await
            .unwrap();
        assert!(s.set_ticket_status(b, "OPEN").await.is_err());
        assert_eq!(s.live_grants().await.unwrap()[0].ticket_status, "CLOSED");
        sqlx::query("ALTER TABLE grants_away RENAME TO grants")
            .execute(s.pool())
            .await
            .unwrap();
        let before = s.live_grants().await.unwrap();
        s.close().await;
        let reopened = Store::open(&path).await.unwrap();
        assert_eq!(reopened.live_grants().await.unwrap(), before);
    }
}
