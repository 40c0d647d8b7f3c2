//! Replay: the grants active now, computed from the audit log alone.
//!
//! Only lifecycle events count, and only with outcome `ok`: `grant` makes
//! access for (ticket_id, server_num) active as `ssh_username` (replacing
//! any earlier entry for the pair); `revoke`, `expire`, `revoke_closed`,
//! `revoke_all` and `grant_rolled_back` end it. An ending event without
//! `server_num` ends every server of its ticket; one without `ticket_id`
//! (a `revoke_all` of everything) ends all access. Step events (keys,
//! users, whitelists) are detail and do not change the answer.
//! `grant_extended` moves an active grant's end to its `details.expires_at`,
//! whatever its outcome: a failed one (an extension undone) carries the end
//! that stands again.

use std::collections::BTreeMap;

use serde_json::Value;

use super::events;
use super::record::{Outcome, Record};

/// An active grant as the log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedGrant {
    pub ssh_username: String,
    /// Epoch seconds; `None` for a grant without expiry.
    pub expires_at: Option<i64>,
    /// The seq of the `grant` record.
    pub granted_seq: u64,
}

/// (ticket_id, server_num) -> the grant active after the last record.
pub fn active_grants(records: impl Iterator<Item = Record>) -> BTreeMap<(u64, u64), ReplayedGrant> {
    let mut active = BTreeMap::new();
    for rec in records {
        apply(&mut active, &rec);
    }
    active
}

/// Applies one record to the replayed state.
pub fn apply(active: &mut BTreeMap<(u64, u64), ReplayedGrant>, rec: &Record) {
    if rec.event == events::GRANT_EXTENDED {
        if let (Some(t), Some(s)) = (rec.ticket_id, rec.server_num) {
            if let Some(g) = active.get_mut(&(t, s)) {
                g.expires_at = rec.details.get("expires_at").and_then(Value::as_i64);
            }
        }
        return;
    }
    if rec.outcome != Outcome::Ok {
        return;
    }
    if rec.event == events::GRANT {
        let (Some(ticket), Some(server)) = (rec.ticket_id, rec.server_num) else {
            return;
        };
        active.insert(
            (ticket, server),
            ReplayedGrant {
                ssh_username: rec.ssh_username.clone().unwrap_or_default(),
                expires_at: rec.details.get("expires_at").and_then(Value::as_i64),
                granted_seq: rec.seq,
            },
        );
    } else if events::is_ending(&rec.event) {
        match (rec.ticket_id, rec.server_num) {
            (Some(t), Some(s)) => {
                active.remove(&(t, s));
            }
            (Some(t), None) => active.retain(|k, _| k.0 != t),
            (None, _) => active.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS_HASH;
    use serde_json::json;

    fn rec(seq: u64, event: &str, t: Option<u64>, s: Option<u64>) -> Record {
        Record {
            v: 1,
            seq,
            time: "t".into(),
            event: event.into(),
            actor: "system".into(),
            remote: None,
            ticket_id: t,
            server_num: s,
            ssh_username: Some("root".into()),
            outcome: Outcome::Ok,
            details: json!({"expires_at": 100}),
            prev: GENESIS_HASH.into(),
            hash: None,
        }
    }

    #[test]
    fn grant_and_endings() {
        let mut failed = rec(5, "grant", Some(9), Some(9));
        failed.outcome = Outcome::Failed;
        let recs = vec![
            rec(1, "grant", Some(1), Some(1)),
            rec(2, "grant", Some(1), Some(2)),
            rec(3, "grant", Some(2), Some(1)),
            rec(4, "key_removed", Some(2), Some(1)),
            failed,
            rec(6, "revoke", Some(1), None),
            rec(7, "grant", Some(3), Some(1)),
        ];
        let a = active_grants(recs.into_iter());
        assert_eq!(a.keys().copied().collect::<Vec<_>>(), vec![(2, 1), (3, 1)]);
        assert_eq!(a[&(3, 1)].granted_seq, 7);
        assert_eq!(a[&(3, 1)].expires_at, Some(100));
        let cleared = active_grants(
            vec![
                rec(1, "grant", Some(1), Some(1)),
                rec(2, "revoke_all", None, None),
            ]
            .into_iter(),
        );
        assert!(cleared.is_empty());
    }

    #[test]
    fn extensions_move_the_end_and_an_undone_one_moves_it_back() {
        let mut ext = rec(2, "grant_extended", Some(1), Some(1));
        ext.details = json!({"previous_expires_at": 100, "expires_at": 500});
        let mut undone = rec(3, "grant_extended", Some(1), Some(1));
        undone.outcome = Outcome::Failed;
        undone.details = json!({"undone": true, "expires_at": 100});
        // An extension of a pair with no active grant changes nothing.
        let stray = rec(4, "grant_extended", Some(7), Some(1));
        let g = rec(1, "grant", Some(1), Some(1));
        let a = active_grants(vec![g.clone(), ext.clone()].into_iter());
        assert_eq!(a[&(1, 1)].expires_at, Some(500));
        let a = active_grants(vec![g, ext, undone, stray].into_iter());
        assert_eq!(a[&(1, 1)].expires_at, Some(100));
        assert_eq!(a.len(), 1);
    }
}
