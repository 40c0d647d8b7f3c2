//! The OAuth2 session with the portal, kept in the store (0600 database).
//! Tokens live in [`Tokens`], whose Debug never shows them.

use super::{Store, StoreError};

#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub async fn load(store: &Store) -> Result<Option<Tokens>, StoreError> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT access_token, refresh_token, expires_at FROM portal_session WHERE id = 1",
    )
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(|(access, refresh, expires_at)| Tokens {
        access,
        refresh,
        expires_at,
    }))
}

pub async fn save(store: &Store, t: &Tokens, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO portal_session (id, access_token, refresh_token, expires_at, obtained_at) \
         VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET access_token = ?1, \
         refresh_token = ?2, expires_at = ?3, obtained_at = ?4",
    )
    .bind(&t.access)
    .bind(&t.refresh)
    .bind(t.expires_at)
    .bind(now)
    .execute(store.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_replace() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s/state.db")).await.unwrap();
        assert!(load(&s).await.unwrap().is_none());
        let t = Tokens {
            access: "a1".into(),
            refresh: "r1".into(),
            expires_at: 100,
        };
        save(&s, &t, 1).await.unwrap();
        let t2 = Tokens {
            access: "a2".into(),
            ..t.clone()
        };
        save(&s, &t2, 2).await.unwrap();
        assert_eq!(load(&s).await.unwrap(), Some(t2));
        assert!(!format!("{t:?}").contains("a1"));
    }
}
