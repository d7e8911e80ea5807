//! The room secret is the key to the camera: whatever happens, and whatever
//! log filter is set, it must not appear in the logs. Each test runs the
//! real `lookout` binary (camera: the test pattern, which joins the room and
//! offers video) under one filter, through joins in every spelling of the
//! secret, wrong guesses, throttling and relays of the secret in several
//! encodings, and searches everything it printed for the secret in any
//! case, as the hex bytes of its text, and as byte lists.

mod common;

use std::process::Command;

use serde_json::json;

/// How a test sets the log filter.
enum Filter {
    /// `--log FILTER`.
    Flag(&'static str),
    /// An environment variable (`RUST_LOG`, `LOOKOUT_LOG`) and no `--log`.
    Env(&'static str, &'static str),
}

/// Runs a whole viewer session under `filter`; returns everything printed
/// (standard error and output) and the secret.
async fn session(filter: Filter) -> (String, String) {
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookout"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--guess-backoff",
            "200ms",
            "--no-mdns",
            "--camera",
            "test-pattern",
        ])
        .args(["--resolution", "640x480", "--webrtc-bind", "127.0.0.1", "--no-webrtc-mdns"])
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("RUST_LOG")
        .env_remove("LOOKOUT_LOG")
        .env("NO_COLOR", "1");
    match filter {
        Filter::Flag(filter) => command.args(["--log", filter]),
        Filter::Env(name, filter) => command.env(name, filter),
    };
    let mut lookout = common::LookoutProcess::spawn(command);
    let addr = lookout.wait_for_addr("serving HTTPS");

    let identity = lookout_provisioning::Identity::load(&state.path().join("identity.json"))
        .expect("identity was written");
    let secret = identity.room_secret().expose_hex();
    let server = common::RemoteServer { addr, identity };

    // A viewer joins (upper case) and signals; another joins with the secret
    // written with JSON escapes and relays it in several encodings.
    let mut viewer = server.client().await;
    assert_eq!(viewer.join(&secret.to_uppercase()).await["type"], "Joined");
    let mut other = server.client().await;
    let escaped: String = secret.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    other.send_text(&format!(r#"{{"type":"JoinOrCreate","room_id":"{escaped}"}}"#)).await;
    assert_eq!(other.recv().await["type"], "Joined");
    let raw = hex::decode(&secret).unwrap();
    other
        .send(json!({"type": "Signal", "signal": {"room": secret, "bytes": raw, "text": secret.as_bytes()}}))
        .await;
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
    assert!(stdout.is_empty(), "nothing on stdout when it is not a terminal: {stdout}");
    let all = format!("{}{stdout}", lookout.log());
    assert!(all.contains("wrong room secret"), "the scenario ran (wrong guess logged):\n{all}");
    assert!(all.contains("too many wrong guesses"), "the throttle was hit:\n{all}");
    assert!(all.contains("shutting down"), "clean shutdown:\n{all}");
    (all, secret)
}

/// Panics with the offending line if `output` holds the secret in any form.
fn assert_no_secret(output: &str, secret: &str) {
    let lower_output = output.to_lowercase();
    let raw = hex::decode(secret).unwrap();
    let mut needles: Vec<String> = Vec::new();
    // 16 characters (64 bits) of the hex text, in any case.
    needles.extend(secret.as_bytes().windows(16).map(|w| String::from_utf8(w.to_vec()).unwrap()));
    // The hex bytes of the text, lower and upper case (tungstenite's frame dump).
    for text in [secret.to_owned(), secret.to_uppercase()] {
        needles
            .extend(hex::encode(text).as_bytes().windows(32).map(|w| String::from_utf8(w.to_vec()).unwrap()));
    }
    // 8 bytes of the secret as a decimal list (`{:?}` of bytes).
    for window in raw.windows(8) {
        needles.push(window.iter().map(u8::to_string).collect::<Vec<_>>().join(", "));
    }
    for needle in &needles {
        if let Some(at) = lower_output.find(needle.as_str()) {
            let line_start = lower_output[..at].rfind('\n').map_or(0, |n| n + 1);
            let line_end = lower_output[at..].find('\n').map_or(lower_output.len(), |n| at + n);
            panic!("the secret appears in the output ({needle}):\n{}", &output[line_start..line_end]);
        }
    }
}

#[tokio::test]
async fn trace_everywhere() {
    let (output, secret) = session(Filter::Flag("trace")).await;
    assert!(output.contains("<redacted>"), "frames with the secret were logged, and redacted");
    assert_no_secret(&output, &secret);
}

#[tokio::test]
async fn a_specific_directive_for_the_websocket_frames() {
    let (output, secret) = session(Filter::Flag("info,tungstenite::protocol=trace")).await;
    assert!(output.contains("TRACE tungstenite::protocol"), "the directive is honoured");
    assert!(output.contains("<redacted>"), "frames with the secret were logged, and redacted");
    assert_no_secret(&output, &secret);
}

#[tokio::test]
async fn rust_log_is_honoured_and_redacted() {
    let (output, secret) =
        session(Filter::Env("RUST_LOG", "debug,tungstenite=trace,tokio_tungstenite=trace")).await;
    assert!(output.contains("TRACE tungstenite"), "RUST_LOG is honoured:\n{output}");
    assert_no_secret(&output, &secret);
}

#[tokio::test]
async fn lookout_log_with_webrtc_at_trace() {
    let (output, secret) =
        session(Filter::Env("LOOKOUT_LOG", "debug,webrtc=trace,rustls=trace,hyper=trace")).await;
    assert!(output.contains("DEBUG"), "LOOKOUT_LOG is honoured");
    assert_no_secret(&output, &secret);
}

#[tokio::test]
async fn the_default_filter() {
    let (output, secret) = session(Filter::Env("RUST_LOG", "")).await;
    assert!(!output.contains("DEBUG"), "an empty RUST_LOG means the default, info");
    assert_no_secret(&output, &secret);
}
