//! Scenario 6: nftables with the admin's default-drop policy; support on
//! a veth peer in a second network namespace.

use crate::e2e::cmd;
use crate::e2e::daemon;
use crate::e2e::sandbox::Sandbox;
use crate::e2e::scene::*;
use crate::e2e::sshd::Login;

// ---- scenario 6 ---------------------------------------------------------

/// The admin's firewall: default drop on input, loopback and replies only.
const ADMIN_RULESET: &str = "table inet admin {\n\
    chain in {\n\
        type filter hook input priority 0; policy drop;\n\
        iif \"lo\" accept\n\
        ct state established,related accept\n\
    }\n\
}\n";

/// Support at 10.200.0.2 (another netns) reaches sshd through the admin's
/// default-drop nftables only while its grant is active; afterwards the
/// admin's ruleset is back byte for byte.
pub fn firewall_default_drop(sb: &Sandbox) {
    let scene = Scene::new(
        sb,
        &SceneSetup {
            firewall: "nftables",
            support_netns: true,
            ..SceneSetup::root_login("prohibit-password")
        },
    );
    let rules = sb.path("admin.nft");
    std::fs::write(&rules, ADMIN_RULESET).expect("write admin ruleset");
    cmd::run_ok(&nft_tool(), &["-f".as_ref(), rules.as_os_str()]);
    let admin_listing = cmd::run_ok(&nft_tool(), &["list", "ruleset"]);
    let from_support = |scene: &Scene| {
        scene.sshd.login_via(
            Some(SUPPORT_NETNS),
            HOST_VETH_IP,
            &scene.support,
            "root",
            &["id", "-u"],
            b"",
        )
    };
    match from_support(&scene) {
        Login::Unreachable { .. } => {}
        other => panic!("default drop let support through before any grant: {other:?}"),
    }
    let data = scene.grant(107, &[("access_ip-0", SUPPORT_IP.into())]);
    match from_support(&scene) {
        Login::Ran {
            code: Some(0),
            stdout,
            ..
        } if stdout.trim() == "0" => {}
        other => panic!(
            "granted support at {SUPPORT_IP} cannot log in: {other:?}\ngrant: {data}\nruleset:\n{}\ndaemon log:\n{}",
            cmd::run_ok(&nft_tool(), &["list", "ruleset"]),
            scene.daemon.log()
        ),
    }
    scene.revoke(107, "root");
    match from_support(&scene) {
        Login::Unreachable { .. } => {}
        other => panic!("support still reaches sshd after revoke: {other:?}"),
    }
    assert_eq!(
        cmd::run_ok(&nft_tool(), &["list", "ruleset"]),
        admin_listing,
        "the admin's ruleset is not back as it was"
    );
    scene.assert_no_trace(107);
    scene.assert_admin_intact();
    daemon::assert_audit_verifies();
}
