//! The WHEP endpoint (`/whep`) through the real `lookout` binary over real
//! TLS: the room secret as a bearer token (401 with `WWW-Authenticate`
//! without it), 415 for an offer that is not `application/sdp`, 413 over
//! 64 KiB, 400 for an offer the camera cannot use; a session takes a slot
//! of the one viewer count (`--max-viewers 1`: a second `POST` and a page
//! viewer are refused), `PATCH` takes trickled candidates (and checks
//! `If-Match`), `DELETE` frees the slot, an unknown session is 404,
//! `OPTIONS` says what is allowed, CORS only for listed origins, and a
//! session whose viewer never connects removes itself. The offer is a
//! browser's (Chromium's form, receive-only H.264); that real clients get
//! video is the browser stage's `whep.test.mjs` and the aiortc client's.

mod common;

use std::time::{Duration, Instant};

use common::{HttpResponse, LookoutProcess, RemoteServer};
use serde_json::Value;

/// A receive-only H.264 offer as Chromium writes it (ICE and DTLS values
/// made up: nobody answers the camera's checks, which is the point of the
/// self-removal test).
const OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=recvonly\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 H264/90000\r\n\
a=rtcp-fb:96 transport-cc\r\n\
a=rtcp-fb:96 ccm fir\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n";

const PLAYER: &str = "http://127.0.0.1:8089";

/// Starts `lookout` with the test pattern and room for one viewer.
fn start() -> (LookoutProcess, RemoteServer, tempfile::TempDir) {
    common::start_test_pattern_camera(
        "127.0.0.1",
        &["--resolution", "640x360", "--fps", "15", "--max-viewers", "1", "--whep-allow-origin", PLAYER],
    )
}

fn bearer(server: &RemoteServer) -> String {
    format!("Authorization: Bearer {}\r\n", server.identity.room_secret().expose_hex())
}

async fn post_offer(server: &RemoteServer, headers: &str) -> HttpResponse {
    server.request_with_body("POST", "/whep", headers, OFFER.as_bytes()).await
}

async fn viewers(server: &RemoteServer) -> u64 {
    let info: Value = serde_json::from_slice(&server.get("/api/info").await.body).unwrap();
    info["viewers"].as_u64().unwrap()
}

#[tokio::test]
async fn whep_needs_the_secret_and_an_sdp_offer_and_says_what_is_allowed() {
    let (_lookout, server, _state) = start();
    let sdp = "Content-Type: application/sdp\r\n";

    let none = post_offer(&server, sdp).await;
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", none.headers);
    let wrong = post_offer(&server, &format!("{sdp}Authorization: Bearer {}\r\n", "0".repeat(64))).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("www-authenticate").is_some_and(|v| v.contains("invalid_token")));
    let text = post_offer(&server, &format!("Content-Type: text/plain\r\n{}", bearer(&server))).await;
    assert_eq!(text.status, 415);
    let untyped = post_offer(&server, &bearer(&server)).await;
    assert_eq!(untyped.status, 415);
    let huge = vec![b'a'; 70 * 1024];
    let too_large =
        server.request_with_body("POST", "/whep", &format!("{sdp}{}", bearer(&server)), &huge).await;
    assert_eq!(too_large.status, 413);
    let garbage =
        server.request_with_body("POST", "/whep", &format!("{sdp}{}", bearer(&server)), b"v=0\r\n").await;
    assert_eq!(garbage.status, 400, "{}", garbage.text());

    let options = server.request("OPTIONS", "/whep", "").await;
    assert_eq!(options.status, 204);
    assert_eq!(options.header("allow"), Some("POST, OPTIONS"));
    let session_options = server.request("OPTIONS", &format!("/whep/{}", "ab".repeat(16)), "").await;
    assert_eq!(session_options.header("allow"), Some("PATCH, DELETE, OPTIONS"));
    assert_eq!(options.header("accept-patch"), Some("application/trickle-ice-sdpfrag"));
    let unknown = server.request("DELETE", &format!("/whep/{}", "ab".repeat(16)), &bearer(&server)).await;
    assert_eq!(unknown.status, 404);
    let anonymous_delete = server.request("DELETE", &format!("/whep/{}", "ab".repeat(16)), "").await;
    assert_eq!(anonymous_delete.status, 401);
    assert_eq!(server.get("/whep").await.status, 405);

    // CORS: a listed origin's preflight is answered; any other page is
    // refused before its token is looked at.
    let preflight = server
        .request(
            "OPTIONS",
            "/whep",
            &format!("Origin: {PLAYER}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n"),
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some(PLAYER));
    assert!(preflight.header("access-control-allow-headers").is_some_and(|h| h.contains("Authorization")));
    let foreign =
        post_offer(&server, &format!("{sdp}Origin: https://elsewhere.example\r\n{}", bearer(&server))).await;
    assert_eq!(foreign.status, 403);
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    assert_eq!(viewers(&server).await, 0);
}

#[tokio::test]
async fn a_whep_session_holds_a_viewer_slot_until_deleted_or_dead() {
    let (lookout, server, _state) = start();
    let headers = format!("Content-Type: application/sdp\r\n{}", bearer(&server));

    let created = post_offer(&server, &headers).await;
    assert_eq!(created.status, 201, "{}; log:\n{}", created.text(), lookout.log());
    assert_eq!(created.header("content-type"), Some("application/sdp"));
    let location = created.header("location").expect("a Location").to_owned();
    let id = location.strip_prefix("/whep/").expect("Location is /whep/<id>");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "an unguessable id: {id}");
    assert!(created.header("etag").is_some_and(|e| e.starts_with('"') && e.len() > 2));
    let answer = created.text();
    assert!(answer.contains("a=sendonly") && answer.contains("H264/90000"), "{answer}");
    assert!(
        answer.contains("a=candidate:") && answer.contains("a=end-of-candidates"),
        "non-trickle: {answer}"
    );
    assert_eq!(viewers(&server).await, 1);

    // PATCH: trickled candidates (204), only with the session's tag.
    let etag = created.header("etag").unwrap_or_default().to_owned();
    let trickle =
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\n\
                   a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let frag = "Content-Type: application/trickle-ice-sdpfrag\r\n";
    let patched = server
        .request_with_body(
            "PATCH",
            &location,
            &format!("{frag}If-Match: {etag}\r\n{}", bearer(&server)),
            trickle.as_bytes(),
        )
        .await;
    assert_eq!(patched.status, 204, "{}", patched.text());
    let stale = server
        .request_with_body(
            "PATCH",
            &location,
            &format!("{frag}If-Match: \"0\"\r\n{}", bearer(&server)),
            trickle.as_bytes(),
        )
        .await;
    assert_eq!(stale.status, 412);
    let untyped = server.request_with_body("PATCH", &location, &bearer(&server), trickle.as_bytes()).await;
    assert_eq!(untyped.status, 415);
    let unknown = server
        .request_with_body(
            "PATCH",
            &format!("/whep/{}", "cd".repeat(16)),
            &format!("{frag}{}", bearer(&server)),
            trickle.as_bytes(),
        )
        .await;
    assert_eq!(unknown.status, 404);
    let anonymous = server.request_with_body("PATCH", &location, frag, trickle.as_bytes()).await;
    assert_eq!(anonymous.status, 401);

    // Full: another WHEP viewer and a page viewer are refused.
    let full = post_offer(&server, &headers).await;
    assert_eq!(full.status, 503, "{}", full.text());
    let mut page = server.client().await;
    let refused = page.join(&server.identity.room_secret().expose_hex()).await;
    assert_eq!(refused["code"], "room-full", "{refused}");

    let deleted = server.request("DELETE", &location, &bearer(&server)).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(viewers(&server).await, 0, "DELETE frees the slot");
    assert_eq!(server.request("DELETE", &location, &bearer(&server)).await.status, 404);

    // The slot is free again; this viewer never answers the camera's ICE
    // checks, so its session fails and removes itself.
    let again = post_offer(&server, &headers).await;
    assert_eq!(again.status, 201, "{}", again.text());
    let ended = Instant::now();
    let deadline = ended + Duration::from_secs(45);
    while viewers(&server).await != 0 {
        assert!(Instant::now() < deadline, "the dead session still holds its slot; log:\n{}", lookout.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("a WHEP session nobody connected to was gone after {} ms", ended.elapsed().as_millis());
    let gone = again.header("location").unwrap_or_default();
    assert_eq!(server.request("DELETE", gone, &bearer(&server)).await.status, 404);
}
