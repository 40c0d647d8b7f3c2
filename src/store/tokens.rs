//! API token rows. Only a SHA-256 of each token is stored; the token value
//! itself exists only in the answer to `api_token_create`.

use sqlx::{Row, SqlitePool};

use crate::domain::caller::Acl;
use crate::store::StoreError;
use crate::types::{Cidr, TokenName};

/// A stored token, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: TokenName,
    /// The WHM user it authenticates as (always "root" here).
    pub owner: String,
    pub create_time: i64,
    /// None: never expires.
    pub expires_at: Option<i64>,
    pub acls: Vec<Acl>,
    /// None: usable from any address.
    pub whitelist_ips: Option<Vec<Cidr>>,
}

impl TokenRecord {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("an API token named “{0}” already exists")]
    Duplicate(TokenName),
    #[error("no API token named “{0}” exists")]
    NotFound(TokenName),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TokenStoreError {
    fn from(e: sqlx::Error) -> Self {
        TokenStoreError::Store(StoreError::Sql(e))
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn row_to_record(row: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord, StoreError> {
    let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("api_tokens.{what}: {e}"));
    let name: String = row.try_get("name")?;
    let acls: String = row.try_get("acls")?;
    let wl: Option<String> = row.try_get("whitelist_ips")?;
    Ok(TokenRecord {
        name: TokenName::parse(&name).map_err(|e| corrupt("name", e.0))?,
        owner: row.try_get("owner")?,
        create_time: row.try_get("create_time")?,
        expires_at: row.try_get("expires_at")?,
        acls: serde_json::from_str(&acls).map_err(|e| corrupt("acls", e.to_string()))?,
        whitelist_ips: wl
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| corrupt("whitelist_ips", e.to_string()))?,
    })
}

/// Stores a new token; a name already in use is [`TokenStoreError::Duplicate`].
/// Only through [`Store::insert_token`](crate::store::Store::insert_token),
/// which keeps the token table in step.
pub(super) async fn insert(
    pool: &SqlitePool,
    rec: &TokenRecord,
    token_hash: &[u8; 32],
) -> Result<(), TokenStoreError> {
    let acls = to_json(&rec.acls)?;
    let wl = rec.whitelist_ips.as_ref().map(to_json).transpose()?;
    let res = sqlx::query(
        "INSERT INTO api_tokens (name, owner, token_hash, create_time, expires_at, acls, whitelist_ips) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(rec.name.as_str())
    .bind(&rec.owner)
    .bind(&token_hash[..])
    .bind(rec.create_time)
    .bind(rec.expires_at)
    .bind(acls)
    .bind(wl)
    .execute(pool)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(TokenStoreError::Duplicate(rec.name.clone())),
        Err(e) => Err(e.into()),
    }
}

/// The token whose stored hash equals `token_hash`, with that stored hash
/// (so the caller can compare it in constant time).
pub async fn find_by_hash(
    pool: &SqlitePool,
    token_hash: &[u8; 32],
) -> Result<Option<(TokenRecord, Vec<u8>)>, StoreError> {
    let row = sqlx::query(
        "SELECT name, owner, create_time, expires_at, acls, whitelist_ips, token_hash \
         FROM api_tokens WHERE token_hash = ?",
    )
    .bind(&token_hash[..])
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => {
            let hash: Vec<u8> = row.try_get("token_hash")?;
            Ok(Some((row_to_record(&row)?, hash)))
        }
        None => Ok(None),
    }
}

/// Every token with its stored hash (to load the token table).
pub async fn all_with_hashes(pool: &SqlitePool) -> Result<Vec<(TokenRecord, Vec<u8>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, owner, create_time, expires_at, acls, whitelist_ips, token_hash \
         FROM api_tokens",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row_to_record(row)?, row.try_get("token_hash")?)))
        .collect()
}

pub(super) async fn get(
    pool: &SqlitePool,
    name: &TokenName,
) -> Result<Option<TokenRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT name, owner, create_time, expires_at, acls, whitelist_ips \
         FROM api_tokens WHERE name = ?",
    )
    .bind(name.as_str())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(row_to_record).transpose()
}

/// Every token, ordered by name.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<TokenRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, owner, create_time, expires_at, acls, whitelist_ips \
         FROM api_tokens ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(row_to_record).collect()
}

/// Deletes a token; [`TokenStoreError::NotFound`] when there was none.
/// Only through [`Store::delete_token`](crate::store::Store::delete_token).
pub(super) async fn delete(pool: &SqlitePool, name: &TokenName) -> Result<(), TokenStoreError> {
    let res = sqlx::query("DELETE FROM api_tokens WHERE name = ?")
        .bind(name.as_str())
        .execute(pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(TokenStoreError::NotFound(name.clone()));
    }
    Ok(())
}

/// Rewrites the token stored as `old_name` with `rec` (which may carry a new
/// name); the hash and creation time are kept. Only through
/// [`Store::update_token`](crate::store::Store::update_token).
pub(super) async fn update(
    pool: &SqlitePool,
    old_name: &TokenName,
    rec: &TokenRecord,
) -> Result<(), TokenStoreError> {
    let acls = to_json(&rec.acls)?;
    let wl = rec.whitelist_ips.as_ref().map(to_json).transpose()?;
    let res = sqlx::query(
        "UPDATE api_tokens SET name = ?, expires_at = ?, acls = ?, whitelist_ips = ? WHERE name = ?",
    )
    .bind(rec.name.as_str())
    .bind(rec.expires_at)
    .bind(acls)
    .bind(wl)
    .bind(old_name.as_str())
    .execute(pool)
    .await;
    match res {
        Ok(r) if r.rows_affected() == 0 => Err(TokenStoreError::NotFound(old_name.clone())),
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(TokenStoreError::Duplicate(rec.name.clone())),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn rec(name: &str) -> TokenRecord {
        TokenRecord {
            name: TokenName::parse(name).unwrap(),
            owner: "root".into(),
            create_time: 100,
            expires_at: Some(200),
            acls: vec![Acl::TicketsList],
            whitelist_ips: Some(vec![Cidr::parse("192.0.2.0/24").unwrap()]),
        }
    }

    #[tokio::test]
    async fn round_trip_duplicate_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s/state.db")).await.unwrap();
        let pool = store.pool();
        let h = [7u8; 32];
        insert(pool, &rec("a"), &h).await.unwrap();
        assert!(matches!(
            insert(pool, &rec("a"), &[8u8; 32]).await,
            Err(TokenStoreError::Duplicate(_))
        ));
        let (found, hash) = find_by_hash(pool, &h).await.unwrap().unwrap();
        assert_eq!(found, rec("a"));
        assert_eq!(hash, h.to_vec());
        assert!(found.is_expired(200) && !found.is_expired(199));

        insert(pool, &rec("b"), &[9u8; 32]).await.unwrap();
        let mut renamed = rec("c");
        renamed.whitelist_ips = None;
        update(pool, &TokenName::parse("a").unwrap(), &renamed)
            .await
            .unwrap();
        assert!(matches!(
            update(pool, &TokenName::parse("c").unwrap(), &rec("b")).await,
            Err(TokenStoreError::Duplicate(_))
        ));
        let names: Vec<String> = list(pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(names, vec!["b", "c"]);
        let (c, _) = find_by_hash(pool, &h).await.unwrap().unwrap();
        assert_eq!(c.whitelist_ips, None);
        delete(pool, &TokenName::parse("c").unwrap()).await.unwrap();
        assert!(matches!(
            delete(pool, &TokenName::parse("c").unwrap()).await,
            Err(TokenStoreError::NotFound(_))
        ));
        assert!(find_by_hash(pool, &h).await.unwrap().is_none());
    }
}
