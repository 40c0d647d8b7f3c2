//! The live grants in memory, for `ticket_list` (called often, changed
//! rarely).
//!
//! The cache holds exactly what [`Store::list_live`] with no filter
//! returns (every `granting`/`active`/`revoking` row, by ticket and
//! server). It is dropped by [`Store::grants_changed`], which every method
//! that writes the `grants` table calls after its statement, whether the
//! statement succeeded or not (a failed commit may still have landed), and
//! rebuilt by the next reader with one query. Like the token table, this
//! relies on only this process writing the store (see `token_table`); a
//! row written by another process is not seen until a write of ours or a
//! restart.
//!
//! Race: a reader that queried before a write and finishes after it must
//! not install its (old) rows. Every invalidation bumps a generation; a
//! rebuild is installed only if the generation is still the one it read
//! before querying.

use std::sync::{Arc, Mutex};

use super::grants::GrantRow;
use super::{Store, StoreError};
use crate::types::{ServerNum, TicketId, Username};

#[derive(Debug, Default)]
struct State {
    generation: u64,
    rows: Option<Arc<[GrantRow]>>,
}

#[derive(Debug, Default)]
pub struct LiveGrants {
    state: Mutex<State>,
    /// One rebuild at a time: concurrent readers that miss wait for it
    /// instead of all running the same query.
    rebuild: tokio::sync::Mutex<()>,
}

impl LiveGrants {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is a plain assignment; a poisoned lock
        // holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self) -> (u64, Option<Arc<[GrantRow]>>) {
        let s = self.lock();
        (s.generation, s.rows.clone())
    }

    fn invalidate(&self) {
        let mut s = self.lock();
        s.generation = s.generation.wrapping_add(1);
        s.rows = None;
    }

    fn install(&self, generation: u64, rows: &Arc<[GrantRow]>) {
        let mut s = self.lock();
        if s.generation == generation {
            s.rows = Some(Arc::clone(rows));
        }
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
    /// Forgets the cached live grants. Every write to the `grants` table
    /// must call this after its statement (or its transaction's commit),
    /// also when the statement failed.
    pub fn grants_changed(&self) {
        self.live().invalidate();
    }

    /// Every live grant, ordered by ticket and server (as
    /// `list_live(None, None, None)`), from memory when nothing changed
    /// since the last read.
    pub async fn live_snapshot(&self) -> Result<Arc<[GrantRow]>, StoreError> {
        let live = self.live();
        if let (_, Some(rows)) = live.cached() {
            return Ok(rows);
        }
        let _one = live.rebuild.lock().await;
        let (generation, rows) = live.cached();
        if let Some(rows) = rows {
            return Ok(rows);
        }
        let rows: Arc<[GrantRow]> = self.list_live(None, None, None).await?.into();
        live.install(generation, &rows);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::grants::{GrantState, NewGrant};
    use crate::types::SupportIp;

    fn sample(ticket: &str, server: &str) -> NewGrant {
        NewGrant {
            ticket: TicketId::parse(ticket).unwrap(),
            server: ServerNum::parse(server).unwrap(),
            source: "local".into(),
            ssh_username: Username::root(),
            temp_user: false,
            sudoers_dropin: false,
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

    /// The cache must equal a fresh query after every write.
    async fn assert_fresh(s: &Store) -> Arc<[GrantRow]> {
        let cached = s.live_snapshot().await.unwrap();
        let fresh = s.list_live(None, None, None).await.unwrap();
        assert_eq!(&cached[..], &fresh[..]);
        cached
    }

    #[tokio::test]
    async fn every_write_method_invalidates() {
        let (_d, s) = store().await;
        assert!(assert_fresh(&s).await.is_empty());

        // insert_granting
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

        // A second read is served from memory: the same allocation.
        let again = s.live_snapshot().await.unwrap();
        assert!(Arc::ptr_eq(&rows, &again));

        // set_grant_state
        s.set_grant_state(a, GrantState::Active, None)
            .await
            .unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows[1].state, GrantState::Active);

        // set_access_ips
        let ips = vec![
            SupportIp::parse("198.51.100.1").unwrap(),
            SupportIp::parse("198.51.100.2").unwrap(),
        ];
        s.set_access_ips(a, &ips).await.unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows[1].access_ips, ips);

        // set_ticket_status
        s.set_ticket_status(a, "CLOSED").await.unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows[1].ticket_status, "CLOSED");

        // mark_revoking
        s.mark_revoking(a, "revoke").await.unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows[1].state, GrantState::Revoking);
        assert_eq!(rows[1].end_reason.as_deref(), Some("revoke"));

        // set_grant_state to an end state: the row leaves the live set.
        s.set_grant_state(a, GrantState::Revoked, Some((150, "revoke")))
            .await
            .unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);

        // A failed insert (already live) still invalidates, and changes
        // nothing.
        assert!(s.insert_granting(&sample("1001", "1")).await.is_err());
        assert_eq!(assert_fresh(&s).await.len(), 1);

        // finish (grant done, then revoke done), on the relaxed connection.
        s.finish(b, GrantState::Active, None, None).await.unwrap();
        let rows = assert_fresh(&s).await;
        assert_eq!(rows[0].state, GrantState::Active);
        s.finish(b, GrantState::Revoked, Some((300, "revoke")), None)
            .await
            .unwrap();
        assert!(assert_fresh(&s).await.is_empty());
    }

    #[tokio::test]
    async fn a_rebuild_that_raced_a_write_is_not_installed() {
        let (_d, s) = store().await;
        let live = s.live();
        let (generation, _) = live.cached();
        let stale: Arc<[GrantRow]> = s.list_live(None, None, None).await.unwrap().into();
        // A write lands between the reader's query and its install.
        s.insert_granting(&sample("1001", "1")).await.unwrap();
        live.install(generation, &stale);
        assert_eq!(assert_fresh(&s).await.len(), 1);
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
            assert_eq!(mem, s.list_live(ticket, server, user).await.unwrap());
        }
    }
}
