//! Wi-Fi settings in the SD image: `lookout-provision write-image
//! --wifi-*` writes `lookout/wifi.conf` beside the identity, and the real
//! `wpa_supplicant` (the one the camera runs) must read it as the network
//! that was asked for, whatever characters its name and passphrase hold.

mod common;

use std::path::Path;

use common::image::{identity, pi_image, SdImage};
use common::{path_str, provision_err, provision_ok, provision_with_input, tool, tool_status};

/// What `wpa_supplicant -dd -K` printed while reading `conf`. The interface
/// does not exist, so it stops right after the configuration is parsed.
fn wpa_supplicant_reads(conf: &Path) -> String {
    let output = tool_status(
        "wpasupplicant",
        "wpa_supplicant",
        &["-dd", "-K", "-c", path_str(conf), "-i", "lktnone0", "-D", "nl80211"],
    );
    let log = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(log.contains("Reading configuration file"), "wpa_supplicant did not read the file:\n{log}");
    assert!(
        !log.contains("failed to parse") && !log.contains("Failed to read or parse"),
        "wpa_supplicant rejected the file:\n{log}"
    );
    log
}

/// The PSK `wpa_passphrase` (from the same package) derives, as the
/// space-separated hex that `wpa_supplicant -K` prints.
fn wpa_passphrase_psk(ssid: &str, passphrase: &str) -> String {
    let output = tool("wpasupplicant", "wpa_passphrase", &[ssid, passphrase]);
    let text = String::from_utf8(output.stdout).unwrap();
    let psk = text
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("psk="))
        .unwrap_or_else(|| panic!("no psk= in wpa_passphrase output:\n{text}"));
    let bytes = psk.as_bytes().chunks(2).map(|pair| std::str::from_utf8(pair).unwrap()).collect::<Vec<_>>();
    bytes.join(" ")
}

/// Copies `lookout/wifi.conf` out of the image.
fn extract_wifi_conf(image: &SdImage, dir: &Path) -> std::path::PathBuf {
    let conf = dir.join("extracted-wifi.conf");
    std::fs::write(&conf, image.mtype("lookout/wifi.conf")).unwrap();
    conf
}

#[test]
fn wpa_supplicant_reads_any_network_name_and_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let (folder, _) = identity(dir.path(), "ids");
    // Quotes, '#' and a backslash: everything a hand-written file gets wrong.
    let ssid = "Caf\u{e9} \"5G\" #2";
    let passphrase = "pa ss\"#word\\ 42";
    let secret_file = dir.path().join("passphrase.txt");
    std::fs::write(&secret_file, format!("{passphrase}\n")).unwrap();

    let stdout = provision_ok([
        "write-image",
        "--image",
        path_str(&image.path),
        "--identity",
        path_str(&folder),
        "--wifi-ssid",
        ssid,
        "--wifi-country",
        "gb",
        "--wifi-passphrase-file",
        path_str(&secret_file),
    ]);
    assert!(stdout.contains("wrote lookout/wifi.conf"), "{stdout}");
    assert!(stdout.contains("country GB, WPA2/WPA3 personal"), "{stdout}");
    assert!(!stdout.contains("ss\\\"#word"), "write-image printed the passphrase: {stdout}");
    image.fsck(dir.path());

    let log = wpa_supplicant_reads(&extract_wifi_conf(&image, dir.path()));
    assert!(log.contains("country='GB'"), "{log}");
    let ssid_hex = ssid.bytes().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    assert!(log.contains(&format!("ssid - hexdump_ascii(len={}):\n     {ssid_hex}", ssid.len())), "{log}");
    // WPA-PSK | WPA-PSK-SHA256 | SAE, with optional management frame protection.
    assert!(log.contains("key_mgmt: 0x502") && log.contains("ieee80211w=1"), "{log}");
    let psk = wpa_passphrase_psk(ssid, passphrase);
    assert!(log.contains(&format!("PSK - hexdump(len=32): {psk}")), "WPA2 key differs from {psk}:\n{log}");
    assert!(log.contains(&format!("sae_password - hexdump_ascii(len={})", passphrase.len())), "{log}");
    assert!(log.contains("Priority group 0"), "no network configured:\n{log}");

    let verified = provision_ok(["verify", path_str(&image.path), "--expect", path_str(&folder)]);
    assert!(
        verified.contains(
            "Wi-Fi:               network \"Caf\u{e9} \\\"5G\\\" #2\", country GB, WPA2/WPA3 personal"
        ),
        "{verified}"
    );
    assert!(!verified.contains("word"), "verify printed the passphrase: {verified}");
}

#[test]
fn an_open_hidden_network_and_a_passphrase_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let (folder, _) = identity(dir.path(), "ids");
    let base = ["write-image", "--image", path_str(&image.path), "--identity", path_str(&folder)];

    let open = [&base[..], &["--wifi-ssid", "Guest", "--wifi-country", "US", "--wifi-open", "--wifi-hidden"]]
        .concat();
    provision_ok(open);
    let log = wpa_supplicant_reads(&extract_wifi_conf(&image, dir.path()));
    // WPA_KEY_MGMT_NONE, and probed for by name because it is hidden.
    assert!(log.contains("key_mgmt: 0x4\n") && log.contains("scan_ssid=1"), "{log}");
    assert!(!log.contains("PSK -"), "{log}");

    // A new network replaces the old settings; the passphrase comes from stdin.
    let from_stdin =
        [&base[..], &["--wifi-ssid", "Home", "--wifi-country", "de", "--wifi-passphrase-file", "-"]].concat();
    let output = provision_with_input(&from_stdin, b"correct horse battery\r\n");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let log = wpa_supplicant_reads(&extract_wifi_conf(&image, dir.path()));
    assert!(log.contains("country='DE'") && !log.contains("scan_ssid=1"), "{log}");
    let psk = wpa_passphrase_psk("Home", "correct horse battery");
    assert!(log.contains(&format!("PSK - hexdump(len=32): {psk}")), "{log}");

    // Writing the identity again without Wi-Fi options keeps the settings.
    provision_ok(base);
    let verified = provision_ok(["verify", path_str(&image.path)]);
    assert!(verified.contains("network \"Home\", country DE, WPA2/WPA3 personal"), "{verified}");
    image.fsck(dir.path());
}

#[test]
fn bad_wifi_settings_are_refused_before_the_image_changes() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let (folder, _) = identity(dir.path(), "ids");
    let before = image.sha256();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "1234567\n").unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "12345678\n").unwrap();
    let long_ssid = "x".repeat(33);

    let cases: [(&[&str], &str); 6] = [
        (
            &["--wifi-ssid", "Home", "--wifi-country", "GB", "--wifi-passphrase-file", path_str(&short)],
            "8 to 63 characters",
        ),
        (
            &["--wifi-ssid", "Home", "--wifi-country", "GBR", "--wifi-passphrase-file", path_str(&good)],
            "two-letter code",
        ),
        (&["--wifi-ssid", &long_ssid, "--wifi-country", "GB", "--wifi-open"], "1 to 32 bytes"),
        (&["--wifi-ssid", "Home", "--wifi-country", "GB"], "--wifi-passphrase-file FILE, or --wifi-open"),
        (&["--wifi-ssid", "Home", "--wifi-open"], "--wifi-country"),
        (
            &["--wifi-ssid", "Home", "--wifi-country", "GB", "--wifi-passphrase-file", "/nonexistent/pass"],
            "cannot read the Wi-Fi passphrase",
        ),
    ];
    for (wifi_args, expected) in cases {
        let args =
            [&["write-image", "--image", path_str(&image.path), "--identity", path_str(&folder)], wifi_args]
                .concat();
        let err = provision_err(args);
        assert!(err.contains(expected), "{wifi_args:?}: expected {expected:?} in:\n{err}");
        assert_eq!(image.sha256(), before, "{wifi_args:?} changed the image");
    }
}
