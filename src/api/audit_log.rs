//! `audit_log_read` and `audit_log_verify` (ACL `audit-read`): the audit
//! log for the web page, the same records and the same verdict as
//! `supportauth audit show` / `audit verify`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::api::tickets::reject_unknown;
use crate::app::App;
use crate::audit::files::{chain_order, discover, Records};
use crate::audit::show::{parse_time, Filter};
use crate::domain::caller::Caller;

/// Records returned when `limit` is not given, and the most ever.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

fn log_files(app: &App) -> Result<Vec<PathBuf>, ApiError> {
    let log = app.config().audit_log_path();
    discover(&log).map(|f| chain_order(&f)).map_err(|e| {
        ApiError::new(format!(
            "Cannot list the audit log directory of {}: {e}.",
            log.display()
        ))
    })
}

/// Verifies the configured log against the store's chain head, and
/// records the result in the metrics (`supportauth_audit_verify_ok`).
pub async fn verify_now(app: &Arc<App>) -> Result<crate::audit::VerifyReport, ApiError> {
    let files = log_files(app)?;
    let db = app.config().database_path();
    let report = tokio::task::spawn_blocking(move || {
        let head = crate::audit::cli::read_store_head(&db)?;
        Ok::<_, String>(crate::audit::verify_files(&files, head))
    })
    .await
    .map_err(|e| ApiError::new(format!("Verifying the audit log failed: {e}.")))?
    .map_err(|e| ApiError::new(format!("Cannot verify the audit log: {e}.")))?;
    app.metrics.set_verify(report.is_ok(), app.clock.now());
    Ok(report)
}

fn optional<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.get(name).map(str::trim).filter(|v| !v.is_empty())
}

fn filter_of(params: &Params) -> Result<(Filter, usize), ApiError> {
    let time = |name: &str| {
        optional(params, name)
            .map(parse_time)
            .transpose()
            .map_err(|e| ApiError::new(format!("“{name}”: {e}.")))
    };
    let ticket = optional(params, "ticket_id")
        .map(|t| {
            t.parse::<u64>().map_err(|_| {
                ApiError::new(format!(
                    "“ticket_id” must be a ticket number, not “{}”.",
                    crate::types::printable(t)
                ))
            })
        })
        .transpose()?;
    let limit = match optional(params, "limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::new(format!("“limit” must be a number from 1 to {MAX_LIMIT}."))
            })?,
    };
    if let Some(e) = optional(params, "event") {
        crate::audit::show::check_event(e).map_err(|e| ApiError::new(format!("“event”: {e}.")))?;
    }
    let filter = Filter {
        ticket,
        event: optional(params, "event").map(str::to_string),
        actor: optional(params, "actor").map(str::to_string),
        since: time("since")?,
        until: time("until")?,
    };
    Ok((filter, limit))
}

/// `audit_log_read [ticket_id] [event] [actor] [since] [until] [limit]`:
/// the newest `limit` matching records (newest first), and how many lines
/// could not be read as records.
pub async fn audit_log_read(app: &Arc<App>, _caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(
        params,
        &["ticket_id", "event", "actor", "since", "until", "limit"],
    )?;
    let (filter, limit) = filter_of(params)?;
    let files = log_files(app)?;
    let read = tokio::task::spawn_blocking(move || {
        // Only the last `limit` matches are kept: memory stays bounded
        // however long the log is.
        let mut newest: VecDeque<Value> = VecDeque::with_capacity(limit);
        let (mut matched, mut bad_lines) = (0u64, 0u64);
        for item in Records::new(&files) {
            let Ok(rec) = item else {
                bad_lines += 1;
                continue;
            };
            if !filter.matches(&rec) {
                continue;
            }
            matched += 1;
            if newest.len() == limit {
                newest.pop_front();
            }
            newest.push_back(serde_json::to_value(&rec).unwrap_or(Value::Null));
        }
        let records: Vec<Value> = newest.into_iter().rev().collect();
        json!({ "records": records, "matched": matched, "bad_lines": bad_lines })
    })
    .await
    .map_err(|e| ApiError::new(format!("Reading the audit log failed: {e}.")))?;
    Ok(read)
}

/// `audit_log_verify`: `supportauth audit verify` on the configured log and
/// its rotated siblings, against the store's chain head. `result` 1 with
/// `ok` 0 and the failure when the chain is broken (the call worked; the
/// log did not verify).
pub async fn audit_log_verify(app: &Arc<App>, _caller: &Caller, params: &Params) -> ApiResult {
    reject_unknown(params, &[])?;
    let report = verify_now(app).await?;
    Ok(json!({
        "ok": u8::from(report.is_ok()),
        "summary": report.to_string(),
        "records": report.records,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
    }))
}
