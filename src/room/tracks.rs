//! Track wiring: a publisher's new track becomes an up track with a pending leg on every
//! subscriber; an ended track (or a departed publisher) is detached from all of them.

use std::collections::HashSet;
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

/// The `msid` track ids of the m-sections an offer (or answer) of a client still sends on: a
/// section made `inactive` or `recvonly` (a `removeTrack`), or rejected with port 0, sends none.
pub fn sending_track_ids(sdp: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    // The current section: whether it sends, and its msid track id.
    let mut section: Option<(bool, Option<String>)> = None;
    let mut close = |section: &mut Option<(bool, Option<String>)>| {
        if let Some((true, Some(track))) = section.take() {
            out.insert(track);
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            close(&mut section);
            let port_zero = m.split_whitespace().nth(1) == Some("0");
            section = Some((!port_zero, None));
        } else if let Some((sends, track)) = section.as_mut() {
            match line {
                "a=inactive" | "a=recvonly" => *sends = false,
                _ => {
                    if let Some(msid) = line.strip_prefix("a=msid:") {
                        *track = msid.split_whitespace().nth(1).map(str::to_owned);
                    }
                }
            }
        }
    }
    close(&mut section);
    out
}

impl Room {
    /// A client offer was applied: its tracks that no longer send (the browser removed the
    /// sender: a stopped screen share, an unpublished camera) leave the room. rtc keeps the
    /// receiver of such a transceiver, so nothing else would say so.
    pub(super) fn unpublish_withdrawn(&mut self, key: PeerKey, sdp: &str, now: Instant) {
        let sending = sending_track_ids(sdp);
        let withdrawn: Vec<TrackKey> = self
            .forwarder
            .tracks_of(key)
            .into_iter()
            .filter(|tk| {
                self.forwarder
                    .track(*tk)
                    .is_some_and(|t| !sending.contains(&t.source_track_id))
            })
            .collect();
        for tk in withdrawn {
            self.unpublish(tk, now);
        }
    }

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
        let Some((track_id, source, audio_level_id)) = self
            .forwarder
            .track(tk)
            .map(|t| (t.id.clone(), t.source, t.rtp_map.audio_level_id()))
        else {
            return;
        };
        info!(track = %track_id, ?kind, ?audio_level_id, "track published");
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

#[cfg(test)]
mod tests {
    use super::sending_track_ids;

    #[test]
    fn removed_senders_and_rejected_sections_send_nothing() {
        let sdp = "v=0\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=msid:s mic\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s cam\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\na=msid:s screen\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=msid:s other\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=msid:s gone\r\n";
        let ids = sending_track_ids(sdp);
        let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["cam", "mic"]);
    }
}
