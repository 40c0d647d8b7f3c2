//! The local SSH preflight's network part against real endpoints: a real
//! sshd (SUCCESS), a closed port (REFUSED), listeners that are not SSH
//! (PROTOCOL, ENVIRONMENT), and, inside a private network namespace, an
//! address whose packets are dropped (TIMEOUT) and one with no route
//! (UNREACHABLE). Nothing leaves the machine.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use supportauth::portal::preflight::network;
use supportauth::portal::wire::SshTestResult;

const LIMIT: Duration = Duration::from_secs(1);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn check(addr: SocketAddr) -> SshTestResult {
    rt().block_on(network(addr, LIMIT)).result
}

#[test]
fn closed_port_is_refused() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    assert_eq!(check(addr), SshTestResult::Refused);
}

/// A listener that answers each connection with `greeting` (or nothing)
/// and then keeps it open (or closes it).
fn fake_server(greeting: Option<&'static [u8]>, close: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            if let Some(g) = greeting {
                let _ = s.write_all(g);
            }
            if close {
                drop(s);
            } else {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(10));
                    drop(s);
                });
            }
        }
    });
    addr
}

#[test]
fn listeners_that_are_not_ssh() {
    let http = fake_server(
        Some(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
        false,
    );
    assert_eq!(check(http), SshTestResult::Protocol);
    let ssh1 = fake_server(Some(b"SSH-1.5-ancient\r\n"), false);
    assert_eq!(check(ssh1), SshTestResult::Protocol);
    let silent = fake_server(None, false);
    assert_eq!(check(silent), SshTestResult::Environment);
    let hangs_up = fake_server(None, true);
    assert_eq!(check(hangs_up), SshTestResult::Environment);
    // Says SSH-2.0, then garbage instead of a key exchange.
    let liar = fake_server(
        Some(b"SSH-2.0-liar\r\n\x00\x00\x00\x05garbage-garbage-garbage"),
        false,
    );
    assert!(
        matches!(
            check(liar),
            SshTestResult::Protocol | SshTestResult::Timeout
        ),
        "a broken key exchange must fail"
    );
}

#[test]
fn a_real_sshd_passes() {
    if let Some(why) = cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED preflight real sshd: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    populate_scratch_root(&root, "PermitRootLogin prohibit-password");
    let port = free_port();
    let mut child = Command::new(root.join("sshd-in-private-run"))
        .args([
            "-D",
            "-e",
            "-p",
            &port.to_string(),
            "-o",
            "ListenAddress=127.0.0.1",
            "-f",
        ])
        .arg(root.join("etc/ssh/sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sshd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = rt().block_on(network(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(10),
    ));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v.result, SshTestResult::Success, "{v:?}");
}

fn run_ok(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn silent_and_unroutable_addresses_in_a_private_namespace() {
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/usr/sbin/nft").exists() {
        supportauth::test_skip!("SKIPPED preflight netns: needs root and /usr/sbin/nft");
        return;
    }
    // A thread of our own moves into a fresh network namespace (namespaces
    // are per thread); the tools it runs inherit it. The host's stack is
    // never touched and the namespace dies with the thread.
    let t = std::thread::spawn(|| {
        // SAFETY: unshare on this thread only; it owns no sockets yet.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        run_ok(&["/usr/sbin/ip", "link", "set", "lo", "up"])?;
        run_ok(&["/usr/sbin/ip", "addr", "add", "10.77.0.1/32", "dev", "lo"])?;
        run_ok(&["/usr/sbin/nft", "add table inet t; add chain inet t in { type filter hook input priority 0; }; add rule inet t in ip daddr 10.77.0.1 tcp dport 22 drop"])?;
        let silent = check("10.77.0.1:22".parse().unwrap());
        let nowhere = check("10.99.0.1:22".parse().unwrap());
        Ok((silent, nowhere))
    });
    match t.join().unwrap() {
        Err(e) if e.starts_with("unshare") => {
            supportauth::test_skip!("SKIPPED preflight netns: {e}")
        }
        Err(e) => panic!("{e}"),
        Ok((silent, nowhere)) => {
            assert_eq!(silent, SshTestResult::Timeout);
            assert_eq!(nowhere, SshTestResult::Unreachable);
        }
    }
}
