//! The real `lookout` binary with a factory identity on a (fake) boot
//! partition: it is imported into the state folder and the label's URL
//! works. With a damaged identity file the camera serves the
//! needs-provisioning page and never makes up a new secret.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lookout_provisioning::{DeviceId, Identity, IDENTITY_FILE_NAME};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `lookout` process and the address it serves on.
struct Lookout {
    /// Held so the process lives as long as the test needs it.
    _process: common::LookoutProcess,
    addr: std::net::SocketAddr,
}

impl Lookout {
    /// Starts `lookout` on 127.0.0.1 and waits for the log line that carries
    /// `marker` and the bound address.
    fn start(state: &Path, boot: &Path, marker: &'static str) -> Lookout {
        let process = common::LookoutProcess::spawn(common::server_only_command(state, boot));
        let addr = process.wait_for_addr(marker);
        Lookout { _process: process, addr }
    }
}

/// What an HTTPS GET returned.
struct Got {
    status: u16,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn get(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>, path: &str) -> Got {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("TLS handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(common::PROMPT, tls.read_to_end(&mut raw)).await.expect("answer in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    Got { status, body: body.to_owned() }
}

/// Accepts any certificate: the needs-provisioning page uses a throwaway one.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn any_certificate_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A fake boot partition folder holding a factory identity (as `write-image` leaves it).
fn factory_boot_dir(root: &Path) -> (PathBuf, Identity) {
    let boot = root.join("boot/firmware/lookout");
    std::fs::create_dir_all(&boot).unwrap();
    let identity = Identity::generate(DeviceId::parse("f4ct").unwrap()).unwrap();
    std::fs::write(boot.join(IDENTITY_FILE_NAME), identity.to_json()).unwrap();
    // FAT has no permissions; a mounted boot partition typically shows 0755.
    std::fs::set_permissions(boot.join(IDENTITY_FILE_NAME), std::fs::Permissions::from_mode(0o755)).unwrap();
    (boot, identity)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn factory_identity_is_imported_and_the_label_url_works() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let (boot, factory) = factory_boot_dir(root.path());
    let boot_bytes = std::fs::read(boot.join(IDENTITY_FILE_NAME)).unwrap();

    let lookout = Lookout::start(&state, &boot, "serving HTTPS");
    // Only the factory certificate is trusted: the handshake proves it is served.
    let trust_factory = common::tls_client_config(&factory, vec![b"http/1.1".to_vec()]);
    let info = get(lookout.addr, trust_factory.clone(), "/api/info").await;
    assert_eq!(info.status, 200);
    let info = info.json();
    assert_eq!(info["device_id"], "f4ct");
    assert_eq!(info["hostname"], "lookout-f4ct.local");
    assert_eq!(info["identity"], "boot-partition");
    assert_eq!(info["certificate_sha256"], factory.certificate_fingerprint());

    // The label's URL: the page loads and the secret in its fragment opens the room.
    let url = factory.viewer_url(None);
    let secret = url.split("#room=").nth(1).expect("the URL carries the secret");
    let page = get(lookout.addr, trust_factory.clone(), "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<html") || page.body.contains("<!doctype"), "{}", page.body);
    let remote = common::RemoteServer { addr: lookout.addr, identity: factory.clone() };
    let mut viewer = remote.client().await;
    assert_eq!(viewer.join(secret).await["type"], "Joined");
    viewer.close().await;

    // Copied into the state folder, private; the boot copy stays as it was.
    let saved = state.join(IDENTITY_FILE_NAME);
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    let saved_identity = Identity::load(&saved).unwrap();
    assert_eq!(saved_identity.room_secret(), factory.room_secret());
    assert_eq!(saved_identity.certificate_der(), factory.certificate_der());
    assert_eq!(std::fs::read(boot.join(IDENTITY_FILE_NAME)).unwrap(), boot_bytes);
    drop(lookout);

    // Next start: from the state folder, same camera.
    let lookout = Lookout::start(&state, &boot, "serving HTTPS");
    let info = get(lookout.addr, trust_factory, "/api/info").await.json();
    assert_eq!(info["identity"], "state");
    assert_eq!(info["device_id"], "f4ct");
}

#[tokio::test]
async fn damaged_state_identity_serves_needs_provisioning_and_is_kept() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // A valid file whose key belongs to another certificate.
    let (boot, factory) = factory_boot_dir(root.path());
    let mut damaged: Value = serde_json::from_str(&factory.to_json()).unwrap();
    let stranger = Identity::generate(DeviceId::parse("zzzz").unwrap()).unwrap();
    damaged["tls"]["private_key_pem"] = stranger.private_key_pem().into();
    let damaged = damaged.to_string();
    std::fs::write(state.join(IDENTITY_FILE_NAME), &damaged).unwrap();

    let lookout = Lookout::start(&state, &boot, "needs-provisioning");
    let config = any_certificate_config();
    let health = get(lookout.addr, config.clone(), "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (503, "needs-provisioning\n"));
    let info = get(lookout.addr, config.clone(), "/api/info").await;
    assert_eq!(info.status, 200);
    let info = info.json();
    assert_eq!(info["state"], "needs-provisioning");
    assert!(info["reason"].as_str().unwrap().contains("does not belong to the certificate"), "{info}");
    let page = get(lookout.addr, config.clone(), "/").await;
    assert_eq!(page.status, 503);
    assert!(page.body.contains("This camera needs provisioning"), "{}", page.body);
    assert!(!page.body.contains(&factory.room_secret().expose_hex()), "the page shows no secret");
    assert_eq!(get(lookout.addr, config, "/signal").await.status, 503, "no signaling without an identity");
    drop(lookout);

    // Nothing was replaced or added: the damaged file is still there, byte for byte,
    // and the boot partition's identity was not imported over it.
    assert_eq!(std::fs::read_to_string(state.join(IDENTITY_FILE_NAME)).unwrap(), damaged);
    assert_eq!(listing(&state), [IDENTITY_FILE_NAME]);
}

#[tokio::test]
async fn damaged_boot_identity_is_not_replaced_by_a_new_secret() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let boot = root.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let truncated = &Identity::generate(DeviceId::parse("abcd").unwrap()).unwrap().to_json()[..300];
    std::fs::write(boot.join(IDENTITY_FILE_NAME), truncated).unwrap();

    let lookout = Lookout::start(&state, &boot, "needs-provisioning");
    let info = get(lookout.addr, any_certificate_config(), "/api/info").await.json();
    assert_eq!(info["state"], "needs-provisioning");
    assert!(info["reason"].as_str().unwrap().contains(&boot.display().to_string()), "{info}");
    drop(lookout);

    assert!(listing(&state).is_empty(), "no identity was made up: {:?}", listing(&state));
    assert_eq!(std::fs::read_to_string(boot.join(IDENTITY_FILE_NAME)).unwrap(), truncated);
}
