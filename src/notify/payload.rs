//! What a webhook receives (pure): the JSON body, its delivery id and its
//! HMAC-SHA256 signature.
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Supportauth-Event: grant
//! X-Supportauth-Delivery: <the record's hash>
//! X-Supportauth-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>
//!
//! {"delivery":"<hash>","host":"web1.example.com","event":"grant","seq":12,
//!  "time":"2026-11-23T13:28:53Z","record":{ ...the audit record as logged... }}
//! ```
//!
//! The delivery id is the record's chain hash: the same on every retry
//! and after a restart, so a receiver drops a delivery it has seen.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::audit::Record;

pub const SIGNATURE_HEADER: &str = "x-supportauth-signature";
pub const DELIVERY_HEADER: &str = "x-supportauth-delivery";
pub const EVENT_HEADER: &str = "x-supportauth-event";

/// The id receivers deduplicate by: the record's hash (its seq when a
/// record somehow has none).
pub fn delivery_id(rec: &Record) -> String {
    rec.hash
        .clone()
        .unwrap_or_else(|| format!("seq-{}", rec.seq))
}

/// The webhook body for `rec`, sent from `host`.
pub fn webhook_body(rec: &Record, host: &str) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::json!({
        "delivery": delivery_id(rec),
        "host": host,
        "event": rec.event,
        "seq": rec.seq,
        "time": rec.time,
        "record": rec,
    }))
}

/// `sha256=<hex>`: HMAC-SHA256 of exactly `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` under `secret`, compared in
/// constant time (what a receiver does).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(sig) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, Outcome};

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = sign(b"0123456789abcdef", b"{\"a\":1}");
        assert!(verify(b"0123456789abcdef", b"{\"a\":1}", &sig));
        assert!(!verify(b"0123456789abcdef", b"{\"a\":2}", &sig));
        assert!(!verify(b"0123456789abcdeX", b"{\"a\":1}", &sig));
        assert!(!verify(b"0123456789abcdef", b"{\"a\":1}", &sig[7..]));
        assert!(!verify(b"k", b"x", "sha256=zz"));
    }

    #[test]
    fn body_carries_the_record_and_its_id() {
        let ev = AuditEvent::new("grant", "uid:0")
            .user("root")
            .outcome(Outcome::Ok)
            .details(serde_json::json!({"fingerprint": "SHA256:x"}));
        let mut rec = Record::from_event(&ev, 12, "2026-11-23T13:28:53Z".into(), "00");
        rec.hash = Some("ab".repeat(32));
        let body = webhook_body(&rec, "web1").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["delivery"], "ab".repeat(32));
        assert_eq!(v["host"], "web1");
        assert_eq!(v["event"], "grant");
        assert_eq!(v["seq"], 12);
        assert_eq!(v["record"]["ssh_username"], "root");
        assert_eq!(v["record"]["details"]["fingerprint"], "SHA256:x");
        assert_eq!(v["record"]["hash"], "ab".repeat(32));
        rec.hash = None;
        assert_eq!(delivery_id(&rec), "seq-12");
    }
}
