//! The portal's JSON answers, as `portal::wire::parse` reads them.
//! Properties: no answer makes deserialising panic; a server entry
//! serialises and deserialises to itself; SSH test results map to the
//! shared vocabulary and back.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use supportauth::portal::wire::{
    parse, AccessIp, KeyAnswer, OpenTicket, ServerEntry, SshTestResult, TestAnswer, TestStarted,
    TokenAnswer,
};

fn server_entry_round_trip(e: &ServerEntry) {
    let json = serde_json::to_vec(e).expect("a server entry serialises");
    let back: ServerEntry = parse(&json).expect("a serialised server entry parses");
    assert_eq!(&back, e);
}

fuzz_target!(|data: &[u8]| {
    let _ = parse::<TokenAnswer>(data).map(|t| format!("{t:?}"));
    let _ = parse::<Vec<AccessIp>>(data);
    let _ = parse::<TestStarted>(data);
    if let Ok(tickets) = parse::<Vec<OpenTicket>>(data) {
        for t in &tickets {
            for e in t.servers.iter().flat_map(BTreeMap::values) {
                server_entry_round_trip(e);
            }
        }
    }
    if let Ok(k) = parse::<KeyAnswer>(data) {
        server_entry_round_trip(&k.server);
    }
    if let Ok(e) = parse::<ServerEntry>(data) {
        server_entry_round_trip(&e);
    }
    if let Ok(a) = parse::<TestAnswer>(data) {
        for server in [0, 1, 2, u64::MAX] {
            let r = a.result_for(server);
            assert_eq!(SshTestResult::parse(r.as_str()), r);
        }
    }
});
