//! The room's forwarding plane: published tracks (up), their subscriber legs (down), and the
//! per-packet decision "which subscribers get which rewritten packet". Pure: no I/O, no clock;
//! the room task feeds it packets and writes what it returns.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

use super::codec::Codec;
use super::downtrack::{DownState, DownTrack};
use super::keyframe::KeyframeRequester;
use super::rate::RateMeter;
use super::track::RtpMap;
use super::DropReason;
use crate::ids::TrackKind;
use crate::ids::{ParticipantId, PeerKey, TrackId};

/// Room-local key of a published track (minted from a counter, cheap to hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

/// A published track.
#[derive(Debug)]
pub struct UpTrack {
    /// Id subscribers see.
    pub id: TrackId,
    /// Publisher's peer.
    pub publisher: PeerKey,
    /// Publisher's participant id (msid stream id).
    pub publisher_id: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Receiver on the publisher's peer connection.
    pub receiver: RTCRtpReceiverId,
    /// The publisher's media SSRC (target of PLI).
    pub media_ssrc: u32,
    /// The codec the publisher sends (subscriber legs are created with it).
    pub codec: RTCRtpCodec,
    /// The publisher leg's negotiated tables.
    pub rtp_map: RtpMap,
    /// Keyframe request merging/throttling.
    pub keyframes: KeyframeRequester,
    /// The subscriber legs.
    pub downs: Vec<DownTrack>,
    /// Packets received from the publisher.
    pub packets_in: u64,
    /// Payload bytes received from the publisher.
    pub bytes_in: u64,
    /// Incoming bitrate.
    pub rate: RateMeter,
}

/// One rewritten packet for one subscriber.
#[derive(Debug)]
pub struct Outgoing {
    /// The subscriber's peer.
    pub subscriber: PeerKey,
    /// Its sender for this track.
    pub sender: RTCRtpSenderId,
    /// The packet to write.
    pub packet: Packet,
}

/// What happened to one inbound packet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForwardOutcome {
    /// The track's kind (`None`: unknown track), so the caller needs no second lookup.
    pub kind: Option<TrackKind>,
    /// Whether the packet started a keyframe.
    pub keyframe: bool,
    /// Subscriber legs it was written for.
    pub forwarded: usize,
    /// Legs still waiting for a keyframe (the caller should ask the publisher for one).
    pub waiting_for_keyframe: usize,
    /// Legs not negotiated yet.
    pub not_negotiated: usize,
    /// Legs whose subscriber did not negotiate the packet's codec.
    pub codec_not_negotiated: usize,
}

impl ForwardOutcome {
    /// Legs the packet was not sent on, by reason (each leg counted once, under its reason).
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> {
        [
            (DropReason::WaitingForKeyframe, self.waiting_for_keyframe),
            (DropReason::NotNegotiated, self.not_negotiated),
            (DropReason::CodecNotNegotiated, self.codec_not_negotiated),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r, n as u64))
    }
}

/// All published tracks of a room and their subscribers.
#[derive(Debug)]
pub struct Forwarder {
    tracks: HashMap<TrackKey, UpTrack>,
    next_key: u64,
    pli_throttle: Duration,
}

impl Forwarder {
    /// An empty forwarding plane.
    pub fn new(pli_throttle: Duration) -> Self {
        Self {
            tracks: HashMap::new(),
            next_key: 1,
            pli_throttle,
        }
    }

    /// Registers a published track and returns its key.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        publisher: PeerKey,
        publisher_id: ParticipantId,
        kind: TrackKind,
        receiver: RTCRtpReceiverId,
        media_ssrc: u32,
        codec: RTCRtpCodec,
        rtp_map: RtpMap,
    ) -> TrackKey {
        let key = TrackKey(self.next_key);
        self.next_key += 1;
        self.tracks.insert(
            key,
            UpTrack {
                id: TrackId::mint(),
                publisher,
                publisher_id,
                kind,
                receiver,
                media_ssrc,
                codec,
                rtp_map,
                keyframes: KeyframeRequester::new(self.pli_throttle),
                downs: Vec::new(),
                packets_in: 0,
                bytes_in: 0,
                rate: RateMeter::default(),
            },
        );
        key
    }

    /// Removes a published track, returning it (with its legs, so the caller can detach them
    /// from subscribers' peer connections).
    pub fn unpublish(&mut self, key: TrackKey) -> Option<UpTrack> {
        self.tracks.remove(&key)
    }

    /// A track by key.
    pub fn track(&self, key: TrackKey) -> Option<&UpTrack> {
        self.tracks.get(&key)
    }

    /// All tracks.
    pub fn tracks(&self) -> impl Iterator<Item = (TrackKey, &UpTrack)> {
        self.tracks.iter().map(|(k, t)| (*k, t))
    }

    /// Keys of the tracks a peer publishes.
    pub fn tracks_of(&self, publisher: PeerKey) -> Vec<TrackKey> {
        let mut keys: Vec<TrackKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.publisher == publisher)
            .map(|(k, _)| *k)
            .collect();
        keys.sort();
        keys
    }

    /// Adds a subscriber leg to a track.
    pub fn subscribe(&mut self, key: TrackKey, down: DownTrack) {
        if let Some(t) = self.tracks.get_mut(&key) {
            t.downs.retain(|d| d.subscriber != down.subscriber);
            t.downs.push(down);
        }
    }

    /// Removes every leg of a subscriber (it left).
    pub fn drop_subscriber(&mut self, subscriber: PeerKey) {
        for t in self.tracks.values_mut() {
            t.downs.retain(|d| d.subscriber != subscriber);
        }
    }

    /// Marks a subscriber's pending legs as part of offer `generation`.
    pub fn mark_offered(&mut self, subscriber: PeerKey, generation: u64) {
        for t in self.tracks.values_mut() {
            for d in t.downs.iter_mut().filter(|d| d.subscriber == subscriber) {
                if d.state == DownState::Pending {
                    d.state = DownState::Offered(generation);
                }
            }
        }
    }

    /// The legs of `subscriber` that the answer to offer `generation` opens, as
    /// (track, sender) pairs. The caller builds each leg's tables and calls [`open`](Self::open).
    pub fn answered(
        &self,
        subscriber: PeerKey,
        generation: u64,
    ) -> Vec<(TrackKey, RTCRtpSenderId)> {
        let mut out = Vec::new();
        for (k, t) in &self.tracks {
            for d in t.downs.iter().filter(|d| d.subscriber == subscriber) {
                if matches!(d.state, DownState::Offered(g) if g <= generation) {
                    out.push((*k, d.sender));
                }
            }
        }
        out
    }

    /// Opens one leg with the subscriber's negotiated tables. Returns `true` when the leg needs a
    /// keyframe (video): the caller then requests one from the publisher.
    pub fn open(&mut self, key: TrackKey, subscriber: PeerKey, sub_map: &RtpMap) -> bool {
        let Some(t) = self.tracks.get_mut(&key) else {
            return false;
        };
        let translation = t.rtp_map.translate_to(sub_map);
        let needs_keyframe = t.kind == TrackKind::Video;
        if let Some(d) = t.downs.iter_mut().find(|d| d.subscriber == subscriber) {
            d.open(translation, needs_keyframe);
            return needs_keyframe;
        }
        false
    }

    /// The hot path: one inbound packet of track `key` → `out` (cleared first) holds one
    /// rewritten packet per leg it goes to. `out` is the caller's reusable buffer, and a packet
    /// shares the publisher's payload: nothing is allocated per leg except the header
    /// extension list of a packet that carries forwarded extensions.
    /// An unknown track yields `kind: None` and nothing else.
    pub fn forward(
        &mut self,
        key: TrackKey,
        pkt: &Packet,
        out: &mut Vec<Outgoing>,
    ) -> ForwardOutcome {
        out.clear();
        let mut outcome = ForwardOutcome::default();
        let Some(t) = self.tracks.get_mut(&key) else {
            return outcome;
        };
        outcome.kind = Some(t.kind);
        t.packets_in += 1;
        t.bytes_in += pkt.payload.len() as u64;
        let codec = t
            .rtp_map
            .codec_kind(pkt.header.payload_type)
            .unwrap_or(Codec::Other);
        outcome.keyframe = codec.needs_keyframe() && codec.is_keyframe(&pkt.payload);
        if outcome.keyframe {
            t.keyframes.on_keyframe();
        }
        for d in t.downs.iter_mut() {
            if d.state != DownState::Open {
                continue;
            }
            match d.rewrite(pkt, outcome.keyframe || !codec.needs_keyframe()) {
                Ok(packet) => {
                    out.push(Outgoing {
                        subscriber: d.subscriber,
                        sender: d.sender,
                        packet,
                    });
                    outcome.forwarded += 1;
                }
                Err(DropReason::WaitingForKeyframe) => outcome.waiting_for_keyframe += 1,
                Err(DropReason::CodecNotNegotiated) => outcome.codec_not_negotiated += 1,
                Err(_) => outcome.not_negotiated += 1,
            }
        }
        outcome
    }

    /// Keyframe requests due now (deferred by the throttle or re-asked): (publisher, receiver,
    /// media SSRC) for each.
    pub fn due_keyframe_requests(&mut self, now: Instant) -> Vec<(PeerKey, RTCRtpReceiverId, u32)> {
        let mut due = Vec::new();
        for t in self.tracks.values_mut() {
            if t.keyframes.poll(now) {
                due.push((t.publisher, t.receiver, t.media_ssrc));
            }
        }
        due
    }

    /// Refreshes every bitrate meter (call about once a second).
    pub fn update_rates(&mut self, now: Instant) {
        for t in self.tracks.values_mut() {
            t.rate.update(t.bytes_in, now);
            for d in &mut t.downs {
                d.rate.update(d.bytes, now);
            }
        }
    }

    /// The earliest keyframe-request deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter_map(|t| t.keyframes.next_deadline())
            .min()
    }

    /// Asks for a keyframe on `key`; returns what to send now, if anything.
    pub fn request_keyframe(
        &mut self,
        key: TrackKey,
        now: Instant,
    ) -> Option<(PeerKey, RTCRtpReceiverId, u32)> {
        let t = self.tracks.get_mut(&key)?;
        if t.kind != TrackKind::Video {
            return None;
        }
        t.keyframes
            .request(now)
            .then_some((t.publisher, t.receiver, t.media_ssrc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::{Extension, Header};
    use rtc::rtp_transceiver::rtp_sender::{
        RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters,
    };

    fn codec(mime: &str, pt: u8) -> RTCRtpCodecParameters {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate: 90000,
                ..Default::default()
            },
            payload_type: pt,
        }
    }

    fn audio_level(id: u16) -> RTCRtpHeaderExtensionParameters {
        RTCRtpHeaderExtensionParameters {
            uri: "urn:ietf:params:rtp-hdrext:ssrc-audio-level".into(),
            id,
            encrypted: false,
        }
    }

    fn packet(pt: u8, seq: u16, keyframe: bool, ext: Option<u8>) -> Packet {
        let mut payload = vec![0u8; 100];
        payload[0] = 0x10;
        payload[1] = if keyframe { 0x00 } else { 0x01 };
        Packet {
            header: Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc: 0xabc,
                extension: ext.is_some(),
                extension_profile: 0xBEDE,
                extensions: ext
                    .map(|id| {
                        vec![Extension {
                            id,
                            payload: Bytes::from_static(&[0x55]),
                        }]
                    })
                    .unwrap_or_default(),
                ..Default::default()
            },
            payload: Bytes::from(payload),
        }
    }

    /// A VP8 track (publisher PT 96, audio level id 1) with two subscribers: one negotiated
    /// VP8 as PT 120 and audio level as id 5, one that offered only H.264.
    fn room() -> (Forwarder, TrackKey) {
        let mut f = Forwarder::new(Duration::from_millis(500));
        let publisher = RtpMap::new(&[codec("video/VP8", 96)], &[audio_level(1)]);
        let tk = f.publish(
            PeerKey(1),
            ParticipantId::mint(),
            TrackKind::Video,
            RTCRtpReceiverId::default(),
            0xabc,
            codec("video/VP8", 96).rtp_codec,
            publisher,
        );
        f.subscribe(
            tk,
            DownTrack::new(PeerKey(2), RTCRtpSenderId::default(), 0x222),
        );
        f.subscribe(
            tk,
            DownTrack::new(PeerKey(3), RTCRtpSenderId::default(), 0x333),
        );
        (f, tk)
    }

    fn open_both(f: &mut Forwarder, tk: TrackKey) {
        let vp8_sub = RtpMap::new(&[codec("video/VP8", 120)], &[audio_level(5)]);
        let h264_sub = RtpMap::new(&[codec("video/H264", 102)], &[]);
        assert!(
            f.open(tk, PeerKey(2), &vp8_sub),
            "video legs wait for a keyframe"
        );
        assert!(f.open(tk, PeerKey(3), &h264_sub));
    }

    #[test]
    fn legs_not_yet_answered_get_nothing_and_are_counted_per_leg() {
        let (mut f, tk) = room();
        let mut out = Vec::new();
        let o = f.forward(tk, &packet(96, 1, true, None), &mut out);
        assert!(out.is_empty());
        assert_eq!(o.kind, Some(TrackKind::Video));
        // Pending legs (not in an answered offer) are skipped, not counted as drops.
        assert_eq!(o.drops().count(), 0);
    }

    #[test]
    fn packets_are_rewritten_per_leg_and_drops_counted_once_per_leg_by_reason() {
        let (mut f, tk) = room();
        open_both(&mut f, tk);
        let mut out = Vec::new();
        let o = f.forward(tk, &packet(96, 7, false, None), &mut out);
        assert!(out.is_empty(), "both legs wait for a keyframe");
        assert_eq!(o.waiting_for_keyframe, 1, "the VP8 leg waits");
        assert_eq!(o.codec_not_negotiated, 1, "the H.264 leg cannot carry VP8");
        let reasons: Vec<_> = o.drops().collect();
        assert!(reasons.contains(&(DropReason::WaitingForKeyframe, 1)));
        assert!(reasons.contains(&(DropReason::CodecNotNegotiated, 1)));

        let o = f.forward(tk, &packet(96, 8, true, Some(1)), &mut out);
        assert!(o.keyframe);
        assert_eq!((o.forwarded, out.len()), (1, 1));
        let h = &out[0].packet.header;
        assert_eq!(out[0].subscriber, PeerKey(2));
        assert_eq!((h.ssrc, h.payload_type), (0x222, 120));
        assert_eq!(h.extensions.len(), 1);
        assert_eq!(h.extensions[0].id, 5, "extension id renumbered for the leg");
        let first = h.sequence_number;

        let o = f.forward(tk, &packet(96, 9, false, None), &mut out);
        assert_eq!(o.forwarded, 1);
        assert_eq!(out[0].packet.header.sequence_number, first.wrapping_add(1));
        assert!(out[0].packet.header.extensions.is_empty());
        assert!(!out[0].packet.header.extension);
    }

    #[test]
    fn an_unknown_track_reports_no_kind() {
        let (mut f, _) = room();
        let mut out = Vec::new();
        let o = f.forward(TrackKey(999), &packet(96, 1, true, None), &mut out);
        assert_eq!(o.kind, None);
        assert!(out.is_empty());
    }

    #[test]
    fn keyframe_requests_are_throttled_and_retried_until_a_keyframe_arrives() {
        let (mut f, tk) = room();
        let t0 = Instant::now();
        assert!(
            f.request_keyframe(tk, t0).is_some(),
            "first request goes out"
        );
        assert!(f
            .request_keyframe(tk, t0 + Duration::from_millis(100))
            .is_none());
        let due = f.next_deadline().expect("a retry is scheduled");
        assert!(due > t0);
        assert_eq!(f.due_keyframe_requests(due).len(), 1, "re-asked");
        let mut out = Vec::new();
        f.forward(tk, &packet(96, 1, true, None), &mut out);
        assert!(f.next_deadline().is_none(), "a keyframe ends the retries");
    }
}
