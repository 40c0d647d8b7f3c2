//! powerfs: a FUSE file system for the power-loss and disk-fault tests
//! (tests/e2e/powerfs.rs drives it; README "How crash safety is tested").
//! Not shipped: `cargo test` builds it as an example.
//!
//! Everything lives in memory twice: the live tree every call sees, and
//! the durable tree a power cut leaves, under the strict POSIX model: a
//! file's data and attributes become durable only by fsync/fdatasync of
//! that file, a name (create, mkdir, rename, unlink) only by fsync of its
//! directory (a name made durable before its file's data is an empty
//! file). The durable tree is written to the image file when the power is
//! cut (or on `sync`), and the next mount starts from it: a "reboot".
//!
//!   powerfs MOUNTPOINT IMAGE CONTROL_DIR
//!
//! Control (the harness writes CONTROL_DIR/ctl, sends SIGUSR2, and waits
//! for CONTROL_DIR/status to show the next `seq`); one command a line:
//!   cut after N     after the N-th fsync from now: make it durable, save
//!                   the image, then never answer again (the power is off)
//!   cut now         the power goes off now (e.g. right after an answer)
//!   cut flushed N   at the N-th fsync from now, before it: everything
//!                   written so far reached the disk (the most a crash
//!                   between fsync N-1 and N can leave), save, stop
//!   fail OP PREFIX NTH ERRNO TIMES
//!                   the NTH (1-based) OP under PREFIX (a path from the
//!                   mount's root) and the TIMES-1 next ones (0: all next
//!                   ones) fail with ERRNO (ENOSPC or EIO); OP is one of
//!                   write fsync rename open opendir create mkdir
//!   heal            no more failures
//!   sync            everything is durable now; save the image
//! status: `seq=S fsyncs=F injected=I cut=0|1` (fsyncs counted since the
//! last `cut`/`sync` command). A cut is final: the harness kills every
//! user of the mount, unmounts it and kills this process.
// A test tool writing its own image and status files (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
enum Body {
    File(Vec<u8>),
    Dir(#[serde(with = "entries")] BTreeMap<Vec<u8>, u64>),
}

/// A directory's names are bytes: a list of pairs in the image (JSON keys
/// must be strings).
mod entries {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<Vec<u8>, u64>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Vec<u8>, u64>, D::Error> {
        Ok(Vec::<(Vec<u8>, u64)>::deserialize(d)?.into_iter().collect())
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Node {
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    body: Body,
    /// Where the live tree has it (for fault paths); recomputed at load.
    #[serde(skip)]
    parent: u64,
    #[serde(skip)]
    name: Vec<u8>,
}

#[derive(Default, Serialize, Deserialize)]
struct Image {
    next_ino: u64,
    nodes: BTreeMap<u64, Node>,
}

enum Cut {
    After(u64),
    Flushed(u64),
}

struct Fault {
    op: String,
    prefix: Vec<u8>,
    nth: u64,
    errno: i32,
    times: u64,
    seen: u64,
}

struct State {
    live: BTreeMap<u64, Node>,
    durable: BTreeMap<u64, Node>,
    next_ino: u64,
    fsyncs: u64,
    injected: u64,
    cut: Option<Cut>,
    off: bool,
    faults: Vec<Fault>,
    seq: u64,
}

/// The session owns one handle, the control thread another.
#[derive(Clone)]
struct PowerFs {
    state: Arc<Mutex<State>>,
    image: PathBuf,
    control: PathBuf,
}

const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn attr(ino: u64, n: &Node) -> FileAttr {
    let (kind, size) = match &n.body {
        Body::File(d) => (FileType::RegularFile, d.len() as u64),
        Body::Dir(_) => (FileType::Directory, 4096),
    };
    let t = UNIX_EPOCH + Duration::from_secs(n.mtime);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm: (n.perm & 0o7777) as u16,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: n.uid,
        gid: n.gid,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

/// Only what is reachable from the root: a name never made durable takes
/// its file with it.
fn reachable(nodes: &BTreeMap<u64, Node>) -> BTreeMap<u64, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(ROOT, ROOT, Vec::new())];
    while let Some((ino, parent, name)) = todo.pop() {
        let Some(n) = nodes.get(&ino) else { continue };
        let mut n = n.clone();
        n.parent = parent;
        n.name = name;
        if let Body::Dir(entries) = &n.body {
            todo.extend(entries.iter().map(|(k, v)| (*v, ino, k.clone())));
        }
        out.insert(ino, n);
    }
    out
}

impl State {
    fn path(&self, ino: u64, name: Option<&OsStr>) -> Vec<u8> {
        let mut parts = Vec::new();
        if let Some(name) = name {
            parts.push(name.as_bytes().to_vec());
        }
        let mut cur = ino;
        while cur != ROOT {
            let Some(n) = self.live.get(&cur) else { break };
            parts.push(n.name.clone());
            cur = n.parent;
        }
        let mut p = Vec::new();
        for part in parts.iter().rev() {
            p.push(b'/');
            p.extend_from_slice(part);
        }
        p
    }

    /// The injected error for this call, if a fault says so.
    fn fault(&mut self, op: &str, ino: u64, name: Option<&OsStr>) -> Option<Errno> {
        let path = self.path(ino, name);
        // SQLite's -shm is the wal-index it maps as shared memory: a failed
        // write-back of it is FUSE's page cache being dropped under other
        // readers, not a disk error the daemon could see or handle.
        if path.ends_with(b"-shm") {
            return None;
        }
        for f in &mut self.faults {
            if f.op != op || !path.starts_with(&f.prefix) {
                continue;
            }
            f.seen += 1;
            if f.seen >= f.nth && (f.times == 0 || f.seen < f.nth + f.times) {
                self.injected += 1;
                return Some(Errno::from_i32(f.errno));
            }
        }
        None
    }

    fn save(&self, image: &PathBuf) {
        let img = Image {
            next_ino: self.next_ino,
            nodes: reachable(&self.durable),
        };
        let tmp = image.with_extension("tmp");
        let bytes = serde_json::to_vec(&img).expect("serialize image");
        std::fs::write(&tmp, bytes).expect("write image");
        std::fs::rename(&tmp, image).expect("rename image");
    }

    /// fsync of `ino`: its data, attributes and (a directory) its names
    /// become durable; a name's new file is durable empty until its own
    /// fsync.
    fn make_durable(&mut self, ino: u64) {
        let Some(n) = self.live.get(&ino).cloned() else {
            return;
        };
        if let Body::Dir(entries) = &n.body {
            for child in entries.values() {
                if !self.durable.contains_key(child) {
                    if let Some(c) = self.live.get(child) {
                        let mut shell = c.clone();
                        shell.body = match c.body {
                            Body::File(_) => Body::File(Vec::new()),
                            Body::Dir(_) => Body::Dir(BTreeMap::new()),
                        };
                        self.durable.insert(*child, shell);
                    }
                }
            }
        }
        self.durable.insert(ino, n);
    }

    fn status(&self, control: &std::path::Path) {
        let text = format!(
            "seq={} fsyncs={} injected={} cut={}\n",
            self.seq,
            self.fsyncs,
            self.injected,
            u8::from(self.off)
        );
        let tmp = control.join("status.tmp");
        std::fs::write(&tmp, text).expect("write status");
        std::fs::rename(&tmp, control.join("status")).expect("rename status");
    }

    fn command(&mut self, line: &str, image: &PathBuf) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["cut", "now"] => {
                self.save(image);
                self.off = true;
            }
            ["cut", kind, n] => {
                eprintln!("cut {kind} {n}");
                let n: u64 = n.parse().expect("cut N");
                self.fsyncs = 0;
                self.cut = Some(if *kind == "after" {
                    Cut::After(n)
                } else {
                    Cut::Flushed(n)
                });
            }
            ["fail", op, prefix, nth, errno, times] => self.faults.push(Fault {
                op: op.to_string(),
                prefix: prefix.as_bytes().to_vec(),
                nth: nth.parse().expect("fail NTH"),
                errno: match *errno {
                    "ENOSPC" => libc::ENOSPC,
                    "EIO" => libc::EIO,
                    other => panic!("errno {other}"),
                },
                times: times.parse().expect("fail TIMES"),
                seen: 0,
            }),
            ["heal"] => self.faults.clear(),
            ["sync"] => {
                self.durable = self.live.clone();
                self.fsyncs = 0;
                self.save(image);
            }
            [] => {}
            other => panic!("powerfs: unknown command {other:?}"),
        }
    }
}

impl PowerFs {
    /// Locks the state; a call after the power cut never returns.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.off {
            drop(st);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        st
    }

    fn new_node(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        perm: u32,
        body: Body,
    ) -> Result<FileAttr, Errno> {
        let mut st = self.lock();
        let op = if matches!(body, Body::Dir(_)) {
            "mkdir"
        } else {
            "create"
        };
        if let Some(e) = st.fault(op, parent, Some(name)) {
            return Err(e);
        }
        let ino = st.next_ino;
        let parent_node = st.live.get(&parent).ok_or(Errno::ENOENT)?;
        let Body::Dir(entries) = &parent_node.body else {
            return Err(Errno::ENOTDIR);
        };
        if entries.contains_key(name.as_bytes()) {
            return Err(Errno::EEXIST);
        }
        // setgid directories pass their group on, as on any Linux fs.
        let gid = if parent_node.perm & 0o2000 != 0 {
            parent_node.gid
        } else {
            req.gid()
        };
        let node = Node {
            perm,
            uid: req.uid(),
            gid,
            mtime: now(),
            body,
            parent,
            name: name.as_bytes().to_vec(),
        };
        let a = attr(ino, &node);
        st.next_ino += 1;
        st.live.insert(ino, node);
        if let Some(Node {
            body: Body::Dir(entries),
            mtime,
            ..
        }) = st.live.get_mut(&parent)
        {
            entries.insert(name.as_bytes().to_vec(), ino);
            *mtime = now();
        }
        Ok(a)
    }

    fn sync_call(&self, ino: u64, reply: ReplyEmpty) {
        let mut st = self.lock();
        if let Some(e) = st.fault("fsync", ino, None) {
            return reply.error(e);
        }
        st.fsyncs += 1;
        let n = st.fsyncs;
        // The log names every durability point (tests/e2e prints it).
        eprintln!("fsync {n} {}", String::from_utf8_lossy(&st.path(ino, None)));
        match st.cut {
            Some(Cut::Flushed(at)) if at == n => {
                st.durable = st.live.clone();
                self.power_off(st);
            }
            Some(Cut::After(at)) if at == n => {
                st.make_durable(ino);
                self.power_off(st);
            }
            _ => {
                st.make_durable(ino);
                reply.ok();
            }
        }
    }

    fn power_off(&self, mut st: std::sync::MutexGuard<'_, State>) -> ! {
        st.save(&self.image);
        st.off = true;
        st.status(&self.control);
        drop(st);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.lock();
        let found = match st.live.get(&parent.0).map(|n| &n.body) {
            Some(Body::Dir(e)) => e.get(name.as_bytes()).copied(),
            _ => None,
        };
        match found.and_then(|ino| st.live.get(&ino).map(|n| attr(ino, n))) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.lock();
        match st.live.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.lock();
        if size.is_some() {
            if let Some(e) = st.fault("write", ino.0, None) {
                return reply.error(e);
            }
        }
        let Some(n) = st.live.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.perm = m & 0o7777;
        }
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        if let (Some(s), Body::File(d)) = (size, &mut n.body) {
            d.resize(usize::try_from(s).unwrap_or(0), 0);
            n.mtime = now();
        }
        reply.attr(&TTL, &attr(ino.0, n));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let body = Body::Dir(BTreeMap::new());
        match self.new_node(req, parent.0, name, mode & !umask, body) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let body = Body::File(Vec::new());
        match self.new_node(req, parent.0, name, mode & !umask, body) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let target = match st.live.get(&parent.0).map(|n| &n.body) {
            Some(Body::Dir(e)) => e.get(name.as_bytes()).copied(),
            _ => None,
        };
        let Some(target) = target else {
            return reply.error(Errno::ENOENT);
        };
        let is_dir = matches!(st.live.get(&target).map(|n| &n.body), Some(Body::Dir(_)));
        if is_dir {
            return reply.error(Errno::EISDIR);
        }
        if let Some(Body::Dir(e)) = st.live.get_mut(&parent.0).map(|n| &mut n.body) {
            e.remove(name.as_bytes());
        }
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let target = match st.live.get(&parent.0).map(|n| &n.body) {
            Some(Body::Dir(e)) => e.get(name.as_bytes()).copied(),
            _ => None,
        };
        let Some(target) = target else {
            return reply.error(Errno::ENOENT);
        };
        match st.live.get(&target).map(|n| &n.body) {
            Some(Body::Dir(e)) if !e.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Some(Body::Dir(_)) => {}
            _ => return reply.error(Errno::ENOTDIR),
        }
        if let Some(Body::Dir(e)) = st.live.get_mut(&parent.0).map(|n| &mut n.body) {
            e.remove(name.as_bytes());
        }
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        if let Some(e) = st.fault("rename", parent.0, Some(name)) {
            return reply.error(e);
        }
        let entry = |st: &State, dir: u64, n: &OsStr| match st.live.get(&dir).map(|d| &d.body) {
            Some(Body::Dir(e)) => e.get(n.as_bytes()).copied(),
            _ => None,
        };
        let Some(ino) = entry(&st, parent.0, name) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(old) = entry(&st, newparent.0, newname) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            if let Some(Body::Dir(e)) = st.live.get(&old).map(|n| &n.body) {
                if !e.is_empty() {
                    return reply.error(Errno::ENOTEMPTY);
                }
            }
        } else if !flags.is_empty() && !flags.contains(RenameFlags::RENAME_NOREPLACE) {
            return reply.error(Errno::EINVAL);
        }
        if let Some(Body::Dir(e)) = st.live.get_mut(&parent.0).map(|n| &mut n.body) {
            e.remove(name.as_bytes());
        }
        if let Some(Body::Dir(e)) = st.live.get_mut(&newparent.0).map(|n| &mut n.body) {
            e.insert(newname.as_bytes().to_vec(), ino);
        }
        if let Some(n) = st.live.get_mut(&ino) {
            n.parent = newparent.0;
            n.name = newname.as_bytes().to_vec();
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        match st.fault("open", ino.0, None) {
            Some(e) => reply.error(e),
            None => reply.opened(FileHandle(0), FopenFlags::empty()),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        match st.fault("opendir", ino.0, None) {
            Some(e) => reply.error(e),
            None => reply.opened(FileHandle(0), FopenFlags::empty()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.lock();
        match st.live.get(&ino.0).map(|n| &n.body) {
            Some(Body::File(d)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(d.len());
                let end = start.saturating_add(size as usize).min(d.len());
                reply.data(&d[start..end]);
            }
            Some(Body::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock();
        if let Some(e) = st.fault("write", ino.0, None) {
            return reply.error(e);
        }
        let Some(n) = st.live.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Body::File(d) = &mut n.body else {
            return reply.error(Errno::EISDIR);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(data.len());
        if d.len() < end {
            d.resize(end, 0);
        }
        d[start..end].copy_from_slice(data);
        n.mtime = now();
        reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        self.sync_call(ino.0, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        self.sync_call(ino.0, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.lock();
        let Some(Node {
            body: Body::Dir(entries),
            parent,
            ..
        }) = st.live.get(&ino.0)
        else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut all = vec![
            (ino.0, FileType::Directory, b".".to_vec()),
            (*parent, FileType::Directory, b"..".to_vec()),
        ];
        for (name, child) in entries {
            let kind = match st.live.get(child).map(|n| &n.body) {
                Some(Body::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 16, 1 << 15, 4096, 255, 4096);
    }
}

/// Serves the control file: each SIGUSR2 runs its commands and bumps `seq`.
fn control_loop(fs: PowerFs) {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGUSR2);
    loop {
        if set.wait().is_err() {
            continue;
        }
        let text = std::fs::read_to_string(fs.control.join("ctl")).unwrap_or_default();
        let mut st = fs.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.off {
            continue;
        }
        for line in text.lines() {
            st.command(line, &fs.image);
        }
        st.seq += 1;
        st.status(&fs.control);
    }
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [mountpoint, image, control] = args.as_slice() else {
        eprintln!("usage: powerfs MOUNTPOINT IMAGE CONTROL_DIR");
        std::process::exit(2);
    };
    let img: Image = match std::fs::read(image) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("parse image"),
        Err(_) => {
            let root = Node {
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: now(),
                body: Body::Dir(BTreeMap::new()),
                parent: ROOT,
                name: Vec::new(),
            };
            Image {
                next_ino: ROOT + 1,
                nodes: BTreeMap::from([(ROOT, root)]),
            }
        }
    };
    let nodes = reachable(&img.nodes);
    let fs = PowerFs {
        state: Arc::new(Mutex::new(State {
            live: nodes.clone(),
            durable: nodes,
            next_ino: img.next_ino,
            fsyncs: 0,
            injected: 0,
            cut: None,
            off: false,
            faults: Vec::new(),
            seq: 0,
        })),
        image: image.clone(),
        control: control.clone(),
    };
    // SIGUSR2 is for the control thread only.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGUSR2);
    set.thread_block().expect("block SIGUSR2");
    let handle = fs.clone();
    std::thread::spawn(move || control_loop(handle));
    fs.state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .status(control);
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("powerfs".into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
    ];
    cfg.acl = SessionACL::All;
    if let Err(e) = fuser::mount(fs, mountpoint, &cfg) {
        eprintln!("powerfs: mount {}: {e}", mountpoint.display());
        std::process::exit(1);
    }
}
