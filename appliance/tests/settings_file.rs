//! The settings file through the real `lookout` binary: every option of
//! `lookout --help` (the list is taken from clap's `Command`, so a new flag
//! cannot be forgotten here) round-trips through a file; flags and their
//! environment variables win over it; a typo'd key, a bad value or a file
//! that is not TOML starts the camera anyway, with the defaults for what was
//! wrong, reported with file, line and key on `/api/info` and in the log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use common::{LookoutProcess, RemoteServer};
use lookout::settings::Cli;
use serde_json::Value;

/// `lookout` with nothing from the test run's environment that sets an option.
fn lookout() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookout"));
    for var in ["LOOKOUT_STATE_DIR", "LOOKOUT_LOG", "LOOKOUT_TURN_CREDENTIAL", "RUST_LOG", "INVOCATION_ID"] {
        command.env_remove(var);
    }
    command
}

/// `lookout --show-settings` with `args`: the settings in effect, as
/// `key -> (value as printed, where it came from)`, and standard error.
fn show(args: &[&str], env: &[(&str, &str)]) -> (BTreeMap<String, (String, String)>, String) {
    let mut command = lookout();
    command.args(args).arg("--show-settings");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("lookout runs");
    assert!(output.status.success(), "--show-settings exits 0: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let mut shown = BTreeMap::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            // `# key is not set (source)` / `# key is set, not shown (source)`
            let (key, rest) = rest.split_once(' ').expect("a key");
            let source = rest.rsplit_once('(').expect("a source").1.trim_end_matches(')');
            let value = if rest.starts_with("is set, not shown") { "<hidden>" } else { "<unset>" };
            shown.insert(key.to_owned(), (value.to_owned(), source.to_owned()));
            continue;
        }
        let (entry, source) = line.rsplit_once(" # ").expect("value # source");
        let table: toml::Table = entry.parse().unwrap_or_else(|e| panic!("{entry:?} is TOML: {e}"));
        let (key, value) = table.into_iter().next().expect("one key");
        shown.insert(key, (value.to_string(), source.to_owned()));
    }
    (shown, String::from_utf8(output.stderr).expect("UTF-8"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A value for each key unlike its default, and how `--show-settings`
/// prints it back.
fn sample(key: &str) -> Option<(&'static str, &'static str)> {
    Some(match key {
        "listen" => (r#""127.0.0.1:9443""#, r#""127.0.0.1:9443""#),
        "http-redirect" => (r#""127.0.0.1:9080""#, r#""127.0.0.1:9080""#),
        "state-dir" => (r#""/tmp/lookout-settings-test""#, r#""/tmp/lookout-settings-test""#),
        "open-rooms" => ("true", "true"),
        "max-viewers" => ("7", "7"),
        "max-room-clients" => ("3", "3"),
        "max-connections" => ("100", "100"),
        "max-connections-per-ip" => ("9", "9"),
        "max-connections-per-prefix" => ("33", "33"),
        "message-burst" => ("50", "50"),
        "message-rate" => ("7.5", "7.5"),
        "max-message-bytes" => ("1_000", "1000"),
        "handshake-timeout" => (r#""3s""#, r#""3s""#),
        "join-timeout" => (r#""4s""#, r#""4s""#),
        "ping-interval" => (r#""5s""#, r#""5s""#),
        "peer-timeout" => (r#""20s""#, r#""20s""#),
        "prefix-refresh" => (r#""1m""#, r#""1m""#),
        "guess-backoff" => (r#""2s""#, r#""2s""#),
        "guess-backoff-max" => (r#""1m""#, r#""1m""#),
        "camera" => (r#""test-pattern""#, r#""test-pattern""#),
        "resolution" => (r#""640x480""#, r#""640x480""#),
        "fps" => ("15", "15"),
        "bitrate" => ("2000", "2000"),
        "min-bitrate" => ("200", "200"),
        "max-bitrate" => ("5000", "5000"),
        "encoder-threads" => ("2", "2"),
        "idr-interval" => (r#""3s""#, r#""3s""#),
        "webrtc-bind" => (r#"["127.0.0.1", "::1"]"#, r#"["127.0.0.1", "::1"]"#),
        "no-webrtc-mdns" => ("true", "true"),
        "ice-server" => (r#""stun:stun.invalid:3478""#, r#"["stun:stun.invalid:3478"]"#),
        "turn-username" => (r#""camera""#, r#""camera""#),
        // Never printed: only that it is set.
        "turn-credential" => (r#""not-a-real-secret""#, "<hidden>"),
        "no-camera" => ("true", "true"),
        "boot-identity-dir" => (r#""/tmp/lookout-boot""#, r#""/tmp/lookout-boot""#),
        "no-mdns" => ("true", "true"),
        "metrics-open" => ("true", "true"),
        "whep-allow-origin" => (r#""https://player.example:8123""#, r#"["https://player.example:8123"]"#),
        "log" => (r#""lookout=debug""#, r#""lookout=debug""#),
        _ => return None,
    })
}

#[test]
fn every_key_round_trips() {
    let keys = lookout::settings_file::settable_keys(&Cli::command());
    let missing: Vec<_> = keys.iter().filter(|key| sample(key).is_none()).collect();
    assert!(missing.is_empty(), "a new option needs a sample value here: {missing:?}");
    assert!(keys.len() >= 30, "the keys come from clap: {keys:?}");
    let dir = tempfile::tempdir().unwrap();
    let (defaults, _) = show(&[], &[]);
    let printed: BTreeSet<&String> = defaults.keys().collect();
    assert_eq!(printed, keys.iter().collect(), "--show-settings prints every key");
    let mut whole = String::new();
    for key in &keys {
        let (literal, printed) = sample(key).unwrap();
        assert_ne!(defaults[key].0, printed, "the sample of {key} differs from its default");
        let file = write(dir.path(), "one.toml", &format!("# {key} alone\n{key} = {literal}\n"));
        let (shown, stderr) = show(&["--config", &file], &[]);
        assert!(!stderr.contains("settings file"), "{key}: no problem: {stderr}");
        assert_eq!(shown[key], (printed.to_owned(), "settings file".to_owned()), "{key} round-trips");
        whole.push_str(&format!("{key} = {literal}\n"));
    }
    // All at once, too: none of them refuses another.
    let file = write(dir.path(), "all.toml", &whole);
    let (shown, stderr) = show(&["--config", &file], &[]);
    assert!(!stderr.contains("settings file"), "no problem: {stderr}");
    for key in &keys {
        assert_eq!(shown[key].0, sample(key).unwrap().1, "{key} in the whole file");
        assert_eq!(shown[key].1, "settings file", "{key} in the whole file");
    }
}

#[test]
fn flags_and_their_environment_variables_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file =
        write(dir.path(), "s.toml", "max-viewers = 6\nfps = 15\nlog = \"warn\"\nwebrtc-bind = [\"::1\"]\n");
    let (shown, stderr) = show(
        &["--config", &file, "--max-viewers", "2", "--webrtc-bind", "127.0.0.1"],
        &[("LOOKOUT_LOG", "debug")],
    );
    assert!(!stderr.contains("settings file"), "{stderr}");
    assert_eq!(shown["max-viewers"], ("2".into(), "command line".into()));
    assert_eq!(
        shown["webrtc-bind"],
        (r#"["127.0.0.1"]"#.into(), "command line".into()),
        "lists are not merged"
    );
    assert_eq!(shown["log"], (r#""debug""#.into(), "environment".into()));
    assert_eq!(shown["fps"], ("15".into(), "settings file".into()));
}

#[test]
fn the_boot_partition_file_is_found_beside_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.toml", "max-viewers = 5\n");
    let boot = dir.path().to_str().unwrap();
    let (shown, _) = show(&["--boot-identity-dir", boot], &[]);
    assert_eq!(shown["max-viewers"], ("5".into(), "settings file".into()));
    let (shown, _) = show(&["--boot-identity-dir", "/nonexistent/lookout"], &[]);
    assert_eq!(shown["max-viewers"], ("4".into(), "default".into()), "no file there, no problem");
}

/// Starts `lookout` (server only) with `boot` as the boot partition's
/// folder and returns it with its `/api/info`.
fn start_and_read_info(state: &Path, boot: &Path, extra: &[&str]) -> (LookoutProcess, Value) {
    let mut command = common::server_only_command(state, boot);
    command.args(extra).env_remove("LOOKOUT_STATE_DIR").env_remove("INVOCATION_ID");
    let process = LookoutProcess::spawn(command);
    let addr = process.wait_for_addr("serving HTTPS");
    let identity = lookout_provisioning::Identity::load(&state.join("identity.json")).unwrap();
    let server = RemoteServer { addr, identity };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let response = runtime.block_on(server.get("/api/info"));
    assert_eq!(response.status, 200);
    let info: Value = serde_json::from_str(&response.text()).expect("JSON");
    (process, info)
}

fn problem<'a>(info: &'a Value, key: Option<&str>) -> &'a Value {
    let problems = info["settings_problems"].as_array().expect("a list");
    problems
        .iter()
        .find(|p| p["key"].as_str() == key)
        .unwrap_or_else(|| panic!("a problem for {key:?} in {problems:?}"))
}

#[test]
fn a_typo_and_a_bad_value_start_the_camera_with_defaults_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (state, boot) = (dir.path().join("state"), dir.path().join("boot"));
    std::fs::create_dir_all(&boot).unwrap();
    let text =
        "# shelf camera\nmax_viewers = 6\nmax-connections = \"many\"\nmessage-burst = 50\nbitrate = 9000\n";
    let file = write(&boot, "settings.toml", text);
    let (mut process, info) = start_and_read_info(&state, &boot, &[]);
    assert_eq!(info["settings_file"], file.as_str());
    assert_eq!(info["settings_problems"].as_array().unwrap().len(), 3, "{info}");
    let typo = problem(&info, Some("max_viewers"));
    assert_eq!((typo["file"].as_str(), typo["line"].as_u64()), (Some(file.as_str()), Some(2)));
    assert!(typo["message"].as_str().unwrap().contains("did you mean max-viewers"), "{typo}");
    let bad = problem(&info, Some("max-connections"));
    assert_eq!(bad["line"], 3);
    assert!(bad["message"].as_str().unwrap().contains("'many'"), "{bad}");
    let cross = problem(&info, Some("bitrate"));
    assert_eq!(cross["line"], 5);
    assert!(cross["message"].as_str().unwrap().contains("--min-bitrate <= --bitrate <= --max-bitrate"));
    process.terminate();
    let log = process.log();
    assert!(
        log.contains("settings file") && log.contains("line=3") && log.contains("max-connections"),
        "{log}"
    );
    // What the camera ran with: defaults for those keys, the good one applied.
    let (shown, _) = show(&["--boot-identity-dir", boot.to_str().unwrap()], &[]);
    assert_eq!(shown["max-viewers"], ("4".into(), "default".into()));
    assert_eq!(shown["max-connections"], ("256".into(), "default".into()));
    assert_eq!(shown["bitrate"], ("2500".into(), "default".into()));
    assert_eq!(shown["message-burst"], ("50".into(), "settings file".into()));
}

#[test]
fn a_file_that_is_not_toml_is_ignored_whole_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (state, boot) = (dir.path().join("state"), dir.path().join("boot"));
    std::fs::create_dir_all(&boot).unwrap();
    let file = write(dir.path(), "laptop.toml", "max-viewers = 6\n\nfps = = 3\n");
    let (mut process, info) = start_and_read_info(&state, &boot, &["--config", &file]);
    assert_eq!(info["settings_file"], file.as_str());
    let syntax = problem(&info, None);
    assert_eq!((syntax["file"].as_str(), syntax["line"].as_u64()), (Some(file.as_str()), Some(3)));
    assert!(syntax["message"].as_str().unwrap().contains("not valid TOML"), "{syntax}");
    assert!(syntax["message"].as_str().unwrap().contains("whole file is ignored"), "{syntax}");
    process.terminate();
    let (shown, _) = show(&["--config", &file], &[]);
    assert_eq!(
        shown["max-viewers"],
        ("4".into(), "default".into()),
        "the good line before it is ignored too"
    );

    // A --config file that is not there: reported, started anyway.
    let missing = dir.path().join("missing.toml");
    let (mut process, info) = start_and_read_info(&state, &boot, &["--config", missing.to_str().unwrap()]);
    let unreadable = problem(&info, None);
    assert!(unreadable["line"].is_null(), "{unreadable}");
    assert!(unreadable["message"].as_str().unwrap().contains("cannot read"), "{unreadable}");
    process.terminate();
}
