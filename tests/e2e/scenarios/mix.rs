//! Scenario 7 (and the external-kill variant of 5): many parallel clients,
//! then host, store and audit replay must agree.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e::daemon;
use crate::e2e::sandbox::Sandbox;
use crate::e2e::scene::*;

// ---- scenario 7 ---------------------------------------------------------

const MIX_THREADS: u64 = 8;
const MIX_OPS_PER_THREAD: u64 = 25;
const MIX_FIRST_TICKET: u64 = 500;
const MIX_TICKETS: u64 = 16;

/// Even tickets come from 127.0.0.1 (root may log in), odd ones from
/// 10.9.0.x, where a Match block forbids root: both paths at once.
fn mix_identity(ticket: u64) -> (String, String) {
    if ticket.is_multiple_of(2) {
        ("127.0.0.1".into(), "root".into())
    } else {
        (
            format!("10.9.0.{}", ticket % 250),
            format!("cp{ticket}.ssh"),
        )
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

pub type Access = std::collections::BTreeSet<(u64, String)>;

fn mix_scene(sb: &Sandbox) -> Scene {
    Scene::new(
        sb,
        &SceneSetup {
            sshd_tail: "Match Address 10.9.0.0/16\n    PermitRootLogin no\n",
            reconcile_secs: 1,
            group_sudo_rule: false,
            firewall: "nftables",
            ..SceneSetup::root_login("prohibit-password")
        },
    )
}

fn mix_seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("parallel mix seed {seed}");
    seed
}

/// `threads` clients doing `ops` random grant / revoke / list calls each;
/// `done` counts finished calls. With `daemon_may_die`, a client stops at
/// its first call without an answer instead of failing.
fn mixed_ops(
    scene: &Scene,
    seed: u64,
    threads: u64,
    ops: u64,
    done: &std::sync::atomic::AtomicU64,
    daemon_may_die: bool,
) -> std::collections::BTreeMap<String, u32> {
    let counts = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let counts = &counts;
            s.spawn(move || {
                let mut rng = XorShift(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..ops {
                    let ticket = MIX_FIRST_TICKET + rng.next(MIX_TICKETS);
                    let (ip, user) = mix_identity(ticket);
                    let tk = ticket.to_string();
                    let roll = rng.next(100);
                    let (label, answer) = if roll < 50 {
                        let ttl = if rng.next(3) == 0 { "2" } else { "3600" };
                        let args = [
                            ("ticket_id", tk.as_str()),
                            ("server_num", "1"),
                            ("ssh_key", scene.support.public_line.as_str()),
                            ("access_ip-0", ip.as_str()),
                            ("ttl", ttl),
                        ];
                        ("grant", scene.daemon.try_call("ticket_grant", &args))
                    } else if roll < 85 {
                        let args = [("ticket_id", tk.as_str()), ("ssh_username", user.as_str())];
                        ("revoke", scene.daemon.try_call("ticket_revoke", &args))
                    } else {
                        ("list", scene.daemon.try_call("ticket_list", &[]))
                    };
                    let key = match answer {
                        Ok(v) if daemon::result(&v) == 0 => {
                            // Refusals are expected (already granted,
                            // nothing to revoke); their reasons are shown.
                            let reason = v
                                .pointer("/metadata/reason")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .chars()
                                .take(60)
                                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                                .collect::<String>();
                            format!("{label} result 0: {reason}")
                        }
                        Ok(v) => format!("{label} result {}", daemon::result(&v)),
                        Err(_) if daemon_may_die => {
                            *counts
                                .lock()
                                .expect("counts")
                                .entry(format!("{label} unanswered"))
                                .or_default() += 1;
                            return;
                        }
                        Err(e) => {
                            panic!("{label} {ticket}: {e}\ndaemon log:\n{}", scene.daemon.log())
                        }
                    };
                    *counts.lock().expect("counts").entry(key).or_default() += 1;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let counts = counts.into_inner().expect("counts");
    eprintln!("parallel mix outcomes: {counts:?}");
    counts
}

/// Waits (bounded) until no grant is left to end by itself, then
/// requires host keys, temporary users, drop-ins, the store and the audit
/// replay to describe the same access; returns it.
pub fn assert_converged(scene: &Scene, seed: u64) -> Access {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (store, pending) = store_access(scene);
        let host = host_access();
        let replay = replay_access();
        let users = temp_users_on_host();
        let dropins = dropins_on_host();
        let want_users: Access = store.iter().filter(|(_, u)| u != "root").cloned().collect();
        let want_dropins: std::collections::BTreeSet<u64> =
            want_users.iter().map(|(t, _)| *t).collect();
        let agree = pending == 0
            && store == host
            && store == replay
            && users == want_users
            && dropins == want_dropins;
        if agree {
            eprintln!("parallel mix converged: {} grants active", store.len());
            return store;
        }
        assert!(
            Instant::now() < deadline,
            "host, store and audit replay disagree after 60s (seed {seed}):\n\
             store {store:?} ({pending} expired or expiring)\nhost keys {host:?}\n\
             replay {replay:?}\ntemp users {users:?}\ndrop-ins {dropins:?}\ndaemon log:\n{}",
            scene.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every remaining grant works from its support address only: root ones
/// from 127.0.0.1; temporary users carry from="10.9.0.x", so the same key
/// from 127.0.0.1 must be refused for them.
fn assert_access_works(scene: &Scene, store: &Access) {
    for (ticket, user) in store {
        if user == "root" {
            scene
                .sshd
                .assert_root(&scene.support, "root", &["id", "-u"], b"");
        } else {
            let (ip, _) = mix_identity(*ticket);
            let ak = Path::new("/home").join(user).join(".ssh/authorized_keys");
            let text =
                std::fs::read_to_string(&ak).unwrap_or_else(|e| panic!("{}: {e}", ak.display()));
            assert!(
                text.contains(&format!("from=\"{ip}\"")),
                "{} lacks from=\"{ip}\":\n{text}",
                ak.display()
            );
            scene.sshd.assert_refused(&scene.support, user);
        }
    }
    for (_, user) in store.iter().filter(|(_, u)| u != "root") {
        wait_logged_out(user);
    }
}

/// The kill switch: afterwards nothing of any ticket is left anywhere.
fn revoke_all_leaves_nothing(scene: &Scene) {
    scene.daemon.call_ok("ticket_revoke_all", &[]);
    for t in MIX_FIRST_TICKET..MIX_FIRST_TICKET + MIX_TICKETS {
        scene.assert_no_trace(t);
    }
    assert!(replay_access().is_empty(), "replay after revoke_all");
    assert_no_firewall_trace();
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}

/// 200 grant / revoke / list calls from 8 parallel clients, some grants
/// expiring on their own; then the host, the store and the audit replay
/// must describe the same access.
pub fn parallel_mixed_operations(sb: &Sandbox) {
    let scene = mix_scene(sb);
    let seed = mix_seed();
    let done = std::sync::atomic::AtomicU64::new(0);
    let counts = mixed_ops(&scene, seed, MIX_THREADS, MIX_OPS_PER_THREAD, &done, false);
    // The only refusals a race-free engine gives here: granting what is
    // granted, revoking what is not.
    for refusal in counts.keys().filter(|k| k.contains("result 0")) {
        assert!(
            refusal.contains("already present") || refusal.contains("No keys for ticket"),
            "unexpected refusal under concurrency: {refusal}"
        );
    }
    for needed in ["grant result 1", "revoke result 1"] {
        assert!(
            counts.get(needed).copied().unwrap_or(0) >= 5,
            "too few successful operations ({needed}) to prove anything: {counts:?}"
        );
    }
    let store = assert_converged(&scene, seed);
    assert_access_works(&scene, &store);
    revoke_all_leaves_nothing(&scene);
}

/// Scenario 5 without a fault point: `kill -9` from outside while
/// parallel clients are granting and revoking, then restart: the same
/// agreement as scenario 7 must hold.
pub fn crash_external_kill_during_burst(sb: &Sandbox) {
    let mut scene = mix_scene(sb);
    let seed = mix_seed();
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let clients = s.spawn(|| mixed_ops(&scene, seed, 4, 1000, &done, true));
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(std::sync::atomic::Ordering::SeqCst) < 40 {
            assert!(Instant::now() < deadline, "the burst never got going");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Mid-burst, with calls in flight.
        scene.daemon.kill_pid_9();
        let counts = clients.join().expect("clients");
        assert!(
            counts.keys().any(|k| k.ends_with("unanswered")),
            "no call was cut off by the kill: {counts:?}"
        );
    });
    scene.daemon.reap();
    scene.daemon.restart();
    let store = assert_converged(&scene, seed);
    assert_access_works(&scene, &store);
    revoke_all_leaves_nothing(&scene);
}

/// (ticket, user) AUTHED in `ticket_list`, and how many grants are still
/// to end on their own: EXPIRED ones not yet removed, and short-ttl ones
/// still running (they would end in the middle of the comparison).
fn store_access(scene: &Scene) -> (Access, usize) {
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
        + 600;
    let data = scene.daemon.call_ok("ticket_list", &[]);
    let mut access = Access::new();
    let mut expired = 0;
    for auth in data["auths"].as_array().into_iter().flatten() {
        let Some(t) = auth["ticket_id"].as_u64() else {
            continue;
        };
        for s in auth["servers"].as_array().into_iter().flatten() {
            match s["auth_status"].as_str() {
                Some("AUTHED") if s["expires_at"].as_i64().is_some_and(|e| e < soon) => {
                    expired += 1
                }
                Some("AUTHED") => {
                    access.insert((t, s["ssh_username"].as_str().unwrap_or("").to_string()));
                }
                Some("EXPIRED") => expired += 1,
                _ => {}
            }
        }
    }
    (access, expired)
}

/// (ticket, account) for every key line of ours in any account's .ssh.
fn host_access() -> Access {
    let mut access = Access::new();
    for f in key_files() {
        let owner = match f.strip_prefix("/home") {
            Ok(rest) => rest
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default(),
            Err(_) => "root".to_string(),
        };
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            let Some(comment) = line.split_whitespace().last() else {
                continue;
            };
            let Some((t, rest)) = comment.split_once("_server_") else {
                continue;
            };
            if let (Ok(t), true) = (t.parse::<u64>(), rest.contains("@cpanel.net_")) {
                access.insert((t, owner.clone()));
            }
        }
    }
    access
}

/// Active grants according to the audit log alone.
fn replay_access() -> Access {
    let text = std::fs::read_to_string("/var/cpanel/logs/supportauth/audit.log")
        .expect("read the audit log");
    let records = text.lines().map(|l| {
        supportauth::audit::record::open_line(l)
            .unwrap_or_else(|e| panic!("bad audit line {l:?}: {e:?}"))
    });
    supportauth::audit::replay::active_grants(records)
        .into_iter()
        .map(|((t, _), g)| (t, g.ssh_username))
        .collect()
}

fn temp_users_on_host() -> Access {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|name| {
            let t = name.strip_prefix("cp")?.strip_suffix(".ssh")?;
            Some((t.parse().ok()?, name.to_string()))
        })
        .collect()
}

fn dropins_on_host() -> std::collections::BTreeSet<u64> {
    std::fs::read_dir("/etc/sudoers.d")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("ticket")?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
