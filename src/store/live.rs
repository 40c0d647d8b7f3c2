//! The live grants (`granting`, `active`, `revoking`) kept in memory, so
//! that the questions asked on every request and every grant or revoke
//! ("is this ticket already granted?", "which addresses must the firewall
//! let in?", ticket_list) cost no SQLite round trip.
//!
//! Only this daemon writes the database (it holds the state directory's
//! lock, and the CLI goes through the API), and every write to `grants`
//! goes through a `Store` method, which applies the same change here once
//! its statement has succeeded. So the index is loaded once, at open, and
//! never disagrees with the committed rows; a failed statement leaves it
//! unchanged. Rows that stop being live leave the index; history stays in
//! SQLite only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::SqlitePool;

use super::grants::{row_to_grant, GrantRow};
use super::StoreError;

#[derive(Debug, Clone, Default)]
pub(crate) struct LiveGrants {
    rows: Arc<Mutex<BTreeMap<i64, GrantRow>>>,
}

impl LiveGrants {
    /// Loads every live row.
    pub(crate) async fn load(pool: &SqlitePool) -> Result<LiveGrants, StoreError> {
        let rows = sqlx::query(crate::store::grants::SELECT_LIVE)
            .fetch_all(pool)
            .await?;
        let mut map = BTreeMap::new();
        for r in &rows {
            let g = row_to_grant(r)?;
            map.insert(g.id, g);
        }
        Ok(LiveGrants {
            rows: Arc::new(Mutex::new(map)),
        })
    }

    /// The index; a panic elsewhere while it was held cannot leave a row
    /// half-updated (every update is a plain field assignment), so a
    /// poisoned lock is still usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<i64, GrantRow>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to row `id` if it is live, then drops the row if
    /// it no longer is.
    pub(crate) fn update(&self, id: i64, change: impl FnOnce(&mut GrantRow)) {
        let mut rows = self.lock();
        if let Some(row) = rows.get_mut(&id) {
            change(row);
            if !row.state.is_live() {
                rows.remove(&id);
            }
        }
    }

    /// Every live row matching `keep`, oldest first.
    pub(crate) fn select(&self, keep: impl Fn(&GrantRow) -> bool) -> Vec<GrantRow> {
        self.lock().values().filter(|g| keep(g)).cloned().collect()
    }
}
