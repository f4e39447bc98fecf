//! The client side of Confab's signaling protocol (`docs/protocol.md`): JSON text frames over a
//! WebSocket. [`connect`] returns a cloneable [`SignalSender`] (backed by a writer task that also
//! sends `ping` every 10 s) and a [`SignalReceiver`] that decodes server messages.

use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use confab::signal::protocol::{CandidateInit, TrackKind};

/// How often the writer task sends `ping` by default.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Signaling failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The WebSocket could not be opened.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The connection is closed (by either side).
    #[error("signaling connection closed")]
    Closed,
    /// The WebSocket failed.
    #[error("websocket error: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// A server frame could not be decoded (the connection is still usable).
    #[error("undecodable server message {text:?}: {source}")]
    Decode {
        /// The frame.
        text: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(serde_json::Error),
}

/// Messages the client sends.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// Join a room.
    Join {
        /// Room name.
        room: String,
        /// Display name.
        name: String,
        /// Access token.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Our offer.
    Offer {
        /// SDP.
        sdp: String,
        /// What our tracks are, by track id (`camera`, `microphone`, `screen`, `screen-audio`).
        #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
        sources: std::collections::HashMap<String, String>,
    },
    /// One of our tracks turned off or on.
    Mute {
        /// Our track id.
        track_id: String,
        /// Off or on.
        muted: bool,
    },
    /// Our answer to a server offer.
    Answer {
        /// SDP.
        sdp: String,
    },
    /// A trickled candidate (`None`: end of candidates).
    Candidate {
        /// The candidate.
        candidate: Option<CandidateInit>,
    },
    /// Leave the room.
    Leave,
    /// Liveness probe.
    Ping,
}

/// A room member as the server describes it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Participant {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Metadata set through the room API.
    #[serde(default)]
    pub metadata: Option<String>,
    /// Published tracks.
    #[serde(default)]
    pub tracks: Vec<PublishedTrack>,
}

/// A published track in a participant description.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PublishedTrack {
    /// Track id.
    pub track_id: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// What it carries (`camera`, `microphone`, `screen`, `screen-audio`).
    #[serde(default)]
    pub source: String,
    /// Muted through the room API.
    #[serde(default)]
    pub muted: bool,
    /// Turned off by its publisher.
    #[serde(default)]
    pub self_muted: bool,
}

/// One member's connection quality (`connection-quality`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct QualityEntry {
    /// Who.
    pub participant_id: String,
    /// `excellent`, `good`, `poor` or `lost`.
    pub quality: String,
    /// Loss fraction.
    pub loss: f32,
}

/// An ICE server from `joined`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct IceServerInfo {
    /// URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default)]
    pub credential: Option<String>,
}

/// Messages the server sends.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// Join accepted.
    Joined {
        /// Our id.
        participant_id: String,
        /// Room name.
        room: String,
        /// The other members.
        participants: Vec<Participant>,
        /// ICE servers.
        #[serde(default)]
        ice_servers: Vec<IceServerInfo>,
    },
    /// A server offer.
    Offer {
        /// SDP.
        sdp: String,
    },
    /// The answer to our offer.
    Answer {
        /// SDP.
        sdp: String,
    },
    /// A server candidate.
    Candidate {
        /// The candidate.
        candidate: Option<CandidateInit>,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: Participant,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant_id: String,
    },
    /// A track became available.
    TrackPublished {
        /// Publisher.
        participant_id: String,
        /// Track id.
        track_id: String,
        /// Kind.
        kind: TrackKind,
        /// What it carries.
        #[serde(default)]
        source: String,
    },
    /// A track ended.
    TrackUnpublished {
        /// Publisher.
        participant_id: String,
        /// Track id.
        track_id: String,
    },
    /// An error.
    Error {
        /// Machine-readable code (`bad_message`, `offer_collision`, ...).
        code: String,
        /// Explanation.
        #[serde(default)]
        message: String,
    },
    /// Reply to `ping`.
    Pong,
    /// The server is shutting down.
    GoingAway {
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// A track was muted through the room API (not forwarded any more).
    TrackMuted {
        /// Publisher.
        participant_id: String,
        /// Track id.
        track_id: String,
        /// The publisher's own track id.
        source_track_id: String,
        /// By the server.
        by_server: bool,
    },
    /// A track muted through the room API is forwarded again.
    TrackUnmuted {
        /// Publisher.
        participant_id: String,
        /// Track id.
        track_id: String,
        /// The publisher's own track id.
        source_track_id: String,
        /// By the server.
        by_server: bool,
    },
    /// A participant's name or metadata changed.
    ParticipantUpdated {
        /// The participant now.
        participant: Participant,
    },
    /// Every member's connection quality.
    ConnectionQuality {
        /// One entry per member.
        qualities: Vec<QualityEntry>,
    },
    /// A data message.
    Data {
        /// Sender (`None`: the server).
        from: Option<String>,
        /// Topic.
        #[serde(default)]
        topic: Option<String>,
        /// Payload.
        payload: serde_json::Value,
    },
}

impl ServerMessage {
    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::Offer { .. } => "offer",
            ServerMessage::Answer { .. } => "answer",
            ServerMessage::Candidate { .. } => "candidate",
            ServerMessage::ParticipantJoined { .. } => "participant-joined",
            ServerMessage::ParticipantLeft { .. } => "participant-left",
            ServerMessage::TrackPublished { .. } => "track-published",
            ServerMessage::TrackUnpublished { .. } => "track-unpublished",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Pong => "pong",
            ServerMessage::GoingAway { .. } => "going-away",
            ServerMessage::TrackMuted { .. } => "track-muted",
            ServerMessage::TrackUnmuted { .. } => "track-unmuted",
            ServerMessage::ParticipantUpdated { .. } => "participant-updated",
            ServerMessage::Data { .. } => "data",
            ServerMessage::ConnectionQuality { .. } => "connection-quality",
        }
    }

    /// The error code, when this is an `error`.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ServerMessage::Error { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Connection options.
#[derive(Clone, Debug)]
pub struct SignalOptions {
    /// Send `ping` this often (`None`: never).
    pub ping_interval: Option<Duration>,
}

impl Default for SignalOptions {
    fn default() -> Self {
        Self {
            ping_interval: Some(PING_INTERVAL),
        }
    }
}

enum Outgoing {
    Frame(Message),
    Close,
}

/// Sends frames through the writer task. Cloneable; when every clone is dropped (or
/// [`close`](Self::close) is called) the writer closes the WebSocket.
#[derive(Clone, Debug)]
pub struct SignalSender {
    out: mpsc::UnboundedSender<Outgoing>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Frame(m) => write!(f, "Frame({m:?})"),
            Outgoing::Close => f.write_str("Close"),
        }
    }
}

impl SignalSender {
    /// Sends a protocol message.
    pub fn send(&self, msg: &ClientMessage) -> Result<(), SignalError> {
        let text = serde_json::to_string(msg).map_err(SignalError::Encode)?;
        self.send_text(text)
    }

    /// Sends an arbitrary text frame (tests use this for malformed input).
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), SignalError> {
        self.out
            .send(Outgoing::Frame(Message::text(text.into())))
            .map_err(|_| SignalError::Closed)
    }

    /// Sends a binary frame.
    pub fn send_binary(&self, data: Vec<u8>) -> Result<(), SignalError> {
        self.out
            .send(Outgoing::Frame(Message::binary(data)))
            .map_err(|_| SignalError::Closed)
    }

    /// Closes the WebSocket (a normal close frame), without sending `leave`.
    pub fn close(&self) {
        let _ = self.out.send(Outgoing::Close);
    }

    /// Whether the writer task has stopped.
    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Decodes frames from the server.
pub struct SignalReceiver {
    inner: SplitStream<WsStream>,
}

impl std::fmt::Debug for SignalReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalReceiver")
    }
}

impl SignalReceiver {
    /// The next text frame, raw. `Err(Closed)` once the connection has ended.
    pub async fn recv_text(&mut self) -> Result<String, SignalError> {
        loop {
            match self.inner.next().await {
                None => return Err(SignalError::Closed),
                Some(Err(e)) => {
                    use tokio_tungstenite::tungstenite::Error as E;
                    return Err(match e {
                        E::ConnectionClosed | E::AlreadyClosed => SignalError::Closed,
                        other => SignalError::WebSocket(Box::new(other)),
                    });
                }
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Close(_))) => return Err(SignalError::Closed),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next server message. A frame that does not decode yields
    /// [`SignalError::Decode`]; the connection stays usable.
    pub async fn recv(&mut self) -> Result<ServerMessage, SignalError> {
        let text = self.recv_text().await?;
        serde_json::from_str(&text).map_err(|source| SignalError::Decode { text, source })
    }
}

/// Opens the signaling WebSocket at `url` (e.g. `ws://127.0.0.1:8080/ws`).
pub async fn connect(
    url: &str,
    opts: SignalOptions,
) -> Result<(SignalSender, SignalReceiver), SignalError> {
    let (ws, _resp) =
        tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| SignalError::Connect {
                url: url.to_owned(),
                source: Box::new(e),
            })?;
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let ping_text = serde_json::to_string(&ClientMessage::Ping).map_err(SignalError::Encode)?;
    tokio::spawn(async move {
        let mut ping = opts.ping_interval.map(|p| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let next_ping = async {
                match ping.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outgoing::Frame(m)) => {
                        if sink.send(m).await.is_err() {
                            break;
                        }
                    }
                    Some(Outgoing::Close) | None => {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                                reason: "bye".into(),
                            })))
                            .await;
                        let _ = sink.close().await;
                        break;
                    }
                },
                _ = next_ping => {
                    if sink.send(Message::text(ping_text.clone())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok((SignalSender { out: tx }, SignalReceiver { inner: stream }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_match_the_protocol() {
        let j = serde_json::to_string(&ClientMessage::Join {
            room: "r".into(),
            name: "n".into(),
            token: None,
        })
        .expect("encodes");
        assert_eq!(j, r#"{"type":"join","room":"r","name":"n"}"#);
        let c =
            serde_json::to_string(&ClientMessage::Candidate { candidate: None }).expect("encodes");
        assert_eq!(c, r#"{"type":"candidate","candidate":null}"#);
        assert_eq!(
            serde_json::to_string(&ClientMessage::Ping).expect("encodes"),
            r#"{"type":"ping"}"#
        );
    }

    #[test]
    fn server_messages_decode() {
        let m: ServerMessage = serde_json::from_str(
            r#"{"type":"joined","participant_id":"p1","room":"r","participants":[{"id":"p2","name":"b","tracks":[{"track_id":"t1","kind":"video"}]}],"ice_servers":[]}"#,
        )
        .expect("decodes");
        assert!(
            matches!(m, ServerMessage::Joined { ref participants, .. } if participants[0].tracks[0].kind == TrackKind::Video)
        );
        let e: ServerMessage =
            serde_json::from_str(r#"{"type":"error","code":"bad_sdp","message":"x"}"#)
                .expect("decodes");
        assert_eq!(e.error_code(), Some("bad_sdp"));
        let p: ServerMessage = serde_json::from_str(r#"{"type":"pong"}"#).expect("decodes");
        assert_eq!(p, ServerMessage::Pong);
        let l: ServerMessage =
            serde_json::from_str(r#"{"type":"participant-left","participant_id":"p9"}"#)
                .expect("decodes");
        assert_eq!(l.type_name(), "participant-left");
    }
}
