//! The WHM API 1 control endpoint: envelope, parameters, callers,
//! authentication, and the table of functions.
//!
//! To add a function: write `pub async fn f(app: &Arc<App>, caller: &Caller,
//! params: &Params) -> ApiResult` and add one line to [`FUNCTIONS`]:
//! `Function { name: "f", acl: Acl::..., handler: handler!(module::f) }`.

pub mod audit_log;
pub mod auth;
pub mod dispatch;
pub mod envelope;
pub mod notify_status;
pub mod portal;
pub mod portal_grant;
pub mod portal_status;
pub mod ticket_list;
pub mod tickets;
pub mod tokens;
pub mod whitelist;

use crate::api::dispatch::Function;
use crate::domain::caller::Acl;
use crate::handler;

/// Every API function, the ACL a token needs for it, and its handler.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "api_token_create",
        acl: Acl::TokensAdmin,
        handler: handler!(tokens::create),
    },
    Function {
        name: "api_token_list",
        acl: Acl::TokensAdmin,
        handler: handler!(tokens::list),
    },
    Function {
        name: "api_token_revoke",
        acl: Acl::TokensAdmin,
        handler: handler!(tokens::revoke),
    },
    Function {
        name: "api_token_update",
        acl: Acl::TokensAdmin,
        handler: handler!(tokens::update),
    },
    Function {
        name: "ticket_list",
        acl: Acl::TicketsList,
        handler: handler!(tickets::ticket_list),
    },
    Function {
        name: "ticket_grant",
        acl: Acl::TicketsGrant,
        handler: handler!(tickets::ticket_grant),
    },
    Function {
        name: "ticket_grant_extend",
        acl: Acl::TicketsGrant,
        handler: handler!(tickets::ticket_grant_extend),
    },
    Function {
        name: "ticket_revoke",
        acl: Acl::TicketsGrant,
        handler: handler!(tickets::ticket_revoke),
    },
    Function {
        name: "ticket_remove_closed",
        acl: Acl::TicketsGrant,
        handler: handler!(tickets::ticket_remove_closed),
    },
    Function {
        name: "ticket_revoke_all",
        acl: Acl::TicketsGrant,
        handler: handler!(tickets::ticket_revoke_all),
    },
    Function {
        name: "ticket_whitelist_check",
        acl: Acl::TicketsList,
        handler: handler!(whitelist::ticket_whitelist_check),
    },
    Function {
        name: "ticket_whitelist_setup",
        acl: Acl::TicketsGrant,
        handler: handler!(whitelist::ticket_whitelist_setup),
    },
    Function {
        name: "ticket_whitelist_unsetup",
        acl: Acl::TicketsGrant,
        handler: handler!(whitelist::ticket_whitelist_unsetup),
    },
    Function {
        name: "ticket_validate_oauth2_code",
        acl: Acl::TicketsGrant,
        handler: handler!(portal::ticket_validate_oauth2_code),
    },
    Function {
        name: "ticket_get_support_info",
        acl: Acl::TicketsList,
        handler: handler!(portal::ticket_get_support_info),
    },
    Function {
        name: "ticket_ssh_test",
        acl: Acl::TicketsGrant,
        handler: handler!(portal::ticket_ssh_test),
    },
    Function {
        name: "ticket_ssh_test_start",
        acl: Acl::TicketsGrant,
        handler: handler!(portal::ticket_ssh_test_start),
    },
    // The web page's reads (src/web): audit records, audit verify, portal box.
    Function {
        name: "audit_log_read",
        acl: Acl::AuditRead,
        handler: handler!(audit_log::audit_log_read),
    },
    Function {
        name: "audit_log_verify",
        acl: Acl::AuditRead,
        handler: handler!(audit_log::audit_log_verify),
    },
    Function {
        name: "notify_status",
        acl: Acl::AuditRead,
        handler: handler!(notify_status::notify_status),
    },
    Function {
        name: "ticket_portal_status",
        acl: Acl::TicketsList,
        handler: handler!(portal_status::ticket_portal_status),
    },
];
