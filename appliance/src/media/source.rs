//! Camera sources: where frames come from.
//!
//! Every source is a [`FrameSource`]: a blocking iterator of frames, run on
//! its own thread by the pipeline. The built-in [`TestPattern`] needs no
//! hardware; the `libcamera` source (cargo feature `libcamera`) captures from
//! a real camera.
//!
//! [`TestPattern`]: super::test_pattern::TestPattern

use super::frame::VideoFrame;

/// Size and rate asked of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureFormat {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
}

impl Default for CaptureFormat {
    fn default() -> Self {
        CaptureFormat { width: 1280, height: 720, fps: 30 }
    }
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No camera there (or not the one asked for).
    #[error("no camera found: {0}")]
    NotFound(String),
    /// The camera exists but cannot be used as asked.
    #[error("camera cannot be configured: {0}")]
    Configuration(String),
    /// The camera stopped delivering (unplugged, driver error).
    #[error("camera failed: {0}")]
    Failed(String),
}

/// A source of frames. `next_frame` blocks until the next frame is ready,
/// paced by the source itself (a camera's clock, or a timer).
pub trait FrameSource: Send {
    /// Human-readable name for logs and `/api/info` (e.g. `test-pattern 1280x720@30`).
    fn describe(&self) -> String;

    /// The format actually delivered (a camera may adjust the request).
    fn format(&self) -> CaptureFormat;

    /// The next frame.
    fn next_frame(&mut self) -> Result<VideoFrame, SourceError>;

    /// Waits for the next frame, then asks `wanted`: if nobody wants it, the
    /// buffer goes straight back and the answer is `None`. This is the
    /// pipeline's call; with nobody watching a source should neither copy
    /// nor allocate (the test pattern only keeps its pace, a camera requeues
    /// the buffer untouched). The default takes the frame and drops it.
    fn next_frame_if(&mut self, wanted: &mut dyn FnMut() -> bool) -> Result<Option<VideoFrame>, SourceError> {
        let frame = self.next_frame()?;
        Ok(wanted().then_some(frame))
    }
}
