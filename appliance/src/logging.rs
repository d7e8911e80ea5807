//! Logging set-up: tracing to standard error, filtered.
//!
//! The filter is tracing's `EnvFilter` syntax and means what it says: the
//! first of `--log`, `LOOKOUT_LOG` and `RUST_LOG` that is set (else `info`).
//! The WebSocket and TLS crates log whole frames at their debug and trace
//! levels, and a `JoinOrCreate` frame holds the room secret: rather than
//! trusting any filter to hide them, every line passes through the
//! [`log_redaction`](crate::log_redaction) writer, which removes the secret
//! in any case and encoding.
//!
//! The WebRTC stack logs some failures once per packet: with the network
//! gone, every send fails and says so, hundreds of lines a second, on a
//! camera whose journal lives in RAM. A [`FloodGuard`] lets each such log
//! statement of another crate through at most [`FLOOD_BURST`] times per
//! [`FLOOD_WINDOW`], and a reporter thread says how many lines it dropped.
//! The appliance's own statements are never dropped: none of them runs per
//! packet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::level_filters::LevelFilter;
use tracing::{Event, Metadata};
use tracing_log::NormalizeEvent;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::log_redaction::RedactingMakeWriter;

/// How many lines one log statement of another crate may write per window.
pub const FLOOD_BURST: u32 = 20;
/// The window of [`FLOOD_BURST`].
pub const FLOOD_WINDOW: Duration = Duration::from_secs(10);
/// How often the number of dropped lines is reported (when it is not zero).
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// The filter for a user-given `filter` text.
pub fn filter(filter: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::try_new(filter)
}

/// Where the log filter came from, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterSource {
    /// `--log` or `LOOKOUT_LOG` (clap reads both, the flag first).
    Lookout,
    /// `RUST_LOG`, when neither of the above is set.
    RustLog,
    /// Nothing set: `info`.
    Default,
}

/// The filter text to use: `lookout_filter` (from `--log`/`LOOKOUT_LOG`),
/// else `RUST_LOG` when it is set and not empty, else `info`.
pub fn choose_filter(lookout_filter: Option<&str>, rust_log: Option<&str>) -> (String, FilterSource) {
    match (lookout_filter, rust_log.filter(|v| !v.trim().is_empty())) {
        (Some(filter), _) => (filter.to_owned(), FilterSource::Lookout),
        (None, Some(filter)) => (filter.to_owned(), FilterSource::RustLog),
        (None, None) => ("info".to_owned(), FilterSource::Default),
    }
}

/// Installs the global subscriber, and the thread that reports dropped lines.
pub fn init(filter_text: &str) -> Result<(), String> {
    let filter = filter(filter_text).map_err(|e| format!("invalid log filter {filter_text:?}: {e}"))?;
    let guard = Arc::new(FloodGuard::new(FLOOD_BURST, FLOOD_WINDOW));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = RedactingMakeWriter::new(std::io::stderr, &crate::log_redaction::SECRETS);
    let layer = output_layer(filter, Arc::clone(&guard), writer, ansi);
    tracing_subscriber::registry().with(layer).try_init().map_err(|e| e.to_string())?;
    let reporter = std::thread::Builder::new().name("log-flood-report".into()).spawn(move || loop {
        std::thread::sleep(REPORT_EVERY);
        let dropped = guard.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "dropped repeated log lines from the WebRTC and network libraries \
                 (more than {FLOOD_BURST} from one place in {} s)",
                FLOOD_WINDOW.as_secs()
            );
        }
    });
    // Without the reporter the guard still works; only its count goes unsaid.
    if let Err(e) = reporter {
        tracing::warn!(error = %e, "cannot start the log flood reporter");
    }
    Ok(())
}

/// The formatted output, behind the level filter and the flood guard.
fn output_layer<S, W>(filter: EnvFilter, guard: Arc<FloodGuard>, writer: W, ansi: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        // `and`: the guard sees only the lines the level filter lets through.
        .with_filter(filter.and(FloodFilter(guard)))
}

/// Caps how often each log statement of another crate may write (see the
/// module docs). Counts per call site, in fixed windows; a call site is
/// known by its file and line (`src/driver.rs:1002`).
#[derive(Debug)]
pub struct FloodGuard {
    burst: u32,
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
    dropped: AtomicU64,
}

impl FloodGuard {
    pub fn new(burst: u32, window: Duration) -> FloodGuard {
        FloodGuard { burst, window, windows: Mutex::new(HashMap::new()), dropped: AtomicU64::new(0) }
    }

    /// Whether one more line from `callsite` may be written at `now`.
    pub fn allow(&self, callsite: impl Into<String>, now: Instant) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            // A panic while holding the lock must not silence logging.
            return true;
        };
        let (start, count) = windows.entry(callsite.into()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        *count += 1;
        let allowed = *count <= self.burst;
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// The number of lines dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// [`FloodGuard`] as a filter of the log output.
struct FloodFilter(Arc<FloodGuard>);

impl<S> Filter<S> for FloodFilter {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    // The guard decides per event, never by level: it must pass the level
    // filter's hint through. (Without a hint, `and` reports none, the `log`
    // crate's maximum level becomes TRACE, and every `log::trace!` of the
    // WebRTC crates reaches the subscriber before being dropped.)
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        // The WebRTC crates log through the `log` crate: all their records
        // share one tracing call site, so tell them apart by file and line.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if meta.target().starts_with("lookout") {
            return true;
        }
        let callsite = format!("{}:{}", meta.file().unwrap_or(meta.target()), meta.line().unwrap_or(0));
        self.0.allow(callsite, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_log::log::Level;

    #[test]
    fn each_call_site_gets_its_burst_per_window_and_the_rest_is_counted() {
        let guard = FloodGuard::new(3, Duration::from_secs(10));
        let start = Instant::now();
        let first = "event src/driver.rs:100";
        let allowed: Vec<bool> =
            (0..5).map(|i| guard.allow(first, start + Duration::from_millis(i))).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        // Another statement is not held back by the first one's flood.
        assert!(guard.allow("event src/driver.rs:200", start));
        assert_eq!(guard.take_dropped(), 2);
        assert_eq!(guard.take_dropped(), 0, "the count starts again after it is taken");
        // A new window.
        assert!(guard.allow(first, start + Duration::from_secs(10)));
        assert!(guard.allow(first, start + Duration::from_secs(11)));
    }

    /// Collects the formatted output.
    #[derive(Clone, Default)]
    struct Output(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Output {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A record as the `log` crate hands it to tracing, from `file:line`.
    fn log_crate_record(level: Level, target: &str, file_line: &str, message: &str) {
        let (file, line) = file_line.split_once(':').unwrap();
        tracing_log::format_trace(
            &tracing_log::log::Record::builder()
                .level(level)
                .target(target)
                .file(Some(file))
                .line(line.parse().ok())
                .args(format_args!("{message}"))
                .build(),
        )
        .unwrap();
    }

    #[test]
    fn the_filter_comes_from_lookout_then_rust_log_then_info() {
        assert_eq!(choose_filter(Some("debug"), Some("trace")), ("debug".to_owned(), FilterSource::Lookout));
        assert_eq!(choose_filter(None, Some("trace")), ("trace".to_owned(), FilterSource::RustLog));
        assert_eq!(choose_filter(None, Some(" ")), ("info".to_owned(), FilterSource::Default));
        assert_eq!(choose_filter(None, None), ("info".to_owned(), FilterSource::Default));
    }

    #[test]
    fn a_specific_directive_is_honoured_and_the_writer_still_redacts() {
        let redactor: &'static crate::log_redaction::Redactor =
            Box::leak(Box::new(crate::log_redaction::Redactor::new()));
        let secret = lookout_provisioning::RoomSecret::from_bytes([0x5a; 32]);
        redactor.add(&secret);
        let output = Output::default();
        let writer = output.clone();
        let layer = output_layer(
            filter("info,tungstenite::protocol=trace").unwrap(),
            Arc::new(FloodGuard::new(FLOOD_BURST, FLOOD_WINDOW)),
            crate::log_redaction::RedactingMakeWriter::new(move || writer.clone(), redactor),
            false,
        );
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let frame = format!(r#"{{"type": "JoinOrCreate", "room_id": "{}"}}"#, secret.expose_hex());
            log_crate_record(
                Level::Trace,
                "tungstenite::protocol",
                "src/protocol/mod.rs:1",
                &format!("Received message {frame}"),
            );
        });
        let text = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(r#"Received message {"type": "JoinOrCreate", "room_id": "<redacted>"}"#),
            "{text}"
        );
    }

    #[test]
    fn the_guard_keeps_the_level_filters_hint() {
        let layer = output_layer(
            filter("info").unwrap(),
            Arc::new(FloodGuard::new(1, FLOOD_WINDOW)),
            std::io::sink,
            false,
        );
        assert_eq!(Layer::<tracing_subscriber::Registry>::max_level_hint(&layer), Some(LevelFilter::INFO));
    }

    #[test]
    fn a_flooding_library_statement_is_cut_off_and_our_own_never_is() {
        let output = Output::default();
        let guard = Arc::new(FloodGuard::new(FLOOD_BURST, FLOOD_WINDOW));
        let writer = output.clone();
        let layer = output_layer(filter("info").unwrap(), Arc::clone(&guard), move || writer.clone(), false);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for packet in 0..100 {
                tracing::error!(target: "webrtc::peer_connection::driver", packet, "Failed to write packet");
                // Through the `log` crate, as the WebRTC crates log: two statements.
                log_crate_record(Level::Warn, "rtc_ice::agent", "src/agent/mod.rs:10", "pingAllCandidates");
                log_crate_record(
                    Level::Info,
                    "rtc::peer_connection",
                    "src/peer_connection/mod.rs:20",
                    "state changed",
                );
                tracing::info!(target: "lookout::peer::session", packet, "viewer connection");
                tracing::debug!(target: "webrtc::peer_connection::driver", packet, "below the level");
            }
        });
        let text = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("Failed to write packet").count(), FLOOD_BURST as usize);
        assert_eq!(text.matches("viewer connection").count(), 100);
        assert_eq!(text.matches("pingAllCandidates").count(), FLOOD_BURST as usize);
        assert_eq!(
            text.matches("state changed").count(),
            FLOOD_BURST as usize,
            "each log statement has its own count"
        );
        assert!(!text.contains("below the level"));
        assert_eq!(
            guard.take_dropped(),
            3 * (100 - u64::from(FLOOD_BURST)),
            "only lines past the level filter count"
        );
    }
}
