//! What a member says about its own tracks: what each carries (`offer.sources`: camera,
//! microphone, screen) and whether it turned one off (`mute`). The room stamps it on the
//! published track, tells the others, and shows it to later joiners. A self mute changes no
//! forwarding (the browser already sends silence or black frames) and never lifts a server mute.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tracing::debug;

use super::state::Room;
use crate::ids::{ParticipantId, PeerKey, TrackSource};
use crate::media::forwarder::TrackKey;
use crate::signal::protocol::{ErrorCode, ServerMsg};

/// Sources claimed per offer at most (a client has a handful of tracks).
const MAX_CLAIMS: usize = 64;

/// A member's claims, by its own track id (`MediaStreamTrack.id`, the `msid` track id).
#[derive(Debug, Default)]
pub struct TrackClaims {
    sources: HashMap<String, TrackSource>,
    self_muted: HashSet<String>,
}

impl TrackClaims {
    /// The sources of its latest offer (replacing the previous ones; bounded).
    pub fn set_sources(&mut self, sources: HashMap<String, TrackSource>) {
        self.sources = sources.into_iter().take(MAX_CLAIMS).collect();
        let sources = &self.sources;
        self.self_muted.retain(|t| sources.contains_key(t));
    }

    /// What it said the track is.
    pub fn source(&self, track: &str) -> Option<TrackSource> {
        self.sources.get(track).copied()
    }

    /// Whether it turned the track off.
    pub fn is_self_muted(&self, track: &str) -> bool {
        self.self_muted.contains(track)
    }

    /// Records a self mute; `false` when the track is not one of its offer's.
    fn set_self_muted(&mut self, track: &str, muted: bool) -> bool {
        if !self.sources.contains_key(track) {
            return false;
        }
        if muted {
            self.self_muted.insert(track.to_owned());
        } else {
            self.self_muted.remove(track);
        }
        true
    }
}

impl Room {
    /// A track of `key` was just published as `tk`: it takes what its publisher said of it.
    pub(super) fn apply_claims(&mut self, key: PeerKey, tk: TrackKey) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let Some(t) = self.forwarder.track_mut(tk) else {
            return;
        };
        let claims = peer.claims();
        t.source = TrackSource::checked(claims.source(&t.source_track_id), t.kind);
        t.self_muted = claims.is_self_muted(&t.source_track_id);
    }

    /// `mute` from a member: one of its own tracks turned off or on.
    pub(super) fn self_mute(&mut self, id: &ParticipantId, track: &str, muted: bool, now: Instant) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let published = peer.published(track);
        let known = peer.claims_mut().set_self_muted(track, muted);
        let Some(tk) = published else {
            if !known {
                let msg = ServerMsg::error(ErrorCode::UnknownTrack, "no such track of yours");
                self.send_to(key, msg, now);
            }
            // Not flowing yet: it is stamped on the track when it is published.
            return;
        };
        let Some(t) = self.forwarder.track_mut(tk) else {
            return;
        };
        if t.self_muted == muted {
            return;
        }
        t.self_muted = muted;
        debug!(track = %t.id, muted, "self mute");
        let (participant_id, track_id) = (t.publisher_id.clone(), t.id.clone());
        let source_track_id = t.source_track_id.clone();
        let msg = ServerMsg::track_mute(muted, participant_id, track_id, source_track_id, false);
        self.broadcast(key, msg, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_mute_needs_a_track_of_the_offer_and_new_offers_forget_old_tracks() {
        let mut c = TrackClaims::default();
        assert!(!c.set_self_muted("mic", true), "no offer yet");
        c.set_sources(HashMap::from([
            ("mic".to_owned(), TrackSource::Microphone),
            ("scr".to_owned(), TrackSource::Screen),
        ]));
        assert!(c.set_self_muted("mic", true));
        assert!(c.is_self_muted("mic"));
        assert_eq!(c.source("scr"), Some(TrackSource::Screen));
        c.set_sources(HashMap::from([("scr".to_owned(), TrackSource::Screen)]));
        assert!(!c.is_self_muted("mic"), "gone with its track");
        assert_eq!(c.source("mic"), None);
    }

    #[test]
    fn claims_are_bounded() {
        let mut c = TrackClaims::default();
        c.set_sources(
            (0..1000)
                .map(|i| (format!("t{i}"), TrackSource::Camera))
                .collect(),
        );
        assert_eq!(c.sources.len(), MAX_CLAIMS);
    }

    #[test]
    fn a_claimed_source_must_fit_the_kind() {
        use crate::ids::TrackKind;
        assert_eq!(
            TrackSource::checked(Some(TrackSource::Screen), TrackKind::Video),
            TrackSource::Screen
        );
        assert_eq!(
            TrackSource::checked(Some(TrackSource::Screen), TrackKind::Audio),
            TrackSource::Microphone
        );
        assert_eq!(
            TrackSource::checked(None, TrackKind::Video),
            TrackSource::Camera
        );
    }
}
