//! The room secret is the key to the camera: whatever happens, it must not
//! appear in the logs. This runs the real `lookout` binary at the most
//! verbose log level through joins, wrong guesses, throttling and relays,
//! and searches everything it printed.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

#[tokio::test]
async fn the_secret_appears_in_no_log_line() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["--listen", "127.0.0.1:0", "--log", "trace", "--guess-backoff", "200ms"])
        .arg("--state-dir")
        .arg(state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lookout starts");
    let output = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let collected = output.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("addr=").nth(1).filter(|_| line.contains("serving HTTPS")) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = addr_tx.send(addr);
            }
            let mut all = collected.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    let addr: std::net::SocketAddr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("lookout logs its address")
        .parse()
        .expect("a socket address");

    let identity = lookout_provisioning::Identity::load(&state.path().join("identity.json"))
        .expect("identity was written");
    let secret = identity.room_secret().expose_hex();
    let server = common::RemoteServer { addr, identity };

    // A viewer joins and signals; a guesser tries wrong secrets.
    let mut viewer = server.client().await;
    assert_eq!(viewer.join(&secret).await["type"], "Joined");
    let mut other = server.client().await;
    other.join(&secret).await;
    other.send(json!({"type": "Signal", "signal": {"room": secret}})).await;
    viewer.recv().await; // Room/Join
    assert_eq!(viewer.recv().await["type"], "Room/Signal");
    for attempt in 0..3 {
        let mut guesser = server.client().await;
        let guess = if attempt == 1 { secret.clone() } else { format!("{}00", &secret[..62]) };
        guesser.send(json!({"type": "JoinOrCreate", "room_id": guess})).await;
        guesser.recv().await;
    }
    let mut bad = server.client().await;
    bad.send_text(&format!("not json {secret}")).await;
    bad.recv().await;
    viewer.close().await;
    other.close().await;

    // SIGTERM: a clean shutdown logs too.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "lookout did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();

    let all = format!("{}{stdout}", output.lock().unwrap());
    assert!(all.contains("wrong room secret"), "the scenario ran (wrong guess logged):\n{all}");
    assert!(all.contains("too many wrong guesses"), "the throttle was hit:\n{all}");
    assert!(all.contains("shutting down"), "clean shutdown:\n{all}");
    for needle in [secret.clone(), secret.to_uppercase(), secret[..16].to_owned(), secret[48..].to_owned()] {
        assert!(!all.contains(&needle), "the secret (or part of it) appears in the output:\n{all}");
    }
    assert!(stdout.is_empty(), "nothing on stdout when it is not a terminal: {stdout}");
}
