//! The HTTPS side: TLS versions and ALPN, the routes, the headers, the
//! plain-HTTP redirect.

mod common;

use std::sync::Arc;

use common::TestServer;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn tls_1_2_and_1_3_handshake_with_alpn_http_1_1() {
    let server = TestServer::start(|_| {}).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.identity.certificate_der().to_vec().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{version:?} handshake: {e}"));
        let (_, session) = tls.get_ref();
        assert_eq!(session.protocol_version(), Some(version.version));
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]), "h2 is not offered");
    }
}

#[tokio::test]
async fn the_certificate_names_localhost_and_the_loopback_addresses() {
    let server = TestServer::start(|_| {}).await;
    for name in ["localhost", "127.0.0.1", &format!("{}.local", server.identity.hostname())] {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(server.tls_client_config());
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        assert!(connector.connect(server_name, tcp).await.is_ok(), "certificate valid for {name}");
    }
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(server.tls_client_config());
    assert!(connector.connect(ServerName::try_from("example.org").unwrap(), tcp).await.is_err());
}

#[tokio::test]
async fn root_serves_the_embedded_page_with_security_headers() {
    let server = TestServer::start(|_| {}).await;
    let response = server.request("GET", "/", "").await;
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().starts_with("text/html"));
    assert!(response.text().contains("<title>Lookout"));
    assert!(response.header("content-security-policy").unwrap().contains("default-src 'self'"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    let css = server.request("GET", "/style.css", "").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start(|_| {}).await;
    let response = server.request("GET", "/healthz", "").await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok\n"));
    let head = server.request("HEAD", "/healthz", "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn api_info_reports_the_device_and_no_secret() {
    let server = TestServer::start(|_| {}).await;
    let response = server.request("GET", "/api/info", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let info: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(info["certificate_sha256"], server.identity.certificate_fingerprint());
    assert_eq!(info["device_id"], server.identity.device_id().as_str());
    assert_eq!(info["hostname"], format!("{}.local", server.identity.hostname()));
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["mode"], "appliance");
    let text = response.text().to_lowercase();
    assert!(!text.contains(&server.secret_hex()), "the room secret must not be exposed");
    assert!(!text.contains("private"), "no key material");
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(server.request("GET", "/nope", "").await.status, 404);
    assert_eq!(server.request("GET", "/../Cargo.toml", "").await.status, 404);
    let post = server.request("POST", "/healthz", "Content-Length: 0\r\n").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(server.request("DELETE", "/", "").await.status, 405);
    assert_eq!(server.request("POST", "/signal", "Content-Length: 0\r\n").await.status, 405);
}

#[tokio::test]
async fn signal_without_a_websocket_upgrade_is_426() {
    let server = TestServer::start(|_| {}).await;
    let response = server.request("GET", "/signal", "").await;
    assert_eq!(response.status, 426);
    assert_eq!(response.header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn plain_http_only_redirects_to_https() {
    let server = TestServer::start(|s| s.http_redirect = Some("127.0.0.1:0".parse().unwrap())).await;
    let mut tcp = TcpStream::connect(server.redirect_addr.unwrap()).await.unwrap();
    tcp.write_all(b"GET /api/info?x=1 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 308"), "{raw}");
    let expected = format!("location: https://127.0.0.1:{}/api/info?x=1", server.addr.port());
    assert!(raw.to_lowercase().contains(&expected), "{raw}");
    assert!(!raw.contains("certificate_sha256"), "nothing is served over plain HTTP");
}

#[tokio::test]
async fn odd_host_headers_at_the_redirect_get_the_cameras_own_name() {
    let server = TestServer::start(|s| s.http_redirect = Some("127.0.0.1:0".parse().unwrap())).await;
    // `Host: [` used to panic the redirect (a slice past the end).
    for host in ["[", "[::1", "[::1]x", "[zz]:80", "a:b:c", "evil/host", ":80"] {
        let mut tcp = TcpStream::connect(server.redirect_addr.unwrap()).await.unwrap();
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 308"), "Host: {host}\n{raw}");
        let expected = format!(".local:{}/x", server.addr.port());
        let location = raw.lines().find(|l| l.to_lowercase().starts_with("location:")).unwrap_or_default();
        assert!(
            location.contains("https://lookout-") && location.ends_with(&expected),
            "Host: {host}\n{raw}"
        );
    }
}
