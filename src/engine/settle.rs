//! What follows a grant's answer: the copy of its key that WHM lists, and
//! its "done" mark in the store. Both derive from what the grant made
//! durable before answering (authorized_keys and the closing audit
//! records), so they are written a moment later instead of delaying the
//! answer: by a task [`DELAY`] after the grant, by the next reconciliation
//! pass, or at shutdown, whichever comes first (the next write to the
//! store carries the done mark sooner). Until then WHM does not list the
//! key, which grants nothing: sshd reads only authorized_keys. A crash
//! before that is repaired at start: the reconciler rewrites a missing
//! copy of an active grant (`RewriteKeyCopy`) and completes the grant from
//! its closing records (`CompleteGranting`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{Engine, Host};
use crate::authorized_keys::KeyMark;
use crate::store::grants::{GrantRow, GrantState};
use crate::store::Store;
use crate::system::keystore::InstalledKey;

/// How long a grant's copy and done mark may wait for something else to
/// write them.
pub(super) const DELAY: Duration = Duration::from_millis(250);

/// Grants whose WHM key copy is still to be written.
#[derive(Debug, Clone, Default)]
pub(super) struct Unsettled(Arc<std::sync::Mutex<Vec<i64>>>);

impl Unsettled {
    fn push(&self, grant_id: i64) {
        self.lock().push(grant_id);
    }

    fn take(&self) -> Vec<i64> {
        std::mem::take(&mut *self.lock())
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A grant that ended needs no copy.
    pub(super) fn forget(&self, grant_id: i64) {
        self.lock().retain(|id| *id != grant_id);
    }

    /// A push or take is one plain operation, so a lock poisoned by a
    /// panic elsewhere still holds a consistent list.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    /// After a grant answered: its done mark, and its copy when
    /// `copy_for` names it (the install left it out), follow a moment
    /// later (see the module documentation).
    pub(super) fn settle_soon(&self, copy_for: Option<i64>) {
        if let Some(grant_id) = copy_for {
            self.unsettled.push(grant_id);
        }
        let (store, host) = (self.store.clone(), self.host.clone());
        let (changes, unsettled) = (Arc::clone(&self.changes), self.unsettled.clone());
        let delay = self.settle_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            settle(&store, &host, &changes, &unsettled).await;
        });
    }

    /// Writes what recent grants left for later now (at shutdown; tests).
    pub async fn settle(&self) {
        settle(&self.store, &self.host, &self.changes, &self.unsettled).await;
    }

    /// [`Self::settle`]'s copies, for a caller that holds the change lock.
    pub(super) async fn write_unsettled_copies(&self) {
        write_unsettled_copies(&self.store, &self.host, &self.unsettled).await;
    }
}

async fn settle(store: &Store, host: &Host, changes: &Mutex<()>, unsettled: &Unsettled) {
    // Most often the next grant or revoke did it all already: then the
    // change lock is not waited for (it may be held through a grant's
    // `sshd -T`, and whatever queued behind it runs when the next caller
    // is waiting for an answer).
    if !unsettled.is_empty() {
        let _serial = changes.lock().await;
        write_unsettled_copies(store, host, unsettled).await;
    }
    if let Err(e) = store.flush_done_marks().await {
        tracing::warn!(error = %e, "cannot write a grant's done mark yet; it stays pending");
    }
}

/// Writes the copies of the unsettled grants that are still active (a
/// grant revoked meanwhile took its key away). The caller holds the change
/// lock. A copy that cannot be written is left to the reconciler.
async fn write_unsettled_copies(store: &Store, host: &Host, unsettled: &Unsettled) {
    let ids = unsettled.take();
    if ids.is_empty() {
        return;
    }
    let rows: Vec<GrantRow> = store
        .live_snapshot()
        .await
        .map(|live| {
            live.iter()
                .filter(|g| ids.contains(&g.id) && g.state == GrantState::Active)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    tokio::task::block_in_place(|| {
        for row in &rows {
            if let Err(e) = write_key_copy(host, row) {
                tracing::warn!(grant = row.id, error = %e, "cannot write the key copy WHM lists; the reconciler will");
            }
        }
    });
}

/// Writes (durably) the copy of `row`'s key that WHM lists.
pub(super) fn write_key_copy(host: &Host, row: &GrantRow) -> Result<(), String> {
    let mark =
        KeyMark::parse_comment(&row.key_comment).ok_or("the stored key comment is not ours")?;
    let acct = host
        .key_account_of(&row.ssh_username)?
        .ok_or_else(|| format!("the user {} does not exist", row.ssh_username))?;
    let key = InstalledKey {
        mark,
        key: row.ssh_key.clone(),
        line: String::new(),
    };
    host.keys.write_copy(&acct, &key).map_err(|e| e.to_string())
}
