//! A test-only source that misbehaves on purpose (debug builds only).
//!
//! `--camera fault:<kind>@<frames>` streams the test pattern and, once per
//! process, after `<frames>` frames:
//!
//! - `panic`: panics inside `next_frame` (the media worker unwinds);
//! - `error`: returns [`SourceError::Failed`];
//! - `stall`: never returns again (a hung camera call);
//! - `wedge-supervisor`: keeps streaming but wedges the pipeline's
//!   supervisor loop (it stops pinging the watchdog).
//!
//! After the one fault the source (reopened by the supervisor) behaves. The
//! module and the `fault:` camera choice do not exist in a release build.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::frame::VideoFrame;
use super::source::{CaptureFormat, FrameSource, SourceError};
use super::test_pattern::TestPattern;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Panic,
    Error,
    Stall,
    WedgeSupervisor,
}

/// A fault and when it fires; one per process (the flag is shared by every
/// source opened from the same plan).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub kind: FaultKind,
    pub after_frames: u64,
    fired: Arc<AtomicBool>,
}

impl PartialEq for FaultPlan {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.after_frames) == (other.kind, other.after_frames)
    }
}

impl Eq for FaultPlan {}

impl FaultPlan {
    /// Parses `<kind>@<frames>`.
    pub fn parse(text: &str) -> Result<FaultPlan, String> {
        let (kind, frames) =
            text.split_once('@').ok_or_else(|| format!("fault {text:?}: use <kind>@<frames>"))?;
        let kind = match kind {
            "panic" => FaultKind::Panic,
            "error" => FaultKind::Error,
            "stall" => FaultKind::Stall,
            "wedge-supervisor" => FaultKind::WedgeSupervisor,
            other => return Err(format!("unknown fault {other:?}: panic, error, stall or wedge-supervisor")),
        };
        let after_frames = frames.parse().map_err(|_| format!("fault {text:?}: <frames> is a number"))?;
        Ok(FaultPlan { kind, after_frames, fired: Arc::new(AtomicBool::new(false)) })
    }

    /// Whether the supervisor should wedge now (fires once).
    pub fn wedge_supervisor_now(&self, frames_captured: u64) -> bool {
        self.kind == FaultKind::WedgeSupervisor
            && frames_captured >= self.after_frames
            && !self.fired.swap(true, Ordering::SeqCst)
    }
}

/// The test pattern with one planned fault.
pub struct FaultySource {
    pattern: TestPattern,
    plan: FaultPlan,
    frames: u64,
}

impl FaultySource {
    pub fn open(plan: &FaultPlan, format: CaptureFormat) -> Result<FaultySource, SourceError> {
        Ok(FaultySource { pattern: TestPattern::new(format)?, plan: plan.clone(), frames: 0 })
    }
}

impl FrameSource for FaultySource {
    fn describe(&self) -> String {
        format!("{} with fault {:?}@{}", self.pattern.describe(), self.plan.kind, self.plan.after_frames)
    }

    fn format(&self) -> CaptureFormat {
        self.pattern.format()
    }

    fn next_frame(&mut self) -> Result<VideoFrame, SourceError> {
        self.frames += 1;
        let due = self.frames > self.plan.after_frames && self.plan.kind != FaultKind::WedgeSupervisor;
        if due && !self.plan.fired.swap(true, Ordering::SeqCst) {
            match self.plan.kind {
                FaultKind::Panic => panic!("injected fault: the source panics"),
                FaultKind::Error => {
                    return Err(SourceError::Failed("injected fault: the source fails".into()))
                }
                FaultKind::Stall => loop {
                    // A camera call that never returns; the supervisor abandons this thread.
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
                FaultKind::WedgeSupervisor => {}
            }
        }
        self.pattern.next_frame()
    }
}
