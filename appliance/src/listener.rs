//! The one accept path every listener shares: accept, admit within a
//! connection [`Budget`] (evicting idle connections where it is full), TLS
//! with a deadline (HTTPS only), then HTTP/1.1 via hyper with a deadline for
//! the request head. The HTTPS server, the needs-provisioning server and the
//! plain-HTTP redirect all run through [`Listener::serve`], so none of them
//! has a path without a cap or a deadline.
//!
//! Refusals and evictions are counted in the [`NetworkLog`], never logged
//! one line per attempt.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::limits::{Budget, ConnectionPermit};
use crate::netlog::NetworkLog;

/// The answer to one request.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// Answers the requests of one listener: `(request, peer)` to a response.
pub type Handler = Arc<dyn Fn(Request<Incoming>, SocketAddr) -> ResponseFuture + Send + Sync>;

/// A bound socket and the rules its connections live by.
pub struct Listener {
    pub tcp: TcpListener,
    /// The plain-HTTP budget of this listener (upgraded WebSockets move to
    /// the signaling budget).
    pub budget: Budget,
    /// `None` serves plain HTTP (the redirect listener).
    pub tls: Option<TlsAcceptor>,
    /// Deadline for the TLS handshake, and for each request head.
    pub deadline: Duration,
    /// Keep connections open for further requests.
    pub keep_alive: bool,
    pub log: NetworkLog,
}

impl Listener {
    /// Accepts connections for ever (until the future is dropped).
    pub async fn serve(self, handler: Handler) {
        let mut last_accept_warning: Option<Instant> = None;
        loop {
            let (tcp, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning, and
                    // say so at most every 10 s.
                    if last_accept_warning.is_none_or(|t| t.elapsed() >= crate::netlog::WINDOW) {
                        tracing::warn!(error = %e, "accept failed");
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(permit) = self.budget.admit(peer.ip(), &self.log) else {
                continue; // dropping `tcp` closes it
            };
            let connection = Connection {
                peer,
                tls: self.tls.clone(),
                deadline: self.deadline,
                keep_alive: self.keep_alive,
                handler: handler.clone(),
            };
            tokio::spawn(connection.run(tcp, permit));
        }
    }
}

struct Connection {
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    deadline: Duration,
    keep_alive: bool,
    handler: Handler,
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream, permit: ConnectionPermit) {
        let _ = tcp.set_nodelay(true);
        let peer = self.peer;
        let work = async {
            match self.tls.clone() {
                Some(acceptor) => match tokio::time::timeout(self.deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => self.http(tls).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                None => self.http(tcp).await,
            }
        };
        tokio::select! {
            () = work => {}
            () = permit.evicted() => tracing::debug!(%peer, "connection closed to make room"),
        }
    }

    async fn http<I>(&self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let handler = self.handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request, peer);
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.deadline)
            .keep_alive(self.keep_alive)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        if let Err(e) = connection.await {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}
