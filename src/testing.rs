//! Test support: a realistic scratch root copied from this host, in which
//! the real useradd/userdel/chpasswd (with --prefix), visudo and sshd -T
//! work without touching the machine running the tests.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// A scratch root with its own passwd/shadow/group, sudoers, skel, /root,
/// sshd_config and sshd host key.
pub struct ScratchRoot {
    pub dir: tempfile::TempDir,
    pub cfg: Config,
}

include!("../tests/common/scratch_root.rs");

impl ScratchRoot {
    /// Builds the scratch root; `sshd_body` is appended to sshd_config
    /// (global options first, then any Match blocks).
    pub fn new(sshd_body: &str) -> ScratchRoot {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let wrapper = populate_scratch_root(&root, sshd_body);
        let mut cfg = Config {
            root: root.clone(),
            ..Config::default()
        };
        cfg.tools.sshd = wrapper;
        cfg.access.sshd_host = "scratch.example".into();
        cfg.access.sshd_lport = 22;
        cfg.firewall.backends = vec!["none".into()];
        ScratchRoot { dir, cfg }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_default()
    }

    /// Every file under the scratch root except the state and audit log,
    /// for "the host is byte-for-byte unchanged" assertions. shadow's own
    /// backup files (`passwd-`, `shadow-`, ...) and its lock file are left
    /// out: useradd/userdel rewrite them on every change by design, exactly
    /// as on a real host.
    pub fn snapshot(&self) -> Snapshot {
        let mut out = std::collections::BTreeMap::new();
        let skip = [
            self.cfg.state_dir(),
            self.cfg.audit_log_path().parent().unwrap().to_path_buf(),
        ];
        fn walk(
            dir: &Path,
            skip: &[PathBuf],
            out: &mut std::collections::BTreeMap<PathBuf, (Vec<u8>, u32)>,
        ) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if skip.iter().any(|s| p.starts_with(s))
                    || name.ends_with('-')
                    || name == ".pwd.lock"
                {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&p).unwrap();
                let mode = std::os::unix::fs::MetadataExt::mode(&meta);
                if meta.is_dir() {
                    out.insert(p.clone(), (Vec::new(), mode));
                    walk(&p, skip, out);
                } else {
                    out.insert(p.clone(), (std::fs::read(&p).unwrap_or_default(), mode));
                }
            }
        }
        walk(self.dir.path(), &skip, &mut out);
        Snapshot(out)
    }
}

/// File contents and modes under a scratch root.
#[derive(PartialEq, Eq)]
pub struct Snapshot(std::collections::BTreeMap<PathBuf, (Vec<u8>, u32)>);

impl std::fmt::Debug for Snapshot {
    /// Paths and sizes only: contents would drown the failure message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|(p, (b, m))| format!("{} {:o} {}B", p.display(), m, b.len())),
            )
            .finish()
    }
}

impl Snapshot {
    /// The paths that differ between two snapshots.
    pub fn diff(&self, other: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (p, v) in &self.0 {
            match other.0.get(p) {
                None => out.push(format!("- {}", p.display())),
                Some(w) if w != v => out.push(format!("~ {}", p.display())),
                _ => {}
            }
        }
        for p in other.0.keys() {
            if !self.0.contains_key(p) {
                out.push(format!("+ {}", p.display()));
            }
        }
        out
    }
}

/// A fresh Ed25519 public key line made by the real ssh-keygen.
pub fn fresh_key(dir: &Path, name: &str) -> String {
    let key = dir.join(name);
    let st = std::process::Command::new("/usr/bin/ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "support@example"])
        .arg("-f")
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}
