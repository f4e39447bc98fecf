//! The room API (JSON over HTTP, admin token: `roomAdmin`; listing also with `roomList`).
//!
//! | method & path | does |
//! |---|---|
//! | `GET /api/rooms` | every room |
//! | `POST /api/rooms` | create a room with options (or update one) |
//! | `GET /api/rooms/{room}` | one room |
//! | `DELETE /api/rooms/{room}` | close it: everyone removed with a reason |
//! | `DELETE /api/rooms/{room}/participants/{id}` | remove a participant (or viewer) |
//! | `PATCH /api/rooms/{room}/participants/{id}` | change its name and/or metadata |
//! | `POST /api/rooms/{room}/participants/{id}/tracks/{track}/mute` | mute/unmute a track |
//! | `POST /api/rooms/{room}/data` | send a data message to the room |
//!
//! Errors are `{"error": "..."}` with 400 (bad body), 401 (no/invalid token), 403 (token
//! without the grant), 404 (no such room/participant/track), 503 (server full).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{json_error, request_token, AppState};
use crate::auth::AuthError;
use crate::cluster::Placement;
use crate::ids::{DisplayName, ParticipantId, RoomName, TrackId};
use crate::room::admin::{AdminError, RoomOptions};
use crate::room::{JoinError, RoomCmd};

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;
/// Largest metadata string.
const MAX_METADATA: usize = 4096;

/// The room API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/rooms", get(list).post(create))
        .route("/api/rooms/{room}", get(show).delete(close))
        .route(
            "/api/rooms/{room}/participants/{id}",
            axum::routing::delete(remove).patch(update),
        )
        .route(
            "/api/rooms/{room}/participants/{id}/tracks/{track}/mute",
            post(mute),
        )
        .route("/api/rooms/{room}/data", post(data))
}

/// A refused call: its status and message (`{"error": ...}`).
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_error(self.0, &self.1)
    }
}

/// Checks the token for `room` (`None`: the list); the error response if it does not pass.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    room: Option<&str>,
) -> Result<(), ApiError> {
    let token = request_token(headers, query);
    state
        .session
        .auth
        .check_api(token.as_deref(), room)
        .map_err(|e| {
            let code = match e {
                AuthError::NotAllowed | AuthError::WrongRoom => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            ApiError(code, e.to_string())
        })
}

/// The room a call is about, once its token may act on it.
fn admin_room(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    room: &str,
) -> Result<RoomName, ApiError> {
    authorize(state, headers, query, Some(room))?;
    RoomName::parse(room).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such room".into()))
}

fn participant(id: &str) -> Result<ParticipantId, ApiError> {
    ParticipantId::parse(id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "no such participant in the room".into(),
        )
    })
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".into(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn admin_error(e: AdminError) -> Response {
    json_error(StatusCode::NOT_FOUND, &e.to_string())
}

fn no_room() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such room")
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r.into_response(),
        }
    };
}

async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    tri!(authorize(&state, &headers, &query, None));
    if let Some(cluster) = state.cluster.as_ref().filter(|_| !state.relayed(&headers)) {
        return super::forward::list_cluster(&state, cluster, &headers, peer.ip()).await;
    }
    let rooms = state.rooms.snapshots().await;
    Json(serde_json::json!({ "rooms": rooms })).into_response()
}

async fn show(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let name = tri!(admin_room(&state, &headers, &query, &room));
    match state.rooms.snapshot(&name).await {
        Some(s) => Json(s).into_response(),
        None => no_room(),
    }
}

/// `POST /api/rooms` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
    #[serde(default)]
    max_participants: Option<usize>,
    /// Seconds the room stays open while empty (default 300).
    #[serde(default)]
    empty_timeout_seconds: Option<u64>,
}

/// How long a room created through the API waits for its first participant (and stays open
/// after its last) unless the request says otherwise.
const DEFAULT_EMPTY_TIMEOUT: Duration = Duration::from_secs(300);

async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> Response {
    let req: CreateRoom = tri!(body(&bytes));
    tri!(authorize(&state, &headers, &query, Some(&req.name)));
    let Some(name) = RoomName::parse(&req.name) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "room must be 1-64 characters of A-Z a-z 0-9 _ . -",
        );
    };
    if req.max_participants == Some(0) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "max_participants must be at least 1",
        );
    }
    if let Some(cluster) = state.cluster.as_ref().filter(|_| !state.relayed(&headers)) {
        match cluster.place(&name, true).await {
            Ok(Placement::Remote(node)) => {
                let ip = state.client_ip(peer.ip(), &headers);
                let path = uri.path_and_query().map_or("/api/rooms", |p| p.as_str());
                return super::forward::send(
                    cluster,
                    &node,
                    Method::POST,
                    path,
                    &headers,
                    bytes,
                    ip,
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }
    let options = RoomOptions {
        max_participants: req.max_participants,
        empty_timeout: Some(
            req.empty_timeout_seconds
                .map_or(DEFAULT_EMPTY_TIMEOUT, Duration::from_secs),
        ),
    };
    let created = match state.rooms.create(&name, options).await {
        Ok(c) => c,
        Err(e @ JoinError::ServerFull) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let Some(snapshot) = state.rooms.snapshot(&name).await else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "the room did not answer");
    };
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (code, Json(snapshot)).into_response()
}

/// Optional `{"reason": "..."}` of a removal.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

fn reason(bytes: &Bytes, default: &str) -> Result<String, ApiError> {
    if bytes.is_empty() {
        return Ok(default.to_owned());
    }
    let r: Reason = body(bytes)?;
    Ok(r.reason
        .map(|r| r.chars().take(200).collect())
        .unwrap_or_else(|| default.to_owned()))
}

async fn close(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> Response {
    let name = tri!(admin_room(&state, &headers, &query, &room));
    let why = tri!(reason(&bytes, "the room was closed"));
    if state.rooms.close(&name, &why).await {
        Json(serde_json::json!({ "closed": name.as_str() })).into_response()
    } else {
        no_room()
    }
}

async fn remove(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> Response {
    let name = tri!(admin_room(&state, &headers, &query, &room));
    let id = tri!(participant(&id));
    let why = tri!(reason(&bytes, "removed from the room"));
    let pid = id.clone();
    match state
        .rooms
        .ask(&name, |reply| RoomCmd::Remove {
            id: pid,
            reason: why,
            reply,
        })
        .await
    {
        Some(Ok(())) => Json(serde_json::json!({ "removed": id })).into_response(),
        Some(Err(e)) => admin_error(e),
        None => no_room(),
    }
}

/// `PATCH .../participants/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> Response {
    let name = tri!(admin_room(&state, &headers, &query, &room));
    let id = tri!(participant(&id));
    let req: Update = tri!(body(&bytes));
    let display = match req.name.as_deref().map(DisplayName::parse) {
        None => None,
        Some(Some(d)) => Some(d),
        Some(None) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "name must be 1-64 characters without control characters",
            )
        }
    };
    if req
        .metadata
        .as_ref()
        .is_some_and(|m| m.len() > MAX_METADATA)
    {
        return json_error(StatusCode::BAD_REQUEST, "metadata is limited to 4096 bytes");
    }
    let metadata = req.metadata;
    match state
        .rooms
        .ask(&name, |reply| RoomCmd::Update {
            id,
            name: display,
            metadata,
            reply,
        })
        .await
    {
        Some(Ok(p)) => Json(p).into_response(),
        Some(Err(e)) => admin_error(e),
        None => no_room(),
    }
}

/// `POST .../mute` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mute {
    muted: bool,
}

async fn mute(
    State(state): State<AppState>,
    Path((room, id, track)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> Response {
    let name = tri!(admin_room(&state, &headers, &query, &room));
    let id = tri!(participant(&id));
    let req: Mute = tri!(body(&bytes));
    let Some(track_id) = TrackId::parse(&track) else {
        return admin_error(AdminError::UnknownTrack);
    };
    let tid = track_id.clone();
    match state
        .rooms
        .ask(&name, |reply| RoomCmd::Mute {
            id,
            track_id: tid,
            muted: req.muted,
            reply,
        })
        .await
    {
        Some(Ok(())) => {
            Json(serde_json::json!({ "track_id": track_id, "muted": req.muted })).into_response()
        }
        Some(Err(e)) => admin_error(e),
        None => no_room(),
    }
}

/// `POST .../data` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Data {
    payload: serde_json::Value,
    #[serde(default)]
    topic: Option<String>,
    /// Participant ids; empty or absent: everyone.
    #[serde(default)]
    to: Vec<String>,
}

async fn data(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> Response {
    let name = tri!(admin_room(&state, &headers, &query, &room));
    let req: Data = tri!(body(&bytes));
    if req.topic.as_ref().is_some_and(|t| t.len() > 128) {
        return json_error(StatusCode::BAD_REQUEST, "topic is limited to 128 bytes");
    }
    let mut to = Vec::with_capacity(req.to.len());
    for id in &req.to {
        to.push(tri!(participant(id)));
    }
    let (topic, payload) = (req.topic, req.payload);
    match state
        .rooms
        .ask(&name, |reply| RoomCmd::SendData {
            topic,
            payload,
            to,
            reply,
        })
        .await
    {
        Some(n) => Json(serde_json::json!({ "sent": n })).into_response(),
        None => no_room(),
    }
}
