//! `lookout-provision write-image` and `verify` on synthetic SD-card images
//! built with the real tools (`sfdisk`, `mkfs.vfat --offset`, `mkfs.ext4 -E
//! offset=`), read back with `mtools` and checked with `fsck.fat -n`.

mod common;

use common::image::{
    digest, empty_image, files_in, gpt_image, identity, mkfs_ext4, pi_image, sfdisk, small_fat_image, SdImage,
};
use common::{path_str, provision_err, provision_ok, tool};
use lookout_provisioning::IDENTITY_FILE_NAME;

#[test]
fn write_to_a_copy_leaves_the_input_untouched_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let before = image.sha256();
    let (folder, identity) = identity(dir.path(), "ids");
    let out = dir.path().join("provisioned.img");

    let stdout = provision_ok([
        "write-image",
        "--image",
        path_str(&image.path),
        "--identity",
        path_str(&folder),
        "--out",
        path_str(&out),
    ]);
    assert!(stdout.contains("partition 1 (MBR"), "{stdout}");
    assert_eq!(image.sha256(), before, "the input image was modified");

    let written = SdImage { path: out.clone(), ..image };
    assert_eq!(written.mtype_identity(), std::fs::read(folder.join(IDENTITY_FILE_NAME)).unwrap());
    written.fsck(dir.path());
    let verified = provision_ok(["verify", path_str(&out), "--expect", path_str(&folder)]);
    assert!(verified.contains(&format!("device ID:           {}", identity.device_id())), "{verified}");
    assert!(verified.contains("matches the expected identity"));
    assert!(!verified.contains(&identity.room_secret().expose_hex()), "verify printed the secret");

    // No temporary files are left beside the output.
    let mut expected = vec!["boot-partition.img", "ids", "pi.img", "provisioned.img"];
    expected.sort();
    assert_eq!(files_in(dir.path()), expected);
}

#[test]
fn write_in_place_then_rewrite_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let (first, first_identity) = identity(dir.path(), "a");
    let (second, second_identity) = identity(dir.path(), "b");

    provision_ok(["write-image", "--image", path_str(&image.path), "--identity", path_str(&first)]);
    assert_eq!(image.mtype_identity(), std::fs::read(first.join(IDENTITY_FILE_NAME)).unwrap());
    image.fsck(dir.path());

    // The same identity again is fine (idempotent).
    provision_ok(["write-image", "--image", path_str(&image.path), "--identity", path_str(&first)]);

    // Another identity is refused without --replace, and nothing changes.
    let before = image.sha256();
    let err =
        provision_err(["write-image", "--image", path_str(&image.path), "--identity", path_str(&second)]);
    assert!(err.contains("already holds another identity"), "{err}");
    assert!(err.contains(first_identity.device_id().as_str()), "{err}");
    assert_eq!(image.sha256(), before);

    let stdout = provision_ok([
        "write-image",
        "--image",
        path_str(&image.path),
        "--identity",
        path_str(&second),
        "--replace",
    ]);
    assert!(stdout.contains("replaced"), "{stdout}");
    assert_eq!(image.mtype_identity(), std::fs::read(second.join(IDENTITY_FILE_NAME)).unwrap());
    image.fsck(dir.path());
    let listing =
        String::from_utf8(tool("mtools", "mdir", &["-i", &image.mtools_target(), "-b", "::lookout"]).stdout)
            .unwrap();
    assert_eq!(listing.lines().count(), 1, "only identity.json in lookout/: {listing}");
    let verified = provision_ok(["verify", path_str(&image.path), "--expect", path_str(&second)]);
    assert!(verified.contains(second_identity.device_id().as_str()));
    let err = provision_err(["verify", path_str(&image.path), "--expect", path_str(&first)]);
    assert!(err.contains("not the expected identity"), "{err}");
}

#[test]
fn gpt_and_fat16_images_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, _) = identity(dir.path(), "ids");
    let gpt = gpt_image(dir.path());
    let stdout =
        provision_ok(["write-image", "--image", path_str(&gpt.path), "--identity", path_str(&folder)]);
    assert!(stdout.contains("GPT"), "{stdout}");
    assert_eq!(gpt.mtype_identity(), std::fs::read(folder.join(IDENTITY_FILE_NAME)).unwrap());
    gpt.fsck(dir.path());
    provision_ok(["verify", path_str(&gpt.path), "--expect", path_str(&folder)]);

    let fat16 = small_fat_image(dir.path(), "fat16.img", "16", 16384);
    provision_ok(["write-image", "--image", path_str(&fat16.path), "--identity", path_str(&folder)]);
    assert_eq!(fat16.mtype_identity(), std::fs::read(folder.join(IDENTITY_FILE_NAME)).unwrap());
    fat16.fsck(dir.path());
}

#[test]
fn refuses_a_missing_image_and_an_invalid_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, _) = identity(dir.path(), "ids");
    let err = provision_err([
        "write-image",
        "--image",
        path_str(&dir.path().join("nope.img")),
        "--identity",
        path_str(&folder),
    ]);
    assert!(err.contains("nope.img not found"), "{err}");
    let err = provision_err(["verify", path_str(&dir.path().join("nope.img"))]);
    assert!(err.contains("not found"), "{err}");

    let image = pi_image(dir.path(), "pi.img");
    let before = image.sha256();
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    let text = std::fs::read_to_string(folder.join(IDENTITY_FILE_NAME)).unwrap();
    std::fs::write(broken.join(IDENTITY_FILE_NAME), text.replace("\"version\": 1", "\"version\": 9"))
        .unwrap();
    let err =
        provision_err(["write-image", "--image", path_str(&image.path), "--identity", path_str(&broken)]);
    assert!(err.contains("version 9 is not supported"), "{err}");
    assert_eq!(image.sha256(), before);

    // --out naming the input itself.
    let err = provision_err([
        "write-image",
        "--image",
        path_str(&image.path),
        "--identity",
        path_str(&folder),
        "--out",
        path_str(&image.path),
    ]);
    assert!(err.contains("is the input image"), "{err}");
    assert_eq!(image.sha256(), before);
}

#[test]
fn refuses_an_image_without_a_fat_partition() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, _) = identity(dir.path(), "ids");

    // Only a Linux partition.
    let linux_only = empty_image(dir.path(), "linux.img", 20);
    sfdisk(&linux_only, "label: dos\nstart=2048, size=36864, type=83\n");
    mkfs_ext4(&linux_only, 2048, 36864);
    let err =
        provision_err(["write-image", "--image", path_str(&linux_only), "--identity", path_str(&folder)]);
    assert!(err.contains("no FAT boot partition"), "{err}");

    // A FAT-typed partition that was never formatted.
    let unformatted = empty_image(dir.path(), "blank.img", 20);
    sfdisk(&unformatted, "label: dos\nstart=2048, size=36864, type=c\n");
    let before = digest(&unformatted);
    let err =
        provision_err(["write-image", "--image", path_str(&unformatted), "--identity", path_str(&folder)]);
    assert!(err.contains("no FAT boot partition") && err.contains("no FAT file system"), "{err}");
    assert_eq!(digest(&unformatted), before);

    // No partition table at all.
    let raw = empty_image(dir.path(), "raw.img", 1);
    let err = provision_err(["write-image", "--image", path_str(&raw), "--identity", path_str(&folder)]);
    assert!(err.contains("no readable partition table"), "{err}");

    // A partition table pointing past the end (a truncated download).
    let truncated = pi_image(dir.path(), "truncated.img");
    std::fs::OpenOptions::new().write(true).open(&truncated.path).unwrap().set_len(40 * 1024 * 1024).unwrap();
    let err =
        provision_err(["write-image", "--image", path_str(&truncated.path), "--identity", path_str(&folder)]);
    assert!(err.contains("past the end of the image"), "{err}");
}

#[test]
fn refuses_a_full_boot_partition_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, _) = identity(dir.path(), "ids");
    let image = small_fat_image(dir.path(), "full.img", "", 4096);
    // Fill the file system: one file as large as the free space.
    let listing =
        String::from_utf8(tool("mtools", "mdir", &["-i", &image.mtools_target(), "::"]).stdout).unwrap();
    let free_line = listing.lines().find(|l| l.contains("bytes free")).expect("mdir reports free space");
    let free: u64 = free_line.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap();
    let filler = dir.path().join("filler.bin");
    std::fs::File::create(&filler).unwrap().set_len(free).unwrap();
    tool("mtools", "mcopy", &["-i", &image.mtools_target(), path_str(&filler), "::filler.bin"]);

    let before = image.sha256();
    let err =
        provision_err(["write-image", "--image", path_str(&image.path), "--identity", path_str(&folder)]);
    assert!(err.contains("boot partition is full"), "{err}");
    assert_eq!(image.sha256(), before, "a refused write changed the image");

    let out = dir.path().join("out.img");
    let err = provision_err([
        "write-image",
        "--image",
        path_str(&image.path),
        "--identity",
        path_str(&folder),
        "--out",
        path_str(&out),
    ]);
    assert!(err.contains("boot partition is full"), "{err}");
    assert!(!out.exists(), "no output after a refusal");
    assert!(files_in(dir.path()).iter().all(|name| !name.contains(".tmp-")), "temporary file left behind");
}

#[test]
fn verify_refuses_an_image_without_or_with_a_broken_identity() {
    let dir = tempfile::tempdir().unwrap();
    let image = pi_image(dir.path(), "pi.img");
    let err = provision_err(["verify", path_str(&image.path)]);
    assert!(err.contains("has no lookout/identity.json"), "{err}");

    let broken = dir.path().join("identity.json");
    std::fs::write(&broken, "{\"format\": \"lookout-identity\", \"version\": 1}").unwrap();
    tool("mtools", "mmd", &["-i", &image.mtools_target(), "::lookout"]);
    tool("mtools", "mcopy", &["-i", &image.mtools_target(), path_str(&broken), "::lookout/identity.json"]);
    let err = provision_err(["verify", path_str(&image.path)]);
    assert!(err.contains("identity on the image is invalid"), "{err}");

    // Writing over a broken identity needs --replace too.
    let (folder, _) = identity(dir.path(), "ids");
    let err =
        provision_err(["write-image", "--image", path_str(&image.path), "--identity", path_str(&folder)]);
    assert!(err.contains("not valid") && err.contains("--replace"), "{err}");
    provision_ok([
        "write-image",
        "--image",
        path_str(&image.path),
        "--identity",
        path_str(&folder),
        "--replace",
    ]);
    provision_ok(["verify", path_str(&image.path), "--expect", path_str(&folder)]);
    image.fsck(dir.path());
}
