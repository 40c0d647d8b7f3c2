//! Audit record lines. The input is tried two ways:
//! - as a stored line: `open_line` never panics, and a line it accepts is
//!   exactly the canonical sealing of the record it returns;
//! - as record JSON (any field values): the record, sealed, re-opens to the
//!   same record (with its hash), so whatever the writer seals, `show`,
//!   `replay` and `verify` can read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supportauth::audit::record::{open_line, Record, SCHEMA_VERSION};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = open_line(text) {
        let (line, hash) = rec.seal().expect("an opened record seals");
        assert_eq!(line.trim_end_matches('\n'), text.trim_end_matches('\n'));
        assert_eq!(rec.hash.as_deref(), Some(hash.as_str()));
    }
    if let Ok(mut rec) = serde_json::from_str::<Record>(text) {
        rec.v = SCHEMA_VERSION;
        let Ok((line, hash)) = rec.seal() else {
            return;
        };
        let back = open_line(&line)
            .unwrap_or_else(|e| panic!("a sealed record does not re-open ({e}): {line}"));
        rec.hash = Some(hash);
        assert_eq!(back, rec);
    }
});
