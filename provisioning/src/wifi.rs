//! Wi-Fi credentials for a camera, and the `wpa_supplicant` configuration
//! they become.
//!
//! The SD image starts `wpa_supplicant` on `wlan0` with
//! `/boot/firmware/lookout/wifi.conf` when that file exists (see
//! `yocto-layer/README.md`); `lookout-provision write-image` writes it to
//! `lookout/wifi.conf` on the boot partition, beside the identity.
//!
//! Everything is checked here, before an image is touched: the country code,
//! the network name (1 to 32 bytes) and the passphrase (8 to 63 printable
//! ASCII characters, as IEEE 802.11 defines it). The file this module writes
//! never quotes user text: `wpa_supplicant` cuts a quoted value at a `#`
//! after an inner `"`, so the network name and the SAE password are written
//! as hex and the WPA2 key as its derived PSK. Any SSID or passphrase is
//! therefore safe.

use std::fmt;
use std::num::NonZeroU32;

/// Name of the file on the boot partition, beside the identity.
pub const WIFI_FILE_NAME: &str = "wifi.conf";

/// The marker line that says a file was written by this module.
const HEADER: &str = "# Lookout Wi-Fi settings, written by lookout-provision.";

/// PBKDF2 rounds of the WPA2 passphrase-to-PSK mapping (IEEE 802.11i H.4).
const PSK_ROUNDS: u32 = 4096;

/// What is wrong with the Wi-Fi settings given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WifiError {
    #[error("the Wi-Fi country must be a two-letter code such as GB, US or DE (got {0:?})")]
    Country(String),
    #[error("the Wi-Fi network name must be 1 to 32 bytes long (got {0} bytes)")]
    SsidLength(usize),
    #[error("the Wi-Fi passphrase must be 8 to 63 characters long (got {0})")]
    PassphraseLength(usize),
    #[error(
        "the Wi-Fi passphrase may only hold printable ASCII characters (letters, digits, spaces, punctuation)"
    )]
    PassphraseCharacters,
}

/// An ISO 3166-1 alpha-2 country code: it selects the radio channels and
/// power limits the camera may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country([u8; 2]);

impl Country {
    /// Parses `gb` or `GB`.
    pub fn parse(text: &str) -> Result<Country, WifiError> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(WifiError::Country(text.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network name: 1 to 32 arbitrary bytes (usually UTF-8 text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssid(Vec<u8>);

impl Ssid {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Ssid, WifiError> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > 32 {
            return Err(WifiError::SsidLength(bytes.len()));
        }
        Ok(Ssid(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Ssid {
    /// The name for people: text as text, anything unprintable escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", String::from_utf8_lossy(&self.0).escape_debug())
    }
}

/// A WPA2/WPA3 personal passphrase. Never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(String);

impl Passphrase {
    pub fn new(text: impl Into<String>) -> Result<Passphrase, WifiError> {
        let text = text.into();
        if !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(WifiError::PassphraseCharacters);
        }
        if !(8..=63).contains(&text.len()) {
            return Err(WifiError::PassphraseLength(text.len()));
        }
        Ok(Passphrase(text))
    }

    /// The 256-bit WPA2 pre-shared key: PBKDF2-HMAC-SHA1 of the passphrase
    /// salted with the network name (IEEE 802.11i, H.4).
    pub fn wpa2_psk(&self, ssid: &Ssid) -> [u8; 32] {
        let mut psk = [0u8; 32];
        let rounds = NonZeroU32::new(PSK_ROUNDS).unwrap_or(NonZeroU32::MIN);
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA1,
            rounds,
            ssid.as_bytes(),
            self.0.as_bytes(),
            &mut psk,
        );
        psk
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<hidden>)")
    }
}

/// How the network is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// No passphrase (an open network).
    Open,
    /// WPA2 or WPA3 personal (or both, as most routers run them).
    Personal(Passphrase),
}

/// The network a camera joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WifiNetwork {
    pub country: Country,
    pub ssid: Ssid,
    pub security: Security,
    /// The network does not broadcast its name, so it has to be probed for.
    pub hidden: bool,
}

impl WifiNetwork {
    /// The `wpa_supplicant.conf` text for this network.
    ///
    /// A personal network gets the WPA2 key (`psk`) and the WPA3 password
    /// (`sae_password`), with protected management frames optional, so the
    /// camera joins WPA2-only, WPA2/WPA3 and WPA3-only networks alike.
    pub fn to_wpa_supplicant_conf(&self) -> String {
        let mut text = format!(
            "{HEADER}\n\
             # wpa_supplicant reads it on the camera (lookout-wifi.service). The network\n\
             # name and the passphrase are hex-encoded, so any character in them is safe.\n\
             # network: {name}\n\
             country={country}\n\
             network={{\n\
             \tssid={ssid}\n",
            name = self.ssid,
            country = self.country,
            ssid = hex::encode(self.ssid.as_bytes()),
        );
        if self.hidden {
            text.push_str("\tscan_ssid=1\n");
        }
        match &self.security {
            Security::Open => text.push_str("\tkey_mgmt=NONE\n"),
            Security::Personal(passphrase) => {
                text.push_str("\tkey_mgmt=WPA-PSK WPA-PSK-SHA256 SAE\n\tieee80211w=1\n");
                text.push_str(&format!("\tpsk={}\n", hex::encode(passphrase.wpa2_psk(&self.ssid))));
                text.push_str(&format!("\tsae_password={}\n", hex::encode(passphrase.0.as_bytes())));
            }
        }
        text.push_str("}\n");
        text
    }
}

/// What a `wifi.conf` found on an image says, for people (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WifiSummary {
    /// Written by this module: the facts it holds.
    Lookout { country: String, network: String, open: bool, hidden: bool },
    /// Some other `wpa_supplicant.conf`, e.g. written by hand.
    Other,
}

impl WifiSummary {
    /// Reads the facts back from a file this module wrote.
    pub fn of(conf: &str) -> WifiSummary {
        if !conf.starts_with(HEADER) {
            return WifiSummary::Other;
        }
        let value = |key: &str| {
            conf.lines().map(str::trim).find_map(|line| line.strip_prefix(key)).map(str::to_owned)
        };
        let network = value("ssid=")
            .and_then(|hex_ssid| hex::decode(hex_ssid).ok())
            .and_then(|bytes| Ssid::new(bytes).ok())
            .map(|ssid| ssid.to_string());
        match (value("country="), network) {
            (Some(country), Some(network)) => WifiSummary::Lookout {
                country,
                network,
                open: value("key_mgmt=").as_deref() == Some("NONE"),
                hidden: value("scan_ssid=").as_deref() == Some("1"),
            },
            _ => WifiSummary::Other,
        }
    }
}

impl fmt::Display for WifiSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WifiSummary::Lookout { country, network, open, hidden } => write!(
                f,
                "network {network}, country {country}, {security}{hidden}",
                security = if *open { "open" } else { "WPA2/WPA3 personal" },
                hidden = if *hidden { ", hidden" } else { "" },
            ),
            WifiSummary::Other => {
                f.write_str("a wpa_supplicant configuration not written by lookout-provision")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn personal(ssid: &str, passphrase: &str) -> WifiNetwork {
        WifiNetwork {
            country: Country::parse("gb").unwrap(),
            ssid: Ssid::new(ssid).unwrap(),
            security: Security::Personal(Passphrase::new(passphrase).unwrap()),
            hidden: false,
        }
    }

    #[test]
    fn psk_matches_the_ieee_802_11i_test_vectors() {
        // IEEE 802.11i-2004, H.4.2.
        let cases = [
            ("password", "IEEE", "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"),
            (
                "ThisIsAPassword",
                "ThisIsASSID",
                "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af",
            ),
        ];
        for (passphrase, ssid, psk) in cases {
            let derived = Passphrase::new(passphrase).unwrap().wpa2_psk(&Ssid::new(ssid).unwrap());
            assert_eq!(hex::encode(derived), psk, "{passphrase} / {ssid}");
        }
    }

    #[test]
    fn country_codes_are_two_letters() {
        assert_eq!(Country::parse("de").unwrap().as_str(), "DE");
        assert_eq!(Country::parse("US").unwrap().to_string(), "US");
        for bad in ["", "G", "GBR", "G1", "ü1", "  "] {
            assert_eq!(Country::parse(bad), Err(WifiError::Country(bad.to_owned())), "{bad:?}");
        }
    }

    #[test]
    fn ssid_is_one_to_32_bytes() {
        assert!(Ssid::new("x").is_ok());
        assert!(Ssid::new("x".repeat(32)).is_ok());
        assert_eq!(Ssid::new(""), Err(WifiError::SsidLength(0)));
        assert_eq!(Ssid::new("x".repeat(33)), Err(WifiError::SsidLength(33)));
        // 11 characters, 33 bytes in UTF-8.
        assert_eq!(Ssid::new("ü".repeat(16) + "x"), Err(WifiError::SsidLength(33)));
    }

    #[test]
    fn passphrase_is_8_to_63_printable_ascii_characters() {
        assert!(Passphrase::new("12345678").is_ok());
        assert!(Passphrase::new("~".repeat(63)).is_ok());
        assert!(Passphrase::new("a b\"c#d\\e").is_ok());
        assert_eq!(Passphrase::new("1234567"), Err(WifiError::PassphraseLength(7)));
        assert_eq!(Passphrase::new("x".repeat(64)), Err(WifiError::PassphraseLength(64)));
        assert_eq!(Passphrase::new("pässwörd"), Err(WifiError::PassphraseCharacters));
        assert_eq!(Passphrase::new("line\nbreak"), Err(WifiError::PassphraseCharacters));
        assert_eq!(format!("{:?}", Passphrase::new("supersecret").unwrap()), "Passphrase(<hidden>)");
    }

    #[test]
    fn configuration_quotes_nothing_the_user_typed() {
        let conf = personal("Caf\u{e9} \"5G\" #2", "pa ss\"#word").to_wpa_supplicant_conf();
        let network_block: Vec<&str> = conf.lines().skip_while(|l| !l.starts_with("network={")).collect();
        assert!(network_block.iter().all(|line| !line.contains('"')), "{conf}");
        assert!(conf.contains("country=GB\n"), "{conf}");
        assert!(conf.contains(&format!("\tssid={}\n", hex::encode("Caf\u{e9} \"5G\" #2"))), "{conf}");
        assert!(conf.contains(&format!("\tsae_password={}\n", hex::encode("pa ss\"#word"))), "{conf}");
        assert!(!conf.contains("scan_ssid"), "{conf}");
        assert!(conf.ends_with("}\n"));
    }

    #[test]
    fn open_and_hidden_networks() {
        let network = WifiNetwork {
            country: Country::parse("us").unwrap(),
            ssid: Ssid::new("Guest").unwrap(),
            security: Security::Open,
            hidden: true,
        };
        let conf = network.to_wpa_supplicant_conf();
        assert!(conf.contains("\tkey_mgmt=NONE\n") && conf.contains("\tscan_ssid=1\n"), "{conf}");
        assert!(!conf.contains("psk"), "{conf}");
        assert_eq!(WifiSummary::of(&conf).to_string(), "network \"Guest\", country US, open, hidden");
    }

    #[test]
    fn summary_reads_back_the_facts_and_no_secret() {
        let conf = personal("Home \"net\"", "correct horse").to_wpa_supplicant_conf();
        let summary = WifiSummary::of(&conf);
        assert_eq!(
            summary,
            WifiSummary::Lookout {
                country: "GB".into(),
                network: "\"Home \\\"net\\\"\"".into(),
                open: false,
                hidden: false
            }
        );
        assert!(!summary.to_string().contains("horse"));
        assert_eq!(WifiSummary::of("country=GB\nnetwork={\n ssid=\"x\"\n}\n"), WifiSummary::Other);
    }
}
