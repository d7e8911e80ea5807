//! `/metrics` through the real `lookout` binary over real TLS, its text
//! parsed by the Prometheus project's own OpenMetrics parser (Python
//! `prometheus_client`, Debian's python3-prometheus-client, through
//! `tests/parse_metrics.py`): the room secret as a bearer token is needed
//! (401 with `WWW-Authenticate: Bearer` without it or with a wrong one,
//! wrong guesses throttled like the signaling path's, never the right
//! one), `--metrics-open` serves it without a token, a WHEP offer from a
//! foreign `Origin` counts as `foreign_origin`, and the counters move
//! while a viewer holds a slot. Video to a real browser while the counters
//! move: `tests/browser/metrics.test.mjs`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{LookoutProcess, RemoteServer};
use serde_json::Value;

/// Starts `lookout` with the test pattern at 640x480@30 and `extra` arguments.
fn start(extra: &[&str]) -> (LookoutProcess, RemoteServer, tempfile::TempDir) {
    let mut args = vec!["--resolution", "640x480", "--fps", "30"];
    args.extend_from_slice(extra);
    common::start_test_pattern_camera("127.0.0.1", &args)
}

/// The samples of one scrape, keyed `name{label="value",...}` (labels sorted).
struct Scrape {
    families: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parses `text` with the reference parser; panics with its error.
    fn parse(text: &str) -> Scrape {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parse_metrics.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Debian's python3 runs (the test command installs python3-prometheus-client)");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "the OpenMetrics parser refused the text: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
        let families = parsed["families"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, kind)| (name.clone(), kind.as_str().unwrap().to_owned()))
            .collect();
        let samples = parsed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                let labels: BTreeMap<_, _> = sample[1].as_object().unwrap().iter().collect();
                let labels: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap())).collect();
                let key = if labels.is_empty() {
                    sample[0].as_str().unwrap().to_owned()
                } else {
                    format!("{}{{{}}}", sample[0].as_str().unwrap(), labels.join(","))
                };
                (key, sample[2].as_f64().unwrap())
            })
            .collect();
        Scrape { families, samples }
    }

    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}; samples: {:?}", self.samples.keys()))
    }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

async fn scrape(server: &RemoteServer) -> Scrape {
    let response =
        server.request("GET", "/metrics", &bearer(&server.identity.room_secret().expose_hex())).await;
    assert_eq!(response.status, 200, "{}", response.text());
    Scrape::parse(&response.text())
}

#[tokio::test]
async fn metrics_need_the_room_secret_as_a_bearer_token_and_wrong_ones_are_throttled() {
    let (lookout, server, _state) = start(&[]);
    let secret = server.identity.room_secret().expose_hex();

    let none = server.get("/metrics").await;
    assert_eq!(none.status, 401, "{}", none.text());
    assert!(none.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", none.headers);
    let basic = server.request("GET", "/metrics", "Authorization: Basic bG9va291dDp4\r\n").await;
    assert_eq!(basic.status, 401, "another scheme is no token");

    let wrong = "ab".repeat(32);
    let refused = server.request("GET", "/metrics", &bearer(&wrong)).await;
    assert_eq!(refused.status, 401);
    assert!(refused.header("www-authenticate").is_some_and(|v| v.contains("invalid_token")));
    // The next wrong guess within the back-off (1 s) is refused unread ...
    let throttled = server.request("GET", "/metrics", &bearer("not even hex")).await;
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    assert!(throttled.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    // ... but the right secret is never kept waiting.
    let right = server.request("GET", "/metrics", &bearer(&secret)).await;
    assert_eq!(right.status, 200, "{}", right.text());
    assert!(right.header("content-type").is_some_and(|v| v.starts_with("application/openmetrics-text")));
    assert_eq!(right.header("cache-control"), Some("no-store"));
    let metrics = Scrape::parse(&right.text());
    assert_eq!(metrics.get("lookout_refused_total{reason=\"wrong_secret\"}"), 1.0);
    assert_eq!(metrics.get("lookout_refused_total{reason=\"throttled_guess\"}"), 1.0);
    assert_eq!(metrics.families.get("lookout_encode_seconds").map(String::as_str), Some("histogram"));
    assert_eq!(metrics.families.get("lookout_frames_captured").map(String::as_str), Some("counter"));
    assert!(metrics.get("process_resident_memory_bytes") > 1e6);
    assert!(metrics.get("process_cpu_seconds_total") >= 0.0);

    let log = lookout.log();
    assert!(!log.contains(&wrong) && !log.contains(&secret), "no token is logged:\n{log}");
}

#[tokio::test]
async fn metrics_open_serves_without_a_token() {
    let (_lookout, server, _state) = start(&["--metrics-open"]);
    let response = server.get("/metrics").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let metrics = Scrape::parse(&response.text());
    assert_eq!(metrics.get("lookout_viewers{transport=\"page\"}"), 0.0);
    let head = server.request("HEAD", "/metrics", "").await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    let post = server.request("POST", "/metrics", "Content-Length: 0\r\n").await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn a_whep_offer_from_a_foreign_origin_is_refused_and_counted() {
    let (lookout, server, _state) = start(&[]);
    let before = scrape(&server).await;
    assert_eq!(before.get("lookout_refused_total{reason=\"foreign_origin\"}"), 0.0);
    // Refused for its Origin before its token or its offer is looked at,
    // so the right secret and a made-up offer change nothing.
    let headers = format!(
        "Content-Type: application/sdp\r\nOrigin: https://elsewhere.example\r\n{}",
        bearer(&server.identity.room_secret().expose_hex())
    );
    let refused = server.request_with_body("POST", "/whep", &headers, b"v=0\r\n").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let after = scrape(&server).await;
    assert_eq!(after.get("lookout_refused_total{reason=\"foreign_origin\"}"), 1.0, "log:\n{}", lookout.log());
    assert_eq!(after.get("lookout_refused_total{reason=\"wrong_secret\"}"), 0.0);
    assert_eq!(after.get("lookout_viewers{transport=\"whep\"}"), 0.0);
}

#[tokio::test]
async fn counters_move_while_a_viewer_holds_a_slot() {
    let (lookout, server, _state) = start(&[]);
    let idle = scrape(&server).await;
    assert_eq!(idle.get("lookout_frames_encoded_total"), 0.0, "nobody watches: nothing encoded");
    assert_eq!(idle.get("lookout_encode_seconds_count"), 0.0);

    // A viewer joining the room takes a slot: the encoder runs for it.
    let mut viewer = server.client().await;
    let joined = viewer.join(&server.identity.room_secret().expose_hex()).await;
    assert_eq!(joined["type"], "Joined", "{joined}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let now = scrape(&server).await;
        if now.get("lookout_frames_encoded_total") >= 30.0 {
            break now;
        }
        assert!(Instant::now() < deadline, "the encoder did not run for the viewer; log:\n{}", lookout.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(busy.get("lookout_viewers{transport=\"page\"}"), 1.0);
    assert!(busy.get("lookout_signaling_connections") >= 1.0);
    assert!(busy.get("lookout_frames_captured_total") > idle.get("lookout_frames_captured_total"));
    assert!(busy.get("lookout_encode_seconds_count") >= 30.0);
    assert!(busy.get("lookout_encode_seconds_sum") > 0.0);
    assert!(busy.get("lookout_encoded_bytes_total") > 10_000.0);
    // This viewer holds a slot but never connects (no WebRTC here): it is
    // encoded for, and sent nothing. What a connected viewer is sent:
    // tests/browser/metrics.test.mjs (page) and whep.test.mjs (WHEP).
    assert_eq!(busy.get("lookout_sent_bytes_total{transport=\"page\"}"), 0.0);
    assert_eq!(busy.get("lookout_sent_bytes_total{transport=\"whep\"}"), 0.0);
    assert_eq!(busy.get("lookout_capture_to_send_seconds_count"), 0.0);
    assert_eq!(busy.families.get("lookout_capture_to_send_seconds").map(String::as_str), Some("histogram"));
    let keyframes = busy.get("lookout_keyframes_total{cause=\"requested\"}")
        + busy.get("lookout_keyframes_total{cause=\"encoder\"}");
    assert!(keyframes >= 1.0, "the stream starts on a keyframe");
    assert!(busy.get("lookout_encoder_target_bits_per_second") > 0.0);
    assert_eq!(busy.get("lookout_camera_up"), 1.0);
    assert_eq!(busy.get("lookout_camera_restarts_total{cause=\"panic\"}"), 0.0);
    assert!(
        busy.get("process_cpu_seconds_total") > idle.get("process_cpu_seconds_total"),
        "encoding costs CPU"
    );
    viewer.close().await;
}
