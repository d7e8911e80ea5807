//! Resource limits that keep one client from starving the others:
//! connection budgets with eviction, and a token bucket for the message
//! rate of one connection.
//!
//! A [`Budget`] caps open connections in total, per address and per IPv6
//! /64. When a cap is reached, a new connection is not simply refused: the
//! oldest *evictable* connection in the full scope (from the address that
//! holds the most of them) is closed to make room. Connections still in the
//! TLS handshake or in plain HTTP, and WebSockets that have not joined a
//! room, are evictable; a joined viewer is not. So idle or half-open sockets
//! can never lock a viewer out, and an address can only ever push out its
//! own connections before anyone else's. Only when nothing in the scope is
//! evictable is the new connection refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::netlog::{NetEvent, NetworkLog};
use crate::sources::ipv6_slash64;

/// The caps of one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_address: usize,
    /// Per IPv6 /64 (IPv4 sources have only the per-address cap).
    pub per_prefix: usize,
}

/// Counts open connections of one kind; hands out a [`ConnectionPermit`]
/// per connection. Cheap to clone.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Mutex<Table>>,
    caps: Caps,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// By age: the lowest ID is the oldest.
    entries: BTreeMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
    per_prefix: HashMap<[u8; 8], usize>,
}

struct Entry {
    ip: IpAddr,
    prefix: Option<[u8; 8]>,
    evictable: bool,
    evict: Arc<Notify>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the limit of {0} open connections is reached and none of them may be closed")]
    Total(usize),
    #[error("this address has reached its limit of {0} open connections")]
    PerAddress(usize),
    #[error("this /64 has reached its limit of {0} open connections")]
    PerPrefix(usize),
}

/// What admitting a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Connections closed to make room, with their address.
    pub evicted: Option<IpAddr>,
}

/// Proof that a connection was admitted; releases its place when dropped.
pub struct ConnectionPermit {
    budget: Budget,
    id: u64,
    evict: Arc<Notify>,
}

impl Budget {
    pub fn new(caps: Caps) -> Self {
        Budget { inner: Arc::new(Mutex::new(Table::default())), caps }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Budget::try_acquire`], with what happened counted in the network
    /// log: an eviction against the evicted address, a refusal against `ip`.
    /// `None` means refused; the caller drops the connection.
    pub fn admit(&self, ip: IpAddr, log: &NetworkLog) -> Option<ConnectionPermit> {
        match self.try_acquire(ip) {
            Ok((permit, admission)) => {
                if let Some(evicted) = admission.evicted {
                    log.count(NetEvent::ConnectionEvicted, evicted);
                }
                Some(permit)
            }
            Err(_) => {
                log.count(NetEvent::ConnectionRefused, ip);
                None
            }
        }
    }

    /// Admits a connection from `ip`, evicting older evictable ones where a
    /// cap is reached. The new connection starts evictable.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<(ConnectionPermit, Admission), LimitExceeded> {
        let ip = ip.to_canonical();
        let prefix = ipv6_slash64(ip);
        let mut table = self.table();
        let mut evicted = None;
        if table.per_address.get(&ip).copied().unwrap_or(0) >= self.caps.per_address {
            evicted =
                Some(table.evict(|e| e.ip == ip).ok_or(LimitExceeded::PerAddress(self.caps.per_address))?);
        }
        if let Some(prefix) = prefix {
            if table.per_prefix.get(&prefix).copied().unwrap_or(0) >= self.caps.per_prefix {
                let victim = table
                    .evict(|e| e.prefix == Some(prefix))
                    .ok_or(LimitExceeded::PerPrefix(self.caps.per_prefix))?;
                evicted = Some(victim);
            }
        }
        if table.entries.len() >= self.caps.total {
            evicted = Some(table.evict(|_| true).ok_or(LimitExceeded::Total(self.caps.total))?);
        }
        let id = table.next_id;
        table.next_id += 1;
        let evict = Arc::new(Notify::new());
        table.entries.insert(id, Entry { ip, prefix, evictable: true, evict: evict.clone() });
        *table.per_address.entry(ip).or_insert(0) += 1;
        if let Some(prefix) = prefix {
            *table.per_prefix.entry(prefix).or_insert(0) += 1;
        }
        Ok((ConnectionPermit { budget: self.clone(), id, evict }, Admission { evicted }))
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.table().entries.len()
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }
}

impl Table {
    /// Closes the oldest evictable connection in scope, taken from the
    /// address holding the most connections in scope; returns its address.
    fn evict(&mut self, in_scope: impl Fn(&Entry) -> bool) -> Option<IpAddr> {
        let mut oldest: HashMap<IpAddr, u64> = HashMap::new();
        for (id, entry) in self.entries.iter().filter(|(_, e)| e.evictable && in_scope(e)) {
            oldest.entry(entry.ip).or_insert(*id);
        }
        let (_, id) = oldest.into_iter().max_by_key(|(ip, id)| {
            (self.per_address.get(ip).copied().unwrap_or(0), std::cmp::Reverse(*id))
        })?;
        let entry = self.remove(id)?;
        entry.evict.notify_one();
        Some(entry.ip)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(count) = self.per_address.get_mut(&entry.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&entry.ip);
            }
        }
        if let Some(prefix) = entry.prefix {
            if let Some(count) = self.per_prefix.get_mut(&prefix) {
                *count -= 1;
                if *count == 0 {
                    self.per_prefix.remove(&prefix);
                }
            }
        }
        Some(entry)
    }
}

impl ConnectionPermit {
    /// Marks the connection as one that must not be closed for a newer one
    /// (a viewer that joined), or again as one that may.
    pub fn set_evictable(&self, evictable: bool) {
        if let Some(entry) = self.budget.table().entries.get_mut(&self.id) {
            entry.evictable = evictable;
        }
    }

    /// Completes when the connection was evicted: its task should close it.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.budget.table().remove(self.id);
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

    fn caps(total: usize, per_address: usize, per_prefix: usize) -> Caps {
        Caps { total, per_address, per_prefix }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Whether the permit's connection was told to close.
    fn was_evicted(permit: &ConnectionPermit) -> bool {
        // `notify_one` before anyone waits leaves a stored permit: the
        // first poll completes.
        futures_util::FutureExt::now_or_never(permit.evicted()).is_some()
    }

    #[test]
    fn a_full_address_evicts_its_own_oldest_idle_connection_not_others() {
        let budget = Budget::new(caps(10, 2, 64));
        let (a1, _) = budget.try_acquire(ip("192.0.2.1")).unwrap();
        let (a2, _) = budget.try_acquire(ip("192.0.2.1")).unwrap();
        let (b1, _) = budget.try_acquire(ip("192.0.2.2")).unwrap();
        let (_a3, admission) = budget.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(admission.evicted, Some(ip("192.0.2.1")));
        assert!(was_evicted(&a1));
        assert!(!was_evicted(&a2) && !was_evicted(&b1));
        assert_eq!(budget.open(), 3);
    }

    #[test]
    fn at_the_total_cap_the_address_with_the_most_connections_gives_way() {
        let budget = Budget::new(caps(4, 3, 64));
        let (viewer, _) = budget.try_acquire(ip("192.0.2.9")).unwrap();
        let attacker: Vec<_> = (0..3).map(|_| budget.try_acquire(ip("192.0.2.1")).unwrap().0).collect();
        let (_new, admission) = budget.try_acquire(ip("192.0.2.5")).unwrap();
        assert_eq!(admission.evicted, Some(ip("192.0.2.1")), "the older viewer stays");
        assert!(!was_evicted(&viewer));
        assert!(was_evicted(&attacker[0]));
    }

    #[test]
    fn joined_connections_are_never_evicted_then_new_ones_are_refused() {
        let budget = Budget::new(caps(2, 2, 64));
        let held: Vec<_> = (0..2).map(|_| budget.try_acquire(ip("192.0.2.1")).unwrap().0).collect();
        held.iter().for_each(|p| p.set_evictable(false));
        assert_eq!(budget.try_acquire(ip("192.0.2.1")).err(), Some(LimitExceeded::PerAddress(2)));
        assert_eq!(budget.try_acquire(ip("192.0.2.2")).err(), Some(LimitExceeded::Total(2)));
        drop(held);
        assert_eq!(budget.open(), 0);
        assert!(budget.try_acquire(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn ipv6_slash_64_is_capped_and_mapped_ipv4_counts_as_ipv4() {
        let budget = Budget::new(caps(100, 10, 2));
        let p1 = budget.try_acquire(ip("2001:db8::1")).unwrap().0;
        p1.set_evictable(false);
        let p2 = budget.try_acquire(ip("2001:db8::2")).unwrap().0;
        p2.set_evictable(false);
        assert_eq!(budget.try_acquire(ip("2001:db8::3")).err(), Some(LimitExceeded::PerPrefix(2)));
        assert!(budget.try_acquire(ip("2001:db8:0:1::3")).is_ok(), "another /64 is not affected");
        let v4 = Budget::new(caps(10, 1, 10));
        let (keep, _) = v4.try_acquire(ip("192.0.2.7")).unwrap();
        keep.set_evictable(false);
        assert!(v4.try_acquire(ip("::ffff:192.0.2.7")).is_err());
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
