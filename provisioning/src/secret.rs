//! The room secret: 256 random bits that are the key to the camera.
//!
//! Whoever knows it can watch. So the type never prints itself (its `Debug`
//! is redacted and it has no `Display`), it is compared in constant time, and
//! the only way to see the hex is to ask for it by name ([`RoomSecret::expose_hex`]).

use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

/// Length of a room secret in bytes (256 bits).
pub const ROOM_SECRET_LEN: usize = 32;

/// A 256-bit room secret.
#[derive(Clone)]
pub struct RoomSecret([u8; ROOM_SECRET_LEN]);

/// Why a text is not a room secret. Carries no part of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomSecretError {
    #[error("a room secret is 64 hexadecimal characters, got {0} characters")]
    WrongLength(usize),
    #[error("a room secret holds only the characters 0-9 and a-f")]
    NotHex,
}

/// The operating system's random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator is unavailable")]
pub struct RandomUnavailable;

impl RoomSecret {
    /// A fresh secret from the operating system's random number generator.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        let mut bytes = [0u8; ROOM_SECRET_LEN];
        ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| RandomUnavailable)?;
        Ok(RoomSecret(bytes))
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Self, RoomSecretError> {
        if text.len() != 2 * ROOM_SECRET_LEN {
            return Err(RoomSecretError::WrongLength(text.chars().count()));
        }
        let mut bytes = [0u8; ROOM_SECRET_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| RoomSecretError::NotHex)?;
        Ok(RoomSecret(bytes))
    }

    /// Wraps raw bytes (used by the signaling hub, which parses room IDs itself).
    pub fn from_bytes(bytes: [u8; ROOM_SECRET_LEN]) -> Self {
        RoomSecret(bytes)
    }

    /// The secret as 64 lowercase hex characters. Named so that every place
    /// that reveals the secret stands out in review.
    pub fn expose_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time comparison with candidate bytes of any length.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        candidate.len() == ROOM_SECRET_LEN && bool::from(self.0.ct_eq(candidate))
    }
}

impl PartialEq for RoomSecret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for RoomSecret {}

impl std::fmt::Debug for RoomSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_is_lowercase() {
        let secret = RoomSecret::generate().unwrap();
        let hex = secret.expose_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(RoomSecret::from_hex(&hex).unwrap(), secret);
        assert_eq!(RoomSecret::from_hex(&hex.to_uppercase()).unwrap(), secret);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = RoomSecret::generate().unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&secret.expose_hex()[..8]));
    }

    #[test]
    fn two_secrets_differ() {
        assert_ne!(RoomSecret::generate().unwrap(), RoomSecret::generate().unwrap());
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(RoomSecret::from_hex("abc"), Err(RoomSecretError::WrongLength(3)));
        let not_hex = "g".repeat(64);
        assert_eq!(RoomSecret::from_hex(&not_hex), Err(RoomSecretError::NotHex));
    }

    #[test]
    fn matches_only_equal_bytes_of_the_right_length() {
        let secret = RoomSecret::from_bytes([7; 32]);
        assert!(secret.matches(&[7; 32]));
        assert!(!secret.matches(&[7; 31]));
        let mut other = [7u8; 32];
        other[31] = 8;
        assert!(!secret.matches(&other));
    }
}
