//! Composes the server: binds the media ports (UDP, and ICE-TCP when on) and the HTTP(S)
//! listener, learns the public address when asked, starts the receive tasks and axum, and
//! drains them on shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::cluster::{random_node_id, Cluster, NodeIdentity};
use crate::config::Config;
use crate::http::{router, AppState};
use crate::room::registry::Rooms;
use crate::room::{Advertised, RoomContext};
use crate::signal::session::{identity_limiter, join_limiter, SessionContext};
use crate::transport::tcp::TcpTransport;
use crate::transport::udp::UdpTransport;
use crate::webhooks::Webhooks;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding a socket failed.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded or generated.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Serving HTTP failed.
    #[error("http server failed: {0}")]
    Http(std::io::Error),
    /// A setting is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
}

/// A bound, running server.
pub struct Server {
    /// HTTP address actually bound (useful with port 0).
    pub http_addr: SocketAddr,
    /// Whether HTTP is served over TLS.
    pub tls: bool,
    /// Media UDP address actually bound.
    pub media_addr: SocketAddr,
    /// ICE-TCP address actually bound (`None`: off).
    pub tcp_addr: Option<SocketAddr>,
    /// The room directory.
    pub rooms: Arc<Rooms>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    http_handle: axum_server::Handle<SocketAddr>,
    http: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    udp: tokio::task::JoinHandle<()>,
    tcp: Option<tokio::task::JoinHandle<()>>,
    webhooks: Webhooks,
    webhooks_stop: CancellationToken,
    cluster: Option<Cluster>,
}

/// A self-signed certificate for `localhost`, loopback and the given IPs (PEM cert, PEM key).
pub fn self_signed_certificate(ips: &[IpAddr]) -> Result<(String, String), ServerError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(
        ips.iter()
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_string()),
    );
    names.dedup();
    let key =
        rcgen::generate_simple_self_signed(names).map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok((key.cert.pem(), key.signing_key.serialize_pem()))
}

async fn tls_config(config: &Config) -> Result<Option<RustlsConfig>, ServerError> {
    // Several crates in the tree bring rustls; pin the process-wide provider to ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = &config.http;
    if let (Some(cert), Some(key)) = (&http.tls_cert, &http.tls_key) {
        return RustlsConfig::from_pem_file(cert, key)
            .await
            .map(Some)
            .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())));
    }
    if http.self_signed {
        let (cert, key) = self_signed_certificate(&[http.bind.ip(), config.media.advertised_ip()])?;
        warn!("serving HTTPS with a self-signed development certificate");
        return RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
            .await
            .map(Some)
            .map_err(|e| ServerError::Tls(e.to_string()));
    }
    Ok(None)
}

impl Server {
    /// Binds both sockets and starts serving.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let shutdown = CancellationToken::new();
        let mut udp =
            UdpTransport::bind_with_buffers(config.media.bind, config.media.socket_buffer_bytes)
                .await
                .map_err(|source| ServerError::Bind {
                    what: "media UDP",
                    addr: config.media.bind,
                    source,
                })?;
        let media_addr = udp.tx.local_addr();
        let mut ips = vec![config.media.advertised_ip()];
        ips.extend(config.media.advertise_ips.iter().copied());
        if let Some(server) = &config.media.stun_discover {
            match udp.discover_mapped_address(server).await {
                Ok(mapped) => {
                    info!(%mapped, stun = %server, "public address learned from STUN");
                    ips.push(mapped.ip());
                }
                Err(e) => warn!(%e, "could not learn the public address; not announcing one"),
            }
        }
        let tcp = match config.media.tcp_bind {
            Some(addr) => {
                Some(
                    TcpTransport::bind(addr)
                        .await
                        .map_err(|source| ServerError::Bind {
                            what: "ICE-TCP",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let tcp_addr = tcp.as_ref().map(|t| t.local_addr());
        if let Some(a) = tcp_addr.filter(|a| !a.ip().is_unspecified() && !ips.contains(&a.ip())) {
            warn!(tcp_bind = %a, announced = ?ips, "media.tcp_bind listens on an address that is not announced; ICE-TCP works only if the announced IPs reach it (NAT)");
        }
        let advertised = Advertised::new(&ips, media_addr.port(), tcp_addr.map(|a| a.port()));
        let udp_task = udp.spawn_receiver(shutdown.clone());
        let tcp_task = tcp.map(|t| t.spawn(udp.demux.tcp_routes(), shutdown.clone()));
        // Delivery stops only after the drain, so the drain's events go out too.
        let webhooks_stop = CancellationToken::new();
        let secret = config
            .webhooks
            .signing_secret(&config.auth)
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let webhooks = Webhooks::start(&config.webhooks, secret, webhooks_stop.clone());
        let rooms = Arc::new(Rooms::new(RoomContext {
            webhooks: webhooks.clone(),
            udp: udp.tx.clone(),
            demux: udp.demux.clone(),
            advertised: advertised.clone(),
            media: config.media.clone(),
            ice_servers: config.ice_servers.clone(),
            limits: config.limits.clone(),
            resume_grace: config.signaling.resume_grace,
        }));
        let auth = Auth::new(config.auth.keys.clone().into_iter().collect());
        if !auth.enabled() {
            warn!("no API keys configured: the server is open, anyone can join any room");
        }
        let bind_err = |source| ServerError::Bind {
            what: "HTTP",
            addr: config.http.bind,
            source,
        };
        let listener = std::net::TcpListener::bind(config.http.bind).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let http_addr = listener.local_addr().map_err(bind_err)?;
        let cluster = match &config.cluster.redis_url {
            Some(url) => {
                let id = config
                    .cluster
                    .node_id
                    .clone()
                    .unwrap_or_else(random_node_id);
                crate::telemetry::METRICS.set_node(&id);
                let mut media: Vec<String> =
                    advertised.udp.iter().map(|a| format!("{a}/udp")).collect();
                media.extend(advertised.tcp.iter().map(|a| format!("{a}/tcp")));
                let me = NodeIdentity {
                    id,
                    signaling_url: config
                        .cluster
                        .signaling_url
                        .clone()
                        .unwrap_or_else(|| format!("http://{http_addr}")),
                    media,
                    secret: config
                        .cluster
                        .secret
                        .clone()
                        .or_else(|| config.auth.keys.values().next().cloned()),
                };
                let cluster = Cluster::start(&config.cluster, url, me, rooms.clone())
                    .map_err(|e| ServerError::Config(e.to_string()))?;
                Some(cluster)
            }
            None => None,
        };
        let state = AppState {
            rooms: rooms.clone(),
            allowed_origins: Arc::new(config.http.allowed_origins.clone()),
            trusted_proxies: Arc::new(config.http.trusted_proxies.clone()),
            http_sessions: crate::signal::whip::HttpSessions::new(),
            cluster: cluster.clone(),
            session: Arc::new(SessionContext {
                rooms: rooms.clone(),
                auth,
                messages_per_second: config.limits.ws_messages_per_second,
                join_limiter: join_limiter(config.limits.joins_per_second_per_ip),
                identity_limiter: identity_limiter(config.limits.joins_per_minute_per_identity),
                ice_servers: config.ice_servers.clone(),
                turn: config.turn.clone(),
                resume_grace: config.signaling.resume_grace,
                max_message_bytes: config.signaling.max_message_bytes,
                shutdown: shutdown.clone(),
                cluster: cluster.clone(),
            }),
        };
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let tls = tls_config(&config).await?;
        let is_tls = tls.is_some();
        let http = match tls {
            Some(tls) => {
                let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls)
                    .map_err(bind_err)?
                    .handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
            None => {
                let server = axum_server::from_tcp(listener)
                    .map_err(bind_err)?
                    .handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
        };
        info!(%http_addr, tls = is_tls, %media_addr, tcp = ?tcp_addr, candidates = ?advertised, "confab listening");
        let scheme = if is_tls { "https" } else { "http" };
        info!("open {scheme}://{http_addr}/?room=standup&name=alice to join a call");
        Ok(Self {
            http_addr,
            tls: is_tls,
            media_addr,
            tcp_addr,
            rooms,
            shutdown,
            drain_timeout: config.server.drain_timeout,
            http_handle: handle,
            http,
            udp: udp_task,
            tcp: tcp_task,
            webhooks,
            webhooks_stop,
            cluster,
        })
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled, then drains: readiness fails, new joins are
    /// refused, every session is told `going-away` and leaves; returns once all rooms are gone
    /// or the drain deadline passes.
    pub async fn wait(mut self) -> Result<(), ServerError> {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            r = &mut self.http => {
                // The HTTP server stopped on its own: that is a failure.
                self.shutdown.cancel();
                return match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(ServerError::Http(e)),
                    Err(e) => Err(ServerError::Http(std::io::Error::other(e))),
                };
            }
        }
        info!(rooms = self.rooms.len(), "draining");
        if let Some(cluster) = &self.cluster {
            cluster.drain();
        }
        self.rooms.drain().await;
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        while !self.rooms.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !self.rooms.is_empty() {
            warn!(
                rooms = self.rooms.len(),
                "drain deadline passed; exiting anyway"
            );
        }
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
        self.http_handle
            .graceful_shutdown(Some(Duration::from_millis(500)));
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.http).await;
        self.http.abort();
        let _ = self.udp.await;
        if let Some(tcp) = self.tcp.take() {
            let _ = tcp.await;
        }
        self.webhooks_stop.cancel();
        self.webhooks.finished().await;
        info!("stopped");
        Ok(())
    }
}
