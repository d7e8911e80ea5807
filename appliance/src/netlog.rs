//! Log lines that the network triggers, counted instead of written one by one.
//!
//! Refused connections, wrong room secrets and protocol violations happen as
//! often as a client on the LAN likes. Each is only counted here, per kind and
//! address; every [`WINDOW`] one line per kind and address is written, "N
//! connections refused from ADDR in the last 10 s", at most
//! [`LINES_PER_KIND`] of them per kind and window plus one summary line for
//! the rest. The log therefore grows by a bounded number of lines per window,
//! however many attempts and addresses there are.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the counts are written.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most lines per kind and window; the rest are summed in one line.
pub const LINES_PER_KIND: usize = 5;
/// Most addresses tallied per window; more are counted without an address.
const MAX_KEYS: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetEvent {
    /// A connection refused at a connection cap.
    ConnectionRefused,
    /// A connection closed to make room for a newer one.
    ConnectionEvicted,
    /// A WebSocket upgrade or a WHEP request from a foreign `Origin`.
    ForeignOrigin,
    /// A wrong room secret.
    WrongSecret,
    /// A wrong room secret during the source's back-off.
    ThrottledGuess,
    /// A signaling client disconnected for breaking the protocol or a limit.
    ProtocolViolation,
    /// A signaling client that did not join in time.
    JoinTimeout,
}

impl NetEvent {
    /// Every kind, in order (for `/metrics`).
    pub const ALL: [NetEvent; 7] = [
        NetEvent::ConnectionRefused,
        NetEvent::ConnectionEvicted,
        NetEvent::ForeignOrigin,
        NetEvent::WrongSecret,
        NetEvent::ThrottledGuess,
        NetEvent::ProtocolViolation,
        NetEvent::JoinTimeout,
    ];

    /// A short name, the `reason` label of `lookout_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            NetEvent::ConnectionRefused => "connection_cap",
            NetEvent::ConnectionEvicted => "evicted_idle",
            NetEvent::ForeignOrigin => "foreign_origin",
            NetEvent::WrongSecret => "wrong_secret",
            NetEvent::ThrottledGuess => "throttled_guess",
            NetEvent::ProtocolViolation => "protocol_violation",
            NetEvent::JoinTimeout => "join_timeout",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            NetEvent::ConnectionRefused => "connections refused (connection cap)",
            NetEvent::ConnectionEvicted => "idle connections closed to make room",
            NetEvent::ForeignOrigin => "WebSocket upgrades and WHEP requests refused (foreign Origin)",
            NetEvent::WrongSecret => "wrong room secrets",
            NetEvent::ThrottledGuess => {
                "wrong room secrets refused unread: too many wrong guesses (back-off)"
            }
            NetEvent::ProtocolViolation => "signaling clients disconnected for a protocol or limit violation",
            NetEvent::JoinTimeout => "signaling clients closed for not joining in time",
        }
    }
}

#[derive(Default)]
struct Tally {
    counts: HashMap<(NetEvent, IpAddr), u64>,
    /// Counted without an address once `counts` is full.
    overflow: HashMap<NetEvent, u64>,
}

/// The shared counter. Cheap to clone.
#[derive(Clone)]
pub struct NetworkLog {
    tally: Arc<Mutex<Tally>>,
    /// When the counts were last written (or the log made).
    last_flush: Arc<Mutex<Instant>>,
    /// Every event since the start, by kind (never reset; `/metrics`).
    totals: Arc<[AtomicU64; NetEvent::ALL.len()]>,
}

impl Default for NetworkLog {
    fn default() -> Self {
        NetworkLog {
            tally: Arc::default(),
            last_flush: Arc::new(Mutex::new(Instant::now())),
            totals: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl std::fmt::Debug for NetworkLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkLog")
    }
}

impl NetworkLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one `event` from `ip`.
    pub fn count(&self, event: NetEvent, ip: IpAddr) {
        if let Some(total) = NetEvent::ALL.iter().position(|e| *e == event).and_then(|i| self.totals.get(i)) {
            total.fetch_add(1, Ordering::Relaxed);
        }
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let key = (event, ip.to_canonical());
        let full = tally.counts.len() >= MAX_KEYS;
        match tally.counts.get_mut(&key) {
            Some(count) => *count += 1,
            None if full => *tally.overflow.entry(event).or_insert(0) += 1,
            None => {
                tally.counts.insert(key, 1);
            }
        }
    }

    /// Every event counted since the start, by kind (all kinds, zeros too).
    pub fn totals(&self) -> Vec<(NetEvent, u64)> {
        NetEvent::ALL.iter().zip(self.totals.iter()).map(|(e, n)| (*e, n.load(Ordering::Relaxed))).collect()
    }

    /// Takes the counts since the last call and returns the lines to write.
    pub fn take_lines(&self, window: Duration) -> Vec<String> {
        let tally = std::mem::take(&mut *self.tally.lock().unwrap_or_else(|p| p.into_inner()));
        let secs = window.as_secs();
        let mut by_kind: HashMap<NetEvent, Vec<(IpAddr, u64)>> = HashMap::new();
        for ((event, ip), count) in tally.counts {
            by_kind.entry(event).or_default().push((ip, count));
        }
        for event in tally.overflow.keys() {
            by_kind.entry(*event).or_default();
        }
        let mut kinds: Vec<_> = by_kind.into_iter().collect();
        kinds.sort_by_key(|(event, _)| *event);
        let mut lines = Vec::new();
        for (event, mut sources) in kinds {
            sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            for (ip, count) in sources.iter().take(LINES_PER_KIND) {
                lines.push(format!("{count} {} from {ip} in the last {secs} s", event.describe()));
            }
            let rest_sources = sources.len().saturating_sub(LINES_PER_KIND);
            let rest: u64 = sources.iter().skip(LINES_PER_KIND).map(|(_, c)| c).sum::<u64>()
                + tally.overflow.get(&event).copied().unwrap_or(0);
            if rest > 0 {
                lines.push(format!(
                    "{rest} more {} from {rest_sources}+ other addresses in the last {secs} s",
                    event.describe()
                ));
            }
        }
        lines
    }

    /// Writes the counts since the last call as WARN lines (the last one,
    /// at shutdown, may cover less than a whole window).
    pub fn flush(&self) {
        let window = {
            let mut last = self.last_flush.lock().unwrap_or_else(|p| p.into_inner());
            let window = last.elapsed();
            *last = Instant::now();
            // Whole seconds, at least 1: "in the last 10 s".
            Duration::from_secs(window.as_secs_f64().round().max(1.0) as u64)
        };
        for line in self.take_lines(window) {
            tracing::warn!("{line}");
        }
    }

    /// Writes the counts every [`WINDOW`] until the returned task is aborted.
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + WINDOW, WINDOW);
            loop {
                tick.tick().await;
                log.flush();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_survive_the_windows_and_list_every_kind() {
        let log = NetworkLog::new();
        for _ in 0..3 {
            log.count(NetEvent::WrongSecret, "192.0.2.1".parse().unwrap());
        }
        log.take_lines(WINDOW);
        log.count(NetEvent::WrongSecret, "192.0.2.9".parse().unwrap());
        let totals = log.totals();
        assert_eq!(totals.len(), NetEvent::ALL.len());
        assert!(totals.contains(&(NetEvent::WrongSecret, 4)));
        assert!(totals.contains(&(NetEvent::JoinTimeout, 0)));
    }

    #[test]
    fn counts_are_one_line_per_kind_and_address() {
        let log = NetworkLog::new();
        for _ in 0..1000 {
            log.count(NetEvent::WrongSecret, "192.0.2.1".parse().unwrap());
        }
        log.count(NetEvent::ConnectionRefused, "::ffff:192.0.2.2".parse().unwrap());
        let lines = log.take_lines(WINDOW);
        assert_eq!(
            lines,
            [
                "1 connections refused (connection cap) from 192.0.2.2 in the last 10 s",
                "1000 wrong room secrets from 192.0.2.1 in the last 10 s",
            ]
        );
        assert!(log.take_lines(WINDOW).is_empty(), "counts start again");
    }

    #[test]
    fn many_addresses_give_a_bounded_number_of_lines() {
        let log = NetworkLog::new();
        for i in 0..10_000u32 {
            log.count(NetEvent::WrongSecret, IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        let lines = log.take_lines(WINDOW);
        assert_eq!(lines.len(), LINES_PER_KIND + 1);
        assert!(lines[LINES_PER_KIND].starts_with("9995 more wrong room secrets"), "{lines:?}");
    }
}
