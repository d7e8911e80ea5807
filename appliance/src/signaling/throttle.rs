//! Back-off for wrong room secrets, per source.
//!
//! A 256-bit secret cannot be guessed, so the throttle exists only to bound
//! the work and the log that wrong guesses cause; it never stands in the way
//! of the right secret (the hub compares the secret first). Each wrong guess
//! from a source doubles the time during which its further wrong guesses are
//! refused unread (1 s, 2 s, 4 s, ... up to a ceiling). A source that stays
//! quiet for a while is forgotten. Sources are keyed as [`crate::sources`]
//! says: IPv4 by address, IPv6 by address on the camera's own prefixes and
//! link-local, otherwise by /64. The table is bounded so that a flood from
//! many addresses cannot grow it without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::sources::{LocalPrefixes, Source};

/// Throttle settings.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Wait after the first wrong guess; doubles with each further one.
    pub base_delay: Duration,
    /// Longest wait.
    pub max_delay: Duration,
    /// A source with no wrong guess for this long starts again from zero.
    pub forget_after: Duration,
    /// Most sources remembered at once.
    pub capacity: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            forget_after: Duration::from_secs(3600),
            capacity: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// The per-source record of wrong guesses.
#[derive(Debug)]
pub struct GuessThrottle {
    config: ThrottleConfig,
    local: LocalPrefixes,
    records: HashMap<Source, Record>,
}

impl GuessThrottle {
    pub fn new(config: ThrottleConfig, local: LocalPrefixes) -> Self {
        GuessThrottle { config, local, records: HashMap::new() }
    }

    /// `Err(wait)` while `ip` must still wait before its next guess counts.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.records.get(&self.local.source(ip)) {
            Some(record) if record.blocked_until > now => Err(record.blocked_until - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong guess; returns how many wrong guesses in a row this
    /// source has made and how long it must now wait.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> (u32, Duration) {
        let source = self.local.source(ip);
        if !self.records.contains_key(&source) && self.records.len() >= self.config.capacity {
            self.forget_stale(now);
            if self.records.len() >= self.config.capacity {
                // Still full of live records: drop the one quietest longest,
                // so new sources are always throttled.
                if let Some(oldest) = self.records.iter().min_by_key(|(_, r)| r.last_failure).map(|(s, _)| *s)
                {
                    self.records.remove(&oldest);
                }
            }
        }
        let forget_after = self.config.forget_after;
        let record = self
            .records
            .entry(source)
            .and_modify(|r| {
                if now.saturating_duration_since(r.last_failure) >= forget_after {
                    r.failures = 0;
                }
            })
            .or_insert(Record { failures: 0, blocked_until: now, last_failure: now });
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let doublings = (record.failures - 1).min(31);
        let delay = self.config.base_delay.saturating_mul(1u32 << doublings).min(self.config.max_delay);
        record.blocked_until = now + delay;
        (record.failures, delay)
    }

    /// The camera's own prefixes changed: key sources by the new ones from now
    /// on. Records keyed the old way are kept until they are forgotten.
    pub fn set_local_prefixes(&mut self, local: LocalPrefixes) {
        self.local = local;
    }

    /// A right guess clears the source's record.
    pub fn record_success(&mut self, ip: IpAddr) {
        self.records.remove(&self.local.source(ip));
    }

    /// Number of sources remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn forget_stale(&mut self, now: Instant) {
        let forget_after = self.config.forget_after;
        self.records.retain(|_, r| now.saturating_duration_since(r.last_failure) < forget_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn delay_doubles_up_to_the_ceiling() {
        let config = ThrottleConfig {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            ..Default::default()
        };
        let mut throttle = GuessThrottle::new(config, LocalPrefixes::default());
        let t0 = Instant::now();
        let delays: Vec<_> =
            (0..6).map(|_| throttle.record_failure(ip("192.0.2.1"), t0).1.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn blocks_until_the_delay_has_passed() {
        let mut throttle = GuessThrottle::new(ThrottleConfig::default(), LocalPrefixes::default());
        let t0 = Instant::now();
        assert!(throttle.check(ip("192.0.2.1"), t0).is_ok());
        throttle.record_failure(ip("192.0.2.1"), t0);
        assert!(throttle.check(ip("192.0.2.1"), t0 + Duration::from_millis(500)).is_err());
        assert!(throttle.check(ip("192.0.2.2"), t0).is_ok(), "other sources are not affected");
        assert!(throttle.check(ip("192.0.2.1"), t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn ipv6_is_grouped_by_slash_64_and_mapped_v4_is_v4() {
        let mut throttle = GuessThrottle::new(ThrottleConfig::default(), LocalPrefixes::default());
        let t0 = Instant::now();
        throttle.record_failure(ip("2001:db8:1:2::1"), t0);
        assert!(throttle.check(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert!(throttle.check(ip("2001:db8:1:3::1"), t0).is_ok());
        throttle.record_failure(ip("::ffff:192.0.2.7"), t0);
        assert!(throttle.check(ip("192.0.2.7"), t0).is_err());
    }

    #[test]
    fn on_the_cameras_own_prefix_and_link_local_one_address_does_not_throttle_another() {
        let local = LocalPrefixes::new(vec![("2001:db8:1::10".parse().unwrap(), 64)]);
        let mut throttle = GuessThrottle::new(ThrottleConfig::default(), local);
        let t0 = Instant::now();
        throttle.record_failure(ip("2001:db8:1::2"), t0);
        throttle.record_failure(ip("fe80::2"), t0);
        assert!(throttle.check(ip("2001:db8:1::2"), t0).is_err());
        assert!(throttle.check(ip("2001:db8:1::3"), t0).is_ok());
        assert!(throttle.check(ip("fe80::3"), t0).is_ok());
    }

    #[test]
    fn quiet_sources_start_again_and_success_clears() {
        let config = ThrottleConfig { forget_after: Duration::from_secs(60), ..Default::default() };
        let mut throttle = GuessThrottle::new(config, LocalPrefixes::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            throttle.record_failure(ip("192.0.2.1"), t0);
        }
        let (failures, delay) = throttle.record_failure(ip("192.0.2.1"), t0 + Duration::from_secs(120));
        assert_eq!((failures, delay), (1, Duration::from_secs(1)));
        throttle.record_success(ip("192.0.2.1"));
        assert!(throttle.is_empty());
    }

    #[test]
    fn table_stays_bounded_under_a_flood_of_sources() {
        let mut throttle = GuessThrottle::new(
            ThrottleConfig { capacity: 100, ..Default::default() },
            LocalPrefixes::default(),
        );
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            throttle.record_failure(IpAddr::V4(addr), t0 + Duration::from_millis(i.into()));
        }
        assert_eq!(throttle.len(), 100);
        let newest = std::net::Ipv4Addr::from(0x0a00_0000 + 999);
        assert!(throttle.check(IpAddr::V4(newest), t0 + Duration::from_millis(999)).is_err());
    }
}
