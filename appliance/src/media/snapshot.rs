//! Stills: `GET /snapshot.jpg`, a JPEG of a raw captured frame.
//!
//! A request asks the capture worker for the **next** frame the source
//! delivers (at most one frame interval away, 33 ms at 30 fps): the worker
//! copies it once and hands the same copy to every request waiting then.
//! The encoder is not involved: no keyframe, no extra encode, no change to
//! what viewers get. With nobody watching, capture is idle (frames go back
//! to the source untouched); a pending request makes the worker take that
//! one frame, and the encoder still does not run. Between requests the
//! worker keeps no copy, so stills cost nothing while nobody asks.
//!
//! The JPEG is made from the I420 planes directly (nearest-neighbour
//! scaling to `?width=`, video range expanded to JPEG's full range) by the
//! pure-Rust `jpeg-encoder`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType};
use tokio::sync::oneshot;

use super::frame::VideoFrame;

/// JPEG quality (1-100).
pub const QUALITY: u8 = 85;
/// Narrowest still `?width=` asks for.
pub const MIN_WIDTH: usize = 16;

/// Requests waiting for the next captured frame.
#[derive(Default)]
pub struct StillRequests {
    pending: AtomicBool,
    waiting: Mutex<Vec<oneshot::Sender<Arc<VideoFrame>>>>,
}

impl StillRequests {
    /// Asks for the next captured frame.
    pub fn request(&self) -> oneshot::Receiver<Arc<VideoFrame>> {
        let (sender, receiver) = oneshot::channel();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.retain(|w| !w.is_closed());
        waiting.push(sender);
        self.pending.store(true, Ordering::Release);
        receiver
    }

    /// Whether a request waits (the capture worker asks this per frame).
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Hands one copy of `frame` to every waiting request.
    pub fn deliver(&self, frame: &VideoFrame) {
        let waiting = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            self.pending.store(false, Ordering::Release);
            std::mem::take(&mut *waiting)
        };
        if waiting.iter().all(oneshot::Sender::is_closed) {
            return;
        }
        let copy = Arc::new(frame.clone());
        for sender in waiting {
            let _ = sender.send(copy.clone());
        }
    }
}

impl std::fmt::Debug for StillRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StillRequests").field("pending", &self.pending()).finish_non_exhaustive()
    }
}

/// Why a still could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StillError {
    #[error("width {asked} is out of range ({MIN_WIDTH} to {max})")]
    Width { asked: usize, max: usize },
    #[error("the frame is too large for a JPEG ({width}x{height})")]
    TooLarge { width: usize, height: usize },
    #[error("JPEG encoding failed: {0}")]
    Encode(#[from] jpeg_encoder::EncodingError),
}

/// The still's size for `?width=`: the frame's own without one; never
/// wider than the frame; the height keeps the aspect ratio (at least 1).
pub fn still_size(
    frame_width: usize,
    frame_height: usize,
    width: Option<usize>,
) -> Result<(usize, usize), StillError> {
    let Some(asked) = width else {
        return Ok((frame_width, frame_height));
    };
    if !(MIN_WIDTH..=frame_width).contains(&asked) {
        return Err(StillError::Width { asked, max: frame_width });
    }
    let height = (frame_height * asked + frame_width / 2) / frame_width;
    Ok((asked, height.max(1)))
}

/// A JPEG of `frame` at `width` (see [`still_size`]).
pub fn encode_jpeg(frame: &VideoFrame, width: Option<usize>) -> Result<Vec<u8>, StillError> {
    let (out_width, out_height) = still_size(frame.width, frame.height, width)?;
    let too_large = || StillError::TooLarge { width: out_width, height: out_height };
    let view = ScaledI420 {
        frame,
        width: u16::try_from(out_width).map_err(|_| too_large())?,
        height: u16::try_from(out_height).map_err(|_| too_large())?,
        columns: (0..out_width).map(|x| x * frame.width / out_width).collect(),
        luma: luma_table(),
        chroma: chroma_table(),
    };
    let mut jpeg = Vec::with_capacity(out_width * out_height / 4);
    let mut encoder = Encoder::new(&mut jpeg, QUALITY);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder.encode_image(view)?;
    Ok(jpeg)
}

/// Video-range luma (16-235) to JPEG's full range (0-255).
fn luma_table() -> [u8; 256] {
    std::array::from_fn(|v| ((v as f32 - 16.0) * 255.0 / 219.0).round().clamp(0.0, 255.0) as u8)
}

/// Video-range chroma (16-240 about 128) to JPEG's full range.
fn chroma_table() -> [u8; 256] {
    std::array::from_fn(|v| (((v as f32 - 128.0) * 255.0 / 224.0).round() + 128.0).clamp(0.0, 255.0) as u8)
}

/// An I420 frame seen at another size, row by row, as the JPEG encoder reads it.
struct ScaledI420<'a> {
    frame: &'a VideoFrame,
    width: u16,
    height: u16,
    /// The source column of each output column.
    columns: Vec<usize>,
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl ImageBuffer for ScaledI420<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let frame = self.frame;
        let row = usize::from(y) * frame.height / usize::from(self.height);
        let y_row = &frame.y[row * frame.y_stride..][..frame.width];
        let u_row = &frame.u[(row / 2) * frame.uv_stride..][..frame.width / 2];
        let v_row = &frame.v[(row / 2) * frame.uv_stride..][..frame.width / 2];
        for &x in &self.columns {
            buffers[0].push(self.luma[usize::from(y_row[x])]);
            buffers[1].push(self.chroma[usize::from(u_row[x / 2])]);
            buffers[2].push(self.chroma[usize::from(v_row[x / 2])]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_and_never_grow() {
        assert_eq!(still_size(1280, 720, None).unwrap(), (1280, 720));
        assert_eq!(still_size(1280, 720, Some(640)).unwrap(), (640, 360));
        assert_eq!(still_size(1280, 720, Some(333)).unwrap(), (333, 187));
        assert!(matches!(still_size(1280, 720, Some(1281)), Err(StillError::Width { .. })));
        assert!(matches!(still_size(1280, 720, Some(8)), Err(StillError::Width { .. })));
    }

    #[test]
    fn video_range_becomes_full_range() {
        let luma = luma_table();
        assert_eq!((luma[16], luma[235], luma[0], luma[255]), (0, 255, 0, 255));
        let chroma = chroma_table();
        assert_eq!((chroma[128], chroma[16], chroma[240]), (128, 0, 255));
    }

    #[tokio::test]
    async fn every_waiting_request_gets_the_next_frame_and_then_none_is_pending() {
        let stills = StillRequests::default();
        assert!(!stills.pending());
        let (a, b) = (stills.request(), stills.request());
        assert!(stills.pending());
        let frame = VideoFrame::grey(64, 32, std::time::SystemTime::now(), 7);
        stills.deliver(&frame);
        assert!(!stills.pending());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one copy for all");
        assert_eq!(a.sequence, 7);
    }

    #[test]
    fn a_jpeg_is_made_at_the_asked_width() {
        let frame = VideoFrame::grey(640, 480, std::time::SystemTime::now(), 0);
        let jpeg = encode_jpeg(&frame, Some(320)).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "SOI marker");
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9], "EOI marker");
    }
}
