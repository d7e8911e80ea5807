//! Where the appliance gets its identity, in this order:
//!
//! 1. the state folder (`<state>/identity.json`), as saved on an earlier start;
//! 2. the factory identity on the boot partition
//!    (`/boot/firmware/lookout/identity.json`, written by
//!    `lookout-provision write-image`): validated, then copied atomically
//!    into the state folder (mode 0600). The boot copy is left in place, so a
//!    camera whose state is wiped comes back with the same secret and the
//!    printed label keeps working (the trade-off is in `docs/identity.md`);
//! 3. a fresh development identity, on a machine that was never provisioned.
//!
//! An identity file that exists but does not validate, in the state folder
//! or on the boot partition, is an error ([`IdentityStoreError::Corrupt`])
//! and is never replaced: a new secret would silently orphan the printed
//! label. `lookout` then serves the needs-provisioning page instead. A file
//! that exists but cannot be read (ownership, permissions) is not damaged:
//! that is [`IdentityStoreError::Unreadable`], a fatal error saying so.
//!
//! Before anything else, temporary files of identity writes a crash
//! interrupted are removed (they may hold a secret). The state folder's
//! `identity.json` is kept at mode 0600: a looser mode is fixed, with a
//! warning. Every secret found is registered with the log writer
//! ([`crate::log_redaction::protect`]).

use std::path::{Path, PathBuf};

use lookout_provisioning::{DeviceId, Identity, IdentityError, IDENTITY_FILE_NAME};

/// How the identity in use came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityOrigin {
    /// Read from the state folder, as written earlier.
    State,
    /// The factory identity from the boot partition, copied into the state folder just now.
    BootPartition,
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
    #[error("cannot read the identity file {path}: {source}. The file is not damaged: fix its ownership or permissions (it must be readable by the user lookout runs as; mode 0600) and start again")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The identity file's path inside a state folder (or the boot partition's `lookout/` folder).
pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join(IDENTITY_FILE_NAME)
}

/// Loads the identity from `state_dir`, creating a development identity if
/// there is none. Never looks at a boot partition.
pub fn load_or_create(state_dir: &Path) -> Result<(Identity, IdentityOrigin), IdentityStoreError> {
    load(state_dir, None)
}

/// Finds the identity: state folder, then `boot_dir` (if given), then a new
/// development identity (see the module docs).
pub fn load(
    state_dir: &Path,
    boot_dir: Option<&Path>,
) -> Result<(Identity, IdentityOrigin), IdentityStoreError> {
    let found = find(state_dir, boot_dir)?;
    crate::log_redaction::protect(found.0.room_secret());
    Ok(found)
}

fn find(state_dir: &Path, boot_dir: Option<&Path>) -> Result<(Identity, IdentityOrigin), IdentityStoreError> {
    let path = identity_path(state_dir);
    remove_interrupted_writes(&path);
    if exists(&path)? {
        keep_private(&path);
        let identity = Identity::load(&path).map_err(|source| classify(path, source))?;
        if let Some(boot_dir) = boot_dir {
            warn_if_boot_copy_differs(&identity, &identity_path(boot_dir));
        }
        return Ok((identity, IdentityOrigin::State));
    }
    if let Some(boot_path) = boot_dir.map(identity_path).filter(|p| p.exists()) {
        let identity = Identity::load(&boot_path).map_err(|source| classify(boot_path.clone(), source))?;
        import(&identity, state_dir, &path, &boot_path);
        return Ok((identity, IdentityOrigin::BootPartition));
    }
    create_dir_private(state_dir)?;
    // An empty prefix is always valid, so generation cannot fail here.
    let device_id = DeviceId::generate("").map_err(|e| IdentityStoreError::Identity(e.into()))?;
    let identity = Identity::generate(device_id)?;
    identity.save(&path)?;
    tracing::info!(path = %path.display(), device = %identity.device_id(), "created a development identity");
    Ok((identity, IdentityOrigin::CreatedForDevelopment))
}

/// Whether the identity file is there; a folder that cannot be searched is
/// [`IdentityStoreError::Unreadable`], not "no identity yet".
fn exists(path: &Path) -> Result<bool, IdentityStoreError> {
    path.try_exists().map_err(|source| IdentityStoreError::Unreadable { path: path.to_owned(), source })
}

/// A file that cannot be read is a matter of permissions, not of content.
fn classify(path: PathBuf, error: IdentityError) -> IdentityStoreError {
    match error {
        IdentityError::Read { source, .. } => IdentityStoreError::Unreadable { path, source },
        source => IdentityStoreError::Corrupt { path, source },
    }
}

/// Removes what a write killed halfway left (`.identity.json.tmp-<pid>`).
/// Failing to is worth a warning, not a refusal to start.
fn remove_interrupted_writes(path: &Path) {
    match lookout_provisioning::atomic_file::remove_interrupted_writes(path) {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => tracing::info!(
            files = removed.len(),
            folder = %path.parent().unwrap_or(path).display(),
            "removed temporary files of identity writes a crash interrupted"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            folder = %path.parent().unwrap_or(path).display(),
            "cannot remove temporary files of interrupted identity writes; they may hold a room secret"
        ),
    }
}

/// The identity holds the TLS key and the room secret: only its owner may
/// read it. A looser mode (a copy by hand, a restored backup) is fixed.
fn keep_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Some(metadata) = std::fs::metadata(path).ok().filter(std::fs::Metadata::is_file) else {
        return; // Reading it will say what is wrong.
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            was = %format!("{mode:04o}"),
            "the identity file was readable by others; its mode is now 0600"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            error = %e,
            "the identity file is readable by others and its mode cannot be changed to 0600; fix it by hand"
        ),
    }
}

/// Copies the factory identity into the state folder. A failure is logged,
/// not fatal: the identity is valid and in use, and the next start tries again.
fn import(identity: &Identity, state_dir: &Path, path: &Path, boot_path: &Path) {
    let saved = create_dir_private(state_dir).and_then(|()| identity.save(path).map_err(Into::into));
    match saved {
        Ok(()) => tracing::info!(
            from = %boot_path.display(),
            to = %path.display(),
            device = %identity.device_id(),
            "imported the factory identity from the boot partition"
        ),
        Err(e) => tracing::warn!(
            from = %boot_path.display(),
            error = %e,
            device = %identity.device_id(),
            "using the factory identity from the boot partition, but cannot copy it into the state folder"
        ),
    }
}

/// The state folder wins; say so when the boot partition holds something else
/// (e.g. a re-provisioned SD card on a camera that keeps its old state).
fn warn_if_boot_copy_differs(identity: &Identity, boot_path: &Path) {
    if !boot_path.exists() {
        return;
    }
    match Identity::load(boot_path) {
        Ok(boot)
            if boot.device_id() == identity.device_id() && boot.room_secret() == identity.room_secret() => {}
        Ok(boot) => {
            crate::log_redaction::protect(boot.room_secret());
            tracing::warn!(
            boot = %boot_path.display(),
            boot_device = %boot.device_id(),
            device = %identity.device_id(),
            "the boot partition holds a different identity; the state folder's is used (remove it from the state folder to adopt the boot partition's)"
            )
        }
        Err(e) => tracing::warn!(
            boot = %boot_path.display(),
            error = %e,
            "the identity on the boot partition is invalid; the state folder's is used"
        ),
    }
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
    use std::os::unix::fs::PermissionsExt;

    fn factory_identity(boot: &Path) -> Identity {
        std::fs::create_dir_all(boot).unwrap();
        let identity = Identity::generate(DeviceId::parse("f4ct").unwrap()).unwrap();
        std::fs::write(identity_path(boot), identity.to_json()).unwrap();
        identity
    }

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

    #[test]
    fn factory_identity_is_imported_once_and_the_boot_copy_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (state, boot) = (dir.path().join("state"), dir.path().join("boot/lookout"));
        let factory = factory_identity(&boot);
        let boot_bytes = std::fs::read(identity_path(&boot)).unwrap();

        let (identity, origin) = load(&state, Some(&boot)).unwrap();
        assert_eq!(origin, IdentityOrigin::BootPartition);
        assert_eq!(identity.room_secret(), factory.room_secret());
        let saved = identity_path(&state);
        assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Identity::load(&saved).unwrap().room_secret(), factory.room_secret());
        assert_eq!(std::fs::read(identity_path(&boot)).unwrap(), boot_bytes, "boot copy kept as is");

        let (again, origin) = load(&state, Some(&boot)).unwrap();
        assert_eq!(origin, IdentityOrigin::State);
        assert_eq!(again.room_secret(), factory.room_secret());
    }

    #[test]
    fn state_wins_over_the_boot_partition() {
        let dir = tempfile::tempdir().unwrap();
        let (state, boot) = (dir.path().join("state"), dir.path().join("boot"));
        let (existing, _) = load_or_create(&state).unwrap();
        factory_identity(&boot);
        let (identity, origin) = load(&state, Some(&boot)).unwrap();
        assert_eq!(origin, IdentityOrigin::State);
        assert_eq!(identity.room_secret(), existing.room_secret());
    }

    #[test]
    fn corrupt_boot_identity_is_an_error_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let (state, boot) = (dir.path().join("state"), dir.path().join("boot"));
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(identity_path(&boot), b"{\"format\": \"lookout-identity\"}").unwrap();
        let err = load(&state, Some(&boot)).unwrap_err();
        assert!(matches!(&err, IdentityStoreError::Corrupt { path, .. } if path.starts_with(&boot)), "{err}");
        assert!(!identity_path(&state).exists(), "no secret was made up");
    }

    #[test]
    fn a_loose_mode_is_fixed_to_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = load_or_create(dir.path()).unwrap();
        let path = identity_path(dir.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (again, origin) = load_or_create(dir.path()).unwrap();
        assert_eq!(origin, IdentityOrigin::State);
        assert_eq!(again.room_secret(), first.room_secret());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn an_unreadable_identity_is_unreadable_not_corrupt() {
        // Tests may run as root, which reads any file: a folder in the
        // file's place fails to read the same way (an I/O error).
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(identity_path(dir.path())).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityStoreError::Unreadable { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("ownership or permissions") && !text.contains("reprovision"), "{text}");
    }

    #[test]
    fn interrupted_writes_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(".identity.json.tmp-4194305");
        std::fs::write(&leftover, b"{\"room_secret\": \"half\"").unwrap();
        let (_, origin) = load_or_create(dir.path()).unwrap();
        assert_eq!(origin, IdentityOrigin::CreatedForDevelopment);
        assert!(!leftover.exists());
    }

    #[test]
    fn missing_boot_folder_falls_back_to_development() {
        let dir = tempfile::tempdir().unwrap();
        let (_, origin) = load(&dir.path().join("state"), Some(&dir.path().join("no-boot"))).unwrap();
        assert_eq!(origin, IdentityOrigin::CreatedForDevelopment);
    }
}
