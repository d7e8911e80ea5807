//! Properties of message handling under arbitrary input: parsing never
//! panics, and no sequence of events breaks the hub's invariants.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lookout::signaling::hub::Effect;
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
        let mut hub = Hub::new(HubConfig {
            throttle: ThrottleConfig { base_delay: Duration::ZERO, ..Default::default() },
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
            prop_assert_eq!(hub.client_count(), connected.len());
        }
        prop_assert!(joined_count.values().all(|c| *c == 1), "a client joined twice: {:?}", joined_count);
    }
}
