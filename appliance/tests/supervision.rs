//! Supervision and truthful health, through the real `lookout` binary (a
//! debug build, which has the test-only `--camera fault:<kind>@<frames>`
//! source, see `media::fault`): a source that panics, fails or hangs is
//! restarted and `/healthz` says so and recovers; an absent camera is a
//! degraded state, not a restart loop; the camera is marked in `Joined` and
//! no flood of viewer messages throws it out of its room; the systemd
//! watchdog stops when the supervisor wedges; a killed camera peer rejoins;
//! one viewer count decides admission. Video reaching a real browser
//! through each fault is checked by `tests/browser/supervision.test.mjs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{LookoutProcess, RemoteServer};
use serde_json::{json, Value};

/// Starts `lookout` at 640x480@30 with `extra` arguments.
fn start(extra: &[&str], env: &[(&str, &str)]) -> (LookoutProcess, RemoteServer, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookout"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-mdns", "--webrtc-bind", "127.0.0.1", "--no-webrtc-mdns"])
        .args(["--resolution", "640x480", "--fps", "30"])
        .args(extra)
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .envs(env.iter().copied());
    let lookout = LookoutProcess::spawn(command);
    let addr = lookout.wait_for_addr("serving HTTPS");
    let identity = lookout_provisioning::Identity::load(&state.path().join("identity.json")).unwrap();
    (lookout, RemoteServer { addr, identity }, state)
}

/// `/healthz` as (status, reason); reason `ok` for a 200.
async fn health(server: &RemoteServer) -> (u16, String) {
    let response = server.get("/healthz").await;
    if response.status == 200 {
        return (200, response.text().trim().to_owned());
    }
    let body: Value = serde_json::from_slice(&response.body).expect("a 503 carries JSON");
    (response.status, body["reason"].as_str().unwrap_or_default().to_owned())
}

async fn info(server: &RemoteServer) -> Value {
    serde_json::from_slice(&server.get("/api/info").await.body).expect("JSON")
}

/// Polls `/healthz` until `want` (status, reason) is seen, or panics.
async fn wait_for_health(
    server: &RemoteServer,
    lookout: &LookoutProcess,
    want: (u16, &str),
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = health(server).await;
        if (got.0, got.1.as_str()) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never said {want:?} (last {got:?}); log:\n{}",
            lookout.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn restarts_after_a(fault: &str, reason: &str, counter: &str) {
    // 90 frames: about 3 s of health first.
    let (lookout, server, _state) = start(&["--camera", &format!("fault:{fault}@90")], &[]);
    wait_for_health(&server, &lookout, (200, "ok"), Duration::from_secs(10)).await;
    assert_eq!(info(&server).await["camera"]["restarts"]["total"], 0);
    wait_for_health(&server, &lookout, (503, reason), Duration::from_secs(10)).await;
    let bad_since = Instant::now();
    wait_for_health(&server, &lookout, (200, "ok"), Duration::from_secs(5)).await;
    println!("{fault}: /healthz was 503 {reason} for {} ms", bad_since.elapsed().as_millis());
    let camera = info(&server).await["camera"].clone();
    assert_eq!(camera["state"], "running", "{camera}");
    assert_eq!(camera["restarts"]["total"], 1, "{camera}");
    assert_eq!(camera["restarts"][counter], 1, "{camera}");
    assert_eq!(camera["last_restart"], counter, "{camera}");
    let log = lookout.log();
    assert_eq!(log.matches("media worker failed; restarting").count(), 1, "logged once:\n{log}");
}

#[tokio::test]
async fn a_panicking_source_is_restarted_and_healthz_recovers() {
    restarts_after_a("panic", "restarting", "panic").await;
}

#[tokio::test]
async fn a_failing_source_is_restarted_and_healthz_recovers() {
    restarts_after_a("error", "restarting", "error").await;
}

#[tokio::test]
async fn a_hung_source_is_abandoned_after_2_s_and_healthz_recovers() {
    restarts_after_a("stall", "camera-stalled", "stall").await;
}

#[cfg(not(feature = "libcamera"))]
#[tokio::test]
async fn an_absent_camera_is_a_degraded_state_not_a_restart_loop() {
    let (lookout, server, _state) = start(&["--camera", "libcamera"], &[]);
    wait_for_health(&server, &lookout, (503, "camera-missing"), Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(health(&server).await, (503, "camera-missing".to_owned()));
    let camera = info(&server).await["camera"].clone();
    assert_eq!(camera["state"], "missing", "{camera}");
    assert_eq!(camera["restarts"]["total"], 0, "{camera}");
    // Still serving: the page loads and a viewer can join the room.
    assert_eq!(server.get("/").await.status, 200);
    let mut viewer = server.client().await;
    assert_eq!(viewer.join(&server.identity.room_secret().expose_hex()).await["type"], "Joined");
    assert_eq!(
        lookout.log().matches("no camera; serving without video").count(),
        1,
        "said once, not per retry"
    );
}

#[tokio::test]
async fn the_camera_is_marked_and_a_flood_from_four_viewers_cannot_drop_it() {
    let (lookout, server, _state) = start(&["--camera", "test-pattern"], &[]);
    wait_for_health(&server, &lookout, (200, "ok"), Duration::from_secs(10)).await;
    let secret = server.identity.room_secret().expose_hex();
    let mut viewers = Vec::new();
    let mut camera = String::new();
    for _ in 0..4 {
        let mut viewer = server.client().await;
        let joined = viewer.join(&secret).await;
        camera = joined["camera"].as_str().expect("Joined names the camera").to_owned();
        assert!(joined["clients"].as_array().unwrap().iter().any(|c| c == camera.as_str()), "{joined}");
        viewers.push(viewer);
    }
    // 4 x 100 messages at once, all to the camera (more than a browser's
    // 256-message outbox would have held).
    for viewer in &mut viewers {
        for n in 0..100 {
            // The 100th may exceed that viewer's own rate limit: the viewer
            // is then cut off, the camera must not be.
            let message =
                json!({"type": "Signal", "to": camera, "signal": {"candidate": format!("junk {n}")}});
            viewer.send_binary(message.to_string().into_bytes()).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let info = info(&server).await;
    assert_eq!(info["camera_peer_in_room"], true, "{info}");
    assert_eq!(info["camera"]["peer_restarts"], 0, "{info}");
    // The four hold every slot (--max-viewers 4) unless their own rate limit
    // cut them off, which depends on how fast they sent: they leave, and a
    // newcomer is admitted once the hub has seen them go.
    drop(viewers);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let joined = loop {
        let mut late = server.client().await;
        let joined = late.join(&secret).await;
        if joined["code"] != "room-full" || tokio::time::Instant::now() > deadline {
            break joined;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(joined["camera"], camera.as_str(), "the same camera is still there: {joined}");
    assert_eq!(health(&server).await.0, 200);
}

#[tokio::test]
async fn the_watchdog_stops_when_the_supervisor_wedges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let notify = path.to_str().unwrap().to_owned();
    // Pings every 250 ms; the supervisor wedges after about 3 s of frames.
    let (lookout, _server, _state) = start(
        &["--camera", "fault:wedge-supervisor@90"],
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "500000")],
    );
    let mut pings: Vec<Instant> = Vec::new();
    let mut buffer = [0u8; 512];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        if let Ok(n) = socket.recv(&mut buffer) {
            if String::from_utf8_lossy(&buffer[..n]).lines().any(|l| l == "WATCHDOG=1") {
                pings.push(Instant::now());
            }
        }
    }
    let wedged = lookout.wait_for_line("the media supervisor wedges");
    assert!(pings.len() >= 3, "pings while healthy: {}; log:\n{}", pings.len(), lookout.log());
    let last = *pings.last().unwrap();
    let silent_for = started.elapsed().saturating_sub(last.duration_since(started));
    assert!(
        silent_for >= Duration::from_secs(6),
        "WATCHDOG=1 kept arriving after the wedge ({wedged}); silent for only {silent_for:?}"
    );
    assert!(lookout.log().contains("no more watchdog pings"), "{}", lookout.log());
}

/// The camera peer's task is killed (the debug build's hidden
/// `fault:kill-peer@N` hook, absent from release builds): the old camera
/// leaves the room, a new one joins marked as the camera, offers a
/// connection to the viewer already there, and the restart is counted.
#[tokio::test]
async fn a_killed_camera_peer_rejoins_its_room_and_offers_again() {
    // 60 frames: 2 s after start, the viewer is in the room by then.
    let (lookout, server, _state) = start(&["--camera", "fault:kill-peer@60"], &[]);
    let mut viewer = server.client().await;
    let joined = viewer.join(&server.identity.room_secret().expose_hex()).await;
    let first_camera = joined["camera"].as_str().expect("the camera is marked").to_owned();
    // The old camera leaves, a new one joins (marked) and offers a connection.
    let (mut left, mut new_camera, mut offered) = (false, None::<String>, false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(left && offered) {
        assert!(
            Instant::now() < deadline,
            "left {left}, new camera {new_camera:?}, offered {offered}; log:\n{}",
            lookout.log()
        );
        let Some(message) = viewer.next_within(Duration::from_secs(1)).await else { continue };
        let common::Received::Json(message) = message else { continue };
        match message["type"].as_str() {
            Some("Room/Leave") if message["client_id"] == first_camera.as_str() => left = true,
            Some("Room/Join") if message["camera"] == true => {
                new_camera = message["client_id"].as_str().map(str::to_owned);
            }
            Some("Room/Signal")
                if new_camera.is_some() && message["from"] == new_camera.as_deref().unwrap() =>
            {
                offered |= message["signal"]["type"] == "offer";
            }
            _ => {}
        }
    }
    assert_ne!(new_camera.as_deref(), Some(first_camera.as_str()));
    lookout.wait_for_line("injected fault: the camera peer is killed");
    let info = info(&server).await;
    assert_eq!(info["camera"]["peer_restarts"], 1, "{info}");
    assert_eq!(info["camera_peer_in_room"], true, "{info}");
    wait_for_health(&server, &lookout, (200, "ok"), Duration::from_secs(5)).await;
}

/// Polls `/api/info` until every viewer figure is `want`, or panics.
async fn wait_for_viewers(server: &RemoteServer, want: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let info = info(server).await;
        let figures = [&info["viewers"], &info["camera"]["viewers"], &info["signaling"]["viewers"]];
        if figures.iter().all(|n| **n == want) {
            return info;
        }
        assert!(Instant::now() < deadline, "viewers never {want}: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One viewer count: `--max-viewers 2` admits exactly two, `/api/info`
/// shows the same number everywhere, the encoder runs while it is above
/// zero, and a viewer that vanishes without a goodbye (its process killed:
/// the socket just closes) frees its slot for the next one.
#[tokio::test]
async fn max_viewers_admits_exactly_n_and_a_vanished_viewer_frees_its_slot() {
    let (lookout, server, _state) = start(&["--camera", "test-pattern", "--max-viewers", "2"], &[]);
    wait_for_health(&server, &lookout, (200, "ok"), Duration::from_secs(10)).await;
    let secret = server.identity.room_secret().expose_hex();
    let idle = wait_for_viewers(&server, 0, Duration::from_secs(5)).await;
    assert_eq!(idle["camera"]["frames_encoded"], 0, "nobody watches, nothing encoded: {idle}");

    let mut first = server.client().await;
    assert_eq!(first.join(&secret).await["type"], "Joined");
    let mut second = server.client().await;
    assert_eq!(second.join(&secret).await["type"], "Joined");
    wait_for_viewers(&server, 2, Duration::from_secs(5)).await;
    let mut third = server.client().await;
    third.send(json!({"type": "JoinOrCreate", "room_id": secret})).await;
    third.expect_fatal("room-full", 1013).await;
    // The encoder gate reads the same count: frames are being encoded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while info(&server).await["camera"]["frames_encoded"] == 0 {
        assert!(Instant::now() < deadline, "two viewers, but nothing encoded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let vanished_at = Instant::now();
    drop(first); // no close frame: the TCP connection just goes, as when a browser is killed
    wait_for_viewers(&server, 1, Duration::from_secs(10)).await;
    let freed_after = vanished_at.elapsed();
    let mut late = server.client().await;
    assert_eq!(late.join(&secret).await["type"], "Joined", "the freed slot is free");
    wait_for_viewers(&server, 2, Duration::from_secs(5)).await;
    let mut fourth = server.client().await;
    fourth.send(json!({"type": "JoinOrCreate", "room_id": secret})).await;
    fourth.expect_fatal("room-full", 1013).await;

    drop((second, late));
    wait_for_viewers(&server, 0, Duration::from_secs(10)).await;
    // With nobody left the encoder stops.
    let encoded = info(&server).await["camera"]["frames_encoded"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = info(&server).await["camera"]["frames_encoded"].as_u64().unwrap();
    assert!(later <= encoded + 1, "still encoding for nobody: {encoded} -> {later}");
    eprintln!("a vanished viewer's slot was free after {freed_after:?}");
}
