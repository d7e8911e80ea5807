//! A hostile LAN against the real `lookout` binary, over real sockets from
//! many loopback addresses (127.0.0.0/8 is all local on Linux): idle and
//! half-open connections, silent and slow clients, and wrong secrets at full
//! speed. In every case a viewer with the right secret still gets in at
//! once, `/healthz` answers, and the log stays short. Figures (RSS per idle
//! connection, `/healthz` latency under attack) are printed; see
//! `docs/security.md`.
//!
//! Both this process and the camera get an open-file limit of 8192 through
//! `prlimit` (util-linux): the usual soft limit of 1024 is below what the
//! attacks hold.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client_from, https_get_from, tcp_from, LookoutProcess, Received, SignalingClient};
use lookout_provisioning::Identity;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

const FD_LIMIT: u64 = 8192;

/// The attacks run one at a time: each is bounded and sized for 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Camera {
    process: LookoutProcess,
    addr: SocketAddr,
    redirect: Option<SocketAddr>,
    identity: Identity,
    _state: tempfile::TempDir,
}

impl Camera {
    fn start(extra: &[&str]) -> Camera {
        common::raise_fd_limit(FD_LIMIT);
        let state = tempfile::tempdir().expect("state folder");
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={FD_LIMIT}:{FD_LIMIT}"))
            .arg("--")
            // LOOKOUT_BIN: measure another build (scripts/bench.sh: release).
            .arg(std::env::var_os("LOOKOUT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_lookout").into()))
            .args(["--listen", "127.0.0.1:0", "--no-camera", "--no-mdns"])
            .arg("--state-dir")
            .arg(state.path())
            .args(extra);
        let process = LookoutProcess::spawn(command);
        let line = process.wait_for_line("serving HTTPS");
        let addr = process.wait_for_addr_in(&line);
        let redirect = line
            .split("redirect=Some(")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|a| a.parse().ok());
        let identity = Identity::load(&state.path().join("identity.json")).expect("identity was written");
        Camera { process, addr, redirect, identity, _state: state }
    }

    fn secret(&self) -> String {
        self.identity.room_secret().expose_hex()
    }

    async fn client(&self, from: IpAddr) -> Result<SignalingClient, tokio_tungstenite::tungstenite::Error> {
        client_from(from, self.addr, &self.identity, None).await
    }

    async fn healthz(&self, from: IpAddr) -> (u16, Duration) {
        let (status, _, took) =
            https_get_from(from, self.addr, &self.identity, "/healthz").await.expect("/healthz answers");
        (status, took)
    }

    /// Resident memory of the camera process, in kB.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Stops the camera (SIGTERM, so the counted lines are written) and
    /// returns its whole log.
    fn stop(mut self) -> String {
        self.process.terminate();
        self.process.log()
    }
}

fn addr(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// Opens `count` idle signaling connections (they read Hello and nothing
/// more) from 16 addresses, 64 at a time; returns the ones that opened.
async fn open_idle(camera: &Camera, count: usize) -> Vec<SignalingClient> {
    let mut open = Vec::new();
    let mut tasks = JoinSet::new();
    for n in 0..count {
        let from = addr(1, (n % 16) as u8 + 1);
        let (target, identity) = (camera.addr, camera.identity.clone());
        tasks.spawn(async move { client_from(from, target, &identity, None).await });
        if tasks.len() >= 64 {
            if let Some(Ok(Ok(client))) = tasks.join_next().await {
                open.push(client);
            }
        }
    }
    while let Some(result) = tasks.join_next().await {
        if let Ok(Ok(client)) = result {
            open.push(client);
        }
    }
    open
}

/// Lines of the log, not counting the start-up banner's.
fn log_lines(log: &str) -> usize {
    log.lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_websockets_do_not_lock_out_a_viewer_and_time_out() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(&[]);
    let started = Instant::now();
    let idle = open_idle(&camera, 1000).await;
    let opened_in = started.elapsed();
    println!("opened {} of 1000 idle WSS connections from 16 addresses in {opened_in:?}", idle.len());

    // While they are held: a viewer joins at once, and /healthz answers.
    let joined_in = Instant::now();
    let mut viewer = camera.client(addr(2, 1)).await.expect("the viewer connects");
    assert_eq!(viewer.join(&camera.secret()).await["type"], "Joined");
    println!("viewer joined in {:?}", joined_in.elapsed());
    assert_eq!(camera.healthz(addr(2, 2)).await.0, 200);

    // Every idle connection is closed by eviction or the 10 s join timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10) + Duration::from_secs(5);
    let mut timed_out = 0;
    for mut client in idle {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        loop {
            match client.next_within(wait).await {
                Some(Received::Json(m)) if m["code"] == "join-timeout" => timed_out += 1,
                Some(Received::Json(_)) => continue,
                Some(Received::Closed(_)) => break,
                None => panic!("an idle connection was still open 15 s after it opened"),
            }
        }
    }
    println!("{timed_out} closed by the join timeout, the rest to make room");
    assert!(timed_out > 0, "the join timeout closed the idle connections left");

    // The viewer is still there (joined connections neither time out nor make room).
    let (status, info, _) =
        https_get_from(addr(2, 3), camera.addr, &camera.identity, "/api/info").await.expect("/api/info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).expect("JSON");
    assert_eq!(info["signaling"]["viewers"], 1, "{info}");
    viewer.send(json!({"type": "Signal", "signal": 1})).await;
    viewer.expect_silence(Duration::from_millis(200)).await;

    let log = camera.stop();
    assert!(log_lines(&log) < 60, "the log stays short ({} lines):\n{log}", log_lines(&log));
    assert!(log.contains("idle connections closed to make room from"), "evictions are counted:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_memory_figure() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(&[
        "--max-connections",
        "2000",
        "--max-connections-per-ip",
        "2000",
        "--join-timeout",
        "300s",
    ]);
    // Warm up: one full connection, so one-off allocations are not counted.
    let mut warm = camera.client(addr(2, 1)).await.expect("connects");
    assert_eq!(warm.join(&camera.secret()).await["type"], "Joined");
    warm.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = camera.rss_kb();
    let idle = open_idle(&camera, 1000).await;
    assert_eq!(idle.len(), 1000, "all 1000 idle connections open");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peak = camera.rss_kb();
    let per_connection = (peak.saturating_sub(before)) as f64 / 1000.0;
    drop(idle);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = camera.rss_kb();
    println!(
        "FIGURE idle WSS memory: RSS {before} kB before, {peak} kB with 1000 idle connections, \
         {after} kB 10 s after they closed: {per_connection:.1} kB per idle connection"
    );
    assert!(per_connection < 40.0, "an idle WSS connection costs {per_connection:.1} kB (limit 40 kB)");
    camera.stop();
}

/// Opens a connection of `kind` from `from` to `target` and returns how
/// long until the server closed it (from when it was opened; a refused or
/// reset connection counts as closed), or what was still open 15 s later.
async fn hold_until_closed(
    kind: Kind,
    from: IpAddr,
    target: SocketAddr,
    identity: Identity,
) -> Result<Duration, String> {
    let opened = Instant::now();
    let held = async {
        let mut buf = [0u8; 1024];
        let mut tcp = tcp_from(from, target).await?;
        match kind {
            Kind::Silent => while tcp.read(&mut buf).await? > 0 {},
            Kind::PartialPlain => {
                tcp.write_all(b"GET / HTTP/1.1\r\nHost: lookout\r\nX-Slow: ").await?;
                while tcp.read(&mut buf).await? > 0 {}
            }
            Kind::PartialTls => {
                let config = common::tls_client_config(&identity, vec![b"http/1.1".to_vec()]);
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
                tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: lookout\r\nX-Slow: ").await?;
                while tls.read(&mut buf).await? > 0 {}
            }
        }
        Ok::<(), std::io::Error>(())
    };
    // Closed, reset or refused: all the same here.
    match tokio::time::timeout(Duration::from_secs(15), held).await {
        Ok(_) => Ok(opened.elapsed()),
        Err(_) => Err(format!("a {kind:?} connection from {from} to {target} was still open after 15 s")),
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Silent,
    PartialPlain,
    PartialTls,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_connections_are_closed_by_their_deadline_on_both_ports() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(&["--handshake-timeout", "2s", "--http-redirect", "127.0.0.1:0"]);
    let redirect = camera.redirect.expect("the redirect listener is bound");
    // Opened in waves of 100: a burst of 1,400 connects at once overflows
    // the kernel's accept queue, and a connection the kernel has not handed
    // to the server yet cannot be timed by it.
    let mut attack = JoinSet::new();
    for n in 0..500u32 {
        let from = addr(4, (n % 16) as u8 + 1);
        let identity = camera.identity.clone();
        attack.spawn(hold_until_closed(Kind::Silent, from, camera.addr, identity.clone()));
        attack.spawn(hold_until_closed(Kind::Silent, from, redirect, identity));
        if n < 200 {
            let from = addr(5, (n % 16) as u8 + 1);
            let identity = camera.identity.clone();
            attack.spawn(hold_until_closed(Kind::PartialTls, from, camera.addr, identity.clone()));
            attack.spawn(hold_until_closed(Kind::PartialPlain, from, redirect, identity));
        }
        if n % 25 == 24 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Meanwhile /healthz, from another address, every 100 ms.
    let mut latencies = Vec::new();
    let probe_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < probe_until {
        let (status, took) = camera.healthz(addr(6, 1)).await;
        assert_eq!(status, 200);
        latencies.push(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed_after = Vec::new();
    while let Some(result) = attack.join_next().await {
        closed_after.push(result.expect("attack task").unwrap_or_else(|still_open| panic!("{still_open}")));
    }
    latencies.sort();
    closed_after.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().expect("probes");
    let latest = *closed_after.last().expect("attacks");
    println!(
        "FIGURE under 1,400 silent/slow connections: /healthz median {median:?}, max {worst:?} over {} probes; \
         last attack connection closed after {latest:?} (deadline 2 s)",
        latencies.len()
    );
    assert!(
        latest < Duration::from_millis(3500),
        "every connection closed by its deadline (2 s): {latest:?}"
    );
    assert!(median < Duration::from_millis(100), "/healthz answered in under 100 ms: median {median:?}");
    assert!(worst < Duration::from_millis(500), "/healthz answered within 500 ms throughout: {worst:?}");
    let log = camera.stop();
    assert!(log_lines(&log) < 60, "the log stays short ({} lines):\n{log}", log_lines(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_guesses_at_full_speed_never_stop_the_right_secret() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(&[]);
    let stop_at = Instant::now() + Duration::from_secs(5);
    let mut guessers = JoinSet::new();
    for host in 2..=250u8 {
        let (target, identity) = (camera.addr, camera.identity.clone());
        guessers.spawn(async move {
            let mut guesses = 0u32;
            while Instant::now() < stop_at {
                let Ok(mut client) = client_from(addr(0, host), target, &identity, None).await else {
                    continue;
                };
                client.send(json!({"type": "JoinOrCreate", "room_id": "00".repeat(32)})).await;
                let _ = client.next_within(Duration::from_secs(2)).await;
                guesses += 1;
            }
            guesses
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // From a guessing (so throttled) address, and from another one.
    for from in [addr(0, 2), addr(0, 251)] {
        let started = Instant::now();
        let mut viewer = camera.client(from).await.expect("the viewer connects");
        let joined = viewer.join(&camera.secret()).await;
        assert_eq!(joined["type"], "Joined", "right secret from {from}: {joined}");
        println!("viewer from {from} joined in {:?} during the guessing", started.elapsed());
    }
    let mut guesses = 0;
    while let Some(result) = guessers.join_next().await {
        guesses += result.expect("guesser");
    }
    let log = camera.stop();
    println!(
        "FIGURE {guesses} wrong guesses from 249 addresses in 5 s: {} log lines in all",
        log_lines(&log)
    );
    for line in log.lines().filter(|l| l.contains("in the last")) {
        println!("  {line}");
    }
    assert!(guesses > 249, "the guessers ran ({guesses})");
    assert!(log.contains("wrong room secrets from"), "wrong guesses are counted:\n{log}");
    assert!(log_lines(&log) < 60, "the log stays short ({} lines):\n{log}", log_lines(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_cannot_open_signal_but_the_cameras_own_page_can() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(&[]);
    let own = format!("https://localhost:{}", camera.addr.port());
    let from = addr(7, 1);
    for foreign in ["https://evil.example", "http://localhost", "null", "https://localhost:1"] {
        let refused = client_from(from, camera.addr, &camera.identity, Some(foreign)).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
            other => panic!("Origin {foreign} was not refused with 403: {:?}", other.map(|c| c.id)),
        }
    }
    let mut page = client_from(from, camera.addr, &camera.identity, Some(&own)).await.expect("own origin");
    assert_eq!(page.join(&camera.secret()).await["type"], "Joined");
    let mut program = camera.client(from).await.expect("no Origin: a program");
    assert_eq!(program.join(&camera.secret()).await["type"], "Joined");
    let log = camera.stop();
    assert!(log.contains("foreign Origin"), "refusals are counted:\n{log}");
}

/// Runs `lookout` with `args` (and a state folder of its own) and expects it
/// to stop by itself within 10 s; returns its exit code and what it printed.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state folder");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["--listen", "127.0.0.1:0", "--no-mdns"])
        .arg("--state-dir")
        .arg(state.path())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lookout starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "lookout {} kept running instead of refusing to start:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let printed =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), printed, state)
}

/// A resolution the test pattern cannot draw used to start a camera that
/// served no video, said `ok` on `/healthz` and retried for ever. It is
/// refused at start, with the limit in the message, before anything is
/// served or written; the smallest size the pattern draws streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_the_test_pattern_cannot_draw_is_refused_at_start() {
    let _serial = ONE_AT_A_TIME.lock().await;
    for camera in ["test-pattern", "auto"] {
        for resolution in ["320x240", "574x480", "640x62"] {
            let (code, printed, state) = run_to_exit(&["--camera", camera, "--resolution", resolution]);
            assert_eq!(
                code,
                Some(2),
                "--camera {camera} --resolution {resolution}: a usage error:\n{printed}"
            );
            assert!(
                printed.contains(&format!("--resolution {resolution} is too small"))
                    && printed.contains("576x64"),
                "the message names the size and the limit:\n{printed}"
            );
            assert!(!printed.contains("serving HTTPS"), "nothing was served:\n{printed}");
            let written = std::fs::read_dir(state.path()).expect("state folder").count();
            assert_eq!(written, 0, "nothing was written to the state folder");
        }
    }

    // The smallest size the test pattern draws: video flows, so /healthz says 200.
    let state = tempfile::tempdir().expect("state folder");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookout"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-mdns", "--camera", "test-pattern", "--resolution", "576x64"])
        .args(["--fps", "15", "--webrtc-bind", "127.0.0.1", "--no-webrtc-mdns", "--state-dir"])
        .arg(state.path());
    let mut lookout = LookoutProcess::spawn(command);
    let camera = lookout.wait_for_addr("serving HTTPS");
    let identity = Identity::load(&state.path().join("identity.json")).expect("identity was written");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, _) =
            https_get_from(addr(9, 1), camera, &identity, "/healthz").await.expect("/healthz answers");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no video at 576x64 within 20 s: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lookout.terminate();
}
