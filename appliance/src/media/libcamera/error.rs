//! What can go wrong with libcamera, and what the pipeline makes of it.

use std::io;
use std::time::Duration;

use super::layout::LayoutError;
use crate::media::source::SourceError;

/// What went wrong with libcamera. Converts into [`SourceError`].
#[derive(Debug, thiserror::Error)]
pub enum LibcameraError {
    #[error("the libcamera camera manager did not start: {0}")]
    ManagerStart(#[source] io::Error),
    #[error("another libcamera source is open in this process (libcamera allows one camera manager)")]
    Busy,
    #[error("libcamera found no camera")]
    NoCamera,
    #[error("no libcamera camera with ID {id:?} (found: {available:?})")]
    UnknownCamera { id: String, available: Vec<String> },
    #[error("cannot acquire camera {id:?} (in use by another program?): {source}")]
    Acquire { id: String, source: io::Error },
    #[error("camera {id:?} offers no video configuration")]
    NoConfiguration { id: String },
    #[error("camera {id:?} offers neither YUV420 nor NV12 (it proposed {offered})")]
    UnsupportedFormat { id: String, offered: String },
    #[error("camera {id:?} proposed an unusable size {width}x{height} (needs a positive even size)")]
    UnusableSize { id: String, width: u32, height: u32 },
    #[error("cannot configure camera {id:?}: {source}")]
    Configure { id: String, source: io::Error },
    #[error("cannot get capture buffers: libcamera allocator: {allocator}; memfd fallback: {fallback}")]
    Buffers { allocator: io::Error, fallback: io::Error },
    #[error("cannot map capture buffer: {0}")]
    Map(String),
    #[error("cannot start camera: {0}")]
    Start(#[source] io::Error),
    #[error("cannot queue a capture request: {0}")]
    Queue(#[source] io::Error),
    #[error("the camera was disconnected")]
    Disconnected,
    #[error("no frame from the camera for {0:?}")]
    Timeout(Duration),
    #[error("the capture thread ended unexpectedly")]
    WorkerGone,
    #[error("cannot start the capture thread: {0}")]
    Thread(#[source] io::Error),
    #[error("a completed request holds no buffer for the stream")]
    MissingBuffer,
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl From<LibcameraError> for SourceError {
    fn from(error: LibcameraError) -> SourceError {
        use LibcameraError as E;
        let text = error.to_string();
        match error {
            E::NoCamera | E::UnknownCamera { .. } => SourceError::NotFound(text),
            // libcamera's manager refuses to start with ENODEV when the
            // kernel has no media devices at all: no camera, not a failure.
            E::ManagerStart(ref e) if e.raw_os_error() == Some(libc::ENODEV) => SourceError::NotFound(text),
            E::NoConfiguration { .. }
            | E::UnsupportedFormat { .. }
            | E::UnusableSize { .. }
            | E::Configure { .. } => SourceError::Configuration(text),
            E::ManagerStart(_)
            | E::Busy
            | E::Acquire { .. }
            | E::Buffers { .. }
            | E::Map(_)
            | E::Start(_)
            | E::Queue(_)
            | E::Disconnected
            | E::Timeout(_)
            | E::WorkerGone
            | E::Thread(_)
            | E::MissingBuffer
            | E::Layout(_) => SourceError::Failed(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_source_errors() {
        assert!(matches!(SourceError::from(LibcameraError::NoCamera), SourceError::NotFound(_)));
        assert!(matches!(
            SourceError::from(LibcameraError::UnsupportedFormat { id: "x".into(), offered: "MJPG".into() }),
            SourceError::Configuration(_)
        ));
        assert!(matches!(
            SourceError::from(LibcameraError::Timeout(Duration::from_secs(2))),
            SourceError::Failed(_)
        ));
        let no_devices = io::Error::from_raw_os_error(libc::ENODEV);
        assert!(matches!(
            SourceError::from(LibcameraError::ManagerStart(no_devices)),
            SourceError::NotFound(_)
        ));
        let other = io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(SourceError::from(LibcameraError::ManagerStart(other)), SourceError::Failed(_)));
    }
}
