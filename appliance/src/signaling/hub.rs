//! The signaling rules as a plain state machine.
//!
//! The hub owns the rooms and the state of every client. Each call takes an
//! event (a client connected, sent bytes, went away) and returns the
//! [`Effect`]s to carry out: messages to send and connections to close. It
//! does no I/O, reads no clock and draws no random numbers, so unit tests
//! drive it directly and the WebSocket layer only moves bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use lookout_provisioning::RoomSecret;

use super::ids::{ClientId, RoomId};
use super::protocol::{ErrorCode, PeerMessage, ServerMessage};
use super::throttle::{GuessThrottle, ThrottleConfig};
use crate::netlog::{NetEvent, NetworkLog};
use crate::sources::LocalPrefixes;
use crate::viewers::ViewerCount;

/// Which rooms exist and how many may be in them.
#[derive(Debug, Clone)]
pub enum RoomPolicy {
    /// The camera's own room is the only one; its ID is the room secret. It
    /// holds the camera (the device client) plus up to `max_viewers` others.
    Appliance { secret: RoomSecret, max_viewers: usize },
    /// A generic signaling server: any valid ID makes a room of at most
    /// `max_clients`.
    Open { max_clients: usize },
}

/// Why a room secret given outside signaling was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefusal {
    #[error("wrong secret")]
    Wrong,
    #[error("too many wrong guesses from this address; wait")]
    Throttled,
    #[error("this server has no room secret (open rooms)")]
    NoSecret,
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub policy: RoomPolicy,
    pub throttle: ThrottleConfig,
    /// The camera's own IPv6 prefixes (how wrong guesses are keyed).
    pub local_prefixes: LocalPrefixes,
    /// Where wrong secrets and protocol violations are counted.
    pub log: NetworkLog,
    /// Where the hub publishes the one viewer count (see `crate::viewers`).
    pub viewers: ViewerCount,
}

impl HubConfig {
    /// `policy` with the default throttle, no local prefixes and its own log.
    pub fn new(policy: RoomPolicy) -> Self {
        HubConfig {
            policy,
            throttle: ThrottleConfig::default(),
            local_prefixes: LocalPrefixes::default(),
            log: NetworkLog::new(),
            viewers: ViewerCount::new(),
        }
    }
}

/// What the caller must do after an event.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Send `message` to `to`.
    Send { to: ClientId, message: ServerMessage },
    /// Send `Error { code }` to `client`, then close its connection with the
    /// code's close code. The hub has already forgotten the client.
    Disconnect { client: ClientId, code: ErrorCode },
}

/// A connected client's place in the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientState {
    /// Got `Hello`; may send only `JoinOrCreate`.
    Greeted,
    /// In a room; may send `Signal`.
    Joined(RoomId),
}

#[derive(Debug)]
struct Client {
    ip: IpAddr,
    state: ClientState,
}

#[derive(Debug, Default)]
struct Room {
    /// Members in the order they joined.
    members: Vec<ClientId>,
}

/// The signaling state machine.
#[derive(Debug)]
pub struct Hub {
    policy: RoomPolicy,
    rooms: HashMap<RoomId, Room>,
    clients: HashMap<ClientId, Client>,
    throttle: GuessThrottle,
    log: NetworkLog,
    /// The one viewer count, republished after every change of membership.
    viewers: ViewerCount,
    /// The in-process camera client, which does not take a viewer's place.
    device: Option<ClientId>,
    /// WHEP viewers (`crate::whep`): they take a slot of the one count
    /// without being in the room.
    whep: usize,
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        let mut rooms = HashMap::new();
        if let RoomPolicy::Appliance { secret, .. } = &config.policy {
            rooms.insert(Self::appliance_room_id(secret), Room::default());
        }
        Hub {
            policy: config.policy,
            rooms,
            clients: HashMap::new(),
            throttle: GuessThrottle::new(config.throttle, config.local_prefixes),
            log: config.log,
            viewers: config.viewers,
            device: None,
            whep: 0,
        }
    }

    fn appliance_room_id(secret: &RoomSecret) -> RoomId {
        let mut bytes = [0u8; 32];
        // `expose_hex` is the only way out of a RoomSecret; the hex is decoded
        // straight back and never leaves this function.
        let _ = hex::decode_to_slice(secret.expose_hex(), &mut bytes);
        RoomId::from_bytes(bytes)
    }

    /// A client connected: greet it.
    pub fn connect(&mut self, id: ClientId, ip: IpAddr) -> Vec<Effect> {
        self.clients.insert(id, Client { ip, state: ClientState::Greeted });
        vec![Effect::Send { to: id, message: ServerMessage::Hello { client_id: id } }]
    }

    /// Marks `id` (already connected) as the camera itself, which joins the
    /// appliance room without counting against the viewer limit.
    pub fn set_device(&mut self, id: ClientId) {
        self.device = Some(id);
        self.publish_viewers();
    }

    /// Writes [`Hub::viewer_count`] to the shared [`ViewerCount`].
    fn publish_viewers(&self) {
        self.viewers.set(self.viewer_count());
    }

    /// The camera's own IPv6 prefixes changed (how wrong guesses are keyed).
    pub fn set_local_prefixes(&mut self, local: LocalPrefixes) {
        self.throttle.set_local_prefixes(local);
    }

    /// A client sent a message.
    pub fn receive(&mut self, from: ClientId, payload: &[u8], now: Instant) -> Vec<Effect> {
        if !self.clients.contains_key(&from) {
            return Vec::new();
        }
        let message = match PeerMessage::parse(payload) {
            Ok(message) => message,
            Err(code) => return self.fail(from, code),
        };
        self.receive_message(from, message, now)
    }

    /// A client sent a message that is already parsed (the in-process camera).
    pub fn receive_message(&mut self, from: ClientId, message: PeerMessage, now: Instant) -> Vec<Effect> {
        let Some(client) = self.clients.get(&from) else {
            return Vec::new();
        };
        let state = client.state.clone();
        match (state, message) {
            (ClientState::Greeted, PeerMessage::JoinOrCreate { room_id }) => self.join(from, room_id, now),
            (ClientState::Joined(_), PeerMessage::JoinOrCreate { .. }) => {
                self.fail(from, ErrorCode::AlreadyJoined)
            }
            (ClientState::Greeted, PeerMessage::Signal { .. }) => self.fail(from, ErrorCode::NotJoined),
            (ClientState::Joined(room_id), PeerMessage::Signal { signal, to }) => {
                let Some(room) = self.rooms.get(&room_id) else {
                    return Vec::new();
                };
                let others = room.members.iter().copied().filter(|m| *m != from);
                match to {
                    None => others
                        .map(|to| Effect::Send {
                            to,
                            message: ServerMessage::RoomSignal { from, signal: signal.clone() },
                        })
                        .collect(),
                    Some(to) if others.clone().any(|m| m == to) => {
                        vec![Effect::Send { to, message: ServerMessage::RoomSignal { from, signal } }]
                    }
                    Some(_) => {
                        vec![Effect::Send { to: from, message: ServerMessage::error(ErrorCode::UnknownPeer) }]
                    }
                }
            }
        }
    }

    /// A client's connection ended (closed, reset, timed out). Idempotent.
    pub fn disconnect(&mut self, id: ClientId) -> Vec<Effect> {
        if self.device == Some(id) {
            self.device = None;
        }
        let Some(client) = self.clients.remove(&id) else {
            return Vec::new();
        };
        let ClientState::Joined(room_id) = client.state else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return Vec::new();
        };
        room.members.retain(|m| *m != id);
        let effects: Vec<Effect> = room
            .members
            .iter()
            .map(|&to| Effect::Send { to, message: ServerMessage::RoomLeave { client_id: id } })
            .collect();
        if room.members.is_empty() && matches!(self.policy, RoomPolicy::Open { .. }) {
            self.rooms.remove(&room_id);
        }
        self.publish_viewers();
        effects
    }

    /// Ends a client for a reason found outside the hub (oversized message,
    /// rate limit): the client is told, disconnected, and its room told.
    pub fn fail(&mut self, id: ClientId, code: ErrorCode) -> Vec<Effect> {
        if code.close_code().is_none() {
            return vec![Effect::Send { to: id, message: ServerMessage::error(code) }];
        }
        let mut effects = vec![Effect::Disconnect { client: id, code }];
        effects.extend(self.disconnect(id));
        effects
    }

    /// Checks a room secret given outside the signaling protocol (an HTTP
    /// bearer token, `/metrics`): the same constant-time comparison, the same
    /// throttle and the same refusal counts as a join.
    pub fn check_secret(&mut self, ip: IpAddr, candidate: &[u8], now: Instant) -> Result<(), SecretRefusal> {
        match &self.policy {
            RoomPolicy::Appliance { secret, .. } => {
                Self::check_against(secret, &mut self.throttle, &self.log, ip, candidate, now)
            }
            RoomPolicy::Open { .. } => Err(SecretRefusal::NoSecret),
        }
    }

    /// The secret first: the right one passes at once, whatever the throttle
    /// holds against its address.
    fn check_against(
        secret: &RoomSecret,
        throttle: &mut GuessThrottle,
        log: &NetworkLog,
        ip: IpAddr,
        candidate: &[u8],
        now: Instant,
    ) -> Result<(), SecretRefusal> {
        if secret.matches(candidate) {
            return Ok(());
        }
        if throttle.check(ip, now).is_err() {
            log.count(NetEvent::ThrottledGuess, ip);
            return Err(SecretRefusal::Throttled);
        }
        throttle.record_failure(ip, now);
        log.count(NetEvent::WrongSecret, ip);
        Err(SecretRefusal::Wrong)
    }

    fn join(&mut self, id: ClientId, room_id: RoomId, now: Instant) -> Vec<Effect> {
        let ip = match self.clients.get(&id) {
            Some(client) => client.ip,
            None => return Vec::new(),
        };
        let capacity = match &self.policy {
            RoomPolicy::Appliance { secret, max_viewers } => {
                // The secret first: the right one joins at once, whatever
                // the throttle holds against its address.
                match Self::check_against(secret, &mut self.throttle, &self.log, ip, room_id.as_bytes(), now)
                {
                    Ok(()) => {}
                    Err(SecretRefusal::Throttled) => return self.fail(id, ErrorCode::TooManyAttempts),
                    Err(_) => return self.fail(id, ErrorCode::UnknownRoom),
                }
                // A right secret does not clear the source's record: its
                // wrong guesses stay as suspicious as before.
                // The camera never takes a slot; a viewer needs a free one
                // of the one count (`crate::viewers`).
                if self.device != Some(id) && self.viewer_count() >= *max_viewers {
                    return self.fail(id, ErrorCode::RoomFull);
                }
                usize::MAX
            }
            RoomPolicy::Open { max_clients } => *max_clients,
        };
        let room = self.rooms.entry(room_id.clone()).or_default();
        if room.members.len() >= capacity {
            return self.fail(id, ErrorCode::RoomFull);
        }
        let others = room.members.clone();
        room.members.push(id);
        if let Some(client) = self.clients.get_mut(&id) {
            client.state = ClientState::Joined(room_id.clone());
        }
        self.publish_viewers();
        let mut effects = vec![Effect::Send {
            to: id,
            message: ServerMessage::Joined {
                room_id,
                camera: self.device.filter(|device| others.contains(device)),
                clients: others.clone(),
            },
        }];
        let camera = self.device == Some(id);
        effects.extend(
            others
                .into_iter()
                .map(|to| Effect::Send { to, message: ServerMessage::RoomJoin { client_id: id, camera } }),
        );
        effects
    }

    /// Takes a viewer slot for a WHEP viewer, if one is free under
    /// `--max-viewers` (the same count the room's viewers take). Only the
    /// appliance room has viewers; open rooms refuse.
    pub fn reserve_whep(&mut self) -> bool {
        let RoomPolicy::Appliance { max_viewers, .. } = &self.policy else {
            return false;
        };
        if self.viewer_count() >= *max_viewers {
            return false;
        }
        self.whep += 1;
        self.publish_viewers();
        true
    }

    /// Gives back a slot taken by [`Hub::reserve_whep`].
    pub fn release_whep(&mut self) {
        self.whep = self.whep.saturating_sub(1);
        self.publish_viewers();
    }

    /// WHEP viewers holding a slot now.
    pub fn whep_count(&self) -> usize {
        self.whep
    }

    /// Whether `id` has joined a room.
    pub fn is_joined(&self, id: ClientId) -> bool {
        self.clients.get(&id).is_some_and(|c| matches!(c.state, ClientState::Joined(_)))
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Members of the appliance room other than the camera (0 in open mode).
    pub fn viewer_count(&self) -> usize {
        match &self.policy {
            RoomPolicy::Appliance { secret, .. } => self
                .rooms
                .get(&Self::appliance_room_id(secret))
                .map_or(0, |room| room.members.iter().filter(|m| Some(**m) != self.device).count())
                .saturating_add(self.whep),
            RoomPolicy::Open { .. } => 0,
        }
    }

    /// Whether the camera client is a member of a room.
    pub fn device_joined(&self) -> bool {
        self.device
            .and_then(|device| self.clients.get(&device))
            .is_some_and(|client| matches!(client.state, ClientState::Joined(_)))
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const IP: &str = "192.0.2.10";

    fn secret() -> RoomSecret {
        RoomSecret::from_bytes([0x5a; 32])
    }

    fn appliance(max_viewers: usize) -> Hub {
        Hub::new(HubConfig::new(RoomPolicy::Appliance { secret: secret(), max_viewers }))
    }

    fn open(max_clients: usize) -> Hub {
        Hub::new(HubConfig::new(RoomPolicy::Open { max_clients }))
    }

    fn id(n: u8) -> ClientId {
        ClientId::from_bytes([n; 16])
    }

    fn join_text(room: &str) -> Vec<u8> {
        format!(r#"{{"type":"JoinOrCreate","room_id":"{room}"}}"#).into_bytes()
    }

    fn good_room() -> String {
        "5a".repeat(32)
    }

    fn sent_to(effects: &[Effect], who: ClientId) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, message } if *to == who => Some(message.to_json()),
                _ => None,
            })
            .collect()
    }

    fn disconnected(effects: &[Effect]) -> Vec<(ClientId, ErrorCode)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Disconnect { client, code } => Some((*client, *code)),
                _ => None,
            })
            .collect()
    }

    fn connect_and_join(hub: &mut Hub, n: u8, room: &str) -> Vec<Effect> {
        hub.connect(id(n), IP.parse().unwrap());
        hub.receive(id(n), &join_text(room), Instant::now())
    }

    #[test]
    fn hello_carries_the_assigned_id() {
        let mut hub = appliance(4);
        let effects = hub.connect(id(1), IP.parse().unwrap());
        assert_eq!(
            sent_to(&effects, id(1)),
            [format!(r#"{{"type":"Hello","client_id":"{}"}}"#, "01".repeat(16))]
        );
    }

    #[test]
    fn joiner_learns_who_is_there_and_the_others_learn_of_the_joiner() {
        let mut hub = appliance(4);
        connect_and_join(&mut hub, 1, &good_room());
        let effects = connect_and_join(&mut hub, 2, &good_room());
        let joined = &sent_to(&effects, id(2))[0];
        assert!(joined.contains(r#""type":"Joined""#) && joined.contains(&"01".repeat(16)), "{joined}");
        assert_eq!(
            sent_to(&effects, id(1)),
            [format!(r#"{{"type":"Room/Join","client_id":"{}"}}"#, "02".repeat(16))]
        );
    }

    #[test]
    fn wrong_secret_is_unknown_room_then_throttled_but_the_right_one_joins_at_once() {
        let mut hub = appliance(4);
        let t0 = Instant::now();
        hub.connect(id(1), IP.parse().unwrap());
        let effects = hub.receive(id(1), &join_text(&"00".repeat(32)), t0);
        assert_eq!(disconnected(&effects), [(id(1), ErrorCode::UnknownRoom)]);
        hub.connect(id(2), IP.parse().unwrap());
        let effects = hub.receive(id(2), &join_text(&"01".repeat(32)), t0 + Duration::from_millis(100));
        assert_eq!(disconnected(&effects), [(id(2), ErrorCode::TooManyAttempts)], "wrong guesses wait");
        hub.connect(id(3), IP.parse().unwrap());
        let effects = hub.receive(id(3), &join_text(&good_room()), t0 + Duration::from_millis(100));
        assert!(disconnected(&effects).is_empty(), "the right secret never waits");
        assert!(hub.is_joined(id(3)));
        assert_eq!(hub.client_count(), 1);
    }

    #[test]
    fn a_secret_checked_outside_signaling_shares_the_throttle_and_the_counts() {
        let mut hub = appliance(4);
        let ip: IpAddr = "192.0.2.5".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(hub.check_secret(ip, &[0; 32], t0), Err(SecretRefusal::Wrong));
        assert_eq!(hub.check_secret(ip, b"short", t0), Err(SecretRefusal::Throttled));
        assert_eq!(hub.check_secret(ip, secret().expose_hex().as_bytes(), t0), Err(SecretRefusal::Throttled));
        let bytes = RoomId::parse(&secret().expose_hex()).unwrap();
        assert_eq!(hub.check_secret(ip, bytes.as_bytes(), t0), Ok(()), "the right secret never waits");
        let totals = hub.log.totals();
        assert!(
            totals.contains(&(NetEvent::WrongSecret, 1)) && totals.contains(&(NetEvent::ThrottledGuess, 2))
        );
        assert_eq!(open(2).check_secret(ip, bytes.as_bytes(), t0), Err(SecretRefusal::NoSecret));
    }

    #[test]
    fn whep_viewers_take_slots_of_the_same_count() {
        let mut hub = appliance(2);
        assert!(disconnected(&connect_and_join(&mut hub, 1, &good_room())).is_empty());
        assert!(hub.reserve_whep(), "one slot left");
        assert_eq!((hub.viewer_count(), hub.whep_count()), (2, 1));
        assert!(!hub.reserve_whep(), "full");
        assert_eq!(
            disconnected(&connect_and_join(&mut hub, 2, &good_room())),
            [(id(2), ErrorCode::RoomFull)],
            "a page viewer finds the camera full too"
        );
        hub.release_whep();
        assert_eq!(hub.viewer_count(), 1);
        assert!(hub.reserve_whep(), "the slot is free again");
        assert!(!open(4).reserve_whep(), "open rooms have no camera");
    }

    #[test]
    fn appliance_room_admits_max_viewers_plus_the_device() {
        let mut hub = appliance(2);
        hub.connect(id(9), IP.parse().unwrap());
        hub.set_device(id(9));
        hub.receive(id(9), &join_text(&good_room()), Instant::now());
        assert!(disconnected(&connect_and_join(&mut hub, 1, &good_room())).is_empty());
        assert!(disconnected(&connect_and_join(&mut hub, 2, &good_room())).is_empty());
        assert_eq!(
            disconnected(&connect_and_join(&mut hub, 3, &good_room())),
            [(id(3), ErrorCode::RoomFull)]
        );
        assert_eq!(hub.viewer_count(), 2);
    }

    /// One count: admission reads it, the hub publishes it, a leave frees a
    /// slot, and a camera that is connected but not yet in the room (a
    /// restarting camera peer) does not lend its place to a viewer.
    #[test]
    fn one_viewer_count_decides_admission_and_is_published() {
        let viewers = ViewerCount::new();
        let mut hub = Hub::new(HubConfig {
            viewers: viewers.clone(),
            ..HubConfig::new(RoomPolicy::Appliance { secret: secret(), max_viewers: 2 })
        });
        hub.connect(id(9), IP.parse().unwrap());
        hub.set_device(id(9)); // connected, not joined
        connect_and_join(&mut hub, 1, &good_room());
        connect_and_join(&mut hub, 2, &good_room());
        assert_eq!(viewers.get(), 2);
        assert_eq!(
            disconnected(&connect_and_join(&mut hub, 3, &good_room())),
            [(id(3), ErrorCode::RoomFull)]
        );
        hub.receive(id(9), &join_text(&good_room()), Instant::now());
        assert_eq!(viewers.get(), 2, "the camera is not a viewer");
        hub.disconnect(id(1));
        assert_eq!(viewers.get(), 1, "a viewer that goes frees its slot");
        assert!(disconnected(&connect_and_join(&mut hub, 4, &good_room())).is_empty());
        assert_eq!((viewers.get(), hub.viewer_count()), (2, 2));
    }

    #[test]
    fn open_mode_makes_rooms_of_at_most_max_clients_and_drops_empty_ones() {
        let mut hub = open(2);
        let room = "ab".repeat(32);
        connect_and_join(&mut hub, 1, &room);
        connect_and_join(&mut hub, 2, &room);
        assert_eq!(disconnected(&connect_and_join(&mut hub, 3, &room)), [(id(3), ErrorCode::RoomFull)]);
        assert!(disconnected(&connect_and_join(&mut hub, 4, &"cd".repeat(32))).is_empty());
        assert_eq!(hub.room_count(), 2);
        hub.disconnect(id(4));
        assert_eq!(hub.room_count(), 1);
    }

    #[test]
    fn signal_goes_to_everyone_else_or_only_to_the_addressee() {
        let mut hub = open(3);
        let room = "ab".repeat(32);
        for n in 1..=3 {
            connect_and_join(&mut hub, n, &room);
        }
        let broadcast = hub.receive(id(1), br#"{"type":"Signal","signal":{"x":1}}"#, Instant::now());
        assert_eq!(sent_to(&broadcast, id(1)).len(), 0);
        let expected = format!(r#"{{"type":"Room/Signal","from":"{}","signal":{{"x":1}}}}"#, "01".repeat(16));
        assert_eq!(sent_to(&broadcast, id(2)), std::slice::from_ref(&expected));
        assert_eq!(sent_to(&broadcast, id(3)), [expected]);

        let text = format!(r#"{{"type":"Signal","signal":2,"to":"{}"}}"#, "03".repeat(16));
        let addressed = hub.receive(id(1), text.as_bytes(), Instant::now());
        assert_eq!(addressed.len(), 1);
        assert_eq!(sent_to(&addressed, id(3)).len(), 1);
    }

    #[test]
    fn signal_to_a_stranger_is_a_non_fatal_error() {
        let mut hub = open(2);
        connect_and_join(&mut hub, 1, &"ab".repeat(32));
        connect_and_join(&mut hub, 2, &"cd".repeat(32));
        for to in [id(2), id(1), id(7)] {
            let text = format!(r#"{{"type":"Signal","signal":2,"to":"{to}"}}"#);
            let effects = hub.receive(id(1), text.as_bytes(), Instant::now());
            assert!(disconnected(&effects).is_empty());
            assert!(sent_to(&effects, id(1))[0].contains("unknown-peer"));
        }
    }

    #[test]
    fn protocol_breaches_disconnect_with_their_code() {
        let mut hub = open(2);
        hub.connect(id(1), IP.parse().unwrap());
        let effects = hub.receive(id(1), br#"{"type":"Signal","signal":1}"#, Instant::now());
        assert_eq!(disconnected(&effects), [(id(1), ErrorCode::NotJoined)]);

        connect_and_join(&mut hub, 2, &"ab".repeat(32));
        let effects = hub.receive(id(2), &join_text(&"ab".repeat(32)), Instant::now());
        assert_eq!(disconnected(&effects), [(id(2), ErrorCode::AlreadyJoined)]);

        hub.connect(id(3), IP.parse().unwrap());
        let effects = hub.receive(id(3), br#"{"type":"Hello","client_id":"x"}"#, Instant::now());
        assert_eq!(disconnected(&effects), [(id(3), ErrorCode::ServerMessage)]);
        assert_eq!(hub.client_count(), 0);
    }

    #[test]
    fn leaving_tells_the_others_once() {
        let mut hub = appliance(4);
        connect_and_join(&mut hub, 1, &good_room());
        connect_and_join(&mut hub, 2, &good_room());
        let effects = hub.disconnect(id(2));
        assert_eq!(
            sent_to(&effects, id(1)),
            [format!(r#"{{"type":"Room/Leave","client_id":"{}"}}"#, "02".repeat(16))]
        );
        assert!(hub.disconnect(id(2)).is_empty());
        assert_eq!(hub.room_count(), 1, "the appliance room stays");
    }

    #[test]
    fn a_disconnected_client_is_a_leave_for_the_room() {
        let mut hub = open(2);
        let room = "ab".repeat(32);
        connect_and_join(&mut hub, 1, &room);
        connect_and_join(&mut hub, 2, &room);
        let effects = hub.receive(id(2), b"garbage", Instant::now());
        assert_eq!(disconnected(&effects), [(id(2), ErrorCode::InvalidJson)]);
        assert!(sent_to(&effects, id(1))[0].contains("Room/Leave"));
    }
}
