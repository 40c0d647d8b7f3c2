//! Human-readable rendering of API answers.

use serde_json::Value;

use crate::clock::rfc3339;

/// Left-aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths = column_widths(headers, rows);
    let mut out = table_line(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        &widths,
    );
    out.push_str(&table_rows(rows, &widths));
    out
}

/// The width of each column: its widest cell or header.
pub fn column_widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    widths
}

/// Rows laid out in `widths` (a wider cell pushes its line to the right).
pub fn table_rows(rows: &[Vec<String>], widths: &[usize]) -> String {
    rows.iter().map(|r| table_line(r, widths)).collect()
}

fn table_line(cells: &[String], widths: &[usize]) -> String {
    let mut s = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            s.push_str(c);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            s.push_str(&format!("{c:<w$}  "));
        }
    }
    let mut s = s.trim_end().to_string();
    s.push('\n');
    s
}

fn time_or(v: &Value, none: &str) -> String {
    match v.as_i64() {
        Some(t) if t > 0 => rfc3339(t),
        _ => none.to_string(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// `notify status`: one row per receiver, then each one's last error.
pub fn notify_status(data: &Value) -> String {
    let empty = Vec::new();
    let list = data["receivers"].as_array().unwrap_or(&empty);
    if list.is_empty() {
        return "No notification receivers are configured ([[notify.webhook]], [notify.mail]).\n"
            .into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                text(&r["receiver"]),
                text(&r["pending"]),
                text(&r["delivered"]),
                text(&r["given_up"]),
                time_or(&r["last_success_at"], "never"),
                time_or(&r["next_attempt_at"], "-"),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "RECEIVER",
            "PENDING",
            "DELIVERED",
            "GIVEN UP",
            "LAST SUCCESS",
            "NEXT ATTEMPT",
        ],
        &rows,
    );
    for r in list {
        if let Some(e) = r["last_error"].as_str() {
            out.push_str(&format!(
                "{}: last error at {}: {e}\n",
                text(&r["receiver"]),
                time_or(&r["last_error_at"], "?")
            ));
        }
    }
    out
}

/// The whitelist status fields of an answer, one per line.
fn statuses(data: &Value) -> String {
    let mut out = String::new();
    for key in [
        "chain_status",
        "csf_wl_status",
        "hulk_wl_status",
        "host_access_wl_status",
    ] {
        if let Some(v) = data.get(key) {
            out.push_str(&format!("{key}: {}\n", text(v)));
        }
    }
    if let Some(n) = data["non_fatals"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<String> = n.iter().map(text).collect();
        out.push_str(&format!("non-fatal problems: {}\n", names.join(", ")));
    }
    out
}

/// `ticket_list` data as a table, one row per ticket and server.
pub fn ticket_list(data: &Value) -> String {
    let mut rows = Vec::new();
    for t in data["auths"].as_array().into_iter().flatten() {
        for s in t["servers"].as_array().into_iter().flatten() {
            let ips: Vec<String> = s["access_ips"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            rows.push(vec![
                text(&t["ticket_id"]),
                text(&s["server_num"]),
                text(&t["ticket_status"]),
                text(&s["auth_status"]),
                text(&s["ssh_username"]),
                time_or(&s["auth_time"], "-"),
                time_or(&s["expires_at"], "never"),
                ips.join(","),
                match &s["login_count"] {
                    Value::Null => "-".into(),
                    n => text(n),
                },
                time_or(&s["last_login"], "-"),
            ]);
        }
    }
    if rows.is_empty() {
        return "No grants.\n".into();
    }
    table(
        &[
            "TICKET",
            "SERVER",
            "TICKET_STATUS",
            "AUTH",
            "USER",
            "GRANTED",
            "EXPIRES",
            "SUPPORT_IPS",
            "LOGINS",
            "LAST_LOGIN",
        ],
        &rows,
    )
}

/// A `ticket_grant` answer.
pub fn granted(data: &Value) -> String {
    let mut out = format!(
        "Granted ticket {} server {} as {} until {}.\n",
        text(&data["ticket_id"]),
        text(&data["server_num"]),
        text(&data["ssh_username"]),
        time_or(&data["expires_at"], "revoked (no expiry)"),
    );
    if let Some(pw) = data["wheel_password"].as_str() {
        out.push_str(&format!(
            "Temporary user password (for sudo; shown only this once):\n\n{pw}\n\n"
        ));
    }
    out.push_str(&statuses(data));
    out
}

/// A `ticket_grant_extend` answer.
pub fn extended(data: &Value) -> String {
    format!(
        "Ticket {} server {} ({}): access now ends {} (was {}).\n",
        text(&data["ticket_id"]),
        text(&data["server_num"]),
        text(&data["ssh_username"]),
        time_or(&data["expires_at"], "never (no expiry)"),
        time_or(&data["previous_expires_at"], "no expiry"),
    )
}

/// The login users of a `ticket_list` answer's grants, each once.
pub fn grant_users(data: &Value) -> Vec<String> {
    let mut users: Vec<String> = Vec::new();
    for t in data["auths"].as_array().into_iter().flatten() {
        for s in t["servers"].as_array().into_iter().flatten() {
            if let Some(u) = s["ssh_username"].as_str() {
                if !users.iter().any(|x| x == u) {
                    users.push(u.to_string());
                }
            }
        }
    }
    users
}

/// A warning for a token made with every right and no end: a leaked copy
/// would work forever. `None` for anything narrower.
pub fn token_warning(function: &str, params: &[(String, String)]) -> Option<String> {
    if function != "api_token_create" {
        return None;
    }
    let acls: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k.starts_with("acl"))
        .map(|(_, v)| v.as_str())
        .collect();
    let all = acls.is_empty() || acls.contains(&"all");
    let expires = params
        .iter()
        .any(|(k, v)| k == "expires_at" && v != "0" && !v.is_empty());
    (all && !expires).then(|| {
        "warning: this token may do everything (ACL all) and never expires; a leaked copy \
         works until it is revoked. Prefer only the ACLs the client needs (--acl tickets-list, \
         ...) and an expiry (--expires 30d): `supportauth token update NAME --acl ... --expires 30d`."
            .to_string()
    })
}

/// A `ticket_revoke` / `ticket_remove_closed` / `ticket_revoke_all` answer.
pub fn revoked(data: &Value) -> String {
    let mut out = format!("Revoked {} key(s).\n", text(&data["revoked_keys"]));
    out.push_str(&statuses(data));
    out
}

/// `api_token_list` data as a table.
pub fn token_list(data: &Value) -> String {
    let mut rows = Vec::new();
    if let Some(tokens) = data["tokens"].as_object() {
        for (name, t) in tokens {
            let acls: Vec<String> = t["acls"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| v.as_i64() == Some(1))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            let wl = match t["whitelist_ips"].as_array() {
                Some(a) => a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                None => "any".into(),
            };
            rows.push(vec![
                name.clone(),
                time_or(&t["create_time"], "?"),
                time_or(&t["expires_at"], "never"),
                acls.join(","),
                wl,
            ]);
        }
    }
    if rows.is_empty() {
        return "No API tokens.\n".into();
    }
    table(&["NAME", "CREATED", "EXPIRES", "ACLS", "FROM"], &rows)
}

/// `api_token_create` data: the token, once, with a warning.
pub fn token_created(data: &Value) -> String {
    let acls: Vec<&str> = data["acls"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    format!(
        "API token “{}” created (ACLs: {}; expires: {}).\n\
         Save it now: it is shown only this once.\n\n{}\n\n\
         Use it as: Authorization: whm root:<token>\n",
        data["name"].as_str().unwrap_or("?"),
        acls.join(", "),
        time_or(&data["expires_at"], "never"),
        data["token"].as_str().unwrap_or("?"),
    )
}

/// Anything else: the `data` part, pretty-printed.
pub fn data(data: &Value) -> String {
    match data {
        Value::Null => "OK\n".into(),
        v => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_with_every_right_and_no_end_is_warned_about() {
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let create = "api_token_create";
        assert!(token_warning(create, &p(&[("token_name", "ci")])).is_some());
        assert!(token_warning(create, &p(&[("acl-0", "all"), ("expires_at", "0")])).is_some());
        assert!(token_warning(create, &p(&[("acl-0", "tickets-list")])).is_none());
        assert!(token_warning(create, &p(&[("expires_at", "1800000000")])).is_none());
        assert!(token_warning("api_token_update", &p(&[])).is_none());
    }

    #[test]
    fn notify_status_rows_then_errors() {
        let data = json!({"receivers": [
            {"receiver": "webhook:https://h.example/x", "pending": 3, "delivered": 7,
             "given_up": 0, "last_success_at": 1_795_000_000, "next_attempt_at": 1_795_000_060,
             "last_error": "cannot connect: h.example:443 (refused)", "last_error_at": 1_795_000_050},
            {"receiver": "mail", "pending": 0, "delivered": 10, "given_up": 1,
             "last_success_at": null, "next_attempt_at": null, "last_error": null}
        ]});
        let text = notify_status(&data);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("RECEIVER"), "{text}");
        assert!(
            lines[1].starts_with("webhook:https://h.example/x  3"),
            "{text}"
        );
        assert!(lines[1].contains("2026-"), "{text}");
        assert!(
            lines[2].starts_with("mail") && lines[2].contains("never"),
            "{text}"
        );
        assert!(
            lines[3].contains("last error at") && lines[3].contains("refused"),
            "{text}"
        );
        assert_eq!(lines.len(), 4, "{text}");
        assert!(notify_status(&json!({"receivers": []})).contains("No notification receivers"));
    }

    #[test]
    fn ticket_table_shows_logins() {
        let d = json!({"auths": [{"ticket_id": 5, "ticket_status": "OPEN", "servers": [
            {"server_num": 1, "auth_status": "AUTHED", "ssh_username": "root", "auth_time": 0,
             "expires_at": null, "access_ips": [], "login_count": 3, "last_login": 0},
            {"server_num": 2, "auth_status": "NOT_AUTHED", "ssh_username": "root",
             "auth_time": null, "expires_at": null, "access_ips": null,
             "login_count": null, "last_login": null}]}]});
        let t = ticket_list(&d);
        assert!(t.contains("LOGINS") && t.contains("LAST_LOGIN"), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains(" 3 "), "{t}");
        assert!(lines[2].trim_end().ends_with('-'), "{t}");
    }

    #[test]
    fn token_table() {
        let d = json!({"tokens": {"ci": {"name":"ci","create_time":0,"expires_at":null,
            "acls":{"all":0,"tickets-list":1},"whitelist_ips":null}}});
        let t = token_list(&d);
        assert!(t.starts_with("NAME"), "{t}");
        assert!(
            t.contains("ci  ")
                && t.contains("never")
                && t.contains("tickets-list")
                && t.contains("any"),
            "{t}"
        );
    }
}
