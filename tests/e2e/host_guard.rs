//! Host invariance: a snapshot of everything the product could touch on
//! the machine running the tests, taken outside every namespace. Each outer
//! test compares the host after its sandbox died with the snapshot taken
//! before it started AND with the first snapshot of the whole run, so the
//! last test to finish checks "before the suite == after the suite".

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use super::cmd;

/// label -> bytes (file contents, directory listings, command output).
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<String, Vec<u8>>);

static SUITE_BASELINE: OnceLock<Snapshot> = OnceLock::new();

/// Files compared byte for byte.
const FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/ssh/sshd_config",
];

/// Directories compared recursively (names, owner, mode, contents).
const TREES: &[&str] = &["/etc/sudoers.d", "/root/.ssh", "/etc/supportauth"];

/// Paths whose mere existence (and, for directories, listing) is compared:
/// the sandbox creates them, the host must not get them.
const LISTINGS: &[&str] = &[
    "/home",
    "/var/cpanel",
    "/var/lib/supportauth",
    "/run/supportauth",
    "/etc/ssh",
    // What installing the package would leave on the host.
    "/usr/sbin/supportauth",
    "/usr/lib/systemd/system/supportauth.service",
    "/var/lib/dpkg/info/supportauth.list",
    "/etc/systemd/system/multi-user.target.wants",
];

impl Snapshot {
    pub fn capture() -> Snapshot {
        let mut m = BTreeMap::new();
        for f in FILES {
            m.insert(format!("file {f}"), read_or_error(Path::new(f)));
        }
        for t in TREES {
            walk(Path::new(t), &mut m);
        }
        for l in LISTINGS {
            m.insert(format!("listing {l}"), listing(Path::new(l)));
        }
        let nft = cmd::find_tool(&["/usr/sbin/nft", "/sbin/nft"]);
        let ruleset = match nft {
            Some(nft) => {
                let out = cmd::run(&nft, &["list", "ruleset"]);
                let mut v = format!("{}\n", out.status).into_bytes();
                v.extend_from_slice(&out.stdout);
                v.extend_from_slice(&out.stderr);
                v
            }
            None => b"nft not installed".to_vec(),
        };
        m.insert("nft list ruleset".into(), ruleset);
        Snapshot(m)
    }

    /// Snapshot of the given trees only (the guard's own test uses it on
    /// a tempdir).
    pub fn of_trees(trees: &[&Path]) -> Snapshot {
        let mut m = BTreeMap::new();
        for t in trees {
            walk(t, &mut m);
        }
        Snapshot(m)
    }

    /// Labels whose bytes differ between `self` (before) and `after`.
    pub fn differences(&self, after: &Snapshot) -> Vec<String> {
        let mut keys: Vec<&String> = self.0.keys().chain(after.0.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| self.0.get(*k) != after.0.get(*k))
            .map(|k| {
                format!(
                    "{k}:\n  before: {}\n  after:  {}",
                    show(k, self.0.get(k)),
                    show(k, after.0.get(k))
                )
            })
            .collect()
    }
}

/// Taken by every outer test before it starts its sandbox.
pub struct HostGuard {
    before: Snapshot,
}

impl HostGuard {
    pub fn capture() -> HostGuard {
        let before = Snapshot::capture();
        SUITE_BASELINE.get_or_init(|| before.clone());
        HostGuard { before }
    }

    /// Panics, naming every difference, if the host changed.
    pub fn assert_unchanged(&self, test: &str) {
        let now = Snapshot::capture();
        let mut diffs = self.before.differences(&now);
        if let Some(base) = SUITE_BASELINE.get() {
            diffs.extend(
                base.differences(&now)
                    .into_iter()
                    .map(|d| format!("(since suite start) {d}")),
            );
        }
        assert!(
            diffs.is_empty(),
            "HOST CHANGED by e2e test {test}:\n{}",
            diffs.join("\n")
        );
    }
}

fn read_or_error(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| format!("<{:?}>", e.kind()).into_bytes())
}

fn listing(p: &Path) -> Vec<u8> {
    match std::fs::read_dir(p) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.join("\n").into_bytes()
        }
        Err(e) => format!("<{:?}>", e.kind()).into_bytes(),
    }
}

fn walk(p: &Path, m: &mut BTreeMap<String, Vec<u8>>) {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(meta) => meta,
        Err(e) => {
            m.insert(
                format!("tree {}", p.display()),
                format!("<{:?}>", e.kind()).into_bytes(),
            );
            return;
        }
    };
    let head = format!(
        "mode {:o} uid {} gid {} size {}\n",
        meta.mode(),
        meta.uid(),
        meta.gid(),
        meta.len()
    );
    let mut v = head.into_bytes();
    if meta.is_dir() {
        v.extend_from_slice(&listing(p));
        m.insert(format!("tree {}", p.display()), v);
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.filter_map(|e| e.ok()) {
                walk(&e.path(), m);
            }
        }
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(p).map(|t| t.display().to_string());
        v.extend_from_slice(format!("-> {target:?}").as_bytes());
        m.insert(format!("tree {}", p.display()), v);
    } else {
        v.extend_from_slice(&read_or_error(p));
        m.insert(format!("tree {}", p.display()), v);
    }
}

fn show(label: &str, v: Option<&Vec<u8>>) -> String {
    match v {
        None => "<absent>".into(),
        // Never print password hashes into a test log.
        Some(b) if label.contains("shadow") => {
            use sha2::Digest;
            format!(
                "{} bytes, sha256 {}",
                b.len(),
                hex::encode(sha2::Sha256::digest(b))
            )
        }
        Some(b) => {
            let s = String::from_utf8_lossy(b);
            // Enough to locate the change without flooding the log with a
            // whole shadow file.
            let mut short: String = s.chars().take(300).collect();
            if s.chars().count() > 300 {
                short.push_str("...");
            }
            format!("{short:?}")
        }
    }
}
