//! Membership: join (one session per identity), removal, signaling to members, and the room
//! as the room API shows it.

use std::time::Instant;

use rtc::sansio::Protocol;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::drive::pc_state_index;
use super::peer::Peer;
use super::state::{push_transmit, Room};
use super::{JoinAccepted, JoinError, ParticipantSnapshot, Role, RoomSnapshot, TrackSnapshot};
use crate::auth::Grant;
use crate::ids::{DisplayName, ParticipantId, PeerKey};
use crate::signal::protocol::{ErrorCode, ParticipantInfo, ServerMsg, TrackInfo};
use crate::telemetry::METRICS;
use crate::transport::udp::Route;
use crate::webhooks::EventKind;

impl Room {
    pub(super) fn join(
        &mut self,
        id: ParticipantId,
        name: DisplayName,
        grant: Grant,
        role: Role,
        signal: mpsc::Sender<ServerMsg>,
        now: Instant,
    ) -> Result<JoinAccepted, JoinError> {
        if let Role::Viewer { of: Some(target) } = &role {
            let present = self
                .by_id
                .get(target)
                .and_then(|k| self.peers.get(k))
                .is_some_and(|p| !p.role().is_viewer());
            if !present {
                return Err(JoinError::UnknownParticipant);
            }
        }
        let viewer = role.is_viewer();
        // One session per identity: a second join (a reload, another device) replaces the first
        // (a viewer only replaces a viewer: one may watch a room and take part in it).
        if let Some(identity) = &grant.identity {
            let previous = self
                .peers
                .values()
                .find(|p| {
                    p.grant().identity.as_ref() == Some(identity) && p.role().is_viewer() == viewer
                })
                .map(|p| p.key());
            if let Some(old) = previous {
                info!(
                    identity,
                    "identity rejoined; replacing the previous session"
                );
                self.remove_peer(
                    old,
                    Some((
                        ErrorCode::Removed,
                        "replaced by a new session with the same identity",
                    )),
                    now,
                );
            }
        }
        if self.closed {
            return Err(JoinError::Closing);
        }
        if self.peers.len() >= self.max_participants() {
            return Err(JoinError::RoomFull);
        }
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        let mut peer = Peer::new(
            key,
            id.clone(),
            name,
            grant,
            signal,
            &self.settings.advertised,
            now,
        )
        .map_err(|e| JoinError::PeerConnection(e.to_string()))?
        .with_role(role);
        self.demux.register(
            peer.ufrag().to_owned(),
            Route {
                inbox: self.inbox.clone(),
                peer: key,
            },
        );
        METRICS.peer_connections[pc_state_index(peer.state())].inc();
        count_participant(peer.role(), 1);

        // Existing tracks become pending legs of the newcomer (offered after its first offer).
        let existing: Vec<_> = self.forwarder.tracks().map(|(k, _)| k).collect();
        for tk in existing {
            self.attach(tk, &mut peer);
        }
        let participants = self.participant_infos(None);
        let resume_token = peer.presence().token().as_str().to_owned();
        let info = ParticipantInfo {
            id: id.clone(),
            name: peer.name().as_str().to_owned(),
            metadata: peer.metadata().map(str::to_owned),
            tracks: vec![],
        };
        info!(parent: peer.span(), name = peer.name().as_str(), role = peer.role().as_str(), "joined");
        self.peers.insert(key, peer);
        self.by_id.insert(id, key);
        self.empty_since = None;
        self.mark_dirty(key);
        if !viewer {
            self.quality.joined(key);
            let who = self.peers.get(&key).map(Room::participant_ref);
            self.event(EventKind::ParticipantJoined, who, None);
            self.broadcast(key, ServerMsg::ParticipantJoined { participant: info }, now);
        }
        Ok(JoinAccepted {
            participants,
            resume_token,
        })
    }

    /// Members as others see them (optionally excluding one).
    pub(super) fn participant_infos(&self, except: Option<PeerKey>) -> Vec<ParticipantInfo> {
        let mut list: Vec<ParticipantInfo> = self
            .peers
            .values()
            .filter(|p| Some(p.key()) != except && !p.role().is_viewer())
            .map(|p| ParticipantInfo {
                id: p.id().clone(),
                name: p.name().as_str().to_owned(),
                metadata: p.metadata().map(str::to_owned),
                tracks: self
                    .forwarder
                    .tracks_of(p.key())
                    .into_iter()
                    .filter_map(|tk| self.forwarder.track(tk))
                    .map(|t| TrackInfo {
                        track_id: t.id.clone(),
                        kind: t.kind,
                        source: t.source,
                        muted: t.muted,
                        self_muted: t.self_muted,
                    })
                    .collect(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Sends `msg` to everyone but `except`; anyone who cannot take it is removed afterwards.
    pub(super) fn broadcast(&mut self, except: PeerKey, msg: ServerMsg, now: Instant) {
        self.broadcast_except(Some(except), msg, now);
    }

    /// Sends `msg` to every member.
    pub(super) fn broadcast_all(&mut self, msg: ServerMsg, now: Instant) {
        self.broadcast_except(None, msg, now);
    }

    fn broadcast_except(&mut self, except: Option<PeerKey>, msg: ServerMsg, now: Instant) {
        let stuck: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| Some(p.key()) != except && !p.send(msg.clone()))
            .map(|p| p.key())
            .collect();
        for key in stuck {
            self.remove_unreachable(key, now);
        }
    }

    /// Sends `msg` to one member (removed if it cannot take it).
    pub(super) fn send_to(&mut self, key: PeerKey, msg: ServerMsg, now: Instant) {
        if let ServerMsg::Error { code, .. } = &msg {
            METRICS.signaling_error(*code);
        }
        let ok = self.peers.get(&key).is_none_or(|p| p.send(msg));
        if !ok {
            self.remove_unreachable(key, now);
        }
    }

    /// A member whose signaling queue is full or closed.
    fn remove_unreachable(&mut self, key: PeerKey, now: Instant) {
        if let Some(p) = self.peers.get(&key) {
            warn!(parent: p.span(), "signaling queue full or closed; removing participant");
        }
        self.remove_peer(key, None, now);
    }

    /// Removes a participant: its tracks leave every subscriber (renegotiated), its legs are
    /// dropped, its ufrag is unrouted, its peer connection closed. Logged under its own span.
    pub(super) fn remove_peer(
        &mut self,
        key: PeerKey,
        reason: Option<(ErrorCode, &str)>,
        now: Instant,
    ) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        let span = peer.span().clone();
        let _entered = span.enter();
        self.by_id.remove(peer.id());
        self.demux.unregister(peer.ufrag().to_owned());
        for tk in self.forwarder.tracks_of(key) {
            self.unpublish(tk, now);
        }
        self.forwarder.drop_subscriber(key);
        self.speakers.forget(key);
        self.chat.forget(key);
        self.quality.forget(key);
        if let Some((code, message)) = reason {
            METRICS.signaling_error(code);
            let _ = peer.send(ServerMsg::error(code, message));
        }
        peer.close();
        while let Some(t) = peer.pc().poll_write() {
            push_transmit(&mut self.transmits, &mut self.tcp_transmits, t);
        }
        METRICS.peer_connections[pc_state_index(peer.state())].dec();
        count_participant(peer.role(), -1);
        info!("left");
        let id = peer.id().clone();
        let viewer = peer.role().is_viewer();
        if !viewer {
            self.event(
                EventKind::ParticipantLeft,
                Some(Room::participant_ref(&peer)),
                None,
            );
        }
        drop(peer);
        self.negotiate_due = true;
        if self.peers.is_empty() {
            self.empty_since = Some(now);
        }
        if !viewer {
            self.broadcast(key, ServerMsg::ParticipantLeft { participant_id: id }, now);
            // A viewer of this participant now shows nothing.
            self.rebind_viewers(now);
        }
    }

    /// The room as the room API shows it.
    pub fn snapshot(&self, now: Instant) -> RoomSnapshot {
        let mut participants: Vec<ParticipantSnapshot> = self
            .peers
            .values()
            .filter(|p| !p.role().is_viewer())
            .map(|p| {
                let published = self
                    .forwarder
                    .tracks_of(p.key())
                    .into_iter()
                    .filter_map(|tk| self.forwarder.track(tk))
                    .map(|t| TrackSnapshot {
                        track_id: t.id.clone(),
                        kind: t.kind,
                        codec: t.codec.mime_type.clone(),
                        bitrate_in_bps: t.rate.bps(),
                        packets_in: t.packets_in,
                        subscribers: t.downs.len(),
                        muted: t.muted,
                    })
                    .collect();
                let (subscribed_tracks, bitrate_out_bps) = self
                    .forwarder
                    .tracks()
                    .flat_map(|(_, t)| t.downs.iter())
                    .filter(|d| d.subscriber == p.key())
                    .fold((0, 0), |(n, bps), d| (n + 1, bps + d.rate.bps()));
                ParticipantSnapshot {
                    id: p.id().clone(),
                    name: p.name().as_str().to_owned(),
                    kind: p.role().as_str(),
                    metadata: p.metadata().map(str::to_owned),
                    connection_state: p.state().to_string(),
                    joined_seconds: now.saturating_duration_since(p.joined_at()).as_secs(),
                    negotiating: p.negotiation().in_flight().is_some(),
                    published,
                    subscribed_tracks,
                    bitrate_out_bps,
                }
            })
            .collect();
        participants.sort_by(|a, b| a.id.cmp(&b.id));
        RoomSnapshot {
            name: self.name.to_string(),
            participants,
            viewers: self.peers.values().filter(|p| p.role().is_viewer()).count(),
        }
    }
}

/// Counts a participant in or out: members and WHIP publishers are participants (WHIP ones
/// also WHIP sessions); WHEP viewers are not participants, only WHEP sessions.
fn count_participant(role: &Role, delta: i64) {
    match role {
        Role::Member => METRICS.participants.add(delta),
        Role::Ingest => {
            METRICS.participants.add(delta);
            METRICS.whip_sessions.add(delta);
        }
        Role::Viewer { .. } => METRICS.whep_sessions.add(delta),
    }
}
