//! Installing and removing support keys in a user's `~/.ssh`.
//!
//! Everything goes through [`CheckedDir`]: the home directory is reached by
//! an `openat(O_NOFOLLOW)` walk from the configured root, `~/.ssh` must be a
//! real directory owned by the user, and `authorized_keys` is rewritten
//! under an flock on `~/.ssh` with temp file + fsync + fchown/fchmod +
//! rename + directory fsync. The line editing itself is
//! [`crate::authorized_keys`], which keeps every foreign byte.
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
use crate::system::safefile::{CheckedDir, DirPolicy, SafeFileError};
use crate::types::Username;

const SSH_DIR: &str = ".ssh";
const AUTHORIZED_KEYS: &str = "authorized_keys";
/// Refuse files larger than this rather than load them into memory.
const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// How often we redo an edit because a foreign writer changed the file.
const MAX_ATTEMPTS: u32 = 5;
/// How long we wait for `~/.ssh`'s lock; the user owns the directory and
/// could hold a lock forever.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
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
    #[error("the key file was left unchanged: {reason}")]
    Abandoned { reason: String },
    #[error(
        "a key for ticket {ticket} server {server} is already present in {path}; revoke it first"
    )]
    SlotTaken {
        ticket: String,
        server: String,
        path: String,
    },
}

type Result<T> = std::result::Result<T, KeyStoreError>;

/// Called once, after an edit is staged and before the host changes (see
/// [`HostKeys::install_new`]); `Err` says why the edit must not happen.
pub type Gate<'a> = dyn FnMut() -> std::result::Result<(), String> + 'a;

/// Passes `gate` the first time only (an edit redone after a foreign write
/// does not wait again).
fn pass(gate: &mut Gate<'_>, passed: &mut bool) -> Result<()> {
    if !*passed {
        gate().map_err(|reason| KeyStoreError::Abandoned { reason })?;
        *passed = true;
    }
    Ok(())
}

/// How [`HostKeys::put_line`] treats the grant's slot and WHM's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Replace our line of the same slot, and write the copy WHM lists.
    Replace,
    /// A new grant: refuse a slot already taken; no copy (the caller
    /// writes it once the grant is settled).
    New,
}

/// What the engine needs from the host's key files (a fake in tests).
pub trait HostKeys: Send + Sync {
    fn list_ours(&self, acct: &KeyAccount) -> Result<Vec<InstalledKey>>;
    /// Idempotent per ticket+server: an existing line of the same slot is
    /// replaced, and the copy WHM lists is written with it.
    fn install(&self, acct: &KeyAccount, line: &str, mark: &KeyMark) -> Result<()> {
        self.put_line(acct, line, mark, Put::Replace, &mut || Ok(()))
    }
    /// Installs a new grant's key: refuses ([`KeyStoreError::SlotTaken`])
    /// when a key of ours for the same ticket and server is there already
    /// (left by someone else's hand), and calls `gate` once the new file
    /// is staged (written and fsynced under a temp name, which grants
    /// nothing) and before anything sshd reads changes. The caller records
    /// its intent in `gate`; an error from it abandons the install with
    /// the host unchanged. The copy WHM lists is left to the caller
    /// ([`write_copy`](Self::write_copy)), off the grant's answer path.
    fn install_new(
        &self,
        acct: &KeyAccount,
        line: &str,
        mark: &KeyMark,
        gate: &mut Gate<'_>,
    ) -> Result<()> {
        self.put_line(acct, line, mark, Put::New, gate)
    }
    /// Puts `line` in as `put` says, with `gate` as in
    /// [`install_new`](Self::install_new).
    fn put_line(
        &self,
        acct: &KeyAccount,
        line: &str,
        mark: &KeyMark,
        put: Put,
        gate: &mut Gate<'_>,
    ) -> Result<()>;
    /// Removes our lines (and key files) whose mark `select` picks; returns
    /// how many authorized_keys lines were removed.
    fn remove(&self, acct: &KeyAccount, select: &dyn Fn(&KeyMark) -> bool) -> Result<usize> {
        self.remove_gated(acct, select, &mut || Ok(()))
    }
    /// [`remove`](Self::remove) with a `gate` as in
    /// [`install_new`](Self::install_new).
    fn remove_gated(
        &self,
        acct: &KeyAccount,
        select: &dyn Fn(&KeyMark) -> bool,
        gate: &mut Gate<'_>,
    ) -> Result<usize>;
    /// Whether the copy WHM lists for `key` (one of ours) is in place with
    /// the right content.
    fn copy_intact(&self, acct: &KeyAccount, key: &InstalledKey) -> Result<bool>;
    /// Rewrites that copy, durably.
    fn write_copy(&self, acct: &KeyAccount, key: &InstalledKey) -> Result<()>;
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

fn slot_taken(acct: &KeyAccount, mark: &KeyMark) -> KeyStoreError {
    KeyStoreError::SlotTaken {
        ticket: mark.ticket.to_string(),
        server: mark.server.to_string(),
        path: authorized_keys_path(acct).display().to_string(),
    }
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
    /// Test hook run between staging and the re-read (simulates a racing
    /// foreign writer deterministically).
    before_commit: Option<Hook>,
}

impl std::fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyStore")
            .field("root", &self.root)
            .finish()
    }
}

impl FileKeyStore {
    /// `root` is the trusted root prefix the home paths lie under.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileKeyStore {
            root: root.into(),
            before_commit: None,
        }
    }

    #[cfg(test)]
    fn with_hook(mut self, hook: Hook) -> Self {
        self.before_commit = Some(hook);
        self
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
    /// `gate` is passed once the first version is staged (or found to need
    /// no change); `before_change` runs just before the rename (or that
    /// "no change" return), for the caller's own changes in the directory.
    /// Returns the value and whether authorized_keys was replaced (and the
    /// directory fsynced).
    fn edit_gated<R>(
        &self,
        ssh: &CheckedDir,
        acct: &KeyAccount,
        edit: &EditFn<R>,
        gate: &mut Gate<'_>,
        before_change: &mut dyn FnMut() -> Result<()>,
    ) -> Result<(R, bool)> {
        let mut passed = false;
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
                pass(gate, &mut passed)?;
                before_change()?;
                return Ok((value, false));
            };
            let staged = ssh.stage_file(AUTHORIZED_KEYS, &new, uid, gid, mode, None)?;
            // The caller's intent is recorded while the temp file was
            // written; the re-read below comes after the wait, so a foreign
            // write during it is seen.
            pass(gate, &mut passed)?;
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
            // Unreadable or odd files under our name are left for the admin.
            let Ok(Some(data)) = ssh.read_file(&name, acct.uid, 64 * 1024) else {
                continue;
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
    fn put_line(
        &self,
        acct: &KeyAccount,
        line: &str,
        mark: &KeyMark,
        put: Put,
        gate: &mut Gate<'_>,
    ) -> Result<()> {
        let bad = |reason: &str| bad_line(acct, reason);
        let ours = checked_line(acct, line, mark)?;
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
        let _lock = ssh.lock_within(LOCK_WAIT)?;
        // The copy WHM lists, removed with the key. It is derived from the
        // key line and grants nothing (sshd reads only authorized_keys), so
        // it gets no fsync of its own, which would cost a second journal
        // commit: it is renamed in (readers never see it half written) just
        // before authorized_keys, whose directory fsync makes its name
        // durable; a copy a power cut leaves empty is rewritten by the
        // reconciler (`copy_intact` / `write_copy`). An install that fails
        // after this point is rolled back by `remove`, which deletes it too.
        let mut copy = match put {
            Put::Replace => Some(
                ssh.stage_unsynced(
                    &key_file_name(mark),
                    copy_bytes(&ours.key, mark).as_bytes(),
                    acct.uid,
                    acct.gid,
                    0o600,
                )?
                .without_fsync(),
            ),
            Put::New => None,
        };
        self.edit_gated(
            &ssh,
            acct,
            &|bytes| {
                let (without, taken) = authorized_keys::remove_ours(bytes, &|m| m.same_slot(mark));
                if put == Put::New && taken > 0 {
                    return Err(slot_taken(acct, mark));
                }
                let new =
                    authorized_keys::add_line(&without, line).map_err(|e| bad(&e.to_string()))?;
                Ok((Some(new), ()))
            },
            gate,
            &mut || match copy.take() {
                Some(c) => Ok(c.rename_unsynced()?),
                None => Ok(()),
            },
        )?;
        Ok(())
    }

    fn list_ours(&self, acct: &KeyAccount) -> Result<Vec<InstalledKey>> {
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(Vec::new());
        };
        let bytes = Self::read_keys(&ssh, acct)?.unwrap_or_default();
        Ok(authorized_keys::list_ours(&bytes)
            .into_iter()
            .map(|o| InstalledKey {
                mark: o.mark,
                key: o.key,
                line: o.line,
            })
            .collect())
    }

    fn remove_gated(
        &self,
        acct: &KeyAccount,
        select: &dyn Fn(&KeyMark) -> bool,
        gate: &mut Gate<'_>,
    ) -> Result<usize> {
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            pass(gate, &mut false)?;
            return Ok(0);
        };
        let _lock = ssh.lock_within(LOCK_WAIT)?;
        // Key files go just before authorized_keys is renamed, without their
        // own directory fsync: the commit fsyncs the directory once for
        // everything.
        let mut files = 0;
        let (removed, replaced) = self.edit_gated(
            &ssh,
            acct,
            &|bytes| {
                let (new, n) = authorized_keys::remove_ours(bytes, select);
                Ok(((n > 0).then_some(new), n))
            },
            gate,
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
        let Some(ssh) = self.existing_ssh_dir(acct)? else {
            return Ok(());
        };
        let _lock = ssh.lock_within(LOCK_WAIT)?;
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
}

/// An in-memory [`HostKeys`] with the same editing rules, for tests of the
/// engine and planner that should not touch files.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    files: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

impl MemoryKeyStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn files(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The user's authorized_keys bytes, if any.
    pub fn bytes(&self, user: &Username) -> Option<Vec<u8>> {
        self.files().get(user.as_str()).cloned()
    }
    /// Seeds a user's authorized_keys (an admin's existing keys).
    pub fn set(&self, user: &Username, bytes: Vec<u8>) {
        self.files().insert(user.as_str().to_string(), bytes);
    }
}

impl HostKeys for MemoryKeyStore {
    fn put_line(
        &self,
        acct: &KeyAccount,
        line: &str,
        mark: &KeyMark,
        put: Put,
        gate: &mut Gate<'_>,
    ) -> Result<()> {
        checked_line(acct, line, mark)?;
        let old = self.bytes(&acct.user).unwrap_or_default();
        let (without, taken) = authorized_keys::remove_ours(&old, &|m| m.same_slot(mark));
        if put == Put::New && taken > 0 {
            return Err(slot_taken(acct, mark));
        }
        let new = authorized_keys::add_line(&without, line)
            .map_err(|e| bad_line(acct, &e.to_string()))?;
        pass(gate, &mut false)?;
        self.files().insert(acct.user.as_str().to_string(), new);
        Ok(())
    }

    fn list_ours(&self, acct: &KeyAccount) -> Result<Vec<InstalledKey>> {
        let bytes = self.bytes(&acct.user).unwrap_or_default();
        Ok(authorized_keys::list_ours(&bytes)
            .into_iter()
            .map(|o| InstalledKey {
                mark: o.mark,
                key: o.key,
                line: o.line,
            })
            .collect())
    }

    fn remove_gated(
        &self,
        acct: &KeyAccount,
        select: &dyn Fn(&KeyMark) -> bool,
        gate: &mut Gate<'_>,
    ) -> Result<usize> {
        pass(gate, &mut false)?;
        let mut files = self.files();
        let Some(old) = files.get(acct.user.as_str()) else {
            return Ok(0);
        };
        let (new, n) = authorized_keys::remove_ours(old, select);
        files.insert(acct.user.as_str().to_string(), new);
        Ok(n)
    }

    /// Keeps no copies: there is nothing for WHM to list here.
    fn copy_intact(&self, _acct: &KeyAccount, _key: &InstalledKey) -> Result<bool> {
        Ok(true)
    }

    fn write_copy(&self, _acct: &KeyAccount, _key: &InstalledKey) -> Result<()> {
        Ok(())
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
            FileKeyStore::new(&self.root)
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

    /// Every file in ~/.ssh with its bytes, to prove "unchanged".
    fn ssh_files(s: &Scratch) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = fs::read_dir(s.ssh())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn install_new_waits_for_its_gate_and_a_refusing_gate_changes_nothing() {
        if not_root("install_new_waits_for_its_gate_and_a_refusing_gate_changes_nothing") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let m = mark("12345", "1", 100);
        let l = line(ED25519, &m);
        let before = ssh_files(&s);
        // The gate runs once the new file is staged and before sshd's file
        // changes: at that moment the target is still the admin's.
        let ak = s.ak();
        let mut seen = Vec::new();
        let err = s
            .store()
            .install_new(&s.acct, &l, &m, &mut || {
                seen.push(fs::read(&ak).unwrap());
                Err("intent not recorded".into())
            })
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::Abandoned { .. }), "{err}");
        assert_eq!(
            seen,
            vec![ADMIN.to_vec()],
            "gate called once, before any change"
        );
        assert_eq!(ssh_files(&s), before, "no key, no copy, no temp file");

        let mut calls = 0;
        s.store()
            .install_new(&s.acct, &l, &m, &mut || {
                calls += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(calls, 1);
        let mut expected = format!("{l}\n").into_bytes();
        expected.extend_from_slice(ADMIN);
        assert_eq!(fs::read(s.ak()).unwrap(), expected);
        assert!(
            !s.ssh().join(key_file_name(&m)).exists(),
            "WHM's copy is the caller's"
        );
        no_temp_files(&s);
    }

    #[test]
    fn install_new_refuses_a_taken_slot_before_its_gate() {
        if not_root("install_new_refuses_a_taken_slot_before_its_gate") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let old = mark("12345", "1", 100);
        s.store()
            .install(&s.acct, &line(ED25519, &old), &old)
            .unwrap();
        let before = ssh_files(&s);
        let new = mark("12345", "1", 200);
        let mut called = false;
        let err = s
            .store()
            .install_new(&s.acct, &line(RSA2048, &new), &new, &mut || {
                called = true;
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::SlotTaken { .. }), "{err}");
        assert!(!called, "refused before the caller records anything");
        assert_eq!(ssh_files(&s), before);
        // Another server of the same ticket is another slot.
        let other = mark("12345", "2", 200);
        s.store()
            .install_new(&s.acct, &line(RSA2048, &other), &other, &mut || Ok(()))
            .unwrap();
        assert_eq!(s.store().list_ours(&s.acct).unwrap().len(), 2);
    }

    #[test]
    fn remove_gated_changes_nothing_before_its_gate_and_passes_it_once() {
        if not_root("remove_gated_changes_nothing_before_its_gate_and_passes_it_once") {
            return;
        }
        let s = Scratch::new();
        s.seed(ADMIN);
        let m = mark("12345", "1", 100);
        s.store().install(&s.acct, &line(ED25519, &m), &m).unwrap();
        let before = ssh_files(&s);
        let ssh = s.ssh();
        let mut seen = Vec::new();
        // A foreign append during the first attempt makes the edit redo;
        // the gate (the caller's intent) is still passed only once.
        let ak = s.ak();
        let store = s.store().with_hook(Box::new(move |attempt| {
            if attempt == 0 {
                use std::io::Write;
                let mut f = fs::OpenOptions::new().append(true).open(&ak).unwrap();
                f.write_all(b"# added meanwhile\n").unwrap();
            }
        }));
        let n = store
            .remove_gated(&s.acct, &|k| k.same_slot(&m), &mut || {
                let mut now: Vec<_> = fs::read_dir(&ssh)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                now.sort();
                seen.push(now);
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
        let names: Vec<String> = before.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            seen,
            vec![names],
            "gate once, with key file and key still there"
        );
        let mut expected = ADMIN.to_vec();
        expected.extend_from_slice(b"# added meanwhile\n");
        assert_eq!(fs::read(s.ak()).unwrap(), expected);
        assert!(!s.ssh().join(key_file_name(&m)).exists());
        no_temp_files(&s);

        // A refusing gate leaves everything as it was.
        s.store().install(&s.acct, &line(ED25519, &m), &m).unwrap();
        let before = ssh_files(&s);
        let err = s
            .store()
            .remove_gated(&s.acct, &|_| true, &mut || Err("no".into()))
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::Abandoned { .. }), "{err}");
        assert_eq!(ssh_files(&s), before);
    }

    #[test]
    fn memory_store_follows_the_same_rules() {
        let store = MemoryKeyStore::new();
        let acct = KeyAccount {
            user: Username::root(),
            uid: 0,
            gid: 0,
            home: PathBuf::from("/root"),
        };
        store.set(&acct.user, ADMIN.to_vec());
        let m = mark("12345", "1", 100);
        store.install(&acct, &line(ED25519, &m), &m).unwrap();
        store.install(&acct, &line(ED25519, &m), &m).unwrap();
        assert_eq!(store.list_ours(&acct).unwrap().len(), 1);
        assert!(store.install(&acct, ED25519, &m).is_err());
        assert_eq!(store.remove(&acct, &|_| true).unwrap(), 1);
        assert_eq!(store.bytes(&acct.user).unwrap(), ADMIN);
        // install_new: a taken slot is refused, a refusing gate abandons.
        store.install(&acct, &line(ED25519, &m), &m).unwrap();
        let err = store
            .install_new(&acct, &line(ED25519, &m), &m, &mut || Ok(()))
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::SlotTaken { .. }), "{err}");
        let other = mark("12345", "2", 100);
        let err = store
            .install_new(&acct, &line(ED25519, &other), &other, &mut || {
                Err("no".into())
            })
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::Abandoned { .. }), "{err}");
        assert_eq!(store.list_ours(&acct).unwrap().len(), 1);
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
