//! The optional plain-HTTP listener: it serves nothing, it only sends the
//! browser to the HTTPS address (308, same path).

use http::{header, Request, Response, StatusCode};

/// The redirect response for `request`, towards HTTPS on `https_port`.
pub fn redirect<B>(request: &Request<B>, https_port: u16, fallback_host: &str) -> Response<String> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(strip_port)
        .filter(|h| is_plausible_host(h))
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

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().map_or(host, |inner| &host[..inner.len() + 2]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
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
}
