//! HTTP routes (axum): the embedded web client at `/`, signaling at `/ws`, `/metrics`,
//! `/healthz`, `/readyz` and the room API at `/api/rooms`.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use rust_embed::RustEmbed;

use crate::ids::RoomName;
use crate::room::registry::Rooms;
use crate::signal::session::{self, SessionContext};
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
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/api/rooms", get(api_rooms))
        .route("/api/rooms/{room}", get(api_room))
        .route("/", get(index))
        .route("/{*path}", get(asset))
        .with_state(state)
}

async fn ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_HARD_LIMIT)
        .max_frame_size(WS_HARD_LIMIT)
        .on_upgrade(move |socket| {
            let (tx, rx) = socket.split();
            session::run(tx, rx, state.session.clone())
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

async fn api_rooms(State(state): State<AppState>) -> Response {
    let rooms = state.rooms.snapshots().await;
    Json(serde_json::json!({ "rooms": rooms })).into_response()
}

async fn api_room(State(state): State<AppState>, Path(room): Path<String>) -> Response {
    let snapshot = match RoomName::parse(&room) {
        Some(name) => state.rooms.snapshot(&name).await,
        None => None,
    };
    match snapshot {
        Some(s) => Json(s).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such room" })),
        )
            .into_response(),
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
