//! `lookout-provision new` and `show`: identities are well formed, random,
//! never share an ID within an output folder, and survive a round trip.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{path_str, provision_err, provision_ok};
use lookout_provisioning::{Identity, RoomSecret, IDENTITY_FILE_NAME};

fn identities_in(dir: &Path) -> Vec<(String, Identity)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let identity = Identity::load(&e.path().join(IDENTITY_FILE_NAME))
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            (name, identity)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[test]
fn a_batch_has_distinct_well_formed_identities_and_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("batch");
    let stdout = provision_ok(["new", "--out", path_str(&out), "--count", "12", "--prefix", "f7"]);
    assert!(stdout.contains("made 12 identities"), "{stdout}");

    let found = identities_in(&out);
    assert_eq!(found.len(), 12);
    let mut ids = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for (folder, identity) in &found {
        let id = identity.device_id().as_str();
        assert_eq!(folder, id, "the folder is named after the device ID");
        assert!(id.starts_with("f7") && id.len() == 6, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)), "{id}");
        assert_eq!(identity.hostname(), format!("lookout-{id}"));
        let secret = identity.room_secret().expose_hex();
        assert_eq!(secret.len(), 64);
        assert!(secret.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "lowercase hex");
        assert!(ids.insert(id.to_owned()), "ID {id} reused");
        assert!(secrets.insert(secret), "secret reused");
        // The secret is not in stdout (the label is the place for it).
        assert!(!stdout.contains(&identity.room_secret().expose_hex()));
        for file in [IDENTITY_FILE_NAME, "label.svg", "label.png"] {
            let mode = std::fs::metadata(out.join(folder).join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{folder}/{file} holds the secret");
        }
    }
}

#[test]
fn a_second_run_into_the_same_folder_reuses_no_id_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("batch");
    provision_ok(["new", "--out", path_str(&out), "--count", "15"]);
    let first: Vec<(String, Vec<u8>)> = identities_in(&out)
        .into_iter()
        .map(|(folder, _)| {
            let bytes = std::fs::read(out.join(&folder).join(IDENTITY_FILE_NAME)).unwrap();
            (folder, bytes)
        })
        .collect();
    // A folder renamed by hand still reserves the ID it holds.
    let (renamed_from, _) = &first[0];
    std::fs::rename(out.join(renamed_from), out.join("Shop Window")).unwrap();

    provision_ok(["new", "--out", path_str(&out), "--count", "15"]);
    let all = identities_in(&out);
    assert_eq!(all.len(), 30);
    let ids: BTreeSet<_> = all.iter().map(|(_, identity)| identity.device_id().to_string()).collect();
    assert_eq!(ids.len(), 30, "an ID was reused");
    for (folder, bytes) in first.iter().skip(1) {
        assert_eq!(
            &std::fs::read(out.join(folder).join(IDENTITY_FILE_NAME)).unwrap(),
            bytes,
            "{folder} changed"
        );
    }
}

#[test]
fn room_secrets_look_uniformly_random() {
    // 200 secrets = 51,200 bits: the count of ones is within 6 standard
    // deviations (about 680) of half, and no byte value is wildly overrepresented.
    let secrets: Vec<[u8; 32]> = (0..200)
        .map(|_| {
            let hex = RoomSecret::generate().unwrap().expose_hex();
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&hex, &mut bytes).unwrap();
            bytes
        })
        .collect();
    let ones: u32 = secrets.iter().flatten().map(|b| b.count_ones()).sum();
    let bits = 200 * 256;
    assert!((ones as i64 - bits / 2).abs() < 680, "{ones} ones in {bits} bits");
    let mut histogram = [0u32; 256];
    for byte in secrets.iter().flatten() {
        histogram[*byte as usize] += 1;
    }
    // 6,400 bytes over 256 values: 25 expected per value.
    assert!(histogram.iter().all(|&n| n < 70), "a byte value is far too frequent");
    let distinct: BTreeSet<_> = secrets.iter().collect();
    assert_eq!(distinct.len(), 200);
}

#[test]
fn show_hides_the_secret_unless_asked_and_round_trips_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("batch");
    provision_ok(["new", "--out", path_str(&out)]);
    let (folder, identity) = identities_in(&out).remove(0);
    let folder = out.join(folder);
    let secret = identity.room_secret().expose_hex();

    let shown = provision_ok(["show", path_str(&folder)]);
    assert!(!shown.contains(&secret), "show printed the secret");
    assert!(shown.contains(&format!("lookout-{}.local", identity.device_id())), "{shown}");
    assert!(shown.contains(&identity.certificate_fingerprint()), "{shown}");
    assert!(shown.contains(&identity.certificate_fingerprint_short()), "{shown}");

    let revealed = provision_ok(["show", "--reveal-secret", path_str(&folder.join(IDENTITY_FILE_NAME))]);
    assert!(revealed.contains(&secret));
    assert!(revealed.contains(&identity.viewer_url(None)));

    // Round trip: the file parses back to the same identity and re-serialises identically.
    let text = std::fs::read_to_string(folder.join(IDENTITY_FILE_NAME)).unwrap();
    let again = Identity::from_json(&text).unwrap();
    assert_eq!(again.to_json(), text);
    assert_eq!(again.certificate_der(), identity.certificate_der());
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("batch");
    let err = provision_err(["new", "--out", path_str(&out), "--prefix", "AB"]);
    assert!(err.contains("invalid prefix"), "{err}");
    let err = provision_err(["new", "--out", path_str(&out), "--count", "0"]);
    assert!(err.contains("0"), "{err}");
    let err = provision_err(["show", path_str(&dir.path().join("absent"))]);
    assert!(err.contains("could not read"), "{err}");
    std::fs::write(dir.path().join("broken.json"), "{\"format\": \"lookout-identity\"").unwrap();
    let err = provision_err(["show", path_str(&dir.path().join("broken.json"))]);
    assert!(err.contains("not a valid identity file"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["new", "write-image", "show", "verify"] {
        let help = provision_ok([sub, "--help"]);
        assert!(help.contains("Usage: lookout-provision"), "{sub}: {help}");
    }
}
