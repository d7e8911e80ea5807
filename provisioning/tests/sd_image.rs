//! `lookout-provision write-image` and `verify` on synthetic SD-card images
//! built with the real tools (`sfdisk`, `mkfs.vfat --offset`, `mkfs.ext4 -E
//! offset=`), read back with `mtools` and checked with `fsck.fat -n`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{path_str, provision_err, provision_ok, tool, tool_status};
use lookout_provisioning::{Identity, IDENTITY_FILE_NAME};

const SECTOR: u64 = 512;

/// A synthetic image and where its boot partition is.
struct SdImage {
    path: PathBuf,
    boot_offset: u64,
    boot_sectors: u64,
}

impl SdImage {
    fn mtools_target(&self) -> String {
        format!("{}@@{}", path_str(&self.path), self.boot_offset)
    }

    /// The identity file as `mtype` reads it from the boot partition.
    fn mtype_identity(&self) -> Vec<u8> {
        tool("mtools", "mtype", &["-i", &self.mtools_target(), "::lookout/identity.json"]).stdout
    }

    /// `fsck.fat -n` on a copy of the boot partition (it has no offset option).
    fn fsck(&self, scratch: &Path) {
        let bytes = std::fs::read(&self.path).unwrap();
        let start = self.boot_offset as usize;
        let end = start + (self.boot_sectors * SECTOR) as usize;
        let part = scratch.join("boot-partition.img");
        std::fs::write(&part, &bytes[start..end]).unwrap();
        let output = tool_status("dosfstools", "fsck.fat", &["-n", path_str(&part)]);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "fsck.fat found problems:\n{report}");
        assert_eq!(report.lines().count(), 2, "fsck.fat reported something:\n{report}");
    }

    fn sha256(&self) -> Vec<u8> {
        digest(&self.path)
    }
}

fn digest(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref().to_vec()
}

fn sfdisk(image: &Path, script: &str) {
    let mut child = Command::new("/usr/sbin/sfdisk")
        .args(["--quiet", path_str(image)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("sfdisk is missing ({e}): install the Debian package fdisk (bash scripts/test.sh does)")
        });
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "sfdisk: {}", String::from_utf8_lossy(&output.stderr));
}

fn empty_image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(mib * 1024 * 1024).unwrap();
    path
}

fn mkfs_vfat(image: &Path, offset_sectors: u64, sectors: u64, fat_bits: &str) {
    let blocks = (sectors * SECTOR / 1024).to_string();
    let offset = offset_sectors.to_string();
    let mut args = vec!["-n", "BOOT", "--offset", &offset];
    if !fat_bits.is_empty() {
        args.extend(["-F", fat_bits]);
    }
    if fat_bits == "16" || fat_bits == "32" {
        args.extend(["-s", "1"]);
    }
    args.extend([path_str(image), &blocks]);
    tool("dosfstools", "mkfs.vfat", &args);
}

fn mkfs_ext4(image: &Path, offset_sectors: u64, sectors: u64) {
    let offset = format!("offset={}", offset_sectors * SECTOR);
    let blocks = (sectors * SECTOR / 1024).to_string();
    tool("e2fsprogs", "mkfs.ext4", &["-q", "-F", "-E", &offset, path_str(image), &blocks]);
}

/// Like a Raspberry Pi image: MBR, FAT32 boot (type 0c) at 1 MiB, ext4 root.
fn pi_image(dir: &Path, name: &str) -> SdImage {
    let path = empty_image(dir, name, 81);
    sfdisk(
        &path,
        "label: dos\nstart=2048, size=131072, type=c, bootable\nstart=133120, size=32768, type=83\n",
    );
    mkfs_vfat(&path, 2048, 131072, "32");
    mkfs_ext4(&path, 133120, 32768);
    SdImage { path, boot_offset: 2048 * SECTOR, boot_sectors: 131072 }
}

/// A GPT image: an EFI system partition (FAT32) and a Linux root.
fn gpt_image(dir: &Path) -> SdImage {
    let path = empty_image(dir, "gpt.img", 82);
    sfdisk(
        &path,
        "label: gpt\nstart=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start=133120, size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    );
    mkfs_vfat(&path, 2048, 131072, "32");
    mkfs_ext4(&path, 133120, 32768);
    SdImage { path, boot_offset: 2048 * SECTOR, boot_sectors: 131072 }
}

/// A small FAT16 boot partition (older images, and the FAT12/16 code paths).
fn small_fat_image(dir: &Path, name: &str, fat_bits: &str, sectors: u64) -> SdImage {
    let path = empty_image(dir, name, 1 + sectors * SECTOR / (1024 * 1024) + 1);
    sfdisk(&path, &format!("label: dos\nstart=2048, size={sectors}, type=e\n"));
    mkfs_vfat(&path, 2048, sectors, fat_bits);
    SdImage { path, boot_offset: 2048 * SECTOR, boot_sectors: sectors }
}

/// One identity folder made by the tool.
fn identity(dir: &Path, name: &str) -> (PathBuf, Identity) {
    let out = dir.join(name);
    provision_ok(["new", "--out", path_str(&out)]);
    let folder = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let identity = Identity::load(&folder.join(IDENTITY_FILE_NAME)).unwrap();
    (folder, identity)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

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
