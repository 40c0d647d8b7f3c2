//! Human-readable rendering of API answers.

use serde_json::Value;

use crate::clock::rfc3339;

/// Left-aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
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
