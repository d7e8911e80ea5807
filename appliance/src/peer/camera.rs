//! The camera as a member of its own room.
//!
//! An in-process client of the signaling relay, typed end to end: it gets the
//! hub's [`ServerMessage`]s as values and sends [`PeerMessage`]s, through a
//! channel the relay never cuts off. It joins the camera's room at start and
//! offers video to every viewer already there and to each `Room/Join`; each
//! `Room/Leave`, or a session that ends, closes that viewer's connection.
//! Starting and closing connections run in their own tasks, so one slow
//! `close` never stalls the room. [`CameraPeer::finished`] says why it ended;
//! `app` restarts it unless the server is shutting down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::engine::PeerSettings;
use super::session::{EndReason, SessionEvent, SignalSink, ViewerSession};
use super::signal::ViewerSignal;
use crate::media::fanout::Fanout;
use crate::signaling::relay::DeviceOutbound;
use crate::signaling::{ClientId, ErrorCode, PeerMessage, Relay, RoomId, ServerMessage};

/// How long closing one connection may take before it is left to itself.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Why the camera peer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEnd {
    /// The server is shutting down: do not restart.
    ShuttingDown,
    /// Anything else: restart.
    Lost(String),
}

/// The running camera peer.
pub struct CameraPeer {
    task: JoinHandle<PeerEnd>,
}

impl CameraPeer {
    /// Joins the room `room_hex` (the room secret) and serves viewers.
    pub fn spawn(relay: Relay, room_hex: String, fanout: Fanout, settings: PeerSettings) -> CameraPeer {
        CameraPeer { task: tokio::spawn(run(relay, room_hex, fanout, settings)) }
    }

    /// Waits for the peer to end; `Err` when its task panicked or was aborted.
    pub async fn finished(&mut self) -> Result<PeerEnd, String> {
        (&mut self.task).await.map_err(|e| format!("the camera peer's task ended: {e}"))
    }

    /// Ends the task now, as a crash would (its guard still leaves the room).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// One viewer's place: its connection is being set up, or is up.
enum Slot {
    /// Signals that arrived before the session existed, in order.
    Starting(Vec<ViewerSignal>),
    Running(ViewerSession),
}

/// The camera's membership and its sessions. Dropping it (the task ended,
/// even by abort) leaves the room and closes every connection.
struct Membership {
    relay: Relay,
    me: ClientId,
    slots: HashMap<ClientId, Slot>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.relay.disconnect(self.me);
        for (_, slot) in self.slots.drain() {
            if let Slot::Running(session) = slot {
                close_in_background(session);
            }
        }
    }
}

fn close_in_background(session: ViewerSession) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_DEADLINE, session.close()).await;
        });
    }
}

/// What the loop hears from its own tasks.
enum Event {
    Started(ClientId, Result<ViewerSession, String>),
}

async fn run(relay: Relay, room_hex: String, fanout: Fanout, settings: PeerSettings) -> PeerEnd {
    let Some(room_id) = RoomId::parse(&room_hex) else {
        return PeerEnd::ShuttingDown; // cannot happen: the secret is 64 hex
    };
    drop(room_hex);
    let (me, mut inbox) = relay.connect_device();
    let mut membership = Membership { relay: relay.clone(), me, slots: HashMap::new() };
    relay.receive_from_device(me, PeerMessage::JoinOrCreate { room_id });
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (session_tx, mut session_events) = mpsc::unbounded_channel::<SessionEvent>();
    let camera = Camera {
        relay: &relay,
        me,
        fanout: &fanout,
        settings: &settings,
        events: &events_tx,
        sessions: &session_tx,
    };
    loop {
        tokio::select! {
            outbound = inbox.recv() => match outbound {
                Some(DeviceOutbound::Message(message)) => camera.handle(message, &mut membership.slots),
                Some(DeviceOutbound::Closed(ErrorCode::ShuttingDown)) => {
                    tracing::info!("camera left the room: the server is shutting down");
                    return PeerEnd::ShuttingDown;
                }
                Some(DeviceOutbound::Closed(code)) => return PeerEnd::Lost(format!("the hub dropped the camera: {code}")),
                None => return PeerEnd::Lost("the relay forgot the camera".into()),
            },
            Some(event) = events.recv() => match event {
                Event::Started(viewer, result) => match (result, membership.slots.remove(&viewer)) {
                    (Ok(session), Some(Slot::Starting(early))) => {
                        tracing::info!(%viewer, "offering video to a new viewer");
                        for signal in early {
                            session.handle_signal(signal);
                        }
                        membership.slots.insert(viewer, Slot::Running(session));
                    }
                    // The viewer left while its connection was being set up.
                    (Ok(session), _) => close_in_background(session),
                    (Err(e), _) => tracing::warn!(%viewer, error = %e, "cannot start a session for a viewer"),
                },
            },
            Some(event) = session_events.recv() => camera.session_event(event, &mut membership.slots),
        }
    }
}

/// The loop's fixed context.
struct Camera<'a> {
    relay: &'a Relay,
    me: ClientId,
    fanout: &'a Fanout,
    settings: &'a PeerSettings,
    events: &'a mpsc::UnboundedSender<Event>,
    sessions: &'a mpsc::UnboundedSender<SessionEvent>,
}

impl Camera<'_> {
    fn handle(&self, message: ServerMessage, slots: &mut HashMap<ClientId, Slot>) {
        match message {
            ServerMessage::Joined { clients, .. } => {
                tracing::info!(viewers = clients.len(), "camera is in its room");
                // Viewers already there (the camera peer was restarted) get an offer too.
                for viewer in clients {
                    self.start(viewer, slots);
                }
            }
            ServerMessage::RoomJoin { client_id, .. } => {
                tracing::debug!(target: super::session::BENCH, viewer = %client_id, "bench: viewer-joined");
                self.start(client_id, slots)
            }
            ServerMessage::RoomLeave { client_id } => {
                if let Some(Slot::Running(session)) = slots.remove(&client_id) {
                    close_in_background(session);
                }
            }
            ServerMessage::RoomSignal { from, signal } => {
                let Some(slot) = slots.get_mut(&from) else { return };
                let parsed = serde_json::from_str::<Value>(signal.get())
                    .map_err(|e| e.to_string())
                    .and_then(|value| ViewerSignal::parse(&value).map_err(|e| e.to_string()));
                match (parsed, slot) {
                    (Ok(signal), Slot::Running(session)) => session.handle_signal(signal),
                    (Ok(signal), Slot::Starting(early)) => early.push(signal),
                    (Err(e), _) => tracing::debug!(viewer = %from, error = %e, "ignored signal"),
                }
            }
            ServerMessage::Error { code, .. } => tracing::warn!(%code, "signaling error for the camera"),
            ServerMessage::Hello { .. } => {}
        }
    }

    /// Starts a session for `viewer` in its own task.
    fn start(&self, viewer: ClientId, slots: &mut HashMap<ClientId, Slot>) {
        if slots.contains_key(&viewer) {
            return;
        }
        slots.insert(viewer, Slot::Starting(Vec::new()));
        let (relay, me) = (self.relay.clone(), self.me);
        let send: SignalSink =
            Arc::new(move |signal: Value| match serde_json::value::to_raw_value(&signal) {
                Ok(raw) => relay.receive_from_device(
                    me,
                    PeerMessage::Signal { signal: Arc::from(raw), to: Some(viewer) },
                ),
                Err(e) => tracing::warn!(%viewer, error = %e, "cannot encode a signal"),
            });
        let (settings, fanout, events, sessions) =
            (self.settings.clone(), self.fanout.clone(), self.events.clone(), self.sessions.clone());
        tokio::spawn(async move {
            let result = ViewerSession::start(viewer, &settings, &fanout, send, sessions).await;
            let _ = events.send(Event::Started(viewer, result.map_err(|e| e.to_string())));
        });
    }

    fn session_event(&self, event: SessionEvent, slots: &mut HashMap<ClientId, Slot>) {
        let SessionEvent::Ended(viewer, reason) = event;
        if let Some(Slot::Running(session)) = slots.remove(&viewer) {
            tracing::info!(%viewer, ?reason, "viewer session ended");
            if reason == EndReason::PipelineStopped {
                // Tell the page why before the connection goes.
                session.say_goodbye("camera-stopped");
            }
            close_in_background(session);
        }
    }
}
