//! The WHEP endpoint (`/whep`, `/whep/<id>`): HTTP in front of
//! [`crate::whep`]. See docs/whep.md.
//!
//! | request                    | answer                                         |
//! |----------------------------|------------------------------------------------|
//! | `POST /whep` (SDP offer)   | 201, SDP answer, `Location`, `ETag`; 503 full  |
//! | `DELETE /whep/<id>`        | 200; 404 for an unknown session                |
//! | `PATCH /whep/<id>` (sdpfrag) | 204: trickled candidates; 200 + fragment: ICE restart; 412 wrong `If-Match` |
//! | `OPTIONS` either           | 204 with `Allow` (and CORS preflight answers)  |
//!
//! Every `POST` and `DELETE` needs the room secret as a bearer token
//! ([`super::bearer`]: the hub's constant-time check and throttle).
//!
//! CORS: same-origin by default. A request that carries a foreign `Origin`
//! is refused (403) before its token is looked at, so a web page elsewhere
//! cannot spend the throttle's budget on guesses; the origins given with
//! `--whep-allow-origin` get preflight answers and
//! `Access-Control-Allow-Origin`, with `Location` and `ETag` exposed.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{add_security_headers, method_not_allowed, text, AppState, Body};
use crate::netlog::NetEvent;
use crate::whep::WhepError;

/// The largest offer accepted (a browser's offer with every codec is ~6 kB).
const MAX_OFFER_BYTES: usize = 64 * 1024;
/// How long a body may take to arrive (a client that stalls mid-offer must
/// not keep its connection's handler waiting).
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The request's body, at most [`MAX_OFFER_BYTES`], within [`BODY_DEADLINE`].
async fn read_body(body: Incoming) -> Option<Bytes> {
    let collected = tokio::time::timeout(BODY_DEADLINE, Limited::new(body, MAX_OFFER_BYTES).collect()).await;
    match collected {
        Ok(Ok(body)) => Some(body.to_bytes()),
        _ => None,
    }
}

const ALLOW_COLLECTION: &str = "POST, OPTIONS";
const ALLOW_SESSION: &str = "PATCH, DELETE, OPTIONS";
const TRICKLE_TYPE: &str = "application/trickle-ice-sdpfrag";

/// Answers a request for `/whep` or `/whep/...`.
pub(super) async fn handle(request: Request<Incoming>, state: &AppState, peer: SocketAddr) -> Response<Body> {
    let cors = match cors_origin(&request, state) {
        Ok(cors) => cors,
        Err(()) => {
            // Counted like a foreign WebSocket upgrade: `/metrics`'s
            // `foreign_origin` and the network log's line, never one line each.
            state.log.count(NetEvent::ForeignOrigin, peer.ip());
            return text(
                StatusCode::FORBIDDEN,
                "this origin may not use /whep; see --whep-allow-origin in docs/whep.md\n",
            );
        }
    };
    let path = request.uri().path().to_owned();
    let session = match path.strip_prefix("/whep") {
        Some("") => None,
        Some(rest) => match rest.strip_prefix('/') {
            Some(id) if !id.is_empty() && !id.contains('/') => Some(id.to_owned()),
            _ => return with_cors(text(StatusCode::NOT_FOUND, "not found\n"), cors.as_ref()),
        },
        None => return with_cors(text(StatusCode::NOT_FOUND, "not found\n"), cors.as_ref()),
    };
    let allow = if session.is_some() { ALLOW_SESSION } else { ALLOW_COLLECTION };
    let method = request.method().clone();
    let response = if method == Method::OPTIONS {
        options(&request, allow, cors.is_some())
    } else if method == Method::POST && session.is_none() {
        post(request, state, peer).await
    } else if method == Method::DELETE && session.is_some() {
        delete(&request, state, peer, session.as_deref().unwrap_or_default())
    } else if method == Method::PATCH && session.is_some() {
        patch(request, state, peer, session.as_deref().unwrap_or_default()).await
    } else {
        method_not_allowed(allow)
    };
    with_cors(response, cors.as_ref())
}

/// `Ok(Some(origin))`: a listed foreign origin (answer with CORS headers);
/// `Ok(None)`: no `Origin`, or the camera's own page; `Err`: any other page.
fn cors_origin<B>(request: &Request<B>, state: &AppState) -> Result<Option<HeaderValue>, ()> {
    let headers = request.headers();
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let listed = origin
        .to_str()
        .is_ok_and(|o| state.whep_allow_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(o.trim())));
    if listed {
        return Ok(Some(origin.clone()));
    }
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    if super::origin::allowed(Some(origin.as_bytes()), host, &state.names) {
        return Ok(None);
    }
    Err(())
}

fn with_cors(mut response: Response<Body>, origin: Option<&HeaderValue>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, ETag, Accept-Patch, Link"),
        );
    }
    response
}

/// `OPTIONS`: what is allowed here; for a listed origin's preflight also
/// the CORS answer.
fn options<B>(request: &Request<B>, allow: &'static str, listed: bool) -> Response<Body> {
    let mut response = text(StatusCode::NO_CONTENT, "");
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    headers.insert(HeaderName::from_static("accept-post"), HeaderValue::from_static("application/sdp"));
    headers.insert(HeaderName::from_static("accept-patch"), HeaderValue::from_static(TRICKLE_TYPE));
    let preflight = request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight && listed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(allow));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, If-Match"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

use http::HeaderName;

fn content_type_is(request: &Request<Incoming>, expected: &str) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// `POST /whep`: token, content type, a free slot, then the offer.
async fn post(request: Request<Incoming>, state: &AppState, peer: SocketAddr) -> Response<Body> {
    if let Some(refusal) = super::bearer::refuse_without_bearer(&request, state, peer) {
        return refusal;
    }
    if !content_type_is(&request, "application/sdp") {
        let mut response = text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the offer must be application/sdp\n");
        response
            .headers_mut()
            .insert(HeaderName::from_static("accept-post"), HeaderValue::from_static("application/sdp"));
        return response;
    }
    let Some(whep) = &state.whep else {
        return text(StatusCode::NOT_FOUND, "this server has no camera\n");
    };
    let Some(body) = read_body(request.into_body()).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too large, too slow or was cut off\n");
    };
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the offer is not UTF-8\n");
    };
    // In its own task: a client that hangs up while the camera gathers its
    // candidates cancels this handler, and must not cancel a half-built
    // connection with it (one that is built and never used ends by itself).
    let whep = whep.clone();
    let created = tokio::spawn(async move { whep.create(offer).await })
        .await
        .unwrap_or_else(|e| Err(WhepError::Failed(e.to_string())));
    match created {
        Ok(created) => {
            let mut response = Response::new(Full::new(Bytes::from(created.answer)));
            *response.status_mut() = StatusCode::CREATED;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // The id and tag are hex: always valid header values.
            if let Ok(location) = HeaderValue::from_str(&format!("/whep/{}", created.id)) {
                headers.insert(header::LOCATION, location);
            }
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", created.etag)) {
                headers.insert(header::ETAG, etag);
            }
            headers.insert(HeaderName::from_static("accept-patch"), HeaderValue::from_static(TRICKLE_TYPE));
            add_security_headers(headers);
            response
        }
        Err(WhepError::Full) => {
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the camera has --max-viewers viewers; try again later\n",
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            response
        }
        Err(WhepError::Offer(e)) => {
            tracing::debug!(%peer, error = %e, "WHEP offer refused");
            text(StatusCode::BAD_REQUEST, "the offer cannot be used (it must offer to receive H.264 video)\n")
        }
        Err(e @ WhepError::Failed(_)) => {
            tracing::warn!(%peer, error = %e, "WHEP session not created");
            text(StatusCode::INTERNAL_SERVER_ERROR, "the session could not be set up\n")
        }
    }
}

/// `DELETE /whep/<id>`: ends the session and frees its slot.
fn delete<B>(request: &Request<B>, state: &AppState, peer: SocketAddr, id: &str) -> Response<Body> {
    if let Some(refusal) = super::bearer::refuse_without_bearer(request, state, peer) {
        return refusal;
    }
    match &state.whep {
        Some(whep) if whep.delete(id) => text(StatusCode::OK, "session ended\n"),
        _ => text(StatusCode::NOT_FOUND, "no such session\n"),
    }
}

/// `PATCH /whep/<id>`: trickled candidates (RFC 8840 fragment) → 204.
async fn patch(request: Request<Incoming>, state: &AppState, peer: SocketAddr, id: &str) -> Response<Body> {
    use crate::whep::{PatchError, Patched};
    if let Some(refusal) = super::bearer::refuse_without_bearer(&request, state, peer) {
        return refusal;
    }
    if !content_type_is(&request, TRICKLE_TYPE) {
        let mut response =
            text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "a PATCH must be application/trickle-ice-sdpfrag\n");
        response
            .headers_mut()
            .insert(HeaderName::from_static("accept-patch"), HeaderValue::from_static(TRICKLE_TYPE));
        return response;
    }
    let Some(whep) = &state.whep else {
        return text(StatusCode::NOT_FOUND, "no such session\n");
    };
    let if_match = request.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Some(body) = read_body(request.into_body()).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the fragment is too large, too slow or was cut off\n");
    };
    let Ok(fragment) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "the fragment is not UTF-8\n");
    };
    // In its own task, as for POST: a restart half-applied must still be
    // recorded when the client hangs up.
    let (whep, id, fragment) = (whep.clone(), id.to_owned(), fragment.to_owned());
    let patched = tokio::spawn(async move { whep.patch(&id, if_match.as_deref(), &fragment).await })
        .await
        .unwrap_or_else(|e| Err(PatchError::RestartFailed(e.to_string())));
    match patched {
        Ok(Patched::Trickled) => text(StatusCode::NO_CONTENT, ""),
        Ok(Patched::Restarted { etag, fragment }) => {
            let mut response = Response::new(Full::new(Bytes::from(fragment)));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TRICKLE_TYPE));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                headers.insert(header::ETAG, etag);
            }
            add_security_headers(headers);
            response
        }
        Err(PatchError::NotFound) => text(StatusCode::NOT_FOUND, "no such session\n"),
        Err(PatchError::PreconditionFailed) => {
            text(StatusCode::PRECONDITION_FAILED, "If-Match does not match this session's ETag\n")
        }
        Err(PatchError::Incomplete) => {
            text(StatusCode::BAD_REQUEST, "an ICE restart needs both a=ice-ufrag and a=ice-pwd\n")
        }
        Err(e @ PatchError::RestartFailed(_)) => {
            tracing::warn!(%peer, error = %e, "WHEP ICE restart failed");
            text(StatusCode::BAD_REQUEST, "the ICE restart could not be applied\n")
        }
    }
}
