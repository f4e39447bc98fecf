//! Rooms: membership, negotiation and the per-room task that drives every peer connection of a
//! room and the forwarding plane between them.
//!
//! - [`registry`]: the room directory (`DashMap`, signaling rate only), spawning and reaping;
//!   [`lease`]: a room's claim on its directory entry.
//! - [`task`]: the per-room task, the I/O shell: clock, channels, socket, run loop.
//! - [`state`]: the room's state and its inputs (`on_cmd`, `on_datagram`, `on_timeout`), sans-IO.
//! - [`membership`]: join, leave, signaling to members, snapshots.
//! - [`tracks`]: publish, attach, unpublish.
//! - [`negotiation`]: the offer/answer state machine and the room's handling of SDP.
//! - [`drive`]: the drain contract and the packet path (forwarder → egress).
//! - [`resume`]: a participant whose socket dropped, kept for the grace period, and resume.
//! - [`peer`]: one participant's peer connection.

pub mod admin;
pub mod allocation;
pub mod chat;
pub mod drive;
pub mod lease;
pub mod membership;
pub mod negotiation;
pub mod peer;
pub mod presence;
pub mod quality;
pub mod registry;
pub mod resume;
pub mod rtcp;
pub mod speakers;
pub mod state;
pub mod task;
pub mod tracks;
pub mod viewers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Grant;
use crate::config::{IceServer, LimitsConfig, MediaConfig};
use crate::ids::{DisplayName, ParticipantId, TrackId, TrackKind, TrackSource};
pub use crate::media::downtrack::View;
use crate::signal::protocol::{CandidateInit, ErrorCode, ParticipantInfo, ServerMsg};
use crate::transport::udp::{DemuxHandle, UdpTx};

/// What every room needs from the server.
#[derive(Clone, Debug)]
pub struct RoomContext {
    /// Sender on the shared media socket.
    pub udp: UdpTx,
    /// Routing-table handle.
    pub demux: DemuxHandle,
    /// The server's host candidates.
    pub advertised: Advertised,
    /// Media settings.
    pub media: MediaConfig,
    /// ICE servers for clients.
    pub ice_servers: Vec<IceServer>,
    /// Capacity limits.
    pub limits: LimitsConfig,
    /// How long a participant whose socket dropped waits for a resume.
    pub resume_grace: Duration,
    /// Where room events go (webhooks).
    pub webhooks: crate::webhooks::Webhooks,
}

impl RoomContext {
    /// What a room's state needs (no socket).
    pub fn settings(&self) -> RoomSettings {
        RoomSettings {
            advertised: self.advertised.clone(),
            media: self.media.clone(),
            limits: self.limits.clone(),
            resume_grace: self.resume_grace,
            epoch: WallClock::now(),
        }
    }
}

/// Maps the room's `Instant`s to Unix time, read once by the I/O shell when the room is made
/// (the room itself never reads a clock).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    at: Instant,
    unix_ms: u64,
}

impl WallClock {
    /// `at` is `unix_ms` milliseconds after the Unix epoch.
    pub fn new(at: Instant, unix_ms: u64) -> Self {
        Self { at, unix_ms }
    }

    /// The clocks now.
    pub fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::new(Instant::now(), unix_ms)
    }

    /// Unix milliseconds at `now` (times before the reading count as the reading).
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// The server's ICE host candidates: every address clients may send media to. The first UDP
/// one is the socket's own; more are the same port on other advertised IPs (one socket bound
/// to all of them). TCP ones are the ICE-TCP listener (passive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertised {
    /// UDP candidates (at least one).
    pub udp: Vec<SocketAddr>,
    /// ICE-TCP candidates (none when ICE-TCP is off).
    pub tcp: Vec<SocketAddr>,
}

impl Advertised {
    /// One UDP candidate, no TCP.
    pub fn udp_only(addr: SocketAddr) -> Self {
        Self {
            udp: vec![addr],
            tcp: Vec::new(),
        }
    }

    /// Every `ip` on the UDP port and, when given, the TCP port (duplicates dropped).
    pub fn new(ips: &[std::net::IpAddr], udp_port: u16, tcp_port: Option<u16>) -> Self {
        let mut unique: Vec<std::net::IpAddr> = Vec::new();
        for ip in ips {
            if !unique.contains(ip) {
                unique.push(*ip);
            }
        }
        Self {
            udp: unique
                .iter()
                .map(|ip| SocketAddr::new(*ip, udp_port))
                .collect(),
            tcp: tcp_port
                .map(|p| unique.iter().map(|ip| SocketAddr::new(*ip, p)).collect())
                .unwrap_or_default(),
        }
    }
}

/// What a room's state machine needs to know: no sockets, no channels.
#[derive(Clone, Debug)]
pub struct RoomSettings {
    /// The server's host candidates.
    pub advertised: Advertised,
    /// Media settings.
    pub media: MediaConfig,
    /// Capacity limits.
    pub limits: LimitsConfig,
    /// How long a participant whose socket dropped waits for a resume.
    pub resume_grace: Duration,
    /// Unix time of the room's `Instant`s (chat time stamps).
    pub epoch: WallClock,
}

/// How a participant takes part: through the web app's signaling, or through one HTTP
/// exchange (WHIP ingest, WHEP playback) that can never renegotiate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A WebSocket participant: publishes and subscribes, renegotiated as tracks come and go.
    Member,
    /// A WHIP publisher: a participant like the others, but it receives nothing (its one
    /// offer/answer exchange cannot take the room's tracks).
    Ingest,
    /// A WHEP viewer: receives on the fixed slots of its one offer, re-pointed by the room to
    /// the tracks it should see now; not shown to the room's participants.
    Viewer {
        /// Only this participant's tracks (`/whep/{room}/{participant}`); `None`: the room's
        /// speakers.
        of: Option<ParticipantId>,
    },
}

impl Role {
    /// The room API's and webhooks' name for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Member => "browser",
            Role::Ingest => "whip",
            Role::Viewer { .. } => "whep",
        }
    }

    /// A viewer: not a member of the room as the others see it.
    pub fn is_viewer(&self) -> bool {
        matches!(self, Role::Viewer { .. })
    }
}

/// A join the room accepted.
#[derive(Debug)]
pub struct JoinAccepted {
    /// The other members at the time of joining.
    pub participants: Vec<ParticipantInfo>,
    /// The first resume token.
    pub resume_token: String,
}

/// Why a room did not take a join.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The room was closing; the registry retries with a fresh room.
    #[error("room is closing")]
    Closing,
    /// The peer connection could not be created.
    #[error("could not create the peer connection: {0}")]
    PeerConnection(String),
    /// No room could be reached after retries.
    #[error("room unavailable")]
    Unavailable,
    /// The room has `limits.max_participants_per_room` members.
    #[error("the room is full")]
    RoomFull,
    /// `limits.max_rooms` rooms are open.
    #[error("the server has too many rooms")]
    ServerFull,
    /// A viewer asked for a participant the room does not have.
    #[error("no such participant in the room")]
    UnknownParticipant,
}

impl JoinError {
    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::Closing | JoinError::Unavailable | JoinError::PeerConnection(_) => {
                ErrorCode::Internal
            }
            JoinError::RoomFull => ErrorCode::RoomFull,
            JoinError::ServerFull => ErrorCode::ServerFull,
            JoinError::UnknownParticipant => ErrorCode::InvalidRoom,
        }
    }
}

/// Commands from signaling sessions to a room task. A session can only name its own
/// participant id, which the room minted for it.
#[derive(Debug)]
pub enum RoomCmd {
    /// Add a participant.
    Join {
        /// Its id.
        id: ParticipantId,
        /// Its display name.
        name: DisplayName,
        /// What it may do (and its identity, unique per room).
        grant: Grant,
        /// How it takes part.
        role: Role,
        /// Where the room sends its signaling.
        signal: mpsc::Sender<ServerMsg>,
        /// The outcome.
        reply: oneshot::Sender<Result<JoinAccepted, JoinError>>,
    },
    /// The client's offer.
    Offer {
        /// Who.
        id: ParticipantId,
        /// SDP.
        sdp: String,
        /// What its tracks are, by its own track id.
        sources: HashMap<String, TrackSource>,
    },
    /// The participant turned one of its own tracks off or on.
    SelfMute {
        /// Who.
        id: ParticipantId,
        /// Its own id of the track.
        track_id: String,
        /// Off or on.
        muted: bool,
    },
    /// The client's answer.
    Answer {
        /// Who.
        id: ParticipantId,
        /// SDP.
        sdp: String,
    },
    /// A trickled candidate (`None`: end of candidates).
    Candidate {
        /// Who.
        id: ParticipantId,
        /// The candidate.
        candidate: Option<CandidateInit>,
    },
    /// How the participant shows a remote video track.
    TrackView {
        /// Who.
        id: ParticipantId,
        /// The remote track.
        track_id: TrackId,
        /// Visibility and rendered size.
        view: View,
    },
    /// The participant leaves.
    Leave {
        /// Who.
        id: ParticipantId,
    },
    /// The participant's socket dropped without `leave`: it may resume within the grace period.
    Detach {
        /// Who.
        id: ParticipantId,
    },
    /// A new socket takes a detached (or half-open) session back.
    Resume {
        /// Who.
        id: ParticipantId,
        /// The resume token it presents.
        token: String,
        /// Where the room sends its signaling from now on.
        signal: mpsc::Sender<ServerMsg>,
        /// The outcome.
        reply: oneshot::Sender<Result<resume::ResumeAccepted, resume::ResumeError>>,
    },
    /// The server is draining: no resume will be accepted any more, so participants whose
    /// socket dropped are removed now instead of at the end of their grace period.
    Drain,
    /// Report the room's state (room API).
    Snapshot {
        /// Where to send it.
        reply: oneshot::Sender<RoomSnapshot>,
    },
    /// Set the room's options (room API).
    Configure {
        /// The options.
        options: admin::RoomOptions,
    },
    /// Close the room, removing everyone (room API).
    Close {
        /// What the participants are told.
        reason: String,
    },
    /// Remove a participant (room API).
    Remove {
        /// Who.
        id: ParticipantId,
        /// What it is told.
        reason: String,
        /// The outcome.
        reply: oneshot::Sender<Result<(), admin::AdminError>>,
    },
    /// Mute or unmute a published track (room API).
    Mute {
        /// The publisher.
        id: ParticipantId,
        /// The track.
        track_id: TrackId,
        /// Mute (`true`) or unmute.
        muted: bool,
        /// The outcome.
        reply: oneshot::Sender<Result<(), admin::AdminError>>,
    },
    /// Change a participant's name and/or metadata (room API).
    Update {
        /// Who.
        id: ParticipantId,
        /// New name.
        name: Option<DisplayName>,
        /// New metadata (empty clears it).
        metadata: Option<String>,
        /// The participant as it is now.
        reply: oneshot::Sender<Result<ParticipantSnapshot, admin::AdminError>>,
    },
    /// Send a data message from the server (room API).
    SendData {
        /// Application topic.
        topic: Option<String>,
        /// Any JSON value.
        payload: serde_json::Value,
        /// To these participants only (empty: everyone).
        to: Vec<ParticipantId>,
        /// How many it was sent to.
        reply: oneshot::Sender<usize>,
    },
    /// Fault injection for the containment test: the room task panics.
    #[cfg(test)]
    Panic,
}

/// A room as the room API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSnapshot {
    /// Room name.
    pub name: String,
    /// Members, sorted by id.
    pub participants: Vec<ParticipantSnapshot>,
    /// WHEP viewers watching the room (not members).
    pub viewers: usize,
}

/// One member in a [`RoomSnapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantSnapshot {
    /// Participant id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// How it takes part: `browser` (WebSocket signaling) or `whip`.
    pub kind: &'static str,
    /// Metadata set through the room API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Peer connection state (`new`, `connecting`, `connected`, `disconnected`, ...).
    pub connection_state: String,
    /// Seconds since the join.
    pub joined_seconds: u64,
    /// A server offer awaits the answer.
    pub negotiating: bool,
    /// Tracks this participant publishes.
    pub published: Vec<TrackSnapshot>,
    /// Number of other members' tracks it receives.
    pub subscribed_tracks: usize,
    /// Bitrate the server sends it, bits per second.
    pub bitrate_out_bps: u64,
}

/// One published track in a [`RoomSnapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct TrackSnapshot {
    /// Track id.
    pub track_id: TrackId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Codec mime type.
    pub codec: String,
    /// Bitrate received from the publisher, bits per second.
    pub bitrate_in_bps: u64,
    /// Packets received from the publisher.
    pub packets_in: u64,
    /// Subscribers this track is forwarded to.
    pub subscribers: usize,
    /// Muted through the room API (not forwarded).
    pub muted: bool,
}
