//! One viewer's peer connection: the camera offers a send-only H.264 track,
//! applies the viewer's answer and candidates, trickles its own, and feeds
//! the track from the fan-out until the viewer leaves or the connection fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidate, RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSdpType,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpSender};

use super::engine::{h264_codec, Engine, PeerSettings};
use super::signal::{candidate_json, first_mid, ViewerSignal};
use crate::media::fanout::{Fanout, ViewerFeed};
use crate::signaling::ClientId;

/// Sends a signal to this session's viewer.
pub type SignalSink = Arc<dyn Fn(Value) + Send + Sync>;

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Engine(#[from] super::engine::EngineError),
    #[error("WebRTC: {0}")]
    WebRtc(String),
}

fn webrtc_error(e: impl std::fmt::Display) -> SessionError {
    SessionError::WebRtc(e.to_string())
}

/// What the camera hears back from a session.
#[derive(Debug)]
pub enum SessionEvent {
    /// The connection failed or closed: the session is over.
    Ended(ClientId),
}

/// A running session. Dropping it does not close the connection: call
/// [`ViewerSession::close`].
pub struct ViewerSession {
    pc: Arc<dyn PeerConnection>,
    inputs: mpsc::UnboundedSender<ViewerSignal>,
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidate>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    // These run on the connection's driver task: hand over, never block.
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let _ = self.candidates.send(event.candidate);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
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
        let engine = Engine::new(settings)?;
        let (candidate_tx, candidate_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let handler = Arc::new(Handler { candidates: candidate_tx, state: state_tx });
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

        // One track per connection: a track binds to one connection only.
        let ssrc = rand::random::<u32>();
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    "lookout".to_owned(),
                    "lookout-video".to_owned(),
                    "camera".to_owned(),
                    RtpCodecKind::Video,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: h264_codec().rtp_codec,
                        ..Default::default()
                    }],
                ),
            )
            .map_err(webrtc_error)?,
        );
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

        let offer = pc.create_offer(None).await.map_err(webrtc_error)?;
        let mid = first_mid(&offer.sdp);
        pc.set_local_description(offer.clone()).await.map_err(webrtc_error)?;
        send(serde_json::to_value(&offer).map_err(webrtc_error)?);

        let (inputs, input_rx) = mpsc::unbounded_channel();
        let feed = fanout.subscribe();
        tokio::spawn(signaling_task(
            viewer,
            pc.clone(),
            mid,
            input_rx,
            candidate_rx,
            state_rx.clone(),
            send,
            events,
        ));
        tokio::spawn(keyframe_request_task(track.clone(), fanout.clone()));
        tokio::spawn(media_task(viewer, track, ssrc, sender, feed, state_rx, engine.estimate));
        Ok(ViewerSession { pc, inputs })
    }

    /// A signal from the viewer.
    pub fn handle_signal(&self, signal: ViewerSignal) {
        let _ = self.inputs.send(signal);
    }

    /// Ends the connection; the session's tasks end with it.
    pub async fn close(self) {
        let _ = self.pc.close().await;
    }
}

/// Applies the viewer's signals, trickles ours, and watches the state.
#[allow(clippy::too_many_arguments)]
async fn signaling_task(
    viewer: ClientId,
    pc: Arc<dyn PeerConnection>,
    mut mid: Option<String>,
    mut inputs: mpsc::UnboundedReceiver<ViewerSignal>,
    mut candidates: mpsc::UnboundedReceiver<RTCIceCandidate>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    send: SignalSink,
    events: mpsc::UnboundedSender<SessionEvent>,
) {
    // Candidates may arrive before the answer; they wait for it.
    let mut early_candidates = Vec::new();
    let mut have_answer = false;
    loop {
        tokio::select! {
            input = inputs.recv() => match input {
                None => break,
                Some(ViewerSignal::Description(description)) => {
                    if description.sdp_type != RTCSdpType::Answer {
                        tracing::warn!(%viewer, "viewer sent an offer; the camera is the offerer");
                        continue;
                    }
                    if let Err(e) = pc.set_remote_description(*description).await {
                        tracing::warn!(%viewer, error = %e, "viewer's answer rejected");
                        continue;
                    }
                    have_answer = true;
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
                    tracing::info!(%viewer, "ICE restart requested");
                    match pc.create_offer(Some(RTCOfferOptions { ice_restart: true })).await {
                        Ok(offer) => {
                            mid = first_mid(&offer.sdp).or(mid);
                            if pc.set_local_description(offer.clone()).await.is_ok() {
                                have_answer = false;
                                if let Ok(value) = serde_json::to_value(&offer) {
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
                    break;
                }
                let now = *state.borrow_and_update();
                tracing::info!(%viewer, state = %now, "viewer connection");
                if matches!(now, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                    break;
                }
            }
        }
    }
    let _ = events.send(SessionEvent::Ended(viewer));
}

/// Turns the viewer's PLI/FIR into keyframe requests.
async fn keyframe_request_task(track: Arc<TrackLocalStaticSample>, fanout: Fanout) {
    while let Some(event) = track.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event {
            if !packets.is_empty() {
                fanout.request_keyframe();
            }
        }
    }
}

/// Writes the fan-out's frames to the track once the connection is up.
async fn media_task(
    viewer: ClientId,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    mut feed: ViewerFeed,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    estimate: super::engine::EstimateHandle,
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
    let payload_type = match sender.get_parameters().await {
        Ok(parameters) => match parameters.rtp_parameters.codecs.first() {
            Some(codec) => codec.payload_type,
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
    // The stream starts on a keyframe: ask again now that it can be sent.
    feed.request_keyframe();
    let mut last_report = Instant::now() - Duration::from_secs(1);
    while let Ok(frame) = feed.next().await {
        let sample =
            Sample { data: frame.data.clone(), duration: frame.duration, ..Sample::new(Instant::now()) };
        if let Err(e) = track.sample_writer(ssrc, payload_type).write_sample(&sample).await {
            tracing::debug!(%viewer, error = %e.to_string().chars().take(120).collect::<String>(), "media write ended");
            break;
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            feed.report_estimate(estimate.bits_per_second());
            last_report = Instant::now();
        }
    }
}
