//! The power-loss file system (examples/powerfs.rs) inside the sandbox:
//! one mount whose subdirectories are bound over the places the daemon
//! writes durably (its state directory, the audit log's /var/cpanel, and
//! the homes whose ~/.ssh it edits), so the daemon runs on it unchanged.
//! /etc (users, sudoers) stays on the sandbox's overlay: outside the
//! model, as if every write there were durable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd;

const DIR: &str = "/run/powerfs";

/// (subdirectory, where it is bound, mode).
const BINDS: &[(&str, &str, u32)] = &[
    ("ssh", "/root/.ssh", 0o700),
    ("home", "/home", 0o755),
    ("state", "/var/lib/supportauth", 0o700),
    ("cpanel", "/var/cpanel", 0o755),
];

/// The example binary `cargo test` builds next to the test binaries.
pub fn binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join("powerfs");
    p.is_file().then_some(p)
}

/// Why the power-loss scenarios cannot run here, if they cannot.
pub fn needs() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if binary().is_none() {
        return Some(
            "target/*/examples/powerfs is not built (`cargo test` builds it; \
             alone: `cargo build --example powerfs`)"
                .into(),
        );
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub seq: u64,
    pub fsyncs: u64,
    pub injected: u64,
    pub cut: bool,
}

/// One mount of powerfs from an image; [`PowerFs::power_off`] (or drop)
/// unmounts it and kills the process: only the image is left.
pub struct PowerFs {
    child: Option<Child>,
    seq: u64,
}

pub fn image() -> PathBuf {
    Path::new(DIR).join("image")
}

fn umount_lazy(p: &str) {
    let umount = cmd::tool(&["/usr/bin/umount", "/bin/umount"]);
    let _ = cmd::run(&umount, &["-l", p]);
}

impl PowerFs {
    /// Mounts the file system from [`image`] (empty if there is none) and
    /// binds its subdirectories over their places.
    pub fn mount() -> PowerFs {
        let dir = Path::new(DIR);
        let mnt = dir.join("mnt");
        let ctl = dir.join("ctl");
        for d in [dir, &mnt, &ctl] {
            std::fs::create_dir_all(d).expect("mkdir /run/powerfs");
        }
        let _ = std::fs::remove_file(ctl.join("status"));
        let bin = binary().expect("powerfs binary (see needs())");
        let child = Command::new(bin)
            .args([&mnt, &image(), &ctl])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(dir.join("powerfs.log"))
                    .expect("powerfs log"),
            )
            .spawn()
            .expect("start powerfs");
        let mut fs = PowerFs {
            child: Some(child),
            seq: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mnt) {
            assert!(
                Instant::now() < deadline,
                "powerfs did not mount:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        fs.seq = fs.status().seq;
        let mount = cmd::tool(&["/usr/bin/mount", "/bin/mount"]);
        for (sub, target, mode) in BINDS {
            let src = mnt.join(sub);
            if !src.exists() {
                super::sandbox::mkdir_mode(&src, *mode);
            }
            std::fs::create_dir_all(target).expect("bind target");
            cmd::run_ok(&mount, &["--bind", &src.display().to_string(), target]);
        }
        fs
    }

    pub fn status(&self) -> Status {
        let text = std::fs::read_to_string(Path::new(DIR).join("ctl/status")).unwrap_or_default();
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Status {
            seq: field("seq"),
            fsyncs: field("fsyncs"),
            injected: field("injected"),
            cut: field("cut") == 1,
        }
    }

    /// Runs control commands (see examples/powerfs.rs) and waits for them.
    pub fn control(&mut self, commands: &str) -> Status {
        let dir = Path::new(DIR).join("ctl");
        std::fs::write(dir.join("ctl"), commands).expect("write ctl");
        let pid = self.child.as_ref().expect("powerfs running").id();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).expect("signal powerfs");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.status();
            if st.seq > self.seq {
                self.seq = st.seq;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "powerfs did not run {commands:?}:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The power goes off: unmount everything (lazily: callers may hang in
    /// it) and kill the file system. Whoever still uses it must have been
    /// killed first; what is left is the image.
    pub fn power_off(&mut self) {
        for (_, target, _) in BINDS.iter().rev() {
            umount_lazy(target);
        }
        umount_lazy(&format!("{DIR}/mnt"));
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        self.power_off();
    }
}

fn is_mounted(p: &Path) -> bool {
    let want = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()) && l.contains("powerfs"))
}

pub fn log() -> String {
    std::fs::read_to_string(Path::new(DIR).join("powerfs.log")).unwrap_or_default()
}
