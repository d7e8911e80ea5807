//! The H.264 level the browser is told is the level it gets: for each of
//! 640x480, 1280x720 and 1920x1080 at 30 fps, the camera's real offer (an
//! in-process `App`, a real TLS WebSocket viewer) names a `profile-level-id`
//! whose level equals the `level_idc` in the SPS the encoder writes with the
//! same settings; and `lookout` refuses a resolution no level allows.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::RemoteServer;
use lookout::media::encoder::H264Encoder;
use lookout::media::source::{CaptureFormat, FrameSource};
use lookout::media::test_pattern::TestPattern;
use lookout::settings::{MediaSettings, Settings};

/// The `profile-level-id` of the H.264 codec in the camera's offer to a viewer.
async fn offered_profile_level_id(media: MediaSettings) -> String {
    let state = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_tests(state.path().to_owned());
    settings.media = Some(media);
    let (identity, origin) = lookout::identity_store::load_or_create(&settings.state_dir).unwrap();
    let app = lookout::app::App::start(&settings, &identity, origin).await.unwrap();
    let server = RemoteServer { addr: app.local_addr().unwrap(), identity };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    let mut viewer = server.client().await;
    viewer.join(&server.identity.room_secret().expose_hex()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let sdp = loop {
        assert!(Instant::now() < deadline, "no offer from the camera");
        let Some(common::Received::Json(message)) = viewer.next_within(Duration::from_secs(1)).await else {
            continue;
        };
        if message["type"] == "Room/Signal" && message["signal"]["type"] == "offer" {
            break message["signal"]["sdp"].as_str().expect("an SDP").to_owned();
        }
    };
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    let fmtp = sdp.lines().find(|line| line.starts_with("a=fmtp:") && line.contains("packetization-mode=1"));
    let fmtp = fmtp.unwrap_or_else(|| panic!("no H.264 fmtp in the offer:\n{sdp}"));
    let id = fmtp.split("profile-level-id=").nth(1).expect("profile-level-id");
    id.chars().take(6).collect()
}

/// `level_idc` of the SPS the encoder writes for this stream.
fn encoded_level(media: &MediaSettings) -> u8 {
    let mut pattern = TestPattern::new(media.format).unwrap();
    let mut encoder = H264Encoder::new(media.encoder).unwrap();
    let idr = encoder.encode(&pattern.next_frame().unwrap(), false).unwrap();
    let sps = openh264::nal_units(&idr.data).next().expect("a NAL unit");
    let start = sps.iter().position(|&b| b == 1).expect("a start code") + 1;
    assert_eq!(sps[start] & 0x1f, 7, "the IDR starts with its SPS");
    sps[start + 3]
}

#[tokio::test]
async fn the_offered_level_is_the_level_in_the_stream() {
    for (width, height, level_idc) in [(640, 480, 0x1f), (1280, 720, 0x1f), (1920, 1080, 0x28)] {
        let media = MediaSettings::for_tests(width, height, 30);
        assert_eq!(media.format, CaptureFormat { width, height, fps: 30 });
        let in_stream = encoded_level(&media);
        let offered = offered_profile_level_id(media).await;
        assert_eq!(&offered[..4], "42e0", "constrained baseline ({width}x{height})");
        let offered_level = u8::from_str_radix(&offered[4..], 16).unwrap();
        assert_eq!(offered_level, in_stream, "SDP level == SPS level at {width}x{height}");
        assert_eq!(in_stream, level_idc, "the lowest level (3.1 at least) for {width}x{height}@30");
    }
}

#[test]
fn a_resolution_no_level_allows_is_refused_at_start() {
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["--listen", "127.0.0.1:0", "--no-mdns", "--camera", "test-pattern"])
        .args(["--resolution", "4096x4096"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no H.264 level allows 4096x4096 at 30 fps"), "{stderr}");
    assert!(stderr.contains("choose a smaller --resolution"), "{stderr}");
}
