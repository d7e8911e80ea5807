//! The built-in test pattern: what a camera-less machine streams.
//!
//! Moving diagonal bars and a bouncing box give the encoder real work; the
//! frame counter and the wall-clock time are drawn as text; and the top 16
//! rows hold a machine-readable **timestamp strip** (see
//! `docs/test-pattern.md`): 48 bits of the capture time in Unix
//! milliseconds, most significant bit first, bit `i` a 12x16 block at
//! x = 12·i, luma 235 for 1 and 16 for 0, chroma neutral beneath. Anyone can
//! measure capture-to-display latency from decoded video by sampling the
//! block centres.

use std::time::{Instant, SystemTime};

use super::frame::{capture_clocks, VideoFrame};
use super::pacer::FramePacer;
use super::source::{CaptureFormat, FrameSource, SourceError};

/// Bits in the timestamp strip.
pub const STRIP_BITS: usize = 48;
/// Width of one bit's block, in pixels.
pub const STRIP_BLOCK_WIDTH: usize = 12;
/// Height of the strip, in rows.
pub const STRIP_HEIGHT: usize = 16;
/// Luma of a 1 bit and of a 0 bit.
pub const STRIP_ONE: u8 = 235;
pub const STRIP_ZERO: u8 = 16;

/// Smallest frame the pattern supports (the strip is 576 px wide).
pub const MIN_WIDTH: usize = STRIP_BITS * STRIP_BLOCK_WIDTH;
/// Smallest frame height the pattern supports (the strip and one text line).
pub const MIN_HEIGHT: usize = 64;

const BAR_PERIOD: usize = 256;
const BOX_SIZE: usize = 96;
const FONT_SCALE: usize = 4;

/// A paced source of synthetic frames.
pub struct TestPattern {
    format: CaptureFormat,
    pacer: FramePacer,
    sequence: u64,
    /// One period of bars plus a frame width, so any row is one slice of it.
    bar_row: Vec<u8>,
    u_row: Vec<u8>,
}

impl TestPattern {
    pub fn new(format: CaptureFormat) -> Result<TestPattern, SourceError> {
        let CaptureFormat { width, height, fps } = format;
        if width < MIN_WIDTH
            || height < MIN_HEIGHT
            || width % 2 == 1
            || height % 2 == 1
            || fps == 0
            || fps > 240
        {
            return Err(SourceError::Configuration(format!(
                "the test pattern needs an even size of at least {MIN_WIDTH}x{MIN_HEIGHT} and 1 to 240 fps, got {width}x{height}@{fps}"
            )));
        }
        let bar_row =
            (0..width + BAR_PERIOD).map(|x| (16 + (x % BAR_PERIOD) * 219 / BAR_PERIOD) as u8).collect();
        let u_row = (0..width / 2).map(|x| (64 + x * 128 / (width / 2)) as u8).collect();
        Ok(TestPattern { format, pacer: FramePacer::new(fps), sequence: 0, bar_row, u_row })
    }

    /// Draws frame number `sequence` captured at `captured_at` (no pacing;
    /// its monotonic capture time is now).
    pub fn render(&self, sequence: u64, captured_at: SystemTime) -> VideoFrame {
        self.render_at(sequence, (captured_at, Instant::now()))
    }

    /// Draws frame number `sequence` captured at `(wall, monotonic)`
    /// (`frame::capture_clocks`).
    pub fn render_at(&self, sequence: u64, captured: (SystemTime, Instant)) -> VideoFrame {
        let CaptureFormat { width, height, .. } = self.format;
        // Every luma row and chroma row is overwritten below.
        let mut frame = VideoFrame::grey_at(width, height, captured, sequence);
        let shift = (sequence as usize * 4) % BAR_PERIOD;
        for (row, line) in frame.y.chunks_exact_mut(width).enumerate() {
            let start = (shift + row) % BAR_PERIOD;
            line.copy_from_slice(&self.bar_row[start..start + width]);
        }
        for (row, (u_line, v_line)) in
            frame.u.chunks_exact_mut(width / 2).zip(frame.v.chunks_exact_mut(width / 2)).enumerate()
        {
            u_line.copy_from_slice(&self.u_row);
            v_line.fill((64 + (row * 128) / (height / 2)) as u8);
        }
        self.draw_box(&mut frame);
        let unix_ms = frame.captured_unix_ms();
        draw_text(&mut frame, 16, STRIP_HEIGHT + 16, &caption(sequence, unix_ms));
        write_timestamp_strip(&mut frame, unix_ms);
        frame
    }

    fn draw_box(&self, frame: &mut VideoFrame) {
        let (width, height) = (frame.width, frame.height);
        let n = self.sequence_for_box(frame.sequence);
        let span_x = width - BOX_SIZE;
        let span_y = height - BOX_SIZE - STRIP_HEIGHT;
        let x = bounce(n * 6, span_x) & !1;
        let y = (STRIP_HEIGHT + bounce(n * 4, span_y)) & !1;
        for row in y..y + BOX_SIZE {
            frame.y[row * frame.y_stride + x..][..BOX_SIZE].fill(200);
        }
        for row in y / 2..(y + BOX_SIZE) / 2 {
            frame.u[row * frame.uv_stride + x / 2..][..BOX_SIZE / 2].fill(84);
            frame.v[row * frame.uv_stride + x / 2..][..BOX_SIZE / 2].fill(230);
        }
    }

    fn sequence_for_box(&self, sequence: u64) -> usize {
        usize::try_from(sequence).unwrap_or(0)
    }
}

/// Position on a path that goes 0..span and back.
fn bounce(step: usize, span: usize) -> usize {
    if span == 0 {
        return 0;
    }
    let phase = step % (2 * span);
    if phase < span {
        phase
    } else {
        2 * span - phase
    }
}

fn caption(sequence: u64, unix_ms: u64) -> String {
    let day_ms = unix_ms % 86_400_000;
    let (h, m, s, ms) = (day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000);
    format!("#{sequence:06} {h:02}:{m:02}:{s:02}.{ms:03}")
}

/// Writes the 48-bit timestamp strip into the top rows.
pub fn write_timestamp_strip(frame: &mut VideoFrame, unix_ms: u64) {
    for bit in 0..STRIP_BITS {
        let one = (unix_ms >> (STRIP_BITS - 1 - bit)) & 1 == 1;
        let luma = if one { STRIP_ONE } else { STRIP_ZERO };
        for row in 0..STRIP_HEIGHT {
            frame.y[row * frame.y_stride + bit * STRIP_BLOCK_WIDTH..][..STRIP_BLOCK_WIDTH].fill(luma);
        }
    }
    // Neutral chroma under the strip so the blocks decode as pure greys.
    for row in 0..STRIP_HEIGHT / 2 {
        frame.u[row * frame.uv_stride..][..MIN_WIDTH / 2].fill(128);
        frame.v[row * frame.uv_stride..][..MIN_WIDTH / 2].fill(128);
    }
}

/// Reads the timestamp strip back from a decoded luma plane (block centres,
/// threshold half-way between the two levels).
pub fn read_timestamp_strip(y: &[u8], y_stride: usize) -> u64 {
    let threshold = (u16::from(STRIP_ONE) + u16::from(STRIP_ZERO)) / 2;
    (0..STRIP_BITS).fold(0u64, |acc, bit| {
        let centre = (STRIP_HEIGHT / 2) * y_stride + bit * STRIP_BLOCK_WIDTH + STRIP_BLOCK_WIDTH / 2;
        let one = y.get(centre).is_some_and(|&luma| u16::from(luma) > threshold);
        (acc << 1) | u64::from(one)
    })
}

impl FrameSource for TestPattern {
    fn describe(&self) -> String {
        let CaptureFormat { width, height, fps } = self.format;
        format!("test-pattern {width}x{height}@{fps}")
    }

    fn format(&self) -> CaptureFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<VideoFrame, SourceError> {
        self.pacer.wait();
        let frame = self.render_at(self.sequence, capture_clocks());
        self.sequence += 1;
        Ok(frame)
    }

    /// Draws the frame only if it is wanted once it is due: unwatched
    /// frames cost a sleep, no drawing and no allocation.
    fn next_frame_if(&mut self, wanted: &mut dyn FnMut() -> bool) -> Result<Option<VideoFrame>, SourceError> {
        self.pacer.wait();
        let frame = wanted().then(|| self.render_at(self.sequence, capture_clocks()));
        self.sequence += 1;
        Ok(frame)
    }
}

/// 5x7 glyphs for the caption: digits, '#', ':', '.', ' '.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '#' => [0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        _ => [0; 7],
    }
}

/// Draws `text` in white on a black box, `FONT_SCALE` pixels per font dot.
fn draw_text(frame: &mut VideoFrame, left: usize, top: usize, text: &str) {
    let advance = 6 * FONT_SCALE;
    let box_width = (text.len() * advance + 2 * FONT_SCALE).min(frame.width - left);
    let box_height = 9 * FONT_SCALE;
    if top + box_height > frame.height {
        return;
    }
    for row in top..top + box_height {
        frame.y[row * frame.y_stride + left..][..box_width].fill(16);
    }
    for (index, c) in text.chars().enumerate() {
        let x0 = left + FONT_SCALE + index * advance;
        if x0 + 5 * FONT_SCALE > left + box_width {
            break;
        }
        for (dot_row, bits) in glyph(c).iter().enumerate() {
            for dot_col in 0..5 {
                if bits & (0x10 >> dot_col) == 0 {
                    continue;
                }
                for row in 0..FONT_SCALE {
                    let y = top + FONT_SCALE + dot_row * FONT_SCALE + row;
                    frame.y[y * frame.y_stride + x0 + dot_col * FONT_SCALE..][..FONT_SCALE].fill(235);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pattern() -> TestPattern {
        TestPattern::new(CaptureFormat { width: 640, height: 480, fps: 30 }).unwrap()
    }

    #[test]
    fn strip_round_trips_the_capture_time() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_123_456);
        let frame = pattern().render(7, at);
        assert_eq!(read_timestamp_strip(&frame.y, frame.y_stride), 1_795_000_123_456);
        frame.validate().unwrap();
    }

    #[test]
    fn strip_layout_is_as_documented() {
        // Bit 47 (the last) of an odd timestamp is 1: block at x = 12*47.
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1);
        let frame = pattern().render(0, at);
        assert_eq!(frame.y[8 * 640 + 12 * 47 + 6], STRIP_ONE);
        assert_eq!(frame.y[8 * 640 + 12 * 46 + 6], STRIP_ZERO);
        assert_eq!(frame.y[15 * 640], STRIP_ZERO);
        assert_eq!(frame.u[0], 128);
    }

    #[test]
    fn content_moves_from_frame_to_frame() {
        let p = pattern();
        let a = p.render(1, SystemTime::now());
        let b = p.render(2, SystemTime::now());
        let differing = a.y.iter().zip(&b.y).filter(|(x, y)| x != y).count();
        assert!(differing > a.y.len() / 4, "only {differing} luma samples changed");
    }

    #[test]
    fn refuses_sizes_that_cannot_hold_the_strip() {
        assert!(TestPattern::new(CaptureFormat { width: 320, height: 240, fps: 30 }).is_err());
        assert!(TestPattern::new(CaptureFormat { width: 641, height: 480, fps: 30 }).is_err());
        assert!(TestPattern::new(CaptureFormat { width: 640, height: 480, fps: 0 }).is_err());
    }

    #[test]
    fn paces_frames_at_the_requested_rate() {
        let mut p = TestPattern::new(CaptureFormat { width: 640, height: 480, fps: 50 }).unwrap();
        let start = Instant::now();
        for _ in 0..6 {
            p.next_frame().unwrap();
        }
        // Frame 0 is immediate, frame 5 is due at 100 ms.
        assert!(start.elapsed() >= Duration::from_millis(95), "{:?}", start.elapsed());
    }
}
