//! The camera's WebRTC side: one peer connection per viewer, fed by the
//! media fan-out, negotiated through the signaling hub as an in-process
//! client (a channel, not a socket).
//!
//! - [`engine`]: what every peer connection is built from: H.264 only,
//!   NACK, RTCP reports, TWCC with the GCC estimator and pacing, and an
//!   interceptor that hands PLI/FIR to the application.
//! - [`estimate`]: the rules between GCC's estimate and the one a viewer's
//!   encoder share and pacer get (held to what is delivered, slow increase,
//!   the link's capacity remembered).
//! - [`pacer_gauge`]: the pacer with its queue visible; sends retransmissions
//!   ahead of the queued video and drops those that would wait too long.
//! - [`backlog`]: which frames a viewer is sent while its pacer is backed up.
//! - [`signal`]: the JSON signals exchanged with browsers.
//! - [`session`]: one viewer's peer connection and its sending task.
//! - [`video_track`]: packetizes a viewer's frames with RTP timestamps from
//!   their capture time (the 90 kHz capture clock).
//! - [`camera`]: the camera's signaling client that creates and ends sessions.

pub mod backlog;
pub mod camera;
pub mod delay_trend;
pub mod engine;
pub mod estimate;
pub mod pacer_gauge;
pub mod session;
pub mod signal;
pub mod video_track;

pub use camera::CameraPeer;
pub use engine::PeerSettings;
