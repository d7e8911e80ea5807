//! One WebSocket connection: moves bytes between the socket and the [`Relay`].
//!
//! The task reads messages (subject to the size limit and the rate limit),
//! hands them to the relay, writes what the relay queues for this client,
//! and keeps the connection alive with pings. Whatever ends the connection
//! (close, reset, silence, a protocol breach), the relay hears of it once,
//! so the room learns `Room/Leave` at once.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::protocol::{ErrorCode, ServerMessage};
use super::relay::{Outbound, Relay};
use crate::limits::RateLimit;

/// Settings of the WebSocket layer.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Largest accepted message (and frame), in bytes.
    pub max_message_bytes: usize,
    pub rate: RateLimit,
    /// How often the server pings an idle connection.
    pub ping_interval: Duration,
    /// A connection that has sent nothing (not even a pong) for this long is dead.
    pub peer_timeout: Duration,
    /// Longest a single write may take before the peer counts as gone.
    pub write_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_message_bytes: 64 * 1024,
            rate: RateLimit { burst: 100, per_second: 20.0 },
            ping_interval: Duration::from_secs(15),
            peer_timeout: Duration::from_secs(45),
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionConfig {
    /// tungstenite's limits for this configuration.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
    }
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum Ending {
    ClosedByPeer,
    Reset(String),
    Silent,
    Error(ErrorCode),
    WriteFailed,
}

/// Runs one client's connection until it ends.
pub async fn run<S>(socket: WebSocketStream<S>, relay: Relay, ip: IpAddr, config: ConnectionConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (client, mut outbox) = relay.connect(ip);
    tracing::info!(%client, %ip, "signaling client connected");
    let (mut sink, mut stream) = socket.split();
    let mut bucket = config.rate.bucket(Instant::now());
    let mut last_heard = Instant::now();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ending = loop {
        tokio::select! {
            // Outgoing first: an error the relay queued for this client is
            // sent before anything more is read from it.
            biased;
            outbound = outbox.recv() => match outbound {
                Some(Outbound::Message(bytes)) => {
                    if !send(&mut sink, config.write_timeout, Message::Binary(bytes)).await {
                        break Ending::WriteFailed;
                    }
                }
                Some(Outbound::Close { message, code }) => {
                    let _ = send(&mut sink, config.write_timeout, Message::Binary(message)).await;
                    close(&mut sink, code, config.write_timeout).await;
                    break Ending::Error(code);
                }
                None => {
                    // The relay dropped our outbox: this client fell too far behind.
                    let message = ServerMessage::error(ErrorCode::TooSlow).to_json();
                    let _ = send(&mut sink, config.write_timeout, Message::Binary(message.into())).await;
                    close(&mut sink, ErrorCode::TooSlow, config.write_timeout).await;
                    break Ending::Error(ErrorCode::TooSlow);
                }
            },
            incoming = stream.next() => {
                last_heard = Instant::now();
                let payload = match incoming {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Text(text))) => text.into(),
                    Some(Ok(Message::Close(_))) | None => break Ending::ClosedByPeer,
                    Some(Ok(_)) => continue, // ping, pong: liveness only
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        relay.fail(client, ErrorCode::MessageTooLarge);
                        continue; // the relay queues the error and the close
                    }
                    Some(Err(e)) => break Ending::Reset(e.to_string()),
                };
                if !bucket.take(last_heard) {
                    relay.fail(client, ErrorCode::RateLimited);
                    continue;
                }
                relay.receive(client, &payload);
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= config.peer_timeout {
                    break Ending::Silent;
                }
                if !send(&mut sink, config.write_timeout, Message::Ping(Default::default())).await {
                    break Ending::WriteFailed;
                }
            }
        }
    };
    relay.disconnect(client);
    match ending {
        Ending::ClosedByPeer => tracing::info!(%client, "signaling client left"),
        Ending::Error(code) => tracing::info!(%client, %code, "signaling client disconnected"),
        Ending::Reset(error) => tracing::info!(%client, %error, "signaling connection lost"),
        other => tracing::info!(%client, reason = ?other, "signaling connection lost"),
    }
}

/// Writes one message; `false` if it failed or took longer than `timeout`.
async fn send<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    timeout: Duration,
    message: Message,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    matches!(tokio::time::timeout(timeout, sink.send(message)).await, Ok(Ok(())))
}

async fn close<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    code: ErrorCode,
    timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame =
        CloseFrame { code: CloseCode::from(code.close_code().unwrap_or(1000)), reason: code.as_str().into() };
    let _ = tokio::time::timeout(timeout, sink.send(Message::Close(Some(frame)))).await;
}
