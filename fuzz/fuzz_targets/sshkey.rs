//! SSH public key parsing (what the portal or an admin pastes).
//! Properties: never panics; an accepted key re-renders to a canonical
//! `type base64` that parses to the same key (same canonical text,
//! fingerprint and type), with or without a comment, and that, written as
//! our authorized_keys line, is read back as the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supportauth::authorized_keys::{parse_ours, render_line, KeyMark};
use supportauth::sshkey::SupportKey;
use supportauth::types::{ServerNum, SupportIp, TicketId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = SupportKey::parse(text) else {
        return;
    };
    let canonical = key.openssh();
    assert_eq!(key.to_string(), canonical);
    for again in [canonical.clone(), format!("{canonical} someone@example")] {
        let k2 = SupportKey::parse(&again).expect("canonical form parses");
        assert_eq!(k2, key, "{again}");
        assert_eq!(k2.openssh(), canonical);
        assert_eq!(k2.fingerprint(), key.fingerprint());
        assert_eq!(k2.algorithm(), key.algorithm());
    }
    assert!(canonical.starts_with(&format!("{} ", key.algorithm())));
    let mark = KeyMark::new(
        TicketId::parse("12345").unwrap(),
        ServerNum::parse("1").unwrap(),
        1_700_000_000,
    );
    let ips = [SupportIp::parse("203.0.113.5").unwrap()];
    let line = render_line(&key, &ips, Some(1_795_000_000), &mark).unwrap();
    let ours = parse_ours(line.as_bytes()).expect("our line is recognised");
    assert_eq!(ours.key, canonical);
    assert_eq!(ours.mark, mark);
});
