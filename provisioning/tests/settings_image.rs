//! The appliance's settings file in the SD image: `lookout-provision
//! write-image --settings FILE` checks it with the code `lookout` reads it
//! with (`lookout_provisioning::settings_file`) and writes it as
//! `lookout/settings.toml` beside the identity, read back here with
//! `mtools` and checked with `fsck.fat`; a bad file refuses the write,
//! naming file, line and key, and leaves the image as it was.

mod common;

use std::path::Path;

use common::image::{identity, pi_image};
use common::{path_str, provision_err, provision_ok};

#[test]
fn write_image_writes_a_good_settings_file_and_verify_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let (folder, _) = identity(dir.path(), "ids");
    let settings = dir.path().join("settings.toml");
    let text = "# shelf camera\nmax-viewers = 6\nresolution = \"1920x1080\"\nno-mdns = true\nwebrtc-bind = [\"::1\"]\n\
                listen = \"[::]:443\"\njoin-timeout = \"20s\"\nmessage-rate = 7.5\n";
    std::fs::write(&settings, text).unwrap();
    let out = provision_ok(write_with_settings(&image.path, &folder, &settings));
    assert!(out.contains("wrote lookout/settings.toml"), "{out}");
    assert_eq!(image.mtype("lookout/settings.toml"), text.as_bytes(), "written as given");
    assert!(!image.mtype_identity().is_empty(), "the identity is there too");
    image.fsck(dir.path());
    let verified = provision_ok(["verify", path_str(&image.path)]);
    assert!(verified.contains("Settings:            lookout/settings.toml (8 lines)"), "{verified}");

    // Written again with another file: replaced, not appended.
    std::fs::write(&settings, "max-viewers = 2\n").unwrap();
    provision_ok(write_with_settings(&image.path, &folder, &settings));
    assert_eq!(image.mtype("lookout/settings.toml"), b"max-viewers = 2\n");
    image.fsck(dir.path());
}

#[test]
fn a_bad_settings_file_refuses_the_write_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let (folder, _) = identity(dir.path(), "ids");
    let before = image.sha256();
    let cases = [
        (
            "typo.toml",
            "fps = 25\nmax_viewers = 6\n",
            ":2: max_viewers: unknown setting (did you mean max-viewers?",
        ),
        ("kind.toml", "# a switch\n\nno-mdns = \"yes\"\n", ":3: no-mdns: expected true or false"),
        ("list.toml", "max-viewers = [1, 2]\n", ":1: max-viewers: expected a string or a number, got a list"),
        ("syntax.toml", "fps = 25\nresolution = 1920x1080\n", ":2: not valid TOML"),
        ("count.toml", "max-viewers = \"many\"\n", ":1: max-viewers: invalid value 'many'"),
        ("negative.toml", "\nfps = -5\n", ":2: fps: invalid value '-5'"),
        ("duration.toml", "join-timeout = \"soon\"\n", ":1: join-timeout: invalid value 'soon'"),
        ("address.toml", "listen = \"443\"\n", ":1: listen: invalid value '443'"),
    ];
    for (name, text, expected) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let err = provision_err(write_with_settings(&image.path, &folder, &file));
        let wanted = format!("{}{expected}", file.display());
        assert!(err.contains(&wanted), "{name}: expected {wanted:?} in:\n{err}");
        assert!(err.contains("nothing was written"), "{err}");
        assert_eq!(image.sha256(), before, "{name} changed the image");
    }
    let missing = dir.path().join("missing.toml");
    let args = ["write-image", "--image", path_str(&image.path), "--identity", path_str(&folder)];
    let err = provision_err([&args[..], &["--settings", path_str(&missing)]].concat());
    assert!(err.contains("cannot read the settings file"), "{err}");
    assert_eq!(image.sha256(), before);
}

/// `write-image` of IMAGE in place with the identity in FOLDER and SETTINGS.
fn write_with_settings<'a>(image: &'a Path, folder: &'a Path, settings: &'a Path) -> [&'a str; 7] {
    [
        "write-image",
        "--image",
        path_str(image),
        "--identity",
        path_str(folder),
        "--settings",
        path_str(settings),
    ]
}
