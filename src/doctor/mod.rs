//! `supportauth doctor`: is this host in a state where a grant works, and
//! is it safe? Runs in the CLI process (as root, like `audit verify`): a
//! thin gatherer ([`gather`]) reads the host into [`facts::Facts`] without
//! changing anything, and small pure functions ([`checks`]) turn those
//! facts into one verdict per concern, each with what to do about it.
//!
//! Exit status: 0 when nothing FAILs (WARNs are advice), 1 otherwise.

pub mod checks;
pub mod facts;
pub mod gather;

use std::process::ExitCode;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;

/// A check's verdict. FAIL: a grant would fail or be unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report: which concern, the verdict, what was found,
/// and (for WARN/FAIL) what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: &'static str, what: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Ok,
            what: what.into(),
            fix: None,
        }
    }
    pub fn warn(check: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
    pub fn fail(check: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check's verdict, in the order they were made.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|c| c.status == s).count()
    }

    pub fn failed(&self) -> bool {
        self.count(Status::Fail) > 0
    }

    /// One line per check (`FAIL  sshd       what -- fix: ...`) and a total.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<9}  {}",
                c.status.as_str(),
                c.check,
                c.what
            ));
            if let Some(fix) = &c.fix {
                out.push_str(" -- fix: ");
                out.push_str(fix);
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "doctor: {} OK, {} WARN, {} FAIL\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail)
        ));
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "result": if self.failed() { 0 } else { 1 },
            "ok": self.count(Status::Ok),
            "warn": self.count(Status::Warn),
            "fail": self.count(Status::Fail),
            "checks": self.checks,
        })
    }
}

/// `supportauth doctor [--json]`.
pub fn run(cfg: &Config, as_json: bool) -> ExitCode {
    let facts = gather::gather(cfg);
    let report = Report {
        checks: checks::all(&facts),
    };
    if as_json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
