//! The real `supportauth daemon` inside the sandbox, and its real CLI.
//! `root = "/"` is right here: every path the daemon writes (/etc, /root,
//! /home, /var, /run) is an overlay or tmpfs of the sandbox.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cmd;
use super::sandbox::Sandbox;

pub const CONFIG: &str = "/etc/supportauth/config.toml";
/// Overrides the binary under test (default: this package's own build).
pub const BIN_ENV: &str = "SUPPORTAUTH_E2E_BIN";

pub fn binary() -> PathBuf {
    std::env::var_os(BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_supportauth")))
}

/// What a scenario wants from the daemon's configuration.
pub struct DaemonSetup<'a> {
    /// The loopback port sshd listens on (for `sshd -T -C lport=`).
    pub sshd_port: u16,
    /// `firewall.backends`, e.g. "none" or "nftables".
    pub firewall: &'a str,
    pub reconcile_secs: u64,
    /// `logins.source`.
    pub logins: &'a str,
}

/// Writes /etc/supportauth/config.toml and checks it with the product's
/// own parser, so a harness mistake fails here and not as a daemon crash.
pub fn write_config(setup: &DaemonSetup) {
    let text = format!(
        "version = 1\n\
         root = \"/\"\n\
         [listen]\n\
         socket = \"/run/supportauth/supportauth.sock\"\n\
         tcp = []\n\
         [access]\n\
         support_ips = [\"127.0.0.1\"]\n\
         default_ttl_secs = 3600\n\
         sshd_host = \"e2e.test\"\n\
         sshd_laddr = \"127.0.0.1\"\n\
         sshd_lport = {}\n\
         reconcile_interval_secs = {}\n\
         [firewall]\n\
         backends = [\"{}\"]\n\
         [log]\n\
         level = \"info\"\n\
         journald = false\n\
         [logins]\n\
         source = \"{}\"\n",
        setup.sshd_port, setup.reconcile_secs, setup.firewall, setup.logins
    );
    std::fs::create_dir_all("/etc/supportauth").expect("mkdir /etc/supportauth");
    std::fs::write(CONFIG, &text).expect("write the daemon config");
    if let Err(e) = supportauth::config::Config::parse(&text, Path::new(CONFIG)) {
        panic!("the harness wrote an invalid daemon config: {e}\n{text}");
    }
}

pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
}

impl Daemon {
    /// Starts the daemon (with `SUPPORTAUTH_FAULT=fault` if given) and
    /// waits until it answers `ticket_list`.
    pub fn start(sb: &Sandbox, fault: Option<&str>) -> Daemon {
        let mut d = Daemon {
            child: None,
            log: sb.path("daemon.log"),
            starts: 0,
        };
        d.spawn(fault);
        d
    }

    /// Starts it again (after a crash or [`Daemon::stop`]), without fault.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running daemon");
        self.spawn(None);
    }

    /// `kill -9`, then starts it again armed with `step`, ready to serve.
    pub fn restart_armed(&mut self, step: &str) {
        self.kill9();
        self.spawn(Some(step));
    }

    /// Starts it again armed with `step` where the start-up itself (the
    /// reconciliation pass) reaches it, and waits for the kill.
    pub fn restart_killed_at(&mut self, step: &str) {
        assert!(self.child.is_none(), "restart of a running daemon");
        self.starts += 1;
        self.child = Some(
            self.command(Some(step))
                .spawn()
                .expect("start supportauth daemon"),
        );
        self.wait_killed();
    }

    /// Starts it again without waiting until it answers (its start-up
    /// may hang, e.g. on a file system whose power was cut).
    pub fn spawn_unready(&mut self) {
        assert!(self.child.is_none(), "restart of a running daemon");
        self.starts += 1;
        self.child = Some(
            self.command(None)
                .spawn()
                .expect("start supportauth daemon"),
        );
    }

    fn spawn(&mut self, fault: Option<&str>) {
        self.starts += 1;
        self.child = Some(
            self.command(fault)
                .spawn()
                .expect("start supportauth daemon"),
        );
        self.wait_ready();
    }

    fn command(&self, fault: Option<&str>) -> Command {
        // The fault points exist only in a build with the feature.
        assert!(
            fault.is_none() || cfg!(feature = "fault-injection"),
            "crash tests need the fault points: cargo test --features fault-injection"
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let mut c = Command::new(binary());
        c.args(["--config", CONFIG, "daemon"])
            .env_remove("SUPPORTAUTH_FAULT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if let Some(step) = fault {
            c.env("SUPPORTAUTH_FAULT", step);
        }
        c
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last;
        loop {
            match self.try_call("ticket_list", &[]) {
                Ok(v) if result(&v) == 1 => return,
                Ok(v) => last = v.to_string(),
                Err(e) => last = e,
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited at start ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon (start {}) not answering after 30s; last answer: {last}\n{}",
                self.starts,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `supportauth --json call FUNCTION name=value...`: the JSON answer,
    /// or why there is none (e.g. the daemon died mid-call).
    pub fn try_call(&self, function: &str, args: &[(&str, &str)]) -> Result<Value, String> {
        let mut argv: Vec<String> = vec![
            "--config".into(),
            CONFIG.into(),
            "--json".into(),
            "call".into(),
            function.into(),
        ];
        argv.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
        let out = cmd::run(&binary(), &argv);
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{function}: no JSON answer ({e}; {}): stdout {:?} stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// A call that must succeed (`metadata.result == 1`); returns `data`.
    pub fn call_ok(&self, function: &str, args: &[(&str, &str)]) -> Value {
        let v = self
            .try_call(function, args)
            .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", self.log()));
        assert_eq!(
            result(&v),
            1,
            "{function} {args:?} failed: {v}\ndaemon log:\n{}",
            self.log()
        );
        v.get("data").cloned().unwrap_or(Value::Null)
    }

    /// Waits (bounded) for the daemon to die by itself, as it does at a
    /// fault point, and checks it was SIGKILL.
    pub fn wait_killed(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("wait daemon") {
                assert_eq!(
                    st.signal(),
                    Some(9),
                    "daemon should have killed itself at the fault point, got {st}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fault point never reached:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` from outside through a shared reference (clients may be
    /// calling it meanwhile); [`Daemon::reap`] collects it afterwards.
    pub fn kill_pid_9(&self) {
        if let Some(c) = &self.child {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
        }
    }

    /// Waits for a daemon killed by [`Daemon::kill_pid_9`].
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// `kill -9` from outside.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn result(v: &Value) -> i64 {
    v.pointer("/metadata/result")
        .and_then(Value::as_i64)
        .unwrap_or(-1)
}

/// `supportauth audit verify` on the sandbox's audit log.
pub fn audit_verify() -> Output {
    cmd::run(&binary(), &["--config", CONFIG, "audit", "verify"])
}

pub fn assert_audit_verifies() {
    let out = audit_verify();
    assert!(
        out.status.success(),
        "audit verify failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
