//! Resource limits that keep one client from starving the others: a cap on
//! open connections (in all and per source address) and a token bucket for
//! the message rate of one connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts open connections; hands out a [`ConnectionPermit`] per connection.
#[derive(Clone)]
pub struct ConnectionLimiter {
    inner: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_ip: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the server has reached its limit of {0} open connections")]
    Total(usize),
    #[error("this address has reached its limit of {0} open connections")]
    PerAddress(usize),
}

/// Proof that a connection was admitted; releases its place when dropped.
pub struct ConnectionPermit {
    limiter: ConnectionLimiter,
    ip: IpAddr,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        ConnectionLimiter { inner: Arc::new(Mutex::new(Counts::default())), max_total, max_per_ip }
    }

    /// Admits a connection from `ip` if both limits allow.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        let ip = ip.to_canonical();
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(LimitExceeded::Total(self.max_total));
        }
        let for_ip = counts.per_ip.entry(ip).or_insert(0);
        if *for_ip >= self.max_per_ip {
            return Err(LimitExceeded::PerAddress(self.max_per_ip));
        }
        *for_ip += 1;
        counts.total += 1;
        Ok(ConnectionPermit { limiter: self.clone(), ip })
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limiter.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(for_ip) = counts.per_ip.get_mut(&self.ip) {
            *for_ip -= 1;
            if *for_ip == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        TokenBucket { capacity, per_second, tokens: capacity, last: now }
    }

    /// Takes one token; `false` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-connection message rate limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub burst: u32,
    pub per_second: f64,
}

impl RateLimit {
    pub fn bucket(&self, now: Instant) -> TokenBucket {
        TokenBucket::new(self.burst, self.per_second, now)
    }
}

/// Sleeps are in whole milliseconds; keeps durations printable in logs.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_caps_hold_and_release_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limiter.try_acquire(a).unwrap();
        let _p2 = limiter.try_acquire(a).unwrap();
        assert_eq!(limiter.try_acquire(a).err(), Some(LimitExceeded::PerAddress(2)));
        let _p3 = limiter.try_acquire(b).unwrap();
        assert_eq!(limiter.try_acquire(b).err(), Some(LimitExceeded::Total(3)));
        drop(p1);
        assert_eq!(limiter.open(), 2);
        assert!(limiter.try_acquire(a).is_ok());
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let limiter = ConnectionLimiter::new(10, 1);
        let _p = limiter.try_acquire("192.0.2.1".parse().unwrap()).unwrap();
        assert!(limiter.try_acquire("::ffff:192.0.2.1".parse().unwrap()).is_err());
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 20.0, t0);
        assert_eq!((0..150).filter(|_| bucket.take(t0)).count(), 100);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..50).filter(|_| bucket.take(t1)).count(), 20);
    }
}
