//! Notification receivers' cursors and retry state (see
//! migrations/0005_notify.sql and `crate::notify`).

use super::{Store, StoreError};

/// One receiver's row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReceiverState {
    pub receiver: String,
    /// Every record up to this seq is done with.
    pub delivered_seq: i64,
    pub attempts: i64,
    pub first_failed_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub delivered: i64,
    pub given_up: i64,
}

const COLUMNS: &str = "receiver, delivered_seq, attempts, first_failed_at, next_attempt_at, \
     last_success_at, last_error, last_error_at, delivered, given_up";

impl Store {
    /// The receiver's row, created with its cursor at `start_seq` (a new
    /// receiver hears of what happens from now on, not of the past).
    pub async fn notify_receiver(
        &self,
        receiver: &str,
        start_seq: u64,
    ) -> Result<ReceiverState, StoreError> {
        sqlx::query(
            "INSERT INTO notify_receivers (receiver, delivered_seq) VALUES (?1, ?2) \
             ON CONFLICT (receiver) DO NOTHING",
        )
        .bind(receiver)
        .bind(start_seq as i64)
        .execute(self.pool())
        .await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notify_receivers WHERE receiver = ?1"
        ))
        .bind(receiver)
        .fetch_one(self.pool())
        .await?)
    }

    /// The receiver's row, if it has one (read only).
    pub async fn notify_receiver_state(
        &self,
        receiver: &str,
    ) -> Result<Option<ReceiverState>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notify_receivers WHERE receiver = ?1"
        ))
        .bind(receiver)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Every receiver's row.
    pub async fn notify_receivers(&self) -> Result<Vec<ReceiverState>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notify_receivers ORDER BY receiver"
        ))
        .fetch_all(self.pool())
        .await?)
    }

    /// The record `seq` was delivered at `now`: the cursor moves to it.
    pub async fn notify_delivered(
        &self,
        receiver: &str,
        seq: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notify_receivers SET delivered_seq = max(delivered_seq, ?2), attempts = 0, \
             first_failed_at = NULL, next_attempt_at = NULL, last_success_at = ?3, \
             delivered = delivered + 1 WHERE receiver = ?1",
        )
        .bind(receiver)
        .bind(seq as i64)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records up to `seq` are done with without a delivery (not wanted,
    /// given up, dropped over budget); `given_up` counts the last kind.
    pub async fn notify_skip_to(
        &self,
        receiver: &str,
        seq: u64,
        given_up: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notify_receivers SET delivered_seq = max(delivered_seq, ?2), attempts = 0, \
             first_failed_at = NULL, next_attempt_at = NULL, given_up = given_up + ?3 \
             WHERE receiver = ?1",
        )
        .bind(receiver)
        .bind(seq as i64)
        .bind(given_up as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The receiver could not be set up at start (its error shown by
    /// notify status; no attempt is counted).
    pub async fn notify_setup_failed(
        &self,
        receiver: &str,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notify_receivers SET last_error = ?2, last_error_at = ?3, \
             next_attempt_at = NULL WHERE receiver = ?1",
        )
        .bind(receiver)
        .bind(error)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// An attempt failed at `now`; the next one is due at `next_at`.
    pub async fn notify_failed_attempt(
        &self,
        receiver: &str,
        error: &str,
        now: i64,
        next_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notify_receivers SET attempts = attempts + 1, \
             first_failed_at = coalesce(first_failed_at, ?3), next_attempt_at = ?4, \
             last_error = ?2, last_error_at = ?3 WHERE receiver = ?1",
        )
        .bind(receiver)
        .bind(error)
        .bind(now)
        .bind(next_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursor_moves_forward_only_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s/state.db")).await.unwrap();
        let r = store.notify_receiver("mail", 7).await.unwrap();
        assert_eq!((r.delivered_seq, r.attempts), (7, 0));
        // A second call keeps the row as it is.
        assert_eq!(
            store
                .notify_receiver("mail", 99)
                .await
                .unwrap()
                .delivered_seq,
            7
        );
        store
            .notify_failed_attempt("mail", "down", 100, 105)
            .await
            .unwrap();
        store
            .notify_failed_attempt("mail", "still down", 105, 115)
            .await
            .unwrap();
        let r = store.notify_receiver("mail", 0).await.unwrap();
        assert_eq!(r.attempts, 2);
        assert_eq!(r.first_failed_at, Some(100));
        assert_eq!(r.next_attempt_at, Some(115));
        assert_eq!(r.last_error.as_deref(), Some("still down"));
        store.notify_delivered("mail", 8, 120).await.unwrap();
        store.notify_skip_to("mail", 5, 0).await.unwrap();
        let r = store.notify_receiver("mail", 0).await.unwrap();
        assert_eq!((r.delivered_seq, r.attempts, r.delivered), (8, 0, 1));
        assert_eq!((r.first_failed_at, r.last_success_at), (None, Some(120)));
        assert_eq!(store.notify_receivers().await.unwrap().len(), 1);
        assert_eq!(store.notify_receiver_state("mail").await.unwrap(), Some(r));
        assert_eq!(store.notify_receiver_state("other").await.unwrap(), None);
    }
}
