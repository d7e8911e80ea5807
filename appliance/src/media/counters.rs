//! Counters of the media path that only `/metrics` reads.
//!
//! The encoder thread adds to them once per encoded frame (a few relaxed
//! atomic adds and one histogram observation); everything else `/metrics`
//! shows is read from state that exists anyway (`CameraStatus`, the fan-out)
//! at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

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

#[cfg(test)]
mod tests {
    use super::*;

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
