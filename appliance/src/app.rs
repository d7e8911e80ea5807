//! The whole appliance, assembled: server, media pipeline, camera peer.
//!
//! `lookout` (the binary) and the end-to-end tests start the same thing
//! through [`App::start`]. The media pipeline supervises its own worker
//! (`media::pipeline`); the camera peer is supervised here: if its task ends
//! for any reason but shutdown (a panic included), it is started again with
//! back-off and rejoins the room.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_provisioning::Identity;
use tokio::sync::watch;

use crate::identity_store::IdentityOrigin;
use crate::media::fanout::Fanout;
use crate::media::pipeline::{MediaPipeline, PipelineSettings, StatusHandle};
use crate::peer::{CameraPeer, PeerSettings};
use crate::sdnotify::Heartbeat;
use crate::server::{Server, ServerError};
use crate::settings::Settings;
use crate::signaling::Relay;

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot start the media thread: {0}")]
    Media(std::io::Error),
}

/// A started, not yet serving appliance.
pub struct App {
    server: Server,
    media: Option<(MediaPipeline, PeerSupervisor)>,
}

impl App {
    /// Binds the server and, when `settings.media` is set, starts the camera
    /// pipeline and the camera's peer in its room.
    pub async fn start(
        settings: &Settings,
        identity: &Identity,
        origin: IdentityOrigin,
    ) -> Result<App, AppError> {
        // The camera takes part only in its own room (appliance mode): a
        // generic signaling server (--open-rooms) opens no camera at all.
        let media_settings = settings
            .media
            .as_ref()
            .filter(|_| matches!(settings.rooms, crate::settings::RoomMode::Appliance { .. }));
        let pipeline = match media_settings {
            Some(media) => Some(
                MediaPipeline::start(PipelineSettings {
                    source: media.source.clone(),
                    format: media.format,
                    encoder: media.encoder,
                })
                .map_err(AppError::Media)?,
            ),
            None => None,
        };
        let status = pipeline.as_ref().map(MediaPipeline::status_handle);
        let server = Server::bind(settings, identity, origin, status).await?;
        let media = match (pipeline, media_settings) {
            (Some(pipeline), Some(media)) => {
                let peer = PeerSupervisor::spawn(
                    server.relay(),
                    identity.room_secret().expose_hex(),
                    pipeline.fanout(),
                    media.peer.clone(),
                    pipeline.status_handle(),
                );
                #[cfg(debug_assertions)]
                if let crate::media::pipeline::SourceChoice::Fault(plan) = &media.source {
                    kill_peer_on_fault(plan.clone(), &peer.kill);
                }
                Some((pipeline, peer))
            }
            _ => None,
        };
        Ok(App { server, media })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Where mDNS puts the other cameras it sees.
    pub fn nearby(&self) -> crate::nearby::NearbyCameras {
        self.server.nearby()
    }

    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.server.redirect_addr()
    }

    /// The media supervisor's heartbeat (for the systemd watchdog), when the
    /// camera side runs.
    pub fn heartbeat(&self) -> Option<Heartbeat> {
        self.media.as_ref().map(|(pipeline, _)| pipeline.heartbeat())
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.server.run(shutdown).await;
        if let Some((pipeline, peer)) = self.media {
            // The relay told the camera to leave; its sessions close with it.
            let _ = tokio::time::timeout(Duration::from_secs(2), peer.finished()).await;
            drop(pipeline);
        }
    }
}

/// The `--camera fault:kill-peer@N[/every]` hook (debug builds only): ends
/// the camera peer's task as a crash would once the faulty source has
/// captured N frames (and every `every` more), so tests through the real
/// binary see the peer supervisor bring it back. Ends with the supervisor.
#[cfg(debug_assertions)]
fn kill_peer_on_fault(plan: crate::media::fault::FaultPlan, kill: &Arc<watch::Sender<u64>>) {
    if plan.kind != crate::media::fault::FaultKind::KillPeer {
        return;
    }
    let kill = Arc::downgrade(kill);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            let Some(kill) = kill.upgrade() else { return };
            if plan.kill_peer_now(plan.frames()) {
                tracing::warn!("injected fault: the camera peer is killed");
                kill.send_modify(|n| *n += 1);
            }
        }
    });
}

/// Keeps the camera peer running: restarts it (and so rejoins the room)
/// whenever it ends other than by the server shutting down.
struct PeerSupervisor {
    task: tokio::task::JoinHandle<()>,
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    kill: Arc<watch::Sender<u64>>,
}

const PEER_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const PEER_MAX_BACKOFF: Duration = Duration::from_secs(30);

impl PeerSupervisor {
    fn spawn(
        relay: Relay,
        room_hex: String,
        fanout: Fanout,
        settings: PeerSettings,
        status: StatusHandle,
    ) -> PeerSupervisor {
        let (kill, mut killed) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut backoff = PEER_FIRST_BACKOFF;
            loop {
                let started = Instant::now();
                let mut peer =
                    CameraPeer::spawn(relay.clone(), room_hex.clone(), fanout.clone(), settings.clone());
                killed.borrow_and_update();
                let ended = tokio::select! {
                    ended = peer.finished() => ended,
                    Ok(()) = killed.changed() => {
                        peer.abort();
                        Err("killed by a test hook".to_owned())
                    }
                };
                let reason = match ended {
                    Ok(crate::peer::camera::PeerEnd::ShuttingDown) => return,
                    Ok(crate::peer::camera::PeerEnd::Lost(reason)) => reason,
                    Err(reason) => reason,
                };
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = PEER_FIRST_BACKOFF;
                }
                status.count_peer_restart();
                tracing::warn!(%reason, restart_in_ms = backoff.as_millis() as u64, "camera peer ended; restarting it");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(PEER_MAX_BACKOFF);
            }
        });
        PeerSupervisor { task, kill: Arc::new(kill) }
    }

    async fn finished(self) {
        let _ = self.task.await;
    }
}
