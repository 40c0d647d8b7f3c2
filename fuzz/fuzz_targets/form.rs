//! The WHM API's query-string / form-body parser and the parameter bag.
//! Properties: never panics; whatever it accepts, the portal client's
//! encoder (`portal::wire::form_encode`) encodes to text that parses back
//! to the same pairs; and any pairs of strings survive encode-then-parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supportauth::api::envelope::Params;
use supportauth::portal::wire::form_encode;
use supportauth::server::form;

fn round_trip(pairs: &[(String, String)]) {
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let encoded = form_encode(&refs);
    let back = form::parse(encoded.as_bytes()).expect("form_encode output parses");
    // Pairs with an empty name and value encode to "=", which parses to
    // ("", ""); nothing is lost.
    assert_eq!(
        back, pairs,
        "encode then parse changed the pairs: {encoded}"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = form::parse(data) {
        round_trip(&pairs);
        let params = Params::new(pairs);
        for name in [
            "ticket_id",
            "server_num",
            "acl",
            "whitelist_ip",
            "api.version",
        ] {
            let _ = params.get(name);
            let _ = params.has(name);
            let _ = params.list(name);
            let _ = params.has_list(name);
        }
        let _ = params.unknown(&["ticket_id", "server_num", "acl"]);
    }
    // Arbitrary strings as names and values (split on NUL and 0x01).
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = text
        .split('\0')
        .map(|p| match p.split_once('\u{1}') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    round_trip(&pairs);
});
