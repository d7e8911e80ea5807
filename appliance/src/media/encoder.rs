//! H.264 encoding with openh264, set up for live video over WebRTC.
//!
//! Constrained baseline (what every browser decodes) at the level of
//! [`H264Level`] (the same one the SDP's `profile-level-id` names), bitrate rate control, no frame skipping
//! (the encoder keeps every frame it is given; frames lost before it leave a
//! gap in the RTP clock, which follows capture times), no scene-change IDRs, an IDR every `idr_interval`, and an IDR on demand.
//! Every IDR carries SPS and PPS in front, so a viewer can start on any IDR.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::{OpenH264API, Timestamp};

use super::frame::VideoFrame;
use super::h264_level::H264Level;

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSettings {
    pub fps: u32,
    /// Starting target bitrate, bits per second.
    pub bitrate: u32,
    /// The bandwidth estimate moves the target within these bounds.
    pub min_bitrate: u32,
    pub max_bitrate: u32,
    /// Time between periodic IDRs.
    pub idr_interval: Duration,
    /// The level written into the SPS (`H264Level::for_stream`).
    pub level: H264Level,
    /// openh264 threads (1 to [`MAX_ENCODER_THREADS`]). Above 1 the picture
    /// is cut into slices of at most [`SLICE_BYTES`], which the threads
    /// encode in parallel; 1 is one slice per picture.
    pub threads: u16,
    /// Temporal layers (1 or 2). With 2, every other frame is a
    /// non-reference frame of layer 1, which a viewer may go without (15 of
    /// 30 fps) while every frame it gets still decodes.
    pub temporal_layers: u8,
}

/// The bitrate defaults, bits per second: the encoder's, the camera
/// peer's and `--bitrate`/`--min-bitrate`/`--max-bitrate`'s (in kbit/s there).
pub const DEFAULT_BITRATE: u32 = 2_500_000;
pub const DEFAULT_MIN_BITRATE: u32 = 300_000;
pub const DEFAULT_MAX_BITRATE: u32 = 6_000_000;

/// openh264 uses at most this many threads.
pub const MAX_ENCODER_THREADS: u16 = 4;
/// Slice size limit with several threads: one slice fits one RTP packet
/// (webrtc-rs's 1200-byte packets less the RTP header and some room).
pub const SLICE_BYTES: u32 = 1100;

/// The default thread count: the machine's cores, at most [`MAX_ENCODER_THREADS`].
pub fn default_encoder_threads() -> u16 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u16::try_from(cores).unwrap_or(MAX_ENCODER_THREADS).clamp(1, MAX_ENCODER_THREADS)
}

impl Default for EncoderSettings {
    fn default() -> Self {
        EncoderSettings {
            fps: 30,
            bitrate: DEFAULT_BITRATE,
            min_bitrate: DEFAULT_MIN_BITRATE,
            max_bitrate: DEFAULT_MAX_BITRATE,
            idr_interval: Duration::from_secs(2),
            level: H264Level::default(),
            threads: 1,
            temporal_layers: 2,
        }
    }
}

/// One encoded picture: an Annex-B access unit.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Bytes,
    pub keyframe: bool,
    pub captured_at: SystemTime,
    /// Capture time on the monotonic clock: the frame's RTP timestamp
    /// (`peer::rtp_clock`).
    pub captured_mono: Instant,
    pub sequence: u64,
    /// Temporal layer: 0 is the base (every viewer gets it); 1 is a
    /// non-reference frame no other frame needs.
    pub layer: u8,
}

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("openh264: {0}")]
    OpenH264(#[from] openh264::Error),
    #[error("openh264 refused option {option}: code {code}")]
    Option { option: &'static str, code: i32 },
    #[error("invalid frame: {0}")]
    Frame(#[from] super::frame::FrameError),
}

/// The live H.264 encoder.
pub struct H264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
    /// Target currently set in openh264 (0 before the first frame: openh264
    /// initialises lazily and refuses options until then).
    applied_bitrate: u32,
    applied_max: u32,
    wanted_bitrate: u32,
    bitrate_refusal_logged: bool,
    /// Temporal layers are switched on after the first frame (openh264
    /// initialises on its first frame; the crate configures one layer).
    layers_configured: bool,
    /// Tests: openh264 refuses every bitrate change.
    #[cfg(test)]
    refuse_bitrate_changes: bool,
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<H264Encoder, EncoderError> {
        let fps = settings.fps.max(1);
        let idr_frames =
            u32::try_from(settings.idr_interval.as_millis() * u128::from(fps) / 1000).unwrap_or(0);
        // openh264 wants the IDR period to be a multiple of the layers' GOP.
        let gop = 1u32 << (settings.temporal_layers.clamp(1, 2) - 1);
        let idr_frames = idr_frames.max(1).div_ceil(gop) * gop;
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(settings.bitrate))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(idr_frames.max(1)))
            .profile(Profile::Baseline)
            .level(settings.level.openh264())
            .complexity(Complexity::Low)
            .scene_change_detect(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId);
        let threads = settings.threads.clamp(1, MAX_ENCODER_THREADS);
        // openh264 runs threads on slices: with one slice per picture it
        // would use one thread whatever it is told.
        let config = if threads > 1 {
            config.num_threads(threads).max_slice_len(SLICE_BYTES)
        } else {
            config.num_threads(1)
        };
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
        Ok(H264Encoder {
            encoder,
            settings,
            applied_bitrate: 0,
            applied_max: settings.bitrate,
            wanted_bitrate: settings.bitrate,
            bitrate_refusal_logged: false,
            layers_configured: settings.temporal_layers <= 1,
            #[cfg(test)]
            refuse_bitrate_changes: false,
        })
    }

    /// Encodes one frame; an IDR (with SPS and PPS) if `keyframe` is asked.
    pub fn encode(&mut self, frame: &VideoFrame, keyframe: bool) -> Result<EncodedFrame, EncoderError> {
        frame.validate()?;
        if keyframe {
            self.encoder.force_intra_frame();
        }
        let timestamp = Timestamp::from_millis(frame.captured_unix_ms());
        if !self.layers_configured {
            // The first frame initialises openh264; switch the layers on and
            // encode the frame again (the switch restarts with an IDR), so
            // the stream starts with one IDR.
            self.encoder.encode_at(frame, timestamp)?;
            self.enable_temporal_layers()?;
            self.layers_configured = true;
        }
        let bitstream = self.encoder.encode_at(frame, timestamp)?;
        let is_idr = bitstream.frame_type() == FrameType::IDR;
        let data = Bytes::from(bitstream.to_vec());
        let layer = temporal_layer(&data);
        if self.applied_bitrate == 0 {
            self.applied_bitrate = self.settings.bitrate;
        }
        if self.wanted_bitrate != self.applied_bitrate {
            // A refused change must not cost the frame just encoded (it may
            // be a keyframe): keep the frame and the old rate, say so once.
            let wanted = self.wanted_bitrate;
            if let Err(e) = self.apply_bitrate(wanted) {
                if !self.bitrate_refusal_logged {
                    tracing::warn!(error = %e, from = self.applied_bitrate, to = wanted,
                        "the encoder refused a bitrate change; keeping the old rate (logged once)");
                    self.bitrate_refusal_logged = true;
                }
                self.wanted_bitrate = self.applied_bitrate;
            }
        }
        Ok(EncodedFrame {
            data,
            keyframe: is_idr,
            captured_at: frame.captured_at,
            captured_mono: frame.captured_mono,
            sequence: frame.sequence,
            layer,
        })
    }

    /// Two temporal layers through openh264's full parameter set.
    fn enable_temporal_layers(&mut self) -> Result<(), EncoderError> {
        use openh264_sys2::{SEncParamExt, ENCODER_OPTION_SVC_ENCODE_PARAM_EXT};
        let mut params = SEncParamExt::default();
        let option = ENCODER_OPTION_SVC_ENCODE_PARAM_EXT;
        // SAFETY: this option reads an `SEncParamExt`, which lives across the call.
        let code =
            unsafe { self.encoder.raw_api().get_option(option, (&mut params as *mut SEncParamExt).cast()) };
        if code != 0 {
            return Err(EncoderError::Option { option: "read parameters", code });
        }
        params.iTemporalLayerNum = i32::from(self.settings.temporal_layers.clamp(1, 2));
        // SAFETY: this option writes an `SEncParamExt`, which lives across the call.
        let code =
            unsafe { self.encoder.raw_api().set_option(option, (&mut params as *mut SEncParamExt).cast()) };
        if code != 0 {
            return Err(EncoderError::Option { option: "temporal layers", code });
        }
        Ok(())
    }

    /// Asks for a new target bitrate, clamped to `[min, max]`; applied from the next frame.
    pub fn set_bitrate(&mut self, bps: u32) {
        self.wanted_bitrate = bps.clamp(self.settings.min_bitrate, self.settings.max_bitrate);
    }

    /// The target bitrate in force (bits per second).
    pub fn bitrate(&self) -> u32 {
        self.wanted_bitrate
    }

    fn apply_bitrate(&mut self, target: u32) -> Result<(), EncoderError> {
        use openh264_sys2::{
            SBitrateInfo, ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0,
            SPATIAL_LAYER_ALL,
        };
        // openh264 rejects a target above the layer's maximum, so raise the
        // maximum first when going up and lower it last when going down. The
        // maximum keeps 25 % headroom: rate control undershoots at max == target.
        let max = target.saturating_add(target / 4);
        #[cfg(test)]
        let refuse = self.refuse_bitrate_changes;
        #[cfg(not(test))]
        let refuse = false;
        let set = |encoder: &mut Encoder, option, layer, bits: u32, name: &'static str| {
            if refuse {
                return Err(EncoderError::Option { option: name, code: -1 });
            }
            let mut info = SBitrateInfo { iLayer: layer, iBitrate: i32::try_from(bits).unwrap_or(i32::MAX) };
            // SAFETY: `set_option` reads an `SBitrateInfo` for these two
            // options, and `info` lives across the call.
            let code =
                unsafe { encoder.raw_api().set_option(option, (&mut info as *mut SBitrateInfo).cast()) };
            if code == 0 {
                Ok(())
            } else {
                Err(EncoderError::Option { option: name, code })
            }
        };
        if max >= self.applied_max {
            set(&mut self.encoder, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, max, "max bitrate")?;
            self.applied_max = max;
            set(&mut self.encoder, ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, target, "bitrate")?;
        } else {
            set(&mut self.encoder, ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, target, "bitrate")?;
            self.applied_bitrate = target;
            set(&mut self.encoder, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, max, "max bitrate")?;
        }
        self.applied_bitrate = target;
        self.applied_max = max;
        Ok(())
    }
}

/// The temporal layer of an access unit: 1 when its slices are
/// non-reference (`nal_ref_idc` 0, which openh264 writes for the upper
/// layer's frames), else 0.
pub fn temporal_layer(annex_b: &[u8]) -> u8 {
    let slice_headers = openh264::nal_units(annex_b).filter_map(|nal| {
        let header = *nal.iter().position(|&b| b == 1).and_then(|i| nal.get(i + 1))?;
        matches!(header & 0x1f, 1 | 5).then_some(header)
    });
    let mut any = false;
    for header in slice_headers {
        any = true;
        if header & 0x60 != 0 {
            return 0;
        }
    }
    u8::from(any)
}

/// NAL unit types in an Annex-B access unit, in order.
pub fn nal_types(annex_b: &[u8]) -> Vec<u8> {
    openh264::nal_units(annex_b)
        .filter_map(|nal| {
            let header = nal.iter().position(|&b| b == 1).and_then(|i| nal.get(i + 1))?;
            Some(header & 0x1f)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::source::CaptureFormat;
    use crate::media::test_pattern::{read_timestamp_strip, TestPattern};
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;

    fn frames(width: usize, height: usize, count: u64) -> Vec<VideoFrame> {
        let pattern = TestPattern::new(CaptureFormat { width, height, fps: 30 }).unwrap();
        (0..count).map(|n| pattern.render(n, SystemTime::now())).collect()
    }

    #[test]
    fn first_frame_is_an_idr_with_sps_and_pps_then_p_frames() {
        let mut encoder = H264Encoder::new(EncoderSettings::default()).unwrap();
        let encoded: Vec<_> = frames(640, 480, 5).iter().map(|f| encoder.encode(f, false).unwrap()).collect();
        assert!(encoded[0].keyframe);
        assert_eq!(nal_types(&encoded[0].data), [7, 8, 5]);
        for frame in &encoded[1..] {
            assert!(!frame.keyframe);
            assert_eq!(nal_types(&frame.data), [1]);
        }
    }

    #[test]
    fn keyframe_on_demand_carries_sps_and_pps() {
        let mut encoder = H264Encoder::new(EncoderSettings::default()).unwrap();
        let input = frames(640, 480, 4);
        encoder.encode(&input[0], false).unwrap();
        encoder.encode(&input[1], false).unwrap();
        let forced = encoder.encode(&input[2], true).unwrap();
        assert!(forced.keyframe);
        assert_eq!(nal_types(&forced.data), [7, 8, 5]);
        assert!(!encoder.encode(&input[3], false).unwrap().keyframe);
    }

    #[test]
    fn sps_is_constrained_baseline() {
        let mut encoder = H264Encoder::new(EncoderSettings::default()).unwrap();
        let idr = encoder.encode(&frames(640, 480, 1)[0], false).unwrap();
        let sps = openh264::nal_units(&idr.data).next().unwrap();
        let start = sps.iter().position(|&b| b == 1).unwrap() + 1;
        assert_eq!(sps[start] & 0x1f, 7);
        assert_eq!(sps[start + 1], 0x42, "profile_idc baseline");
        assert_eq!(sps[start + 2] & 0x40, 0x40, "constraint_set1: constrained baseline");
    }

    /// `level_idc` of the SPS in front of an IDR.
    fn sps_level(idr: &EncodedFrame) -> u8 {
        let sps = openh264::nal_units(&idr.data).next().unwrap();
        let start = sps.iter().position(|&b| b == 1).unwrap() + 1;
        assert_eq!(sps[start] & 0x1f, 7);
        sps[start + 3]
    }

    #[test]
    fn the_sps_carries_the_level_asked_for() {
        for (width, height, idc) in [(640, 480, 31), (1280, 720, 31), (1920, 1080, 40)] {
            let level = H264Level::for_stream(width, height, 30, 6_000_000).unwrap();
            assert_eq!(level.idc(), idc);
            let settings = EncoderSettings { level, ..Default::default() };
            let mut encoder = H264Encoder::new(settings).unwrap();
            let idr = encoder.encode(&frames(width, height, 1)[0], false).unwrap();
            assert_eq!(sps_level(&idr), idc, "{width}x{height}");
        }
    }

    #[test]
    fn two_threads_write_small_slices_that_decode_to_the_picture() {
        let settings = EncoderSettings { threads: 2, ..Default::default() };
        let mut encoder = H264Encoder::new(settings).unwrap();
        let mut decoder = Decoder::new().unwrap();
        for (n, frame) in frames(1280, 720, 10).iter().enumerate() {
            let encoded = encoder.encode(frame, false).unwrap();
            let nals: Vec<&[u8]> = openh264::nal_units(&encoded.data).collect();
            let slices = nal_types(&encoded.data).iter().filter(|t| matches!(t, 1 | 5)).count();
            if n == 0 {
                assert!(slices > 2, "an IDR at 720p is cut into slices ({slices})");
            }
            for nal in nals {
                assert!(nal.len() <= SLICE_BYTES as usize + 4, "a NAL of {} bytes", nal.len());
            }
            let decoded = decoder.decode(&encoded.data).unwrap().expect("a picture");
            let (stride, _, _) = decoded.strides();
            assert_eq!(read_timestamp_strip(decoded.y(), stride), frame.captured_unix_ms(), "frame {n}");
        }
        assert!((1..=MAX_ENCODER_THREADS).contains(&default_encoder_threads()));
    }

    /// Two layers: every other frame is a non-reference frame of layer 1,
    /// and a decoder given only the base layer decodes every frame it gets.
    #[test]
    fn the_base_layer_alone_decodes_at_half_the_rate() {
        let mut encoder = H264Encoder::new(EncoderSettings::default()).unwrap();
        let input = frames(640, 480, 40);
        let encoded: Vec<_> = input.iter().map(|f| encoder.encode(f, false).unwrap()).collect();
        let layers: Vec<u8> = encoded.iter().map(|e| e.layer).collect();
        assert_eq!(layers[..6], [0, 1, 0, 1, 0, 1], "{layers:?}");
        assert_eq!(encoded.iter().filter(|e| e.keyframe).count(), 1, "one IDR at the start");
        let mut decoder = Decoder::new().unwrap();
        let mut decoded_frames = 0;
        for (frame, source) in encoded.iter().zip(&input).filter(|(e, _)| e.layer == 0) {
            let picture = decoder.decode(&frame.data).unwrap().expect("every base frame decodes");
            let (stride, _, _) = picture.strides();
            assert_eq!(read_timestamp_strip(picture.y(), stride), source.captured_unix_ms());
            decoded_frames += 1;
        }
        assert_eq!(decoded_frames, 20);
        // One layer: every frame is a reference frame.
        let settings = EncoderSettings { temporal_layers: 1, ..Default::default() };
        let mut encoder = H264Encoder::new(settings).unwrap();
        assert!(input[..4].iter().all(|f| encoder.encode(f, false).unwrap().layer == 0));
    }

    #[test]
    fn periodic_idr_follows_the_interval() {
        let settings =
            EncoderSettings { fps: 30, idr_interval: Duration::from_millis(300), ..Default::default() };
        let mut encoder = H264Encoder::new(settings).unwrap();
        let keyframes: Vec<u64> = frames(640, 480, 25)
            .iter()
            .map(|f| encoder.encode(f, false).unwrap())
            .filter(|e| e.keyframe)
            .map(|e| e.sequence)
            .collect();
        // 9 frames, rounded up to a multiple of the two layers' GOP of 2.
        assert_eq!(keyframes, [0, 10, 20]);
    }

    /// Padded strides: encode a frame whose rows carry garbage padding and
    /// check the decoded picture matches the visible part.
    #[test]
    fn strides_are_honoured() {
        let source = &frames(640, 480, 1)[0];
        let pad = 64;
        let mut padded = VideoFrame {
            y_stride: 640 + pad,
            uv_stride: 320 + pad / 2,
            y: vec![0xff; (640 + pad) * 480],
            u: vec![0x00; (320 + pad / 2) * 240],
            v: vec![0x00; (320 + pad / 2) * 240],
            ..source.clone()
        };
        for row in 0..480 {
            padded.y[row * (640 + pad)..][..640].copy_from_slice(&source.y[row * 640..][..640]);
        }
        for row in 0..240 {
            padded.u[row * (320 + pad / 2)..][..320].copy_from_slice(&source.u[row * 320..][..320]);
            padded.v[row * (320 + pad / 2)..][..320].copy_from_slice(&source.v[row * 320..][..320]);
        }
        let settings = EncoderSettings { bitrate: 6_000_000, ..Default::default() };
        let mut encoder = H264Encoder::new(settings).unwrap();
        let encoded = encoder.encode(&padded, false).unwrap();
        let mut decoder = Decoder::new().unwrap();
        let decoded = decoder.decode(&encoded.data).unwrap().expect("a picture");
        assert_eq!(decoded.dimensions(), (640, 480));
        let (stride, _, _) = decoded.strides();
        let mut total_error = 0u64;
        for row in 0..480 {
            for col in 0..640 {
                total_error += u64::from(decoded.y()[row * stride + col].abs_diff(source.y[row * 640 + col]));
            }
        }
        let mean_error = total_error as f64 / (640.0 * 480.0);
        assert!(mean_error < 6.0, "mean luma error {mean_error}: padding leaked into the picture?");
        assert_eq!(read_timestamp_strip(decoded.y(), stride), source.captured_unix_ms());
    }

    #[test]
    fn a_refused_bitrate_change_keeps_the_frame_and_the_old_rate() {
        let mut encoder = H264Encoder::new(EncoderSettings::default()).unwrap();
        encoder.refuse_bitrate_changes = true;
        let input = frames(640, 480, 3);
        assert!(encoder.encode(&input[0], false).unwrap().keyframe);
        encoder.set_bitrate(1_000_000);
        // The change is tried after this keyframe is encoded: refused, and the keyframe stays.
        let forced = encoder.encode(&input[1], true).expect("the frame survives a refused change");
        assert!(forced.keyframe);
        assert_eq!(encoder.bitrate(), 2_500_000, "the old rate stays");
        assert!(encoder.bitrate_refusal_logged);
        encoder.set_bitrate(900_000);
        assert!(encoder.encode(&input[2], false).is_ok(), "and so do the frames after it");
        assert_eq!(encoder.bitrate(), 2_500_000);
        encoder.refuse_bitrate_changes = false;
        encoder.set_bitrate(900_000);
        encoder.encode(&input[2], false).unwrap();
        assert_eq!(encoder.bitrate(), 900_000);
        assert_eq!(encoder.applied_bitrate, 900_000);
    }

    #[test]
    fn bitrate_changes_take_effect_and_stay_in_bounds() {
        let settings = EncoderSettings {
            bitrate: 200_000,
            min_bitrate: 100_000,
            max_bitrate: 4_000_000,
            ..Default::default()
        };
        let mut encoder = H264Encoder::new(settings).unwrap();
        let input = frames(640, 480, 90);
        let bytes_at = |encoder: &mut H264Encoder, range: std::ops::Range<usize>| {
            range.map(|i| encoder.encode(&input[i], false).unwrap().data.len()).sum::<usize>()
        };
        let low = bytes_at(&mut encoder, 0..30);
        // 4x the bitrate (the pattern needs about 1 Mbit/s at most at 640x480).
        encoder.set_bitrate(800_000);
        bytes_at(&mut encoder, 30..45); // settle
        let high = bytes_at(&mut encoder, 45..75);
        assert!(high > low * 2, "raising the bitrate had no effect: {low} -> {high} bytes");
        encoder.set_bitrate(50_000_000);
        assert_eq!(encoder.bitrate(), 4_000_000);
        encoder.set_bitrate(1);
        assert_eq!(encoder.bitrate(), 100_000);
        bytes_at(&mut encoder, 75..90);
    }
}
