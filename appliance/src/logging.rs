//! Logging set-up: tracing to standard error, filtered.
//!
//! The WebSocket and TLS crates can log whole frames at their debug and
//! trace levels, and a `JoinOrCreate` frame holds the room secret. Their
//! levels are therefore capped at `info` whatever the filter asks for.

use tracing_subscriber::EnvFilter;

/// Crates whose verbose logs could carry message payloads.
const PAYLOAD_LOGGING_CRATES: [&str; 5] = ["tungstenite", "tokio_tungstenite", "rustls", "hyper", "h2"];

/// The filter actually used for a user-given `filter`.
pub fn filter(filter: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    let mut directives = filter.to_owned();
    for krate in PAYLOAD_LOGGING_CRATES {
        directives.push_str(&format!(",{krate}=info"));
    }
    EnvFilter::try_new(directives)
}

/// Installs the global subscriber.
pub fn init(filter_text: &str) -> Result<(), String> {
    let filter = filter(filter_text).map_err(|e| format!("invalid log filter {filter_text:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|e| e.to_string())
}
