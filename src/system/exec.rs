//! Running host tools: absolute path, argument vector, cleared environment,
//! checked exit status, bounded output. Never a shell.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A tool that failed, with enough detail for an admin to act on.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{tool} is not an absolute path")]
    NotAbsolute { tool: String },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
}

/// What a finished tool printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// The only environment a tool gets: a fixed PATH (some tools exec helpers)
/// and the C locale so their messages are parseable.
pub(crate) const SAFE_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ("LC_ALL", "C"),
    ("LANG", "C"),
];

const MAX_CAPTURE: usize = 4 * 1024 * 1024;

/// Runs `tool args...`, feeding `stdin` (for secrets such as chpasswd input,
/// which must never appear in argv), and fails unless it exits 0.
pub fn run<I, S>(tool: &Path, args: I, stdin: Option<&[u8]>) -> Result<Output, ExecError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = run_unchecked(tool, args, stdin)?;
    if out.0.success() {
        Ok(out.1)
    } else {
        Err(ExecError::Failed {
            tool: tool.display().to_string(),
            status: describe_status(&out.0),
            stderr: summarise(&out.1.stderr, &out.1.stdout),
        })
    }
}

/// Like [`run`] but returns the exit status instead of failing on it, for
/// tools whose non-zero status is an answer (`nft list table` when absent).
pub fn run_unchecked<I, S>(
    tool: &Path,
    args: I,
    stdin: Option<&[u8]>,
) -> Result<(std::process::ExitStatus, Output), ExecError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let name = tool.display().to_string();
    if !tool.is_absolute() {
        return Err(ExecError::NotAbsolute { tool: name });
    }
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .env_clear()
        .envs(SAFE_ENV.iter().copied())
        .current_dir("/")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        tool: name.clone(),
        source,
    })?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes the pipe; its status tells why.
        let _ = pipe.write_all(data);
    }
    let output = child
        .wait_with_output()
        .map_err(|source| ExecError::Spawn { tool: name, source })?;
    Ok((
        output.status,
        Output {
            stdout: lossy_capped(&output.stdout),
            stderr: lossy_capped(&output.stderr),
        },
    ))
}

fn lossy_capped(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_CAPTURE)];
    String::from_utf8_lossy(cut).into_owned()
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// The first lines of what a tool said, for an error message.
fn summarise(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let mut s: String = text.lines().take(5).collect::<Vec<_>>().join(" / ");
    if s.len() > 500 {
        let mut cut = 500;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    if s.is_empty() {
        s.push_str("(no output)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_cleared_environment() {
        std::env::set_var("SUPPORTAUTH_LEAK_CHECK", "secret");
        let out = run(Path::new("/usr/bin/env"), std::iter::empty::<&str>(), None).unwrap();
        assert!(!out.stdout.contains("SUPPORTAUTH_LEAK_CHECK"));
        assert!(out.stdout.contains("LC_ALL=C"));
    }

    #[test]
    fn feeds_stdin() {
        let out = run(
            Path::new("/bin/cat"),
            std::iter::empty::<&str>(),
            Some(b"hi\n"),
        )
        .unwrap();
        assert_eq!(out.stdout, "hi\n");
    }

    #[test]
    fn non_zero_exit_is_an_error_with_stderr() {
        let err = run(Path::new("/bin/ls"), ["/nonexistent-supportauth"], None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status"), "{msg}");
        assert!(msg.contains("nonexistent-supportauth"), "{msg}");
    }

    #[test]
    fn relative_tool_is_refused() {
        assert!(matches!(
            run(Path::new("ls"), ["/"], None),
            Err(ExecError::NotAbsolute { .. })
        ));
    }
}
