//! libcamera allows one camera manager per process (a second one aborts the
//! process): [`ManagerGuard`] is held by whoever has a manager, and a second
//! caller gets [`LibcameraError::Busy`] instead.

use std::sync::atomic::{AtomicBool, Ordering};

use super::error::LibcameraError;

/// Guards libcamera's one-manager-per-process rule (a second manager aborts
/// the process).
pub(super) struct ManagerGuard;

static MANAGER_IN_USE: AtomicBool = AtomicBool::new(false);

impl ManagerGuard {
    pub(super) fn acquire() -> Result<ManagerGuard, LibcameraError> {
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
