//! Data of the `ticket_whitelist_check/setup/unsetup` answers, independent
//! of the HTTP layer. These call host tools and block: run them from
//! `tokio::task::spawn_blocking`.

use super::{Whitelist, WhitelistReport};
use crate::api::envelope::{ApiError, ApiResult};
use crate::types::SupportIp;

/// `ticket_whitelist_check`: status fields plus `problem`
/// (NO / NEED_SETUP / NEED_UNSETUP) for the addresses that should be open
/// now (`ips` is empty when no grant is active).
pub fn ticket_whitelist_check(wl: &Whitelist, ips: &[SupportIp]) -> ApiResult {
    Ok(wl.check(ips).to_json())
}

/// `ticket_whitelist_setup`: opens `ips` on every backend.
pub fn ticket_whitelist_setup(wl: &Whitelist, ips: &[SupportIp]) -> ApiResult {
    if ips.is_empty() {
        return Err(ApiError::new(
            "No support access IPs are configured: set access.support_ips or the grant's access_ip.",
        ));
    }
    answer(wl.ensure(ips), "set up")
}

/// `ticket_whitelist_unsetup`: removes everything ours on every backend.
pub fn ticket_whitelist_unsetup(wl: &Whitelist) -> ApiResult {
    answer(wl.clear(), "remove")
}

/// Success with the status fields, or failure naming each failing backend
/// with the status fields as data (the other backends still did their part).
fn answer(report: WhitelistReport, verb: &str) -> ApiResult {
    let data = report.to_json();
    if report.errors.is_empty() {
        Ok(data)
    } else {
        Err(ApiError::with_data(
            format!(
                "Could not {verb} the support whitelist on every firewall: {}",
                report.errors.join("; ")
            ),
            data,
        ))
    }
}

/// The whitelist fields merged into a grant / revoke / remove_closed answer.
pub fn merge_statuses(data: &mut serde_json::Value, report: &WhitelistReport) {
    if let (Some(obj), serde_json::Value::Object(st)) = (data.as_object_mut(), report.to_json()) {
        obj.extend(st);
    } else if data.is_null() {
        *data = report.to_json();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_merge_into_an_answer() {
        let mut report = WhitelistReport::default();
        report
            .statuses
            .insert(super::super::CSF_STATUS, super::super::WlStatus::Active);
        let mut data = json!({"ticket_id": 123});
        merge_statuses(&mut data, &report);
        assert_eq!(data, json!({"ticket_id": 123, "csf_wl_status": "ACTIVE"}));
        report.errors.push("csf: broken".into());
        let err = answer(report, "set up").unwrap_err();
        assert!(err.reason.contains("csf: broken"));
        assert_eq!(err.data, Some(json!({"csf_wl_status": "ACTIVE"})));
    }

    #[test]
    fn setup_without_addresses_is_refused() {
        let cfg = crate::config::Config {
            firewall: crate::config::FirewallConfig {
                backends: vec!["none".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let wl = Whitelist::detect(&cfg);
        assert!(wl.backends().is_empty());
        assert!(ticket_whitelist_setup(&wl, &[]).is_err());
        assert_eq!(ticket_whitelist_unsetup(&wl), Ok(json!({})));
        assert_eq!(
            ticket_whitelist_check(&wl, &[]),
            Ok(json!({"problem": "NO"}))
        );
    }
}
