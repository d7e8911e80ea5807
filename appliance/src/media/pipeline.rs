//! The media pipeline: a supervisor thread and the worker it owns.
//!
//! `source → encoder → fan-out`. The worker thread opens the source and,
//! while anybody watches, encodes each frame once and publishes it; with
//! nobody watching it still drains the camera but spends nothing on encoding.
//!
//! The supervisor thread starts the worker and watches it. A worker that
//! panics, returns an error, or delivers no frame for [`STALL_AFTER`] while
//! streaming is replaced by a fresh source and encoder after a back-off (1 s
//! doubling to 30 s, back to 1 s after a minute of health). A hung worker
//! cannot be killed: it is abandoned (it publishes nothing more) and a new
//! one starts. The fan-out outlives every restart, so viewers keep their
//! connections and get a keyframe. A camera that is simply not there is a
//! degraded state (`missing`), retried quietly, not a restart. When the
//! pipeline is dropped the fan-out closes and every viewer's feed ends.
//!
//! The supervisor beats a [`Heartbeat`] every tick; the systemd watchdog is
//! pinged only while it beats (see `sdnotify`). The state, the restart
//! counters and [`StatusHandle::health`] feed `/api/info` and `/healthz`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::counters::MediaCounters;
use super::encoder::{EncoderSettings, H264Encoder};
use super::fanout::Fanout;
use super::rate;
use super::snapshot::StillRequests;
use super::source::{CaptureFormat, FrameSource, SourceError};
use super::test_pattern::TestPattern;
use crate::sdnotify::Heartbeat;

/// Which camera to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChoice {
    /// A real camera if one is found, else the test pattern.
    Auto,
    TestPattern,
    /// A libcamera camera: the first one, or the one with this ID.
    Libcamera(Option<String>),
    /// The test pattern with one injected fault (debug builds only).
    #[cfg(debug_assertions)]
    Fault(super::fault::FaultPlan),
}

impl std::str::FromStr for SourceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        #[cfg(debug_assertions)]
        if let Some(plan) = text.strip_prefix("fault:") {
            return super::fault::FaultPlan::parse(plan).map(SourceChoice::Fault);
        }
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

/// What the camera is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraState {
    /// Opening the source (at start, or after a restart's back-off).
    Starting,
    /// Frames flow (encoded only while somebody watches).
    Running,
    /// The worker failed; a new one starts after the back-off.
    Restarting,
    /// No camera found: retried quietly, the server keeps serving.
    Missing,
    /// The pipeline ended (shutdown).
    Stopped,
}

/// Why the worker was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCause {
    Panic,
    Error,
    Stall,
    Encoder,
}

/// Restarts so far, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RestartCounters {
    pub total: u64,
    pub panic: u64,
    pub error: u64,
    pub stall: u64,
    pub encoder: u64,
}

impl RestartCounters {
    fn count(&mut self, cause: RestartCause) {
        self.total += 1;
        match cause {
            RestartCause::Panic => self.panic += 1,
            RestartCause::Error => self.error += 1,
            RestartCause::Stall => self.stall += 1,
            RestartCause::Encoder => self.encoder += 1,
        }
    }
}

/// What the camera is doing, for `/api/info`.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub state: CameraState,
    pub source: String,
    pub error: Option<String>,
    /// The cause of the latest restart.
    pub last_restart: Option<RestartCause>,
    pub restarts: RestartCounters,
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub frames_captured: u64,
    pub frames_encoded: u64,
    pub bitrate: u32,
    /// The one viewer count (slots held in the room; see `crate::viewers`).
    pub viewers: usize,
    /// Viewers whose connection is up and receiving frames now.
    pub streaming: usize,
    /// Milliseconds since the last frame from the source.
    pub last_frame_ms: Option<u64>,
    /// Times the camera's peer (its signaling client) was restarted.
    pub peer_restarts: u64,
    #[serde(skip)]
    last_frame: Option<Instant>,
    #[serde(skip)]
    running_since: Option<Instant>,
}

/// Why the camera is not healthy (the `reason` of a 503 `/healthz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthProblem {
    CameraMissing,
    CameraStalled,
    EncoderFailed,
    Restarting,
}

impl HealthProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthProblem::CameraMissing => "camera-missing",
            HealthProblem::CameraStalled => "camera-stalled",
            HealthProblem::EncoderFailed => "encoder-failed",
            HealthProblem::Restarting => "restarting",
        }
    }
}

/// No frame for this long while streaming is a stall.
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// Opening a source that takes longer than this counts as a stall.
const OPEN_DEADLINE: Duration = Duration::from_secs(10);
/// Keyframes closer together than this are merged: a burst of PLIs, or
/// several viewers joining at once, costs one IDR.
const KEYFRAME_COALESCE: Duration = Duration::from_millis(250);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Healthy this long, the back-off starts again from [`FIRST_BACKOFF`].
const HEALTHY_RESETS_BACKOFF: Duration = Duration::from_secs(60);
/// Consecutive encoder errors that make the encoder count as failed.
const ENCODER_ERRORS_FAIL: u32 = 10;
/// Nobody watching for this long: freed memory goes back to the kernel.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);
/// How often the supervisor looks at the worker and beats the heartbeat.
const TICK: Duration = Duration::from_millis(200);

/// A running pipeline. Dropping it stops the supervisor and closes the fan-out.
pub struct MediaPipeline {
    fanout: Fanout,
    status: Arc<Mutex<CameraStatus>>,
    counters: Arc<MediaCounters>,
    stills: Arc<StillRequests>,
    stop: Arc<AtomicBool>,
    heartbeat: Heartbeat,
    finished: mpsc::Receiver<()>,
}

impl MediaPipeline {
    /// Starts the supervisor, which starts the worker.
    pub fn start(settings: PipelineSettings) -> std::io::Result<MediaPipeline> {
        let fanout = Fanout::new();
        let status = Arc::new(Mutex::new(CameraStatus {
            state: CameraState::Starting,
            source: String::new(),
            error: None,
            last_restart: None,
            restarts: RestartCounters::default(),
            width: settings.format.width,
            height: settings.format.height,
            fps: settings.format.fps,
            frames_captured: 0,
            frames_encoded: 0,
            bitrate: settings.encoder.bitrate,
            viewers: 0,
            streaming: 0,
            last_frame_ms: None,
            peer_restarts: 0,
            last_frame: None,
            running_since: None,
        }));
        let counters = Arc::new(MediaCounters::default());
        let stills = Arc::new(StillRequests::default());
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = Heartbeat::new();
        let (finished_tx, finished) = mpsc::channel();
        let supervisor = Supervisor {
            shared: Arc::new(Shared {
                settings,
                fanout: fanout.clone(),
                status: status.clone(),
                counters: counters.clone(),
                stills: stills.clone(),
            }),
            stop: stop.clone(),
            heartbeat: heartbeat.clone(),
            idle: IdleTrim::default(),
        };
        std::thread::Builder::new().name("media-supervisor".into()).spawn(move || {
            supervisor.run();
            let _ = finished_tx.send(());
        })?;
        Ok(MediaPipeline { fanout, status, counters, stills, stop, heartbeat, finished })
    }

    pub fn fanout(&self) -> Fanout {
        self.fanout.clone()
    }

    /// A handle to the status (cheap to clone, for `/api/info`).
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle {
            status: self.status.clone(),
            fanout: self.fanout.clone(),
            counters: self.counters.clone(),
            stills: self.stills.clone(),
        }
    }

    /// Beaten by the supervisor's loop: the watchdog pings only while it beats.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }
}

impl Drop for MediaPipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A wedged supervisor (or a worker hung in a camera call) is left
        // behind rather than hanging the shutdown.
        if self.finished.recv_timeout(Duration::from_secs(2)).is_err() {
            tracing::warn!("the media supervisor did not stop within 2 s; leaving it");
        }
        self.fanout.close();
    }
}

/// Reads the pipeline's status.
#[derive(Clone)]
pub struct StatusHandle {
    status: Arc<Mutex<CameraStatus>>,
    fanout: Fanout,
    counters: Arc<MediaCounters>,
    stills: Arc<StillRequests>,
}

impl StatusHandle {
    /// The one viewer count, which the signaling hub writes.
    pub fn viewers(&self) -> crate::viewers::ViewerCount {
        self.fanout.viewers()
    }

    /// Asks for the next captured raw frame (`/snapshot.jpg`, see
    /// [`super::snapshot`]); wakes an idle capture for that one frame.
    pub fn request_still(&self) -> tokio::sync::oneshot::Receiver<Arc<super::frame::VideoFrame>> {
        self.stills.request()
    }

    /// The counters only `/metrics` reads.
    pub fn counters(&self) -> &MediaCounters {
        &self.counters
    }

    /// The fan-out's drop counts and the viewers' fresh estimates (`/metrics`).
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Counts a restart of the camera's peer (shown in `/api/info`).
    pub fn count_peer_restart(&self) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).peer_restarts += 1;
    }

    pub fn snapshot(&self) -> CameraStatus {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        status.viewers = self.fanout.viewer_count();
        status.streaming = self.fanout.streaming_count();
        status.last_frame_ms = status.last_frame.map(|at| at.elapsed().as_millis() as u64);
        status
    }

    /// `Ok` while frames flow (watched or not); otherwise why not.
    pub fn health(&self) -> Result<(), HealthProblem> {
        let status = self.snapshot();
        match status.state {
            CameraState::Running => {
                let since = status.last_frame.or(status.running_since);
                if since.is_some_and(|at| at.elapsed() > STALL_AFTER) {
                    Err(HealthProblem::CameraStalled)
                } else {
                    Ok(())
                }
            }
            CameraState::Missing => Err(HealthProblem::CameraMissing),
            CameraState::Restarting => Err(match status.last_restart {
                Some(RestartCause::Stall) => HealthProblem::CameraStalled,
                Some(RestartCause::Encoder) => HealthProblem::EncoderFailed,
                _ => HealthProblem::Restarting,
            }),
            CameraState::Starting | CameraState::Stopped => Err(HealthProblem::Restarting),
        }
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
        #[cfg(debug_assertions)]
        SourceChoice::Fault(plan) => Ok(Box::new(super::fault::FaultySource::open(plan, format)?)),
    }
}

#[cfg(feature = "libcamera")]
fn open_libcamera(id: Option<&str>, format: CaptureFormat) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(super::libcamera::LibcameraSource::open(id, format)?))
}

#[cfg(not(feature = "libcamera"))]
fn open_libcamera(_id: Option<&str>, _format: CaptureFormat) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::NotFound("this build has no libcamera support (cargo feature `libcamera`)".into()))
}

/// What the supervisor and its workers share.
struct Shared {
    settings: PipelineSettings,
    fanout: Fanout,
    status: Arc<Mutex<CameraStatus>>,
    counters: Arc<MediaCounters>,
    stills: Arc<StillRequests>,
}

impl Shared {
    fn update<T>(&self, change: impl FnOnce(&mut CameraStatus) -> T) -> T {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// How one worker ended.
#[derive(Debug)]
enum Outcome {
    /// Asked to stop (shutdown or abandoned).
    Stopped,
    /// The camera is not there.
    Missing(String),
    /// Anything else: restart.
    Failed(RestartCause, String),
}

struct Supervisor {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    heartbeat: Heartbeat,
    idle: IdleTrim,
}

/// Hands freed memory back once nobody has watched for [`IDLE_TRIM_AFTER`]:
/// viewers' connections (RTP history, buffers) are freed in pieces as they
/// close, and glibc would keep those pages. Once per idle spell.
#[derive(Default)]
struct IdleTrim {
    since: std::cell::Cell<Option<Instant>>,
    done: std::cell::Cell<bool>,
}

impl IdleTrim {
    /// Called every tick with whether anybody watches or streams.
    fn tick(&self, watched: bool) {
        if watched {
            self.since.set(None);
            self.done.set(false);
            return;
        }
        let since = self.since.get().unwrap_or_else(Instant::now);
        self.since.set(Some(since));
        if !self.done.get() && since.elapsed() >= IDLE_TRIM_AFTER {
            crate::allocator::release_free_memory();
            self.done.set(true);
        }
    }
}

impl Supervisor {
    fn run(self) {
        let (done_tx, done) = mpsc::channel::<(u64, Outcome)>();
        let mut backoff = FIRST_BACKOFF;
        let mut generation = 0u64;
        let mut missing_reported = false;
        while !self.stop.load(Ordering::Relaxed) {
            generation += 1;
            let abandon = Arc::new(AtomicBool::new(false));
            let opened_at = Instant::now();
            self.shared.update(|s| {
                s.state = CameraState::Starting;
                s.running_since = None;
            });
            let worker =
                Worker { shared: self.shared.clone(), stop: self.stop.clone(), abandon: abandon.clone() };
            let report = done_tx.clone();
            let spawned = std::thread::Builder::new().name("media".into()).spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| worker.run()))
                    .unwrap_or_else(|panic| Outcome::Failed(RestartCause::Panic, panic_message(&panic)));
                let _ = report.send((generation, outcome));
            });
            let outcome = match spawned {
                Ok(_) => self.watch(generation, &done, &abandon, opened_at),
                Err(e) => Outcome::Failed(RestartCause::Error, format!("cannot start the media thread: {e}")),
            };
            let healthy_for = self.shared.update(|s| s.running_since.map(|at| at.elapsed()));
            if healthy_for.is_some_and(|d| d >= HEALTHY_RESETS_BACKOFF) {
                backoff = FIRST_BACKOFF;
            }
            // The worker's source and encoder are dropped (or abandoned):
            // return what they freed, so restarts do not pile up RSS.
            crate::allocator::release_free_memory();
            match outcome {
                Outcome::Stopped => break,
                Outcome::Missing(reason) => {
                    // Degraded, not broken: say it once, then retry quietly.
                    if !missing_reported {
                        tracing::warn!(%reason, "no camera; serving without video and looking again with back-off");
                        missing_reported = true;
                    }
                    self.shared.update(|s| {
                        s.state = CameraState::Missing;
                        s.error = Some(reason);
                    });
                }
                Outcome::Failed(cause, error) => {
                    missing_reported = false;
                    tracing::warn!(?cause, %error, restart_in_ms = backoff.as_millis() as u64, "media worker failed; restarting source and encoder");
                    self.shared.update(|s| {
                        s.state = CameraState::Restarting;
                        s.error = Some(error);
                        s.last_restart = Some(cause);
                        s.restarts.count(cause);
                    });
                }
            }
            self.sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.shared.update(|s| s.state = CameraState::Stopped);
        self.shared.fanout.close();
    }

    /// Waits for worker `generation` to end, abandoning it when it stalls.
    fn watch(
        &self,
        generation: u64,
        done: &mpsc::Receiver<(u64, Outcome)>,
        abandon: &AtomicBool,
        opened_at: Instant,
    ) -> Outcome {
        loop {
            match done.recv_timeout(TICK) {
                Ok((g, outcome)) if g == generation => return outcome,
                Ok(_) => {
                    // An abandoned worker woke up at last and dropped its
                    // source and encoder: give their pages back.
                    crate::allocator::release_free_memory();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Outcome::Stopped,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.heartbeat.beat();
            let fanout = &self.shared.fanout;
            self.idle.tick(fanout.viewer_count() > 0 || fanout.streaming_count() > 0);
            self.test_hooks();
            if self.stop.load(Ordering::Relaxed) {
                abandon.store(true, Ordering::Relaxed);
                return Outcome::Stopped;
            }
            let (state, last_frame, running_since) =
                self.shared.update(|s| (s.state, s.last_frame, s.running_since));
            let stalled = match state {
                CameraState::Running => {
                    last_frame.max(running_since).is_some_and(|at| at.elapsed() > STALL_AFTER)
                }
                CameraState::Starting => opened_at.elapsed() > OPEN_DEADLINE,
                _ => false,
            };
            if stalled {
                abandon.store(true, Ordering::Relaxed);
                let what = if state == CameraState::Running { "no frame" } else { "the camera did not open" };
                return Outcome::Failed(
                    RestartCause::Stall,
                    format!("{what} for {} ms", last_frame.unwrap_or(opened_at).elapsed().as_millis()),
                );
            }
        }
    }

    #[cfg(debug_assertions)]
    fn test_hooks(&self) {
        if let SourceChoice::Fault(plan) = &self.shared.settings.source {
            let frames = self.shared.update(|s| s.frames_captured);
            if plan.wedge_supervisor_now(frames) {
                tracing::warn!("injected fault: the media supervisor wedges");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }

    #[cfg(not(debug_assertions))]
    fn test_hooks(&self) {}

    /// Sleeps `total`, beating the heartbeat and returning early on stop.
    fn sleep(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < until {
            self.heartbeat.beat();
            std::thread::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            );
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("panic: {text}")
}

/// One attempt: a source and an encoder, until they fail or are abandoned.
struct Worker {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// Set by the supervisor when it has given up on this worker.
    abandon: Arc<AtomicBool>,
}

impl Worker {
    fn ended(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.abandon.load(Ordering::Relaxed)
    }

    fn run(self) -> Outcome {
        let settings = &self.shared.settings;
        let mut source = match open_source(&settings.source, settings.format) {
            Ok(source) => source,
            Err(SourceError::NotFound(reason)) => return Outcome::Missing(reason),
            Err(e) => return Outcome::Failed(RestartCause::Error, e.to_string()),
        };
        let mut encoder = match H264Encoder::new(settings.encoder) {
            Ok(encoder) => encoder,
            Err(e) => {
                return Outcome::Failed(
                    RestartCause::Encoder,
                    format!("cannot create the H.264 encoder: {e}"),
                )
            }
        };
        if self.ended() {
            return Outcome::Stopped;
        }
        let format = source.format();
        let description = source.describe();
        tracing::info!(source = %description, "camera running");
        self.shared.update(|s| {
            s.state = CameraState::Running;
            s.error = None;
            s.source = description;
            s.running_since = Some(Instant::now());
            (s.width, s.height, s.fps) = (format.width, format.height, format.fps);
        });
        // Viewers that watched the previous worker continue on this one's first keyframe.
        self.shared.fanout.request_keyframe();
        let fanout = &self.shared.fanout;
        let mut last_keyframe: Option<Instant> = None;
        let mut encoder_errors = 0u32;
        let mut stream_rate = rate::StreamRate::default();
        let stills = &self.shared.stills;
        loop {
            // Nobody watches: the source hands its buffer straight back, no
            // copy and no allocation (`tests/idle_capture.rs` counts them).
            // A still request takes one frame, watched or not.
            let frame = match source.next_frame_if(&mut || fanout.viewer_count() > 0 || stills.pending()) {
                Ok(frame) => frame,
                Err(e) => return Outcome::Failed(RestartCause::Error, e.to_string()),
            };
            if self.ended() {
                return Outcome::Stopped;
            }
            self.shared.update(|s| {
                s.frames_captured += 1;
                s.last_frame = Some(Instant::now());
            });
            let Some(frame) = frame else { continue };
            if stills.pending() {
                stills.deliver(&frame);
            }
            if fanout.viewer_count() == 0 {
                continue; // taken for a still only: the encoder stays idle
            }
            let mut keyframe = fanout.take_keyframe_request();
            if keyframe && last_keyframe.is_some_and(|at| at.elapsed() < KEYFRAME_COALESCE) {
                fanout.request_keyframe(); // keep it for a little later
                keyframe = false;
            }
            // The policy (median of fresh estimates, else --bitrate): `media::rate`.
            let estimates = fanout.fresh_estimates(Instant::now());
            encoder.set_bitrate(rate::encoder_target(&estimates, settings.encoder.bitrate));
            fanout.set_stream_rate(u64::from(encoder.bitrate()).max(stream_rate.bits_per_second()));
            let encode_started = Instant::now();
            match encoder.encode(&frame, keyframe) {
                Ok(encoded) => {
                    encoder_errors = 0;
                    let took = encode_started.elapsed();
                    self.shared.counters.encoded(took, encoded.data.len(), encoded.keyframe, keyframe);
                    stream_rate.add(Instant::now(), encoded.data.len());
                    if encoded.keyframe {
                        last_keyframe = Some(Instant::now());
                    }
                    fanout.publish(encoded);
                    let bitrate = encoder.bitrate();
                    self.shared.update(|s| {
                        s.frames_encoded += 1;
                        s.bitrate = bitrate;
                    });
                }
                Err(e) => {
                    encoder_errors += 1;
                    self.shared.counters.encode_failed();
                    tracing::warn!(error = %e, "frame not encoded");
                    if encoder_errors >= ENCODER_ERRORS_FAIL {
                        return Outcome::Failed(
                            RestartCause::Encoder,
                            format!("{encoder_errors} frames in a row not encoded: {e}"),
                        );
                    }
                }
            }
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
        while status.snapshot().state != CameraState::Missing {
            assert!(Instant::now() < deadline, "never reported the failure");
            std::thread::sleep(Duration::from_millis(10));
        }
        let snapshot = status.snapshot();
        assert!(snapshot.error.unwrap().contains("libcamera"));
        assert_eq!(status.health(), Err(HealthProblem::CameraMissing));
        assert_eq!(snapshot.restarts.total, 0, "an absent camera is not a restart loop");
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
        pipeline.fanout().viewers().set(1); // what the hub does when a viewer joins
        let mut feed = pipeline.fanout().subscribe().unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), feed.next()).await.unwrap().unwrap();
        assert!(first.keyframe);
        let second = feed.next().await.unwrap();
        assert!(!second.keyframe);
        assert!(second.sequence > first.sequence);
        let snapshot = status.snapshot();
        assert_eq!((snapshot.state, snapshot.viewers, snapshot.streaming), (CameraState::Running, 1, 1));
        assert_eq!(status.health(), Ok(()));
    }

    /// Waits until `check` holds for the status, or panics after `within`.
    #[cfg(debug_assertions)]
    async fn wait_for(
        status: &StatusHandle,
        within: Duration,
        what: &str,
        check: impl Fn(&CameraStatus) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !check(&status.snapshot()) {
            assert!(Instant::now() < deadline, "{what}: {:?}", status.snapshot());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A fault after 10 frames: the same feed gets a keyframe from the new
    /// worker, the restart is counted by cause, health goes bad and back.
    #[cfg(debug_assertions)]
    async fn recovers_from(fault: &str, cause: RestartCause, problem: HealthProblem) {
        let pipeline = MediaPipeline::start(PipelineSettings {
            source: fault.parse().unwrap(),
            format: CaptureFormat { width: 640, height: 480, fps: 30 },
            encoder: EncoderSettings::default(),
        })
        .unwrap();
        let status = pipeline.status_handle();
        pipeline.fanout().viewers().set(1);
        let mut feed = pipeline.fanout().subscribe().unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), feed.next()).await.unwrap().unwrap();
        assert!(first.keyframe);
        let mut saw_problem = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while status.snapshot().restarts.total == 0 {
            assert!(Instant::now() < deadline, "no restart: {:?}", status.snapshot());
            saw_problem |= status.health() == Err(problem);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let snapshot = status.snapshot();
        assert_eq!(snapshot.last_restart, Some(cause));
        assert_eq!(snapshot.restarts.total, 1);
        saw_problem |= status.health() == Err(problem);
        assert!(saw_problem, "health reported {problem:?} during the fault");
        // The same feed continues, starting again on a keyframe.
        let after_restart = loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), feed.next()).await.unwrap().unwrap();
            if frame.captured_at > std::time::SystemTime::now() - Duration::from_millis(500) {
                break frame;
            }
        };
        let _ = after_restart;
        wait_for(&status, Duration::from_secs(5), "healthy again", |s| s.state == CameraState::Running).await;
        assert_eq!(status.health(), Ok(()));
        // Dropping the pipeline ends the feed (the fan-out closes).
        drop(pipeline);
        let ended =
            tokio::time::timeout(Duration::from_secs(5), async { while feed.next().await.is_ok() {} });
        assert!(ended.await.is_ok(), "the feed ends with the pipeline");
    }

    #[cfg(debug_assertions)]
    #[tokio::test]
    async fn a_panicking_source_is_restarted_and_viewers_continue() {
        recovers_from("fault:panic@10", RestartCause::Panic, HealthProblem::Restarting).await;
    }

    #[cfg(debug_assertions)]
    #[tokio::test]
    async fn a_failing_source_is_restarted_and_viewers_continue() {
        recovers_from("fault:error@10", RestartCause::Error, HealthProblem::Restarting).await;
    }

    #[cfg(debug_assertions)]
    #[tokio::test]
    async fn a_stalled_source_is_abandoned_and_replaced() {
        recovers_from("fault:stall@10", RestartCause::Stall, HealthProblem::CameraStalled).await;
    }

    #[cfg(debug_assertions)]
    #[test]
    fn a_wedged_supervisor_stops_beating() {
        let pipeline = MediaPipeline::start(PipelineSettings {
            source: "fault:wedge-supervisor@15".parse().unwrap(),
            format: CaptureFormat { width: 640, height: 480, fps: 30 },
            encoder: EncoderSettings::default(),
        })
        .unwrap();
        let heartbeat = pipeline.heartbeat();
        std::thread::sleep(Duration::from_millis(300));
        assert!(heartbeat.is_fresh(Duration::from_millis(300)), "beats while healthy");
        std::thread::sleep(Duration::from_secs(2));
        assert!(!heartbeat.is_fresh(Duration::from_secs(1)), "a wedged supervisor stops beating");
    }
}
