//! Counters of the media path that only `/metrics` reads.
//!
//! The encoder thread adds to [`MediaCounters`] once per encoded frame (a
//! few relaxed atomic adds and one histogram observation); each viewer's
//! send task adds to [`SendCounters`] once per frame it hands to its track
//! (one atomic add and one histogram observation). Everything else
//! `/metrics` shows is read from state that exists anyway (`CameraStatus`,
//! the fan-out) at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::viewers::Transport;

/// Shared between the encoder thread and the `/metrics` handler.
#[derive(Debug)]
pub struct MediaCounters {
    /// Seconds per `encode` call: 1 ms to about 1 s, doubling.
    encode_seconds: Histogram,
    keyframes_requested: AtomicU64,
    keyframes_encoder: AtomicU64,
    encode_errors: AtomicU64,
    encoded_bytes: AtomicU64,
}

impl Default for MediaCounters {
    fn default() -> Self {
        MediaCounters {
            encode_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 11)),
            keyframes_requested: AtomicU64::new(0),
            keyframes_encoder: AtomicU64::new(0),
            encode_errors: AtomicU64::new(0),
            encoded_bytes: AtomicU64::new(0),
        }
    }
}

/// What the counters say now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCounts {
    /// Keyframes asked for (a viewer joined, a PLI, a lost frame, a restart).
    pub keyframes_requested: u64,
    /// Keyframes the encoder made on its own (its intra period).
    pub keyframes_encoder: u64,
    /// Frames the encoder failed on (dropped).
    pub encode_errors: u64,
    /// Bytes of H.264 handed to the fan-out.
    pub encoded_bytes: u64,
}

impl MediaCounters {
    /// One frame encoded: how long it took, its size, whether it is a
    /// keyframe and whether one was asked for.
    pub fn encoded(&self, took: Duration, bytes: usize, keyframe: bool, requested: bool) {
        self.encode_seconds.observe(took.as_secs_f64());
        self.encoded_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        match (keyframe, requested) {
            (true, true) => self.keyframes_requested.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.keyframes_encoder.fetch_add(1, Ordering::Relaxed),
            (false, _) => 0,
        };
    }

    /// One frame the encoder failed on.
    pub fn encode_failed(&self) {
        self.encode_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The encode-time histogram (encoded as it is by `/metrics`).
    pub fn encode_seconds(&self) -> &Histogram {
        &self.encode_seconds
    }

    pub fn counts(&self) -> MediaCounts {
        MediaCounts {
            keyframes_requested: self.keyframes_requested.load(Ordering::Relaxed),
            keyframes_encoder: self.keyframes_encoder.load(Ordering::Relaxed),
            encode_errors: self.encode_errors.load(Ordering::Relaxed),
            encoded_bytes: self.encoded_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Upper bounds (seconds) of the capture-to-send buckets: fine where a
/// healthy stream lives (the encode, a few milliseconds, plus at most a
/// frame period or two of queueing at 30 fps), coarse beyond 200 ms where
/// the figure only says "something is stuck".
pub const CAPTURE_TO_SEND_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5];

/// What the viewers' send tasks count: shared by every viewer (through the
/// fan-out) and the `/metrics` handler. Labels are the transport only, never
/// the viewer, so the series stay two however many viewers come and go.
#[derive(Debug)]
pub struct SendCounters {
    /// Seconds from a frame's capture to its hand-over to a viewer's track,
    /// once per frame per viewer.
    capture_to_send: Histogram,
    /// H.264 bytes handed to viewers' tracks, by [`Transport::ALL`] index.
    sent_bytes: [AtomicU64; Transport::ALL.len()],
    /// Frames not sent to a viewer because its pacer was backed up.
    backlog_skipped: AtomicU64,
    retransmissions_late: AtomicU64,
    retransmissions_duplicate: AtomicU64,
    link_overuses: AtomicU64,
}

impl Default for SendCounters {
    fn default() -> Self {
        SendCounters {
            capture_to_send: Histogram::new(CAPTURE_TO_SEND_BUCKETS),
            sent_bytes: std::array::from_fn(|_| AtomicU64::new(0)),
            backlog_skipped: AtomicU64::new(0),
            retransmissions_late: AtomicU64::new(0),
            retransmissions_duplicate: AtomicU64::new(0),
            link_overuses: AtomicU64::new(0),
        }
    }
}

/// What the viewers' links cost, summed over viewers (past ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Frames skipped for a viewer whose pacer was backed up (`peer::backlog`).
    pub backlog_skipped: u64,
    /// Retransmissions dropped behind a long queue of them (`peer::pacer_gauge`).
    pub retransmissions_late: u64,
    /// Retransmissions dropped because a copy was queued or less than a
    /// round trip on its way.
    pub retransmissions_duplicate: u64,
    /// Feedback reports after which a viewer's link was overused (its queue
    /// growing; the viewer's estimate falls, `peer::delay_trend`).
    pub overuses: u64,
}

impl SendCounters {
    /// A viewer that came by `transport` handed a frame of `bytes`, captured
    /// at `captured` (monotonic clock), to its track at `sent`.
    pub fn sent(&self, transport: Transport, bytes: usize, captured: Instant, sent: Instant) {
        self.capture_to_send.observe(capture_to_send(captured, sent).as_secs_f64());
        self.sent_bytes[transport.index()].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Adds what one viewer's link counted since its last call: `now` are
    /// its connection's totals, `since` what it had counted then (brought
    /// up to `now`).
    pub fn add_link(&self, since: &mut LinkCounts, now: LinkCounts) {
        let add = |to: &AtomicU64, before: u64, after: u64| {
            to.fetch_add(after.saturating_sub(before), Ordering::Relaxed);
        };
        add(&self.backlog_skipped, since.backlog_skipped, now.backlog_skipped);
        add(&self.retransmissions_late, since.retransmissions_late, now.retransmissions_late);
        add(&self.retransmissions_duplicate, since.retransmissions_duplicate, now.retransmissions_duplicate);
        add(&self.link_overuses, since.overuses, now.overuses);
        *since = now;
    }

    /// The links' counts, summed over viewers since the start.
    pub fn link_counts(&self) -> LinkCounts {
        LinkCounts {
            backlog_skipped: self.backlog_skipped.load(Ordering::Relaxed),
            retransmissions_late: self.retransmissions_late.load(Ordering::Relaxed),
            retransmissions_duplicate: self.retransmissions_duplicate.load(Ordering::Relaxed),
            overuses: self.link_overuses.load(Ordering::Relaxed),
        }
    }

    /// The capture-to-send histogram (encoded as it is by `/metrics`).
    pub fn capture_to_send_seconds(&self) -> &Histogram {
        &self.capture_to_send
    }

    /// Bytes handed to viewers' tracks since the start, for each transport
    /// (zeros too), summed over that transport's viewers.
    pub fn sent_bytes(&self) -> [(Transport, u64); Transport::ALL.len()] {
        Transport::ALL.map(|t| (t, self.sent_bytes[t.index()].load(Ordering::Relaxed)))
    }
}

/// The time from capture to send. Both are monotonic-clock instants, so a
/// wall-clock step (NTP setting the time on a Pi without RTC) cannot show
/// up here; a capture time after the send (a camera clock that runs ahead,
/// which a monotonic source never does) counts as zero, not as a panic.
pub fn capture_to_send(captured: Instant, sent: Instant) -> Duration {
    sent.saturating_duration_since(captured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_bytes_add_up_per_transport_and_latency_is_observed_per_send() {
        let counters = SendCounters::default();
        let captured = Instant::now();
        // One frame to two page viewers and a WHEP viewer: three sends.
        counters.sent(Transport::Page, 1000, captured, captured + Duration::from_millis(12));
        counters.sent(Transport::Page, 1000, captured, captured + Duration::from_millis(14));
        counters.sent(Transport::Whep, 1000, captured, captured + Duration::from_millis(40));
        assert_eq!(counters.sent_bytes(), [(Transport::Page, 2000), (Transport::Whep, 1000)]);
        let (sum, count) = sum_and_count(counters.capture_to_send_seconds());
        assert_eq!(count, 3);
        assert!((sum - 0.066).abs() < 1e-9, "{sum}");
    }

    /// A histogram's sum and count, read from its text encoding (the crate
    /// gives them directly only with its test feature).
    fn sum_and_count(histogram: &Histogram) -> (f64, u64) {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h", "", histogram.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .to_owned()
        };
        (value("h_sum").parse().unwrap(), value("h_count").parse().unwrap())
    }

    #[test]
    fn each_viewers_link_counts_add_up_once() {
        let counters = SendCounters::default();
        let (mut first, mut second) = (LinkCounts::default(), LinkCounts::default());
        let link = |skipped, late, duplicate, overuses| LinkCounts {
            backlog_skipped: skipped,
            retransmissions_late: late,
            retransmissions_duplicate: duplicate,
            overuses,
        };
        // Each viewer's figures are its connection's totals: added as they grow.
        counters.add_link(&mut first, link(0, 2, 10, 1));
        counters.add_link(&mut second, link(1, 0, 5, 0));
        counters.add_link(&mut first, link(0, 3, 10, 4));
        counters.add_link(&mut first, link(0, 3, 10, 4));
        assert_eq!(
            counters.link_counts(),
            LinkCounts {
                backlog_skipped: 1,
                retransmissions_late: 3,
                retransmissions_duplicate: 15,
                overuses: 4
            }
        );
    }

    #[test]
    fn a_capture_time_after_the_send_counts_as_zero() {
        let sent = Instant::now();
        assert_eq!(capture_to_send(sent + Duration::from_millis(5), sent), Duration::ZERO);
        assert_eq!(capture_to_send(sent, sent + Duration::from_millis(33)), Duration::from_millis(33));
    }

    #[test]
    fn the_buckets_rise_and_cover_one_to_two_hundred_milliseconds() {
        assert!(CAPTURE_TO_SEND_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        const { assert!(CAPTURE_TO_SEND_BUCKETS[0] <= 0.001) };
        assert!(CAPTURE_TO_SEND_BUCKETS.contains(&0.2));
    }

    #[test]
    fn keyframes_are_counted_by_cause_and_bytes_add_up() {
        let counters = MediaCounters::default();
        counters.encoded(Duration::from_millis(3), 1000, true, true);
        counters.encoded(Duration::from_millis(2), 200, false, false);
        counters.encoded(Duration::from_millis(4), 900, true, false);
        counters.encode_failed();
        assert_eq!(
            counters.counts(),
            MediaCounts {
                keyframes_requested: 1,
                keyframes_encoder: 1,
                encode_errors: 1,
                encoded_bytes: 2100
            }
        );
    }
}
