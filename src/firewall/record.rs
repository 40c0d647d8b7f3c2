//! Mirrors whitelist changes into the store's `whitelist_entries`: which
//! addresses are ours on which backend, and which wanted addresses the
//! admin already allowed. Ownership on the host is decided by our marks
//! (comments, own chain/table/ipsets), not by this table; it is the record
//! an admin or the audit trail can consult.

use sqlx::Row;

use super::{ChangeAction, WhitelistReport};
use crate::store::{Store, StoreError};

/// One row of `whitelist_entries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub backend: String,
    pub address: String,
    pub preexisting: bool,
    pub added_at: i64,
}

/// Applies a report's changes (`now` in Unix seconds): added and
/// pre-existing addresses are upserted, removed ones deleted, in one
/// transaction.
pub async fn record(store: &Store, report: &WhitelistReport, now: i64) -> Result<(), StoreError> {
    let mut tx = store.pool().begin().await?;
    for c in &report.changes {
        match c.action {
            ChangeAction::Added | ChangeAction::Preexisting => {
                let pre = i64::from(c.action == ChangeAction::Preexisting);
                sqlx::query(
                    "INSERT INTO whitelist_entries (backend, address, preexisting, added_at) \
                     VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (backend, address) DO UPDATE SET preexisting = MAX(preexisting, ?3)",
                )
                .bind(c.backend)
                .bind(&c.address)
                .bind(pre)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            ChangeAction::Removed => {
                sqlx::query("DELETE FROM whitelist_entries WHERE backend = ?1 AND address = ?2")
                    .bind(c.backend)
                    .bind(&c.address)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Every recorded entry, by backend and address.
pub async fn entries(store: &Store) -> Result<Vec<StoredEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT backend, address, preexisting, added_at FROM whitelist_entries \
         ORDER BY backend, address",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredEntry {
                backend: r.try_get("backend")?,
                address: r.try_get("address")?,
                preexisting: r.try_get::<i64, _>("preexisting")? != 0,
                added_at: r.try_get("added_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::WhitelistChange;

    fn change(backend: &'static str, action: ChangeAction, address: &str) -> WhitelistChange {
        WhitelistChange {
            backend,
            action,
            address: address.into(),
        }
    }

    #[tokio::test]
    async fn records_added_preexisting_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state/state.db"))
            .await
            .unwrap();
        let mut report = WhitelistReport {
            changes: vec![
                change("csf", ChangeAction::Added, "192.0.2.20"),
                change("csf", ChangeAction::Preexisting, "192.0.2.10"),
                change("nftables", ChangeAction::Added, "192.0.2.20"),
            ],
            ..Default::default()
        };
        record(&store, &report, 1000).await.unwrap();
        let e = entries(&store).await.unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            StoredEntry {
                backend: "csf".into(),
                address: "192.0.2.10".into(),
                preexisting: true,
                added_at: 1000
            }
        );
        assert!(!e[1].preexisting);
        report.changes = vec![change("csf", ChangeAction::Removed, "192.0.2.20")];
        record(&store, &report, 2000).await.unwrap();
        let e = entries(&store).await.unwrap();
        assert_eq!(e.len(), 2);
        assert!(e
            .iter()
            .all(|x| !(x.backend == "csf" && x.address == "192.0.2.20")));
        store.close().await;
    }
}
