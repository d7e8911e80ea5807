//! Identifiers: 128-bit client IDs the server assigns, 256-bit room IDs.
//!
//! Both travel as lowercase hex. A room ID in appliance mode *is* the room
//! secret, so [`RoomId`] never prints itself in `Debug`.

use std::fmt;

use rand::RngCore;
use serde::{Serialize, Serializer};

/// A client's 128-bit random ID, assigned by the server in `Hello`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId([u8; 16]);

impl ClientId {
    /// A fresh random ID. Client IDs are not secrets (everyone in a room sees
    /// them), they only need to be unique, so the thread-local CSPRNG serves.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        ClientId(bytes)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        ClientId(bytes)
    }

    /// Parses 32 hex characters (either case).
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        if text.len() != 32 {
            return None;
        }
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(ClientId(bytes))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

impl Serialize for ClientId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A room's 256-bit ID. In appliance mode the only room's ID is the room secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoomId([u8; 32]);

impl RoomId {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RoomId(bytes)
    }

    /// Parses exactly 64 hex characters (either case).
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        if text.len() != 64 {
            return None;
        }
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(RoomId(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ID as 64 lowercase hex characters, for the wire only.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomId(<redacted>)")
    }
}

impl Serialize for RoomId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_is_32_lowercase_hex_and_parses_back() {
        let id = ClientId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(ClientId::parse(&text), Some(id));
        assert_ne!(ClientId::random(), id);
    }

    #[test]
    fn room_id_wants_exactly_64_hex() {
        assert!(RoomId::parse(&"a".repeat(64)).is_some());
        assert!(RoomId::parse(&"A".repeat(64)).is_some());
        assert!(RoomId::parse(&"a".repeat(63)).is_none());
        assert!(RoomId::parse(&"a".repeat(65)).is_none());
        assert!(RoomId::parse(&"z".repeat(64)).is_none());
        assert!(RoomId::parse(&"é".repeat(32)).is_none());
    }

    #[test]
    fn room_id_debug_is_redacted() {
        let id = RoomId::parse(&"ab".repeat(32)).unwrap();
        assert!(!format!("{id:?}").contains("abab"));
    }
}
