//! Lookout, the camera appliance: one binary that is the camera's HTTPS
//! server, WebSocket signaling server and (later) WebRTC peer.
//!
//! Module map (see `docs/architecture.md`):
//! - [`settings`]: command line and settings.
//! - [`identity_store`]: finding or creating the device identity.
//! - [`tls`]: the rustls server configuration.
//! - [`server`]: listeners, connection caps, TLS and HTTP plumbing.
//! - [`http`]: routes, embedded assets, the redirect listener.
//! - [`signaling`]: the room protocol (state machine, relay, WebSocket task).
//! - [`limits`]: connection budgets (with eviction) and rate limits.
//! - [`listener`]: the one accept path (cap, TLS deadline, HTTP deadline).
//! - [`sources`]: how addresses are grouped for limits (address, /64).
//! - [`netlog`]: network-triggered log lines, counted and written per 10 s.
//! - [`metrics`]: `/metrics` for Prometheus, read at scrape time.
//! - [`banner`]: what a person running `lookout` in a terminal sees.
//! - [`logging`]: the tracing set-up.
//! - [`log_redaction`]: the log writer that removes the room secret.
//! - [`sdnotify`]: readiness and watchdog notifications to systemd.
//! - [`allocator`]: glibc arena cap and trimming after media restarts.
//! - [`app`]: everything assembled.
//! - [`media`]: camera sources, encoder, fan-out, pipeline.
//! - [`peer`]: the camera's WebRTC peer connections.
//! - [`mdns`]: announcing `lookout-<id>.local` and the `_https._tcp` service.
//! - [`needs_provisioning`]: the page served when the identity file is damaged.
//! - [`viewers`]: the one viewer count (admission, encoder gate, `/api/info`).

pub mod allocator;
pub mod app;
pub mod banner;
pub mod http;
pub mod identity_store;
pub mod limits;
pub mod listener;
pub mod log_redaction;
pub mod logging;
pub mod mdns;
pub mod media;
pub mod metrics;
pub mod nearby;
pub mod needs_provisioning;
pub mod netlog;
pub mod peer;
pub mod sdnotify;
pub mod server;
pub mod settings;
pub mod settings_file;
pub mod signaling;
pub mod sources;
pub mod tls;
pub mod viewers;
pub mod whep;
