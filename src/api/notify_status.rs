//! `notify_status` (ACL `audit-read`): each notification receiver's
//! pending count, last success, last error and next attempt (see
//! `crate::notify`).

use std::sync::Arc;

use serde_json::json;

use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::api::tickets::reject_unknown;
use crate::app::App;
use crate::domain::caller::Caller;

pub async fn notify_status(app: &Arc<App>, _caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &[])?;
    let cfg = app.config();
    let specs = crate::notify::specs(&cfg);
    let upto = *app.audit.durable_seq().borrow();
    let receivers = crate::notify::status::report(
        &specs,
        &app.store,
        &cfg.audit_log_path(),
        upto,
        cfg.notify.max_pending,
    )
    .await
    .map_err(|e| ApiError::new(format!("Cannot read the notification state: {e}.")))?;
    Ok(json!({ "receivers": receivers, "audit_seq": upto }))
}
