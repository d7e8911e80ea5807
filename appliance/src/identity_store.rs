//! Where the appliance gets its identity: the state folder, or a fresh
//! development identity on a machine that was never provisioned.
//!
//! An identity file that exists but does not validate is an error: a new
//! secret would silently orphan the printed label, so nothing is replaced.

use std::path::{Path, PathBuf};

use lookout_provisioning::{DeviceId, Identity, IdentityError, IDENTITY_FILE_NAME};

/// How the identity in use came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityOrigin {
    /// Read from the state folder, as written earlier.
    State,
    /// Created just now for development, because none existed.
    CreatedForDevelopment,
}

/// Why no identity could be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityStoreError {
    #[error("cannot create the state folder {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("the identity file {path} is invalid ({source}); it is left as it is, because replacing it would invalidate the printed label. Restore it from the SD image's boot partition or reprovision the camera")]
    Corrupt { path: PathBuf, source: IdentityError },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The identity file's path inside a state folder.
pub fn identity_path(state_dir: &Path) -> PathBuf {
    state_dir.join(IDENTITY_FILE_NAME)
}

/// Loads the identity from `state_dir`, creating a development identity if
/// there is none.
pub fn load_or_create(state_dir: &Path) -> Result<(Identity, IdentityOrigin), IdentityStoreError> {
    let path = identity_path(state_dir);
    if path.exists() {
        return Identity::load(&path)
            .map(|identity| (identity, IdentityOrigin::State))
            .map_err(|source| IdentityStoreError::Corrupt { path, source });
    }
    create_dir_private(state_dir)?;
    // An empty prefix is always valid, so generation cannot fail here.
    let device_id = DeviceId::generate("").map_err(|e| IdentityStoreError::Identity(e.into()))?;
    let identity = Identity::generate(device_id)?;
    identity.save(&path)?;
    tracing::info!(path = %path.display(), device = %identity.device_id(), "created a development identity");
    Ok((identity, IdentityOrigin::CreatedForDevelopment))
}

fn create_dir_private(dir: &Path) -> Result<(), IdentityStoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| IdentityStoreError::StateDir { path: dir.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (first, origin) = load_or_create(&state).unwrap();
        assert_eq!(origin, IdentityOrigin::CreatedForDevelopment);
        let (second, origin) = load_or_create(&state).unwrap();
        assert_eq!(origin, IdentityOrigin::State);
        assert_eq!(first.room_secret(), second.room_secret());
        assert_eq!(first.certificate_der(), second.certificate_der());
    }

    #[test]
    fn corrupt_file_is_an_error_and_is_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = identity_path(dir.path());
        std::fs::write(&path, b"{ half a file").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityStoreError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{ half a file");
    }
}
