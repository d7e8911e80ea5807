//! WHEP with a second WebRTC stack nobody here wrote: aiortc (Python),
//! through `tests/whep/whep_client.py`, plays the real binary's test pattern
//! over `POST /whep`. Its decoded frames carry the test pattern's timestamp
//! strip, which must advance with the clock and be fresh; its `DELETE`
//! frees the viewer slot.
//!
//! aiortc gathers no loopback candidates, so the test runs in a private
//! network namespace with a veth pair (10.77.7.1 and .2, which exist only
//! there): lookout's WebRTC sockets and aiortc's use them.
//!
//! Needs root (CI runs as root) and the virtualenv `scripts/test.sh` makes
//! (`target/whep-venv`, from `tests/whep/requirements.txt`; or the Python
//! in `LOOKOUT_WHEP_PYTHON`). Without them it fails with a clear message.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const WEBRTC_ADDR: &str = "10.77.7.1";

fn python() -> PathBuf {
    let python = std::env::var_os("LOOKOUT_WHEP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/whep-venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with aiortc at {}: run scripts/test.sh, or make the venv with \
         `python3 -m venv target/whep-venv && target/whep-venv/bin/pip install -r appliance/tests/whep/requirements.txt`",
        python.display()
    );
    python
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status();
    assert!(matches!(status, Ok(s) if s.success()), "ip {}: {status:?} (needs root)", args.join(" "));
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn aiortc_plays_live_frames_over_whep() {
    let python = python();
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only the network
        // namespace of this thread (and of the processes it starts).
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {} (needs root)", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        // A veth pair with both ends here: an interface aiortc will use.
        ip(&["link", "add", "whep0", "type", "veth", "peer", "name", "whep1"]);
        ip(&["addr", "add", &format!("{WEBRTC_ADDR}/24"), "dev", "whep0"]);
        ip(&["addr", "add", "10.77.7.2/24", "dev", "whep1"]);
        ip(&["link", "set", "whep0", "up"]);
        ip(&["link", "set", "whep1", "up"]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(play(python));
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn play(python: PathBuf) {
    let (lookout, server, _state) = common::start_test_pattern_camera(
        WEBRTC_ADDR,
        &["--resolution", "640x480", "--fps", "30", "--max-viewers", "1"],
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/whep/whep_client.py");
    let mut client = Command::new(&python);
    client
        .arg(&script)
        .args([
            server.addr.ip().to_string(),
            server.addr.port().to_string(),
            server.identity.certificate_fingerprint(),
        ])
        .arg("3")
        .env("WHEP_TOKEN", server.identity.room_secret().expose_hex());
    // The client bounds each of its own waits (10 s); this bounds the whole.
    let output =
        tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || client.output()))
            .await
            .expect("the aiortc client finished in time")
            .expect("the client's thread")
            .expect("the aiortc client ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "aiortc client failed: {}\n{stdout}\n{}\nlookout:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        lookout.log()
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    println!("aiortc: {report}");
    assert_eq!(report["size"], serde_json::json!([640, 480]));
    let frames = report["frames"].as_i64().unwrap();
    assert!(frames >= 60, "about 90 frames in 3 s, decoded {frames}");
    let (first_strip, first_at) =
        (report["first"][0].as_i64().unwrap(), report["first"][1].as_i64().unwrap());
    let (last_strip, last_at) = (report["last"][0].as_i64().unwrap(), report["last"][1].as_i64().unwrap());
    assert!((0..1000).contains(&(first_at - first_strip)), "the first frame is live: {report}");
    assert!((0..1000).contains(&(last_at - last_strip)), "the last frame is live: {report}");
    assert!(last_strip - first_strip >= 2000, "the strip advances with the clock: {report}");
    assert!(now_ms() - last_at < 30_000);
    assert_eq!(report["delete_status"], 200);
    let info: Value = serde_json::from_slice(&server.get("/api/info").await.body).unwrap();
    assert_eq!(info["viewers"], 0, "DELETE gave the slot back: {info}");
}
