//! `audit verify` over arbitrary files. Hashes are SHA-256, which a fuzzer
//! cannot forge, so the input may ask for them to be computed and can so
//! reach the chain rules behind the hash check:
//! - a line `=====` starts the next file (up to 4, verified together);
//! - a line `head <seq> <hash>` (anywhere) is the store's chain head
//!   (`@LAST@` for the hash of the last sealed line);
//! - a line starting with `!` is sealed: the rest is a record body without
//!   its closing `}`, `@PREV@` in it becomes the previous line's hash (64
//!   zeros on a file's first line), and `,"hash":"<sha256>"}` is appended,
//!   exactly as the writer does;
//! - any other line is written as it is.
//!
//! Properties: never panics (nor does printing the report), the same files
//! give the same report, and a passing report counts every line as a record.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use supportauth::audit::record::{sha256_hex, GENESIS_HASH};
use supportauth::audit::{verify_files, ChainHead};

const MAX_FILES: usize = 4;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        // Memory-backed when available: one write per file per run.
        let shm = std::path::Path::new("/dev/shm");
        let made = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        made.expect("a scratch directory")
    })
}

struct Input {
    files: Vec<Vec<u8>>,
    head: Option<(u64, String)>,
    /// Lines per file (the last may lack its newline).
    lines: Vec<u64>,
}

fn build(data: &[u8]) -> Input {
    let mut input = Input {
        files: vec![Vec::new()],
        head: None,
        lines: vec![0],
    };
    let mut prev = GENESIS_HASH.to_string();
    let mut last_sealed = GENESIS_HASH.to_string();
    let mut head_spec: Option<(u64, String)> = None;
    for raw in data.split_inclusive(|b| *b == b'\n') {
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        let newline = body.len() < raw.len();
        if body == b"=====" {
            if input.files.len() < MAX_FILES {
                input.files.push(Vec::new());
                input.lines.push(0);
                prev = GENESIS_HASH.to_string();
            }
            continue;
        }
        if let Some(spec) = body.strip_prefix(b"head ") {
            let spec = String::from_utf8_lossy(spec);
            let (seq, hash) = spec.split_once(' ').unwrap_or((&spec, ""));
            if let Ok(seq) = seq.parse() {
                head_spec = Some((seq, hash.to_string()));
            }
            continue;
        }
        let file = input.files.last_mut().expect("one file");
        let line: Vec<u8> = match body.strip_prefix(b"!") {
            Some(unsealed) => {
                let text = String::from_utf8_lossy(unsealed).replace("@PREV@", &prev);
                let hash = sha256_hex(format!("{text}}}").as_bytes());
                last_sealed = hash.clone();
                format!("{text},\"hash\":\"{hash}\"}}").into_bytes()
            }
            None => body.to_vec(),
        };
        // The next line's @PREV@ is this line's claimed hash, if it has one.
        if let Some(h) = line
            .strip_suffix(b"\"}")
            .and_then(|l| l.get(l.len().saturating_sub(64)..))
        {
            prev = String::from_utf8_lossy(h).into_owned();
        }
        file.extend_from_slice(&line);
        if newline {
            file.push(b'\n');
        }
        *input.lines.last_mut().expect("one file") += 1;
    }
    input.head = head_spec.map(|(seq, h)| (seq, h.replace("@LAST@", &last_sealed)));
    input
}

fuzz_target!(|data: &[u8]| {
    let input = build(data);
    let dir = scratch().path();
    let paths: Vec<PathBuf> = (0..input.files.len())
        .map(|i| dir.join(format!("audit.log.{i}")))
        .collect();
    for (path, bytes) in paths.iter().zip(&input.files) {
        std::fs::write(path, bytes).expect("write a scratch file");
    }
    let head = || {
        input.head.as_ref().map(|(seq, hash)| ChainHead {
            seq: *seq,
            hash: hash.clone(),
        })
    };
    let report = verify_files(&paths, head());
    let _ = report.to_string();
    if let Some(f) = &report.failure {
        let _ = f.to_string();
    }
    assert_eq!(
        report,
        verify_files(&paths, head()),
        "verify is not deterministic"
    );
    if report.is_ok() {
        let lines: u64 = input.lines.iter().sum();
        assert_eq!(report.records, lines, "a passing log must count every line");
    }
});
