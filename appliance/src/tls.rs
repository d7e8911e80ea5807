//! The TLS endpoint: a rustls server configuration from the device identity.
//!
//! TLS 1.2 and 1.3 only, ALPN `http/1.1` (WebSocket upgrades ride HTTP/1.1),
//! the ring crypto provider, the identity's self-signed ECDSA P-256 certificate.

use std::sync::Arc;

use lookout_provisioning::Identity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the identity's private key cannot be read: {0}")]
    Key(String),
    #[error("rustls refused the certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server's TLS configuration.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_slice(identity.private_key_pem().as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let chain = vec![CertificateDer::from(identity.certificate_der().to_vec())];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
