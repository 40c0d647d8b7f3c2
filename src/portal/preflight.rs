//! The local SSH preflight: what can be checked from this server without
//! the portal, in the SSH test's vocabulary. Network first (TCP, banner,
//! key exchange with russh's client), then the host (the key installed and
//! usable for the login user under sshd's effective configuration, and the
//! way to root in place).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::wire::SshTestResult;
use crate::engine::Host;
use crate::store::grants::GrantRow;
use crate::types::Username;

/// A preflight verdict: the result and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub result: SshTestResult,
    pub detail: String,
}

impl Verdict {
    fn fail(result: SshTestResult, detail: impl Into<String>) -> Verdict {
        Verdict {
            result,
            detail: detail.into(),
        }
    }
    fn success() -> Verdict {
        Verdict::fail(SshTestResult::Success, "")
    }
}

/// Accepts any host key: the preflight checks that sshd speaks SSH, not who
/// it is (support verifies the host key on its own side).
struct AnyHostKey;

impl russh::client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Maps a failed TCP connect to the vocabulary.
fn connect_error(e: &std::io::Error) -> SshTestResult {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => SshTestResult::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EADDRNOTAVAIL) => {
            SshTestResult::Unreachable
        }
        Some(libc::ETIMEDOUT) => SshTestResult::Timeout,
        _ => SshTestResult::Unknown,
    }
}

/// Looks at (without consuming) what the server says first: its first
/// complete line must be an SSH-2 version string.
async fn peek_banner(stream: &TcpStream, limit: Duration) -> Result<(), Verdict> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 512];
    let mut seen = 0;
    loop {
        // A ready peek never lets a timeout fire, so the deadline is
        // checked here as well.
        if seen > 0 && tokio::time::Instant::now() >= deadline {
            break;
        }
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) if seen == 0 => {
                return Err(Verdict::fail(
                    SshTestResult::Environment,
                    format!(
                        "the server accepted the connection but sent nothing within {} s (not an SSH server?)",
                        limit.as_secs()
                    ),
                ))
            }
            Err(_) => break,
            Ok(Err(e)) => {
                return Err(Verdict::fail(
                    SshTestResult::Environment,
                    format!("reading the SSH banner failed: {e}"),
                ))
            }
            Ok(Ok(0)) => {
                return Err(Verdict::fail(
                    SshTestResult::Environment,
                    "the server closed the connection without an SSH banner",
                ))
            }
            Ok(Ok(n)) => n,
        };
        if let Some(end) = buf[..n].iter().position(|b| *b == b'\n') {
            let line = &buf[..end];
            if line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-") {
                return Ok(());
            }
            seen = end;
            break;
        }
        if n == buf.len() {
            seen = n;
            break;
        }
        if n == seen {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen = n;
    }
    let first = String::from_utf8_lossy(&buf[..seen.min(buf.len())]).into_owned();
    Err(Verdict::fail(
        SshTestResult::Protocol,
        format!(
            "the server does not speak SSH-2 (it said {:?})",
            crate::types::printable(first.trim_end())
        ),
    ))
}

/// TCP connect, banner and key exchange against `addr`.
pub async fn network(addr: SocketAddr, limit: Duration) -> Verdict {
    let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => {
            return Verdict::fail(
                SshTestResult::Timeout,
                format!("no answer from {addr} within {} s", limit.as_secs()),
            )
        }
        Ok(Err(e)) => return Verdict::fail(connect_error(&e), format!("{addr}: {e}")),
        Ok(Ok(s)) => s,
    };
    if let Err(v) = peek_banner(&stream, limit).await {
        return v;
    }
    let config = Arc::new(russh::client::Config::default());
    match tokio::time::timeout(
        limit,
        russh::client::connect_stream(config, stream, AnyHostKey),
    )
    .await
    {
        Err(_) => Verdict::fail(
            SshTestResult::Timeout,
            format!(
                "the SSH key exchange with {addr} did not finish within {} s",
                limit.as_secs()
            ),
        ),
        Ok(Err(e)) => Verdict::fail(
            SshTestResult::Protocol,
            format!("the SSH key exchange with {addr} failed: {e}"),
        ),
        Ok(Ok(handle)) => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "preflight done", "en")
                .await;
            Verdict::success()
        }
    }
}

/// Whether `user` (not root) can become root: in the sudo group with a rule
/// for it, or (temporary user) our sudoers drop-in for the ticket.
fn escalation(host: &Host, row: &GrantRow) -> Verdict {
    let user = &row.ssh_username;
    if user.is_root() {
        return Verdict::success();
    }
    if !host.sudo_present() {
        return Verdict::fail(
            SshTestResult::Escalate,
            format!(
                "sudo is not installed ({}), so {user} cannot become root",
                host.sudo_path.display()
            ),
        );
    }
    if row.sudoers_dropin {
        return match host.sudoers.list_ours() {
            Ok(t) if t.contains(&row.ticket) => Verdict::success(),
            Ok(_) => Verdict::fail(
                SshTestResult::Escalate,
                format!("the sudoers drop-in for ticket {} is missing", row.ticket),
            ),
            Err(e) => Verdict::fail(SshTestResult::Escalate, format!("cannot read sudoers: {e}")),
        };
    }
    let group = match host.users.wheel_group() {
        Ok(g) => g,
        Err(e) => return Verdict::fail(SshTestResult::Escalate, e.to_string()),
    };
    let member = host
        .users
        .groups_of(user)
        .map(|g| g.contains(&group))
        .unwrap_or(false);
    let rule = host.sudoers.group_allows_sudo(&group).unwrap_or(false);
    if member && rule {
        Verdict::success()
    } else {
        Verdict::fail(
            SshTestResult::Escalate,
            format!("{user} cannot become root: member of {group}: {member}, sudoers rule for %{group}: {rule}"),
        )
    }
}

/// The key of `row` is installed for its user and sshd would accept it
/// from every support address; then the escalation path.
pub fn host_checks(host: &Host, row: &GrantRow) -> Verdict {
    let user: &Username = &row.ssh_username;
    let account = match host.users.lookup(user) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Verdict::fail(
                SshTestResult::Auth,
                format!("the user {user} does not exist"),
            )
        }
        Err(e) => return Verdict::fail(SshTestResult::Auth, e.to_string()),
    };
    let acct = host.key_account(&account);
    let installed = match host.keys.list_ours(&acct) {
        Ok(k) => k,
        Err(e) => {
            return Verdict::fail(
                SshTestResult::Auth,
                format!("cannot read {user}'s authorized_keys: {e}"),
            )
        }
    };
    if !installed
        .iter()
        .any(|k| k.mark.ticket == row.ticket && k.mark.server == row.server && k.key == row.ssh_key)
    {
        return Verdict::fail(
            SshTestResult::Auth,
            format!(
                "the support key for ticket {} server {} is not in {user}'s authorized_keys",
                row.ticket, row.server
            ),
        );
    }
    let groups = host.users.groups_of(user).unwrap_or_default();
    for ip in &row.access_ips {
        let from: IpAddr = ip.cidr().net().addr();
        match host.sshd.effective(user, from) {
            Ok(eff) => {
                let blockers = eff.login_blockers_at_home(user, Some(&account.home), &groups, from);
                if !blockers.is_empty() {
                    return Verdict::fail(SshTestResult::Auth, blockers.join("; "));
                }
            }
            Err(e) => return Verdict::fail(SshTestResult::Environment, e.to_string()),
        }
    }
    escalation(host, row)
}

/// The whole preflight for a grant, reaching sshd at `addr`.
pub async fn run(host: &Host, row: &GrantRow, addr: SocketAddr, limit: Duration) -> Verdict {
    let v = network(addr, limit).await;
    if v.result != SshTestResult::Success {
        return v;
    }
    let host = host.clone();
    let row = row.clone();
    tokio::task::spawn_blocking(move || host_checks(&host, &row))
        .await
        .unwrap_or_else(|e| Verdict::fail(SshTestResult::Unknown, e.to_string()))
}
