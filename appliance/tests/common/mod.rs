//! Test harness: a real `lookout` server on 127.0.0.1 and real clients
//! (rustls + tokio-tungstenite) that trust its self-signed certificate.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lookout::identity_store;
use lookout::server::Server;
use lookout::settings::Settings;
use lookout_provisioning::Identity;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once.
pub const PROMPT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    pub redirect_addr: Option<SocketAddr>,
    pub identity: Identity,
    pub relay: lookout::signaling::Relay,
    _state_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with test defaults, adjusted by `configure`.
    pub async fn start(configure: impl FnOnce(&mut Settings)) -> TestServer {
        let state_dir = tempfile::tempdir().expect("temporary state folder");
        let mut settings = Settings::for_tests(state_dir.path().to_owned());
        configure(&mut settings);
        let (identity, origin) = identity_store::load_or_create(&settings.state_dir).expect("identity");
        let server = Server::bind(&settings, &identity, origin, None).await.expect("server binds");
        let addr = server.local_addr().expect("bound address");
        let redirect_addr = server.redirect_addr();
        let relay = server.relay();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stop.await;
        }));
        TestServer {
            addr,
            redirect_addr,
            identity,
            relay,
            _state_dir: state_dir,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn secret_hex(&self) -> String {
        self.identity.room_secret().expose_hex()
    }

    /// A TLS client configuration that trusts exactly this server's certificate.
    pub fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
        tls_client_config(&self.identity, vec![b"http/1.1".to_vec()])
    }

    /// Opens a TLS connection to the server.
    pub async fn tls(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.expect("TCP connect");
        let connector = tokio_rustls::TlsConnector::from(self.tls_client_config());
        let name = ServerName::try_from("localhost").expect("server name");
        connector.connect(name, tcp).await.expect("TLS handshake")
    }

    /// Sends one HTTP/1.1 request over a fresh TLS connection; returns the response.
    pub async fn request(&self, method: &str, path: &str, extra_headers: &str) -> HttpResponse {
        send_request(self.tls().await, method, path, extra_headers, b"").await
    }

    /// A signaling client that has read its `Hello`.
    pub async fn client(&self) -> SignalingClient {
        let mut client = self.connect_ws().await.expect("WebSocket connects");
        let hello = client.recv().await;
        assert_eq!(hello["type"], "Hello", "first message is Hello: {hello}");
        let id = hello["client_id"].as_str().expect("client_id is a string").to_owned();
        client.id = id;
        client
    }

    /// A WebSocket connection without reading anything.
    pub async fn connect_ws(&self) -> Result<SignalingClient, tokio_tungstenite::tungstenite::Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        let url = format!("wss://localhost:{}/signal", self.addr.port());
        let connector = tokio_tungstenite::Connector::Rustls(self.tls_client_config());
        let (ws, response) =
            tokio_tungstenite::client_async_tls_with_config(url, tcp, None, Some(connector)).await?;
        assert_eq!(response.status(), 101);
        Ok(SignalingClient { ws, id: String::new() })
    }

    /// A client that has joined the camera's room.
    pub async fn joined_client(&self) -> SignalingClient {
        let mut client = self.client().await;
        let joined = client.join(&self.secret_hex()).await;
        assert_eq!(joined["type"], "Joined", "{joined}");
        client
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(PROMPT, task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A server running in another process, reached by address.
pub struct RemoteServer {
    pub addr: SocketAddr,
    pub identity: Identity,
}

impl RemoteServer {
    pub async fn client(&self) -> SignalingClient {
        let tcp = TcpStream::connect(self.addr).await.expect("TCP connect");
        let url = format!("wss://localhost:{}/signal", self.addr.port());
        let connector = tokio_tungstenite::Connector::Rustls(tls_client_config(
            &self.identity,
            vec![b"http/1.1".to_vec()],
        ));
        let (ws, _) = tokio_tungstenite::client_async_tls_with_config(url, tcp, None, Some(connector))
            .await
            .expect("WebSocket connects");
        let mut client = SignalingClient { ws, id: String::new() };
        let hello = client.recv().await;
        client.id = hello["client_id"].as_str().expect("Hello").to_owned();
        client
    }
}

impl RemoteServer {
    /// `GET path` over a fresh TLS connection.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, "").await
    }

    /// One request over a fresh TLS connection; `extra_headers` are whole
    /// lines, each ending in `\r\n`.
    pub async fn request(&self, method: &str, path: &str, extra_headers: &str) -> HttpResponse {
        let tcp = TcpStream::connect(self.addr).await.expect("TCP connect");
        let connector = tokio_rustls::TlsConnector::from(tls_client_config(&self.identity, vec![]));
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        send_request(tls, method, path, extra_headers, b"").await
    }

    /// One request with a body (its `Content-Length` is added).
    pub async fn request_with_body(
        &self,
        method: &str,
        path: &str,
        extra_headers: &str,
        body: &[u8],
    ) -> HttpResponse {
        let tcp = TcpStream::connect(self.addr).await.expect("TCP connect");
        let connector = tokio_rustls::TlsConnector::from(tls_client_config(&self.identity, vec![]));
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let headers = format!("{extra_headers}Content-Length: {}\r\n", body.len());
        send_request(tls, method, path, &headers, body).await
    }
}

/// Sends one HTTP/1.1 request on `tls` and reads the response to the end.
async fn send_request(
    mut tls: TlsStream<TcpStream>,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &[u8],
) -> HttpResponse {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}\r\n")
            .into_bytes();
    request.extend_from_slice(body);
    tls.write_all(&request).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(PROMPT, tls.read_to_end(&mut raw)).await.expect("response in time").ok();
    HttpResponse::parse(&raw)
}

pub fn tls_client_config(identity: &Identity, alpn: Vec<Vec<u8>>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(identity.certificate_der().to_vec()))
        .expect("certificate is a valid root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Arc::new(config)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    fn parse(raw: &[u8]) -> HttpResponse {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]);
        let mut lines = head.lines();
        let status_line = lines.next().expect("status line");
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        HttpResponse { status, headers, body: raw[split + 4..].to_vec() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A real WebSocket client of the signaling protocol.
pub struct SignalingClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub id: String,
}

/// What the server sent next.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed(Option<u16>),
}

impl SignalingClient {
    pub async fn send(&mut self, message: Value) {
        self.ws.send(Message::Binary(message.to_string().into())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("send text");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        // A send may fail if the server already closed; the test checks what it received.
        let _ = self.ws.send(Message::Binary(bytes.into())).await;
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "JoinOrCreate", "room_id": room})).await;
        self.recv().await
    }

    /// The next server message or the close, within [`PROMPT`].
    pub async fn next(&mut self) -> Received {
        self.next_within(PROMPT).await.expect("the server answered in time")
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            return Some(match message {
                Some(Ok(Message::Binary(bytes))) => {
                    Received::Json(serde_json::from_slice(&bytes).expect("server sends JSON"))
                }
                Some(Ok(Message::Text(text))) => panic!("server sent a text message: {text}"),
                Some(Ok(Message::Close(frame))) => Received::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Received::Closed(None),
            });
        }
    }

    /// The next server message, which must be JSON.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            Received::Closed(code) => panic!("expected a message, the server closed ({code:?})"),
        }
    }

    /// Expects an `Error` with `code`, then a close with `close_code`.
    pub async fn expect_fatal(&mut self, code: &str, close_code: u16) {
        let error = self.recv().await;
        assert_eq!(error["type"], "Error", "{error}");
        assert_eq!(error["code"], code, "{error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "error has a text: {error}");
        match self.next().await {
            Received::Closed(got) => assert_eq!(got, Some(close_code), "close code after {code}"),
            Received::Json(other) => panic!("expected close after {code}, got {other}"),
        }
    }

    /// Asserts that nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(received) = self.next_within(wait).await {
            panic!("expected nothing, got {received:?}");
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

pub fn room(byte: &str) -> String {
    byte.repeat(32)
}

/// `lookout` as a server only (no camera, no mDNS) on 127.0.0.1, port
/// chosen by the system, with `state` as its state folder and `boot` as the
/// boot partition's identity folder; logs at `info`, whatever the
/// environment of the test run says.
pub fn server_only_command(state: &std::path::Path, boot: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-camera", "--no-mdns", "--log", "info"])
        .arg("--state-dir")
        .arg(state)
        .arg("--boot-identity-dir")
        .arg(boot)
        .env_remove("RUST_LOG")
        .env_remove("LOOKOUT_LOG")
        .env("NO_COLOR", "1");
    command
}

/// Starts `lookout` streaming its test pattern, HTTPS on 127.0.0.1 and
/// WebRTC on `webrtc_bind`, no mDNS, with `args` added (resolution, fps,
/// limits), and waits until it serves. The state folder holding the identity
/// it generated lives as long as the returned `TempDir`.
pub fn start_test_pattern_camera(
    webrtc_bind: &str,
    args: &[&str],
) -> (LookoutProcess, RemoteServer, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-mdns", "--no-webrtc-mdns", "--camera", "test-pattern"])
        .args(["--webrtc-bind", webrtc_bind])
        .args(args)
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC");
    let lookout = LookoutProcess::spawn(command);
    let addr = lookout.wait_for_addr("serving HTTPS");
    let identity = Identity::load(&state.path().join("identity.json")).unwrap();
    (lookout, RemoteServer { addr, identity }, state)
}

/// A `lookout` process a test started: its log is collected as it runs, and
/// it is killed (by its PID) when dropped.
pub struct LookoutProcess {
    pub child: std::process::Child,
    log: Arc<std::sync::Mutex<String>>,
    lines: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    /// Collects standard error until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LookoutProcess {
    /// Spawns `command` (a `lookout` invocation, possibly wrapped, e.g. in
    /// `ip netns exec`) with its standard error captured.
    pub fn spawn(mut command: std::process::Command) -> LookoutProcess {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("lookout starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let collected = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let plain = strip_ansi(&line);
                collected.lock().expect("log lock").push_str(&format!("{plain}\n"));
                let _ = tx.send(plain);
            }
        });
        LookoutProcess { child, log, lines: std::sync::Mutex::new(rx), reader: Some(reader) }
    }

    /// Waits (up to 60 s) for a log line containing `marker` and returns it;
    /// panics with the log so far if the process ends or time runs out.
    pub fn wait_for_line(&self, marker: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let lines = self.lines.lock().expect("lines lock");
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return line,
                Ok(_) => continue,
                Err(_) => panic!("lookout did not log {marker:?}; its log:\n{}", self.log()),
            }
        }
    }

    /// The `addr=` of the first log line containing `marker`.
    pub fn wait_for_addr(&self, marker: &str) -> SocketAddr {
        let line = self.wait_for_line(marker);
        self.wait_for_addr_in(&line)
    }

    /// The `addr=` of `line`.
    pub fn wait_for_addr_in(&self, line: &str) -> SocketAddr {
        let addr: String = line
            .split("addr=")
            .nth(1)
            .map(|rest| rest.chars().take_while(|c| !c.is_whitespace()).collect())
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        addr.parse().unwrap_or_else(|_| panic!("not a socket address: {addr:?}"))
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Stops the process with SIGTERM (a clean shutdown), waits up to 10 s
    /// and until its whole log is collected, and returns its standard output.
    pub fn terminate(&mut self) -> String {
        use std::io::Read;
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(std::time::Instant::now() < deadline, "lookout did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        // The last lines (the shutdown) are in the log only once the reader is done.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        stdout
    }
}

impl Drop for LookoutProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip "[...m".
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A TCP connection to `addr` from the local address `from` (any of
/// 127.0.0.0/8 works on Linux loopback): many clients from one machine.
pub async fn tcp_from(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket =
        if from.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// A signaling client from `from` that has read its `Hello`; `origin` adds
/// an `Origin` header to the upgrade.
pub async fn client_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    identity: &Identity,
    origin: Option<&str>,
) -> Result<SignalingClient, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = tcp_from(from, addr).await?;
    let mut request = format!("wss://localhost:{}/signal", addr.port()).into_client_request()?;
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().expect("origin header value"));
    }
    let connector =
        tokio_tungstenite::Connector::Rustls(tls_client_config(identity, vec![b"http/1.1".to_vec()]));
    let (ws, _) =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector)).await?;
    let mut client = SignalingClient { ws, id: String::new() };
    match client.next_within(PROMPT).await {
        Some(Received::Json(hello)) if hello["type"] == "Hello" => {
            client.id = hello["client_id"].as_str().unwrap_or_default().to_owned();
            Ok(client)
        }
        other => Err(tokio_tungstenite::tungstenite::Error::Io(std::io::Error::other(format!(
            "no Hello: {other:?}"
        )))),
    }
}

/// `GET path` over a fresh TLS connection from `from`; the status code and
/// how long the whole request took.
pub async fn https_get_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    identity: &Identity,
    path: &str,
) -> std::io::Result<(u16, String, Duration)> {
    let started = std::time::Instant::now();
    let tcp = tcp_from(from, addr).await?;
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(identity, vec![b"http/1.1".to_vec()]));
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector.connect(name, tcp).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(PROMPT, tls.read_to_end(&mut raw)).await;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::other("no complete response"));
    }
    let response = HttpResponse::parse(&raw);
    Ok((response.status, response.text(), started.elapsed()))
}

/// Raises this process's open-file limit (soft and hard) to `n`, so a test
/// can hold many sockets; the default soft limit is often 1024.
pub fn raise_fd_limit(n: u64) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={n}:{n}")])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "prlimit (util-linux) raises the open-file limit: {status:?}"
    );
}
