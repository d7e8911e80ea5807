//! `GET /snapshot.jpg` through the real `lookout` binary over real TLS: the
//! room secret as a bearer token (as for `/metrics`); a JPEG of a raw
//! captured frame of the test pattern, decoded here by `jpeg-decoder`, at
//! the right size, whose timestamp strip reads back within a second of
//! now; `?width=` scales it down; the live encoder is left alone (nobody
//! watching: nothing encoded; someone watching: no keyframe asked for).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{HttpResponse, LookoutProcess, RemoteServer};
use lookout::media::test_pattern::read_timestamp_strip;
use serde_json::Value;

/// Starts `lookout` with the test pattern at 1280x720@30.
fn start() -> (LookoutProcess, RemoteServer, tempfile::TempDir) {
    common::start_test_pattern_camera("127.0.0.1", &["--resolution", "1280x720", "--fps", "30"])
}

async fn get_with_secret(server: &RemoteServer, path: &str) -> HttpResponse {
    let auth = format!("Authorization: Bearer {}\r\n", server.identity.room_secret().expose_hex());
    server.request("GET", path, &auth).await
}

/// Decodes a JPEG; (width, height, the green channel as a luma-like plane).
fn decode(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    let pixels = decoder.decode().expect("a valid JPEG");
    let info = decoder.info().expect("JPEG info");
    assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::RGB24);
    let green = pixels.chunks_exact(3).map(|rgb| rgb[1]).collect();
    (usize::from(info.width), usize::from(info.height), green)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn info(server: &RemoteServer) -> Value {
    serde_json::from_slice(&server.get("/api/info").await.body).unwrap()
}

/// The `requested` keyframe count from `/metrics`.
async fn requested_keyframes(server: &RemoteServer) -> u64 {
    let text = get_with_secret(server, "/metrics").await.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("lookout_keyframes_total{cause=\"requested\"}"))
        .unwrap_or_else(|| panic!("no requested keyframes in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_snapshot_is_a_fresh_jpeg_of_the_raw_frame_and_needs_the_secret() {
    let (lookout, server, _state) = start();

    let none = server.get("/snapshot.jpg").await;
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    let wrong = server
        .request("GET", "/snapshot.jpg", &format!("Authorization: Bearer {}\r\n", "0".repeat(64)))
        .await;
    assert_eq!(wrong.status, 401);

    // Nobody watches: capture is idle, the request takes one frame.
    let asked = Instant::now();
    let response = get_with_secret(&server, "/snapshot.jpg").await;
    let took = asked.elapsed();
    let received_ms = now_ms();
    assert_eq!(response.status, 200, "{}; log:\n{}", response.text(), lookout.log());
    assert_eq!(response.header("content-type"), Some("image/jpeg"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let (width, height, green) = decode(&response.body);
    assert_eq!((width, height), (1280, 720));
    let captured_ms = read_timestamp_strip(&green, width);
    let age = received_ms as i64 - captured_ms as i64;
    println!(
        "snapshot: {} KiB, answered in {} ms, frame {age} ms old",
        response.body.len() / 1024,
        took.as_millis()
    );
    assert!((0..1000).contains(&age), "the strip says {captured_ms}, {age} ms before the answer arrived");

    let camera = &info(&server).await["camera"];
    assert_eq!(camera["frames_encoded"], 0, "a snapshot never runs the encoder: {camera}");

    let small = get_with_secret(&server, "/snapshot.jpg?width=640").await;
    assert_eq!(small.status, 200, "{}", small.text());
    let (width, height, _) = decode(&small.body);
    assert_eq!((width, height), (640, 360));
    for bad in ["/snapshot.jpg?width=abc", "/snapshot.jpg?width=4000", "/snapshot.jpg?width=4"] {
        let response = get_with_secret(&server, bad).await;
        assert_eq!(response.status, 400, "{bad}: {}", response.text());
    }
    let post = server.request("POST", "/snapshot.jpg", "Content-Length: 0\r\n").await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn snapshots_while_someone_watches_ask_the_encoder_for_nothing() {
    let (lookout, server, _state) = start();
    let mut viewer = server.client().await;
    let joined = viewer.join(&server.identity.room_secret().expose_hex()).await;
    assert_eq!(joined["type"], "Joined", "{joined}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while info(&server).await["camera"]["frames_encoded"].as_u64().unwrap_or(0) < 30 {
        assert!(Instant::now() < deadline, "the encoder did not run for the viewer; log:\n{}", lookout.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = requested_keyframes(&server).await;
    for _ in 0..3 {
        let response = get_with_secret(&server, "/snapshot.jpg").await;
        assert_eq!(response.status, 200);
        let (width, _, green) = decode(&response.body);
        let age = now_ms() as i64 - read_timestamp_strip(&green, width) as i64;
        assert!((0..1000).contains(&age), "{age} ms old");
    }
    assert_eq!(requested_keyframes(&server).await, before, "no keyframe for a snapshot");
    viewer.close().await;
}
