//! No work for nobody: with no viewer the capture path hands every frame
//! straight back, drawing, copying and allocating nothing; the first viewer
//! after the idle time still gets a keyframe at once.
//!
//! The proof is a counting global allocator: this file is its own test
//! binary with a single test, so the only threads allocating are the
//! pipeline's (its supervisor and its worker) and this test's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lookout::media::encoder::EncoderSettings;
use lookout::media::pipeline::{MediaPipeline, PipelineSettings, SourceChoice};
use lookout::media::source::CaptureFormat;

/// Counts every allocation (and reallocation) in the process, with its size.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counters() -> (u64, u64) {
    (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed))
}

/// Waits until the pipeline has captured `frames` more frames; returns how many it did.
fn wait_for_frames(pipeline: &MediaPipeline, frames: u64) -> u64 {
    let status = pipeline.status_handle();
    let start = status.snapshot().frames_captured;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = status.snapshot().frames_captured;
        if now >= start + frames {
            return now - start;
        }
        assert!(Instant::now() < deadline, "the pipeline stopped capturing: {now} frames");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unwatched_camera_allocates_nothing_and_the_next_viewer_still_starts_at_once() {
    let (width, height) = (1280, 720);
    let pipeline = MediaPipeline::start(PipelineSettings {
        source: SourceChoice::TestPattern,
        format: CaptureFormat { width, height, fps: 30 },
        encoder: EncoderSettings::default(),
    })
    .expect("pipeline starts");
    // Let it settle (threads, the encoder's own buffers), then count while idle.
    wait_for_frames(&pipeline, 10);
    let (allocations_before, bytes_before) = counters();
    let frames = wait_for_frames(&pipeline, 30);
    let (allocations_after, bytes_after) = counters();
    let (allocations, bytes) = (allocations_after - allocations_before, bytes_after - bytes_before);
    let frame_bytes = (width * height * 3 / 2) as u64;
    println!(
        "FIGURE idle capture, {width}x{height}@30: {frames} frames, {allocations} allocations, {bytes} bytes ({} bytes a frame; one frame is {frame_bytes})",
        bytes / frames
    );
    // The status snapshots this test takes allocate a few small strings; a
    // single drawn or copied frame would be 1.4 MB.
    assert!(
        bytes < frame_bytes / 4,
        "idle capture allocated {bytes} bytes over {frames} frames ({allocations} allocations)"
    );

    // A viewer arrives: it gets a keyframe within a few frames, and the
    // allocator sees the pictures being drawn again (the counter works).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (_, bytes_before) = counters();
    let subscribed = Instant::now();
    // As the signaling hub does when the viewer joins the room (the one
    // viewer count, `lookout::viewers`), then its connection subscribes.
    pipeline.fanout().viewers().set(1);
    let mut feed = pipeline.fanout().subscribe().expect("the fan-out is open");
    let first = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), feed.next()).await })
        .expect("a frame within 5 s")
        .expect("the feed is open");
    let waited = subscribed.elapsed();
    let (_, bytes_after) = counters();
    println!(
        "FIGURE first frame to a viewer after idle: {} ms (keyframe {})",
        waited.as_millis(),
        first.keyframe
    );
    assert!(first.keyframe, "a new viewer starts on a keyframe");
    // The figure that matters comes from the benchmark (docs/performance.md);
    // this bound only catches a start that takes seconds (a cold encoder).
    assert!(waited < Duration::from_secs(2), "first frame after idle took {waited:?}");
    assert!(
        bytes_after - bytes_before >= frame_bytes,
        "drawing a watched frame allocates (the counter counts)"
    );
}
