//! Who is calling, and what they may do.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::types::{Cidr, TokenName};

/// Per-token permissions. `All` implies every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Acl {
    /// Everything, including token administration.
    #[serde(rename = "all")]
    All,
    /// ticket_list, ticket_whitelist_check, ticket_get_support_info.
    #[serde(rename = "tickets-list")]
    TicketsList,
    /// ticket_grant, ticket_revoke, ticket_remove_closed, ticket_revoke_all,
    /// whitelist setup/unsetup, SSH tests, portal connection.
    #[serde(rename = "tickets-grant")]
    TicketsGrant,
    /// api_token_create/list/update/revoke.
    #[serde(rename = "tokens-admin")]
    TokensAdmin,
    /// audit_log_read, audit_log_verify and notify_status.
    #[serde(rename = "audit-read")]
    AuditRead,
    /// `GET /metrics` (Prometheus) and nothing else: for scrapers.
    #[serde(rename = "metrics-read")]
    MetricsRead,
}

impl Acl {
    pub const ALL: [Acl; 6] = [
        Acl::All,
        Acl::TicketsList,
        Acl::TicketsGrant,
        Acl::TokensAdmin,
        Acl::AuditRead,
        Acl::MetricsRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Acl::All => "all",
            Acl::TicketsList => "tickets-list",
            Acl::TicketsGrant => "tickets-grant",
            Acl::TokensAdmin => "tokens-admin",
            Acl::AuditRead => "audit-read",
            Acl::MetricsRead => "metrics-read",
        }
    }

    pub fn parse(s: &str) -> Result<Acl, crate::types::InputError> {
        Acl::ALL
            .into_iter()
            .find(|a| a.name() == s.trim())
            .ok_or_else(|| {
                crate::types::InputError::new(format!(
                    "Unknown ACL “{}”; known ACLs: {}.",
                    crate::types::printable(s),
                    Acl::ALL.map(|a| a.name()).join(", ")
                ))
            })
    }
}

/// The limits of the token a caller authenticated with: what token
/// administration may not loosen (see `api::tokens`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenLimits {
    /// None: never expires.
    pub expires_at: Option<i64>,
    /// None: any source address.
    pub whitelist: Option<Vec<Cidr>>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A Unix-socket peer with uid 0: root on the host, no token needed.
    LocalRoot { uid: u32 },
    /// A valid API token.
    Token {
        user: String,
        name: TokenName,
        acls: Vec<Acl>,
        remote: Option<IpAddr>,
        limits: TokenLimits,
    },
    /// The daemon itself (expiry, reconciliation, portal polling).
    System,
}

impl Caller {
    pub fn allows(&self, needed: Acl) -> bool {
        match self {
            Caller::LocalRoot { .. } | Caller::System => true,
            Caller::Token { acls, .. } => acls.contains(&Acl::All) || acls.contains(&needed),
        }
    }

    /// Whether this caller holds every right in `acls` (so it may create,
    /// change or revoke a token with them).
    pub fn holds_all(&self, acls: &[Acl]) -> bool {
        acls.iter().all(|a| match a {
            Acl::All => match self {
                Caller::Token { acls: mine, .. } => mine.contains(&Acl::All),
                Caller::LocalRoot { .. } | Caller::System => true,
            },
            other => self.allows(*other),
        })
    }

    /// The caller's own token limits; None for root and the daemon.
    pub fn limits(&self) -> Option<&TokenLimits> {
        match self {
            Caller::Token { limits, .. } => Some(limits),
            Caller::LocalRoot { .. } | Caller::System => None,
        }
    }

    /// The audit record's `actor`.
    pub fn actor(&self) -> String {
        match self {
            Caller::LocalRoot { uid } => format!("uid:{uid}"),
            Caller::Token { user, name, .. } => format!("token:{user}:{name}"),
            Caller::System => "system".into(),
        }
    }

    /// The audit record's `remote` address, when known.
    pub fn remote(&self) -> Option<String> {
        match self {
            Caller::Token {
                remote: Some(ip), ..
            } => Some(ip.to_string()),
            Caller::LocalRoot { .. } => Some("unix".into()),
            _ => None,
        }
    }

    /// The "remote user" of cPanel's classic audit line.
    pub fn remote_user(&self) -> String {
        match self {
            Caller::LocalRoot { .. } | Caller::System => "root".into(),
            Caller::Token { user, .. } => user.clone(),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.actor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_names_round_trip() {
        for a in Acl::ALL {
            assert_eq!(Acl::parse(a.name()), Ok(a));
        }
        assert!(Acl::parse("root").is_err());
    }

    #[test]
    fn all_implies_everything() {
        let c = Caller::Token {
            user: "root".into(),
            name: TokenName::parse("t").unwrap(),
            acls: vec![Acl::All],
            remote: None,
            limits: TokenLimits::default(),
        };
        assert!(c.allows(Acl::TokensAdmin));
        let c = Caller::Token {
            user: "root".into(),
            name: TokenName::parse("t").unwrap(),
            acls: vec![Acl::TicketsList],
            remote: None,
            limits: TokenLimits::default(),
        };
        assert!(c.allows(Acl::TicketsList));
        assert!(!c.allows(Acl::TicketsGrant));
    }
}
