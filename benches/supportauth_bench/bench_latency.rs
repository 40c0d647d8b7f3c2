//! Group `latency`: grant and revoke through the HTTP API (Unix socket,
//! uid 0, root path: no useradd), against the durable-write floor measured
//! in the same run, with the time in `sshd -T` shown apart.

use std::process::Command;
use std::time::Instant;

use crate::common;
use crate::util::{self, median, median_p99, ms, Floor, Report};

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report) {
    let n = util::env_usize("SA_BENCH_LATENCY_N", 100);
    report.section(&format!(
        "1. grant/revoke latency (HTTP over the Unix socket, root path, {n} runs)"
    ));
    // As on any real server, root already has a ~/.ssh with the admin's
    // own key (without it every grant would create the directory and every
    // revoke remove it again, two more directory fsyncs each).
    let mut d = util::root_daemon("", std::env::var("SA_STUB").is_ok(), |root| {
        use std::os::unix::fs::PermissionsExt;
        let ssh = root.join("root/.ssh");
        std::fs::create_dir_all(&ssh).expect("root's ~/.ssh");
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let keys = ssh.join("authorized_keys");
        std::fs::write(&keys, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop\n")
            .expect("admin's key");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    });
    // Production logging, plus the engine's one `grant timing` line per
    // grant (debug), which says how long `sshd -T` took.
    util::set_log_level(
        &mut d,
        &std::env::var("SA_BENCH_LEVEL").unwrap_or("info,supportauth::engine::grant=debug".into()),
    );
    let key = common::support_key(d.dir.path());
    let mut floor = Floor::new(rt, d.dir.path());
    let warmup = 3;
    for i in 0..warmup {
        util::grant(&d, &key, 900 + i);
        util::revoke(&d, 900 + i);
    }
    let keys_path = d.dir.path().join("root/root/.ssh/authorized_keys");
    let (mut g, mut r, mut fl) = (Vec::new(), Vec::new(), Vec::new());
    // Context switches of the daemon's threads per operation: how many
    // hand-offs between threads (sqlx's worker, blocking pool) and waits
    // on the disk each one makes, a count the machine's load does not
    // change the way it changes times.
    let pid = d.pid().as_raw();
    let (mut g_cs, mut r_cs) = (Vec::new(), Vec::new());
    for i in 0..n as u64 {
        let c0 = util::context_switches(pid);
        g.push(ms(util::grant(&d, &key, 1000 + i)));
        let c1 = util::context_switches(pid);
        // The floor's replace writes a file the size of the real one.
        let keys = std::fs::read(&keys_path).unwrap_or_default();
        let c2 = util::context_switches(pid);
        r.push(ms(util::revoke(&d, 1000 + i)));
        let c3 = util::context_switches(pid);
        g_cs.push((c1 - c0) as f64);
        r_cs.push((c3 - c2) as f64);
        fl.push(floor.sample(rt, &keys));
    }
    // The HTTP exchange alone (connect, request, answer, close), with no
    // engine work: what every CLI call costs before any grant logic.
    let mut rtt = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = d.unix(&common::get(
            "/json-api/bench_no_such_function?api.version=1",
            None,
        ));
        rtt.push(ms(t.elapsed()));
        assert_eq!(r.status, 200);
    }
    let tools: Vec<f64> = util::grant_tool_times(&d)
        .into_iter()
        .skip(warmup as usize)
        .collect();
    assert_eq!(tools.len(), g.len(), "one grant timing line per grant");
    let own: Vec<f64> = g.iter().zip(&tools).map(|(g, t)| g - t).collect();

    // sshd -T alone, through the same unshare wrapper the daemon runs.
    let root = d.dir.path().join("root");
    let wrapper = root.join("sshd-in-private-run");
    let mut sshd = Vec::new();
    for _ in 0..n.clamp(5, 30) {
        let t = Instant::now();
        let ok = Command::new(&wrapper)
            .args(util::sshd_args(&root))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        sshd.push(ms(t.elapsed()));
        assert!(ok, "sshd -T failed");
    }

    // For looking at where the time goes (the daemon logs at debug level).
    if let Ok(path) = std::env::var("SA_BENCH_DAEMON_LOG") {
        std::fs::write(path, d.stderr()).expect("write the daemon log copy");
    }
    report.row(
        "daemon's voluntary context switches per grant / revoke (all threads)",
        format!("median {:.0} / {:.0}", median(&g_cs), median(&r_cs)),
        String::new(),
        "",
    );
    let f = util::floor_medians(&fl);
    let (c, a, rep, cp, ul) = (f.commit, f.append, f.replace, f.copy, f.unlink);
    // What this design makes durable before it answers: the intent and the
    // done mark (two fsynced commits), the closing audit records (one
    // append), authorized_keys (one replace) and WHM's key copy beside it,
    // written by a grant, unlinked by a revoke.
    let floor_ms = 2.0 * c + a + rep + cp;
    let revoke_floor = 2.0 * c + a + rep + ul;
    let (gm, gp) = median_p99(&g);
    let (rm, rp) = median_p99(&r);
    let (om, op) = median_p99(&own);
    let (tm, _) = median_p99(&tools);
    report.row(
        "floor: SQLite commit (WAL, synchronous=FULL)",
        format!("{c:.2} ms"),
        "median".into(),
        "",
    );
    report.row(
        "floor: audit append (write + fdatasync)",
        format!("{a:.2} ms"),
        "median".into(),
        "",
    );
    report.row(
        "floor: authorized_keys replace (temp + fsync + rename + fsync dir)",
        format!("{rep:.2} ms"),
        "median".into(),
        "",
    );
    report.row(
        "floor: small file beside it (temp + fsync + rename)",
        format!("{cp:.2} ms"),
        "median".into(),
        "",
    );
    report.row(
        "floor: that small file unlinked (no fsync of its own)",
        format!("{ul:.2} ms"),
        "median".into(),
        "",
    );
    report.row(
        "grant floor = 2 commits + append + replace + small file",
        format!("{floor_ms:.2} ms"),
        String::new(),
        "",
    );
    report.row(
        "revoke floor = 2 commits + append + replace + unlink",
        format!("{revoke_floor:.2} ms"),
        String::new(),
        "",
    );
    report.row(
        "ticket_grant, end to end",
        format!("median {gm:.2} ms, p99 {gp:.2} ms"),
        format!("{:.1}x floor", gm / floor_ms),
        "",
    );
    report.row(
        "  of which external tools (one sshd -T, daemon-measured)",
        format!("median {tm:.2} ms"),
        format!("sshd -T alone (unshare wrapper): {:.2} ms", median(&sshd)),
        "",
    );
    report.row(
        "  grant outside external tools",
        format!("median {om:.2} ms, p99 {op:.2} ms"),
        format!("{:.2}x floor", om / floor_ms),
        &format!("<= 1.5x: {}", util::verdict(om / floor_ms <= 1.5)),
    );
    report.row(
        "ticket_revoke (no external tools)",
        format!("median {rm:.2} ms, p99 {rp:.2} ms"),
        format!("{:.2}x revoke floor", rm / revoke_floor),
        &format!("<= 1.5x: {}", util::verdict(rm / revoke_floor <= 1.5)),
    );
    report.row(
        "  HTTP exchange alone over the same socket (connect, unknown function, close)",
        format!("median {:.2} ms", median(&rtt)),
        "included in both rows above".into(),
        "",
    );
    // What the code does before it answers (`strace -f -e fsync,fdatasync`
    // on the daemon): the intent and the done mark (two fsynced commits),
    // one audit fdatasync, one authorized_keys replace (temp fsync +
    // directory fsync) and, for a grant, the key copy's temp fsync (a
    // revoke unlinks it before the directory fsync).
    report.row(
        "  durable writes the code does (strace): 2 fsynced commits + 1 audit fdatasync + 1 replace (temp fsync + dir fsync), + the key copy (its fsync for a grant, its unlink for a revoke): the floors' sets",
        "before the answer".into(),
        format!(
            "time above the floor: grant {:.2} ms, revoke {:.2} ms (threads, SQLite, parsing, HTTP)",
            om - floor_ms,
            rm - revoke_floor
        ),
        "",
    );
}
