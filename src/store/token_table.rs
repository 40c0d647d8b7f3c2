//! The API tokens in memory, keyed by the SHA-256 of the token, so that
//! authenticating a request costs no SQLite round trip.
//!
//! Why this is authoritative: only the daemon opens the store (it holds
//! the state directory's exclusive `flock`; the CLI goes through the API),
//! and inside the daemon every write to `api_tokens` goes through the
//! methods below. So the table is loaded once when the store is opened and
//! then follows each write. Invariant: after a write to the store
//! succeeded, the table shows it before the write method returns; a
//! failed write leaves the table unchanged. Writes are serialised (one
//! async lock held across the SQL statement and the table update), so the
//! table never applies two writes in another order than the store did.
//! Anything that writes `api_tokens` behind the daemon's back (another
//! process with the database open) is not seen until the next start.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::SqlitePool;

use super::tokens::{self, TokenRecord, TokenStoreError};
use super::{Store, StoreError};
use crate::types::TokenName;

/// One stored token with the hash stored beside it (compared in constant
/// time by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub record: TokenRecord,
    pub hash: [u8; 32],
}

type Map = HashMap<[u8; 32], Arc<TokenEntry>>;

#[derive(Debug, Default)]
pub struct TokenTable {
    map: RwLock<Map>,
    /// Held across "write the store, then update the map".
    writes: tokio::sync::Mutex<()>,
}

impl TokenTable {
    /// Reads every stored token. A stored hash that is not 32 bytes long
    /// could never match a presented token; it is refused as corrupt.
    pub async fn load(pool: &SqlitePool) -> Result<TokenTable, StoreError> {
        let mut map = Map::new();
        for (record, stored) in tokens::all_with_hashes(pool).await? {
            let hash = <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| {
                StoreError::Corrupt(format!(
                    "api_tokens.token_hash of “{}” is {} bytes, not 32",
                    record.name,
                    stored.len()
                ))
            })?;
            map.insert(hash, Arc::new(TokenEntry { record, hash }));
        }
        Ok(TokenTable {
            map: RwLock::new(map),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        // A panic while holding the lock cannot leave a half-applied
        // change: every mutation is a single insert/remove.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The token stored under `hash`, if any.
    pub fn find(&self, hash: &[u8; 32]) -> Option<Arc<TokenEntry>> {
        self.read().get(hash).cloned()
    }

    /// How many tokens the table holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new token, then adds it to the table.
    async fn insert(
        &self,
        pool: &SqlitePool,
        rec: &TokenRecord,
        hash: &[u8; 32],
    ) -> Result<(), TokenStoreError> {
        let _one = self.writes.lock().await;
        tokens::insert(pool, rec, hash).await?;
        self.write().insert(
            *hash,
            Arc::new(TokenEntry {
                record: rec.clone(),
                hash: *hash,
            }),
        );
        Ok(())
    }

    /// Deletes a token from the store, then from the table.
    async fn delete(&self, pool: &SqlitePool, name: &TokenName) -> Result<(), TokenStoreError> {
        let _one = self.writes.lock().await;
        tokens::delete(pool, name).await?;
        self.write().retain(|_, e| &e.record.name != name);
        Ok(())
    }

    /// Rewrites the token stored as `old_name` (hash and creation time are
    /// kept, as in the store), then the table's entry.
    async fn update(
        &self,
        pool: &SqlitePool,
        old_name: &TokenName,
        rec: &TokenRecord,
    ) -> Result<(), TokenStoreError> {
        let _one = self.writes.lock().await;
        tokens::update(pool, old_name, rec).await?;
        let mut map = self.write();
        let key = map
            .iter()
            .find(|(_, e)| &e.record.name == old_name)
            .map(|(k, _)| *k);
        if let Some(key) = key {
            if let Some(old) = map.get(&key) {
                let record = TokenRecord {
                    create_time: old.record.create_time,
                    owner: old.record.owner.clone(),
                    ..rec.clone()
                };
                map.insert(key, Arc::new(TokenEntry { record, hash: key }));
            }
        }
        Ok(())
    }
}

/// Every write to `api_tokens` goes through these (see the module comment).
impl Store {
    /// The token whose SHA-256 is `hash`, from memory.
    pub fn token_by_hash(&self, hash: &[u8; 32]) -> Option<Arc<TokenEntry>> {
        self.tokens().find(hash)
    }

    /// The token named `name`, from the table (the source of truth).
    pub async fn token(&self, name: &TokenName) -> Result<Option<TokenRecord>, StoreError> {
        super::tokens::get(self.pool(), name).await
    }

    /// Every token, ordered by name.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        super::tokens::list(self.pool()).await
    }

    /// Stores a new token; a name in use is [`TokenStoreError::Duplicate`].
    pub async fn insert_token(
        &self,
        rec: &TokenRecord,
        hash: &[u8; 32],
    ) -> Result<(), TokenStoreError> {
        self.tokens().insert(self.pool(), rec, hash).await
    }

    /// Deletes a token; [`TokenStoreError::NotFound`] when there was none.
    pub async fn delete_token(&self, name: &TokenName) -> Result<(), TokenStoreError> {
        self.tokens().delete(self.pool(), name).await
    }

    /// Rewrites the token stored as `old_name` with `rec` (which may carry
    /// a new name); its hash and creation time are kept.
    pub async fn update_token(
        &self,
        old_name: &TokenName,
        rec: &TokenRecord,
    ) -> Result<(), TokenStoreError> {
        self.tokens().update(self.pool(), old_name, rec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::caller::Acl;
    use crate::types::Cidr;

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

    async fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s/state.db")).await.unwrap();
        (d, s)
    }

    /// What a fresh load of the store says, to compare with the live table.
    async fn reloaded(s: &Store) -> Vec<TokenEntry> {
        let t = TokenTable::load(s.pool()).await.unwrap();
        let mut v: Vec<TokenEntry> = t.read().values().map(|e| (**e).clone()).collect();
        v.sort_by(|a, b| a.record.name.as_str().cmp(b.record.name.as_str()));
        v
    }

    fn live(t: &TokenTable) -> Vec<TokenEntry> {
        let mut v: Vec<TokenEntry> = t.read().values().map(|e| (**e).clone()).collect();
        v.sort_by(|a, b| a.record.name.as_str().cmp(b.record.name.as_str()));
        v
    }

    #[tokio::test]
    async fn create_update_revoke_are_reflected() {
        let (_d, s) = store().await;
        let t = s.tokens();
        assert!(t.is_empty());
        s.insert_token(&rec("a"), &[1; 32]).await.unwrap();
        s.insert_token(&rec("b"), &[2; 32]).await.unwrap();
        assert_eq!(t.find(&[1; 32]).unwrap().record, rec("a"));
        assert_eq!(t.find(&[1; 32]).unwrap().hash, [1; 32]);
        assert!(t.find(&[3; 32]).is_none());

        let mut changed = rec("c");
        changed.acls = vec![Acl::All];
        changed.expires_at = None;
        changed.whitelist_ips = None;
        // The store keeps the creation time; so must the table.
        changed.create_time = 999;
        s.update_token(&TokenName::parse("a").unwrap(), &changed)
            .await
            .unwrap();
        let got = t.find(&[1; 32]).unwrap();
        assert_eq!(got.record.name.as_str(), "c");
        assert_eq!(got.record.acls, vec![Acl::All]);
        assert_eq!(got.record.expires_at, None);
        assert_eq!(got.record.whitelist_ips, None);
        assert_eq!(got.record.create_time, 100);
        assert_eq!(live(t), reloaded(&s).await);

        s.delete_token(&TokenName::parse("c").unwrap())
            .await
            .unwrap();
        assert!(t.find(&[1; 32]).is_none());
        assert!(t.find(&[2; 32]).is_some());
        assert_eq!(t.len(), 1);
        assert_eq!(live(t), reloaded(&s).await);
    }

    #[tokio::test]
    async fn failed_writes_leave_the_table_unchanged() {
        let (_d, s) = store().await;
        let t = s.tokens();
        s.insert_token(&rec("a"), &[1; 32]).await.unwrap();
        s.insert_token(&rec("b"), &[2; 32]).await.unwrap();
        let before = live(t);

        // Duplicate name, another hash: refused by the store.
        assert!(matches!(
            s.insert_token(&rec("a"), &[9; 32]).await,
            Err(TokenStoreError::Duplicate(_))
        ));
        assert!(t.find(&[9; 32]).is_none());
        // Renaming onto an existing name.
        assert!(matches!(
            s.update_token(&TokenName::parse("a").unwrap(), &rec("b"))
                .await,
            Err(TokenStoreError::Duplicate(_))
        ));
        // Unknown names.
        assert!(matches!(
            s.update_token(&TokenName::parse("zz").unwrap(), &rec("zz"))
                .await,
            Err(TokenStoreError::NotFound(_))
        ));
        assert!(matches!(
            s.delete_token(&TokenName::parse("zz").unwrap()).await,
            Err(TokenStoreError::NotFound(_))
        ));
        assert_eq!(live(t), before);

        // The database itself failing (closed pool): nothing changes.
        s.close().await;
        assert!(matches!(
            s.insert_token(&rec("x"), &[5; 32]).await,
            Err(TokenStoreError::Store(_))
        ));
        assert!(s
            .delete_token(&TokenName::parse("a").unwrap())
            .await
            .is_err());
        let mut renamed = rec("y");
        renamed.acls = vec![Acl::All];
        assert!(s
            .update_token(&TokenName::parse("b").unwrap(), &renamed)
            .await
            .is_err());
        assert_eq!(live(t), before);
    }

    #[tokio::test]
    async fn a_reopened_store_loads_the_tokens() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s/state.db");
        let s = Store::open(&path).await.unwrap();
        s.insert_token(&rec("a"), &[1; 32]).await.unwrap();
        s.close().await;
        let s = Store::open(&path).await.unwrap();
        assert_eq!(s.token_by_hash(&[1; 32]).unwrap().record, rec("a"));
    }
}
