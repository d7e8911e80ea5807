//! Making identities in batches for the factory: one folder per camera
//! (`<DIR>/<id>/identity.json`, `label.svg`, `label.png`), never reusing a
//! device ID that already exists in the output folder.
//!
//! A device ID is reserved by creating its folder (`mkdir` fails if it
//! exists), so two runs into the same folder, even at once, cannot hand out
//! the same ID. Every file is written atomically with mode 0600: each of them
//! holds the room secret.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomic;
use crate::device_id::{DeviceId, DeviceIdError, RANDOM_LEN};
use crate::label::{Label, LabelError, PNG_FILE_NAME, SVG_FILE_NAME};
use crate::{Identity, IdentityError, IDENTITY_FILE_NAME};

/// Most identities one run makes.
pub const MAX_COUNT: usize = 10_000;
/// Random draws per identity before giving up on finding a free ID.
const ATTEMPTS_PER_ID: usize = 1_000;

/// Why a batch could not be made. Identities made before the error stay.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("invalid prefix: {0}")]
    Prefix(DeviceIdError),
    #[error("the count must be between 1 and {MAX_COUNT}, got {0}")]
    Count(usize),
    #[error("cannot use the output folder {path}: {source}")]
    OutputDir { path: PathBuf, source: std::io::Error },
    #[error("no free device ID left with prefix {prefix:?} in {dir} (after {attempts} tries); use a longer prefix")]
    IdsExhausted { prefix: String, dir: PathBuf, attempts: usize },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot make the label: {0}")]
    Label(#[from] LabelError),
}

/// One identity made by [`create_batch`].
#[derive(Debug)]
pub struct Created {
    pub folder: PathBuf,
    pub identity: Identity,
}

/// Device IDs already used in `dir`: every folder whose name is a device ID,
/// and the device ID inside every identity file found one level down.
pub fn existing_ids(dir: &Path) -> Result<BTreeSet<String>, BatchError> {
    let mut ids = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ids),
        Err(source) => return Err(BatchError::OutputDir { path: dir.to_owned(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| BatchError::OutputDir { path: dir.to_owned(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if DeviceId::parse(&name).is_ok() {
            ids.insert(name);
        }
        // A folder renamed by hand still holds its ID inside.
        if let Ok(identity) = Identity::load(&entry.path().join(IDENTITY_FILE_NAME)) {
            ids.insert(identity.device_id().to_string());
        }
    }
    Ok(ids)
}

/// Makes `count` identities with labels in `out_dir`, each ID `prefix`
/// followed by random characters, none already used in `out_dir`.
pub fn create_batch(out_dir: &Path, count: usize, prefix: &str) -> Result<Vec<Created>, BatchError> {
    if count == 0 || count > MAX_COUNT {
        return Err(BatchError::Count(count));
    }
    // Validate the prefix once, with a placeholder random part.
    DeviceId::parse(&format!("{prefix}{}", "a".repeat(RANDOM_LEN))).map_err(BatchError::Prefix)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|source| BatchError::OutputDir { path: out_dir.to_owned(), source })?;
    let mut used = existing_ids(out_dir)?;
    let mut created = Vec::with_capacity(count);
    for _ in 0..count {
        let (device_id, folder) = reserve_id(out_dir, prefix, &mut used)?;
        let identity = Identity::generate(device_id)?;
        write_identity_folder(&folder, &identity)?;
        created.push(Created { folder, identity });
    }
    Ok(created)
}

/// Draws random IDs until one is free, and claims it by creating its folder.
fn reserve_id(
    out_dir: &Path,
    prefix: &str,
    used: &mut BTreeSet<String>,
) -> Result<(DeviceId, PathBuf), BatchError> {
    reserve_id_from(out_dir, prefix, used, || DeviceId::generate(prefix))
}

/// [`reserve_id`] with the ID source passed in, so tests can force collisions.
fn reserve_id_from(
    out_dir: &Path,
    prefix: &str,
    used: &mut BTreeSet<String>,
    mut draw: impl FnMut() -> Result<DeviceId, DeviceIdError>,
) -> Result<(DeviceId, PathBuf), BatchError> {
    for _ in 0..ATTEMPTS_PER_ID {
        let id = draw().map_err(BatchError::Prefix)?;
        if !used.insert(id.to_string()) {
            continue;
        }
        let folder = out_dir.join(id.as_str());
        match create_private_dir(&folder) {
            Ok(()) => return Ok((id, folder)),
            // Someone else took it between our scan and now.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(BatchError::Write { path: folder, source }),
        }
    }
    Err(BatchError::IdsExhausted {
        prefix: prefix.to_owned(),
        dir: out_dir.to_owned(),
        attempts: ATTEMPTS_PER_ID,
    })
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Writes the identity file first (the one thing that must not be lost),
/// then the two label files.
pub fn write_identity_folder(folder: &Path, identity: &Identity) -> Result<(), BatchError> {
    identity.save(&folder.join(IDENTITY_FILE_NAME))?;
    let label = Label::new(identity)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = folder.join(name);
        write_atomic(&path, bytes, 0o600).map_err(|source| BatchError::Write { path, source })
    };
    write(SVG_FILE_NAME, label.svg().as_bytes())?;
    write(PNG_FILE_NAME, &label.png()?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_prefix_and_count() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(create_batch(dir.path(), 1, "AB"), Err(BatchError::Prefix(_))));
        assert!(matches!(create_batch(dir.path(), 1, "abcdefghi"), Err(BatchError::Prefix(_))));
        assert!(matches!(create_batch(dir.path(), 0, ""), Err(BatchError::Count(0))));
    }

    #[test]
    fn existing_ids_come_from_folder_names_and_identity_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("abcd")).unwrap();
        std::fs::create_dir(dir.path().join("Not An Id")).unwrap();
        let renamed = dir.path().join("camera for the shop");
        std::fs::create_dir(&renamed).unwrap();
        let identity = Identity::generate(DeviceId::parse("wxyz").unwrap()).unwrap();
        identity.save(&renamed.join(IDENTITY_FILE_NAME)).unwrap();
        let ids = existing_ids(dir.path()).unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["abcd", "wxyz"]);
        assert!(existing_ids(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn never_hands_out_a_taken_id() {
        let dir = tempfile::tempdir().unwrap();
        // "aaaa" is in the scan, "bbbb" appeared on disk after the scan.
        std::fs::create_dir(dir.path().join("bbbb")).unwrap();
        let mut used: BTreeSet<String> = ["aaaa".to_owned()].into();
        let mut draws = ["aaaa", "bbbb", "aaaa", "cccc"].into_iter();
        let (id, folder) =
            reserve_id_from(dir.path(), "", &mut used, || DeviceId::parse(draws.next().unwrap())).unwrap();
        assert_eq!(id.as_str(), "cccc");
        assert!(folder.is_dir());
        // Every draw taken: a clear error, not a reused ID.
        let err = reserve_id_from(dir.path(), "", &mut used, || DeviceId::parse("cccc")).unwrap_err();
        assert!(matches!(err, BatchError::IdsExhausted { .. }), "{err}");
    }
}
