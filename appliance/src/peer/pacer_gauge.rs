//! One connection's pacer, with its queue visible to the application and
//! retransmissions sent first.
//!
//! webrtc-rs's pacer (`PacerInterceptor`) holds the packets the connection
//! may not send yet (up to 4096 of them) inside the interceptor chain, out
//! of the application's reach. For a viewer on a link slower than the
//! stream that queue is where the delay builds up: tens of seconds of video
//! at the camera, each frame older than the last. [`GaugedPacer`] is the
//! same pacer, wrapped so that after every step it publishes how much is
//! queued and at what rate it drains ([`PacerGauge`]); the viewer's send
//! task reads the backlog from there and skips frames while it is long
//! (`peer::session`).
//!
//! Retransmissions (answers to NACKs) do not join the back of that queue:
//! they wait in their own and leave ahead of the queued video, within the
//! same budget (libwebrtc's pacer gives them the same priority). Behind the
//! video they arrived after the browser had given the frame up, and a
//! frame whose lost packet never comes leaves every frame after it
//! undecodable until the next keyframe.
//!
//! A packet is retransmitted at most once per round trip, and never while
//! a copy of it waits in the queue (libwebrtc's packet history does the
//! same). The browser asks again for a packet that has not come within its
//! own idea of the round trip (100 ms before it has one), so on a link
//! whose queue holds 300 ms it asks three or four times for each packet
//! still on its way; without this rule every request went out. Those
//! copies took half of a 600 kbit/s link for seconds after a viewer joined
//! (the browser's SRTP replay check then discards them, and the congestion
//! controller, told they never arrived, read 40-65 % loss on a link that
//! lost nothing: docs/performance.md "Shaped link", E35).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, PacerInterceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;

/// A retransmission (the answer to a NACK) is dropped instead of queued
/// when more than this of retransmissions is queued already: it would
/// arrive too late to be of use, and the receiver asks again for what is
/// still missing, so on a congested link the queue fills with copies of
/// copies (measured, when they queued behind the video: 3.5 MB, 38 s at
/// 750 kbit/s, most of it retransmissions, two seconds after a viewer on a
/// 600 kbit/s link joined; docs/performance.md).
pub const RETRANSMISSION_MAX_BACKLOG: Duration = Duration::from_millis(300);

/// A packet is retransmitted again only after the round trip has passed
/// since its last retransmission, and at least this long.
pub const MIN_RETRANSMISSION_INTERVAL: Duration = Duration::from_millis(10);

/// How long a retransmission is remembered, for the rule above: longer
/// than any round trip the rule uses.
const RETRANSMISSION_MEMORY: Duration = Duration::from_secs(2);

/// The connection's round trip as the congestion controller last measured
/// it (written by the estimator, read by [`GaugedPacer`]).
#[derive(Debug, Default)]
pub struct RoundTrip(AtomicU64);

impl RoundTrip {
    /// The round trip; zero until measured.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, round_trip: Duration) {
        self.0.store(round_trip.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }
}

/// What one connection's pacer holds now (written by [`GaugedPacer`]).
#[derive(Debug, Default)]
pub struct PacerGauge {
    /// Bytes of RTP queued, not yet released.
    queued_bytes: AtomicU64,
    /// The rate the queue drains at, bits per second (an `f64`'s bits).
    rate: AtomicU64,
    /// Packets the pacer refused because its queue was full.
    refused: AtomicU64,
    /// Retransmissions dropped behind a long queue.
    late_retransmissions: AtomicU64,
    /// Retransmissions dropped because a copy was queued or on its way.
    duplicate_retransmissions: AtomicU64,
}

impl PacerGauge {
    /// Bytes waiting in the pacer.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// The pacing rate, bits per second.
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Packets refused by a full queue since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Retransmissions dropped because the queue was long.
    pub fn late_retransmissions(&self) -> u64 {
        self.late_retransmissions.load(Ordering::Relaxed)
    }

    /// Retransmissions dropped because a copy was queued, or had left less
    /// than a round trip before.
    pub fn duplicate_retransmissions(&self) -> u64 {
        self.duplicate_retransmissions.load(Ordering::Relaxed)
    }

    /// How long what is queued takes to leave at the current rate.
    pub fn backlog(&self) -> Duration {
        backlog(self.queued_bytes(), self.rate())
    }

    /// How long `bytes` more would take to leave at the current rate.
    pub fn time_to_send(&self, bytes: u64) -> Duration {
        backlog(bytes, self.rate())
    }
}

/// How long `bytes` take to leave at `rate` bits per second.
fn backlog(bytes: u64, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64((bytes as f64 * 8.0 / rate).min(3600.0))
}

/// webrtc-rs's pacer, publishing its queue to a [`PacerGauge`], with
/// retransmissions released ahead of the queued video.
pub struct GaugedPacer {
    inner: PacerInterceptor,
    /// The sizes of the packets in `inner`'s queue, oldest first (its queue
    /// is first in, first out, so this mirrors it exactly).
    sizes: VecDeque<u64>,
    queued_bytes: u64,
    /// Retransmissions waiting for the budget, with their sizes.
    retransmissions: VecDeque<(TaggedPacket, u64)>,
    retransmission_bytes: u64,
    /// Retransmissions the budget has released, to go before `inner`'s output.
    released: VecDeque<TaggedPacket>,
    /// Each recently retransmitted packet (SSRC, sequence number): queued,
    /// or when it left.
    retransmitted: HashMap<(u32, u16), RetransmissionState>,
    round_trip: Arc<RoundTrip>,
    late_retransmissions: u64,
    duplicate_retransmissions: u64,
    gauge: Arc<PacerGauge>,
}

/// Where one packet's last retransmission is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RetransmissionState {
    Queued,
    Released(Instant),
}

/// The packet a retransmission repeats.
fn packet_key(packet: &TaggedPacket) -> Option<(u32, u16)> {
    match &packet.message.packet {
        Packet::Rtp(rtp) => Some((rtp.header.ssrc, rtp.header.sequence_number)),
        _ => None,
    }
}

impl GaugedPacer {
    /// `round_trip`: the connection's, as measured (see [`RoundTrip`]).
    pub fn new(inner: PacerInterceptor, round_trip: Arc<RoundTrip>) -> (GaugedPacer, Arc<PacerGauge>) {
        let gauge = Arc::new(PacerGauge::default());
        let pacer = GaugedPacer {
            inner,
            sizes: VecDeque::new(),
            queued_bytes: 0,
            retransmissions: VecDeque::new(),
            retransmission_bytes: 0,
            released: VecDeque::new(),
            retransmitted: HashMap::new(),
            round_trip,
            late_retransmissions: 0,
            duplicate_retransmissions: 0,
            gauge: gauge.clone(),
        };
        pacer.publish();
        (pacer, gauge)
    }

    fn publish(&self) {
        self.gauge.queued_bytes.store(self.queued_bytes + self.retransmission_bytes, Ordering::Relaxed);
        self.gauge.rate.store(self.inner.pacer().target_bitrate().to_bits(), Ordering::Relaxed);
        self.gauge.refused.store(self.inner.dropped(), Ordering::Relaxed);
        self.gauge.late_retransmissions.store(self.late_retransmissions, Ordering::Relaxed);
        self.gauge.duplicate_retransmissions.store(self.duplicate_retransmissions, Ordering::Relaxed);
    }

    /// Whether a copy of this packet is queued, or left less than a round
    /// trip ago (so the browser's request crossed it on the way).
    fn is_duplicate(&self, key: (u32, u16), now: Instant) -> bool {
        match self.retransmitted.get(&key) {
            None => false,
            Some(RetransmissionState::Queued) => true,
            Some(RetransmissionState::Released(at)) => {
                now.saturating_duration_since(*at) < self.round_trip.get().max(MIN_RETRANSMISSION_INTERVAL)
            }
        }
    }

    /// Forgets retransmissions too old to matter, now and then (the map
    /// holds at most a few seconds of them).
    fn forget_old_retransmissions(&mut self, now: Instant) {
        if self.retransmitted.len() < 512 {
            return;
        }
        self.retransmitted.retain(|_, state| match state {
            RetransmissionState::Queued => true,
            RetransmissionState::Released(at) => now.saturating_duration_since(*at) < RETRANSMISSION_MEMORY,
        });
    }

    /// Whether a retransmission may be queued: not behind a long queue of
    /// retransmissions (the video queue is not in its way).
    fn may_retransmit(&self) -> bool {
        backlog(self.retransmission_bytes, self.inner.pacer().target_bitrate()) <= RETRANSMISSION_MAX_BACKLOG
    }

    /// Releases the retransmissions the budget allows, before the video.
    fn release_retransmissions(&mut self, now: Instant) {
        let bucket = self.inner.pacer_mut();
        bucket.refill(now);
        while let Some((_, size)) = self.retransmissions.front() {
            let bits = (*size * 8) as f64;
            if !bucket.can_release(bits) {
                break;
            }
            bucket.consume(bits);
            if let Some((mut packet, size)) = self.retransmissions.pop_front() {
                // It departs now: what records departure (the congestion
                // controller's send history) must see the release instant.
                packet.now = now;
                if let Some(key) = packet_key(&packet) {
                    self.retransmitted.insert(key, RetransmissionState::Released(now));
                }
                self.retransmission_bytes = self.retransmission_bytes.saturating_sub(size);
                self.released.push_back(packet);
            }
        }
    }

    /// Forgets the sizes of packets the pacer has released.
    fn sync(&mut self) {
        while self.sizes.len() > self.inner.queued() {
            if let Some(size) = self.sizes.pop_front() {
                self.queued_bytes = self.queued_bytes.saturating_sub(size);
            }
        }
        self.publish();
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for GaugedPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        // Feedback carries the estimator's new rate to the pacer on this leg.
        let result = self.inner.handle_read(message);
        self.publish();
        result
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_read()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        // RTCP is not paced (it passes straight through).
        let size = if let Packet::Rtp(rtp) = &message.message.packet {
            Some(rtp.marshal_size() as u64)
        } else {
            None
        };
        if let (Some(size), true) = (size, message.message.has(&Attribute::Retransmission)) {
            let key = packet_key(&message);
            if key.is_some_and(|key| self.is_duplicate(key, message.now)) {
                self.duplicate_retransmissions += 1;
            } else if self.may_retransmit() {
                self.forget_old_retransmissions(message.now);
                if let Some(key) = key {
                    self.retransmitted.insert(key, RetransmissionState::Queued);
                }
                self.retransmissions.push_back((message, size));
                self.retransmission_bytes += size;
            } else {
                self.late_retransmissions += 1;
            }
            self.publish();
            return Ok(());
        }
        let before = self.inner.queued();
        let result = self.inner.handle_write(message);
        if let Some(size) = size {
            if self.inner.queued() > before {
                self.sizes.push_back(size);
                self.queued_bytes += size;
            }
        }
        self.sync();
        result
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.released.pop_front().or_else(|| self.inner.poll_write())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.release_retransmissions(now);
        let result = self.inner.handle_timeout(now);
        self.sync();
        result
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let retransmission = self
            .retransmissions
            .front()
            .and_then(|(_, size)| self.inner.pacer().releasable_at((*size * 8) as f64));
        match (retransmission, self.inner.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Interceptor for GaugedPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::PacerBuilder;

    fn rtp(payload: usize, now: Instant) -> TaggedPacket {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header { version: 2, ..Default::default() },
            payload: bytes::Bytes::from(vec![0; payload]),
        };
        TaggedPacket { now, transport: Default::default(), message: Packet::Rtp(packet).into() }
    }

    #[test]
    fn the_gauge_follows_the_queue_as_packets_are_paced_out() {
        let start = Instant::now();
        // 96 kbit/s: a 1200-byte packet every 100 ms once the burst (one
        // packet, the floor) is spent.
        let (mut pacer, gauge) = GaugedPacer::new(
            PacerBuilder::new().with_target_bitrate(96_000.0).with_burst_bits(9_600.0).build(),
            Arc::default(),
        );
        for _ in 0..5 {
            pacer.handle_write(rtp(1188, start)).unwrap();
        }
        assert_eq!(gauge.queued_bytes(), 5 * 1200);
        assert_eq!(gauge.backlog(), Duration::from_millis(500));
        pacer.handle_timeout(start).unwrap();
        assert_eq!(gauge.queued_bytes(), 4 * 1200, "the first goes at once (the bucket starts full)");
        pacer.handle_timeout(start + Duration::from_millis(100)).unwrap();
        assert_eq!(gauge.queued_bytes(), 3 * 1200, "then one per 100 ms");
        for ms in [200, 300, 400] {
            pacer.handle_timeout(start + Duration::from_millis(ms)).unwrap();
        }
        assert_eq!(gauge.queued_bytes(), 0);
        assert_eq!(gauge.backlog(), Duration::ZERO);
        let mut out = 0;
        while pacer.poll_write().is_some() {
            out += 1;
        }
        assert_eq!(out, 5);
        assert_eq!(gauge.refused(), 0);
    }

    /// A retransmission of the packet with `sequence_number`.
    fn retransmission(payload: usize, sequence_number: u16, now: Instant) -> TaggedPacket {
        let mut packet = rtp(payload, now);
        if let Packet::Rtp(rtp) = &mut packet.message.packet {
            rtp.header.sequence_number = sequence_number;
        }
        packet.message = packet.message.with(Attribute::Retransmission);
        packet
    }

    #[test]
    fn retransmissions_leave_ahead_of_the_queued_video_within_the_budget() {
        let start = Instant::now();
        let (mut pacer, gauge) = GaugedPacer::new(
            PacerBuilder::new().with_target_bitrate(96_000.0).with_burst_bits(9_600.0).build(),
            Arc::default(),
        );
        // Five video packets (500 ms at 96 kbit/s), then a retransmission.
        for _ in 0..5 {
            pacer.handle_write(rtp(1188, start)).unwrap();
        }
        pacer.handle_write(retransmission(1188, 1, start)).unwrap();
        assert_eq!(gauge.queued_bytes(), 6 * 1200, "the gauge counts both queues");
        let mut order = Vec::new();
        for ms in (0..=500).step_by(100) {
            pacer.handle_timeout(start + Duration::from_millis(ms)).unwrap();
            while let Some(packet) = pacer.poll_write() {
                order.push(packet.message.has(&Attribute::Retransmission));
            }
        }
        assert_eq!(
            order,
            [true, false, false, false, false, false],
            "the retransmission first, the video behind it"
        );
        assert_eq!(gauge.queued_bytes(), 0);
        assert_eq!(gauge.late_retransmissions(), 0);
    }

    #[test]
    fn retransmissions_behind_a_long_queue_of_retransmissions_are_dropped() {
        let start = Instant::now();
        let (mut pacer, gauge) =
            GaugedPacer::new(PacerBuilder::new().with_target_bitrate(96_000.0).build(), Arc::default());
        // A long video queue does not hold a retransmission back.
        for _ in 0..10 {
            pacer.handle_write(rtp(1188, start)).unwrap();
        }
        // Retransmissions: up to 300 ms of them queued (three at 96 kbit/s), the next still goes in.
        for sequence_number in 0..4 {
            pacer.handle_write(retransmission(1188, sequence_number, start)).unwrap();
        }
        assert_eq!(gauge.late_retransmissions(), 0);
        // 400 ms of retransmissions queued: the next would arrive too late.
        pacer.handle_write(retransmission(1188, 4, start)).unwrap();
        assert_eq!(gauge.late_retransmissions(), 1);
        assert_eq!(gauge.queued_bytes(), 14 * 1200);
    }

    /// Drains what the pacer releases by `at`; the sequence numbers.
    fn released_by(pacer: &mut GaugedPacer, at: Instant) -> Vec<u16> {
        pacer.handle_timeout(at).unwrap();
        std::iter::from_fn(|| pacer.poll_write())
            .filter_map(|packet| match packet.message.packet {
                Packet::Rtp(rtp) => Some(rtp.header.sequence_number),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_packet_is_retransmitted_once_per_round_trip() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let round_trip = Arc::new(RoundTrip::default());
        round_trip.set(ms(300));
        let (mut pacer, gauge) = GaugedPacer::new(
            PacerBuilder::new().with_target_bitrate(96_000.0).with_burst_bits(9_600.0).build(),
            round_trip.clone(),
        );
        // The browser asks for 7 twice before the first copy has left (the
        // budget allows one 1200-byte packet per 100 ms), then for 8.
        pacer.handle_write(retransmission(1188, 6, start)).unwrap();
        pacer.handle_write(retransmission(1188, 7, start)).unwrap();
        pacer.handle_write(retransmission(1188, 7, start + ms(50))).unwrap();
        assert_eq!(gauge.duplicate_retransmissions(), 1, "a copy of 7 is queued");
        assert_eq!(released_by(&mut pacer, start), [6]);
        assert_eq!(released_by(&mut pacer, start + ms(100)), [7]);
        // Asked again 100 and 250 ms after it left: it is still on its way.
        pacer.handle_write(retransmission(1188, 7, start + ms(200))).unwrap();
        pacer.handle_write(retransmission(1188, 7, start + ms(350))).unwrap();
        assert_eq!(gauge.duplicate_retransmissions(), 3);
        // A packet asked for the first time is not held back.
        pacer.handle_write(retransmission(1188, 8, start + ms(350))).unwrap();
        assert_eq!(released_by(&mut pacer, start + ms(350)), [8]);
        // A round trip after it left, it was lost: sent again.
        pacer.handle_write(retransmission(1188, 7, start + ms(420))).unwrap();
        assert_eq!(released_by(&mut pacer, start + ms(460)), [7]);
        assert_eq!(gauge.duplicate_retransmissions(), 3);
        // With a 2 ms round trip (a LAN) a request 250 ms after it left is served.
        round_trip.set(ms(2));
        pacer.handle_write(retransmission(1188, 8, start + ms(600))).unwrap();
        assert_eq!(released_by(&mut pacer, start + ms(600)), [8]);
        assert_eq!(gauge.duplicate_retransmissions(), 3);
    }
}
