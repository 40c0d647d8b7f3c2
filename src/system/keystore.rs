//! Installing and removing support keys in a user's `~/.ssh`.
//!
//! Everything goes through [`CheckedDir`]: the home directory is reached by
//! an `openat(O_NOFOLLOW)` walk from the configured root, `~/.ssh` must be a
//! real directory owned by the user, and `authorized_keys` is rewritten with
//! temp file + fsync + fchown/fchmod + rename + directory fsync. The line
//! editing itself is [`crate::authorized_keys`], which keeps every foreign
//! byte.
//!
//! Edits are serialised by an flock on a file in a directory only root can
//! write (the daemon's state directory), never on anything in the home:
//! the account's owner could otherwise hold that lock to delay their own
//! revocation.
//!
//! Foreign writers (an admin's `cat >> authorized_keys`, a config manager)
//! do not take our lock. Just before the rename we re-read the file and
//! redo the edit if it changed, so an append that lands before that check
//! is kept. Remaining race: an append that lands in the microseconds between
//! the re-read and the rename, or a writer that opened the old file before
//! the rename and writes after it, writes to the replaced inode and is lost.
//! Only an in-place edit could close that window, and it would expose
//! half-written files to sshd.

use std::path::{Path, PathBuf};

use crate::authorized_keys::{self, KeyMark};
use crate::system::safefile::{CheckedDir, DirLock, DirPolicy, SafeFileError};
use crate::types::Username;

const SSH_DIR: &str = ".ssh";
const AUTHORIZED_KEYS: &str = "authorized_keys";
/// Refuse files larger than this rather than load them into memory.
const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// How often we redo an edit because a foreign writer changed the file.
const MAX_ATTEMPTS: u32 = 5;
const KEY_FILE_PREFIX: &str = "cpanel_support_";

/// The account whose `authorized_keys` we edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAccount {
    pub user: Username,
    pub uid: u32,
    pub gid: u32,
    /// Home directory, already under the root prefix.
    pub home: PathBuf,
}

/// One of our keys found in an `authorized_keys` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledKey {
    pub mark: KeyMark,
    /// Canonical `type base64`.
    pub key: String,
    /// The whole line, without terminator.
    pub line: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error(transparent)]
    File(#[from] SafeFileError),
    #[error("refusing to install a malformed key line for {user}: {reason}")]
    BadLine { user: String, reason: String },
    #[error("{path} kept changing while supportauth edited it ({MAX_ATTEMPTS} attempts); another program is rewriting it, try again when it is done")]
    Contended { path: String },
    #[error("home directory {home} is not under the configured root {root}")]
    NotUnderRoot { home: String, root: String },
}

type Result<T> = std::result::Result<T, KeyStoreError>;

/// What the engine needs from the host's key files.
pub trait HostKeys: Send + Sync {
    /// Our keys in the account's authorized_keys; `None` when the account
    /// has no `~/.ssh` (checked like any other).
    fn ssh_dir_keys(&self, acct: &KeyAccount) -> Result<Option<Vec<InstalledKey>>>;
    fn list_ours(&self, acct: &KeyAccount) -> Result<Vec<InstalledKey>> {
        Ok(self.ssh_dir_keys(acct)?.unwrap_or_default())
    }
    /// Idempotent per ticket+server: an existing line of the same slot is
    /// replaced. The copy WHM lists is written with it; both are durable
    /// when this returns.
    fn install(&self, acct: &KeyAccount, line: &str, mark: &KeyMark) -> Result<()>;
    /// Removes our lines (and key files) whose mark `select` picks; returns
    /// how many authorized_keys lines were removed. Durable when it returns.
    fn remove(&self, acct: &KeyAccount, select: &dyn Fn(&KeyMark) -> bool) -> Result<usize>;
    /// Whether the copy WHM lists for `key` (one of ours) is in place with
    /// the right content.
    fn copy_intact(&self, acct: &KeyAccount, key: &InstalledKey) -> Result<bool>;
    /// Rewrites that copy, durably.
    fn write_copy(&self, acct: &KeyAccount, key: &InstalledKey) -> Result<()>;
    /// Deletes temp files an edit killed half-way left in `~/.ssh` (they
    /// may hold a support key); returns how many.
    fn sweep_staged(&self, acct: &KeyAccount) -> Result<usize>;
    /// Removes `~/.ssh` when it holds nothing but an empty authorized_keys
    /// (what a grant that created it leaves once its key is gone);
    /// returns whether it did.
    fn remove_empty_ssh_dir(&self, acct: &KeyAccount) -> Result<bool>;
}

fn bad_line(acct: &KeyAccount, reason: &str) -> KeyStoreError {
    KeyStoreError::BadLine {
        user: acct.user.to_string(),
        reason: reason.to_string(),
    }
}

/// `line` parsed, when it is one of ours carrying exactly `mark`.
fn checked_line(acct: &KeyAccount, line: &str, mark: &KeyMark) -> Result<authorized_keys::OurLine> {
    let ours = authorized_keys::parse_ours(line.as_bytes())
        .ok_or_else(|| bad_line(acct, "it is not a key line carrying a supportauth mark"))?;
    if ours.mark != *mark || ours.line != line {
        return Err(bad_line(
            acct,
            "its comment does not match the grant's mark",
        ));
    }
    Ok(ours)
}

/// What the copy WHM lists holds: the key and our comment.
fn copy_bytes(key: &str, mark: &KeyMark) -> String {
    format!("{key} {}\n", mark.comment())
}

/// The name of the key file WHM's "Manage root's SSH Keys" lists. Avoids
/// `@` and anything but digits from the mark.
pub fn key_file_name(mark: &KeyMark) -> String {
    format!("{KEY_FILE_PREFIX}{}_{}.pub", mark.ticket, mark.server)
}

/// An edit of authorized_keys: new bytes (`None`: no change) and a result.
type EditFn<'a, R> = dyn Fn(&[u8]) -> Result<(Option<Vec<u8>>, R)> + 'a;

type Hook = Box<dyn Fn(u32) + Send + Sync>;

/// The real store: files under `root` (`/` in production).
pub struct FileKeyStore {
    root: PathBuf,
    /// Where the edit lock lives: a directory only root may write.
    lock_dir: PathBuf,
    /// The lock directory, opened and checked on first use; its owner and
    /// mode are checked again at every lock (one fstat, where walking to
    /// it took a dozen system calls).
    lock_dir_fd: std::sync::OnceLock<CheckedDir>,
    /// Test hook run between staging and the re-read (simulates a racing
    /// foreign writer deterministically).
    before_commit: Option<Hook>,
}

impl std::fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyStore")
            .field("root", &self.root)
            .field("lock_dir", &self.lock_dir)
            .finish()
    }
}

impl FileKeyStore {
    /// `root` is the trusted root prefix the home paths lie under;
    /// `lock_dir` a directory owned by root that no one else may write
    /// (the daemon's state directory).
    pub fn new(root: impl Into<PathBuf>, lock_dir: impl Into<PathBuf>) -> Self {
        FileKeyStore {
            root: root.into(),
            lock_dir: lock_dir.into(),
            lock_dir_fd: std::sync::OnceLock::new(),
            before_commit: None,
        }
    }

    #[cfg(test)]
    fn with_hook(mut self, hook: Hook) -> Self {
        self.before_commit = Some(hook);
        self
    }

    /// The edit lock: an flock on the lock directory, which must belong to
    /// the daemon's user and be writable by no one else.
    fn lock(&self) -> Result<DirLock> {
        let policy = DirPolicy::exactly(nix::unistd::geteuid().as_raw());
        let dir = match self.lock_dir_fd.get() {
            Some(dir) => {
                dir.require(policy)?;
                dir
            }
            None => {
                let dir = if self.lock_dir.starts_with(&self.root) {
                    CheckedDir::open_under(&self.root, &self.lock_dir, policy)?
                } else {
                    CheckedDir::open(&self.lock_dir, policy)?
                };
                self.lock_dir_fd.get_or_init(|| dir)
            }
        };
        Ok(dir.lock()?)
    }

    fn home(&self, acct: &KeyAccount) -> Result<CheckedDir> {
        if !acct.home.starts_with(&self.root) {
            return Err(KeyStoreError::NotUnderRoot {
                home: acct.home.display().to_string(),
                root: self.root.display().to_string(),
            });
        }
        Ok(CheckedDir::open_under(
            &self.root,
            &acct.home,
            DirPolicy::root_or(acct.uid),
        )?)
    }

    /// `~/.ssh` if it exists (checked), `None` when the home or `.ssh` is
    /// missing.
    fn existing_ssh_dir(&self, acct: &KeyAccount) -> Result<Option<CheckedDir>> {
        let home = match self.home(acct) {
            Ok(home) => home,
            Err(KeyStoreError::File(e)) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(home.open_child(SSH_DIR, DirPolicy::exactly(acct.uid))?)
    }

    fn read_keys(ssh: &CheckedDir, acct: &KeyAccount) -> Result<Option<Vec<u8>>> {
        Ok(ssh
            .read_file(AUTHORIZED_KEYS, acct.uid, MAX_FILE_BYTES)?
            .map(|d| d.bytes))
    }

    /// Applies `edit` to authorized_keys under the caller's lock, redoing it
    /// when a foreign writer changed the file before our rename.
    /// `edit` returns the new bytes (or `None` for "no change") and a value.
    /// `before_change` runs just before the rename (or that "no change"
    /// return), for the caller's own changes in the directory. Returns the
    /// value and whether authorized_keys was replaced (and the directory
    /// fsynced).
    fn edit<R>(
        &self,
        ssh: &CheckedDir,
        acct: &KeyAccount,
        edit: &EditFn<R>,
        before_change: &mut dyn FnMut() -> Result<()>,
    ) -> Result<(R, bool)> {
        for attempt in 0..MAX_ATTEMPTS {
            let existing = ssh.read_file(AUTHORIZED_KEYS, acct.uid, MAX_FILE_BYTES)?;
            // An existing file keeps its owner and mode (the admin's choice,
            // e.g. 0644) unless the mode lets others write; a new one is 0600.
            let (uid, gid, mode) = match &existing {
                Some(d) if d.mode & 0o022 == 0 => (d.uid, d.gid, d.mode & 0o7777),
                Some(d) => (d.uid, d.gid, 0o600),
                None => (acct.uid, acct.gid, 0o600),
            };
            let before = existing.map(|d| d.bytes);
            let (new, value) = edit(before.as_deref().unwrap_or_default())?;
            let Some(new) = new else {
                before_change()?;
                return Ok((value, false));
            };
            let staged = ssh.stage_file(AUTHORIZED_KEYS, &new, uid, gid, mode, None)?;
            if let Some(hook) = &self.before_commit {
                hook(attempt);
            }
            if Self::read_keys(ssh, acct)? == before {
                before_change()?;
                staged.commit()?;
                return Ok((value, true));
            }
            // Changed under us: drop the temp file and redo the edit.
        }
        Err(KeyStoreError::Contended {
            path: ssh.path().join(AUTHORIZED_KEYS).display().to_string(),
        })
    }

    /// Removes our key files whose mark `select` picks, without fsyncing
    /// the directory (the caller does); returns how many.
    fn remove_key_files(
        ssh: &CheckedDir,
        acct: &KeyAccount,
        select: &dyn Fn(&KeyMark) -> bool,
    ) -> Result<usize> {
        let mut removed = 0;
        for name in ssh.entries()? {
            if !name.starts_with(KEY_FILE_PREFIX) || !name.ends_with(".pub") {
                continue;
            }
            // Odd files under our name (a symlink, another owner...) are
            // left for the admin; an I/O error is not "odd": skipping it
            // left a support key's copy behind a revoke for good (issue 16,
            // failing-disk sweep), so the caller fails and retries.
            let data = match ssh.read_file(&name, acct.uid, 64 * 1024) {
                Ok(Some(data)) => data,
                Err(e @ SafeFileError::Io { .. }) => return Err(e.into()),
                Ok(None) | Err(_) => continue,
            };
            let Some(ours) = authorized_keys::parse_ours(&data.bytes) else {
                continue;
            };
            if key_file_name(&ours.mark) == name
                && select(&ours.mark)
                && ssh.remove_file_unsynced(&name)?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl HostKeys for FileKeyStore {
    fn install(&self, acct: &KeyAccount, line: &str, mark: &KeyMark) -> Result<()> {
        let bad = |reason: &str| bad_line(acct, reason);
        let ours = checked_line(acct, line, mark)?;
        let _lock = self.lock()?;
        let home = self.home(acct)?;
        // A key goes only into a home its user owns (root's for root): a
        // login user whose passwd home is `/root` or `/` must not get a
        // `~/.ssh` of its own there (issue 15, finding 8).
        home.require(DirPolicy::exactly(acct.uid))?;
        let ssh = home.create_child_dir(
            SSH_DIR,
            acct.uid,
            acct.gid,
            0o700,
            DirPolicy::exactly(acct.uid),
        )?;
        // The copy WHM lists, removed with the key: written and fsynced
        // under a temp name, renamed in just before authorized_keys, whose
        // directory fsync makes both names durable. An install that fails
        // after this point is rolled back by `remove`, which deletes it too.
        let mut copy = Some(ssh.stage_file(
            &key_file_name(mark),
            copy_bytes(&ours.key, mark).as_bytes(),
            acct.uid,
            acct.gid,
            0o600,
            None,
        )?);
        let renamed = std::cell::Cell::new(false);
        let edited = self.edit(
            &ssh,
            acct,
            &|bytes| {
                let (without, _) = authorized_keys::remove_ours(bytes, &|m| m.same_slot(mark));
                let new =
                    authorized_keys::add_line(&without, line).map_err(|e| bad(&e.to_string()))?;
                Ok((Some(new), ()))
            },
            &mut || match copy.take() {
                Some(c) => {
                    c.rename_unsynced()?;
                    renamed.set(true);
                    Ok(())
                }
                None => Ok(()),
            },
        );
        // authorized_keys' own rename failed after the copy's: the caller
        // counts the key as never installed and rolls nothing back, so the
        // copy goes here (the failing-disk sweep found it left behind for
        // good, issue 16).
        if edited.is_err() && renamed.get() {
            if let Err(e) = ssh.remove_file(&key_file_name(mark)) {
                tracing::warn!(user = %acct.user, error = %e, "cannot remove the copy of a key that was not installed");
            }
        }
        edited?;
        Ok(())
    }

    fn ssh_dir_keys(&self, acct: &KeyAccount) -> Result<Option<Vec<InstalledKey>>> {
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(None);
        };
        let bytes = Self::read_keys(&ssh, acct)?.unwrap_or_default();
        Ok(Some(
            authorized_keys::list_ours(&bytes)
                .into_iter()
                .map(|o| InstalledKey {
                    mark: o.mark,
                    key: o.key,
                    line: o.line,
                })
                .collect(),
        ))
    }

    fn remove(&self, acct: &KeyAccount, select: &dyn Fn(&KeyMark) -> bool) -> Result<usize> {
        let _lock = self.lock()?;
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(0);
        };
        // Key files go just before authorized_keys is renamed, without their
        // own directory fsync: the commit fsyncs the directory once for
        // everything.
        let mut files = 0;
        let (removed, replaced) = self.edit(
            &ssh,
            acct,
            &|bytes| {
                let (new, n) = authorized_keys::remove_ours(bytes, select);
                Ok(((n > 0).then_some(new), n))
            },
            &mut || {
                files += Self::remove_key_files(&ssh, acct, select)?;
                Ok(())
            },
        )?;
        if !replaced && files > 0 {
            ssh.sync()?;
        }
        Ok(removed)
    }

    fn copy_intact(&self, acct: &KeyAccount, key: &InstalledKey) -> Result<bool> {
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(false);
        };
        let found = ssh.read_file(&key_file_name(&key.mark), acct.uid, 64 * 1024)?;
        Ok(found.is_some_and(|d| d.bytes == copy_bytes(&key.key, &key.mark).as_bytes()))
    }

    fn write_copy(&self, acct: &KeyAccount, key: &InstalledKey) -> Result<()> {
        let _lock = self.lock()?;
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(());
        };
        ssh.replace_file(
            &key_file_name(&key.mark),
            copy_bytes(&key.key, &key.mark).as_bytes(),
            acct.uid,
            acct.gid,
            0o600,
            None,
        )?;
        Ok(())
    }

    fn sweep_staged(&self, acct: &KeyAccount) -> Result<usize> {
        let _lock = self.lock()?;
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(0);
        };
        Ok(ssh.sweep_staged()?)
    }

    fn remove_empty_ssh_dir(&self, acct: &KeyAccount) -> Result<bool> {
        let _lock = self.lock()?;
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(false);
        };
        let entries = ssh.entries()?;
        if entries.iter().any(|e| e != AUTHORIZED_KEYS) {
            return Ok(false);
        }
        if Self::read_keys(&ssh, acct)?.is_some_and(|bytes| !bytes.is_empty()) {
            return Ok(false);
        }
        ssh.remove_file(AUTHORIZED_KEYS)?;
        let home = self.home(acct)?;
        Ok(home.remove_empty_dir(SSH_DIR)?)
    }
}

/// Where a key account's authorized_keys lives (for messages and audit).
pub fn authorized_keys_path(acct: &KeyAccount) -> PathBuf {
    acct.home.join(SSH_DIR).join(AUTHORIZED_KEYS)
}

/// Path of the key file WHM lists for `mark` (for messages and audit).
pub fn key_file_path(acct: &KeyAccount, mark: &KeyMark) -> PathBuf {
    Path::new(&acct.home)
        .join(SSH_DIR)
        .join(key_file_name(mark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorized_keys::render_line;
    use crate::sshkey::tests::{ED25519, RSA2048};
    use crate::sshkey::SupportKey;
    use crate::system::safefile::tests::not_root;
    use crate::types::{ServerNum, SupportIp, TicketId};
    use std::fs;
    use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    const UID: u32 = 4242;
    const GID: u32 = 4343;
    /// An admin's file: CRLF, options, a comment, no final newline.
    const ADMIN: &[u8] = b"# admin keys\r\nno-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICB4vafQSnsv3bDYYiG8B789n5ZvxYvX222J5kElsBaO admin@desk\r\n\r\nssh-rsa AAAA-not-a-key 12345_server_1@cpanel.net_1";

    struct Scratch {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        acct: KeyAccount,
    }

    impl Scratch {
        fn new() -> Scratch {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
            let home = root.join("home/alice");
            fs::create_dir_all(&home).unwrap();
            fs::create_dir(root.join("state")).unwrap();
            fs::set_permissions(root.join("state"), fs::Permissions::from_mode(0o700)).unwrap();
            fs::set_permissions(root.join("home"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
            chown(&home, Some(UID), Some(GID)).unwrap();
            let acct = KeyAccount {
                user: Username::parse("alice").unwrap(),
                uid: UID,
                gid: GID,
                home,
            };
            Scratch {
                _tmp: tmp,
                root,
                acct,
            }
        }
        fn ssh(&self) -> PathBuf {
            self.acct.home.join(".ssh")
        }
        fn ak(&self) -> PathBuf {
            self.ssh().join("authorized_keys")
        }
        fn seed(&self, bytes: &[u8]) {
            fs::create_dir(self.ssh()).unwrap();
            fs::set_permissions(self.ssh(), fs::Permissions::from_mode(0o700)).unwrap();
            chown(self.ssh(), Some(UID), Some(GID)).unwrap();
            fs::write(self.ak(), bytes).unwrap();
            chown(self.ak(), Some(UID), Some(GID)).unwrap();
        }
        fn store(&self) -> FileKeyStore {
            FileKeyStore::new(&self.root, self.root.join("state"))
        }
    }

    fn mark(ticket: &str, server: &str, epoch: i64) -> KeyMark {
        KeyMark::new(
            TicketId::parse(ticket).unwrap(),
            ServerNum::parse(server).unwrap(),
            epoch,
        )
    }

    fn line(key: &str, m: &KeyMark) -> String {
        render_line(
            &SupportKey::parse(key).unwrap(),
            &[SupportIp::parse("203.0.113.5").unwrap()],
            Some(1_795_000_000),
            m,
        )
        .unwrap()
    }

    fn no_temp_files(s: &Scratch) {
        for e in fs::read_dir(s.ssh()).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains(".supportauth-"), "left {name}");
        }
    }

    #[test]
    fn install_then_remove_restores_exact_bytes() {
        if not_root("install_then_remove_restores_exact_bytes") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let store = s.store();
        let m = mark("12345", "1", 1_700_000_000);
        let l = line(ED25519, &m);
        store.install(&s.acct, &l, &m).unwrap();

        let after = fs::read(s.ak()).unwrap();
        assert!(after.starts_with(format!("{l}\n").as_bytes()));
        assert!(after.ends_with(ADMIN));
        // The admin's existing file keeps its owner and mode (seeded 0644).
        let md = fs::symlink_metadata(s.ak()).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (UID, GID, 0o644));
        let kf = key_file_path(&s.acct, &m);
        assert_eq!(
            fs::read_to_string(&kf).unwrap(),
            format!(
                "{} 12345_server_1@cpanel.net_1700000000\n",
                SupportKey::parse(ED25519).unwrap().openssh()
            )
        );
        let md = fs::symlink_metadata(&kf).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (UID, 0o600));

        let listed = store.list_ours(&s.acct).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].mark, m);
        assert_eq!(listed[0].line, l);

        assert_eq!(store.remove(&s.acct, &|k| k.same_slot(&m)).unwrap(), 1);
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN, "byte-identical");
        assert!(!kf.exists());
        assert_eq!(store.remove(&s.acct, &|_| true).unwrap(), 0);
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN);
        no_temp_files(&s);
    }

    #[test]
    fn remove_deletes_a_key_file_whose_line_is_already_gone() {
        if not_root("remove_deletes_a_key_file_whose_line_is_already_gone") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let store = s.store();
        let m = mark("4343", "1", 1_700_000_000);
        store.install(&s.acct, &line(ED25519, &m), &m).unwrap();
        // An admin removed our line by hand; WHM's copy is left behind.
        fs::write(s.ak(), ADMIN).unwrap();
        let kf = key_file_path(&s.acct, &m);
        assert!(kf.exists());
        assert_eq!(store.remove(&s.acct, &|k| k.same_slot(&m)).unwrap(), 0);
        assert!(!kf.exists(), "the copy goes even without a line to remove");
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN);
        no_temp_files(&s);
    }

    #[test]
    fn creates_ssh_dir_and_file() {
        if not_root("creates_ssh_dir_and_file") {
            return;
        }
        let s = Scratch::new();
        let store = s.store();
        assert_eq!(store.remove(&s.acct, &|_| true).unwrap(), 0, "no .ssh");
        assert!(store.list_ours(&s.acct).unwrap().is_empty());
        assert!(!s.ssh().exists(), "remove/list create nothing");
        let m = mark("777", "2", 5);
        store.install(&s.acct, &line(RSA2048, &m), &m).unwrap();
        let md = fs::symlink_metadata(s.ssh()).unwrap();
        assert!(md.is_dir());
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (UID, GID, 0o700));
        let md = fs::symlink_metadata(s.ak()).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (UID, 0o600));
        assert_eq!(store.remove(&s.acct, &|_| true).unwrap(), 1);
        assert_eq!(fs::read(s.ak()).unwrap(), b"");

        let gone = KeyAccount {
            home: s.root.join("home/nobody"),
            ..s.acct.clone()
        };
        assert_eq!(store.remove(&gone, &|_| true).unwrap(), 0, "no home");
    }

    #[test]
    fn install_twice_same_slot_leaves_one_line() {
        if not_root("install_twice_same_slot_leaves_one_line") {
            return;
        }
        let s = Scratch::new();
        s.seed(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICB4vafQSnsv3bDYYiG8B789n5ZvxYvX222J5kElsBaO me\n");
        let store = s.store();
        let m1 = mark("12345", "1", 100);
        let m2 = mark("12345", "1", 200);
        let other = mark("12345", "2", 100);
        store.install(&s.acct, &line(ED25519, &m1), &m1).unwrap();
        store
            .install(&s.acct, &line(ED25519, &other), &other)
            .unwrap();
        store.install(&s.acct, &line(ED25519, &m1), &m1).unwrap();
        store.install(&s.acct, &line(RSA2048, &m2), &m2).unwrap();
        let marks: Vec<KeyMark> = store
            .list_ours(&s.acct)
            .unwrap()
            .into_iter()
            .map(|k| k.mark)
            .collect();
        assert_eq!(marks, vec![m2, other]);
        assert_eq!(store.remove(&s.acct, &|_| true).unwrap(), 2);
        assert_eq!(
            fs::read(s.ak()).unwrap(),
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICB4vafQSnsv3bDYYiG8B789n5ZvxYvX222J5kElsBaO me\n"
        );
        assert!(!key_file_path(&s.acct, &m2).exists());
        assert!(!key_file_path(&s.acct, &other).exists());
    }

    #[test]
    fn refuses_mismatched_line() {
        if not_root("refuses_mismatched_line") {
            return;
        }
        let s = Scratch::new();
        let store = s.store();
        let m = mark("12345", "1", 100);
        let err = store
            .install(&s.acct, &line(ED25519, &mark("12345", "1", 101)), &m)
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::BadLine { .. }), "{err}");
        let err = store.install(&s.acct, ED25519, &m).unwrap_err();
        assert!(matches!(err, KeyStoreError::BadLine { .. }), "{err}");
        let err = store
            .install(&s.acct, &format!("{}\nevil", line(ED25519, &m)), &m)
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::BadLine { .. }), "{err}");
        assert!(!s.ssh().exists());
    }

    #[test]
    fn refuses_symlinked_ssh_dir() {
        if not_root("refuses_symlinked_ssh_dir") {
            return;
        }
        let s = Scratch::new();
        let elsewhere = s.root.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        chown(&elsewhere, Some(UID), Some(GID)).unwrap();
        symlink(&elsewhere, s.ssh()).unwrap();
        let store = s.store();
        let m = mark("12345", "1", 100);
        let err = store.install(&s.acct, &line(ED25519, &m), &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::Symlink { .. })),
            "{err}"
        );
        assert!(store.list_ours(&s.acct).is_err());
        assert!(store.remove(&s.acct, &|_| true).is_err());
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written through it"
        );
    }

    #[test]
    fn refuses_symlinked_authorized_keys() {
        if not_root("refuses_symlinked_authorized_keys") {
            return;
        }
        let s = Scratch::new();
        s.seed(b"");
        fs::remove_file(s.ak()).unwrap();
        let victim = s.root.join("victim");
        fs::write(&victim, b"root:secret\n").unwrap();
        symlink(&victim, s.ak()).unwrap();
        let store = s.store();
        let m = mark("12345", "1", 100);
        let err = store.install(&s.acct, &line(ED25519, &m), &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::Symlink { .. })),
            "{err}"
        );
        assert!(store.list_ours(&s.acct).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"root:secret\n");
        assert!(fs::symlink_metadata(s.ak())
            .unwrap()
            .file_type()
            .is_symlink());
        no_temp_files(&s);
    }

    #[test]
    fn refuses_hostile_modes_and_owners() {
        if not_root("refuses_hostile_modes_and_owners") {
            return;
        }
        let m = mark("12345", "1", 100);
        let l = line(ED25519, &m);

        // World-writable home.
        let s = Scratch::new();
        fs::set_permissions(&s.acct.home, fs::Permissions::from_mode(0o777)).unwrap();
        let err = s.store().install(&s.acct, &l, &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::Writable { .. })),
            "{err}"
        );
        assert!(!s.ssh().exists());

        // Home owned by someone else.
        let s = Scratch::new();
        chown(&s.acct.home, Some(5555), None).unwrap();
        let err = s.store().install(&s.acct, &l, &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::WrongOwner { .. })),
            "{err}"
        );

        // .ssh owned by another user (even root is not the user).
        let s = Scratch::new();
        s.seed(ADMIN);
        chown(s.ssh(), Some(5555), None).unwrap();
        let err = s.store().install(&s.acct, &l, &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::WrongOwner { .. })),
            "{err}"
        );
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN);

        // .ssh is a file.
        let s = Scratch::new();
        fs::write(s.ssh(), b"").unwrap();
        let err = s.store().install(&s.acct, &l, &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::NotDirectory { .. })),
            "{err}"
        );

        // authorized_keys owned by another user.
        let s = Scratch::new();
        s.seed(ADMIN);
        chown(s.ak(), Some(5555), None).unwrap();
        let err = s.store().install(&s.acct, &l, &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::WrongOwner { .. })),
            "{err}"
        );
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN);

        // authorized_keys is a FIFO.
        let s = Scratch::new();
        s.seed(b"");
        fs::remove_file(s.ak()).unwrap();
        nix::unistd::mkfifo(&s.ak(), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = s.store().install(&s.acct, &l, &m).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::File(SafeFileError::NotRegular { .. })),
            "{err}"
        );
    }

    #[test]
    fn foreign_append_during_edit_is_kept() {
        if not_root("foreign_append_during_edit_is_kept") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let ak = s.ak();
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        // A foreign writer appends exactly once, after we staged our first
        // version and before we re-check: the edit must be redone.
        let store = s.store().with_hook(Box::new(move |attempt| {
            seen.fetch_add(1, Ordering::SeqCst);
            if attempt == 0 {
                use std::io::Write;
                let mut f = fs::OpenOptions::new().append(true).open(&ak).unwrap();
                f.write_all(b"\nssh-ed25519 AAAAforeign added-by-admin\n")
                    .unwrap();
            }
        }));
        let m = mark("12345", "1", 100);
        let l = line(ED25519, &m);
        store.install(&s.acct, &l, &m).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry");
        let mut expected = format!("{l}\n").into_bytes();
        expected.extend_from_slice(ADMIN);
        expected.extend_from_slice(b"\nssh-ed25519 AAAAforeign added-by-admin\n");
        assert_eq!(fs::read(s.ak()).unwrap(), expected);
        no_temp_files(&s);

        // A writer that never stops makes us give up without writing.
        let ak = s.ak();
        let store = s.store().with_hook(Box::new(move |_| {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&ak).unwrap();
            f.write_all(b"# again\n").unwrap();
        }));
        let before_len = fs::read(s.ak()).unwrap().len();
        let err = store.remove(&s.acct, &|_| true).unwrap_err();
        assert!(matches!(err, KeyStoreError::Contended { .. }), "{err}");
        let now = fs::read(s.ak()).unwrap();
        assert_eq!(now.len(), before_len + MAX_ATTEMPTS as usize * 8);
        assert!(
            now.starts_with(format!("{l}\n").as_bytes()),
            "our line still there"
        );
        no_temp_files(&s);
    }

    /// Issue 14, finding 9: the owner of `~/.ssh` holding an flock there
    /// (as a support login can) must not delay a revoke; the lock the
    /// store relies on lives in a directory only root may write.
    #[test]
    fn a_lock_held_in_the_users_ssh_dir_does_not_delay_removal() {
        if not_root("a_lock_held_in_the_users_ssh_dir_does_not_delay_removal") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let m = mark("12345", "1", 100);
        s.store().install(&s.acct, &line(ED25519, &m), &m).unwrap();
        let held = fs::File::open(s.ssh()).unwrap();
        let _held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (store, acct) = (s.store(), s.acct.clone());
        std::thread::spawn(move || {
            let _ = tx.send(store.remove(&acct, &|_| true).map_err(|e| e.to_string()));
        });
        // Generous: the old lock waited 30 s before giving up.
        let removed = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("removal waited for the user's lock");
        assert_eq!(removed.unwrap(), 1);
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN);
    }

    /// Issue 14, finding 10: a temp file a kill left in `~/.ssh` (it holds
    /// the new authorized_keys, support key included) is swept.
    #[test]
    fn sweep_removes_a_staged_file_left_by_a_kill() {
        if not_root("sweep_removes_a_staged_file_left_by_a_kill") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let left = s.ssh().join(".authorized_keys.supportauth-00112233aabb");
        fs::write(&left, b"ssh-ed25519 AAAA 12345_server_1@cpanel.net_1\n").unwrap();
        assert_eq!(s.store().sweep_staged(&s.acct).unwrap(), 1);
        assert!(!left.exists());
        no_temp_files(&s);
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN);
        assert_eq!(s.store().sweep_staged(&s.acct).unwrap(), 0);
    }

    #[test]
    fn racing_installs_serialise() {
        if not_root("racing_installs_serialise") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let store = Arc::new(s.store());
        let handles: Vec<_> = (1..=8)
            .map(|n| {
                let store = store.clone();
                let acct = s.acct.clone();
                std::thread::spawn(move || {
                    let m = mark("12345", &n.to_string(), 100);
                    store.install(&acct, &line(ED25519, &m), &m).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(store.list_ours(&s.acct).unwrap().len(), 8);
        assert!(fs::read(s.ak()).unwrap().ends_with(ADMIN));
        assert_eq!(store.remove(&s.acct, &|_| true).unwrap(), 8);
        assert_eq!(fs::read(s.ak()).unwrap(), ADMIN);
    }
}
