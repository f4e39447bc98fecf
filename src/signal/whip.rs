//! WHIP ingest (RFC 9725) and WHEP playback sessions: one HTTP offer/answer exchange makes a
//! participant (WHIP: a publisher that receives nothing) or a viewer (WHEP: fixed receive
//! slots, `room::viewers`) in a room; the session resource lives until it is deleted or the
//! room removes it (media lost, never connected, room closed). The HTTP mapping of these
//! outcomes is in `http::whip`; this module knows nothing of HTTP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use super::protocol::{ErrorCode, ServerMsg};
use super::session::{ice_servers, SessionContext};
use crate::auth::AuthError;
use crate::config::IceServer;
use crate::ids::{random_alnum, DisplayName, ParticipantId, RoomName};
use crate::room::registry::RoomHandle;
use crate::room::viewers::media_sections;
use crate::room::{JoinError, Role, RoomCmd};
use crate::telemetry::METRICS;

/// How long the room may take to answer an offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest SDP offer taken.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// Signaling messages queued for a session (it reads and drops them: WHIP/WHEP have no
/// channel to pass them on).
const QUEUE: usize = 256;

/// Which protocol a session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// WHIP: publishes.
    Whip,
    /// WHEP: views.
    Whep,
}

impl Kind {
    /// The path prefix (`whip`, `whep`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

/// Why a session could not be started or found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhipError {
    /// No valid token where one is required.
    #[error("{0}")]
    Unauthorized(AuthError),
    /// The token is valid but does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Not a room name.
    #[error("room must be 1-64 characters of A-Z a-z 0-9 _ . -")]
    InvalidRoom,
    /// Not a display name.
    #[error("name must be 1-64 characters without control characters")]
    InvalidName,
    /// The offer could not be parsed or applied.
    #[error("{0}")]
    BadOffer(String),
    /// The offer has no audio or video the server can take.
    #[error("the offer has no audio or video in a codec the server supports")]
    NoSupportedCodec,
    /// Room or server full, or the server drains.
    #[error("{0}")]
    Unavailable(String),
    /// Too many sessions started from this address.
    #[error("too many sessions from this address; retry shortly")]
    RateLimited,
    /// No such session, room or participant.
    #[error("{0}")]
    NotFound(&'static str),
    /// Something on the server's side.
    #[error("{0}")]
    Internal(String),
}

/// What a started session gives its client.
#[derive(Debug)]
pub struct Started {
    /// The session resource's id (its URL's last segment).
    pub id: String,
    /// The SDP answer.
    pub answer: String,
    /// ICE servers for the client (RFC 9725 `Link` headers).
    pub ice_servers: Vec<IceServer>,
    /// The participant (WHIP) or viewer (WHEP) id in the room.
    pub participant: ParticipantId,
}

/// A session start request.
#[derive(Debug)]
pub struct StartRequest<'a> {
    /// WHIP or WHEP.
    pub kind: Kind,
    /// The room (path).
    pub room: &'a str,
    /// WHEP of one participant (path).
    pub of: Option<&'a str>,
    /// Display name (query `name`; the token's name wins).
    pub name: Option<&'a str>,
    /// Bearer token.
    pub token: Option<&'a str>,
    /// Client IP (per-IP join limit).
    pub ip: IpAddr,
    /// The SDP offer.
    pub offer: String,
}

struct Session {
    kind: Kind,
    room: RoomName,
    participant: ParticipantId,
    handle: RoomHandle,
    done: CancellationToken,
}

/// The WHIP/WHEP session resources of this server.
#[derive(Default)]
pub struct HttpSessions {
    map: DashMap<String, Session>,
}

impl HttpSessions {
    /// No sessions.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Starts a session: joins the room, applies the offer, returns the answer.
    pub async fn start(
        self: &Arc<Self>,
        ctx: &SessionContext,
        req: StartRequest<'_>,
    ) -> Result<Started, WhipError> {
        let started = Instant::now();
        if ctx.shutdown.is_cancelled() {
            return Err(WhipError::Unavailable(
                "the server is shutting down".to_owned(),
            ));
        }
        if ctx
            .join_limiter
            .as_ref()
            .is_some_and(|l| l.check_key(&req.ip).is_err())
        {
            METRICS.signaling_error(ErrorCode::RateLimited);
            return Err(WhipError::RateLimited);
        }
        let room = RoomName::parse(req.room).ok_or(WhipError::InvalidRoom)?;
        let mut grant = ctx
            .auth
            .grant_for_join(req.token, room.as_str())
            .map_err(|e| {
                METRICS.signaling_error(ErrorCode::Unauthorized);
                match e {
                    AuthError::NotAllowed | AuthError::WrongRoom => {
                        WhipError::Forbidden(e.to_string())
                    }
                    e => WhipError::Unauthorized(e),
                }
            })?;
        let role = match req.kind {
            Kind::Whip => {
                if !grant.can_publish {
                    return Err(WhipError::Forbidden(
                        "the access token does not allow publishing (canPublish)".to_owned(),
                    ));
                }
                grant.can_subscribe = false;
                Role::Ingest
            }
            Kind::Whep => {
                if !grant.can_subscribe {
                    return Err(WhipError::Forbidden(
                        "the access token does not allow subscribing (canSubscribe)".to_owned(),
                    ));
                }
                grant.can_publish = false;
                grant.can_publish_data = false;
                let of = match req.of {
                    Some(p) => Some(
                        ParticipantId::parse(p)
                            .ok_or(WhipError::NotFound("no such participant"))?,
                    ),
                    None => None,
                };
                Role::Viewer { of }
            }
        };
        let default_name = match req.kind {
            Kind::Whip => "whip",
            Kind::Whep => "whep viewer",
        };
        let name = grant
            .name
            .clone()
            .or_else(|| req.name.map(str::to_owned))
            .unwrap_or_else(|| default_name.to_owned());
        let display = DisplayName::parse(&name).ok_or(WhipError::InvalidName)?;
        if media_sections(&req.offer).is_empty() {
            return Err(WhipError::BadOffer(
                "the offer has no audio or video m-line".to_owned(),
            ));
        }
        let expiry = grant.expires_at;
        let participant = ParticipantId::mint();
        let (signal_tx, mut signal_rx) = mpsc::channel(QUEUE);
        let (handle, _accepted) = ctx
            .rooms
            .join(&room, participant.clone(), display, grant, role, signal_tx)
            .await
            .map_err(|e| match e {
                JoinError::RoomFull | JoinError::ServerFull => {
                    WhipError::Unavailable(e.to_string())
                }
                JoinError::UnknownParticipant => WhipError::NotFound("no such participant"),
                e => WhipError::Internal(e.to_string()),
            })?;
        let leave = |handle: RoomHandle, id: ParticipantId| async move {
            let _ = handle.cmds.send(RoomCmd::Leave { id }).await;
        };
        let offer = RoomCmd::Offer {
            id: participant.clone(),
            sdp: req.offer,
            sources: Default::default(),
        };
        if handle.cmds.send(offer).await.is_err() {
            return Err(WhipError::Internal("the room closed".to_owned()));
        }
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            while let Some(msg) = signal_rx.recv().await {
                match msg {
                    ServerMsg::Answer { sdp } => return Ok(sdp),
                    ServerMsg::Error { code, message, .. } => {
                        return Err(match code {
                            ErrorCode::BadSdp => WhipError::BadOffer(message),
                            _ => WhipError::Internal(message),
                        })
                    }
                    _ => {}
                }
            }
            Err(WhipError::Internal("the room closed".to_owned()))
        })
        .await
        .unwrap_or_else(|_| Err(WhipError::Internal("the room did not answer".to_owned())));
        let answer = match answer {
            Ok(a) if accepts_media(&a) => a,
            Ok(_) => {
                leave(handle, participant).await;
                return Err(WhipError::NoSupportedCodec);
            }
            Err(e) => {
                leave(handle, participant).await;
                return Err(e);
            }
        };
        let id = random_alnum(24);
        let done = CancellationToken::new();
        self.map.insert(
            id.clone(),
            Session {
                kind: req.kind,
                room: room.clone(),
                participant: participant.clone(),
                handle,
                done: done.clone(),
            },
        );
        // The session holds its place in the room until it is deleted or the room lets it go
        // (the room then drops its end of the channel).
        let sessions = Arc::clone(self);
        let key = id.clone();
        let span = tracing::info_span!("http_session", kind = req.kind.as_str(), room = %room);
        tokio::spawn(
            async move {
                loop {
                    tokio::select! {
                        msg = signal_rx.recv() => match msg {
                            Some(ServerMsg::Error { code: ErrorCode::Removed, message, .. }) => {
                                info!(%message, "removed by the room");
                            }
                            Some(_) => {}
                            None => break,
                        },
                        _ = done.cancelled() => break,
                    }
                }
                sessions.map.remove(&key);
            }
            .instrument(span),
        );
        info!(
            kind = req.kind.as_str(),
            room = %room,
            participant = %participant,
            ms = started.elapsed().as_millis() as u64,
            "session started"
        );
        Ok(Started {
            ice_servers: ice_servers(ctx, &participant, expiry),
            id,
            answer,
            participant,
        })
    }

    /// Ends a session (`DELETE` on its resource): the participant or viewer leaves the room.
    pub async fn end(&self, kind: Kind, room: &str, id: &str) -> Result<(), WhipError> {
        let (_, session) = self
            .map
            .remove_if(id, |_, s| s.kind == kind && s.room.as_str() == room)
            .ok_or(WhipError::NotFound("no such session"))?;
        session.done.cancel();
        let _ = session
            .handle
            .cmds
            .send(RoomCmd::Leave {
                id: session.participant,
            })
            .await;
        Ok(())
    }

    /// Whether a session exists.
    pub fn exists(&self, kind: Kind, room: &str, id: &str) -> bool {
        self.map
            .get(id)
            .is_some_and(|s| s.kind == kind && s.room.as_str() == room)
    }
}

/// Whether an answer takes any audio or video: some section is neither refused (port 0) nor
/// `a=inactive` (what an answer says to media in codecs the server does not support).
pub fn accepts_media(answer: &str) -> bool {
    let mut sections: Vec<bool> = Vec::new();
    for line in answer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let media = matches!(parts.next(), Some("audio") | Some("video"));
            sections.push(media && parts.next() != Some("0"));
        } else if line == "a=inactive" {
            if let Some(last) = sections.last_mut() {
                *last = false;
            }
        }
    }
    sections.into_iter().any(|live| live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_refusing_every_section_takes_no_media() {
        let refused = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n";
        assert!(!accepts_media(refused));
        let one = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n";
        assert!(accepts_media(one));
        assert!(!accepts_media(
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        ));
    }
}
