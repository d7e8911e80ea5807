//! Service-manager readiness and watchdog notifications (the `sd_notify` protocol).
//!
//! On the Lookout SD image the appliance runs as a systemd `Type=notify` service
//! with `WatchdogSec=` set. systemd then expects two things from the process:
//!
//! * `READY=1` once start-up is complete (here: once the HTTPS listener is bound),
//!   so that `systemctl start lookout` and units ordered after it only proceed when
//!   the appliance actually serves;
//! * `WATCHDOG=1` keep-alive pings more often than the watchdog period, or systemd
//!   kills and restarts the service (`Restart=on-failure`).
//!
//! The protocol is tiny, so it is implemented here directly instead of pulling in a
//! crate: the service manager passes the path of a `AF_UNIX`/`SOCK_DGRAM` socket in
//! `$NOTIFY_SOCKET` (a leading `@` means a Linux abstract socket name), and the
//! service sends newline-separated `KEY=VALUE` assignments as single datagrams.
//! `$WATCHDOG_USEC` carries the watchdog period and `$WATCHDOG_PID`, when set, names
//! the process the watchdog applies to.
//!
//! Everything here is a no-op outside systemd: [`Notifier::from_env`] returns `None`
//! when `NOTIFY_SOCKET` is unset, and [`watchdog_interval`] returns `None` when no
//! watchdog is configured, so the appliance behaves the same when started by hand.
//!
//! Typical use (in `main`, after the listener is bound):
//!
//! ```no_run
//! # use lookout::sdnotify::{Notifier, watchdog_interval};
//! if let Some(notifier) = Notifier::from_env() {
//!     notifier.notify_ready().ok();
//!     if let Some(every) = watchdog_interval() {
//!         std::thread::spawn(move || loop {
//!             std::thread::sleep(every);
//!             notifier.notify_watchdog().ok();
//!         });
//!     }
//! }
//! ```

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable naming the notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// Environment variable carrying the watchdog period in microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// Environment variable naming the PID the watchdog applies to.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// Errors from building or sending a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` was set but is not something this module can talk to
    /// (empty, relative path, `vsock:` address, ...).
    #[error("unsupported NOTIFY_SOCKET value {0:?}")]
    UnsupportedAddress(String),
    /// A status text contained a newline, which would inject extra assignments.
    #[error("notification field must not contain a newline")]
    InvalidField,
    /// The datagram could not be created or sent.
    #[error("sending to the service manager failed: {0}")]
    Io(#[from] io::Error),
    /// The socket accepted fewer bytes than the message length.
    #[error("short write to the notification socket ({written} of {expected} bytes)")]
    ShortWrite {
        /// Bytes the kernel accepted.
        written: usize,
        /// Bytes in the message.
        expected: usize,
    },
}

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    /// A socket in the file system.
    Path(PathBuf),
    /// A Linux abstract socket; the name is stored without the leading `@`/NUL.
    Abstract(Vec<u8>),
}

impl Address {
    fn parse(raw: &OsStr) -> Result<Self, NotifyError> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = raw.as_bytes();
        match bytes.first() {
            Some(b'/') => Ok(Address::Path(PathBuf::from(raw))),
            Some(b'@') if bytes.len() > 1 => Ok(Address::Abstract(bytes[1..].to_vec())),
            _ => Err(NotifyError::UnsupportedAddress(raw.to_string_lossy().into_owned())),
        }
    }
}

/// A handle for sending notifications to the service manager.
///
/// Cheap to clone; every notification opens a fresh unbound datagram socket, as
/// `sd_notify(3)` does, so a handle stays valid across service-manager reloads.
#[derive(Debug, Clone)]
pub struct Notifier {
    address: Address,
}

impl Notifier {
    /// Build a notifier from `$NOTIFY_SOCKET`.
    ///
    /// Returns `None` when the variable is unset or empty (not started by systemd
    /// with `Type=notify`), or when it holds an address this module cannot use; in
    /// the latter case a warning is logged once and notifications are skipped.
    pub fn from_env() -> Option<Notifier> {
        let raw = std::env::var_os(NOTIFY_SOCKET_ENV)?;
        if raw.is_empty() {
            return None;
        }
        match Notifier::from_socket_value(&raw) {
            Ok(notifier) => Some(notifier),
            Err(err) => {
                tracing::warn!(%err, "ignoring NOTIFY_SOCKET; no readiness or watchdog notifications");
                None
            }
        }
    }

    /// Build a notifier for an explicit `NOTIFY_SOCKET`-style value: an absolute
    /// path, or `@name` for an abstract socket.
    pub fn from_socket_value(value: impl AsRef<OsStr>) -> Result<Notifier, NotifyError> {
        Ok(Notifier { address: Address::parse(value.as_ref())? })
    }

    /// Tell the service manager that start-up is complete (`READY=1`).
    pub fn notify_ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1\n")
    }

    /// Keep the watchdog from firing (`WATCHDOG=1`).
    pub fn notify_watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1\n")
    }

    /// Set the free-form status shown by `systemctl status` (`STATUS=...`).
    pub fn notify_status(&self, status: &str) -> Result<(), NotifyError> {
        if status.contains('\n') {
            return Err(NotifyError::InvalidField);
        }
        self.send(&format!("STATUS={status}\n"))
    }

    /// Tell the service manager that the service is shutting down (`STOPPING=1`).
    pub fn notify_stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1\n")
    }

    /// Send one raw notification datagram (newline-separated assignments).
    ///
    /// The socket is non-blocking, so calling this from an async task never stalls
    /// the runtime: if the service manager's queue were full the call fails instead.
    pub fn send(&self, message: &str) -> Result<(), NotifyError> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let written = match &self.address {
            Address::Path(path) => socket.send_to(message.as_bytes(), path)?,
            Address::Abstract(name) => send_to_abstract(&socket, name, message.as_bytes())?,
        };
        if written != message.len() {
            return Err(NotifyError::ShortWrite { written, expected: message.len() });
        }
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_to_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &address)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_to_abstract(_socket: &UnixDatagram, _name: &[u8], _message: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract unix sockets are Linux-only"))
}

/// Sends `READY=1` (and `STATUS=status`) when running under systemd and, if a
/// watchdog is configured, spawns a task that sends `WATCHDOG=1` at half its
/// period, but only while `heartbeat` is fresh: the media supervisor beats it
/// from its loop, so a wedged supervisor (or a wedged runtime, which runs the
/// pinging task) stops the pings and systemd restarts the process. Without a
/// heartbeat (no camera side) the runtime alone keeps the pings going.
/// Returns the notifier (for `notify_stopping`), or `None` when not started
/// by systemd with `Type=notify`. Needs a tokio runtime.
pub fn announce_ready(status: &str, heartbeat: Option<Heartbeat>) -> Option<Notifier> {
    let notifier = Notifier::from_env()?;
    notifier.notify_status(status).ok();
    if let Err(e) = notifier.notify_ready() {
        tracing::warn!("cannot send READY=1 to systemd: {e}");
    }
    if let Some(every) = watchdog_interval() {
        let pinger = notifier.clone();
        // The supervisor beats every 200 ms; allow for a slow moment.
        let max_age = every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut silent = false;
            loop {
                tick.tick().await;
                if heartbeat.as_ref().is_some_and(|beat| !beat.is_fresh(max_age)) {
                    if !silent {
                        tracing::error!("the media supervisor has stopped; no more watchdog pings");
                        silent = true;
                    }
                    continue;
                }
                silent = false;
                if let Err(e) = pinger.notify_watchdog() {
                    tracing::warn!("cannot send WATCHDOG=1 to systemd: {e}");
                }
            }
        });
    }
    Some(notifier)
}

/// A liveness mark: one side beats it, the watchdog pinger reads its age.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    epoch: std::time::Instant,
    /// Milliseconds from `epoch` to the latest beat.
    last: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Heartbeat {
        Heartbeat { epoch: std::time::Instant::now(), last: Default::default() }
    }

    pub fn beat(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the latest beat is at most `max_age` old.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(last) <= max_age.as_millis() as u64
    }
}

/// How often to send `WATCHDOG=1`: half the period in `$WATCHDOG_USEC`.
///
/// Returns `None` when no watchdog is configured for this process: the variable is
/// unset, zero or malformed, or `$WATCHDOG_PID` is set to another process's PID.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var(WATCHDOG_USEC_ENV).ok();
    let pid = std::env::var(WATCHDOG_PID_ENV).ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The logic of [`watchdog_interval`] on explicit values, for testing.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        // systemd sets WATCHDOG_PID to the main PID; a forked child must not ping.
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bind(dir: &tempfile::TempDir) -> (UnixDatagram, PathBuf) {
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind datagram socket");
        socket.set_read_timeout(Some(Duration::from_secs(5))).expect("set timeout");
        (socket, path)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("datagram received");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8 datagram")
    }

    #[test]
    fn sends_each_notification_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = bind(&dir);
        let notifier = Notifier::from_socket_value(&path).unwrap();

        notifier.notify_ready().unwrap();
        assert_eq!(recv(&socket), "READY=1\n");
        notifier.notify_watchdog().unwrap();
        assert_eq!(recv(&socket), "WATCHDOG=1\n");
        notifier.notify_status("serving on [::]:443").unwrap();
        assert_eq!(recv(&socket), "STATUS=serving on [::]:443\n");
        notifier.notify_stopping().unwrap();
        assert_eq!(recv(&socket), "STOPPING=1\n");
    }

    #[test]
    fn status_with_newline_is_rejected_and_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = bind(&dir);
        let notifier = Notifier::from_socket_value(&path).unwrap();
        assert!(matches!(notifier.notify_status("ok\nREADY=1"), Err(NotifyError::InvalidField)));
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(socket.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_are_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("lookout-sdnotify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let notifier = Notifier::from_socket_value(format!("@{name}")).unwrap();
        notifier.notify_ready().unwrap();
        assert_eq!(recv(&socket), "READY=1\n");
    }

    #[test]
    fn missing_listener_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::from_socket_value(dir.path().join("absent.sock")).unwrap();
        assert!(matches!(notifier.notify_ready(), Err(NotifyError::Io(_))));
    }

    #[test]
    fn unusable_addresses_are_rejected() {
        for value in ["", "@", "relative/path", "vsock:2:1234"] {
            assert!(
                matches!(Notifier::from_socket_value(value), Err(NotifyError::UnsupportedAddress(_))),
                "{value:?} should be rejected"
            );
        }
    }

    #[test]
    fn watchdog_interval_is_half_the_period() {
        assert_eq!(watchdog_interval_from(Some("1000000"), None, 42), Some(Duration::from_millis(500)));
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("42"), 42), Some(Duration::from_secs(15)));
    }

    #[test]
    fn watchdog_interval_absent_or_for_another_process() {
        assert_eq!(watchdog_interval_from(None, None, 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("1000000"), Some("7"), 42), None);
        assert_eq!(watchdog_interval_from(Some("1000000"), Some("x"), 42), None);
    }

    #[test]
    fn tiny_watchdog_period_still_yields_a_positive_interval() {
        assert_eq!(watchdog_interval_from(Some("1"), None, 1), Some(Duration::from_millis(1)));
    }
}
