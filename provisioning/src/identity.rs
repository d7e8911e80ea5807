//! The identity file: one JSON document per camera, versioned.
//!
//! ```json
//! {
//!   "format": "lookout-identity",
//!   "version": 1,
//!   "device_id": "k7qd",
//!   "hostname": "lookout-k7qd",
//!   "room_secret": "<64 lowercase hex>",
//!   "created_at": "2026-11-22T13:52:00Z",
//!   "tls": { "certificate_pem": "-----BEGIN CERTIFICATE-----...", "private_key_pem": "-----BEGIN PRIVATE KEY-----..." }
//! }
//! ```
//!
//! See `docs/identity.md` for the full description. Every field is validated
//! on load ([`Identity::from_json`]); an invalid file is an error, never a
//! reason to make a new secret (that would orphan the printed label).

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::atomic_file::write_atomic;
use crate::device_id::{DeviceId, DeviceIdError};
use crate::secret::{RandomUnavailable, RoomSecret, RoomSecretError};

/// The identity file's name, in the state folder and on the boot partition.
pub const IDENTITY_FILE_NAME: &str = "identity.json";
/// The `format` field every identity file carries.
pub const FORMAT_NAME: &str = "lookout-identity";
/// The version of the format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// How long the self-signed certificate is valid.
pub const CERTIFICATE_VALIDITY_DAYS: i64 = 20 * 365 + 5;

/// Everything that makes one camera itself.
#[derive(Clone)]
pub struct Identity {
    device_id: DeviceId,
    room_secret: RoomSecret,
    created_at: OffsetDateTime,
    certificate_pem: String,
    private_key_pem: String,
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    // The private key and the secret stay out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("device_id", &self.device_id)
            .field("room_secret", &self.room_secret)
            .field("certificate_fingerprint", &self.certificate_fingerprint())
            .finish_non_exhaustive()
    }
}

/// Why an identity could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("could not read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("could not write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("not a valid identity file: {0}")]
    Syntax(String),
    #[error("not a Lookout identity file (format is {0:?}, expected {FORMAT_NAME:?})")]
    WrongFormat(String),
    #[error("identity format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("invalid device ID: {0}")]
    DeviceId(#[from] DeviceIdError),
    #[error("host name {found:?} does not match the device ID (expected {expected:?})")]
    HostnameMismatch { found: String, expected: String },
    #[error("invalid room secret: {0}")]
    RoomSecret(#[from] RoomSecretError),
    #[error("invalid creation time: {0}")]
    CreatedAt(String),
    #[error("invalid TLS certificate: {0}")]
    Certificate(String),
    #[error("invalid TLS private key: {0}")]
    PrivateKey(String),
    #[error("the TLS private key does not belong to the certificate")]
    KeyMismatch,
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
}

/// The on-disk shape. Kept separate from [`Identity`] so that nothing can hold
/// an unvalidated identity.
#[derive(Serialize, Deserialize)]
struct IdentityFile {
    format: String,
    version: u32,
    device_id: String,
    hostname: String,
    room_secret: String,
    created_at: String,
    tls: TlsFile,
}

#[derive(Serialize, Deserialize)]
struct TlsFile {
    certificate_pem: String,
    private_key_pem: String,
}

impl Identity {
    /// Makes a new identity: a fresh room secret and a fresh self-signed
    /// ECDSA P-256 certificate for `lookout-<id>.local`, `localhost`,
    /// `127.0.0.1` and `::1`, valid for 20 years.
    pub fn generate(device_id: DeviceId) -> Result<Self, IdentityError> {
        let room_secret = RoomSecret::generate()?;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let (certificate_pem, private_key_pem) = self_signed_certificate(&device_id, now)?;
        Self::assemble(device_id, room_secret, now, certificate_pem, private_key_pem)
    }

    fn assemble(
        device_id: DeviceId,
        room_secret: RoomSecret,
        created_at: OffsetDateTime,
        certificate_pem: String,
        private_key_pem: String,
    ) -> Result<Self, IdentityError> {
        let certificate_der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| IdentityError::Certificate(e.to_string()))?
            .to_vec();
        let key = rcgen::KeyPair::from_pem(&private_key_pem)
            .map_err(|e| IdentityError::PrivateKey(e.to_string()))?;
        // The SubjectPublicKeyInfo in the certificate ends with the raw public
        // key; finding it there proves the key and certificate belong together
        // without a full X.509 parser.
        let public_key = key.public_key_raw();
        if !certificate_der.windows(public_key.len()).any(|w| w == public_key) {
            return Err(IdentityError::KeyMismatch);
        }
        Ok(Identity { device_id, room_secret, created_at, certificate_pem, private_key_pem, certificate_der })
    }

    /// Parses and validates an identity file's text.
    pub fn from_json(text: &str) -> Result<Self, IdentityError> {
        let file: IdentityFile =
            serde_json::from_str(text).map_err(|e| IdentityError::Syntax(e.to_string()))?;
        if file.format != FORMAT_NAME {
            return Err(IdentityError::WrongFormat(file.format));
        }
        if file.version != FORMAT_VERSION {
            return Err(IdentityError::UnsupportedVersion(file.version));
        }
        let device_id = DeviceId::parse(&file.device_id)?;
        if file.hostname != device_id.hostname() {
            return Err(IdentityError::HostnameMismatch {
                found: file.hostname,
                expected: device_id.hostname(),
            });
        }
        if file.room_secret.len() != 64 || file.room_secret.bytes().any(|b| b.is_ascii_uppercase()) {
            // Lowercase is what we write; anything else was edited by hand.
            RoomSecret::from_hex(&file.room_secret)?;
            return Err(IdentityError::RoomSecret(RoomSecretError::NotHex));
        }
        let room_secret = RoomSecret::from_hex(&file.room_secret)?;
        let created_at = OffsetDateTime::parse(&file.created_at, &Rfc3339)
            .map_err(|e| IdentityError::CreatedAt(e.to_string()))?;
        PrivateKeyDer::from_pem_slice(file.tls.private_key_pem.as_bytes())
            .map_err(|e| IdentityError::PrivateKey(e.to_string()))?;
        Self::assemble(device_id, room_secret, created_at, file.tls.certificate_pem, file.tls.private_key_pem)
    }

    /// The identity file's text (pretty JSON, trailing newline).
    pub fn to_json(&self) -> String {
        let file = IdentityFile {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            device_id: self.device_id.to_string(),
            hostname: self.device_id.hostname(),
            room_secret: self.room_secret.expose_hex(),
            created_at: self.created_at.format(&Rfc3339).unwrap_or_default(),
            tls: TlsFile {
                certificate_pem: self.certificate_pem.clone(),
                private_key_pem: self.private_key_pem.clone(),
            },
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads and validates an identity file.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| IdentityError::Read { path: path.display().to_string(), source })?;
        Self::from_json(&text)
    }

    /// Writes the identity file atomically with mode 0600 (it holds the key).
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        write_atomic(path, self.to_json().as_bytes(), 0o600)
            .map_err(|source| IdentityError::Write { path: path.display().to_string(), source })
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Host name without `.local`, e.g. `lookout-k7qd`.
    pub fn hostname(&self) -> String {
        self.device_id.hostname()
    }

    pub fn room_secret(&self) -> &RoomSecret {
        &self.room_secret
    }

    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn private_key_pem(&self) -> &str {
        &self.private_key_pem
    }

    /// The certificate in DER, as TLS sends it.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// SHA-256 of the certificate's DER, as colon-separated uppercase hex
    /// (the form browsers show in their certificate viewer).
    pub fn certificate_fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.certificate_der);
        digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }

    /// The first 8 bytes of the fingerprint: short enough for a label or a TXT record.
    pub fn certificate_fingerprint_short(&self) -> String {
        self.certificate_fingerprint()[..23].to_owned()
    }

    /// The URL the label's QR code holds: `https://<host>.local[:port]/#room=<secret>`.
    pub fn viewer_url(&self, port: Option<u16>) -> String {
        let port = match port {
            Some(443) | None => String::new(),
            Some(port) => format!(":{port}"),
        };
        format!("https://{}.local{port}/#room={}", self.hostname(), self.room_secret.expose_hex())
    }
}

fn self_signed_certificate(
    device_id: &DeviceId,
    now: OffsetDateTime,
) -> Result<(String, String), IdentityError> {
    let hostname = format!("{}.local", device_id.hostname());
    let names = vec![hostname.clone(), "localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| IdentityError::Certificate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Lookout camera");
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CERTIFICATE_VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| IdentityError::PrivateKey(e.to_string()))?;
    let certificate = params.self_signed(&key).map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok((certificate.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Identity {
        Identity::generate(DeviceId::parse("k7qd").unwrap()).unwrap()
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let identity = fresh();
        let again = Identity::from_json(&identity.to_json()).unwrap();
        assert_eq!(again.device_id(), identity.device_id());
        assert_eq!(again.room_secret(), identity.room_secret());
        assert_eq!(again.certificate_der(), identity.certificate_der());
        assert_eq!(again.private_key_pem(), identity.private_key_pem());
        assert_eq!(again.created_at(), identity.created_at());
    }

    #[test]
    fn fingerprint_has_browser_form() {
        let fp = fresh().certificate_fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.split(':').all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn viewer_url_carries_host_port_and_secret() {
        let identity = fresh();
        let secret = identity.room_secret().expose_hex();
        assert_eq!(identity.viewer_url(None), format!("https://lookout-k7qd.local/#room={secret}"));
        assert_eq!(
            identity.viewer_url(Some(8443)),
            format!("https://lookout-k7qd.local:8443/#room={secret}")
        );
    }

    fn edited(field: &str, value: serde_json::Value) -> Result<Identity, IdentityError> {
        let mut doc: serde_json::Value = serde_json::from_str(&fresh().to_json()).unwrap();
        doc[field] = value;
        Identity::from_json(&doc.to_string())
    }

    #[test]
    fn rejects_each_kind_of_damage() {
        assert!(matches!(Identity::from_json("{"), Err(IdentityError::Syntax(_))));
        assert!(matches!(edited("format", "other".into()), Err(IdentityError::WrongFormat(_))));
        assert!(matches!(edited("version", 2.into()), Err(IdentityError::UnsupportedVersion(2))));
        assert!(matches!(edited("device_id", "K7QD".into()), Err(IdentityError::DeviceId(_))));
        assert!(matches!(
            edited("hostname", "lookout-zzzz".into()),
            Err(IdentityError::HostnameMismatch { .. })
        ));
        assert!(matches!(edited("room_secret", "ab".into()), Err(IdentityError::RoomSecret(_))));
        assert!(matches!(edited("room_secret", "A".repeat(64).into()), Err(IdentityError::RoomSecret(_))));
        assert!(matches!(edited("created_at", "yesterday".into()), Err(IdentityError::CreatedAt(_))));
    }

    #[test]
    fn rejects_a_key_from_another_identity() {
        let mut doc: serde_json::Value = serde_json::from_str(&fresh().to_json()).unwrap();
        doc["tls"]["private_key_pem"] = fresh().private_key_pem().into();
        assert!(matches!(Identity::from_json(&doc.to_string()), Err(IdentityError::KeyMismatch)));
    }

    #[test]
    fn saved_file_is_private_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE_NAME);
        let identity = fresh();
        identity.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Identity::load(&path).unwrap().room_secret(), identity.room_secret());
    }
}
