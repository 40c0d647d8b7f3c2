//! The WHM API 1 answer envelope and the parameter bag of a call.

use axum::body::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

/// What a function handler returns: `data` on success, or a reason a human
/// can act on (with optional partial `data`) on failure.
pub type ApiResult = Result<Value, ApiError>;

/// A successful call's `data`: a JSON value, or (for hot read paths that
/// serialize typed structs straight to bytes) the JSON text itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Value(Value),
    /// One complete JSON value, already serialized.
    Json(Bytes),
}

impl From<Value> for Data {
    fn from(v: Value) -> Self {
        Data::Value(v)
    }
}

/// What the dispatcher gets from any handler.
pub type DataResult = Result<Data, ApiError>;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub reason: String,
    pub data: Option<Value>,
}

impl ApiError {
    pub fn new(reason: impl Into<String>) -> Self {
        ApiError {
            reason: reason.into(),
            data: None,
        }
    }
    pub fn with_data(reason: impl Into<String>, data: Value) -> Self {
        ApiError {
            reason: reason.into(),
            data: Some(data),
        }
    }
}

/// One wording for a failed store, wherever it surfaces.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::new(crate::engine::EngineError::Store(e).to_string())
    }
}

impl From<crate::types::InputError> for ApiError {
    fn from(e: crate::types::InputError) -> Self {
        ApiError::new(e.0)
    }
}

#[derive(Debug, Serialize)]
pub struct Metadata<'a> {
    pub version: u32,
    pub command: &'a str,
    pub result: u8,
    pub reason: &'a str,
}

/// The metadata with its keys in sorted order, as a JSON object built with
/// `json!` (a sorted map) prints them: serialized directly, it gives the
/// same bytes.
#[derive(Serialize)]
struct SortedMetadata<'a> {
    command: &'a str,
    reason: &'a str,
    result: u8,
    version: u32,
}

/// The envelope's JSON text, byte for byte what `envelope(..).to_string()`
/// gives, without building (and deep-copying `data` into) a Value tree.
pub fn envelope_bytes(command: &str, outcome: &DataResult) -> Vec<u8> {
    let (meta, data) = match outcome {
        Ok(data) => (
            SortedMetadata {
                command,
                reason: "OK",
                result: 1,
                version: 1,
            },
            Some(data),
        ),
        Err(e) => (
            SortedMetadata {
                command,
                reason: &e.reason,
                result: 0,
                version: 1,
            },
            None,
        ),
    };
    let mut out = Vec::with_capacity(match data {
        Some(Data::Json(b)) => b.len() + 128,
        _ => 256,
    });
    out.extend_from_slice(b"{\"data\":");
    // Writing JSON into a Vec cannot fail for these types (no map keys
    // that are not strings); a failure would leave `null`.
    let wrote = match (data, outcome) {
        (Some(Data::Json(b)), _) => {
            out.extend_from_slice(b);
            Ok(())
        }
        (Some(Data::Value(v)), _) => serde_json::to_writer(&mut out, v),
        (None, Err(e)) => serde_json::to_writer(&mut out, e.data.as_ref().unwrap_or(&Value::Null)),
        (None, Ok(_)) => Ok(()),
    };
    if wrote.is_err() {
        out.truncate(b"{\"data\":".len());
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"metadata\":");
    if serde_json::to_writer(&mut out, &meta).is_err() {
        out.extend_from_slice(b"null");
    }
    out.push(b'}');
    out
}

/// Builds `{"metadata":{version,command,result,reason},"data":...}`.
pub fn envelope(command: &str, outcome: &ApiResult) -> Value {
    match outcome {
        Ok(data) => json!({
            "metadata": Metadata { version: 1, command, result: 1, reason: "OK" },
            "data": data,
        }),
        Err(e) => json!({
            "metadata": Metadata { version: 1, command, result: 0, reason: &e.reason },
            "data": e.data.clone().unwrap_or(Value::Null),
        }),
    }
}

/// The name=value pairs of a call (query string and form body together).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Params { pairs }
    }

    /// The trimmed value of `name`, or None when absent or blank. When a name
    /// is repeated, the last one wins (as in WHM).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Like [`get`](Self::get) but a missing value is an error naming it.
    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::new(format!("Missing argument: “{name}” is required.")))
    }

    /// Whether `name` was given at all (even blank), e.g. to clear a list.
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// The values of a repeated argument: `name`, `name-0`, `name-1`, ... in
    /// numeric order (WHM API 1's numbered repeats). Blank values are skipped.
    pub fn list(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}-");
        let mut numbered: Vec<(u64, &str)> = Vec::new();
        let mut plain: Vec<&str> = Vec::new();
        for (k, v) in &self.pairs {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            if k == name {
                plain.push(v);
            } else if let Some(n) = k.strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok()) {
                numbered.push((n, v));
            }
        }
        numbered.sort_by_key(|(n, _)| *n);
        plain.extend(numbered.into_iter().map(|(_, v)| v));
        plain
    }

    /// Whether any numbered or plain form of `name` is present.
    pub fn has_list(&self, name: &str) -> bool {
        let prefix = format!("{name}-");
        self.pairs.iter().any(|(k, _)| {
            k == name
                || k.strip_prefix(&prefix)
                    .is_some_and(|n| n.parse::<u64>().is_ok())
        })
    }

    /// Names that are not in `allowed` (numbered repeats match their base
    /// name; `api.version` is always allowed).
    pub fn unknown<'a>(&'a self, allowed: &[&str]) -> Vec<&'a str> {
        self.pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "api.version")
            .filter(|k| {
                let base = match k.rsplit_once('-') {
                    Some((b, n)) if n.parse::<u64>().is_ok() => b,
                    _ => k,
                };
                !allowed.contains(&base)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::new(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn numbered_repeats_in_order() {
        let params = p(&[
            ("acl-1", "b"),
            ("acl-0", "a"),
            ("acl-10", "c"),
            ("acl-x", "no"),
        ]);
        assert_eq!(params.list("acl"), vec!["a", "b", "c"]);
        assert!(params.has_list("acl"));
        assert!(!params.has_list("whitelist_ip"));
    }

    #[test]
    fn require_names_the_argument() {
        let params = p(&[("ticket_id", "  ")]);
        let err = params.require("ticket_id").unwrap_err();
        assert!(err.reason.contains("ticket_id"));
    }

    #[test]
    fn envelope_shape() {
        let ok = envelope("ticket_list", &Ok(json!({"auths": []})));
        assert_eq!(
            ok,
            json!({"metadata":{"version":1,"command":"ticket_list","result":1,"reason":"OK"},"data":{"auths":[]}})
        );
        let bad = envelope("x", &Err(ApiError::new("nope")));
        assert_eq!(bad["metadata"]["result"], 0);
        assert_eq!(bad["metadata"]["reason"], "nope");
    }

    #[test]
    fn envelope_bytes_are_the_value_envelopes_bytes() {
        let data = json!({"auths": [{"b": 1, "a": "x\"y\u{7f}é", "n": null}], "z": [1.5, -2]});
        let cases: Vec<(&str, ApiResult)> = vec![
            ("ticket_list", Ok(data.clone())),
            ("x", Err(ApiError::new("nope \"quoted\" “curly”"))),
            ("y", Err(ApiError::with_data("partial", data.clone()))),
            ("", Ok(Value::Null)),
        ];
        for (command, outcome) in cases {
            let want = envelope(command, &outcome).to_string();
            let as_data: DataResult = outcome.clone().map(Data::from);
            assert_eq!(
                String::from_utf8(envelope_bytes(command, &as_data)).unwrap(),
                want
            );
            // The same data handed over as JSON text gives the same bytes.
            if let Ok(v) = &outcome {
                let raw: DataResult = Ok(Data::Json(Bytes::from(v.to_string())));
                assert_eq!(
                    String::from_utf8(envelope_bytes(command, &raw)).unwrap(),
                    want
                );
            }
        }
    }

    #[test]
    fn unknown_params() {
        let params = p(&[("api.version", "1"), ("acl-0", "x"), ("bogus", "y")]);
        assert_eq!(params.unknown(&["acl"]), vec!["bogus"]);
    }
}
