//! A test-only source that misbehaves on purpose (debug builds only).
//!
//! `--camera fault:<kind>@<frames>[/<every>]` streams the test pattern and,
//! once the process has captured `<frames>` frames (and then every
//! `<every>` frames more, if given):
//!
//! - `panic`: panics inside `next_frame` (the media worker unwinds);
//! - `error`: returns [`SourceError::Failed`];
//! - `stall`: blocks for [`STALL_FOR`] (a hung camera call; the
//!   supervisor gives up on it after 2 s), then fails;
//! - `wedge-supervisor`: keeps streaming but wedges the pipeline's
//!   supervisor loop for good (it stops pinging the watchdog);
//! - `drop`: loses that frame (it is captured, on the pattern's schedule,
//!   and thrown away), as a camera or a busy capture thread does: the next
//!   frame comes one frame period late. `drop@2/3` loses every third frame.
//! - `kill-peer`: keeps streaming but ends the camera peer's task as a crash
//!   would (`app` watches for it; its supervisor must bring the peer back).
//!
//! Between faults the source (reopened by the supervisor) behaves. The
//! module and the `fault:` camera choice do not exist in a release build.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    Drop,
    KillPeer,
}

/// How long a `stall` blocks (then it fails, so a soak leaks no threads).
pub const STALL_FOR: Duration = Duration::from_secs(10);

/// A fault and when it fires. The frame count and the next due count are
/// shared by every source opened from the same plan (the whole process).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub kind: FaultKind,
    pub after_frames: u64,
    /// Fire again every this many frames (`None`: once).
    pub every: Option<u64>,
    frames: Arc<AtomicU64>,
    next_due: Arc<AtomicU64>,
}

impl PartialEq for FaultPlan {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.after_frames, self.every) == (other.kind, other.after_frames, other.every)
    }
}

impl Eq for FaultPlan {}

impl FaultPlan {
    /// Parses `<kind>@<frames>[/<every>]`.
    pub fn parse(text: &str) -> Result<FaultPlan, String> {
        let usage = || format!("fault {text:?}: use <kind>@<frames>[/<every>]");
        let (kind, when) = text.split_once('@').ok_or_else(usage)?;
        let (frames, every) = match when.split_once('/') {
            Some((frames, every)) => (frames, Some(every.parse::<u64>().map_err(|_| usage())?.max(1))),
            None => (when, None),
        };
        let kind = match kind {
            "panic" => FaultKind::Panic,
            "error" => FaultKind::Error,
            "stall" => FaultKind::Stall,
            "wedge-supervisor" => FaultKind::WedgeSupervisor,
            "drop" => FaultKind::Drop,
            "kill-peer" => FaultKind::KillPeer,
            other => {
                return Err(format!(
                    "unknown fault {other:?}: panic, error, stall, wedge-supervisor, drop or kill-peer"
                ))
            }
        };
        let after_frames = frames.parse().map_err(|_| usage())?;
        Ok(FaultPlan {
            kind,
            after_frames,
            every,
            frames: Arc::new(AtomicU64::new(0)),
            next_due: Arc::new(AtomicU64::new(after_frames)),
        })
    }

    /// Whether the fault is due at `frames` (then schedules the next one).
    fn due(&self, frames: u64) -> bool {
        let due = self.next_due.load(Ordering::SeqCst);
        let next = self.every.map_or(u64::MAX, |every| due.saturating_add(every));
        frames >= due && self.next_due.compare_exchange(due, next, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Whether the supervisor should wedge now.
    pub fn wedge_supervisor_now(&self, frames_captured: u64) -> bool {
        self.kind == FaultKind::WedgeSupervisor && self.due(frames_captured)
    }

    /// Whether the camera peer should be killed now.
    pub fn kill_peer_now(&self, frames_captured: u64) -> bool {
        self.kind == FaultKind::KillPeer && self.due(frames_captured)
    }

    /// Frames the faulty sources have captured so far (the whole process).
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::SeqCst)
    }
}

/// The test pattern with one planned fault.
pub struct FaultySource {
    pattern: TestPattern,
    plan: FaultPlan,
}

impl FaultySource {
    pub fn open(plan: &FaultPlan, format: CaptureFormat) -> Result<FaultySource, SourceError> {
        Ok(FaultySource { pattern: TestPattern::new(format)?, plan: plan.clone() })
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
        self.fault_if_due()?;
        self.pattern.next_frame()
    }

    fn next_frame_if(&mut self, wanted: &mut dyn FnMut() -> bool) -> Result<Option<VideoFrame>, SourceError> {
        self.fault_if_due()?;
        self.pattern.next_frame_if(wanted)
    }
}

impl FaultySource {
    /// Counts a frame, watched or not, and fires the fault when it is due.
    fn fault_if_due(&mut self) -> Result<(), SourceError> {
        let frames = self.plan.frames.fetch_add(1, Ordering::SeqCst);
        let in_source = matches!(
            self.plan.kind,
            FaultKind::Panic | FaultKind::Error | FaultKind::Stall | FaultKind::Drop
        );
        if in_source && self.plan.due(frames) {
            match self.plan.kind {
                FaultKind::Panic => panic!("injected fault: the source panics"),
                FaultKind::Error => {
                    return Err(SourceError::Failed("injected fault: the source fails".into()))
                }
                FaultKind::Stall => {
                    // A camera call that hangs; the supervisor abandons this worker long before.
                    std::thread::sleep(STALL_FOR);
                    return Err(SourceError::Failed("injected fault: the stalled call gave up".into()));
                }
                FaultKind::Drop => {
                    // Captured on schedule and lost; the count includes it,
                    // so `drop@N/3` loses every third frame of the pattern.
                    self.pattern.next_frame()?;
                    self.plan.frames.fetch_add(1, Ordering::SeqCst);
                }
                FaultKind::WedgeSupervisor | FaultKind::KillPeer => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fires_once_or_repeatedly() {
        let once = FaultPlan::parse("error@3").unwrap();
        assert_eq!((once.kind, once.after_frames, once.every), (FaultKind::Error, 3, None));
        let fired: Vec<u64> = (0..20).filter(|n| once.due(*n)).collect();
        assert_eq!(fired, [3]);
        let repeating = FaultPlan::parse("stall@5/4").unwrap();
        let fired: Vec<u64> = (0..20).filter(|n| repeating.due(*n)).collect();
        assert_eq!(fired, [5, 9, 13, 17]);
        assert_eq!(FaultPlan::parse("drop@2/3").unwrap().kind, FaultKind::Drop);
        assert_eq!(FaultPlan::parse("kill-peer@60").unwrap().kind, FaultKind::KillPeer);
        for bad in ["panic", "melt@3", "panic@x", "panic@3/y"] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn drop_loses_every_third_frame_and_keeps_the_schedule() {
        let plan = FaultPlan::parse("drop@2/3").unwrap();
        let mut source =
            FaultySource::open(&plan, CaptureFormat { width: 640, height: 480, fps: 100 }).unwrap();
        let sequences: Vec<u64> = (0..6).map(|_| source.next_frame().unwrap().sequence).collect();
        assert_eq!(sequences, [0, 1, 3, 4, 6, 7], "frames 2, 5, 8 are lost");
    }
}
