//! The rules between GCC's bandwidth estimate and the one a viewer's
//! encoder share and pacer are given.
//!
//! webrtc-rs's GCC (`rtc::interceptor::Gcc`) is used as it is; its target
//! passes through [`EstimateRules`] first, which adds what libwebrtc does
//! around the same algorithm and what this camera's links showed was
//! missing (docs/performance.md "Shaped link"): on a 600 kbit/s link beside
//! a clean viewer, GCC's delay-based half stayed at its ceiling while the
//! link's queue filled, so its loss-based half alone moved the estimate:
//! up 28 % a second through the link's capacity, then, at 40-80 % loss,
//! down to the floor within a second, and up again. Each fall left the
//! viewer without a picture for 1.2-2.9 s.
//!
//! - **Held to what is delivered**: an increase goes at most to 1.5 x the
//!   rate the receiver acknowledges + 10 kbit/s (libwebrtc's AIMD rule). A
//!   camera stream seldom fills its link, and GCC otherwise climbs on
//!   regardless (to 6 Mbit/s for a 2.5 Mbit/s stream).
//! - **Slow increase**: at most 8 % a second + 1 kbit/s a second
//!   (libwebrtc's loss-based increase; webrtc-rs's rises 5 % every 200 ms).
//! - **Loss, on this estimate**: above 10 % loss the estimate falls to
//!   (1 - loss / 2) of itself, at most every 300 ms; above 2 % it does not
//!   rise (libwebrtc's loss-based rule). GCC's own loss half applies the
//!   same rule to its own target, which had climbed unbounded (to 3 Mbit/s
//!   on the 600 kbit/s link) and took seconds of 30-45 % loss to come down
//!   to the estimate in use.
//! - **The link's capacity remembered**: a fall for loss, or a sharp fall of
//!   GCC's (to under 70 % in one step), is taken as the link's limit met;
//!   what the receiver was getting then is remembered, and from 85 % of it
//!   on the estimate rises only [`NEAR_CAPACITY_INCREASE`] a second,
//!   approaching it rather than running through it again. What is delivered
//!   above it raises it (the link got better).
//! - **The delay's verdict** ([`crate::peer::delay_trend`], libwebrtc's
//!   trendline detector): when the link's queue grows, the estimate falls
//!   to [`OVERUSE_BACKOFF`] of what the receiver acknowledges (libwebrtc's
//!   AIMD decrease) and the link's capacity is remembered, as for loss;
//!   while the queue drains it does not rise. This finds a link's capacity
//!   before it overflows, where loss finds it only after.
//! - GCC's falls are followed at once.

use std::time::{Duration, Instant};

use crate::peer::delay_trend::Usage;

/// Increases go at most to this times the delivered rate ...
pub const DELIVERED_HEADROOM: f64 = 1.5;
/// ... plus this many bits per second.
pub const DELIVERED_HEADROOM_BITS: f64 = 10_000.0;
/// The estimate rises at most this much a second ...
pub const INCREASE_PER_SECOND: f64 = 1.08;
/// ... plus this many bits per second, a second.
pub const INCREASE_BITS_PER_SECOND: f64 = 1000.0;
/// Above this loss fraction the estimate falls ...
pub const HIGH_LOSS: f64 = 0.10;
/// ... at most this often.
pub const LOSS_DECREASE_INTERVAL: Duration = Duration::from_millis(300);
/// Above this loss fraction the estimate does not rise.
pub const LOW_LOSS: f64 = 0.02;
/// When the delay says the link is overused, the estimate falls to this
/// times the delivered rate (libwebrtc's beta).
pub const OVERUSE_BACKOFF: f64 = 0.85;
/// A fall to under this fraction of the estimate in one step is the
/// link's limit met.
pub const SHARP_FALL: f64 = 0.7;
/// From this fraction of the remembered capacity on, the estimate rises
/// only [`NEAR_CAPACITY_INCREASE`] ...
pub const NEAR_CAPACITY: f64 = 0.85;
/// ... this fraction of the capacity a second (1 %: from 85 % to the
/// capacity in 15 s).
pub const NEAR_CAPACITY_INCREASE: f64 = 0.01;

/// One viewer's estimate rules (see the module documentation).
#[derive(Debug)]
pub struct EstimateRules {
    estimate: f64,
    last_update: Option<Instant>,
    last_loss_decrease: Option<Instant>,
    capacity: Option<f64>,
    /// The estimator's floor: no rule goes below it.
    floor: f64,
}

impl EstimateRules {
    /// Rules starting from the estimate `initial`, never going below
    /// `floor` (GCC's own), bits per second.
    pub fn new(initial: f64, floor: f64) -> EstimateRules {
        EstimateRules {
            estimate: initial,
            last_update: None,
            last_loss_decrease: None,
            capacity: None,
            floor,
        }
    }

    /// The estimate given out now.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// The link capacity remembered from the last sharp fall, if any.
    pub fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    /// The next estimate, from GCC's (`gcc`), the rate the receiver
    /// acknowledges (`delivered`, if known), the loss fraction GCC
    /// averages (`loss`, if known) and what the delay says (`delay`).
    pub fn next(
        &mut self,
        now: Instant,
        gcc: f64,
        delivered: Option<f64>,
        loss: Option<f64>,
        delay: Usage,
    ) -> f64 {
        let seconds = self
            .last_update
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last))
            .as_secs_f64()
            .min(1.0);
        self.last_update = Some(now);
        let previous = self.estimate;
        let loss = loss.unwrap_or(0.0);
        let loss_decrease_due = self
            .last_loss_decrease
            .is_none_or(|last| now.saturating_duration_since(last) >= LOSS_DECREASE_INTERVAL);
        let mut next = gcc;
        let mut limit_met = gcc < previous * SHARP_FALL;
        if loss > HIGH_LOSS && loss_decrease_due {
            next = next.min((previous * (1.0 - 0.5 * loss)).max(self.floor));
            self.last_loss_decrease = Some(now);
            limit_met = true;
        }
        if let (Usage::Over, Some(delivered)) = (delay, delivered) {
            let backoff = (delivered * OVERUSE_BACKOFF).max(self.floor);
            if backoff < next {
                next = backoff;
                limit_met = true;
            }
        }
        if let Some(delivered) = delivered {
            if limit_met {
                self.capacity = Some(delivered);
            } else if let Some(capacity) = self.capacity.as_mut() {
                *capacity = capacity.max(delivered);
            }
        }
        if next > previous {
            if loss > LOW_LOSS || delay != Usage::Normal {
                next = previous;
            }
            if let Some(delivered) = delivered {
                next = next.min((delivered * DELIVERED_HEADROOM + DELIVERED_HEADROOM_BITS).max(previous));
            }
            next =
                next.min(previous * INCREASE_PER_SECOND.powf(seconds) + INCREASE_BITS_PER_SECOND * seconds);
            if let Some(capacity) = self.capacity {
                let near = capacity * NEAR_CAPACITY;
                if next > near {
                    next = next.min(previous.max(near) + capacity * NEAR_CAPACITY_INCREASE * seconds);
                }
            }
        }
        self.estimate = next;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::delay_trend::Usage;

    const MS: Duration = Duration::from_millis(1);

    /// Rules at `estimate`, last updated at `at`.
    fn rules_at(estimate: f64, at: Instant) -> EstimateRules {
        let mut rules = EstimateRules::new(estimate, 100_000.0);
        rules.next(at, estimate, None, None, Usage::Normal);
        rules
    }

    #[test]
    fn an_increase_is_held_to_what_is_delivered() {
        let t = Instant::now();
        let mut rules = rules_at(600_000.0, t);
        // GCC at 900 kbit/s while the viewer receives 400: 1.5 x 400 + 10.
        assert_eq!(rules.next(t + 1000 * MS, 900_000.0, Some(400_000.0), None, Usage::Normal), 610_000.0);
        // Nothing delivered is known: the increase limit alone.
        let mut rules = rules_at(600_000.0, t);
        assert_eq!(
            rules.next(t + 1000 * MS, 900_000.0, None, None, Usage::Normal),
            600_000.0 * 1.08 + 1000.0
        );
    }

    #[test]
    fn a_quiet_viewer_keeps_its_estimate() {
        // Little delivered (frames skipped while it waits for a keyframe):
        // the estimate stays, it does not sink to 1.5 x almost nothing.
        let t = Instant::now();
        let mut rules = rules_at(600_000.0, t);
        assert_eq!(rules.next(t + 100 * MS, 900_000.0, Some(20_000.0), None, Usage::Normal), 600_000.0);
    }

    #[test]
    fn the_estimate_rises_eight_percent_a_second_at_most() {
        let t = Instant::now();
        let mut rules = rules_at(300_000.0, t);
        // Ten updates in a second, GCC far above.
        for step in 1..=10 {
            rules.next(t + step * 100 * MS, 5_000_000.0, Some(5_000_000.0), None, Usage::Normal);
        }
        let expected = 300_000.0 * 1.08 + 1000.0;
        assert!((rules.estimate() - expected).abs() < 300.0, "{} vs {expected}", rules.estimate());
    }

    #[test]
    fn falls_are_followed_at_once() {
        let t = Instant::now();
        let mut rules = rules_at(800_000.0, t);
        assert_eq!(rules.next(t + 10 * MS, 700_000.0, Some(600_000.0), None, Usage::Normal), 700_000.0);
        assert_eq!(rules.capacity(), None, "not a sharp fall");
        assert_eq!(rules.next(t + 20 * MS, 150_000.0, Some(600_000.0), None, Usage::Normal), 150_000.0);
        assert_eq!(rules.capacity(), Some(600_000.0), "a sharp fall: what was delivered then");
    }

    #[test]
    fn near_the_remembered_capacity_the_estimate_creeps() {
        let t = Instant::now();
        let mut rules = rules_at(800_000.0, t);
        rules.next(t + 10 * MS, 150_000.0, Some(600_000.0), None, Usage::Normal);
        // Back up at 8 % a second to 85 % of 600: 510 kbit/s, then 1 % of 600 a second.
        let mut at = t + 10 * MS;
        let mut seconds = 0;
        while rules.estimate() < 510_000.0 && seconds < 60 {
            at += 1000 * MS;
            seconds += 1;
            rules.next(at, 5_000_000.0, Some((rules.estimate() * 1.4).min(600_000.0)), None, Usage::Normal);
        }
        assert!(seconds >= 15, "8 % a second from 150 to 510 kbit/s takes about 16 s, took {seconds}");
        let reached = rules.estimate();
        assert!(reached <= 510_000.0 + 6_000.0, "{reached}");
        at += 1000 * MS;
        let next = rules.next(at, 5_000_000.0, Some(500_000.0), None, Usage::Normal);
        assert!(
            next - reached.max(510_000.0) <= 6_000.0 + 1.0,
            "6 kbit/s a second near 600: {reached} -> {next}"
        );
    }

    #[test]
    fn more_delivered_than_remembered_raises_the_capacity() {
        let t = Instant::now();
        let mut rules = rules_at(800_000.0, t);
        rules.next(t + 10 * MS, 150_000.0, Some(600_000.0), None, Usage::Normal);
        rules.next(t + 20 * MS, 160_000.0, Some(900_000.0), None, Usage::Normal);
        assert_eq!(rules.capacity(), Some(900_000.0));
    }

    #[test]
    fn loss_lowers_this_estimate_and_marks_the_link_capacity() {
        let t = Instant::now();
        let mut rules = rules_at(600_000.0, t);
        // GCC's own target far above (its loss half climbed unbounded): 30 % loss still lowers the estimate.
        assert_eq!(
            rules.next(t + 100 * MS, 3_000_000.0, Some(590_000.0), Some(0.3), Usage::Normal),
            600_000.0 * 0.85
        );
        assert_eq!(rules.capacity(), Some(590_000.0));
        // Not again within 300 ms, and no rise while the loss lasts.
        assert_eq!(
            rules.next(t + 200 * MS, 3_000_000.0, Some(590_000.0), Some(0.3), Usage::Normal),
            510_000.0
        );
        assert_eq!(
            rules.next(t + 400 * MS, 3_000_000.0, Some(590_000.0), Some(0.05), Usage::Normal),
            510_000.0
        );
        // 5 % loss: held; 1 %: rises again.
        assert!(
            rules.next(t + 1400 * MS, 3_000_000.0, Some(590_000.0), Some(0.01), Usage::Normal) > 510_000.0
        );
    }

    #[test]
    fn loss_never_takes_the_estimate_below_the_floor() {
        let t = Instant::now();
        let mut rules = rules_at(150_000.0, t);
        for step in 1..20 {
            rules.next(t + step * 300 * MS, 100_000.0, Some(90_000.0), Some(0.5), Usage::Normal);
        }
        assert_eq!(rules.estimate(), 100_000.0);
    }

    #[test]
    fn a_growing_queue_lowers_the_estimate_to_what_is_delivered_and_a_draining_one_holds_it() {
        let t = Instant::now();
        let mut rules = rules_at(700_000.0, t);
        // GCC far above, 600 kbit/s delivered, the queue grows: 85 % of 600.
        assert_eq!(rules.next(t + 100 * MS, 3_000_000.0, Some(600_000.0), None, Usage::Over), 510_000.0);
        assert_eq!(rules.capacity(), Some(600_000.0));
        // The queue drains: no rise.
        assert_eq!(rules.next(t + 1100 * MS, 3_000_000.0, Some(600_000.0), None, Usage::Under), 510_000.0);
        // Overuse with the estimate already under 85 % of what is delivered: no rise either.
        assert_eq!(rules.next(t + 1200 * MS, 3_000_000.0, Some(700_000.0), None, Usage::Over), 510_000.0);
        // The queue steady again: it rises.
        assert!(rules.next(t + 2200 * MS, 3_000_000.0, Some(600_000.0), None, Usage::Normal) > 510_000.0);
        // Never below the floor.
        assert_eq!(rules.next(t + 2300 * MS, 3_000_000.0, Some(20_000.0), None, Usage::Over), 100_000.0);
    }
}
