//! The signals the camera and a browser exchange inside `Signal` /
//! `Room/Signal` messages (see `docs/protocol.md`, "Camera and viewer").
//!
//! - a session description, as `RTCSessionDescription.toJSON()`:
//!   `{"type":"offer"|"answer","sdp":"..."}`
//! - an ICE candidate, as `RTCIceCandidate.toJSON()`:
//!   `{"candidate":"candidate:...","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}`
//!   (an empty `candidate` marks the end of candidates)
//! - an ICE restart request from the viewer: `{"type":"restart-ice"}`

use serde_json::{json, Value};
use webrtc::peer_connection::{RTCIceCandidate, RTCIceCandidateInit, RTCSessionDescription};

/// A signal from a viewer, parsed.
#[derive(Debug)]
pub enum ViewerSignal {
    Description(Box<RTCSessionDescription>),
    Candidate(RTCIceCandidateInit),
    EndOfCandidates,
    RestartIce,
}

/// Why a viewer's signal was not understood.
#[derive(Debug, thiserror::Error)]
#[error("unrecognised signal from viewer: {0}")]
pub struct SignalError(String);

impl ViewerSignal {
    pub fn parse(signal: &Value) -> Result<ViewerSignal, SignalError> {
        if signal.get("type").and_then(Value::as_str) == Some("restart-ice") {
            return Ok(ViewerSignal::RestartIce);
        }
        if signal.get("sdp").is_some() {
            return serde_json::from_value(signal.clone())
                .map(|description| ViewerSignal::Description(Box::new(description)))
                .map_err(|e| SignalError(format!("session description: {e}")));
        }
        if signal.get("candidate").is_some() {
            let mut init: RTCIceCandidateInit =
                serde_json::from_value(signal.clone()).map_err(|e| SignalError(format!("candidate: {e}")))?;
            if init.candidate.is_empty() {
                return Ok(ViewerSignal::EndOfCandidates);
            }
            if init.sdp_mid.as_deref() == Some("") {
                init.sdp_mid = None;
            }
            return Ok(ViewerSignal::Candidate(init));
        }
        Err(SignalError("neither a description nor a candidate".into()))
    }
}

/// A local candidate as the browser's `addIceCandidate` takes it. The
/// library's own JSON has `sdpMid: ""`; we send the real mid.
pub fn candidate_json(candidate: &RTCIceCandidate, mid: Option<&str>) -> Option<Value> {
    let init = candidate.to_json().ok()?;
    Some(json!({
        "candidate": init.candidate,
        "sdpMid": mid,
        "sdpMLineIndex": 0,
        "usernameFragment": null,
    }))
}

/// The offer as the browser gets it, with the camera as the DTLS client
/// (`a=setup:active` instead of `actpass`), so the browser answers
/// `passive`.
///
/// Why: the camera is ICE-controlling, and its ICE stack drops every
/// non-STUN packet until its own check and nomination went through. The
/// browser (the DTLS client if it may choose) sends its first ClientHello
/// the moment *its* check succeeds, a few milliseconds too early, and it is
/// dropped; the browser's retransmit comes 50 ms later (100 ms on a second
/// loss). As the client, the camera sends its ClientHello the moment it is
/// connected, into a browser that is already listening. libwebrtc (Chrome,
/// Edge, Safari) and Firefox answer `passive` to an `active` offer. Only
/// the copy sent out is changed: the camera's own description keeps
/// `actpass`, and its DTLS role follows the answer.
pub fn offer_for_browser(offer: &RTCSessionDescription) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(offer)?;
    let sdp = offer.sdp.replace("a=setup:actpass", "a=setup:active");
    value["sdp"] = Value::String(sdp);
    Ok(value)
}

/// The first `a=mid:` of an SDP (with BUNDLE, all candidates belong to it).
pub fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|line| line.trim_end().strip_prefix("a=mid:").map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_browser_forms() {
        let answer = json!({"type": "answer", "sdp": "v=0\r\n"});
        assert!(matches!(ViewerSignal::parse(&answer), Ok(ViewerSignal::Description(_))));
        let candidate = json!({
            "candidate": "candidate:1 1 udp 2122260223 3d2b4f5e-1c1a.local 50000 typ host generation 0",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"
        });
        assert!(matches!(ViewerSignal::parse(&candidate), Ok(ViewerSignal::Candidate(_))));
        let end = json!({"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0});
        assert!(matches!(ViewerSignal::parse(&end), Ok(ViewerSignal::EndOfCandidates)));
        assert!(matches!(ViewerSignal::parse(&json!({"type": "restart-ice"})), Ok(ViewerSignal::RestartIce)));
        assert!(ViewerSignal::parse(&json!({"hello": 1})).is_err());
        assert!(ViewerSignal::parse(&json!({"sdp": 5})).is_err());
    }

    #[test]
    fn the_browser_is_asked_to_be_the_dtls_server() {
        let offer: RTCSessionDescription = serde_json::from_value(json!({
            "type": "offer",
            "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=setup:actpass\r\n",
        }))
        .unwrap_or_else(|e| panic!("an offer: {e}"));
        let sent = offer_for_browser(&offer).unwrap_or_else(|e| panic!("serialises: {e}"));
        assert_eq!(sent["type"], "offer");
        let sdp = sent["sdp"].as_str().unwrap_or_default();
        assert!(sdp.contains("a=setup:active\r\n") && !sdp.contains("actpass"), "{sdp}");
    }

    #[test]
    fn finds_the_first_mid() {
        assert_eq!(first_mid("v=0\r\nm=video 9\r\na=mid:0\r\na=mid:1\r\n").as_deref(), Some("0"));
        assert_eq!(first_mid("v=0\r\n"), None);
    }
}
