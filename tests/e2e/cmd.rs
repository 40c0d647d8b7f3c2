//! Running the real tools: argv only (never a shell string), output
//! captured, and a failure message that shows everything needed to debug.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// First existing path among `candidates` (distributions differ between
/// /usr/sbin and /sbin).
pub fn find_tool(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Like [`find_tool`] but the harness cannot go on without it.
pub fn tool(candidates: &[&str]) -> PathBuf {
    find_tool(candidates).unwrap_or_else(|| panic!("none of {candidates:?} exists"))
}

/// Runs `prog args` with `stdin` fed in, and returns its output whatever
/// the exit status.
pub fn run_with_stdin<S: AsRef<OsStr>>(prog: &Path, args: &[S], stdin: &[u8]) -> Output {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", prog.display()));
    if let Some(mut pipe) = child.stdin.take() {
        // A tool that exits without reading its stdin is not our error here.
        let _ = pipe.write_all(stdin);
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", prog.display()))
}

pub fn run<S: AsRef<OsStr>>(prog: &Path, args: &[S]) -> Output {
    run_with_stdin(prog, args, b"")
}

/// Runs and requires exit status 0; returns stdout.
pub fn run_ok<S: AsRef<OsStr>>(prog: &Path, args: &[S]) -> String {
    let out = run(prog, args);
    check(prog, args, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run_ok_stdin<S: AsRef<OsStr>>(prog: &Path, args: &[S], stdin: &[u8]) -> String {
    let out = run_with_stdin(prog, args, stdin);
    check(prog, args, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check<S: AsRef<OsStr>>(prog: &Path, args: &[S], out: &Output) {
    if !out.status.success() {
        let argv: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        panic!(
            "{} {:?} failed ({}):\nstdout: {}\nstderr: {}",
            prog.display(),
            argv,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
