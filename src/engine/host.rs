//! The host, as the engine sees it: one small trait per side effect, so the
//! engine can be driven against a scratch root and the planner stays pure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::Config;
use crate::firewall::{ChangeAction, Whitelist, WhitelistReport};
use crate::system::accounts::Account;
use crate::system::keystore::{HostKeys, KeyAccount};
use crate::system::sshd::SshdProbe;
use crate::system::sudoers::HostSudoers;
use crate::system::users::HostUsers;
use crate::types::{SupportIp, Username};

/// One whitelist entry added, removed, or found already allowed by the
/// admin (and therefore left alone), for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistChange {
    pub backend: String,
    pub address: String,
    pub action: ChangeAction,
}

impl WhitelistChange {
    pub fn event(&self) -> &'static str {
        match self.action {
            ChangeAction::Added => crate::audit::events::WHITELIST_ADDED,
            ChangeAction::Removed => crate::audit::events::WHITELIST_REMOVED,
            ChangeAction::Preexisting => crate::audit::events::WHITELIST_PREEXISTING,
        }
    }
}

impl From<WhitelistReport> for WhitelistOutcome {
    fn from(r: WhitelistReport) -> Self {
        WhitelistOutcome {
            statuses: r
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_str().to_string()))
                .collect(),
            changes: r
                .changes
                .iter()
                .map(|c| WhitelistChange {
                    backend: c.backend.to_string(),
                    address: c.address.clone(),
                    action: c.action,
                })
                .collect(),
            errors: r.errors,
        }
    }
}

/// What a whitelist update did: the status fields of the API answer
/// (`chain_status`, `csf_wl_status`, ...), the changes, and the errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WhitelistOutcome {
    pub statuses: BTreeMap<String, String>,
    pub changes: Vec<WhitelistChange>,
    pub errors: Vec<String>,
}

impl WhitelistOutcome {
    /// Adds the status fields to an API answer object.
    pub fn merge_into(&self, data: &mut Map<String, Value>) {
        for (k, v) in &self.statuses {
            data.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// The firewall side effect.
pub trait HostFirewall: Send + Sync {
    /// Make the whitelist contain exactly `ips` on every backend.
    fn ensure(&self, ips: &[SupportIp]) -> WhitelistOutcome;
    /// Remove everything of ours from every backend.
    fn clear(&self) -> WhitelistOutcome;
    /// Report without changing anything: the `ticket_whitelist_check` data
    /// (`chain_status`..., `problem`).
    fn check(&self, ips: &[SupportIp]) -> Value;
}

impl HostFirewall for Whitelist {
    fn ensure(&self, ips: &[SupportIp]) -> WhitelistOutcome {
        Whitelist::ensure(self, ips).into()
    }
    fn clear(&self) -> WhitelistOutcome {
        Whitelist::clear(self).into()
    }
    fn check(&self, ips: &[SupportIp]) -> Value {
        Whitelist::check(self, ips).to_json()
    }
}

/// Everything the engine may touch.
#[derive(Clone)]
pub struct Host {
    pub keys: Arc<dyn HostKeys>,
    pub users: Arc<dyn HostUsers>,
    pub sudoers: Arc<dyn HostSudoers>,
    pub sshd: Arc<dyn SshdProbe>,
    pub firewall: Arc<dyn HostFirewall>,
    /// Where home directories from passwd really are (the root prefix).
    pub root: PathBuf,
    /// Whether sudo is installed (a temporary user needs it to become root).
    pub sudo_path: PathBuf,
}

impl Host {
    /// The key store's view of an account: its home under the root prefix.
    pub fn key_account(&self, account: &Account) -> KeyAccount {
        KeyAccount {
            user: account.name.clone(),
            uid: account.uid,
            gid: account.gid,
            home: crate::config::under_root(&self.root, &account.home),
        }
    }

    /// Looks a user up and returns its key account, or None when the user
    /// does not exist (its keys went with it).
    pub fn key_account_of(&self, user: &Username) -> Result<Option<KeyAccount>, String> {
        match self.users.lookup(user) {
            Ok(Some(a)) => Ok(Some(self.key_account(&a))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn sudo_present(&self) -> bool {
        self.sudo_path.is_file()
    }

    /// The real host, as configured.
    pub fn from_config(cfg: &Config, firewall: Arc<dyn HostFirewall>) -> Host {
        Host {
            keys: Arc::new(crate::system::keystore::FileKeyStore::new(
                cfg.root.clone(),
                cfg.state_dir(),
            )),
            users: Arc::new(crate::system::users::ShadowUsers::from_config(cfg)),
            sudoers: Arc::new(crate::system::sudoers::SudoersFiles::from_config(cfg)),
            sshd: Arc::new(crate::system::sshd::SshdCommand::from_config(cfg)),
            firewall,
            root: cfg.root.clone(),
            sudo_path: cfg.tools.sudo.clone(),
        }
    }
}
