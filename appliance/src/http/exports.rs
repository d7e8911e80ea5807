//! What other tools read: `/metrics` for Prometheus ([`crate::metrics`])
//! and `/snapshot.jpg` stills ([`crate::media::snapshot`]), both behind the
//! bearer token ([`super::bearer`]).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

use super::{add_security_headers, text, AppState, Body};

/// `/metrics`: the room secret as a bearer token unless `--metrics-open`.
pub(super) fn metrics<B>(request: &Request<B>, state: &AppState, peer: SocketAddr) -> Response<Body> {
    if !state.metrics_open {
        if let Some(refusal) = super::bearer::refuse_without_bearer(request, state, peer) {
            return refusal;
        }
    }
    match crate::metrics::render(state) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            add_security_headers(headers);
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics not encoded");
            text(StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n")
        }
    }
}

/// How long `/snapshot.jpg` waits for the camera's next frame.
const STILL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `/snapshot.jpg`: a JPEG of the next captured raw frame, scaled down to
/// `?width=` (see `media::snapshot`); the encoder is not involved.
pub(super) async fn still(state: &AppState, query: Option<String>) -> Response<Body> {
    use crate::media::snapshot::{encode_jpeg, StillError};
    let Some(camera) = &state.camera else {
        return text(StatusCode::NOT_FOUND, "this server has no camera\n");
    };
    let width = match query_width(query.as_deref()) {
        Ok(width) => width,
        Err(()) => {
            return text(StatusCode::BAD_REQUEST, "width must be a number of pixels, e.g. ?width=640\n")
        }
    };
    let Ok(Ok(frame)) = tokio::time::timeout(STILL_WAIT, camera.request_still()).await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the camera delivered no frame in time; see /healthz\n",
        );
    };
    match tokio::task::spawn_blocking(move || encode_jpeg(&frame, width)).await {
        Ok(Ok(jpeg)) => {
            let mut response = Response::new(Full::new(Bytes::from(jpeg)));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            add_security_headers(headers);
            response
        }
        Ok(Err(e @ StillError::Width { .. })) => {
            let mut response = text(StatusCode::BAD_REQUEST, "");
            *response.body_mut() = Full::new(Bytes::from(format!("{e}\n")));
            response
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "snapshot not encoded");
            text(StatusCode::INTERNAL_SERVER_ERROR, "the snapshot could not be encoded\n")
        }
        Err(e) => {
            tracing::warn!(error = %e, "snapshot task failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "the snapshot could not be encoded\n")
        }
    }
}

/// `width=N` from a query string: `Ok(None)` without one, `Err` for a
/// value that is not a number. Other parameters are ignored.
fn query_width(query: Option<&str>) -> Result<Option<usize>, ()> {
    let Some(value) =
        query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| pair.strip_prefix("width="))
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_width_comes_from_the_query_and_a_bad_one_is_refused() {
        assert_eq!(query_width(None), Ok(None));
        assert_eq!(query_width(Some("t=1")), Ok(None));
        assert_eq!(query_width(Some("t=1&width=640")), Ok(Some(640)));
        assert_eq!(query_width(Some("width=wide")), Err(()));
        assert_eq!(query_width(Some("width=-3")), Err(()));
    }
}
