//! supportauth benchmarks: what users feel, against the floor the hardware
//! sets. A plain binary (no bench framework), run with
//! `cargo bench --bench supportauth_bench -- [GROUP...]`, groups `latency`,
//! `scale`, `api`, `audit`, `footprint` (default: all). Sizes come from
//! `SA_BENCH_*` environment variables (see benches/README.md).
//!
//! Every figure is a median (and p99) of repeated runs on a scratch root in
//! a tempdir, and every comparison is a ratio taken in the same run: the
//! machine is shared and noisy, so absolute numbers mean little. Nothing
//! here asserts on time; targets are reported as met / NOT met.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "../../tests/common/mod.rs"]
mod common;

mod bench_api;
mod bench_audit;
mod bench_footprint;
mod bench_latency;
mod bench_scale;
mod util;

use util::Report;

fn main() {
    // cargo bench passes `--bench`; anything else not starting with `-`
    // names a group.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |g: &str| wanted.is_empty() || wanted.iter().any(|w| w == g || w == "all");
    if let Some(why) = common::cannot_run_host_tools() {
        eprintln!("SKIPPED: supportauth benchmarks: {why}");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut report = Report::default();
    util::machine(&mut report);
    let start = std::time::Instant::now();
    if run("latency") {
        bench_latency::run(&rt, &mut report);
    }
    if run("scale") {
        bench_scale::run(&rt, &mut report);
    }
    if run("api") {
        bench_api::run(&rt, &mut report);
    }
    if run("audit") {
        bench_audit::run(&mut report);
    }
    if run("footprint") {
        bench_footprint::run(&rt, &mut report);
    }
    report.print(start.elapsed());
}
