//! Ending a temporary user's processes before the account is deleted.
//!
//! `userdel` refuses to delete a user that still runs processes (an open
//! support session), and `userdel -f` would delete the account but leave
//! the session — with sudo rights — running. Revoking means the session
//! ends too, so every process whose real, effective or saved uid is the
//! user's is killed first.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Below this, a uid belongs to the system (login.defs UID_MIN): never ours.
const MIN_USER_UID: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("refusing to end the processes of uid {0}: not a regular user's uid")]
    SystemUid(u32),
    #[error("cannot read /proc: {0}")]
    Proc(std::io::Error),
    #[error("{0} process(es) of uid {1} are still running after SIGKILL")]
    Survivors(usize, u32),
}

/// The live (not zombie) pids whose real, effective or saved uid is `uid`
/// (from `proc`, the path of a procfs mount).
pub fn pids_of_uid(proc: &std::path::Path, uid: u32) -> Result<Vec<i32>, ProcessError> {
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    for entry in std::fs::read_dir(proc).map_err(ProcessError::Proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A process that exits while we read is simply gone.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let owned = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|ids| {
                ids.split_whitespace()
                    .take(3)
                    .any(|id| id.parse::<u32>() == Ok(uid))
            })
            .unwrap_or(false);
        // A zombie is already dead; only its parent can reap it.
        let dead = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| matches!(st.trim_start().chars().next(), Some('Z' | 'X')));
        if owned && !dead {
            out.push(pid);
        }
    }
    Ok(out)
}

/// SIGKILLs every process of `uid` until none is left (bounded: a process
/// may fork while we kill). Returns how many were killed.
pub fn end_all(uid: u32) -> Result<usize, ProcessError> {
    if uid < MIN_USER_UID {
        return Err(ProcessError::SystemUid(uid));
    }
    let proc = std::path::Path::new("/proc");
    let mut killed = 0;
    for _ in 0..50 {
        let pids = pids_of_uid(proc, uid)?;
        if pids.is_empty() {
            return Ok(killed);
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = pids_of_uid(proc, uid)?.len();
    if left == 0 {
        Ok(killed)
    } else {
        Err(ProcessError::Survivors(left, uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_system_uids() {
        assert!(matches!(end_all(0), Err(ProcessError::SystemUid(0))));
        assert!(matches!(end_all(999), Err(ProcessError::SystemUid(999))));
    }

    /// A child running as an otherwise unused uid is found and ended.
    #[test]
    fn ends_the_processes_of_a_uid() {
        if !nix::unistd::geteuid().is_root() {
            crate::test_skip!(
                "SKIPPED: ends_the_processes_of_a_uid needs root to run a process as another uid"
            );
            return;
        }
        // A uid no real account uses on this machine.
        let uid = 4_000_123;
        let mut child = std::process::Command::new("/usr/bin/setpriv")
            .args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &uid.to_string(),
                "--clear-groups",
                "/bin/sleep",
                "60",
            ])
            .spawn()
            .unwrap();
        // Wait (bounded) until the child runs as that uid.
        let proc = std::path::Path::new("/proc");
        for _ in 0..200 {
            if !pids_of_uid(proc, uid).unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(end_all(uid).unwrap(), 1);
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(pids_of_uid(proc, uid).unwrap().is_empty());
    }
}
