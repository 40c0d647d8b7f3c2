//! Read-modify-replace of one small host file that other programs read
//! (hosts.allow, csf.allow), through `system::safefile`: the directory is
//! walked from the root prefix with every component checked and opened
//! O_NOFOLLOW, the file is read from that fd, and the new contents go
//! through a temp file in the same directory that gets the original's
//! owner and mode, is fsynced, renamed over the original, and the
//! directory fsynced.

use std::path::{Path, PathBuf};

use super::FwError;
use crate::system::safefile::{CheckedDir, DirPolicy, SafeFileError};

/// Mode for a file we create because it did not exist (root:root).
const NEW_MODE: u32 = 0o644;

/// Firewall allow lists are small; anything larger is not one.
const MAX_BYTES: u64 = 16 << 20;

/// A root-owned host file, addressed under the configured root prefix
/// (`/` in production, a scratch root in tests).
#[derive(Debug, Clone)]
pub struct HostFile {
    root: PathBuf,
    path: PathBuf,
}

impl HostFile {
    /// `path` must lie under `root`.
    pub fn new(root: &Path, path: PathBuf) -> HostFile {
        HostFile {
            root: root.to_path_buf(),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: SafeFileError) -> FwError {
        FwError::unexpected(self.path.display().to_string(), e.to_string())
    }

    fn name(&self) -> Result<&str, FwError> {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| FwError::unexpected(self.path.display().to_string(), "not a file path"))
    }

    /// The directory, or None when it does not exist.
    fn dir(&self) -> Result<Option<CheckedDir>, FwError> {
        let parent = self.path.parent().unwrap_or(&self.root);
        match CheckedDir::open_under(&self.root, parent, DirPolicy::root()) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The file's bytes, or None when it does not exist. Refuses symlinks,
    /// and files not owned by root.
    pub fn read(&self) -> Result<Option<Vec<u8>>, FwError> {
        let Some(dir) = self.dir()? else {
            return Ok(None);
        };
        let data = dir
            .read_file(self.name()?, 0, MAX_BYTES)
            .map_err(|e| self.err(e))?;
        Ok(data.map(|d| d.bytes))
    }

    /// Reads the file (None when absent), lets `edit` compute the new
    /// contents (None: leave the file alone) and atomically replaces the
    /// file, keeping its owner and mode. Returns whether it was rewritten.
    pub fn replace_with(
        &self,
        edit: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<bool, FwError> {
        let name = self.name()?;
        let dir = self.dir()?.ok_or_else(|| {
            FwError::unexpected(
                self.path.display().to_string(),
                "its directory does not exist",
            )
        })?;
        let old = dir.read_file(name, 0, MAX_BYTES).map_err(|e| self.err(e))?;
        let Some(new) = edit(old.as_ref().map(|d| d.bytes.as_slice())) else {
            return Ok(false);
        };
        let (uid, gid, mode) = old.map_or((0, 0, NEW_MODE), |d| (d.uid, d.gid, d.mode));
        dir.replace_file(name, &new, uid, gid, mode, None)
            .map_err(|e| self.err(e))?;
        Ok(true)
    }
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
        let f = HostFile::new(dir.path(), p.clone());
        assert!(f
            .replace_with(|old| {
                assert_eq!(old, Some(&b"old\n"[..]));
                Some(b"new\n".to_vec())
            })
            .unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"new\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert!(!f.replace_with(|_| None).unwrap());
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn creates_a_missing_file_root_owned_0644() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etc/hosts.allow");
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let f = HostFile::new(dir.path(), p.clone());
        assert_eq!(f.read().unwrap(), None);
        assert!(f
            .replace_with(|old| {
                assert_eq!(old, None);
                Some(b"x\n".to_vec())
            })
            .unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, NEW_MODE);
    }

    #[test]
    fn refuses_symlinks_for_the_file_and_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let p = dir.path().join("hosts.allow");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let f = HostFile::new(dir.path(), p);
        assert!(f.replace_with(|_| Some(b"y".to_vec())).is_err());
        assert!(f.read().is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
        // A directory on the way swapped for a symlink is refused too.
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/csf.allow"), b"keep\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("csf")).unwrap();
        let f = HostFile::new(dir.path(), dir.path().join("csf/csf.allow"));
        assert!(f.replace_with(|_| Some(b"y".to_vec())).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("real/csf.allow")).unwrap(),
            b"keep\n"
        );
    }
}
