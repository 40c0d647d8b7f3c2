//! Man pages and shell completions, generated from the CLI definition so
//! they never drift from it; the packages ship what this writes.
//!
//! `supportauth generate-docs --out DIR` writes `DIR/man/*.8` (one page
//! per visible command; section 8, the daemon lives in /usr/sbin) and
//! `DIR/completions/{supportauth.bash,_supportauth,supportauth.fish}`.
// Writes generated files into the build directory it is given, never a
// host file (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Section of every page: system administration commands and daemons.
const SECTION: &str = "8";

pub fn run(out: &Path) -> ExitCode {
    match write_all(out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("supportauth: generate-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every page and completion file; returns their paths.
pub fn write_all(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&comp_dir)?;
    let mut written = Vec::new();
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    man_pages(&cmd, &man_dir, &mut written)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = super::Cli::command();
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            "supportauth",
            &comp_dir,
        )?);
    }
    Ok(written)
}

fn man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    let page = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .manual("supportauth");
    written.push(page.generate_to(dir)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_and_completions_cover_the_commands() {
        let dir = tempfile::tempdir().unwrap();
        let files = super::write_all(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "supportauth.8",
            "supportauth-grant.8",
            "supportauth-trial.8",
            "supportauth-token-create.8",
            "supportauth.bash",
            "_supportauth",
            "supportauth.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        // Hidden helpers for the package scripts get no page.
        assert!(!names.iter().any(|n| n.contains("prepare-removal")));
        let main = std::fs::read_to_string(dir.path().join("man/supportauth.8")).unwrap();
        assert!(main.contains("SUPPORTAUTH_CONFIG"), "{main}");
        let bash =
            std::fs::read_to_string(dir.path().join("completions/supportauth.bash")).unwrap();
        assert!(bash.contains("revoke-all"));
    }
}
