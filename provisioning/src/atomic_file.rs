//! Crash-safe file writes: nothing written to disk is ever half-written.
//!
//! The content goes to a temporary file in the destination's folder, is
//! flushed to stable storage, and is then renamed over the destination; the
//! folder itself is synced so the rename survives a power cut. A reader sees
//! either the old file or the new one, never a mix.
//!
//! A process killed mid-write leaves its temporary file
//! (`.<name>.tmp-<pid>`) behind; [`remove_interrupted_writes`] removes those
//! of processes that are gone, so a key written halfway does not linger.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to `path` atomically, creating the file with `mode`
/// (e.g. `0o600` for anything holding a key).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp_path = dir.join(temporary_name(file_name, std::process::id()));

    let result = (|| {
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp_path)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temporary file is garbage once the write failed.
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

fn temporary_prefix(file_name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    prefix
}

fn temporary_name(file_name: &std::ffi::OsStr, pid: u32) -> std::ffi::OsString {
    let mut name = temporary_prefix(file_name);
    name.push(pid.to_string());
    name
}

/// Removes the temporary files that interrupted [`write_atomic`]s of `path`
/// left in its folder: those of processes that no longer run (known by
/// `/proc/<pid>`). Returns the paths removed; a missing folder is no error.
pub fn remove_interrupted_writes(path: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Some(file_name) = path.file_name() else {
        return Ok(Vec::new());
    };
    let prefix = temporary_prefix(file_name);
    let prefix = prefix.as_encoded_bytes();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.as_encoded_bytes().strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = std::str::from_utf8(pid).ok().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let running = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !running {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        write_atomic(&path, b"first", 0o600).unwrap();
        write_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        // Above the kernel's largest PID (4194304): never a running process.
        let dead = dir.path().join(".identity.json.tmp-4194305");
        let ours = dir.path().join(format!(".identity.json.tmp-{}", std::process::id()));
        let other_file = dir.path().join(".other.json.tmp-4194305");
        let not_a_pid = dir.path().join(".identity.json.tmp-x");
        for file in [&dead, &ours, &other_file, &not_a_pid, &path] {
            fs::write(file, b"secret").unwrap();
        }
        assert_eq!(remove_interrupted_writes(&path).unwrap(), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(ours.exists() && other_file.exists() && not_a_pid.exists() && path.exists());
        assert!(remove_interrupted_writes(&dir.path().join("none/identity.json")).unwrap().is_empty());
    }

    #[test]
    fn missing_folder_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("file");
        assert!(write_atomic(&path, b"x", 0o600).is_err());
        assert!(!path.exists());
    }
}
