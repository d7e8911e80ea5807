//! Properties of message handling under arbitrary input: parsing never
//! panics, and no sequence of events breaks the hub's invariants. Every
//! parser of request data is here: signaling messages, room and client IDs,
//! the nesting of relayed payloads, the `Host` header of the redirect, and
//! the viewer signals the camera reads.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lookout::http::redirect::{host_without_port, redirect};
use lookout::signaling::hub::Effect;
use lookout::signaling::protocol::{nesting_depth, MAX_SIGNAL_DEPTH};
use lookout::signaling::throttle::ThrottleConfig;
use lookout::signaling::{ClientId, Hub, HubConfig, PeerMessage, RoomPolicy};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("JoinOrCreate")),
        Just(serde_json::Value::from("Signal")),
        Just(serde_json::Value::from("ab".repeat(32))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("room_id".to_owned()),
                    Just("signal".to_owned()),
                    Just("to".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = PeerMessage::parse(&bytes);
    }

    #[test]
    fn parsing_arbitrary_json_never_panics(value in json_value()) {
        let _ = PeerMessage::parse(value.to_string().as_bytes());
    }

    #[test]
    fn a_valid_signal_always_parses_and_keeps_its_payload(payload in json_value()) {
        let text = format!(r#"{{"type":"Signal","signal":{payload}}}"#);
        match PeerMessage::parse(text.as_bytes()) {
            Ok(PeerMessage::Signal { signal, to: None }) => {
                let back: serde_json::Value = serde_json::from_str(signal.get()).unwrap();
                prop_assert_eq!(back, payload);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

/// Strings that look like `Host` values, and some that almost do.
fn authority() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\[\\]:0-9a-fA-F.%-]{0,12}",
        "\\[[0-9a-f:]{0,10}\\]?(:[0-9+-]{0,6})?",
        "[a-z0-9.-]{0,10}(:[0-9]{0,6})?",
    ]
}

/// The value of a JSON document's deepest nesting, computed the slow way.
fn depth_of(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// Any `Host` value: no panic; a host that comes out is the start of the
    /// value and is a bracketed IPv6 address or a plain name.
    #[test]
    fn host_parsing_never_panics_and_returns_a_prefix(value in authority()) {
        if let Some(host) = host_without_port(&value) {
            prop_assert!(value.starts_with(host));
            match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) => prop_assert!(v6.parse::<std::net::Ipv6Addr>().is_ok(), "{}", host),
                None => prop_assert!(!host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'), "{}", host),
            }
        }
    }

    /// Any header bytes hyper could hand over: the redirect answers 308 with
    /// an https Location on the right port, never panics.
    #[test]
    fn redirect_answers_any_host_header(bytes in prop::collection::vec(any::<u8>(), 0..40), text in authority(), port in 1u16..) {
        for candidate in [bytes.clone(), text.clone().into_bytes()] {
            let Ok(value) = http::HeaderValue::from_bytes(&candidate) else { continue };
            let request = http::Request::builder().uri("/x?y").header(http::header::HOST, value).body(()).unwrap();
            let response = redirect(&request, port, "lookout-k7qd.local");
            prop_assert_eq!(response.status(), http::StatusCode::PERMANENT_REDIRECT);
            let location = response.headers()[http::header::LOCATION].to_str().unwrap().to_owned();
            prop_assert!(location.starts_with("https://"), "{}", location);
            prop_assert!(location.ends_with("/x?y"), "{}", location);
        }
    }

    /// Room and client IDs: any text, no panic; what parses prints back the same, lowercase.
    #[test]
    fn ids_parse_or_refuse_any_text(text in prop_oneof![any::<String>(), "[0-9a-fA-F]{30,66}"]) {
        if let Some(room) = lookout::signaling::RoomId::parse(&text) {
            prop_assert_eq!(room.to_hex(), text.to_ascii_lowercase());
        }
        if let Some(client) = ClientId::parse(&text) {
            prop_assert_eq!(client.to_string(), text.to_ascii_lowercase());
        }
    }

    /// The linear depth count agrees with the recursive one on real JSON,
    /// and a signal is relayed exactly when it is within the limit.
    #[test]
    fn nesting_depth_is_the_json_depth(value in json_value(), wrap in 0usize..40) {
        let text = format!("{}{}{}", "[".repeat(wrap), value, "]".repeat(wrap));
        let depth = depth_of(&value) + wrap;
        prop_assert_eq!(nesting_depth(&text), depth);
        let parsed = PeerMessage::parse(format!(r#"{{"type":"Signal","signal":{text}}}"#).as_bytes());
        prop_assert_eq!(parsed.is_ok(), depth <= MAX_SIGNAL_DEPTH);
    }
}

/// Signals as a viewer could send them to the camera: the browser's field
/// names with arbitrary values, and arbitrary JSON.
fn viewer_signal() -> impl Strategy<Value = serde_json::Value> {
    let text = prop_oneof![
        any::<String>(),
        "(v=0|a=mid:[0-9a-z]{0,3}|candidate:[ -~]{0,30})(\\r?\\n[ -~]{0,20}){0,4}"
    ];
    prop_oneof![
        json_value(),
        ("offer|answer|pranswer|rollback|restart-ice|.{0,8}", text.clone())
            .prop_map(|(kind, sdp)| serde_json::json!({"type": kind, "sdp": sdp})),
        (text, json_value(), json_value())
            .prop_map(|(candidate, mid, index)| serde_json::json!({"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": index})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// What a viewer relays to the camera: any signal is understood or
    /// refused with an error, never a panic; any SDP text has a first mid or none.
    #[test]
    fn the_camera_parses_any_viewer_signal(signal in viewer_signal(), sdp in any::<String>()) {
        let _ = lookout::peer::signal::ViewerSignal::parse(&signal);
        if let Some(mid) = lookout::peer::signal::first_mid(&sdp) {
            let line = format!("a=mid:{mid}");
            prop_assert!(sdp.contains(&line), "{}", line);
        }
    }
}

#[derive(Debug, Clone)]
enum Event {
    Connect(u8),
    Send(u8, serde_json::Value),
    Join(u8, u8),
    Disconnect(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u8..8).prop_map(Event::Connect),
        (0u8..8, json_value()).prop_map(|(c, v)| Event::Send(c, v)),
        (0u8..8, 0u8..3).prop_map(|(c, r)| Event::Join(c, r)),
        (0u8..8).prop_map(Event::Disconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever clients do, nobody is ever addressed who is not connected,
    /// a connection is told Joined at most once, and rooms never overflow.
    #[test]
    fn hub_invariants_hold_under_random_events(events in prop::collection::vec(event(), 1..60), open in any::<bool>()) {
        let secret = lookout_provisioning::RoomSecret::from_bytes([0xab; 32]);
        let policy = if open { RoomPolicy::Open { max_clients: 2 } } else { RoomPolicy::Appliance { secret, max_viewers: 2 } };
        let viewers = lookout::viewers::ViewerCount::new();
        let mut hub = Hub::new(HubConfig {
            throttle: ThrottleConfig { base_delay: Duration::ZERO, ..Default::default() },
            viewers: viewers.clone(),
            ..HubConfig::new(policy)
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut connected = std::collections::HashSet::new();
        let mut joined_count = std::collections::HashMap::<u8, usize>::new();
        let now = Instant::now();
        for event in events {
            let id = |n: u8| ClientId::from_bytes([n; 16]);
            let effects = match event {
                Event::Connect(n) => {
                    if connected.contains(&n) { continue; }
                    connected.insert(n);
                    joined_count.remove(&n); // a new connection may join again
                    hub.connect(id(n), ip)
                }
                Event::Send(n, value) => hub.receive(id(n), value.to_string().as_bytes(), now),
                Event::Join(n, r) => {
                    let room = ["ab", "cd", "ef"][r as usize].repeat(32);
                    hub.receive(id(n), format!(r#"{{"type":"JoinOrCreate","room_id":"{room}"}}"#).as_bytes(), now)
                }
                Event::Disconnect(n) => { connected.remove(&n); hub.disconnect(id(n)) }
            };
            for effect in effects {
                match effect {
                    Effect::Send { to, message } => {
                        let n = connected.iter().copied().find(|n| id(*n) == to);
                        prop_assert!(n.is_some(), "message to a client that is not connected: {:?}", message);
                        if message.to_json().contains(r#""type":"Joined""#) {
                            *joined_count.entry(n.unwrap()).or_default() += 1;
                        }
                    }
                    Effect::Disconnect { client, .. } => {
                        connected.retain(|n| id(*n) != client);
                    }
                }
            }
            prop_assert!(hub.viewer_count() <= 2);
            prop_assert_eq!(viewers.get(), hub.viewer_count(), "the published count is the hub's");
            prop_assert_eq!(hub.client_count(), connected.len());
        }
        prop_assert!(joined_count.values().all(|c| *c == 1), "a client joined twice: {:?}", joined_count);
    }
}
