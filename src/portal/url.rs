//! The portal's base URL: parsed once, https required except for loopback
//! (a plain-text token on the network would be a credential leak).

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    /// Host as written (name or address, IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for the root).
    pub path: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let s = s.trim();
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{s:?} must start with https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) || path.contains("..") {
            return Err(format!(
                "{s:?}: user info, query, fragment and “..” are not allowed"
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unterminated IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{s:?}: bad authority")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{s:?}: bad port"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(format!("{s:?}: bad host name"));
        }
        if !tls && !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return Err(format!(
                "{s:?}: plain http is only allowed for loopback addresses; use https://"
            ));
        }
        Ok(BaseUrl {
            tls,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `Host:` header value.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The request target for `call` (which starts with '/').
    pub fn target(&self, call: &str) -> String {
        format!("{}{call}", self.path)
    }
}

/// `TICKETS_SERVER_URL` from cPanel's cpsources.conf (`KEY=value` lines).
pub fn from_cpsources(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == "TICKETS_SERVER_URL")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let u = BaseUrl::parse("https://tickets.example.com/api/").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/api"));
        assert_eq!(u.target("/tickets/open"), "/api/tickets/open");
        let l = BaseUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (l.tls, l.port, l.authority()),
            (false, 8080, "127.0.0.1:8080".into())
        );
        let v6 = BaseUrl::parse("http://[::1]:81/x").unwrap();
        assert_eq!(v6.host, "::1");
        assert!(BaseUrl::parse("http://tickets.example.com").is_err());
        assert!(BaseUrl::parse("http://192.0.2.1").is_err());
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("https://u@x/").is_err());
    }

    #[test]
    fn cpsources() {
        let t =
            "HTTPUPDATE=httpupdate.cpanel.net\nTICKETS_SERVER_URL=https://tickets.example.net\n";
        assert_eq!(
            from_cpsources(t).as_deref(),
            Some("https://tickets.example.net")
        );
        assert_eq!(from_cpsources("X=1\n"), None);
    }
}
