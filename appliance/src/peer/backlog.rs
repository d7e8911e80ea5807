//! Which frames a viewer is sent while its connection's pacer is backed up.
//!
//! The pacer ([`super::pacer_gauge`]) drains at a multiple of the viewer's
//! bandwidth estimate; on a link slower than the stream (one weak viewer
//! beside a clean one: the encoder cannot serve both) frames queue there,
//! and every frame after them waits behind them. Rather than queue seconds
//! of video, the viewer's send task skips frames by how long the queue is:
//!
//! - upper-layer frames (non-reference: nothing depends on them) as soon as
//!   more than [`UPPER_LAYER_MAX_BACKLOG`] is queued;
//! - a base-layer frame when more than [`BASE_MAX_BACKLOG`] is queued; the
//!   frames after it would not decode without it, so the viewer then waits
//!   for the next keyframe, **without asking for one**: a request would
//!   give every other viewer an IDR too, and the periodic one (every
//!   `idr_interval`, 2 s by default) is never far off (asking once per
//!   10 s was tried: no shorter gaps for the weak viewer, and the clean
//!   one's longest gap rose from 80-100 ms to 400-770 ms in two runs);
//! - a keyframe when more than [`KEYFRAME_MAX_BACKLOG`] is queued (it
//!   would arrive late anyway, and the next one is on its way).
//!
//! While it waits for a keyframe it chose to wait for, the viewer's own
//! keyframe requests (PLI/FIR) are not passed on, for the same reason.
//!
//! A keyframe's own time in the queue does not count against the frames
//! behind it (see [`BacklogGate::decide`]).

use std::time::{Duration, Instant};

/// Upper-layer frames are skipped above this backlog. Above what an IDR
/// leaves queued on a link that carries the stream (the pacer sends at
/// 2.5 x the estimate, so a keyframe ten frames' worth drains in about
/// 130 ms): a viewer that keeps up never skips.
pub const UPPER_LAYER_MAX_BACKLOG: Duration = Duration::from_millis(300);
/// Base-layer frames are skipped above this backlog (then up to the next keyframe).
pub const BASE_MAX_BACKLOG: Duration = Duration::from_millis(600);
/// Keyframes are skipped above this backlog. With the keyframe itself
/// (about 0.4 s at 720p on the 300 kbit/s floor, paced at 750 kbit/s) the
/// pacer then sends for about a second at most: what a link's queue
/// (tc's tbf with 300 ms of latency at 600 kbit/s, say) absorbs.
pub const KEYFRAME_MAX_BACKLOG: Duration = Duration::from_millis(600);

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    Skip,
}

/// One viewer's frame skipping.
#[derive(Debug, Default)]
pub struct BacklogGate {
    waiting_for_keyframe: bool,
    /// The last keyframe sent: when, and how long it takes to leave at the
    /// pacing rate then. Its own time in the queue does not count against
    /// the frames that depend on it (see [`BacklogGate::decide`]).
    last_keyframe: Option<(Instant, Duration)>,

    /// Frames skipped so far (for the link log and /metrics).
    pub skipped: u64,
}

impl BacklogGate {
    /// Whether the frame goes, given the pacer's `backlog` now.
    ///
    /// On a slow link a keyframe alone can take longer to leave than the
    /// base limit (30 kB at 720p paced at 250 kbit/s: about a second): if it
    /// counted, the base frame after it would be skipped, the viewer would
    /// wait for the next keyframe, and so on, one frame every two seconds
    /// (measured). So the keyframe's remaining drain time is added to the
    /// limits of the frames behind it.
    pub fn decide(&mut self, keyframe: bool, layer: u8, backlog: Duration, now: Instant) -> Verdict {
        let own_keyframe = match self.last_keyframe {
            Some((sent, drain)) => drain.saturating_sub(now.saturating_duration_since(sent)),
            None => Duration::ZERO,
        };
        let behind_keyframe = backlog.saturating_sub(own_keyframe);
        let send = if keyframe {
            backlog <= KEYFRAME_MAX_BACKLOG
        } else if self.waiting_for_keyframe {
            false
        } else if layer > 0 {
            behind_keyframe <= UPPER_LAYER_MAX_BACKLOG
        } else if behind_keyframe > BASE_MAX_BACKLOG {
            self.waiting_for_keyframe = true;
            false
        } else {
            true
        };
        if send {
            if keyframe {
                self.waiting_for_keyframe = false;
            }
            Verdict::Send
        } else {
            self.skipped += 1;
            Verdict::Skip
        }
    }

    /// A keyframe was queued at `now` that takes `drain` to leave.
    pub fn keyframe_sent(&mut self, now: Instant, drain: Duration) {
        self.last_keyframe = Some((now, drain));
    }

    /// Whether the viewer waits for a keyframe because a base frame was skipped.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nothing_is_skipped_while_the_queue_is_short() {
        let mut gate = BacklogGate::default();
        let now = Instant::now();
        for n in 0..60 {
            assert_eq!(gate.decide(n % 60 == 0, (n % 2) as u8, 100 * MS, now), Verdict::Send);
        }
        assert_eq!(gate.skipped, 0);
    }

    #[test]
    fn upper_layer_frames_go_first_and_cost_no_keyframe() {
        let mut gate = BacklogGate::default();
        let now = Instant::now();
        assert_eq!(gate.decide(false, 1, 400 * MS, now), Verdict::Skip);
        assert_eq!(gate.decide(false, 0, 400 * MS, now), Verdict::Send);
        assert!(!gate.waiting_for_keyframe());
        assert_eq!(gate.decide(false, 1, 100 * MS, now), Verdict::Send);
    }

    #[test]
    fn a_skipped_base_frame_waits_for_the_next_keyframe_even_once_the_queue_is_empty() {
        let mut gate = BacklogGate::default();
        let now = Instant::now();
        assert_eq!(gate.decide(false, 0, 700 * MS, now), Verdict::Skip);
        assert!(gate.waiting_for_keyframe());
        assert_eq!(gate.decide(false, 0, Duration::ZERO, now), Verdict::Skip, "it would not decode");
        assert_eq!(gate.decide(false, 1, Duration::ZERO, now), Verdict::Skip);
        // A keyframe behind a long queue is skipped too; the next one goes.
        assert_eq!(gate.decide(true, 0, 700 * MS, now), Verdict::Skip);
        assert_eq!(gate.decide(true, 0, 200 * MS, now), Verdict::Send);
        assert!(!gate.waiting_for_keyframe());
        assert_eq!(gate.decide(false, 0, 200 * MS, now), Verdict::Send);
        assert_eq!(gate.skipped, 4);
    }

    #[test]
    fn a_keyframe_own_drain_time_does_not_count_against_the_frames_behind_it() {
        let mut gate = BacklogGate::default();
        let now = Instant::now();
        // A keyframe that takes a second to leave on a slow link.
        assert_eq!(gate.decide(true, 0, Duration::ZERO, now), Verdict::Send);
        gate.keyframe_sent(now, 1000 * MS);
        // 33 ms later nearly all of it is still queued: the base frame goes,
        // the upper-layer frame too (only 70 ms are queued behind the keyframe).
        let later = now + 33 * MS;
        assert_eq!(gate.decide(false, 1, 1037 * MS, later), Verdict::Send);
        assert_eq!(gate.decide(false, 0, 1037 * MS, later), Verdict::Send);
        assert!(!gate.waiting_for_keyframe());
        // What queues behind it beyond the limits is still skipped.
        let later = now + 100 * MS;
        assert_eq!(gate.decide(false, 1, 1300 * MS, later), Verdict::Skip, "400 ms behind the keyframe");
        assert_eq!(gate.decide(false, 0, 1600 * MS, later), Verdict::Skip, "700 ms behind the keyframe");
        assert!(gate.waiting_for_keyframe());
        // Once it has drained, the limits are the plain ones again.
        let gone = now + 1500 * MS;
        assert_eq!(gate.decide(true, 0, 500 * MS, gone), Verdict::Send);
        assert_eq!(gate.decide(false, 1, 400 * MS, gone), Verdict::Skip);
    }
}
