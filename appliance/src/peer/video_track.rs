//! One viewer's video track, and the RTP clock its frames are stamped with.
//!
//! Each frame's RTP timestamp comes from its capture time on the monotonic
//! clock, at 90 kHz ([`RtpClock`]): the timestamp of frame *n* is the
//! viewer's base plus the time from the first frame this viewer was sent to
//! frame *n*'s capture. So a frame lost anywhere (the camera, a capture
//! thread behind the encoder, a viewer skipping to a keyframe, a camera
//! reopen) leaves a gap the size of the lost time, and the RTP clock never
//! drifts from real time. Put in the terms of a sample's duration: for each
//! viewer, a frame lasts until the next frame *that viewer* is sent.
//!
//! webrtc-rs's `TrackLocalStaticSample` advances the RTP clock by each
//! sample's duration *after* sending it, which needs the gap to the next
//! frame before that frame exists. So [`VideoTrack`] packetizes itself and
//! writes RTP packets to a `TrackLocalStaticRTP` with the timestamp it chose.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use rtc::rtp::packetizer::{new_packetizer, Packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::shared::marshal::Marshal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use crate::media::encoder::EncodedFrame;

/// The RTP clock rate of video (RFC 6184).
pub const CLOCK_RATE: u64 = 90_000;
/// Packets are at most this big (what webrtc-rs's sample track uses).
const RTP_MTU: usize = 1200;

/// The RTP header extension that tells the receiver how long it may hold a
/// frame before showing it (registered for video in `engine`).
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// The playout delay every packet asks for: none (minimum and maximum 0).
/// A camera has no audio to keep in sync and its viewers want the present,
/// so the browser shows each frame as soon as it is decoded. Without it,
/// Chromium sizes a smoothing buffer from the jitter it has seen, which
/// only ever grows over a session: the latency climbed by a compositor
/// interval at a time (docs/performance.md, "The first second and the
/// minute after").
pub const PLAYOUT_DELAY: PlayoutDelayExtension = PlayoutDelayExtension { min_delay: 0, max_delay: 0 };

/// Maps capture times to RTP timestamps for one viewer: 90 kHz ticks since
/// the first frame, from a random base, wrapping at 2³².
#[derive(Debug, Clone)]
pub struct RtpClock {
    base: u32,
    /// The first frame's capture time, and the last frame's ticks since it.
    origin: Option<(Instant, u64)>,
}

impl RtpClock {
    /// A clock whose first frame gets timestamp `base` (random, RFC 3550).
    pub fn new(base: u32) -> RtpClock {
        RtpClock { base, origin: None }
    }

    /// The RTP timestamp of a frame captured at `captured`. Computed from the
    /// first frame's time, not by adding up durations, so rounding never
    /// accumulates. Strictly increasing: a frame captured no later than the
    /// previous one (which a monotonic source never does) gets one tick more.
    pub fn timestamp(&mut self, captured: Instant) -> u32 {
        let ticks = match self.origin {
            None => {
                self.origin = Some((captured, 0));
                0
            }
            Some((first, last)) => {
                let ticks = ticks(captured.saturating_duration_since(first)).max(last + 1);
                self.origin = Some((first, ticks));
                ticks
            }
        };
        // Modulo 2³²: RTP timestamps wrap.
        self.base.wrapping_add(ticks as u32)
    }
}

/// 90 kHz ticks in `elapsed`, rounded down.
fn ticks(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_nanos() * u128::from(CLOCK_RATE) / 1_000_000_000).unwrap_or(u64::MAX / 2)
}

/// What the connection agreed on that each packet needs: read from the
/// sender's negotiated parameters once the connection is up. The IDs are the
/// negotiated ones, which are the offerer's: the camera's own for a page
/// viewer, the player's for a WHEP viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub payload_type: u8,
    /// The playout-delay extension's ID, if the viewer accepted it.
    pub playout_delay_id: Option<u8>,
}

impl Negotiated {
    /// From the sender's negotiated codecs and header extensions; `None`
    /// without a codec. An extension ID a one-byte header cannot carry is
    /// treated as not negotiated.
    pub fn from_parameters(
        codecs: &[rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters],
        extensions: &[rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters],
    ) -> Option<Negotiated> {
        let payload_type = codecs.first()?.payload_type;
        let playout_delay_id = extensions
            .iter()
            .find(|e| e.uri == PLAYOUT_DELAY_URI)
            .and_then(|e| u8::try_from(e.id).ok())
            .filter(|id| (1..=14).contains(id));
        Some(Negotiated { payload_type, playout_delay_id })
    }
}

/// Why a frame could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum VideoTrackError {
    #[error("no RTP packetizer for this codec: {0}")]
    Codec(String),
    #[error("cannot packetize the frame: {0}")]
    Packetize(String),
    #[error("writing RTP: {0}")]
    Write(String),
}

/// A viewer's send-only H.264 track: frames in, timestamped RTP out.
pub struct VideoTrack {
    track: Arc<TrackLocalStaticRTP>,
    packetizer: Box<dyn Packetizer>,
    clock: RtpClock,
    /// [`PLAYOUT_DELAY`], marshalled once.
    playout_delay: Bytes,
}

impl VideoTrack {
    /// Packetizes `codec` for `ssrc` onto `track`.
    pub fn new(
        track: Arc<TrackLocalStaticRTP>,
        codec: &RTCRtpCodec,
        ssrc: u32,
    ) -> Result<Self, VideoTrackError> {
        let payloader = codec.payloader().map_err(|e| VideoTrackError::Codec(e.to_string()))?;
        // The payload type is set per write (it is the negotiated one); the
        // packetizer's own timestamp is overwritten by the clock's.
        let packetizer = new_packetizer(
            Instant::now(),
            RTP_MTU,
            0,
            ssrc,
            payloader,
            Box::new(new_random_sequencer()),
            codec.clock_rate,
        );
        let playout_delay =
            PLAYOUT_DELAY.marshal().map_err(|e| VideoTrackError::Codec(e.to_string()))?.freeze();
        Ok(VideoTrack {
            track,
            packetizer: Box::new(packetizer),
            clock: RtpClock::new(rand::random()),
            playout_delay,
        })
    }

    /// Sends one frame as RTP packets stamped with its capture time, each
    /// asking for no playout delay if the viewer accepted the extension.
    pub async fn write(
        &mut self,
        frame: &EncodedFrame,
        negotiated: Negotiated,
    ) -> Result<(), VideoTrackError> {
        let timestamp = self.clock.timestamp(frame.captured_mono);
        let packets = self
            .packetizer
            .packetize(Instant::now(), &frame.data, 0)
            .map_err(|e| VideoTrackError::Packetize(e.to_string()))?;
        for mut packet in packets {
            packet.header.timestamp = timestamp;
            packet.header.payload_type = negotiated.payload_type;
            if let Some(id) = negotiated.playout_delay_id {
                packet
                    .header
                    .set_extension(id, self.playout_delay.clone())
                    .map_err(|e| VideoTrackError::Packetize(e.to_string()))?;
            }
            self.track.write_rtp(packet).await.map_err(|e| VideoTrackError::Write(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FRAME: Duration = Duration::from_nanos(33_333_333);

    fn extension(uri: &str, id: u16) -> rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters {
        rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters {
            uri: uri.to_owned(),
            id,
            ..Default::default()
        }
    }

    fn h264(payload_type: u8) -> rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters {
        rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters { payload_type, ..Default::default() }
    }

    #[test]
    fn the_playout_delay_id_is_the_negotiated_one() {
        let extensions = [extension(rtc::sdp::extmap::TRANSPORT_CC_URI, 3), extension(PLAYOUT_DELAY_URI, 5)];
        assert_eq!(
            Negotiated::from_parameters(&[h264(102)], &extensions),
            Some(Negotiated { payload_type: 102, playout_delay_id: Some(5) })
        );
    }

    #[test]
    fn a_viewer_without_the_extension_gets_packets_without_it() {
        let extensions = [extension(rtc::sdp::extmap::TRANSPORT_CC_URI, 3)];
        assert_eq!(
            Negotiated::from_parameters(&[h264(96)], &extensions),
            Some(Negotiated { payload_type: 96, playout_delay_id: None })
        );
        // A two-byte-header ID is not sent (every other extension here is one-byte).
        assert_eq!(
            Negotiated::from_parameters(&[h264(96)], &[extension(PLAYOUT_DELAY_URI, 15)])
                .unwrap()
                .playout_delay_id,
            None
        );
    }

    #[test]
    fn no_codec_means_nothing_to_send() {
        assert_eq!(Negotiated::from_parameters(&[], &[extension(PLAYOUT_DELAY_URI, 2)]), None);
    }

    #[test]
    fn the_playout_delay_asks_for_none() {
        let bytes = PLAYOUT_DELAY.marshal().unwrap();
        assert_eq!(&bytes[..], &[0, 0, 0]);
    }

    #[test]
    fn consecutive_frames_are_one_frame_period_apart() {
        let start = Instant::now();
        let mut clock = RtpClock::new(1000);
        assert_eq!(clock.timestamp(start), 1000);
        assert_eq!(clock.timestamp(start + FRAME), 1000 + 2999);
        assert_eq!(clock.timestamp(start + FRAME * 2), 1000 + 5999);
        assert_eq!(clock.timestamp(start + FRAME * 3), 1000 + 8999);
    }

    #[test]
    fn a_dropped_frame_leaves_a_gap_of_its_time() {
        let start = Instant::now();
        let mut clock = RtpClock::new(0);
        clock.timestamp(start);
        let a = clock.timestamp(start + FRAME);
        // The frame at 2 x FRAME was lost: the next one is two periods later.
        let b = clock.timestamp(start + FRAME * 3);
        assert_eq!(b.wrapping_sub(a), 6000);
        // A viewer that skipped a second of frames to a keyframe.
        let c = clock.timestamp(start + FRAME * 33);
        assert_eq!(c.wrapping_sub(b), 90_000);
    }

    #[test]
    fn no_drift_over_a_day_of_frames_with_every_third_lost() {
        let start = Instant::now();
        let mut clock = RtpClock::new(0);
        let mut last = 0;
        for n in (0..30 * 86_400u32).filter(|n| n % 3 != 2) {
            last = clock.timestamp(start + FRAME * n);
        }
        let elapsed = FRAME * (30 * 86_400 - 2);
        let expected = (elapsed.as_nanos() * 90_000 / 1_000_000_000) as u64;
        assert_eq!(u64::from(last), expected % (1 << 32), "the timestamp is the capture time, not a sum");
    }

    #[test]
    fn timestamps_wrap_around_two_to_the_32() {
        let start = Instant::now();
        let mut clock = RtpClock::new(u32::MAX - 1000);
        assert_eq!(clock.timestamp(start), u32::MAX - 1000);
        let after = clock.timestamp(start + FRAME);
        assert_eq!(after, 1998, "wrapped past zero");
        assert_eq!(after.wrapping_sub(u32::MAX - 1000), 2999);
        // A day later (2³² ticks is 13.25 hours): still exact modulo 2³².
        let day = Duration::from_secs(86_400);
        let expected = (u64::from(u32::MAX - 1000) + 86_400 * 90_000) % (1 << 32);
        assert_eq!(u64::from(clock.timestamp(start + day)), expected);
    }

    #[test]
    fn never_repeats_or_goes_back() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut clock = RtpClock::new(0);
        assert_eq!(clock.timestamp(start), 0);
        assert_eq!(clock.timestamp(start), 1, "the same capture time again");
        assert_eq!(clock.timestamp(start - FRAME), 2, "an earlier capture time");
        assert_eq!(clock.timestamp(start + FRAME), 2999);
    }
}
