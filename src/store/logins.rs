//! The login watcher's state (migrations/0004_login_watch.sql): the log
//! position and the support sessions. Every change that goes with an audit
//! record is one transaction with that record's chain head.

use std::collections::HashMap;

use sqlx::Row;

use super::grants::save_audit_head;
use super::{Store, StoreError};
use crate::logins::matcher::OpenSession;
use crate::logins::source::{Mark, Position};
use crate::types::Username;

/// A session to record at login.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub grant_id: i64,
    pub user: Username,
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub fingerprint: String,
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    pub in_window: bool,
    pub started_at: i64,
}

/// Logins per grant, for `ticket_list`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginStats {
    pub count: u64,
    pub last: Option<i64>,
}

/// A position to save, in the source named by `source` (`file:<path>`
/// or `journal`).
pub type Saved<'a> = (&'a str, &'a Mark);

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// The position saved for `source`, if it is the one followed last.
    pub async fn login_position(&self, source: &str) -> Result<Option<Mark>, StoreError> {
        let row: Option<(String, i64, i64, String)> =
            sqlx::query_as("SELECT source, inode, offset, cursor FROM login_position WHERE id = 1")
                .fetch_optional(self.pool())
                .await?;
        Ok(row
            .filter(|(s, ..)| s == source)
            .map(|(s, inode, offset, cursor)| {
                if s.starts_with("file:") {
                    Mark::File(Position {
                        inode: inode as u64,
                        offset: offset.max(0) as u64,
                    })
                } else if cursor.is_empty() {
                    Mark::Since(offset)
                } else {
                    Mark::Cursor(cursor)
                }
            }))
    }

    /// Saves the position alone (lines that produced no record).
    pub async fn save_login_position(&self, at: Saved<'_>) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        save_position(&mut conn, at).await?;
        Ok(())
    }

    /// Records a login, the position after its line and its audit head, in
    /// one transaction. Returns the session id.
    pub async fn record_login(
        &self,
        s: &NewSession,
        at: Saved<'_>,
        head: Option<(u64, &str)>,
    ) -> Result<i64, StoreError> {
        let mut tx = super::WriteTx::begin(self.pool()).await?;
        let body = async {
            let id = sqlx::query(
            "INSERT INTO support_sessions (grant_id, ssh_username, address, port, fingerprint, \
             pid, pid_start, in_window, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(s.grant_id)
        .bind(s.user.as_str())
        .bind(s.addr.to_string())
        .bind(i64::from(s.port))
        .bind(&s.fingerprint)
        .bind(s.pid.map(i64::from))
        .bind(s.pid_start.map(|t| t as i64))
        .bind(s.in_window as i64)
        .bind(s.started_at)
        .execute(tx.conn())
        .await?
        .last_insert_rowid();
            save_position(tx.conn(), at).await?;
            if let Some((seq, hash)) = head {
                save_audit_head(tx.conn(), seq, hash).await?;
            }
            Ok(id)
        }
        .await;
        Ok(tx.finish(body).await?)
    }

    /// Ends a session (logout, or ended by supportauth), with the position
    /// after the line that said so (none when supportauth ended it) and
    /// the audit head, in one transaction.
    pub async fn end_session(
        &self,
        id: i64,
        ended_at: i64,
        reason: &str,
        at: Option<Saved<'_>>,
        head: Option<(u64, &str)>,
    ) -> Result<(), StoreError> {
        let mut tx = super::WriteTx::begin(self.pool()).await?;
        let body = async {
            sqlx::query(
                "UPDATE support_sessions SET ended_at = ?1, end_reason = ?2 \
                 WHERE id = ?3 AND ended_at IS NULL",
            )
            .bind(ended_at)
            .bind(reason)
            .bind(id)
            .execute(tx.conn())
            .await?;
            if let Some(at) = at {
                save_position(tx.conn(), at).await?;
            }
            if let Some((seq, hash)) = head {
                save_audit_head(tx.conn(), seq, hash).await?;
            }
            Ok(())
        }
        .await;
        Ok(tx.finish(body).await?)
    }

    /// Sessions not ended yet, oldest first.
    pub async fn open_sessions(&self) -> Result<Vec<OpenSession>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, grant_id, ssh_username, address, port, fingerprint, pid, pid_start, \
             started_at FROM support_sessions WHERE ended_at IS NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let port: i64 = r.try_get("port")?;
                let pid: Option<i64> = r.try_get("pid")?;
                let start: Option<i64> = r.try_get("pid_start")?;
                Ok(OpenSession {
                    id: r.try_get("id")?,
                    grant_id: r.try_get("grant_id")?,
                    user: Username::parse(&r.try_get::<String, _>("ssh_username")?)
                        .map_err(corrupt)?,
                    addr: r
                        .try_get::<String, _>("address")?
                        .parse()
                        .map_err(corrupt)?,
                    port: u16::try_from(port).map_err(corrupt)?,
                    fingerprint: r.try_get("fingerprint")?,
                    pid: pid.map(u32::try_from).transpose().map_err(corrupt)?,
                    pid_start: start.map(|t| t as u64),
                    started_at: r.try_get("started_at")?,
                })
            })
            .collect()
    }

    /// Logins (in the window or not) and the last one, per grant id.
    pub async fn login_stats(&self) -> Result<HashMap<i64, LoginStats>, StoreError> {
        let rows: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT grant_id, count(*), max(started_at) FROM support_sessions GROUP BY grant_id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, n, last)| {
                (
                    id,
                    LoginStats {
                        count: n.max(0) as u64,
                        last,
                    },
                )
            })
            .collect())
    }
}

async fn save_position(
    conn: &mut sqlx::SqliteConnection,
    at: Saved<'_>,
) -> Result<(), sqlx::Error> {
    let (source, mark) = at;
    let (inode, offset, cursor) = match mark {
        Mark::File(p) => (p.inode as i64, p.offset as i64, ""),
        Mark::Cursor(c) => (0, 0, c.as_str()),
        Mark::Since(t) => (0, *t, ""),
    };
    sqlx::query(
        "INSERT INTO login_position (id, source, inode, offset, cursor) VALUES (1, ?1, ?2, ?3, ?4) \
         ON CONFLICT(id) DO UPDATE SET source = excluded.source, inode = excluded.inode, \
         offset = excluded.offset, cursor = excluded.cursor",
    )
    .bind(source)
    .bind(inode)
    .bind(offset)
    .bind(cursor)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::grants::tests::sample;

    #[tokio::test]
    async fn sessions_positions_and_stats() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s/state.db")).await.unwrap();
        let g = s.insert_granting(&sample("1234", "1")).await.unwrap();
        assert_eq!(s.login_position("file:/a").await.unwrap(), None);
        let pos = Mark::File(Position {
            inode: 9,
            offset: 100,
        });
        let new = NewSession {
            grant_id: g.id,
            user: Username::root(),
            addr: "203.0.113.5".parse().unwrap(),
            port: 4000,
            fingerprint: "SHA256:x".into(),
            pid: Some(77),
            pid_start: Some(5),
            in_window: true,
            started_at: 1000,
        };
        let id = s
            .record_login(&new, ("file:/a", &pos), Some((3, "h")))
            .await
            .unwrap();
        assert_eq!(
            s.login_position("file:/a").await.unwrap(),
            Some(pos.clone())
        );
        assert_eq!(s.login_position("file:/b").await.unwrap(), None);
        assert_eq!(s.audit_head().await.unwrap(), Some((3, "h".into())));
        let open = s.open_sessions().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].id, open[0].pid, open[0].port),
            (id, Some(77), 4000)
        );
        s.record_login(&new, ("file:/a", &pos), None).await.unwrap();
        let stats = s.login_stats().await.unwrap();
        assert_eq!(
            stats.get(&g.id),
            Some(&LoginStats {
                count: 2,
                last: Some(1000)
            })
        );
        s.end_session(id, 1060, "logout", None, None).await.unwrap();
        assert_eq!(s.open_sessions().await.unwrap().len(), 1);
        for mark in [Mark::Since(1234), Mark::Cursor("s=ab;i=3".into())] {
            s.save_login_position(("journal", &mark)).await.unwrap();
            assert_eq!(s.login_position("journal").await.unwrap(), Some(mark));
            assert_eq!(s.login_position("file:/a").await.unwrap(), None);
        }
    }
}
