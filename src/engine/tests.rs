//! Engine tests against the real tools on a scratch root: FileKeyStore,
//! useradd/userdel/chpasswd --prefix, visudo, and the real sshd -T.

use std::sync::Arc;

use super::grant::{GrantError, GrantRequest};
use super::*;
use crate::audit::record::open_line;
use crate::clock::ManualClock;
use crate::domain::caller::Caller;
use crate::sshkey::SupportKey;
use crate::store::grants::GrantState;
use crate::testing::{cannot_run_host_tools, fresh_key, ScratchRoot};
use crate::types::{ServerNum, TicketId, Username};

const T0: i64 = 1_800_000_000;

struct Rig {
    scratch: ScratchRoot,
    engine: Engine,
    clock: Arc<ManualClock>,
    key: String,
}

async fn rig(sshd_body: &str) -> Option<Rig> {
    if let Some(why) = cannot_run_host_tools() {
        crate::test_skip!("SKIPPED engine test: {why}");
        return None;
    }
    let scratch = ScratchRoot::new(sshd_body);
    let store = Store::open(&scratch.cfg.database_path()).await.unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = engine_on(&scratch, store, clock.clone()).await;
    let key = fresh_key(scratch.dir.path(), "support");
    Some(Rig {
        scratch,
        engine,
        clock,
        key,
    })
}

/// An engine on `scratch`'s configuration (support address 203.0.113.5)
/// over `store`, opening the audit log from disk.
async fn engine_on(scratch: &ScratchRoot, store: Store, clock: Arc<ManualClock>) -> Engine {
    let mut cfg = scratch.cfg.clone();
    cfg.access.support_ips = vec![SupportIp::parse("203.0.113.5").unwrap()];
    let audit = Arc::new(
        AuditLog::open(&cfg.audit_log_path(), store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    // `firewall.backends = ["none"]` (set by ScratchRoot): no backend is managed.
    let firewall = crate::firewall::Whitelist::detect(&cfg);
    assert!(firewall.backends().is_empty());
    let host = Host::from_config(&cfg, Arc::new(firewall));
    Engine::new(store, audit, host, clock, Policy::from_config(&cfg))
}

fn request(rig: &Rig, ticket: &str) -> GrantRequest {
    request_with_key(&rig.key, ticket)
}

fn request_with_key(key: &str, ticket: &str) -> GrantRequest {
    GrantRequest {
        ticket: TicketId::parse(ticket).unwrap(),
        server: ServerNum::parse("1").unwrap(),
        key: SupportKey::parse(key).unwrap(),
        ssh_username: None,
        ttl: None,
        access_ips: Vec::new(),
        source: crate::domain::GrantSource::Local,
        server_name: String::new(),
        ticket_subject: String::new(),
        ssh_ip: String::new(),
        ssh_port: 22,
        whm_ip: String::new(),
    }
}

fn events(rig: &Rig) -> Vec<String> {
    rig.scratch
        .read("var/cpanel/logs/supportauth/audit.log")
        .lines()
        .map(|l| open_line(l).unwrap().event)
        .collect()
}

const ADMIN_KEYS: &[u8] = b"# admin's keys\r\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_grant_and_revoke_leave_the_admins_file_byte_identical() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let ak = rig.scratch.path("root/.ssh/authorized_keys");
    std::fs::create_dir_all(ak.parent().unwrap()).unwrap();
    std::fs::write(&ak, ADMIN_KEYS).unwrap();
    let before = rig.scratch.snapshot();

    let g = rig
        .engine
        .grant(&Caller::LocalRoot { uid: 0 }, request(&rig, "4242"))
        .await
        .unwrap();
    assert_eq!(g.row.ssh_username, Username::root());
    assert!(g.password.is_none());
    assert_eq!(g.row.state, GrantState::Active);
    assert_eq!(g.row.expires_at, Some(T0 + 72 * 3600));
    let text = rig.scratch.read("root/.ssh/authorized_keys");
    let ours = text.lines().next().unwrap();
    assert!(
        ours.starts_with("from=\"203.0.113.5\",expiry-time=\""),
        "{ours}"
    );
    assert!(
        ours.ends_with(&format!(" 4242_server_1@cpanel.net_{T0}")),
        "{ours}"
    );
    assert!(text.ends_with(std::str::from_utf8(ADMIN_KEYS).unwrap()));
    // WHM's copy of the key is there when the caller hears back.
    let copy = rig.scratch.path("root/.ssh/cpanel_support_4242_1.pub");
    assert!(copy.exists());
    // The real ssh-keygen reads what we wrote.
    let out = std::process::Command::new("/usr/bin/ssh-keygen")
        .arg("-lf")
        .arg(&ak)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("4242_server_1@cpanel.net"));

    let dup = rig
        .engine
        .grant(&Caller::LocalRoot { uid: 0 }, request(&rig, "4242"))
        .await;
    assert!(
        matches!(dup, Err(GrantError::AlreadyPresent { .. })),
        "{dup:?}"
    );

    let out = rig
        .engine
        .revoke(
            &Caller::LocalRoot { uid: 0 },
            TicketId::parse("4242").unwrap(),
            None,
            &Username::root(),
        )
        .await
        .unwrap();
    assert_eq!(out.revoked_keys, 1);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(
        before.diff(&rig.scratch.snapshot()),
        Vec::<String>::new(),
        "host byte-identical after revoke"
    );
    assert_eq!(
        events(&rig),
        ["key_added", "grant", "key_removed", "revoke"]
    );
    let again = rig
        .engine
        .revoke(
            &Caller::LocalRoot { uid: 0 },
            TicketId::parse("4242").unwrap(),
            None,
            &Username::root(),
        )
        .await;
    assert!(
        matches!(again, Err(ref r) if r.to_string().contains("No keys")),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_root_login_creates_a_temporary_wheel_user_and_revoke_removes_it() {
    let Some(rig) = rig("PermitRootLogin no").await else {
        return;
    };
    // A sudoers that does not let the group run anything: a drop-in is needed.
    std::fs::write(
        rig.scratch.path("etc/sudoers"),
        "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
    )
    .unwrap();
    let before = rig.scratch.snapshot();
    let g = rig
        .engine
        .grant(&Caller::LocalRoot { uid: 0 }, request(&rig, "5151"))
        .await
        .unwrap();
    assert_eq!(g.row.ssh_username.as_str(), "cp5151.ssh");
    assert!(g.row.temp_user && g.row.sudoers_dropin);
    let pw = g.password.as_ref().unwrap().expose().to_string();
    assert_eq!(pw.len(), 64);
    let passwd = rig.scratch.read("etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("cp5151.ssh:") && l.ends_with(":/bin/bash")),
        "{passwd}"
    );
    let dropin = rig.scratch.read("etc/sudoers.d/ticket5151");
    assert!(dropin.contains("cp5151.ssh ALL=(ALL) ALL"), "{dropin}");
    assert!(rig
        .scratch
        .read("home/cp5151.ssh/.ssh/authorized_keys")
        .contains("5151_server_1@cpanel.net"));
    // The password never reaches the audit log.
    let log = rig.scratch.read("var/cpanel/logs/supportauth/audit.log");
    assert!(!log.contains(&pw));

    let out = rig
        .engine
        .revoke(
            &Caller::LocalRoot { uid: 0 },
            TicketId::parse("5151").unwrap(),
            None,
            &Username::parse("cp5151.ssh").unwrap(),
        )
        .await
        .unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(!rig.scratch.path("home/cp5151.ssh").exists());
    assert!(!rig.scratch.path("etc/sudoers.d/ticket5151").exists());
    assert_eq!(
        before.diff(&rig.scratch.snapshot()),
        Vec::<String>::new(),
        "host byte-identical after revoke"
    );
    assert_eq!(
        events(&rig),
        [
            "user_created",
            "password_set",
            "sudoers_added",
            "key_added",
            "grant",
            "key_removed",
            "sudoers_removed",
            "user_deleted",
            "revoke"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_address_block_sends_that_address_to_the_temporary_user() {
    let Some(rig) =
        rig("PermitRootLogin prohibit-password\nMatch Address 203.0.113.5\n    PermitRootLogin no")
            .await
    else {
        return;
    };
    let g = rig
        .engine
        .grant(&Caller::LocalRoot { uid: 0 }, request(&rig, "6161"))
        .await
        .unwrap();
    assert_eq!(g.row.ssh_username.as_str(), "cp6161.ssh");
    let mut req = request(&rig, "6162");
    req.access_ips = vec![SupportIp::parse("198.51.100.7").unwrap()];
    let g = rig
        .engine
        .grant(&Caller::LocalRoot { uid: 0 }, req)
        .await
        .unwrap();
    assert_eq!(g.row.ssh_username, Username::root());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_the_host_unchanged() {
    let Some(rig) = rig("PermitRootLogin no").await else {
        return;
    };
    let before = rig.scratch.snapshot();
    let caller = Caller::LocalRoot { uid: 0 };
    let mut req = request(&rig, "7171");
    req.ssh_username = Some(Username::root());
    let err = rig.engine.grant(&caller, req).await.unwrap_err();
    assert!(err.to_string().contains("PermitRootLogin"), "{err}");
    let mut req = request(&rig, "7172");
    req.ssh_username = Some(Username::parse("nosuchuser").unwrap());
    let err = rig.engine.grant(&caller, req).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let mut req = request(&rig, "7173");
    req.ttl = Some(0);
    let err = rig.engine.grant(&caller, req).await.unwrap_err();
    assert!(err.to_string().contains("ttl"), "{err}");
    assert_eq!(before.diff(&rig.scratch.snapshot()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sshd_that_cannot_run_refuses_the_grant() {
    let Some(mut rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let mut cfg = rig.scratch.cfg.clone();
    cfg.tools.sshd = "/nonexistent/sshd".into();
    rig.engine.host.sshd = Arc::new(crate::system::sshd::SshdCommand::from_config(&cfg));
    let before = rig.scratch.snapshot();
    let err = rig
        .engine
        .grant(&Caller::LocalRoot { uid: 0 }, request(&rig, "8181"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing to guess"), "{err}");
    assert_eq!(before.diff(&rig.scratch.snapshot()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_revokes_without_being_asked() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let mut req = request(&rig, "9191");
    req.ttl = Some(60);
    rig.engine
        .grant(&Caller::LocalRoot { uid: 0 }, req)
        .await
        .unwrap();
    assert_eq!(rig.engine.expire_due().await.unwrap(), 0);
    rig.clock.advance(60);
    assert_eq!(rig.engine.expire_due().await.unwrap(), 1);
    assert!(!rig
        .scratch
        .read("root/.ssh/authorized_keys")
        .contains("9191_server"));
    assert_eq!(events(&rig).last().map(String::as_str), Some("expire"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_rolls_back_interrupted_grants_and_sweeps_orphans() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    // An active grant whose key someone deleted by hand: ended (the
    // reconciler never puts access back).
    let g = rig
        .engine
        .grant(&caller, request(&rig, "3131"))
        .await
        .unwrap();
    let ak = rig.scratch.path("root/.ssh/authorized_keys");
    std::fs::write(&ak, ADMIN_KEYS).unwrap();
    // A key of ours that no grant owns: removed.
    let orphan_line = {
        let key = SupportKey::parse(&rig.key).unwrap();
        let mark = crate::authorized_keys::KeyMark::new(
            TicketId::parse("3939").unwrap(),
            ServerNum::parse("2").unwrap(),
            T0,
        );
        crate::authorized_keys::render_line(
            &key,
            &[SupportIp::parse("203.0.113.5").unwrap()],
            Some(T0 + 10),
            &mark,
        )
        .unwrap()
    };
    let mut text = std::fs::read(&ak).unwrap();
    text.splice(0..0, format!("{orphan_line}\n").into_bytes());
    std::fs::write(&ak, &text).unwrap();
    // A grant interrupted after its intent was stored: rolled back.
    let mut req = request(&rig, "3232");
    req.ttl = Some(100);
    let interrupted = rig
        .engine
        .store
        .insert_granting(&crate::store::grants::NewGrant {
            ticket: req.ticket,
            server: req.server,
            source: crate::domain::GrantSource::Local,
            ssh_username: Username::root(),
            temp_user: false,
            sudoers_dropin: false,
            ssh_dir_created: false,
            ssh_key: req.key.openssh(),
            key_fingerprint: req.key.fingerprint(),
            key_comment: format!("3232_server_1@cpanel.net_{T0}"),
            access_ips: vec![SupportIp::parse("203.0.113.5").unwrap()],
            server_name: String::new(),
            ticket_subject: String::new(),
            ssh_ip: String::new(),
            ssh_port: 22,
            whm_ip: String::new(),
            created_at: T0,
            expires_at: Some(T0 + 100),
            granted_by: "uid:0".into(),
        })
        .await
        .unwrap();

    let report = rig.engine.reconcile().await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.repairs.len(), 3, "{:?}", report.repairs);
    let text = rig.scratch.read("root/.ssh/authorized_keys");
    assert!(!text.contains(&g.row.key_comment), "not reinstalled");
    assert!(!rig
        .scratch
        .path("root/.ssh/cpanel_support_3131_1.pub")
        .exists());
    let ended = rig.engine.store.grant(g.row.id).await.unwrap().unwrap();
    assert_eq!(ended.state, GrantState::Revoked);
    assert!(!text.contains("3939_server_2"), "orphan removed");
    assert!(
        text.ends_with(std::str::from_utf8(ADMIN_KEYS).unwrap()),
        "admin's keys untouched"
    );
    let row = rig
        .engine
        .store
        .grant(interrupted.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, GrantState::Failed);
    // A second pass finds nothing to do.
    let report = rig.engine.reconcile().await.unwrap();
    assert!(report.repairs.is_empty(), "{:?}", report.repairs);
}

/// A copy WHM lists that someone emptied, damaged or removed is rewritten
/// by the next pass, from the key in authorized_keys, and then stays
/// converged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_rewrites_a_damaged_whm_key_copy() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    rig.engine
        .grant(&caller, request(&rig, "3434"))
        .await
        .unwrap();
    let copy = rig.scratch.path("root/.ssh/cpanel_support_3434_1.pub");
    let good = std::fs::read(&copy).unwrap();
    assert!(
        String::from_utf8_lossy(&good).starts_with("ssh-"),
        "{good:?}"
    );
    let report = rig.engine.reconcile().await.unwrap();
    assert!(report.repairs.is_empty(), "{:?}", report.repairs);
    for damage in [&b""[..], &b"garbage\n"[..]] {
        std::fs::write(&copy, damage).unwrap();
        let report = rig.engine.reconcile().await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.repairs.len(), 1, "{:?}", report.repairs);
        assert!(report.repairs[0].contains("RewriteKeyCopy"));
        assert_eq!(std::fs::read(&copy).unwrap(), good);
    }
    std::fs::remove_file(&copy).unwrap();
    let report = rig.engine.reconcile().await.unwrap();
    assert_eq!(report.repairs.len(), 1, "{:?}", report.repairs);
    assert_eq!(std::fs::read(&copy).unwrap(), good);
    let report = rig.engine.reconcile().await.unwrap();
    assert!(report.repairs.is_empty(), "{:?}", report.repairs);
}

/// Issue 5 item 5: after a long pseudo-random run of grants, revokes,
/// expiries, hand-made drift and reconciliations, the grants active
/// according to the audit log alone equal the store and the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_replay_equals_store_and_host_after_a_random_history() {
    let Some(rig) = rig(
        "PermitRootLogin prohibit-password\nMatch Address 198.51.100.0/24\n    PermitRootLogin no",
    )
    .await
    else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    let mut seed: u64 = 0x5eed_2026;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..60 {
        let ticket = 1000 + next(8);
        let tid = TicketId::parse(&ticket.to_string()).unwrap();
        match next(6) {
            0..=2 => {
                let mut req = request(&rig, &ticket.to_string());
                req.ttl = Some(30 + next(300));
                if next(3) == 0 {
                    // Root is refused from this range: the temporary-user path.
                    req.access_ips = vec![SupportIp::parse("198.51.100.9").unwrap()];
                }
                let _ = rig.engine.grant(&caller, req).await;
            }
            3 => {
                for user in [Username::root(), Username::temporary_for(tid)] {
                    let _ = rig.engine.revoke(&caller, tid, None, &user).await;
                }
            }
            4 => {
                rig.clock.advance(next(120) as i64);
                rig.engine.expire_due().await.unwrap();
            }
            _ => {
                // Drift: someone empties root's authorized_keys by hand.
                let ak = rig.scratch.path("root/.ssh/authorized_keys");
                if ak.exists() && next(2) == 0 {
                    std::fs::write(&ak, ADMIN_KEYS).unwrap();
                }
                let report = rig.engine.reconcile().await.unwrap();
                assert!(report.errors.is_empty(), "{:?}", report.errors);
            }
        }
    }
    rig.engine.reconcile().await.unwrap();

    let log = rig.scratch.cfg.audit_log_path();
    let files = crate::audit::files::discover(&log).unwrap();
    let report = crate::audit::verify::verify_files(&files, Some(rig.engine.audit.head().await));
    assert!(report.failure.is_none(), "{report}");
    let replayed: Vec<(u64, u64, String)> = crate::audit::replay::active_grants(
        crate::audit::files::Records::new(&files).map(|r| r.unwrap()),
    )
    .into_iter()
    .map(|((t, s), g)| (t, s, g.ssh_username))
    .collect();
    let mut stored: Vec<(u64, u64, String)> = rig
        .engine
        .store
        .live_grants()
        .await
        .unwrap()
        .into_iter()
        .map(|g| {
            assert_eq!(g.state, GrantState::Active);
            (g.ticket.get(), g.server.get(), g.ssh_username.to_string())
        })
        .collect();
    stored.sort();
    assert_eq!(replayed, stored, "audit replay vs store");
    assert!(
        !stored.is_empty(),
        "the history should leave some grants active"
    );
    // The host: exactly the stored grants' keys are present.
    for (t, s, user) in &stored {
        let home = if user == "root" {
            "root".to_string()
        } else {
            format!("home/{user}")
        };
        let text = rig.scratch.read(&format!("{home}/.ssh/authorized_keys"));
        let ours: Vec<_> = text
            .lines()
            .filter(|l| l.contains("@cpanel.net_"))
            .collect();
        assert!(
            ours.iter()
                .any(|l| l.contains(&format!(" {t}_server_{s}@cpanel.net_"))),
            "{user}: {text}"
        );
    }
    let root_ours = rig
        .scratch
        .read("root/.ssh/authorized_keys")
        .lines()
        .filter(|l| l.contains("@cpanel.net_"))
        .count();
    assert_eq!(
        root_ours,
        stored.iter().filter(|(_, _, u)| u == "root").count()
    );
    // Temporary users on the host are exactly the stored ones.
    let mut temp_on_host: Vec<String> = rig
        .scratch
        .read("etc/passwd")
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| n.starts_with("cp") && n.ends_with(".ssh"))
        .map(str::to_string)
        .collect();
    temp_on_host.sort();
    let mut temp_stored: Vec<String> = stored
        .iter()
        .map(|(_, _, u)| u.clone())
        .filter(|u| u != "root")
        .collect();
    temp_stored.sort();
    assert_eq!(temp_on_host, temp_stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_on_the_configured_addresses_follow_a_change_of_them() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    let old = vec![SupportIp::parse("203.0.113.5").unwrap()];
    let new = vec![
        SupportIp::parse("198.51.100.20").unwrap(),
        SupportIp::parse("198.51.100.21").unwrap(),
    ];
    let g = rig
        .engine
        .grant(&caller, request(&rig, "2020"))
        .await
        .unwrap();
    let mut own = request(&rig, "2021");
    own.access_ips = vec![SupportIp::parse("192.0.2.44").unwrap()];
    rig.engine.grant(&caller, own).await.unwrap();

    assert_eq!(rig.engine.follow_support_ips(&old, &new).await.unwrap(), 1);
    let text = rig.scratch.read("root/.ssh/authorized_keys");
    let line = text
        .lines()
        .find(|l| l.contains(&g.row.key_comment))
        .unwrap();
    assert!(
        line.starts_with("from=\"198.51.100.20,198.51.100.21\","),
        "{line}"
    );
    let own_line = text.lines().find(|l| l.contains("2021_server_1")).unwrap();
    assert!(
        own_line.starts_with("from=\"192.0.2.44\","),
        "a grant with its own addresses keeps them: {own_line}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("@cpanel.net_")).count(),
        2
    );
    let row = rig.engine.store.grant(g.row.id).await.unwrap().unwrap();
    assert_eq!(row.access_ips, new);
    // Nothing to do the second time.
    assert_eq!(rig.engine.follow_support_ips(&old, &new).await.unwrap(), 0);
}

/// Counts `sshd -T` runs and remembers for whom.
struct CountingSshd {
    inner: Arc<dyn crate::system::sshd::SshdProbe>,
    users: std::sync::Mutex<Vec<String>>,
}

impl crate::system::sshd::SshdProbe for CountingSshd {
    fn effective(
        &self,
        user: &Username,
        from: std::net::IpAddr,
    ) -> Result<crate::sshd_config::SshdEffective, crate::system::sshd::SshdError> {
        self.users.lock().unwrap().push(user.to_string());
        self.inner.effective(user, from)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_grant_asks_sshd_only_about_root() {
    for (body, ticket, want) in [
        ("PermitRootLogin prohibit-password", "5151", vec!["root"]),
        ("PermitRootLogin no", "5252", vec!["root", "cp5252.ssh"]),
    ] {
        let Some(mut rig) = rig(body).await else {
            return;
        };
        let counting = Arc::new(CountingSshd {
            inner: rig.engine.host.sshd.clone(),
            users: Default::default(),
        });
        rig.engine.host.sshd = counting.clone();
        rig.engine
            .grant(&Caller::LocalRoot { uid: 0 }, request(&rig, ticket))
            .await
            .unwrap();
        assert_eq!(*counting.users.lock().unwrap(), want, "{body}");
    }
}

/// The "done" mark and the chain head are in SQLite when the caller hears
/// back (grant and revoke); a key of ours already in the grant's slot (put
/// back by hand) is refused without touching anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_marks_are_stored_at_the_answer_and_a_taken_slot_is_refused() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    let ak = rig.scratch.path("root/.ssh/authorized_keys");
    std::fs::create_dir_all(ak.parent().unwrap()).unwrap();
    std::fs::write(&ak, ADMIN_KEYS).unwrap();

    let g = rig
        .engine
        .grant(&caller, request(&rig, "4343"))
        .await
        .unwrap();
    assert_eq!(raw_state(&rig, g.row.id).await, "active");
    assert_eq!(
        stored_head_seq(&rig).await,
        rig.engine.audit.head().await.seq
    );
    let our_line = rig
        .scratch
        .read("root/.ssh/authorized_keys")
        .lines()
        .next()
        .unwrap()
        .to_string();

    let tid = TicketId::parse("4343").unwrap();
    let out = rig
        .engine
        .revoke(&caller, tid, None, &Username::root())
        .await
        .unwrap();
    assert_eq!(out.grants.len(), 1);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(raw_state(&rig, g.row.id).await, "revoked");
    assert_eq!(
        stored_head_seq(&rig).await,
        rig.engine.audit.head().await.seq
    );

    // Someone puts our old line back by hand: the next grant for that
    // ticket and server is refused before anything changes.
    std::fs::write(
        &ak,
        format!("{our_line}\n{}", std::str::from_utf8(ADMIN_KEYS).unwrap()),
    )
    .unwrap();
    let before = rig.scratch.snapshot();
    let err = rig.engine.grant(&caller, request(&rig, "4343")).await;
    assert!(
        matches!(err, Err(GrantError::AlreadyPresent { .. })),
        "{err:?}"
    );
    assert_eq!(
        before.diff(&rig.scratch.snapshot()),
        Vec::<String>::new(),
        "the host is as it was"
    );
    assert_eq!(
        events(&rig),
        ["key_added", "grant", "key_removed", "revoke"]
    );
}

/// A grant's state as SQLite has it.
async fn raw_state(rig: &Rig, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM grants WHERE id = ?1")
        .bind(id)
        .fetch_one(rig.engine.store().pool())
        .await
        .unwrap()
}

async fn stored_head_seq(rig: &Rig) -> u64 {
    crate::audit::writer::load_head(rig.engine.store())
        .await
        .unwrap()
        .map_or(0, |h| h.seq)
}

/// "Crash" after an answered grant and inside another grant right after
/// its intent: the store and log are reopened from disk. The answered
/// grant stands untouched; the interrupted one is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_grant_survives_a_crash_and_an_unanswered_one_is_rolled_back() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    let g = rig
        .engine
        .grant(&caller, request(&rig, "4545"))
        .await
        .unwrap();
    let with_key = rig.scratch.snapshot();
    let cfg = rig.scratch.cfg.clone();
    let store = Store::open(&cfg.database_path()).await.unwrap();
    let mut interrupted = crate::store::grants::tests::sample("4646", "1");
    interrupted.created_at = T0;
    let orphan = store.insert_granting(&interrupted).await.unwrap();
    let engine = engine_on(&rig.scratch, store, rig.clock.clone()).await;
    let report = engine.reconcile().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        report.repairs,
        [format!("RollBackGranting {{ grant_id: {} }}", orphan.id)]
    );
    let live = engine.store().list_live(None, None, None).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].id, live[0].state), (g.row.id, GrantState::Active));
    let diff = with_key.diff(&rig.scratch.snapshot());
    assert!(
        diff.iter()
            .all(|d| d.contains("audit.log") || d.contains("state")),
        "{diff:?}"
    );
    let report =
        crate::audit::verify_files(&[cfg.audit_log_path()], Some(engine.audit.head().await));
    assert!(report.is_ok(), "{report}");
}

/// A sudoers that does not let the group run anything: a drop-in is needed.
fn sudoers_without_group_rule(rig: &Rig) {
    std::fs::write(
        rig.scratch.path("etc/sudoers"),
        "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
    )
    .unwrap();
}

fn on_server(mut req: GrantRequest, server: &str) -> GrantRequest {
    req.server = ServerNum::parse(server).unwrap();
    req
}

/// Issue 14, finding 1: a second server's grant of a ticket shares the
/// temporary user (no new password, no `user_created`), and neither its
/// rollback, nor a crash inside it, nor its revoke deletes the user while
/// the first grant lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_user_lives_as_long_as_any_grant_of_its_ticket() {
    let Some(rig) = rig("PermitRootLogin no").await else {
        return;
    };
    sudoers_without_group_rule(&rig);
    let caller = Caller::LocalRoot { uid: 0 };
    let before = rig.scratch.snapshot();
    let first = rig
        .engine
        .grant(&caller, request(&rig, "6161"))
        .await
        .unwrap();
    let shadow_after_first = rig.scratch.read("etc/shadow");
    assert!(first.password.is_some() && !first.shared_user);
    let second = rig
        .engine
        .grant(&caller, on_server(request(&rig, "6161"), "2"))
        .await
        .unwrap();
    assert_eq!(second.row.ssh_username, first.row.ssh_username);
    assert!(second.password.is_none() && second.shared_user);
    assert_eq!(
        rig.scratch.read("etc/shadow"),
        shadow_after_first,
        "password kept"
    );
    let user_events = |rig: &Rig| events(rig).iter().filter(|e| *e == "user_created").count();
    assert_eq!(user_events(&rig), 1);

    // A crash right after a third server's intent: the restart rolls it
    // back and keeps the user the other two grants log in as.
    let cfg = rig.scratch.cfg.clone();
    let store = Store::open(&cfg.database_path()).await.unwrap();
    let mut third = crate::store::grants::tests::sample("6161", "3");
    third.ssh_username = first.row.ssh_username.clone();
    third.temp_user = true;
    third.sudoers_dropin = true;
    third.created_at = T0;
    let third = store.insert_granting(&third).await.unwrap();
    let engine = engine_on(&rig.scratch, store, rig.clock.clone()).await;
    let report = engine.reconcile().await.unwrap();
    assert_eq!(
        report.repairs,
        [format!("RollBackGranting {{ grant_id: {} }}", third.id)]
    );
    let ak = "home/cp6161.ssh/.ssh/authorized_keys";
    assert!(rig.scratch.read(ak).contains("6161_server_1@cpanel.net"));
    assert!(rig.scratch.read(ak).contains("6161_server_2@cpanel.net"));
    assert!(rig.scratch.path("etc/sudoers.d/ticket6161").exists());

    // Revoking one server keeps the user for the other; the last takes it.
    let user = first.row.ssh_username.clone();
    let tid = TicketId::parse("6161").unwrap();
    let one = ServerNum::parse("1").unwrap();
    let out = engine.revoke(&caller, tid, Some(one), &user).await.unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(rig.scratch.read(ak).contains("6161_server_2@cpanel.net"));
    assert!(rig.scratch.read("etc/passwd").contains("cp6161.ssh:"));
    let out = engine.revoke(&caller, tid, None, &user).await.unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(before.diff(&rig.scratch.snapshot()), Vec::<String>::new());
}

/// Issue 14, finding 4: a revoke whose end the store cannot record takes
/// the key away, says so, and no later pass puts the key back; once the
/// store works again the pass records the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_the_store_cannot_record_says_so_and_is_never_undone() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    let g = rig
        .engine
        .grant(&caller, request(&rig, "7171"))
        .await
        .unwrap();
    let pool = rig.engine.store().pool().clone();
    sqlx::query("CREATE TRIGGER no_writes BEFORE UPDATE ON grants BEGIN SELECT RAISE(FAIL, 'disk full'); END")
        .execute(&pool)
        .await
        .unwrap();
    let out = rig
        .engine
        .revoke(
            &caller,
            TicketId::parse("7171").unwrap(),
            None,
            &Username::root(),
        )
        .await
        .unwrap();
    assert!(
        !out.errors.is_empty(),
        "the answer must say the store failed"
    );
    assert!(
        out.errors.iter().any(|e| e.contains("state database")),
        "{:?}",
        out.errors
    );
    let ak = "root/.ssh/authorized_keys";
    assert!(!rig.scratch.read(ak).contains("7171_server"));
    assert_eq!(raw_state(&rig, g.row.id).await, "active");
    // A pass while the store still refuses: the key stays away.
    let _ = rig.engine.reconcile().await.unwrap();
    assert!(!rig.scratch.read(ak).contains("7171_server"));
    sqlx::query("DROP TRIGGER no_writes")
        .execute(&pool)
        .await
        .unwrap();
    let report = rig.engine.reconcile().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        report.repairs,
        [format!("EndGrantKeyGone {{ grant_id: {} }}", g.row.id)]
    );
    assert!(!rig.scratch.read(ak).contains("7171_server"));
    assert_eq!(raw_state(&rig, g.row.id).await, "revoked");
}

/// Issue 14, finding 3: a grant made while the expiry timer sleeps for a
/// later end (or for the next pass) wakes it: the grant ends on time,
/// not at the next reconciliation pass an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shorter_grant_wakes_the_expiry_timer() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let Rig {
        scratch,
        engine,
        clock,
        key,
    } = rig;
    let engine = Arc::new(engine);
    let caller = Caller::LocalRoot { uid: 0 };
    let mut long = request_with_key(&key, "8282");
    long.ttl = Some(3000);
    engine.grant(&caller, long).await.unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(super::background::run(
        Arc::clone(&engine),
        std::time::Duration::from_secs(3600),
        stop_rx,
    ));
    // Let the timer go to sleep for the long grant.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut short = request_with_key(&key, "8383");
    short.ttl = Some(1);
    engine.grant(&caller, short).await.unwrap();
    clock.advance(1);
    let ak = scratch.path("root/.ssh/authorized_keys");
    // A bound on waiting for the event, not a timing assertion: the old
    // timer slept for the long grant's 3000 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(&ak)
        .unwrap()
        .contains("8383_server")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the short grant did not expire"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_to_string(&ak)
        .unwrap()
        .contains("8282_server"));
    task.abort();
}

/// An `sshd -T` that waits until the test lets it go.
struct HeldSshd {
    inner: Arc<dyn crate::system::sshd::SshdProbe>,
    entered: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl crate::system::sshd::SshdProbe for HeldSshd {
    fn effective(
        &self,
        user: &Username,
        from: std::net::IpAddr,
    ) -> Result<crate::sshd_config::SshdEffective, crate::system::sshd::SshdError> {
        let _ = self.entered.try_send(());
        let _ = self
            .release
            .lock()
            .unwrap()
            .recv_timeout(std::time::Duration::from_secs(60));
        self.inner.effective(user, from)
    }
}

/// Issue 15: the kill switch never waits behind a slow grant. A grant
/// stuck in `sshd -T` holds no lock a revoke needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_does_not_wait_for_a_slow_grant() {
    let Some(mut rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let caller = Caller::LocalRoot { uid: 0 };
    rig.engine
        .grant(&caller, request(&rig, "9393"))
        .await
        .unwrap();
    let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(1);
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    rig.engine.host.sshd = Arc::new(HeldSshd {
        inner: rig.engine.host.sshd.clone(),
        entered: entered_tx,
        release: std::sync::Mutex::new(release_rx),
    });
    let Rig {
        scratch,
        engine,
        key,
        ..
    } = rig;
    let engine = Arc::new(engine);
    let slow = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            engine
                .grant(
                    &Caller::LocalRoot { uid: 0 },
                    request_with_key(&key, "9494"),
                )
                .await
        })
    };
    tokio::task::spawn_blocking(move || {
        entered_rx.recv_timeout(std::time::Duration::from_secs(30))
    })
    .await
    .unwrap()
    .expect("the slow grant reached sshd -T");
    // Bounded so a regression fails instead of hanging; the grant waits
    // for its release for up to a minute.
    let killed = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        engine.revoke_where(&caller, super::revoke::EndReason::RevokeAll, &|_| true),
    )
    .await
    .expect("the kill switch waited for a grant stuck in sshd -T")
    .unwrap();
    assert_eq!(killed.grants.len(), 1);
    assert!(!scratch
        .read("root/.ssh/authorized_keys")
        .contains("9393_server"));
    release_tx.send(()).unwrap();
    slow.await.unwrap().unwrap();
}

/// Issue 15, finding 8: a grant to an account without `~/.ssh` creates
/// one; its revoke takes it away again, leaving the host as it was. One
/// the user put something into meanwhile stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_dir_a_grant_created_goes_with_its_revoke() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    assert!(!rig.scratch.path("root/.ssh").exists());
    let caller = Caller::LocalRoot { uid: 0 };
    let root = Username::root();
    let before = rig.scratch.snapshot();
    rig.engine
        .grant(&caller, request(&rig, "9595"))
        .await
        .unwrap();
    assert!(rig.scratch.path("root/.ssh/authorized_keys").exists());
    let t = TicketId::parse("9595").unwrap();
    let out = rig.engine.revoke(&caller, t, None, &root).await.unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let diff = before.diff(&rig.scratch.snapshot());
    assert!(
        diff.iter()
            .all(|d| d.contains("audit.log") || d.contains("state")),
        "{diff:?}"
    );
    assert!(!rig.scratch.path("root/.ssh").exists());

    rig.engine
        .grant(&caller, request(&rig, "9696"))
        .await
        .unwrap();
    std::fs::write(rig.scratch.path("root/.ssh/known_hosts"), b"mine\n").unwrap();
    let t = TicketId::parse("9696").unwrap();
    rig.engine.revoke(&caller, t, None, &root).await.unwrap();
    assert_eq!(
        std::fs::read(rig.scratch.path("root/.ssh/known_hosts")).unwrap(),
        b"mine\n"
    );
}

/// `extend` moves the store's end and the key line's expiry-time together,
/// audits old and new end; a key line whose expiry-time differs from the
/// store (what a crash between the rewrite and the done mark leaves) is
/// put back to the store's end by the reconciler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_moves_the_end_and_the_reconciler_keeps_the_line_to_the_store() {
    let Some(rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    let ak = rig.scratch.path("root/.ssh/authorized_keys");
    std::fs::create_dir_all(ak.parent().unwrap()).unwrap();
    std::fs::write(&ak, ADMIN_KEYS).unwrap();
    let caller = Caller::LocalRoot { uid: 0 };
    let g = rig
        .engine
        .grant(&caller, request(&rig, "5151"))
        .await
        .unwrap();
    let (ticket, server) = (g.row.ticket, g.row.server);
    let expiry_in_file = || {
        let text = rig.scratch.read("root/.ssh/authorized_keys");
        assert!(text.ends_with(std::str::from_utf8(ADMIN_KEYS).unwrap()));
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("5151_server_1@"))
            .collect();
        assert_eq!(ours.len(), 1, "{text}");
        crate::authorized_keys::expiry_option(ours[0])
    };
    assert_eq!(
        expiry_in_file(),
        Some(crate::clock::openssh_expiry(T0 + 72 * 3600))
    );

    rig.clock.advance(600);
    let out = rig
        .engine
        .extend(&caller, ticket, server, 7200)
        .await
        .unwrap();
    assert_eq!(out.previous_expires_at, Some(T0 + 72 * 3600));
    assert_eq!(out.row.expires_at, Some(T0 + 600 + 7200));
    let stored = rig.engine.store().grant(g.row.id).await.unwrap().unwrap();
    assert_eq!(stored.expires_at, Some(T0 + 600 + 7200));
    assert_eq!(stored.state, GrantState::Active);
    assert_eq!(
        expiry_in_file(),
        Some(crate::clock::openssh_expiry(T0 + 600 + 7200))
    );
    let log = rig.scratch.read("var/cpanel/logs/supportauth/audit.log");
    let rec = log
        .lines()
        .map(|l| open_line(l).unwrap())
        .find(|r| r.event == "grant_extended")
        .expect("a grant_extended record");
    assert_eq!(rec.details["previous_expires_at"], T0 + 72 * 3600);
    assert_eq!(rec.details["expires_at"], T0 + 600 + 7200);
    assert_eq!(rec.ticket_id, Some(5151));

    // Beyond the policy: refused, nothing moves.
    let e = rig
        .engine
        .extend(&caller, ticket, server, 10 * 365 * 86_400)
        .await
        .unwrap_err();
    assert!(e.contains("max_ttl_secs"), "{e}");
    // No grant: refused with a reason.
    let other = TicketId::parse("999").unwrap();
    let e = rig
        .engine
        .extend(&caller, other, server, 60)
        .await
        .unwrap_err();
    assert!(e.contains("no grant to extend"), "{e}");
    assert_eq!(
        expiry_in_file(),
        Some(crate::clock::openssh_expiry(T0 + 600 + 7200))
    );

    // A crash after the line was rewritten, before the done mark: the
    // line says one end, the store another. The reconciler rewrites the
    // line to the store's.
    let (line, mark) = super::extend::key_line(&stored, Some(T0 + 999_999)).unwrap();
    let acct = rig
        .engine
        .host()
        .key_account_of(&Username::root())
        .unwrap()
        .unwrap();
    rig.engine.host().keys.install(&acct, &line, &mark).unwrap();
    assert_eq!(
        expiry_in_file(),
        Some(crate::clock::openssh_expiry(T0 + 999_999))
    );
    let report = rig.engine.reconcile().await.unwrap();
    assert_eq!(
        report.repairs,
        vec![format!("RewriteKeyExpiry {{ grant_id: {} }}", g.row.id)],
        "{report:?}"
    );
    assert_eq!(
        expiry_in_file(),
        Some(crate::clock::openssh_expiry(T0 + 600 + 7200))
    );
    assert!(rig.engine.reconcile().await.unwrap().repairs.is_empty());
    // The log says the end that stands again (replay agrees with the store).
    let log = rig.scratch.read("var/cpanel/logs/supportauth/audit.log");
    let undone = log
        .lines()
        .rev()
        .map(|l| open_line(l).unwrap())
        .find(|r| r.event == "grant_extended")
        .unwrap();
    assert_eq!(undone.outcome, crate::audit::Outcome::Failed);
    assert_eq!(undone.details["expires_at"], T0 + 600 + 7200);
    let replayed = crate::audit::replay::active_grants(log.lines().map(|l| open_line(l).unwrap()));
    assert_eq!(replayed[&(5151, 1)].expires_at, Some(T0 + 600 + 7200));

    // The expiry timer follows the new end, not the old one.
    rig.clock.advance(7200 - 1);
    assert_eq!(rig.engine.expire_due().await.unwrap(), 0);
    rig.clock.advance(1);
    assert_eq!(rig.engine.expire_due().await.unwrap(), 1);
    assert_eq!(
        rig.scratch.read("root/.ssh/authorized_keys").as_bytes(),
        ADMIN_KEYS
    );
}
