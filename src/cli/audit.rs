//! `audit verify` and `audit show`: the local log by default, a running
//! daemon's through `audit_log_verify` / `audit_log_read` with `--url`.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use super::when::{parse_point, Bound};
use super::{call, load_config, now, succeeded, target, AuditArgs, AuditCmd, AuditFormat, Cli};
use crate::audit::record::Record;
use crate::audit::show::{check_event, records_table, write_record, Filter, ShowFormat};

/// The most records `audit_log_read` returns in one answer.
const REMOTE_LIMIT: &str = "1000";

pub fn run(cli: &Cli, a: &AuditArgs) -> ExitCode {
    match &a.command {
        AuditCmd::Verify { files } => {
            if cli.url.is_some() {
                if !files.is_empty() {
                    eprintln!("supportauth: audit verify FILES reads local files; drop --url");
                    return ExitCode::from(2);
                }
                return super::report(verify_remote(cli));
            }
            match load_config(cli) {
                Ok(cfg) => crate::audit::cli::verify(&cfg, files),
                Err(e) => {
                    eprintln!("supportauth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        AuditCmd::Show {
            ticket,
            event,
            actor,
            since,
            until,
            format,
        } => {
            let filter = match filter_of(*ticket, event, actor, since, until) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("supportauth: {e}");
                    return ExitCode::from(2);
                }
            };
            let format = match (cli.json, format) {
                (_, AuditFormat::Cpanel) => ShowFormat::Cpanel,
                (true, _) | (_, AuditFormat::Json) => ShowFormat::Json,
                (false, AuditFormat::Table) => ShowFormat::Table,
            };
            if cli.url.is_some() {
                return super::report(show_remote(cli, &filter, format));
            }
            match load_config(cli) {
                Ok(cfg) => crate::audit::cli::show(&cfg, &filter, format),
                Err(e) => {
                    eprintln!("supportauth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The filter of `audit show`'s flags; times in the CLI's words.
fn filter_of(
    ticket: Option<u64>,
    event: &Option<String>,
    actor: &Option<String>,
    since: &Option<String>,
    until: &Option<String>,
) -> Result<Filter, String> {
    if let Some(e) = event {
        check_event(e).map_err(|e| format!("--event: {e}"))?;
    }
    let now = now();
    let offset = crate::audit::cpanel::local_offset(now);
    let point = |flag: &str, raw: &Option<String>, bound| {
        raw.as_deref()
            .map(|r| parse_point(r, bound, now, offset))
            .transpose()
            .map_err(|e| format!("{flag}: {e}"))
    };
    Ok(Filter {
        ticket,
        event: event.clone(),
        actor: actor.clone(),
        since: point("--since", since, Bound::Start)?,
        until: point("--until", until, Bound::End)?,
    })
}

fn call_ok(cli: &Cli, function: &str, params: &[(String, String)]) -> Result<Value, String> {
    let (status, body) = call(cli, &target(cli)?, function, params)?;
    if succeeded(status, &body) {
        Ok(body)
    } else {
        let reason = body["metadata"]["reason"]
            .as_str()
            .unwrap_or("no reason given");
        Err(format!("{function} failed (HTTP {status}): {reason}"))
    }
}

fn verify_remote(cli: &Cli) -> Result<ExitCode, String> {
    let body = call_ok(cli, "audit_log_verify", &[])?;
    let data = &body["data"];
    if cli.json {
        println!("{body}");
    } else {
        println!("{}", data["summary"].as_str().unwrap_or("?"));
    }
    Ok(if data["ok"].as_i64() == Some(1) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn show_remote(cli: &Cli, filter: &Filter, format: ShowFormat) -> Result<ExitCode, String> {
    let mut p: Vec<(String, String)> = vec![("limit".into(), REMOTE_LIMIT.into())];
    if let Some(t) = filter.ticket {
        p.push(("ticket_id".into(), t.to_string()));
    }
    if let Some(e) = &filter.event {
        p.push(("event".into(), e.clone()));
    }
    if let Some(a) = &filter.actor {
        p.push(("actor".into(), a.clone()));
    }
    if let Some(t) = filter.since {
        p.push(("since".into(), t.to_string()));
    }
    if let Some(t) = filter.until {
        p.push(("until".into(), t.to_string()));
    }
    let body = call_ok(cli, "audit_log_read", &p)?;
    let data = &body["data"];
    // Newest first in the answer; oldest first here, as for the local log.
    let mut records = Vec::new();
    for v in data["records"].as_array().into_iter().flatten().rev() {
        let rec: Record = serde_json::from_value(v.clone())
            .map_err(|e| format!("audit_log_read returned a record that does not parse: {e}"))?;
        records.push(rec);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match format {
        ShowFormat::Table => out.write_all(records_table(&records).as_bytes()),
        _ => records
            .iter()
            .try_for_each(|r| write_record(r, format, &mut out).map(|_| ())),
    }
    .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(format!("writing the records: {e}"))
        }
        _ => {}
    }
    let matched = data["matched"].as_u64().unwrap_or(0);
    if matched > records.len() as u64 {
        eprintln!(
            "note: {matched} records matched; the daemon returns the newest {} (narrow with --since, --ticket or --event)",
            records.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
