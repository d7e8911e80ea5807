//! The optional plain-HTTP listener: it serves nothing, it only sends the
//! browser to the HTTPS address (308, same path).
//!
//! The `Host` header comes from the network: [`host_without_port`] takes
//! any string and answers `None` for anything but a plausible host name or
//! IP address (with an optional port), so the redirect never points at a
//! name a client made up out of odd characters, and never panics.

use http::{header, Request, Response, StatusCode};

/// The redirect response for `request`, towards HTTPS on `https_port`.
pub fn redirect<B>(request: &Request<B>, https_port: u16, fallback_host: &str) -> Response<String> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port)
        .unwrap_or(fallback_host);
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut response = Response::new(format!("Lookout is served over HTTPS: {location}\n"));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The host of a `Host` header value (an authority: `name`, `name:port`,
/// `1.2.3.4:port`, `[v6]` or `[v6]:port`), without the port; `None` when
/// the value is not one of those. An IPv6 address keeps its brackets.
pub fn host_without_port(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inner, rest) = bracketed.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let port = if rest.is_empty() { None } else { Some(rest.strip_prefix(':')?) };
        // `[` and `]` are one byte each.
        (&authority[..inner.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        port.parse::<u16>().ok().filter(|_| port.bytes().all(|b| b.is_ascii_digit()))?;
    }
    let plausible_name = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    (host.starts_with('[') || plausible_name).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: Option<&str>, uri: &str, port: u16) -> String {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        let response = redirect(&builder.body(()).unwrap(), port, "lookout-k7qd.local");
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        response.headers()[header::LOCATION].to_str().unwrap().to_owned()
    }

    #[test]
    fn keeps_host_and_path_and_swaps_the_port() {
        assert_eq!(location(Some("cam.local:8080"), "/a?b=c", 8443), "https://cam.local:8443/a?b=c");
        assert_eq!(location(Some("[::1]:80"), "/", 443), "https://[::1]/");
        assert_eq!(location(None, "/", 443), "https://lookout-k7qd.local/");
        assert_eq!(location(Some("evil/host"), "/", 443), "https://lookout-k7qd.local/");
    }

    #[test]
    fn odd_host_headers_fall_back_to_the_camera_name() {
        for host in [
            "[",
            "[]",
            "[:",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:99999",
            "[zz]",
            "a:b:c",
            "a:",
            ":80",
            "",
            "cam:+80",
        ] {
            assert_eq!(location(Some(host), "/", 443), "https://lookout-k7qd.local/", "Host: {host}");
        }
    }

    #[test]
    fn hosts_without_their_ports() {
        assert_eq!(host_without_port("cam.local"), Some("cam.local"));
        assert_eq!(host_without_port("192.0.2.1:80"), Some("192.0.2.1"));
        assert_eq!(host_without_port("[fe80::1]:80"), Some("[fe80::1]"));
        assert_eq!(host_without_port("[fe80::1]"), Some("[fe80::1]"));
        assert_eq!(host_without_port("["), None);
    }
}
