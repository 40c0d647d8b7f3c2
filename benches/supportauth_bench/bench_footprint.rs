//! Group `footprint`: time from start to the first answer, resident memory
//! after start and across many grant/revoke cycles (root path; `sshd -T`
//! replaced by a stub printing the real answer, so the cycles measure the
//! daemon and not sshd), and CPU while idle.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::common;
use crate::util::{self, median, ms, Report};

/// Spawns the daemon again and times until it answers a request.
fn timed_restart(d: &mut common::Daemon) -> f64 {
    d.stop();
    let start = Instant::now();
    let child = d.spawn();
    let probe = common::get("/ready-probe", None);
    loop {
        if let Ok(mut s) = UnixStream::connect(&d.socket) {
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            let r = common::exchange(&mut s, &probe);
            if r.status == 404 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = ms(start.elapsed());
    d.adopt(child);
    took
}

pub fn run(_rt: &tokio::runtime::Runtime, report: &mut Report) {
    let cycles = util::env_usize("SA_BENCH_CYCLES", 10_000);
    let idle = util::env_usize("SA_BENCH_IDLE_SECS", 10) as u64;
    let restarts = util::env_usize("SA_BENCH_RESTARTS", 5);
    report.section(&format!(
        "5. footprint ({cycles} grant/revoke cycles, {idle} s idle, {restarts} restarts)"
    ));
    let mut d = util::root_daemon("", true, |_| {});
    let key = common::support_key(d.dir.path());
    util::info_logging(&mut d);

    let mut ready = Vec::new();
    for _ in 0..restarts {
        ready.push(timed_restart(&mut d));
    }
    report.row(
        "start to first answer (empty state; includes start-up reconciliation)",
        format!("median {:.1} ms", median(&ready)),
        format!(
            "min {:.1} ms, max {:.1} ms",
            ready.iter().cloned().fold(f64::INFINITY, f64::min),
            ready.iter().cloned().fold(0.0, f64::max)
        ),
        "",
    );

    let pid = d.pid().as_raw();
    std::thread::sleep(Duration::from_millis(500));
    let (rss_start, _) = util::rss_kib(pid);

    let c0 = util::cpu_secs(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle));
    let idle_cpu = util::cpu_secs(pid) - c0;
    let idle_wall = t0.elapsed().as_secs_f64();
    report.row(
        "CPU while idle",
        format!("{:.3} s CPU in {idle_wall:.1} s", idle_cpu),
        format!("{:.2}% of one core", idle_cpu / idle_wall * 100.0),
        &format!(
            "no busy polling (< 1%): {}",
            util::verdict(idle_cpu / idle_wall < 0.01)
        ),
    );

    let mut marks = Vec::new();
    let warm = (cycles / 10).max(1);
    let t = Instant::now();
    for i in 0..cycles as u64 {
        util::grant(&d, &key, 100_000 + i);
        util::revoke(&d, 100_000 + i);
        if ((i + 1) as usize).is_multiple_of(warm) {
            marks.push(util::rss_kib(pid).0);
        }
    }
    let per_cycle = ms(t.elapsed()) / cycles.max(1) as f64;
    let (rss_end, hwm) = util::rss_kib(pid);
    let after_warm = marks.first().copied().unwrap_or(rss_end);
    let growth = rss_end as f64 / after_warm.max(1) as f64 - 1.0;
    report.row(
        "resident memory (VmRSS)",
        format!(
            "{:.1} MiB after start, {:.1} MiB after {warm} cycles, {:.1} MiB after {cycles} (peak {:.1} MiB)",
            rss_start as f64 / 1024.0,
            after_warm as f64 / 1024.0,
            rss_end as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        format!(
            "{:+.1}% from cycle {warm} to {cycles}; every {warm}: {} KiB; {per_cycle:.1} ms per cycle",
            growth * 100.0,
            marks
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &format!("no growth (< 10%): {}", util::verdict(growth < 0.10)),
    );
}
