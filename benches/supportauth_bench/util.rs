//! Statistics, the results table, the machine description, daemon set-up
//! on a scratch root, and the raw durable-write floor.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::common::{self, Daemon};

/// An environment knob with a default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list of sizes.
pub fn env_sizes(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p99 (nearest rank) of samples, in the samples' unit.
pub fn median_p99(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, at(0.99))
}

pub fn median(samples: &[f64]) -> f64 {
    median_p99(samples).0
}

/// Growth exponent between two sizes: 1.0 is linear, below is sublinear.
pub fn exponent(n1: usize, t1: f64, n2: usize, t2: f64) -> f64 {
    (t2 / t1).ln() / (n2 as f64 / n1 as f64).ln()
}

/// The results table, printed as Markdown at the end (and as it goes).
#[derive(Default)]
pub struct Report {
    rows: Vec<[String; 4]>,
    machine: Vec<String>,
}

impl Report {
    /// One result: what, the figure, the comparison, the verdict.
    pub fn row(&mut self, what: &str, value: String, compare: String, verdict: &str) {
        eprintln!("  {what}: {value}  {compare}  {verdict}");
        self.rows
            .push([what.into(), value, compare, verdict.into()]);
    }

    pub fn section(&mut self, title: &str) {
        eprintln!("== {title}");
        self.rows.push([
            format!("**{title}**"),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }

    pub fn print(&self, took: Duration) {
        println!("\n### Machine\n");
        for m in &self.machine {
            println!("- {m}");
        }
        println!("- suite wall time: {:.0} s", took.as_secs_f64());
        println!("\n### Results\n");
        println!("| measurement | value | comparison (same run) | target |");
        println!("|---|---|---|---|");
        for r in &self.rows {
            println!("| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
        }
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// nproc, CPU model, kernel, and the scratch directory's filesystem.
pub fn machine(report: &mut Report) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let tmp = std::env::temp_dir();
    let fs = filesystem_of(&tmp);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    report.machine = vec![
        format!("nproc: {cpus}"),
        format!("CPU: {model}"),
        format!("kernel: {kernel}"),
        format!("scratch dir: {} on {fs}", tmp.display()),
        format!("load average at start: {load}"),
    ];
    for m in &report.machine {
        eprintln!("# {m}");
    }
}

/// The filesystem type and device of the mount holding `p` (longest
/// mount-point prefix in /proc/self/mounts).
fn filesystem_of(p: &Path) -> String {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        if p.starts_with(f[1]) && best.as_ref().is_none_or(|(n, _)| f[1].len() > *n) {
            best = Some((f[1].len(), format!("{} ({}, {})", f[2], f[0], f[3])));
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| "unknown".into())
}

/// Config text that keeps the periodic reconciler out of the measurements.
fn quiet_reconciler(text: String) -> String {
    text.replace("[access]\n", "[access]\nreconcile_interval_secs = 86400\n")
}

/// The real daemon on a scratch root whose sshd lets root log in with a
/// key (so grants use root's authorized_keys and no useradd runs).
/// `prepare` runs on the root before the daemon starts; `stub_sshd`
/// replaces the real `sshd -T` (through its unshare wrapper) by a script
/// that prints the real one's answer, captured once.
pub fn root_daemon(listen_extra: &str, stub_sshd: bool, prepare: impl FnOnce(&Path)) -> Daemon {
    Daemon::start_configured(listen_extra, "", |root| {
        let mut text = common::scratch_root_config(root, "PermitRootLogin prohibit-password");
        if stub_sshd {
            let wrapper = root.join("sshd-in-private-run");
            let out = std::process::Command::new(&wrapper)
                .args(sshd_args(root))
                .output()
                .expect("run sshd -T");
            assert!(out.status.success(), "sshd -T failed: {out:?}");
            let canned = root.join("sshd-T.out");
            std::fs::write(&canned, &out.stdout).expect("write canned sshd -T");
            let stub = root.join("sshd-stub");
            std::fs::write(
                &stub,
                format!("#!/bin/sh\nexec /bin/cat {}\n", canned.display()),
            )
            .expect("write stub");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))
                .expect("chmod stub");
            text = text.replace(&wrapper.display().to_string(), &stub.display().to_string());
        }
        prepare(root);
        quiet_reconciler(text)
    })
}

/// Restarts the daemon with the production log level (`info`): the test
/// helper starts it at `debug`, which logs every SQL statement.
pub fn info_logging(d: &mut Daemon) {
    set_log_level(d, "info");
}

/// Restarts the daemon with the tracing filter `level`.
pub fn set_log_level(d: &mut Daemon, level: &str) {
    let text = std::fs::read_to_string(&d.config).expect("read config");
    std::fs::write(
        &d.config,
        text.replace("level = \"debug\"", &format!("level = \"{level}\"")),
    )
    .expect("write config");
    d.stop();
    let child = d.spawn();
    d.adopt(child);
}

/// The arguments the daemon passes to `sshd -T` for a root grant.
pub fn sshd_args(root: &Path) -> Vec<String> {
    vec![
        "-T".into(),
        "-C".into(),
        "user=root,host=scratch.example,addr=203.0.113.5,laddr=0.0.0.0,lport=22".into(),
        "-f".into(),
        root.join("etc/ssh/sshd_config").display().to_string(),
    ]
}

/// GET a function over the Unix socket as root; panics unless result = 1.
pub fn call(d: &Daemon, function: &str, query: &str) -> serde_json::Value {
    let r = d.unix(&common::get(
        &format!("/json-api/{function}?api.version=1&{query}"),
        None,
    ));
    let v = r.json();
    assert_eq!(r.status, 200, "{function}: {v}");
    assert_eq!(v["metadata"]["result"], 1, "{function}: {v}");
    v
}

/// One grant (root path) through the API; returns its latency.
pub fn grant(d: &Daemon, key: &str, ticket: u64) -> Duration {
    let q = format!(
        "ticket_id={ticket}&server_num=1&ssh_key={}&ttl=3600",
        common::enc(key)
    );
    let t = Instant::now();
    let v = call(d, "ticket_grant", &q);
    let took = t.elapsed();
    assert_eq!(v["data"]["ssh_username"], "root", "{v}");
    took
}

pub fn revoke(d: &Daemon, ticket: u64) -> Duration {
    let q = format!("ticket_id={ticket}&server_num=1&ssh_username=root");
    let t = Instant::now();
    call(d, "ticket_revoke", &q);
    t.elapsed()
}

/// The daemon's own `grant timing` debug lines: time spent gathering
/// facts from external tools (`sshd -T`), in ms, oldest first.
pub fn grant_tool_times(d: &Daemon) -> Vec<f64> {
    d.stderr()
        .lines()
        .filter(|l| l.contains("grant timing"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("facts_us="))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|us| us / 1000.0)
        .collect()
}

/// The raw durable writes a grant or revoke cannot avoid, measured with
/// plain syscalls (and one SQLite commit through sqlx, as the daemon
/// does) on the scratch directory's filesystem.
pub struct Floor {
    dir: PathBuf,
    pool: SqlitePool,
    log: File,
    n: u64,
}

/// One floor sample, in ms.
#[derive(Clone, Copy, Default)]
pub struct FloorSample {
    pub commit: f64,
    pub append: f64,
    pub replace: f64,
    /// The part of `replace` before the rename (create, write, fsync).
    pub stage: f64,
    /// A small second file (WHM's key copy) written, fsynced and renamed
    /// in beside it; its directory fsync is the replace's.
    pub copy: f64,
    /// That small file unlinked (a revoke removes WHM's key copy); its
    /// directory fsync is the replace's too.
    pub unlink: f64,
}

impl Floor {
    pub fn new(rt: &tokio::runtime::Runtime, dir: &Path) -> Floor {
        let dir = dir.join("floor");
        std::fs::create_dir_all(&dir).expect("floor dir");
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .expect("sqlite options")
            .filename(dir.join("floor.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = rt.block_on(async {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .expect("open floor db");
            sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, state TEXT, body TEXT)")
                .execute(&pool)
                .await
                .expect("create table");
            pool
        });
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(dir.join("audit.log"))
            .expect("floor log");
        Floor {
            dir,
            pool,
            log,
            n: 0,
        }
    }

    /// A grant-row-sized INSERT committed with synchronous=FULL in WAL mode.
    pub fn commit(&mut self, rt: &tokio::runtime::Runtime) -> f64 {
        self.n += 1;
        let body = "x".repeat(600);
        let t = Instant::now();
        rt.block_on(
            sqlx::query("INSERT INTO t (id, state, body) VALUES (?1, 'active', ?2)")
                .bind(self.n as i64)
                .bind(body)
                .execute(&self.pool),
        )
        .expect("floor commit");
        ms(t.elapsed())
    }

    /// One audit-record-sized O_APPEND write + fdatasync.
    pub fn append(&mut self) -> f64 {
        let line = format!("{{\"seq\":{},\"pad\":\"{}\"}}\n", self.n, "y".repeat(480));
        let t = Instant::now();
        self.log.write_all(line.as_bytes()).expect("append");
        self.log.sync_data().expect("fdatasync");
        ms(t.elapsed())
    }

    /// Replace a file with `content`: write temp, fsync, rename, fsync dir.
    pub fn replace(&mut self, content: &[u8]) -> f64 {
        self.replace_parts(content).0
    }

    /// [`replace`](Self::replace), and the time until the temp file is
    /// written and fsynced.
    pub fn replace_parts(&mut self, content: &[u8]) -> (f64, f64) {
        let t = Instant::now();
        self.stage_and_rename(".authorized_keys.tmp", "authorized_keys", content);
        let stage = ms(t.elapsed());
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
        (ms(t.elapsed()), stage)
    }

    /// A small file written to a temp name, fsynced and renamed in,
    /// without a directory fsync of its own.
    pub fn small_file(&mut self) -> f64 {
        let t = Instant::now();
        self.stage_and_rename(".copy.tmp", "copy.pub", &[b'k'; 100]);
        ms(t.elapsed())
    }

    /// Unlinks the small file of the previous sample, without a
    /// directory fsync of its own.
    pub fn unlink_small_file(&mut self) -> f64 {
        let path = self.dir.join("copy.pub");
        if !path.exists() {
            return 0.0;
        }
        let t = Instant::now();
        std::fs::remove_file(&path).expect("unlink");
        ms(t.elapsed())
    }

    /// Writes `content` to `tmp` (new, 0600), fsyncs it, renames it to
    /// `name`; the directory is not fsynced.
    fn stage_and_rename(&self, tmp: &str, name: &str, content: &[u8]) {
        let tmp = self.dir.join(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .expect("temp file");
        f.write_all(content).expect("write temp");
        f.sync_all().expect("fsync temp");
        drop(f);
        std::fs::rename(&tmp, self.dir.join(name)).expect("rename");
    }

    /// One of each, interleaved with the operation being measured.
    pub fn sample(&mut self, rt: &tokio::runtime::Runtime, keys: &[u8]) -> FloorSample {
        let commit = self.commit(rt);
        let append = self.append();
        let unlink = self.unlink_small_file();
        let copy = self.small_file();
        let (replace, stage) = self.replace_parts(keys);
        FloorSample {
            commit,
            append,
            replace,
            stage,
            copy,
            unlink,
        }
    }
}

/// Medians of each floor component.
pub fn floor_medians(s: &[FloorSample]) -> FloorSample {
    let m = |f: fn(&FloorSample) -> f64| median(&s.iter().map(f).collect::<Vec<_>>());
    FloorSample {
        commit: m(|x| x.commit),
        append: m(|x| x.append),
        replace: m(|x| x.replace),
        stage: m(|x| x.stage),
        copy: m(|x| x.copy),
        unlink: m(|x| x.unlink),
    }
}

/// Voluntary context switches (a thread waiting: for another thread or
/// for the disk) of every thread of `pid` so far; threads that ended are
/// not counted. Involuntary ones are left out: they count the machine's
/// load, not the code.
pub fn context_switches(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn rss_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime of a process, in seconds.
pub fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}
