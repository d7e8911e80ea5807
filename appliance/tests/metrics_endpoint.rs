//! `/metrics` through the real `lookout` binary over real TLS, its text
//! parsed by the Prometheus project's own OpenMetrics parser (Python
//! `prometheus_client`, Debian's python3-prometheus-client, through
//! `tests/parse_metrics.py`): the room secret as a bearer token is needed
//! (401 with `WWW-Authenticate: Bearer` without it or with a wrong one,
//! wrong guesses throttled like the signaling path's, never the right
//! one), `--metrics-open` serves it without a token, a WHEP offer from a
//! foreign `Origin` counts as `foreign_origin`, the counters move while a
//! viewer holds a slot, and a viewer that connects (webrtc-rs as the page's
//! part, [`PageViewer`]) moves the bytes sent under `page` and gets a
//! capture-to-send time per frame. Video to a real browser while the counters
//! move: `tests/browser/metrics.test.mjs`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{LookoutProcess, Received, RemoteServer, SignalingClient};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCDtlsRole;
use serde_json::{json, Value};
use tokio::sync::watch;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};

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
    // encoded for, and sent nothing (a connected one:
    // `a_connected_page_viewer_is_sent_bytes_with_a_capture_to_send_time_each`).
    assert_eq!(busy.get("lookout_sent_bytes_total{transport=\"page\"}"), 0.0);
    assert_eq!(busy.get("lookout_sent_bytes_total{transport=\"whep\"}"), 0.0);
    assert_eq!(busy.get("lookout_capture_to_send_seconds_count"), 0.0);
    // Nor has it a link yet to skip frames on or drop retransmissions for
    // (a shaped link that does: tests/browser/shaped.mjs).
    assert_eq!(busy.get("lookout_frames_dropped_total{cause=\"link_backlog\"}"), 0.0);
    assert_eq!(busy.get("lookout_retransmissions_dropped_total{cause=\"late\"}"), 0.0);
    assert_eq!(busy.get("lookout_retransmissions_dropped_total{cause=\"duplicate\"}"), 0.0);
    assert_eq!(busy.get("lookout_link_overuses_total"), 0.0);
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

/// A page viewer that really connects: webrtc-rs (the stack the camera
/// uses) in the browser's part. It joins the room over signaling, answers
/// the camera's offer (its own candidates inside the answer), takes the
/// camera's trickled candidates, and counts the RTP packets it receives.
/// That the real page and a real browser work: tests/browser/.
struct PageViewer {
    pc: Arc<dyn PeerConnection>,
    signaling: SignalingClient,
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    packets: Arc<AtomicU64>,
}

struct ViewerHandler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    packets: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ViewerHandler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let packets = self.packets.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(_) => {
                        packets.fetch_add(1, Ordering::Relaxed);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

impl PageViewer {
    /// Joins the camera's room; the camera offers at once.
    async fn join(server: &RemoteServer) -> PageViewer {
        let mut signaling = server.client().await;
        let joined = signaling.join(&server.identity.room_secret().expose_hex()).await;
        assert_eq!(joined["type"], "Joined", "{joined}");
        let mut media = MediaEngine::default();
        media.register_default_codecs().expect("the default codecs");
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        let packets = Arc::new(AtomicU64::new(0));
        let handler = ViewerHandler { state: state_tx, gathered: gathered_tx, packets: packets.clone() };
        // The camera offers `a=setup:active` (it is the DTLS client; see
        // peer::signal::offer_for_browser): answer `passive` as browsers do
        // (webrtc-rs would answer `active` too, and neither would serve).
        let setting = SettingEngineBuilder::new().with_answering_dtls_role(RTCDtlsRole::Server).build();
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_setting_engine(setting)
            .with_handler(Arc::new(handler))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .expect("a peer connection");
        PageViewer { pc: Arc::new(pc), signaling, state, gathered, packets }
    }

    /// Answers the offer, takes candidates, until `packets` RTP packets
    /// arrived (or panics after `within`).
    async fn receive(&mut self, packets: u64, within: Duration, lookout: &LookoutProcess) {
        let deadline = Instant::now() + within;
        while self.packets.load(Ordering::Relaxed) < packets {
            assert!(
                Instant::now() < deadline,
                "{} of {packets} RTP packets, connection {:?}; log:\n{}",
                self.packets.load(Ordering::Relaxed),
                *self.state.borrow(),
                lookout.log()
            );
            let Some(Received::Json(message)) = self.signaling.next_within(Duration::from_millis(100)).await
            else {
                continue;
            };
            if message["type"] != "Room/Signal" {
                continue;
            }
            let (from, signal) = (message["from"].clone(), &message["signal"]);
            if signal["type"] == "offer" {
                let offer: RTCSessionDescription = serde_json::from_value(signal.clone()).expect("an offer");
                self.pc.set_remote_description(offer).await.expect("the offer applies");
                let answer = self.pc.create_answer(None).await.expect("an answer");
                self.pc.set_local_description(answer).await.expect("the answer applies");
                // Host candidates on loopback: gathered at once.
                let mut gathered = self.gathered.clone();
                let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|done| *done)).await;
                let answer = self.pc.local_description().await.expect("a local description");
                let signal = json!({"type": "answer", "sdp": answer.sdp});
                self.signaling.send(json!({"type": "Signal", "to": from, "signal": signal})).await;
            } else if signal["candidate"].as_str().is_some_and(|c| !c.is_empty()) {
                let candidate: RTCIceCandidateInit =
                    serde_json::from_value(signal.clone()).expect("a candidate");
                self.pc.add_ice_candidate(candidate).await.expect("the candidate applies");
            }
        }
    }

    async fn close(self) {
        let _ = self.pc.close().await;
        self.signaling.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_page_viewer_is_sent_bytes_with_a_capture_to_send_time_each() {
    let (lookout, server, _state) = start(&[]);
    let mut viewer = PageViewer::join(&server).await;
    viewer.receive(100, Duration::from_secs(20), &lookout).await;
    let first = scrape(&server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = scrape(&server).await;
    viewer.close().await;

    let page = "lookout_sent_bytes_total{transport=\"page\"}";
    assert!(first.get(page) > 10_000.0, "the keyframe and more were sent: {}", first.get(page));
    assert!(second.get(page) > first.get(page), "sending goes on");
    assert!(
        second.get(page) <= second.get("lookout_encoded_bytes_total"),
        "one viewer, at most what was encoded"
    );
    assert_eq!(second.get("lookout_sent_bytes_total{transport=\"whep\"}"), 0.0);
    let count = |s: &Scrape| s.get("lookout_capture_to_send_seconds_count");
    let sum = |s: &Scrape| s.get("lookout_capture_to_send_seconds_sum");
    let sends = count(&second) - count(&first);
    assert!(sends >= 15.0, "about 30 frames sent in 1 s: {sends}");
    let mean = (sum(&second) - sum(&first)) / sends;
    let encode = (second.get("lookout_encode_seconds_sum") - first.get("lookout_encode_seconds_sum"))
        / (second.get("lookout_encode_seconds_count") - first.get("lookout_encode_seconds_count"));
    println!(
        "in 1 s: {sends} frames sent, {} bytes; capture to send {:.1} ms on average (encoding {:.1} ms)",
        second.get(page) - first.get(page),
        mean * 1000.0,
        encode * 1000.0
    );
    assert!(mean > 0.0 && mean < 1.0, "capture to send {mean} s");
    assert_eq!(second.get("lookout_capture_to_send_seconds_bucket{le=\"+Inf\"}"), count(&second));
    assert_eq!(second.families.get("lookout_sent_bytes").map(String::as_str), Some("counter"));
}
