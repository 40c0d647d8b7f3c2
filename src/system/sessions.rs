//! sshd's session processes: finding the one behind a login, and ending it.
//!
//! A session is named by (pid, start time): the start time (clock ticks
//! after boot, `/proc/PID/stat` field 22) is recorded at login, and no
//! signal is ever sent unless the pid still runs sshd with that same start
//! time, so a pid reused by another process is never touched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Names sshd's session processes run under (`comm`).
const SSHD_COMMS: [&str; 2] = ["sshd", "sshd-session"];

/// The start time of `pid` when it is an sshd process.
pub fn sshd_start_time(proc: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    // "PID (COMM) STATE PPID ...": comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    if !SSHD_COMMS.contains(&comm) {
        return None;
    }
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    // Field 3 (state) is fields[0]; field 22 (starttime) is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn parent_of(proc: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    let close = stat.rfind(')')?;
    stat.get(close + 2..)?.split(' ').nth(1)?.parse().ok()
}

/// The sshd process serving the TCP connection from `addr`:`port` (the
/// session's monitor: of the sshd processes holding the socket, the one
/// whose parent does not), with its start time.
pub fn sshd_of_connection(proc: &Path, addr: IpAddr, port: u16) -> Option<(u32, u64)> {
    let mut inodes = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc.join(table)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st ... uid timeout inode
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            if parse_endpoint(f[2]) == Some((crate::types::canonical_ip(addr), port)) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let mut holders = Vec::new();
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(start) = sshd_start_time(proc, pid) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|t| t.to_str().map(|t| inodes.iter().any(|i| i == t)))
                .unwrap_or(false)
        });
        if holds {
            holders.push((pid, start));
        }
    }
    let pids: Vec<u32> = holders.iter().map(|(p, _)| *p).collect();
    holders
        .into_iter()
        .find(|(pid, _)| parent_of(proc, *pid).is_none_or(|pp| !pids.contains(&pp)))
}

/// `/proc/net/tcp*` `ADDR:PORT` in hex (the address as the kernel's
/// native-endian 32-bit words).
fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(a)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(a.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((crate::types::canonical_ip(ip), port))
}

/// How ending a session went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The process was already gone (or the pid is another process now).
    AlreadyGone,
    Terminated,
    Killed,
    /// Still there after SIGKILL (should not happen).
    Survived,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::AlreadyGone => "already_gone",
            Ended::Terminated => "terminated",
            Ended::Killed => "killed",
            Ended::Survived => "survived",
        }
    }
}

/// Ends the session whose sshd process is `pid` started at `start`:
/// SIGTERM (sshd passes it to the session's child), then, after `grace`,
/// SIGKILL to it and its sshd children.
pub fn end_session(pid: u32, start: u64, grace: Duration) -> Ended {
    let proc = Path::new("/proc");
    let same = || sshd_start_time(proc, pid) == Some(start);
    if !same() {
        return Ended::AlreadyGone;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return Ended::AlreadyGone;
    };
    let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    if wait_gone(&same, grace) {
        return Ended::Terminated;
    }
    let children = sshd_children(proc, pid);
    if same() {
        let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    }
    for (child, child_start) in children {
        if sshd_start_time(proc, child) == Some(child_start) {
            if let Ok(c) = i32::try_from(child) {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
    }
    if wait_gone(&same, grace) {
        Ended::Killed
    } else {
        Ended::Survived
    }
}

fn wait_gone(same: &dyn Fn() -> bool, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if !same() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sshd_children(proc: &Path, parent: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| parent_of(proc, *pid) == Some(parent))
        .filter_map(|pid| sshd_start_time(proc, pid).map(|s| (pid, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_proc_net_tcp() {
        assert_eq!(
            parse_endpoint("0100007F:A804"),
            Some(("127.0.0.1".parse().unwrap(), 0xA804))
        );
        // ::ffff:127.0.0.1 as a tcp6 socket sees it: the IPv4 address.
        assert_eq!(
            parse_endpoint("0000000000000000FFFF00000100007F:0016"),
            Some(("127.0.0.1".parse().unwrap(), 22))
        );
        assert_eq!(
            parse_endpoint("00000000000000000000000001000000:0016"),
            Some(("::1".parse().unwrap(), 22))
        );
        for bad in ["", "0100007F", "0100007F:", "XYZ:0016", "01007F:0016"] {
            assert_eq!(parse_endpoint(bad), None, "{bad}");
        }
    }

    /// Only sshd is ever recognised: this test process is not.
    #[test]
    fn a_process_that_is_not_sshd_is_never_a_session() {
        let me = std::process::id();
        assert_eq!(sshd_start_time(Path::new("/proc"), me), None);
        assert_eq!(
            end_session(me, 0, Duration::from_millis(1)),
            Ended::AlreadyGone
        );
    }
}
