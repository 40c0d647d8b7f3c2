//! `api_token_create`, `api_token_list`, `api_token_revoke`,
//! `api_token_update` (reference §2).
//!
//! Token administration never loosens a token beyond the caller's own
//! rights (root over the socket has them all):
//! - a caller may create, change or revoke only tokens whose ACLs it holds
//!   itself (so a `tokens-admin` token cannot touch an `all` token, nor
//!   mint one);
//! - it may not give a token a later expiry or a wider IP whitelist than
//!   its own (a new token without them inherits the caller's), so a token
//!   cannot lift its own limits either.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::api::envelope::{ApiError, ApiResult, Params};
use crate::app::App;
use crate::audit::{events, AuditEvent};
use crate::domain::caller::{Acl, Caller};
use crate::store::tokens::{TokenRecord, TokenStoreError};
use crate::types::{printable, Cidr, TokenName};

fn store_error(e: TokenStoreError) -> ApiError {
    match e {
        TokenStoreError::Duplicate(_) | TokenStoreError::NotFound(_) => {
            let mut s = e.to_string();
            if let Some(first) = s.get(..1) {
                s = first.to_uppercase() + &s[1..];
            }
            ApiError::new(format!("{s}."))
        }
        TokenStoreError::Store(e) => {
            tracing::error!(error = %e, "token store");
            ApiError::new("Internal error: the token store failed; see the daemon log.")
        }
    }
}

/// An audit event for a token change by `caller`.
fn token_event(event: &str, caller: &Caller, details: Value) -> AuditEvent {
    AuditEvent::new(event, caller.actor())
        .remote(caller.remote())
        .details(details)
}

fn audit_failed(e: &crate::audit::AuditError, what: &str) -> ApiError {
    tracing::error!(error = %e, "audit log write failed; {what}");
    ApiError::new(format!(
        "{what}: the audit log cannot be written ({e}). Fix the audit log and try again."
    ))
}

fn refuse_unknown(params: &Params, allowed: &[&str]) -> Result<(), ApiError> {
    let unknown = params.unknown(allowed);
    if unknown.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = unknown
        .iter()
        .map(|k| format!("“{}”", printable(k)))
        .collect();
    Err(ApiError::new(format!(
        "Unknown argument(s): {}. Accepted: {}.",
        names.join(", "),
        allowed.join(", ")
    )))
}

/// `acl-N` values, validated, deduplicated, and within the caller's own
/// rights. No ACL given at all means `all` (as WHM does for root tokens).
fn parse_acls(caller: &Caller, params: &Params) -> Result<Vec<Acl>, ApiError> {
    let mut acls = Vec::new();
    for raw in params.list("acl") {
        let acl = Acl::parse(raw)?;
        if !acls.contains(&acl) {
            acls.push(acl);
        }
    }
    if acls.is_empty() {
        acls.push(Acl::All);
    }
    acls.sort();
    for acl in &acls {
        if !caller.holds_all(&[*acl]) {
            return Err(ApiError::new(format!(
                "You cannot give a token the ACL “{}” because your own token does not have it.",
                acl.name()
            )));
        }
    }
    Ok(acls)
}

/// `expires_at`: absent, blank or 0 means never; otherwise a future epoch.
fn parse_expiry(params: &Params, now: i64) -> Result<Option<i64>, ApiError> {
    let Some(raw) = params.get("expires_at") else {
        return Ok(None);
    };
    let t: i64 = raw.parse().map_err(|_| {
        ApiError::new(format!(
            "“expires_at” must be a Unix time in seconds (or 0 for never); got “{}”.",
            printable(raw)
        ))
    })?;
    if t == 0 {
        return Ok(None);
    }
    if t <= now {
        return Err(ApiError::new(format!(
            "“expires_at” ({t}) is not in the future; the time now is {now}."
        )));
    }
    Ok(Some(t))
}

/// `whitelist_ip-N`: None when absent or only blank values were given.
fn parse_whitelist(params: &Params) -> Result<Option<Vec<Cidr>>, ApiError> {
    let mut out: Vec<Cidr> = Vec::new();
    for raw in params.list("whitelist_ip") {
        let c = Cidr::parse(raw)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// A token the caller may not act on: it holds rights the caller lacks.
/// The same answer as for a token that does not exist, so a weaker token
/// cannot even learn which stronger tokens there are.
fn check_target(caller: &Caller, rec: &TokenRecord) -> Result<(), ApiError> {
    if caller.holds_all(&rec.acls) {
        Ok(())
    } else {
        Err(store_error(TokenStoreError::NotFound(rec.name.clone())))
    }
}

/// An expiry no later than the caller's own.
fn check_expiry(caller: &Caller, expires_at: Option<i64>) -> Result<(), ApiError> {
    let Some(mine) = caller.limits().and_then(|l| l.expires_at) else {
        return Ok(());
    };
    match expires_at {
        Some(t) if t <= mine => Ok(()),
        _ => Err(ApiError::new(format!(
            "A token you manage cannot outlive your own: “expires_at” must be at most {mine} (your token's expiry)."
        ))),
    }
}

/// A whitelist no wider than the caller's own: every range inside one of
/// the caller's.
fn check_whitelist(caller: &Caller, list: Option<&[Cidr]>) -> Result<(), ApiError> {
    let Some(mine) = caller.limits().and_then(|l| l.whitelist.as_deref()) else {
        return Ok(());
    };
    let wider = || {
        ApiError::new(format!(
            "A token you manage cannot be usable from more addresses than your own: “whitelist_ip” must lie within {}.",
            mine.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        ))
    };
    let list = list.ok_or_else(wider)?;
    for c in list {
        if !mine.iter().any(|m| m.net().contains(&c.net())) {
            return Err(wider());
        }
    }
    Ok(())
}

fn acl_map(acls: &[Acl]) -> Value {
    let mut m = Map::new();
    for a in Acl::ALL {
        m.insert(a.name().into(), json!(u8::from(acls.contains(&a))));
    }
    Value::Object(m)
}

/// The `api_token_list` entry of one token.
fn describe(rec: &TokenRecord) -> Value {
    json!({
        "name": rec.name.as_str(),
        "create_time": rec.create_time,
        "expires_at": rec.expires_at,
        "acls": acl_map(&rec.acls),
        "whitelist_ips": rec.whitelist_ips.as_ref().map(|l| l.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
    })
}

pub async fn create(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    refuse_unknown(params, &["token_name", "acl", "expires_at", "whitelist_ip"])?;
    let name = TokenName::parse(params.require("token_name")?)?;
    let now = app.clock.now();
    // Not given: the caller's own limits, not none.
    let own = caller.limits().cloned().unwrap_or_default();
    let expires_at = match params.get("expires_at") {
        Some(_) => parse_expiry(params, now)?,
        None => own.expires_at,
    };
    let whitelist_ips = match parse_whitelist(params)? {
        Some(l) => Some(l),
        None => own.whitelist,
    };
    check_expiry(caller, expires_at)?;
    check_whitelist(caller, whitelist_ips.as_deref())?;
    let rec = TokenRecord {
        name,
        owner: "root".into(),
        create_time: now,
        expires_at,
        acls: parse_acls(caller, params)?,
        whitelist_ips,
    };
    let token = crate::api::auth::generate_token().map_err(|e| {
        tracing::error!(error = %e, "OS random number generator failed");
        ApiError::new("Internal error: the OS random number generator failed.")
    })?;
    app.store
        .insert_token(&rec, &crate::api::auth::hash_token(&token))
        .await
        .map_err(store_error)?;
    // Never the token itself: its name and what it may do.
    let ev = token_event(events::API_TOKEN_CREATE, caller, describe(&rec));
    if let Err(e) = app.audit.append(ev).await {
        // A token nobody can account for must not exist.
        if let Err(del) = app.store.delete_token(&rec.name).await {
            tracing::error!(error = %del, token_name = %rec.name, "cannot remove the unaudited token");
        }
        return Err(audit_failed(&e, "The token was not created"));
    }
    tracing::info!(token_name = %rec.name, actor = %caller, "API token created");
    Ok(json!({
        "name": rec.name.as_str(),
        "token": token,
        "create_time": rec.create_time,
        "expires_at": rec.expires_at,
        "acls": rec.acls.iter().map(|a| a.name()).collect::<Vec<_>>(),
    }))
}

pub async fn list(app: &Arc<App>, _caller: &Caller, params: &Params) -> ApiResult {
    refuse_unknown(params, &[])?;
    let all = app
        .store
        .list_tokens()
        .await
        .map_err(|e| store_error(e.into()))?;
    let mut m = Map::new();
    for rec in &all {
        m.insert(rec.name.to_string(), describe(rec));
    }
    Ok(json!({ "tokens": m }))
}

pub async fn revoke(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    refuse_unknown(params, &["token_name"])?;
    let raw = params.list("token_name");
    if raw.is_empty() {
        return Err(ApiError::new(
            "Missing argument: “token_name” (or token_name-0, token_name-1, ...) is required.",
        ));
    }
    let names = raw
        .into_iter()
        .map(TokenName::parse)
        .collect::<Result<Vec<_>, _>>()?;
    // Check them all first so a typo (or a token stronger than the
    // caller) in one revokes none.
    for n in &names {
        match app
            .store
            .token(n)
            .await
            .map_err(|e| store_error(e.into()))?
        {
            Some(rec) => check_target(caller, &rec)?,
            None => return Err(store_error(TokenStoreError::NotFound(n.clone()))),
        }
    }
    let mut revoked = Vec::new();
    let mut non_fatals: Vec<&str> = Vec::new();
    for n in names {
        match app.store.delete_token(&n).await {
            Ok(()) | Err(TokenStoreError::NotFound(_)) => {}
            Err(e) => return Err(store_error(e)),
        }
        tracing::info!(token_name = %n, actor = %caller, "API token revoked");
        // Taking access away is always safe: a failed audit write does not
        // undo the revocation, it is reported.
        let ev = token_event(
            events::API_TOKEN_REVOKE,
            caller,
            json!({ "name": n.as_str() }),
        );
        if let Err(e) = app.audit.append(ev).await {
            tracing::error!(error = %e, token_name = %n, "revocation could not be audited");
            if !non_fatals.contains(&"audit_log") {
                non_fatals.push("audit_log");
            }
        }
        revoked.push(n.to_string());
    }
    Ok(json!({ "revoked": revoked, "non_fatals": non_fatals }))
}

pub async fn update(app: &Arc<App>, caller: &Caller, params: &Params) -> ApiResult {
    refuse_unknown(
        params,
        &[
            "token_name",
            "new_name",
            "acl",
            "expires_at",
            "whitelist_ip",
        ],
    )?;
    let name = TokenName::parse(params.require("token_name")?)?;
    let Some(mut rec) = app
        .store
        .token(&name)
        .await
        .map_err(|e| store_error(e.into()))?
    else {
        return Err(store_error(TokenStoreError::NotFound(name)));
    };
    check_target(caller, &rec)?;
    let old = rec.clone();
    if let Some(new) = params.get("new_name") {
        rec.name = TokenName::parse(new)?;
    }
    if params.has_list("acl") {
        rec.acls = parse_acls(caller, params)?;
    }
    if params.has("expires_at") {
        rec.expires_at = parse_expiry(params, app.clock.now())?;
        check_expiry(caller, rec.expires_at)?;
    }
    if params.has_list("whitelist_ip") {
        // An explicitly blank whitelist_ip clears the list.
        rec.whitelist_ips = parse_whitelist(params)?;
        check_whitelist(caller, rec.whitelist_ips.as_deref())?;
    }
    app.store
        .update_token(&name, &rec)
        .await
        .map_err(store_error)?;
    let after = describe(&rec);
    let ev = token_event(
        events::API_TOKEN_UPDATE,
        caller,
        json!({ "name": name.as_str(), "before": describe(&old), "after": after }),
    );
    if let Err(e) = app.audit.append(ev).await {
        // Put the token back as it was: no unaudited change stays.
        if let Err(undo) = app.store.update_token(&rec.name, &old).await {
            tracing::error!(error = %undo, token_name = %name, "cannot undo the unaudited token update");
        }
        return Err(audit_failed(&e, "The token was not updated"));
    }
    tracing::info!(token_name = %name, new_name = %rec.name, actor = %caller, "API token updated");
    Ok(after)
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
    fn acls_default_to_all_and_cannot_escalate() {
        let root = Caller::LocalRoot { uid: 0 };
        assert_eq!(parse_acls(&root, &p(&[])).unwrap(), vec![Acl::All]);
        let admin = Caller::Token {
            user: "root".into(),
            name: TokenName::parse("t").unwrap(),
            acls: vec![Acl::TokensAdmin, Acl::TicketsList],
            remote: None,
            limits: Default::default(),
        };
        assert!(parse_acls(&admin, &p(&[])).is_err());
        assert_eq!(
            parse_acls(&admin, &p(&[("acl-0", "tickets-list")])).unwrap(),
            vec![Acl::TicketsList]
        );
        assert!(parse_acls(&admin, &p(&[("acl-0", "tickets-grant")])).is_err());
        assert!(parse_acls(&root, &p(&[("acl-0", "root")])).is_err());
    }

    fn token(acls: &[Acl], expires_at: Option<i64>, whitelist: &[&str]) -> Caller {
        Caller::Token {
            user: "root".into(),
            name: TokenName::parse("me").unwrap(),
            acls: acls.to_vec(),
            remote: None,
            limits: crate::domain::caller::TokenLimits {
                expires_at,
                whitelist: (!whitelist.is_empty())
                    .then(|| whitelist.iter().map(|c| Cidr::parse(c).unwrap()).collect()),
            },
        }
    }

    fn rec(acls: &[Acl]) -> TokenRecord {
        TokenRecord {
            name: TokenName::parse("target").unwrap(),
            owner: "root".into(),
            create_time: 0,
            expires_at: None,
            acls: acls.to_vec(),
            whitelist_ips: None,
        }
    }

    /// Who may act on whom: the caller must hold every ACL of the target.
    #[test]
    fn acl_matrix_of_token_administration() {
        use Acl::*;
        let root = Caller::LocalRoot { uid: 0 };
        let all = token(&[All, TokensAdmin], None, &[]);
        let admin = token(&[TokensAdmin], None, &[]);
        let admin_list = token(&[TokensAdmin, TicketsList], None, &[]);
        let targets: [&[Acl]; 5] = [
            &[All],
            &[TokensAdmin],
            &[TicketsList],
            &[TokensAdmin, TicketsList],
            &[TicketsGrant],
        ];
        let expect = [
            (&root, [true, true, true, true, true]),
            (&all, [true, true, true, true, true]),
            (&admin, [false, true, false, false, false]),
            (&admin_list, [false, true, true, true, false]),
        ];
        for (caller, row) in expect {
            for (t, ok) in targets.iter().zip(row) {
                assert_eq!(
                    check_target(caller, &rec(t)).is_ok(),
                    ok,
                    "{caller} on {t:?}"
                );
            }
        }
    }

    #[test]
    fn limits_cannot_be_loosened() {
        let fenced = token(&[Acl::TokensAdmin], Some(1000), &["192.0.2.0/24"]);
        assert!(check_expiry(&fenced, Some(999)).is_ok());
        assert!(check_expiry(&fenced, Some(1000)).is_ok());
        assert!(check_expiry(&fenced, Some(1001)).is_err());
        assert!(check_expiry(&fenced, None).is_err(), "never expiring");
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert!(check_whitelist(&fenced, Some(&[c("192.0.2.7"), c("192.0.2.128/25")])).is_ok());
        assert!(check_whitelist(&fenced, Some(&[c("192.0.0.0/16")])).is_err());
        assert!(check_whitelist(&fenced, Some(&[c("198.51.100.1")])).is_err());
        assert!(check_whitelist(&fenced, None).is_err(), "cleared");
        let free = token(&[Acl::TokensAdmin], None, &[]);
        assert!(check_expiry(&free, None).is_ok());
        assert!(check_whitelist(&free, None).is_ok());
        let root = Caller::LocalRoot { uid: 0 };
        assert!(check_expiry(&root, None).is_ok());
    }

    #[test]
    fn expiry_rules() {
        assert_eq!(parse_expiry(&p(&[]), 100).unwrap(), None);
        assert_eq!(parse_expiry(&p(&[("expires_at", "0")]), 100).unwrap(), None);
        assert_eq!(
            parse_expiry(&p(&[("expires_at", "101")]), 100).unwrap(),
            Some(101)
        );
        assert!(parse_expiry(&p(&[("expires_at", "100")]), 100).is_err());
        assert!(parse_expiry(&p(&[("expires_at", "soon")]), 100).is_err());
    }

    #[test]
    fn whitelist_rules() {
        assert_eq!(parse_whitelist(&p(&[])).unwrap(), None);
        let w = parse_whitelist(&p(&[
            ("whitelist_ip-0", "192.0.2.0/24"),
            ("whitelist_ip-1", "2001:db8::1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(w.len(), 2);
        assert!(parse_whitelist(&p(&[("whitelist_ip-0", "10.0.0.1/8")])).is_err());
    }
}
