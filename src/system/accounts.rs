//! Reading `passwd` and `group` directly (no libc NSS), so a scratch root
//! prefix sees its own files. Comments, blank and malformed lines are
//! skipped: they are not accounts as far as we are concerned.

use std::path::{Path, PathBuf};

use crate::types::Username;

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct AccountsError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// One `passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: Username,
    pub uid: u32,
    pub gid: u32,
    /// The GECOS / comment field.
    pub gecos: String,
    /// The home directory as written in passwd (not under the root prefix).
    pub home: PathBuf,
    pub shell: String,
}

/// One `group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parses passwd text; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines().filter_map(parse_passwd_line).collect()
}

fn parse_passwd_line(line: &str) -> Option<Account> {
    if line.trim().is_empty() || line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 7 {
        return None;
    }
    // Username::parse trims; a name with surrounding space is not a real one.
    if f[0].trim() != f[0] {
        return None;
    }
    Some(Account {
        name: Username::parse(f[0]).ok()?,
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        gecos: f[4].to_string(),
        home: PathBuf::from(f[5]),
        shell: f[6].to_string(),
    })
}

/// Parses group text; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines().filter_map(parse_group_line).collect()
}

fn parse_group_line(line: &str) -> Option<Group> {
    if line.trim().is_empty() || line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 4 || f[0].is_empty() || f[0].trim() != f[0] {
        return None;
    }
    Some(Group {
        name: f[0].to_string(),
        gid: f[2].parse().ok()?,
        members: f[3]
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// The account database at a pair of file paths (already under any root prefix).
#[derive(Debug, Clone)]
pub struct AccountFiles {
    pub passwd: PathBuf,
    pub group: PathBuf,
}

impl AccountFiles {
    pub fn new(passwd: impl Into<PathBuf>, group: impl Into<PathBuf>) -> Self {
        AccountFiles {
            passwd: passwd.into(),
            group: group.into(),
        }
    }

    pub fn accounts(&self) -> Result<Vec<Account>, AccountsError> {
        Ok(parse_passwd(&read(&self.passwd)?))
    }

    pub fn groups(&self) -> Result<Vec<Group>, AccountsError> {
        Ok(parse_group(&read(&self.group)?))
    }

    /// The first entry for `name` (what getpwnam would return).
    pub fn lookup(&self, name: &Username) -> Result<Option<Account>, AccountsError> {
        Ok(self.accounts()?.into_iter().find(|a| &a.name == name))
    }

    pub fn group_exists(&self, name: &str) -> Result<bool, AccountsError> {
        Ok(self.groups()?.iter().any(|g| g.name == name))
    }

    /// Names of the groups `name` is in: its primary group (by gid) first,
    /// then every group listing it as a member. Empty if no such user.
    pub fn groups_of(&self, name: &Username) -> Result<Vec<String>, AccountsError> {
        let Some(acct) = self.lookup(name)? else {
            return Ok(Vec::new());
        };
        let groups = self.groups()?;
        let mut out: Vec<String> = Vec::new();
        if let Some(g) = groups.iter().find(|g| g.gid == acct.gid) {
            out.push(g.name.clone());
        }
        for g in &groups {
            if g.members.iter().any(|m| m == name.as_str()) && !out.contains(&g.name) {
                out.push(g.name.clone());
            }
        }
        Ok(out)
    }
}

fn read(path: &Path) -> Result<String, AccountsError> {
    let bytes = std::fs::read(path).map_err(|source| AccountsError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

broken line without colons
too:few:fields
baduid:x:notanumber:1::/:/bin/sh
-evil:x:5:5::/:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
cp123.ssh:x:1001:1001:cPanel support ticket 123:/home/cp123.ssh:/bin/bash
root:x:0:0:duplicate:/nowhere:/bin/false
";
    const GROUP: &str = "\
root:x:0:
# comment
sudo:x:27:alice, cp123.ssh
wheel:x:10:
alice:x:1000:
cp123.ssh:x:1001:
garbage
nogid:x::alice
";

    fn files() -> (tempfile::TempDir, AccountFiles) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("group"), GROUP).unwrap();
        let f = AccountFiles::new(dir.path().join("passwd"), dir.path().join("group"));
        (dir, f)
    }

    fn u(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    #[test]
    fn parses_and_skips_malformed() {
        let names: Vec<String> = parse_passwd(PASSWD)
            .into_iter()
            .map(|a| a.name.to_string())
            .collect();
        assert_eq!(names, ["root", "daemon", "alice", "cp123.ssh", "root"]);
        let groups: Vec<String> = parse_group(GROUP).into_iter().map(|g| g.name).collect();
        assert_eq!(groups, ["root", "sudo", "wheel", "alice", "cp123.ssh"]);
    }

    #[test]
    fn lookup_first_entry_wins() {
        let (_d, f) = files();
        let root = f.lookup(&Username::root()).unwrap().unwrap();
        assert_eq!(root.home, Path::new("/root"));
        assert_eq!(root.gecos, "root");
        let cp = f.lookup(&u("cp123.ssh")).unwrap().unwrap();
        assert_eq!((cp.uid, cp.gid), (1001, 1001));
        assert_eq!(cp.shell, "/bin/bash");
        assert_eq!(cp.gecos, "cPanel support ticket 123");
        assert!(f.lookup(&u("nobody")).unwrap().is_none());
    }

    #[test]
    fn groups_and_membership() {
        let (_d, f) = files();
        assert_eq!(f.groups_of(&u("alice")).unwrap(), ["alice", "sudo"]);
        assert_eq!(f.groups_of(&u("cp123.ssh")).unwrap(), ["cp123.ssh", "sudo"]);
        assert_eq!(f.groups_of(&Username::root()).unwrap(), ["root"]);
        assert!(f.groups_of(&u("ghost")).unwrap().is_empty());
        assert!(f.group_exists("wheel").unwrap());
        assert!(!f.group_exists("admin").unwrap());
    }

    #[test]
    fn missing_file_names_the_path() {
        let f = AccountFiles::new("/nonexistent/passwd", "/nonexistent/group");
        let err = f.lookup(&Username::root()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/passwd"), "{err}");
    }
}
