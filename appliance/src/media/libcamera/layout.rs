//! Where a camera's picture lies in its buffer, and copying it out as I420.
//!
//! Pure code (no libcamera): compiled and unit-tested in every build, used
//! by the capture thread of the `libcamera` feature. A layout is the pixel
//! format (planar YUV420 or NV12), the size and the luma stride; rows keep
//! their stride when copied (the encoder honours strides), NV12's
//! interleaved chroma is split into U and V.

use std::time::{Instant, SystemTime};

use crate::media::frame::VideoFrame;

/// A buffer that does not hold the picture its layout describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("captured buffer has {planes} planes, {format} needs {needed}")]
    PlaneCount { format: &'static str, planes: usize, needed: usize },
    #[error("{plane} plane holds {len} bytes, needs {needed}")]
    ShortPlane { plane: &'static str, len: usize, needed: usize },
}

/// How the camera lays out a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneKind {
    /// Y, then U, then V; chroma rows are half the luma stride.
    I420,
    /// Y, then interleaved U/V rows at the luma stride.
    Nv12,
}

impl PlaneKind {
    pub fn name(self) -> &'static str {
        match self {
            PlaneKind::I420 => "YUV420",
            PlaneKind::Nv12 => "NV12→I420",
        }
    }
}

/// Where a camera's picture lies in its buffer, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub kind: PlaneKind,
    pub width: usize,
    pub height: usize,
    /// Luma row stride in bytes, as configured.
    pub stride: usize,
    /// libcamera's frame size for the configuration (0 if it gave none).
    pub frame_size: usize,
}

impl Layout {
    pub fn chroma_stride(&self) -> usize {
        match self.kind {
            PlaneKind::I420 => self.stride / 2,
            PlaneKind::Nv12 => self.stride,
        }
    }

    /// Bytes of each plane, full rows.
    pub fn plane_sizes(&self) -> Vec<usize> {
        let luma = self.stride * self.height;
        let chroma = self.chroma_stride() * (self.height / 2);
        match self.kind {
            PlaneKind::I420 => vec![luma, chroma, chroma],
            PlaneKind::Nv12 => vec![luma, chroma],
        }
    }

    /// Splits a single-plane buffer (some pipelines describe the whole
    /// picture as one plane) into the format's planes.
    pub fn split<'a>(&self, planes: &[&'a [u8]]) -> Result<Vec<&'a [u8]>, LayoutError> {
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
            planes => Err(LayoutError::PlaneCount {
                format: self.kind.name(),
                planes: planes.len(),
                needed: sizes.len(),
            }),
        }
    }

    /// Copies a picture into an I420 frame (sequence and time left at zero
    /// and now, for the caller to set).
    pub fn copy_frame(&self, planes: &[&[u8]]) -> Result<VideoFrame, LayoutError> {
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
) -> Result<Vec<u8>, LayoutError> {
    let needed = needed(stride, row_width, rows);
    if data.len() < needed {
        return Err(LayoutError::ShortPlane { plane, len: data.len(), needed });
    }
    Ok(data[..data.len().min(stride * rows)].to_vec())
}

/// Splits NV12's interleaved chroma into U and V planes without padding.
fn deinterleave(
    data: &[u8],
    stride: usize,
    chroma_width: usize,
    rows: usize,
) -> Result<(Vec<u8>, Vec<u8>), LayoutError> {
    let needed = needed(stride, chroma_width * 2, rows);
    if data.len() < needed {
        return Err(LayoutError::ShortPlane { plane: "UV", len: data.len(), needed });
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
        assert!(matches!(l.copy_frame(&[&y, &uv]), Err(LayoutError::ShortPlane { plane: "UV", .. })));
        assert!(matches!(l.copy_frame(&[&y[..10], &uv]), Err(LayoutError::ShortPlane { plane: "Y", .. })));
        let i420 = layout(PlaneKind::I420, 4, 4, 4);
        assert!(matches!(i420.copy_frame(&[&y, &uv]), Err(LayoutError::PlaneCount { .. })));
        assert!(matches!(i420.copy_frame(&[&y[..3]]), Err(LayoutError::ShortPlane { .. })));
    }
}
