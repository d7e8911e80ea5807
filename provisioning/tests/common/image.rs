//! Synthetic SD-card images built with the real tools (`sfdisk`,
//! `mkfs.vfat --offset`, `mkfs.ext4 -E offset=`), read with `mtools` and
//! checked with `fsck.fat -n`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{path_str, provision_ok, tool, tool_status};
use lookout_provisioning::{Identity, IDENTITY_FILE_NAME};

pub const SECTOR: u64 = 512;

/// A synthetic image and where its boot partition is.
pub struct SdImage {
    pub path: PathBuf,
    pub boot_offset: u64,
    pub boot_sectors: u64,
}

impl SdImage {
    pub fn mtools_target(&self) -> String {
        format!("{}@@{}", path_str(&self.path), self.boot_offset)
    }

    /// The identity file as `mtype` reads it from the boot partition.
    pub fn mtype_identity(&self) -> Vec<u8> {
        self.mtype("lookout/identity.json")
    }

    /// A file of the boot partition as `mtype` reads it (`path` from its root).
    pub fn mtype(&self, path: &str) -> Vec<u8> {
        tool("mtools", "mtype", &["-i", &self.mtools_target(), &format!("::{path}")]).stdout
    }

    /// `fsck.fat -n` on a copy of the boot partition (it has no offset option).
    pub fn fsck(&self, scratch: &Path) {
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

    pub fn sha256(&self) -> Vec<u8> {
        digest(&self.path)
    }
}

pub fn digest(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref().to_vec()
}

pub fn sfdisk(image: &Path, script: &str) {
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

pub fn empty_image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(mib * 1024 * 1024).unwrap();
    path
}

pub fn mkfs_vfat(image: &Path, offset_sectors: u64, sectors: u64, fat_bits: &str) {
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

pub fn mkfs_ext4(image: &Path, offset_sectors: u64, sectors: u64) {
    let offset = format!("offset={}", offset_sectors * SECTOR);
    let blocks = (sectors * SECTOR / 1024).to_string();
    tool("e2fsprogs", "mkfs.ext4", &["-q", "-F", "-E", &offset, path_str(image), &blocks]);
}

/// Like a Raspberry Pi image: MBR, FAT32 boot (type 0c) at 1 MiB, ext4 root.
pub fn pi_image(dir: &Path, name: &str) -> SdImage {
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
pub fn gpt_image(dir: &Path) -> SdImage {
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
pub fn small_fat_image(dir: &Path, name: &str, fat_bits: &str, sectors: u64) -> SdImage {
    let path = empty_image(dir, name, 1 + sectors * SECTOR / (1024 * 1024) + 1);
    sfdisk(&path, &format!("label: dos\nstart=2048, size={sectors}, type=e\n"));
    mkfs_vfat(&path, 2048, sectors, fat_bits);
    SdImage { path, boot_offset: 2048 * SECTOR, boot_sectors: sectors }
}

/// One identity folder made by the tool.
pub fn identity(dir: &Path, name: &str) -> (PathBuf, Identity) {
    let out = dir.join(name);
    provision_ok(["new", "--out", path_str(&out)]);
    let folder = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let identity = Identity::load(&folder.join(IDENTITY_FILE_NAME)).unwrap();
    (folder, identity)
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
