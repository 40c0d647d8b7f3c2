//! The inner half: runs as pid 1 of fresh mount + net + pid namespaces and
//! turns them into a throwaway copy of the host. Writable overlays over
//! /etc, /root, /home and /var (upper layers in a tmpfs), fresh tmpfs on
//! /var/cpanel, /var/lib/supportauth, /run and /tmp, loopback up. Real
//! tools then change only the copy; the namespaces' end discards it all.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::cmd;

/// Host directory (empty, made by the outer test) that the inner run
/// covers with its tmpfs for the overlay layers.
pub const SCRATCH_ENV: &str = "SUPPORTAUTH_E2E_SCRATCH";
/// The outer process's namespace ids; the inner run refuses to mount
/// anything if its own are the same (it would change the host).
pub const HOST_NS_ENV: &str = "SUPPORTAUTH_E2E_HOST_NS";

/// The .deb under test (found by the outer run); copied into the sandbox
/// as [`DEB_INSIDE`] before /tmp is covered.
pub const DEB_ENV: &str = "SUPPORTAUTH_E2E_DEB";
pub const DEB_INSIDE: &str = "/run/e2e-bin/supportauth.deb";

/// Directories copied on write: the product and the tools write there
/// (/usr too: the package scenarios install into it).
const OVERLAID: &[&str] = &["/etc", "/root", "/home", "/var", "/usr"];

pub struct Sandbox {
    /// Private working directory (tmpfs, 0700) for keys, configs, logs.
    pub work: PathBuf,
}

/// "mnt:[id] net:[id] pid:[id]" of the calling process.
pub fn namespace_ids() -> String {
    ["mnt", "net", "pid"]
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/self/ns/{ns}"))
                .map(|t| t.display().to_string())
                .unwrap_or_else(|e| format!("{ns}:<{e}>"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sandbox {
    /// Builds the sandbox. Panics (before touching anything) unless this
    /// process really is in namespaces of its own.
    pub fn enter() -> Sandbox {
        assert_private_namespaces();
        assert_eq!(
            nix::unistd::getppid().as_raw(),
            1,
            "the scenario must run under the sandbox init"
        );
        // And pid 1 must be that init (this binary), not the host's.
        assert_eq!(
            std::fs::read_link("/proc/1/exe").ok(),
            std::env::current_exe().ok(),
            "pid 1 is not the sandbox init: refusing to mount anything"
        );
        let scratch = PathBuf::from(std::env::var(SCRATCH_ENV).expect("scratch dir from outer"));
        assert!(
            scratch.is_absolute() && scratch.is_dir(),
            "bad scratch {scratch:?}"
        );
        mount_tmpfs(&scratch, "0700");
        for dir in OVERLAID {
            overlay(Path::new(dir), &scratch);
        }
        for (dir, mode) in [("/var/cpanel", "0755"), ("/var/lib/supportauth", "0700")] {
            std::fs::create_dir_all(dir).expect("mkdir in the /var overlay");
            mount_tmpfs(Path::new(dir), mode);
        }
        mount_tmpfs(Path::new("/run"), "0755");
        // The binary under test may live under /tmp (a checkout there, as
        // in a CI clone): bind it into the sandbox before /tmp is covered.
        let bin = super::daemon::binary();
        let bin_dir = Path::new("/run/e2e-bin");
        mkdir_mode(bin_dir, 0o755);
        let inside = bin_dir.join("supportauth");
        std::fs::write(&inside, b"").expect("bind target for the binary");
        mount("none", "bind,ro", &bin.display().to_string(), &inside);
        std::env::set_var(super::daemon::BIN_ENV, &inside);
        if let Some(deb) = std::env::var_os(DEB_ENV) {
            std::fs::copy(&deb, DEB_INSIDE).expect("copy the .deb into the sandbox");
        }
        // The checkout itself may live under /tmp too (a CI clone): keep it
        // reachable, read-only, at its own path (the browser test runs its
        // script from there).
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
        let under_tmp = checkout.starts_with("/tmp");
        let saved = Path::new("/run/e2e-checkout");
        if under_tmp {
            mkdir_mode(saved, 0o755);
            mount("none", "bind,ro", &checkout.display().to_string(), saved);
        }
        mount_tmpfs(Path::new("/tmp"), "1777");
        if under_tmp {
            std::fs::create_dir_all(checkout).expect("the checkout's path in the new /tmp");
            mount("none", "bind,ro", &saved.display().to_string(), checkout);
        }
        mkdir_mode("/run/sshd", 0o755);
        let work = PathBuf::from("/run/e2e");
        mkdir_mode(&work, 0o700);
        let ip = cmd::tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]);
        cmd::run_ok(&ip, &["link", "set", "lo", "up"]);
        Sandbox { work }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

fn assert_private_namespaces() {
    let host = std::env::var(HOST_NS_ENV).expect("host namespace ids from outer");
    let host: Vec<&str> = host.split(' ').collect();
    let mine = namespace_ids();
    for id in mine.split(' ') {
        assert!(
            !host.contains(&id),
            "refusing to build the sandbox: namespace {id} is the host's ({host:?})"
        );
    }
}

/// Pid 1 of the sandbox: runs the scenario as its child (the same test
/// binary, same test) and reaps every process orphaned to it meanwhile,
/// as a real init does. Without this, the sshd session processes of ended
/// logins stay zombies owned by the user and `userdel` refuses to work.
/// When init returns, the kernel kills whatever is left in the namespace.
pub fn init(name: &str) {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;
    assert_private_namespaces();
    let exe = std::env::current_exe().expect("path of the test binary");
    // Reaped below by waitpid(-1) together with the orphans.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(exe)
        .args(super::outer::inner_test_args(name))
        .spawn()
        .expect("start the scenario under the sandbox init");
    let child = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    let verdict = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => break format!("exit code {code}"),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => break format!("signal {sig}"),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break format!("waitpid: {e}"),
        }
    };
    assert_eq!(
        verdict, "exit code 0",
        "scenario {name} failed in the sandbox"
    );
}

fn mount(fstype: &str, opts: &str, source: &str, target: &Path) {
    let mount = cmd::tool(&["/usr/bin/mount", "/bin/mount"]);
    let args: [&OsStr; 6] = [
        "-t".as_ref(),
        fstype.as_ref(),
        "-o".as_ref(),
        opts.as_ref(),
        source.as_ref(),
        target.as_os_str(),
    ];
    cmd::run_ok(&mount, &args);
}

/// A tmpfs of `bytes` at `at` (inside the sandbox's mount namespace): a
/// disk that really fills up.
pub fn mount_small_tmpfs(at: &Path, bytes: u64) {
    std::fs::create_dir_all(at).expect("mount point");
    let opts = format!("mode=0700,size={bytes}");
    mount("tmpfs", &opts, "e2e-small", at);
}

fn mount_tmpfs(at: &Path, mode: &str) {
    let opts = format!("mode={mode}");
    mount("tmpfs", &opts, "e2e", at);
}

fn overlay(dir: &Path, scratch: &Path) {
    let name = dir
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "_");
    let upper = scratch.join(format!("{name}.upper"));
    let work = scratch.join(format!("{name}.work"));
    std::fs::create_dir(&upper).expect("overlay upper dir");
    std::fs::create_dir(&work).expect("overlay work dir");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.display(),
        upper.display(),
        work.display()
    );
    mount("overlay", &opts, "overlay", dir);
}

pub fn mkdir_mode(p: impl AsRef<Path>, mode: u32) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(p.as_ref())
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", p.as_ref().display()));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.as_ref(), std::fs::Permissions::from_mode(mode))
        .expect("chmod (umask-proof)");
}

/// Uids of every process in the sandbox (its pid namespace has its own
/// /proc, so these are the sandbox's processes only).
pub fn process_uids() -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if let Some(uid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
        {
            found.push((pid, uid));
        }
    }
    found
}

/// Waits (bounded) until no process runs as `uid`, e.g. the sshd session
/// of a login that just ended.
pub fn wait_no_processes_of(uid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let left: Vec<u32> = process_uids()
            .into_iter()
            .filter(|(_, u)| *u == uid)
            .map(|(p, _)| p)
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes {left:?} of uid {uid} still running after 15s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Where journald's native socket appears once it runs.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Runs the real systemd-journald in the sandbox, with /dev/log pointing
/// at it, so syslog(3) callers (sshd, PAM) log to a journal here. /dev
/// becomes a private tmpfs first (the host's basic device nodes bound in,
/// a devpts of its own): the host's /dev is never written to.
pub fn start_journald() -> Journald {
    let journald = cmd::tool(&[
        "/usr/lib/systemd/systemd-journald",
        "/lib/systemd/systemd-journald",
    ]);
    let host_dev = Path::new("/run/e2e-hostdev");
    mkdir_mode(host_dev, 0o755);
    mount("none", "rbind", "/dev", host_dev);
    mount_tmpfs(Path::new("/dev"), "0755");
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let at = Path::new("/dev").join(node);
        std::fs::write(&at, b"").expect("bind target in /dev");
        mount(
            "none",
            "bind",
            &host_dev.join(node).display().to_string(),
            &at,
        );
    }
    mkdir_mode("/dev/pts", 0o755);
    mount(
        "devpts",
        "newinstance,ptmxmode=0666,mode=0620",
        "devpts",
        Path::new("/dev/pts"),
    );
    mkdir_mode("/dev/shm", 0o1777);
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/log", "/run/systemd/journal/dev-log"),
    ] {
        std::os::unix::fs::symlink(target, link).expect("symlink in /dev");
    }
    std::fs::create_dir_all("/run/systemd/journal").expect("mkdir /run/systemd/journal");
    let child = std::process::Command::new(&journald)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start systemd-journald");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !Path::new(JOURNAL_SOCKET).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "journald did not create {JOURNAL_SOCKET} in 15s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Journald(child)
}

/// The sandbox's journald; stopped when dropped.
pub struct Journald(std::process::Child);

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
