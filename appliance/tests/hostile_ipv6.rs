//! Wrong guesses and connection caps from IPv6 sources, over real IPv6
//! sockets in a private network namespace (made with `unshare` for one test
//! thread; the camera process it starts lives there too). The camera is on
//! 2001:db8:1::/64, its own LAN, where every device is its own source;
//! 2001:db8:2::/64 is elsewhere (a local route, so the test can send from
//! any address in it) and counts as one source. 2001:db8:3::/64 is elsewhere
//! too until the camera gets an address in it after start (as by SLAAC);
//! from the next time the camera reads its prefixes (`--prefix-refresh`),
//! every device there is its own source.
//!
//! Then wrong guesses at full speed from 12 addresses, on the camera's LAN
//! and elsewhere, while the right secret joins.
//!
//! Needs root (CI runs as root) and iproute2; without them it fails with a
//! clear message, never passes silently.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client_from, LookoutProcess, Received};
use lookout_provisioning::Identity;
use serde_json::json;

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip (iproute2) runs");
    assert!(
        output.status.success(),
        "ip {} failed: {} (this test needs root and network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn v6(text: &str) -> IpAddr {
    text.parse().expect("an IPv6 address")
}

/// Starts the camera (server only) on 2001:db8:1::1 with `extra` options;
/// returns it, its address, its identity and its state folder (kept alive
/// by the caller).
fn start_camera(extra: &[&str]) -> (LookoutProcess, SocketAddr, Identity, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state folder");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookout"));
    command
        .args(["--listen", "[2001:db8:1::1]:0", "--no-camera", "--no-mdns"])
        .args(extra)
        .arg("--state-dir")
        .arg(state.path());
    let lookout = LookoutProcess::spawn(command);
    let camera = lookout.wait_for_addr("serving HTTPS");
    let identity = Identity::load(&state.path().join("identity.json")).expect("identity was written");
    (lookout, camera, identity, state)
}

/// Sends a `JoinOrCreate` for `room` from `from`; the type or error code answered.
async fn guess(from: &str, camera: SocketAddr, identity: &Identity, room: &str) -> String {
    let mut client = client_from(v6(from), camera, identity, None)
        .await
        .unwrap_or_else(|e| panic!("cannot connect from {from}: {e}"));
    client.send(json!({"type": "JoinOrCreate", "room_id": room})).await;
    match client.next().await {
        Received::Json(m) if m["type"] == "Error" => m["code"].as_str().unwrap_or_default().to_owned(),
        Received::Json(m) => m["type"].as_str().unwrap_or_default().to_owned(),
        Received::Closed(code) => format!("closed {code:?}"),
    }
}

#[test]
fn ipv6_sources_are_single_addresses_on_the_cameras_lan_and_a_slash_64_elsewhere() {
    let uid =
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    assert_eq!(
        uid.ok().as_deref(),
        Some("0"),
        "this test makes a network namespace and must run as root (CI does)"
    );
    let thread = std::thread::spawn(|| {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only the network
        // namespace of this thread (and of the processes it starts).
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        ip(&["-6", "addr", "add", "2001:db8:1::1/64", "dev", "lo", "nodad"]);
        for host in ["2001:db8:1::2", "2001:db8:1::3"].into_iter().chain(GUESSERS_ON_THE_LAN) {
            ip(&["-6", "addr", "add", &format!("{host}/128"), "dev", "lo", "nodad"]);
        }
        ip(&["-6", "route", "add", "local", "2001:db8:2::/64", "dev", "lo"]);
        ip(&["-6", "route", "add", "local", "2001:db8:3::/64", "dev", "lo"]);
        // Sending from any address of a local route (this namespace only).
        // (A child process, so that /proc/sys/net is surely this namespace's.)
        let nonlocal =
            Command::new("sh").args(["-c", "echo 1 > /proc/sys/net/ipv6/ip_nonlocal_bind"]).status();
        assert!(matches!(nonlocal, Ok(s) if s.success()), "net.ipv6.ip_nonlocal_bind=1: {nonlocal:?}");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(scenario());
        runtime.block_on(wrong_guesses_at_full_speed());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario() {
    let (mut lookout, camera, identity, _state) = start_camera(&[
        "--guess-backoff",
        "30s",
        "--max-connections-per-prefix",
        "3",
        "--prefix-refresh",
        "300ms",
    ]);
    let secret = identity.room_secret().expose_hex();
    let wrong = "00".repeat(32);

    // On the camera's own /64, one device's wrong guess throttles only itself.
    assert_eq!(guess("2001:db8:1::2", camera, &identity, &wrong).await, "unknown-room");
    assert_eq!(guess("2001:db8:1::2", camera, &identity, &wrong).await, "too-many-attempts");
    assert_eq!(
        guess("2001:db8:1::3", camera, &identity, &wrong).await,
        "unknown-room",
        "a neighbour is not throttled"
    );

    // Elsewhere the /64 is one source.
    assert_eq!(guess("2001:db8:2::2", camera, &identity, &wrong).await, "unknown-room");
    assert_eq!(guess("2001:db8:2::3", camera, &identity, &wrong).await, "too-many-attempts", "same /64");

    // The right secret joins at once from every one of them.
    for from in ["2001:db8:1::2", "2001:db8:2::3"] {
        assert_eq!(guess(from, camera, &identity, &secret).await, "Joined", "right secret from {from}");
    }

    // The per-/64 cap (3 here): a fourth idle connection from the /64 makes
    // the oldest idle one from it go; a device on the camera's LAN is not touched.
    let mut neighbour = client_from(v6("2001:db8:1::3"), camera, &identity, None).await.expect("connects");
    let mut first = client_from(v6("2001:db8:2::10"), camera, &identity, None).await.expect("connects");
    let _second = client_from(v6("2001:db8:2::11"), camera, &identity, None).await.expect("connects");
    let _third = client_from(v6("2001:db8:2::12"), camera, &identity, None).await.expect("connects");
    let _fourth = client_from(v6("2001:db8:2::13"), camera, &identity, None).await.expect("connects");
    assert!(matches!(first.next().await, Received::Closed(_)), "the oldest idle one of the /64 made room");
    neighbour.expect_silence(Duration::from_millis(300)).await;

    // A prefix the camera gets after start: a /64 from elsewhere until then,
    // the camera's own LAN after, where one device's guesses throttle only itself.
    assert_eq!(guess("2001:db8:3::2", camera, &identity, &wrong).await, "unknown-room");
    assert_eq!(
        guess("2001:db8:3::3", camera, &identity, &wrong).await,
        "too-many-attempts",
        "one /64 so far"
    );
    ip(&["-6", "addr", "add", "2001:db8:3::1/64", "dev", "lo", "nodad"]);
    let changed = lookout.wait_for_line("IPv6 prefixes changed");
    assert!(changed.contains("2001:db8:3::/64"), "the new prefix is read: {changed}");
    assert_eq!(guess("2001:db8:3::4", camera, &identity, &wrong).await, "unknown-room", "no longer the /64");
    assert_eq!(guess("2001:db8:3::4", camera, &identity, &wrong).await, "too-many-attempts");
    assert_eq!(
        guess("2001:db8:3::5", camera, &identity, &wrong).await,
        "unknown-room",
        "a neighbour on the new prefix is not throttled"
    );
    assert_eq!(guess("2001:db8:3::4", camera, &identity, &secret).await, "Joined", "right secret");

    lookout.terminate();
    let log = lookout.log();
    assert!(log.contains("wrong room secrets from 2001:db8:1::2"), "counted per address:\n{log}");
}

/// Guessing addresses on the camera's LAN (added to `lo` by the test).
const GUESSERS_ON_THE_LAN: [&str; 6] = [
    "2001:db8:1::10",
    "2001:db8:1::11",
    "2001:db8:1::12",
    "2001:db8:1::13",
    "2001:db8:1::14",
    "2001:db8:1::15",
];
/// Guessing addresses elsewhere (one /64).
const GUESSERS_ELSEWHERE: [&str; 6] = [
    "2001:db8:2::100",
    "2001:db8:2::101",
    "2001:db8:2::102",
    "2001:db8:2::103",
    "2001:db8:2::104",
    "2001:db8:2::105",
];

/// Wrong guesses at full speed from 12 IPv6 addresses, on the camera's LAN
/// and elsewhere (default limits): the right secret joins at once from a
/// guessing address of each and from another address, and the camera's log
/// counts the guesses in a few lines.
async fn wrong_guesses_at_full_speed() {
    let (mut lookout, camera, identity, _state) = start_camera(&[]);
    let secret = identity.room_secret().expose_hex();

    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut guessers = tokio::task::JoinSet::new();
    for from in GUESSERS_ON_THE_LAN.into_iter().chain(GUESSERS_ELSEWHERE) {
        let identity = identity.clone();
        guessers.spawn(async move {
            let mut answers = std::collections::BTreeMap::<String, u32>::new();
            while Instant::now() < stop_at {
                *answers.entry(guess(from, camera, &identity, &"00".repeat(32)).await).or_default() += 1;
            }
            (from, answers)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for from in ["2001:db8:1::10", "2001:db8:2::100", "2001:db8:1::3"] {
        let started = Instant::now();
        assert_eq!(guess(from, camera, &identity, &secret).await, "Joined", "right secret from {from}");
        let took = started.elapsed();
        println!("FIGURE the right secret from {from} joined in {took:?} during the guessing");
        assert!(took < Duration::from_secs(1), "the right secret from {from} joined at once ({took:?})");
    }
    let mut answers = std::collections::BTreeMap::<String, u32>::new();
    let (mut lan_heard, mut elsewhere_heard) = (Vec::new(), 0);
    while let Some(result) = guessers.join_next().await {
        let (from, by) = result.expect("guesser");
        let heard = by.get("unknown-room").copied().unwrap_or(0);
        if GUESSERS_ON_THE_LAN.contains(&from) {
            lan_heard.push(heard);
        } else {
            elsewhere_heard += heard;
        }
        for (answer, n) in by {
            *answers.entry(answer).or_default() += n;
        }
    }
    lookout.terminate();
    let log = lookout.log();
    let lines = log.lines().count();
    println!("FIGURE wrong guesses from 12 IPv6 addresses in 3 s: {answers:?}; the camera's whole log: {lines} lines");
    // Each device on the LAN is its own source; the /64 elsewhere is one
    // (with a back-off of 1 s, 2 s, … it is heard at most 2 times in 3 s).
    assert!(lan_heard.iter().all(|&n| n >= 1), "every LAN guesser was heard on its own: {lan_heard:?}");
    assert!(elsewhere_heard <= 3, "the /64 elsewhere was heard as one source: {elsewhere_heard}");
    assert!(answers.get("too-many-attempts").copied().unwrap_or(0) > 12, "and throttled: {answers:?}");
    assert!(lines < 60, "the log stays short ({lines} lines):\n{log}");
}
