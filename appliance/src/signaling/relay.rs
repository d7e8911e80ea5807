//! The hub behind a mutex, plus one outgoing channel per connected client.
//!
//! Connection tasks call in with what happened; the relay runs the hub under
//! its lock (never across an await), then hands each effect to the addressed
//! client's channel. A client whose channel is full does not read its
//! messages: it is cut off rather than allowed to grow memory or stall others.
//!
//! The camera's own client is different: it lives in this process, gets the
//! hub's [`ServerMessage`]s as values (no JSON) through an unbounded channel
//! ([`DeviceOutbound`]), sends parsed [`PeerMessage`]s, and is never cut off
//! as too slow. Its queue is bounded in practice by the viewers' own rate
//! limits and the room's size.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::hub::{Effect, Hub, HubConfig};
use super::ids::ClientId;
use super::protocol::{ErrorCode, PeerMessage, ServerMessage};

/// Messages queued per client before it counts as too slow.
pub const OUTBOX_CAPACITY: usize = 256;

/// What a connection task is told to do.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Send this JSON as a binary WebSocket message.
    Message(Bytes),
    /// Send this JSON (an `Error`), then close with `code`.
    Close { message: Bytes, code: ErrorCode },
}

/// What the in-process camera client is told: typed, never serialised.
#[derive(Debug, Clone)]
pub enum DeviceOutbound {
    Message(ServerMessage),
    /// The hub dropped the camera client with this error.
    Closed(ErrorCode),
}

/// Where a client's messages go.
enum Outbox {
    Socket(mpsc::Sender<Outbound>),
    Device(mpsc::UnboundedSender<DeviceOutbound>),
}

struct State {
    hub: Hub,
    outboxes: HashMap<ClientId, Outbox>,
}

/// The shared signaling state. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    state: Arc<Mutex<State>>,
}

/// Counters for `/api/info`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RelayStats {
    pub clients: usize,
    /// All viewers (page and WHEP): the one count.
    pub viewers: usize,
    /// Of those, WHEP viewers.
    pub whep_viewers: usize,
    pub rooms: usize,
}

/// A viewer slot held by a WHEP session; dropping it gives the slot back.
pub struct WhepSlot {
    relay: Relay,
}

impl Drop for WhepSlot {
    fn drop(&mut self) {
        self.relay.lock().hub.release_whep();
    }
}

impl Relay {
    pub fn new(config: HubConfig) -> Self {
        Relay { state: Arc::new(Mutex::new(State { hub: Hub::new(config), outboxes: HashMap::new() })) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the hub as consistent as
        // between any two events, so keep serving rather than poison forever.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new client; its first queued message is `Hello`.
    pub fn connect(&self, ip: IpAddr) -> (ClientId, mpsc::Receiver<Outbound>) {
        let (sender, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let id = ClientId::random();
        let effects = {
            let mut state = self.lock();
            state.outboxes.insert(id, Outbox::Socket(sender));
            state.hub.connect(id, ip)
        };
        self.deliver(effects);
        (id, receiver)
    }

    /// Registers the in-process camera client (see [`Hub::set_device`]).
    pub fn connect_device(&self) -> (ClientId, mpsc::UnboundedReceiver<DeviceOutbound>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = ClientId::random();
        let effects = {
            let mut state = self.lock();
            state.outboxes.insert(id, Outbox::Device(sender));
            let effects = state.hub.connect(id, IpAddr::from([127, 0, 0, 1]));
            state.hub.set_device(id);
            effects
        };
        self.deliver(effects);
        (id, receiver)
    }

    /// The camera client sent a message.
    pub fn receive_from_device(&self, from: ClientId, message: PeerMessage) {
        let effects = self.lock().hub.receive_message(from, message, Instant::now());
        self.deliver(effects);
    }

    /// Whether the camera client is in its room.
    pub fn device_in_room(&self) -> bool {
        self.lock().hub.device_joined()
    }

    /// A client sent a WebSocket message.
    pub fn receive(&self, from: ClientId, payload: &[u8]) {
        let effects = self.lock().hub.receive(from, payload, Instant::now());
        self.deliver(effects);
    }

    /// The connection layer found a fatal fault (oversize, rate).
    pub fn fail(&self, client: ClientId, code: ErrorCode) {
        let effects = self.lock().hub.fail(client, code);
        self.deliver(effects);
    }

    /// A client's connection ended. Idempotent.
    pub fn disconnect(&self, client: ClientId) {
        let effects = {
            let mut state = self.lock();
            state.outboxes.remove(&client);
            state.hub.disconnect(client)
        };
        self.deliver(effects);
    }

    /// The camera's own IPv6 prefixes changed (see [`crate::sources`]).
    pub fn set_local_prefixes(&self, local: crate::sources::LocalPrefixes) {
        self.lock().hub.set_local_prefixes(local);
    }

    /// Checks a bearer token against the room secret (see
    /// [`Hub::check_secret`]): 64 hex characters; anything else is a wrong guess.
    pub fn check_bearer(&self, ip: IpAddr, token: &str) -> Result<(), super::hub::SecretRefusal> {
        let candidate = super::ids::RoomId::parse(token).map(|id| *id.as_bytes());
        // A token that is not even hex is compared as an empty (wrong) secret.
        let bytes: &[u8] = candidate.as_ref().map_or(&[], |b| b.as_slice());
        self.lock().hub.check_secret(ip.to_canonical(), bytes, Instant::now())
    }

    /// A viewer slot for a WHEP viewer, or `None` when `--max-viewers` are
    /// watching (see [`Hub::reserve_whep`]).
    pub fn reserve_whep(&self) -> Option<WhepSlot> {
        self.lock().hub.reserve_whep().then(|| WhepSlot { relay: self.clone() })
    }

    /// Whether `client` has joined a room.
    pub fn is_joined(&self, client: ClientId) -> bool {
        self.lock().hub.is_joined(client)
    }

    pub fn stats(&self) -> RelayStats {
        let state = self.lock();
        RelayStats {
            clients: state.hub.client_count(),
            viewers: state.hub.viewer_count(),
            whep_viewers: state.hub.whep_count(),
            rooms: state.hub.room_count(),
        }
    }

    /// Tells every client the server is going away.
    pub fn shut_down(&self) {
        let clients: Vec<ClientId> = self.lock().outboxes.keys().copied().collect();
        for client in clients {
            self.fail(client, ErrorCode::ShuttingDown);
        }
    }

    fn deliver(&self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        // Serialise outside the lock; take the lock once to look up senders.
        let prepared: Vec<(ClientId, Outbound, DeviceOutbound)> = effects
            .into_iter()
            .map(|effect| match effect {
                Effect::Send { to, message } => {
                    (to, Outbound::Message(Bytes::from(message.to_json())), DeviceOutbound::Message(message))
                }
                Effect::Disconnect { client, code } => {
                    let message = Bytes::from(ServerMessage::error(code).to_json());
                    (client, Outbound::Close { message, code }, DeviceOutbound::Closed(code))
                }
            })
            .collect();
        let mut too_slow = Vec::new();
        {
            let mut state = self.lock();
            for (to, outbound, typed) in prepared {
                let closing = matches!(outbound, Outbound::Close { .. });
                match state.outboxes.get(&to) {
                    None => continue,
                    Some(Outbox::Socket(sender)) => {
                        if sender.try_send(outbound).is_err() {
                            too_slow.push(to);
                        }
                    }
                    // Never too slow: if the camera's task is gone the send
                    // fails, and its supervisor starts a new one.
                    Some(Outbox::Device(sender)) => {
                        let _ = sender.send(typed);
                    }
                }
                if closing {
                    // The hub has forgotten this client; dropping the sender
                    // lets its task end once the close is sent.
                    state.outboxes.remove(&to);
                }
            }
            for client in &too_slow {
                // Dropping the sender makes the connection task's receive end
                // return `None`, upon which it closes with `too-slow`.
                state.outboxes.remove(client);
            }
        }
        for client in too_slow {
            tracing::warn!(%client, "client does not read its messages; disconnecting");
            self.disconnect(client);
        }
    }
}
