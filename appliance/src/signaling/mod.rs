//! The signaling service: rooms in which a camera and its viewers exchange
//! SDP and ICE candidates. The wire format is specified in `docs/protocol.md`.
//!
//! Layers, from the inside out:
//! - [`ids`] and [`protocol`]: the identifiers and the JSON messages.
//! - [`hub`]: the rules, as a plain state machine (messages in, effects out),
//!   with no sockets, no clock and no randomness of its own.
//! - [`throttle`]: the per-source back-off for wrong room secrets.
//! - [`relay`]: the hub behind a mutex plus one outgoing channel per client.
//! - [`connection`]: one WebSocket connection's task; it only moves bytes.

pub mod connection;
pub mod hub;
pub mod ids;
pub mod protocol;
pub mod relay;
pub mod throttle;

pub use hub::{Hub, HubConfig, RoomPolicy};
pub use ids::{ClientId, RoomId};
pub use protocol::{ErrorCode, PeerMessage, ServerMessage};
pub use relay::Relay;
