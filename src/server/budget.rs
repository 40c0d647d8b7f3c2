//! Connection budgets: who may hold how many connections at once.
//!
//! - Root over the Unix socket (uid 0, SO_PEERCRED) has a pool of its own,
//!   so nobody else can crowd root (and the kill switch) out.
//! - Everyone else (TCP, non-root Unix peers) shares the other pool of
//!   `listen.max_connections`, and each source (an address, IPv6 by /64,
//!   all of loopback as one, or a local uid) may hold at most
//!   `listen.max_connections_per_source` connections, waiting ones
//!   included: one source can neither fill the shared pool nor queue
//!   without bound.
//! - A connection's slot in its pool can be given back early
//!   ([`Slot::release`]): the failed-login delay does so, so a client that
//!   is being slowed down holds no slot while it waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::auth::Peer;
use crate::limiter::LimitKey;

pub struct Budgets {
    root: Arc<Semaphore>,
    shared: Arc<Semaphore>,
    size: usize,
    per_source: usize,
    held: Mutex<HashMap<LimitKey, usize>>,
}

/// A source's claim on one of its connections; given back on drop.
pub struct SourceClaim {
    budgets: Arc<Budgets>,
    key: LimitKey,
}

impl Drop for SourceClaim {
    fn drop(&mut self) {
        let mut held = self.budgets.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Root's own pool, or the shared one.
fn is_root(peer: &Peer) -> bool {
    matches!(peer, Peer::Unix { uid: 0, .. })
}

impl Budgets {
    pub fn new(max: usize, per_source: usize) -> Arc<Budgets> {
        let size = max.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Budgets {
            root: Arc::new(Semaphore::new(size)),
            shared: Arc::new(Semaphore::new(size)),
            size,
            per_source: per_source.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LimitKey, usize>> {
        match self.held.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Counts a new connection against its source: None when the source
    /// already holds its share (the connection is turned away). Root over
    /// the socket is not counted (its pool is its own).
    pub fn admit(self: &Arc<Self>, peer: &Peer) -> Option<Option<SourceClaim>> {
        if is_root(peer) {
            return Some(None);
        }
        let key = LimitKey::for_peer(peer);
        let mut held = self.lock();
        let n = held.entry(key).or_insert(0);
        if *n >= self.per_source {
            return None;
        }
        *n += 1;
        Some(Some(SourceClaim {
            budgets: Arc::clone(self),
            key,
        }))
    }

    /// Waits for a slot in the peer's pool.
    pub async fn slot(&self, peer: &Peer) -> Option<Slot> {
        let pool = if is_root(peer) {
            &self.root
        } else {
            &self.shared
        };
        let permit = Arc::clone(pool).acquire_owned().await.ok()?;
        Some(Slot(Arc::new(Mutex::new(Some(permit)))))
    }

    /// Waits until every slot of both pools is free (shutdown).
    pub async fn drained(&self) {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        let _root = self.root.acquire_many(all).await;
        let _shared = self.shared.acquire_many(all).await;
    }

    #[cfg(test)]
    fn held(&self, key: LimitKey) -> usize {
        self.lock().get(&key).copied().unwrap_or(0)
    }
}

/// A connection's slot in its pool, shared with its requests (as a request
/// extension) so a refusal can give it back before the failed-login delay.
#[derive(Clone)]
pub struct Slot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Slot {
    pub fn release(&self) {
        let permit = match self.0.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(a: &str) -> Peer {
        Peer::Tcp {
            addr: a.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn sources_are_capped_and_root_has_its_own_pool() {
        let b = Budgets::new(2, 2);
        let c1 = b.admit(&tcp("127.0.0.1:1")).unwrap();
        let c2 = b.admit(&tcp("127.0.0.2:1")).unwrap();
        assert!(
            b.admit(&tcp("127.7.7.7:1")).is_none(),
            "loopback is one source"
        );
        let other = b.admit(&tcp("192.0.2.1:1")).unwrap();
        assert_eq!(b.held(LimitKey::Loopback), 2);
        let s1 = b.slot(&tcp("127.0.0.1:1")).await.unwrap();
        let _s2 = b.slot(&tcp("192.0.2.1:1")).await.unwrap();
        assert_eq!(b.shared.available_permits(), 0);
        // The shared pool is full; root's is not.
        let root = Peer::Unix {
            uid: 0,
            gid: 0,
            pid: 1,
        };
        assert!(matches!(b.admit(&root), Some(None)));
        let _r = b.slot(&root).await.unwrap();
        // A released slot frees the shared pool at once.
        s1.release();
        assert_eq!(b.shared.available_permits(), 1);
        drop((c1, c2, other));
        assert_eq!(b.held(LimitKey::Loopback), 0);
        assert!(b.admit(&tcp("127.0.0.1:1")).is_some());
    }
}
