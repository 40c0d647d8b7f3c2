//! `ticket_portal_status` (ACL `tickets-list`): what the web page needs to
//! show the ticket-system box: whether this server is connected, where the
//! portal's authorization page is, and the support IP addresses in force.
//!
//! The authorization page is `<portal base URL>/oauth2/authorize`; it is
//! opened with `response_type=code` and a `redirect_uri` on this server,
//! whose `code` then goes to `ticket_validate_oauth2_code`.

use std::sync::Arc;

use serde_json::json;

use crate::api::envelope::{ApiResult, Params};
use crate::api::tickets::reject_unknown;
use crate::app::App;
use crate::domain::caller::Caller;

pub async fn ticket_portal_status(app: &Arc<App>, _caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &[])?;
    let cfg = app.config();
    let base = crate::portal::base_url(&cfg);
    let connected = app.portal.is_connected().await;
    // Connected: the portal's list (cached); else, or when it cannot be
    // asked, `access.support_ips`, which grants fall back to as well.
    let (ips, source, error) = if connected {
        match app.portal.support_ips().await {
            Ok(ips) => (ips, "portal", None),
            Err(e) => (
                cfg.access.support_ips.clone(),
                "config",
                Some(e.to_string()),
            ),
        }
    } else {
        (cfg.access.support_ips.clone(), "config", None)
    };
    Ok(json!({
        "connected": u8::from(connected),
        "authorize_url": format!("{}/oauth2/authorize", base.trim_end_matches('/')),
        "support_ips": ips,
        "support_ips_source": source,
        "support_ips_error": error,
    }))
}
