//! HTTPS/WSS: a server configured with a certificate completes a verified TLS handshake, serves
//! `/healthz`, and accepts a signaling `join` over `wss://`; `--self-signed` serves TLS too.

use std::sync::Arc;
use std::time::Duration;

use confab::config::Config;
use confab::server::{self_signed_certificate, Server};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

fn config() -> Config {
    let mut c = Config::default();
    c.http.bind = "127.0.0.1:0".parse().unwrap();
    c.media.bind = "127.0.0.1:0".parse().unwrap();
    c.media.tcp_bind = Some("127.0.0.1:0".parse().unwrap());
    c
}

fn connector(roots: rustls::RootCertStore) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn configured_certificate_serves_https_and_wss() {
    let dir = std::env::temp_dir().join(format!("confab-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_pem, key_pem) = self_signed_certificate(&[]).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    let mut cfg = config();
    cfg.http.tls_cert = Some(dir.join("cert.pem"));
    cfg.http.tls_key = Some(dir.join("key.pem"));
    let server = Server::start(cfg).await.expect("server starts with TLS");
    assert!(server.tls);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let tls = connector(roots);
    let name = ServerName::try_from("localhost").unwrap();

    // HTTPS GET /healthz over a verified handshake.
    let tcp = TcpStream::connect(server.http_addr).await.unwrap();
    let mut stream = tls
        .connect(name.clone(), tcp)
        .await
        .expect("verified TLS handshake");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // WSS join.
    let tcp = TcpStream::connect(server.http_addr).await.unwrap();
    let stream = tls.connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost:{}/ws", server.http_addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket over TLS");
    ws.send(Message::text(r#"{"type":"join","room":"tls","name":"t"}"#))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("reply in time")
        .expect("stream open")
        .expect("frame");
    assert!(
        reply.to_text().unwrap().contains(r#""type":"joined""#),
        "{reply:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn self_signed_mode_serves_tls_that_an_untrusting_client_rejects() {
    let mut cfg = config();
    cfg.http.self_signed = true;
    let server = Server::start(cfg).await.expect("server starts");
    assert!(server.tls);
    // A client with an empty trust store must fail verification: proof that TLS (not plain
    // HTTP) answers, with a certificate nobody vouched for.
    let tls = connector(rustls::RootCertStore::empty());
    let tcp = TcpStream::connect(server.http_addr).await.unwrap();
    let err = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect_err("self-signed certificate is not trusted");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "unexpected error: {err}"
    );
}
