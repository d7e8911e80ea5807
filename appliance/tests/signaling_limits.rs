//! Limits and abuse: oversized messages, floods, wrong secrets, stalled
//! handshakes and connection caps. Every test ends by showing that the
//! server still serves a well-behaved client.

mod common;

use std::time::{Duration, Instant};

use common::{Received, TestServer, PROMPT};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

async fn still_serves(server: &TestServer) {
    let mut client = server.client().await;
    assert_eq!(client.join(&server.secret_hex()).await["type"], "Joined");
}

#[tokio::test]
async fn a_message_over_64_kib_is_refused_with_1009() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.joined_client().await;
    // Exactly at the limit is fine...
    let filler = "x".repeat(64 * 1024 - r#"{"type":"Signal","signal":""}"#.len());
    client.send_text(&format!(r#"{{"type":"Signal","signal":"{filler}"}}"#)).await;
    client.expect_silence(Duration::from_millis(200)).await;
    // ...one byte more is not.
    client.send_binary(vec![b' '; 64 * 1024 + 1]).await;
    client.expect_fatal("message-too-large", 1009).await;
    still_serves(&server).await;
}

#[tokio::test]
async fn a_flood_of_messages_is_closed_with_1008() {
    let server =
        TestServer::start(|s| s.connection.rate = lookout::limits::RateLimit { burst: 10, per_second: 1.0 })
            .await;
    let mut flooder = server.joined_client().await;
    let mut victim = server.joined_client().await;
    flooder.recv().await; // Room/Join
    for n in 0..30 {
        flooder.send(json!({"type": "Signal", "signal": n})).await;
    }
    // The burst goes through, then the flooder is cut off.
    let mut relayed = 0;
    loop {
        match victim.next().await {
            Received::Json(m) if m["type"] == "Room/Signal" => relayed += 1,
            Received::Json(m) if m["type"] == "Room/Leave" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(relayed, 9, "burst of 10 = JoinOrCreate + 9 signals");
    let error = flooder.recv().await;
    assert_eq!(error["code"], "rate-limited");
    assert!(matches!(flooder.next().await, Received::Closed(Some(1008))));
    still_serves(&server).await;
}

#[tokio::test]
async fn wrong_secrets_are_throttled_with_growing_back_off() {
    let server = TestServer::start(|s| {
        s.throttle.base_delay = Duration::from_millis(300);
        s.throttle.max_delay = Duration::from_secs(5);
    })
    .await;
    let wrong = common::room("00");
    let mut guesser = server.client().await;
    guesser.send(json!({"type": "JoinOrCreate", "room_id": wrong})).await;
    guesser.expect_fatal("unknown-room", 1008).await;

    // During the back-off wrong guesses are not looked at...
    let mut hurried = server.client().await;
    hurried.send(json!({"type": "JoinOrCreate", "room_id": common::room("01")})).await;
    hurried.expect_fatal("too-many-attempts", 1013).await;
    // ...but the right secret joins at once.
    still_serves(&server).await;

    // After 300 ms another wrong guess is judged, and doubles the wait.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut second = server.client().await;
    second.send(json!({"type": "JoinOrCreate", "room_id": wrong})).await;
    second.expect_fatal("unknown-room", 1008).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut early = server.client().await;
    early.send(json!({"type": "JoinOrCreate", "room_id": wrong})).await;
    early.expect_fatal("too-many-attempts", 1013).await;

    tokio::time::sleep(Duration::from_millis(400)).await;
    still_serves(&server).await;
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_dropped_after_the_handshake_timeout() {
    let server = TestServer::start(|s| s.handshake_timeout = Duration::from_millis(300)).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PROMPT, tcp.read(&mut buf)).await.expect("server closes in time");
    assert!(matches!(read, Ok(0) | Err(_)), "connection closed: {read:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "not before the timeout: {elapsed:?}");
    still_serves(&server).await;
}

#[tokio::test]
async fn a_client_that_sends_no_http_request_after_tls_is_dropped() {
    let server = TestServer::start(|s| s.handshake_timeout = Duration::from_millis(300)).await;
    let mut tls = server.tls().await;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PROMPT, tls.read(&mut buf)).await.expect("server closes in time");
    assert!(matches!(read, Ok(0) | Err(_)), "connection closed: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn at_the_per_address_cap_the_oldest_unjoined_connection_makes_room() {
    let server = TestServer::start(|s| s.max_connections_per_ip = 3).await;
    let mut oldest = server.client().await;
    let _b = server.client().await;
    let _c = server.client().await;
    // A fourth connection from the same address gets in; the oldest idle one goes.
    let _d = server.client().await;
    assert!(matches!(oldest.next().await, Received::Closed(_)), "the oldest idle connection was closed");
}

#[tokio::test]
async fn joined_viewers_are_never_evicted_and_the_cap_then_refuses() {
    let server = TestServer::start(|s| s.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(server.joined_client().await);
    }
    assert!(server.connect_ws().await.is_err(), "fourth signaling connection refused (503)");
    assert_eq!(server.request("GET", "/healthz", "").await.status, 200, "plain HTTP has its own budget");
    held.pop().unwrap().close().await;
    // A freed place is usable again (the server notices the close promptly).
    let deadline = Instant::now() + PROMPT;
    loop {
        if server.connect_ws().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The joined viewers are all still there (they only heard of the others).
    for client in &mut held {
        while let Some(received) = client.next_within(Duration::from_millis(100)).await {
            assert!(matches!(received, Received::Json(_)), "a joined viewer was closed: {received:?}");
        }
    }
}

#[tokio::test]
async fn connections_in_total_are_capped_for_joined_viewers() {
    let server = TestServer::start(|s| {
        s.max_connections = 2;
        s.max_connections_per_ip = 10;
    })
    .await;
    let _a = server.joined_client().await;
    let _b = server.joined_client().await;
    assert!(server.connect_ws().await.is_err());
    let response = tokio::time::timeout(PROMPT, TcpStream::connect(server.addr)).await;
    assert!(response.is_ok(), "the listener itself stays up");
}

#[tokio::test]
async fn a_client_that_does_not_join_is_closed_after_the_join_timeout() {
    let server = TestServer::start(|s| s.connection.join_timeout = Duration::from_millis(400)).await;
    let mut idle = server.client().await;
    let started = Instant::now();
    idle.expect_fatal("join-timeout", 1008).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "not before the timeout");
    // A client that joined in time stays.
    let mut viewer = server.joined_client().await;
    viewer.expect_silence(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn pings_count_against_the_message_rate() {
    let server =
        TestServer::start(|s| s.connection.rate = lookout::limits::RateLimit { burst: 10, per_second: 1.0 })
            .await;
    let mut pinger = server.joined_client().await;
    for _ in 0..30 {
        let _ = pinger.ws.send(tokio_tungstenite::tungstenite::Message::Ping(Default::default())).await;
    }
    pinger.expect_fatal("rate-limited", 1008).await;
    still_serves(&server).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off_without_stalling_the_room() {
    let server = TestServer::start(|s| {
        s.rooms = lookout::settings::RoomMode::Open { max_clients: 3 };
        s.connection.rate = lookout::limits::RateLimit { burst: 10_000, per_second: 10_000.0 };
        s.connection.write_timeout = Duration::from_millis(500);
    })
    .await;
    let id = common::room("aa");
    let mut talker = server.client().await;
    talker.join(&id).await;
    let mut sleeper = server.client().await;
    sleeper.join(&id).await;
    let mut listener = server.client().await;
    listener.join(&id).await;
    talker.recv().await;
    talker.recv().await;
    sleeper.recv().await;
    // 4 KiB signals: the sleeper's socket buffers and queue fill up.
    let big = "y".repeat(4096);
    let mut received = 0usize;
    let mut sleeper_left = false;
    for n in 0..2000 {
        talker.send(json!({"type": "Signal", "signal": {"n": n, "pad": big}})).await;
        // The listener keeps up.
        while let Some(Received::Json(m)) = listener.next_within(Duration::from_millis(1)).await {
            if m["type"] == "Room/Signal" {
                received += 1;
            } else if m["type"] == "Room/Leave" && m["client_id"] == sleeper.id.as_str() {
                sleeper_left = true;
            }
        }
        if sleeper_left {
            break;
        }
    }
    assert!(sleeper_left, "the stalled client was disconnected");
    assert!(received > 0);
}
