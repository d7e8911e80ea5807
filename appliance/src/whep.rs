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

use webrtc::peer_connection::RTCIceCandidateInit;

use crate::media::fanout::Fanout;
use crate::peer::session::{SessionError, SessionEvent, ViewerSession};
use crate::peer::signal::ViewerSignal;
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

/// Why a `PATCH` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("no such session")]
    NotFound,
    #[error("If-Match does not match the session's ETag")]
    PreconditionFailed,
    #[error("an ICE restart needs both a=ice-ufrag and a=ice-pwd")]
    Incomplete,
    #[error("the ICE restart failed: {0}")]
    RestartFailed(String),
}

/// What a `PATCH` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Patched {
    /// Candidates were handed to the connection (204).
    Trickled,
    /// ICE restarted (200): the session's new tag and the answer's
    /// fragment (credentials and candidates).
    Restarted { etag: String, fragment: String },
}

/// What the camera reads from an SDP fragment (RFC 8840): the ICE username
/// fragment and the candidates, each with the `a=mid` it follows.
#[derive(Debug, Default, PartialEq, Eq)]
struct SdpFragment {
    ufrag: Option<String>,
    pwd: Option<String>,
    candidates: Vec<(Option<String>, String)>,
}

impl SdpFragment {
    fn parse(text: &str) -> SdpFragment {
        let mut fragment = SdpFragment::default();
        let mut mid = None;
        for line in text.lines().map(str::trim) {
            if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
                // The first one: an offer repeats it per media section.
                fragment.ufrag.get_or_insert_with(|| ufrag.to_owned());
            } else if let Some(pwd) = line.strip_prefix("a=ice-pwd:") {
                fragment.pwd.get_or_insert_with(|| pwd.to_owned());
            } else if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_owned());
            } else if let Some(candidate) = line.strip_prefix("a=") {
                if candidate.starts_with("candidate:") {
                    fragment.candidates.push((mid.clone(), candidate.to_owned()));
                }
            }
        }
        fragment
    }
}

/// The viewer's offer with new ICE credentials and without its old
/// candidates: what an ICE restart applies as the new remote offer.
fn with_credentials(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines().map(str::trim_end) {
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The SDP fragment (RFC 8840) of an answer that a restart `PATCH` returns:
/// its ICE credentials, then each media section's `m=` and `a=mid` lines
/// with its candidates.
fn answer_fragment(answer: &str) -> String {
    let lines: Vec<&str> = answer.lines().map(str::trim_end).collect();
    let mut out = String::new();
    for prefix in ["a=ice-ufrag:", "a=ice-pwd:"] {
        if let Some(line) = lines.iter().find(|l| l.starts_with(prefix)) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    for line in lines {
        // RTP and RTCP share one port (rtcp-mux): component 2 candidates say
        // nothing new, and some clients (whip-whep 1.2) cannot take more
        // than one candidate per restart answer.
        let rtcp = line.strip_prefix("a=candidate:").and_then(|c| c.split(' ').nth(1)) == Some("2");
        let keep = line.starts_with("m=")
            || line.starts_with("a=mid:")
            || (line.starts_with("a=candidate:") && !rtcp)
            || line == "a=end-of-candidates";
        if keep {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
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
    /// The viewer's offer as last applied (an ICE restart applies it again
    /// with the new credentials).
    offer: String,
    /// The viewer's ICE username fragment, from its offer.
    remote_ufrag: String,
    session: Arc<ViewerSession>,
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
        let remote_ufrag = SdpFragment::parse(&offer).ufrag.unwrap_or_default();
        let offer_text = offer.clone();
        lock(&inner.state).starting.insert(viewer, false);
        let started =
            ViewerSession::answer(viewer, &inner.settings, &inner.fanout, offer, inner.events.clone()).await;
        let ended_early = lock(&inner.state).starting.remove(&viewer).unwrap_or(false);
        let (session, answer) = match started {
            Ok(started) => started,
            Err(SessionError::Offer(e)) => return Err(WhepError::Offer(e)),
            Err(e) => return Err(WhepError::Failed(e.to_string())),
        };
        let entry = Entry {
            viewer,
            offer: offer_text,
            remote_ufrag,
            session: Arc::new(session),
            etag: random_hex(),
            _slot: slot,
        };
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

    /// A `PATCH` of session `id` with an `application/trickle-ice-sdpfrag`
    /// body: trickled candidates, or (new `ice-ufrag`) an ICE restart.
    /// `if_match` is the request's `If-Match`, which must be the session's
    /// tag or `*` when given.
    pub async fn patch(
        &self,
        id: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<Patched, PatchError> {
        let fragment = SdpFragment::parse(fragment);
        let (session, offer) = {
            let state = lock(&self.inner.state);
            let entry = state.sessions.get(id).ok_or(PatchError::NotFound)?;
            if let Some(tag) = if_match.map(str::trim) {
                if tag != "*" && tag.trim_matches('"') != entry.etag {
                    return Err(PatchError::PreconditionFailed);
                }
            }
            let restart = fragment.ufrag.as_deref().is_some_and(|ufrag| ufrag != entry.remote_ufrag);
            if !restart {
                for (mid, candidate) in fragment.candidates {
                    entry.session.handle_signal(ViewerSignal::Candidate(RTCIceCandidateInit {
                        candidate,
                        sdp_mid: mid,
                        sdp_mline_index: None,
                        username_fragment: fragment.ufrag.clone(),
                        ..Default::default()
                    }));
                }
                return Ok(Patched::Trickled);
            }
            (entry.session.clone(), entry.offer.clone())
        };
        let (Some(ufrag), Some(pwd)) = (fragment.ufrag, fragment.pwd) else {
            return Err(PatchError::Incomplete);
        };
        let offer = with_credentials(&offer, &ufrag, &pwd);
        let answer = session
            .restart_as_answerer(offer.clone())
            .await
            .map_err(|e| PatchError::RestartFailed(e.to_string()))?;
        let etag = random_hex();
        let mut state = lock(&self.inner.state);
        let entry = state.sessions.get_mut(id).ok_or(PatchError::NotFound)?;
        entry.offer = offer;
        entry.remote_ufrag = ufrag;
        entry.etag = etag.clone();
        Ok(Patched::Restarted { etag, fragment: answer_fragment(&answer) })
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
    // (A restart in flight may hold another reference; closing is shared.)
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_DEADLINE, session.close()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_fragment_gives_its_ufrag_and_candidates_with_their_mid() {
        let text = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
                    m=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
                    a=end-of-candidates\r\n";
        let fragment = SdpFragment::parse(text);
        assert_eq!(fragment.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(
            fragment.candidates,
            [(
                Some("0".to_owned()),
                "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0".to_owned()
            )]
        );
        assert_eq!(fragment.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(SdpFragment::parse("v=0\r\n"), SdpFragment::default());
    }

    #[test]
    fn a_restart_applies_the_offer_with_new_credentials_and_answers_a_fragment() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n\
                     a=mid:0\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\na=recvonly\r\n";
        let again = with_credentials(offer, "new", "newpwd");
        assert_eq!(
            again,
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:new\r\na=ice-pwd:newpwd\r\na=mid:0\r\na=recvonly\r\n"
        );
        let answer =
            "v=0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:cam\r\n\
                      a=ice-pwd:campwd\r\na=sendonly\r\na=candidate:2 1 udp 2 127.0.0.1 6000 typ host\r\n\
                      a=candidate:2 2 udp 2 127.0.0.1 6000 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            answer_fragment(answer),
            "a=ice-ufrag:cam\r\na=ice-pwd:campwd\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
             a=candidate:2 1 udp 2 127.0.0.1 6000 typ host\r\na=end-of-candidates\r\n"
        );
    }
}
