//! WHEP sessions (draft-ietf-wish-whep): viewers that bring their own
//! WebRTC stack and no signaling room (go2rtc, MediaMTX, a WHEP player).
//!
//! A WHEP viewer is a viewer like a page's: its connection is a
//! [`ViewerSession`] built by the same code (the answerer path), fed by the
//! same fan-out and encoder, with the same deadlines; it holds a slot of the
//! one viewer count (`crate::viewers`, `--max-viewers`) from its `POST` until
//! its session ends. A session ends by `DELETE`, or by itself when its
//! connection fails, closes, never connects, or the pipeline stops; either
//! way the registry forgets it and its slot is given back. The HTTP side is
//! `http::whep`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::media::fanout::Fanout;
use crate::peer::session::{SessionError, SessionEvent, ViewerSession};
use crate::peer::PeerSettings;
use crate::signaling::relay::WhepSlot;
use crate::signaling::{ClientId, Relay};

/// How long closing one connection may take before it is left to itself.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Why a WHEP session was not created.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error("the camera is full (--max-viewers)")]
    Full,
    #[error("the offer cannot be used: {0}")]
    Offer(String),
    #[error("the session could not be set up: {0}")]
    Failed(String),
}

/// A created session, as the `201 Created` reports it.
#[derive(Debug)]
pub struct Created {
    /// The session's resource id (`/whep/<id>`): 128 random bits.
    pub id: String,
    /// The session's entity tag (without quotes).
    pub etag: String,
    /// The SDP answer, with the camera's candidates.
    pub answer: String,
}

/// The running WHEP sessions. Cheap to clone; clones share.
#[derive(Clone)]
pub struct WhepSessions {
    inner: Arc<Inner>,
}

struct Inner {
    relay: Relay,
    fanout: Fanout,
    settings: PeerSettings,
    events: mpsc::UnboundedSender<SessionEvent>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Entry>,
    /// Sessions being set up, and whether they already ended (an end can be
    /// reported before the session is in `sessions`).
    starting: HashMap<ClientId, bool>,
}

struct Entry {
    viewer: ClientId,
    session: ViewerSession,
    etag: String,
    /// Dropped with the entry: the viewer slot is given back.
    _slot: WhepSlot,
}

fn random_hex() -> String {
    // ClientId::random draws 16 bytes from the OS-seeded CSPRNG.
    ClientId::random().to_string()
}

impl WhepSessions {
    /// The registry, and its task that forgets sessions that end by
    /// themselves. Needs a Tokio runtime.
    pub fn new(relay: Relay, fanout: Fanout, settings: PeerSettings) -> WhepSessions {
        let (events, mut ended) = mpsc::unbounded_channel::<SessionEvent>();
        let inner = Arc::new(Inner { relay, fanout, settings, events, state: Mutex::new(State::default()) });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(SessionEvent::Ended(viewer, reason)) = ended.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let entry = {
                    let mut state = lock(&inner.state);
                    if let Some(ended) = state.starting.get_mut(&viewer) {
                        *ended = true;
                        None
                    } else {
                        let id =
                            state.sessions.iter().find(|(_, e)| e.viewer == viewer).map(|(id, _)| id.clone());
                        id.and_then(|id| state.sessions.remove(&id))
                    }
                };
                if let Some(entry) = entry {
                    tracing::info!(%viewer, ?reason, "WHEP session ended");
                    close_in_background(entry);
                }
            }
        });
        WhepSessions { inner }
    }

    /// Takes a viewer slot, answers `offer`, and keeps the session.
    pub async fn create(&self, offer: String) -> Result<Created, WhepError> {
        let inner = &self.inner;
        let slot = inner.relay.reserve_whep().ok_or(WhepError::Full)?;
        let viewer = ClientId::random();
        lock(&inner.state).starting.insert(viewer, false);
        let started =
            ViewerSession::answer(viewer, &inner.settings, &inner.fanout, offer, inner.events.clone()).await;
        let ended_early = lock(&inner.state).starting.remove(&viewer).unwrap_or(false);
        let (session, answer) = match started {
            Ok(started) => started,
            Err(SessionError::Offer(e)) => return Err(WhepError::Offer(e)),
            Err(e) => return Err(WhepError::Failed(e.to_string())),
        };
        let entry = Entry { viewer, session, etag: random_hex(), _slot: slot };
        if ended_early {
            close_in_background(entry);
            return Err(WhepError::Failed("the connection ended while it was set up".into()));
        }
        let (id, etag) = (random_hex(), entry.etag.clone());
        lock(&inner.state).sessions.insert(id.clone(), entry);
        tracing::info!(%viewer, "WHEP viewer answered");
        Ok(Created { id, etag, answer })
    }

    /// Ends the session `id`; false when there is none.
    pub fn delete(&self, id: &str) -> bool {
        let entry = lock(&self.inner.state).sessions.remove(id);
        match entry {
            Some(entry) => {
                tracing::info!(viewer = %entry.viewer, "WHEP session deleted");
                close_in_background(entry);
                true
            }
            None => false,
        }
    }

    /// The entity tag of session `id`, if it exists.
    pub fn etag(&self, id: &str) -> Option<String> {
        lock(&self.inner.state).sessions.get(id).map(|e| e.etag.clone())
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is consistent between any two statements that change it.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Closes the connection in its own task; the slot goes back at once.
fn close_in_background(entry: Entry) {
    let Entry { session, _slot, .. } = entry;
    drop(_slot);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_DEADLINE, session.close()).await;
        });
    }
}
