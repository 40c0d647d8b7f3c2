//! Following a log file across rotation: the position is (inode, offset),
//! stored by the watcher with what it audited, so a restart resumes exactly
//! where it stopped.
//!
//! - Renamed away (logrotate's default, rsyslog's `auth.log` -> `auth.log.1`):
//!   the open file is read to its end, then the new file from its start. A
//!   stored inode found at `<path>.1` after a restart is finished there first.
//! - Truncated in place (`copytruncate`): the size is below the offset;
//!   reading starts again at 0.
//! - First start (nothing stored): from the end; history is not audited.
//!
//! Only whole lines are returned; a line longer than the read budget is
//! skipped (it is not sshd's).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the watcher has read a file up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// Where the watcher has read its source up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    File(Position),
    /// The journal's cursor of the last entry read.
    Cursor(String),
    /// The journal from this Unix time on (no entry read yet).
    Since(i64),
}

struct Open {
    file: File,
    inode: u64,
    offset: u64,
}

pub struct FileFollower {
    path: PathBuf,
    saved: Option<Position>,
    open: Option<Open>,
}

/// Most bytes read per poll (a burst of log lines is read over several).
pub const READ_BUDGET: usize = 256 * 1024;

impl FileFollower {
    pub fn new(path: &Path, saved: Option<Position>) -> FileFollower {
        FileFollower {
            path: path.to_path_buf(),
            saved,
            open: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the next read starts (None until the file was opened).
    pub fn position(&self) -> Option<Position> {
        self.open.as_ref().map(|o| Position {
            inode: o.inode,
            offset: o.offset,
        })
    }

    /// The new whole lines, each with the position just after it.
    pub fn poll(&mut self) -> io::Result<Vec<(String, Position)>> {
        if self.open.is_none() {
            match self.first_open()? {
                Some(o) => self.open = Some(o),
                None => return Ok(Vec::new()),
            }
        }
        let mut lines = Vec::new();
        let mut budget = READ_BUDGET;
        // Two rounds at most: the end of a rotated file, then the new one.
        for _ in 0..2 {
            let Some(open) = self.open.as_mut() else {
                break;
            };
            let len = open.file.metadata()?.len();
            if len < open.offset {
                tracing::warn!(path = %self.path.display(), "the log was truncated; reading it from its start");
                open.offset = 0;
            }
            let got = read_lines(open, budget, &mut lines)?;
            budget = budget.saturating_sub(got);
            if budget == 0 || open.offset < open.file.metadata()?.len() {
                break;
            }
            // At the end: has the path moved on to a new file?
            match std::fs::metadata(&self.path) {
                Ok(m) if m.ino() != open.inode => match open_nofollow(&self.path) {
                    Ok(file) => {
                        let inode = file.metadata()?.ino();
                        self.open = Some(Open {
                            file,
                            inode,
                            offset: 0,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                },
                _ => break,
            }
        }
        if let Some(last) = lines.last() {
            self.saved = Some(last.1);
        }
        Ok(lines)
    }

    /// Opens where the stored position points (or the rotated file that
    /// holds it), else the current file (from its end on a first start).
    fn first_open(&mut self) -> io::Result<Option<Open>> {
        let current = match open_nofollow(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = current.metadata()?;
        let Some(saved) = self.saved else {
            return Ok(Some(Open {
                file: current,
                inode: meta.ino(),
                offset: meta.len(),
            }));
        };
        if saved.inode == meta.ino() {
            return Ok(Some(Open {
                file: current,
                inode: meta.ino(),
                offset: saved.offset,
            }));
        }
        let mut rotated = self.path.as_os_str().to_owned();
        rotated.push(".1");
        if let Ok(old) = open_nofollow(Path::new(&rotated)) {
            if old.metadata()?.ino() == saved.inode {
                return Ok(Some(Open {
                    file: old,
                    inode: saved.inode,
                    offset: saved.offset,
                }));
            }
        }
        tracing::warn!(
            path = %self.path.display(),
            "the log file read last is gone (rotated more than once while stopped?); reading the current one from its start"
        );
        Ok(Some(Open {
            file: current,
            inode: meta.ino(),
            offset: 0,
        }))
    }
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

/// Reads whole lines from `open.offset` (at most `budget` bytes), moving
/// the offset past them; returns the bytes consumed.
fn read_lines(
    open: &mut Open,
    budget: usize,
    out: &mut Vec<(String, Position)>,
) -> io::Result<usize> {
    let mut buf = vec![0u8; budget];
    let mut filled = 0;
    while filled < buf.len() {
        let n = open
            .file
            .read_at(&mut buf[filled..], open.offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let data = &buf[..filled];
    let Some(last_nl) = memchr::memrchr(b'\n', data) else {
        if filled == buf.len() {
            // One line longer than the whole budget: not sshd's; skip it.
            open.offset += filled as u64;
            return Ok(filled);
        }
        return Ok(0);
    };
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &data[..=last_nl]) {
        let line = String::from_utf8_lossy(&data[start..end]).into_owned();
        start = end + 1;
        out.push((
            line,
            Position {
                inode: open.inode,
                offset: open.offset + start as u64,
            },
        ));
    }
    open.offset += start as u64;
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn texts(v: &[(String, Position)]) -> Vec<&str> {
        v.iter().map(|(l, _)| l.as_str()).collect()
    }

    #[test]
    fn first_start_skips_history_then_follows_whole_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.log");
        append(&p, "old\n");
        let mut f = FileFollower::new(&p, None);
        assert!(f.poll().unwrap().is_empty());
        append(&p, "a\nb\npart");
        let got = f.poll().unwrap();
        assert_eq!(texts(&got), ["a", "b"]);
        assert_eq!(got[1].1.offset, 8);
        append(&p, "ial\n");
        assert_eq!(texts(&f.poll().unwrap()), ["partial"]);
    }

    #[test]
    fn resumes_at_a_stored_position_and_survives_rename_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.log");
        append(&p, "one\ntwo\n");
        let inode = std::fs::metadata(&p).unwrap().ino();
        let mut f = FileFollower::new(&p, Some(Position { inode, offset: 4 }));
        assert_eq!(texts(&f.poll().unwrap()), ["two"]);
        // Rotated while open: the rest of the old file, then the new one.
        append(&p, "three\n");
        std::fs::rename(&p, d.path().join("auth.log.1")).unwrap();
        append(&p, "four\n");
        let got = f.poll().unwrap();
        assert_eq!(texts(&got), ["three", "four"]);
        let pos = got[1].1;
        // A restart after another rotation: the stored file is now .1.
        append(&p, "five\n");
        std::fs::rename(&p, d.path().join("auth.log.1")).unwrap();
        append(&p, "six\n");
        let mut f = FileFollower::new(&p, Some(pos));
        assert_eq!(texts(&f.poll().unwrap()), ["five", "six"]);
    }

    #[test]
    fn truncation_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secure");
        let mut f = FileFollower::new(&p, None);
        assert!(f.poll().unwrap().is_empty());
        append(&p, "");
        assert!(f.poll().unwrap().is_empty());
        append(&p, "a long line\n");
        assert_eq!(texts(&f.poll().unwrap()), ["a long line"]);
        // copytruncate
        std::fs::write(&p, "").unwrap();
        append(&p, "b\n");
        assert_eq!(texts(&f.poll().unwrap()), ["b"]);
    }

    #[test]
    fn a_monster_line_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.log");
        append(&p, "");
        let mut f = FileFollower::new(&p, None);
        f.poll().unwrap();
        append(&p, &"x".repeat(READ_BUDGET + 10));
        append(&p, "\nok\n");
        let mut all = Vec::new();
        for _ in 0..3 {
            all.extend(f.poll().unwrap());
        }
        assert_eq!(all.last().map(|l| l.0.as_str()), Some("ok"));
        assert!(all.iter().all(|(l, _)| l.len() < 20));
    }
}
