//! Routing a call to its handler: function lookup, `api.version`, ACL.
//!
//! `api.version`: this endpoint speaks WHM API 1 only, and WHM treats a call
//! without `api.version=1` as API 0 (a different answer format). So a
//! missing or different `api.version` is refused with `result: 0` and a
//! reason, rather than silently answered in a format the client did not
//! ask for. The CLI always sends `api.version=1`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use serde_json::{json, Value};

use crate::api::envelope::{envelope_bytes, ApiError, DataResult, Params};
use crate::app::App;
use crate::domain::caller::{Acl, Caller};
use crate::types::printable;

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = DataResult> + Send + 'a>>;

/// A function handler: `async fn(&Arc<App>, &Caller, &Params) -> ApiResult`
/// (or `-> DataResult` to hand over `data` already serialized), boxed by
/// [`handler!`](crate::handler).
pub type Handler = for<'a> fn(&'a Arc<App>, &'a Caller, &'a Params) -> HandlerFuture<'a>;

/// One row of the function table.
pub struct Function {
    pub name: &'static str,
    /// What a token needs to call it (root over the socket may call all).
    pub acl: Acl,
    pub handler: Handler,
}

/// Turns `path::to::async_fn` into a [`Handler`].
#[macro_export]
macro_rules! handler {
    ($f:path) => {{
        fn boxed<'a>(
            app: &'a ::std::sync::Arc<$crate::app::App>,
            caller: &'a $crate::domain::caller::Caller,
            params: &'a $crate::api::envelope::Params,
        ) -> $crate::api::dispatch::HandlerFuture<'a> {
            ::std::boxed::Box::pin(async move {
                $f(app, caller, params)
                    .await
                    .map($crate::api::envelope::Data::from)
            })
        }
        boxed as $crate::api::dispatch::Handler
    }};
}

impl Function {
    /// Functions that need only `tickets-list` (ticket_list,
    /// ticket_whitelist_check, ticket_get_support_info) change no grant,
    /// token or whitelist: their successful calls are logged at debug, not
    /// a line per poll at info. (They may still refresh the portal session,
    /// so they run like any other call.)
    pub fn read_only(&self) -> bool {
        self.acl == Acl::TicketsList
    }
}

pub fn lookup(name: &str) -> Option<&'static Function> {
    crate::api::FUNCTIONS.iter().find(|f| f.name == name)
}

/// The HTTP status and JSON body of a call by an authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// The envelope's `metadata.result` (for the log).
    pub result: u8,
    /// The serialized envelope.
    pub body: Bytes,
}

/// The body of a refused request (401/403/4xx): the envelope's metadata and
/// no `data`, so WHM clients that read `metadata.reason` still see why.
pub fn refusal(command: &str, reason: &str) -> Value {
    json!({
        "metadata": {"version": 1, "command": command, "result": 0, "reason": reason},
    })
}

pub async fn call(app: &Arc<App>, caller: &Caller, function: &str, params: &Params) -> Answer {
    let ok = |outcome: DataResult| Answer {
        status: 200,
        result: u8::from(outcome.is_ok()),
        body: Bytes::from(envelope_bytes(function, &outcome)),
    };
    let Some(f) = lookup(function) else {
        return ok(Err(ApiError::new(format!(
            "Unknown function “{}”.",
            printable(function)
        ))));
    };
    if !caller.allows(f.acl) {
        return Answer {
            status: 403,
            result: 0,
            body: Bytes::from(
                refusal(
                    function,
                    &format!(
                        "Access denied: this API token lacks the “{}” ACL needed for “{}”.",
                        f.acl.name(),
                        f.name
                    ),
                )
                .to_string(),
            ),
        };
    }
    match params.get("api.version") {
        Some("1") => {}
        Some(v) => {
            return ok(Err(ApiError::new(format!(
                "Unsupported “api.version” “{}”: this endpoint speaks WHM API 1 only; send api.version=1.",
                printable(v)
            ))))
        }
        None => {
            return ok(Err(ApiError::new(
                "Missing argument: “api.version” is required; send api.version=1 (WHM API 1).",
            )))
        }
    }
    ok((f.handler)(app, caller, params).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_unique_and_lookup_works() {
        let names: Vec<_> = crate::api::FUNCTIONS.iter().map(|f| f.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(lookup("api_token_create").is_some());
        assert!(lookup("nope").is_none());
    }
}
