//! The whole appliance, assembled: server, media pipeline, camera peer.
//!
//! `lookout` (the binary) and the end-to-end tests start the same thing
//! through [`App::start`].

use std::future::Future;
use std::net::SocketAddr;

use lookout_provisioning::Identity;

use crate::identity_store::IdentityOrigin;
use crate::media::pipeline::{MediaPipeline, PipelineSettings};
use crate::peer::CameraPeer;
use crate::server::{Server, ServerError};
use crate::settings::Settings;

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
    media: Option<(MediaPipeline, CameraPeer)>,
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
                let peer = CameraPeer::spawn(
                    server.relay(),
                    identity.room_secret().expose_hex(),
                    pipeline.fanout(),
                    media.peer.clone(),
                );
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

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.server.run(shutdown).await;
        if let Some((pipeline, peer)) = self.media {
            // The relay told the camera to leave; its sessions close with it.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), peer.finished()).await;
            drop(pipeline);
        }
    }
}
