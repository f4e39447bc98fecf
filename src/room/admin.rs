//! The room API's write operations, as the room applies them: options, closing the room,
//! removing a participant, muting a published track, renaming and metadata, data messages.
//! Each runs at API rate inside the room task; the HTTP mapping is in `http::api`.

use std::time::{Duration, Instant};

use tracing::info;

use super::state::Room;
use super::ParticipantSnapshot;
use crate::ids::{DisplayName, ParticipantId, TrackId};
use crate::media::forwarder::TrackKey;
use crate::signal::protocol::{ErrorCode, ServerMsg};

/// Options of a room created through the room API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomOptions {
    /// At most this many participants (never above the server's limit).
    pub max_participants: Option<usize>,
    /// How long the room stays open with nobody in it (`None`: it closes when the last
    /// participant leaves, as rooms created by a join do).
    pub empty_timeout: Option<Duration>,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No such participant in the room.
    #[error("no such participant in the room")]
    UnknownParticipant,
    /// The participant publishes no such track.
    #[error("the participant publishes no such track")]
    UnknownTrack,
}

impl Room {
    /// Applies options (a create on an existing room updates it).
    pub(super) fn configure(&mut self, options: RoomOptions, now: Instant) {
        if self.peers.is_empty() {
            self.empty_since.get_or_insert(now);
        }
        self.options = options;
    }

    /// Whether the room is done: closed through the API, or empty past its empty timeout.
    pub fn should_close(&self, now: Instant) -> bool {
        if self.closed {
            return true;
        }
        if !self.peers.is_empty() {
            return false;
        }
        match (self.options.empty_timeout, self.empty_since) {
            (Some(timeout), Some(since)) => now.saturating_duration_since(since) >= timeout,
            _ => true,
        }
    }

    /// The participant limit in force.
    pub(super) fn max_participants(&self) -> usize {
        let server = self.settings.limits.max_participants_per_room;
        self.options
            .max_participants
            .map_or(server, |m| m.min(server))
    }

    /// Closes the room: everyone is removed with `reason`.
    pub(super) fn close(&mut self, reason: &str, now: Instant) {
        info!(reason, "room closed through the room API");
        let keys: Vec<_> = self.peers.keys().copied().collect();
        for key in keys {
            self.remove_peer(key, Some((ErrorCode::Removed, reason)), now);
        }
        self.closed = true;
    }

    /// Removes one participant (or viewer), telling it why.
    pub(super) fn remove(
        &mut self,
        id: &ParticipantId,
        reason: &str,
        now: Instant,
    ) -> Result<(), AdminError> {
        let key = self.key_of(id).ok_or(AdminError::UnknownParticipant)?;
        info!(participant = %id, reason, "participant removed through the room API");
        self.remove_peer(key, Some((ErrorCode::Removed, reason)), now);
        Ok(())
    }

    /// Mutes (the server stops forwarding it) or unmutes a published track; everyone is told.
    pub(super) fn mute(
        &mut self,
        id: &ParticipantId,
        track_id: &TrackId,
        muted: bool,
        now: Instant,
    ) -> Result<(), AdminError> {
        let key = self.key_of(id).ok_or(AdminError::UnknownParticipant)?;
        let tk: TrackKey = self
            .forwarder
            .key_of(track_id)
            .filter(|tk| {
                self.forwarder
                    .track(*tk)
                    .is_some_and(|t| t.publisher == key)
            })
            .ok_or(AdminError::UnknownTrack)?;
        let Some(source_track_id) = self.forwarder.set_muted(tk, muted) else {
            return Err(AdminError::UnknownTrack);
        };
        info!(participant = %id, track = %track_id, muted, "track mute set through the room API");
        if !muted {
            // Video legs pick up again at a keyframe.
            if let Some(layer) = self.forwarder.track(tk).and_then(|t| t.layers.lowest()) {
                self.request_keyframe(tk, layer, now);
            }
        }
        let (participant_id, track_id) = (id.clone(), track_id.clone());
        let msg = ServerMsg::track_mute(muted, participant_id, track_id, source_track_id, true);
        self.broadcast_all(msg, now);
        Ok(())
    }

    /// Changes a participant's name and/or metadata; everyone is told. Returns it as the room
    /// API shows it.
    pub(super) fn update(
        &mut self,
        id: &ParticipantId,
        name: Option<DisplayName>,
        metadata: Option<String>,
        now: Instant,
    ) -> Result<ParticipantSnapshot, AdminError> {
        let key = self.key_of(id).ok_or(AdminError::UnknownParticipant)?;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(AdminError::UnknownParticipant)?;
        if let Some(name) = name {
            peer.set_name(name);
        }
        if let Some(metadata) = metadata {
            peer.set_metadata((!metadata.is_empty()).then_some(metadata));
        }
        let viewer = peer.role().is_viewer();
        if !viewer {
            if let Some(info) = self
                .participant_infos(None)
                .into_iter()
                .find(|p| &p.id == id)
            {
                self.broadcast_all(ServerMsg::ParticipantUpdated { participant: info }, now);
            }
        }
        self.snapshot(now)
            .participants
            .into_iter()
            .find(|p| &p.id == id)
            .ok_or(AdminError::UnknownParticipant)
    }

    /// Sends a data message from the server to everyone, or to the listed participants.
    /// Returns how many it was sent to.
    pub(super) fn send_data(
        &mut self,
        topic: Option<String>,
        payload: serde_json::Value,
        to: &[ParticipantId],
        now: Instant,
    ) -> usize {
        let msg = ServerMsg::Data {
            from: None,
            topic,
            payload,
        };
        let targets: Vec<_> = self
            .peers
            .values()
            .filter(|p| !p.role().is_viewer() && (to.is_empty() || to.contains(p.id())))
            .map(|p| p.key())
            .collect();
        for key in &targets {
            self.send_to(*key, msg.clone(), now);
        }
        targets.len()
    }
}
