//! Camera capture through libcamera (cargo feature `libcamera`).
//!
//! One job per file: `layout` (pixel layout, copy to I420) and `clock`
//! (capture times, sequences) are pure and built in every build, so a plain
//! `cargo test` runs their tests; with the feature, `manager` (one camera
//! manager per process), `capture` (the capture thread), `buffers`
//! (allocator or memfd buffers), `source` (`LibcameraSource`) and
//! `error` (`LibcameraError`).
//!
//! `LibcameraSource` opens the first camera (or the one with a given ID),
//! asks it for YUV 4:2:0 at the configured size and rate, and delivers
//! `VideoFrame`s: planar I420 as the camera gives it, or NV12 converted to
//! I420. Row strides are kept as the camera reports them (the encoder honours
//! strides), so a padded I420 picture is copied once, row padding included.
//!
//! Buffers come from libcamera's allocator (dma-heap on a Raspberry Pi). When
//! that is unavailable (no dma-heap, as in CI containers) the source falls back
//! to buffers it owns itself: one memfd per buffer, its planes described to
//! libcamera as file descriptor + offset + length. Pipelines that fill buffers
//! in software (libcamera's `virtual` camera) accept them; V4L2 hardware needs
//! real DMA buffers, which the allocator provides there.
//!
//! libcamera's objects are not `Send`, and libcamera allows one camera manager
//! per process, so each source runs its own capture thread that owns the
//! manager, the camera and the buffers; frames cross to the caller over a
//! channel. A second source opened while one is running is refused with an
//! error rather than letting libcamera abort the process. Errors are returned
//! promptly and never panic the caller: a failing camera shows up as
//! `SourceError::Failed` (or `NotFound`), and the pipeline decides about
//! retrying. A camera that stops delivering for
//! `LibcameraOptions::frame_timeout` is `Failed` too.

pub mod clock;
pub mod layout;

#[cfg(feature = "libcamera")]
mod buffers;
#[cfg(feature = "libcamera")]
mod capture;
#[cfg(feature = "libcamera")]
mod error;
#[cfg(feature = "libcamera")]
mod manager;
#[cfg(feature = "libcamera")]
mod source;

#[cfg(feature = "libcamera")]
pub use error::LibcameraError;
#[cfg(feature = "libcamera")]
pub use source::{cameras, CameraInfo, LibcameraOptions, LibcameraSource, DEFAULT_FRAME_TIMEOUT};
