//! The signaling protocol as documented in `docs/protocol.md`, exercised
//! over real WSS connections.

mod common;

use common::{room, Received, TestServer, PROMPT};
use lookout::settings::RoomMode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn server_greets_each_client_with_a_fresh_128_bit_id() {
    let server = TestServer::start(|_| {}).await;
    let a = server.client().await;
    let b = server.client().await;
    for id in [&a.id, &b.id] {
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
    assert_ne!(a.id, b.id);
}

#[tokio::test]
async fn joining_the_camera_room_with_the_secret_lists_who_is_there() {
    let server = TestServer::start(|_| {}).await;
    let mut first = server.client().await;
    let joined = first.join(&server.secret_hex()).await;
    assert_eq!(joined, json!({"type": "Joined", "room_id": server.secret_hex(), "clients": []}));

    let mut second = server.client().await;
    let joined = second.join(&server.secret_hex()).await;
    assert_eq!(joined["clients"], json!([first.id]));
    assert_eq!(first.recv().await, json!({"type": "Room/Join", "client_id": second.id}));
}

#[tokio::test]
async fn room_id_is_accepted_in_upper_case_and_as_a_text_message() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.client().await;
    let upper = server.secret_hex().to_uppercase();
    client.send_text(&json!({"type": "JoinOrCreate", "room_id": upper}).to_string()).await;
    assert_eq!(client.recv().await["type"], "Joined");
}

#[tokio::test]
async fn signal_without_to_reaches_every_other_member_unchanged() {
    let server = TestServer::start(|s| s.rooms = RoomMode::Open { max_clients: 3 }).await;
    let id = room("ab");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.join(&id).await;
    b.join(&id).await;
    a.recv().await; // Room/Join b
    c.join(&id).await;
    a.recv().await; // Room/Join c
    b.recv().await; // Room/Join c

    // Whitespace and key order inside the signal survive the relay.
    let raw = r#"{"type":"Signal","signal":{"z": 1, "sdp":"v=0\r\n", "a":[true,null]}}"#;
    a.send_text(raw).await;
    for peer in [&mut b, &mut c] {
        let relayed = peer.recv().await;
        assert_eq!(relayed["type"], "Room/Signal");
        assert_eq!(relayed["from"], a.id.as_str());
        assert_eq!(relayed["signal"], json!({"z": 1, "sdp": "v=0\r\n", "a": [true, null]}));
    }
    a.expect_silence(Duration::from_millis(200)).await;

    // Byte-for-byte: read the raw frame.
    a.send_text(r#"{"type":"Signal","signal":{"z": 1,  "a":2}}"#).await;
    let frame = futures_util::StreamExt::next(&mut b.ws).await.unwrap().unwrap();
    let text = String::from_utf8(frame.into_data().to_vec()).unwrap();
    assert!(text.ends_with(r#""signal":{"z": 1,  "a":2}}"#), "{text}");
}

#[tokio::test]
async fn signal_with_to_reaches_only_that_client() {
    let server = TestServer::start(|s| s.rooms = RoomMode::Open { max_clients: 3 }).await;
    let id = room("cd");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.join(&id).await;
    b.join(&id).await;
    c.join(&id).await;
    a.recv().await;
    a.recv().await;
    b.recv().await;

    a.send(json!({"type": "Signal", "signal": {"candidate": "x"}, "to": c.id})).await;
    let relayed = c.recv().await;
    assert_eq!(relayed, json!({"type": "Room/Signal", "from": a.id, "signal": {"candidate": "x"}}));
    b.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn signal_to_an_unknown_peer_is_an_error_but_the_connection_stays() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.joined_client().await;
    let mut b = server.joined_client().await;
    a.recv().await; // Room/Join b
    a.send(json!({"type": "Signal", "signal": 1, "to": "0123456789abcdef0123456789abcdef"})).await;
    let error = a.recv().await;
    assert_eq!(error["code"], "unknown-peer");
    a.send(json!({"type": "Signal", "signal": 2})).await;
    assert_eq!(b.recv().await["signal"], 2, "still connected and relaying");
}

#[tokio::test]
async fn every_server_message_is_a_binary_frame() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.connect_ws().await.unwrap();
    let frame = futures_util::StreamExt::next(&mut client.ws).await.unwrap().unwrap();
    assert!(frame.is_binary(), "Hello is binary: {frame:?}");
    // `recv` panics on text frames, so every further exchange checks it too.
}

/// Each protocol breach: the error code and the close code.
#[tokio::test]
async fn protocol_breaches_get_a_specific_error_and_a_close() {
    let server = TestServer::start(|_| {}).await;
    let cases: Vec<(String, &str, u16)> = vec![
        ("this is not json".into(), "invalid-json", 1007),
        ("[1,2,3]".into(), "invalid-message", 1008),
        (json!({"type": "Dance"}).to_string(), "unknown-type", 1008),
        (json!({"type": "Hello", "client_id": "00"}).to_string(), "server-message", 1008),
        (json!({"type": "Room/Signal", "from": "00", "signal": 1}).to_string(), "server-message", 1008),
        (json!({"type": "JoinOrCreate", "room_id": "abc"}).to_string(), "invalid-room-id", 1008),
        (json!({"type": "JoinOrCreate", "room_id": "g".repeat(64)}).to_string(), "invalid-room-id", 1008),
        (json!({"type": "JoinOrCreate"}).to_string(), "invalid-message", 1008),
        (json!({"type": "Signal", "signal": {}}).to_string(), "not-joined", 1008),
    ];
    for (input, code, close) in cases {
        let mut client = server.client().await;
        client.send_text(&input).await;
        client.expect_fatal(code, close).await;
    }
}

/// One masked client frame: FIN, the given reserved bits and opcode.
fn raw_frame(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut frame = vec![first_byte, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    let key = [0x12, 0x34, 0x56, 0x78];
    if masked {
        frame.extend_from_slice(&key);
    }
    frame.extend(payload.iter().enumerate().map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }));
    frame
}

#[tokio::test]
async fn frames_that_break_rfc_6455_get_invalid_frame_and_1002() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(|_| {}).await;
    let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        ("reserved opcode", raw_frame(0x83, b"{}", true), "invalid-frame", 1002),
        ("reserved bits", raw_frame(0xc1, b"{}", true), "invalid-frame", 1002),
        ("unmasked frame", raw_frame(0x81, b"{}", false), "invalid-frame", 1002),
        ("continuation first", raw_frame(0x80, b"{}", true), "invalid-frame", 1002),
        ("fragmented ping", raw_frame(0x09, b"x", true), "invalid-frame", 1002),
        (
            "new message inside a fragmented one",
            [raw_frame(0x01, b"{\"type\":", true), raw_frame(0x81, b"{}", true)].concat(),
            "invalid-frame",
            1002,
        ),
        ("text frame not UTF-8", raw_frame(0x81, &[0x7b, 0xc3, 0x28, 0x7d], true), "invalid-json", 1007),
    ];
    for (what, bytes, code, close) in cases {
        let mut client = server.client().await;
        let socket = client.ws.get_mut();
        socket.write_all(&bytes).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        socket.flush().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        client.expect_fatal(code, close).await;
    }
    // The server goes on serving.
    let mut client = server.client().await;
    assert_eq!(client.join(&server.secret_hex()).await["type"], "Joined");
}

#[tokio::test]
async fn a_second_join_or_create_is_refused() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.joined_client().await;
    client.send(json!({"type": "JoinOrCreate", "room_id": server.secret_hex()})).await;
    client.expect_fatal("already-joined", 1008).await;
}

#[tokio::test]
async fn appliance_mode_refuses_other_rooms() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.client().await;
    client.send(json!({"type": "JoinOrCreate", "room_id": room("00")})).await;
    client.expect_fatal("unknown-room", 1008).await;
}

#[tokio::test]
async fn open_mode_creates_rooms_of_two_by_default() {
    let server = TestServer::start(|s| s.rooms = RoomMode::Open { max_clients: 2 }).await;
    let id = room("ee");
    let mut a = server.client().await;
    assert_eq!(a.join(&id).await, json!({"type": "Joined", "room_id": id, "clients": []}));
    let mut b = server.client().await;
    assert_eq!(b.join(&id).await["clients"], json!([a.id]));
    let mut c = server.client().await;
    c.send(json!({"type": "JoinOrCreate", "room_id": id})).await;
    c.expect_fatal("room-full", 1013).await;
    // Another ID is another room.
    let mut d = server.client().await;
    assert_eq!(d.join(&room("ef")).await["clients"], json!([]));
}

#[tokio::test]
async fn room_holds_max_viewers_then_refuses() {
    let server = TestServer::start(|s| s.rooms = RoomMode::Appliance { max_viewers: 2 }).await;
    let _a = server.joined_client().await;
    let _b = server.joined_client().await;
    let mut c = server.client().await;
    c.send(json!({"type": "JoinOrCreate", "room_id": server.secret_hex()})).await;
    c.expect_fatal("room-full", 1013).await;
}

#[tokio::test]
async fn leave_is_announced_promptly_on_clean_close() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.joined_client().await;
    let b = server.joined_client().await;
    a.recv().await; // Room/Join
    let b_id = b.id.clone();
    let started = std::time::Instant::now();
    b.close().await;
    assert_eq!(a.recv().await, json!({"type": "Room/Leave", "client_id": b_id}));
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn leave_is_announced_promptly_when_the_tcp_connection_is_reset() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.joined_client().await;
    let b = server.joined_client().await;
    a.recv().await;
    let b_id = b.id.clone();
    // Linger 0 turns the close into a TCP RST.
    let tcp = match b.ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
        _ => panic!("expected a TLS stream"),
    };
    socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO)).unwrap();
    let started = std::time::Instant::now();
    drop(b);
    assert_eq!(a.recv().await, json!({"type": "Room/Leave", "client_id": b_id}));
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_keepalive_timeout() {
    let server = TestServer::start(|s| {
        s.connection.ping_interval = Duration::from_millis(100);
        s.connection.peer_timeout = Duration::from_millis(400);
    })
    .await;
    let mut a = server.joined_client().await;
    let b = server.joined_client().await;
    a.recv().await;
    // `b` stops reading: tungstenite answers pings only when polled, so it
    // falls silent. `a` keeps reading and so keeps answering pings.
    let b_id = b.id.clone();
    let started = std::time::Instant::now();
    let leave = a.recv().await;
    assert_eq!(leave, json!({"type": "Room/Leave", "client_id": b_id}));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < PROMPT, "took {elapsed:?}");
    drop(b);
    // `a` answered pings all along and is still in.
    a.expect_silence(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn server_shutdown_closes_clients_with_going_away() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.joined_client().await;
    server.stop().await;
    let error = client.recv().await;
    assert_eq!(error["code"], "shutting-down");
    assert!(matches!(client.next().await, Received::Closed(Some(1001))));
}

#[tokio::test]
async fn fields_written_with_json_escapes_are_understood() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.client().await;
    let escaped: String = server.secret_hex().chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    client.send_text(&format!(r#"{{"type":"\u004aoinOrCreate","room_id":"{escaped}"}}"#)).await;
    assert_eq!(client.recv().await["type"], "Joined");
}

#[tokio::test]
async fn a_deeply_nested_signal_is_refused_and_the_connection_goes_on() {
    let server = TestServer::start(|s| s.rooms = RoomMode::Open { max_clients: 2 }).await;
    let id = room("cd");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join(&id).await;
    b.join(&id).await;
    a.recv().await; // Room/Join b

    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    a.send_text(&format!(r#"{{"type":"Signal","signal":{deep}}}"#)).await;
    let error = a.recv().await;
    assert_eq!(error["code"], "signal-too-deep", "{error}");
    b.expect_silence(Duration::from_millis(300)).await;

    // Within the limit (32), the same connection still relays.
    let fine = format!("{}{}", "[".repeat(32), "]".repeat(32));
    a.send_text(&format!(r#"{{"type":"Signal","signal":{fine}}}"#)).await;
    let relayed = b.recv().await;
    assert_eq!(relayed["type"], "Room/Signal");
    assert_eq!(relayed["from"], a.id.as_str());
}
