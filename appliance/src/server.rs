//! The listening side: TCP accept, connection caps, TLS with a deadline,
//! HTTP/1.1 via hyper, and the optional plain-HTTP redirect listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use lookout_provisioning::Identity;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::http::{self, AppState, DeviceInfo};
use crate::identity_store::IdentityOrigin;
use crate::limits::ConnectionLimiter;
use crate::media::pipeline::StatusHandle;
use crate::nearby::NearbyCameras;
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
    limiter: ConnectionLimiter,
    state: Arc<AppState>,
    handshake_timeout: Duration,
    hostname: String,
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
        let relay = Relay::new(HubConfig { policy, throttle: settings.throttle.clone() });
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
            limiter: ConnectionLimiter::new(settings.max_connections, settings.max_connections_per_ip),
            state: Arc::new(AppState {
                relay,
                info,
                connection: settings.connection,
                camera,
                nearby: NearbyCameras::default(),
            }),
            handshake_timeout: settings.handshake_timeout,
            hostname: format!("{}.local", identity.hostname()),
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
        if let Some(listener) = self.redirect_listener {
            tokio::spawn(serve_redirects(
                listener,
                https_port,
                self.hostname.clone(),
                self.handshake_timeout,
            ));
        }
        let relay = self.state.relay.clone();
        tokio::select! {
            () = accept_loop(self.listener, self.acceptor, self.limiter, self.state, self.handshake_timeout) => {}
            () = shutdown => {}
        }
        tracing::info!("shutting down");
        relay.shut_down();
        // Give the connection tasks a moment to send their close frames.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limiter: ConnectionLimiter,
    state: Arc<AppState>,
    handshake_timeout: Duration,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(permit) => Arc::new(permit),
            Err(refusal) => {
                tracing::warn!(peer = %peer, reason = %refusal, "connection refused");
                continue; // dropping `tcp` closes it
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            serve_connection(tcp, peer, acceptor, state, permit, handshake_timeout).await;
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    permit: Arc<crate::limits::ConnectionPermit>,
    handshake_timeout: Duration,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |request| http::handle(request, state.clone(), peer, permit.clone()));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

async fn serve_redirects(listener: TcpListener, https_port: u16, hostname: String, timeout: Duration) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let hostname = hostname.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = http::redirect::redirect(&request, https_port, &hostname);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
