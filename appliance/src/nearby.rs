//! Other Lookout cameras on the LAN, as mDNS shows them: `/api/info` lists
//! them so the viewer can link to them.
//!
//! Everything here comes from the network and is checked before it is kept:
//! a service counts as a camera only if its TXT record has a valid device
//! `id` and a certificate fingerprint `fp` of the form the camera announces
//! (see [`crate::mdns::txt_properties`]). The link is built from the id and
//! the port, never copied from the announcement, and the list is bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use lookout_provisioning::DeviceId;

/// At most this many other cameras are remembered (a LAN could announce
/// any number of services; a home has a handful of cameras).
pub const MAX_NEARBY: usize = 32;

/// One other camera.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NearbyCamera {
    pub device_id: String,
    pub name: String,
    /// Its page, without the secret: `https://lookout-<id>.local[:port]/`.
    pub url: String,
    /// The short certificate fingerprint it announces (as on its label).
    pub fingerprint: String,
}

impl NearbyCamera {
    /// The camera a resolved `_https._tcp` service describes, if it is one.
    pub fn from_announcement(id: Option<&str>, fingerprint: Option<&str>, port: u16) -> Option<NearbyCamera> {
        let id = DeviceId::parse(id?).ok()?;
        let fingerprint = fingerprint?;
        if !is_short_fingerprint(fingerprint) || port == 0 {
            return None;
        }
        let port = if port == 443 { String::new() } else { format!(":{port}") };
        Some(NearbyCamera {
            name: format!("Lookout {id}"),
            url: format!("https://lookout-{id}.local{port}/"),
            fingerprint: fingerprint.to_owned(),
            device_id: id.to_string(),
        })
    }
}

/// `AB:CD:...`: the first 8 bytes of a SHA-256, as `Identity::certificate_fingerprint_short`.
fn is_short_fingerprint(text: &str) -> bool {
    text.len() == 23
        && text.split(':').count() == 8
        && text.split(':').all(|byte| byte.len() == 2 && byte.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The cameras seen, shared between the mDNS thread and the HTTP handlers.
#[derive(Debug, Clone, Default)]
pub struct NearbyCameras {
    /// By mDNS full name, which is what a removal names.
    seen: Arc<RwLock<BTreeMap<String, NearbyCamera>>>,
}

impl NearbyCameras {
    /// Records `camera` under its service's full name; ignored when the list is full.
    pub fn insert(&self, fullname: &str, camera: NearbyCamera) {
        let Ok(mut seen) = self.seen.write() else { return };
        if seen.len() < MAX_NEARBY || seen.contains_key(fullname) {
            seen.insert(fullname.to_owned(), camera);
        }
    }

    /// Forgets the service `fullname` (it said goodbye or expired).
    pub fn remove(&self, fullname: &str) {
        if let Ok(mut seen) = self.seen.write() {
            seen.remove(fullname);
        }
    }

    /// The cameras, ordered by device ID, each once.
    pub fn list(&self) -> Vec<NearbyCamera> {
        let Ok(seen) = self.seen.read() else { return Vec::new() };
        let mut cameras: Vec<NearbyCamera> = seen.values().cloned().collect();
        cameras.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        cameras.dedup_by(|a, b| a.device_id == b.device_id);
        cameras
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "AB:CD:EF:01:23:45:67:89";

    #[test]
    fn only_well_formed_announcements_are_cameras() {
        let camera = NearbyCamera::from_announcement(Some("k7qd"), Some(FP), 8443).unwrap();
        assert_eq!(camera.url, "https://lookout-k7qd.local:8443/");
        assert_eq!(camera.name, "Lookout k7qd");
        assert_eq!(
            NearbyCamera::from_announcement(Some("k7qd"), Some(FP), 443).unwrap().url,
            "https://lookout-k7qd.local/"
        );
        for (id, fp, port) in [
            (None, Some(FP), 443),
            (Some("k7qd"), None, 443),
            (Some("K7QD/../x"), Some(FP), 443),
            (Some("k7qd"), Some("AB:CD"), 443),
            (Some("k7qd"), Some("AB:CD:EF:01:23:45:67:8Z"), 443),
            (Some("k7qd"), Some("<script>:CD:EF:01:23:45:67:89"), 443),
            (Some("k7qd"), Some(FP), 0),
        ] {
            assert_eq!(NearbyCamera::from_announcement(id, fp, port), None, "{id:?} {fp:?} {port}");
        }
    }

    #[test]
    fn the_list_is_bounded_sorted_and_forgets_removed_services() {
        let nearby = NearbyCameras::default();
        let camera = |id: &str| NearbyCamera::from_announcement(Some(id), Some(FP), 8443).unwrap();
        nearby.insert("Lookout b._https._tcp.local.", camera("bbbb"));
        nearby.insert("Lookout a._https._tcp.local.", camera("aaaa"));
        // The same camera under a second name (say, after a rename) is listed once.
        nearby.insert("Lookout a (2)._https._tcp.local.", camera("aaaa"));
        let ids: Vec<String> = nearby.list().into_iter().map(|c| c.device_id).collect();
        assert_eq!(ids, ["aaaa", "bbbb"]);
        nearby.remove("Lookout b._https._tcp.local.");
        assert_eq!(nearby.list().len(), 1);

        for i in 0..100 {
            nearby.insert(&format!("flood {i}._https._tcp.local."), camera("cccc"));
        }
        assert_eq!(nearby.seen.read().unwrap().len(), MAX_NEARBY);
    }
}
