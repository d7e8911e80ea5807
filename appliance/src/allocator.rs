//! Keeping glibc's allocator from holding on to memory the process freed.
//!
//! The media worker allocates big blocks (720p frames are 1.4 MB, the
//! encoder's buffers several MB). After the first big block is freed, glibc
//! raises its mmap threshold, so later ones come from the calling thread's
//! arena and stay mapped after `free`. When a stalled worker is abandoned,
//! it holds its arena while the new worker starts on another one, so each
//! restart could leave a new arena full of freed frames behind: the soak
//! (docs/performance.md) saw RSS step up by 4 to 8 MB at every restart.
//!
//! Two calls fix that, both no-ops outside glibc:
//! - [`limit_arenas`] at start: at most [`ARENAS`] arenas, so restarted
//!   workers reuse the arenas that exist instead of making new ones;
//! - [`release_free_memory`] when a worker has ended (its source and encoder
//!   dropped), and once whenever nobody has watched for a second (viewers'
//!   connections are freed piecemeal as they close): `malloc_trim(0)` hands
//!   the free pages of every arena back to the kernel.

/// The most arenas glibc may create (its default is 8 per core).
pub const ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`ARENAS`]. Call once, early in `main`.
/// Returns whether the allocator took the setting (always false without glibc).
pub fn limit_arenas() -> bool {
    imp::limit_arenas()
}

/// Returns free heap pages to the kernel (after a media worker ended).
/// Returns whether any memory was released.
pub fn release_free_memory() -> bool {
    imp::release_free_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub fn limit_arenas() -> bool {
        // SAFETY: mallopt only changes an allocator parameter; M_ARENA_MAX
        // takes effect for arenas created after the call.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, super::ARENAS) == 1 }
    }

    pub fn release_free_memory() -> bool {
        // SAFETY: malloc_trim only releases memory that is free.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn limit_arenas() -> bool {
        false
    }

    pub fn release_free_memory() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_arena_cap_and_trims_freed_frames() {
        assert!(super::limit_arenas(), "mallopt(M_ARENA_MAX) refused");
        // What a worker does: frame-sized blocks (the first one freed raises
        // the mmap threshold, so the rest come from the arena), freed while a
        // later small block keeps the heap's top in use: free() alone cannot
        // give them back, only a trim can.
        let (guard, released) = std::thread::spawn(|| {
            drop(vec![1u8; 1_382_400]);
            let frames: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 1_382_400]).collect();
            let guard = vec![7u8; 64];
            drop(frames);
            (guard, super::release_free_memory())
        })
        .join()
        .unwrap();
        assert_eq!(guard[0], 7);
        assert!(released, "malloc_trim found no free pages to release");
    }
}
