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
//! - [`limits`]: connection caps and rate limits.
//! - [`banner`]: what a person running `lookout` in a terminal sees.
//! - [`logging`]: the tracing set-up.

pub mod app;
pub mod banner;
pub mod http;
pub mod identity_store;
pub mod limits;
pub mod logging;
pub mod media;
pub mod peer;
pub mod server;
pub mod settings;
pub mod signaling;
pub mod tls;
