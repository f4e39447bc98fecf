//! WHIP (RFC 9725) and WHEP over HTTP: `POST /whip/{room}`, `POST /whep/{room}[/{participant}]`
//! create a session (`201`, the answer, `Location`, `ETag`, ICE servers as `Link` headers);
//! `DELETE` on the `Location` ends it; `PATCH` answers `405` (the server is ICE-lite: its
//! answer carries every candidate it has and it learns the client's from the connectivity
//! checks, so trickled candidates have no use; an ICE restart is a new session); `OPTIONS`
//! answers CORS preflights. The session semantics are in `signal::whip`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::{request_token, AppState};
use crate::config::IceServer;
use crate::signal::whip::{Kind, StartRequest, WhipError, MAX_OFFER_BYTES};

/// The WHIP and WHEP routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(whip).options(preflight))
        .route("/whep/{room}", post(whep).options(preflight))
        .route(
            "/whep/{room}/{participant}",
            post(whep_of).options(preflight),
        )
        .route(
            "/whip/{room}/session/{id}",
            axum::routing::delete(delete_whip)
                .patch(patch)
                .options(preflight),
        )
        .route(
            "/whep/{room}/session/{id}",
            axum::routing::delete(delete_whep)
                .patch(patch)
                .options(preflight),
        )
}

const ALLOW_RESOURCE: &str = "DELETE, OPTIONS";

fn status(e: &WhipError) -> StatusCode {
    match e {
        WhipError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        WhipError::Forbidden(_) => StatusCode::FORBIDDEN,
        WhipError::InvalidRoom | WhipError::InvalidName => StatusCode::BAD_REQUEST,
        WhipError::BadOffer(_) | WhipError::NoSupportedCodec => StatusCode::BAD_REQUEST,
        WhipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        WhipError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        WhipError::NotFound(_) => StatusCode::NOT_FOUND,
        WhipError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// CORS headers for a response to a request with these headers: any origin when no list is
/// configured, else the request's origin if listed.
fn cors(state: &AppState, req: &HeaderMap, out: &mut HeaderMap) {
    let origin = req.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let allow = if state.allowed_origins.is_empty() {
        Some("*".to_owned())
    } else {
        origin
            .filter(|o| {
                state
                    .allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
            })
            .map(str::to_owned)
    };
    if let Some(v) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, If-Match"),
        );
        out.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, ETag, Link, Accept-Post"),
        );
    }
}

fn error(state: &AppState, req: &HeaderMap, code: StatusCode, message: &str) -> Response {
    let mut out = HeaderMap::new();
    cors(state, req, &mut out);
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if code == StatusCode::TOO_MANY_REQUESTS || code == StatusCode::SERVICE_UNAVAILABLE {
        out.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if code == StatusCode::UNAUTHORIZED {
        out.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    (code, out, format!("{message}\n")).into_response()
}

/// One `Link` header value per ICE server URL (RFC 9725 section 4.6).
fn ice_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().filter_map(move |url| {
                let mut v = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                    v.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        quote(u),
                        quote(c)
                    ));
                }
                HeaderValue::from_str(&v).ok()
            })
        })
        .collect()
}

fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"))
}

#[allow(clippy::too_many_arguments)]
async fn start(
    state: AppState,
    kind: Kind,
    room: String,
    of: Option<String>,
    peer: SocketAddr,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Bytes,
) -> Response {
    if !is_sdp(&headers) {
        return error(
            &state,
            &headers,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        );
    }
    if body.len() > MAX_OFFER_BYTES {
        return error(
            &state,
            &headers,
            StatusCode::PAYLOAD_TOO_LARGE,
            "the offer is too large",
        );
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return error(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            "the offer is not UTF-8 text",
        );
    };
    let token = request_token(&headers, &query);
    let req = StartRequest {
        kind,
        room: &room,
        of: of.as_deref(),
        name: query.get("name").map(String::as_str),
        token: token.as_deref(),
        ip: state.client_ip(peer.ip(), &headers),
        offer,
    };
    let started = match state.http_sessions.start(&state.session, req).await {
        Ok(s) => s,
        Err(e) => return error(&state, &headers, status(&e), &e.to_string()),
    };
    let mut out = HeaderMap::new();
    cors(&state, &headers, &mut out);
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/{}/{}/session/{}", kind.as_str(), room, started.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        out.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", started.id)) {
        out.insert(header::ETAG, v);
    }
    for link in ice_links(&started.ice_servers) {
        out.append(header::LINK, link);
    }
    (StatusCode::CREATED, out, started.answer).into_response()
}

async fn whip(
    State(state): State<AppState>,
    Path(room): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    start(state, Kind::Whip, room, None, peer, headers, query, body).await
}

async fn whep(
    State(state): State<AppState>,
    Path(room): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    start(state, Kind::Whep, room, None, peer, headers, query, body).await
}

async fn whep_of(
    State(state): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let of = Some(participant);
    start(state, Kind::Whep, room, of, peer, headers, query, body).await
}

async fn end(
    state: AppState,
    kind: Kind,
    room: String,
    id: String,
    headers: HeaderMap,
) -> Response {
    match state.http_sessions.end(kind, &room, &id).await {
        Ok(()) => {
            let mut out = HeaderMap::new();
            cors(&state, &headers, &mut out);
            (StatusCode::OK, out).into_response()
        }
        Err(e) => error(&state, &headers, status(&e), &e.to_string()),
    }
}

async fn delete_whip(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    end(state, Kind::Whip, room, id, headers).await
}

async fn delete_whep(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    end(state, Kind::Whep, room, id, headers).await
}

/// Trickle ICE and ICE restarts over `PATCH` are not supported (see the module docs): `405`,
/// as RFC 9725 allows; `404` for a session that does not exist.
async fn patch(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let exists = state.http_sessions.exists(Kind::Whip, &room, &id)
        || state.http_sessions.exists(Kind::Whep, &room, &id);
    if !exists {
        return error(&state, &headers, StatusCode::NOT_FOUND, "no such session");
    }
    let mut out = HeaderMap::new();
    cors(&state, &headers, &mut out);
    out.insert(header::ALLOW, HeaderValue::from_static(ALLOW_RESOURCE));
    (
        StatusCode::METHOD_NOT_ALLOWED,
        out,
        "trickle ICE is not needed: the answer carries every server candidate\n",
    )
        .into_response()
}

/// CORS preflight and capability discovery: `Accept-Post`, and the configured ICE servers as
/// `Link` headers (per-session TURN credentials come with the `201`).
async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut out = HeaderMap::new();
    cors(&state, &headers, &mut out);
    out.insert(
        header::ALLOW,
        HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
    );
    out.insert("accept-post", HeaderValue::from_static("application/sdp"));
    for link in ice_links(&state.session.ice_servers) {
        out.append(header::LINK, link);
    }
    (StatusCode::NO_CONTENT, out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_links(&[
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.net?transport=udp".into()],
                username: Some("1700000000:p1".into()),
                credential: Some("se\"cret".into()),
            },
        ]);
        assert_eq!(links[0], "<stun:stun.example.net>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; \
             username=\"1700000000:p1\"; credential=\"se\\\"cret\"; credential-type=\"password\""
        );
    }

    #[test]
    fn only_application_sdp_is_an_offer() {
        let mut h = HeaderMap::new();
        assert!(!is_sdp(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_sdp(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/SDP; charset=utf-8"),
        );
        assert!(is_sdp(&h));
    }
}
