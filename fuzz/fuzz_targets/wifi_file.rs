//! The Wi-Fi settings (`lookout/wifi.conf` on the boot partition): any
//! file content is summarised without a panic, and any settings that are
//! accepted (country, network name, passphrase) are written to a file that
//! reads back as the same network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_provisioning::wifi::{Country, Passphrase, Security, Ssid, WifiNetwork, WifiSummary};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = WifiSummary::of(&text).to_string();

    // The same bytes as settings: country, network name, passphrase, one a line.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(country), Some(ssid), passphrase) = (parts.next(), parts.next(), parts.next()) else { return };
    let Ok(country) = Country::parse(&String::from_utf8_lossy(country)) else { return };
    let Ok(ssid) = Ssid::new(ssid.to_vec()) else { return };
    let security = match passphrase.map(|p| Passphrase::new(String::from_utf8_lossy(p).into_owned())) {
        None => Security::Open,
        Some(Ok(passphrase)) => Security::Personal(passphrase),
        Some(Err(_)) => return,
    };
    let open = matches!(security, Security::Open);
    let network = WifiNetwork { country, ssid, security, hidden: data.len() % 2 == 0 };
    match WifiSummary::of(&network.to_wpa_supplicant_conf()) {
        WifiSummary::Lookout { network: name, open: read_open, hidden, .. } => {
            assert_eq!(name, network.ssid.to_string());
            assert_eq!(read_open, open);
            assert_eq!(hidden, network.hidden);
        }
        WifiSummary::Other => panic!("a file written for {network:?} does not read back"),
    }
});
