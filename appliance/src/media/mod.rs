//! The media path: `camera source → encoder → fan-out`.
//!
//! - [`frame`]: raw I420 frames with strides.
//! - [`source`]: the [`FrameSource`](source::FrameSource) trait and errors.
//! - [`pacer`]: the one frame pacer (test pattern and libcamera).
//! - [`test_pattern`]: the built-in moving pattern with its timestamp strip.
//! - [`libcamera`]: capture from a real camera (feature `libcamera`; its
//!   pure helpers, plane layout and clocks, are in every build).
//! - [`encoder`]: openh264 set up for live WebRTC video.
//! - [`h264_level`]: the stream's H.264 level (SDP and SPS), from its size,
//!   frame rate and bitrate.
//! - [`fanout`]: encode once, deliver to every viewer at its own pace.
//! - [`rate`]: the rate policy: the encoder's bitrate from the viewers'
//!   estimates, one keyframe request per viewer per second.
//! - [`pipeline`]: the supervisor and its capture/encode worker, restarts,
//!   status and health.
//! - [`counters`]: what only `/metrics` reads (encode times, keyframes by
//!   cause, bytes).
//! - [`snapshot`]: stills (`/snapshot.jpg`) from the next raw frame,
//!   without the encoder.
//! - `fault` (debug builds only): a source that fails on purpose, for tests.

pub mod counters;
pub mod encoder;
pub mod fanout;
#[cfg(debug_assertions)]
pub mod fault;
pub mod frame;
pub mod h264_level;
pub mod libcamera;
pub mod pacer;
pub mod pipeline;
pub mod rate;
pub mod snapshot;
pub mod source;
pub mod test_pattern;
