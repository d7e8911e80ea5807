//! Capture buffers: libcamera's allocator (dma-heap on a Raspberry Pi), or
//! else buffers this process owns, one memfd per buffer with its planes
//! described as descriptor + offset + length (libcamera's `virtual` camera
//! fills those in software; V4L2 hardware needs the allocator's DMA
//! buffers). One request per buffer.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use ::libcamera::camera::ActiveCamera;
use ::libcamera::framebuffer::{AsFrameBuffer, FrameBufferPlane, OwnedFrameBuffer};
use ::libcamera::framebuffer_allocator::{FrameBuffer, FrameBufferAllocator};
use ::libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use ::libcamera::request::Request;
use ::libcamera::stream::Stream;

use super::error::LibcameraError;
use super::layout::Layout;

/// Where the capture buffers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BufferKind {
    Allocated,
    Memfd,
}

pub(super) type AllocatedBuffer = MemoryMappedFrameBuffer<FrameBuffer>;
pub(super) type MemfdBuffer = MemoryMappedFrameBuffer<OwnedFrameBuffer>;

/// One request per buffer, with libcamera's buffers or else memfd ones.
pub(super) fn make_requests(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::libcamera::layout::PlaneKind;

    fn layout(kind: PlaneKind, width: usize, height: usize, stride: usize) -> Layout {
        Layout { kind, width, height, stride, frame_size: 0 }
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
}
