//! The room secret as an HTTP bearer token (`/metrics`, `/snapshot.jpg`).
//!
//! `Authorization: Bearer <64 hex>` goes to the signaling hub's own check
//! (`Hub::check_secret`): the join's constant-time comparison, throttle and
//! refusal counts, so HTTP adds no second way to guess. Tokens are never
//! logged.

use std::net::SocketAddr;

use http::{header, HeaderValue, Request, Response, StatusCode};

use super::{text, AppState, Body};

/// Checks `Authorization: Bearer <room secret>` with the signaling path's
/// constant-time comparison and throttle: `None` lets the request through;
/// the refusal is a 401 with `WWW-Authenticate: Bearer` (429 while the
/// source must wait). The token is never logged.
pub(super) fn refuse_without_bearer<B>(
    request: &Request<B>,
    state: &AppState,
    peer: SocketAddr,
) -> Option<Response<Body>> {
    use crate::signaling::hub::SecretRefusal;
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let challenge = |status, body: &'static str, error: &'static str| {
        let mut response = text(status, body);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(error));
        response
    };
    let Some(token) = token else {
        return Some(challenge(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs Authorization: Bearer <room secret>\n",
            "Bearer realm=\"lookout\"",
        ));
    };
    match state.relay.check_bearer(peer.ip(), token) {
        Ok(()) => None,
        Err(SecretRefusal::Throttled) => Some(challenge(
            StatusCode::TOO_MANY_REQUESTS,
            "too many wrong tokens from this address; wait and try again\n",
            "Bearer realm=\"lookout\", error=\"invalid_token\"",
        )),
        Err(SecretRefusal::Wrong | SecretRefusal::NoSecret) => Some(challenge(
            StatusCode::UNAUTHORIZED,
            "wrong token\n",
            "Bearer realm=\"lookout\", error=\"invalid_token\"",
        )),
    }
}
