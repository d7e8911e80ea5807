//! The HTTPS routes: the embedded viewer, `/healthz`, `/api/info`, and the
//! WebSocket upgrade at `/signal`.
//!
//! | path        | methods   | answer                                   |
//! |-------------|-----------|------------------------------------------|
//! | `/`, assets | GET, HEAD | embedded files from `web-assets/`        |
//! | `/healthz`  | GET, HEAD | `ok`, or 503 with a JSON reason          |
//! | `/api/info` | GET, HEAD | JSON: device, version, fingerprint, settings problems |
//! | `/manifest.webmanifest` | GET, HEAD | web app manifest ([`manifest`]) |
//! | `/signal`   | GET       | WebSocket upgrade (426 without one)      |
//! | `/metrics`  | GET, HEAD | Prometheus text ([`crate::metrics`]); bearer token |
//! | `/snapshot.jpg` | GET, HEAD | JPEG of the next raw frame (`?width=`); bearer token |
//! | `/whep`, `/whep/<id>` | POST, DELETE, OPTIONS | WHEP playback ([`whep`]); bearer token |
//!
//! Anything else is 404; a known path with another method is 405. An upgrade
//! from a foreign `Origin` is 403 (see [`origin`]); one beyond the signaling
//! connection budget, with nothing in it that may make room, is 503.

pub mod assets;
mod bearer;
mod exports;
pub mod manifest;
pub mod origin;
pub mod redirect;
mod whep;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::limits::Budget;
use crate::netlog::{NetEvent, NetworkLog};
use crate::signaling::connection::{self, ConnectionConfig};
use crate::signaling::Relay;

/// Facts about the device that `/api/info` reports. Holds no secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub device_id: String,
    pub hostname: String,
    pub version: &'static str,
    pub certificate_sha256: String,
    pub mode: &'static str,
    pub identity: crate::identity_store::IdentityOrigin,
}

/// What every request handler can see.
pub struct AppState {
    pub relay: Relay,
    pub info: DeviceInfo,
    pub connection: ConnectionConfig,
    /// The camera's status, when the camera side runs.
    pub camera: Option<crate::media::pipeline::StatusHandle>,
    /// Other cameras on the LAN (filled by mDNS when it runs).
    pub nearby: crate::nearby::NearbyCameras,
    /// Upgraded WebSockets are counted here, apart from plain HTTP.
    pub signaling: Budget,
    /// The camera's host names, for the `Origin` check.
    pub names: Vec<String>,
    pub log: NetworkLog,
    /// `/metrics` without a bearer token (`--metrics-open`).
    pub metrics_open: bool,
    /// When the server started (`lookout_uptime_seconds`).
    pub started: std::time::Instant,
    /// WHEP sessions, when the camera side runs.
    pub whep: Option<crate::whep::WhepSessions>,
    /// Foreign origins whose pages may use `/whep` (`--whep-allow-origin`).
    pub whep_allow_origins: Vec<String>,
    /// The settings file and its problems (`/api/info`, the viewer's notice).
    pub settings_file: crate::settings::SettingsFileReport,
}

/// The content security policy of every page: only our own scripts, styles
/// and connections; media from blobs; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

type Body = Full<Bytes>;

/// Answers one request.
pub async fn handle(request: Request<Incoming>, state: Arc<AppState>, peer: SocketAddr) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let response = match path.as_str() {
        "/whep" => whep::handle(request, &state, peer).await,
        p if p.starts_with("/whep/") => whep::handle(request, &state, peer).await,
        "/signal" if method == Method::GET => upgrade(request, state, peer),
        "/signal" => method_not_allowed("GET"),
        "/healthz" => get_only(&method, || healthz(&state)),
        "/api/info" => get_only(&method, || info(&state)),
        "/manifest.webmanifest" => get_only(&method, || web_app_manifest(&state)),
        "/metrics" => get_only(&method, || exports::metrics(&request, &state, peer)),
        "/snapshot.jpg" if method == Method::GET || method == Method::HEAD => {
            match bearer::refuse_without_bearer(&request, &state, peer) {
                Some(refusal) => refusal,
                None => exports::still(&state, request.uri().query().map(str::to_owned)).await,
            }
        }
        "/snapshot.jpg" => method_not_allowed("GET, HEAD"),
        _ => match assets::find(&path) {
            Some(asset) => get_only(&method, || page(asset)),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    };
    let mut response = response;
    if method == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

fn get_only(method: &Method, respond: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if method == Method::GET || method == Method::HEAD {
        respond()
    } else {
        method_not_allowed("GET, HEAD")
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    add_security_headers(headers);
    response
}

fn page(asset: assets::Asset) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(asset.bytes)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    add_security_headers(headers);
    response
}

/// `200 ok` while the camera delivers frames (watched or not) and its peer
/// is in its room; otherwise 503 with `{"status":"unavailable","reason":...}`.
/// Without a camera side (`--no-camera`, `--open-rooms`) the server alone
/// decides: `ok`.
fn healthz(state: &AppState) -> Response<Body> {
    let Some(camera) = &state.camera else {
        return text(StatusCode::OK, "ok\n");
    };
    let problem = match camera.health() {
        Err(problem) => problem,
        Ok(()) if !state.relay.device_in_room() => crate::media::pipeline::HealthProblem::Restarting,
        Ok(()) => return text(StatusCode::OK, "ok\n"),
    };
    let status = camera.snapshot();
    let body = serde_json::json!({
        "status": "unavailable",
        "reason": problem.as_str(),
        "camera": status.state,
        "camera_peer_in_room": state.relay.device_in_room(),
        "error": status.error,
    });
    json(StatusCode::SERVICE_UNAVAILABLE, &body)
}

fn info(state: &AppState) -> Response<Body> {
    let signaling = state.relay.stats();
    let body = serde_json::json!({
        "name": state.info.name,
        "device_id": state.info.device_id,
        "hostname": state.info.hostname,
        "version": state.info.version,
        "certificate_sha256": state.info.certificate_sha256,
        "mode": state.info.mode,
        "identity": state.info.identity,
        // The one viewer count (crate::viewers); `camera.viewers` and
        // `signaling.viewers` are the same number.
        "viewers": signaling.viewers,
        "signaling": signaling,
        "camera": state.camera.as_ref().map(|camera| camera.snapshot()),
        "camera_peer_in_room": state.camera.as_ref().map(|_| state.relay.device_in_room()),
        "cameras": state.nearby.list(),
        // Which settings file was read, and what in it was left out (the
        // camera then uses the defaults for those keys).
        "settings_file": state.settings_file.file,
        "settings_problems": state.settings_file.problems,
    });
    json(StatusCode::OK, &body)
}

fn web_app_manifest(state: &AppState) -> Response<Body> {
    let mut response = json(StatusCode::OK, &manifest::manifest(&state.info));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(manifest::CONTENT_TYPE));
    response
}

/// A JSON body that is never cached (it describes the camera right now).
fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_security_headers(headers);
    response
}

fn add_security_headers(headers: &mut http::HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Accepts a WebSocket upgrade and hands the socket to a connection task.
fn upgrade(request: Request<Incoming>, state: Arc<AppState>, peer: SocketAddr) -> Response<Body> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let is_upgrade = has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket");
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_upgrade && version_ok) else {
        let mut response =
            text(StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket (version 13) only\n");
        response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    };
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    if !origin::allowed(origin, headers.get(header::HOST).map(HeaderValue::as_bytes), &state.names) {
        state.log.count(NetEvent::ForeignOrigin, peer.ip());
        return text(StatusCode::FORBIDDEN, "only the camera's own page may open /signal\n");
    }
    let Some(permit) = state.signaling.admit(peer.ip(), &state.log) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many signaling connections; try again later\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let websocket_config = state.connection.websocket_config();
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(websocket_config),
                )
                .await;
                let context = connection::Context {
                    relay: state.relay.clone(),
                    ip: peer.ip().to_canonical(),
                    config: state.connection,
                    permit,
                    log: state.log.clone(),
                };
                connection::run(socket, context).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
