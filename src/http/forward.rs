//! In a cluster: an HTTP request about a room that another node hosts (room API, WHIP, WHEP) is
//! forwarded to that node and its answer returned as is, so every node answers for every room.
//! `GET /api/rooms` asks every live node and merges the lists.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::join_all;

use super::{json_error, AppState};
use crate::cluster::{Cluster, NodeRecord, Placement};
use crate::ids::RoomName;
use crate::telemetry::METRICS;

/// Largest request body forwarded (WHIP/WHEP offers and room-API bodies are far smaller).
const MAX_FORWARD_BODY: usize = 1024 * 1024;

/// Node-to-node HTTP (plain HTTP on the internal network; a slow node fails the request rather
/// than holding it).
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
});

/// The room a request is about, and whether it may create the room (`POST /whip/{room}`,
/// `POST /whep/{room}`) or only finds it.
fn routed(method: &Method, path: &str) -> Option<(String, bool)> {
    if method == Method::OPTIONS {
        return None;
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "rooms", room, ..] if !room.is_empty() => Some((room.to_string(), false)),
        ["whip" | "whep", room] => Some((room.to_string(), method == Method::POST)),
        ["whip" | "whep", room, ..] => Some((room.to_string(), false)),
        _ => None,
    }
}

/// Middleware: serves requests for rooms hosted here (or nowhere) locally, forwards the rest.
pub async fn to_owner(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(req).await;
    };
    if state.relayed(req.headers()) {
        return next.run(req).await;
    }
    let Some((room, create)) = routed(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(name) = RoomName::parse(&room) else {
        return next.run(req).await;
    };
    match cluster.place(&name, create).await {
        Ok(Placement::Remote(node)) => {
            let ip = state.client_ip(peer.ip(), req.headers());
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_FORWARD_BODY).await else {
                return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            };
            let path = parts
                .uri
                .path_and_query()
                .map_or(parts.uri.path(), |p| p.as_str());
            send(
                &cluster,
                &node,
                parts.method,
                path,
                &parts.headers,
                bytes,
                ip,
            )
            .await
        }
        Ok(Placement::Local | Placement::Nowhere) => next.run(req).await,
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Headers that describe one connection, not the request: never forwarded.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// Sends one request to `node` as relayed by this node on behalf of `client_ip`, and returns
/// its answer.
pub async fn send(
    cluster: &Cluster,
    node: &NodeRecord,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
    client_ip: IpAddr,
) -> Response {
    let url = format!(
        "{}{}",
        node.signaling_url.trim_end_matches('/'),
        path_and_query
    );
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !hop_by_hop(name) && !name.as_str().starts_with("x-confab-") {
            out.append(name.clone(), value.clone());
        }
    }
    for (name, value) in cluster.relay_headers(client_ip) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.insert(name, v);
        }
    }
    METRICS.cluster_relayed.with_label_values(&["http"]).inc();
    let answer = CLIENT
        .request(method, &url)
        .headers(out)
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(node = %node.id, error = %e, "forwarding to the room's node failed");
            return json_error(
                StatusCode::BAD_GATEWAY,
                &format!("the room's node {} is unreachable; retry shortly", node.id),
            );
        }
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(body) => (status, headers, Body::from(body)).into_response(),
        Err(_) => json_error(StatusCode::BAD_GATEWAY, "the room's node stopped answering"),
    }
}

/// `GET /api/rooms` across the cluster: this node's rooms and every other live node's, each
/// room with its `node`; `partial` when a node (or Redis) did not answer.
pub async fn list_cluster(
    state: &AppState,
    cluster: &Cluster,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Response {
    let me = cluster.node_id().to_owned();
    let local = || async {
        let rooms = state.rooms.snapshots().await;
        rooms
            .into_iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect::<Vec<_>>()
    };
    let (nodes, mut partial) = match cluster.nodes().await {
        Ok(n) => (n, false),
        Err(_) => (Vec::new(), true),
    };
    let ip = state.client_ip(peer, headers);
    let asks = nodes.iter().filter(|n| n.id != me).map(|node| async move {
        let answer = send(
            cluster,
            node,
            Method::GET,
            "/api/rooms",
            headers,
            Bytes::new(),
            ip,
        )
        .await;
        if answer.status() != StatusCode::OK {
            return (node.id.clone(), None);
        }
        let body = axum::body::to_bytes(answer.into_body(), 16 * 1024 * 1024).await;
        let rooms = body
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("rooms").and_then(|r| r.as_array()).cloned());
        (node.id.clone(), rooms)
    });
    let (mine, theirs) = tokio::join!(local(), join_all(asks));
    let mut all = Vec::new();
    let mut tag = |node: &str, rooms: Vec<serde_json::Value>| {
        for mut room in rooms {
            if let Some(obj) = room.as_object_mut() {
                obj.insert("node".into(), node.into());
            }
            all.push(room);
        }
    };
    tag(&me, mine);
    for (node, rooms) in theirs {
        match rooms {
            Some(r) => tag(&node, r),
            None => partial = true,
        }
    }
    all.sort_by(|a, b| {
        let name = |v: &serde_json::Value| {
            v.get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_owned()
        };
        name(a).cmp(&name(b))
    });
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (
        headers,
        Json(serde_json::json!({ "rooms": all, "partial": partial })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_their_room() {
        let r = |m: Method, p: &str| routed(&m, p);
        assert_eq!(r(Method::POST, "/whip/a"), Some(("a".into(), true)));
        assert_eq!(r(Method::POST, "/whep/a"), Some(("a".into(), true)));
        assert_eq!(r(Method::POST, "/whep/a/p1"), Some(("a".into(), false)));
        assert_eq!(
            r(Method::DELETE, "/whip/a/session/x"),
            Some(("a".into(), false))
        );
        assert_eq!(r(Method::GET, "/api/rooms/a"), Some(("a".into(), false)));
        assert_eq!(
            r(Method::DELETE, "/api/rooms/a/participants/p"),
            Some(("a".into(), false))
        );
        assert_eq!(r(Method::GET, "/api/rooms"), None);
        assert_eq!(r(Method::OPTIONS, "/whip/a"), None);
        assert_eq!(r(Method::GET, "/metrics"), None);
        assert_eq!(r(Method::GET, "/ws"), None);
    }
}
