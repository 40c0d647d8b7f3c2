//! Grant rows: the desired state of access, and the intent log that makes
//! grants and revokes crash-safe (see migrations/0001_initial.sql). SQLite
//! is the only copy: every read asks it, every write is one fsynced
//! statement or transaction (a script sent whole, see
//! `store::write_script`; its connection is closed, so rolled back, on
//! any error).

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{Store, StoreError};
pub use crate::domain::{GrantRow, GrantSource, GrantState, NewGrant, TicketStatus};
use crate::types::{ServerNum, SupportIp, TicketId, Username};

/// A compile-time `SELECT <every column> FROM grants <tail>`: SQL text is
/// never assembled at run time.
macro_rules! select_grants {
    ($($tail:tt)+) => {
        concat!("SELECT ", grant_columns!(), " FROM grants ", $($tail)+)
    };
}

/// Every column [`row_to_grant`] reads.
macro_rules! grant_columns {
    () => {
        concat!(
            "id, ticket_id, server_num, state, source, ssh_username, temp_user, ",
            "sudoers_dropin, ssh_dir_created, ssh_key, key_fingerprint, key_comment, access_ips, server_name, ",
            "ticket_subject, ssh_ip, ssh_port, whm_ip, ticket_status, created_at, expires_at, ",
            "ended_at, end_reason, granted_by"
        )
    };
}

/// Saves the audit chain head (`seq`, `hash`: parameters) when `seq` is
/// not NULL; it only ever moves forward. (The `WHERE` after the SELECT is
/// also what SQLite needs to parse an upsert of a SELECT.)
macro_rules! upsert_audit_head {
    ($seq:literal, $hash:literal) => {
        concat!(
            "INSERT INTO audit_head (id, seq, hash) SELECT 1, ",
            $seq,
            ", ",
            $hash,
            " WHERE ",
            $seq,
            " IS NOT NULL ",
            "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash ",
            "WHERE excluded.seq > audit_head.seq"
        )
    };
}

/// Every live row, by ticket and server.
macro_rules! select_live {
    () => {
        select_grants!(
            "WHERE state IN ('granting','active','revoking') ORDER BY ticket_id, server_num, id"
        )
    };
}
const SELECT_LIVE: &str = select_live!();

/// See [`Store::grant_context`].
const GRANT_CONTEXT: &str = select_grants!(
    "WHERE state IN ('granting','active','revoking') \
     OR (ticket_id = ?1 AND server_num = ?2) ORDER BY ticket_id, server_num, id"
);

/// See [`Store::grants_with_fingerprint`].
const BY_FINGERPRINT: &str = select_grants!("WHERE key_fingerprint = ?1 ORDER BY id");

/// See [`Store::mark_revoking_matching`].
const MARK_REVOKING_MATCHING: &str = concat!(
    "UPDATE grants SET state = 'revoking', end_reason = ?1 ",
    "WHERE state IN ('granting','active','revoking') AND ticket_id = ?2 ",
    "AND (?3 IS NULL OR server_num = ?3) AND ssh_username = ?4 RETURNING ",
    grant_columns!()
);

/// See [`Store::grant_context`].
#[derive(Debug, Default)]
pub struct GrantContext {
    /// Every live grant (granting, active, revoking).
    pub live: Vec<GrantRow>,
    /// The key comments of every grant the ticket and server ever had.
    pub slot_comments: Vec<String>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A text column that must hold one of an enum's names.
fn parse_column<T>(
    r: &SqliteRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = r.try_get(column)?;
    parse(&text).ok_or_else(|| corrupt(format!("unknown {column} {text:?}")))
}

fn row_to_grant(r: &SqliteRow) -> Result<GrantRow, StoreError> {
    let ips_json: String = r.try_get("access_ips")?;
    let access_ips: Vec<SupportIp> = serde_json::from_str(&ips_json).map_err(corrupt)?;
    let port: i64 = r.try_get("ssh_port")?;
    Ok(GrantRow {
        id: r.try_get("id")?,
        ticket: TicketId::from_stored(r.try_get("ticket_id")?).map_err(corrupt)?,
        server: ServerNum::from_stored(r.try_get("server_num")?).map_err(corrupt)?,
        state: parse_column(r, "state", GrantState::parse)?,
        source: parse_column(r, "source", GrantSource::parse)?,
        ssh_username: Username::parse(&r.try_get::<String, _>("ssh_username")?).map_err(corrupt)?,
        temp_user: r.try_get::<i64, _>("temp_user")? != 0,
        sudoers_dropin: r.try_get::<i64, _>("sudoers_dropin")? != 0,
        ssh_dir_created: r.try_get::<i64, _>("ssh_dir_created")? != 0,
        ssh_key: r.try_get("ssh_key")?,
        key_fingerprint: r.try_get("key_fingerprint")?,
        key_comment: r.try_get("key_comment")?,
        access_ips,
        server_name: r.try_get("server_name")?,
        ticket_subject: r.try_get("ticket_subject")?,
        ssh_ip: r.try_get("ssh_ip")?,
        ssh_port: u16::try_from(port).map_err(corrupt)?,
        whm_ip: r.try_get("whm_ip")?,
        ticket_status: parse_column(r, "ticket_status", TicketStatus::parse)?,
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

impl GrantRow {
    /// Whether this row passes ticket_list's optional filters.
    pub fn matches(
        &self,
        ticket: Option<TicketId>,
        server: Option<ServerNum>,
        user: Option<&Username>,
    ) -> bool {
        ticket.is_none_or(|t| t == self.ticket)
            && server.is_none_or(|s| s == self.server)
            && user.is_none_or(|u| u == &self.ssh_username)
    }
}

impl Store {
    /// Records the intent to grant (state `granting`), durably, and returns
    /// the row as stored; fails with [`AlreadyLive`] when (ticket, server)
    /// already has a live grant.
    pub async fn insert_granting(&self, g: &NewGrant) -> Result<GrantRow, InsertError> {
        let ips = serde_json::to_string(&g.access_ips).map_err(corrupt)?;
        let res = sqlx::query(
            "INSERT INTO grants (ticket_id, server_num, state, source, ssh_username, temp_user, \
             sudoers_dropin, ssh_key, key_fingerprint, key_comment, access_ips, server_name, \
             ticket_subject, ssh_ip, ssh_port, whm_ip, created_at, expires_at, granted_by, \
             ssh_dir_created) \
             VALUES (?1, ?2, 'granting', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )
        .bind(g.ticket.as_i64())
        .bind(g.server.as_i64())
        .bind(g.source.as_str())
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
        .bind(&g.granted_by)
        .bind(g.ssh_dir_created as i64)
        .execute(self.pool())
        .await;
        match res {
            Ok(done) => Ok(g.stored_as(done.last_insert_rowid())),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(AlreadyLive {
                ticket: g.ticket,
                server: g.server,
            }
            .into()),
            Err(e) => Err(StoreError::Sql(e).into()),
        }
    }

    /// Marks a grant or revoke done (`state`, and `ended` for a revoke)
    /// together with the audit chain head of its closing records, in one
    /// durable transaction: the step before the answer. The head only
    /// ever moves forward (a later record's head saved meanwhile is kept).
    /// Returns the live grants as that transaction left them (read inside
    /// it), which the whitelist then follows. One script: one request to
    /// SQLite's thread for the whole transaction.
    pub async fn finish(
        &self,
        id: i64,
        state: GrantState,
        ended: Option<(i64, &str)>,
        audit_head: Option<(u64, &str)>,
    ) -> Result<Vec<GrantRow>, StoreError> {
        const FINISH: &str = concat!(
            "BEGIN IMMEDIATE; ",
            "UPDATE grants SET state = ?1, ended_at = COALESCE(?2, ended_at), ",
            "end_reason = COALESCE(?3, end_reason) WHERE id = ?4; ",
            upsert_audit_head!("?5", "?6"),
            "; ",
            select_live!(),
            "; COMMIT"
        );
        let rows = super::write_script(
            self.pool(),
            sqlx::query(FINISH)
                .bind(state.as_str())
                .bind(ended.map(|(t, _)| t))
                .bind(ended.map(|(_, r)| r))
                .bind(id)
                .bind(audit_head.map(|(seq, _)| seq as i64))
                .bind(audit_head.map(|(_, hash)| hash)),
        )
        .await?;
        rows.iter().map(row_to_grant).collect()
    }

    /// Moves an active grant's end (`None`: no expiry) together with the
    /// audit chain head of its `grant_extended` record, in one durable
    /// transaction: an extension's done mark. False when the grant is no
    /// longer active (nothing changed).
    pub async fn set_expiry(
        &self,
        id: i64,
        expires_at: Option<i64>,
        audit_head: Option<(u64, &str)>,
    ) -> Result<bool, StoreError> {
        const SET_EXPIRY: &str = concat!(
            "BEGIN IMMEDIATE; ",
            "UPDATE grants SET expires_at = ?1 WHERE id = ?2 AND state = 'active' RETURNING id; ",
            upsert_audit_head!("?3", "?4"),
            "; COMMIT"
        );
        let changed = super::write_script(
            self.pool(),
            sqlx::query(SET_EXPIRY)
                .bind(expires_at)
                .bind(id)
                .bind(audit_head.map(|(seq, _)| seq as i64))
                .bind(audit_head.map(|(_, hash)| hash)),
        )
        .await?
        .len();
        Ok(changed == 1)
    }

    /// Moves a grant to `state`; `ended` sets ended_at and end_reason.
    pub async fn set_grant_state(
        &self,
        id: i64,
        state: GrantState,
        ended: Option<(i64, &str)>,
    ) -> Result<(), StoreError> {
        self.finish(id, state, ended, None).await.map(|_| ())
    }

    /// Marks a grant as being revoked, remembering why (so a crash mid-way
    /// is finished with the same reason). Durable when it returns.
    pub async fn mark_revoking(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE grants SET state = 'revoking', end_reason = ?1 WHERE id = ?2 \
             AND state IN ('active','revoking','granting')",
        )
        .bind(reason)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks the live grants of `ticket` (one server or all) for `user` as
    /// being revoked, remembering why, and returns them (by ticket, server
    /// and id): a revoke's intent and the read that finds its grants in one
    /// statement. Durable when it returns.
    pub async fn mark_revoking_matching(
        &self,
        ticket: TicketId,
        server: Option<ServerNum>,
        user: &Username,
        reason: &str,
    ) -> Result<Vec<GrantRow>, StoreError> {
        let rows = sqlx::query(MARK_REVOKING_MATCHING)
            .bind(reason)
            .bind(ticket.as_i64())
            .bind(server.map(ServerNum::as_i64))
            .bind(user.as_str())
            .fetch_all(self.pool())
            .await?;
        let mut rows = rows
            .iter()
            .map(row_to_grant)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order.
        rows.sort_by_key(|g| (g.ticket, g.server, g.id));
        Ok(rows)
    }

    /// Replaces a grant's support addresses (the configured list changed).
    pub async fn set_access_ips(&self, id: i64, ips: &[SupportIp]) -> Result<(), StoreError> {
        let json = serde_json::to_string(ips).map_err(corrupt)?;
        sqlx::query("UPDATE grants SET access_ips = ?1 WHERE id = ?2")
            .bind(json)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_ticket_status(&self, id: i64, status: TicketStatus) -> Result<(), StoreError> {
        sqlx::query("UPDATE grants SET ticket_status = ?1 WHERE id = ?2")
            .bind(status.as_str())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn grant(&self, id: i64) -> Result<Option<GrantRow>, StoreError> {
        let row = sqlx::query(select_grants!("WHERE id = ?1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(row_to_grant).transpose()
    }

    /// Grants that may have a footprint on the host (granting, active or
    /// revoking), by ticket and server.
    pub async fn live_grants(&self) -> Result<Vec<GrantRow>, StoreError> {
        sqlx::query(SELECT_LIVE)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(row_to_grant)
            .collect()
    }

    /// [`Self::live_grants`], shared (ticket_list).
    pub async fn live_snapshot(&self) -> Result<std::sync::Arc<[GrantRow]>, StoreError> {
        Ok(self.live_grants().await?.into())
    }

    /// Active grants whose end time has come, soonest first.
    pub async fn due_for_expiry(&self, now: i64) -> Result<Vec<GrantRow>, StoreError> {
        sqlx::query(select_grants!(
            "WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at <= ?1 \
             ORDER BY expires_at, id"
        ))
        .bind(now)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(row_to_grant)
        .collect()
    }

    /// The earliest end time of an active grant, for the expiry timer.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(expires_at) FROM grants WHERE state = 'active' AND expires_at IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await?)
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

    /// What a new grant of (ticket, server) is checked against, in one
    /// read: the live grants, and the key comment of every grant the slot
    /// ever had (so the new one can be made unique).
    pub async fn grant_context(
        &self,
        ticket: TicketId,
        server: ServerNum,
    ) -> Result<GrantContext, StoreError> {
        let rows = sqlx::query(GRANT_CONTEXT)
            .bind(ticket.as_i64())
            .bind(server.as_i64())
            .fetch_all(self.pool())
            .await?;
        let mut ctx = GrantContext::default();
        for row in rows.iter().map(row_to_grant) {
            let row = row?;
            if row.ticket == ticket && row.server == server {
                ctx.slot_comments.push(row.key_comment.clone());
            }
            if row.state.is_live() {
                ctx.live.push(row);
            }
        }
        Ok(ctx)
    }

    /// Every grant ever made with the key of this fingerprint (any state).
    pub async fn grants_with_fingerprint(&self, fp: &str) -> Result<Vec<GrantRow>, StoreError> {
        sqlx::query(BY_FINGERPRINT)
            .bind(fp)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(row_to_grant)
            .collect()
    }

    /// Live grants, optionally filtered, by ticket and server.
    pub async fn list_live(
        &self,
        ticket: Option<TicketId>,
        server: Option<ServerNum>,
        user: Option<&Username>,
    ) -> Result<Vec<GrantRow>, StoreError> {
        let mut rows = self.live_grants().await?;
        rows.retain(|g| g.matches(ticket, server, user));
        Ok(rows)
    }
}

impl Store {
    /// The audit chain head (seq, hash) the store holds, if any.
    pub async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(seq, hash)| (seq.max(0) as u64, hash)))
    }

    /// Saves an audit chain head on its own; it only ever moves forward.
    pub async fn save_audit_head(&self, seq: u64, hash: &str) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        save_audit_head(&mut conn, seq, hash).await?;
        Ok(())
    }
}

/// Saves an audit chain head inside `tx`; it only ever moves forward.
pub(crate) async fn save_audit_head(
    tx: &mut sqlx::SqliteConnection,
    seq: u64,
    hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(upsert_audit_head!("?1", "?2"))
        .bind(seq as i64)
        .bind(hash)
        .execute(tx)
        .await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(ticket: &str, server: &str) -> NewGrant {
        NewGrant {
            ticket: TicketId::parse(ticket).unwrap(),
            server: ServerNum::parse(server).unwrap(),
            source: GrantSource::Local,
            ssh_username: Username::root(),
            temp_user: false,
            sudoers_dropin: false,
            ssh_dir_created: false,
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
        assert_eq!(row.ticket_status, TicketStatus::Open);
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

    /// The lookups of every grant and revoke (and the login watcher's) go
    /// through an index: none reads every grant the server ever had (the
    /// slot's earlier comments did, until migration 0006).
    #[tokio::test]
    async fn hot_lookups_never_scan_the_grants_table() {
        let (_d, s) = store().await;
        for sql in [
            SELECT_LIVE,
            GRANT_CONTEXT,
            BY_FINGERPRINT,
            MARK_REVOKING_MATCHING,
        ] {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(s.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
            assert!(
                !plan.iter().any(|d| d.starts_with("SCAN grants")),
                "{sql}: {plan:?}"
            );
        }
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

    #[tokio::test]
    async fn set_expiry_moves_an_active_grant_only_and_all_or_nothing() {
        let (_d, s) = store().await;
        let a = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        assert!(
            !s.set_expiry(a, Some(50), None).await.unwrap(),
            "not active yet"
        );
        s.finish(a, GrantState::Active, None, None).await.unwrap();
        assert!(s.set_expiry(a, Some(60), Some((3, "h3"))).await.unwrap());
        assert_eq!(s.grant(a).await.unwrap().unwrap().expires_at, Some(60));
        assert_eq!(stored_head(&s).await, Some((3, "h3".to_string())));
        sqlx::query("ALTER TABLE audit_head RENAME TO audit_head_away")
            .execute(s.pool())
            .await
            .unwrap();
        assert!(s.set_expiry(a, Some(70), Some((4, "h4"))).await.is_err());
        assert_eq!(s.grant(a).await.unwrap().unwrap().expires_at, Some(60));
    }

    /// Issue 14, findings 4 and 7: a done mark (of a grant, in either
    /// audit format, or of a revoke) is durable when `finish` returns. The
    /// store has one kind of connection, and it fsyncs every commit.
    #[tokio::test]
    async fn every_commit_is_fsynced() {
        let (_d, s) = store().await;
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(s.pool().acquire().await.unwrap());
        }
        for c in &mut conns {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            assert_eq!(level, 2, "synchronous=FULL on every connection");
        }
    }

    #[tokio::test]
    async fn live_grants_follow_every_write_and_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s/state.db");
        let s = Store::open(&path).await.unwrap();
        let a = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        let b = s.insert_granting(&sample("1001", "2")).await.unwrap().id;
        s.finish(a, GrantState::Active, None, None).await.unwrap();
        s.set_ticket_status(b, TicketStatus::Closed).await.unwrap();
        let after = s
            .finish(a, GrantState::Revoked, Some((150, "expire")), None)
            .await
            .unwrap();
        let live = s.live_grants().await.unwrap();
        assert_eq!(after, live, "finish returns the live grants it left");
        assert_eq!(live.len(), 1);
        assert_eq!(
            (live[0].id, live[0].ticket_status),
            (b, TicketStatus::Closed)
        );
        // A grant of (1001, 1) is checked against the live grants and the
        // ended grant's key comment; (1001, 2)'s against its live one.
        let ctx = s
            .grant_context(
                TicketId::parse("1001").unwrap(),
                ServerNum::parse("1").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(ctx.live, live);
        assert_eq!(ctx.slot_comments, ["1001_server_1@cpanel.net_1"]);
        let ctx = s
            .grant_context(
                TicketId::parse("1001").unwrap(),
                ServerNum::parse("2").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(ctx.live, live);
        assert_eq!(ctx.slot_comments, [live[0].key_comment.clone()]);
        s.close().await;
        let reopened = Store::open(&path).await.unwrap();
        assert_eq!(reopened.live_grants().await.unwrap(), live);
    }
}
