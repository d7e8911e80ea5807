//! Rate control policy: what bitrate the one encoder aims at, and how often
//! a viewer may ask for a keyframe.
//!
//! - **Bitrate**: 90 % of the *lower median* of the viewers' fresh bandwidth
//!   estimates (reported within [`ESTIMATE_FRESH`]). With one or two viewers
//!   that is the lowest estimate, so a weak viewer of a pair is still served;
//!   with three or more, one weak viewer no longer sets the terms for all:
//!   the viewers below the median get fewer layers (below), and frames are
//!   skipped for a viewer whose pacer backs up (`peer::backlog`). The 10 %
//!   margin leaves room for retransmissions and the next IDR. Each viewer's
//!   estimate is GCC's through `peer::estimate`'s rules.
//! - **No estimates** (nobody reported for [`ESTIMATE_FRESH`]): back to
//!   `--bitrate`, instead of keeping whatever the last viewer's link allowed.
//! - **Layers**: the encoder writes two temporal layers (every other frame
//!   is a non-reference frame of layer 1). A viewer whose own estimate is
//!   below [`BASE_ONLY_BELOW`] of the stream's rate gets only the base
//!   layer (half the frame rate, roughly two thirds of the bits) until its
//!   estimate is back above [`ALL_LAYERS_FROM`] of it; no keyframe is needed
//!   either way, for anyone. The stream's rate is the encoder's target or
//!   what it wrote over the last [`STREAM_RATE_WINDOW`] ([`StreamRate`]),
//!   whichever is higher: at a low target openh264 writes more than asked
//!   (1280x720 test pattern, target 300 kbit/s: 500 kbit/s written), and a
//!   viewer measured against the target got every frame of a stream near
//!   its link's capacity.
//! - **Keyframes**: each viewer may ask at most once per
//!   [`KEYFRAME_INTERVAL`]; a request within that time is kept and sent when
//!   the interval is over (a PLI burst costs one IDR, and one viewer cannot
//!   force more than one IDR a second on everybody).
//!
//! The encoder clamps the target to `[--min-bitrate, --max-bitrate]`.

use std::time::{Duration, Instant};

/// An estimate older than this no longer counts (viewers report every 500 ms).
pub const ESTIMATE_FRESH: Duration = Duration::from_secs(2);
/// A viewer's keyframe requests reach the encoder at most this often.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// A viewer whose estimate falls below this share of the encoder's target
/// gets the base layer only.
pub const BASE_ONLY_BELOW: f64 = 0.75;
/// ... and all layers again once its estimate is above this share.
pub const ALL_LAYERS_FROM: f64 = 0.9;

/// What the encoder wrote is measured over this (one IDR interval at the
/// default `--idr-interval`, so a keyframe counts once).
pub const STREAM_RATE_WINDOW: Duration = Duration::from_secs(2);

/// The highest temporal layer a viewer gets (0: base only; 1: all), from
/// its estimate and the stream's rate, with hysteresis around `current`.
pub fn viewer_max_layer(current: u8, estimate: u64, stream_rate: u64) -> u8 {
    let share = estimate as f64 / stream_rate.max(1) as f64;
    if share < BASE_ONLY_BELOW {
        0
    } else if share >= ALL_LAYERS_FROM {
        1
    } else {
        current
    }
}

/// What the encoder wrote over the last [`STREAM_RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct StreamRate {
    /// (when, bytes) of each frame in the window, oldest first.
    frames: std::collections::VecDeque<(Instant, usize)>,
    bytes: usize,
}

impl StreamRate {
    /// One encoded frame of `bytes`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        self.frames.push_back((now, bytes));
        self.bytes += bytes;
        while let Some(&(at, old)) = self.frames.front() {
            if now.saturating_duration_since(at) <= STREAM_RATE_WINDOW {
                break;
            }
            self.frames.pop_front();
            self.bytes -= old;
        }
    }

    /// Bits per second over the window (0 until it holds two frames; over
    /// their span until the window is full).
    pub fn bits_per_second(&self) -> u64 {
        match (self.frames.front(), self.frames.back()) {
            (Some(&(first, first_bytes)), Some(&(last, _))) if self.frames.len() > 1 => {
                // The first frame opens the span; its bytes are before it.
                let span = last.saturating_duration_since(first).as_secs_f64().max(1e-3);
                ((self.bytes - first_bytes) as f64 * 8.0 / span) as u64
            }
            _ => 0,
        }
    }
}

/// The encoder's target (bits per second) for these fresh estimates.
pub fn encoder_target(estimates: &[u64], configured: u32) -> u32 {
    if estimates.is_empty() {
        return configured;
    }
    let mut sorted = estimates.to_vec();
    sorted.sort_unstable();
    // The lower median: with two viewers, the lower one.
    let median = sorted[(sorted.len() - 1) / 2];
    u32::try_from(u128::from(median) * 9 / 10).unwrap_or(u32::MAX)
}

/// One viewer's keyframe requests, at most one per [`KEYFRAME_INTERVAL`].
#[derive(Debug, Default)]
pub struct KeyframeLimiter {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeLimiter {
    /// The viewer asks for a keyframe: true if it goes to the encoder now;
    /// otherwise it is kept for [`KeyframeLimiter::poll`].
    pub fn request(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// True if a kept request may go to the encoder now.
    pub fn poll(&mut self, now: Instant) -> bool {
        let allowed = self.last_sent.is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_INTERVAL);
        if self.pending && allowed {
            self.pending = false;
            self.last_sent = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_the_lower_median_and_returns_to_the_configured_rate() {
        assert_eq!(encoder_target(&[], 2_500_000), 2_500_000, "no estimates: --bitrate");
        assert_eq!(encoder_target(&[1_000_000], 2_500_000), 900_000);
        assert_eq!(encoder_target(&[3_000_000, 600_000], 2_500_000), 540_000, "a pair: the lower");
        assert_eq!(
            encoder_target(&[3_000_000, 600_000, 4_000_000], 2_500_000),
            2_700_000,
            "one weak of three"
        );
        assert_eq!(encoder_target(&[600_000, 500_000, 4_000_000, 3_000_000], 2_500_000), 540_000);
        assert_eq!(encoder_target(&[u64::MAX], 1), u32::MAX);
    }

    #[test]
    fn the_stream_rate_is_what_was_written_over_the_last_two_seconds() {
        let start = Instant::now();
        let mut rate = StreamRate::default();
        assert_eq!(rate.bits_per_second(), 0);
        // 30 fps of 2,500-byte frames: 600 kbit/s.
        for frame in 0..90u32 {
            rate.add(start + Duration::from_millis(u64::from(frame) * 1000 / 30), 2500);
        }
        let measured = rate.bits_per_second();
        assert!(measured.abs_diff(600_000) < 1000, "{measured}");
        // A keyframe of 30 kB among them: counted while it is in the window ...
        rate.add(start + Duration::from_millis(3000), 30_000);
        assert!(rate.bits_per_second() > 700_000, "{}", rate.bits_per_second());
        // ... and gone 2 s later.
        for frame in 1..=61u32 {
            rate.add(start + Duration::from_millis(3000 + u64::from(frame) * 1000 / 30), 2500);
        }
        let measured = rate.bits_per_second();
        assert!(measured.abs_diff(600_000) < 1000, "{measured}");
    }

    #[test]
    fn a_viewer_below_the_target_gets_the_base_layer_with_hysteresis() {
        assert_eq!(viewer_max_layer(1, 3_000_000, 2_500_000), 1);
        assert_eq!(viewer_max_layer(1, 2_000_000, 2_500_000), 1, "80 %: keeps what it has");
        assert_eq!(viewer_max_layer(1, 1_800_000, 2_500_000), 0, "72 %: base only");
        assert_eq!(viewer_max_layer(0, 2_000_000, 2_500_000), 0, "80 %: still base only");
        assert_eq!(viewer_max_layer(0, 2_250_000, 2_500_000), 1, "90 %: all layers again");
        assert_eq!(viewer_max_layer(1, 0, 0), 0, "no target yet: no division by zero");
    }

    #[test]
    fn one_keyframe_per_viewer_per_second_and_a_late_request_is_kept() {
        let start = Instant::now();
        let mut limiter = KeyframeLimiter::default();
        assert!(limiter.request(start), "the first goes at once");
        // A burst of PLIs within the second: none goes, one is kept.
        for ms in [10, 100, 500, 900] {
            assert!(!limiter.request(start + Duration::from_millis(ms)));
        }
        assert!(!limiter.poll(start + Duration::from_millis(999)));
        assert!(limiter.poll(start + Duration::from_millis(1000)), "the kept request goes after 1 s");
        assert!(!limiter.poll(start + Duration::from_millis(3000)), "only one");
        assert!(limiter.request(start + Duration::from_millis(3000)));
        // Four requests a second for ten seconds reach the encoder ten times.
        let mut limiter = KeyframeLimiter::default();
        let sent = (0..40).filter(|n| limiter.request(start + Duration::from_millis(250 * n))).count();
        assert_eq!(sent, 10);
    }
}
