//! nftables and iptables backends FOR REAL, inside private network
//! namespaces created for each test (never this host's ruleset):
//! a server namespace with the admin's default-deny firewall and a TCP
//! listener, a client namespace on a veth peer with three addresses:
//!   .2 support address (whitelisted by us),
//!   .3 never whitelisted,
//!   .4 already allowed by the admin before us (must survive our removal).
//! The host's `nft list ruleset` / `iptables -S` are compared before and after.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener};
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
            supportauth::test_skip!(
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
        // nodad: IPv6 addresses usable at once, no timing involved.
        let v6 = |h: u8| format!("{}/64", lab.addr6(h));
        ip_ok(&["-n", &lab.srv, "addr", "add", &v6(1), "dev", "va", "nodad"]);
        for h in [2, 3, 4] {
            let v4 = format!("10.{s}.0.{h}/24");
            ip_ok(&["-n", &lab.cli, "addr", "add", &v4, "dev", "vb"]);
            ip_ok(&["-n", &lab.cli, "addr", "add", &v6(h), "dev", "vb", "nodad"]);
        }
        for (ns, dev) in [(&lab.srv, "va"), (&lab.cli, "vb")] {
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
            ip_ok(&["-n", ns, "link", "set", dev, "up"]);
        }
        Some(lab)
    }

    fn addr(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.subnet, 0, host))
    }

    fn addr6(&self, host: u8) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            self.subnet.into(),
            0,
            0,
            0,
            0,
            host.into(),
        ))
    }

    fn support_ip6(&self, host: u8) -> SupportIp {
        SupportIp::parse(&self.addr6(host).to_string()).unwrap()
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
fn connect(lab: &Lab, src: IpAddr) -> Connect {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
        SockaddrIn6,
    };
    let (dst, fam) = match src {
        IpAddr::V4(_) => (lab.addr(1), AddressFamily::Inet),
        IpAddr::V6(_) => (lab.addr6(1), AddressFamily::Inet6),
    };
    in_ns(&lab.cli, move || {
        let s = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        setsockopt(
            &s,
            sockopt::SendTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )
        .unwrap();
        let res = match (src, dst) {
            (IpAddr::V4(a), IpAddr::V4(d)) => {
                bind(s.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(a, 0))).unwrap();
                connect(s.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(d, PORT)))
            }
            (IpAddr::V6(a), IpAddr::V6(d)) => {
                bind(
                    s.as_raw_fd(),
                    &SockaddrIn6::from(SocketAddrV6::new(a, 0, 0, 0)),
                )
                .unwrap();
                connect(
                    s.as_raw_fd(),
                    &SockaddrIn6::from(SocketAddrV6::new(d, PORT, 0, 0)),
                )
            }
            _ => unreachable!(),
        };
        match res {
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

/// Server listeners (IPv4 and IPv6) bound inside the server namespace;
/// kept open by the test.
fn listen(lab: &Lab) -> Vec<TcpListener> {
    let addrs = [
        SocketAddr::new(lab.addr(1), PORT),
        SocketAddr::new(lab.addr6(1), PORT),
    ];
    in_ns(&lab.srv, move || {
        addrs
            .iter()
            .map(|a| TcpListener::bind(a).unwrap())
            .collect()
    })
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

/// Asserts, for client hosts .2, .3, .4 over IPv4 and IPv6, whether a
/// connect reaches the server.
fn expect_reach(lab: &Lab, when: &str, reach: [bool; 3]) {
    for (h, want) in [2u8, 3, 4].into_iter().zip(reach) {
        let want = if want {
            Connect::Reached
        } else {
            Connect::Refused
        };
        for src in [lab.addr(h), lab.addr6(h)] {
            assert_eq!(connect(lab, src), want, "{when}: from {src}");
        }
    }
}

fn both(lab: &Lab, hosts: &[u8]) -> Vec<SupportIp> {
    hosts
        .iter()
        .flat_map(|h| [lab.support_ip(*h), lab.support_ip6(*h)])
        .collect()
}

fn set_elems(items: &[serde_json::Value], name: &str) -> Vec<String> {
    let set = items
        .iter()
        .find(|i| i["set"]["name"] == name && i["set"]["table"] == "supportauth")
        .unwrap_or_else(|| panic!("{name} set missing"));
    let mut elems: Vec<String> = set["set"]["elem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    elems.sort();
    elems
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
         meta l4proto ipv6-icmp accept\n\
         ip saddr {a4} accept\n\
         ip6 saddr {a6} accept\n\
         tcp dport {PORT} reject with tcp reset\n\
         }}\n\
         chain out {{ type filter hook output priority 0; policy accept; }}\n\
         }}\n",
        a4 = lab.addr(4),
        a6 = lab.addr6(4),
    );
    run_in(&lab.srv, "/usr/sbin/nft", &["-f", "-"], Some(&admin));
    let admin_listing = run_in(&lab.srv, "/usr/sbin/nft", &["list", "ruleset"], None);
    let _listeners = listen(&lab);

    // Before: only the admin's own .4 gets in.
    expect_reach(&lab, "before", [false, false, true]);
    assert_eq!(
        check_in(&lab, "nftables", both(&lab, &[2])),
        Problem::NeedSetup
    );

    // Grant: whitelist .2 and .4 (the latter is also the admin's).
    let ips = both(&lab, &[2, 4]);
    let r = ensure_in(&lab, "nftables", ips.clone());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Active);
    assert_eq!(r.to_json()["chain_status"], "ACTIVE");
    assert_eq!(r.changes.len(), 4);
    assert!(r.changes.iter().all(|c| c.action == ChangeAction::Added));

    // The ruleset: our table with the addresses in its sets, and our tagged
    // rules first in the admin's input chain.
    let json: serde_json::Value = serde_json::from_str(&run_in(
        &lab.srv,
        "/usr/sbin/nft",
        &["-j", "list", "ruleset"],
        None,
    ))
    .unwrap();
    let items = json["nftables"].as_array().unwrap();
    assert_eq!(
        set_elems(items, "support_v4"),
        vec![format!("10.{s}.0.2"), format!("10.{s}.0.4")]
    );
    assert_eq!(
        set_elems(items, "support_v6"),
        vec![lab.addr6(2).to_string(), lab.addr6(4).to_string()]
    );
    let admin_in_rules: Vec<&serde_json::Value> = items
        .iter()
        .filter(|i| i["rule"]["table"] == "admin" && i["rule"]["chain"] == "in")
        .collect();
    for r in &admin_in_rules[..2] {
        assert_eq!(r["rule"]["comment"], "supportauth cPanel-support-access");
    }
    assert!(items
        .iter()
        .any(|i| i["chain"]["table"] == "supportauth" && i["chain"]["hook"] == "input"));

    // While granted: .2 and .4 reach the listener, .3 does not.
    expect_reach(&lab, "granted", [true, false, true]);
    assert_eq!(check_in(&lab, "nftables", ips.clone()), Problem::No);

    // Idempotent: a second ensure changes nothing.
    let again = ensure_in(&lab, "nftables", ips.clone());
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    // The support list changes: .3 replaces .2 in one transaction.
    let swap = ensure_in(&lab, "nftables", both(&lab, &[3, 4]));
    assert!(swap.errors.is_empty(), "{:?}", swap.errors);
    expect_reach(&lab, "after the swap", [false, true, true]);

    // Last grant ends: everything ours goes, the admin's ruleset is back
    // byte for byte, and the admin's .4 still gets in.
    let r = clear_in(&lab, "nftables");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Inactive);
    assert_eq!(
        run_in(&lab.srv, "/usr/sbin/nft", &["list", "ruleset"], None),
        admin_listing
    );
    expect_reach(&lab, "after clear", [false, false, true]);
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
    let (v4, v6) = ("/usr/sbin/iptables", "/usr/sbin/ip6tables");
    for (tool, admin_src, extra) in [
        (v4, format!("{}/32", lab.addr(4)), None),
        (v6, format!("{}/128", lab.addr6(4)), Some("ipv6-icmp")),
    ] {
        let mut rules: Vec<Vec<String>> = vec![
            vec!["-P".into(), "INPUT".into(), "DROP".into()],
            vec![
                "-A".into(),
                "INPUT".into(),
                "-i".into(),
                "lo".into(),
                "-j".into(),
                "ACCEPT".into(),
            ],
        ];
        if let Some(p) = extra {
            rules.push(vec![
                "-A".into(),
                "INPUT".into(),
                "-p".into(),
                p.into(),
                "-j".into(),
                "ACCEPT".into(),
            ]);
        }
        rules.push(
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
                .split(' ')
                .map(String::from)
                .collect(),
        );
        rules.push(vec![
            "-A".into(),
            "INPUT".into(),
            "-s".into(),
            admin_src,
            "-j".into(),
            "ACCEPT".into(),
        ]);
        rules.push(
            "-A INPUT -p tcp --dport 7777 -j REJECT --reject-with tcp-reset"
                .split(' ')
                .map(String::from)
                .collect(),
        );
        for r in rules {
            let args: Vec<&str> = r.iter().map(String::as_str).collect();
            run_in(&lab.srv, tool, &args, None);
        }
    }
    let admin_v4 = run_in(&lab.srv, v4, &["-S"], None);
    let admin_v6 = run_in(&lab.srv, v6, &["-S"], None);
    let _listeners = listen(&lab);

    expect_reach(&lab, "before", [false, false, true]);

    let ips = both(&lab, &[2, 4]);
    let r = ensure_in(&lab, "iptables", ips.clone());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Active);
    assert_eq!(r.changes.len(), 4);

    for (tool, addrs) in [
        (v4, [format!("10.{s}.0.2/32"), format!("10.{s}.0.4/32")]),
        (
            v6,
            [
                format!("{}/128", lab.addr6(2)),
                format!("{}/128", lab.addr6(4)),
            ],
        ),
    ] {
        let listing = run_in(&lab.srv, tool, &["-S"], None);
        let lines: Vec<&str> = listing.lines().collect();
        let first_input = lines.iter().find(|l| l.starts_with("-A INPUT")).unwrap();
        assert_eq!(*first_input, "-A INPUT -j cPanel-support-access", "{tool}");
        let first_output = lines.iter().find(|l| l.starts_with("-A OUTPUT")).unwrap();
        assert_eq!(
            *first_output, "-A OUTPUT -j cPanel-support-access",
            "{tool}"
        );
        for a in &addrs {
            for d in ["-s", "-d"] {
                let rule = format!("-A cPanel-support-access {d} {a} -j ACCEPT");
                assert!(
                    lines.contains(&rule.as_str()),
                    "{rule} missing in\n{listing}"
                );
            }
        }
    }

    expect_reach(&lab, "granted", [true, false, true]);
    assert_eq!(check_in(&lab, "iptables", ips.clone()), Problem::No);
    assert!(ensure_in(&lab, "iptables", ips.clone()).changes.is_empty());

    // Swap .2 for .3: added first, then the stale one removed.
    let swap = ensure_in(&lab, "iptables", both(&lab, &[3, 4]));
    assert!(swap.errors.is_empty(), "{:?}", swap.errors);
    expect_reach(&lab, "after the swap", [false, true, true]);

    let r = clear_in(&lab, "iptables");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["chain_status"], WlStatus::Inactive);
    assert_eq!(run_in(&lab.srv, v4, &["-S"], None), admin_v4);
    assert_eq!(run_in(&lab.srv, v6, &["-S"], None), admin_v6);
    expect_reach(&lab, "after clear", [false, false, true]);
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

/// A crash can leave half-made state; the next ensure (the reconciler)
/// repairs it, and check() notices it first.
#[test]
fn partial_state_after_a_crash_converges() {
    let host_before = host_rules();
    let Some(lab) = Lab::new("crash convergence") else {
        return;
    };
    let ips = both(&lab, &[2]);

    // nftables: our table with a stale set and no hook rule in the admin's chain.
    run_in(
        &lab.srv,
        "/usr/sbin/nft",
        &["-f", "-"],
        Some(
            "table inet admin {\n chain in {\n type filter hook input priority 0; policy drop;\n }\n}\n\
             table inet supportauth {\n set support_v4 {\n type ipv4_addr; flags interval;\n elements = { 192.0.2.99 }\n }\n}\n",
        ),
    );
    assert_eq!(check_in(&lab, "nftables", ips.clone()), Problem::NeedSetup);
    let r = ensure_in(&lab, "nftables", ips.clone());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r
        .changes
        .iter()
        .any(|c| c.action == ChangeAction::Removed && c.address == "192.0.2.99"));
    assert_eq!(check_in(&lab, "nftables", ips.clone()), Problem::No);
    let listing = run_in(
        &lab.srv,
        "/usr/sbin/nft",
        &["list", "chain", "inet", "admin", "in"],
        None,
    );
    assert!(
        listing.contains("comment \"supportauth cPanel-support-access\""),
        "{listing}"
    );

    // iptables: our chain with a stray rule and no OUTPUT jump.
    let v4 = "/usr/sbin/iptables";
    run_in(&lab.srv, v4, &["-N", "cPanel-support-access"], None);
    run_in(
        &lab.srv,
        v4,
        &[
            "-A",
            "cPanel-support-access",
            "-s",
            "192.0.2.99/32",
            "-j",
            "ACCEPT",
        ],
        None,
    );
    run_in(
        &lab.srv,
        v4,
        &["-A", "cPanel-support-access", "-p", "udp", "-j", "ACCEPT"],
        None,
    );
    run_in(
        &lab.srv,
        v4,
        &["-I", "INPUT", "1", "-j", "cPanel-support-access"],
        None,
    );
    assert_eq!(check_in(&lab, "iptables", ips.clone()), Problem::NeedSetup);
    let r = ensure_in(&lab, "iptables", ips.clone());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(check_in(&lab, "iptables", ips.clone()), Problem::No);
    let chain = run_in(&lab.srv, v4, &["-S", "cPanel-support-access"], None);
    let expect = format!(
        "-N cPanel-support-access\n-A cPanel-support-access -s {a}/32 -j ACCEPT\n-A cPanel-support-access -d {a}/32 -j ACCEPT\n",
        a = lab.addr(2)
    );
    assert_eq!(chain, expect);
    let all = run_in(&lab.srv, v4, &["-S"], None);
    assert_eq!(all.matches("-j cPanel-support-access").count(), 2, "{all}");

    assert!(clear_in(&lab, "nftables").errors.is_empty());
    assert!(clear_in(&lab, "iptables").errors.is_empty());
    drop(lab);
    assert_eq!(host_rules(), host_before, "the host's ruleset changed");
}

/// Issue 15, finding 5: an IPv4-mapped IPv6 support address
/// (`::ffff:10.x.0.2/128`) is the IPv4 address it maps: the rule lands in
/// the IPv4 ruleset, and repeated reconcile passes change nothing (on the
/// release daemon ip6tables rules grew on every pass and the check stayed
/// NEED_SETUP).
#[test]
fn mapped_ipv6_support_address_is_ipv4_and_stable_across_passes() {
    let host_before = host_rules();
    let Some(lab) = Lab::new("mapped address test") else {
        return;
    };
    let mapped = format!("::ffff:{}/128", lab.addr(2));
    let ips = vec![SupportIp::parse(&mapped).unwrap()];
    assert_eq!(ips[0].to_string(), lab.addr(2).to_string());
    let (v4, v6) = ("/usr/sbin/iptables", "/usr/sbin/ip6tables");
    for backend in ["iptables", "nftables"] {
        let first = ensure_in(&lab, backend, ips.clone());
        assert!(first.errors.is_empty(), "{backend}: {:?}", first.errors);
        let snapshot = || {
            (
                run_in(&lab.srv, v4, &["-S"], None),
                run_in(&lab.srv, v6, &["-S"], None),
                // Stateless (-s): no packet counters, which move on their own.
                run_in(&lab.srv, "/usr/sbin/nft", &["-s", "list", "ruleset"], None),
            )
        };
        let after_first = snapshot();
        assert!(!after_first.1.contains("::ffff:"), "{}", after_first.1);
        assert!(!after_first.2.contains("::ffff:"), "{}", after_first.2);
        for pass in 2..=4 {
            let r = ensure_in(&lab, backend, ips.clone());
            assert!(r.errors.is_empty(), "{backend} pass {pass}: {:?}", r.errors);
            assert!(
                r.changes.is_empty(),
                "{backend} pass {pass}: {:?}",
                r.changes
            );
            assert_eq!(
                snapshot(),
                after_first,
                "{backend}: pass {pass} changed the firewall"
            );
            assert_eq!(
                check_in(&lab, backend, ips.clone()),
                Problem::No,
                "{backend}"
            );
        }
        assert!(clear_in(&lab, backend).errors.is_empty());
    }
    drop(lab);
    assert_eq!(host_rules(), host_before, "the host's ruleset changed");
}
