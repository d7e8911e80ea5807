//! Captures from libcamera's `virtual` camera through the real
//! [`LibcameraSource`], checks the frames, and round-trips them through the
//! H.264 encoder and openh264's decoder.
//!
//! Needs libcamera built with the virtual pipeline and a `virtual.yaml`
//! declaring the camera `Virtual0` (colour bars, 1280x720 and 640x480).
//! `scripts/libcamera-test.sh` provides both and runs this binary where
//! libcamera's camera manager can start (see docs/camera.md). The virtual
//! camera only offers NV12, so these tests exercise the NV12 → I420 path and
//! (without dma-heap, as in CI) the memfd buffers.
#![cfg(feature = "libcamera")]

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use lookout::media::encoder::{EncoderSettings, H264Encoder};
use lookout::media::frame::VideoFrame;
use lookout::media::libcamera::{self, LibcameraError, LibcameraSource};
use lookout::media::source::{CaptureFormat, FrameSource, SourceError};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// The camera `scripts/libcamera-test.sh` declares in `virtual.yaml`.
const CAMERA: &str = "Virtual0";

/// libcamera allows one camera manager per process: tests take turns.
static CAMERA_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    CAMERA_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn capture(source: &mut LibcameraSource, count: usize) -> Vec<VideoFrame> {
    (0..count).map(|i| source.next_frame().unwrap_or_else(|e| panic!("frame {i} of {count}: {e}"))).collect()
}

/// Chroma and mean luma of the 2x2 block under each chroma sample.
fn samples(frame: &VideoFrame) -> impl Iterator<Item = (u8, u8, u8)> + '_ {
    let (cw, ch) = (frame.width / 2, frame.height / 2);
    (0..ch).flat_map(move |cy| {
        (0..cw).map(move |cx| {
            let luma: u32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                .iter()
                .map(|(dx, dy)| u32::from(frame.y[(2 * cy + dy) * frame.y_stride + 2 * cx + dx]))
                .sum();
            let u = frame.u[cy * frame.uv_stride + cx];
            let v = frame.v[cy * frame.uv_stride + cx];
            (u8::try_from(luma / 4).unwrap_or(u8::MAX), u, v)
        })
    })
}

/// Checks one frame of libcamera's colour bars: geometry, and that the
/// colours are where they belong, which catches swapped or misaligned
/// chroma in the NV12 conversion. libcamera draws the bars with libyuv's
/// BT.601 limited-range conversion: red is Y 82 U 90 V 240, blue is Y 41
/// U 240 V 110.
fn check_bars(frame: &VideoFrame, width: usize, height: usize) {
    assert_eq!((frame.width, frame.height), (width, height), "frame size");
    frame.validate().expect("frame geometry");
    assert!(frame.y_stride >= width && frame.y_stride <= width * 4, "luma stride {}", frame.y_stride);
    assert!(
        frame.uv_stride >= width / 2 && frame.uv_stride <= width * 2,
        "chroma stride {}",
        frame.uv_stride
    );

    let (mut red, mut blue) = (0usize, 0usize);
    for (y, u, v) in samples(frame) {
        if v > 200 && u < 110 {
            assert!(
                y.abs_diff(82) <= 12,
                "red chroma (U {u} V {v}) over luma {y}: chroma swapped or misplaced"
            );
            red += 1;
        }
        if u > 200 && v < 130 {
            assert!(
                y.abs_diff(41) <= 12,
                "blue chroma (U {u} V {v}) over luma {y}: chroma swapped or misplaced"
            );
            blue += 1;
        }
    }
    // Each of the 8 bars covers an eighth of the picture, less its edges.
    let eighth = (width / 2) * (height / 2) / 8;
    assert!(red > eighth / 2, "only {red} red chroma samples (expected about {eighth})");
    assert!(blue > eighth / 2, "only {blue} blue chroma samples (expected about {eighth})");

    let distinct = {
        let mut seen = [false; 256];
        frame.y.iter().for_each(|&y| seen[usize::from(y)] = true);
        seen.iter().filter(|&&s| s).count()
    };
    assert!(distinct >= 8, "luma has only {distinct} distinct values: not the colour bars");
}

#[test]
fn virtual_camera_frames_are_sane_and_survive_h264() {
    let _turn = lock();
    let format = CaptureFormat { width: 640, height: 480, fps: 30 };
    let mut source = LibcameraSource::open(Some(CAMERA), format).expect("open the virtual camera");
    assert_eq!(source.format(), format, "the camera should grant 640x480@30");
    let description = source.describe();
    assert!(description.contains(CAMERA) && description.contains("640x480"), "describe: {description}");

    let started = Instant::now();
    let frames = capture(&mut source, 30);
    let elapsed = started.elapsed();
    drop(source);

    // The virtual camera has no frame rate of its own; the source paces it.
    assert!(elapsed >= Duration::from_millis(600), "30 frames at 30 fps took only {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "30 frames took {elapsed:?}");

    for frame in &frames {
        check_bars(frame, 640, 480);
    }
    for pair in frames.windows(2) {
        assert!(
            pair[1].sequence > pair[0].sequence,
            "sequence {} then {}",
            pair[0].sequence,
            pair[1].sequence
        );
        assert!(pair[1].captured_at > pair[0].captured_at, "capture times must increase");
    }
    let age = SystemTime::now().duration_since(frames[0].captured_at).expect("captured in the past");
    assert!(age < Duration::from_secs(30), "first frame is {age:?} old");
    // The bars scroll one column per frame.
    assert_ne!(frames[0].y, frames[frames.len() - 1].y, "picture does not change");

    let mut encoder = H264Encoder::new(EncoderSettings::default()).expect("encoder");
    let mut decoder = Decoder::new().expect("decoder");
    let mut decoded = 0;
    let mut luma_error: u64 = 0;
    for (i, frame) in frames.iter().enumerate() {
        let encoded = encoder.encode(frame, i == 0).expect("encode");
        assert!(!encoded.data.is_empty(), "frame {i} encoded to nothing");
        if i == 0 {
            assert!(encoded.keyframe, "first frame must be an IDR");
        }
        if let Some(picture) = decoder.decode(&encoded.data).expect("decode") {
            assert_eq!(picture.dimensions(), (640, 480), "decoded size");
            let (y_stride, _, _) = picture.strides();
            // Mean luma difference against the source frame it came from.
            let mut total: u64 = 0;
            for row in 0..480 {
                let ours = &frame.y[row * frame.y_stride..row * frame.y_stride + 640];
                let theirs = &picture.y()[row * y_stride..row * y_stride + 640];
                total += ours.iter().zip(theirs).map(|(a, b)| u64::from(a.abs_diff(*b))).sum::<u64>();
            }
            luma_error = luma_error.max(total / (640 * 480));
            decoded += 1;
        }
    }
    assert!(decoded >= frames.len() - 2, "decoded {decoded} of {} frames", frames.len());
    assert!(luma_error <= 8, "decoded luma differs from the capture by {luma_error} on average");
}

#[test]
fn first_camera_at_720p() {
    let _turn = lock();
    let format = CaptureFormat { width: 1280, height: 720, fps: 30 };
    let mut source = LibcameraSource::open(None, format).expect("open the first camera");
    assert_eq!((source.format().width, source.format().height), (1280, 720));
    for frame in capture(&mut source, 5) {
        check_bars(&frame, 1280, 720);
    }
}

/// No work for nobody: while the pipeline has no viewer it asks for frames
/// with `next_frame_if(|| false)`; the camera keeps its pace, and no
/// picture is copied out of its buffers until somebody wants one.
#[test]
fn an_unwatched_camera_hands_its_buffers_back_unread() {
    let _turn = lock();
    let format = CaptureFormat { width: 1280, height: 720, fps: 30 };
    let mut source = LibcameraSource::open(Some(CAMERA), format).expect("open the virtual camera");
    // The flag reaches the capture thread with the first call; one picture
    // may already be on its way.
    let _ = source.next_frame_if(&mut || false).expect("first idle frame");
    let copied = source.frames_copied();
    let started = Instant::now();
    for i in 0..15 {
        let frame = source.next_frame_if(&mut || false).unwrap_or_else(|e| panic!("idle frame {i}: {e}"));
        assert!(frame.is_none(), "nobody asked for frame {i}");
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "idle frames keep the camera's pace");
    assert!(
        source.frames_copied() <= copied + 1,
        "{} pictures copied while unwatched",
        source.frames_copied() - copied
    );
    // A viewer arrives: the next frames are read again, at once.
    let frame = source.next_frame_if(&mut || true).expect("frame").expect("a watched frame is delivered");
    check_bars(&frame, 1280, 720);
    assert!(source.frames_copied() > copied);
}

#[test]
fn unknown_camera_is_not_found() {
    let _turn = lock();
    let error = LibcameraSource::open(Some("no-such-camera"), CaptureFormat::default())
        .err()
        .expect("a camera that does not exist must not open");
    match SourceError::from(error) {
        SourceError::NotFound(text) => {
            assert!(text.contains(CAMERA), "should list the cameras found: {text}")
        }
        other => panic!("expected NotFound, got {other}"),
    }
}

#[test]
fn one_source_at_a_time_and_the_camera_is_released() {
    let _turn = lock();
    let format = CaptureFormat { width: 640, height: 480, fps: 30 };
    let mut first = LibcameraSource::open(Some(CAMERA), format).expect("open");
    first.next_frame().expect("frame");
    // A second manager would abort the process inside libcamera.
    assert!(matches!(LibcameraSource::open(Some(CAMERA), format), Err(LibcameraError::Busy)));
    assert!(matches!(libcamera::cameras(), Err(LibcameraError::Busy)));
    drop(first);

    let cameras = libcamera::cameras().expect("list cameras once the source is closed");
    assert!(cameras.iter().any(|c| c.id == CAMERA), "cameras: {cameras:?}");
    let mut again = LibcameraSource::open(Some(CAMERA), format).expect("reopen after drop");
    again.next_frame().expect("frame after reopening");
}
