//! The identity file on disk, with the real `lookout` binary: a crash
//! during the first start never leaves a damaged identity or a stray copy
//! of a secret; a copy readable by others is made private; one lookout
//! cannot read is a fatal error about permissions, not a reason to
//! reprovision.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lookout_provisioning::{DeviceId, Identity};

/// `lookout` on 127.0.0.1 with `state` as its state folder and no boot partition.
fn lookout(state: &Path) -> Command {
    common::server_only_command(state, &state.join("no-boot-partition"))
}

/// Starts `lookout` once in `state` so that it creates an identity, stops
/// it, and returns the identity's path.
fn identity_of_a_first_start(state: &Path) -> std::path::PathBuf {
    let mut first = common::LookoutProcess::spawn(lookout(state));
    first.wait_for_addr("serving HTTPS");
    first.terminate();
    state.join("identity.json")
}

/// Temporary files of identity writes in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_9_at_random_moments_of_the_first_start_never_leaves_a_secret_behind() {
    // How long a first start takes, up to serving: the window to kill in.
    let calibration = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let process = common::LookoutProcess::spawn(lookout(&calibration.path().join("state")));
    process.wait_for_addr("serving HTTPS");
    let first_start = started.elapsed();
    drop(process);

    let (mut before_save, mut after_save, mut temporaries_seen) = (0, 0, 0);
    for run in 0..20u32 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // What an earlier crash could have left: a temporary copy holding a
        // secret, from a process that is gone (PIDs end at 4194304).
        std::fs::create_dir(&state).unwrap();
        let leftover = Identity::generate(DeviceId::parse("k7qd").unwrap()).unwrap();
        std::fs::write(state.join(".identity.json.tmp-4194305"), leftover.to_json()).unwrap();

        // Half the runs kill within twice the start (some after the save),
        // half within its first half, where the identity is written.
        let window = if run % 2 == 0 { first_start * 2 } else { first_start / 2 };
        let delay = Duration::from_micros(rand::random_range(0..=window.as_micros() as u64));
        let mut child =
            lookout(&state).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("lookout starts");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL"); // kill -9
        child.wait().expect("reaped");

        let path = state.join("identity.json");
        let saved = path.exists().then(|| {
            let identity = Identity::load(&path).unwrap_or_else(|e| {
                panic!("run {run}: the identity after kill -9 at {delay:?} is damaged: {e}")
            });
            identity.room_secret().expose_hex()
        });
        match saved {
            Some(_) => after_save += 1,
            None => before_save += 1,
        }
        let left = temporaries(&state);
        temporaries_seen += left.iter().filter(|n| !n.ends_with("-4194305")).count();

        // The next start succeeds, keeps a saved identity, and cleans up.
        let mut next = common::LookoutProcess::spawn(lookout(&state));
        next.wait_for_addr("serving HTTPS");
        let identity = Identity::load(&path).expect("the next start has a valid identity");
        if let Some(secret) = saved {
            assert_eq!(identity.room_secret().expose_hex(), secret, "run {run}: the saved identity was kept");
        }
        assert_eq!(
            temporaries(&state),
            Vec::<String>::new(),
            "run {run}: temporary files survived the start"
        );
        next.terminate();
        let log = next.log();
        if !left.is_empty() {
            assert!(log.contains("removed temporary files of identity writes"), "run {run}: said so:\n{log}");
        }
        assert!(!log.contains(&leftover.room_secret().expose_hex()));
    }
    eprintln!(
        "kill -9 within {first_start:?} of a first start, 20 runs: {before_save} before the identity was saved, \
         {after_save} after; {temporaries_seen} temporary files left by the killed starts, all removed by the next"
    );
}

#[test]
fn an_identity_readable_by_others_is_made_private_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = identity_of_a_first_start(&state);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut second = common::LookoutProcess::spawn(lookout(&state));
    second.wait_for_addr("serving HTTPS");
    second.terminate();
    assert!(second.log().contains("its mode is now 0600"), "{}", second.log());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn an_unreadable_identity_is_a_fatal_error_about_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = identity_of_a_first_start(&state);
    let before = std::fs::read(&path).unwrap();

    // The identity stays 0600 and owned by us; lookout runs as another
    // user (root reads any file, so as root the test drops to `nobody`).
    let saved = state.join("identity.json.saved");
    let mut command = lookout(&state);
    if running_as_root() {
        for folder in [dir.path(), state.as_path()] {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let probe = as_nobody(Command::new(env!("CARGO_BIN_EXE_lookout")).arg("--version")).output();
        if probe.is_ok_and(|out| out.status.success()) {
            command = as_nobody(&command);
        } else {
            // E.g. a checkout in a private home folder.
            eprintln!(
                "NOTE: user nobody cannot run {}; testing with a folder in the identity's place \
                 instead (it cannot be read as a file either)",
                env!("CARGO_BIN_EXE_lookout")
            );
            std::fs::rename(&path, &saved).unwrap();
            std::fs::create_dir(&path).unwrap();
        }
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let output = command.output().expect("lookout runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "lookout must not start:\n{stderr}");
    assert!(stderr.contains("cannot read the identity file"), "{stderr}");
    assert!(stderr.contains("fix its ownership or permissions"), "{stderr}");
    assert!(!stderr.contains("reprovision"), "{stderr}");
    if saved.exists() {
        std::fs::remove_dir(&path).unwrap();
        std::fs::rename(&saved, &path).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before, "the identity was left as it was");
}

/// `command` run as user and group `nobody` (65534), without other groups.
fn as_nobody(command: &Command) -> Command {
    let mut dropped = Command::new("setpriv");
    dropped.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    dropped.arg(command.get_program()).args(command.get_args());
    dropped.env_remove("RUST_LOG").env_remove("LOOKOUT_LOG").env("NO_COLOR", "1");
    dropped
}

/// Whether this test runs as root (user ID 0), from `/proc/self/status`.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
