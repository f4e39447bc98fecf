//! HTTP routes (axum): the embedded web client at `/`, signaling at `/ws`, WHIP and WHEP
//! (`http::whip`), `/metrics`, `/healthz`, `/readyz` and the room API at `/api/rooms`.

mod api;
mod forward;
mod whip;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use rust_embed::RustEmbed;

use crate::cluster::{Cluster, CLIENT_IP_HEADER, RELAY_KEY_HEADER, RELAY_NODE_HEADER};
use crate::room::registry::Rooms;
use crate::signal::protocol::ErrorCode;
use crate::signal::session::{self, ConnInfo, SessionContext};
use crate::signal::whip::HttpSessions;
use crate::telemetry::METRICS;

/// The browser client (`client/`), compiled into the binary.
#[derive(RustEmbed)]
#[folder = "client/"]
struct ClientAssets;

/// Hard cap on a WebSocket frame; between `signaling.max_message_bytes` and this, the session
/// answers `message_too_large` and stays open; above it the connection is closed.
const WS_HARD_LIMIT: usize = 1024 * 1024;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Signaling sessions' context.
    pub session: Arc<SessionContext>,
    /// The room directory (room API).
    pub rooms: Arc<Rooms>,
    /// `Origin`s allowed on `/ws` (empty: any).
    pub allowed_origins: Arc<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<IpAddr>>,
    /// WHIP/WHEP session resources.
    pub http_sessions: Arc<HttpSessions>,
    /// This node's cluster membership (`None`: a single node).
    pub cluster: Option<Cluster>,
}

impl AppState {
    /// Whether the request was relayed by another node of the cluster.
    fn relayed(&self, headers: &HeaderMap) -> bool {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.cluster
            .as_ref()
            .is_some_and(|c| c.trusts(get(RELAY_NODE_HEADER), get(RELAY_KEY_HEADER)))
    }

    /// The client's IP: as the relaying node says for a relayed request, else [`client_ip`].
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.relayed(headers) {
            if let Some(ip) = headers
                .get(CLIENT_IP_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
            {
                return ip;
            }
        }
        client_ip(peer, &self.trusted_proxies, headers)
    }
}

/// The client's IP: the TCP peer, or the last `X-Forwarded-For` hop when the peer is a trusted
/// proxy (the last entry is the one that proxy appended, so clients cannot forge it).
fn client_ip(peer: IpAddr, trusted: &[IpAddr], headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .next_back()
        .unwrap_or(peer)
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(api::routes())
        .merge(whip::routes())
        .route("/", get(index))
        .route("/{*path}", get(asset))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::to_owner,
        ))
        .with_state(state)
}

/// The token from `?access_token=` or `Authorization: Bearer`.
fn request_token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    if let Some(t) = query.get("access_token") {
        return Some(t.clone());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

/// Whether the request's `Origin` may open a WebSocket (no list: any; no header: non-browser
/// clients, allowed).
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        Some(Err(_)) => false,
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&state.allowed_origins, &headers) {
        METRICS.signaling_error(ErrorCode::Unauthorized);
        return json_error(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let conn = ConnInfo {
        ip: state.client_ip(peer.ip(), &headers),
        token: request_token(&headers, &query),
        relayed: state.relayed(&headers),
    };
    upgrade
        .max_message_size(WS_HARD_LIMIT)
        .max_frame_size(WS_HARD_LIMIT)
        .on_upgrade(move |socket| {
            let (tx, rx) = socket.split();
            session::run(tx, rx, state.session.clone(), conn)
        })
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.session.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        "ready".into_response()
    }
}

async fn index() -> Response {
    serve_asset("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    serve_asset(&path)
}

fn serve_asset(path: &str) -> Response {
    match ClientAssets::get(path) {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            (
                [
                    (header::CONTENT_TYPE, mime.as_ref().to_owned()),
                    (header::CACHE_CONTROL, "no-cache".to_owned()),
                ],
                file.data.into_owned(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9".parse().unwrap());
        assert_eq!(
            client_ip(proxy, &[proxy], &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &[], &h), proxy);
        assert_eq!(client_ip(proxy, &[proxy], &HeaderMap::new()), proxy);
    }

    #[test]
    fn origins_are_checked_when_configured() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&[], &h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(origin_allowed(&[], &h));
        assert!(!origin_allowed(&["https://meet.example".into()], &h));
        h.insert(header::ORIGIN, "https://meet.example".parse().unwrap());
        assert!(origin_allowed(&["https://meet.example".into()], &h));
    }
}
