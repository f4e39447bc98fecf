//! Relays one signaling socket to the cluster node that hosts its room: the client's `join` (or
//! `resume`) goes to the owner's `/ws` as it came, then every frame is piped both ways until
//! either side closes. Only signaling takes this hop; media flows straight between the client
//! and the owner's media port (its address is in the owner's ICE candidates).

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as UpCloseFrame;
use tokio_tungstenite::tungstenite::Message as UpMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;

use crate::cluster::{Cluster, NodeRecord};
use crate::telemetry::METRICS;

/// Longest wait for the owner to accept the relayed socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The socket to the owning node.
pub type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the owner could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Its URL does not make a WebSocket URL.
    #[error("node {0} has an unusable signaling URL")]
    BadUrl(String),
    /// Connecting failed or timed out.
    #[error("node {node} is unreachable: {why}")]
    Unreachable {
        /// The node.
        node: String,
        /// Why.
        why: String,
    },
}

/// Opens the relayed socket to `node`'s `/ws`, marked as relayed by this node, with the client's
/// IP and token.
pub async fn connect(
    cluster: &Cluster,
    node: &NodeRecord,
    client_ip: IpAddr,
    token: Option<&str>,
) -> Result<Upstream, RelayError> {
    let base = node.signaling_url.trim_end_matches('/');
    let url = match base.split_once("://") {
        // Node-to-node signaling is plain HTTP on the internal network (config checks it).
        Some(("http", rest)) => format!("ws://{rest}/ws"),
        _ => return Err(RelayError::BadUrl(node.id.clone())),
    };
    let mut req = url
        .into_client_request()
        .map_err(|_| RelayError::BadUrl(node.id.clone()))?;
    let headers = req.headers_mut();
    for (name, value) in cluster.relay_headers(client_ip) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    if let Some(v) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        headers.insert("authorization", v);
    }
    let unreachable = |why: String| RelayError::Unreachable {
        node: node.id.clone(),
        why,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("timed out".into())),
    }
}

/// Sends `first` (the client's join or resume) upstream, then pipes frames both ways until one
/// side closes; the other is then closed too. Returns why it ended.
pub async fn pipe<S, R>(mut tx: S, mut rx: R, mut up: Upstream, first: String) -> &'static str
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    METRICS.cluster_relayed.with_label_values(&["ws"]).inc();
    METRICS.cluster_relay_sessions.inc();
    let reason = 'pipe: {
        if up.send(UpMessage::Text(first.into())).await.is_err() {
            break 'pipe "node closed";
        }
        loop {
            tokio::select! {
                m = rx.next() => {
                    let Some(Ok(m)) = m else {
                        let _ = up.close(None).await;
                        break 'pipe "client gone";
                    };
                    let closing = matches!(m, Message::Close(_));
                    if up.send(upstream(m)).await.is_err() {
                        break 'pipe "node closed";
                    }
                    if closing {
                        break 'pipe "client closed";
                    }
                }
                m = up.next() => {
                    let Some(Ok(m)) = m else {
                        // The owner went away: close with "service restart" so the client
                        // resumes (through any node) at once.
                        let _ = tx.send(Message::Close(Some(CloseFrame {
                            code: 1012,
                            reason: "the room's node went away".into(),
                        }))).await;
                        break 'pipe "node gone";
                    };
                    let Some(m) = downstream(m) else { continue };
                    let closing = matches!(m, Message::Close(_));
                    if tx.send(m).await.is_err() {
                        let _ = up.close(None).await;
                        break 'pipe "client gone";
                    }
                    if closing {
                        break 'pipe "node closed";
                    }
                }
            }
        }
    };
    METRICS.cluster_relay_sessions.dec();
    debug!(reason, "relayed session ended");
    reason
}

fn upstream(m: Message) -> UpMessage {
    match m {
        Message::Text(t) => UpMessage::Text(t.as_str().into()),
        Message::Binary(b) => UpMessage::Binary(b),
        Message::Ping(b) => UpMessage::Ping(b),
        Message::Pong(b) => UpMessage::Pong(b),
        Message::Close(f) => UpMessage::Close(f.map(|f| UpCloseFrame {
            code: CloseCode::from(f.code),
            reason: f.reason.as_str().into(),
        })),
    }
}

fn downstream(m: UpMessage) -> Option<Message> {
    Some(match m {
        UpMessage::Text(t) => Message::Text(t.as_str().into()),
        UpMessage::Binary(b) => Message::Binary(b),
        UpMessage::Ping(b) => Message::Ping(b),
        UpMessage::Pong(b) => Message::Pong(b),
        UpMessage::Close(f) => Message::Close(f.map(|f| CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        UpMessage::Frame(_) => return None,
    })
}
