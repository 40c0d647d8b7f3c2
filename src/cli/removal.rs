//! `supportauth prepare-removal`: what the package scripts run before the
//! binary goes away. Every grant is revoked (keys, temporary users,
//! sudoers drop-ins, whitelist entries) and the firewall setup removed, by
//! the daemon itself so each step is audited. A daemon that is not
//! running is started for the purpose and stopped afterwards.
//!
//! Failing here fails the removal: a package that vanished while support
//! could still log in would be worse than a removal that asks for help.

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Target;
use super::Cli;

/// How long a temporary daemon may take to answer (it reconciles first).
const START_PATIENCE: Duration = Duration::from_secs(120);
/// Escape hatch for a host where the daemon cannot run at all.
pub const SKIP_ENV: &str = "SUPPORTAUTH_REMOVE_KEEP_GRANTS";

pub fn run(cli: &Cli) -> ExitCode {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!(
            "supportauth: {SKIP_ENV}=1: NOT revoking grants; keys, users, sudoers files and \
             firewall entries of active grants stay on this host"
        );
        return ExitCode::SUCCESS;
    }
    match revoke_everything(cli) {
        Ok(summary) => {
            println!("supportauth: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "supportauth: cannot revoke the grants before removal: {e}\n\
                 Fix the daemon (`supportauth config validate`, `journalctl -u supportauth`) \
                 and retry, or set {SKIP_ENV}=1 to remove the package and leave the \
                 grants in place."
            );
            ExitCode::FAILURE
        }
    }
}

fn revoke_everything(cli: &Cli) -> Result<String, String> {
    let target = super::target(cli)?;
    let mut temporary = None;
    if super::call(cli, &target, "ticket_list", &[]).is_err() {
        eprintln!("supportauth: no daemon answers; starting one to revoke the grants");
        temporary = Some(TemporaryDaemon::start(cli, &target)?);
    }
    let outcome = revoke_and_unsetup(cli, &target);
    if let Some(d) = temporary {
        d.stop()?;
    }
    outcome
}

fn revoke_and_unsetup(cli: &Cli, target: &Target) -> Result<String, String> {
    let (status, body) = super::call(cli, target, "ticket_revoke_all", &[])?;
    ok(status, &body, "ticket_revoke_all")?;
    let revoked = body["data"]["revoked_keys"].as_u64().unwrap_or(0);
    let (status, body) = super::call(cli, target, "ticket_whitelist_unsetup", &[])?;
    ok(status, &body, "ticket_whitelist_unsetup")?;
    Ok(format!(
        "revoked every grant before removal ({revoked} key(s)): no support key, temporary \
         user, sudoers file or firewall entry of ours is left"
    ))
}

fn ok(status: u16, body: &Value, function: &str) -> Result<(), String> {
    if status == 200 && body["metadata"]["result"].as_i64() == Some(1) {
        return Ok(());
    }
    let reason = body["metadata"]["reason"].as_str().unwrap_or("no reason");
    Err(format!("{function}: HTTP {status}: {reason}"))
}

/// A daemon this command started; stopped with SIGTERM like systemd does.
struct TemporaryDaemon {
    child: Child,
}

impl TemporaryDaemon {
    fn start(cli: &Cli, target: &Target) -> Result<TemporaryDaemon, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut cmd = Command::new(exe);
        if let Some(c) = &cli.config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        let mut d = TemporaryDaemon { child };
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if super::call(cli, target, "ticket_list", &[]).is_ok() {
                return Ok(d);
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                return Err(format!("the daemon exited ({st}); see its messages above"));
            }
            if Instant::now() > deadline {
                let _ = d.stop();
                return Err(format!(
                    "the daemon did not answer within {}s",
                    START_PATIENCE.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) -> Result<(), String> {
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(self.child.id()).map_err(|_| "pid out of range".to_string())?,
        );
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let st = self.child.wait().map_err(|e| format!("wait: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("the temporary daemon stopped with {st}"))
        }
    }
}
