//! Engine tests against the real tools on a scratch root: FileKeyStore,
//! useradd/userdel/chpasswd --prefix, visudo, and the real sshd -T.

use std::sync::Arc;

use super::grant::{GrantError, GrantRequest};
use super::*;
use crate::api::caller::Caller;
use crate::audit::record::open_line;
use crate::clock::ManualClock;
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
    GrantRequest {
        ticket: TicketId::parse(ticket).unwrap(),
        server: ServerNum::parse("1").unwrap(),
        key: SupportKey::parse(&rig.key).unwrap(),
        ssh_username: None,
        ttl: None,
        access_ips: Vec::new(),
        source: "local".into(),
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
    // WHM's copy of the key follows the answer (with the done mark).
    let copy = rig.scratch.path("root/.ssh/cpanel_support_4242_1.pub");
    assert!(!copy.exists());
    rig.engine.settle().await;
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
        matches!(dup, Err(GrantError::Refused(ref r)) if r.contains("already present")),
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
        matches!(again, Err(ref r) if r.contains("No keys")),
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
    // An active grant whose key someone deleted by hand: reinstalled.
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
            source: "local".into(),
            ssh_username: Username::root(),
            temp_user: false,
            sudoers_dropin: false,
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
    assert!(text.contains(&g.row.key_comment), "reinstalled");
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

/// The copy WHM lists gets no fsync of its own; one a power cut left
/// empty (or someone damaged) is rewritten by the next pass, from the key
/// in authorized_keys, and then stays converged.
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
    rig.engine.settle().await;
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

/// The "done" mark is in SQLite when the caller hears back; a key of ours
/// already in the grant's slot (put back by hand) makes the grant roll
/// back without touching the admin's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_marks_are_stored_and_a_taken_slot_rolls_back_untouched() {
    let Some(mut rig) = rig("PermitRootLogin prohibit-password").await else {
        return;
    };
    rig.engine
        .set_settle_delay(std::time::Duration::from_secs(3600));
    let caller = Caller::LocalRoot { uid: 0 };
    let ak = rig.scratch.path("root/.ssh/authorized_keys");
    std::fs::create_dir_all(ak.parent().unwrap()).unwrap();
    std::fs::write(&ak, ADMIN_KEYS).unwrap();

    let g = rig
        .engine
        .grant(&caller, request(&rig, "4343"))
        .await
        .unwrap();
    let live = rig
        .engine
        .store()
        .list_live(None, None, None)
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].state, GrantState::Active);
    let stored = rig.engine.store().grant(g.row.id).await.unwrap().unwrap();
    assert_eq!(stored.state, GrantState::Active);
    // The grant's done mark waits for the store's next write; the audit
    // log (two records past the stored head) already says "granted".
    assert_eq!(raw_state(&rig, g.row.id).await, "granting");
    assert_eq!(
        stored_head_seq(&rig).await + 2,
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
    assert!(rig
        .engine
        .store()
        .list_live(None, None, None)
        .await
        .unwrap()
        .is_empty());
    let stored = rig.engine.store().grant(g.row.id).await.unwrap().unwrap();
    assert_eq!(stored.state, GrantState::Revoked);
    assert_eq!(stored.end_reason.as_deref(), Some("revoke"));
    // The revoke's done mark took the grant's head along.
    assert_eq!(raw_state(&rig, g.row.id).await, "revoked");
    assert_eq!(
        stored_head_seq(&rig).await,
        rig.engine.audit.head().await.seq
    );

    // Someone puts our old line back by hand: the next grant for that
    // ticket and server finds the slot taken under the lock on ~/.ssh.
    std::fs::write(
        &ak,
        format!("{our_line}\n{}", std::str::from_utf8(ADMIN_KEYS).unwrap()),
    )
    .unwrap();
    let before = rig.scratch.snapshot();
    let err = rig.engine.grant(&caller, request(&rig, "4343")).await;
    assert!(
        matches!(err, Err(GrantError::RolledBack(ref r)) if r.contains("already present")),
        "{err:?}"
    );
    assert_eq!(
        before.diff(&rig.scratch.snapshot()),
        Vec::<String>::new(),
        "the host is as it was"
    );
    assert!(rig
        .engine
        .store()
        .list_live(None, None, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        events(&rig),
        [
            "key_added",
            "grant",
            "key_removed",
            "revoke",
            "grant_rolled_back"
        ]
    );
}

/// A grant's state as SQLite has it (without the pending done marks).
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
