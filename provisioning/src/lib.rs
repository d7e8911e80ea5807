//! Lookout device identity: the format the factory writes and the appliance reads.
//!
//! A camera is made *this* camera by one small file: its device ID, its host
//! name, its room secret (the key printed on the label) and its TLS identity.
//! This crate owns that format; the appliance reads identities only through it,
//! so the format is parsed in exactly one place.
//!
//! - [`identity`]: the [`Identity`] type, generation, validation, (de)serialisation.
//! - [`secret`]: the [`RoomSecret`], a 256-bit key that never prints itself.
//! - [`device_id`]: short human-friendly device IDs.
//! - [`atomic_file`]: crash-safe file writes (write, fsync, rename).
//! - [`settings_file`]: the appliance's `settings.toml`, read against a clap command line.
//!
//! With the `factory` feature (on by default; the appliance builds without it):
//! - [`batch`]: making identities and their labels, one folder per camera.
//! - [`label`]: the printed label (QR code, name, secret, fingerprint) as SVG and PNG.
//! - [`disk_image`]: writing an identity into an SD image's boot partition and reading it back.
//! - [`wifi`]: Wi-Fi credentials and the `wpa_supplicant` file they become.
//!
//! The `lookout-provision` tool (`src/bin/lookout-provision.rs`) drives these.

pub mod atomic_file;
#[cfg(feature = "factory")]
pub mod batch;
pub mod device_id;
#[cfg(feature = "factory")]
pub mod disk_image;
#[cfg(feature = "factory")]
mod fat_dot_entries;
#[cfg(feature = "factory")]
mod font;
pub mod identity;
#[cfg(feature = "factory")]
pub mod label;
pub mod secret;
pub mod settings_file;
#[cfg(feature = "factory")]
mod vector;
#[cfg(feature = "factory")]
pub mod wifi;

pub use device_id::DeviceId;
pub use identity::{Identity, IdentityError, FORMAT_VERSION, IDENTITY_FILE_NAME};
pub use secret::RoomSecret;
