//! The capture thread: owns the camera manager, the camera and its
//! buffers (libcamera's objects are not `Send`), configures the camera,
//! queues requests and hands frames over a channel until stopped or failed.
//! Frames the reader is too slow for are dropped, not queued; requeues are
//! held to the frame rate by the one [`FramePacer`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::libcamera::camera::{ActiveCamera, CameraConfiguration};
use ::libcamera::camera_manager::CameraManager;
use ::libcamera::control::{ControlEntry, ControlList};
use ::libcamera::controls::FrameDurationLimits;
use ::libcamera::framebuffer::{AsFrameBuffer, FrameMetadataStatus};
use ::libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use ::libcamera::geometry::Size;
use ::libcamera::properties;
use ::libcamera::request::{Request, RequestStatus, ReuseFlag};
use ::libcamera::stream::{Stream, StreamRole};

use super::buffers::{make_requests, AllocatedBuffer, BufferKind, MemfdBuffer};
use super::clock::{monotonic_instant, SequenceExtender, WallClock};
use super::error::LibcameraError;
use super::layout::{Layout, PlaneKind};
use super::manager::ManagerGuard;
use super::source::LibcameraOptions;
use crate::media::frame::VideoFrame;
use crate::media::pacer::FramePacer;
use crate::media::source::CaptureFormat;

/// Buffers in flight. Enough to keep a camera busy while one frame is being
/// copied out; the pipeline's own count is used if it asks for more.
const MIN_BUFFERS: u32 = 4;

/// How often the capture thread looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(100);

/// What the capture thread hands over for each completed request: the
/// picture, or `None` when nobody wanted it (the buffer went straight back).
pub(super) type Delivery = Result<Option<VideoFrame>, LibcameraError>;

/// The flags and counters the capture thread shares with its source.
pub(super) struct Shared {
    pub(super) stop: Arc<AtomicBool>,
    /// Whether the reader wants pictures: while it does not, completed
    /// buffers are requeued without being read.
    pub(super) wanted: Arc<AtomicBool>,
    /// Pictures copied out of the camera's buffers so far.
    pub(super) copied: Arc<AtomicU64>,
}

/// What the capture thread reports once the camera runs.
pub(super) struct Started {
    pub(super) description: String,
    pub(super) format: CaptureFormat,
}

/// Events from libcamera's own thread.
enum Event {
    Completed(Request),
    Disconnected,
}

/// Owns everything libcamera; runs until stopped or failed. `_guard` is a
/// parameter so it is dropped after every local, the manager included.
pub(super) fn capture_thread(
    _guard: ManagerGuard,
    options: LibcameraOptions,
    setup: mpsc::Sender<Result<Started, LibcameraError>>,
    frames: SyncSender<Delivery>,
    shared: Shared,
) {
    let manager = match CameraManager::new() {
        Ok(manager) => manager,
        Err(e) => {
            let _ = setup.send(Err(LibcameraError::ManagerStart(e)));
            return;
        }
    };
    let result = stream(&manager, &options, &setup, &frames, &shared);
    if let Err(error) = result {
        // Before setup finished the error goes to `open`, afterwards to the
        // reader of frames; whichever is still listening.
        if let Err(mpsc::SendError(Err(error))) = setup.send(Err(error)) {
            let _ = frames.try_send(Err(error));
        }
    }
}

fn stream(
    manager: &CameraManager,
    options: &LibcameraOptions,
    setup: &mpsc::Sender<Result<Started, LibcameraError>>,
    frames: &SyncSender<Delivery>,
    shared: &Shared,
) -> Result<(), LibcameraError> {
    let list = manager.cameras();
    let camera = match &options.camera_id {
        Some(id) => manager.get(id).ok_or_else(|| LibcameraError::UnknownCamera {
            id: id.clone(),
            available: (0..list.len()).filter_map(|i| list.get(i)).map(|c| c.id().to_owned()).collect(),
        })?,
        None => list.get(0).ok_or(LibcameraError::NoCamera)?,
    };
    let id = camera.id().to_owned();
    let model = camera.properties().get::<properties::Model>().ok().map(|m| m.0);
    let mut active = camera.acquire().map_err(|source| LibcameraError::Acquire { id: id.clone(), source })?;

    let (mut config, layout) = configure(&active, &id, options.format)?;
    active.configure(&mut config).map_err(|source| LibcameraError::Configure { id: id.clone(), source })?;
    let stream_config = config.get(0).ok_or_else(|| LibcameraError::NoConfiguration { id: id.clone() })?;
    let stream = stream_config.stream().ok_or_else(|| LibcameraError::NoConfiguration { id: id.clone() })?;
    let buffer_count = stream_config.get_buffer_count().max(MIN_BUFFERS);

    let (requests, buffer_kind) = make_requests(&mut active, &stream, &layout, buffer_count)?;

    let (events_tx, events) = mpsc::channel();
    let completed_tx = events_tx.clone();
    active.on_request_completed(move |request| {
        let _ = completed_tx.send(Event::Completed(request));
    });
    active.on_disconnected(move || {
        let _ = events_tx.send(Event::Disconnected);
    });

    let fps = options.format.fps.max(1);
    let period = Duration::from_secs(1) / fps;
    let mut controls = ControlList::from_info_map(active.controls()).unwrap_or_default();
    // Not every camera takes a frame duration (libcamera's virtual camera
    // does not), so it is set only where the camera lists the control.
    let rate_control = active.controls().find(FrameDurationLimits::ID).is_ok();
    if rate_control {
        let micros = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
        // `set` only fails for values the camera rejects; the rate is then
        // the camera's default, which the pacing below still caps.
        let _ = controls.set(FrameDurationLimits([micros, micros]));
    }
    let format = CaptureFormat { width: layout.width, height: layout.height, fps };
    let description = format!(
        "libcamera {} ({id}) {}x{}@{fps} {}{}",
        model.as_deref().unwrap_or("camera"),
        layout.width,
        layout.height,
        layout.kind.name(),
        match buffer_kind {
            BufferKind::Allocated => "",
            BufferKind::Memfd => ", memfd buffers",
        },
    );

    active.start(Some(&*controls)).map_err(LibcameraError::Start)?;
    let mut parked = Vec::new();
    let result = 'run: {
        for request in requests {
            if let Err((request, e)) = active.queue_request(request) {
                parked.push(request);
                break 'run Err(LibcameraError::Queue(e));
            }
        }
        tracing::info!(camera = %id, stride = layout.stride, rate_control, "{description}");
        if setup.send(Ok(Started { description, format })).is_err() {
            // `open` gave up waiting; nobody wants the frames.
            break 'run Ok(());
        }
        capture_loop(&active, &stream, &layout, &events, frames, shared, options, &mut parked)
    };
    // Stop before any request or buffer goes, on every path: libcamera must
    // not touch freed memory. Completed requests (in `parked` and `events`)
    // are destroyed only after this, because libcamera's virtual camera
    // still walks a request's buffers after reporting it complete.
    let _ = active.stop();
    drop(parked);
    drop(events);
    result
}

/// Hands frames over until stopped or failed. Requests it does not requeue
/// go to `parked`, to be destroyed once the camera has stopped.
#[allow(clippy::too_many_arguments)]
fn capture_loop(
    active: &ActiveCamera<'_>,
    stream: &Stream,
    layout: &Layout,
    events: &Receiver<Event>,
    frames: &SyncSender<Delivery>,
    shared: &Shared,
    options: &LibcameraOptions,
    parked: &mut Vec<Request>,
) -> Result<(), LibcameraError> {
    let mut pacer = FramePacer::new(options.format.fps);
    let period = pacer.period();
    let mut clock = WallClock::new();
    let mut sequence = SequenceExtender::default();
    let mut last_frame = Instant::now();
    let mut dropped: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut request = match events.recv_timeout(POLL) {
            Ok(Event::Completed(request)) => request,
            Ok(Event::Disconnected) => return Err(LibcameraError::Disconnected),
            Err(RecvTimeoutError::Timeout) => {
                // The reader times out too, but a thread nobody reads from
                // must end on its own so the camera is released.
                if last_frame.elapsed() > options.frame_timeout.max(period * 3) {
                    return Err(LibcameraError::Timeout(last_frame.elapsed()));
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Err(LibcameraError::WorkerGone),
        };
        if request.status() == RequestStatus::Cancelled {
            parked.push(request);
            continue;
        }
        last_frame = Instant::now();
        // Nobody wants the picture: the buffer goes back unread (no copy).
        let frame = if shared.wanted.load(Ordering::Relaxed) {
            match read_frame(&request, stream, layout, &mut clock, &mut sequence) {
                Ok(frame) => {
                    shared.copied.fetch_add(u64::from(frame.is_some()), Ordering::Relaxed);
                    frame.map(Some)
                }
                Err(error) => {
                    parked.push(request);
                    return Err(error);
                }
            }
        } else {
            Some(None)
        };
        match frame {
            Some(frame) => match frames.try_send(Ok(frame)) {
                Ok(()) => {}
                // The reader is behind: drop this frame rather than stall the
                // camera or queue up latency.
                Err(TrySendError::Full(_)) => {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::debug!(dropped, "frames dropped: the reader is slower than the camera");
                    }
                }
                Err(TrySendError::Disconnected(_)) => {
                    parked.push(request);
                    return Ok(());
                }
            },
            None => tracing::debug!("camera reported a failed frame; skipped"),
        }
        // Cameras without rate control (libcamera's virtual camera) complete
        // requests as fast as they are queued: hold each requeue to the rate.
        pacer.wait();
        request.reuse(ReuseFlag::REUSE_BUFFERS);
        active.queue_request(request).map_err(|(request, e)| {
            parked.push(request);
            LibcameraError::Queue(e)
        })?;
    }
    Ok(())
}

/// Picks YUV420 (planar, what the encoder takes) or else NV12.
fn configure(
    active: &ActiveCamera<'_>,
    id: &str,
    format: CaptureFormat,
) -> Result<(CameraConfiguration, Layout), LibcameraError> {
    let no_config = || LibcameraError::NoConfiguration { id: id.to_owned() };
    let width = u32::try_from(format.width).unwrap_or(u32::MAX);
    let height = u32::try_from(format.height).unwrap_or(u32::MAX);
    let mut offered = String::new();
    for (pixel_format, kind) in
        [(::libcamera::formats::YUV420, PlaneKind::I420), (::libcamera::formats::NV12, PlaneKind::Nv12)]
    {
        let mut config =
            active.generate_configuration(&[StreamRole::VideoRecording]).ok_or_else(no_config)?;
        {
            let mut stream = config.get_mut(0).ok_or_else(no_config)?;
            stream.set_pixel_format(pixel_format);
            stream.set_size(Size::new(width, height));
            stream.set_buffer_count(stream.get_buffer_count().max(MIN_BUFFERS));
        }
        if config.validate().is_invalid() {
            continue;
        }
        let stream = config.get(0).ok_or_else(no_config)?;
        if stream.get_pixel_format() != pixel_format {
            // Adjusted to something else: try the next format.
            offered = stream.get_pixel_format().to_string();
            continue;
        }
        let size = stream.get_size();
        if size.width == 0 || size.height == 0 || size.width % 2 == 1 || size.height % 2 == 1 {
            return Err(LibcameraError::UnusableSize {
                id: id.to_owned(),
                width: size.width,
                height: size.height,
            });
        }
        if (size.width, size.height) != (width, height) {
            tracing::info!(
                camera = id,
                asked = %format!("{width}x{height}"),
                got = %format!("{}x{}", size.width, size.height),
                "camera adjusted the capture size"
            );
        }
        let (width, height) = (size.width as usize, size.height as usize);
        // Some pipelines leave the stride unset for packed rows.
        let stride = (stream.get_stride() as usize).max(width);
        let frame_size = stream.get_frame_size() as usize;
        return Ok((config, Layout { kind, width, height, stride, frame_size }));
    }
    Err(LibcameraError::UnsupportedFormat { id: id.to_owned(), offered })
}

/// Copies a completed request's picture into a frame. `Ok(None)` for a
/// frame the camera marked as failed.
fn read_frame(
    request: &Request,
    stream: &Stream,
    layout: &Layout,
    clock: &mut WallClock,
    sequence: &mut SequenceExtender,
) -> Result<Option<VideoFrame>, LibcameraError> {
    fn read<T: AsFrameBuffer>(
        buffer: &MemoryMappedFrameBuffer<T>,
        layout: &Layout,
        clock: &mut WallClock,
        sequence: &mut SequenceExtender,
    ) -> Result<Option<VideoFrame>, LibcameraError> {
        let (status, camera_sequence, timestamp_ns) = match buffer.metadata() {
            Some(meta) => (meta.status(), meta.sequence(), meta.timestamp()),
            None => return Err(LibcameraError::MissingBuffer),
        };
        if matches!(status, FrameMetadataStatus::Error | FrameMetadataStatus::Cancelled) {
            return Ok(None);
        }
        let planes = buffer.data();
        let mut frame = layout.copy_frame(&planes)?;
        frame.sequence = sequence.extend(camera_sequence);
        frame.captured_at = clock.wall_time(timestamp_ns);
        frame.captured_mono = monotonic_instant(timestamp_ns);
        Ok(Some(frame))
    }
    if let Some(buffer) = request.buffer::<AllocatedBuffer>(stream) {
        read(buffer, layout, clock, sequence)
    } else if let Some(buffer) = request.buffer::<MemfdBuffer>(stream) {
        read(buffer, layout, clock, sequence)
    } else {
        Err(LibcameraError::MissingBuffer)
    }
}
