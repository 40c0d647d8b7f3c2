//! nftables and iptables backends FOR REAL, inside private network
//! namespaces created for each test (never this host's ruleset):
//! a server namespace with the admin's default-deny firewall and a TCP
//! listener, a client namespace on a veth peer with three addresses:
//!   .2 support address (whitelisted by us),
//!   .3 never whitelisted,
//!   .4 already allowed by the admin before us (must survive our removal).
//! The host's `nft list ruleset` / `iptables -S` are compared before and after.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use supportauth::config::Config;
use supportauth::firewall::{ChangeAction, Problem, Whitelist, WlStatus};
use supportauth::types::SupportIp;

const PORT: u16 = 7777;
static SEQ: AtomicU32 = AtomicU32::new(0);

fn ip_cmd(args: &[&str]) -> std::process::Output {
    Command::new("/usr/sbin/ip").args(args).output().unwrap()
}

fn ip_ok(args: &[&str]) {
    let out = ip_cmd(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; deleted on drop, even on failure.
struct Lab {
    srv: String,
    cli: String,
    subnet: u8,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.srv, &self.cli] {
            let _ = ip_cmd(&["netns", "del", ns]);
        }
    }
}

impl Lab {
    /// None (after a loud SKIPPED line) when namespaces are not available.
    fn new(tag: &str) -> Option<Lab> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let base = format!("safw-{}-{n}", std::process::id());
        let lab = Lab {
            srv: format!("{base}-srv"),
            cli: format!("{base}-cli"),
            // A distinct 10.x subnet per lab so parallel tests never mix.
            subnet: 100 + (n as u8 % 100),
        };
        let out = ip_cmd(&["netns", "add", &lab.srv]);
        if !out.status.success() {
            eprintln!(
                "SKIPPED: {tag}: cannot create a network namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        ip_ok(&["netns", "add", &lab.cli]);
        // Created inside the server namespace, peer moved straight into the
        // client's: no interface ever exists in the host namespace.
        ip_ok(&[
            "-n", &lab.srv, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &lab.cli,
        ]);
        let s = lab.subnet;
        ip_ok(&[
            "-n",
            &lab.srv,
            "addr",
            "add",
            &format!("10.{s}.0.1/24"),
            "dev",
            "va",
        ]);
        for h in [2, 3, 4] {
            ip_ok(&[
                "-n",
                &lab.cli,
                "addr",
                "add",
                &format!("10.{s}.0.{h}/24"),
                "dev",
                "vb",
            ]);
        }
        for (ns, dev) in [(&lab.srv, "va"), (&lab.cli, "vb")] {
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
            ip_ok(&["-n", ns, "link", "set", dev, "up"]);
        }
        Some(lab)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, host)
    }

    fn support_ip(&self, host: u8) -> SupportIp {
        SupportIp::parse(&self.addr(host).to_string()).unwrap()
    }
}

/// Runs `f` on a fresh thread that has joined namespace `ns`; processes it
/// spawns (nft, iptables) and sockets it creates live in that namespace.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        // SAFETY: setns on this thread only; the thread ends after `f`.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn run_in(ns: &str, tool: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("/usr/sbin/ip");
    cmd.args(["netns", "exec", ns, tool]).args(args);
    let out = match stdin {
        None => cmd.output().unwrap(),
        Some(text) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    };
    assert!(
        out.status.success(),
        "{tool} {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[derive(Debug, PartialEq)]
enum Connect {
    Reached,
    Refused,
    Other(String),
}

/// One TCP connect from `src` (in the client namespace) to the server. The
/// admin's firewall rejects with a TCP reset, so "blocked" is an immediate
/// ECONNREFUSED rather than a timeout; the timeout only bounds a broken test.
fn connect(lab: &Lab, src: Ipv4Addr) -> Connect {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let dst = SockaddrIn::from(SocketAddrV4::new(lab.addr(1), PORT));
    in_ns(&lab.cli, move || {
        let s = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(
            &s,
            sockopt::SendTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )
        .unwrap();
        bind(s.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0))).unwrap();
        match connect(s.as_raw_fd(), &dst) {
            Ok(()) => Connect::Reached,
            Err(nix::errno::Errno::ECONNREFUSED) => Connect::Refused,
            Err(e) => Connect::Other(e.to_string()),
        }
    })
}

fn host_rules() -> (String, String, String) {
    let run = |tool: &str, args: &[&str]| {
        let out = Command::new(tool).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (
        run("/usr/sbin/nft", &["list", "ruleset"]),
        run("/usr/sbin/iptables", &["-S"]),
        run("/usr/sbin/ip6tables", &["-S"]),
    )
}

fn cfg(backend: &str) -> Config {
    let mut cfg = Config::default();
    cfg.firewall.backends = vec![backend.into()];
    cfg
}

/// Server listener bound inside the server namespace; kept open by the test.
fn listen(lab: &Lab) -> TcpListener {
    let addr = SocketAddrV4::new(lab.addr(1), PORT);
    in_ns(&lab.srv, move || TcpListener::bind(addr).unwrap())
}

fn ensure_in(
    lab: &Lab,
    backend: &'static str,
    ips: Vec<SupportIp>,
) -> supportauth::firewall::WhitelistReport {
    in_ns(&lab.srv, move || {
        let wl = Whitelist::detect(&cfg(backend));
        assert_eq!(wl.backends(), vec![backend]);
        wl.ensure(&ips)
    })
}

fn clear_in(lab: &Lab, backend: &'static str) -> supportauth::firewall::WhitelistReport {
    in_ns(&lab.srv, move || Whitelist::detect(&cfg(backend)).clear())
}

fn check_in(lab: &Lab, backend: &'static str, ips: Vec<SupportIp>) -> Problem {
    in_ns(&lab.srv, move || {
        Whitelist::detect(&cfg(backend)).check(&ips).problem
    })
}

#[test]
fn nftables_whitelist_opens_admin_default_drop_and_restores_it() {
    let host_before = host_rules();
    let Some(lab) = Lab::new("nftables packet test") else {
        return;
    };
    let s = lab.subnet;
    // The admin's firewall: a separate table, default drop, the test port
    // rejected with a reset, and .4 already allowed by the admin.
    let admin = format!(
        "table inet admin {{\n\
         chain in {{ type filter hook input priority 0; policy drop;\n\
         iif \"lo\" accept\n\
         ct state established,related accept\n\
         ip saddr 10.{s}.0.4 accept\n\
         tcp dport {PORT} reject with tcp reset\n\
         }}\n\
         chain out {{ type filter hook output priority 0; policy accept; }}\n\
         }}\n"
    );
    run_in(&lab.srv, "/usr/sbin/nft", &["-f", "-"], Some(&admin));
    let admin_listing = run_in(&lab.srv, "/usr/sbin/nft", &["list", "ruleset"], None);
    let _listener = listen(&lab);

    // Before: only the admin's own .4 gets in.
    assert_eq!(connect(&lab, lab.addr(2)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(4)), Connect::Reached);
    assert_eq!(
        check_in(&lab, "nftables", vec![lab.support_ip(2)]),
        Problem::NeedSetup
    );

    // Grant: whitelist .2 and .4 (the latter is also the admin's).
    let ips = vec![lab.support_ip(2), lab.support_ip(4)];
    let r = ensure_in(&lab, "nftables", ips.clone());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Active);
    assert_eq!(r.to_json()["chain_status"], "ACTIVE");
    assert_eq!(r.changes.len(), 2);
    assert!(r.changes.iter().all(|c| c.action == ChangeAction::Added));

    // The ruleset: our table with both addresses in the set, and our tagged
    // rule first in the admin's input chain.
    let json: serde_json::Value = serde_json::from_str(&run_in(
        &lab.srv,
        "/usr/sbin/nft",
        &["-j", "list", "ruleset"],
        None,
    ))
    .unwrap();
    let items = json["nftables"].as_array().unwrap();
    let set = items
        .iter()
        .find(|i| i["set"]["name"] == "support_v4" && i["set"]["table"] == "supportauth")
        .expect("support_v4 set");
    let mut elems: Vec<String> = set["set"]["elem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    elems.sort();
    assert_eq!(elems, vec![format!("10.{s}.0.2"), format!("10.{s}.0.4")]);
    let admin_in_rules: Vec<&serde_json::Value> = items
        .iter()
        .filter(|i| i["rule"]["table"] == "admin" && i["rule"]["chain"] == "in")
        .collect();
    assert_eq!(
        admin_in_rules[0]["rule"]["comment"],
        "supportauth cPanel-support-access"
    );
    assert!(items
        .iter()
        .any(|i| i["chain"]["table"] == "supportauth" && i["chain"]["hook"] == "input"));

    // While granted: .2 and .4 reach the listener, .3 does not.
    assert_eq!(connect(&lab, lab.addr(2)), Connect::Reached);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(4)), Connect::Reached);
    assert_eq!(check_in(&lab, "nftables", ips.clone()), Problem::No);

    // Idempotent: a second ensure changes nothing.
    let again = ensure_in(&lab, "nftables", ips.clone());
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    // The support list changes: .3 replaces .2 in one transaction.
    let swap = ensure_in(&lab, "nftables", vec![lab.support_ip(3), lab.support_ip(4)]);
    assert!(swap.errors.is_empty(), "{:?}", swap.errors);
    assert_eq!(connect(&lab, lab.addr(2)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Reached);

    // Last grant ends: everything ours goes, the admin's ruleset is back
    // byte for byte, and the admin's .4 still gets in.
    let r = clear_in(&lab, "nftables");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Inactive);
    assert_eq!(
        run_in(&lab.srv, "/usr/sbin/nft", &["list", "ruleset"], None),
        admin_listing
    );
    assert_eq!(connect(&lab, lab.addr(2)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(4)), Connect::Reached);
    assert_eq!(check_in(&lab, "nftables", vec![]), Problem::No);
    // Clearing twice is harmless.
    assert!(clear_in(&lab, "nftables").errors.is_empty());

    drop(lab);
    assert_eq!(host_rules(), host_before, "the host's ruleset changed");
}

#[test]
fn iptables_whitelist_opens_default_drop_and_restores_it() {
    let host_before = host_rules();
    let Some(lab) = Lab::new("iptables packet test") else {
        return;
    };
    let s = lab.subnet;
    let v4 = "/usr/sbin/iptables";
    for args in [
        vec!["-P", "INPUT", "DROP"],
        vec!["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
        vec![
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ],
        vec![
            "-A",
            "INPUT",
            "-s",
            &format!("10.{s}.0.4/32"),
            "-j",
            "ACCEPT",
        ],
        vec![
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "7777",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    ] {
        run_in(&lab.srv, v4, &args, None);
    }
    run_in(
        &lab.srv,
        "/usr/sbin/ip6tables",
        &["-P", "INPUT", "DROP"],
        None,
    );
    let admin_v4 = run_in(&lab.srv, v4, &["-S"], None);
    let admin_v6 = run_in(&lab.srv, "/usr/sbin/ip6tables", &["-S"], None);
    let _listener = listen(&lab);

    assert_eq!(connect(&lab, lab.addr(2)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(4)), Connect::Reached);

    let v6ip = SupportIp::parse("2001:db8:5::7").unwrap();
    let ips = vec![lab.support_ip(2), lab.support_ip(4), v6ip];
    let r = ensure_in(&lab, "iptables", ips.clone());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Active);
    assert_eq!(r.changes.len(), 3);

    let listing = run_in(&lab.srv, v4, &["-S"], None);
    let lines: Vec<&str> = listing.lines().collect();
    let first_input = lines.iter().find(|l| l.starts_with("-A INPUT")).unwrap();
    assert_eq!(*first_input, "-A INPUT -j cPanel-support-access");
    let first_output = lines.iter().find(|l| l.starts_with("-A OUTPUT")).unwrap();
    assert_eq!(*first_output, "-A OUTPUT -j cPanel-support-access");
    for h in [2, 4] {
        for d in ["-s", "-d"] {
            let rule = format!("-A cPanel-support-access {d} 10.{s}.0.{h}/32 -j ACCEPT");
            assert!(
                lines.contains(&rule.as_str()),
                "{rule} missing in\n{listing}"
            );
        }
    }
    let v6_listing = run_in(
        &lab.srv,
        "/usr/sbin/ip6tables",
        &["-S", "cPanel-support-access"],
        None,
    );
    assert!(
        v6_listing.contains("-A cPanel-support-access -s 2001:db8:5::7/128 -j ACCEPT"),
        "{v6_listing}"
    );

    assert_eq!(connect(&lab, lab.addr(2)), Connect::Reached);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(4)), Connect::Reached);
    assert_eq!(check_in(&lab, "iptables", ips.clone()), Problem::No);
    assert!(ensure_in(&lab, "iptables", ips.clone()).changes.is_empty());

    // Swap .2 for .3: added first, then the stale one removed.
    let swap = ensure_in(
        &lab,
        "iptables",
        vec![lab.support_ip(3), lab.support_ip(4), v6ip],
    );
    assert!(swap.errors.is_empty(), "{:?}", swap.errors);
    assert_eq!(connect(&lab, lab.addr(2)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Reached);

    let r = clear_in(&lab, "iptables");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Inactive);
    assert_eq!(run_in(&lab.srv, v4, &["-S"], None), admin_v4);
    assert_eq!(
        run_in(&lab.srv, "/usr/sbin/ip6tables", &["-S"], None),
        admin_v6
    );
    assert_eq!(connect(&lab, lab.addr(2)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(3)), Connect::Refused);
    assert_eq!(connect(&lab, lab.addr(4)), Connect::Reached);
    assert!(clear_in(&lab, "iptables").errors.is_empty());

    drop(lab);
    assert_eq!(host_rules(), host_before, "the host's ruleset changed");
}

#[test]
fn namespace_threads_do_not_leak_into_the_host() {
    // The test harness thread stays in the host namespace after in_ns.
    let Some(lab) = Lab::new("namespace isolation") else {
        return;
    };
    let inside = in_ns(&lab.srv, || {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    });
    let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_ne!(inside, here);
    assert!(Path::new(&format!("/run/netns/{}", lab.srv)).exists());
}
