//! cPHulk's white list through `whmapi1`. Our records carry the comment
//! `cPanel-support-access`; a record with any other comment is the admin's
//! (already white-listed before us) and is never created or deleted by us.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::Value;

use super::{parse_net, push_change, show_net, Backend, ChangeAction, FwError, Observed};
use super::{WhitelistChange, HULK_STATUS, TAG};
use crate::system::exec;

pub struct Cphulk {
    pub tool: PathBuf,
}

/// Checks a `whmapi1 --output=json` answer (whmapi1 exits 0 on failure too)
/// and returns its `data`.
pub fn api_data(function: &str, stdout: &str) -> Result<Value, FwError> {
    let what = format!("whmapi1 {function}");
    let v: Value = serde_json::from_str(stdout)
        .map_err(|e| FwError::unexpected(&what, format!("answer is not JSON: {e}")))?;
    let meta = &v["metadata"];
    if meta["result"].as_i64() != Some(1) {
        let reason = meta["reason"].as_str().unwrap_or("no reason given");
        return Err(FwError::unexpected(&what, reason.to_string()));
    }
    Ok(v["data"].clone())
}

/// `ips_in_list` of `read_cphulk_records`: address -> whether it is ours.
pub fn parse_records(data: &Value) -> Result<BTreeMap<IpNet, bool>, FwError> {
    let list = data["ips_in_list"].as_object().ok_or_else(|| {
        FwError::unexpected(
            "whmapi1 read_cphulk_records",
            "no ips_in_list in the answer",
        )
    })?;
    let mut out = BTreeMap::new();
    for (ip, comment) in list {
        // Ranges (a-b) cannot be ours; they are the admin's and left alone.
        if let Some(net) = parse_net(ip) {
            let ours = comment.as_str().is_some_and(|c| c.trim() == TAG);
            *out.entry(net).or_insert(ours) &= ours;
        }
    }
    Ok(out)
}

impl Cphulk {
    fn read(&self) -> Result<BTreeMap<IpNet, bool>, FwError> {
        let f = "read_cphulk_records";
        let out = exec::run(&self.tool, ["--output=json", f, "list_name=white"], None)?;
        parse_records(&api_data(f, &out.stdout)?)
    }

    fn call(&self, function: &str, args: &[String]) -> Result<(), FwError> {
        let mut argv = vec!["--output=json".to_string(), function.to_string()];
        argv.extend_from_slice(args);
        let out = exec::run(&self.tool, &argv, None)?;
        let data = api_data(function, &out.stdout)?;
        if let Some(failed) = data["ips_failed"].as_object().filter(|m| !m.is_empty()) {
            return Err(FwError::unexpected(
                format!("whmapi1 {function}"),
                serde_json::to_string(failed).unwrap_or_default(),
            ));
        }
        Ok(())
    }

    fn converge(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        let held = self.read()?;
        for n in want {
            match held.get(n) {
                Some(true) => {}
                Some(false) => push_change(changes, self.name(), ChangeAction::Preexisting, n),
                None => {
                    self.call(
                        "create_cphulk_record",
                        &[
                            "list_name=white".into(),
                            format!("ip={}", show_net(n)),
                            format!("comment={TAG}"),
                        ],
                    )?;
                    push_change(changes, self.name(), ChangeAction::Added, n);
                }
            }
        }
        for (n, ours) in &held {
            if *ours && !want.contains(n) {
                self.call(
                    "delete_cphulk_record",
                    &["list_name=white".into(), format!("ip={}", show_net(n))],
                )?;
                push_change(changes, self.name(), ChangeAction::Removed, n);
            }
        }
        Ok(())
    }
}

impl Backend for Cphulk {
    fn name(&self) -> &'static str {
        "cphulk"
    }
    fn status_key(&self) -> &'static str {
        HULK_STATUS
    }
    fn ensure(
        &self,
        want: &BTreeSet<IpNet>,
        changes: &mut Vec<WhitelistChange>,
    ) -> Result<(), FwError> {
        self.converge(want, changes)
    }
    fn observe(&self) -> Result<Observed, FwError> {
        let held = self.read()?;
        Ok(Observed {
            ours: held.iter().filter(|(_, o)| **o).map(|(n, _)| *n).collect(),
            admins: held.iter().filter(|(_, o)| !**o).map(|(n, _)| *n).collect(),
            plumbing_ok: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failed_call_is_an_error_with_reason() {
        let out = json!({"metadata":{"result":0,"reason":"cPHulk is disabled on the server."},"data":null}).to_string();
        let e = api_data("read_cphulk_records", &out).unwrap_err();
        assert!(e.to_string().contains("cPHulk is disabled"), "{e}");
    }

    #[test]
    fn ownership_by_comment() {
        let data = json!({"ips_in_list":{
            "192.0.2.1": "cPanel-support-access",
            "192.0.2.2": "office",
            "10.0.0.1-10.0.0.5": "range",
            "2001:db8::1": null
        }});
        let m = parse_records(&data).unwrap();
        assert!(m[&parse_net("192.0.2.1").unwrap()]);
        assert!(!m[&parse_net("192.0.2.2").unwrap()]);
        assert!(!m[&parse_net("2001:db8::1").unwrap()]);
        assert_eq!(m.len(), 3);
    }
}
