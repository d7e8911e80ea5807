//! The signaling messages and their JSON form (see `docs/protocol.md`).
//!
//! Peer messages are parsed field by field from a JSON object so that every
//! kind of bad input gets its own [`ErrorCode`]: broken JSON, a server
//! message sent by a client, an unknown type, a missing or malformed field.
//! Unknown extra fields are ignored, so the protocol can grow compatibly.
//! The `signal` payload is kept as raw JSON and relayed byte for byte, once
//! its nesting is known to be at most [`MAX_SIGNAL_DEPTH`] deep. String
//! fields may use any JSON escape (`"\u0061"` is `"a"`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::ids::{ClientId, RoomId};

/// Types a client may send.
pub const PEER_MESSAGE_TYPES: [&str; 2] = ["JoinOrCreate", "Signal"];
/// Types only the server sends; a client sending one breaks the protocol.
pub const SERVER_MESSAGE_TYPES: [&str; 6] =
    ["Hello", "Joined", "Error", "Room/Join", "Room/Leave", "Room/Signal"];

/// How deeply arrays and objects may nest in a relayed `signal` payload.
/// Real offers, answers and candidates nest 2 or 3 deep; a deeper payload
/// is refused with [`ErrorCode::SignalTooDeep`] so that no receiver's JSON
/// parser meets 30,000 nested brackets.
pub const MAX_SIGNAL_DEPTH: usize = 32;

/// A message from a client.
#[derive(Debug, Clone)]
pub enum PeerMessage {
    /// Enter the room, creating it if the mode allows.
    JoinOrCreate { room_id: RoomId },
    /// Relay `signal` to `to`, or to everyone else in the room.
    Signal { signal: Arc<RawValue>, to: Option<ClientId> },
}

/// A message from the server.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    Hello {
        client_id: ClientId,
    },
    Joined {
        room_id: RoomId,
        clients: Vec<ClientId>,
        /// Which of `clients` is the camera (appliance mode, when present).
        #[serde(skip_serializing_if = "Option::is_none")]
        camera: Option<ClientId>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    #[serde(rename = "Room/Join")]
    RoomJoin {
        client_id: ClientId,
        /// `true` when the newcomer is the camera (omitted otherwise).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        camera: bool,
    },
    #[serde(rename = "Room/Leave")]
    RoomLeave {
        client_id: ClientId,
    },
    #[serde(rename = "Room/Signal")]
    RoomSignal {
        from: ClientId,
        signal: Arc<RawValue>,
    },
}

impl ServerMessage {
    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every field is a string, a
        // list of strings or already-valid raw JSON.
        serde_json::to_string(self).unwrap_or_else(|_| String::from(r#"{"type":"Error","code":"internal"}"#))
    }

    pub fn error(code: ErrorCode) -> Self {
        ServerMessage::Error { code, message: code.description().to_owned() }
    }
}

/// Everything that can go wrong, as the kebab-case `code` of an `Error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The message is not JSON (or not UTF-8).
    InvalidJson,
    /// JSON, but not an object with a string `type`, or a field is missing or of the wrong kind.
    InvalidMessage,
    /// `type` names no message of this protocol.
    UnknownType,
    /// The client sent a message only the server may send.
    ServerMessage,
    /// `room_id` is not 64 hexadecimal characters.
    InvalidRoomId,
    /// `Signal` before `Joined`.
    NotJoined,
    /// A second `JoinOrCreate` on one connection.
    AlreadyJoined,
    /// No such room (appliance mode: a wrong room secret).
    UnknownRoom,
    /// Wrong room secrets from this address came too fast; wait and retry.
    TooManyAttempts,
    /// The room has no free place.
    RoomFull,
    /// `to` names no other client in the room. Not fatal.
    UnknownPeer,
    /// More messages than the rate limit allows.
    RateLimited,
    /// A `signal` payload nested deeper than [`MAX_SIGNAL_DEPTH`]; it is not
    /// relayed. Not fatal.
    SignalTooDeep,
    /// A message over the size limit.
    MessageTooLarge,
    /// The client did not read its messages fast enough.
    TooSlow,
    /// The server is shutting down.
    ShuttingDown,
    /// No `JoinOrCreate` within the join timeout (10 s) of connecting.
    JoinTimeout,
    /// A WebSocket frame that breaks RFC 6455 (reserved bits or opcode, an
    /// unmasked frame, a continuation frame with nothing to continue, a
    /// fragmented or oversized control frame).
    InvalidFrame,
}

impl ErrorCode {
    /// The human text sent with the code.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "the message is not valid JSON",
            ErrorCode::InvalidMessage => "the message is not a JSON object with the fields its type requires",
            ErrorCode::UnknownType => "unknown message type",
            ErrorCode::ServerMessage => "clients may send only JoinOrCreate and Signal",
            ErrorCode::InvalidRoomId => "a room ID is 64 hexadecimal characters",
            ErrorCode::NotJoined => "send JoinOrCreate and wait for Joined before Signal",
            ErrorCode::AlreadyJoined => "JoinOrCreate may be sent only once per connection",
            ErrorCode::UnknownRoom => "no such room: check the room secret",
            ErrorCode::TooManyAttempts => "too many wrong room secrets from this address; wait and try again",
            ErrorCode::RoomFull => "the room is full",
            ErrorCode::UnknownPeer => "no client with that ID in this room",
            ErrorCode::RateLimited => "too many messages",
            ErrorCode::SignalTooDeep => "the signal payload nests arrays and objects more than 32 deep",
            ErrorCode::MessageTooLarge => "message too large",
            ErrorCode::TooSlow => "the client does not read its messages",
            ErrorCode::ShuttingDown => "the server is shutting down",
            ErrorCode::JoinTimeout => "no JoinOrCreate in time after connecting",
            ErrorCode::InvalidFrame => "the WebSocket frame breaks RFC 6455",
        }
    }

    /// The WebSocket close code a fatal error ends the connection with, or
    /// `None` for the errors after which the connection goes on.
    pub fn close_code(self) -> Option<u16> {
        match self {
            ErrorCode::UnknownPeer | ErrorCode::SignalTooDeep => None,
            ErrorCode::InvalidJson => Some(1007),
            ErrorCode::MessageTooLarge => Some(1009),
            ErrorCode::TooManyAttempts | ErrorCode::RoomFull => Some(1013),
            ErrorCode::ShuttingDown => Some(1001),
            ErrorCode::InvalidFrame => Some(1002),
            ErrorCode::InvalidMessage
            | ErrorCode::UnknownType
            | ErrorCode::ServerMessage
            | ErrorCode::InvalidRoomId
            | ErrorCode::NotJoined
            | ErrorCode::AlreadyJoined
            | ErrorCode::UnknownRoom
            | ErrorCode::RateLimited
            | ErrorCode::TooSlow
            | ErrorCode::JoinTimeout => Some(1008),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid-json",
            ErrorCode::InvalidMessage => "invalid-message",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::ServerMessage => "server-message",
            ErrorCode::InvalidRoomId => "invalid-room-id",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::UnknownRoom => "unknown-room",
            ErrorCode::TooManyAttempts => "too-many-attempts",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::SignalTooDeep => "signal-too-deep",
            ErrorCode::MessageTooLarge => "message-too-large",
            ErrorCode::TooSlow => "too-slow",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::JoinTimeout => "join-timeout",
            ErrorCode::InvalidFrame => "invalid-frame",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PeerMessage {
    /// Parses one WebSocket message's payload.
    pub fn parse(payload: &[u8]) -> Result<PeerMessage, ErrorCode> {
        let fields: HashMap<String, &RawValue> = match serde_json::from_slice(payload) {
            Ok(fields) => fields,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                return Err(ErrorCode::InvalidMessage)
            }
            Err(_) => return Err(ErrorCode::InvalidJson),
        };
        // Owned strings: a borrowed `&str` cannot hold a field written with escapes.
        let kind: String = field(&fields, "type")?.ok_or(ErrorCode::InvalidMessage)?;
        match kind.as_str() {
            "JoinOrCreate" => {
                let room_id: String = field(&fields, "room_id")?.ok_or(ErrorCode::InvalidMessage)?;
                let room_id = RoomId::parse(&room_id).ok_or(ErrorCode::InvalidRoomId)?;
                Ok(PeerMessage::JoinOrCreate { room_id })
            }
            "Signal" => {
                let signal = fields.get("signal").ok_or(ErrorCode::InvalidMessage)?;
                let to = match field::<Option<String>>(&fields, "to")?.flatten() {
                    None => None,
                    Some(to) => Some(ClientId::parse(&to).ok_or(ErrorCode::InvalidMessage)?),
                };
                if nesting_depth(signal.get()) > MAX_SIGNAL_DEPTH {
                    return Err(ErrorCode::SignalTooDeep);
                }
                Ok(PeerMessage::Signal { signal: Arc::from((*signal).to_owned()), to })
            }
            other if SERVER_MESSAGE_TYPES.contains(&other) => Err(ErrorCode::ServerMessage),
            _ => Err(ErrorCode::UnknownType),
        }
    }
}

/// How deeply arrays and objects nest in `json` (valid JSON text): `1` is
/// the first object's level, `0` a scalar. Linear, without recursion.
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Reads one field of the object: `Ok(None)` when absent, `InvalidMessage`
/// when present with the wrong kind of value.
fn field<'a, T: serde::Deserialize<'a>>(
    fields: &HashMap<String, &'a RawValue>,
    name: &str,
) -> Result<Option<T>, ErrorCode> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| ErrorCode::InvalidMessage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn parses_join_or_create() {
        let msg = PeerMessage::parse(format!(r#"{{"type":"JoinOrCreate","room_id":"{ROOM}"}}"#).as_bytes());
        match msg {
            Ok(PeerMessage::JoinOrCreate { room_id }) => assert_eq!(room_id.to_hex(), ROOM),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn signal_payload_is_kept_byte_for_byte() {
        let payload = r#"{"sdp": "v=0\r\n", "type":"offer", "n": 1.50}"#;
        let text = format!(r#"{{"type":"Signal","signal":{payload}}}"#);
        match PeerMessage::parse(text.as_bytes()) {
            Ok(PeerMessage::Signal { signal, to: None }) => assert_eq!(signal.get(), payload),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn signal_with_to_and_with_null_to() {
        let to = "0123456789abcdef0123456789abcdef";
        let text = format!(r#"{{"type":"Signal","signal":1,"to":"{to}"}}"#);
        assert!(matches!(PeerMessage::parse(text.as_bytes()), Ok(PeerMessage::Signal { to: Some(_), .. })));
        let text = r#"{"type":"Signal","signal":1,"to":null}"#;
        assert!(matches!(PeerMessage::parse(text.as_bytes()), Ok(PeerMessage::Signal { to: None, .. })));
    }

    #[test]
    fn every_kind_of_bad_input_has_its_code() {
        let cases: &[(&str, ErrorCode)] = &[
            ("not json", ErrorCode::InvalidJson),
            ("{", ErrorCode::InvalidJson),
            ("", ErrorCode::InvalidJson),
            ("[1,2]", ErrorCode::InvalidMessage),
            ("42", ErrorCode::InvalidMessage),
            (r#"{"room_id":"x"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":7}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"Dance"}"#, ErrorCode::UnknownType),
            (r#"{"type":"Hello","client_id":"x"}"#, ErrorCode::ServerMessage),
            (r#"{"type":"Room/Signal"}"#, ErrorCode::ServerMessage),
            (r#"{"type":"JoinOrCreate"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"JoinOrCreate","room_id":5}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"JoinOrCreate","room_id":"abc"}"#, ErrorCode::InvalidRoomId),
            (r#"{"type":"Signal"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"Signal","signal":{},"to":"nope"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"Signal","signal":{},"to":3}"#, ErrorCode::InvalidMessage),
        ];
        for (input, code) in cases {
            assert_eq!(PeerMessage::parse(input.as_bytes()).err(), Some(*code), "input {input:?}");
        }
    }

    #[test]
    fn fields_may_use_json_escapes() {
        let escaped: String = ROOM.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let text = format!(r#"{{"type":"\u004aoinOrCreate","room_id":"{escaped}"}}"#);
        match PeerMessage::parse(text.as_bytes()) {
            Ok(PeerMessage::JoinOrCreate { room_id }) => assert_eq!(room_id.to_hex(), ROOM),
            other => panic!("unexpected {other:?} for {text}"),
        }
        let text = r#"{"type":"Signal","signal":1,"to":"\u0030123456789abcdef0123456789abcdef"}"#;
        assert!(matches!(PeerMessage::parse(text.as_bytes()), Ok(PeerMessage::Signal { to: Some(_), .. })));
    }

    #[test]
    fn deep_signals_are_refused_and_the_limit_is_inclusive() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let signal = |payload: &str| format!(r#"{{"type":"Signal","signal":{payload}}}"#);
        assert!(PeerMessage::parse(signal(&nested(MAX_SIGNAL_DEPTH)).as_bytes()).is_ok());
        for depth in [MAX_SIGNAL_DEPTH + 1, 30_000] {
            let err = PeerMessage::parse(signal(&nested(depth)).as_bytes()).err();
            assert_eq!(err, Some(ErrorCode::SignalTooDeep), "depth {depth}");
        }
        assert_eq!(ErrorCode::SignalTooDeep.close_code(), None, "the connection goes on");
        // Brackets inside strings do not count.
        let stringy = format!(r#"{{"s":"{}\"[{{"}}"#, "[".repeat(100));
        assert_eq!(nesting_depth(&stringy), 1);
        assert_eq!(nesting_depth("7"), 0);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let text = format!(r#"{{"type":"JoinOrCreate","room_id":"{ROOM}","future":[1]}}"#);
        assert!(PeerMessage::parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let id = ClientId::from_bytes([0xab; 16]);
        let hello = ServerMessage::Hello { client_id: id }.to_json();
        assert_eq!(hello, format!(r#"{{"type":"Hello","client_id":"{}"}}"#, "ab".repeat(16)));
        let error = ServerMessage::error(ErrorCode::RoomFull).to_json();
        assert_eq!(error, r#"{"type":"Error","code":"room-full","message":"the room is full"}"#);
        let leave = ServerMessage::RoomLeave { client_id: id }.to_json();
        assert!(leave.starts_with(r#"{"type":"Room/Leave","#));
        let signal: Arc<RawValue> = Arc::from(RawValue::from_string("{\"a\": 1}".into()).unwrap());
        let relayed = ServerMessage::RoomSignal { from: id, signal }.to_json();
        assert!(relayed.ends_with(r#","signal":{"a": 1}}"#), "{relayed}");
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in [
            ErrorCode::InvalidJson,
            ErrorCode::TooManyAttempts,
            ErrorCode::UnknownPeer,
            ErrorCode::JoinTimeout,
            ErrorCode::InvalidFrame,
        ] {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
        }
    }
}
