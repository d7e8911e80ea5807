//! The "needs provisioning" state: what the camera serves when its identity
//! file exists but is damaged.
//!
//! The file is never replaced by a new secret (that would orphan the printed
//! label), so the camera cannot be itself. Instead it answers on its usual
//! HTTPS address, with a throwaway certificate made in memory and never
//! saved, a page that says what is wrong and how to fix it:
//!
//! | path        | answer                                                        |
//! |-------------|---------------------------------------------------------------|
//! | `/healthz`  | 503 `needs-provisioning`                                      |
//! | `/api/info` | 200 JSON `{"state": "needs-provisioning", "reason": ...}`     |
//! | anything    | 503 HTML page explaining the problem                          |
//!
//! No signaling, no video: without its identity the camera has no room.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use lookout_provisioning::{DeviceId, Identity};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::limits::Budget;
use crate::listener::{Handler, Listener};
use crate::netlog::NetworkLog;
use crate::settings::Settings;

/// The state name `/healthz` and `/api/info` report.
pub const STATE: &str = "needs-provisioning";

/// Why the needs-provisioning server could not start.
#[derive(Debug, thiserror::Error)]
pub enum NeedsProvisioningError {
    #[error(transparent)]
    Bind(#[from] crate::server::ServerError),
    #[error("cannot read the bound address: {0}")]
    LocalAddr(std::io::Error),
    #[error("cannot make the throwaway certificate: {0}")]
    Certificate(String),
}

/// A bound server for the needs-provisioning page.
pub struct NeedsProvisioning {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    budget: Budget,
    handshake_timeout: Duration,
    page: Arc<Page>,
}

/// The answers, prepared once.
struct Page {
    html: Bytes,
    info: Bytes,
}

impl NeedsProvisioning {
    /// Binds `settings.listen`; `reason` says what is wrong (it holds no secret:
    /// identity errors never quote the file's content).
    pub async fn bind(settings: &Settings, reason: &str) -> Result<Self, NeedsProvisioningError> {
        let listener = crate::server::bind(settings.listen, "--listen").await?;
        // Throwaway: lives in memory for this run only, never written anywhere.
        let throwaway =
            DeviceId::generate("").map_err(|e| NeedsProvisioningError::Certificate(e.to_string())).and_then(
                |id| Identity::generate(id).map_err(|e| NeedsProvisioningError::Certificate(e.to_string())),
            )?;
        let config = crate::tls::server_config(&throwaway)
            .map_err(|e| NeedsProvisioningError::Certificate(e.to_string()))?;
        let info = serde_json::json!({
            "state": STATE,
            "reason": reason,
            "version": env!("CARGO_PKG_VERSION"),
        });
        Ok(NeedsProvisioning {
            listener,
            acceptor: TlsAcceptor::from(config),
            budget: Budget::new(settings.caps()),
            handshake_timeout: settings.handshake_timeout,
            page: Arc::new(Page {
                html: Bytes::from(html_page(reason)),
                info: Bytes::from(info.to_string()),
            }),
        })
    }

    /// Binds, logs the problem and the address, and serves until `shutdown`.
    pub async fn serve(
        settings: &Settings,
        problem: &dyn std::fmt::Display,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NeedsProvisioningError> {
        let reason = problem.to_string();
        let server = NeedsProvisioning::bind(settings, &reason).await?;
        let addr = server.local_addr().map_err(NeedsProvisioningError::LocalAddr)?;
        tracing::error!(%addr, state = STATE, reason = %reason, "no valid identity: serving only the needs-provisioning page");
        // Under systemd (Type=notify) the service is up: restarting would not
        // repair the file, and the page must stay reachable.
        let notifier =
            crate::sdnotify::announce_ready("needs provisioning: the identity file is damaged", None);
        server.run(shutdown).await;
        if let Some(notifier) = &notifier {
            notifier.notify_stopping().ok();
        }
        Ok(())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let log = NetworkLog::new();
        let flusher = log.spawn_flusher();
        let page = self.page;
        let handler: Handler = Arc::new(move |request, _peer| {
            let response = respond(&request, &page);
            Box::pin(async move { response })
        });
        let listener = Listener {
            tcp: self.listener,
            budget: self.budget,
            tls: Some(self.acceptor),
            deadline: self.handshake_timeout,
            keep_alive: true,
            log: log.clone(),
        };
        tokio::select! {
            () = listener.serve(handler) => {}
            () = shutdown => {}
        }
        tracing::info!("shutting down");
        flusher.abort();
        log.flush();
    }
}

fn respond<B>(request: &Request<B>, page: &Page) -> Response<Full<Bytes>> {
    let method = request.method();
    let (status, content_type, body) = if method != Method::GET && method != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"method not allowed\n"),
        )
    } else {
        match request.uri().path() {
            "/healthz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                Bytes::from(format!("{STATE}\n")),
            ),
            "/api/info" => (StatusCode::OK, "application/json", page.info.clone()),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "text/html; charset=utf-8", page.html.clone()),
        }
    };
    let body = if method == Method::HEAD { Bytes::new() } else { body };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

fn html_page(reason: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Lookout needs provisioning</title></head>\n<body>\n\
         <h1>This camera needs provisioning</h1>\n\
         <p>Its identity file (room secret and certificate) is damaged, so it cannot show video. \
         It did not make a new secret, because that would make the printed label useless.</p>\n\
         <p>What is wrong: <code>{reason}</code></p>\n\
         <p>To fix it, restore the identity from the SD card's boot partition \
         (<code>lookout/identity.json</code>) or write the camera's identity again with \
         <code>lookout-provision write-image</code>, then restart the camera.</p>\n\
         </body>\n</html>\n",
        reason = escape_html(reason)
    )
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page {
        Page { html: Bytes::from(html_page("bad <file>")), info: Bytes::from_static(b"{}") }
    }

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[test]
    fn routes_report_the_state() {
        let page = page();
        assert_eq!(respond(&get("/healthz"), &page).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(respond(&get("/api/info"), &page).status(), StatusCode::OK);
        let html = respond(&get("/"), &page);
        assert_eq!(html.status(), StatusCode::SERVICE_UNAVAILABLE);
        let post = Request::builder().method(Method::POST).uri("/").body(()).unwrap();
        assert_eq!(respond(&post, &page).status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn reason_is_escaped() {
        let html = html_page("<script>x</script> & \"q\"");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt; &amp; &quot;q&quot;"));
    }
}
