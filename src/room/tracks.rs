//! Track wiring: a publisher's new track becomes an up track with a pending leg on every
//! subscriber; an ended track (or a departed publisher) is detached from all of them.

use std::time::Instant;

use rtc::peer_connection::event::RTCTrackEventInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tracing::{debug, info, warn};

use super::peer::Peer;
use super::state::Room;
use crate::ids::{PeerKey, TrackKind};
use crate::media::downtrack::DownTrack;
use crate::media::forwarder::TrackKey;
use crate::media::forwarder::UpTrack;
use crate::signal::protocol::ServerMsg;
use crate::telemetry::{kind_index, DropReason, METRICS};
use crate::webhooks::{EventKind, TrackRef};

/// A track as webhooks describe it.
fn track_ref(t: &UpTrack) -> TrackRef {
    TrackRef {
        id: t.id.to_string(),
        kind: t.kind.as_str().to_owned(),
        codec: t.codec.mime_type.clone(),
    }
}

impl Room {
    /// Adds a pending leg of track `tk` to `peer` (offered in its next server offer).
    pub(super) fn attach(&mut self, tk: TrackKey, peer: &mut Peer) {
        let Some(t) = self.forwarder.track(tk) else {
            return;
        };
        // WHIP publishers receive nothing; WHEP viewers receive on their fixed slots
        // (`room::viewers`), never on legs added by renegotiation.
        if t.publisher == peer.key()
            || !peer.grant().can_subscribe
            || *peer.role() != super::Role::Member
        {
            return;
        }
        let (publisher_id, track_id, kind) = (t.publisher_id.clone(), t.id.clone(), t.kind);
        let codec = t.codec.clone();
        let clock_rate = codec.clock_rate;
        match peer.add_down_track(&publisher_id, &track_id, kind, codec, tk) {
            Ok((sender, ssrc)) => {
                self.forwarder
                    .subscribe(tk, DownTrack::new(peer.key(), sender, ssrc, clock_rate));
                self.negotiate_due = true;
            }
            Err(e) => warn!(%e, track = %track_id, "could not add track for subscriber"),
        }
    }

    /// A publisher's receiver produced its first packet: publish it to the room.
    pub(super) fn on_track_open(&mut self, key: PeerKey, init: RTCTrackEventInit, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.first_sight(init.receiver_id) {
            // Repeated after renegotiation, or the next simulcast layer of a published track.
            if let Some(tk) = peer.published(&init.track_id) {
                if let Some(slot) = self.forwarder.add_layer(tk, init.rid.as_deref(), init.ssrc) {
                    debug!(parent: peer.span(), rid = ?init.rid, ssrc = init.ssrc, slot, "layer");
                }
            }
            return;
        }
        let published = peer.published_count();
        if !peer.grant().can_publish || published >= self.settings.limits.max_tracks_per_participant
        {
            // Its packets then count as `unknown_track` drops; nothing is forwarded.
            warn!(published, "track refused (no publish grant or track limit)");
            METRICS.count_drop(DropReason::NotPermitted, 1);
            return;
        }
        let Some(receiver) = peer.pc().rtp_receiver(init.receiver_id) else {
            return;
        };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Audio => TrackKind::Audio,
            RtpCodecKind::Video => TrackKind::Video,
            _ => return,
        };
        // The codec the publisher actually sends (known: OnOpen follows the first packet).
        let Some(codec) = receiver.track().codec(init.ssrc).cloned() else {
            return;
        };
        let Some(rtp_map) = peer.receiver_rtp_map(init.receiver_id) else {
            return;
        };
        let publisher_id = peer.id().clone();
        let tk = self.forwarder.publish(
            key,
            publisher_id.clone(),
            kind,
            init.receiver_id,
            init.track_id.clone(),
            codec,
            rtp_map,
        );
        self.forwarder.add_layer(tk, init.rid.as_deref(), init.ssrc);
        peer.add_published(init.track_id.clone(), tk);
        METRICS.tracks[kind_index(kind)].inc();
        self.apply_claims(key, tk);
        let Some((track_id, source)) = self.forwarder.track(tk).map(|t| (t.id.clone(), t.source))
        else {
            return;
        };
        info!(track = %track_id, ?kind, "track published");
        if let Some(t) = self.forwarder.track(tk) {
            let track = track_ref(t);
            let who = self.peers.get(&key).map(Room::participant_ref);
            self.event(EventKind::TrackPublished, who, Some(track));
        }
        let others: Vec<PeerKey> = self.peers.keys().copied().filter(|k| *k != key).collect();
        for k in others {
            if let Some(mut sub) = self.peers.remove(&k) {
                self.attach(tk, &mut sub);
                self.peers.insert(k, sub);
            }
        }
        let msg = ServerMsg::TrackPublished {
            participant_id: publisher_id,
            track_id,
            kind,
            source,
        };
        self.broadcast(key, msg, now);
        self.rebind_viewers(now);
    }

    /// Removes a published track from the room and from every subscriber.
    pub(super) fn unpublish(&mut self, tk: TrackKey, now: Instant) {
        let Some(mut t) = self.forwarder.unpublish(tk) else {
            return;
        };
        METRICS.tracks[kind_index(t.kind)].dec();
        for d in std::mem::take(&mut t.downs) {
            let Some(sub) = self.peers.get_mut(&d.subscriber) else {
                continue;
            };
            if sub.role().is_viewer() {
                self.park_viewer_leg(d);
            } else {
                sub.remove_down_track(d.sender, d.ssrc);
            }
        }
        if let Some(p) = self.peers.get_mut(&t.publisher) {
            p.remove_published(tk);
        }
        self.negotiate_due = true;
        info!(track = %t.id, "track unpublished");
        let who = self.peers.get(&t.publisher).map(Room::participant_ref);
        self.event(EventKind::TrackUnpublished, who, Some(track_ref(&t)));
        let msg = ServerMsg::TrackUnpublished {
            participant_id: t.publisher_id.clone(),
            track_id: t.id.clone(),
        };
        self.broadcast(t.publisher, msg, now);
        self.rebind_viewers(now);
    }
}
