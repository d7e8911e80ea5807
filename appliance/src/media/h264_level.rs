//! The H.264 level of the stream, from its size, frame rate and bitrate.
//!
//! A level caps macroblocks per frame, macroblocks per second and bitrate
//! (ITU-T H.264 Table A-1). The stream's level is the lowest that allows the
//! configured `--resolution`, `--fps` and `--max-bitrate`, but never below
//! 3.1: `42e01f` (constrained baseline 3.1) is what every browser is known
//! to accept, and a lower level buys nothing. The same level goes into the
//! SDP (`profile-level-id`) and into the encoder's SPS (`level_idc`), so the
//! browser is told exactly what it gets. A stream no level allows is refused
//! at start.

/// One row of Table A-1: level_idc, max macroblocks/s, max frame size in
/// macroblocks, max bitrate (kbit/s, baseline: cpbBrVclFactor 1000).
struct Limits {
    idc: u8,
    max_mbps: u64,
    max_fs: u64,
    max_br_kbps: u64,
}

const TABLE: [Limits; 8] = [
    Limits { idc: 31, max_mbps: 108_000, max_fs: 3_600, max_br_kbps: 14_000 },
    Limits { idc: 32, max_mbps: 216_000, max_fs: 5_120, max_br_kbps: 20_000 },
    Limits { idc: 40, max_mbps: 245_760, max_fs: 8_192, max_br_kbps: 20_000 },
    Limits { idc: 41, max_mbps: 245_760, max_fs: 8_192, max_br_kbps: 50_000 },
    Limits { idc: 42, max_mbps: 522_240, max_fs: 8_704, max_br_kbps: 50_000 },
    Limits { idc: 50, max_mbps: 589_824, max_fs: 22_080, max_br_kbps: 135_000 },
    Limits { idc: 51, max_mbps: 983_040, max_fs: 36_864, max_br_kbps: 240_000 },
    Limits { idc: 52, max_mbps: 2_073_600, max_fs: 36_864, max_br_kbps: 240_000 },
];

/// An H.264 level (its `level_idc`: 31 is level 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Level {
    idc: u8,
}

/// Why no level fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no H.264 level allows {width}x{height} at {fps} fps and up to {max_bitrate_kbps} kbit/s: \
     level 5.2, the highest, allows at most 36864 macroblocks (16x16 pixels) a frame, \
     no side longer than 543 macroblocks (8688 pixels), 2073600 macroblocks a second and 240000 kbit/s; \
     choose a smaller --resolution, a lower --fps or a lower --max-bitrate"
)]
pub struct LevelError {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub max_bitrate_kbps: u64,
}

impl Default for H264Level {
    /// Level 3.1: up to 1280x720 at 30 fps.
    fn default() -> Self {
        H264Level { idc: 31 }
    }
}

impl H264Level {
    /// The lowest level (3.1 at least) that allows this stream.
    pub fn for_stream(
        width: usize,
        height: usize,
        fps: u32,
        max_bitrate_bps: u32,
    ) -> Result<H264Level, LevelError> {
        let mbs = |pixels: usize| (pixels as u64).div_ceil(16);
        let (width_mbs, height_mbs) = (mbs(width), mbs(height));
        let frame = width_mbs * height_mbs;
        let per_second = frame * u64::from(fps);
        let kbps = u64::from(max_bitrate_bps).div_ceil(1000);
        TABLE
            .iter()
            .find(|limits| {
                // A frame may not be too thin either (A.3.1 h, f): each side
                // at most sqrt(8 * MaxFS) macroblocks.
                frame <= limits.max_fs
                    && width_mbs * width_mbs <= 8 * limits.max_fs
                    && height_mbs * height_mbs <= 8 * limits.max_fs
                    && per_second <= limits.max_mbps
                    && kbps <= limits.max_br_kbps
            })
            .map(|limits| H264Level { idc: limits.idc })
            .ok_or(LevelError { width, height, fps, max_bitrate_kbps: kbps })
    }

    /// `level_idc` as written in the SPS (31 for level 3.1).
    pub fn idc(self) -> u8 {
        self.idc
    }

    /// The SDP's `profile-level-id`: constrained baseline at this level.
    pub fn profile_level_id(self) -> String {
        format!("42e0{:02x}", self.idc)
    }

    /// The level's openh264 setting.
    pub fn openh264(self) -> openh264::encoder::Level {
        use openh264::encoder::Level;
        match self.idc {
            31 => Level::Level_3_1,
            32 => Level::Level_3_2,
            40 => Level::Level_4_0,
            41 => Level::Level_4_1,
            42 => Level::Level_4_2,
            50 => Level::Level_5_0,
            51 => Level::Level_5_1,
            _ => Level::Level_5_2,
        }
    }
}

impl std::fmt::Display for H264Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.idc / 10, self.idc % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(width: usize, height: usize, fps: u32) -> String {
        H264Level::for_stream(width, height, fps, 6_000_000)
            .map_or_else(|e| format!("{e}"), |l| l.to_string())
    }

    #[test]
    fn common_streams_get_the_lowest_level_that_allows_them() {
        assert_eq!(level(640, 480, 30), "3.1", "never below 3.1");
        assert_eq!(level(1280, 720, 30), "3.1");
        assert_eq!(level(1280, 720, 60), "3.2");
        assert_eq!(level(1920, 1080, 30), "4.0");
        assert_eq!(level(1920, 1080, 60), "4.2");
        assert_eq!(level(2560, 1440, 30), "5.0");
        assert_eq!(level(3840, 2160, 30), "5.1");
        assert_eq!(level(4096, 2160, 60), "5.2");
    }

    #[test]
    fn the_bitrate_can_raise_the_level() {
        let level = |kbps: u32| H264Level::for_stream(1920, 1080, 30, kbps * 1000).unwrap().idc();
        assert_eq!(level(20_000), 40);
        assert_eq!(level(20_001), 41);
        assert!(H264Level::for_stream(640, 480, 30, 300_000_000).is_err());
    }

    #[test]
    fn a_stream_no_level_allows_is_refused_with_the_limits() {
        let error = H264Level::for_stream(4096, 4096, 30, 6_000_000).unwrap_err();
        assert!(error.to_string().contains("4096x4096 at 30 fps"), "{error}");
        assert!(error.to_string().contains("--resolution"), "{error}");
        // Too many macroblocks a second, and a frame too thin.
        assert!(H264Level::for_stream(1920, 1080, 240, 6_000_000).is_ok());
        assert!(H264Level::for_stream(3840, 2160, 120, 6_000_000).is_err());
        assert!(H264Level::for_stream(8688, 64, 30, 6_000_000).is_ok());
        assert!(H264Level::for_stream(8704, 64, 30, 6_000_000).is_err());
    }

    #[test]
    fn profile_level_id_is_constrained_baseline_at_the_level() {
        assert_eq!(H264Level::default().profile_level_id(), "42e01f");
        assert_eq!(H264Level::for_stream(1920, 1080, 30, 6_000_000).unwrap().profile_level_id(), "42e028");
    }
}
