//! Device IDs: short, human-friendly names for one camera (`k7qd` in `lookout-k7qd`).
//!
//! Lowercase RFC 4648 base32 letters and digits (`a-z`, `2-7`): no `0/o` or
//! `1/l` confusion, valid in DNS labels, easy to read off a label.

use rand::Rng;

/// Characters a device ID is made of.
pub const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Length of a generated random part.
pub const RANDOM_LEN: usize = 4;
/// Longest accepted ID (prefix plus random part).
pub const MAX_LEN: usize = 12;

/// A validated device ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

/// Why a text is not a device ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("a device ID has {min} to {max} characters, got {0}", min = RANDOM_LEN, max = MAX_LEN)]
    WrongLength(usize),
    #[error("a device ID holds only the characters a-z and 2-7, got {0:?}")]
    BadCharacter(char),
}

impl DeviceId {
    /// A random ID: `prefix` (validated) followed by [`RANDOM_LEN`] random characters.
    pub fn generate(prefix: &str) -> Result<Self, DeviceIdError> {
        let mut rng = rand::rng();
        let mut id = prefix.to_owned();
        for _ in 0..RANDOM_LEN {
            id.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
        }
        DeviceId::parse(&id)
    }

    /// Validates an ID read from a file or typed by a person.
    pub fn parse(text: &str) -> Result<Self, DeviceIdError> {
        let len = text.chars().count();
        if !(RANDOM_LEN..=MAX_LEN).contains(&len) {
            return Err(DeviceIdError::WrongLength(len));
        }
        if let Some(bad) = text.chars().find(|c| !c.is_ascii() || !ALPHABET.contains(&(*c as u8))) {
            return Err(DeviceIdError::BadCharacter(bad));
        }
        Ok(DeviceId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host name the camera announces over mDNS, without `.local`.
    pub fn hostname(&self) -> String {
        format!("lookout-{}", self.0)
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_prefixed() {
        for _ in 0..100 {
            let id = DeviceId::generate("ab").unwrap();
            assert_eq!(id.as_str().len(), 2 + RANDOM_LEN);
            assert!(id.as_str().starts_with("ab"));
            assert_eq!(DeviceId::parse(id.as_str()).unwrap(), id);
        }
    }

    #[test]
    fn rejects_confusable_and_upper_case_characters() {
        assert_eq!(DeviceId::parse("ab0c"), Err(DeviceIdError::BadCharacter('0')));
        assert_eq!(DeviceId::parse("abCd"), Err(DeviceIdError::BadCharacter('C')));
        assert_eq!(DeviceId::parse("abc"), Err(DeviceIdError::WrongLength(3)));
        assert!(DeviceId::generate("UPPER").is_err());
    }

    #[test]
    fn hostname_is_lookout_dash_id() {
        assert_eq!(DeviceId::parse("k7qd").unwrap().hostname(), "lookout-k7qd");
    }
}
