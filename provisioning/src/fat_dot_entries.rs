//! Repairs the `.` and `..` entries of a folder that `fatfs` 0.3.6 created
//! in the root of a FAT file system.
//!
//! `fatfs` 0.3.6 (the latest release) has two known bugs in `create_dir`,
//! fixed upstream but not released (rust-fatfs pull requests 99 and 100):
//! it writes long-name entries in front of `.` and `..`, so they are not the
//! first two slots as the FAT specification requires, and on FAT32 the `..`
//! of a first-level folder points at the root's cluster instead of 0.
//! `fsck.fat` reports both, and would "repair" them by deleting entries.
//!
//! Right after creating the folder (and before anything is written into it)
//! [`repair_new_root_folder`] rewrites its first four slots as `.`, `..`
//! (cluster 0), and two free slots. A folder that is already correct is left
//! alone, so this keeps working once a fixed `fatfs` is used.

use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};

const ENTRY: usize = 32;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0f;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// The few boot-sector fields needed to find a folder's first cluster.
struct Layout {
    bytes_per_sector: u64,
    cluster_bytes: u64,
    fat_start: u64,
    /// Byte offset of cluster 2.
    data_start: u64,
    fat32: bool,
    /// FAT32: first cluster of the root folder; otherwise its fixed region.
    root_cluster: u32,
    root_region: (u64, u64),
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.to_owned())
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Layout {
    fn read<T: Read + Seek>(disk: &mut T) -> io::Result<Layout> {
        let mut boot = [0u8; 512];
        disk.seek(SeekFrom::Start(0))?;
        disk.read_exact(&mut boot)?;
        let bytes_per_sector = u16_at(&boot, 0x0b);
        let sectors_per_cluster = u64::from(boot[0x0d]);
        let reserved = u16_at(&boot, 0x0e);
        let fats = u64::from(boot[0x10]);
        let root_entries = u16_at(&boot, 0x11);
        let total = match u16_at(&boot, 0x13) {
            0 => u64::from(u32_at(&boot, 0x20)),
            n => n,
        };
        let fat_sectors = match u16_at(&boot, 0x16) {
            0 => u64::from(u32_at(&boot, 0x24)),
            n => n,
        };
        if bytes_per_sector == 0 || sectors_per_cluster == 0 {
            return Err(invalid("boot sector has a zero sector or cluster size"));
        }
        let root_sectors = (root_entries * ENTRY as u64).div_ceil(bytes_per_sector);
        let first_data_sector = reserved + fats * fat_sectors + root_sectors;
        let clusters = total.saturating_sub(first_data_sector) / sectors_per_cluster;
        // The FAT type follows from the cluster count alone (as in the specification and fatfs).
        let fat32 = clusters >= 65525;
        Ok(Layout {
            bytes_per_sector,
            cluster_bytes: sectors_per_cluster * bytes_per_sector,
            fat_start: reserved * bytes_per_sector,
            data_start: first_data_sector * bytes_per_sector,
            fat32,
            root_cluster: u32_at(&boot, 0x2c),
            root_region: ((reserved + fats * fat_sectors) * bytes_per_sector, root_entries * ENTRY as u64),
        })
    }

    fn cluster_offset(&self, cluster: u32) -> io::Result<u64> {
        let index = cluster.checked_sub(2).ok_or_else(|| invalid("cluster number below 2"))?;
        Ok(self.data_start + u64::from(index) * self.cluster_bytes)
    }

    /// The root folder as (offset, length) extents.
    fn root_extents<T: Read + Seek>(&self, disk: &mut T) -> io::Result<Vec<(u64, u64)>> {
        if !self.fat32 {
            return Ok(vec![self.root_region]);
        }
        let mut extents = Vec::new();
        let mut cluster = self.root_cluster;
        // A chain longer than this is a loop in a damaged FAT.
        for _ in 0..65536 {
            extents.push((self.cluster_offset(cluster)?, self.cluster_bytes));
            let mut next = [0u8; 4];
            disk.seek(SeekFrom::Start(self.fat_start + u64::from(cluster) * 4))?;
            disk.read_exact(&mut next)?;
            cluster = u32::from_le_bytes(next) & 0x0fff_ffff;
            if !(2..0x0fff_fff7).contains(&cluster) {
                return Ok(extents);
            }
        }
        Err(invalid("the root folder's cluster chain loops"))
    }
}

/// Finds the root-folder entry with the 8.3 name `short_name` (padded to 11
/// bytes, upper case) that is a folder; returns its first cluster.
fn find_root_folder<T: Read + Seek>(disk: &mut T, layout: &Layout, short_name: &[u8; 11]) -> io::Result<u32> {
    for (offset, len) in layout.root_extents(disk)? {
        let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| invalid("cluster too large"))?];
        disk.seek(SeekFrom::Start(offset))?;
        disk.read_exact(&mut bytes)?;
        for entry in bytes.chunks_exact(ENTRY) {
            match entry[0] {
                0x00 => return Err(io::Error::new(ErrorKind::NotFound, "folder not in the root")),
                0xe5 => continue,
                _ => {}
            }
            let attributes = entry[11];
            if attributes != ATTR_LONG_NAME && attributes & ATTR_DIRECTORY != 0 && &entry[..11] == short_name
            {
                let high = u16_at(entry, 0x14) as u32;
                let low = u16_at(entry, 0x1a) as u32;
                return Ok((high << 16) | low);
            }
        }
    }
    Err(io::Error::new(ErrorKind::NotFound, "folder not in the root"))
}

/// Rewrites the first slots of the root folder `short_name` (see the module
/// docs). Returns whether anything was changed.
pub fn repair_new_root_folder<T: Read + Write + Seek>(
    disk: &mut T,
    short_name: &[u8; 11],
) -> io::Result<bool> {
    let layout = Layout::read(disk)?;
    if layout.bytes_per_sector < 512 {
        return Err(invalid("sector size below 512"));
    }
    let cluster = find_root_folder(disk, &layout, short_name)?;
    let offset = layout.cluster_offset(cluster)?;
    let mut slots = [0u8; 4 * ENTRY];
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(&mut slots)?;
    let name = |slot: usize| &slots[slot * ENTRY..slot * ENTRY + 11];
    let attributes = |slot: usize| slots[slot * ENTRY + 11];
    if name(0) == DOT && name(1) == DOTDOT {
        return Ok(false);
    }
    let buggy = attributes(0) == ATTR_LONG_NAME
        && name(1) == DOT
        && attributes(2) == ATTR_LONG_NAME
        && name(3) == DOTDOT;
    if !buggy {
        return Err(invalid("the new folder's first entries are not laid out as expected"));
    }
    let mut fixed = [0u8; 4 * ENTRY];
    fixed[..ENTRY].copy_from_slice(&slots[ENTRY..2 * ENTRY]);
    fixed[ENTRY..2 * ENTRY].copy_from_slice(&slots[3 * ENTRY..]);
    // `..` of a first-level folder is cluster 0 (the root), whatever the FAT type.
    for at in [ENTRY + 0x14, ENTRY + 0x15, ENTRY + 0x1a, ENTRY + 0x1b] {
        fixed[at] = 0;
    }
    // Slots 2 and 3 become free, with 0x00 marking the end of the folder:
    // nothing has been written after them yet.
    disk.seek(SeekFrom::Start(offset))?;
    disk.write_all(&fixed)?;
    disk.flush()?;
    Ok(true)
}
