//! One WebSocket connection: moves bytes between the socket and the [`Relay`].
//!
//! The task reads messages (subject to the size limit and the rate limit),
//! hands them to the relay, writes what the relay queues for this client,
//! and keeps the connection alive with pings. Whatever ends the connection
//! (close, reset, silence, a protocol breach), the relay hears of it once,
//! so the room learns `Room/Leave` at once.
//!
//! Until the client has joined a room its connection is evictable (a newer
//! connection may push it out at the cap, see [`crate::limits`]), and it is
//! closed with `join-timeout` if it has not joined within
//! [`ConnectionConfig::join_timeout`]. Every frame the client sends, pings
//! included, takes a token from its rate limit.

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
use crate::limits::{ConnectionPermit, RateLimit};
use crate::netlog::{NetEvent, NetworkLog};

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
    /// A client that has not joined a room this long after connecting is closed.
    pub join_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_message_bytes: 64 * 1024,
            rate: RateLimit { burst: 100, per_second: 20.0 },
            ping_interval: Duration::from_secs(15),
            peer_timeout: Duration::from_secs(45),
            write_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionConfig {
    /// tungstenite's limits and buffers for this configuration. Its default
    /// read buffer is 128 KiB per connection, allocated up front; signaling
    /// messages are small, so a 4 KiB buffer (grown by tungstenite as a
    /// message needs) keeps an idle connection cheap.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
    }
}

/// tungstenite's read buffer per connection.
pub const READ_BUFFER_BYTES: usize = 4096;

/// What a connection task needs besides its socket.
pub struct Context {
    pub relay: Relay,
    pub ip: IpAddr,
    pub config: ConnectionConfig,
    /// Its place in the signaling budget.
    pub permit: ConnectionPermit,
    pub log: NetworkLog,
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum Ending {
    ClosedByPeer,
    Reset(String),
    Silent,
    Error(ErrorCode),
    WriteFailed,
    Evicted,
}

/// Runs one client's connection until it ends.
pub async fn run<S>(socket: WebSocketStream<S>, context: Context)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Context { relay, ip, config, permit, log } = context;
    let (client, mut outbox) = relay.connect(ip);
    tracing::debug!(%client, %ip, "signaling client connected");
    let mut joined = false;
    let join_deadline = tokio::time::sleep(config.join_timeout);
    tokio::pin!(join_deadline);
    let mut join_timed_out = false;
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
                    Some(Ok(_)) => {
                        // Ping, pong: no payload for the relay, but they cost
                        // work (a ping is answered) and count like messages.
                        if !bucket.take(last_heard) {
                            relay.fail(client, ErrorCode::RateLimited);
                        }
                        continue;
                    }
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        relay.fail(client, ErrorCode::MessageTooLarge);
                        continue; // the relay queues the error and the close
                    }
                    // A frame that breaks RFC 6455, or a text frame that is
                    // not UTF-8: the peer gets the error and a close frame
                    // (1002, 1007) instead of a bare TCP close.
                    Some(Err(tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ))) => break Ending::Reset("closed without a close frame".to_owned()),
                    Some(Err(tungstenite::Error::Protocol(_))) => {
                        relay.fail(client, ErrorCode::InvalidFrame);
                        continue;
                    }
                    Some(Err(tungstenite::Error::Utf8(_))) => {
                        relay.fail(client, ErrorCode::InvalidJson);
                        continue;
                    }
                    Some(Err(e)) => break Ending::Reset(e.to_string()),
                };
                if !bucket.take(last_heard) {
                    relay.fail(client, ErrorCode::RateLimited);
                    continue;
                }
                relay.receive(client, &payload);
                if !joined && relay.is_joined(client) {
                    joined = true;
                    permit.set_evictable(false);
                    tracing::info!(%client, %ip, "signaling client joined");
                }
            },
            () = &mut join_deadline, if !joined && !join_timed_out => {
                join_timed_out = true;
                relay.fail(client, ErrorCode::JoinTimeout); // queues the error and the close
            },
            () = permit.evicted() => break Ending::Evicted,
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
    // Lines for clients that joined (they hold the secret); the rest is
    // network noise, counted in the network log or at debug level.
    match ending {
        Ending::Error(ErrorCode::JoinTimeout) => log.count(NetEvent::JoinTimeout, ip),
        // Wrong secrets are counted by the hub; shutdown is no one's fault.
        Ending::Error(
            ErrorCode::UnknownRoom
            | ErrorCode::TooManyAttempts
            | ErrorCode::ShuttingDown
            | ErrorCode::RoomFull,
        ) => {}
        Ending::Error(_) => log.count(NetEvent::ProtocolViolation, ip),
        _ => {}
    }
    match ending {
        Ending::ClosedByPeer if joined => tracing::info!(%client, "signaling client left"),
        Ending::Error(code) if joined => tracing::info!(%client, %code, "signaling client disconnected"),
        Ending::Reset(error) if joined => tracing::info!(%client, %error, "signaling connection lost"),
        other if joined => tracing::info!(%client, reason = ?other, "signaling connection lost"),
        other => tracing::debug!(%client, reason = ?other, "signaling connection ended before joining"),
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
