//! Camera capture through libcamera (cargo feature `libcamera`).
//!
//! [`LibcameraSource`] opens the first camera (or the one with a given ID),
//! asks it for YUV 4:2:0 at the configured size and rate, and delivers
//! [`VideoFrame`]s: planar I420 as the camera gives it, or NV12 converted to
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
//! [`SourceError::Failed`] (or `NotFound`), and the pipeline decides about
//! retrying. A camera that stops delivering for
//! [`LibcameraOptions::frame_timeout`] is `Failed` too.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use libcamera::camera::{ActiveCamera, CameraConfiguration};
use libcamera::camera_manager::CameraManager;
use libcamera::control::{ControlEntry, ControlList};
use libcamera::controls::FrameDurationLimits;
use libcamera::framebuffer::{AsFrameBuffer, FrameBufferPlane, FrameMetadataStatus, OwnedFrameBuffer};
use libcamera::framebuffer_allocator::{FrameBuffer, FrameBufferAllocator};
use libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use libcamera::geometry::Size;
use libcamera::properties;
use libcamera::request::{Request, RequestStatus, ReuseFlag};
use libcamera::stream::{Stream, StreamRole};

use super::frame::VideoFrame;
use super::source::{CaptureFormat, FrameSource, SourceError};

/// How long a camera may go without delivering a frame before it is `Failed`.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// How long opening a camera (manager start, configure, buffers) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Buffers in flight. Enough to keep a camera busy while one frame is being
/// copied out; the pipeline's own count is used if it asks for more.
const MIN_BUFFERS: u32 = 4;

/// How often the capture thread looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(100);

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
    #[error("captured buffer has {planes} planes, {format} needs {needed}")]
    PlaneCount { format: &'static str, planes: usize, needed: usize },
    #[error("{plane} plane holds {len} bytes, needs {needed}")]
    ShortPlane { plane: &'static str, len: usize, needed: usize },
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
            | E::PlaneCount { .. }
            | E::ShortPlane { .. } => SourceError::Failed(text),
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

/// What the capture thread hands over for each completed request: the
/// picture, or `None` when nobody wanted it (the buffer went straight back).
type Delivery = Result<Option<VideoFrame>, LibcameraError>;

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
            .spawn(move || capture_thread(guard, thread_options, setup_tx, frame_tx, shared))
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

/// Guards libcamera's one-manager-per-process rule (a second manager aborts
/// the process).
struct ManagerGuard;

static MANAGER_IN_USE: AtomicBool = AtomicBool::new(false);

impl ManagerGuard {
    fn acquire() -> Result<ManagerGuard, LibcameraError> {
        MANAGER_IN_USE
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ManagerGuard)
            .map_err(|_| LibcameraError::Busy)
    }
}

impl Drop for ManagerGuard {
    fn drop(&mut self) {
        MANAGER_IN_USE.store(false, Ordering::Release);
    }
}

/// The flags and counters the capture thread shares with its source.
struct Shared {
    stop: Arc<AtomicBool>,
    wanted: Arc<AtomicBool>,
    copied: Arc<AtomicU64>,
}

/// What the capture thread reports once the camera runs.
struct Started {
    description: String,
    format: CaptureFormat,
}

/// Events from libcamera's own thread.
enum Event {
    Completed(Request),
    Disconnected,
}

/// Owns everything libcamera; runs until stopped or failed. `_guard` is a
/// parameter so it is dropped after every local, the manager included.
fn capture_thread(
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
    let period = Duration::from_secs(1) / options.format.fps.max(1);
    let mut clock = WallClock::new();
    let mut sequence = SequenceExtender::default();
    let mut next_due = Instant::now();
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
        let now = Instant::now();
        if now < next_due {
            std::thread::sleep(next_due - now);
        }
        next_due = next_due.max(now) + period;
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
        [(libcamera::formats::YUV420, PlaneKind::I420), (libcamera::formats::NV12, PlaneKind::Nv12)]
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

/// Where the capture buffers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufferKind {
    Allocated,
    Memfd,
}

type AllocatedBuffer = MemoryMappedFrameBuffer<FrameBuffer>;
type MemfdBuffer = MemoryMappedFrameBuffer<OwnedFrameBuffer>;

/// One request per buffer, with libcamera's buffers or else memfd ones.
fn make_requests(
    active: &mut ActiveCamera<'_>,
    stream: &Stream,
    layout: &Layout,
    count: u32,
) -> Result<(Vec<Request>, BufferKind), LibcameraError> {
    let mut allocator = FrameBufferAllocator::new(active);
    match allocator.alloc(stream) {
        Ok(buffers) => {
            let mut requests = Vec::with_capacity(buffers.len());
            for (cookie, buffer) in (0u64..).zip(buffers) {
                let mapped = AllocatedBuffer::new(buffer).map_err(|e| LibcameraError::Map(e.to_string()))?;
                requests.push(request_with(active, stream, cookie, mapped)?);
            }
            Ok((requests, BufferKind::Allocated))
        }
        Err(allocator_error) => {
            tracing::info!(error = %allocator_error, "libcamera cannot allocate buffers; using memfd buffers");
            let mut requests = Vec::with_capacity(count as usize);
            for cookie in 0..u64::from(count) {
                let buffer = memfd_buffer(layout).map_err(|fallback| LibcameraError::Buffers {
                    allocator: clone_io(&allocator_error),
                    fallback,
                })?;
                let mapped = MemfdBuffer::new(buffer).map_err(|e| LibcameraError::Map(e.to_string()))?;
                requests.push(request_with(active, stream, cookie, mapped)?);
            }
            Ok((requests, BufferKind::Memfd))
        }
    }
}

fn clone_io(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

fn request_with<T: AsFrameBuffer + 'static>(
    active: &mut ActiveCamera<'_>,
    stream: &Stream,
    cookie: u64,
    buffer: T,
) -> Result<Request, LibcameraError> {
    let mut request = active
        .create_request(Some(cookie))
        .ok_or_else(|| LibcameraError::Queue(io::Error::other("libcamera created no request")))?;
    request.add_buffer(stream, buffer).map_err(LibcameraError::Queue)?;
    Ok(request)
}

/// A buffer the application owns: one memfd holding every plane back to
/// back, each plane described by its own descriptor (a duplicate) and offset,
/// as libcamera's own allocator lays out a multi-planar buffer.
fn memfd_buffer(layout: &Layout) -> io::Result<OwnedFrameBuffer> {
    let sizes = layout.plane_sizes();
    let total: usize = sizes.iter().sum::<usize>().max(layout.frame_size);
    let file = memfd(total)?;
    let mut planes = Vec::with_capacity(sizes.len());
    let mut offset = 0usize;
    for size in sizes {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "plane too large for libcamera");
        planes.push(FrameBufferPlane {
            fd: OwnedFd::from(file.try_clone()?),
            offset: u32::try_from(offset).map_err(|_| too_big())?,
            length: u32::try_from(size).map_err(|_| too_big())?,
        });
        offset += size;
    }
    OwnedFrameBuffer::new(planes, None)
}

fn memfd(len: usize) -> io::Result<File> {
    // SAFETY: the name is a NUL-terminated string and the flags are valid;
    // the call has no other preconditions.
    let fd = unsafe { libc::memfd_create(c"lookout-camera".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(len as u64)?;
    Ok(file)
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

/// Maps camera timestamps (CLOCK_MONOTONIC nanoseconds, as V4L2 and
/// libcamera's virtual camera stamp frames) to wall-clock time.
struct WallClock {
    /// Wall clock minus monotonic clock.
    offset: Duration,
}

impl WallClock {
    /// A wall clock step (NTP setting the time on a Pi without RTC) larger
    /// than this is followed; smaller differences are jitter between the two
    /// clock reads and are ignored, so captured times stay monotonic.
    const RESYNC: Duration = Duration::from_millis(100);

    fn new() -> WallClock {
        WallClock { offset: WallClock::measure() }
    }

    fn measure() -> Duration {
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        wall.saturating_sub(monotonic_now())
    }

    fn wall_time(&mut self, timestamp_ns: u64) -> SystemTime {
        let fresh = WallClock::measure();
        if fresh.abs_diff(self.offset) > WallClock::RESYNC {
            self.offset = fresh;
        }
        let captured = SystemTime::UNIX_EPOCH + self.offset + Duration::from_nanos(timestamp_ns);
        // A camera with another clock would give nonsense times; "now" is
        // the better guess for latency figures.
        let now = SystemTime::now();
        match now.duration_since(captured) {
            Ok(age) if age < Duration::from_secs(1) => captured,
            Err(ahead) if ahead.duration() < WallClock::RESYNC => captured,
            _ => now,
        }
    }
}

/// A camera timestamp (CLOCK_MONOTONIC nanoseconds) as an `Instant` (which
/// is CLOCK_MONOTONIC on Linux), for the RTP clock. A timestamp in the
/// future or over a second old is from another clock (or none): now.
fn monotonic_instant(timestamp_ns: u64) -> Instant {
    let now = Instant::now();
    match monotonic_now().checked_sub(Duration::from_nanos(timestamp_ns)) {
        Some(age) if age < Duration::from_secs(1) => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

fn monotonic_now() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// Widens libcamera's 32-bit frame sequence to 64 bits across wrap-around.
#[derive(Default)]
struct SequenceExtender {
    last: Option<u64>,
}

impl SequenceExtender {
    fn extend(&mut self, sequence: u32) -> u64 {
        let value = match self.last {
            None => u64::from(sequence),
            Some(last) => {
                let high = last & !u64::from(u32::MAX);
                let candidate = high | u64::from(sequence);
                if candidate < last {
                    candidate + (1 << 32)
                } else {
                    candidate
                }
            }
        };
        self.last = Some(value);
        value
    }
}

/// How the camera lays out a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlaneKind {
    /// Y, then U, then V; chroma rows are half the luma stride.
    I420,
    /// Y, then interleaved U/V rows at the luma stride.
    Nv12,
}

impl PlaneKind {
    fn name(self) -> &'static str {
        match self {
            PlaneKind::I420 => "YUV420",
            PlaneKind::Nv12 => "NV12→I420",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    kind: PlaneKind,
    width: usize,
    height: usize,
    /// Luma row stride in bytes, as configured.
    stride: usize,
    /// libcamera's frame size for the configuration (0 if it gave none).
    frame_size: usize,
}

impl Layout {
    fn chroma_stride(&self) -> usize {
        match self.kind {
            PlaneKind::I420 => self.stride / 2,
            PlaneKind::Nv12 => self.stride,
        }
    }

    /// Bytes of each plane, full rows.
    fn plane_sizes(&self) -> Vec<usize> {
        let luma = self.stride * self.height;
        let chroma = self.chroma_stride() * (self.height / 2);
        match self.kind {
            PlaneKind::I420 => vec![luma, chroma, chroma],
            PlaneKind::Nv12 => vec![luma, chroma],
        }
    }

    /// Splits a single-plane buffer (some pipelines describe the whole
    /// picture as one plane) into the format's planes.
    fn split<'a>(&self, planes: &[&'a [u8]]) -> Result<Vec<&'a [u8]>, LibcameraError> {
        let sizes = self.plane_sizes();
        match planes {
            planes if planes.len() >= sizes.len() => Ok(planes[..sizes.len()].to_vec()),
            [whole] => {
                let mut parts = Vec::with_capacity(sizes.len());
                let mut start = 0usize;
                for (i, size) in sizes.iter().enumerate() {
                    let start_here = start.min(whole.len());
                    // The last plane takes what is left (its last row may be short).
                    let end =
                        if i + 1 == sizes.len() { whole.len() } else { (start + size).min(whole.len()) };
                    parts.push(&whole[start_here..end.max(start_here)]);
                    start += size;
                }
                Ok(parts)
            }
            planes => Err(LibcameraError::PlaneCount {
                format: self.kind.name(),
                planes: planes.len(),
                needed: sizes.len(),
            }),
        }
    }

    /// Copies a picture into an I420 frame (sequence and time left at zero
    /// and now, for the caller to set).
    fn copy_frame(&self, planes: &[&[u8]]) -> Result<VideoFrame, LibcameraError> {
        let planes = self.split(planes)?;
        let (width, height) = (self.width, self.height);
        let (chroma_width, chroma_height) = (width / 2, height / 2);
        let y = copy_plane("Y", planes[0], self.stride, width, height)?;
        let (u, v, uv_stride) = match self.kind {
            PlaneKind::I420 => {
                let stride = self.chroma_stride();
                let u = copy_plane("U", planes[1], stride, chroma_width, chroma_height)?;
                let v = copy_plane("V", planes[2], stride, chroma_width, chroma_height)?;
                (u, v, stride)
            }
            PlaneKind::Nv12 => {
                let (u, v) = deinterleave(planes[1], self.stride, chroma_width, chroma_height)?;
                (u, v, chroma_width)
            }
        };
        Ok(VideoFrame {
            width,
            height,
            y,
            u,
            v,
            y_stride: self.stride,
            uv_stride,
            captured_at: SystemTime::now(),
            captured_mono: Instant::now(),
            sequence: 0,
        })
    }
}

/// Bytes a plane must hold: full rows except the last, which may be unpadded.
fn needed(stride: usize, row_width: usize, rows: usize) -> usize {
    rows.saturating_sub(1) * stride + row_width
}

/// Copies a plane keeping its stride.
fn copy_plane(
    plane: &'static str,
    data: &[u8],
    stride: usize,
    row_width: usize,
    rows: usize,
) -> Result<Vec<u8>, LibcameraError> {
    let needed = needed(stride, row_width, rows);
    if data.len() < needed {
        return Err(LibcameraError::ShortPlane { plane, len: data.len(), needed });
    }
    Ok(data[..data.len().min(stride * rows)].to_vec())
}

/// Splits NV12's interleaved chroma into U and V planes without padding.
fn deinterleave(
    data: &[u8],
    stride: usize,
    chroma_width: usize,
    rows: usize,
) -> Result<(Vec<u8>, Vec<u8>), LibcameraError> {
    let needed = needed(stride, chroma_width * 2, rows);
    if data.len() < needed {
        return Err(LibcameraError::ShortPlane { plane: "UV", len: data.len(), needed });
    }
    let mut u = Vec::with_capacity(chroma_width * rows);
    let mut v = Vec::with_capacity(chroma_width * rows);
    for row in 0..rows {
        let start = row * stride;
        for pair in data[start..start + chroma_width * 2].chunks_exact(2) {
            u.push(pair[0]);
            v.push(pair[1]);
        }
    }
    Ok((u, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(kind: PlaneKind, width: usize, height: usize, stride: usize) -> Layout {
        Layout { kind, width, height, stride, frame_size: 0 }
    }

    #[test]
    fn nv12_with_padded_rows_becomes_i420() {
        // 4x2 picture, luma stride 8 (4 bytes of padding per row).
        let l = layout(PlaneKind::Nv12, 4, 2, 8);
        let y: Vec<u8> = (0..16).collect();
        // One chroma row: U V U V, then padding.
        let uv = [10, 20, 11, 21, 99, 99, 99, 99];
        let frame = l.copy_frame(&[&y, &uv]).unwrap();
        assert_eq!((frame.width, frame.height, frame.y_stride, frame.uv_stride), (4, 2, 8, 2));
        assert_eq!(frame.y, y);
        assert_eq!(frame.u, [10, 11]);
        assert_eq!(frame.v, [20, 21]);
        frame.validate().unwrap();
    }

    #[test]
    fn i420_keeps_its_strides() {
        let l = layout(PlaneKind::I420, 4, 4, 6);
        let y: Vec<u8> = (0..24).collect();
        let u = [1, 2, 0, 3, 4, 0];
        let v = [5, 6, 0, 7, 8, 0];
        let frame = l.copy_frame(&[&y, &u, &v]).unwrap();
        assert_eq!((frame.y_stride, frame.uv_stride), (6, 3));
        assert_eq!(frame.u, u);
        assert_eq!(frame.v, v);
        frame.validate().unwrap();
    }

    #[test]
    fn a_single_plane_is_split_by_the_layout() {
        let l = layout(PlaneKind::I420, 4, 2, 4);
        // Y 8 bytes, U 2, V 2.
        let whole: Vec<u8> = (0..12).collect();
        let frame = l.copy_frame(&[&whole]).unwrap();
        assert_eq!(frame.y, &whole[..8]);
        assert_eq!(frame.u, [8, 9]);
        assert_eq!(frame.v, [10, 11]);
    }

    #[test]
    fn short_planes_are_errors_not_panics() {
        let l = layout(PlaneKind::Nv12, 4, 4, 4);
        let y = [0u8; 16];
        let uv = [0u8; 5];
        assert!(matches!(l.copy_frame(&[&y, &uv]), Err(LibcameraError::ShortPlane { plane: "UV", .. })));
        assert!(matches!(l.copy_frame(&[&y[..10], &uv]), Err(LibcameraError::ShortPlane { plane: "Y", .. })));
        let i420 = layout(PlaneKind::I420, 4, 4, 4);
        assert!(matches!(i420.copy_frame(&[&y, &uv]), Err(LibcameraError::PlaneCount { .. })));
        assert!(matches!(i420.copy_frame(&[&y[..3]]), Err(LibcameraError::ShortPlane { .. })));
    }

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

    #[test]
    fn sequence_survives_wrap_around() {
        let mut s = SequenceExtender::default();
        assert_eq!(s.extend(u32::MAX - 1), u64::from(u32::MAX) - 1);
        assert_eq!(s.extend(u32::MAX), u64::from(u32::MAX));
        assert_eq!(s.extend(0), 1 << 32);
        assert_eq!(s.extend(5), (1 << 32) + 5);
    }

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

    #[test]
    fn memfd_buffers_hold_every_plane() {
        let l = layout(PlaneKind::Nv12, 64, 48, 64);
        let buffer = memfd_buffer(&l).unwrap();
        let planes = buffer.planes();
        assert_eq!(planes.len(), 2);
        let second = planes.get(1).unwrap();
        assert_eq!((second.offset(), second.len()), (Some(64 * 48), 64 * 24));
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let mut clock = WallClock::new();
        let now_ns = u64::try_from(monotonic_now().as_nanos()).unwrap();
        let earlier = clock.wall_time(now_ns - 50_000_000);
        let later = clock.wall_time(now_ns);
        assert_eq!(later.duration_since(earlier).unwrap(), Duration::from_millis(50));
    }
}
