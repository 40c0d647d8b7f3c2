//! The audit records waiting for a log that could not be written (see
//! migrations/0003_audit_backlog.sql and `audit::writer`).

use super::{Store, StoreError};

impl Store {
    /// Keeps one record (JSON) durably; returns its id.
    pub async fn keep_audit_record(&self, json: &str) -> Result<i64, StoreError> {
        let done = sqlx::query("INSERT INTO audit_backlog (event) VALUES (?1)")
            .bind(json)
            .execute(self.pool())
            .await?;
        Ok(done.last_insert_rowid())
    }

    /// Every kept record, oldest first.
    pub async fn kept_audit_records(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, event FROM audit_backlog ORDER BY id")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Forgets kept records that are in the log now.
    pub async fn forget_audit_records(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = super::WriteTx::begin(self.pool()).await?;
        let body = async {
            for id in ids {
                sqlx::query("DELETE FROM audit_backlog WHERE id = ?1")
                    .bind(id)
                    .execute(tx.conn())
                    .await?;
            }
            Ok(())
        }
        .await;
        tx.finish(body).await?;
        Ok(())
    }
}
