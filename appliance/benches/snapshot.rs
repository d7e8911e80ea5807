//! Snapshot benchmark: milliseconds to make the `/snapshot.jpg` JPEG from a
//! raw I420 frame of the moving test pattern, at 1280x720 (full size and
//! `?width=640`) and 1920x1080. Prints median and p90 per case; the target
//! (issue 15) is a median under 150 ms at 1280x720.
//! `cargo bench -p lookout --bench snapshot` (release), or with
//! `--profile dev` (opt-level 2, the build the tests use).

use std::time::{Duration, Instant, SystemTime};

use lookout::media::snapshot::encode_jpeg;
use lookout::media::source::CaptureFormat;
use lookout::media::test_pattern::TestPattern;

const RUNS: u64 = 30;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let runs = if quick { 3 } else { RUNS };
    println!("snapshot benchmark: {runs} JPEGs per case from raw test-pattern frames, quality 85, 4:2:0");
    println!("{:>10} {:>8} {:>12} {:>12} {:>10}", "frame", "width", "median ms", "p90 ms", "KiB");
    for (width, height, out) in [(1280, 720, None), (1280, 720, Some(640)), (1920, 1080, None)] {
        let pattern = TestPattern::new(CaptureFormat { width, height, fps: 30 }).expect("pattern");
        let mut times = Vec::new();
        let mut size = 0;
        for n in 0..runs {
            let frame = pattern.render(n, SystemTime::now());
            let started = Instant::now();
            let jpeg = encode_jpeg(&frame, out).expect("JPEG");
            times.push(started.elapsed());
            size = jpeg.len();
        }
        times.sort();
        println!(
            "{:>10} {:>8} {:>12.1} {:>12.1} {:>10}",
            format!("{width}x{height}"),
            out.map_or("full".to_owned(), |w| w.to_string()),
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            size / 1024
        );
    }
}
