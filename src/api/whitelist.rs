//! ticket_whitelist_check / _setup / _unsetup (reference §3, §5).
//!
//! Whitelists follow grants: they exist exactly while at least one grant is
//! active. `setup` converges them to the active grants (repairing drift);
//! `unsetup` removes them only when no grant needs them, because removing
//! them under an active grant would lock support out (and the reconciler
//! would put them back).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::app::App;
use crate::domain::caller::Caller;

fn no_params(params: &Params) -> Result<(), ApiError> {
    let unknown = params.unknown(&[]);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(format!(
            "This function takes no arguments; got: {}.",
            unknown.join(", ")
        )))
    }
}

/// `ticket_whitelist_check`: `chain_status`... and `problem` NO /
/// NEED_SETUP / NEED_UNSETUP, compared with what the active grants need.
pub async fn ticket_whitelist_check(
    app: &Arc<App>,
    _caller: &Caller,
    params: &Params,
) -> ApiResult {
    no_params(params)?;
    let engine = Arc::clone(&app.engine);
    engine.whitelist_check().await.map_err(ApiError::new)
}

fn statuses(out: &crate::engine::WhitelistOutcome) -> Value {
    let mut data = Map::new();
    out.merge_into(&mut data);
    Value::Object(data)
}

/// `ticket_whitelist_setup`: open the whitelist for the active grants.
pub async fn ticket_whitelist_setup(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    no_params(params)?;
    let active = app
        .engine
        .active_grant_count()
        .await
        .map_err(ApiError::new)?;
    if active == 0 {
        return Err(ApiError::new(
            "No grant is active, so there is nothing to whitelist: whitelists are opened by ticket_grant and follow the grants.",
        ));
    }
    let out = app.engine.whitelist_converge(caller).await;
    if out.errors.is_empty() {
        Ok(statuses(&out))
    } else {
        Err(ApiError::with_data(
            format!("Some firewall backends failed: {}", out.errors.join("; ")),
            statuses(&out),
        ))
    }
}

/// `ticket_whitelist_unsetup`: remove our whitelist entries, only when no
/// grant needs them.
pub async fn ticket_whitelist_unsetup(
    app: &Arc<App>,
    caller: &Caller,
    params: &Params,
) -> ApiResult {
    no_params(params)?;
    let active = app
        .engine
        .active_grant_count()
        .await
        .map_err(ApiError::new)?;
    if active > 0 {
        return Err(ApiError::new(format!(
            "{active} grant(s) are active and need the whitelist; revoke them first (ticket_revoke, or ticket_revoke_all)."
        )));
    }
    let out = app.engine.whitelist_converge(caller).await;
    if out.errors.is_empty() {
        Ok(statuses(&out))
    } else {
        Err(ApiError::with_data(
            format!("Some firewall backends failed: {}", out.errors.join("; ")),
            statuses(&out),
        ))
    }
}
