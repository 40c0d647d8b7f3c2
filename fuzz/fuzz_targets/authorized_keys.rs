//! authorized_keys reader/editor. The input is a whole file (arbitrary
//! bytes). A first line `#fuzz:<ticket>:<server>:<epoch>:<key>:<expiry>:<ips>`
//! (itself a foreign comment line) chooses the grant that is added; every
//! part goes through the library's own parsers, as an API call would.
//!
//! Properties: removing ours leaves exactly the foreign lines, byte for
//! byte and in order; a rendered line of ours is found again at the top;
//! removing it restores the input exactly (or, when the input already held
//! that mark, what removing it from the input gives).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use supportauth::authorized_keys::{
    add_line, list_ours, parse_ours, remove_ours, render_line, KeyMark,
};
use supportauth::sshkey::SupportKey;
use supportauth::types::{ServerNum, SupportIp, TicketId};

#[path = "common/keys.rs"]
mod keys;

fn support_keys() -> &'static Vec<SupportKey> {
    static K: OnceLock<Vec<SupportKey>> = OnceLock::new();
    K.get_or_init(|| {
        keys::KEYS
            .iter()
            .map(|k| SupportKey::parse(k).expect("fixture key"))
            .collect()
    })
}

struct Grant {
    mark: KeyMark,
    key: usize,
    expiry: Option<i64>,
    ips: Vec<SupportIp>,
}

fn grant(data: &[u8]) -> Grant {
    let mut g = Grant {
        mark: KeyMark::new(
            TicketId::parse("12345").unwrap(),
            ServerNum::parse("1").unwrap(),
            1_700_000_000,
        ),
        key: 0,
        expiry: Some(1_795_000_000),
        ips: vec![SupportIp::parse("203.0.113.5").unwrap()],
    };
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let Some(params) = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.strip_prefix("#fuzz:"))
    else {
        return g;
    };
    let p: Vec<&str> = params.split(':').collect();
    let part = |i: usize| p.get(i).copied().unwrap_or("");
    if let (Ok(t), Ok(s)) = (TicketId::parse(part(0)), ServerNum::parse(part(1))) {
        // The grant's epoch is the time of the grant: never negative.
        let epoch = part(2).parse::<i64>().map(i64::abs).unwrap_or(0);
        g.mark = KeyMark::new(t, s, epoch);
    }
    g.key = part(3).parse::<usize>().unwrap_or(0) % keys::KEYS.len();
    g.expiry = part(4).parse::<i64>().ok();
    let ips: Vec<SupportIp> = part(5)
        .split(',')
        .filter_map(|ip| SupportIp::parse(ip).ok())
        .collect();
    if !ips.is_empty() {
        g.ips = ips;
    }
    g
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|b| *b == b'\n').collect()
}

fuzz_target!(|data: &[u8]| {
    let before = lines(data);
    let ours_before = list_ours(data);
    let foreign: Vec<&[u8]> = before
        .iter()
        .copied()
        .filter(|l| parse_ours(l).is_none())
        .collect();

    // Removing all of ours: exactly the foreign lines remain, untouched.
    let (rest, n) = remove_ours(data, &|_| true);
    assert_eq!(n, ours_before.len());
    assert_eq!(lines(&rest), foreign, "foreign lines changed");
    assert!(list_ours(&rest).is_empty());

    let g = grant(data);
    // Removing one grant slot: the other lines of ours stay too.
    let (rest, n) = remove_ours(data, &|m| m.same_slot(&g.mark));
    let kept: Vec<_> = ours_before
        .iter()
        .filter(|o| !o.mark.same_slot(&g.mark))
        .cloned()
        .collect();
    assert_eq!(n, ours_before.len() - kept.len());
    assert_eq!(list_ours(&rest), kept);
    let foreign_after: Vec<&[u8]> = lines(&rest)
        .into_iter()
        .filter(|l| parse_ours(l).is_none())
        .collect();
    assert_eq!(foreign_after, foreign, "foreign lines changed");

    // Adding our line: found again first, with its mark and key; removing
    // it gives back the input.
    let key = &support_keys()[g.key];
    let line = render_line(key, &g.ips, g.expiry, &g.mark).expect("a rendered line");
    let added = add_line(data, &line).expect("our line is one line");
    let found = list_ours(&added);
    assert_eq!(
        found.len(),
        ours_before.len() + 1,
        "our line was not found: {line}"
    );
    assert_eq!(found[0].mark, g.mark);
    assert_eq!(found[0].line, line);
    assert_eq!(found[0].key, key.openssh());
    let is_it = |m: &KeyMark| *m == g.mark;
    let (back, removed) = remove_ours(&added, &is_it);
    let (want, had) = remove_ours(data, &is_it);
    assert_eq!(removed, had + 1);
    assert_eq!(back, want);
    if had == 0 {
        assert_eq!(back, data, "add then remove must restore the exact bytes");
    }
});
