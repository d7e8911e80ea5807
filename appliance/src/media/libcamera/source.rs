//! [`LibcameraSource`]: a camera as a [`FrameSource`], and listing cameras.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ::libcamera::camera_manager::CameraManager;
use ::libcamera::properties;

use super::capture::{self, Delivery, Shared};
use super::error::LibcameraError;
use super::manager::ManagerGuard;
use crate::media::frame::VideoFrame;
use crate::media::source::{CaptureFormat, FrameSource, SourceError};

/// How long a camera may go without delivering a frame before it is `Failed`.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// How long opening a camera (manager start, configure, buffers) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for [`LibcameraSource::open_with`].
#[derive(Debug, Clone)]
pub struct LibcameraOptions {
    /// Camera ID as libcamera names it; `None` takes the first camera.
    pub camera_id: Option<String>,
    pub format: CaptureFormat,
    /// No frame for this long means the camera has failed.
    pub frame_timeout: Duration,
}

impl LibcameraOptions {
    pub fn new(camera_id: Option<&str>, format: CaptureFormat) -> LibcameraOptions {
        LibcameraOptions {
            camera_id: camera_id.map(str::to_owned),
            format,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
        }
    }
}

/// A camera libcamera knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    pub id: String,
    /// Human-readable model, when the camera reports one.
    pub model: Option<String>,
}

/// Lists the cameras libcamera finds (fails with [`LibcameraError::Busy`]
/// while a [`LibcameraSource`] is open: one manager per process).
pub fn cameras() -> Result<Vec<CameraInfo>, LibcameraError> {
    let _guard = ManagerGuard::acquire()?;
    let manager = CameraManager::new().map_err(LibcameraError::ManagerStart)?;
    let list = manager.cameras();
    let infos = (0..list.len())
        .filter_map(|i| list.get(i))
        .map(|camera| CameraInfo {
            id: camera.id().to_owned(),
            model: camera.properties().get::<properties::Model>().ok().map(|m| m.0),
        })
        .collect();
    Ok(infos)
}

/// Frames from a libcamera camera. See the module documentation.
pub struct LibcameraSource {
    description: String,
    format: CaptureFormat,
    frame_timeout: Duration,
    frames: Option<Receiver<Delivery>>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    /// Whether the caller wants the pictures: while it does not, the
    /// capture thread requeues each completed buffer without reading it.
    wanted: Arc<AtomicBool>,
    /// Pictures copied out of the camera's buffers so far.
    copied: Arc<AtomicU64>,
}

impl LibcameraSource {
    /// Opens the first camera, or the camera with ID `camera_id`.
    pub fn open(camera_id: Option<&str>, format: CaptureFormat) -> Result<LibcameraSource, LibcameraError> {
        LibcameraSource::open_with(LibcameraOptions::new(camera_id, format))
    }

    /// Opens a camera; returns once it is configured and started.
    pub fn open_with(options: LibcameraOptions) -> Result<LibcameraSource, LibcameraError> {
        let guard = ManagerGuard::acquire()?;
        let (setup_tx, setup_rx) = mpsc::channel();
        // One frame of slack: the capture thread copies the next frame while
        // the caller encodes this one; older frames are dropped, not queued.
        let (frame_tx, frame_rx) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let wanted = Arc::new(AtomicBool::new(true));
        let copied = Arc::new(AtomicU64::new(0));
        let shared =
            Shared { stop: Arc::clone(&stop), wanted: Arc::clone(&wanted), copied: Arc::clone(&copied) };
        let thread_options = options.clone();
        let worker = std::thread::Builder::new()
            .name("libcamera".into())
            .spawn(move || capture::capture_thread(guard, thread_options, setup_tx, frame_tx, shared))
            .map_err(LibcameraError::Thread)?;
        let mut source = LibcameraSource {
            description: String::new(),
            format: options.format,
            frame_timeout: options.frame_timeout,
            frames: Some(frame_rx),
            stop,
            worker: Some(worker),
            wanted,
            copied,
        };
        match setup_rx.recv_timeout(SETUP_TIMEOUT) {
            Ok(Ok(started)) => {
                source.description = started.description;
                source.format = started.format;
                Ok(source)
            }
            // Dropping `source` stops and joins the thread.
            Ok(Err(error)) => Err(error),
            Err(RecvTimeoutError::Timeout) => Err(LibcameraError::Timeout(SETUP_TIMEOUT)),
            Err(RecvTimeoutError::Disconnected) => Err(LibcameraError::WorkerGone),
        }
    }
}

impl FrameSource for LibcameraSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn format(&self) -> CaptureFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<VideoFrame, SourceError> {
        self.wanted.store(true, Ordering::Relaxed);
        loop {
            // A frame skipped before the flag was seen is passed over.
            if let Some(frame) = self.receive()? {
                return Ok(frame);
            }
        }
    }

    /// Unwanted pictures are never read: the capture thread requeues their
    /// buffers untouched (see [`LibcameraSource::frames_copied`]).
    fn next_frame_if(&mut self, wanted: &mut dyn FnMut() -> bool) -> Result<Option<VideoFrame>, SourceError> {
        self.wanted.store(wanted(), Ordering::Relaxed);
        match self.receive()? {
            Some(frame) => Ok(wanted().then_some(frame)),
            // Skipped, but somebody came meanwhile: the next one is copied.
            None if wanted() => self.next_frame().map(Some),
            None => Ok(None),
        }
    }
}

impl LibcameraSource {
    /// Pictures copied out of the camera so far (none while unwanted).
    pub fn frames_copied(&self) -> u64 {
        self.copied.load(Ordering::Relaxed)
    }

    /// The next delivery from the capture thread.
    fn receive(&mut self) -> Result<Option<VideoFrame>, SourceError> {
        let frames = self.frames.as_ref().ok_or(LibcameraError::WorkerGone)?;
        match frames.recv_timeout(self.frame_timeout) {
            Ok(result) => Ok(result?),
            Err(RecvTimeoutError::Timeout) => Err(LibcameraError::Timeout(self.frame_timeout).into()),
            Err(RecvTimeoutError::Disconnected) => Err(LibcameraError::WorkerGone.into()),
        }
    }
}

impl Drop for LibcameraSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblocks a capture thread waiting to hand over a frame.
        self.frames = None;
        if let Some(worker) = self.worker.take() {
            // Waiting matters: the camera and the process-wide manager must be
            // released before the pipeline opens the camera again. A panic in
            // the thread has already ended the stream; nothing more to report.
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_silent_camera_times_out_as_failed() {
        let (camera, frames) = mpsc::sync_channel(1);
        let mut source = LibcameraSource {
            description: "silent".into(),
            format: CaptureFormat::default(),
            frame_timeout: Duration::from_millis(50),
            frames: Some(frames),
            stop: Arc::new(AtomicBool::new(false)),
            worker: None,
            wanted: Arc::new(AtomicBool::new(true)),
            copied: Arc::new(AtomicU64::new(0)),
        };
        let started = Instant::now();
        assert!(matches!(source.next_frame(), Err(SourceError::Failed(_))));
        assert!(started.elapsed() >= Duration::from_millis(50));
        // A capture thread that ended (its sender dropped) is `Failed` at once.
        drop(camera);
        assert!(matches!(source.next_frame(), Err(SourceError::Failed(_))));
    }
}
