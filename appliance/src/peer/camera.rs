//! The camera as a member of its own room.
//!
//! An in-process client of the signaling relay: it joins the camera's room
//! at start; each `Room/Join` starts a [`ViewerSession`] that offers video to
//! that viewer (addressed with `to`); each `Room/Leave`, or a failed
//! connection, ends it.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::engine::PeerSettings;
use super::session::{SessionEvent, SignalSink, ViewerSession};
use super::signal::ViewerSignal;
use crate::media::fanout::Fanout;
use crate::signaling::relay::Outbound;
use crate::signaling::{ClientId, Relay};

/// The running camera peer.
pub struct CameraPeer {
    task: JoinHandle<()>,
}

impl CameraPeer {
    /// Joins the room `room_hex` (the room secret) and serves viewers.
    pub fn spawn(relay: Relay, room_hex: String, fanout: Fanout, settings: PeerSettings) -> CameraPeer {
        CameraPeer { task: tokio::spawn(run(relay, room_hex, fanout, settings)) }
    }

    /// Waits for the peer to end (it ends when the relay closes its client).
    pub async fn finished(self) {
        let _ = self.task.await;
    }
}

async fn run(relay: Relay, room_hex: String, fanout: Fanout, settings: PeerSettings) {
    let (me, mut inbox) = relay.connect_device();
    let join = json!({"type": "JoinOrCreate", "room_id": room_hex});
    drop(room_hex);
    relay.receive(me, join.to_string().as_bytes());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut sessions: HashMap<ClientId, ViewerSession> = HashMap::new();
    loop {
        tokio::select! {
            outbound = inbox.recv() => {
                let bytes = match outbound {
                    Some(Outbound::Message(bytes)) => bytes,
                    Some(Outbound::Close { code, .. }) => {
                        tracing::info!(%code, "camera left the room");
                        break;
                    }
                    None => break,
                };
                let Ok(message) = serde_json::from_slice::<Value>(&bytes) else { continue };
                handle(&relay, me, &message, &mut sessions, &fanout, &settings, &events_tx).await;
            }
            Some(SessionEvent::Ended(viewer)) = events.recv() => {
                if let Some(session) = sessions.remove(&viewer) {
                    tracing::info!(%viewer, "viewer session ended");
                    session.close().await;
                }
            }
        }
    }
    for (_, session) in sessions.drain() {
        session.close().await;
    }
    relay.disconnect(me);
}

async fn handle(
    relay: &Relay,
    me: ClientId,
    message: &Value,
    sessions: &mut HashMap<ClientId, ViewerSession>,
    fanout: &Fanout,
    settings: &PeerSettings,
    events: &mpsc::UnboundedSender<SessionEvent>,
) {
    let client = |field: &str| message.get(field).and_then(Value::as_str).and_then(ClientId::parse);
    match message.get("type").and_then(Value::as_str) {
        Some("Joined") => tracing::info!("camera is in its room, waiting for viewers"),
        Some("Room/Join") => {
            let Some(viewer) = client("client_id") else { return };
            let relay = relay.clone();
            let send: SignalSink = std::sync::Arc::new(move |signal: Value| {
                let message = json!({"type": "Signal", "to": viewer.to_string(), "signal": signal});
                relay.receive(me, message.to_string().as_bytes());
            });
            match ViewerSession::start(viewer, settings, fanout, send, events.clone()).await {
                Ok(session) => {
                    tracing::info!(%viewer, "offering video to a new viewer");
                    sessions.insert(viewer, session);
                }
                Err(e) => tracing::warn!(%viewer, error = %e, "cannot start a session for a viewer"),
            }
        }
        Some("Room/Leave") => {
            if let Some(session) = client("client_id").and_then(|viewer| sessions.remove(&viewer)) {
                session.close().await;
            }
        }
        Some("Room/Signal") => {
            let (Some(viewer), Some(signal)) = (client("from"), message.get("signal")) else { return };
            let Some(session) = sessions.get(&viewer) else { return };
            match ViewerSignal::parse(signal) {
                Ok(signal) => session.handle_signal(signal),
                Err(e) => tracing::debug!(%viewer, error = %e, "ignored signal"),
            }
        }
        Some("Error") => tracing::warn!(error = %message, "signaling error for the camera"),
        _ => {}
    }
}
