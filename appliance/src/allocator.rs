//! Keeping glibc's allocator from holding on to memory the process freed.
//!
//! The media worker allocates big blocks (720p frames are 1.4 MB, the
//! encoder's picture buffers 0.2 to 2.8 MB). glibc serves blocks from 128 kB
//! up with their own mapping, returned to the kernel at `free`, but only
//! until the first such block is freed: then it raises its mmap threshold
//! (up to 32 MB), and later big blocks come from the calling thread's
//! arena, where a freed block stays resident until a trim finds a whole
//! free page range around it. When a stalled worker is abandoned, it holds
//! its encoder while the new worker allocates another: the arena grows by
//! both, and the small allocations made meanwhile (a viewer's connection)
//! pin parts of that growth after the old encoder is gone. The soak
//! (docs/performance.md) saw RSS land 4 to 12 MB higher after each restart.
//!
//! Three calls fix that, all no-ops outside glibc:
//! - [`tune`] at start: a fixed mmap threshold of [`MMAP_THRESHOLD`] (which
//!   also turns glibc's raising of it off), so every frame-sized block is its
//!   own mapping, gone from RSS the moment it is freed; and at most
//!   [`ARENAS`] arenas, so restarted workers reuse the arenas that exist;
//! - [`release_free_memory`] when a worker has ended (its source and encoder
//!   dropped), and once whenever nobody has watched for a second (viewers'
//!   connections are freed piecemeal as they close): `malloc_trim(0)` hands
//!   the free pages of every arena back to the kernel.
//!
//! The price of the fixed threshold is one `mmap`/`munmap` pair, and the
//! page faults of a fresh mapping, per big block: every watched frame's
//! planes (both sources allocate them per frame) and an encoder's buffers
//! when it starts. A 720p test-pattern frame went from 0.08 to 0.71 ms
//! (docs/performance.md, "Soak"); a plane-buffer pool would take it back.

/// The most arenas glibc may create (its default is 8 per core).
pub const ARENAS: i32 = 2;

/// Blocks of this size and up get their own mapping (glibc's initial
/// default, here kept fixed).
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Sets glibc's allocator up for a process that runs for months: the fixed
/// [`MMAP_THRESHOLD`] and at most [`ARENAS`] arenas. Call once, early in
/// `main`, before any thread starts. Returns whether the allocator took both
/// settings (always false without glibc).
pub fn tune() -> bool {
    imp::tune()
}

/// Returns free heap pages to the kernel (after a media worker ended).
/// Returns whether any memory was released.
pub fn release_free_memory() -> bool {
    imp::release_free_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub fn tune() -> bool {
        // SAFETY: mallopt only changes allocator parameters; M_ARENA_MAX
        // takes effect for arenas created after the call, M_MMAP_THRESHOLD
        // for blocks allocated after it.
        unsafe {
            let threshold = libc::mallopt(libc::M_MMAP_THRESHOLD, super::MMAP_THRESHOLD) == 1;
            let arenas = libc::mallopt(libc::M_ARENA_MAX, super::ARENAS) == 1;
            threshold && arenas
        }
    }

    pub fn release_free_memory() -> bool {
        // SAFETY: malloc_trim only releases memory that is free.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn tune() -> bool {
        false
    }

    pub fn release_free_memory() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    /// 1280x720 RGB: the size of a test-pattern frame.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const FRAME: usize = 1_382_400;

    /// Bytes glibc holds in blocks with their own mapping.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mapped_bytes() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn frames_stay_mapped_blocks_after_one_was_freed() {
        assert!(super::tune(), "mallopt refused the threshold or the arena cap");
        // Without the fixed threshold, freeing the first frame would raise
        // glibc's threshold above a frame, and the next frame would come from
        // the arena (and stay resident after free).
        std::thread::spawn(|| {
            drop(std::hint::black_box(vec![1u8; FRAME]));
            let before = mapped_bytes();
            let frame = std::hint::black_box(vec![2u8; FRAME]);
            let during = mapped_bytes();
            drop(frame);
            assert!(
                during >= before + FRAME,
                "a frame allocated after one was freed is not its own mapping ({before} -> {during} bytes mapped)"
            );
        })
        .join()
        .unwrap();
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_returns_freed_arena_blocks() {
        super::tune();
        // Blocks under the threshold come from the arena; freed while a later
        // small block keeps the heap's top in use, free() alone cannot give
        // them back, only a trim can.
        let (guard, released) = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
            let guard = std::hint::black_box(vec![7u8; 64]);
            drop(blocks);
            (guard, super::release_free_memory())
        })
        .join()
        .unwrap();
        assert_eq!(guard[0], 7);
        assert!(released, "malloc_trim found no free pages to release");
    }
}
