//! Finding and opening the log and its rotated siblings (plain or gzip).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

const BUF: usize = 1 << 20;

/// The log and every rotated sibling in its directory: `audit.log`,
/// `audit.log.1`, `audit.log.2.gz`, `audit.log-20261123`, ... (any name
/// that is the log's name followed by `.` or `-`). Sorted by name only; the
/// verifier orders them by the chain itself.
pub fn discover(log: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(base) = log.file_name().and_then(|n| n.to_str()) else {
        return Ok(vec![log.to_path_buf()]);
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let sibling = name
            .strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('-'))
            // A saved damaged tail is not part of the chain.
            && !name.contains(super::tail::DAMAGED_INFIX);
        if sibling && entry.file_type()?.is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Whether the file is gzip-compressed (by its magic bytes, not its name:
/// logrotate's `compressext` and hand-made copies vary).
pub fn is_gzip(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path)?;
    let mut got = 0;
    while got < 2 {
        let n = f.read(&mut magic[got..])?;
        if n == 0 {
            return Ok(false);
        }
        got += n;
    }
    Ok(magic == [0x1f, 0x8b])
}

/// A buffered reader of the file's (decompressed) bytes.
pub fn open_reader(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let gz = is_gzip(path)?;
    let f = File::open(path)?;
    Ok(if gz {
        Box::new(BufReader::with_capacity(BUF, MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::with_capacity(BUF, f))
    })
}

/// A line that is not a valid record, while reading records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct RecordError {
    pub file: PathBuf,
    /// 1-based; 0 when the file itself could not be read.
    pub line: u64,
    pub message: String,
}

/// The files put in chain order by their first record's seq (files whose
/// first line is not a record come first, so their problem shows early).
pub fn chain_order(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(u64, PathBuf)> = files
        .iter()
        .map(|f| {
            let seq = open_reader(f)
                .ok()
                .and_then(|mut r| {
                    let mut line = String::new();
                    r.read_line(&mut line).ok()?;
                    super::record::open_line(&line).ok()
                })
                .map(|rec| rec.seq)
                .unwrap_or(0);
            (seq, f.clone())
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, f)| f).collect()
}

/// Every record of the files, in the order given, each line checked on its
/// own (its hash and canonical form; the chain is `verify`'s job).
pub struct Records {
    files: std::collections::VecDeque<PathBuf>,
    current: Option<(PathBuf, Box<dyn BufRead + Send>, u64)>,
    buf: String,
}

impl Records {
    pub fn new(files: &[PathBuf]) -> Self {
        Records {
            files: files.iter().cloned().collect(),
            current: None,
            buf: String::new(),
        }
    }
}

impl Iterator for Records {
    type Item = Result<super::record::Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((path, reader, line_no)) = self.current.as_mut() else {
                let path = self.files.pop_front()?;
                match open_reader(&path) {
                    Ok(r) => self.current = Some((path, r, 0)),
                    Err(e) => {
                        return Some(Err(RecordError {
                            file: path,
                            line: 0,
                            message: e.to_string(),
                        }))
                    }
                }
                continue;
            };
            self.buf.clear();
            match reader.read_line(&mut self.buf) {
                Ok(0) => {
                    self.current = None;
                    continue;
                }
                Ok(_) => {
                    *line_no += 1;
                    return Some(
                        super::record::open_line(&self.buf).map_err(|e| RecordError {
                            file: path.clone(),
                            line: *line_no,
                            message: e.to_string(),
                        }),
                    );
                }
                Err(e) => {
                    *line_no += 1;
                    let err = RecordError {
                        file: path.clone(),
                        line: *line_no,
                        message: e.to_string(),
                    };
                    self.current = None;
                    return Some(Err(err));
                }
            }
        }
    }
}
