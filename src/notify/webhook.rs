//! One webhook delivery: POST the signed body with the HTTP client the
//! portal uses (hyper, rustls); any 2xx answer is a delivery.

use std::time::Duration;

use super::config::{NotifyConfig, WebhookConfig};
use super::payload::{self, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use crate::audit::Record;
use crate::portal::http::{Body, HttpClient};
use crate::portal::url::BaseUrl;
use crate::portal::wire::PortalError;

/// The most of a receiver's answer read (it is only logged).
const MAX_ANSWER: usize = 64 * 1024;

pub struct Webhook {
    client: HttpClient,
    secret: Vec<u8>,
}

impl Webhook {
    pub fn new(w: &WebhookConfig, n: &NotifyConfig, secret: Vec<u8>) -> Result<Webhook, String> {
        let base = BaseUrl::parse(&w.url)?;
        Ok(Webhook {
            client: HttpClient::for_url(
                base,
                Duration::from_secs(n.connect_timeout_secs),
                Duration::from_secs(n.timeout_secs),
                MAX_ANSWER,
                &n.ca_file,
            ),
            secret,
        })
    }

    pub async fn deliver(&self, rec: &Record, host: &str) -> Result<(), String> {
        let body = payload::webhook_body(rec, host).map_err(|e| e.to_string())?;
        let headers = [
            (SIGNATURE_HEADER, payload::sign(&self.secret, &body)),
            (DELIVERY_HEADER, payload::delivery_id(rec)),
            (EVENT_HEADER, rec.event.clone()),
        ];
        // The URL's own path, or "/" for a bare host.
        let call = if self.client.base.path.is_empty() {
            "/"
        } else {
            ""
        };
        let reply = self
            .client
            .send_with_headers(
                "POST",
                call,
                &headers,
                Some(Body {
                    content_type: "application/json",
                    bytes: body,
                }),
            )
            .await
            .map_err(describe)?;
        if (200..300).contains(&reply.status) {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", reply.status))
        }
    }
}

/// The client's errors speak of the ticket system; say it of the webhook.
fn describe(e: PortalError) -> String {
    match e {
        PortalError::Timeout(s) => format!("no answer within {s} seconds"),
        PortalError::Connect(m) => format!("cannot connect: {m}"),
        PortalError::TooLarge(n) => format!("answer larger than {n} bytes"),
        PortalError::Malformed(m) => m,
        other => other.to_string(),
    }
}
