//! The outer half of every e2e test: it runs on the host, decides whether
//! the machine can run the sandbox at all (else one loud SKIPPED line),
//! snapshots the host, re-executes this very test binary inside fresh
//! mount + network + pid namespaces (`unshare`) so that only this one test
//! runs there, relays its output, and checks the host afterwards.
//!
//! The pid namespace makes the inner test process pid 1: when it exits,
//! the kernel kills everything it started (sshd, the daemon, sessions), and
//! the mounts die with the mount namespace. Nothing can outlive a scenario.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::cmd;
use super::host_guard::HostGuard;
use super::sandbox::{self, Sandbox};

/// Set (to the test's name) in the re-executed inner run.
pub const INNER_ENV: &str = "SUPPORTAUTH_E2E_INNER";
/// "1": a machine that cannot run the sandbox fails instead of skipping.
pub const REQUIRE_ENV: &str = "SUPPORTAUTH_E2E_REQUIRE";
/// The project-wide switch (.ci/run sets it): no test may skip.
pub const MUST_RUN_ENV: &str = "SUPPORTAUTH_TESTS_MUST_RUN";
/// Upper bound for one scenario, in seconds (default 300).
pub const TIMEOUT_ENV: &str = "SUPPORTAUTH_E2E_TIMEOUT_SECS";

/// Tools the sandbox itself needs (the scenarios need the daemon on top).
const NEEDED_TOOLS: &[&[&str]] = &[
    &["/usr/bin/unshare"],
    &["/usr/bin/mount", "/bin/mount"],
    &["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"],
    &["/usr/sbin/sshd"],
    &["/usr/bin/ssh"],
    &["/usr/bin/ssh-keygen"],
    &["/usr/sbin/useradd"],
    &["/usr/sbin/userdel"],
    &["/usr/sbin/chpasswd"],
    &["/usr/sbin/visudo"],
    &["/usr/bin/sudo"],
];

/// The namespace flags of every sandbox.
const UNSHARE_ARGS: &[&str] = &[
    "--mount",
    "--net",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
    "--propagation",
    "private",
];

/// Entry point of every e2e `#[test]`: `name` must be the test function's
/// exact name (it is how the inner run selects it).
pub fn run(name: &str, body: fn(&Sandbox)) {
    run_needing(name, body, None)
}

/// Like [`run`], for a scenario that needs more than the sandbox: `needs`
/// says why it cannot run here (a skip, or a failure under
/// `SUPPORTAUTH_TESTS_MUST_RUN`).
pub fn run_needing(name: &str, body: fn(&Sandbox), needs: Option<fn() -> Option<String>>) {
    if let Ok(inner) = std::env::var(INNER_ENV) {
        assert_eq!(inner, name, "inner run for {inner} reached test {name}");
        if std::process::id() == 1 {
            // First exec inside the namespaces: be their init.
            sandbox::init(name);
        } else {
            let sb = Sandbox::enter();
            body(&sb);
        }
        return;
    }
    if let Some(why) = skip_reason() {
        skip(name, why);
        return;
    }
    if let Some(why) = needs.and_then(|f| f()) {
        skip(name, &why);
        return;
    }
    let guard = HostGuard::capture();
    let outcome = run_inner(name);
    // The host is checked even when the scenario failed: a failing
    // scenario must not hide a host change.
    guard.assert_unchanged(name);
    outcome.assert_passed(name);
}

/// Like [`run`], for a body that must fail: proves that a failure inside
/// the sandbox reaches the outer test (the harness can fail).
pub fn run_expecting_failure(name: &str, body: fn(&Sandbox), marker: &str) {
    if std::env::var(INNER_ENV).is_ok() {
        run(name, body);
        return;
    }
    if let Some(why) = skip_reason() {
        skip(name, why);
        return;
    }
    let guard = HostGuard::capture();
    let outcome = run_inner(name);
    guard.assert_unchanged(name);
    assert!(
        !outcome.success,
        "a failing sandbox body was reported as passing"
    );
    assert!(
        outcome.stderr.contains(marker),
        "the sandbox's failure message did not reach the outer test:\n{}",
        outcome.stderr
    );
}

/// Prints the one skip line where CI logs show it (straight to fd 2, past
/// libtest's capture), or fails when the environment requires the suite.
fn skip(name: &str, why: &str) {
    let line = format!("SKIPPED e2e: {name}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") || std::env::var_os(MUST_RUN_ENV).is_some()
    {
        panic!("{REQUIRE_ENV}=1 or {MUST_RUN_ENV} set, but the e2e sandbox cannot run here: {why}");
    }
}

/// Why this machine cannot run the sandbox, probed once per process.
fn skip_reason() -> Option<&'static str> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let euid = nix::unistd::geteuid();
            if !euid.is_root() {
                return Some(format!("not running as root (euid {euid})"));
            }
            for candidates in NEEDED_TOOLS {
                if cmd::find_tool(candidates).is_none() {
                    return Some(format!("missing tool {}", candidates.join(" or ")));
                }
            }
            let mut args: Vec<&str> = UNSHARE_ARGS.to_vec();
            args.extend(["--", "/bin/true"]);
            let out = cmd::run(&PathBuf::from("/usr/bin/unshare"), &args);
            if !out.status.success() {
                return Some(format!(
                    "cannot create mount+net+pid namespaces: unshare: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            None
        })
        .as_deref()
}

struct Outcome {
    status: String,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn assert_passed(&self, name: &str) {
        // Relayed through libtest's capture: shown for a failing test or
        // with --nocapture.
        eprintln!("----- sandbox stdout ({name}) -----\n{}", self.stdout);
        eprintln!("----- sandbox stderr ({name}) -----\n{}", self.stderr);
        assert!(
            self.success,
            "e2e scenario {name} failed in its sandbox ({})",
            self.status
        );
        // A filter that matched nothing also exits 0: insist the scenario
        // really ran.
        assert!(
            self.stdout.contains("test result: ok. 1 passed"),
            "the sandbox did not run exactly the test {name}"
        );
    }
}

fn run_inner(name: &str) -> Outcome {
    let scratch = tempfile::Builder::new()
        .prefix("supportauth-e2e-")
        .tempdir()
        .expect("create the scratch directory");
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut args: Vec<std::ffi::OsString> = UNSHARE_ARGS.iter().map(Into::into).collect();
    args.push("--".into());
    args.push(exe.into_os_string());
    args.extend(inner_test_args(name).into_iter().map(Into::into));
    let mut command = Command::new("/usr/bin/unshare");
    if let Some(deb) = built_deb() {
        command.env(sandbox::DEB_ENV, deb);
    }
    let mut child = command
        .args(&args)
        .env(INNER_ENV, name)
        .env(sandbox::SCRATCH_ENV, scratch.path())
        .env(sandbox::HOST_NS_ENV, sandbox::namespace_ids())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let out_reader = drain(child.stdout.take());
    let err_reader = drain(child.stderr.take());
    let limit = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64);
    let deadline = Instant::now() + Duration::from_secs(limit);
    let (status, success) = loop {
        if let Some(st) = child.try_wait().expect("wait for unshare") {
            break (format!("{st}"), st.success());
        }
        if Instant::now() > deadline {
            // --kill-child + the pid namespace take everything inside down.
            let _ = child.kill();
            let _ = child.wait();
            break (
                format!("killed after the {limit}s limit ({TIMEOUT_ENV})"),
                false,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The sandbox's tmpfs over the scratch dir lived only in its mount
    // namespace: the host's dir must still be empty.
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path())
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "sandbox files reached the host scratch dir: {leftovers:?}"
    );
    Outcome {
        status,
        success,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// The newest `target/debian/supportauth_*.deb` (`bash packaging/build`).
pub fn built_deb() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("supportauth_") && n.ends_with(".deb"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// libtest arguments that select exactly the test `name` (even when it
/// is `#[ignore]`d: the outer run was asked for it).
pub fn inner_test_args(name: &str) -> Vec<String> {
    [
        name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}
