//! The media pipeline: one thread that captures, encodes and publishes.
//!
//! `source → encoder → fan-out`. The thread opens the source, and while
//! anybody watches it encodes each frame once and publishes it. With nobody
//! watching it still drains the camera but spends nothing on encoding. A
//! source that fails or vanishes is reopened with exponential back-off; the
//! state is visible in [`CameraStatus`] (and so in `/api/info`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::encoder::{EncoderSettings, H264Encoder};
use super::fanout::Fanout;
use super::source::{CaptureFormat, FrameSource, SourceError};
use super::test_pattern::TestPattern;

/// Which camera to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChoice {
    /// A real camera if one is found, else the test pattern.
    Auto,
    TestPattern,
    /// A libcamera camera: the first one, or the one with this ID.
    Libcamera(Option<String>),
}

impl std::str::FromStr for SourceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "auto" => SourceChoice::Auto,
            "test-pattern" => SourceChoice::TestPattern,
            "libcamera" => SourceChoice::Libcamera(None),
            other => match other.strip_prefix("libcamera:") {
                Some(id) if !id.is_empty() => SourceChoice::Libcamera(Some(id.to_owned())),
                _ => {
                    return Err(format!(
                        "unknown camera {other:?}: use auto, test-pattern, libcamera or libcamera:<id>"
                    ))
                }
            },
        })
    }
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub source: SourceChoice,
    pub format: CaptureFormat,
    pub encoder: EncoderSettings,
}

/// What the camera is doing, for `/api/info`.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    /// `starting`, `running` or `retrying`.
    pub state: &'static str,
    pub source: String,
    pub error: Option<String>,
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub frames_captured: u64,
    pub frames_encoded: u64,
    pub bitrate: u32,
    pub viewers: usize,
}

/// Keyframes closer together than this are merged: a burst of PLIs, or
/// several viewers joining at once, costs one IDR.
const KEYFRAME_COALESCE: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A running pipeline. Dropping it stops the thread.
pub struct MediaPipeline {
    fanout: Fanout,
    status: Arc<Mutex<CameraStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MediaPipeline {
    /// Starts the pipeline thread.
    pub fn start(settings: PipelineSettings) -> std::io::Result<MediaPipeline> {
        let fanout = Fanout::new();
        let status = Arc::new(Mutex::new(CameraStatus {
            state: "starting",
            source: String::new(),
            error: None,
            width: settings.format.width,
            height: settings.format.height,
            fps: settings.format.fps,
            frames_captured: 0,
            frames_encoded: 0,
            bitrate: settings.encoder.bitrate,
            viewers: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker { settings, fanout: fanout.clone(), status: status.clone(), stop: stop.clone() };
        let thread = std::thread::Builder::new().name("media".into()).spawn(move || worker.run())?;
        Ok(MediaPipeline { fanout, status, stop, thread: Some(thread) })
    }

    pub fn fanout(&self) -> Fanout {
        self.fanout.clone()
    }

    /// A handle to the status (cheap to clone, for `/api/info`).
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle { status: self.status.clone(), fanout: self.fanout.clone() }
    }
}

impl Drop for MediaPipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the pipeline's status.
#[derive(Clone)]
pub struct StatusHandle {
    status: Arc<Mutex<CameraStatus>>,
    fanout: Fanout,
}

impl StatusHandle {
    pub fn snapshot(&self) -> CameraStatus {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        status.viewers = self.fanout.viewer_count();
        status
    }
}

/// Opens the chosen source.
pub fn open_source(
    choice: &SourceChoice,
    format: CaptureFormat,
) -> Result<Box<dyn FrameSource>, SourceError> {
    match choice {
        SourceChoice::TestPattern => Ok(Box::new(TestPattern::new(format)?)),
        SourceChoice::Libcamera(id) => open_libcamera(id.as_deref(), format),
        SourceChoice::Auto => match open_libcamera(None, format) {
            Ok(source) => Ok(source),
            Err(SourceError::NotFound(reason)) => {
                tracing::info!(%reason, "no camera found; streaming the test pattern");
                Ok(Box::new(TestPattern::new(format)?))
            }
            Err(other) => Err(other),
        },
    }
}

#[cfg(feature = "libcamera")]
fn open_libcamera(id: Option<&str>, format: CaptureFormat) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(super::libcamera_source::LibcameraSource::open(id, format)?))
}

#[cfg(not(feature = "libcamera"))]
fn open_libcamera(_id: Option<&str>, _format: CaptureFormat) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::NotFound("this build has no libcamera support (cargo feature `libcamera`)".into()))
}

struct Worker {
    settings: PipelineSettings,
    fanout: Fanout,
    status: Arc<Mutex<CameraStatus>>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn update(&self, change: impl FnOnce(&mut CameraStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn run(self) {
        let mut backoff = Duration::from_secs(1);
        while !self.stop.load(Ordering::Relaxed) {
            let error = match open_source(&self.settings.source, self.settings.format) {
                Ok(source) => {
                    backoff = Duration::from_secs(1);
                    self.stream(source)
                }
                Err(e) => Some(e.to_string()),
            };
            let Some(error) = error else { return };
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "camera unavailable; retrying");
            self.update(|s| {
                s.state = "retrying";
                s.error = Some(error);
            });
            self.sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Streams until the source fails (`Some(error)`) or the pipeline stops (`None`).
    fn stream(&self, mut source: Box<dyn FrameSource>) -> Option<String> {
        let format = source.format();
        let description = source.describe();
        tracing::info!(source = %description, "camera running");
        let mut encoder = match H264Encoder::new(self.settings.encoder) {
            Ok(encoder) => encoder,
            Err(e) => return Some(format!("cannot create the H.264 encoder: {e}")),
        };
        self.update(|s| {
            s.state = "running";
            s.error = None;
            s.source = description;
            (s.width, s.height, s.fps) = (format.width, format.height, format.fps);
        });
        let mut last_keyframe: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let frame = match source.next_frame() {
                Ok(frame) => frame,
                Err(e) => return Some(e.to_string()),
            };
            self.update(|s| s.frames_captured += 1);
            if self.fanout.viewer_count() == 0 {
                continue;
            }
            let mut keyframe = self.fanout.take_keyframe_request();
            if keyframe && last_keyframe.is_some_and(|at| at.elapsed() < KEYFRAME_COALESCE) {
                self.fanout.request_keyframe(); // keep it for a little later
                keyframe = false;
            }
            if let Some(estimate) = self.fanout.lowest_estimate() {
                // Stay under the estimate: the pacer sends at exactly the
                // estimate, and an IDR burst needs room.
                encoder.set_bitrate(u32::try_from(estimate * 9 / 10).unwrap_or(u32::MAX));
            }
            match encoder.encode(&frame, keyframe) {
                Ok(encoded) => {
                    if encoded.keyframe {
                        last_keyframe = Some(Instant::now());
                    }
                    self.fanout.publish(encoded);
                    let bitrate = encoder.bitrate();
                    self.update(|s| {
                        s.frames_encoded += 1;
                        s.bitrate = bitrate;
                    });
                }
                Err(e) => tracing::warn!(error = %e, "frame not encoded"),
            }
        }
        None
    }

    fn sleep(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_choice_parses() {
        assert_eq!("auto".parse(), Ok(SourceChoice::Auto));
        assert_eq!("test-pattern".parse(), Ok(SourceChoice::TestPattern));
        assert_eq!(
            "libcamera:/base/soc/i2c0".parse(),
            Ok(SourceChoice::Libcamera(Some("/base/soc/i2c0".into())))
        );
        assert!("webcam".parse::<SourceChoice>().is_err());
    }

    #[cfg(not(feature = "libcamera"))]
    #[test]
    fn auto_falls_back_to_the_test_pattern_without_libcamera() {
        let source = open_source(&SourceChoice::Auto, CaptureFormat::default()).unwrap();
        assert!(source.describe().starts_with("test-pattern"));
        assert!(open_source(&SourceChoice::Libcamera(None), CaptureFormat::default()).is_err());
    }

    #[cfg(not(feature = "libcamera"))]
    #[test]
    fn a_missing_camera_is_retried_and_reported() {
        let pipeline = MediaPipeline::start(PipelineSettings {
            source: SourceChoice::Libcamera(None),
            format: CaptureFormat::default(),
            encoder: EncoderSettings::default(),
        })
        .unwrap();
        let status = pipeline.status_handle();
        let deadline = Instant::now() + Duration::from_secs(5);
        while status.snapshot().state != "retrying" {
            assert!(Instant::now() < deadline, "never reported the failure");
            std::thread::sleep(Duration::from_millis(10));
        }
        let snapshot = status.snapshot();
        assert!(snapshot.error.unwrap().contains("libcamera"));
        drop(pipeline); // stops promptly even while backing off
    }

    #[tokio::test]
    async fn encodes_only_while_watched_and_starts_viewers_on_a_keyframe() {
        let pipeline = MediaPipeline::start(PipelineSettings {
            source: SourceChoice::TestPattern,
            format: CaptureFormat { width: 640, height: 480, fps: 60 },
            encoder: EncoderSettings::default(),
        })
        .unwrap();
        let status = pipeline.status_handle();
        while status.snapshot().frames_captured < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status.snapshot().frames_encoded, 0, "nobody watches: nothing encoded");
        let mut feed = pipeline.fanout().subscribe();
        let first = tokio::time::timeout(Duration::from_secs(5), feed.next()).await.unwrap().unwrap();
        assert!(first.keyframe);
        let second = feed.next().await.unwrap();
        assert!(!second.keyframe);
        assert!(second.sequence > first.sequence);
        let snapshot = status.snapshot();
        assert_eq!((snapshot.state, snapshot.viewers), ("running", 1));
    }
}
