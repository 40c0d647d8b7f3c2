//! Power loss (issue 16): the daemon's state directory, the audit log's
//! /var/cpanel and the ~/.ssh it edits live on powerfs (see
//! `e2e/powerfs.rs`), which keeps only what was fsynced. For one operation
//! (a grant or a revoke, for root or a temporary user; a token change; an
//! expiry or a reconciliation repair, both done by the daemon's start-up;
//! see [`Op`]), the power is cut
//! at every fsync in turn, twice: right after it (the least a crash there
//! leaves) and just before the next one with every write so far on the
//! disk (the most). After each cut the machine "reboots" (the file system
//! is mounted from its durable image, the kernel's firewall is empty), the
//! daemon starts, and the invariants of `crash.rs` must hold.
//!
//! Each crash state starts from the same machine: the same image, and the
//! same /etc and firewall (they are outside the model: /etc is not on
//! powerfs, so what useradd/visudo wrote there counts as durable).
//!
//! Every cut point is run (about 1.5 s each), in CI too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::crash::{self, Who};
use super::mix;
use crate::e2e::cmd;
use crate::e2e::daemon::{self, result};
use crate::e2e::powerfs::{self, PowerFs};
use crate::e2e::sandbox::Sandbox;
use crate::e2e::scene::*;

pub const TICKET: u64 = 400;
/// The expiry sweep's ttl: the grant ends while the daemon is down.
const EXPIRY_TTL: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Grant,
    Revoke,
    /// `api_token_create` of token [`TOKEN`].
    Token,
    /// The daemon's start-up ends a grant whose ttl passed while it was
    /// down (the "call" is the start itself; "yes" is its `ready`).
    Expiry,
    /// The start-up reconciliation repairs drift: the admin deleted the
    /// grant's authorized_keys line by hand, so the grant is ended (and
    /// its key's WHM copy removed).
    Reconcile,
}

impl Op {
    /// The daemon's start is the operation.
    fn at_start(self) -> bool {
        matches!(self, Op::Expiry | Op::Reconcile)
    }
}

pub const TOKEN: &str = "powerloss";

/// Where the power goes off.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Right after the n-th fsync of the operation.
    After(u64),
    /// Just before the n-th fsync, with everything written so far durable.
    Flushed(u64),
    /// As soon as the answer is in (whatever the daemon does next is lost).
    Answered,
}

/// /etc files the tools change, and the firewall: restored before each
/// crash state (they are outside the power-loss model).
struct Machine {
    etc: Vec<(PathBuf, Option<Vec<u8>>)>,
    dropins: Vec<(PathBuf, Vec<u8>)>,
    ruleset: String,
}

const ETC_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
];

impl Machine {
    fn capture() -> Machine {
        let etc = ETC_FILES
            .iter()
            .map(|f| (PathBuf::from(f), std::fs::read(f).ok()))
            .collect();
        Machine {
            etc,
            dropins: dropins(),
            ruleset: cmd::run_ok(&nft_tool(), &["list", "ruleset"]),
        }
    }

    fn restore(&self) {
        for (f, bytes) in &self.etc {
            match bytes {
                Some(b) => std::fs::write(f, b).expect("restore /etc file"),
                None => {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        for (f, _) in dropins() {
            std::fs::remove_file(f).expect("remove drop-in");
        }
        for (f, b) in &self.dropins {
            std::fs::write(f, b).expect("restore drop-in");
        }
        reboot_firewall();
        if !self.ruleset.trim().is_empty() {
            cmd::run_ok_stdin(&nft_tool(), &["-f", "-"], self.ruleset.as_bytes());
        }
    }
}

fn dropins() -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir("/etc/sudoers.d")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("ticket"))
                .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// A reboot empties the kernel's firewall.
fn reboot_firewall() {
    cmd::run_ok(&nft_tool(), &["flush", "ruleset"]);
}

/// The machine every run starts from: the powerfs image, /etc and the
/// firewall, saved with the daemon stopped.
pub struct Baseline {
    machine: Machine,
    image: PathBuf,
}

impl Baseline {
    /// Saves the current machine; `fs` is unmounted.
    pub fn save(mut fs: PowerFs) -> Baseline {
        fs.control("sync");
        let image = Path::new("/run/powerfs/image.base").to_path_buf();
        std::fs::copy(powerfs::image(), &image).expect("save baseline");
        fs.power_off();
        Baseline {
            machine: Machine::capture(),
            image,
        }
    }

    /// Back to the saved machine, powerfs mounted (the daemon not started).
    pub fn restore(&self) -> PowerFs {
        std::fs::copy(&self.image, powerfs::image()).expect("baseline image");
        self.machine.restore();
        PowerFs::mount()
    }
}

/// The operation through the API: its answer, or why there is none.
pub fn call(scene: &Scene, op: Op, ticket: u64, user: &str) -> Result<serde_json::Value, String> {
    let t = ticket.to_string();
    match op {
        Op::Grant => scene.daemon.try_call(
            "ticket_grant",
            &[
                ("ticket_id", &t),
                ("server_num", "1"),
                ("ssh_key", &scene.support.public_line),
                ("access_ip-0", "127.0.0.1"),
            ],
        ),
        Op::Revoke => scene.daemon.try_call(
            "ticket_revoke",
            &[("ticket_id", &t), ("ssh_username", user)],
        ),
        Op::Token => scene.daemon.try_call(
            "api_token_create",
            &[("token_name", TOKEN), ("acl-0", "tickets-list")],
        ),
        Op::Expiry | Op::Reconcile => Err("the daemon's start has no call".into()),
    }
}

/// Whether token [`TOKEN`] is listed.
fn token_listed(scene: &Scene) -> bool {
    let data = scene.daemon.call_ok("api_token_list", &[]);
    data["tokens"].get(TOKEN).is_some()
}

fn readies(scene: &Scene) -> usize {
    scene
        .daemon
        .log()
        .lines()
        .filter(|l| l.ends_with(" ready"))
        .count()
}

/// What one run of the operation did.
struct Run {
    answered_yes: bool,
    cut: bool,
    fsyncs: u64,
}

struct Sweep {
    scene: Scene,
    who: Who,
    op: Op,
    user: String,
    base: Baseline,
}

impl Sweep {
    /// The operation, through the API; whether it answered "yes".
    fn call(&self) -> bool {
        call(&self.scene, self.op, TICKET, &self.user)
            .map(|v| result(&v) == 1)
            .unwrap_or(false)
    }

    /// From the baseline: mount, start the daemon, arm the cut, run the
    /// operation; if the power went off, kill the daemon (it hangs in the
    /// fsync that never returns) and leave the image for the reboot.
    fn run(&mut self, cut: Option<Cut>) -> Run {
        let mut fs = self.base.restore();
        let readies_before = readies(&self.scene);
        if !self.op.at_start() {
            self.scene.daemon.restart();
        }
        fs.control(&match cut {
            Some(Cut::After(n)) => format!("cut after {n}"),
            Some(Cut::Flushed(n)) => format!("cut flushed {n}"),
            None | Some(Cut::Answered) => "cut after 1000000000".into(),
        });
        if self.op.at_start() {
            self.scene.daemon.spawn_unready();
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        let cut_seen = std::sync::atomic::AtomicBool::new(false);
        let (answered_yes, st) = std::thread::scope(|s| {
            let caller = s.spawn(|| {
                let yes = if self.op.at_start() {
                    // The start is the operation: its "yes" is `ready`.
                    loop {
                        if readies(&self.scene) > readies_before {
                            break true;
                        }
                        if cut_seen.load(std::sync::atomic::Ordering::SeqCst) {
                            break false;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                } else {
                    self.call()
                };
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                yes
            });
            let mut late = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let st = fs.status();
                assert!(
                    Instant::now() < deadline,
                    "{:?}: neither an answer nor a cut after 60s ({st:?})\ndaemon log:\n{}\npowerfs log:\n{}",
                    self.op,
                    self.scene.daemon.log(),
                    powerfs::log()
                );
                if st.cut {
                    // The daemon hangs in an fsync the kernel waits for
                    // uninterruptibly: it dies once the file system is gone.
                    self.scene.daemon.kill_pid_9();
                    fs.power_off();
                    cut_seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    break;
                }
                let answered = done.load(std::sync::atomic::Ordering::SeqCst);
                if answered && matches!(cut, Some(Cut::Answered)) {
                    fs.control("cut now");
                    continue;
                }
                if answered {
                    // A background fsync may still come after the answer.
                    let since = *late.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let yes = caller.join().expect("caller");
            let st = fs.status();
            // Without a cut the status file is as old as the last command.
            (yes, if st.cut { st } else { fs.control("") })
        });
        if st.cut {
            self.scene.daemon.reap();
        } else {
            self.scene.daemon.kill9();
        }
        fs.power_off();
        Run {
            answered_yes,
            cut: st.cut,
            fsyncs: st.fsyncs,
        }
    }

    /// After a cut: reboot, start the daemon, check every invariant, then
    /// revoke what stands and require nothing to be left.
    fn reboot_and_check(&mut self, cut: Cut, run: &Run) {
        reboot_firewall();
        let _fs = PowerFs::mount();
        self.scene.daemon.restart();
        let ctx = format!(
            "{:?} {:?} cut {cut:?} (answered yes: {})",
            self.op, self.who, run.answered_yes
        );
        daemon::assert_audit_verifies();
        let listed = self.scene.listed(TICKET);
        let authed = listed.iter().any(|(_, s)| s == "AUTHED");
        match self.op {
            Op::Grant if run.answered_yes => {
                assert!(authed, "{ctx}: answered grant lost: {listed:?}")
            }
            Op::Revoke if run.answered_yes => assert!(!authed, "{ctx}: answered revoke undone"),
            // Its time is past, or its key gone: whatever the cut, the
            // start ends it.
            Op::Expiry | Op::Reconcile => {
                assert!(!authed, "{ctx}: the grant stands: {listed:?}")
            }
            Op::Token => {
                let listed = token_listed(&self.scene);
                if run.answered_yes {
                    assert!(listed, "{ctx}: the answered token is lost");
                }
                if listed {
                    self.scene
                        .daemon
                        .call_ok("api_token_revoke", &[("token_name", TOKEN)]);
                }
            }
            _ => {}
        }
        // Store, host and audit replay describe the same access.
        let access = mix::assert_converged(&self.scene, TICKET);
        assert_eq!(
            access.iter().any(|(t, _)| *t == TICKET),
            authed,
            "{ctx}: {access:?}"
        );
        eprintln!("power loss {ctx}: grant stands {authed}");
        if authed {
            crash::assert_login_works(&self.scene, &self.user);
            self.scene.revoke(TICKET, &self.user);
        } else {
            assert_no_firewall_trace();
        }
        crash::assert_converged(&self.scene, TICKET, &self.user);
        self.scene.daemon.kill9();
    }
}

/// The sweep for one operation; prints how many crash states it explored.
pub fn power_loss(sb: &Sandbox, who: Who, op: Op) {
    let _ = std::fs::remove_file(powerfs::image());
    let fs = PowerFs::mount();
    let mut scene = crash::scene(sb, who, None);
    let user = crash::login_user(who, TICKET);
    match op {
        Op::Revoke => {
            scene.grant(TICKET, &[]);
        }
        Op::Expiry => {
            scene.grant(TICKET, &[("ttl", EXPIRY_TTL.to_string())]);
        }
        Op::Reconcile => {
            scene.grant(TICKET, &[]);
        }
        _ => {}
    }
    // Down before the ttl passes (the expiry sweep's grant is still
    // active in the saved machine).
    scene.daemon.kill9();
    if op == Op::Reconcile {
        // The admin's hand edit (the file keeps its owner and mode).
        let text = std::fs::read_to_string(ROOT_KEYS).expect("root's keys");
        let kept: String = text
            .split_inclusive('\n')
            .filter(|l| !l.contains(&format!("{TICKET}_server_")))
            .collect();
        assert_ne!(kept, text, "the grant's line was not in {ROOT_KEYS}");
        std::fs::write(ROOT_KEYS, kept).expect("edit root's keys");
    }
    let base = Baseline::save(fs);
    if op == Op::Expiry {
        std::thread::sleep(Duration::from_secs(EXPIRY_TTL + 1));
    }
    let mut sweep = Sweep {
        scene,
        who,
        op,
        user,
        base,
    };
    let dry = sweep.run(None);
    eprintln!(
        "power loss {op:?} {who:?}: dry run, {} fsyncs; powerfs log (durability points):\n{}",
        dry.fsyncs,
        powerfs::log()
    );
    assert!(!dry.cut && dry.answered_yes, "{op:?} without a cut failed");
    assert!(dry.fsyncs > 0, "{op:?} made nothing durable");
    let mut states = 0;
    for n in 1..=dry.fsyncs {
        for cut in [Cut::After(n), Cut::Flushed(n)] {
            let run = sweep.run(Some(cut));
            if !run.cut {
                // The last fsyncs come after the answer (the call's own
                // audit record, the chain head) and their number varies
                // by one or two from run to run.
                assert!(
                    run.answered_yes && n + 2 >= dry.fsyncs,
                    "{op:?} {who:?}: cut {cut:?} never reached ({} fsyncs in the dry run)",
                    dry.fsyncs
                );
                eprintln!("power loss {op:?} {who:?}: no fsync {n} this time");
                continue;
            }
            sweep.reboot_and_check(cut, &run);
            states += 1;
        }
    }
    let run = sweep.run(Some(Cut::Answered));
    assert!(run.cut && run.answered_yes, "{op:?} {who:?}: no answer");
    sweep.reboot_and_check(Cut::Answered, &run);
    states += 1;
    eprintln!(
        "power loss {op:?} {who:?}: {} fsyncs, {states} crash states explored, every invariant held",
        dry.fsyncs
    );
}

pub fn grant_root(sb: &Sandbox) {
    power_loss(sb, Who::Root, Op::Grant);
}

pub fn grant_temp(sb: &Sandbox) {
    power_loss(sb, Who::Temp, Op::Grant);
}

pub fn revoke_root(sb: &Sandbox) {
    power_loss(sb, Who::Root, Op::Revoke);
}

pub fn revoke_temp(sb: &Sandbox) {
    power_loss(sb, Who::Temp, Op::Revoke);
}

pub fn token_change(sb: &Sandbox) {
    power_loss(sb, Who::Root, Op::Token);
}

pub fn expiry_temp(sb: &Sandbox) {
    power_loss(sb, Who::Temp, Op::Expiry);
}

pub fn reconcile_repair(sb: &Sandbox) {
    power_loss(sb, Who::Root, Op::Reconcile);
}
