//! One connection's pacer, with its queue visible to the application.
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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, PacerInterceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;

/// A retransmission (the answer to a NACK) is dropped instead of queued
/// when more than this is queued already: it would arrive too late to be
/// of use, and the receiver asks again for what is still missing, so on a
/// congested link the queue fills with copies of copies (measured: 3.5 MB,
/// 38 s at 750 kbit/s, most of it retransmissions, two seconds after a
/// viewer on a 600 kbit/s link joined; docs/performance.md).
pub const RETRANSMISSION_MAX_BACKLOG: Duration = Duration::from_millis(300);

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

/// webrtc-rs's pacer, publishing its queue to a [`PacerGauge`].
pub struct GaugedPacer {
    inner: PacerInterceptor,
    /// The sizes of the packets in `inner`'s queue, oldest first (its queue
    /// is first in, first out, so this mirrors it exactly).
    sizes: VecDeque<u64>,
    queued_bytes: u64,
    late_retransmissions: u64,
    gauge: Arc<PacerGauge>,
}

impl GaugedPacer {
    pub fn new(inner: PacerInterceptor) -> (GaugedPacer, Arc<PacerGauge>) {
        let gauge = Arc::new(PacerGauge::default());
        let pacer = GaugedPacer {
            inner,
            sizes: VecDeque::new(),
            queued_bytes: 0,
            late_retransmissions: 0,
            gauge: gauge.clone(),
        };
        pacer.publish();
        (pacer, gauge)
    }

    fn publish(&self) {
        self.gauge.queued_bytes.store(self.queued_bytes, Ordering::Relaxed);
        self.gauge.rate.store(self.inner.pacer().target_bitrate().to_bits(), Ordering::Relaxed);
        self.gauge.refused.store(self.inner.dropped(), Ordering::Relaxed);
        self.gauge.late_retransmissions.store(self.late_retransmissions, Ordering::Relaxed);
    }

    /// Whether this retransmission may be queued: not behind a long queue.
    fn may_retransmit(&self) -> bool {
        backlog(self.queued_bytes, self.inner.pacer().target_bitrate()) <= RETRANSMISSION_MAX_BACKLOG
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
        if message.message.has(&Attribute::Retransmission) && !self.may_retransmit() {
            self.late_retransmissions += 1;
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
        self.inner.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        let result = self.inner.handle_timeout(now);
        self.sync();
        result
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
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

    #[test]
    fn retransmissions_behind_a_long_queue_are_dropped() {
        let start = Instant::now();
        let (mut pacer, gauge) = GaugedPacer::new(PacerBuilder::new().with_target_bitrate(96_000.0).build());
        // (Released or not, a packet handed in is counted until `handle_timeout` releases it.)
        let retransmission = |now| {
            let mut packet = rtp(1188, now);
            packet.message = packet.message.with(Attribute::Retransmission);
            packet
        };
        // 300 ms queued (three packets at 96 kbit/s): a retransmission still goes.
        for _ in 0..3 {
            pacer.handle_write(rtp(1188, start)).unwrap();
        }
        pacer.handle_write(retransmission(start)).unwrap();
        assert_eq!(gauge.queued_bytes(), 4 * 1200);
        assert_eq!(gauge.late_retransmissions(), 0);
        // 400 ms queued: it would leave too late; a first transmission is still queued.
        pacer.handle_write(retransmission(start)).unwrap();
        pacer.handle_write(rtp(1188, start)).unwrap();
        assert_eq!(gauge.queued_bytes(), 5 * 1200);
        assert_eq!(gauge.late_retransmissions(), 1);
    }
}
