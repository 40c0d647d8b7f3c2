//! Read-modify-replace of one small host file that other programs read
//! (hosts.allow, csf.allow). Kept in one place so it can be swapped for
//! `crate::system::safefile` once that exists.
//!
//! The directory is opened once with O_NOFOLLOW and every step is relative to
//! that fd, so a symlink swapped in for the file or its directory is refused
//! rather than followed. The temp file is made with O_EXCL in the same
//! directory, gets the original's owner and mode on the fd, is fsynced, then
//! renamed over the original, and the directory is fsynced.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use nix::unistd::{fchown, fsync, unlinkat, Gid, Uid, UnlinkatFlags};

use super::FwError;

/// Mode and owner for a file we create because it did not exist.
const NEW_MODE: u32 = 0o644;

fn io_err(path: &Path, e: Errno) -> FwError {
    FwError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    }
}

fn split(path: &Path) -> Result<(PathBuf, std::ffi::OsString), FwError> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_os_string())),
        _ => Err(FwError::unexpected(
            path.display().to_string(),
            "not a file path",
        )),
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd, FwError> {
    open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(dir, e))
}

/// The file's bytes, or None when it does not exist. Refuses symlinks.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>, FwError> {
    let (dir, name) = split(path)?;
    let dfd = match open_dir(&dir) {
        Ok(fd) => fd,
        Err(FwError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    read_at(&dfd, &name, path)
}

fn read_at(dfd: &OwnedFd, name: &std::ffi::OsStr, path: &Path) -> Result<Option<Vec<u8>>, FwError> {
    let fd = match openat(
        dfd,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut f = std::fs::File::from(fd);
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|source| FwError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(buf))
}

/// Reads `path` (None when absent), lets `edit` compute the new contents
/// (None: leave the file alone) and atomically replaces the file.
/// Returns whether it was rewritten.
pub(crate) fn replace_with(
    path: &Path,
    edit: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<bool, FwError> {
    let (dir, name) = split(path)?;
    let dfd = open_dir(&dir)?;
    let old = read_at(&dfd, &name, path)?;
    let Some(new) = edit(old.as_deref()) else {
        return Ok(false);
    };
    let (mode, uid, gid) = match fstatat(&dfd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                return Err(FwError::unexpected(
                    path.display().to_string(),
                    "is not a regular file; refusing to replace it",
                ));
            }
            (st.st_mode & 0o7777, st.st_uid, st.st_gid)
        }
        Err(Errno::ENOENT) => (NEW_MODE, 0, 0),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd)
        .map_err(|e| FwError::unexpected("random temp name", e.to_string()))?;
    let tmp = format!(
        ".{}.supportauth-{}",
        name.to_string_lossy(),
        hex::encode(rnd)
    );
    let tfd = openat(
        &dfd,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io_err(&dir.join(&tmp), e))?;
    let result = (|| {
        fchown(&tfd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        fchmod(&tfd, Mode::from_bits_truncate(mode))?;
        let mut f = std::fs::File::from(tfd);
        f.write_all(&new)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        fsync(&f)?;
        drop(f);
        renameat(&dfd, tmp.as_str(), &dfd, name.as_os_str())?;
        fsync(&dfd)
    })();
    if let Err(e) = result {
        let _ = unlinkat(&dfd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(io_err(path, e));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keeps_mode_and_replaces_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts.allow");
        std::fs::write(&p, b"old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(replace_with(&p, |old| {
            assert_eq!(old, Some(&b"old\n"[..]));
            Some(b"new\n".to_vec())
        })
        .unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"new\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert!(!replace_with(&p, |_| None).unwrap());
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let p = dir.path().join("hosts.allow");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(replace_with(&p, |_| Some(b"y".to_vec())).is_err());
        assert!(read(&p).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
    }
}
