//! Run-time settings: the command line (`lookout --help`) and the plain
//! [`Settings`] the rest of the library is configured with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::limits::RateLimit;
use crate::media::encoder::{
    default_encoder_threads, EncoderSettings, DEFAULT_BITRATE, DEFAULT_MAX_BITRATE, DEFAULT_MIN_BITRATE,
};
use crate::media::h264_level::H264Level;
use crate::media::pipeline::SourceChoice;
use crate::media::source::CaptureFormat;
use crate::media::test_pattern::{MIN_HEIGHT, MIN_WIDTH};
use crate::peer::engine::{IceServer, PeerSettings};
use crate::signaling::connection::ConnectionConfig;
use crate::signaling::throttle::ThrottleConfig;

/// Which rooms the signaling server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    /// Only the camera's own room, whose ID is the room secret.
    Appliance { max_viewers: usize },
    /// Any valid room ID makes a room (a generic signaling server).
    Open { max_clients: usize },
}

/// Everything the server needs to know, independent of how it was given.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub http_redirect: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub rooms: RoomMode,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Open connections from one IPv6 /64 (per budget).
    pub max_connections_per_prefix: usize,
    pub handshake_timeout: Duration,
    pub connection: ConnectionConfig,
    pub throttle: ThrottleConfig,
    /// The camera side; `None` runs the signaling server alone.
    pub media: Option<MediaSettings>,
    /// Where a factory identity may wait on the boot partition (read when
    /// the state folder has none); `None` skips that step.
    pub boot_identity_dir: Option<PathBuf>,
    /// Announce the camera over mDNS (`lookout-<id>.local`, `_https._tcp`).
    pub mdns: bool,
    /// How often the camera's own IPv6 prefixes are read again.
    pub prefix_refresh: Duration,
    /// `/metrics` without a bearer token (`--metrics-open`).
    pub metrics_open: bool,
    /// Foreign origins whose pages may use `/whep` (`--whep-allow-origin`).
    pub whep_allow_origins: Vec<String>,
    /// The settings file read and what was wrong in it (for `/api/info`).
    pub settings_file: SettingsFileReport,
}

/// The settings file as `/api/info` reports it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SettingsFileReport {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// Keys left out (their defaults used) or the whole file ignored.
    pub problems: Vec<crate::settings_file::SettingsProblem>,
}

/// Camera, encoder and WebRTC settings.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub source: SourceChoice,
    pub format: CaptureFormat,
    pub encoder: EncoderSettings,
    pub peer: PeerSettings,
}

impl MediaSettings {
    /// Test pattern at `width`x`height`@`fps`, WebRTC on loopback only.
    pub fn for_tests(width: usize, height: usize, fps: u32) -> Self {
        let encoder = EncoderSettings::default();
        let level = H264Level::for_stream(width, height, fps, encoder.max_bitrate).unwrap_or_default();
        MediaSettings {
            source: SourceChoice::TestPattern,
            format: CaptureFormat { width, height, fps },
            encoder: EncoderSettings { fps, level, ..encoder },
            peer: PeerSettings { h264_level: level, ..PeerSettings::loopback() },
        }
    }
}

impl Settings {
    /// The caps of each connection budget.
    pub fn caps(&self) -> crate::limits::Caps {
        crate::limits::Caps {
            total: self.max_connections,
            per_address: self.max_connections_per_ip,
            per_prefix: self.max_connections_per_prefix,
        }
    }

    /// Defaults for tests and embedding: listen on 127.0.0.1 with any port.
    pub fn for_tests(state_dir: PathBuf) -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_redirect: None,
            state_dir,
            rooms: RoomMode::Appliance { max_viewers: 4 },
            max_connections: 256,
            max_connections_per_ip: 16,
            max_connections_per_prefix: 64,
            handshake_timeout: Duration::from_secs(10),
            connection: ConnectionConfig::default(),
            throttle: ThrottleConfig::default(),
            media: None,
            boot_identity_dir: None,
            mdns: false,
            prefix_refresh: Duration::from_secs(30),
            metrics_open: false,
            whep_allow_origins: Vec::new(),
            settings_file: SettingsFileReport::default(),
        }
    }
}

/// Lookout: a camera that is its own HTTPS server, signaling server and WebRTC peer.
///
/// Run by hand, it prints the viewer URL (with the room secret) and a QR code
/// of it. Open the URL, accept the self-signed certificate, watch.
#[derive(Debug, Parser)]
#[command(name = "lookout", version, about, long_about = None)]
pub struct Cli {
    /// HTTPS address to listen on. `[::]` also accepts IPv4 where the system
    /// allows; it falls back to 0.0.0.0. Default: port 443 under systemd, 8443 otherwise.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Also listen for plain HTTP here, only to redirect browsers to HTTPS.
    #[arg(long, value_name = "ADDR:PORT")]
    pub http_redirect: Option<SocketAddr>,

    /// Folder for the identity (room secret, TLS key). Default:
    /// $STATE_DIRECTORY under systemd, else $XDG_STATE_HOME/lookout
    /// (~/.local/state/lookout).
    #[arg(long, value_name = "DIR", env = "LOOKOUT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Run as a generic signaling server: any 64-hex room ID makes a room.
    #[arg(long)]
    pub open_rooms: bool,

    /// Viewers the camera's room admits at once (appliance mode).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_viewers: usize,

    /// Clients per room in open mode.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_room_clients: usize,

    /// Open connections in all, per budget (plain HTTP, signaling, redirect
    /// each have their own). At the cap, idle ones make room for new ones.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,

    /// Open connections from one address, per budget.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_connections_per_ip: usize,

    /// Open connections from one IPv6 /64, per budget.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_connections_per_prefix: usize,

    /// Messages a signaling client may send in a burst.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub message_burst: u32,

    /// Sustained messages per second a signaling client may send.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub message_rate: f64,

    /// Largest signaling message, in bytes.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub max_message_bytes: usize,

    /// Deadline for the TLS handshake and the HTTP request (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub handshake_timeout: Duration,

    /// A signaling connection that has not joined a room this long after
    /// connecting is closed (join-timeout).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub join_timeout: Duration,

    /// How often idle signaling connections are pinged.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ping_interval: Duration,

    /// A signaling connection silent for this long is dropped.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub peer_timeout: Duration,

    /// How often the camera's own IPv6 prefixes are read again (wrong secrets
    /// from an address on one of them count per address, else per /64).
    #[arg(long, default_value = "30s", value_parser = parse_refresh, value_name = "DURATION")]
    pub prefix_refresh: Duration,

    /// Wait after a wrong room secret; doubles with each further wrong one.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub guess_backoff: Duration,

    /// Longest wait after wrong room secrets.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub guess_backoff_max: Duration,

    /// Camera: `auto` (a libcamera camera if there is one, else the test
    /// pattern), `test-pattern`, `libcamera` (first camera) or `libcamera:<id>`.
    #[arg(long, default_value = "auto", value_name = "CAMERA")]
    pub camera: SourceChoice,

    /// Picture size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_parser = parse_resolution, value_name = "WxH")]
    pub resolution: (usize, usize),

    /// Frames per second.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120), value_name = "N")]
    pub fps: u32,

    /// Starting video bitrate in kbit/s; the bandwidth estimate moves it
    /// between --min-bitrate and --max-bitrate.
    #[arg(long, default_value_t = DEFAULT_BITRATE / 1000, value_name = "KBPS")]
    pub bitrate: u32,

    /// Lowest video bitrate in kbit/s.
    #[arg(long, default_value_t = DEFAULT_MIN_BITRATE / 1000, value_name = "KBPS")]
    pub min_bitrate: u32,

    /// Highest video bitrate in kbit/s.
    #[arg(long, default_value_t = DEFAULT_MAX_BITRATE / 1000, value_name = "KBPS")]
    pub max_bitrate: u32,

    /// H.264 encoder threads (openh264 slices encoded in parallel).
    /// Default: the number of cores, at most 4.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4), value_name = "N")]
    pub encoder_threads: Option<u16>,

    /// Time between periodic keyframes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idr_interval: Duration,

    /// UDP address for WebRTC media (repeatable). Default: every interface
    /// address (IPv4 and IPv6) plus 127.0.0.1.
    #[arg(long = "webrtc-bind", value_name = "IP")]
    pub webrtc_bind: Vec<std::net::IpAddr>,

    /// Do not resolve browsers' `.local` ICE candidates over mDNS.
    #[arg(long)]
    pub no_webrtc_mdns: bool,

    /// STUN or TURN server for WebRTC (repeatable), e.g. `stun:stun.example:3478`.
    #[arg(long = "ice-server", value_name = "URL")]
    pub ice_servers: Vec<String>,

    /// Username and credential for the TURN servers.
    #[arg(long, default_value = "", value_name = "NAME")]
    pub turn_username: String,

    #[arg(
        long,
        default_value = "",
        value_name = "SECRET",
        env = "LOOKOUT_TURN_CREDENTIAL",
        hide_env_values = true
    )]
    pub turn_credential: String,

    /// Serve signaling only: no camera, no video.
    #[arg(long)]
    pub no_camera: bool,

    /// Folder on the boot partition where the factory puts the identity
    /// (identity.json). Used when the state folder has none: it is checked
    /// and copied there. See docs/identity.md.
    #[arg(long, default_value = "/boot/firmware/lookout", value_name = "DIR")]
    pub boot_identity_dir: PathBuf,

    /// Do not announce the camera over mDNS (lookout-<id>.local and an
    /// _https._tcp service).
    #[arg(long)]
    pub no_mdns: bool,

    /// Serve /metrics (Prometheus) without a token, for a scraper on the
    /// LAN. By default it needs `Authorization: Bearer <room secret>`.
    #[arg(long)]
    pub metrics_open: bool,

    /// A web page origin (`https://player.example:8443`) allowed to use
    /// /whep from the browser (CORS). Repeatable. Without it only the
    /// camera's own page and programs (which send no Origin) may.
    #[arg(long, value_name = "ORIGIN", value_parser = parse_origin)]
    pub whep_allow_origin: Vec<String>,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `lookout=debug`.
    /// Precedence: --log, then LOOKOUT_LOG, then RUST_LOG, then `info`. The
    /// room secret is removed from the output whatever the filter.
    #[arg(long, env = "LOOKOUT_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Settings file (TOML; every option above under its long name, e.g.
    /// `max-viewers = 6`). Default: settings.toml in --boot-identity-dir,
    /// when there is one. Flags win over the file. See docs/settings.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the settings in effect (file and flags merged, as a settings
    /// file saying where each value came from) and exit.
    #[arg(long)]
    pub show_settings: bool,
}

/// The command line with the settings file applied under it.
#[derive(Debug)]
pub struct Loaded {
    pub cli: Cli,
    /// The settings file read, if any.
    pub file: Option<PathBuf>,
    /// What was wrong in it (left out, defaults used instead).
    pub problems: Vec<crate::settings_file::SettingsProblem>,
    /// The settings in effect, as `--show-settings` prints them.
    pub effective: String,
}

impl Cli {
    /// Parses `args` (program name first) and applies the settings file:
    /// `--config FILE`, else `settings.toml` in `--boot-identity-dir` when it
    /// exists. Only a bad command line is an error (clap's, to show the
    /// person who typed it); a bad file is reported in [`Loaded::problems`].
    pub fn load(args: Vec<std::ffi::OsString>) -> Result<Loaded, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches_from(&args)?;
        let given = Cli::from_arg_matches(&matches)?;
        let file = match &given.config {
            Some(path) => Some(path.clone()),
            None => {
                Some(given.boot_identity_dir.join(crate::settings_file::FILE_NAME)).filter(|p| p.exists())
            }
        };
        let Some(path) = file else {
            let effective = crate::settings_file::render(&Cli::command(), &matches, &[]);
            return Ok(Loaded { cli: given, file: None, problems: Vec::new(), effective });
        };
        let check =
            |matches: &clap::ArgMatches| Cli::from_arg_matches(matches).map_err(|e| e.to_string())?.check();
        let applied = crate::settings_file::apply_file(&Cli::command(), &args, &path, check)?;
        let cli = Cli::from_arg_matches(&applied.matches)?;
        let effective = crate::settings_file::render(&Cli::command(), &applied.matches, &applied.from_file);
        Ok(Loaded { cli, file: Some(path), problems: applied.problems, effective })
    }
}

/// An origin as browsers send it: `http://` or `https://` plus a host and
/// an optional port, nothing after it (a trailing `/` is dropped).
fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().trim_end_matches('/');
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("an origin starts with https:// or http://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '*']) {
        return Err("an origin is scheme://host[:port], with no path".into());
    }
    Ok(origin.to_ascii_lowercase())
}

/// True when systemd started us (it sets INVOCATION_ID for every unit).
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

impl Cli {
    /// Checks what clap cannot check one flag at a time; the message names
    /// the flags to change.
    pub fn check(&self) -> Result<(), String> {
        if !(self.min_bitrate <= self.bitrate && self.bitrate <= self.max_bitrate) {
            return Err(format!(
                "the bitrates must satisfy --min-bitrate <= --bitrate <= --max-bitrate \
                 (got {} <= {} <= {} kbit/s)",
                self.min_bitrate, self.bitrate, self.max_bitrate
            ));
        }
        // Refused here, not by the encoder later: the SDP names the level too.
        if !self.no_camera {
            let (width, height) = self.resolution;
            H264Level::for_stream(width, height, self.fps, self.max_bitrate.saturating_mul(1000))
                .map_err(|e| e.to_string())?;
        }
        // `auto` falls back to the test pattern when there is no camera; a size
        // it cannot draw would start a camera that never delivers a frame.
        let (width, height) = self.resolution;
        let may_use_test_pattern = matches!(self.camera, SourceChoice::Auto | SourceChoice::TestPattern);
        if !self.no_camera && may_use_test_pattern && (width < MIN_WIDTH || height < MIN_HEIGHT) {
            return Err(format!(
                "--resolution {width}x{height} is too small: the test pattern (used by --camera test-pattern, \
                 and by --camera auto when no camera is found) needs at least {MIN_WIDTH}x{MIN_HEIGHT}"
            ));
        }
        Ok(())
    }

    /// Resolves defaults that depend on the environment.
    pub fn settings(&self) -> Settings {
        let service = under_systemd();
        let default_port = if service { 443 } else { 8443 };
        Settings {
            listen: self.listen.unwrap_or_else(|| SocketAddr::from(([0u16; 8], default_port))),
            http_redirect: self.http_redirect,
            state_dir: self.state_dir.clone().unwrap_or_else(|| default_state_dir(service)),
            rooms: if self.open_rooms {
                RoomMode::Open { max_clients: self.max_room_clients }
            } else {
                RoomMode::Appliance { max_viewers: self.max_viewers }
            },
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_connections_per_prefix: self.max_connections_per_prefix,
            handshake_timeout: self.handshake_timeout,
            connection: ConnectionConfig {
                max_message_bytes: self.max_message_bytes,
                rate: RateLimit { burst: self.message_burst, per_second: self.message_rate },
                ping_interval: self.ping_interval,
                peer_timeout: self.peer_timeout,
                join_timeout: self.join_timeout,
                ..ConnectionConfig::default()
            },
            throttle: ThrottleConfig {
                base_delay: self.guess_backoff,
                max_delay: self.guess_backoff_max,
                ..ThrottleConfig::default()
            },
            media: (!self.no_camera).then(|| self.media_settings()),
            boot_identity_dir: Some(self.boot_identity_dir.clone()),
            mdns: !self.no_mdns,
            prefix_refresh: self.prefix_refresh,
            metrics_open: self.metrics_open,
            whep_allow_origins: self.whep_allow_origin.clone(),
            settings_file: SettingsFileReport::default(),
        }
    }

    fn media_settings(&self) -> MediaSettings {
        let (width, height) = self.resolution;
        let kbps = |k: u32| k.saturating_mul(1000);
        let udp_addrs = if self.webrtc_bind.is_empty() {
            PeerSettings::default().udp_addrs
        } else {
            self.webrtc_bind.iter().map(|ip| std::net::SocketAddr::new(*ip, 0).to_string()).collect()
        };
        // `check` refused a stream no level allows.
        let level =
            H264Level::for_stream(width, height, self.fps, kbps(self.max_bitrate)).unwrap_or_default();
        MediaSettings {
            source: self.camera.clone(),
            format: CaptureFormat { width, height, fps: self.fps },
            encoder: EncoderSettings {
                fps: self.fps,
                bitrate: kbps(self.bitrate),
                min_bitrate: kbps(self.min_bitrate),
                max_bitrate: kbps(self.max_bitrate),
                idr_interval: self.idr_interval,
                level,
                threads: self.encoder_threads.unwrap_or_else(default_encoder_threads),
                ..EncoderSettings::default()
            },
            peer: PeerSettings {
                udp_addrs,
                mdns: !self.no_webrtc_mdns,
                ice_servers: self
                    .ice_servers
                    .iter()
                    .map(|url| IceServer {
                        url: url.clone(),
                        username: self.turn_username.clone(),
                        credential: self.turn_credential.clone(),
                    })
                    .collect(),
                initial_bitrate: kbps(self.bitrate),
                min_bitrate: kbps(self.min_bitrate),
                max_bitrate: kbps(self.max_bitrate),
                h264_level: level,
            },
        }
    }
}

/// A refresh interval: at least 100 ms (a zero interval would spin).
fn parse_refresh(text: &str) -> Result<Duration, String> {
    let every = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if every < Duration::from_millis(100) {
        return Err(format!("{text} is too short: at least 100ms"));
    }
    Ok(every)
}

fn parse_resolution(text: &str) -> Result<(usize, usize), String> {
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(|| format!("expected WIDTHxHEIGHT, got {text:?}"))?;
    let parse =
        |v: &str| v.trim().parse::<usize>().map_err(|_| format!("expected WIDTHxHEIGHT, got {text:?}"));
    let (width, height) = (parse(w)?, parse(h)?);
    if width < 2 || height < 2 || width % 2 == 1 || height % 2 == 1 || width > 4096 || height > 4096 {
        return Err(format!("{width}x{height}: width and height must be even, from 2 to 4096"));
    }
    Ok((width, height))
}

fn default_state_dir(service: bool) -> PathBuf {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'; ours is the first.
        if let Some(first) = std::env::split_paths(&dirs).next() {
            return first;
        }
    }
    if service {
        return PathBuf::from("/var/lib/lookout");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("lookout");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/lookout"),
        None => PathBuf::from("/var/lib/lookout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whep_origins_are_scheme_host_and_port_only() {
        assert_eq!(parse_origin("https://Dashboard.lan:8443/").as_deref(), Ok("https://dashboard.lan:8443"));
        assert_eq!(parse_origin("http://127.0.0.1:8080").as_deref(), Ok("http://127.0.0.1:8080"));
        for bad in
            ["*", "dashboard.lan", "https://", "https://a/b", "ftp://a", "https://*.lan", "https://u@a"]
        {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_reach_the_settings() {
        let cli = Cli::parse_from([
            "lookout",
            "--listen",
            "127.0.0.1:9000",
            "--open-rooms",
            "--max-room-clients",
            "3",
            "--handshake-timeout",
            "250ms",
            "--state-dir",
            "/tmp/x",
        ]);
        let settings = cli.settings();
        assert_eq!(settings.listen, "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(settings.rooms, RoomMode::Open { max_clients: 3 });
        assert_eq!(settings.handshake_timeout, Duration::from_millis(250));
        assert_eq!(settings.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let settings = Cli::parse_from(["lookout"]).settings();
        assert_eq!(settings.rooms, RoomMode::Appliance { max_viewers: 4 });
        assert_eq!((settings.max_connections, settings.max_connections_per_ip), (256, 16));
        assert_eq!(settings.connection.max_message_bytes, 65536);
        assert_eq!(settings.connection.ping_interval, Duration::from_secs(15));
        assert_eq!(settings.connection.peer_timeout, Duration::from_secs(45));
        assert_eq!(settings.boot_identity_dir, Some(PathBuf::from("/boot/firmware/lookout")));
        assert!(settings.mdns);
        // One set of bitrate defaults: the flags', the encoder's and the peer's.
        let media = settings.media.unwrap();
        let (encoder, peer) = (EncoderSettings::default(), PeerSettings::default());
        assert_eq!(
            (media.encoder.bitrate, media.encoder.min_bitrate, media.encoder.max_bitrate),
            (encoder.bitrate, encoder.min_bitrate, encoder.max_bitrate)
        );
        assert_eq!(
            (peer.initial_bitrate, peer.min_bitrate, peer.max_bitrate),
            (2_500_000, 300_000, 6_000_000)
        );
        assert_eq!(
            (encoder.bitrate, encoder.min_bitrate, encoder.max_bitrate),
            (2_500_000, 300_000, 6_000_000)
        );
    }

    #[test]
    fn provisioning_flags_reach_the_settings() {
        let settings =
            Cli::parse_from(["lookout", "--boot-identity-dir", "/tmp/boot", "--no-mdns"]).settings();
        assert_eq!(settings.boot_identity_dir, Some(PathBuf::from("/tmp/boot")));
        assert!(!settings.mdns);
        assert!(!Settings::for_tests(PathBuf::from("/tmp/x")).mdns, "tests never announce");
    }

    #[test]
    fn media_flags_reach_the_media_settings() {
        let cli = Cli::parse_from([
            "lookout",
            "--camera",
            "test-pattern",
            "--resolution",
            "640x480",
            "--fps",
            "15",
        ]);
        let media = cli.settings().media.unwrap();
        assert_eq!(media.source, SourceChoice::TestPattern);
        assert_eq!(media.format, CaptureFormat { width: 640, height: 480, fps: 15 });
        assert_eq!(media.encoder.fps, 15);
        assert_eq!(media.encoder.threads, default_encoder_threads());
        assert!((1..=4).contains(&media.encoder.threads));
        let two = Cli::parse_from(["lookout", "--encoder-threads", "2"]).settings().media.unwrap();
        assert_eq!(two.encoder.threads, 2);
        assert!(Cli::try_parse_from(["lookout", "--encoder-threads", "5"]).is_err());
        assert!(Cli::try_parse_from(["lookout", "--encoder-threads", "0"]).is_err());
        assert!(Cli::parse_from(["lookout", "--no-camera"]).settings().media.is_none());
        assert_eq!(Cli::parse_from(["lookout"]).check(), Ok(()));
        for flags in [["--min-bitrate", "7000"], ["--bitrate", "9000"], ["--max-bitrate", "100"]] {
            let err = Cli::parse_from(["lookout", flags[0], flags[1]]).check().unwrap_err();
            assert!(err.contains("--min-bitrate <= --bitrate <= --max-bitrate"), "{err}");
        }
        assert!(Cli::try_parse_from(["lookout", "--resolution", "641x480"]).is_err());
        for camera in ["auto", "test-pattern"] {
            let cli = Cli::parse_from(["lookout", "--camera", camera, "--resolution", "320x240"]);
            assert!(cli.check().unwrap_err().contains("at least 576x64"), "--camera {camera}");
        }
        assert_eq!(Cli::parse_from(["lookout", "--resolution", "576x64"]).check(), Ok(()));
        assert_eq!(Cli::parse_from(["lookout", "--no-camera", "--resolution", "320x240"]).check(), Ok(()));
        let libcamera = Cli::parse_from(["lookout", "--camera", "libcamera", "--resolution", "320x240"]);
        assert_eq!(libcamera.check(), Ok(()), "a real camera may have small modes");
        assert!(Cli::try_parse_from(["lookout", "--resolution", "big"]).is_err());
    }

    #[test]
    fn the_h264_level_follows_the_stream_and_an_impossible_one_is_refused() {
        let media = |args: &[&str]| {
            let cli = Cli::parse_from(["lookout"].iter().chain(args));
            assert_eq!(cli.check(), Ok(()));
            let media = cli.settings().media.unwrap();
            assert_eq!(media.encoder.level, media.peer.h264_level, "SDP and encoder agree");
            media.encoder.level.idc()
        };
        assert_eq!(media(&[]), 31, "1280x720@30");
        assert_eq!(media(&["--resolution", "1920x1080"]), 40);
        assert_eq!(media(&["--resolution", "1920x1080", "--fps", "60"]), 42);
        let error = Cli::parse_from(["lookout", "--resolution", "4096x4096"]).check().unwrap_err();
        assert!(error.contains("no H.264 level allows 4096x4096 at 30 fps"), "{error}");
        let no_camera = Cli::parse_from(["lookout", "--no-camera", "--resolution", "4096x4096"]);
        assert_eq!(no_camera.check(), Ok(()), "no camera, no stream");
    }

    /// `lookout-provision` checks settings files against this table; it
    /// must list exactly `lookout`'s options. On a failure, regenerate it:
    /// `LOOKOUT_WRITE_OPTIONS=1 cargo test -p lookout --lib options_table`.
    #[test]
    fn the_options_table_of_lookout_provision_matches_the_command_line() {
        use clap::CommandFactory;
        let table = crate::settings_file::options_table(&Cli::command());
        if std::env::var_os("LOOKOUT_WRITE_OPTIONS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../provisioning/src/appliance-options.txt");
            std::fs::write(path, &table).unwrap();
        }
        assert_eq!(
            crate::settings_file::APPLIANCE_OPTIONS,
            table,
            "provisioning/src/appliance-options.txt is stale"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
