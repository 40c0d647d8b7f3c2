//! sudoers: does a group already get full sudo, and our per-ticket drop-ins
//! `<sudoers_dir>/ticket<id>` (reference §4.2). A drop-in is ours only if it
//! is named `ticket<digits>` and starts with our header comment.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};

use crate::config::Config;
use crate::system::exec::{self, ExecError};
use crate::types::{TicketId, Username};

/// First line of every drop-in we write; how we recognise ours.
pub const HEADER: &str = "# supportauth: temporary sudo for cPanel support ticket";

/// Largest sudoers file we read (they are tiny; anything bigger is odd).
const MAX_READ: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SudoersError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a safe sudoers directory ({why}); it must be a real directory owned by root and not writable by group or others")]
    UnsafeDir { path: PathBuf, why: String },
    #[error("visudo rejected the drop-in for {path}, nothing was installed: {source}")]
    Invalid { path: PathBuf, source: ExecError },
    #[error("{path} exists but was not written by supportauth (no “{HEADER}” header); remove it or pick another ticket, supportauth will not overwrite or delete it")]
    NotOurs { path: PathBuf },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SudoersError {
    let path = path.to_path_buf();
    move |source| SudoersError::Io {
        action,
        path,
        source,
    }
}

fn nix_err(action: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SudoersError {
    let path = path.to_path_buf();
    move |e| SudoersError::Io {
        action,
        path,
        source: std::io::Error::from(e),
    }
}

/// What the engine needs to know about, and do to, sudoers.
pub trait HostSudoers: Send + Sync {
    /// True when an uncommented rule gives `%group` full sudo (`ALL=(ALL) ALL`-style).
    fn group_allows_sudo(&self, group: &str) -> Result<bool, SudoersError>;
    /// True when the main sudoers file includes the configured drop-in directory.
    fn includes_dropins(&self) -> Result<bool, SudoersError>;
    /// Writes `ticket<id>` = `<user> ALL=(ALL) ALL`, root:root 0440, checked
    /// with `visudo -cf` before it is renamed into place. Replaces our own
    /// file for the same ticket; refuses to replace anyone else's.
    fn install(&self, ticket: TicketId, user: &Username) -> Result<(), SudoersError>;
    /// Removes our drop-in for `ticket` (and temp files a crash left);
    /// `Ok(false)` if there was none.
    fn remove(&self, ticket: TicketId) -> Result<bool, SudoersError>;
    /// Tickets that have a drop-in of ours.
    fn list_ours(&self) -> Result<Vec<TicketId>, SudoersError>;
}

/// [`HostSudoers`] on real files with the real visudo.
#[derive(Debug, Clone)]
pub struct SudoersFiles {
    /// Main sudoers file (under the root prefix).
    pub main: PathBuf,
    /// Drop-in directory as sudo names it (for matching `@includedir`).
    pub dir_configured: PathBuf,
    /// Drop-in directory under the root prefix.
    pub dir: PathBuf,
    /// Root prefix, to map include paths named in sudoers.
    pub root: PathBuf,
    pub visudo: PathBuf,
}

impl SudoersFiles {
    /// The main file is `sudoers` next to `paths.sudoers_dir` (/etc/sudoers).
    pub fn from_config(cfg: &Config) -> Self {
        let dir_configured = cfg.paths.sudoers_dir.clone();
        let main_configured = dir_configured
            .parent()
            .unwrap_or(Path::new("/etc"))
            .join("sudoers");
        SudoersFiles {
            main: cfg.host_path(&main_configured),
            dir: cfg.host_path(&dir_configured),
            dir_configured,
            root: cfg.root.clone(),
            visudo: cfg.tools.visudo.clone(),
        }
    }

    fn dropin_name(ticket: TicketId) -> String {
        format!("ticket{ticket}")
    }

    pub fn dropin_content(ticket: TicketId, user: &Username) -> String {
        format!("{HEADER} {ticket}; removed when access ends. Do not edit.\n{user} ALL=(ALL) ALL\n")
    }

    /// Every sudoers file sudo would read: the main file, `@include`d files
    /// and the files of `@includedir` directories (names without `.` or a
    /// trailing `~`, as sudo skips those). Missing files are skipped.
    fn all_files(&self) -> Result<Vec<String>, SudoersError> {
        let mut out = Vec::new();
        let mut queue = vec![self.main.clone()];
        let mut seen: Vec<PathBuf> = Vec::new();
        while let Some(p) = queue.pop() {
            if seen.contains(&p) || seen.len() > 128 {
                continue;
            }
            seen.push(p.clone());
            let Some(text) = read_small(&p)? else {
                continue;
            };
            for d in directives(&text) {
                match d {
                    Directive::Include(f) => queue.push(self.under_root(&f, &p)),
                    Directive::IncludeDir(dir) => {
                        for f in dir_files(&self.under_root(&dir, &p))? {
                            queue.push(f);
                        }
                    }
                }
            }
            out.push(text);
        }
        Ok(out)
    }

    /// Maps a path named inside a sudoers file: absolute ones go under the
    /// root prefix, relative ones are relative to that file's directory.
    fn under_root(&self, named: &str, from: &Path) -> PathBuf {
        let p = Path::new(named);
        if p.is_absolute() {
            crate::config::under_root(&self.root, p)
        } else {
            from.parent().unwrap_or(Path::new("/")).join(p)
        }
    }

    /// Opens the drop-in directory and checks it: a directory (not a
    /// symlink), owned by root, not group/other-writable.
    fn open_dir(&self) -> Result<OwnedFd, SudoersError> {
        let fd = open(
            &self.dir,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SudoersError::UnsafeDir {
            path: self.dir.clone(),
            why: format!("cannot open it: {e}"),
        })?;
        let st = fstat(&fd).map_err(nix_err("inspect", &self.dir))?;
        if st.st_uid != 0 {
            return Err(SudoersError::UnsafeDir {
                path: self.dir.clone(),
                why: format!("owned by uid {}", st.st_uid),
            });
        }
        if st.st_mode & 0o022 != 0 {
            return Err(SudoersError::UnsafeDir {
                path: self.dir.clone(),
                why: format!("mode {:o}", st.st_mode & 0o7777),
            });
        }
        Ok(fd)
    }

    /// Reads `name` in the checked directory without following symlinks;
    /// `None` if it does not exist.
    fn read_in(&self, dir: &OwnedFd, name: &str) -> Result<Option<String>, SudoersError> {
        let path = self.dir.join(name);
        let fd = match openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => return Ok(None),
            Err(e) => return Err(nix_err("open", &path)(e)),
        };
        let st = fstat(&fd).map_err(nix_err("inspect", &path))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(SudoersError::NotOurs { path });
        }
        let mut text = String::new();
        File::from(fd)
            .take(MAX_READ)
            .read_to_string(&mut text)
            .map_err(io_err("read", &path))?;
        Ok(Some(text))
    }

    fn is_ours(text: &str) -> bool {
        text.starts_with(HEADER)
    }

    /// Writes the drop-in with explicit content (tests use it to prove that
    /// visudo's verdict is enforced).
    fn install_content(&self, ticket: TicketId, content: &str) -> Result<(), SudoersError> {
        let dir = self.open_dir()?;
        let name = Self::dropin_name(ticket);
        if let Some(existing) = self.read_in(&dir, &name)? {
            if !Self::is_ours(&existing) {
                return Err(SudoersError::NotOurs {
                    path: self.dir.join(&name),
                });
            }
        }
        write_validated_dropin(&dir, &self.dir, &name, content.as_bytes(), &self.visudo)
    }
}

/// The one place that writes a sudoers drop-in: temp file in the same
/// directory (`O_EXCL|O_NOFOLLOW`, name containing `.` so sudo ignores it),
/// write, fchown root:root, fchmod 0440, fsync, `visudo -cf`, rename, fsync
/// the directory. The temp file is removed on any failure. Kept separate so
/// it can be swapped for the shared safe-file writer.
fn write_validated_dropin(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &str,
    content: &[u8],
    visudo: &Path,
) -> Result<(), SudoersError> {
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| SudoersError::Io {
        action: "get random bytes for a temp file in",
        path: dir_path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let tmp = format!("{name}.tmp-{}", hex::encode(rnd));
    let tmp_path = dir_path.join(&tmp);
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(nix_err("create", &tmp_path))?;
    let result = (|| {
        let mut f = File::from(fd);
        f.write_all(content).map_err(io_err("write", &tmp_path))?;
        std::os::unix::fs::fchown(&f, Some(0), Some(0)).map_err(io_err("chown", &tmp_path))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o440))
            .map_err(io_err("chmod", &tmp_path))?;
        f.sync_all().map_err(io_err("fsync", &tmp_path))?;
        drop(f);
        let args: [OsString; 2] = ["-cf".into(), tmp_path.clone().into()];
        exec::run(visudo, args, None).map_err(|source| SudoersError::Invalid {
            path: dir_path.join(name),
            source,
        })?;
        renameat(dir, tmp.as_str(), dir, name).map_err(nix_err("rename into place", &tmp_path))?;
        fsync(dir.as_fd()).map_err(nix_err("fsync", dir_path))
    })();
    if result.is_err() {
        // Best effort: the temp name contains '.', so sudo ignores a leftover.
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

impl HostSudoers for SudoersFiles {
    fn group_allows_sudo(&self, group: &str) -> Result<bool, SudoersError> {
        Ok(self
            .all_files()?
            .iter()
            .any(|text| text_grants_group(text, group)))
    }

    fn includes_dropins(&self) -> Result<bool, SudoersError> {
        let Some(text) = read_small(&self.main)? else {
            return Ok(false);
        };
        let want = self.dir_configured.to_string_lossy();
        let want = want.trim_end_matches('/');
        Ok(directives(&text).iter().any(|d| match d {
            Directive::IncludeDir(d) => d.trim_end_matches('/') == want,
            Directive::Include(_) => false,
        }))
    }

    fn install(&self, ticket: TicketId, user: &Username) -> Result<(), SudoersError> {
        self.install_content(ticket, &Self::dropin_content(ticket, user))
    }

    fn remove(&self, ticket: TicketId) -> Result<bool, SudoersError> {
        let dir = self.open_dir()?;
        let name = Self::dropin_name(ticket);
        // Leftover temp files of ours from an interrupted install.
        let tmp_prefix = format!("{name}.tmp-");
        for entry in std::fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            if let Some(n) = entry.file_name().to_str() {
                if n.starts_with(&tmp_prefix) {
                    let _ = unlinkat(&dir, n, UnlinkatFlags::NoRemoveDir);
                }
            }
        }
        let path = self.dir.join(&name);
        match self.read_in(&dir, &name)? {
            None => return Ok(false),
            Some(text) if !Self::is_ours(&text) => return Err(SudoersError::NotOurs { path }),
            Some(_) => {}
        }
        unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(nix_err("remove", &path))?;
        fsync(dir.as_fd()).map_err(nix_err("fsync", &self.dir))?;
        Ok(true)
    }

    fn list_ours(&self) -> Result<Vec<TicketId>, SudoersError> {
        let dir = self.open_dir()?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let Some(n) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(digits) = n.strip_prefix("ticket") else {
                continue;
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(ticket) = TicketId::parse(digits) else {
                continue;
            };
            // The name must round-trip (no leading zeros) to be one we wrote.
            if Self::dropin_name(ticket) != n {
                continue;
            }
            match self.read_in(&dir, &n) {
                Ok(Some(text)) if Self::is_ours(&text) => out.push(ticket),
                _ => {}
            }
        }
        out.sort();
        Ok(out)
    }
}

fn read_small(path: &Path) -> Result<Option<String>, SudoersError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let mut text = String::new();
    f.take(MAX_READ)
        .read_to_string(&mut text)
        .map_err(io_err("read", path))?;
    Ok(Some(text))
}

/// Files sudo reads from an `@includedir` directory, sorted as sudo does.
fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, SudoersError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(n) = name.to_str() else { continue };
        if n.contains('.') || n.ends_with('~') {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Directive {
    Include(String),
    IncludeDir(String),
}

/// Logical lines: backslash-newline continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if let Some(stripped) = line.strip_suffix('\\') {
            cur.push_str(stripped);
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `@include`/`#include` and `@includedir`/`#includedir` lines.
fn directives(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    for line in logical_lines(text) {
        let line = line.trim();
        let mut words = line.splitn(2, char::is_whitespace);
        let (Some(word), Some(arg)) = (words.next(), words.next()) else {
            continue;
        };
        let arg = arg.trim().trim_matches('"').to_string();
        if arg.is_empty() {
            continue;
        }
        match word {
            "@include" | "#include" => out.push(Directive::Include(arg)),
            "@includedir" | "#includedir" => out.push(Directive::IncludeDir(arg)),
            _ => {}
        }
    }
    out
}

/// True when `text` has an uncommented `%group ALL=(ALL[:ALL]) [TAGS:]ALL`
/// rule. Conservative: anything more complex (aliases, lists, host
/// restrictions, command lists) does not count, so we install our drop-in.
fn text_grants_group(text: &str, group: &str) -> bool {
    let want = format!("%{group}");
    logical_lines(text).iter().any(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return false;
        }
        let mut it = line.splitn(2, char::is_whitespace);
        if it.next() != Some(want.as_str()) {
            return false;
        }
        let rest: String = it
            .next()
            .unwrap_or("")
            .split('#')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        rule_is_full_sudo(&rest)
    })
}

fn rule_is_full_sudo(rest: &str) -> bool {
    let Some(mut r) = rest.strip_prefix("ALL=") else {
        return false;
    };
    if let Some(after) = r.strip_prefix('(') {
        let Some((runas, tail)) = after.split_once(')') else {
            return false;
        };
        if !["ALL", "ALL:ALL", "root", "root:root", "ALL:root"].contains(&runas) {
            return false;
        }
        r = tail;
    }
    const TAGS: &[&str] = &[
        "NOPASSWD:",
        "PASSWD:",
        "SETENV:",
        "NOSETENV:",
        "EXEC:",
        "NOEXEC:",
        "LOG_INPUT:",
        "NOLOG_INPUT:",
        "LOG_OUTPUT:",
        "NOLOG_OUTPUT:",
        "MAIL:",
        "NOMAIL:",
        "FOLLOW:",
        "NOFOLLOW:",
        "INTERCEPT:",
        "NOINTERCEPT:",
    ];
    while let Some(t) = TAGS.iter().find(|t| r.starts_with(*t)) {
        r = &r[t.len()..];
    }
    r == "ALL"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn t(n: &str) -> TicketId {
        TicketId::parse(n).unwrap()
    }

    #[test]
    fn group_rules() {
        let yes = [
            "%sudo\tALL=(ALL:ALL) ALL",
            "%wheel ALL=(ALL) ALL",
            "%wheel  ALL = (ALL)  NOPASSWD: ALL",
            "%wheel ALL=ALL",
            "  %wheel ALL=(ALL) ALL # trailing comment",
            "%wheel ALL=(ALL) \\\n  ALL",
        ];
        for line in yes {
            let g = if line.contains("sudo") {
                "sudo"
            } else {
                "wheel"
            };
            assert!(text_grants_group(line, g), "{line:?}");
        }
        let no = [
            "# %wheel ALL=(ALL) ALL",
            "#%wheel ALL=(ALL) ALL",
            "%wheel ALL=(ALL) /usr/bin/systemctl",
            "%wheel myhost=(ALL) ALL",
            "%wheel ALL=(www-data) ALL",
            "%wheels ALL=(ALL) ALL",
            "%wheel,%adm ALL=(ALL) ALL",
            "wheel ALL=(ALL) ALL",
        ];
        for line in no {
            assert!(!text_grants_group(line, "wheel"), "{line:?}");
        }
    }

    #[test]
    fn include_directives() {
        let d = directives(
            "#includedir /etc/sudoers.d\n@include /etc/sudoers.local\n# includedir /x\n",
        );
        assert_eq!(
            d,
            [
                Directive::IncludeDir("/etc/sudoers.d".into()),
                Directive::Include("/etc/sudoers.local".into())
            ]
        );
    }

    struct Scratch {
        dir: tempfile::TempDir,
        s: SudoersFiles,
    }

    fn scratch(main: &str) -> Option<Scratch> {
        if !nix::unistd::geteuid().is_root() {
            crate::test_skip!("SKIPPED: sudoers drop-in tests need root (fchown root:root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(etc.join("sudoers.d")).unwrap();
        std::fs::set_permissions(
            etc.join("sudoers.d"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        std::fs::write(etc.join("sudoers"), main).unwrap();
        let cfg = Config {
            root: dir.path().to_path_buf(),
            ..Config::default()
        };
        let s = SudoersFiles::from_config(&cfg);
        assert_eq!(s.main, etc.join("sudoers"));
        Some(Scratch { dir, s })
    }

    impl Scratch {
        fn dropins(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join("etc/sudoers.d"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    const DEBIAN_MAIN: &str = "Defaults\tenv_reset\nroot\tALL=(ALL:ALL) ALL\n%sudo\tALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n";

    #[test]
    fn group_and_include_detection_on_files() {
        let Some(x) = scratch(DEBIAN_MAIN) else {
            return;
        };
        assert!(x.s.includes_dropins().unwrap());
        assert!(x.s.group_allows_sudo("sudo").unwrap());
        assert!(!x.s.group_allows_sudo("wheel").unwrap());
        // A rule in an included file counts; files with '.' are skipped as sudo does.
        std::fs::write(
            x.dir.path().join("etc/sudoers.d/10-wheel"),
            "%wheel ALL=(ALL) ALL\n",
        )
        .unwrap();
        std::fs::write(
            x.dir.path().join("etc/sudoers.d/admins.bak"),
            "%admins ALL=(ALL) ALL\n",
        )
        .unwrap();
        assert!(x.s.group_allows_sudo("wheel").unwrap());
        assert!(!x.s.group_allows_sudo("admins").unwrap());

        let Some(y) = scratch("root ALL=(ALL) ALL\n#includedir /etc/sudoers.d\n") else {
            return;
        };
        assert!(
            y.s.includes_dropins().unwrap(),
            "#includedir is a directive"
        );
        let Some(z) = scratch("root ALL=(ALL) ALL\n# includedir /etc/sudoers.d\n") else {
            return;
        };
        assert!(!z.s.includes_dropins().unwrap());
    }

    #[test]
    fn install_list_remove() {
        let Some(x) = scratch(DEBIAN_MAIN) else {
            return;
        };
        let user = Username::parse("cp4242.ssh").unwrap();
        x.s.install(t("4242"), &user).unwrap();
        let path = x.dir.path().join("etc/sudoers.d/ticket4242");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, 0o440);
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert!(text.ends_with("\ncp4242.ssh ALL=(ALL) ALL\n"), "{text}");
        assert_eq!(x.dropins(), ["ticket4242"], "no temp file left");
        // The real visudo accepts the whole configuration with it in place.
        exec::run(
            Path::new("/usr/sbin/visudo"),
            ["-cf".as_ref(), path.as_os_str()],
            None,
        )
        .unwrap();

        // Idempotent re-install; a foreign file and odd names are not listed.
        x.s.install(t("4242"), &user).unwrap();
        x.s.install(t("777"), &Username::parse("cp777.ssh").unwrap())
            .unwrap();
        std::fs::write(
            x.dir.path().join("etc/sudoers.d/ticket555"),
            "alice ALL=(ALL) ALL\n",
        )
        .unwrap();
        std::fs::write(
            x.dir.path().join("etc/sudoers.d/ticket0999"),
            format!("{HEADER} 999\n"),
        )
        .unwrap();
        assert_eq!(x.s.list_ours().unwrap(), [t("777"), t("4242")]);

        // Someone else's ticket555 is neither overwritten nor removed.
        let err =
            x.s.install(t("555"), &Username::parse("cp555.ssh").unwrap())
                .unwrap_err();
        assert!(matches!(err, SudoersError::NotOurs { .. }), "{err}");
        assert!(matches!(
            x.s.remove(t("555")),
            Err(SudoersError::NotOurs { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(x.dir.path().join("etc/sudoers.d/ticket555")).unwrap(),
            "alice ALL=(ALL) ALL\n"
        );

        assert!(x.s.remove(t("4242")).unwrap());
        assert!(!path.exists());
        assert!(!x.s.remove(t("4242")).unwrap());
        assert_eq!(x.s.list_ours().unwrap(), [t("777")]);
    }

    #[test]
    fn visudo_rejection_leaves_nothing() {
        let Some(x) = scratch(DEBIAN_MAIN) else {
            return;
        };
        let err =
            x.s.install_content(t("321"), &format!("{HEADER} 321\ncp321.ssh ALL=(ALL ALL\n"))
                .unwrap_err();
        assert!(matches!(err, SudoersError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("visudo"), "{err}");
        assert!(x.dropins().is_empty(), "{:?}", x.dropins());
        // An existing good file survives a rejected replacement.
        x.s.install(t("321"), &Username::parse("cp321.ssh").unwrap())
            .unwrap();
        let before = std::fs::read(x.dir.path().join("etc/sudoers.d/ticket321")).unwrap();
        assert!(x
            .s
            .install_content(t("321"), &format!("{HEADER} 321\nbad line here\n"))
            .is_err());
        assert_eq!(
            std::fs::read(x.dir.path().join("etc/sudoers.d/ticket321")).unwrap(),
            before
        );
        assert_eq!(x.dropins(), ["ticket321"]);
    }

    #[test]
    fn remove_cleans_leftover_temp_files() {
        let Some(x) = scratch(DEBIAN_MAIN) else {
            return;
        };
        std::fs::write(
            x.dir
                .path()
                .join("etc/sudoers.d/ticket880.tmp-0011223344556677"),
            "x",
        )
        .unwrap();
        assert!(!x.s.remove(t("8800")).unwrap());
        assert_eq!(x.dropins().len(), 1, "another ticket's temp file stays");
        assert!(!x.s.remove(t("880")).unwrap());
        assert!(x.dropins().is_empty());
    }

    #[test]
    fn unsafe_directory_is_refused() {
        let Some(x) = scratch(DEBIAN_MAIN) else {
            return;
        };
        let d = x.dir.path().join("etc/sudoers.d");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err =
            x.s.install(t("123"), &Username::parse("cp123.ssh").unwrap())
                .unwrap_err();
        assert!(matches!(err, SudoersError::UnsafeDir { .. }), "{err}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        // A symlinked drop-in directory is refused too.
        std::fs::rename(&d, x.dir.path().join("etc/real.d")).unwrap();
        std::os::unix::fs::symlink(x.dir.path().join("etc/real.d"), &d).unwrap();
        let err =
            x.s.install(t("123"), &Username::parse("cp123.ssh").unwrap())
                .unwrap_err();
        assert!(matches!(err, SudoersError::UnsafeDir { .. }), "{err}");
    }
}
