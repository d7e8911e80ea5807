//! Building blocks of a peer connection: codec table, interceptors,
//! network settings.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{
    Attribute, BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, Interceptor, PacerBuilder,
    Packet, PacketReport, RateCalculator, StreamInfo, TaggedPacket, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, Registry, Slot,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
    TYPE_RTCP_FB_CCM, TYPE_RTCP_FB_NACK, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sansio::Protocol;

use super::delay_trend::{TrendlineDetector, Usage};
use super::estimate::EstimateRules;
use super::pacer_gauge::{GaugedPacer, PacerGauge, RoundTrip};
use crate::media::h264_level::H264Level;

/// Payload type we offer for H.264.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// Constrained baseline at `level`, packetization mode 1: what openh264
/// produces and every browser decodes. Register exactly what is sent.
pub fn h264_fmtp(level: H264Level) -> String {
    format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}", level.profile_level_id())
}

/// How often ICE sends a connectivity check while connecting.
pub const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// The pacer sends at this multiple of the bandwidth estimate, as
/// libwebrtc's pacer does (its `kDefaultPaceMultiplier`). The encoder aims
/// at the estimate, so on average the pacer idles; what the headroom is for
/// is a keyframe, several times a P-frame's size: paced at exactly the
/// estimate, the first keyframe at 1080p (and every later one) took a few
/// hundred milliseconds to leave, and the frames behind it queued up, which
/// was the latency burst of the first second (docs/performance.md).
pub const PACING_FACTOR: f64 = 2.5;

/// The bandwidth estimator's floor is the encoder's (`--min-bitrate`) times
/// this: low enough that the pacer, at PACING_FACTOR times the floor, sends
/// 1.25 times the lowest stream the encoder makes and no more. At the
/// encoder's floor itself (the first version) the pacer kept sending
/// 2.5 times it into a link that could not carry that: the link dropped the
/// excess, the viewer asked for it again, and retransmissions filled every
/// gap the video left (measured: 750 kbit/s paced into a 600 kbit/s link, a
/// fifth of it lost for as long as the viewer stayed). Much lower (50 kbit/s
/// was tried) and one loss burst sank the estimate so far that it took
/// seconds to carry the stream again (docs/performance.md "Shaped link").
pub const ESTIMATE_FLOOR_FACTOR: f64 = 1.25 / PACING_FACTOR;

/// Network and bandwidth settings of the camera's peer connections.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// UDP sockets to gather host candidates on. A wildcard (`0.0.0.0:0`,
    /// `[::]:0`) expands to every non-loopback interface address.
    pub udp_addrs: Vec<String>,
    /// Resolve browsers' `.local` host candidates over mDNS (multicast on 5353).
    pub mdns: bool,
    /// STUN/TURN server URLs (`stun:host:port`, `turn:host:port`).
    pub ice_servers: Vec<IceServer>,
    /// Bandwidth estimator start and bounds, bits per second.
    pub initial_bitrate: u32,
    pub min_bitrate: u32,
    pub max_bitrate: u32,
    /// The stream's H.264 level (the SDP's `profile-level-id`; the encoder
    /// writes the same one).
    pub h264_level: H264Level,
}

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub url: String,
    pub username: String,
    pub credential: String,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            udp_addrs: vec!["0.0.0.0:0".into(), "[::]:0".into(), "127.0.0.1:0".into()],
            mdns: true,
            ice_servers: Vec::new(),
            initial_bitrate: crate::media::encoder::DEFAULT_BITRATE,
            min_bitrate: crate::media::encoder::DEFAULT_MIN_BITRATE,
            max_bitrate: crate::media::encoder::DEFAULT_MAX_BITRATE,
            h264_level: H264Level::default(),
        }
    }
}

impl PeerSettings {
    /// Loopback only, no multicast: for tests.
    pub fn loopback() -> Self {
        PeerSettings { udp_addrs: vec!["127.0.0.1:0".into()], mdns: false, ..PeerSettings::default() }
    }
}

/// The H.264 codec entry at `level`.
pub fn h264_codec(level: H264Level) -> RTCRtpCodecParameters {
    let feedback =
        |typ: &str, parameter: &str| RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: h264_fmtp(level),
            rtcp_feedback: vec![
                feedback(TYPE_RTCP_FB_CCM, "fir"),
                feedback(TYPE_RTCP_FB_NACK, ""),
                feedback(TYPE_RTCP_FB_NACK, "pli"),
                feedback(TYPE_RTCP_FB_TRANSPORT_CC, ""),
            ],
        },
        payload_type: H264_PAYLOAD_TYPE,
    }
}

/// Everything one peer connection is built from. A registry owns its
/// interceptors, so each connection gets its own.
pub struct Engine {
    pub media: MediaEngine,
    pub interceptors: Registry,
    pub setting: SettingEngine,
    pub estimate: EstimateHandle,
    /// What the connection's pacer holds (see `pacer_gauge`).
    pub pacer: Arc<PacerGauge>,
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up WebRTC: {0}")]
pub struct EngineError(String);

impl Engine {
    pub fn new(settings: &PeerSettings) -> Result<Engine, EngineError> {
        let mut media = MediaEngine::default();
        // Codecs first: the configure_* helpers add feedback only to codecs
        // already registered.
        media
            .register_codec(h264_codec(settings.h264_level), RtpCodecKind::Video)
            .map_err(|e| EngineError(e.to_string()))?;
        let floor = f64::from(settings.min_bitrate) * ESTIMATE_FLOOR_FACTOR;
        let gcc = Gcc::new(f64::from(settings.initial_bitrate), floor, f64::from(settings.max_bitrate));
        // Measured by the estimator from the feedback, used by the pacer to
        // retransmit a packet at most once per round trip.
        let round_trip = Arc::new(RoundTrip::default());
        let (estimator, estimate) = ReportingEstimator::new(gcc, floor, round_trip.clone());
        let interceptors = configure_nack(Registry::new(), &mut media);
        let interceptors = configure_rtcp_reports(interceptors);
        // Congestion control as `configure_congestion_control` sets it up
        // (TWCC feedback, GCC, pacer), except that the pacer paces at
        // PACING_FACTOR times the estimate (see there), starting from the
        // initial rate instead of its 1 Mbit/s default.
        media.register_feedback(
            RTCPFeedback { typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(), parameter: String::new() },
            RtpCodecKind::Video,
        );
        // The video header extensions: transport-wide sequence numbers for
        // the congestion control above, and playout delay (see
        // `video_track::PLAYOUT_DELAY`): a live camera asks the browser to
        // show each frame as soon as it is decoded, not to build a smoothing
        // buffer that only grows.
        for uri in [rtc::sdp::extmap::TRANSPORT_CC_URI, crate::peer::video_track::PLAYOUT_DELAY_URI] {
            media
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
                    RtpCodecKind::Video,
                    None,
                )
                .map_err(|e| EngineError(e.to_string()))?;
        }
        // Wrapped so the viewer's send task sees the queue (and late
        // retransmissions are dropped): `pacer_gauge`.
        let (pacer, pacer_gauge) = GaugedPacer::new(
            PacerBuilder::new()
                .with_target_bitrate(f64::from(settings.initial_bitrate) * PACING_FACTOR)
                .build(),
            round_trip,
        );
        let interceptors = interceptors
            .with(Slot::CongestionControl, CongestionControlBuilder::new(estimator).build())
            .with(Slot::Pacer, pacer)
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build());
        // The application-most slot, after every interceptor that consumes RTCP.
        let interceptors = interceptors.with(Slot::from(14_000), KeyframeRequestForwarder::default());
        let mut networks = vec![NetworkType::Udp4];
        if settings.udp_addrs.iter().any(|a| a.starts_with('[')) {
            networks.push(NetworkType::Udp6);
        }
        let setting = SettingEngineBuilder::new()
            .with_network_types(networks)
            .with_multicast_dns_mode(if settings.mdns {
                MulticastDnsMode::QueryOnly
            } else {
                MulticastDnsMode::Disabled
            })
            // A viewer that vanishes without a word is noticed in seconds.
            .with_ice_timeouts(
                Some(Duration::from_secs(3)),
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(1)),
            )
            // Browsers hide their host addresses (mDNS names, or no candidates
            // at all), so the first working pair is usually peer-reflexive.
            // The default 1 s wait before nominating such a pair would be a
            // second of black screen on every start.
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // The camera offers, so it is ICE-controlling: the pair is not
            // connected (and the browser's DTLS hello waits for a retransmit)
            // until the camera's own check and nomination go through, which
            // the default 200 ms check tick delays by up to 200 ms. Check
            // every 20 ms, for the default 1.4 s per pair.
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(70))
            .with_srflx_acceptance_min_wait(Some(Duration::from_millis(100)))
            .build();
        Ok(Engine { media, interceptors, setting, estimate, pacer: pacer_gauge })
    }
}

/// The latest bandwidth estimate of one connection, bits per second, and
/// for the link log what GCC's two halves say.
#[derive(Clone, Debug)]
pub struct EstimateHandle(Arc<PublishedEstimate>);

#[derive(Debug, Default)]
struct PublishedEstimate {
    /// Each an `f64`'s bits.
    estimate: AtomicU64,
    delay_based: AtomicU64,
    loss_based: AtomicU64,
    loss: AtomicU64,
    /// Times the trendline detector said the link was overused.
    overuses: AtomicU64,
}

impl EstimateHandle {
    pub fn bits_per_second(&self) -> u64 {
        f64::from_bits(self.0.estimate.load(Ordering::Relaxed)) as u64
    }

    /// GCC's delay-based and loss-based targets (bits per second) and its
    /// averaged loss fraction, as of the last update.
    pub fn halves(&self) -> (u64, u64, f64) {
        let read = |value: &AtomicU64| f64::from_bits(value.load(Ordering::Relaxed));
        (read(&self.0.delay_based) as u64, read(&self.0.loss_based) as u64, read(&self.0.loss))
    }

    /// Feedback reports after which the delay said the link was overused.
    pub fn overuses(&self) -> u64 {
        self.0.overuses.load(Ordering::Relaxed)
    }
}

/// The window the delivered rate is measured over: a second, so one
/// keyframe's burst or one quiet frame interval does not swing it.
const DELIVERED_WINDOW: Duration = Duration::from_secs(1);

/// Wraps the GCC estimator, passes its target through the viewer's
/// [`EstimateRules`], and publishes the result after every update: the
/// estimator moves into the interceptor chain and cannot be asked later.
struct ReportingEstimator<E: BandwidthEstimator> {
    inner: E,
    /// What the receiver acknowledged, over [`DELIVERED_WINDOW`].
    delivered: RateCalculator,
    rules: EstimateRules,
    /// What the delay says (GCC's own delay half misses a slow overuse).
    trend: TrendlineDetector,
    published: Arc<PublishedEstimate>,
    /// Smoothed round trip: feedback's arrival less the departure of the
    /// newest packet it acknowledges (which includes the few milliseconds
    /// the receiver waits before it sends feedback).
    round_trip: Arc<RoundTrip>,
}

impl<E: BandwidthEstimator> ReportingEstimator<E> {
    fn new(inner: E, floor: f64, round_trip: Arc<RoundTrip>) -> (Self, EstimateHandle) {
        let estimate = inner.target_bitrate();
        let published = Arc::new(PublishedEstimate::default());
        published.estimate.store(estimate.to_bits(), Ordering::Relaxed);
        let estimator = ReportingEstimator {
            inner,
            delivered: RateCalculator::new(DELIVERED_WINDOW),
            rules: EstimateRules::new(estimate, floor),
            trend: TrendlineDetector::default(),
            published: published.clone(),
            round_trip,
        };
        (estimator, EstimateHandle(published))
    }

    /// `fresh_feedback`: called for new reports, so GCC's loss figure is
    /// news. On a timer it is not, and applying it again would lower the
    /// estimate every 300 ms on the strength of one old report.
    fn update(&mut self, now: Instant, fresh_feedback: bool) {
        let delivered = self.delivered.rate_bits_per_second(now);
        let stats = self.inner.stats();
        let loss = if fresh_feedback { stats.packet_loss } else { None };
        if fresh_feedback && self.trend.usage() == Usage::Over {
            self.published.overuses.fetch_add(1, Ordering::Relaxed);
        }
        // On the timer the delay's verdict is an old report's too: it may
        // hold the estimate, not lower it again.
        let delay = match self.trend.usage() {
            Usage::Over if !fresh_feedback => Usage::Under,
            usage => usage,
        };
        let estimate = self.rules.next(now, self.inner.target_bitrate(), delivered, loss, delay);
        self.published.estimate.store(estimate.to_bits(), Ordering::Relaxed);
        let store =
            |to: &AtomicU64, value: Option<f64>| to.store(value.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
        store(&self.published.delay_based, stats.delay_based_bitrate);
        store(&self.published.loss_based, stats.loss_based_bitrate);
        store(&self.published.loss, stats.packet_loss);
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for ReportingEstimator<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        for report in reports.iter().filter(|report| report.arrived) {
            self.delivered.add(now, report.size);
            if let Some(arrival) = report.arrival {
                self.trend.on_packet(report.departure, arrival);
            }
        }
        if let Some(newest) =
            reports.iter().filter(|report| report.arrived).map(|report| report.departure).max()
        {
            let sample = now.saturating_duration_since(newest);
            let smoothed = match self.round_trip.get() {
                Duration::ZERO => sample,
                // TCP's smoothing (RFC 6298): 7/8 of the old, 1/8 of the new.
                previous => (previous * 7 + sample) / 8,
            };
            self.round_trip.set(smoothed);
        }
        self.inner.on_reports(now, reports);
        self.update(now, true);
    }

    /// What the chain hears, and its only listener is the pacer: the
    /// estimate times [`PACING_FACTOR`]. The encoder gets the estimate
    /// itself, through the [`EstimateHandle`].
    fn target_bitrate(&self) -> f64 {
        self.rules.estimate() * PACING_FACTOR
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.update(now, false);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// Marks incoming PLI and FIR for delivery to the application (they then
/// arrive as `TrackLocalEvent::OnRtcpPacket`); drops the RTCP the chain has
/// already used. Without it keyframe requests never reach the encoder.
#[derive(Default)]
struct KeyframeRequestForwarder {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            let keep: Vec<_> = packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if keep.is_empty() {
                return Ok(());
            }
            message.message.packet = Packet::Rtcp(keep);
            message.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimator_floor_lets_the_pacer_carry_the_lowest_stream_and_no_more() {
        let encoder_floor = f64::from(crate::media::encoder::DEFAULT_MIN_BITRATE);
        let pacing_at_floor = encoder_floor * ESTIMATE_FLOOR_FACTOR * PACING_FACTOR;
        assert!((pacing_at_floor - 1.25 * encoder_floor).abs() < 1.0, "{pacing_at_floor}");
    }
}
