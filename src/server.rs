//! Composes the server: binds the media port and the HTTP listener, starts the UDP receive task
//! and axum, and shuts both down on cancellation.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::http::{router, AppState};
use crate::room::registry::Rooms;
use crate::room::RoomContext;
use crate::signal::session::SessionContext;
use crate::transport::udp::UdpTransport;

/// Why the server could not start.
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
    /// Serving HTTP failed.
    #[error("http server failed: {0}")]
    Http(std::io::Error),
}

/// A bound, running server.
pub struct Server {
    /// HTTP address actually bound (useful with port 0).
    pub http_addr: SocketAddr,
    /// Media UDP address actually bound.
    pub media_addr: SocketAddr,
    /// The room directory.
    pub rooms: Arc<Rooms>,
    shutdown: CancellationToken,
    drain_timeout: std::time::Duration,
    http: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    udp: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds both sockets and starts serving.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let shutdown = CancellationToken::new();
        let mut udp = UdpTransport::bind(config.media.bind)
            .await
            .map_err(|source| ServerError::Bind {
                what: "media UDP",
                addr: config.media.bind,
                source,
            })?;
        let media_addr = udp.tx.local_addr();
        let advertised = SocketAddr::new(config.media.advertised_ip(), media_addr.port());
        let udp_task = udp.spawn_receiver(shutdown.clone());
        let rooms = Arc::new(Rooms::new(RoomContext {
            udp: udp.tx.clone(),
            demux: udp.demux.clone(),
            advertised,
            media: config.media.clone(),
            ice_servers: config.ice_servers.clone(),
        }));
        let listener = TcpListener::bind(config.http.bind)
            .await
            .map_err(|source| ServerError::Bind {
                what: "HTTP",
                addr: config.http.bind,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(ServerError::Http)?;
        let state = AppState {
            rooms: rooms.clone(),
            session: Arc::new(SessionContext {
                rooms: rooms.clone(),
                ice_servers: config.ice_servers.clone(),
                max_message_bytes: config.signaling.max_message_bytes,
                shutdown: shutdown.clone(),
            }),
        };
        let app = router(state);
        let stop = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        info!(%http_addr, %media_addr, %advertised, "confab listening");
        Ok(Self {
            http_addr,
            media_addr,
            rooms,
            shutdown,
            drain_timeout: config.server.drain_timeout,
            http,
            udp: udp_task,
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
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        while !self.rooms.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !self.rooms.is_empty() {
            tracing::warn!(
                rooms = self.rooms.len(),
                "drain deadline passed; exiting anyway"
            );
        }
        // Upgraded WebSockets are not tracked by the graceful shutdown; give it a moment.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.http).await;
        self.http.abort();
        let _ = self.udp.await;
        info!("stopped");
        Ok(())
    }
}
