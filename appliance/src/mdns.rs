//! mDNS: how phones and laptops on the LAN find the camera by name.
//!
//! The camera answers A and AAAA queries for `lookout-<id>.local` and
//! advertises one DNS-SD service, `_https._tcp`, instance `Lookout <id>`,
//! on its HTTPS port, with TXT `path=/`, `id=<id>` and `fp=<short
//! certificate fingerprint>`. The room secret is never announced.
//!
//! `mdns-sd` does the protocol in its own thread. Its automatic address
//! mode publishes every address of every interface (IPv4 and IPv6) except
//! loopback, and follows changes (DHCP renewals, interfaces going up or
//! down). The camera also browses `_https._tcp` for other Lookout cameras
//! and keeps them in [`NearbyCameras`] for `/api/info`. See `docs/mdns.md`.

use lookout_provisioning::Identity;
use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::nearby::{NearbyCamera, NearbyCameras};

/// The DNS-SD service type the camera advertises.
pub const SERVICE_TYPE: &str = "_https._tcp.local.";

/// Why the camera could not announce itself.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct MdnsError(#[from] mdns_sd::Error);

/// The running announcement; dropping it says goodbye and stops the daemon.
pub struct Mdns {
    daemon: ServiceDaemon,
    fullname: String,
}

/// The TXT record: where the page is, which camera, which certificate.
pub fn txt_properties(identity: &Identity) -> Vec<(&'static str, String)> {
    vec![
        ("path", "/".to_owned()),
        ("id", identity.device_id().to_string()),
        ("fp", identity.certificate_fingerprint_short()),
    ]
}

impl Mdns {
    /// Starts answering for `lookout-<id>.local`, advertising the service on
    /// `port`, and putting the other cameras it sees into `nearby`.
    pub fn advertise(identity: &Identity, port: u16, nearby: NearbyCameras) -> Result<Mdns, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        // Loopback addresses mean nothing to another machine.
        daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        let host = format!("{}.local.", identity.hostname());
        let instance = format!("Lookout {}", identity.device_id());
        let txt = txt_properties(identity);
        let info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, (), port, &txt[..])?.enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        log_events(&daemon)?;
        daemon.register(info)?;
        tracing::info!(host = %host, service = %fullname, port, "announcing over mDNS");
        watch_nearby(&daemon, identity.device_id().to_string(), nearby)?;
        Ok(Mdns { daemon, fullname })
    }
}

/// Browses for other cameras from a small thread that ends with the daemon.
fn watch_nearby(daemon: &ServiceDaemon, own_id: String, nearby: NearbyCameras) -> Result<(), MdnsError> {
    let events = daemon.browse(SERVICE_TYPE)?;
    let spawned = std::thread::Builder::new().name("mdns-browse".to_owned()).spawn(move || {
        while let Ok(event) = events.recv() {
            match event {
                ServiceEvent::ServiceResolved(service) => {
                    let id = service.txt_properties.get_property_val_str("id");
                    let fingerprint = service.txt_properties.get_property_val_str("fp");
                    match NearbyCamera::from_announcement(id, fingerprint, service.port) {
                        Some(camera) if camera.device_id != own_id => {
                            tracing::debug!(camera = %camera.device_id, url = %camera.url, "mDNS: another camera");
                            nearby.insert(&service.fullname, camera);
                        }
                        _ => {}
                    }
                }
                ServiceEvent::ServiceRemoved(_, fullname) => nearby.remove(&fullname),
                _ => {}
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "mDNS: cannot start the thread that looks for other cameras");
    }
    Ok(())
}

/// Starts the announcement when `enabled`. A failure is logged, not fatal:
/// the camera still works by address.
pub fn start_if_enabled(
    enabled: bool,
    identity: &Identity,
    port: u16,
    nearby: NearbyCameras,
) -> Option<Mdns> {
    if !enabled {
        return None;
    }
    match Mdns::advertise(identity, port, nearby) {
        Ok(mdns) => Some(mdns),
        Err(e) => {
            tracing::warn!(error = %e, "cannot announce the camera over mDNS; it is reachable by address only");
            None
        }
    }
}

/// Logs what the daemon reports (errors, address changes, renames after a
/// name conflict) from a small thread that ends with the daemon.
fn log_events(daemon: &ServiceDaemon) -> Result<(), MdnsError> {
    let events = daemon.monitor()?;
    let spawned = std::thread::Builder::new().name("mdns-log".to_owned()).spawn(move || {
        while let Ok(event) = events.recv() {
            match event {
                DaemonEvent::Error(e) => tracing::warn!(error = %e, "mDNS"),
                DaemonEvent::IpAdd(ip) => tracing::debug!(%ip, "mDNS: address added"),
                DaemonEvent::IpDel(ip) => tracing::debug!(%ip, "mDNS: address removed"),
                DaemonEvent::NameChange(change) => tracing::warn!(
                    original = %change.original,
                    new = %change.new_name,
                    "mDNS: name conflict on the network, renamed"
                ),
                _ => {}
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "mDNS: cannot start the logging thread");
    }
    Ok(())
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // Goodbye packets tell caches to forget us at once; best effort.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(std::time::Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_provisioning::DeviceId;

    #[test]
    fn txt_record_names_the_camera_and_never_the_secret() {
        let identity = Identity::generate(DeviceId::parse("k7qd").unwrap()).unwrap();
        let txt = txt_properties(&identity);
        assert_eq!(txt[0], ("path", "/".to_owned()));
        assert_eq!(txt[1], ("id", "k7qd".to_owned()));
        assert_eq!(txt[2].1, identity.certificate_fingerprint_short());
        let secret = identity.room_secret().expose_hex();
        assert!(txt.iter().all(|(_, v)| !v.contains(&secret[..16])));
    }
}
