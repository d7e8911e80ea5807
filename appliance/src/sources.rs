//! Who a connection or a guess comes from.
//!
//! Limits are kept per *source*. An IPv4 source is one address. An IPv6 host
//! can hold a whole /64, so an IPv6 source is its /64, except where the /64
//! is shared by many unrelated hosts: a link-local address (`fe80::/10`:
//! every device on the link) or an address inside a prefix the camera itself
//! is on (the home LAN's /64). Those are keyed by the full address, so one
//! device on the LAN can never be counted together with another.
//!
//! The camera's prefixes come and go after start (SLAAC, DHCPv6, a router
//! that changes the LAN's prefix), so [`follow_host_prefixes`] reads them
//! again every little while.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

/// The key limits are kept by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 counts as IPv4).
    V4([u8; 4]),
    /// A single IPv6 address (link-local, or on one of the camera's prefixes).
    V6([u8; 16]),
    /// The first 64 bits of an IPv6 address from elsewhere.
    V6Prefix([u8; 8]),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(octets) => write!(f, "{}", std::net::Ipv4Addr::from(*octets)),
            Source::V6(octets) => write!(f, "{}", Ipv6Addr::from(*octets)),
            Source::V6Prefix(prefix) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(prefix);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
        }
    }
}

/// The IPv6 prefixes the camera's own interfaces are on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPrefixes {
    prefixes: Vec<(Ipv6Addr, u8)>,
}

impl LocalPrefixes {
    /// From explicit `(address, prefix length)` pairs.
    pub fn new(prefixes: Vec<(Ipv6Addr, u8)>) -> Self {
        LocalPrefixes { prefixes: prefixes.into_iter().map(|(a, len)| (a, len.min(128))).collect() }
    }

    /// The prefixes of this machine's interfaces, from `/proc/net/if_inet6`
    /// (Linux). Empty when that file cannot be read (no IPv6, not Linux):
    /// then every global IPv6 source is keyed by its /64.
    pub fn of_this_host() -> Self {
        std::fs::read_to_string("/proc/net/if_inet6")
            .map(|text| Self::parse_if_inet6(&text))
            .unwrap_or_default()
    }

    /// Parses the lines of `/proc/net/if_inet6`: 32 hex digits of address,
    /// interface index, prefix length (hex), scope, flags, name.
    pub fn parse_if_inet6(text: &str) -> Self {
        let prefixes = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let hex_addr = fields.next()?;
                let len = u8::from_str_radix(fields.nth(1)?, 16).ok()?;
                let bits = u128::from_str_radix(hex_addr, 16).ok().filter(|_| hex_addr.len() == 32)?;
                let addr = Ipv6Addr::from(bits);
                // Loopback and link-local are handled without a table.
                (!addr.is_loopback() && !is_link_local(&addr) && len > 0).then_some((addr, len))
            })
            .collect();
        Self::new(prefixes)
    }

    /// Whether `addr` is inside one of the prefixes.
    pub fn contains(&self, addr: &Ipv6Addr) -> bool {
        let bits = u128::from(*addr);
        self.prefixes.iter().any(|(net, len)| {
            let mask = if *len == 0 { 0 } else { u128::MAX << (128 - u32::from(*len)) };
            bits & mask == u128::from(*net) & mask
        })
    }

    /// The source `ip` counts as.
    pub fn source(&self, ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) if v6.is_loopback() || is_link_local(&v6) || self.contains(&v6) => {
                Source::V6(v6.octets())
            }
            IpAddr::V6(v6) => Source::V6Prefix(prefix64(&v6)),
        }
    }
}

impl std::fmt::Display for LocalPrefixes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefixes.is_empty() {
            return f.write_str("none");
        }
        for (n, (addr, len)) in self.prefixes.iter().enumerate() {
            let mask = if *len == 0 { 0 } else { u128::MAX << (128 - u32::from(*len)) };
            let net = Ipv6Addr::from(u128::from(*addr) & mask);
            write!(f, "{}{net}/{len}", if n == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

/// Reads this host's prefixes every `every` and hands them to `apply`
/// whenever they differ from the last ones (starting from `current`). Runs
/// until its task is dropped; reading `/proc/net/if_inet6` costs a few
/// microseconds.
pub async fn follow_host_prefixes(
    mut current: LocalPrefixes,
    every: Duration,
    apply: impl Fn(LocalPrefixes),
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now
    loop {
        tick.tick().await;
        let now = LocalPrefixes::of_this_host();
        if now != current {
            tracing::info!(prefixes = %now, "this camera's IPv6 prefixes changed; sources on them count per address");
            apply(now.clone());
            current = now;
        }
    }
}

/// The /64 an IPv6 address is in; `None` for IPv4 (and IPv4-mapped).
pub fn ipv6_slash64(ip: IpAddr) -> Option<[u8; 8]> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some(prefix64(&v6)),
    }
}

fn prefix64(v6: &Ipv6Addr) -> [u8; 8] {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&v6.octets()[..8]);
    prefix
}

fn is_link_local(addr: &Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_by_address_and_mapped_is_ipv4() {
        let local = LocalPrefixes::default();
        assert_eq!(local.source(ip("192.0.2.7")), local.source(ip("::ffff:192.0.2.7")));
        assert_ne!(local.source(ip("192.0.2.7")), local.source(ip("192.0.2.8")));
    }

    #[test]
    fn link_local_and_own_prefix_by_address_elsewhere_by_slash_64() {
        let local = LocalPrefixes::new(vec![(ip6("2001:db8:1::10"), 64)]);
        assert_ne!(local.source(ip("fe80::1")), local.source(ip("fe80::2")), "link-local: per address");
        assert_ne!(
            local.source(ip("2001:db8:1::2")),
            local.source(ip("2001:db8:1::3")),
            "own LAN: per address"
        );
        assert_eq!(
            local.source(ip("2001:db8:9::2")),
            local.source(ip("2001:db8:9::3")),
            "elsewhere: per /64"
        );
        assert_eq!(local.source(ip("2001:db8:9::2")).to_string(), "2001:db8:9::/64");
    }

    #[test]
    fn reads_proc_net_if_inet6() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\n\
                    20010db8000100000000000000000010 02 40 00 00     eth0\n\
                    fe800000000000000000000000000010 02 40 20 80     eth0\n\
                    garbage\n";
        let local = LocalPrefixes::parse_if_inet6(text);
        assert_eq!(local, LocalPrefixes::new(vec![(ip6("2001:db8:1::10"), 64)]));
        assert!(local.contains(&ip6("2001:db8:1::ffff")));
        assert!(!local.contains(&ip6("2001:db8:2::1")));
        assert_eq!(local.to_string(), "2001:db8:1::/64");
        assert_eq!(LocalPrefixes::default().to_string(), "none");
    }

    fn ip6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }
}
