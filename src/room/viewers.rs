//! WHEP viewers: a receive-only client makes one offer and can never take a renegotiation, so
//! its offer's m-lines are fixed *slots*. The room points each slot at the track the viewer
//! should see now — the current speakers' audio and video, or one participant's tracks — and
//! re-points it when speakers change or tracks come and go. A slot keeps its own SSRC and its
//! sequence/timestamp space across sources (the leg's munger splices the new source on, as at a
//! simulcast switch), and asks the new source for a keyframe.

use std::time::Instant;

use rtc::rtp_transceiver::RTCRtpSenderId;
use tracing::debug;

use super::state::Room;
use super::Role;
use crate::ids::{PeerKey, TrackKind};
use crate::media::downtrack::DownTrack;
use crate::media::forwarder::TrackKey;

/// One fixed receive slot of a viewer (one m-line of its offer).
#[derive(Debug)]
pub struct ViewerSlot {
    /// Audio or video.
    pub kind: TrackKind,
    /// The sender on the viewer's peer connection.
    pub sender: RTCRtpSenderId,
    /// The SSRC the viewer sees on this slot, whatever the source.
    pub ssrc: u32,
    /// The codec families the answer accepted for it (see [`family`]; empty: not negotiated).
    /// A source in any of them can be shown: the leg maps its payload type.
    pub codecs: Vec<String>,
    /// RTP clock rate of that codec.
    pub clock_rate: u32,
    /// The track it shows now.
    pub bound: Option<TrackKey>,
    /// Its leg while it shows nothing (its munger carries on when it is pointed again).
    pub parked: Option<DownTrack>,
}

/// The audio and video m-lines of an SDP, in order, with whether the remote side wants to
/// receive on them (`recvonly` or `sendrecv`).
pub fn media_sections(sdp: &str) -> Vec<(TrackKind, bool)> {
    /// One m-section as read so far.
    struct Section {
        kind: Option<TrackKind>,
        port_zero: bool,
        receives: bool,
        bundle_only: bool,
    }
    let mut sections: Vec<Section> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let kind = match parts.next() {
                Some("audio") => Some(TrackKind::Audio),
                Some("video") => Some(TrackKind::Video),
                _ => None,
            };
            sections.push(Section {
                kind,
                port_zero: parts.next() == Some("0"),
                // Receiving until a direction attribute says otherwise (sendrecv is the default).
                receives: true,
                bundle_only: false,
            });
        } else if let Some(s) = sections.last_mut() {
            match line {
                "a=sendonly" | "a=inactive" => s.receives = false,
                "a=bundle-only" => s.bundle_only = true,
                _ => {}
            }
        }
    }
    // Port 0 refuses a section, unless it is `bundle-only` (RFC 8843: a max-bundle offerer such
    // as GStreamer offers every section after the first that way).
    sections
        .into_iter()
        .filter_map(|s| {
            let kind = s.kind?;
            Some((kind, s.receives && (!s.port_zero || s.bundle_only)))
        })
        .collect()
}

/// A track a viewer could be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The track.
    pub track: TrackKey,
    /// Audio or video.
    pub kind: TrackKind,
    /// Its codec family (see [`family`]).
    pub codec: String,
    /// Lower shows first: the publisher's place among the speakers, then the newest track.
    pub rank: (usize, std::cmp::Reverse<TrackKey>),
}

/// What a slot and a source must share for the source to be shown on it: the codec's mime
/// type, lower case, with RED as the Opus it carries (a RED source goes onto an Opus slot as
/// its primary blocks, an Opus source onto a RED slot as plain Opus).
pub fn family(mime: &str) -> String {
    let mime = mime.to_ascii_lowercase();
    if mime == "audio/red" {
        "audio/opus".to_owned()
    } else {
        mime
    }
}

/// Which track each slot shows: per kind, the best-ranked candidates in a codec the slot
/// negotiated, each shown once; a slot keeps its track while that track is still among the
/// ones to show (no switch for a reshuffle). `slots`: (kind, negotiated codec families,
/// current track) per slot.
pub fn assign(
    slots: &[(TrackKind, Vec<String>, Option<TrackKey>)],
    candidates: &[Candidate],
) -> Vec<Option<TrackKey>> {
    let mut ranked: Vec<Candidate> = candidates.to_vec();
    ranked.sort_by_key(|c| c.rank);
    let mut out: Vec<Option<TrackKey>> = vec![None; slots.len()];
    let mut taken: Vec<TrackKey> = Vec::new();
    // The tracks each slot could show, best first, as many as there are slots of its kind:
    // the ones that should be on screen.
    let shown: Vec<Vec<TrackKey>> = slots
        .iter()
        .map(|(kind, codecs, _)| {
            let n = slots.iter().filter(|(k, _, _)| k == kind).count();
            ranked
                .iter()
                .filter(|c| c.kind == *kind && codecs.contains(&c.codec))
                .take(n)
                .map(|c| c.track)
                .collect()
        })
        .collect();
    // Keep what still belongs on screen.
    for (i, (_, _, current)) in slots.iter().enumerate() {
        if let Some(t) = current {
            if shown[i].contains(t) && !taken.contains(t) {
                out[i] = Some(*t);
                taken.push(*t);
            }
        }
    }
    // Fill the rest in rank order.
    for i in 0..slots.len() {
        if out[i].is_some() {
            continue;
        }
        if let Some(t) = shown[i].iter().find(|t| !taken.contains(t)) {
            out[i] = Some(*t);
            taken.push(*t);
        }
    }
    out
}

impl Room {
    /// Points every connected viewer's slots at what it should show now. Runs at signaling
    /// rate (a track came or went, the speakers changed, a viewer connected).
    pub(super) fn rebind_viewers(&mut self, now: Instant) {
        let viewers: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| p.role().is_viewer() && p.media_ready())
            .map(|p| p.key())
            .collect();
        for key in viewers {
            self.rebind_viewer(key, now);
        }
    }

    fn rebind_viewer(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let only = match peer.role() {
            Role::Viewer { of: Some(id) } => match self.by_id.get(id) {
                Some(k) => Some(*k),
                // The participant left: its slots show nothing.
                None => Some(key),
            },
            _ => None,
        };
        let slots: Vec<_> = peer
            .slots()
            .iter()
            .map(|s| (s.kind, s.codecs.clone(), s.bound))
            .collect();
        let candidates: Vec<Candidate> = self
            .forwarder
            .tracks()
            .filter(|(_, t)| t.publisher != key && only.is_none_or(|o| o == t.publisher))
            .map(|(tk, t)| Candidate {
                track: tk,
                kind: t.kind,
                codec: family(&t.codec.mime_type),
                rank: (
                    self.speaker_order
                        .iter()
                        .position(|p| *p == t.publisher)
                        .unwrap_or(usize::MAX),
                    std::cmp::Reverse(tk),
                ),
            })
            .collect();
        let wanted = assign(&slots, &candidates);
        let changes: Vec<(usize, Option<TrackKey>)> = wanted
            .into_iter()
            .enumerate()
            .filter(|(i, w)| slots[*i].2 != *w)
            .collect();
        if changes.is_empty() {
            return;
        }
        // Every moving leg leaves its track first: a leg may move onto a track another slot
        // is just leaving (a track has one leg per subscriber).
        let mut legs: Vec<(usize, Option<TrackKey>, DownTrack)> = Vec::new();
        for (i, to) in changes {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(slot) = peer.slots_mut().get_mut(i) else {
                continue;
            };
            let leg = match slot.bound.take() {
                Some(tk) => self.forwarder.take_leg(tk, key),
                None => slot.parked.take(),
            };
            let (sender, ssrc, clock_rate) = (slot.sender, slot.ssrc, slot.clock_rate);
            let mut leg = leg.unwrap_or_else(|| DownTrack::new(key, sender, ssrc, clock_rate));
            leg.repoint();
            legs.push((i, to, leg));
        }
        for (i, to, leg) in legs {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let sender = leg.sender;
            let ssrc = leg.ssrc;
            match to {
                Some(tk) => {
                    let Some((map, rtx)) = peer
                        .sender_rtp_map(sender)
                        .map(|m| (m, peer.sender_rtx_ssrc(sender)))
                    else {
                        continue;
                    };
                    peer.route_down_track(ssrc, Some(tk));
                    if let Some(slot) = peer.slots_mut().get_mut(i) {
                        slot.bound = Some(tk);
                    }
                    self.forwarder.subscribe(tk, leg);
                    let keyframe_of = self.forwarder.open(tk, key, &map, rtx);
                    debug!(slot = i, track = tk.0, "viewer slot pointed");
                    if let Some(layer) = keyframe_of {
                        self.request_keyframe(tk, layer, now);
                    }
                }
                None => {
                    peer.route_down_track(ssrc, None);
                    if let Some(slot) = peer.slots_mut().get_mut(i) {
                        slot.parked = Some(leg);
                    }
                    debug!(slot = i, "viewer slot idle");
                }
            }
        }
    }

    /// A track left the room: a viewer's leg on it goes back to its slot (to be pointed at
    /// something else by the next [`rebind_viewers`](Self::rebind_viewers)).
    pub(super) fn park_viewer_leg(&mut self, leg: DownTrack) {
        let Some(peer) = self.peers.get_mut(&leg.subscriber) else {
            return;
        };
        peer.route_down_track(leg.ssrc, None);
        let sender = leg.sender;
        if let Some(slot) = peer.slots_mut().iter_mut().find(|s| s.sender == sender) {
            slot.bound = None;
            slot.parked = Some(leg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    fn cand(track: u64, kind: TrackKind, mime: &str, speaker: usize) -> Candidate {
        Candidate {
            track: TrackKey(track),
            kind,
            codec: family(mime),
            rank: (speaker, Reverse(TrackKey(track))),
        }
    }

    #[test]
    fn recvonly_and_sendrecv_sections_are_slots() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
                   m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=bundle-only\r\na=recvonly\r\n";
        assert_eq!(
            media_sections(sdp),
            vec![
                (TrackKind::Audio, true),
                (TrackKind::Video, true),
                (TrackKind::Video, false),
                (TrackKind::Video, false),
                (TrackKind::Audio, true),
            ]
        );
    }

    #[test]
    fn slots_show_the_speakers_then_the_newest_and_keep_what_still_belongs() {
        let a = TrackKind::Audio;
        let v = TrackKind::Video;
        let slots = [
            (a, vec![family("audio/opus")], None),
            (v, vec![family("video/VP8")], None),
        ];
        let c = [
            cand(1, a, "audio/red", 1),
            cand(2, v, "video/VP8", 1),
            cand(3, a, "audio/opus", 0),
            cand(4, v, "video/VP8", 0),
            cand(5, v, "video/H264", usize::MAX),
        ];
        // The loudest speaker (rank 0) on both slots.
        assert_eq!(
            assign(&slots, &c),
            vec![Some(TrackKey(3)), Some(TrackKey(4))]
        );
        // Nobody spoke yet: the newest compatible tracks; H.264 never goes on a VP8 slot.
        let quiet: Vec<Candidate> = c
            .iter()
            .map(|x| Candidate {
                rank: (usize::MAX, x.rank.1),
                ..x.clone()
            })
            .collect();
        assert_eq!(
            assign(&slots, &quiet),
            vec![Some(TrackKey(3)), Some(TrackKey(4))]
        );
        // Two video slots bound to the top two stay put when those two swap ranks.
        let two = [
            (v, vec![family("video/VP8")], Some(TrackKey(2))),
            (v, vec![family("video/VP8")], Some(TrackKey(4))),
        ];
        assert_eq!(assign(&two, &c), vec![Some(TrackKey(2)), Some(TrackKey(4))]);
        // A slot whose track left takes the next one; one with nothing to show is idle.
        let three = [
            (v, vec![family("video/VP8")], Some(TrackKey(9))),
            (v, vec![family("video/VP8")], None),
            (v, vec![family("video/VP8")], None),
        ];
        assert_eq!(
            assign(&three, &c),
            vec![Some(TrackKey(4)), Some(TrackKey(2)), None]
        );
        // Not negotiated yet: nothing.
        assert_eq!(assign(&[(v, vec![], None)], &c), vec![None]);
        // A slot that negotiated VP8 and H.264 shows an H.264 publisher too.
        let h264 = [cand(5, v, "video/H264", 0)];
        let both = [(v, vec![family("video/VP8"), family("video/H264")], None)];
        assert_eq!(assign(&both, &h264), vec![Some(TrackKey(5))]);
    }
}
