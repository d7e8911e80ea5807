//! Putting an identity into a Raspberry Pi SD-card image, and reading it back.
//!
//! The identity goes to `lookout/identity.json` on the image's boot (FAT)
//! partition, where the appliance looks for it on first start; Wi-Fi
//! settings, if any, go beside it as `lookout/wifi.conf`, and the
//! appliance's settings file as `lookout/settings.toml`. Everything
//! happens in-process on the image file: the partition table is read with
//! `mbrman` (MBR) or `gptman` (GPT), the FAT file system with `fatfs`. No
//! mounting, no root.
//!
//! Safety of the image:
//! - Everything is checked before the first byte is written: the identity,
//!   the partition table, the FAT file system, the free space, and whether
//!   the image already holds another identity (kept unless `replace`).
//! - With an output path the input is only read: it is copied to a
//!   temporary file beside the output, written, read back, synced, and only
//!   then renamed to the output.
//! - Inside the FAT each file is written under a temporary name and renamed,
//!   so an interrupted write leaves the old file or none, never half of one.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::wifi::{WifiNetwork, WIFI_FILE_NAME};
use crate::{fat_dot_entries, Identity, IdentityError, IDENTITY_FILE_NAME};

/// Folder on the boot partition that holds the identity.
pub const BOOT_DIR: &str = "lookout";
/// Sector size of the partition table in an image file.
const SECTOR: u64 = 512;
/// Largest file read back from [`BOOT_DIR`] (a real identity is ~1.5 KiB).
const MAX_BOOT_FILE_BYTES: u64 = 64 * 1024;
/// MBR partition types that hold a FAT file system.
const FAT_MBR_TYPES: [u8; 7] = [0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e, 0xef];

/// Path of the identity inside the boot partition, as `mtools` spells it.
pub fn identity_path_in_partition() -> String {
    format!("{BOOT_DIR}/{IDENTITY_FILE_NAME}")
}

/// Path of the Wi-Fi settings inside the boot partition.
pub fn wifi_path_in_partition() -> String {
    format!("{BOOT_DIR}/{WIFI_FILE_NAME}")
}

/// Path of the appliance's settings file inside the boot partition.
pub fn settings_path_in_partition() -> String {
    format!("{BOOT_DIR}/{}", crate::settings_file::FILE_NAME)
}

/// Which kind of partition table the image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Mbr,
    Gpt,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableKind::Mbr => "MBR",
            TableKind::Gpt => "GPT",
        })
    }
}

/// The boot partition found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPartition {
    pub table: TableKind,
    /// Partition number as `fdisk` shows it (1-based).
    pub number: u32,
    /// Byte offset of the partition in the image.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Why an image could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0} not found")]
    NotFound(PathBuf),
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("{path} has no readable partition table: {reason} (is it an uncompressed SD-card image? unpack a .xz or .bz2 download first, e.g. xz -dk)")]
    NoPartitionTable { path: PathBuf, reason: String },
    #[error("{path} has no FAT boot partition ({detail}); is it a Raspberry Pi SD-card image?")]
    NoFatPartition { path: PathBuf, detail: String },
    #[error("partition {number} ends at byte {end}, past the end of the image ({len} bytes); is the image truncated?")]
    PartitionOutsideImage { number: u32, end: u64, len: u64 },
    #[error("the boot partition is full: the identity needs {needed} bytes, {free} are free")]
    PartitionFull { needed: u64, free: u64 },
    #[error("the boot partition already holds another identity (device {existing}); pass --replace to overwrite it (its printed label stops working)")]
    AlreadyProvisioned { existing: String },
    #[error(
        "the boot partition holds an identity file that is not valid ({0}); pass --replace to overwrite it"
    )]
    ExistingInvalid(IdentityError),
    #[error("the image has no {path} on its boot partition")]
    NoIdentity { path: String },
    #[error("the identity on the image is invalid: {0}")]
    InvalidIdentity(IdentityError),
    #[error("the output {0} is the input image; leave out --out to write in place")]
    OutputIsInput(PathBuf),
    #[error("the FAT file system on partition {number} is damaged: {source}")]
    Fat { number: u32, source: io::Error },
    #[error("read-back check failed: the image does not hold the {0} just written")]
    ReadBackMismatch(&'static str),
}

/// What [`write_identity`] did.
#[derive(Debug)]
pub struct WriteReport {
    pub image: PathBuf,
    pub partition: BootPartition,
    pub replaced: bool,
    /// The Wi-Fi settings written (replacing any the image held), if any.
    pub wifi_conf: Option<String>,
    /// The settings file written (replacing any the image held), if any.
    pub settings: Option<String>,
}

/// An identity read from an image.
#[derive(Debug)]
pub struct FoundIdentity {
    pub partition: BootPartition,
    pub identity: Identity,
    /// The text of `lookout/wifi.conf`, if the image has one.
    pub wifi_conf: Option<String>,
    /// The text of `lookout/settings.toml`, if the image has one.
    pub settings: Option<String>,
}

/// Options of [`write_identity`].
#[derive(Debug, Default, Clone)]
pub struct WriteOptions {
    /// Write a modified copy here instead of changing the image in place.
    pub out: Option<PathBuf>,
    /// Overwrite an identity the image already holds.
    pub replace: bool,
    /// Wi-Fi settings to write beside the identity; they replace any the
    /// image holds. `None` leaves the image's Wi-Fi settings as they are.
    pub wifi: Option<WifiNetwork>,
    /// The appliance's settings file (`settings.toml`) to write beside the
    /// identity, replacing any the image holds; checked by the caller
    /// ([`crate::settings_file::check_text`]). `None` leaves it as it is.
    pub settings: Option<String>,
}

/// Writes `identity` to the boot partition of `image` (see the module docs).
pub fn write_identity(
    image: &Path,
    identity: &Identity,
    options: &WriteOptions,
) -> Result<WriteReport, ImageError> {
    let json = identity.to_json();
    // The text we write must be what we will read back.
    Identity::from_json(&json).map_err(ImageError::InvalidIdentity)?;
    let wifi_conf = options.wifi.as_ref().map(WifiNetwork::to_wpa_supplicant_conf);
    // Wi-Fi first: the identity is what marks an image as provisioned.
    let mut files: Vec<BootFile<'_>> = Vec::new();
    if let Some(conf) = &wifi_conf {
        files.push(BootFile { name: WIFI_FILE_NAME, temp_name: "wifi.tmp", bytes: conf.as_bytes() });
    }
    if let Some(text) = &options.settings {
        files.push(BootFile {
            name: crate::settings_file::FILE_NAME,
            temp_name: "settings.tmp",
            bytes: text.as_bytes(),
        });
    }
    files.push(BootFile { name: IDENTITY_FILE_NAME, temp_name: "identity.tmp", bytes: json.as_bytes() });
    check_regular_file(image)?;

    // Check everything on the input, read-only, before writing anything.
    let mut input = open(image, false)?;
    let (partition, replaced) = check_writable(image, &mut input, identity, &files, options.replace)?;
    drop(input);

    let target = match &options.out {
        None => {
            let mut file = open(image, true)?;
            write_into(&mut file, &partition, &files)?;
            file.sync_all().map_err(|source| io_error("sync", image, source))?;
            read_back(image, identity, wifi_conf.as_deref(), options.settings.as_deref())?;
            image.to_owned()
        }
        Some(out) => {
            if is_same_file(image, out) {
                return Err(ImageError::OutputIsInput(out.clone()));
            }
            let temp = TempOutput::copy_of(image, out)?;
            let mut file = open(&temp.path, true)?;
            write_into(&mut file, &partition, &files)?;
            file.sync_all().map_err(|source| io_error("sync", &temp.path, source))?;
            drop(file);
            read_back(&temp.path, identity, wifi_conf.as_deref(), options.settings.as_deref())?;
            temp.commit()?;
            out.clone()
        }
    };
    Ok(WriteReport { image: target, partition, replaced, wifi_conf, settings: options.settings.clone() })
}

/// One file to put into [`BOOT_DIR`].
struct BootFile<'a> {
    name: &'static str,
    /// Its name while it is being written (8.3, distinct per file).
    temp_name: &'static str,
    bytes: &'a [u8],
}

/// Reads and validates the identity on the boot partition of `image`.
pub fn read_identity(image: &Path) -> Result<FoundIdentity, ImageError> {
    check_regular_file(image)?;
    let mut file = open(image, false)?;
    let partition = find_boot_partition(image, &mut file)?;
    let fs = mount(&mut file, &partition)?;
    let text = read_identity_text(&fs, &partition)?
        .ok_or_else(|| ImageError::NoIdentity { path: identity_path_in_partition() })?;
    let identity = Identity::from_json(&text).map_err(ImageError::InvalidIdentity)?;
    let wifi_conf = read_boot_file(&fs, &partition, WIFI_FILE_NAME)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let settings = read_boot_file(&fs, &partition, crate::settings_file::FILE_NAME)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(FoundIdentity { partition, identity, wifi_conf, settings })
}

/// Finds the boot partition: the first FAT partition of the MBR, or the
/// first GPT partition holding a FAT file system.
pub fn find_boot_partition(path: &Path, file: &mut File) -> Result<BootPartition, ImageError> {
    let len = file.seek(SeekFrom::End(0)).map_err(|source| io_error("read", path, source))?;
    let mbr = mbrman::MBR::read_from(file, SECTOR as u32)
        .map_err(|e| ImageError::NoPartitionTable { path: path.to_owned(), reason: e.to_string() })?;
    let protective = mbr.iter().any(|(_, p)| p.sys == 0xee);
    let candidates: Vec<BootPartition> = if protective {
        let gpt = gptman::GPT::find_from(file).map_err(|e| ImageError::NoPartitionTable {
            path: path.to_owned(),
            reason: format!("protective MBR but no valid GPT: {e}"),
        })?;
        gpt.iter()
            .filter(|(_, p)| p.is_used())
            .map(|(number, p)| BootPartition {
                table: TableKind::Gpt,
                number,
                offset: p.starting_lba.saturating_mul(gpt.sector_size),
                size: (p.ending_lba.saturating_sub(p.starting_lba) + 1).saturating_mul(gpt.sector_size),
            })
            .collect()
    } else {
        mbr.iter()
            .filter(|(_, p)| p.is_used() && FAT_MBR_TYPES.contains(&p.sys))
            .map(|(number, p)| BootPartition {
                table: TableKind::Mbr,
                number: number as u32,
                offset: u64::from(p.starting_lba) * SECTOR,
                size: u64::from(p.sectors) * SECTOR,
            })
            .collect()
    };
    if candidates.is_empty() {
        let detail = if protective { "the GPT has no partitions" } else { "no partition of a FAT type" };
        return Err(ImageError::NoFatPartition { path: path.to_owned(), detail: detail.to_owned() });
    }
    let mut last_error = String::new();
    for partition in candidates {
        let end = partition.offset.saturating_add(partition.size);
        if end > len {
            return Err(ImageError::PartitionOutsideImage { number: partition.number, end, len });
        }
        match fatfs::FileSystem::new(Slice::new(&mut *file, &partition), fatfs::FsOptions::new()) {
            Ok(_) => return Ok(partition),
            Err(e) => last_error = format!("partition {}: {e}", partition.number),
        }
    }
    Err(ImageError::NoFatPartition {
        path: path.to_owned(),
        detail: format!("no FAT file system found; {last_error}"),
    })
}

type Fat<'a> = fatfs::FileSystem<Slice<&'a mut File>>;

fn mount<'a>(file: &'a mut File, partition: &BootPartition) -> Result<Fat<'a>, ImageError> {
    fatfs::FileSystem::new(Slice::new(file, partition), fatfs::FsOptions::new())
        .map_err(|source| ImageError::Fat { number: partition.number, source })
}

/// The first [`MAX_BOOT_FILE_BYTES`]` + 1` bytes of `name` in [`BOOT_DIR`],
/// `None` if there is no such file.
fn read_boot_file(
    fs: &Fat<'_>,
    partition: &BootPartition,
    name: &str,
) -> Result<Option<Vec<u8>>, ImageError> {
    let fat = |source| ImageError::Fat { number: partition.number, source };
    let mut file = match fs.root_dir().open_file(&format!("{BOOT_DIR}/{name}")) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fat(e)),
    };
    let mut bytes = Vec::new();
    (&mut file).take(MAX_BOOT_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(fat)?;
    Ok(Some(bytes))
}

/// The identity file's text, `None` if there is none.
fn read_identity_text(fs: &Fat<'_>, partition: &BootPartition) -> Result<Option<String>, ImageError> {
    let Some(bytes) = read_boot_file(fs, partition, IDENTITY_FILE_NAME)? else {
        return Ok(None);
    };
    if bytes.len() as u64 > MAX_BOOT_FILE_BYTES {
        return Err(ImageError::InvalidIdentity(IdentityError::Syntax(format!(
            "the file is larger than {MAX_BOOT_FILE_BYTES} bytes"
        ))));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ImageError::InvalidIdentity(IdentityError::Syntax("the file is not UTF-8".to_owned())))
}

/// Everything [`write_into`] needs, checked without writing. Returns the
/// partition and whether an identity will be replaced.
fn check_writable(
    path: &Path,
    file: &mut File,
    identity: &Identity,
    files: &[BootFile<'_>],
    replace: bool,
) -> Result<(BootPartition, bool), ImageError> {
    let partition = find_boot_partition(path, file)?;
    let fs = mount(file, &partition)?;
    let fat = |source| ImageError::Fat { number: partition.number, source };

    let existing = match read_identity_text(&fs, &partition) {
        Ok(text) => text.map(|text| Identity::from_json(&text)),
        Err(ImageError::InvalidIdentity(e)) => Some(Err(e)),
        Err(e) => return Err(e),
    };
    let replaced = match existing {
        None => false,
        Some(Ok(old)) if same_identity(&old, identity) => false,
        Some(_) if replace => true,
        Some(Ok(old)) => {
            return Err(ImageError::AlreadyProvisioned { existing: old.device_id().to_string() })
        }
        Some(Err(e)) => return Err(ImageError::ExistingInvalid(e)),
    };

    let stats = fs.stats().map_err(fat)?;
    let cluster = u64::from(stats.cluster_size());
    let dir_missing = match fs.root_dir().open_dir(BOOT_DIR) {
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::NotFound => true,
        Err(e) => return Err(fat(e)),
    };
    // Each new file is written beside the old one before the rename.
    let clusters =
        files.iter().map(|f| (f.bytes.len() as u64).div_ceil(cluster)).sum::<u64>() + u64::from(dir_missing);
    let needed = clusters * cluster;
    let free = u64::from(stats.free_clusters()) * cluster;
    if needed > free {
        return Err(ImageError::PartitionFull { needed, free });
    }
    Ok((partition, replaced))
}

fn same_identity(a: &Identity, b: &Identity) -> bool {
    a.device_id() == b.device_id()
        && a.room_secret() == b.room_secret()
        && a.certificate_der() == b.certificate_der()
}

/// Writes each file in order: temporary name, then rename over the old one.
fn write_into(file: &mut File, partition: &BootPartition, files: &[BootFile<'_>]) -> Result<(), ImageError> {
    let fat = |source| ImageError::Fat { number: partition.number, source };
    create_boot_dir(file, partition)?;
    let fs = mount(file, partition)?;
    {
        let dir = fs.root_dir().open_dir(BOOT_DIR).map_err(fat)?;
        for boot_file in files {
            remove_if_present(&dir, boot_file.temp_name).map_err(fat)?;
            {
                let mut temp = dir.create_file(boot_file.temp_name).map_err(fat)?;
                temp.truncate().map_err(fat)?;
                temp.write_all(boot_file.bytes).map_err(fat)?;
                temp.flush().map_err(fat)?;
            }
            remove_if_present(&dir, boot_file.name).map_err(fat)?;
            dir.rename(boot_file.temp_name, &dir, boot_file.name).map_err(fat)?;
        }
    }
    fs.unmount().map_err(fat)
}

/// Creates [`BOOT_DIR`] in the root if it is missing, and repairs the
/// entries `fatfs` writes wrongly into a new folder.
fn create_boot_dir(file: &mut File, partition: &BootPartition) -> Result<(), ImageError> {
    let fat = |source| ImageError::Fat { number: partition.number, source };
    let fs = mount(file, partition)?;
    let created = match fs.root_dir().open_dir(BOOT_DIR) {
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs.root_dir().create_dir(BOOT_DIR).map_err(fat)?;
            true
        }
        Err(e) => return Err(fat(e)),
    };
    fs.unmount().map_err(fat)?;
    if created {
        fat_dot_entries::repair_new_root_folder(&mut Slice::new(&mut *file, partition), b"LOOKOUT    ")
            .map_err(fat)?;
    }
    Ok(())
}

fn remove_if_present<T: fatfs::ReadWriteSeek>(dir: &fatfs::Dir<'_, T>, name: &str) -> io::Result<()> {
    match dir.remove(name) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn read_back(
    image: &Path,
    identity: &Identity,
    wifi_conf: Option<&str>,
    settings: Option<&str>,
) -> Result<(), ImageError> {
    let found = read_identity(image)?;
    if !same_identity(&found.identity, identity) {
        return Err(ImageError::ReadBackMismatch("identity"));
    }
    if wifi_conf.is_some() && found.wifi_conf.as_deref() != wifi_conf {
        return Err(ImageError::ReadBackMismatch("Wi-Fi settings"));
    }
    if settings.is_some() && found.settings.as_deref() != settings {
        return Err(ImageError::ReadBackMismatch("settings file"));
    }
    Ok(())
}

fn check_regular_file(path: &Path) -> Result<(), ImageError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(ImageError::NotAFile(path.to_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(ImageError::NotFound(path.to_owned())),
        Err(source) => Err(io_error("read", path, source)),
    }
}

fn open(path: &Path, write: bool) -> Result<File, ImageError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|source| io_error(if write { "open for writing" } else { "open" }, path, source))
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> ImageError {
    ImageError::Io { action, path: path.to_owned(), source }
}

fn is_same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A copy of the input beside the output, removed unless committed.
struct TempOutput {
    path: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl TempOutput {
    fn copy_of(image: &Path, out: &Path) -> Result<TempOutput, ImageError> {
        let dir = match out.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = out.file_name().ok_or_else(|| ImageError::NotAFile(out.to_owned()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp-{}", std::process::id()));
        let temp = TempOutput { path: dir.join(temp_name), out: out.to_owned(), committed: false };
        std::fs::copy(image, &temp.path)
            .map_err(|source| io_error("copy the image to", &temp.path, source))?;
        Ok(temp)
    }

    fn commit(mut self) -> Result<(), ImageError> {
        std::fs::rename(&self.path, &self.out)
            .map_err(|source| io_error("rename the new image to", &self.out, source))?;
        self.committed = true;
        let dir = self.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(|source| io_error("sync", dir, source))
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A window onto one partition of the image: positions are relative to the
/// partition's start, and nothing outside it can be read or written.
struct Slice<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T> Slice<T> {
    fn new(inner: T, partition: &BootPartition) -> Self {
        Slice { inner, start: partition.offset, len: partition.size, pos: 0 }
    }

    fn room(&self, wanted: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        usize::try_from(left).map_or(wanted, |left| wanted.min(left))
    }
}

impl<T: Read + Seek> Read for Slice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let read = self.inner.read(&mut buf[..n])?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl<T: Write + Seek> Write for Slice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(ErrorKind::WriteZero, "write past the end of the partition"));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let written = self.inner.write(&buf[..n])?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T> Seek for Slice<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        let target =
            target.ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "seek before the partition"))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_stays_inside_its_window() {
        let data: Vec<u8> = (0..100).collect();
        let partition = BootPartition { table: TableKind::Mbr, number: 1, offset: 10, size: 20 };
        let mut slice = Slice::new(io::Cursor::new(data), &partition);
        let mut buf = [0u8; 50];
        assert_eq!(slice.read(&mut buf).unwrap(), 20);
        assert_eq!(buf[0], 10);
        assert_eq!(buf[19], 29);
        assert_eq!(slice.read(&mut buf).unwrap(), 0);
        slice.seek(SeekFrom::End(-2)).unwrap();
        assert_eq!(slice.write(&[7, 7, 7]).unwrap(), 2);
        assert!(slice.write(&[7]).is_err());
        assert!(slice.seek(SeekFrom::Current(-100)).is_err());
        assert_eq!(slice.inner.get_ref()[28..31], [7, 7, 30]);
    }
}
