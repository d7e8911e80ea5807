//! Which pages may open `/signal`: the `Origin` check of the WebSocket upgrade.
//!
//! A browser sends `Origin` with every WebSocket handshake, and a page from
//! anywhere may try to open one to the camera. Only the camera's own page is
//! allowed: `Origin` must be `https://` plus exactly the authority the
//! request was sent to (its `Host`), and that host must be an IP address,
//! `localhost`, or one of the camera's names: `lookout-<id>.local`, or
//! `lookout-<id>` with any domain a LAN's DNS gives it (`lookout-<id>.lan`,
//! `lookout-<id>.fritz.box`). The name rule defeats DNS rebinding, where a
//! foreign name is pointed at the camera so that the page's origin and `Host`
//! agree: the attacker's name would have to start with the camera's own.
//! A request without `Origin` comes from a program, not a web page, and is
//! allowed (anyone on the LAN can run such a program anyway).

use std::net::IpAddr;

/// Whether an upgrade with these `Origin` and `Host` header values may
/// proceed; `names` are the camera's host names (any case, no trailing dot).
pub fn allowed(origin: Option<&[u8]>, host: Option<&[u8]>, names: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (std::str::from_utf8(origin), host.map(std::str::from_utf8)) else {
        return false;
    };
    let Some(authority) = strip_prefix_ignore_case(origin.trim(), "https://") else {
        return false; // "null", http://, anything else
    };
    let (Some(from), Some(to)) = (split_authority(authority), split_authority(host.trim())) else {
        return false;
    };
    if !from.0.eq_ignore_ascii_case(&to.0) || from.1 != to.1 {
        return false;
    }
    let name = from.0.trim_end_matches('.');
    let literal = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    let first_label = name.split('.').next().unwrap_or(name);
    literal.parse::<IpAddr>().is_ok()
        || names.iter().any(|n| {
            // `localhost.<anything>` is not this machine.
            n.eq_ignore_ascii_case(name) || (n != "localhost" && n.eq_ignore_ascii_case(first_label))
        })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// `host[:port]` to the host and the port (443 when absent); `None` if it
/// has anything else (a path, user info, a bad port).
fn split_authority(authority: &str) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 443,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(origin: Option<&str>, host: &str) -> bool {
        let names = ["lookout-k7qd.local".to_owned(), "lookout-k7qd".to_owned(), "localhost".to_owned()];
        allowed(origin.map(str::as_bytes), Some(host.as_bytes()), &names)
    }

    #[test]
    fn the_cameras_own_page_may_connect() {
        assert!(check(Some("https://lookout-k7qd.local"), "lookout-k7qd.local"));
        assert!(check(Some("https://Lookout-K7QD.local:8443"), "lookout-k7qd.local:8443"));
        assert!(check(Some("https://192.168.1.20:8443"), "192.168.1.20:8443"));
        assert!(check(Some("https://[fe80::1]"), "[fe80::1]:443"));
        assert!(check(Some("https://localhost:1234"), "localhost:1234"));
        assert!(check(Some("https://lookout-k7qd.fritz.box"), "lookout-k7qd.fritz.box"), "a LAN's DNS name");
        assert!(check(None, "anything"), "programs send no Origin");
    }

    #[test]
    fn other_pages_may_not() {
        assert!(!check(Some("https://evil.example"), "lookout-k7qd.local"));
        assert!(!check(Some("https://evil.example"), "evil.example"), "DNS rebinding");
        assert!(!check(Some("https://lookout-k7qe.example"), "lookout-k7qe.example"), "another name");
        assert!(!check(Some("https://localhost.evil.example"), "localhost.evil.example"));
        assert!(!check(Some("http://lookout-k7qd.local"), "lookout-k7qd.local"), "plain http");
        assert!(!check(Some("https://lookout-k7qd.local:8443"), "lookout-k7qd.local:9443"), "another port");
        assert!(!check(Some("https://127.0.0.1:8000"), "127.0.0.1:8443"), "another local server");
        assert!(!check(Some("null"), "lookout-k7qd.local"));
        assert!(!check(Some("https://lookout-k7qd.local/x"), "lookout-k7qd.local"));
        assert!(!allowed(Some(b"https://localhost"), None, &["localhost".to_owned()]), "no Host");
        assert!(!allowed(Some(b"\xff"), Some(b"localhost"), &[]));
    }
}
