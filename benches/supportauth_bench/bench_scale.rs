//! Group `scale`: grant+revoke with many foreign lines in authorized_keys,
//! ticket_list with many grants in the store, one reconciliation pass with
//! many active grants. Growth is the exponent between sizes (1 = linear).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;

use supportauth::audit::AuditLog;
use supportauth::authorized_keys::{render_line, KeyMark};
use supportauth::clock::{Clock, SystemClock};
use supportauth::config::Config;
use supportauth::engine::{Engine, Host, Policy};
use supportauth::firewall::Whitelist;
use supportauth::sshkey::SupportKey;
use supportauth::store::Store;
use supportauth::types::{ServerNum, SupportIp, TicketId};

use crate::common;
use crate::util::{self, exponent, median, median_p99, ms, Floor, Report};

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report) {
    foreign_lines(rt, report);
    ticket_list(rt, report);
    reconcile(rt, report);
}

fn growth_row(report: &mut Report, what: &str, points: &[(usize, f64)]) {
    let mut parts = Vec::new();
    let mut worst: f64 = 0.0;
    for w in points.windows(2) {
        let (n1, t1) = w[0];
        let (n2, t2) = w[1];
        let e = exponent(n1, t1, n2, t2);
        worst = worst.max(e);
        parts.push(format!(
            "{n1}->{n2}: x{:.2} time for x{} input (exponent {e:.2})",
            t2 / t1,
            n2 / n1.max(1)
        ));
    }
    report.row(
        what,
        parts.join("; "),
        "exponent 1 = linear".into(),
        &format!("no faster than linear: {}", util::verdict(worst <= 1.1)),
    );
}

/// A plausible admin key line; every few lines a comment or options.
fn foreign_line(i: usize, b64: &str) -> String {
    match i % 10 {
        0 => format!("# admin note {i}\n"),
        3 => format!(
            "from=\"10.0.{}.{}\" ssh-ed25519 {b64} deploy{i}@ci\n",
            i % 250,
            i % 200
        ),
        _ => format!("ssh-ed25519 {b64} admin{i}@workstation.example\n"),
    }
}

fn foreign_lines(rt: &tokio::runtime::Runtime, report: &mut Report) {
    let sizes = util::env_sizes("SA_BENCH_FOREIGN", &[10, 1_000, 100_000]);
    let reps = util::env_usize("SA_BENCH_SCALE_REPS", 15);
    report.section("2a. grant+revoke vs foreign lines in root's authorized_keys");
    let mut grant_pts = Vec::new();
    let mut own_pts = Vec::new();
    let mut revoke_pts = Vec::new();
    for &n in &sizes {
        // Fewer repetitions for the big files: each rewrite is MBs.
        let reps = if n >= 50_000 { (reps / 3).max(3) } else { reps };
        let d = util::root_daemon("", false, |root| {
            let key = common::support_key(root.parent().expect("tempdir"));
            let b64 = key.split_whitespace().nth(1).expect("base64").to_string();
            let mut text = String::new();
            for i in 0..n {
                text.push_str(&foreign_line(i, &b64));
            }
            let ssh = root.join("root/.ssh");
            std::fs::create_dir_all(&ssh).expect("mkdir .ssh");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))
                .expect("chmod .ssh");
            std::fs::write(ssh.join("authorized_keys"), text).expect("write keys");
            std::fs::set_permissions(
                ssh.join("authorized_keys"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod keys");
        });
        let key = common::support_key(d.dir.path());
        let keys_path = d.dir.path().join("root/root/.ssh/authorized_keys");
        let size = std::fs::metadata(&keys_path).map(|m| m.len()).unwrap_or(0);
        let mut floor = Floor::new(rt, d.dir.path());
        util::grant(&d, &key, 500);
        util::revoke(&d, 500);
        let (mut g, mut r, mut rep) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..reps as u64 {
            g.push(ms(util::grant(&d, &key, 1000 + i)));
            r.push(ms(util::revoke(&d, 1000 + i)));
            let bytes = std::fs::read(&keys_path).unwrap_or_default();
            rep.push(floor.replace(&bytes));
        }
        let tools: Vec<f64> = util::grant_tool_times(&d).into_iter().skip(1).collect();
        let own: Vec<f64> = g.iter().zip(&tools).map(|(g, t)| g - t).collect();
        let (gm, gp) = median_p99(&g);
        let (om, _) = median_p99(&own);
        let (rm, rp) = median_p99(&r);
        let fr = median(&rep);
        report.row(
            &format!("{n} foreign lines ({:.1} MB), {reps} runs", size as f64 / 1e6),
            format!(
                "grant {gm:.1} ms (p99 {gp:.1}; {om:.1} outside sshd -T), revoke {rm:.1} ms (p99 {rp:.1})"
            ),
            format!(
                "raw replace of that file {fr:.1} ms; grant outside tools {:.1}x, revoke {:.1}x of it",
                om / fr,
                rm / fr
            ),
            "",
        );
        grant_pts.push((n, gm));
        own_pts.push((n, om));
        revoke_pts.push((n, rm));
    }
    growth_row(report, "grant growth (end to end)", &grant_pts);
    growth_row(report, "grant growth (outside sshd -T)", &own_pts);
    growth_row(report, "revoke growth", &revoke_pts);
}

/// Active grants for a user that does not exist on the host: listed by
/// ticket_list, skipped by the reconciler (nothing to scan), never expire.
pub async fn insert_ghost_grants(db: &std::path::Path, from: usize, to: usize) {
    let mut conn = SqliteConnectOptions::from_str("sqlite://")
        .expect("options")
        .filename(db)
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .expect("open the daemon's database");
    let now = SystemClock.now();
    let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
    for i in from..to {
        let ticket = 200_000 + i as i64;
        sqlx::query(
            "INSERT INTO grants (ticket_id, server_num, state, source, ssh_username, ssh_key, \
             key_fingerprint, key_comment, access_ips, server_name, ticket_subject, ssh_ip, \
             created_at, expires_at, granted_by) VALUES (?1, 1, 'active', 'local', 'benchghost', \
             'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBenchBenchBenchBen', \
             'SHA256:benchbenchbenchbenchbenchbenchbenchbenchben', ?2, '[\"203.0.113.5\"]', \
             'server.example', 'Bench ticket', '198.51.100.7', ?3, ?4, 'root')",
        )
        .bind(ticket)
        .bind(format!("{ticket}_server_1@cpanel.net_{now}"))
        .bind(now)
        .bind(now + 365 * 86400)
        .execute(&mut *tx)
        .await
        .expect("insert grant");
    }
    tx.commit().await.expect("commit");
}

fn ticket_list(rt: &tokio::runtime::Runtime, report: &mut Report) {
    let sizes = util::env_sizes("SA_BENCH_LIST", &[10, 1_000, 10_000]);
    let reps = util::env_usize("SA_BENCH_LIST_REPS", 20);
    report.section("2b. ticket_list (Unix socket) vs grants in the store");
    let mut d = common::Daemon::start_with("", "[access]\nreconcile_interval_secs = 86400\n");
    let db = d.database();
    let mut have = 0;
    let mut pts = Vec::new();
    let mut cold_pts = Vec::new();
    for &n in &sizes {
        // Only the daemon writes its store while it runs (it keeps the
        // live grants in memory): stop it for the SQL inserts.
        d.stop();
        rt.block_on(insert_ghost_grants(&db, have, n));
        let child = d.spawn();
        d.adopt(child);
        have = n;
        let mut t = Vec::new();
        let mut bytes = 0;
        for i in 0..reps + 1 {
            let start = Instant::now();
            let r = d.unix(&common::get("/json-api/ticket_list?api.version=1", None));
            let took = ms(start.elapsed());
            assert_eq!(r.status, 200);
            bytes = r.body.len();
            if i > 0 {
                t.push(took);
            }
        }
        // The daemon reuses an answer within the same second for the same
        // grants; the first call of each new second builds it afresh.
        let mut cold = Vec::new();
        for _ in 0..util::env_usize("SA_BENCH_LIST_COLD_REPS", 6) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            std::thread::sleep(
                std::time::Duration::from_millis(1_002)
                    .saturating_sub(std::time::Duration::from_millis(now.subsec_millis().into())),
            );
            let start = Instant::now();
            let r = d.unix(&common::get("/json-api/ticket_list?api.version=1", None));
            cold.push(ms(start.elapsed()));
            assert_eq!(r.status, 200);
        }
        let v: serde_json::Value = serde_json::from_slice(
            &d.unix(&common::get("/json-api/ticket_list?api.version=1", None))
                .body,
        )
        .expect("json");
        assert_eq!(v["data"]["auths"].as_array().map(Vec::len), Some(n));
        let (m, p) = median_p99(&t);
        report.row(
            &format!("ticket_list, {n} grants"),
            format!("median {m:.2} ms, p99 {p:.2} ms"),
            format!(
                "{:.1} KB answer, {:.1} us per grant",
                bytes as f64 / 1e3,
                m * 1000.0 / n as f64
            ),
            "",
        );
        let (cm, cp) = median_p99(&cold);
        report.row(
            &format!("ticket_list, {n} grants, answer rebuilt (first call of a second)"),
            format!("median {cm:.2} ms, p99 {cp:.2} ms"),
            format!("{:.1} us per grant", cm * 1000.0 / n as f64),
            "",
        );
        pts.push((n, m));
        cold_pts.push((n, cm));
    }
    growth_row(report, "ticket_list growth (repeated calls)", &pts);
    growth_row(report, "ticket_list growth (answer rebuilt)", &cold_pts);
}

/// One pass of the real reconciler (in-process Engine on a scratch root)
/// with `n` active root grants whose keys are all in place (no drift).
fn reconcile(rt: &tokio::runtime::Runtime, report: &mut Report) {
    let sizes = util::env_sizes("SA_BENCH_RECONCILE", &[100, 1_000]);
    let reps = util::env_usize("SA_BENCH_RECONCILE_REPS", 5);
    report.section("2c. one reconciliation pass vs active grants (in-process engine)");
    let mut pts = Vec::new();
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let text = common::scratch_root_config(&root, "PermitRootLogin prohibit-password");
        let cfg_path = dir.path().join("config.toml");
        std::fs::write(
            &cfg_path,
            format!("root = \"{}\"\n[listen]\ntcp = []\n{text}", root.display()),
        )
        .expect("config");
        let (cfg, _) = Config::load(Some(&cfg_path)).expect("load config");
        let key_line = common::support_key(dir.path());
        let key = SupportKey::parse(&key_line).expect("support key");
        let ip = SupportIp::parse("203.0.113.5").expect("ip");
        let now = SystemClock.now();
        let took = rt.block_on(async {
            let store = Store::open(&cfg.database_path()).await.expect("store");
            let mut keys = String::new();
            // The copies WHM lists, as a grant writes them (the reconciler
            // checks them too).
            let mut copies = Vec::new();
            let mut tx = store.pool().begin().await.expect("begin");
            for i in 0..n {
                let ticket = TicketId::parse(&(300_000 + i).to_string()).expect("ticket");
                let server = ServerNum::parse("1").expect("server");
                let mark = KeyMark::new(ticket, server, now);
                keys.push_str(
                    &render_line(&key, &[ip], Some(now + 86400), &mark).expect("line"),
                );
                keys.push('\n');
                copies.push((
                    format!("cpanel_support_{ticket}_1.pub"),
                    format!("{} {}\n", key.openssh(), mark.comment()),
                ));
                sqlx::query(
                    "INSERT INTO grants (ticket_id, server_num, state, source, ssh_username, \
                     ssh_key, key_fingerprint, key_comment, access_ips, created_at, expires_at) \
                     VALUES (?1, 1, 'active', 'local', 'root', ?2, ?3, ?4, '[\"203.0.113.5\"]', ?5, ?6)",
                )
                .bind(ticket.as_i64())
                .bind(key.openssh())
                .bind(key.fingerprint())
                .bind(mark.comment())
                .bind(now)
                .bind(now + 86400)
                .execute(&mut *tx)
                .await
                .expect("insert");
            }
            tx.commit().await.expect("commit");
            // Reopen: the store loads its in-memory live-grant index at
            // open, and these rows went in behind its back.
            store.close().await;
            let store = Store::open(&cfg.database_path()).await.expect("store");
            let ssh = root.join("root/.ssh");
            std::fs::create_dir_all(&ssh).expect(".ssh");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).expect("chmod");
            std::fs::write(ssh.join("authorized_keys"), keys).expect("keys");
            for (name, text) in &copies {
                std::fs::write(ssh.join(name), text).expect("key copy");
                std::fs::set_permissions(ssh.join(name), std::fs::Permissions::from_mode(0o600))
                    .expect("chmod copy");
            }
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let audit = AuditLog::from_config(&cfg, store.clone(), Arc::clone(&clock))
                .await
                .expect("audit log");
            let host = Host::from_config(&cfg, Arc::new(Whitelist::detect(&cfg)));
            let engine = Engine::new(
                store.clone(),
                Arc::new(audit),
                host,
                clock,
                Policy::from_config(&cfg),
            );
            let mut took = Vec::new();
            for _ in 0..reps + 1 {
                let t = Instant::now();
                let r = engine.reconcile().await.expect("reconcile");
                took.push(ms(t.elapsed()));
                assert!(
                    r.repairs.is_empty() && r.errors.is_empty(),
                    "unexpected drift: {r:?}"
                );
            }
            store.close().await;
            took.into_iter().skip(1).collect::<Vec<_>>()
        });
        let (m, p) = median_p99(&took);
        report.row(
            &format!("reconcile pass, {n} active grants"),
            format!("median {m:.2} ms, p99 {p:.2} ms"),
            format!("{:.1} us per grant, no repairs", m * 1000.0 / n as f64),
            "",
        );
        pts.push((n, m));
    }
    growth_row(report, "reconcile growth", &pts);
}
