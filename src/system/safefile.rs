//! The one primitive every file we edit goes through.
//!
//! Directories are opened component by component with
//! `openat(O_DIRECTORY|O_NOFOLLOW)` and checked with `fstat` on the open fd,
//! so a symlink or a directory someone else can write is refused before we
//! look inside it, and a later rename of a path component cannot redirect
//! us. Files are read with `O_NOFOLLOW|O_NONBLOCK` (a FIFO cannot hang us)
//! and written as a temp file in the same directory: write, fsync,
//! fchown/fchmod on the fd, validate, rename over the target, fsync the
//! directory. A failed step removes the temp file and leaves the target as
//! it was.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fsync, unlinkat, Gid, Uid, UnlinkatFlags};

/// Why a file operation was refused or failed. Messages name the path and
/// say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SafeFileError {
    #[error("{path} is a symbolic link; refusing to follow it (replace it with a real directory or file)")]
    Symlink { path: String },
    #[error("{path} is not a directory")]
    NotDirectory { path: String },
    #[error("{path} is not a regular file (FIFOs, devices and sockets are refused)")]
    NotRegular { path: String },
    #[error("{path} has {links} hard links; refusing to edit a file that is linked elsewhere")]
    HardLinked { path: String, links: u64 },
    #[error("{path} is owned by uid {uid}; expected {expected} (fix with chown)")]
    WrongOwner {
        path: String,
        uid: u32,
        expected: String,
    },
    #[error("{path} is writable by group or others (mode {mode:04o}); fix with chmod go-w")]
    Writable { path: String, mode: u32 },
    #[error("{path} is {size} bytes, more than the {max} bytes supportauth will handle")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("“{name}” is not a single file name")]
    BadName { name: String },
    #[error("{path} was refused by its validator: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{path}: {op} failed: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SafeFileError {
    /// True when the error only says that something does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SafeFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

type Result<T> = std::result::Result<T, SafeFileError>;

/// Checks a staged file by path (e.g. runs `visudo -cf`); `Err` carries the
/// reason shown to the admin.
pub type Validator<'a> = dyn Fn(&Path) -> std::result::Result<(), String> + 'a;

fn io_err(path: &Path, op: &'static str, e: impl Into<std::io::Error>) -> SafeFileError {
    SafeFileError::Io {
        path: path.display().to_string(),
        op,
        source: e.into(),
    }
}

/// Who may own a directory we walk through or into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirPolicy {
    /// The expected owner.
    pub owner: u32,
    /// Whether root may own it too (true for system paths like `/home`).
    pub allow_root: bool,
}

impl DirPolicy {
    /// Owned by root only (sudoers.d, /etc).
    pub fn root() -> Self {
        DirPolicy {
            owner: 0,
            allow_root: true,
        }
    }
    /// Owned by `uid` or by root (a home directory and the path to it).
    pub fn root_or(uid: u32) -> Self {
        DirPolicy {
            owner: uid,
            allow_root: true,
        }
    }
    /// Owned by exactly `uid` (a user's `~/.ssh`).
    pub fn exactly(uid: u32) -> Self {
        DirPolicy {
            owner: uid,
            allow_root: uid == 0,
        }
    }
    fn allows(&self, uid: u32) -> bool {
        uid == self.owner || (self.allow_root && uid == 0)
    }
    fn describe(&self) -> String {
        if self.allow_root && self.owner != 0 {
            format!("root or uid {}", self.owner)
        } else {
            format!("uid {}", self.owner)
        }
    }
}

/// A file read through [`CheckedDir::read_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    pub bytes: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only.
    pub mode: u32,
}

/// An open, checked directory. Every operation is relative to its fd.
#[derive(Debug)]
pub struct CheckedDir {
    fd: OwnedFd,
    /// For messages only; never used to open anything.
    path: PathBuf,
}

/// Held while editing; the flock is released on drop.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<OwnedFd>,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(SafeFileError::BadName {
            name: crate::types::printable(name),
        });
    }
    Ok(())
}

fn is_type(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Creates `path` (and missing parents) as a directory private to this
/// process's user (0700) if it does not exist, then refuses it unless it
/// is a real directory (not a symlink), owned by us and writable by no one
/// else. For the daemon's own directories (state, audit log).
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    ensure_own_dir(path, 0o700)
}

/// Like [`ensure_private_dir`], but a directory it creates gets `mode`
/// (0755 for the control socket's, which local clients must traverse).
pub fn ensure_own_dir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(path)
                .map_err(|e| io_err(path, "create directory", e))?;
            // The mode of the last component is subject to the umask.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_err(path, "chmod", e))?;
        }
        Err(e) => return Err(io_err(path, "stat", e)),
    }
    let fd = nix::fcntl::open(path, DIR_FLAGS, Mode::empty())
        .map_err(|e| CheckedDir::classify_open_error(e, path))?;
    let st = fstat(&fd).map_err(|e| io_err(path, "fstat", e))?;
    check_dir_stat(
        &st,
        path,
        DirPolicy::exactly(nix::unistd::geteuid().as_raw()),
    )
}

/// Sets `path`'s permission bits through an O_NOFOLLOW descriptor (a
/// symlink is refused, never followed). For files another library created
/// with the umask's mode (SQLite's `-wal` and `-shm`).
pub fn restrict_mode(path: &Path, mode: u32) -> Result<()> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CheckedDir::classify_open_error(e, path))?;
    fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| io_err(path, "fchmod", e))
}

/// How deep [`CheckedDir::remove_tree`] goes.
pub const MAX_TREE_DEPTH: usize = 64;

fn remove_tree_at(
    parent: &OwnedFd,
    parent_path: &Path,
    name: &std::ffi::CStr,
    owner: u32,
    dev: u64,
    depth: usize,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = parent_path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
    let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(&path, "stat", e))?;
    if st.st_uid != owner && st.st_uid != 0 {
        return Err(SafeFileError::WrongOwner {
            path: path.display().to_string(),
            uid: st.st_uid,
            expected: format!("uid {owner} or root"),
        });
    }
    if !is_type(&st, SFlag::S_IFDIR) {
        return unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_err(&path, "unlink", e));
    }
    if st.st_dev != dev || depth >= MAX_TREE_DEPTH {
        return Err(io_err(
            &path,
            "remove (another file system, or too deep)",
            Errno::EXDEV,
        ));
    }
    let fd =
        openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|e| io_err(&path, "open", e))?;
    let mut children = Vec::new();
    let mut dir = nix::dir::Dir::openat(&fd, ".", DIR_FLAGS, Mode::empty())
        .map_err(|e| io_err(&path, "opendir", e))?;
    for entry in dir.iter() {
        let entry = entry.map_err(|e| io_err(&path, "readdir", e))?;
        let n = entry.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            children.push(n.to_owned());
        }
    }
    drop(dir);
    for child in children {
        remove_tree_at(&fd, &path, &child, owner, dev, depth + 1)?;
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(|e| io_err(&path, "rmdir", e))
}

fn check_dir_stat(st: &FileStat, path: &Path, policy: DirPolicy) -> Result<()> {
    let shown = path.display().to_string();
    if !is_type(st, SFlag::S_IFDIR) {
        return Err(SafeFileError::NotDirectory { path: shown });
    }
    if !policy.allows(st.st_uid) {
        return Err(SafeFileError::WrongOwner {
            path: shown,
            uid: st.st_uid,
            expected: policy.describe(),
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SafeFileError::Writable { path: shown, mode });
    }
    Ok(())
}

impl CheckedDir {
    /// Opens `path` walking from `/`, checking every component.
    pub fn open(path: &Path, policy: DirPolicy) -> Result<CheckedDir> {
        Self::open_under(Path::new("/"), path, policy)
    }

    /// Opens `root` (trusted: the configured root prefix, `/` in production)
    /// and then walks `path`, which must lie under `root`, component by
    /// component. Every directory including `root` must satisfy `policy`.
    pub fn open_under(root: &Path, path: &Path, policy: DirPolicy) -> Result<CheckedDir> {
        let rel = path
            .strip_prefix(root)
            .map_err(|_| SafeFileError::BadName {
                name: format!("{} is not under {}", path.display(), root.display()),
            })?;
        let fd = nix::fcntl::open(root, DIR_FLAGS, Mode::empty())
            .map_err(|e| Self::classify_open_error(e, root))?;
        let mut dir = CheckedDir {
            fd,
            path: root.to_path_buf(),
        };
        dir.verify(policy)?;
        for comp in rel.components() {
            match comp {
                Component::Normal(name) => {
                    let name = name.to_str().ok_or_else(|| SafeFileError::BadName {
                        name: name.to_string_lossy().into_owned(),
                    })?;
                    dir = dir.open_child(name, policy)?.ok_or_else(|| {
                        io_err(&dir.path.join(name), "open directory", Errno::ENOENT)
                    })?;
                }
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(SafeFileError::BadName {
                        name: path.display().to_string(),
                    })
                }
            }
        }
        Ok(dir)
    }

    fn classify_open_error(e: Errno, path: &Path) -> SafeFileError {
        match e {
            Errno::ELOOP => SafeFileError::Symlink {
                path: path.display().to_string(),
            },
            Errno::ENOTDIR => SafeFileError::NotDirectory {
                path: path.display().to_string(),
            },
            e => io_err(path, "open", e),
        }
    }

    /// Checks this (already opened) directory against a stricter policy,
    /// e.g. a home directory reached through root-owned parents that must
    /// itself belong to its user.
    pub fn require(&self, policy: DirPolicy) -> Result<()> {
        self.verify(policy)
    }

    fn verify(&self, policy: DirPolicy) -> Result<()> {
        let st = fstat(&self.fd).map_err(|e| io_err(&self.path, "fstat", e))?;
        check_dir_stat(&st, &self.path, policy)
    }

    /// The path this directory was opened as (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells a symlink from a non-directory after an open failed.
    fn classify_child(&self, name: &str, e: Errno) -> SafeFileError {
        let path = self.path.join(name);
        if matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
            if let Ok(st) = fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                if is_type(&st, SFlag::S_IFLNK) {
                    return SafeFileError::Symlink {
                        path: path.display().to_string(),
                    };
                }
            }
        }
        Self::classify_open_error(e, &path)
    }

    /// Opens a child directory; `None` when it does not exist.
    pub fn open_child(&self, name: &str, policy: DirPolicy) -> Result<Option<CheckedDir>> {
        check_name(name)?;
        let fd = match openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.classify_child(name, e)),
        };
        let dir = CheckedDir {
            fd,
            path: self.path.join(name),
        };
        dir.verify(policy)?;
        Ok(Some(dir))
    }

    /// Opens a child directory, creating it (owned by `uid:gid`, `mode`)
    /// when missing. An existing one is checked against `policy`, not changed.
    pub fn create_child_dir(
        &self,
        name: &str,
        uid: u32,
        gid: u32,
        mode: u32,
        policy: DirPolicy,
    ) -> Result<CheckedDir> {
        if let Some(dir) = self.open_child(name, policy)? {
            return Ok(dir);
        }
        let path = self.path.join(name);
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            // Someone created it in between: judge what is there.
            Err(Errno::EEXIST) => {
                return self
                    .open_child(name, policy)?
                    .ok_or_else(|| io_err(&path, "open directory", Errno::ENOENT))
            }
            Err(e) => return Err(io_err(&path, "mkdir", e)),
        }
        let fd = openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| self.classify_child(name, e))?;
        let st = fstat(&fd).map_err(|e| io_err(&path, "fstat", e))?;
        let me = nix::unistd::geteuid().as_raw();
        if !is_type(&st, SFlag::S_IFDIR) || st.st_uid != me {
            // Not the directory we just made: never chown someone else's.
            return Err(SafeFileError::WrongOwner {
                path: path.display().to_string(),
                uid: st.st_uid,
                expected: format!("a directory we just created (uid {me})"),
            });
        }
        fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| io_err(&path, "fchown", e))?;
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| io_err(&path, "fchmod", e))?;
        fsync(&self.fd).map_err(|e| io_err(&self.path, "fsync", e))?;
        let dir = CheckedDir { fd, path };
        dir.verify(policy)?;
        Ok(dir)
    }

    /// Reads a regular file owned by `owner` (or root), at most `max_bytes`.
    /// `None` when it does not exist. Symlinks, FIFOs, devices and files
    /// with several hard links are refused.
    pub fn read_file(&self, name: &str, owner: u32, max_bytes: u64) -> Result<Option<FileData>> {
        check_name(name)?;
        let path = self.path.join(name);
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.classify_child(name, e)),
        };
        let st = fstat(&fd).map_err(|e| io_err(&path, "fstat", e))?;
        let shown = path.display().to_string();
        check_regular(&st, &shown)?;
        if st.st_uid != owner && st.st_uid != 0 {
            return Err(SafeFileError::WrongOwner {
                path: shown,
                uid: st.st_uid,
                expected: format!("uid {owner} or root"),
            });
        }
        let size = st.st_size.max(0) as u64;
        if size > max_bytes {
            return Err(SafeFileError::TooLarge {
                path: shown,
                size,
                max: max_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        File::from(fd)
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| io_err(&path, "read", e))?;
        if bytes.len() as u64 > max_bytes {
            return Err(SafeFileError::TooLarge {
                path: shown,
                size: bytes.len() as u64,
                max: max_bytes,
            });
        }
        Ok(Some(FileData {
            bytes,
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
        }))
    }

    /// Writes `bytes` to a temp file next to `name` and validates it, but
    /// does not replace `name` yet: [`Staged::commit`] does. Dropping the
    /// [`Staged`] removes the temp file. Lets a caller re-check the target
    /// between the write and the rename.
    pub fn stage_file(
        &self,
        name: &str,
        bytes: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
        validate: Option<&Validator<'_>>,
    ) -> Result<Staged<'_>> {
        let mut staged = self.stage_unsynced(name, bytes, uid, gid, mode)?;
        staged.sync()?;
        if let Some(validate) = validate {
            validate(&staged.fd_path()).map_err(|reason| SafeFileError::Invalid {
                path: self.path.join(name).display().to_string(),
                reason,
            })?;
        }
        Ok(staged)
    }

    /// Like [`CheckedDir::stage_file`] without validation, and with the
    /// temp file's fsync left for [`Staged::sync`] (or the rename, which
    /// does it unless [`Staged::without_fsync`] said not to).
    pub fn stage_unsynced(
        &self,
        name: &str,
        bytes: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<Staged<'_>> {
        check_name(name)?;
        let target = self.path.join(name);
        // Refuse to replace something that is not a plain file (a symlink is
        // replaced, not followed, by rename, but it means someone is playing).
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_type(&st, SFlag::S_IFLNK) => {
                return Err(SafeFileError::Symlink {
                    path: target.display().to_string(),
                })
            }
            Ok(st) if !is_type(&st, SFlag::S_IFREG) => {
                return Err(SafeFileError::NotRegular {
                    path: target.display().to_string(),
                })
            }
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err(&target, "stat", e)),
        }
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| {
            io_err(
                &target,
                "random temp name",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let tmp_name = format!(".{name}.supportauth-{}", hex::encode(suffix));
        let tmp_path = self.path.join(&tmp_name);
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = openat(
            &self.fd,
            tmp_name.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_err(&tmp_path, "create temp file", e))?;
        // From here on the guard removes the temp file on any early return.
        let mut staged = Staged {
            dir: self,
            tmp_name,
            name: name.to_string(),
            done: false,
            file: None,
        };
        let mut file = File::from(fd);
        file.write_all(bytes)
            .map_err(|e| io_err(&tmp_path, "write", e))?;
        fchown(
            file.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| io_err(&tmp_path, "fchown", e))?;
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| io_err(&tmp_path, "fchmod", e))?;
        staged.file = Some(file);
        Ok(staged)
    }

    /// Atomically replaces `name` with `bytes` (see [`CheckedDir::stage_file`]).
    pub fn replace_file(
        &self,
        name: &str,
        bytes: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
        validate: Option<&Validator<'_>>,
    ) -> Result<()> {
        self.stage_file(name, bytes, uid, gid, mode, validate)?
            .commit()
    }

    /// Removes `name` (a symlink is removed, never followed). Returns false
    /// when it did not exist.
    pub fn remove_file(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let path = self.path.join(name);
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(io_err(&path, "unlink", e)),
        }
        fsync(&self.fd).map_err(|e| io_err(&self.path, "fsync", e))?;
        Ok(true)
    }

    /// Like [`remove_file`](Self::remove_file) without the directory
    /// fsync: the caller makes the removal durable with a later
    /// [`Staged::commit`] or [`sync`](Self::sync) in this directory (one
    /// fsync for several changes).
    pub fn remove_file_unsynced(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let path = self.path.join(name);
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(io_err(&path, "unlink", e)),
        }
    }

    /// Removes the directory `name` if it is empty (never following a
    /// symlink), durably; false when it is missing or not empty.
    pub fn remove_empty_dir(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let path = self.path.join(name);
        match unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir) {
            Ok(()) => {}
            Err(Errno::ENOENT | Errno::ENOTEMPTY | Errno::EEXIST) => return Ok(false),
            Err(e) => return Err(io_err(&path, "rmdir", e)),
        }
        self.sync()?;
        Ok(true)
    }

    /// The owner of the entry `name` (not followed); None when absent.
    pub fn owner_of(&self, name: &str) -> Result<Option<u32>> {
        check_name(name)?;
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st.st_uid)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io_err(&self.path.join(name), "stat", e)),
        }
    }

    /// Removes the directory `name` with everything in it: a home whose
    /// account is gone, which `userdel -r` left behind (a failing disk).
    /// Nothing is followed (a symlink is removed as a link), and the walk
    /// stops at anything owned by someone other than `owner` or root, at
    /// another file system, and below [`MAX_TREE_DEPTH`]. The directory is
    /// fsynced. Returns false when `name` does not exist.
    pub fn remove_tree(&self, name: &str, owner: u32) -> Result<bool> {
        check_name(name)?;
        let here = fstat(&self.fd).map_err(|e| io_err(&self.path, "fstat", e))?;
        let c_name = std::ffi::CString::new(name).map_err(|_| SafeFileError::BadName {
            name: name.to_string(),
        })?;
        match remove_tree_at(&self.fd, &self.path, &c_name, owner, here.st_dev, 0) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        }
        self.sync()?;
        Ok(true)
    }

    /// Makes the directory's entries (renames, removals) durable.
    pub fn sync(&self) -> Result<()> {
        fsync(&self.fd).map_err(|e| io_err(&self.path, "fsync", e))
    }

    /// Names of the entries in this directory (non-UTF-8 names skipped).
    pub fn entries(&self) -> Result<Vec<String>> {
        let mut dir = nix::dir::Dir::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| io_err(&self.path, "opendir", e))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io_err(&self.path, "readdir", e))?;
            if let Ok(name) = entry.file_name().to_str() {
                if name != "." && name != ".." {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    /// Exclusive, blocking flock on the directory; released when the guard
    /// drops. Uses its own open file description so two `CheckedDir`s for
    /// the same directory exclude each other, even within one process.
    pub fn lock(&self) -> Result<DirLock> {
        let fd = openat(&self.fd, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| io_err(&self.path, "open for lock", e))?;
        let lock = Flock::lock(fd, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(&self.path, "flock", e))?;
        Ok(DirLock { _lock: lock })
    }

    /// Deletes the temp files that [`stage_file`](Self::stage_file) makes
    /// (`.<name>.supportauth-<hex>`) and a process killed before its rename
    /// left behind; they may hold what the target was about to hold (a
    /// support key). Returns how many; the removals are made durable.
    pub fn sweep_staged(&self) -> Result<usize> {
        let mut removed = 0;
        for name in self.entries()? {
            if is_staged_name(&name) && self.remove_file_unsynced(&name)? {
                removed += 1;
            }
        }
        if removed > 0 {
            self.sync()?;
        }
        Ok(removed)
    }
}

/// Whether `name` is one of [`CheckedDir::stage_unsynced`]'s temp names.
fn is_staged_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((target, suffix)) = rest.rsplit_once(".supportauth-") else {
        return false;
    };
    !target.is_empty()
        && suffix.len() == 12
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_regular(st: &FileStat, shown: &str) -> Result<()> {
    if !is_type(st, SFlag::S_IFREG) {
        return Err(SafeFileError::NotRegular {
            path: shown.to_string(),
        });
    }
    // A hard link to another file (say /etc/shadow) must not be read out
    // into a file the user owns.
    if st.st_nlink != 1 {
        return Err(SafeFileError::HardLinked {
            path: shown.to_string(),
            links: st.st_nlink,
        });
    }
    Ok(())
}

/// A written, validated temp file waiting to replace its target.
#[derive(Debug)]
pub struct Staged<'a> {
    dir: &'a CheckedDir,
    tmp_name: String,
    name: String,
    done: bool,
    /// The temp file, open until it is fsynced.
    file: Option<File>,
}

impl Staged<'_> {
    /// Fsyncs the temp file (a no-op once done).
    pub fn sync(&mut self) -> Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()
                .map_err(|e| io_err(&self.dir.path.join(&self.tmp_name), "fsync", e))?;
        }
        Ok(())
    }

    /// Renames in without fsyncing the content first: only for derived
    /// files whose loss on a power cut (an empty file under the final
    /// name) is detected and repaired, never for a file that grants or
    /// denies anything.
    pub fn without_fsync(mut self) -> Self {
        self.file = None;
        self
    }

    /// A path to the temp file that goes through our directory fd, so a
    /// validator (a child process such as `visudo -cf`) sees exactly our
    /// file even if the directory's path is renamed meanwhile.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}/{}",
            std::process::id(),
            self.dir.fd.as_raw_fd(),
            self.tmp_name
        ))
    }

    /// Renames the temp file over the target without the directory fsync:
    /// a later [`commit`](Self::commit) or [`CheckedDir::sync`] in the same
    /// directory makes it durable (one fsync for several files).
    pub fn rename_unsynced(mut self) -> Result<()> {
        // Never rename unsynced data in, unless `without_fsync` said so.
        self.sync()?;
        let target = self.dir.path.join(&self.name);
        renameat(
            &self.dir.fd,
            self.tmp_name.as_str(),
            &self.dir.fd,
            self.name.as_str(),
        )
        .map_err(|e| io_err(&target, "rename", e))?;
        self.done = true;
        Ok(())
    }

    /// Renames the temp file over the target and fsyncs the directory.
    pub fn commit(self) -> Result<()> {
        let dir = self.dir;
        self.rename_unsynced()?;
        dir.sync()
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = unlinkat(
                &self.dir.fd,
                self.tmp_name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn scratch() -> (tempfile::TempDir, CheckedDir) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = CheckedDir::open_under(tmp.path(), tmp.path(), DirPolicy::root()).unwrap();
        (tmp, dir)
    }

    /// These tests chown to other uids; without root they cannot run.
    pub(crate) fn not_root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return false;
        }
        crate::test_skip!("SKIPPED: {test} needs root to chown test files");
        true
    }

    fn leftovers(dir: &CheckedDir) -> Vec<String> {
        dir.entries()
            .unwrap()
            .into_iter()
            .filter(|n| n.contains(".supportauth-"))
            .collect()
    }

    #[test]
    fn remove_tree_takes_the_owners_files_and_stops_at_anyone_elses() {
        if not_root("remove_tree_takes_the_owners_files_and_stops_at_anyone_elses") {
            return;
        }
        let (tmp, dir) = scratch();
        let home = tmp.path().join("cp7.ssh");
        std::fs::create_dir_all(home.join("a/b")).unwrap();
        std::fs::write(home.join("a/b/f"), "x").unwrap();
        std::fs::write(tmp.path().join("target"), "keep").unwrap();
        symlink(tmp.path().join("target"), home.join("a/link")).unwrap();
        for p in ["cp7.ssh", "cp7.ssh/a", "cp7.ssh/a/b", "cp7.ssh/a/b/f"] {
            std::os::unix::fs::lchown(tmp.path().join(p), Some(5001), Some(5001)).unwrap();
        }
        // Someone else's file inside: the walk stops and names it.
        std::os::unix::fs::lchown(home.join("a/b/f"), Some(5002), Some(5002)).unwrap();
        let err = dir.remove_tree("cp7.ssh", 5001).unwrap_err().to_string();
        assert!(err.contains("uid 5002"), "{err}");
        std::os::unix::fs::lchown(home.join("a/b/f"), Some(5001), Some(5001)).unwrap();
        assert!(dir.remove_tree("cp7.ssh", 5001).unwrap());
        assert!(!home.exists());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("target")).unwrap(),
            "keep"
        );
        assert!(!dir.remove_tree("cp7.ssh", 5001).unwrap(), "absent: false");
    }

    #[test]
    fn walks_and_refuses_symlinked_component() {
        let (tmp, _) = scratch();
        std::fs::create_dir_all(tmp.path().join("real/sub")).unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let ok =
            CheckedDir::open_under(tmp.path(), &tmp.path().join("real/sub"), DirPolicy::root());
        assert!(ok.is_ok(), "{ok:?}");
        let err =
            CheckedDir::open_under(tmp.path(), &tmp.path().join("link/sub"), DirPolicy::root())
                .unwrap_err();
        assert!(matches!(err, SafeFileError::Symlink { .. }), "{err}");
        let err = CheckedDir::open_under(
            tmp.path(),
            &tmp.path().join("real/../real"),
            DirPolicy::root(),
        )
        .unwrap_err();
        assert!(matches!(err, SafeFileError::BadName { .. }), "{err}");
        let err =
            CheckedDir::open_under(tmp.path(), Path::new("/etc"), DirPolicy::root()).unwrap_err();
        assert!(matches!(err, SafeFileError::BadName { .. }), "{err}");
    }

    #[test]
    fn refuses_hostile_directory_owner_and_mode() {
        if not_root("refuses_hostile_directory_owner_and_mode") {
            return;
        }
        let (tmp, dir) = scratch();
        let sub = tmp.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::chown(&sub, Some(4242), Some(4242)).unwrap();
        let err = dir.open_child("sub", DirPolicy::root()).unwrap_err();
        assert!(
            matches!(err, SafeFileError::WrongOwner { uid: 4242, .. }),
            "{err}"
        );
        assert!(dir.open_child("sub", DirPolicy::root_or(4242)).is_ok());
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = dir.open_child("sub", DirPolicy::root_or(4242)).unwrap_err();
        assert!(
            matches!(err, SafeFileError::Writable { mode: 0o775, .. }),
            "{err}"
        );
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let err = dir.open_child("file", DirPolicy::root()).unwrap_err();
        assert!(matches!(err, SafeFileError::NotDirectory { .. }), "{err}");
        assert!(dir
            .open_child("missing", DirPolicy::root())
            .unwrap()
            .is_none());
        assert!(matches!(
            dir.open_child("..", DirPolicy::root()),
            Err(SafeFileError::BadName { .. })
        ));
    }

    #[test]
    fn creates_child_dir_with_owner_and_mode() {
        if not_root("creates_child_dir_with_owner_and_mode") {
            return;
        }
        let (tmp, dir) = scratch();
        let sub = dir
            .create_child_dir(".ssh", 4242, 4243, 0o700, DirPolicy::exactly(4242))
            .unwrap();
        let md = std::fs::symlink_metadata(tmp.path().join(".ssh")).unwrap();
        assert!(md.is_dir());
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (4242, 4243, 0o700)
        );
        sub.replace_file("f", b"x", 4242, 4243, 0o600, None)
            .unwrap();
        // Existing: opened and checked, not changed.
        let again = dir
            .create_child_dir(".ssh", 4242, 4243, 0o700, DirPolicy::exactly(4242))
            .unwrap();
        assert!(again.read_file("f", 4242, 10).unwrap().is_some());
        // A symlink in its place is refused.
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        symlink(tmp.path().join("elsewhere"), tmp.path().join("evil")).unwrap();
        let err = dir
            .create_child_dir("evil", 0, 0, 0o700, DirPolicy::root())
            .unwrap_err();
        assert!(matches!(err, SafeFileError::Symlink { .. }), "{err}");
    }

    #[test]
    fn refuses_symlinked_file_and_leaves_its_target_alone() {
        let (tmp, dir) = scratch();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"secret\n").unwrap();
        symlink(&victim, tmp.path().join("target")).unwrap();
        let err = dir.read_file("target", 0, 100).unwrap_err();
        assert!(matches!(err, SafeFileError::Symlink { .. }), "{err}");
        let err = dir
            .replace_file("target", b"evil", 0, 0, 0o600, None)
            .unwrap_err();
        assert!(matches!(err, SafeFileError::Symlink { .. }), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret\n");
        assert!(std::fs::symlink_metadata(tmp.path().join("target"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(leftovers(&dir).is_empty());
    }

    #[test]
    fn refuses_fifo_without_hanging_and_hard_links() {
        let (tmp, dir) = scratch();
        nix::unistd::mkfifo(&tmp.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let err = dir.read_file("fifo", 0, 100).unwrap_err();
        assert!(matches!(err, SafeFileError::NotRegular { .. }), "{err}");
        let err = dir
            .replace_file("fifo", b"x", 0, 0, 0o600, None)
            .unwrap_err();
        assert!(matches!(err, SafeFileError::NotRegular { .. }), "{err}");
        std::fs::write(tmp.path().join("a"), b"x").unwrap();
        std::fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
        let err = dir.read_file("b", 0, 100).unwrap_err();
        assert!(
            matches!(err, SafeFileError::HardLinked { links: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn read_checks_owner_and_size() {
        if not_root("read_checks_owner_and_size") {
            return;
        }
        let (tmp, dir) = scratch();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        std::os::unix::fs::chown(&f, Some(4242), Some(4242)).unwrap();
        let err = dir.read_file("f", 0, 100).unwrap_err();
        assert!(
            matches!(err, SafeFileError::WrongOwner { uid: 4242, .. }),
            "{err}"
        );
        let data = dir.read_file("f", 4242, 100).unwrap().unwrap();
        assert_eq!(data.bytes, b"0123456789");
        let err = dir.read_file("f", 4242, 9).unwrap_err();
        assert!(
            matches!(
                err,
                SafeFileError::TooLarge {
                    size: 10,
                    max: 9,
                    ..
                }
            ),
            "{err}"
        );
        assert!(dir.read_file("absent", 0, 9).unwrap().is_none());
    }

    #[test]
    fn replace_applies_owner_mode_and_validator() {
        if not_root("replace_applies_owner_mode_and_validator") {
            return;
        }
        let (tmp, dir) = scratch();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"original").unwrap();
        dir.replace_file("f", b"new", 4242, 4243, 0o440, None)
            .unwrap();
        let md = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (4242, 4243, 0o440)
        );
        assert_eq!(std::fs::read(&f).unwrap(), b"new");

        // The validator sees the temp file's content through its path.
        let seen = std::sync::Mutex::new(Vec::new());
        let check = |p: &Path| -> std::result::Result<(), String> {
            *seen.lock().unwrap() = std::fs::read(p).map_err(|e| e.to_string())?;
            Err("syntax error near line 1".into())
        };
        let err = dir
            .replace_file("f", b"broken", 0, 0, 0o440, Some(&check))
            .unwrap_err();
        assert!(matches!(err, SafeFileError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("syntax error"));
        assert_eq!(*seen.lock().unwrap(), b"broken");
        assert_eq!(std::fs::read(&f).unwrap(), b"new", "original untouched");
        assert!(leftovers(&dir).is_empty(), "temp removed");

        let ok = |_: &Path| -> std::result::Result<(), String> { Ok(()) };
        dir.replace_file("g", b"fresh", 0, 0, 0o600, Some(&ok))
            .unwrap();
        assert_eq!(std::fs::read(tmp.path().join("g")).unwrap(), b"fresh");
        assert!(leftovers(&dir).is_empty());
        // A staged file that is dropped is cleaned up too.
        let staged = dir.stage_file("g", b"never", 0, 0, 0o600, None).unwrap();
        assert_eq!(leftovers(&dir).len(), 1);
        drop(staged);
        assert!(leftovers(&dir).is_empty());
        assert_eq!(std::fs::read(tmp.path().join("g")).unwrap(), b"fresh");
    }

    #[test]
    fn remove_and_lock() {
        let (tmp, dir) = scratch();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        assert!(dir.remove_file("f").unwrap());
        assert!(!dir.remove_file("f").unwrap());
        let _guard = dir.lock().unwrap();
        let other = CheckedDir::open_under(tmp.path(), tmp.path(), DirPolicy::root()).unwrap();
        let fd = openat(&other.fd, ".", DIR_FLAGS, Mode::empty()).unwrap();
        let busy = Flock::lock(fd, FlockArg::LockExclusiveNonblock);
        assert!(matches!(busy, Err((_, Errno::EWOULDBLOCK))));
        drop(_guard);
        let fd = openat(&other.fd, ".", DIR_FLAGS, Mode::empty()).unwrap();
        assert!(Flock::lock(fd, FlockArg::LockExclusiveNonblock).is_ok());
    }

    #[test]
    fn sweep_staged_removes_only_our_leftover_temp_files() {
        let (tmp, dir) = scratch();
        let staged = dir
            .stage_file("authorized_keys", b"key", 0, 0, 0o600, None)
            .unwrap();
        // A kill before the rename leaves the temp file: forget the guard.
        std::mem::forget(staged);
        for keep in [
            "authorized_keys.supportauth-0123456789ab",
            ".x.supportauth-short",
            ".profile",
        ] {
            std::fs::write(tmp.path().join(keep), b"theirs").unwrap();
        }
        assert_eq!(dir.sweep_staged().unwrap(), 1);
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".profile",
                ".x.supportauth-short",
                "authorized_keys.supportauth-0123456789ab"
            ]
        );
        assert_eq!(dir.sweep_staged().unwrap(), 0);
    }
}
