//! The command-line client (and the `daemon` entry point).
//!
//! Every command except `daemon` and `config validate` is a WHM API 1 call
//! to the running daemon: over the Unix socket by default (root needs no
//! token), or `--url http://127.0.0.1:2090` with `--token` /
//! `SUPPORTAUTH_TOKEN`. The socket is the one of `--config` (or
//! `SUPPORTAUTH_CONFIG`), unless `--socket` (or `SUPPORTAUTH_SOCKET`) names
//! it.

pub mod client;
pub mod docs;
pub mod output;
pub mod removal;
pub mod trial;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::config::{Config, ConfigSource, DEFAULT_CONFIG_PATH};
use client::Target;

/// Environment and files, for `--help` and the man page.
const ENVIRONMENT_HELP: &str = "\
Environment:
  SUPPORTAUTH_CONFIG   configuration file, as --config (a trial's, say)
  SUPPORTAUTH_SOCKET   the daemon's Unix socket, as --socket
  SUPPORTAUTH_TOKEN    API token for --url (preferred over --token)

Files:
  /etc/supportauth/config.toml           configuration (built-in defaults without it)
  /run/supportauth/supportauth.sock      control socket (root needs no token)
  /var/lib/supportauth/state.db          state store
  /var/cpanel/logs/supportauth/audit.log hash-chained audit log

See /usr/share/doc/supportauth/README.md; `supportauth trial DIR` tries it
on a scratch copy of this host.";

#[derive(Debug, Parser)]
#[command(
    name = "supportauth",
    version,
    about = "Time-boxed, audited SSH access for support staff",
    after_long_help = ENVIRONMENT_HELP
)]
pub struct Cli {
    /// Configuration file (default /etc/supportauth/config.toml; built-in
    /// defaults when it does not exist). The CLI reaches the socket it names.
    #[arg(long, global = true, value_name = "PATH", env = "SUPPORTAUTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// The daemon's Unix socket, when it is not the one of the configuration.
    #[arg(long, global = true, value_name = "PATH", env = "SUPPORTAUTH_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print the raw JSON answer (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// Talk to a TCP listener instead of the Unix socket, e.g. http://127.0.0.1:2090.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// API token for --url (or set SUPPORTAUTH_TOKEN; prefer the variable,
    /// command lines are visible to other users).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service in the foreground.
    Daemon,
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Call any API function, like whmapi1: `call ticket_list ticket_id=123`.
    Call {
        function: String,
        /// name=value arguments (repeat as acl-0=.. acl-1=..).
        #[arg(value_name = "NAME=VALUE")]
        args: Vec<String>,
    },
    /// Grant support access for a ticket and server (ticket_grant).
    Grant {
        #[arg(long)]
        ticket_id: String,
        #[arg(long)]
        server_num: String,
        /// File holding the support public key ("ssh-ed25519 AAAA...").
        #[arg(long, value_name = "FILE")]
        ssh_key_file: PathBuf,
        #[arg(long)]
        ssh_username: Option<String>,
        /// Lifetime of the access in seconds.
        #[arg(long, value_name = "SECS")]
        ttl: Option<String>,
        /// Support source address (repeatable).
        #[arg(long, value_name = "IP")]
        access_ip: Vec<String>,
    },
    /// Revoke support access (ticket_revoke).
    Revoke {
        #[arg(long)]
        ticket_id: String,
        #[arg(long)]
        ssh_username: String,
        #[arg(long)]
        server_num: Option<String>,
    },
    /// List grants (ticket_list).
    List {
        #[arg(long)]
        ticket_id: Option<String>,
        #[arg(long)]
        server_num: Option<String>,
        #[arg(long)]
        ssh_username: Option<String>,
    },
    /// Remove access for closed tickets (ticket_remove_closed).
    RemoveClosed,
    /// Revoke every grant now (ticket_revoke_all).
    RevokeAll,
    /// Read and verify the audit log.
    Audit(AuditArgs),
    /// Check that this host is ready for grants: sshd's effective
    /// configuration for the support addresses, the firewall backends, the
    /// audit chain, the store, the socket and listeners, the clock and the
    /// ticket system. One line per check (OK/WARN/FAIL, what, the fix);
    /// `--json` for scripts. Exits 1 when a grant would fail or be unsafe.
    /// Run as root on the host (it reads the host directly; changes nothing).
    Doctor,
    /// The web page inside WHM: one CGI request, forwarded to the daemon
    /// (installed as WHM's index.cgi; see whm/).
    WhmCgi,
    /// Prepare a scratch root in DIR from this host's files (accounts,
    /// sshd_config, sudoers) and print its configuration and the commands
    /// to try supportauth there without changing the machine.
    Trial {
        /// An empty or new directory (absolute or relative).
        dir: PathBuf,
    },
    /// Revoke every grant before the package is removed, starting a
    /// temporary daemon when none answers (used by the package scripts).
    #[command(hide = true)]
    PrepareRemoval,
    /// Write the man pages and shell completions into DIR (used to build
    /// the packages).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a configuration file; prints OK or the error naming the key.
    Validate { path: Option<PathBuf> },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once and never again.
    Create {
        name: String,
        /// ACL (repeatable): all, tickets-list, tickets-grant, tokens-admin, audit-read. Default: all.
        #[arg(long)]
        acl: Vec<String>,
        /// Expiry: a Unix time, or +DURATION such as +30d, +12h, +90m.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Address or CIDR the token may be used from (repeatable).
        #[arg(long, value_name = "IP")]
        whitelist_ip: Vec<String>,
    },
    /// List tokens (never their values).
    List,
    /// Revoke (delete) tokens.
    Revoke {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Change a token's name, ACLs, expiry or whitelist.
    Update {
        name: String,
        #[arg(long)]
        new_name: Option<String>,
        /// Replaces the ACLs (repeatable).
        #[arg(long)]
        acl: Vec<String>,
        /// New expiry (Unix time, +DURATION, or 0 for never).
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Replaces the whitelist (repeatable).
        #[arg(long, value_name = "IP")]
        whitelist_ip: Vec<String>,
        /// Remove the whitelist (usable from anywhere).
        #[arg(long, conflicts_with = "whitelist_ip")]
        clear_whitelist: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCmd,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the hash chain of the audit log (or of the given files).
    Verify { files: Vec<PathBuf> },
    /// Show audit records, filtered.
    Show {
        #[arg(long)]
        ticket: Option<u64>,
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = AuditFormat::Json)]
        format: AuditFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Json,
    Cpanel,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Daemon => crate::daemon::run(cli.config.as_deref()),
        Command::Config(ConfigCmd::Validate { path }) => {
            validate(path.as_deref().or(cli.config.as_deref()))
        }
        Command::Audit(a) => audit(&cli, a),
        Command::Doctor => match load_config(&cli) {
            Ok(cfg) => crate::doctor::run(&cfg, cli.json),
            Err(e) => {
                eprintln!("supportauth: {e}");
                ExitCode::FAILURE
            }
        },
        Command::WhmCgi => crate::web::cgi::main(cli.config.as_deref()),
        Command::Trial { dir } => trial::run(dir),
        Command::PrepareRemoval => removal::run(&cli),
        Command::GenerateDocs { out } => docs::run(out),
        _ => match call_command(&cli) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("supportauth: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn validate(path: Option<&Path>) -> ExitCode {
    match Config::load(path) {
        Ok((_, ConfigSource::File(p))) => {
            println!("OK: {}", p.display());
            ExitCode::SUCCESS
        }
        Ok((_, ConfigSource::BuiltInDefaults)) => {
            println!("OK: no file at {DEFAULT_CONFIG_PATH}; the built-in defaults apply");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    Config::load(cli.config.as_deref())
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

fn audit(cli: &Cli, a: &AuditArgs) -> ExitCode {
    let cfg = match load_config(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("supportauth: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &a.command {
        AuditCmd::Verify { files } => crate::audit::cli::verify(&cfg, files),
        AuditCmd::Show {
            ticket,
            event,
            actor,
            since,
            until,
            format,
        } => crate::audit::cli::show(
            &cfg,
            *ticket,
            event.clone(),
            actor.clone(),
            since.clone(),
            until.clone(),
            *format == AuditFormat::Cpanel,
        ),
    }
}

/// Parses `--expires`: a Unix time, `0`/`never`, or `+N[smhdw]`.
pub fn parse_when(raw: &str, now: i64) -> Result<i64, String> {
    let s = raw.trim();
    if s == "never" || s == "0" {
        return Ok(0);
    }
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) =
            rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: i64 = num
            .parse()
            .map_err(|_| format!("bad duration {s:?}: expected e.g. +30d, +12h, +90m"))?;
        let mult = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(format!("bad duration unit in {s:?}: use s, m, h, d or w")),
        };
        return n
            .checked_mul(mult)
            .and_then(|d| now.checked_add(d))
            .ok_or_else(|| format!("duration {s:?} is too large"));
    }
    s.parse::<i64>()
        .map_err(|_| format!("bad time {s:?}: give a Unix time or +DURATION such as +30d"))
}

fn numbered(out: &mut Vec<(String, String)>, name: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        out.push((format!("{name}-{i}"), v.clone()));
    }
}

fn opt(out: &mut Vec<(String, String)>, name: &str, v: &Option<String>) {
    if let Some(v) = v {
        out.push((name.to_string(), v.clone()));
    }
}

fn now() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now()
}

/// How the answer of a command is shown.
enum Render {
    Envelope,
    TokenCreated,
    TokenList,
    TicketList,
    Granted,
    Revoked,
    Data,
}

/// A call to make: function, name=value pairs, how to show the answer.
type PlannedCall = (String, Vec<(String, String)>, Render);

/// Maps a client command to the API call it makes.
fn to_call(cmd: &Command) -> Result<PlannedCall, String> {
    let mut p = Vec::new();
    let (f, r) = match cmd {
        Command::Call { function, args } => {
            for a in args {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| format!("argument {a:?} is not NAME=VALUE"))?;
                p.push((k.to_string(), v.to_string()));
            }
            (function.as_str(), Render::Envelope)
        }
        Command::Token(TokenCmd::Create {
            name,
            acl,
            expires,
            whitelist_ip,
        }) => {
            p.push(("token_name".into(), name.clone()));
            numbered(&mut p, "acl", acl);
            if let Some(e) = expires {
                p.push(("expires_at".into(), parse_when(e, now())?.to_string()));
            }
            numbered(&mut p, "whitelist_ip", whitelist_ip);
            ("api_token_create", Render::TokenCreated)
        }
        Command::Token(TokenCmd::List) => ("api_token_list", Render::TokenList),
        Command::Token(TokenCmd::Revoke { names }) => {
            numbered(&mut p, "token_name", names);
            ("api_token_revoke", Render::Data)
        }
        Command::Token(TokenCmd::Update {
            name,
            new_name,
            acl,
            expires,
            whitelist_ip,
            clear_whitelist,
        }) => {
            p.push(("token_name".into(), name.clone()));
            opt(&mut p, "new_name", new_name);
            numbered(&mut p, "acl", acl);
            if let Some(e) = expires {
                p.push(("expires_at".into(), parse_when(e, now())?.to_string()));
            }
            numbered(&mut p, "whitelist_ip", whitelist_ip);
            if *clear_whitelist {
                p.push(("whitelist_ip".into(), String::new()));
            }
            ("api_token_update", Render::Data)
        }
        Command::Grant {
            ticket_id,
            server_num,
            ssh_key_file,
            ssh_username,
            ttl,
            access_ip,
        } => {
            let key = std::fs::read_to_string(ssh_key_file)
                .map_err(|e| format!("cannot read {}: {e}", ssh_key_file.display()))?;
            p.push(("ticket_id".into(), ticket_id.clone()));
            p.push(("server_num".into(), server_num.clone()));
            p.push(("ssh_key".into(), key.trim().to_string()));
            opt(&mut p, "ssh_username", ssh_username);
            opt(&mut p, "ttl", ttl);
            numbered(&mut p, "access_ip", access_ip);
            ("ticket_grant", Render::Granted)
        }
        Command::Revoke {
            ticket_id,
            ssh_username,
            server_num,
        } => {
            p.push(("ticket_id".into(), ticket_id.clone()));
            p.push(("ssh_username".into(), ssh_username.clone()));
            opt(&mut p, "server_num", server_num);
            ("ticket_revoke", Render::Revoked)
        }
        Command::List {
            ticket_id,
            server_num,
            ssh_username,
        } => {
            opt(&mut p, "ticket_id", ticket_id);
            opt(&mut p, "server_num", server_num);
            opt(&mut p, "ssh_username", ssh_username);
            ("ticket_list", Render::TicketList)
        }
        Command::RemoveClosed => ("ticket_remove_closed", Render::Revoked),
        Command::RevokeAll => ("ticket_revoke_all", Render::Revoked),
        Command::Daemon
        | Command::Config(_)
        | Command::Audit(_)
        | Command::Doctor
        | Command::WhmCgi
        | Command::Trial { .. }
        | Command::PrepareRemoval
        | Command::GenerateDocs { .. } => return Err("not an API command".into()),
    };
    Ok((f.to_string(), p, r))
}

/// Where the client commands send their calls: `--url`, else `--socket`,
/// else the socket of the configuration.
pub fn target(cli: &Cli) -> Result<Target, String> {
    if let Some(u) = &cli.url {
        return Target::from_url(u).map_err(|e| e.to_string());
    }
    if let Some(s) = &cli.socket {
        return Ok(Target::Unix(s.clone(), client::SocketFrom::Flag));
    }
    let (cfg, source) = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    let from = match source {
        ConfigSource::File(p) => client::SocketFrom::Config(p),
        ConfigSource::BuiltInDefaults => client::SocketFrom::Defaults,
    };
    Ok(Target::Unix(cfg.socket_path(), from))
}

/// Makes one API call and returns the HTTP status and the answer.
pub fn call(
    cli: &Cli,
    target: &Target,
    function: &str,
    params: &[(String, String)],
) -> Result<(u16, Value), String> {
    let token = cli
        .token
        .clone()
        .or_else(|| std::env::var("SUPPORTAUTH_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(client::call(target, token.as_deref(), function, params))
        .map_err(|e| e.to_string())
}

fn call_command(cli: &Cli) -> Result<ExitCode, String> {
    let (function, params, render) = to_call(&cli.command)?;
    let (status, body) = call(cli, &target(cli)?, &function, &params)?;
    let ok = status == 200 && body["metadata"]["result"].as_i64() == Some(1);
    if cli.json {
        println!("{body}");
    } else if matches!(render, Render::Envelope) {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else if ok {
        let data: &Value = &body["data"];
        let text = match render {
            Render::TokenCreated => output::token_created(data),
            Render::TokenList => output::token_list(data),
            Render::TicketList => output::ticket_list(data),
            Render::Granted => output::granted(data),
            Render::Revoked => output::revoked(data),
            Render::Data | Render::Envelope => output::data(data),
        };
        print!("{text}");
    }
    if !ok && !cli.json {
        let reason = body["metadata"]["reason"]
            .as_str()
            .unwrap_or("no reason given");
        if status == 200 {
            eprintln!("supportauth: {function} failed: {reason}");
        } else {
            eprintln!("supportauth: {function}: HTTP {status}: {reason}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_parsing() {
        assert_eq!(parse_when("+30d", 100), Ok(100 + 30 * 86_400));
        assert_eq!(parse_when("+90m", 0), Ok(5400));
        assert_eq!(parse_when("+15", 0), Ok(15));
        assert_eq!(parse_when("1800000000", 0), Ok(1_800_000_000));
        assert_eq!(parse_when("never", 5), Ok(0));
        assert!(parse_when("+3y", 0).is_err());
        assert!(parse_when("tomorrow", 0).is_err());
    }

    #[test]
    fn verbs_map_to_functions() {
        let cli = Cli::try_parse_from([
            "supportauth",
            "token",
            "create",
            "ci",
            "--acl",
            "tickets-list",
            "--acl",
            "audit-read",
            "--whitelist-ip",
            "127.0.0.1",
        ])
        .unwrap();
        let (f, p, _) = to_call(&cli.command).unwrap();
        assert_eq!(f, "api_token_create");
        assert!(p.contains(&("acl-1".into(), "audit-read".into())));
        assert!(p.contains(&("whitelist_ip-0".into(), "127.0.0.1".into())));
        let cli = Cli::try_parse_from([
            "supportauth",
            "revoke",
            "--ticket-id",
            "123",
            "--ssh-username",
            "root",
        ])
        .unwrap();
        assert_eq!(to_call(&cli.command).unwrap().0, "ticket_revoke");
        let cli =
            Cli::try_parse_from(["supportauth", "call", "ticket_list", "ticket_id=5"]).unwrap();
        let (f, p, _) = to_call(&cli.command).unwrap();
        assert_eq!((f.as_str(), p[0].1.as_str()), ("ticket_list", "5"));
        Cli::try_parse_from([
            "supportauth",
            "audit",
            "show",
            "--ticket",
            "5",
            "--format",
            "cpanel",
        ])
        .unwrap();
    }
}
