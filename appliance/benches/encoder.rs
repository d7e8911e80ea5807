//! Encoder benchmark: milliseconds per frame for the live encoder settings
//! at 640x480, 1280x720 and 1920x1080 with one thread, and at 1280x720 and
//! 1920x1080 with 2 threads (`--encoder-threads`), on the moving test pattern.
//! `cargo bench -p lookout --bench encoder` prints median and p90 per case,
//! the test pattern's own render time, and the 1-thread / 2-thread ratio.

use std::time::{Duration, Instant, SystemTime};

use lookout::media::encoder::{EncoderSettings, H264Encoder};
use lookout::media::h264_level::H264Level;
use lookout::media::source::CaptureFormat;
use lookout::media::test_pattern::TestPattern;

const FRAMES: u64 = 150;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn main() {
    // `cargo test` runs benches with --test in some setups; keep that quick.
    let quick = std::env::args().any(|a| a == "--test");
    let frames = if quick { 5 } else { FRAMES };
    println!("encoder benchmark: {frames} frames per size, test pattern content, 30 fps settings");
    println!(
        "{:>10} {:>8} {:>12} {:>12} {:>12} {:>14}",
        "size", "threads", "median ms", "p90 ms", "render ms", "kbit/s @30fps"
    );
    let mut single = std::collections::HashMap::new();
    for (width, height, bitrate, threads) in [
        (640, 480, 1_500_000, 1),
        (1280, 720, 2_500_000, 1),
        (1280, 720, 2_500_000, 2),
        (1920, 1080, 4_000_000, 1),
        (1920, 1080, 4_000_000, 2),
    ] {
        let pattern = TestPattern::new(CaptureFormat { width, height, fps: 30 }).expect("pattern");
        let level = H264Level::for_stream(width, height, 30, bitrate * 2).expect("a level");
        let settings = EncoderSettings {
            bitrate,
            max_bitrate: bitrate * 2,
            level,
            threads,
            ..EncoderSettings::default()
        };
        let mut encoder = H264Encoder::new(settings).expect("encoder");
        let mut encode_times = Vec::new();
        let mut render_times = Vec::new();
        let mut bytes = 0usize;
        for n in 0..frames {
            let started = Instant::now();
            let frame = pattern.render(n, SystemTime::now());
            render_times.push(started.elapsed());
            let started = Instant::now();
            let encoded = encoder.encode(&frame, false).expect("encode");
            encode_times.push(started.elapsed());
            bytes += encoded.data.len();
        }
        encode_times.sort();
        render_times.sort();
        let kbps = bytes as f64 * 8.0 / (frames as f64 / 30.0) / 1000.0;
        let median = percentile(&encode_times, 0.5);
        let ratio = match single.get(&(width, height)) {
            Some(one) if threads > 1 => format!("  ({:.2} x faster than 1 thread)", one / median),
            _ => String::new(),
        };
        if threads == 1 {
            single.insert((width, height), median);
        }
        println!(
            "{:>10} {:>8} {:>12.2} {:>12.2} {:>12.2} {:>14.0}{ratio}",
            format!("{width}x{height}"),
            threads,
            median,
            percentile(&encode_times, 0.9),
            percentile(&render_times, 0.5),
            kbps
        );
    }
}
