//! The `Host` header the plain-HTTP redirect reads: no panic, and the host
//! it keeps is the start of the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout::http::redirect::{host_without_port, redirect};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(host) = host_without_port(text) {
            assert!(text.starts_with(host));
        }
    }
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let request = http::Request::builder().uri("/").header(http::header::HOST, value).body(());
        if let Ok(request) = request {
            let response = redirect(&request, 8443, "lookout-k7qd.local");
            assert_eq!(response.status(), http::StatusCode::PERMANENT_REDIRECT);
        }
    }
});
