//! Which backends this host runs: `firewall.backends = ["auto"]` probes,
//! an explicit list is used as given (iptables is still skipped while CSF
//! is active, because CSF owns iptables and rewrites it on every restart).

use std::path::{Path, PathBuf};

use super::cphulk::Cphulk;
use super::csf::Csf;
use super::firewalld::Firewalld;
use super::hosts_allow::HostsAllow;
use super::iptables::{Family, Iptables};
use super::nft::Nft;
use super::Backend;
use crate::config::Config;
use crate::system::exec;

/// CSF is active when its directory exists without `csf.disable`.
pub fn csf_active(cfg: &Config) -> bool {
    let dir = cfg.host_path(&cfg.paths.csf_dir);
    dir.is_dir() && !dir.join("csf.disable").exists()
}

pub fn csf_allow_path(cfg: &Config) -> PathBuf {
    cfg.host_path(&cfg.paths.csf_dir).join("csf.allow")
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn make_nft(cfg: &Config) -> Nft {
    Nft {
        tool: cfg.tools.nft.clone(),
        table: cfg.firewall.nft_table.clone(),
    }
}

fn make_firewalld(cfg: &Config) -> Firewalld {
    Firewalld {
        cmd: cfg.tools.firewall_cmd.clone(),
        offline: cfg.tools.firewall_offline_cmd.clone(),
        system_config: (!cfg.is_real_root()).then(|| cfg.host_path(Path::new("/etc/firewalld"))),
        base: cfg.firewall.nft_table.clone(),
    }
}

fn make_iptables(cfg: &Config) -> Iptables {
    let mut families = vec![Family {
        tool: cfg.tools.iptables.clone(),
        v6: false,
    }];
    if cfg.tools.ip6tables.exists() {
        families.push(Family {
            tool: cfg.tools.ip6tables.clone(),
            v6: true,
        });
    }
    Iptables {
        chain: cfg.firewall.iptables_chain.clone(),
        families,
    }
}

/// Whether iptables holds anything beyond empty ACCEPT-policy built-ins
/// (someone uses it), or our chain is already there.
fn iptables_in_use(tool: &Path, chain: &str) -> bool {
    if !tool.exists() {
        return false;
    }
    match exec::run(tool, ["-w", "5", "-S"], None) {
        Ok(out) => out.stdout.lines().any(|l| {
            let l = l.trim();
            !(l.is_empty() || l.starts_with("-P ") && l.ends_with(" ACCEPT")) || l.contains(chain)
        }),
        Err(_) => false,
    }
}

/// The backends to run, in the order they are applied.
pub(crate) fn backends(cfg: &Config) -> Vec<Box<dyn Backend>> {
    let names: Vec<&str> = cfg.firewall.backends.iter().map(String::as_str).collect();
    let auto = names.contains(&"auto");
    if names.contains(&"none") && !auto {
        return Vec::new();
    }
    let wants = |n: &str| names.contains(&n);
    let csf_on = csf_active(cfg);
    let mut out: Vec<Box<dyn Backend>> = Vec::new();

    let fwd = make_firewalld(cfg);
    // The kernel's firewall is not under the root prefix: a scratch root
    // ("trying it out", tests) must never auto-select it. Only an explicit
    // list (e.g. inside a private network namespace) manages it there.
    let kernel_auto = auto && cfg.is_real_root();
    // A running firewalld owns the ruleset: our nft table or iptables chain
    // would be flushed by its next reload, so it is used instead of them.
    let fwd_on = if auto {
        kernel_auto && !csf_on && fwd.running()
    } else {
        wants("firewalld")
    };
    let (use_nft, use_ipt) = if kernel_auto && !fwd_on {
        auto_chain_backends(cfg, csf_on)
    } else if auto {
        (false, false)
    } else {
        (wants("nftables"), wants("iptables") && !csf_on)
    };
    if fwd_on {
        out.push(Box::new(fwd));
    }
    if use_nft {
        out.push(Box::new(make_nft(cfg)));
    }
    if use_ipt {
        out.push(Box::new(make_iptables(cfg)));
    }
    if (auto && csf_on) || wants("csf") {
        out.push(Box::new(Csf {
            tool: cfg.tools.csf.clone(),
            allow_file: super::atomic::HostFile::new(&cfg.root, csf_allow_path(cfg)),
        }));
    }
    if (auto && exists(&cfg.host_path(&cfg.paths.cphulk_marker))) || wants("cphulk") {
        out.push(Box::new(Cphulk {
            tool: cfg.tools.whmapi1.clone(),
        }));
    }
    let allow = cfg.host_path(&cfg.paths.hosts_allow);
    let deny = cfg.host_path(&cfg.paths.hosts_deny);
    if (auto && (exists(&allow) || exists(&deny))) || wants("hosts_allow") {
        out.push(Box::new(HostsAllow {
            file: super::atomic::HostFile::new(&cfg.root, allow),
        }));
    }
    out
}

/// nftables when the host has native nftables tables (or ours); iptables
/// when it has iptables rules (or our chain) and CSF is not active. With
/// neither in use we still add our chain where cPanel would: iptables if
/// installed, else nftables.
fn auto_chain_backends(cfg: &Config, csf_on: bool) -> (bool, bool) {
    if csf_on {
        return (false, false);
    }
    let nft_present = cfg.tools.nft.exists();
    let nft_in_use = nft_present
        && make_nft(cfg)
            .ruleset()
            .is_ok_and(|rs| rs.other_tables > 0 || rs.table_exists);
    let chain = &cfg.firewall.iptables_chain;
    let ipt_present = cfg.tools.iptables.exists();
    let ipt_in_use =
        iptables_in_use(&cfg.tools.iptables, chain) || iptables_in_use(&cfg.tools.ip6tables, chain);
    match (nft_in_use, ipt_in_use) {
        (false, false) if ipt_present => (false, true),
        (false, false) => (nft_present, false),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this machine iptables/nft are installed (and the real root would
    /// auto-select one); a scratch root must select neither.
    #[test]
    fn a_scratch_root_never_auto_selects_the_kernel_firewall() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert!(backends(&cfg).is_empty());
        // hosts.allow under the scratch root is file-based and is used.
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hosts.allow"), "").unwrap();
        let names: Vec<_> = backends(&cfg).iter().map(|b| b.name()).collect();
        assert_eq!(names, ["hosts_allow"]);
    }
}
