//! The signaling wire format (see `docs/protocol.md`): JSON objects tagged by `type`. Pure: no
//! I/O, no room state. Parsing never panics; every failure maps to an [`ErrorCode`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::IceServer;
use crate::ids::{ParticipantId, TrackId};

/// A trickled ICE candidate, as the browser's `RTCIceCandidateInit` (snake_case field names).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CandidateInit {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// The media section's mid.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// The media section's index.
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE ufrag the candidate belongs to.
    #[serde(default)]
    pub username_fragment: Option<String>,
}

/// Messages a client sends.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Join a room; first message on a socket.
    Join {
        /// Room name.
        room: String,
        /// Display name.
        name: String,
        /// Access token (deployments with auth).
        #[serde(default)]
        token: Option<String>,
    },
    /// Take back a session whose socket dropped, within its grace period; first message on a
    /// new socket, instead of `join`.
    Resume {
        /// Room name.
        room: String,
        /// The participant id `joined` gave.
        participant_id: ParticipantId,
        /// The latest `resume_token` (`joined` or `resumed`); each works once.
        token: String,
    },
    /// The client's offer.
    Offer {
        /// Session description.
        sdp: String,
        /// What each of its tracks is, by `MediaStreamTrack.id` (the `msid` track id): a track
        /// not listed is a microphone (audio) or a camera (video).
        #[serde(default)]
        sources: HashMap<String, TrackSource>,
    },
    /// The client's answer to a server offer.
    Answer {
        /// Session description.
        sdp: String,
    },
    /// A trickled candidate; `null` means end of candidates.
    Candidate {
        /// The candidate.
        candidate: Option<CandidateInit>,
    },
    /// How the client shows a remote video track (sent when it changes): the server sends a
    /// hidden tile nothing and a small tile a small layer.
    TrackView {
        /// The remote track (as in `track-published`).
        track_id: TrackId,
        /// Whether the tile is on screen.
        visible: bool,
        /// Rendered width in device pixels (0: unknown).
        #[serde(default)]
        width: u32,
        /// Rendered height in device pixels (0: unknown).
        #[serde(default)]
        height: u32,
    },
    /// The participant turned one of its own tracks off or on (`MediaStreamTrack.enabled`):
    /// the others are told. It cannot lift a server mute.
    Mute {
        /// Its own id of the track (`MediaStreamTrack.id`, the `msid` track id).
        track_id: String,
        /// Off (`true`) or on.
        muted: bool,
    },
    /// Leave the room.
    Leave,
    /// Liveness probe.
    Ping,
}

pub use crate::ids::{TrackKind, TrackSource};

/// The server's view of a member's connection (loss both ways), coarse for a UI.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Under 2 % loss.
    Excellent,
    /// Under 8 % loss.
    Good,
    /// 8 % loss or more.
    Poor,
    /// Its media connection is down, or nothing arrives from its published tracks.
    Lost,
}

impl Quality {
    /// Every level, best first (metric label order).
    pub const ALL: [Quality; 4] = [
        Quality::Excellent,
        Quality::Good,
        Quality::Poor,
        Quality::Lost,
    ];

    /// The wire name, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Excellent => "excellent",
            Quality::Good => "good",
            Quality::Poor => "poor",
            Quality::Lost => "lost",
        }
    }
}

/// One member's connection quality in `connection-quality`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QualityInfo {
    /// Who.
    pub participant_id: ParticipantId,
    /// How good.
    pub quality: Quality,
    /// The larger of its upstream and downstream loss over the last window, 0..1.
    pub loss: f32,
}

/// A published track, as other participants see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TrackInfo {
    /// Track id (the `msid` track id of the forwarded track).
    pub track_id: TrackId,
    /// Audio or video.
    pub kind: TrackKind,
    /// What it carries.
    pub source: TrackSource,
    /// Muted through the room API (not forwarded); omitted when not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
    /// Turned off by its publisher (`mute`); omitted when not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub self_muted: bool,
}

/// A room member, as other participants see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ParticipantInfo {
    /// Participant id (the `msid` stream id of its tracks).
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Application metadata set through the room API (free text, often JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Its published tracks.
    pub tracks: Vec<TrackInfo>,
}

/// Messages the server sends.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// Join accepted.
    Joined {
        /// The new participant's id.
        participant_id: ParticipantId,
        /// Room name.
        room: String,
        /// The other members.
        participants: Vec<ParticipantInfo>,
        /// ICE servers for the client's RTCPeerConnection.
        ice_servers: Vec<IceServer>,
        /// Presented in `resume` after the socket drops, to take the session back.
        resume_token: String,
        /// How long after the socket drops the session waits for a `resume`.
        resume_grace_ms: u64,
    },
    /// A `resume` was accepted: the same participant, its peer connection, tracks and
    /// subscriptions; the others saw nothing. Messages missed while away are not replayed:
    /// `participants` is the room now (and an outstanding server offer is sent again).
    Resumed {
        /// The participant's id (unchanged).
        participant_id: ParticipantId,
        /// Room name.
        room: String,
        /// The other members now.
        participants: Vec<ParticipantInfo>,
        /// ICE servers (fresh TURN credentials).
        ice_servers: Vec<IceServer>,
        /// The next resume token (the one presented is spent).
        resume_token: String,
        /// As in `joined`.
        resume_grace_ms: u64,
    },
    /// A server offer.
    Offer {
        /// Session description.
        sdp: String,
    },
    /// The server's answer to a client offer.
    Answer {
        /// Session description.
        sdp: String,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
    },
    /// A member's track became available.
    TrackPublished {
        /// Publisher.
        participant_id: ParticipantId,
        /// Track id.
        track_id: TrackId,
        /// Audio or video.
        kind: TrackKind,
        /// What it carries.
        source: TrackSource,
    },
    /// A member's track ended.
    TrackUnpublished {
        /// Publisher.
        participant_id: ParticipantId,
        /// Track id.
        track_id: TrackId,
    },
    /// The server stopped sending one of a member's tracks to this client because its link
    /// cannot carry it: a video whose lowest layer does not fit, or, on a link too slow for
    /// every voice, the audio of someone not speaking; `track-resumed` follows when it can.
    TrackPaused {
        /// Publisher.
        participant_id: ParticipantId,
        /// Track id.
        track_id: TrackId,
        /// Audio or video.
        kind: TrackKind,
        /// Why (`bandwidth`).
        reason: PauseReason,
    },
    /// A paused track flows again.
    TrackResumed {
        /// Publisher.
        participant_id: ParticipantId,
        /// Track id.
        track_id: TrackId,
    },
    /// The room's active speakers changed: loudest first, at most three, empty when nobody
    /// speaks. Sent to everyone in the room (a speaker included).
    ActiveSpeakers {
        /// Who speaks, and how loud.
        speakers: Vec<Speaker>,
    },
    /// Dynacast, to a publisher: the simulcast layers (rids) of its track that someone
    /// receives; the client turns the other encodings off.
    PublishLayers {
        /// The publisher's own track id (its `MediaStreamTrack.id`, the SDP `msid`).
        source_track_id: String,
        /// The rids to keep sending.
        active: Vec<String>,
    },
    /// Something went wrong.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// For `rate_limited`: when to try again, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A published track was muted through the room API: the server no longer forwards it.
    /// Sent to everyone, its publisher included (whose client then shows it muted).
    TrackMuted {
        /// Whose track.
        participant_id: ParticipantId,
        /// The track (as subscribers know it).
        track_id: TrackId,
        /// The publisher's own id of it (its `MediaStreamTrack.id`).
        source_track_id: String,
        /// Muted by the server (room API); `false`: by its publisher (`mute`), relayed.
        by_server: bool,
    },
    /// A track muted through the room API is forwarded again (the publisher's client decides
    /// whether to turn its microphone or camera back on: the server never does).
    TrackUnmuted {
        /// Whose track.
        participant_id: ParticipantId,
        /// The track (as subscribers know it).
        track_id: TrackId,
        /// The publisher's own id of it.
        source_track_id: String,
        /// Unmuted by the server (room API).
        by_server: bool,
    },
    /// A participant's name or metadata changed (room API). Sent to everyone, itself included.
    ParticipantUpdated {
        /// The participant as it is now.
        participant: ParticipantInfo,
    },
    /// A data message to the room from the server (room API).
    Data {
        /// Who sent it (`None`: the server).
        from: Option<ParticipantId>,
        /// What it is about, for the application.
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// The message: any JSON value.
        payload: serde_json::Value,
    },
    /// The server's view of each member's connection (itself included), sent when a level
    /// changes.
    ConnectionQuality {
        /// Every member.
        qualities: Vec<QualityInfo>,
    },
    /// Reply to `ping`.
    Pong,
    /// The server is shutting down.
    GoingAway {
        /// Why.
        reason: String,
    },
}

impl ServerMsg {
    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A `rate_limited` error saying when to try again.
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        ServerMsg::Error {
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after_ms: Some(retry_after.as_millis().try_into().unwrap_or(u64::MAX)),
        }
    }

    /// `track-muted` (`muted`) or `track-unmuted` for one published track.
    pub fn track_mute(
        muted: bool,
        participant_id: ParticipantId,
        track_id: TrackId,
        source_track_id: String,
        by_server: bool,
    ) -> Self {
        if muted {
            ServerMsg::TrackMuted {
                participant_id,
                track_id,
                source_track_id,
                by_server,
            }
        } else {
            ServerMsg::TrackUnmuted {
                participant_id,
                track_id,
                source_track_id,
                by_server,
            }
        }
    }

    /// The `type` tag, for metrics labels.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMsg::Joined { .. } => "joined",
            ServerMsg::Resumed { .. } => "resumed",
            ServerMsg::Offer { .. } => "offer",
            ServerMsg::Answer { .. } => "answer",
            ServerMsg::ParticipantJoined { .. } => "participant-joined",
            ServerMsg::ParticipantLeft { .. } => "participant-left",
            ServerMsg::TrackPublished { .. } => "track-published",
            ServerMsg::TrackUnpublished { .. } => "track-unpublished",
            ServerMsg::TrackPaused { .. } => "track-paused",
            ServerMsg::TrackResumed { .. } => "track-resumed",
            ServerMsg::PublishLayers { .. } => "publish-layers",
            ServerMsg::ActiveSpeakers { .. } => "active-speakers",
            ServerMsg::Error { .. } => "error",
            ServerMsg::TrackMuted { .. } => "track-muted",
            ServerMsg::TrackUnmuted { .. } => "track-unmuted",
            ServerMsg::ParticipantUpdated { .. } => "participant-updated",
            ServerMsg::Data { .. } => "data",
            ServerMsg::ConnectionQuality { .. } => "connection-quality",
            ServerMsg::Pong => "pong",
            ServerMsg::GoingAway { .. } => "going-away",
        }
    }
}

/// One active speaker.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Speaker {
    /// Who.
    pub participant_id: ParticipantId,
    /// Smoothed voice activity, 0..1 (two decimals).
    pub level: f32,
}

/// Why a track is paused for one subscriber.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Its link cannot carry the track's lowest layer.
    Bandwidth,
}

/// Machine-readable error codes (`docs/protocol.md` lists when each is sent).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, not an object, binary, or missing/invalid fields.
    BadMessage,
    /// A `type` the server does not know.
    UnknownType,
    /// A frame over the size limit.
    MessageTooLarge,
    /// A session message before `join`.
    NotJoined,
    /// A second `join`.
    AlreadyJoined,
    /// Room name fails validation.
    InvalidRoom,
    /// Display name fails validation.
    InvalidName,
    /// SDP that cannot be parsed or applied.
    BadSdp,
    /// An answer with no server offer outstanding.
    UnexpectedAnswer,
    /// A client offer while a server offer is outstanding (the server wins).
    OfferCollision,
    /// A bad ICE candidate.
    BadCandidate,
    /// The room is at capacity.
    RoomFull,
    /// The server is at capacity or draining.
    ServerFull,
    /// Missing or invalid credentials.
    Unauthorized,
    /// Too many messages or joins; slow down.
    RateLimited,
    /// No answer to a server offer in time.
    NegotiationTimeout,
    /// The participant was removed (connection failed, replaced, room closed).
    Removed,
    /// A server fault.
    Internal,
    /// A `resume` that cannot be honoured (unknown or expired session, wrong or spent token):
    /// join afresh.
    ResumeFailed,
    /// A `mute` for a track the participant does not publish.
    UnknownTrack,
    /// The server cannot take the join now (it drains, or the cluster cannot place the room):
    /// retry shortly, through any node.
    Unavailable,
}

impl ErrorCode {
    /// Every code (for pre-creating metric labels).
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::MessageTooLarge,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidName,
        ErrorCode::BadSdp,
        ErrorCode::UnexpectedAnswer,
        ErrorCode::OfferCollision,
        ErrorCode::BadCandidate,
        ErrorCode::RoomFull,
        ErrorCode::ServerFull,
        ErrorCode::Unauthorized,
        ErrorCode::RateLimited,
        ErrorCode::NegotiationTimeout,
        ErrorCode::Removed,
        ErrorCode::Internal,
        ErrorCode::ResumeFailed,
        ErrorCode::UnknownTrack,
        ErrorCode::Unavailable,
    ];

    /// The wire name, also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::UnexpectedAnswer => "unexpected_answer",
            ErrorCode::OfferCollision => "offer_collision",
            ErrorCode::BadCandidate => "bad_candidate",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NegotiationTimeout => "negotiation_timeout",
            ErrorCode::Removed => "removed",
            ErrorCode::Internal => "internal",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// Every client message `type` (also the `confab_signaling_messages_total` labels).
pub const CLIENT_MSG_TYPES: &[&str] = &[
    "join",
    "resume",
    "offer",
    "answer",
    "candidate",
    "track-view",
    "mute",
    "leave",
    "ping",
];

/// Parses one text frame into a [`ClientMsg`], telling a bad message from an unknown type.
pub fn parse_client_msg(text: &str) -> Result<ClientMsg, (ErrorCode, String)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::BadMessage, format!("invalid JSON: {e}")))?;
    let Some(ty) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err((
            ErrorCode::BadMessage,
            "expected a JSON object with a string \"type\"".into(),
        ));
    };
    if !CLIENT_MSG_TYPES.contains(&ty.as_str()) {
        let shown: String = ty.chars().take(40).collect();
        return Err((
            ErrorCode::UnknownType,
            format!("unknown message type {shown:?}"),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| (ErrorCode::BadMessage, format!("invalid {ty} message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offer_sources_and_mute() {
        let m = parse_client_msg(
            r#"{"type":"offer","sdp":"v=0","sources":{"t1":"screen","t2":"screen-audio"}}"#,
        )
        .expect("offer");
        let ClientMsg::Offer { sources, .. } = m else {
            panic!("offer expected");
        };
        assert_eq!(sources.get("t1"), Some(&TrackSource::Screen));
        assert_eq!(sources.get("t2"), Some(&TrackSource::ScreenAudio));
        let m = parse_client_msg(r#"{"type":"offer","sdp":"v=0"}"#).expect("no sources");
        assert!(matches!(m, ClientMsg::Offer { sources, .. } if sources.is_empty()));
        let bad = parse_client_msg(r#"{"type":"offer","sdp":"v=0","sources":{"t":"webcam"}}"#);
        assert_eq!(bad.expect_err("unknown source").0, ErrorCode::BadMessage);
        let m = parse_client_msg(r#"{"type":"mute","track_id":"t1","muted":true}"#).expect("mute");
        assert_eq!(
            m,
            ClientMsg::Mute {
                track_id: "t1".into(),
                muted: true
            }
        );
    }

    #[test]
    fn parses_join() {
        let m = parse_client_msg(r#"{"type":"join","room":"r","name":"n"}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::Join {
                room: "r".into(),
                name: "n".into(),
                token: None
            }
        );
    }

    #[test]
    fn parses_track_view_and_every_listed_type_is_known() {
        let m = parse_client_msg(
            r#"{"type":"track-view","track_id":"t1","visible":true,"width":320,"height":180}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMsg::TrackView {
                track_id: serde_json::from_str("\"t1\"").unwrap(),
                visible: true,
                width: 320,
                height: 180
            }
        );
        for ty in CLIENT_MSG_TYPES {
            let err = parse_client_msg(&format!(r#"{{"type":"{ty}","bogus":1}}"#));
            assert!(
                !matches!(&err, Err((ErrorCode::UnknownType, _))),
                "{ty} is listed but not parsed: {err:?}"
            );
        }
    }

    #[test]
    fn parses_end_of_candidates() {
        let m = parse_client_msg(r#"{"type":"candidate","candidate":null}"#).unwrap();
        assert_eq!(m, ClientMsg::Candidate { candidate: None });
    }

    #[test]
    fn distinguishes_bad_json_unknown_type_and_bad_fields() {
        assert_eq!(
            parse_client_msg("{nope").unwrap_err().0,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_msg("[1,2]").unwrap_err().0,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_msg(r#"{"type":"dance"}"#).unwrap_err().0,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse_client_msg(r#"{"type":"offer"}"#).unwrap_err().0,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_msg(r#"{"type":"offer","sdp":5}"#)
                .unwrap_err()
                .0,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn server_messages_use_kebab_types_and_snake_fields() {
        let s = serde_json::to_string(&ServerMsg::ParticipantLeft {
            participant_id: ParticipantId::mint(),
        })
        .unwrap();
        assert!(s.contains(r#""type":"participant-left""#), "{s}");
        assert!(s.contains(r#""participant_id""#), "{s}");
        let e = serde_json::to_string(&ServerMsg::error(ErrorCode::BadSdp, "x")).unwrap();
        assert_eq!(e, r#"{"type":"error","code":"bad_sdp","message":"x"}"#);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            let _ = parse_client_msg(&s);
        }

        #[test]
        fn json_objects_with_any_type_and_fields_never_panic(
            ty in prop::sample::select(vec!["join", "offer", "answer", "candidate", "leave", "ping", "x", ""]),
            key in "[a-z_]{1,12}",
            value in prop_oneof![
                Just(serde_json::Value::Null),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<String>().prop_map(serde_json::Value::from),
                Just(serde_json::json!({"candidate": "x", "sdp_mid": 1})),
                Just(serde_json::json!([1, 2, 3])),
            ],
        ) {
            let msg = serde_json::json!({ "type": ty, key: value });
            let _ = parse_client_msg(&msg.to_string());
        }
    }
}
