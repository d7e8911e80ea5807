//! A delay-based overuse detector: libwebrtc's trendline estimator, fed
//! the congestion controller's packet reports.
//!
//! webrtc-rs's GCC has a delay-based half, but it compares the Kalman-
//! filtered delay change between two packet groups with a 12.5 ms
//! threshold. A link a few per cent over its capacity grows its queue by
//! a millisecond or two per frame, which that never sees: on the shaped
//! 600 kbit/s link its delay-based target stayed at its ceiling while the
//! link's 300 ms queue filled and overflowed (docs/performance.md "Shaped
//! link"). The estimate then found the link's capacity only by loss, a
//! few packets every 20-30 s, and each loss could hold a frame for a second.
//!
//! libwebrtc's detector (`TrendlineEstimator`) instead fits a line through
//! the accumulated, smoothed one-way delay of the last 20 packet groups and
//! scales its slope by the number of groups seen (up to 60) and a gain of
//! 4 before comparing it with an adaptive threshold; a queue that grows
//! by 2 ms per 33 ms frame is overuse within about a second. This is that
//! detector, with its constants.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets that left within this of a group's first are one group.
pub const BURST_INTERVAL: Duration = Duration::from_millis(5);
/// Groups in the line fit.
pub const WINDOW: usize = 20;
/// The accumulated delay's smoothing: this much of the old value.
pub const SMOOTHING: f64 = 0.9;
/// The slope is scaled by the number of groups seen, up to this ...
pub const MAX_DELTAS: f64 = 60.0;
/// ... and by this.
pub const THRESHOLD_GAIN: f64 = 4.0;
/// The threshold the scaled slope is compared with, at the start, and its
/// bounds, milliseconds.
pub const INITIAL_THRESHOLD: f64 = 12.5;
pub const MIN_THRESHOLD: f64 = 6.0;
pub const MAX_THRESHOLD: f64 = 600.0;
/// How fast the threshold follows the scaled slope: up, and down.
pub const THRESHOLD_UP: f64 = 0.0087;
pub const THRESHOLD_DOWN: f64 = 0.039;
/// A scaled slope this far beyond the threshold does not move it (one
/// outlier must not desensitise the detector).
pub const MAX_ADAPT_OFFSET: f64 = 15.0;
/// Packets that arrived together join a group for at most this long.
pub const MAX_BURST_DURATION: Duration = Duration::from_millis(100);
/// A change in one-way delay this large between two groups is a jump of
/// the receiver's clock (its feedback's reference time wrapped or was
/// reset), not the link: the trend starts again (libwebrtc's is 3 s).
pub const CLOCK_JUMP: f64 = 3000.0;
/// Above the threshold this long, and for two groups, is overuse.
pub const OVERUSE_TIME_MS: f64 = 10.0;

/// What the delay says about the link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Usage {
    /// The queue neither grows nor drains.
    #[default]
    Normal,
    /// The queue grows: the sender is above the link's capacity.
    Over,
    /// The queue drains.
    Under,
}

/// One group of packets that left together.
#[derive(Clone, Copy, Debug)]
struct Group {
    first_departure: Instant,
    /// The receiver's clock, as `last_arrival`.
    first_arrival: Duration,
    last_departure: Instant,
    /// The receiver's clock.
    last_arrival: Duration,
}

/// The trendline overuse detector (see the module documentation).
#[derive(Debug)]
pub struct TrendlineDetector {
    current: Option<Group>,
    previous: Option<Group>,
    first_arrival_ms: Option<f64>,
    deltas: u32,
    accumulated_delay_ms: f64,
    smoothed_delay_ms: f64,
    /// (arrival since the first, smoothed delay), milliseconds.
    history: VecDeque<(f64, f64)>,
    trend: f64,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    time_over_using_ms: Option<f64>,
    overuse_count: u32,
    usage: Usage,
}

impl Default for TrendlineDetector {
    fn default() -> Self {
        TrendlineDetector {
            current: None,
            previous: None,
            first_arrival_ms: None,
            deltas: 0,
            accumulated_delay_ms: 0.0,
            smoothed_delay_ms: 0.0,
            history: VecDeque::with_capacity(WINDOW + 1),
            trend: 0.0,
            threshold: INITIAL_THRESHOLD,
            last_threshold_update_ms: None,
            time_over_using_ms: None,
            overuse_count: 0,
            usage: Usage::Normal,
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl TrendlineDetector {
    /// What the delay said at the last closed group.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The current line's slope (milliseconds of delay per millisecond).
    pub fn trend(&self) -> f64 {
        self.trend
    }

    /// One packet that arrived: when it left (this clock) and when it
    /// arrived (the receiver's). Reports come in the order packets left.
    pub fn on_packet(&mut self, departure: Instant, arrival: Duration) {
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group {
                first_departure: departure,
                first_arrival: arrival,
                last_departure: departure,
                last_arrival: arrival,
            });
            return;
        };
        let same_burst = departure.saturating_duration_since(current.first_departure) <= BURST_INTERVAL;
        // Packets that left apart but arrived together (a queue on the way
        // released them at once) are one group too, as in libwebrtc: the
        // delay between them says nothing about the link's rate.
        let arrived_in_burst = arrival.saturating_sub(current.last_arrival) <= BURST_INTERVAL
            && arrival.saturating_sub(current.first_arrival) < MAX_BURST_DURATION
            && millis(arrival) - millis(current.last_arrival)
                < millis(departure.saturating_duration_since(current.last_departure));
        if same_burst || arrived_in_burst {
            current.last_departure = current.last_departure.max(departure);
            current.last_arrival = current.last_arrival.max(arrival);
            return;
        }
        let closed = *current;
        self.current = Some(Group {
            first_departure: departure,
            first_arrival: arrival,
            last_departure: departure,
            last_arrival: arrival,
        });
        if let Some(previous) = self.previous.replace(closed) {
            let send_delta = millis(closed.last_departure.saturating_duration_since(previous.last_departure));
            let arrival_delta = millis(closed.last_arrival) - millis(previous.last_arrival);
            if (arrival_delta - send_delta).abs() > CLOCK_JUMP {
                self.restart_trend();
            } else if arrival_delta >= 0.0 {
                // (Reordered groups carry no trend.)
                self.update(arrival_delta, send_delta, millis(closed.last_arrival));
            }
        }
    }

    /// Forgets the delay history (the threshold, which describes the link's
    /// noise, stays).
    fn restart_trend(&mut self) {
        self.first_arrival_ms = None;
        self.deltas = 0;
        self.accumulated_delay_ms = 0.0;
        self.smoothed_delay_ms = 0.0;
        self.history.clear();
        self.trend = 0.0;
        self.last_threshold_update_ms = None;
        self.time_over_using_ms = None;
        self.overuse_count = 0;
        self.usage = Usage::Normal;
    }

    fn update(&mut self, arrival_delta: f64, send_delta: f64, arrival_ms: f64) {
        self.deltas = (self.deltas + 1).min(1000);
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.accumulated_delay_ms += arrival_delta - send_delta;
        self.smoothed_delay_ms =
            SMOOTHING * self.smoothed_delay_ms + (1.0 - SMOOTHING) * self.accumulated_delay_ms;
        self.history.push_back((arrival_ms - first, self.smoothed_delay_ms));
        if self.history.len() > WINDOW {
            self.history.pop_front();
        }
        let previous_trend = self.trend;
        if self.history.len() == WINDOW {
            if let Some(slope) = linear_fit_slope(&self.history) {
                self.trend = slope;
            }
        }
        self.detect(previous_trend, send_delta, arrival_ms);
    }

    fn detect(&mut self, previous_trend: f64, send_delta: f64, now_ms: f64) {
        if self.deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let modified = f64::from(self.deltas).min(MAX_DELTAS) * self.trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            let over = match self.time_over_using_ms {
                None => send_delta / 2.0,
                Some(time) => time + send_delta,
            };
            self.time_over_using_ms = Some(over);
            self.overuse_count += 1;
            if over > OVERUSE_TIME_MS && self.overuse_count > 1 && self.trend >= previous_trend {
                self.time_over_using_ms = Some(0.0);
                self.overuse_count = 0;
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Under;
        } else {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.update_threshold(modified, now_ms);
    }

    fn update_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        self.last_threshold_update_ms = Some(now_ms);
        if modified.abs() > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let k = if modified.abs() < self.threshold { THRESHOLD_DOWN } else { THRESHOLD_UP };
        let elapsed = (now_ms - last).clamp(0.0, 100.0);
        self.threshold = (self.threshold + k * (modified.abs() - self.threshold) * elapsed)
            .clamp(MIN_THRESHOLD, MAX_THRESHOLD);
    }
}

/// The least-squares slope of `points` (x, y); none when every x is equal.
fn linear_fit_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sum_x, sum_y) = points.iter().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mean_x, mean_y) = (sum_x / n, sum_y / n);
    let (numerator, denominator) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mean_x) * (y - mean_y), den + (x - mean_x) * (x - mean_x))
    });
    (denominator != 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of `packets_per_frame` 1200-byte packets every 33 ms
    /// (288 kbit/s per packet a frame) for `seconds`, paced within the
    /// frame at 2.5 x the stream's rate, through a link of `link_rate`
    /// bits per second with a FIFO queue; the usage after each frame.
    fn run(packets_per_frame: u32, link_rate: f64, seconds: u32) -> Vec<Usage> {
        let start = Instant::now();
        let mut detector = TrendlineDetector::default();
        let packet_bits = 1200.0 * 8.0;
        let frame_ms = 1000.0 / 30.0;
        let send_rate = f64::from(packets_per_frame) * packet_bits * 30.0;
        let mut link_free_ms: f64 = 0.0;
        let mut seen = Vec::new();
        for frame in 0..seconds * 30 {
            for packet in 0..packets_per_frame {
                // Paced within the frame at 2.5 x the send rate.
                let depart_ms = f64::from(frame) * frame_ms
                    + f64::from(packet) * packet_bits / (2.5 * send_rate) * 1000.0;
                let arrive_ms = depart_ms.max(link_free_ms) + packet_bits / link_rate * 1000.0;
                link_free_ms = arrive_ms;
                detector.on_packet(
                    start + Duration::from_secs_f64(depart_ms / 1000.0),
                    Duration::from_secs_f64((arrive_ms + 20.0) / 1000.0),
                );
            }
            seen.push(detector.usage());
        }
        seen
    }

    #[test]
    fn a_link_with_room_is_not_overused() {
        // 576 kbit/s into 600.
        let seen = run(2, 600_000.0, 20);
        assert!(!seen.contains(&Usage::Over), "{seen:?}");
    }

    #[test]
    fn a_few_per_cent_over_the_link_is_overuse_within_seconds() {
        // 864 kbit/s into 800, 8 % over: the queue grows 2.7 ms a frame.
        let seen = run(3, 800_000.0, 10);
        let first = seen.iter().position(|usage| *usage == Usage::Over);
        assert!(first.is_some_and(|frame| frame < 3 * 30), "first overuse at frame {first:?}");
    }

    #[test]
    fn a_draining_queue_is_underuse() {
        let start = Instant::now();
        let mut detector = TrendlineDetector::default();
        // A queue of 300 ms draining by 5 ms a group, groups 33 ms apart.
        let mut saw_under = false;
        for group in 0..120u32 {
            let depart_ms = f64::from(group) * 33.0;
            let queue_ms = (300.0 - 5.0 * f64::from(group)).max(0.0);
            detector.on_packet(
                start + Duration::from_secs_f64(depart_ms / 1000.0),
                Duration::from_secs_f64((depart_ms + queue_ms) / 1000.0),
            );
            saw_under |= detector.usage() == Usage::Under && queue_ms > 0.0;
            assert_ne!(detector.usage(), Usage::Over, "group {group}");
        }
        assert!(saw_under);
    }

    #[test]
    fn a_jump_of_the_receivers_clock_is_not_overuse() {
        let start = Instant::now();
        let mut detector = TrendlineDetector::default();
        // Groups 33 ms apart on a steady link; after two seconds the
        // receiver's clock jumps 16 s ahead (its reference time wrapped).
        for group in 0..180u32 {
            let depart_ms = f64::from(group) * 33.0;
            let jump = if group >= 60 { 16_000.0 } else { 0.0 };
            detector.on_packet(
                start + Duration::from_secs_f64(depart_ms / 1000.0),
                Duration::from_secs_f64((depart_ms + 20.0 + jump) / 1000.0),
            );
            assert_eq!(detector.usage(), Usage::Normal, "group {group}");
        }
    }

    #[test]
    fn the_line_fit_finds_the_slope() {
        let points: VecDeque<_> =
            (0..20).map(|x| (f64::from(x) * 33.0, 5.0 + 0.1 * f64::from(x) * 33.0)).collect();
        assert!((linear_fit_slope(&points).unwrap_or(0.0) - 0.1).abs() < 1e-9);
        let flat: VecDeque<_> = (0..20).map(|_| (1.0, 2.0)).collect();
        assert_eq!(linear_fit_slope(&flat), None);
    }
}
