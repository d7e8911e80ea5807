//! What a person who runs `lookout` in a terminal sees: the viewer URL with
//! the room secret, and the same URL as a QR code to scan with a phone.
//!
//! The banner holds the secret, so it is printed only to an interactive
//! terminal, never to a log or a service's journal.

use std::io::IsTerminal;
use std::net::SocketAddr;

use lookout_provisioning::Identity;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

/// Whether the banner may be shown: stdout is a terminal and systemd did not start us.
pub fn may_show() -> bool {
    std::io::stdout().is_terminal() && !crate::settings::under_systemd()
}

/// The URL for a browser on this machine (`localhost` is in the certificate).
pub fn local_url(identity: &Identity, listen: SocketAddr) -> String {
    format!("https://localhost:{}/#room={}", listen.port(), identity.room_secret().expose_hex())
}

/// The banner text.
pub fn render(identity: &Identity, listen: SocketAddr) -> String {
    let lan_url = identity.viewer_url(Some(listen.port()));
    let mut text = format!(
        "\nLookout {id} is running.\n\n  On this machine:  {local}\n  On the network:   {lan_url}\n  Certificate SHA-256: {fp}\n\n",
        id = identity.device_id(),
        local = local_url(identity, listen),
        fp = identity.certificate_fingerprint(),
    );
    match QrCode::new(lan_url.as_bytes()) {
        Ok(code) => {
            text.push_str(
                &code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build(),
            );
            text.push_str("\n\nScan the code with a phone on the same network, or open the link.\n");
        }
        Err(e) => text.push_str(&format!("(no QR code: {e})\n")),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_provisioning::DeviceId;

    #[test]
    fn banner_has_both_urls_and_a_qr_code() {
        let identity = Identity::generate(DeviceId::parse("k7qd").unwrap()).unwrap();
        let text = render(&identity, "0.0.0.0:8443".parse().unwrap());
        let secret = identity.room_secret().expose_hex();
        assert!(text.contains(&format!("https://localhost:8443/#room={secret}")));
        assert!(text.contains(&format!("https://lookout-k7qd.local:8443/#room={secret}")));
        assert!(text.contains('▀') || text.contains('▄'), "QR code drawn with half blocks");
    }
}
