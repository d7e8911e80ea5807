//! One viewer's peer connection: the camera offers a send-only H.264 track,
//! applies the viewer's answer and candidates, trickles its own, and feeds
//! the track from the fan-out until the viewer leaves or the connection fails.
//!
//! A WHEP viewer ([`crate::whep`]) is the same session with the roles
//! turned: the viewer's offer comes in, the camera answers once its own
//! candidates are gathered (no trickle), and everything after that (the
//! deadlines, the subscription on `connected`, the cleanup) is shared.
//!
//! Lifecycle: the answer must arrive within [`ANSWER_DEADLINE`] and the
//! connection must reach `connected` within [`ICE_DEADLINE`], or the session
//! ends. The viewer subscribes to the fan-out only once connected (so it is
//! counted and encoded for only then, with one keyframe). A start that fails
//! half-way closes the connection it built.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidate, RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpSender};

use super::backlog::{BacklogGate, Verdict};
use super::engine::{h264_codec, Engine, PeerSettings};
use super::pacer_gauge::PacerGauge;
use super::signal::{candidate_json, first_mid, offer_for_browser, ViewerSignal};
use super::video_track::{Negotiated, VideoTrack};
use crate::media::counters::LinkCounts;
use crate::media::fanout::{Fanout, FeedClosed};
use crate::signaling::ClientId;
use crate::viewers::Transport;

/// Sends a signal to this session's viewer.
pub type SignalSink = Arc<dyn Fn(Value) + Send + Sync>;

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Engine(#[from] super::engine::EngineError),
    #[error("WebRTC: {0}")]
    WebRtc(String),
    /// A WHEP viewer's offer could not be applied (its text is not repeated:
    /// it may quote what the viewer sent).
    #[error("the offer cannot be used: {0}")]
    Offer(String),
}

fn webrtc_error(e: impl std::fmt::Display) -> SessionError {
    SessionError::WebRtc(e.to_string())
}

/// The tracing target of the first-frame timeline (`bench: <milestone>`
/// events at debug level), read by `appliance/tests/browser/latency-bench.mjs`.
pub const BENCH: &str = "lookout::bench";
/// The tracing target of each viewer's link, once a second at debug level:
/// its bandwidth estimate, what its pacer holds, what was skipped for it.
pub const LINK: &str = "lookout::link";

/// No answer from the viewer within this long ends the session.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(15);
/// Not connected within this long (from the offer) ends the session.
pub const ICE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a WHEP answer waits for the camera's own candidates: host
/// candidates take milliseconds; a STUN server that does not answer must
/// not hold the HTTP request (the answer then has what was gathered).
pub const GATHER_DEADLINE: Duration = Duration::from_secs(2);

/// Who makes the offer.
enum Role {
    /// The camera (the page's viewer, through the signaling room).
    Offerer,
    /// The viewer (WHEP): its offer is applied and answered.
    Answerer(Box<RTCSessionDescription>),
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The connection failed or was closed.
    ConnectionEnded,
    NoAnswer,
    IceTimeout,
    /// The media pipeline ended for good.
    PipelineStopped,
    /// Writing to the track failed.
    WriteFailed,
}

/// What the camera hears back from a session.
#[derive(Debug)]
pub enum SessionEvent {
    /// The session is over; the camera closes it.
    Ended(ClientId, EndReason),
}

/// A running session. Dropping it does not close the connection: call
/// [`ViewerSession::close`].
pub struct ViewerSession {
    viewer: ClientId,
    pc: Arc<dyn PeerConnection>,
    inputs: mpsc::UnboundedSender<ViewerSignal>,
    send: SignalSink,
    /// ICE gathering completions (see [`Handler`]).
    gathered: watch::Receiver<u32>,
}

/// The local description once ICE gathering has completed more than
/// `done_before` times, or after [`GATHER_DEADLINE`] with what there is.
async fn gathered_answer(
    viewer: ClientId,
    pc: &dyn PeerConnection,
    mut gathered: watch::Receiver<u32>,
    done_before: u32,
) -> Result<String, SessionError> {
    // (The watch's guard must not live across the await below.)
    let complete = tokio::time::timeout(GATHER_DEADLINE, gathered.wait_for(|n| *n > done_before))
        .await
        .is_ok_and(|r| r.is_ok());
    if !complete {
        tracing::debug!(%viewer, "ICE gathering not complete in time; answering with what there is");
    }
    pc.local_description()
        .await
        .map(|description| description.sdp)
        .ok_or_else(|| SessionError::WebRtc("no local description".into()))
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidate>,
    state: watch::Sender<RTCPeerConnectionState>,
    /// How many times ICE gathering has completed (a WHEP answer waits for
    /// the next completion: the first, or the one after an ICE restart).
    gathered: watch::Sender<u32>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    // These run on the connection's driver task: hand over, never block.
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let _ = self.candidates.send(event.candidate);
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        tracing::debug!(target: BENCH, %state, "bench: ice-{state}");
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_modify(|n| *n += 1);
        }
    }
}

impl ViewerSession {
    /// Creates the connection, sends the offer, and starts the session's tasks.
    pub async fn start(
        viewer: ClientId,
        settings: &PeerSettings,
        fanout: &Fanout,
        send: SignalSink,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<ViewerSession, SessionError> {
        let (session, _) = Self::start_as(Role::Offerer, viewer, settings, fanout, send, events).await?;
        Ok(session)
    }

    /// The WHEP path: applies the viewer's `offer` (SDP), answers it with
    /// the camera's candidates in it (gathering bounded by
    /// [`GATHER_DEADLINE`]), and starts the same tasks as [`Self::start`].
    /// Returns the session and the answer's SDP.
    pub async fn answer(
        viewer: ClientId,
        settings: &PeerSettings,
        fanout: &Fanout,
        offer: String,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<(ViewerSession, String), SessionError> {
        let offer = RTCSessionDescription::offer(offer).map_err(|e| SessionError::Offer(short(&e)))?;
        // Nothing to trickle: the answer carries the candidates.
        let send: SignalSink = Arc::new(|_| {});
        let (session, answer) =
            Self::start_as(Role::Answerer(Box::new(offer)), viewer, settings, fanout, send, events).await?;
        match answer {
            Some(answer) => Ok((session, answer)),
            None => {
                session.close().await;
                Err(SessionError::WebRtc("no local description".into()))
            }
        }
    }

    async fn start_as(
        role: Role,
        viewer: ClientId,
        settings: &PeerSettings,
        fanout: &Fanout,
        send: SignalSink,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<(ViewerSession, Option<String>), SessionError> {
        let engine = Engine::new(settings)?;
        let (candidate_tx, candidate_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered_rx) = watch::channel(0u32);
        let handler = Arc::new(Handler { candidates: candidate_tx, state: state_tx, gathered: gathered_tx });
        let ice_servers = settings
            .ice_servers
            .iter()
            .map(|server| RTCIceServer {
                urls: vec![server.url.clone()],
                username: server.username.clone(),
                credential: server.credential.clone(),
            })
            .collect();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build())
            .with_media_engine(engine.media)
            .with_interceptor_registry(engine.interceptors)
            .with_setting_engine(engine.setting)
            .with_handler(handler)
            .with_udp_addrs(settings.udp_addrs.clone())
            .build()
            .await
            .map_err(webrtc_error)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let setup = Setup {
            viewer,
            codec: h264_codec(settings.h264_level).rtp_codec,
            pc: pc.clone(),
            fanout: fanout.clone(),
            send,
            events,
            estimate: engine.estimate,
            pacer: engine.pacer,
            candidate_rx,
            state_rx,
            gathered_rx,
        };
        match setup.run(role).await {
            Ok(session) => Ok(session),
            Err(e) => {
                // Never leak a half-built connection.
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    /// A WHEP viewer's ICE restart: `offer` is its first offer with new ICE
    /// credentials. The camera restarts ICE as the answerer (new credentials
    /// of its own, new candidates) on the same connection, so the session,
    /// its track and its slot carry on. Returns the new answer, candidates in.
    pub async fn restart_as_answerer(&self, offer: String) -> Result<String, SessionError> {
        let offer = RTCSessionDescription::offer(offer).map_err(|e| SessionError::Offer(short(&e)))?;
        let done_before = *self.gathered.borrow();
        self.pc.set_remote_description(offer).await.map_err(|e| SessionError::Offer(short(&e)))?;
        let answer = self.pc.create_answer(None).await.map_err(|e| SessionError::Offer(short(&e)))?;
        self.pc.set_local_description(answer).await.map_err(webrtc_error)?;
        tracing::info!(viewer = %self.viewer, "ICE restarted at the viewer's request");
        gathered_answer(self.viewer, self.pc.as_ref(), self.gathered.clone(), done_before).await
    }

    /// A signal from the viewer.
    pub fn handle_signal(&self, signal: ViewerSignal) {
        let _ = self.inputs.send(signal);
    }

    /// Tells the page why its connection is about to end (`{"type":"bye"}`).
    pub fn say_goodbye(&self, reason: &str) {
        (self.send)(serde_json::json!({"type": "bye", "reason": reason}));
    }

    /// Ends the connection; the session's tasks end with it.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// Everything after the connection exists; any error here closes it.
struct Setup {
    viewer: ClientId,
    /// The H.264 codec as registered (at the stream's level).
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    pc: Arc<dyn PeerConnection>,
    fanout: Fanout,
    send: SignalSink,
    events: mpsc::UnboundedSender<SessionEvent>,
    estimate: super::engine::EstimateHandle,
    pacer: Arc<PacerGauge>,
    candidate_rx: mpsc::UnboundedReceiver<RTCIceCandidate>,
    state_rx: watch::Receiver<RTCPeerConnectionState>,
    gathered_rx: watch::Receiver<u32>,
}

impl Setup {
    /// The session, and for [`Role::Answerer`] the answer's SDP.
    async fn run(self, role: Role) -> Result<(ViewerSession, Option<String>), SessionError> {
        let Setup {
            viewer,
            codec,
            pc,
            fanout,
            send,
            events,
            estimate,
            pacer,
            candidate_rx,
            state_rx,
            gathered_rx,
        } = self;

        // What `/metrics` counts this viewer's sent bytes under.
        let transport = match role {
            Role::Offerer => Transport::Page,
            Role::Answerer(_) => Transport::Whep,
        };

        // One track per connection: a track binds to one connection only.
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "lookout".to_owned(),
            "lookout-video".to_owned(),
            "camera".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codec.clone(),
                ..Default::default()
            }],
        )));
        // Frames are stamped with their capture time (see `video_track`).
        let video = VideoTrack::new(track.clone(), &codec, ssrc).map_err(webrtc_error)?;
        let transceiver = pc
            .add_transceiver_from_track(
                track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(webrtc_error)?;
        let sender = transceiver
            .sender()
            .await
            .map_err(webrtc_error)?
            .ok_or_else(|| SessionError::WebRtc("the transceiver has no sender".into()))?;

        // The send-only transceiver exists before a viewer's offer is
        // applied, so the offer's video section binds to it (and the answer
        // says `sendonly` to the viewer's `recvonly`).
        let (mid, answer) = match role {
            Role::Offerer => {
                let offer = pc.create_offer(None).await.map_err(webrtc_error)?;
                let mid = first_mid(&offer.sdp);
                pc.set_local_description(offer.clone()).await.map_err(webrtc_error)?;
                send(offer_for_browser(&offer).map_err(webrtc_error)?);
                tracing::debug!(target: BENCH, %viewer, "bench: offer-sent");
                (mid, None)
            }
            Role::Answerer(offer) => {
                pc.set_remote_description(*offer).await.map_err(|e| SessionError::Offer(short(&e)))?;
                let answer = pc.create_answer(None).await.map_err(|e| SessionError::Offer(short(&e)))?;
                let mid = first_mid(&answer.sdp);
                pc.set_local_description(answer).await.map_err(webrtc_error)?;
                let answer = gathered_answer(viewer, pc.as_ref(), gathered_rx.clone(), 0).await?;
                (mid, Some(answer))
            }
        };
        let remote_applied = answer.is_some();

        let (inputs, input_rx) = mpsc::unbounded_channel();
        tokio::spawn(signaling_task(
            viewer,
            pc.clone(),
            mid,
            remote_applied,
            input_rx,
            candidate_rx,
            state_rx.clone(),
            send.clone(),
            events.clone(),
        ));
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        tokio::spawn(keyframe_request_task(track.clone(), keyframe_wanted.clone()));
        tokio::spawn(media_task(
            viewer,
            transport,
            video,
            sender,
            fanout,
            state_rx,
            estimate,
            pacer,
            events,
            keyframe_wanted,
        ));
        Ok((ViewerSession { viewer, pc, inputs, send, gathered: gathered_rx }, answer))
    }
}

/// ICE restarts a viewer may ask for: at most one per this interval (the
/// page asks 2.5 s after its connection broke, then waits 8 s).
const MIN_RESTART_INTERVAL: Duration = Duration::from_secs(1);

/// Signals from the viewer the session cannot use (an offer, an answer that
/// does not apply, an ICE restart asked again at once). The first is logged;
/// the rest are counted and the count is logged when the session ends, so a
/// viewer that keeps sending them (a device with the secret gone bad) costs
/// a counter, not a log line each.
#[derive(Debug, Default)]
struct Unusable {
    seen: u32,
}

impl Unusable {
    /// Counts one; true for the first, which the caller logs.
    fn first(&mut self) -> bool {
        self.seen += 1;
        self.seen == 1
    }
}

/// At most 200 characters of an error that may quote what the viewer sent.
fn short(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Applies the viewer's signals, trickles ours, and watches the state.
#[allow(clippy::too_many_arguments)]
async fn signaling_task(
    viewer: ClientId,
    pc: Arc<dyn PeerConnection>,
    mut mid: Option<String>,
    remote_applied: bool,
    mut inputs: mpsc::UnboundedReceiver<ViewerSignal>,
    mut candidates: mpsc::UnboundedReceiver<RTCIceCandidate>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    send: SignalSink,
    events: mpsc::UnboundedSender<SessionEvent>,
) {
    // Candidates may arrive before the answer; they wait for it.
    let mut early_candidates = Vec::new();
    // A WHEP viewer's offer is applied before the session starts: it is
    // then as far as a page viewer whose answer arrived.
    let mut have_answer = remote_applied;
    let mut connected_once = false;
    let mut unusable = Unusable::default();
    let mut last_restart: Option<tokio::time::Instant> = None;
    let offered_at = tokio::time::Instant::now();
    let reason = loop {
        let deadline = if have_answer { offered_at + ICE_DEADLINE } else { offered_at + ANSWER_DEADLINE };
        tokio::select! {
            () = tokio::time::sleep_until(deadline), if !connected_once => {
                let reason = if have_answer { EndReason::IceTimeout } else { EndReason::NoAnswer };
                tracing::info!(%viewer, ?reason, "viewer did not connect in time");
                break reason;
            }
            input = inputs.recv() => match input {
                None => break EndReason::ConnectionEnded,
                Some(ViewerSignal::Description(description)) => {
                    if description.sdp_type != RTCSdpType::Answer {
                        if unusable.first() {
                            tracing::warn!(%viewer, "viewer sent an offer; the camera is the offerer");
                        }
                        continue;
                    }
                    if let Err(e) = pc.set_remote_description(*description).await {
                        if unusable.first() {
                            tracing::warn!(%viewer, error = %short(&e), "viewer's answer rejected");
                        }
                        continue;
                    }
                    have_answer = true;
                    tracing::debug!(target: BENCH, %viewer, "bench: answer-applied");
                    for candidate in early_candidates.drain(..) {
                        if let Err(e) = pc.add_ice_candidate(candidate).await {
                            tracing::debug!(%viewer, error = %e, "viewer candidate rejected");
                        }
                    }
                }
                Some(ViewerSignal::Candidate(candidate)) => {
                    tracing::debug!(%viewer, candidate = %candidate.candidate, "viewer candidate");
                    if !have_answer {
                        early_candidates.push(candidate);
                    } else if let Err(e) = pc.add_ice_candidate(candidate).await {
                        tracing::debug!(%viewer, error = %e, "viewer candidate rejected");
                    }
                }
                Some(ViewerSignal::EndOfCandidates) => {}
                Some(ViewerSignal::RestartIce) => {
                    let now = tokio::time::Instant::now();
                    if last_restart.is_some_and(|at| now < at + MIN_RESTART_INTERVAL) {
                        if unusable.first() {
                            tracing::warn!(%viewer, "viewer asked for another ICE restart at once; ignored");
                        }
                        continue;
                    }
                    last_restart = Some(now);
                    tracing::info!(%viewer, "ICE restart requested");
                    match pc.create_offer(Some(RTCOfferOptions { ice_restart: true })).await {
                        Ok(offer) => {
                            mid = first_mid(&offer.sdp).or(mid);
                            if pc.set_local_description(offer.clone()).await.is_ok() {
                                have_answer = false;
                                if let Ok(value) = offer_for_browser(&offer) {
                                    send(value);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(%viewer, error = %e, "ICE restart offer failed"),
                    }
                }
            },
            Some(candidate) = candidates.recv() => {
                // A wildcard socket on a host without such addresses (no
                // global IPv6, say) yields a candidate for `0.0.0.0` or `::`,
                // which no browser can reach: do not send it.
                if candidate.address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
                    continue;
                }
                if let Some(json) = candidate_json(&candidate, mid.as_deref()) {
                    tracing::debug!(%viewer, candidate = %json["candidate"], "local candidate");
                    send(json);
                }
            },
            changed = state.changed() => {
                if changed.is_err() {
                    break EndReason::ConnectionEnded;
                }
                let now = *state.borrow_and_update();
                tracing::info!(%viewer, state = %now, "viewer connection");
                if now == RTCPeerConnectionState::Connected {
                    tracing::debug!(target: BENCH, %viewer, "bench: connected");
                }
                connected_once |= now == RTCPeerConnectionState::Connected;
                if matches!(now, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                    break EndReason::ConnectionEnded;
                }
            }
        }
    };
    if unusable.seen > 1 {
        tracing::info!(%viewer, more = unusable.seen - 1, "more unusable signals from the viewer were ignored");
    }
    let _ = events.send(SessionEvent::Ended(viewer, reason));
}

/// Notes the viewer's PLI/FIR; the media task passes them on through the
/// viewer's feed, which lets one a second through (`media::rate`).
async fn keyframe_request_task(track: Arc<TrackLocalStaticRTP>, wanted: Arc<AtomicBool>) {
    while let Some(event) = track.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event {
            if !packets.is_empty() {
                wanted.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Writes the fan-out's frames to the track once the connection is up; the
/// viewer subscribes (is counted, and gets its keyframe) only then. Each
/// frame written is counted for `/metrics` under the viewer's `transport`.
#[allow(clippy::too_many_arguments)]
async fn media_task(
    viewer: ClientId,
    transport: Transport,
    mut video: VideoTrack,
    sender: Arc<dyn RtpSender>,
    fanout: Fanout,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    estimate: super::engine::EstimateHandle,
    pacer: Arc<PacerGauge>,
    events: mpsc::UnboundedSender<SessionEvent>,
    keyframe_wanted: Arc<AtomicBool>,
) {
    // Writes before negotiation would vanish silently: wait for "connected".
    let connected = state
        .wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        })
        .await
        .map(|s| *s == RTCPeerConnectionState::Connected);
    if !matches!(connected, Ok(true)) {
        return;
    }
    // The payload type and extension IDs the sender checks packets against.
    let negotiated = match sender.get_parameters().await {
        Ok(parameters) => match Negotiated::from_parameters(
            &parameters.rtp_parameters.codecs,
            &parameters.rtp_parameters.header_extensions,
        ) {
            Some(negotiated) => negotiated,
            None => {
                tracing::warn!(%viewer, "no codec negotiated");
                return;
            }
        },
        Err(e) => {
            tracing::warn!(%viewer, error = %e, "cannot read the negotiated codec");
            return;
        }
    };
    // Subscribing asks for the keyframe this viewer starts on.
    let Ok(mut feed) = fanout.subscribe() else {
        let _ = events.send(SessionEvent::Ended(viewer, EndReason::PipelineStopped));
        return;
    };
    tracing::debug!(target: BENCH, %viewer, "bench: subscribed");
    let mut last_report = Instant::now() - Duration::from_secs(1);
    let mut first = true;
    let mut gate = BacklogGate::default();
    let mut last_log = Instant::now();
    let (mut sent_frames, mut sent_bytes, mut requests) = (0u64, 0u64, 0u64);
    // This link's counts as last added to /metrics' totals.
    let mut counted = LinkCounts::default();
    let link_counts = |gate: &BacklogGate| LinkCounts {
        backlog_skipped: gate.skipped,
        retransmissions_late: pacer.late_retransmissions(),
        retransmissions_duplicate: pacer.duplicate_retransmissions(),
        overuses: estimate.overuses(),
    };
    let reason = loop {
        let frame = tokio::select! {
            frame = feed.next() => match frame {
                Ok(frame) => frame,
                Err(FeedClosed) => break EndReason::PipelineStopped,
            },
            // A connection that fails or closes while streaming frees its slot now.
            changed = state.changed() => {
                let over = changed.is_err()
                    || matches!(*state.borrow_and_update(), RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed);
                if over {
                    break EndReason::ConnectionEnded;
                }
                continue;
            }
        };
        // Skipped frames never reach the track: the viewer sees a gap in
        // time, not a loss, and asks for nothing (see `backlog`).
        let now = Instant::now();
        if gate.decide(frame.keyframe, frame.layer, pacer.backlog(), now) == Verdict::Send {
            if let Err(e) = video.write(&frame, negotiated).await {
                tracing::debug!(%viewer, error = %e.to_string().chars().take(120).collect::<String>(), "media write ended");
                break EndReason::WriteFailed;
            }
            if frame.keyframe {
                gate.keyframe_sent(now, pacer.time_to_send(frame.data.len() as u64));
            }
            // Once per frame per viewer, when its packets are queued on this
            // viewer's connection: each viewer's own wait (its turn on the
            // runtime, its connection's back-pressure) is part of its latency,
            // and the count matches the bytes, which are per viewer too.
            fanout.sent().sent(transport, frame.data.len(), frame.captured_mono, Instant::now());
            sent_frames += 1;
            sent_bytes += frame.data.len() as u64;
            if first {
                first = false;
                let age = frame.captured_at.elapsed().unwrap_or_default().as_millis() as u64;
                tracing::debug!(target: BENCH, %viewer, keyframe = frame.keyframe, bytes = frame.data.len(), capture_age_ms = age, "bench: first-frame-sent");
            }
        }
        // A viewer waiting for the keyframe it chose to wait for gets it
        // without asking everyone's encoder for one.
        if keyframe_wanted.swap(false, Ordering::Relaxed) {
            requests += 1;
            if !gate.waiting_for_keyframe() {
                feed.request_keyframe();
            }
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            feed.report_estimate(estimate.bits_per_second());
            last_report = Instant::now();
        }
        if last_log.elapsed() >= Duration::from_secs(1) {
            fanout.sent().add_link(&mut counted, link_counts(&gate));
            let (delay_based, loss_based, loss) = estimate.halves();
            tracing::debug!(
                target: LINK,
                %viewer,
                estimate = estimate.bits_per_second(),
                delay_based,
                loss_based,
                overuses = estimate.overuses(),
                loss = format_args!("{loss:.3}"),
                pacer_rate = pacer.rate() as u64,
                pacer_queued = pacer.queued_bytes(),
                backlog_ms = pacer.backlog().as_millis() as u64,
                refused = pacer.refused(),
                late_retransmissions = pacer.late_retransmissions(),
                duplicate_retransmissions = pacer.duplicate_retransmissions(),
                sent_frames,
                sent_kbit = sent_bytes * 8 / 1000,
                skipped = gate.skipped,
                waiting = gate.waiting_for_keyframe(),
                layer = feed.max_layer(),
                fanout_dropped = feed.dropped(),
                keyframe_requests = requests,
                "link"
            );
            last_log = Instant::now();
            sent_frames = 0;
            sent_bytes = 0;
        }
    };
    fanout.sent().add_link(&mut counted, link_counts(&gate));
    drop(feed);
    let _ = events.send(SessionEvent::Ended(viewer, reason));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_unusable_signal_is_logged_the_rest_counted() {
        let mut unusable = Unusable::default();
        assert!(unusable.first());
        assert!(!unusable.first());
        assert!(!unusable.first());
        assert_eq!(unusable.seen, 3);
    }

    #[test]
    fn errors_quoting_the_viewer_are_cut_at_200_characters() {
        assert_eq!(short(&"bad sdp"), "bad sdp");
        let long = "é".repeat(70_000);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
    }
}
