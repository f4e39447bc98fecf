//! Active speakers, told to the room: the observer ([`SpeakerObserver`]) hears every
//! publisher's audio level on the packet path; here its changes become `active-speakers`
//! messages to every member. The allocator also reads it (a speaker's video goes first).
//!
//! [`SpeakerObserver`]: crate::media::speaker::SpeakerObserver

use std::time::Instant;

use super::state::Room;
use crate::signal::protocol::{ServerMsg, Speaker};
use crate::telemetry::METRICS;

impl Room {
    /// Sends `active-speakers` to everyone when the speakers changed.
    pub(super) fn announce_speakers(&mut self, now: Instant) {
        let Some(list) = self.speakers.evaluate(now) else {
            return;
        };
        // Viewers' slots follow the speakers; someone who stopped speaking keeps their place
        // ahead of those who never spoke.
        let mut order: Vec<_> = list.iter().map(|(k, _)| *k).collect();
        let before: Vec<_> = self
            .speaker_order
            .iter()
            .filter(|k| !order.contains(k))
            .copied()
            .collect();
        order.extend(before);
        order.retain(|k| self.peers.contains_key(k));
        self.speaker_order = order;
        let speakers: Vec<Speaker> = list
            .into_iter()
            .filter_map(|(key, activity)| {
                let peer = self.peers.get(&key)?;
                Some(Speaker {
                    participant_id: peer.id().clone(),
                    level: (activity * 100.0).round() / 100.0,
                })
            })
            .collect();
        tracing::debug!(n = speakers.len(), "active speakers");
        METRICS.speaker_changes.inc();
        // Nobody is excluded: a speaker's own client shows that it is heard.
        self.broadcast_all(ServerMsg::ActiveSpeakers { speakers }, now);
        self.rebind_viewers(now);
    }
}
