//! Raw video frames: planar YUV 4:2:0 (I420) with row strides, as cameras
//! deliver them and as the H.264 encoder takes them.

use std::time::{Duration, Instant, SystemTime};

/// One I420 picture. Planes may be padded: a row of the Y plane is
/// `y_stride >= width` bytes, a row of U and V `uv_stride >= width / 2`.
#[derive(Clone)]
pub struct VideoFrame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    pub y_stride: usize,
    pub uv_stride: usize,
    /// Wall-clock time the picture was taken (for latency measurements).
    pub captured_at: SystemTime,
    /// The same moment on the monotonic clock: the RTP timestamps of this
    /// frame come from it (a wall clock may step; this never does).
    pub captured_mono: Instant,
    /// Counts frames from the source's start.
    pub sequence: u64,
}

/// Two monotonic reads around the wall-clock read further apart than this
/// mean the thread was preempted between them: read again.
pub const CLOCK_PAIR_TOLERANCE: Duration = Duration::from_micros(200);

/// The wall clock and the monotonic clock read at one moment, for a frame
/// captured now: a frame's wall time (its timestamp strip, its latency)
/// and its monotonic time (its RTP timestamp) must name the same instant.
/// Read one after the other, a preemption between the reads on a loaded
/// machine put them 4.8 ms apart (a CI run of the timing test, which
/// allows 2 ms). The monotonic clock is read before and after the wall
/// clock, and the pair taken again (up to three times) while the two are
/// more than [`CLOCK_PAIR_TOLERANCE`] apart.
pub fn capture_clocks() -> (SystemTime, Instant) {
    let mut tries = 0;
    loop {
        let before = Instant::now();
        let wall = SystemTime::now();
        let after = Instant::now();
        tries += 1;
        if after - before <= CLOCK_PAIR_TOLERANCE || tries == 3 {
            return (wall, before + (after - before) / 2);
        }
    }
}

/// Why a frame's geometry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {width}x{height} is not a positive even size")]
    OddSize { width: usize, height: usize },
    #[error("{plane} plane holds {len} bytes, needs {needed} ({rows} rows of stride {stride})")]
    ShortPlane { plane: &'static str, len: usize, needed: usize, rows: usize, stride: usize },
    #[error("{plane} stride {stride} is less than the row width {width}")]
    NarrowStride { plane: &'static str, stride: usize, width: usize },
}

impl VideoFrame {
    /// A mid-grey frame without padding.
    pub fn blank(width: usize, height: usize) -> VideoFrame {
        VideoFrame::grey(width, height, SystemTime::now(), 0)
    }

    /// A frame without padding, all samples mid-grey (128), to draw into;
    /// its monotonic capture time is now.
    pub fn grey(width: usize, height: usize, captured_at: SystemTime, sequence: u64) -> VideoFrame {
        VideoFrame::grey_at(width, height, (captured_at, Instant::now()), sequence)
    }

    /// A grey frame (as [`VideoFrame::grey`]) captured at `(wall, monotonic)`,
    /// both read before the planes are allocated: a frame's planes are fresh
    /// mappings, and page-faulting 1.4 MB between the two reads moved them
    /// apart by up to a few ms on a busy machine (see [`capture_clocks`]).
    pub fn grey_at(
        width: usize,
        height: usize,
        (captured_at, captured_mono): (SystemTime, Instant),
        sequence: u64,
    ) -> VideoFrame {
        VideoFrame {
            width,
            height,
            y: vec![128; width * height],
            u: vec![128; width * height / 4],
            v: vec![128; width * height / 4],
            y_stride: width,
            uv_stride: width / 2,
            captured_at,
            captured_mono,
            sequence,
        }
    }

    /// Checks that the planes hold what the size and strides promise.
    pub fn validate(&self) -> Result<(), FrameError> {
        let (width, height) = (self.width, self.height);
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            return Err(FrameError::OddSize { width, height });
        }
        let planes = [
            ("Y", &self.y, self.y_stride, width, height),
            ("U", &self.u, self.uv_stride, width / 2, height / 2),
            ("V", &self.v, self.uv_stride, width / 2, height / 2),
        ];
        for (plane, data, stride, row_width, rows) in planes {
            if stride < row_width {
                return Err(FrameError::NarrowStride { plane, stride, width: row_width });
            }
            // The last row need not be padded.
            let needed = (rows - 1) * stride + row_width;
            if data.len() < needed {
                return Err(FrameError::ShortPlane { plane, len: data.len(), needed, rows, stride });
            }
        }
        Ok(())
    }

    /// Capture time in Unix milliseconds.
    pub fn captured_unix_ms(&self) -> u64 {
        self.captured_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl openh264::formats::YUVSource for VideoFrame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.y_stride, self.uv_stride, self.uv_stride)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_bad_geometry() {
        assert!(VideoFrame::blank(64, 48).validate().is_ok());
        let mut odd = VideoFrame::blank(64, 48);
        odd.width = 63;
        assert!(matches!(odd.validate(), Err(FrameError::OddSize { .. })));
        let mut short = VideoFrame::blank(64, 48);
        short.y.truncate(100);
        assert!(matches!(short.validate(), Err(FrameError::ShortPlane { plane: "Y", .. })));
        let mut narrow = VideoFrame::blank(64, 48);
        narrow.uv_stride = 16;
        assert!(matches!(narrow.validate(), Err(FrameError::NarrowStride { .. })));
    }

    #[test]
    fn the_capture_clocks_name_one_moment() {
        // The pair against the clocks read around it: the wall time lies
        // between two wall reads, the monotonic time between two monotonic ones.
        let (wall_before, mono_before) = (SystemTime::now(), Instant::now());
        let (wall, mono) = capture_clocks();
        let (mono_after, wall_after) = (Instant::now(), SystemTime::now());
        assert!(wall_before <= wall && wall <= wall_after);
        assert!(mono_before <= mono && mono <= mono_after);
    }
}
