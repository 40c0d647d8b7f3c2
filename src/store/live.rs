//! The live grants (`granting`, `active`, `revoking`) kept in memory, so
//! that the questions asked on every request and every grant or revoke
//! ("is this ticket already granted?", "which addresses must the firewall
//! let in?", ticket_list) cost no SQLite round trip.
//!
//! Only this daemon writes the database (it holds the state directory's
//! lock, and the CLI goes through the API), and every write to `grants`
//! goes through a `Store` method, which applies the same change here once
//! its statement has succeeded (and re-reads the row when it failed, in
//! case it landed anyway). So the index is loaded once, at open, and does
//! not drift from the committed rows. Rows that stop being live leave the
//! index; history stays in SQLite only.
//!
//! Readers that want every live row (ticket_list) get a shared, sorted
//! snapshot, rebuilt from the index (not from SQLite) after a change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::SqlitePool;

use super::grants::{row_to_grant, GrantRow, GrantState, SELECT_LIVE};
use super::{Store, StoreError};
use crate::types::{ServerNum, TicketId, Username};

#[derive(Debug, Default)]
struct Index {
    rows: BTreeMap<i64, GrantRow>,
    /// Every row, by ticket and server, until the next change.
    snapshot: Option<Arc<[GrantRow]>>,
    /// Grants shown active here whose rows still say `granting`.
    pending: PendingDone,
}

/// "Done" marks of grants that are complete (their closing audit records
/// are durable) but not yet written to SQLite. They ride on the next
/// intent's commit, or a flush shortly after (`Store::finish_later`), so a
/// grant's answer waits for no commit of its own. A crash before that
/// loses nothing: the reconciler finds the closing records in the audit
/// log and completes the grant (`Repair::CompleteGranting`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PendingDone {
    pub(crate) ids: BTreeSet<i64>,
    /// The newest chain head among them: (seq, hash).
    pub(crate) head: Option<(u64, String)>,
}

impl PendingDone {
    fn add(&mut self, id: i64, head: Option<(u64, String)>) {
        self.ids.insert(id);
        self.add_head(head);
    }

    /// Keeps the newer of the two heads.
    pub(crate) fn add_head(&mut self, head: Option<(u64, String)>) {
        if let Some(h) = head {
            if self.head.as_ref().is_none_or(|old| old.0 < h.0) {
                self.head = Some(h);
            }
        }
    }

    /// The marks as `write_done_marks!` reads them (one JSON parameter,
    /// so the statement text stays constant however many are pending).
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({
            "ids": self.ids,
            "seq": self.head.as_ref().map(|h| h.0),
            "hash": self.head.as_ref().map(|h| h.1.as_str()),
        })
        .to_string()
    }

    /// A row read back from SQLite, as it stands once these marks land.
    fn overlay(&self, row: &mut GrantRow) {
        if row.state == GrantState::Granting && self.ids.contains(&row.id) {
            row.state = GrantState::Active;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct LiveGrants {
    index: Arc<Mutex<Index>>,
}

async fn load_rows(pool: &SqlitePool) -> Result<BTreeMap<i64, GrantRow>, StoreError> {
    let rows = sqlx::query(SELECT_LIVE).fetch_all(pool).await?;
    let mut map = BTreeMap::new();
    for r in &rows {
        let g = row_to_grant(r)?;
        map.insert(g.id, g);
    }
    Ok(map)
}

impl LiveGrants {
    /// Loads every live row.
    pub(crate) async fn load(pool: &SqlitePool) -> Result<LiveGrants, StoreError> {
        let rows = load_rows(pool).await?;
        Ok(LiveGrants {
            index: Arc::new(Mutex::new(Index {
                rows,
                snapshot: None,
                pending: PendingDone::default(),
            })),
        })
    }

    /// Reloads everything (after a failed insert whose row id is unknown);
    /// best effort: if SQLite cannot be read, the index stays as it was.
    pub(crate) async fn reload(&self, pool: &SqlitePool) {
        match load_rows(pool).await {
            Ok(mut rows) => {
                let mut index = self.lock();
                for row in rows.values_mut() {
                    index.pending.overlay(row);
                }
                index.rows = rows;
                index.snapshot = None;
            }
            Err(e) => tracing::error!(error = %e, "cannot reload the live grants"),
        }
    }

    /// Every critical section is a few plain assignments, so a lock
    /// poisoned by a panic elsewhere still holds consistent data.
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `row` in (or takes it out when it is not live).
    pub(crate) fn put(&self, mut row: GrantRow) {
        let mut index = self.lock();
        index.pending.overlay(&mut row);
        if row.state.is_live() {
            index.rows.insert(row.id, row);
        } else {
            index.rows.remove(&row.id);
        }
        index.snapshot = None;
    }

    pub(crate) fn forget(&self, id: i64) {
        let mut index = self.lock();
        index.rows.remove(&id);
        index.snapshot = None;
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        self.lock().rows.contains_key(&id)
    }

    /// Applies `change` to row `id` if it is live, then drops the row if
    /// it no longer is.
    pub(crate) fn update(&self, id: i64, change: impl FnOnce(&mut GrantRow)) {
        let mut index = self.lock();
        if let Some(row) = index.rows.get_mut(&id) {
            change(row);
            if !row.state.is_live() {
                index.rows.remove(&id);
            }
            index.snapshot = None;
        }
    }

    /// `row` (read back from SQLite) as it stands once the pending done
    /// marks land.
    pub(crate) fn overlay(&self, row: &mut GrantRow) {
        self.lock().pending.overlay(row);
    }

    /// Shows grant `id` active now and remembers its done mark (and the
    /// chain head of its closing records) for SQLite's next write.
    pub(crate) fn complete_later(&self, id: i64, head: Option<(u64, String)>) {
        let mut index = self.lock();
        if let Some(row) = index.rows.get_mut(&id) {
            row.state = GrantState::Active;
            index.snapshot = None;
        }
        index.pending.add(id, head);
    }

    /// A chain head a failed write could not save, for the next one.
    pub(crate) fn defer_head(&self, head: Option<(u64, String)>) {
        self.lock().pending.add_head(head);
    }

    /// The pending done marks, for a write about to commit them; `None`
    /// when there are none. Until [`Self::settle_pending`] they are still
    /// applied to rows read back.
    pub(crate) fn pending(&self) -> Option<PendingDone> {
        let index = self.lock();
        (!index.pending.ids.is_empty() || index.pending.head.is_some())
            .then(|| index.pending.clone())
    }

    /// Forgets the marks in `written`, now committed (marks added since
    /// stay pending).
    pub(crate) fn settle_pending(&self, written: &PendingDone) {
        let mut index = self.lock();
        let pending = &mut index.pending;
        pending.ids.retain(|id| !written.ids.contains(id));
        if pending.head.as_ref().map(|h| h.0) <= written.head.as_ref().map(|h| h.0) {
            pending.head = None;
        }
    }

    /// Every live row matching `keep`, oldest first.
    pub(crate) fn select(&self, keep: impl Fn(&GrantRow) -> bool) -> Vec<GrantRow> {
        self.lock()
            .rows
            .values()
            .filter(|g| keep(g))
            .cloned()
            .collect()
    }

    /// The smallest value `of` gives for any live row.
    pub(crate) fn earliest(&self, of: impl Fn(&GrantRow) -> Option<i64>) -> Option<i64> {
        self.lock().rows.values().filter_map(of).min()
    }

    /// Every live row by ticket and server, shared until the next change.
    pub(crate) fn snapshot(&self) -> Arc<[GrantRow]> {
        let mut index = self.lock();
        if let Some(s) = &index.snapshot {
            return Arc::clone(s);
        }
        let mut rows: Vec<GrantRow> = index.rows.values().cloned().collect();
        rows.sort_by_key(|g| (g.ticket.as_i64(), g.server.as_i64()));
        let s: Arc<[GrantRow]> = rows.into();
        index.snapshot = Some(Arc::clone(&s));
        s
    }
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
    /// Every live grant, ordered by ticket and server (as
    /// `list_live(None, None, None)`), from memory; the same allocation
    /// until a grant changes, so callers may key caches on it.
    pub async fn live_snapshot(&self) -> Result<Arc<[GrantRow]>, StoreError> {
        Ok(self.live().snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::grants::tests::sample;
    use crate::store::grants::GrantState;
    use crate::types::SupportIp;

    async fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s/state.db")).await.unwrap();
        (d, s)
    }

    /// The live rows as SQLite has them, by ticket and server.
    async fn on_disk(s: &Store) -> Vec<GrantRow> {
        let mut rows: Vec<GrantRow> = sqlx::query(SELECT_LIVE)
            .fetch_all(s.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| row_to_grant(r).unwrap())
            .collect();
        rows.sort_by_key(|g| (g.ticket.as_i64(), g.server.as_i64()));
        rows
    }

    /// The snapshot must equal SQLite after every write.
    async fn assert_fresh(s: &Store) -> Arc<[GrantRow]> {
        let cached = s.live_snapshot().await.unwrap();
        assert_eq!(&cached[..], &on_disk(s).await[..]);
        cached
    }

    #[tokio::test]
    async fn every_write_method_shows_in_the_next_snapshot() {
        let (_d, s) = store().await;
        assert!(assert_fresh(&s).await.is_empty());

        let a = s.insert_granting(&sample("1002", "1")).await.unwrap().id;
        let rows = assert_fresh(&s).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, GrantState::Granting);
        let b = s.insert_granting(&sample("1001", "1")).await.unwrap().id;
        let rows = assert_fresh(&s).await;
        // Ordered by ticket, not by insertion.
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![b, a],
            "{rows:?}"
        );
        // A second read without a write in between: the same allocation.
        let again = s.live_snapshot().await.unwrap();
        assert!(Arc::ptr_eq(&rows, &again));

        s.set_grant_state(a, GrantState::Active, None)
            .await
            .unwrap();
        let rows = assert_fresh(&s).await;
        assert!(!Arc::ptr_eq(&rows, &again));
        assert_eq!(rows[1].state, GrantState::Active);

        let ips = vec![
            SupportIp::parse("198.51.100.1").unwrap(),
            SupportIp::parse("198.51.100.2").unwrap(),
        ];
        s.set_access_ips(a, &ips).await.unwrap();
        assert_eq!(assert_fresh(&s).await[1].access_ips, ips);

        s.set_ticket_status(a, "CLOSED").await.unwrap();
        assert_eq!(assert_fresh(&s).await[1].ticket_status, "CLOSED");

        s.mark_revoking(a, "revoke").await.unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows[1].state, GrantState::Revoking);
        assert_eq!(rows[1].end_reason.as_deref(), Some("revoke"));

        // An end state: the row leaves the live set.
        s.set_grant_state(a, GrantState::Revoked, Some((150, "revoke")))
            .await
            .unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);

        // A refused insert (already live) changes nothing.
        assert!(s.insert_granting(&sample("1001", "1")).await.is_err());
        assert_eq!(assert_fresh(&s).await.len(), 1);

        // finish (grant done, then revoke done), on the relaxed connection.
        s.finish(b, GrantState::Active, None, None).await.unwrap();
        assert_eq!(assert_fresh(&s).await[0].state, GrantState::Active);
        s.finish(b, GrantState::Revoked, Some((300, "revoke")), None)
            .await
            .unwrap();
        assert!(assert_fresh(&s).await.is_empty());
    }

    #[tokio::test]
    async fn filters_match_the_sql_ones() {
        let (_d, s) = store().await;
        s.insert_granting(&sample("1001", "1")).await.unwrap();
        s.insert_granting(&sample("1001", "2")).await.unwrap();
        s.insert_granting(&sample("1002", "1")).await.unwrap();
        let all = s.live_snapshot().await.unwrap();
        let t = Some(TicketId::parse("1001").unwrap());
        let n = Some(ServerNum::parse("1").unwrap());
        let root = Username::root();
        let other = Username::parse("cp1001.ssh").unwrap();
        for (ticket, server, user) in [
            (None, None, None),
            (t, None, None),
            (None, n, None),
            (t, n, None),
            (None, None, Some(&root)),
            (t, n, Some(&other)),
        ] {
            let mem: Vec<GrantRow> = all
                .iter()
                .filter(|g| g.matches(ticket, server, user))
                .cloned()
                .collect();
            let sql: Vec<GrantRow> = on_disk(&s)
                .await
                .into_iter()
                .filter(|g| {
                    ticket.is_none_or(|x| g.ticket == x)
                        && server.is_none_or(|x| g.server == x)
                        && user.is_none_or(|x| &g.ssh_username == x)
                })
                .collect();
            assert_eq!(mem, sql);
            assert_eq!(mem, s.list_live(ticket, server, user).await.unwrap());
        }
    }
}
