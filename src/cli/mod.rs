//! The command-line client (and the `daemon` entry point).
//!
//! Every command except `daemon` and `config validate` is a WHM API 1 call
//! to the running daemon: over the Unix socket by default (root needs no
//! token), or `--url http://127.0.0.1:2090` with `--token` /
//! `SUPPORTAUTH_TOKEN`. The socket is the one of `--config` (or
//! `SUPPORTAUTH_CONFIG`), unless `--socket` (or `SUPPORTAUTH_SOCKET`) names
//! it.

mod audit;
pub mod client;
pub mod docs;
pub mod output;
pub mod removal;
pub mod terms;
pub mod trial;
pub mod when;

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

/// Help shared by the ticket commands.
const TICKET_ID_HELP: &str =
    "Ticket number: digits only, at least 3 (e.g. 12345), as on the support ticket.";
const SERVER_NUM_HELP: &str =
    "Server number within the ticket (digits, e.g. 1), as on the support ticket.";

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
        /// The API function, e.g. ticket_list.
        function: String,
        /// name=value arguments (repeat as acl-0=.. acl-1=..).
        #[arg(value_name = "NAME=VALUE")]
        args: Vec<String>,
    },
    /// Grant support access for a ticket and server (ticket_grant).
    Grant {
        #[arg(long, help = TICKET_ID_HELP)]
        ticket_id: String,
        #[arg(long, help = SERVER_NUM_HELP)]
        server_num: String,
        /// File holding the support public key: one line such as
        /// "ssh-ed25519 AAAA... comment" (the .pub file, never the private key).
        #[arg(long, value_name = "FILE")]
        ssh_key_file: PathBuf,
        /// Existing user support logs in as. Default: root when sshd lets
        /// root log in with a key, else a temporary user cp<TICKET>.ssh
        /// allowed to use sudo.
        #[arg(long, value_name = "USER")]
        ssh_username: Option<String>,
        /// How long the access lasts: 2h, 90m, 1h30m, 3d, or plain seconds
        /// (0: no expiry, where access.allow_unlimited permits). Default:
        /// access.default_ttl_secs of the configuration.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Address or network support connects from (repeatable). Default:
        /// access.support_ips of the configuration.
        #[arg(long, value_name = "IP")]
        access_ip: Vec<String>,
    },
    /// Move the end of a grant: it ends TTL from now (ticket_grant_extend).
    Extend {
        #[arg(long, help = TICKET_ID_HELP)]
        ticket_id: String,
        #[arg(long, help = SERVER_NUM_HELP)]
        server_num: String,
        /// The new lifetime, counted from now: 2h, 90m, 1d, or plain seconds
        /// (0: no expiry, where access.allow_unlimited permits).
        #[arg(long, value_name = "DURATION")]
        ttl: String,
    },
    /// Revoke support access: every server of the ticket, or one
    /// (ticket_revoke for each user the ticket's grants use).
    Revoke {
        #[arg(long, help = TICKET_ID_HELP)]
        ticket_id: String,
        /// Only the grant that logs in as this user (default: all of them).
        #[arg(long, value_name = "USER")]
        ssh_username: Option<String>,
        /// Only this server of the ticket (default: every server).
        #[arg(long, value_name = "NUM")]
        server_num: Option<String>,
    },
    /// List grants (ticket_list), as a table (--json for the raw answer).
    List {
        /// Only this ticket (digits, at least 3).
        #[arg(long, value_name = "ID")]
        ticket_id: Option<String>,
        /// Only this server number.
        #[arg(long, value_name = "NUM")]
        server_num: Option<String>,
        /// Only grants that log in as this user.
        #[arg(long, value_name = "USER")]
        ssh_username: Option<String>,
    },
    /// Remove access for closed tickets (ticket_remove_closed); exits 0
    /// when there is nothing to remove.
    RemoveClosed,
    /// Revoke every grant now (ticket_revoke_all).
    RevokeAll,
    /// Read and verify the audit log.
    Audit(AuditArgs),
    /// Notifications (webhooks, mail).
    #[command(subcommand)]
    Notify(NotifyCmd),
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
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a configuration file; prints OK or the error naming the key.
    Validate {
        /// The file (default: --config, else /etc/supportauth/config.toml).
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Each receiver: pending events, last success, last error, next
    /// attempt (notify_status).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once and never again.
    Create {
        /// The token's name (letters, digits, _ and -).
        name: String,
        /// ACL (repeatable): all, tickets-list, tickets-grant, tokens-admin,
        /// audit-read, metrics-read. Default: all (give the fewest the
        /// client needs).
        #[arg(long)]
        acl: Vec<String>,
        /// Expiry: a duration from now (30d, 12h, +90m), a Unix time, or
        /// never. Default: never.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Address or CIDR the token may be used from (repeatable).
        #[arg(long, value_name = "IP")]
        whitelist_ip: Vec<String>,
    },
    /// List tokens (never their values), as a table (--json for the raw answer).
    List,
    /// Revoke (delete) tokens.
    Revoke {
        /// Names of the tokens to delete.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Change a token's name, ACLs, expiry or whitelist.
    Update {
        /// The token's current name.
        name: String,
        /// Its new name.
        #[arg(long)]
        new_name: Option<String>,
        /// Replaces the ACLs (repeatable).
        #[arg(long)]
        acl: Vec<String>,
        /// New expiry: a duration from now (30d, +12h), a Unix time, or
        /// never (0).
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

/// Help for the time options of `audit show`.
const TIME_HELP: &str = "a date (2026-12-04, the host's time zone), today, yesterday, a time \
     ago (2h, 30m, 7d), RFC 3339 (2026-12-04T13:00:00Z) or epoch seconds";

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the hash chain of the audit log (or of the given files); with
    /// --url, the daemon's log (audit_log_verify).
    Verify {
        /// Log files to verify instead of the configured log.
        files: Vec<PathBuf>,
    },
    /// Show audit records, filtered, oldest first: a table, --json for the
    /// records as stored, --format cpanel for cPanel's classic lines; with
    /// --url, the daemon's log (audit_log_read, the newest 1000 at most).
    Show {
        /// Only records of this ticket.
        #[arg(long, value_name = "ID")]
        ticket: Option<u64>,
        /// Only this event (grant, revoke, expire, grant_extended, ...; an
        /// unknown name is refused with the list).
        #[arg(long)]
        event: Option<String>,
        /// Only this actor: uid:0, system, token:root:NAME, or a token's NAME.
        #[arg(long)]
        actor: Option<String>,
        /// From this time on (inclusive).
        #[arg(long, value_name = "WHEN", long_help = format!("From this time on (inclusive): {TIME_HELP}."))]
        since: Option<String>,
        /// Up to this time (inclusive; a date means its end).
        #[arg(long, value_name = "WHEN", long_help = format!("Up to this time (inclusive; a date or yesterday means the end of that day): {TIME_HELP}."))]
        until: Option<String>,
        /// Output: table (default), json (the records as stored, one a
        /// line; same as --json), cpanel (cPanel's classic lines).
        #[arg(long, value_enum, default_value_t = AuditFormat::Table)]
        format: AuditFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Table,
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
        Command::Audit(a) => audit::run(&cli, a),
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
        Command::Revoke {
            ticket_id,
            ssh_username,
            server_num,
        } => report(revoke(&cli, ticket_id, ssh_username, server_num)),
        _ => report(call_command(&cli)),
    }
}

fn report(outcome: Result<ExitCode, String>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("supportauth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: Option<&Path>) -> ExitCode {
    // Beyond the file itself: the webhooks' secret files (owner, mode).
    let loaded = Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|(cfg, source)| {
            match crate::notify::receivers(&cfg)
                .into_iter()
                .find_map(Result::err)
            {
                Some((_, e)) => Err(e),
                None => Ok((cfg, source)),
            }
        });
    match loaded {
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

/// `--ttl` as the seconds the API takes, the flag named in the error.
fn ttl_seconds(raw: &str) -> Result<String, String> {
    when::parse_duration(raw)
        .map(|s| s.to_string())
        .map_err(|e| format!("--ttl: {e}"))
}

/// `--expires` as the Unix time the API takes.
fn expires_at(raw: &str) -> Result<String, String> {
    when::parse_expiry(raw, now())
        .map(|t| t.to_string())
        .map_err(|e| format!("--expires: {e}"))
}

/// The support key of `--ssh-key-file`, or why that file is not one.
fn read_public_key(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => {
            format!("--ssh-key-file {shown} is not text; give the public key file (.pub)")
        }
        _ => format!("--ssh-key-file: cannot read {shown}: {e}"),
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!(
            "--ssh-key-file {shown} is empty; give a file holding one public key line \
             such as “ssh-ed25519 AAAA… comment” (a .pub file)"
        ));
    }
    if key.contains("PRIVATE KEY") {
        return Err(format!(
            "--ssh-key-file {shown} is a private key; give the .pub file (the public \
             half, e.g. {shown}.pub), and keep the private key to yourself"
        ));
    }
    Ok(key.to_string())
}

/// How the answer of a command is shown.
enum Render {
    Envelope,
    TokenCreated,
    TokenList,
    TicketList,
    NotifyStatus,
    Granted,
    Extended,
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
                p.push(("expires_at".into(), expires_at(e)?));
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
                p.push(("expires_at".into(), expires_at(e)?));
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
            let ttl = ttl.as_deref().map(ttl_seconds).transpose()?;
            let key = read_public_key(ssh_key_file)?;
            p.push(("ticket_id".into(), ticket_id.clone()));
            p.push(("server_num".into(), server_num.clone()));
            p.push(("ssh_key".into(), key));
            opt(&mut p, "ssh_username", ssh_username);
            opt(&mut p, "ttl", &ttl);
            numbered(&mut p, "access_ip", access_ip);
            ("ticket_grant", Render::Granted)
        }
        Command::Extend {
            ticket_id,
            server_num,
            ttl,
        } => {
            p.push(("ticket_id".into(), ticket_id.clone()));
            p.push(("server_num".into(), server_num.clone()));
            p.push(("ttl".into(), ttl_seconds(ttl)?));
            ("ticket_grant_extend", Render::Extended)
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
        Command::Notify(NotifyCmd::Status) => ("notify_status", Render::NotifyStatus),
        Command::RemoveClosed => ("ticket_remove_closed", Render::Revoked),
        Command::RevokeAll => ("ticket_revoke_all", Render::Revoked),
        Command::Revoke { .. }
        | Command::Daemon
        | Command::Config(_)
        | Command::Audit(_)
        | Command::Doctor
        | Command::WhmCgi
        | Command::Trial { .. }
        | Command::PrepareRemoval
        | Command::GenerateDocs { .. } => return Err("not a single API call".into()),
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

/// Whether an answer is a success.
fn succeeded(status: u16, body: &Value) -> bool {
    status == 200 && body["metadata"]["result"].as_i64() == Some(1)
}

/// The failure of a call, for stderr; API argument names become the
/// command's flags unless the command is the raw `call`.
fn failure(cmd: &Command, function: &str, status: u16, body: &Value) -> String {
    let reason = body["metadata"]["reason"]
        .as_str()
        .unwrap_or("no reason given");
    let reason = match cmd {
        Command::Call { .. } => reason.to_string(),
        _ => terms::in_cli_terms(reason),
    };
    if status == 200 {
        format!("supportauth: {function} failed: {reason}")
    } else {
        format!("supportauth: {function}: HTTP {status}: {reason}")
    }
}

fn call_command(cli: &Cli) -> Result<ExitCode, String> {
    let (function, params, render) = to_call(&cli.command)?;
    let (status, body) = call(cli, &target(cli)?, &function, &params)?;
    let mut ok = succeeded(status, &body);
    // Nothing closed to remove is not a failure for a cron job; the API
    // keeps cPanel's `result: 0` and marks the case in `data`.
    let nothing_to_do = !ok
        && status == 200
        && function == "ticket_remove_closed"
        && body["data"]["nothing_to_remove"].as_i64() == Some(1);
    if cli.json {
        println!("{body}");
    } else if matches!(render, Render::Envelope) {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else if nothing_to_do {
        println!(
            "Nothing to do: {}",
            body["metadata"]["reason"].as_str().unwrap_or_default()
        );
    } else if ok {
        let data: &Value = &body["data"];
        let text = match render {
            Render::TokenCreated => output::token_created(data),
            Render::TokenList => output::token_list(data),
            Render::TicketList => output::ticket_list(data),
            Render::NotifyStatus => output::notify_status(data),
            Render::Granted => output::granted(data),
            Render::Extended => output::extended(data),
            Render::Revoked => output::revoked(data),
            Render::Data | Render::Envelope => output::data(data),
        };
        print!("{text}");
    }
    if ok {
        if let Some(w) = output::token_warning(&function, &params) {
            eprintln!("{w}");
        }
    }
    ok |= nothing_to_do;
    if !ok && !cli.json {
        eprintln!("{}", failure(&cli.command, &function, status, &body));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `revoke`: lists the ticket's live grants (narrowed by server and user),
/// then revokes them, one `ticket_revoke` per login user. Nothing to
/// revoke is said and is not a failure.
fn revoke(
    cli: &Cli,
    ticket_id: &str,
    ssh_username: &Option<String>,
    server_num: &Option<String>,
) -> Result<ExitCode, String> {
    let target = target(cli)?;
    // An explicit user is asked for even without a grant row, so a stray
    // key of ours for the ticket in that user's file still goes.
    let users = match ssh_username {
        Some(u) => vec![u.clone()],
        None => {
            let mut filter = vec![("ticket_id".to_string(), ticket_id.to_string())];
            opt(&mut filter, "server_num", server_num);
            let (status, list) = call(cli, &target, "ticket_list", &filter)?;
            if !succeeded(status, &list) {
                eprintln!("{}", failure(&cli.command, "ticket_list", status, &list));
                return Ok(ExitCode::FAILURE);
            }
            output::grant_users(&list["data"])
        }
    };
    if users.is_empty() {
        let which = server_num
            .as_ref()
            .map(|s| format!(" server {s}"))
            .unwrap_or_default();
        if !cli.json {
            println!("Nothing to revoke: ticket {ticket_id}{which} has no grant.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut all_ok = true;
    let mut answers = Vec::new();
    for user in &users {
        let mut p = vec![
            ("ticket_id".to_string(), ticket_id.to_string()),
            ("ssh_username".to_string(), user.clone()),
        ];
        opt(&mut p, "server_num", server_num);
        let (status, body) = call(cli, &target, "ticket_revoke", &p)?;
        let ok = succeeded(status, &body);
        let nothing = !ok && status == 200 && body["data"]["nothing_to_revoke"].as_i64() == Some(1);
        all_ok &= ok || nothing;
        if !cli.json {
            if ok {
                print!("{user}: {}", output::revoked(&body["data"]));
            } else if nothing {
                println!(
                    "Nothing to revoke: {}",
                    body["metadata"]["reason"].as_str().unwrap_or_default()
                );
            } else {
                eprintln!("{}", failure(&cli.command, "ticket_revoke", status, &body));
            }
        }
        answers.push(body);
    }
    if cli.json {
        // One answer per line, as the API gave them (none when nothing
        // matched).
        for a in &answers {
            println!("{a}");
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "extend",
            "--ticket-id",
            "123",
            "--server-num",
            "1",
            "--ttl",
            "1h30m",
        ])
        .unwrap();
        let (f, p, _) = to_call(&cli.command).unwrap();
        assert_eq!(f, "ticket_grant_extend");
        assert!(p.contains(&("ttl".into(), "5400".into())), "{p:?}");
        // revoke needs only the ticket (it lists, then revokes).
        Cli::try_parse_from(["supportauth", "revoke", "--ticket-id", "123"]).unwrap();
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

    #[test]
    fn every_flag_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "supportauth", &mut missing);
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }
}
