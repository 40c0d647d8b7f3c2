//! `application/x-www-form-urlencoded` decoding (query strings and POST
//! bodies), strict: invalid percent escapes or non-UTF-8 are errors, not
//! silently replaced.

/// Decodes `a=1&b=x+y&c=%2F` into ordered pairs (order and repeats kept).
pub fn parse(input: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in input.split(|b| *b == b'&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(raw: &[u8]) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let pair = raw
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(raw.get(i + 2).copied().and_then(hex));
                let Some((hi, lo)) = pair else {
                    return Err("invalid percent-escape in the parameters".into());
                };
                bytes.push(hi << 4 | lo);
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| "parameters are not valid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs_in_order() {
        let p = parse(b"api.version=1&acl-0=a+b&x=%2F%e2%80%9c&flag&&y=").unwrap();
        let want: Vec<(String, String)> = [
            ("api.version", "1"),
            ("acl-0", "a b"),
            ("x", "/\u{201c}"),
            ("flag", ""),
            ("y", ""),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(p, want);
        assert!(parse(b"a=%zz").is_err());
        assert!(parse(b"a=%4").is_err());
        assert!(parse(b"a=%ff").is_err());
    }
}
