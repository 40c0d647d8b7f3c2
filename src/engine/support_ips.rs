//! Following a change of the configured support addresses.
//!
//! Grants made with the configured list (no `access_ip-N` of their own)
//! move to the new list. Order matters so that support is never locked out
//! and no stale address stays open longer than needed: first the firewall
//! opens the union of old and new, then each key's `from=` is rewritten,
//! then the firewall converges to the new set (stale addresses closed).

use std::collections::BTreeSet;

use serde_json::json;

use super::{Engine, EngineError};
use crate::audit::Outcome;
use crate::authorized_keys::{render_line, KeyMark};
use crate::domain::caller::Caller;
use crate::sshkey::SupportKey;
use crate::store::grants::GrantState;
use crate::types::SupportIp;

impl Engine {
    /// Moves active grants that use `old` (the previous configured list)
    /// to `new`. Returns how many grants were updated.
    pub async fn follow_support_ips(
        &self,
        old: &[SupportIp],
        new: &[SupportIp],
    ) -> Result<usize, EngineError> {
        let old_set: BTreeSet<SupportIp> = old.iter().copied().collect();
        let new_list: Vec<SupportIp> = new
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if old_set.is_empty()
            || new_list.is_empty()
            || old_set == new_list.iter().copied().collect()
        {
            return Ok(0);
        }
        let serial = self.changes.lock().await;
        let caller = Caller::System;
        let live = self.store.live_grants().await?;
        let moving: Vec<_> = live
            .into_iter()
            .filter(|g| g.state == GrantState::Active)
            .filter(|g| g.access_ips.iter().copied().collect::<BTreeSet<_>>() == old_set)
            .collect();
        if moving.is_empty() {
            return Ok(0);
        }
        // 1. Open the union, so both old and new addresses get through.
        let mut union = crate::planner::whitelist_ips(&self.store.live_grants().await?);
        union.extend(new_list.iter().copied());
        union.sort();
        union.dedup();
        let fw = self.host.firewall.clone();
        let opened = {
            let _firewall = self.firewall.lock().await;
            tokio::task::block_in_place(|| fw.ensure(&union))
        };
        let mut nf = Vec::new();
        self.audit_whitelist_changes(&caller, &opened, &mut nf)
            .await;
        // 2. Rewrite each key's from= and the stored list.
        let mut moved = 0;
        for g in &moving {
            let key = SupportKey::parse(&g.ssh_key).map_err(|e| EngineError::Host(e.0))?;
            let mark = KeyMark::parse_comment(&g.key_comment)
                .ok_or_else(|| EngineError::Host("the stored key comment is not ours".into()))?;
            let line = render_line(&key, &new_list, g.expires_at, &mark)
                .map_err(|e| EngineError::Host(e.to_string()))?;
            let Some(acct) = self
                .host
                .key_account_of(&g.ssh_username)
                .map_err(EngineError::Host)?
            else {
                continue;
            };
            let keys = self.host.keys.clone();
            tokio::task::block_in_place(|| keys.install(&acct, &line, &mark))
                .map_err(|e| EngineError::Host(e.to_string()))?;
            self.store.set_access_ips(g.id, &new_list).await?;
            self.audit_nonfatal(&caller, "key_added", g, Outcome::Ok,
                json!({"access_ips": new_list, "previous_access_ips": g.access_ips, "reason": "support_ips changed"}), &mut nf).await;
            moved += 1;
        }
        // 3. Close what no grant needs any more.
        self.converge_whitelist(serial, None, &caller, &mut nf)
            .await;
        Ok(moved)
    }
}
