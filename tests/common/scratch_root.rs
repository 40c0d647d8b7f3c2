// Shared by the library's unit tests (src/testing.rs, via include!) and the
// integration tests (tests/common): a scratch root in which the real
// useradd/userdel/chpasswd (--prefix), visudo and sshd -T work without
// touching the machine. Plain std (and nix) only, so both can include it.

/// Why a test that runs the real useradd/visudo/sshd on a scratch root
/// cannot run here (the caller then reports it with `test_skip!`).
pub fn cannot_run_host_tools() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (useradd --prefix, chown, unshare -m)".into());
    }
    for tool in ["/usr/sbin/sshd", "/usr/sbin/useradd", "/usr/sbin/visudo", "/usr/bin/unshare", "/usr/bin/ssh-keygen"] {
        if !std::path::Path::new(tool).exists() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Fills `root` with copies of this host's account files, sudoers, skel,
/// an empty /root, an sshd_config (`sshd_body` appended) with its own host
/// key, and a wrapper that runs the real sshd with a private /run (sshd -T
/// needs /run/sshd, which exists only while sshd runs; creating it would
/// change the host). Returns the wrapper's path (use it as `tools.sshd`).
pub fn populate_scratch_root(root: &std::path::Path, sshd_body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    std::fs::create_dir_all(root.join("etc/default")).unwrap();
    mode(root, 0o755);
    for f in ["passwd", "group", "shadow", "gshadow", "login.defs", "default/useradd", "sudoers"] {
        let from = Path::new("/etc").join(f);
        if from.exists() {
            std::fs::copy(&from, root.join("etc").join(f)).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("etc/sudoers.d")).unwrap();
    mode(&root.join("etc/sudoers.d"), 0o750);
    let skel = root.join("etc/skel");
    std::fs::create_dir_all(&skel).unwrap();
    for e in std::fs::read_dir("/etc/skel").unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), skel.join(e.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("home")).unwrap();
    std::fs::create_dir_all(root.join("root")).unwrap();
    mode(&root.join("root"), 0o700);
    let ssh = root.join("etc/ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let key = ssh.join("ssh_host_ed25519_key");
    let st = std::process::Command::new("/usr/bin/ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(ssh.join("sshd_config"), format!("HostKey {}\n{sshd_body}\n", key.display())).unwrap();
    let wrapper = root.join("sshd-in-private-run");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nexec /usr/bin/unshare -m /bin/sh -c 'mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd \"$@\"' sshd \"$@\"\n",
    )
    .unwrap();
    mode(&wrapper, 0o755);
    wrapper
}
