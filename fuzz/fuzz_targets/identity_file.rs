//! The identity file (state folder or boot partition): any content is a
//! valid identity or an error, never a panic; what loads writes back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_provisioning::Identity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(identity) = Identity::from_json(text) {
        let again =
            Identity::from_json(&identity.to_json()).expect("a loaded identity saves and loads again");
        assert_eq!(again.room_secret(), identity.room_secret());
    }
});
