//! Camera clocks: capture times on the wall clock, and 64-bit sequences.
//!
//! Pure code (no libcamera): compiled and unit-tested in every build.
//! Cameras stamp frames with CLOCK_MONOTONIC; [`WallClock`] maps those
//! stamps to wall-clock time (following a wall-clock step such as NTP
//! setting the time on a Pi without RTC). [`SequenceExtender`] widens
//! libcamera's 32-bit frame sequence across wrap-around.

use std::time::{Duration, Instant, SystemTime};

/// Maps camera timestamps (CLOCK_MONOTONIC nanoseconds, as V4L2 and
/// libcamera's virtual camera stamp frames) to wall-clock time.
pub struct WallClock {
    /// Wall clock minus monotonic clock.
    offset: Duration,
}

impl WallClock {
    /// A wall clock step (NTP setting the time on a Pi without RTC) larger
    /// than this is followed; smaller differences are jitter between the two
    /// clock reads and are ignored, so captured times stay monotonic.
    const RESYNC: Duration = Duration::from_millis(100);

    pub fn new() -> WallClock {
        WallClock { offset: WallClock::measure() }
    }

    fn measure() -> Duration {
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        wall.saturating_sub(monotonic_now())
    }

    pub fn wall_time(&mut self, timestamp_ns: u64) -> SystemTime {
        let fresh = WallClock::measure();
        if fresh.abs_diff(self.offset) > WallClock::RESYNC {
            self.offset = fresh;
        }
        let captured = SystemTime::UNIX_EPOCH + self.offset + Duration::from_nanos(timestamp_ns);
        // A camera with another clock would give nonsense times; "now" is
        // the better guess for latency figures.
        let now = SystemTime::now();
        match now.duration_since(captured) {
            Ok(age) if age < Duration::from_secs(1) => captured,
            Err(ahead) if ahead.duration() < WallClock::RESYNC => captured,
            _ => now,
        }
    }
}

/// A camera timestamp (CLOCK_MONOTONIC nanoseconds) as an `Instant` (which
/// is CLOCK_MONOTONIC on Linux), for the RTP clock. A timestamp in the
/// future or over a second old is from another clock (or none): now.
pub fn monotonic_instant(timestamp_ns: u64) -> Instant {
    let now = Instant::now();
    match monotonic_now().checked_sub(Duration::from_nanos(timestamp_ns)) {
        Some(age) if age < Duration::from_secs(1) => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

pub fn monotonic_now() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// Widens libcamera's 32-bit frame sequence to 64 bits across wrap-around.
#[derive(Default)]
pub struct SequenceExtender {
    last: Option<u64>,
}

impl SequenceExtender {
    pub fn extend(&mut self, sequence: u32) -> u64 {
        let value = match self.last {
            None => u64::from(sequence),
            Some(last) => {
                let high = last & !u64::from(u32::MAX);
                let candidate = high | u64::from(sequence);
                if candidate < last {
                    candidate + (1 << 32)
                } else {
                    candidate
                }
            }
        };
        self.last = Some(value);
        value
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_survives_wrap_around() {
        let mut s = SequenceExtender::default();
        assert_eq!(s.extend(u32::MAX - 1), u64::from(u32::MAX) - 1);
        assert_eq!(s.extend(u32::MAX), u64::from(u32::MAX));
        assert_eq!(s.extend(0), 1 << 32);
        assert_eq!(s.extend(5), (1 << 32) + 5);
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let mut clock = WallClock::new();
        let now_ns = u64::try_from(monotonic_now().as_nanos()).unwrap();
        let earlier = clock.wall_time(now_ns - 50_000_000);
        let later = clock.wall_time(now_ns);
        assert_eq!(later.duration_since(earlier).unwrap(), Duration::from_millis(50));
    }

    #[test]
    fn a_camera_timestamp_becomes_an_instant_of_the_same_age() {
        let now_ns = u64::try_from(monotonic_now().as_nanos()).unwrap();
        let captured = monotonic_instant(now_ns - 100_000_000);
        let age = captured.elapsed();
        assert!(age >= Duration::from_millis(100) && age < Duration::from_millis(150), "{age:?}");
        // From the future, or far in the past (another clock): now.
        assert!(monotonic_instant(now_ns + 5_000_000_000).elapsed() < Duration::from_millis(50));
        assert!(monotonic_instant(0).elapsed() < Duration::from_millis(50));
    }
}
