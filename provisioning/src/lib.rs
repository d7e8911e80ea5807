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

pub mod atomic_file;
pub mod device_id;
pub mod identity;
pub mod secret;

pub use device_id::DeviceId;
pub use identity::{Identity, IdentityError, FORMAT_VERSION, IDENTITY_FILE_NAME};
pub use secret::RoomSecret;
