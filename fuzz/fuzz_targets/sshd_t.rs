//! `sshd -T` output parsing and the login decisions made from it.
//! Properties: never panics, and parsing and deciding are deterministic
//! (same text, same answer), for root and a plain user, IPv4 and IPv6.
#![no_main]

use std::net::IpAddr;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use supportauth::sshd_config::SshdEffective;
use supportauth::types::Username;

fuzz_target!(|data: &[u8]| {
    // The daemon reads sshd's stdout as lossy UTF-8.
    let text = String::from_utf8_lossy(data);
    let first = SshdEffective::parse(&text);
    assert_eq!(
        first,
        SshdEffective::parse(&text),
        "parse is not deterministic"
    );
    let Ok(eff) = first else { return };
    let users = [Username::root(), Username::parse("cp12345.ssh").unwrap()];
    let groups = ["wheel".to_string(), "cp12345.ssh".to_string()];
    let froms: [IpAddr; 3] = [
        "203.0.113.5".parse().unwrap(),
        "2001:db8::5".parse().unwrap(),
        "::ffff:198.51.100.7".parse().unwrap(),
    ];
    for user in &users {
        for from in froms {
            for home in [None, Some(Path::new("/home/cp12345.ssh"))] {
                let a = eff.login_blockers_at_home(user, home, &groups, from);
                let b = eff.login_blockers_at_home(user, home, &groups, from);
                assert_eq!(a, b, "login decision is not deterministic");
            }
            let _ = eff.login_blockers(user, &[], from);
        }
    }
});
