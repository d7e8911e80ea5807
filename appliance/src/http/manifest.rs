//! The web app manifest (`/manifest.webmanifest`): lets a phone add the
//! camera to its home screen as an app named after the camera's host name.
//!
//! It holds no secret: the app opens `/`, where the page uses the secret the
//! device remembered (docs/viewer.md).

use super::DeviceInfo;

/// The manifest's media type (W3C Web Application Manifest).
pub const CONTENT_TYPE: &str = "application/manifest+json";

/// The manifest for this camera.
pub fn manifest(info: &DeviceInfo) -> serde_json::Value {
    let name = info.hostname.strip_suffix(".local").unwrap_or(&info.hostname);
    serde_json::json!({
        "name": name,
        "short_name": name,
        "description": format!("Live picture of the Lookout camera {}", info.device_id),
        "id": "/",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "background_color": "#000000",
        "theme_color": "#000000",
        "icons": [
            { "src": "/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any" },
            { "src": "/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any" },
            { "src": "/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable" },
            { "src": "/icon.svg", "sizes": "any", "type": "image/svg+xml" },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeviceInfo {
        DeviceInfo {
            name: "Lookout f1-0001".into(),
            device_id: "f1-0001".into(),
            hostname: "lookout-f1-0001.local".into(),
            version: "0",
            certificate_sha256: "ab".into(),
            mode: "appliance",
            identity: crate::identity_store::IdentityOrigin::State,
        }
    }

    #[test]
    fn names_the_app_after_the_host_and_lists_embedded_icons() {
        let manifest = manifest(&info());
        assert_eq!(manifest["name"], "lookout-f1-0001");
        assert_eq!(manifest["short_name"], "lookout-f1-0001");
        assert_eq!(manifest["start_url"], "/");
        for icon in manifest["icons"].as_array().expect("icons") {
            let src = icon["src"].as_str().expect("src");
            assert!(super::super::assets::find(src).is_some(), "{src} is embedded");
        }
    }
}
