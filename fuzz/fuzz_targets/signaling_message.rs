//! A WebSocket message from a client: parsing never panics, and a signal
//! that parses is within the nesting limit and is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout::signaling::protocol::{nesting_depth, MAX_SIGNAL_DEPTH};
use lookout::signaling::PeerMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(PeerMessage::Signal { signal, .. }) = PeerMessage::parse(data) {
        assert!(nesting_depth(signal.get()) <= MAX_SIGNAL_DEPTH);
    }
});
