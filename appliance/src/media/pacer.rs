//! The one frame pacer: holds a source to its frame rate.
//!
//! Frame `n` is due at `start + n · period` (an absolute schedule, so the
//! sleeps never drift). A source that falls more than [`RESYNC_AFTER`]
//! periods behind (the machine stalled, the camera hiccupped) starts the
//! schedule afresh from now rather than bursting frames to catch up. Used by
//! the test pattern (which makes frames as fast as asked) and by the
//! libcamera source (cameras without rate control, such as libcamera's
//! virtual camera, complete requests as fast as they are queued).

use std::time::{Duration, Instant};

/// Periods behind schedule after which the schedule starts afresh.
pub const RESYNC_AFTER: u32 = 4;

/// Paces frames at a fixed rate.
#[derive(Debug, Clone)]
pub struct FramePacer {
    period: Duration,
    /// When frame 0 of the current schedule was due.
    start: Option<Instant>,
    /// Frames paced since `start`.
    frames: u32,
}

impl FramePacer {
    /// A pacer for `fps` frames a second (at least 1).
    pub fn new(fps: u32) -> FramePacer {
        FramePacer { period: Duration::from_secs(1) / fps.max(1), start: None, frames: 0 }
    }

    /// The time between frames.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Blocks until the next frame is due. The first call returns at once.
    pub fn wait(&mut self) {
        let delay = self.delay_at(Instant::now());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }

    /// How long to wait at `now` before the next frame, and counts that
    /// frame (the clock-free core of [`FramePacer::wait`]).
    pub fn delay_at(&mut self, now: Instant) -> Duration {
        let start = *self.start.get_or_insert(now);
        let due = start + self.period * self.frames;
        let delay = if due > now {
            due - now
        } else {
            if now - due > self.period * RESYNC_AFTER {
                // Far behind: this frame is due now, the next one a period on.
                self.start = Some(now);
                self.frames = 0;
            }
            Duration::ZERO
        };
        self.frames = self.frames.saturating_add(1);
        if self.frames == u32::MAX {
            // After about 4.5 years at 30 fps: keep the product in range.
            self.start = Some(due);
            self.frames = 1;
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn frames_follow_an_absolute_schedule_without_drift() {
        let mut pacer = FramePacer::new(50); // 20 ms
        let t0 = Instant::now();
        assert_eq!(pacer.delay_at(t0), Duration::ZERO, "the first frame is immediate");
        // Each frame is asked for 3 ms late (the work took that long); the
        // waits shorten so frame n still lands at n x 20 ms.
        assert_eq!(pacer.delay_at(t0 + 3 * MS), 17 * MS);
        assert_eq!(pacer.delay_at(t0 + 23 * MS), 17 * MS);
        assert_eq!(pacer.delay_at(t0 + 41 * MS), 19 * MS);
    }

    #[test]
    fn a_little_late_catches_up_without_waiting() {
        let mut pacer = FramePacer::new(50);
        let t0 = Instant::now();
        pacer.delay_at(t0);
        // Frame 1 asked for 50 ms late (2.5 periods, under the resync
        // limit): no wait, and frames 2 and 3 (due at 40 and 60 ms) are
        // past too; frame 4 is back on the old schedule, at 80 ms.
        assert_eq!(pacer.delay_at(t0 + 70 * MS), Duration::ZERO);
        assert_eq!(pacer.delay_at(t0 + 71 * MS), Duration::ZERO);
        assert_eq!(pacer.delay_at(t0 + 72 * MS), Duration::ZERO);
        assert_eq!(pacer.delay_at(t0 + 73 * MS), 7 * MS);
    }

    #[test]
    fn far_behind_starts_afresh_instead_of_bursting() {
        let mut pacer = FramePacer::new(50);
        let t0 = Instant::now();
        pacer.delay_at(t0);
        // A one-second stall: frame 1 goes at once, frame 2 a period later.
        let late = t0 + 1000 * MS;
        assert_eq!(pacer.delay_at(late), Duration::ZERO);
        assert_eq!(pacer.delay_at(late + MS), 19 * MS);
    }

    #[test]
    fn paces_real_time_at_the_requested_rate() {
        let mut pacer = FramePacer::new(50);
        let start = Instant::now();
        for _ in 0..6 {
            pacer.wait();
        }
        // Frame 0 is immediate, frame 5 is due at 100 ms.
        assert!(start.elapsed() >= 95 * MS, "{:?}", start.elapsed());
    }
}
