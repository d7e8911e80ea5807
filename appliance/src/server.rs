//! The camera's servers: the HTTPS listener (page, `/healthz`, `/api/info`,
//! `/signal`) and the optional plain-HTTP redirect listener, both on the
//! shared accept path of [`crate::listener`], each with its own connection
//! budget, plus the signaling budget for upgraded WebSockets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use lookout_provisioning::Identity;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::http::{self, AppState, DeviceInfo};
use crate::identity_store::IdentityOrigin;
use crate::limits::Budget;
use crate::listener::{Handler, Listener};
use crate::media::pipeline::StatusHandle;
use crate::nearby::NearbyCameras;
use crate::netlog::NetworkLog;
use crate::settings::{RoomMode, Settings};
use crate::signaling::{HubConfig, Relay, RoomPolicy};
use crate::tls;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    // `error`, not `source`: the message already says it, with what to do after it.
    #[error("cannot listen on {addr}: {error} ({})", bind_hint(.error, .flag))]
    Bind { addr: SocketAddr, flag: &'static str, error: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    redirect_listener: Option<TcpListener>,
    acceptor: TlsAcceptor,
    http_budget: Budget,
    redirect_budget: Budget,
    state: Arc<AppState>,
    handshake_timeout: Duration,
    hostname: String,
    log: NetworkLog,
    /// The prefixes read at start, and how often to read them again.
    local_prefixes: crate::sources::LocalPrefixes,
    prefix_refresh: Duration,
}

impl Server {
    /// Binds the listeners. Nothing is served until [`Server::run`].
    pub async fn bind(
        settings: &Settings,
        identity: &Identity,
        origin: IdentityOrigin,
        camera: Option<StatusHandle>,
    ) -> Result<Server, ServerError> {
        let listener = bind(settings.listen, "--listen").await?;
        let redirect_listener = match settings.http_redirect {
            Some(addr) => Some(bind(addr, "--http-redirect").await?),
            None => None,
        };
        let acceptor = TlsAcceptor::from(tls::server_config(identity)?);
        let policy = match settings.rooms {
            RoomMode::Appliance { max_viewers } => {
                RoomPolicy::Appliance { secret: identity.room_secret().clone(), max_viewers }
            }
            RoomMode::Open { max_clients } => RoomPolicy::Open { max_clients },
        };
        let log = NetworkLog::new();
        let local_prefixes = crate::sources::LocalPrefixes::of_this_host();
        tracing::debug!(prefixes = %local_prefixes, "this camera's IPv6 prefixes");
        let relay = Relay::new(HubConfig {
            policy,
            throttle: settings.throttle.clone(),
            local_prefixes: local_prefixes.clone(),
            log: log.clone(),
            // The one viewer count: the pipeline's encoder gate reads what the hub writes.
            viewers: camera.as_ref().map(StatusHandle::viewers).unwrap_or_default(),
        });
        // WHEP viewers take the camera's fan-out and peer settings, as the
        // camera peer's sessions do.
        let whep = match (&camera, &settings.media) {
            (Some(camera), Some(media)) => Some(crate::whep::WhepSessions::new(
                relay.clone(),
                camera.fanout().clone(),
                media.peer.clone(),
            )),
            _ => None,
        };
        let info = DeviceInfo {
            name: format!("Lookout {}", identity.device_id()),
            device_id: identity.device_id().to_string(),
            hostname: format!("{}.local", identity.hostname()),
            version: env!("CARGO_PKG_VERSION"),
            certificate_sha256: identity.certificate_fingerprint(),
            mode: match settings.rooms {
                RoomMode::Appliance { .. } => "appliance",
                RoomMode::Open { .. } => "open",
            },
            identity: origin,
        };
        Ok(Server {
            listener,
            redirect_listener,
            acceptor,
            http_budget: Budget::new(settings.caps()),
            redirect_budget: Budget::new(settings.caps()),
            state: Arc::new(AppState {
                relay,
                info,
                connection: settings.connection,
                camera,
                nearby: NearbyCameras::default(),
                signaling: Budget::new(settings.caps()),
                names: vec![
                    format!("{}.local", identity.hostname()),
                    identity.hostname().to_string(),
                    "localhost".to_owned(),
                ],
                log: log.clone(),
                metrics_open: settings.metrics_open,
                started: std::time::Instant::now(),
                whep,
                whep_allow_origins: settings.whep_allow_origins.clone(),
                settings_file: settings.settings_file.clone(),
            }),
            handshake_timeout: settings.handshake_timeout,
            hostname: format!("{}.local", identity.hostname()),
            log,
            local_prefixes,
            prefix_refresh: settings.prefix_refresh,
        })
    }

    /// Where mDNS puts the other cameras it sees, for `/api/info`.
    pub fn nearby(&self) -> NearbyCameras {
        self.state.nearby.clone()
    }

    /// The HTTPS address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The plain-HTTP redirect address, if one is bound.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The signaling relay, for in-process clients such as the camera.
    pub fn relay(&self) -> Relay {
        self.state.relay.clone()
    }

    /// Serves until `shutdown` completes, then tells every signaling client
    /// the server is going away.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let https_port = self.local_addr().map(|a| a.port()).unwrap_or(443);
        let flusher = self.log.spawn_flusher();
        let redirect = self.redirect_listener.map(|tcp| {
            let listener = Listener {
                tcp,
                budget: self.redirect_budget,
                tls: None,
                deadline: self.handshake_timeout,
                keep_alive: false,
                log: self.log.clone(),
            };
            tokio::spawn(listener.serve(redirect_handler(https_port, self.hostname.clone())))
        });
        let relay = self.state.relay.clone();
        let prefixes = {
            let relay = relay.clone();
            tokio::spawn(crate::sources::follow_host_prefixes(
                self.local_prefixes,
                self.prefix_refresh,
                move |p| relay.set_local_prefixes(p),
            ))
        };
        let state = self.state;
        let handler: Handler =
            Arc::new(move |request, peer| Box::pin(http::handle(request, state.clone(), peer)));
        let listener = Listener {
            tcp: self.listener,
            budget: self.http_budget,
            tls: Some(self.acceptor),
            deadline: self.handshake_timeout,
            keep_alive: true,
            log: self.log.clone(),
        };
        tokio::select! {
            () = listener.serve(handler) => {}
            () = shutdown => {}
        }
        tracing::info!("shutting down");
        if let Some(redirect) = redirect {
            redirect.abort();
        }
        prefixes.abort();
        relay.shut_down();
        // Give the connection tasks a moment to send their close frames.
        tokio::time::sleep(Duration::from_millis(200)).await;
        flusher.abort();
        self.log.flush();
    }
}

/// Answers every request on the plain-HTTP listener with a redirect to HTTPS.
fn redirect_handler(https_port: u16, hostname: String) -> Handler {
    Arc::new(move |request, _peer| {
        let response =
            http::redirect::redirect(&request, https_port, &hostname).map(|b| Full::new(Bytes::from(b)));
        Box::pin(async move { response })
    })
}

/// Binds `addr`, the value of the command-line `flag`.
pub(crate) async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, ServerError> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        // A host without IPv6 cannot bind `[::]`: serve IPv4 rather than nothing.
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::warn!(%addr, error = %e, fallback = %v4, "cannot listen on IPv6; using IPv4 only");
            TcpListener::bind(v4).await.map_err(|error| ServerError::Bind { addr: v4, flag, error })
        }
        Err(error) => Err(ServerError::Bind { addr, flag, error }),
    }
}

/// What to do about a failed bind.
fn bind_hint(error: &std::io::Error, flag: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("is another lookout running? choose another port with {flag}")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!(
                "ports below 1024 need root or CAP_NET_BIND_SERVICE; or choose a port from 1024 with {flag}"
            )
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!("this machine has no such address; choose one of its own, or [::], with {flag}")
        }
        _ => format!("check {flag}"),
    }
}
