//! The room secret is the key to the camera: whatever happens, it must not
//! appear in the logs. This runs the real `lookout` binary at the most
//! verbose log level through joins, wrong guesses, throttling and relays,
//! and searches everything it printed.

mod common;

use std::process::Command;

use serde_json::json;

#[tokio::test]
async fn the_secret_appears_in_no_log_line() {
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookout"));
    command
        .args(["--listen", "127.0.0.1:0", "--log", "trace", "--guess-backoff", "200ms", "--no-mdns"])
        .arg("--state-dir")
        .arg(state.path());
    let mut lookout = common::LookoutProcess::spawn(command);
    let addr = lookout.wait_for_addr("serving HTTPS");

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
    // The camera is in the room too and offers video: skip its messages.
    loop {
        let message = viewer.recv().await;
        if message["type"] == "Room/Signal" && message["from"] == other.id.as_str() {
            break;
        }
    }
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
    let stdout = lookout.terminate();

    let all = format!("{}{stdout}", lookout.log());
    assert!(all.contains("wrong room secret"), "the scenario ran (wrong guess logged):\n{all}");
    assert!(all.contains("too many wrong guesses"), "the throttle was hit:\n{all}");
    assert!(all.contains("shutting down"), "clean shutdown:\n{all}");
    for needle in [secret.clone(), secret.to_uppercase(), secret[..16].to_owned(), secret[48..].to_owned()] {
        assert!(!all.contains(&needle), "the secret (or part of it) appears in the output:\n{all}");
    }
    assert!(stdout.is_empty(), "nothing on stdout when it is not a terminal: {stdout}");
}
