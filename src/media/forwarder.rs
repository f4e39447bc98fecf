//! The room's forwarding plane: published tracks (up), their subscriber legs (down), and the
//! per-packet decision "which subscribers get which rewritten packet". Pure: no I/O, no clock;
//! the room task feeds it packets and writes what it returns.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

use super::cache::Miss;
use super::codec::Codec;
use super::downtrack::{DownState, DownTrack, LegOutcome, View};
use super::keyframe::KeyframeRequester;
use super::rate::RateMeter;
use super::sentlog::Refusal;
use super::simulcast::{vp8_keyframe_width, LayerIndex, Layers, SenderClock, MAX_LAYERS};
use super::track::RtpMap;
use super::DropReason;
use crate::ids::{ParticipantId, PeerKey, TrackId};
use crate::ids::{TrackKind, TrackSource};

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
    /// The publisher's own track id (`msid`), which its client knows the track by.
    pub source_track_id: String,
    /// The encodings received (one unless simulcast), by quality.
    pub layers: Layers,
    /// Dynacast: which layers the publisher was last told to send, and since when each has
    /// had no receiver.
    dynacast: Dynacast,
    /// The codec the publisher sends (subscriber legs are created with it).
    pub codec: RTCRtpCodec,
    /// The publisher leg's negotiated tables.
    pub rtp_map: RtpMap,
    /// The subscriber legs.
    pub downs: Vec<DownTrack>,
    /// Muted through the room API: received, not forwarded.
    pub muted: bool,
    /// What it carries, as its publisher said (camera unless told otherwise).
    pub source: TrackSource,
    /// Turned off by its publisher (still forwarded: the browser sends silence or black).
    pub self_muted: bool,
    /// Packets received from the publisher.
    pub packets_in: u64,
    /// Payload bytes received from the publisher.
    pub bytes_in: u64,
    /// Incoming bitrate.
    pub rate: RateMeter,
}

/// Dynacast state of one track.
#[derive(Debug, Default)]
struct Dynacast {
    /// What the publisher was last told, by slot (`None`: nothing yet; it sends all).
    announced: Option<[bool; MAX_LAYERS]>,
    /// Since when each slot has had no leg forwarding or wanting it.
    unneeded_since: [Option<Instant>; MAX_LAYERS],
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
    /// The layer the packet belongs to (`None`: an SSRC of no known layer).
    pub layer: Option<LayerIndex>,
    /// Legs that switched layer (or started) on this packet.
    pub switched: usize,
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
    /// Legs that could not place a late packet.
    pub too_late: usize,
    /// An audio packet's level (RFC 6464, -dBov), with its publisher.
    pub audio_level: Option<(PeerKey, u8)>,
    /// A copy of a packet already received (not forwarded again).
    pub duplicate: bool,
}

impl ForwardOutcome {
    /// Legs the packet was not sent on, by reason (each leg counted once, under its reason).
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> {
        [
            (DropReason::WaitingForKeyframe, self.waiting_for_keyframe),
            (DropReason::NotNegotiated, self.not_negotiated),
            (DropReason::CodecNotNegotiated, self.codec_not_negotiated),
            (DropReason::TooLate, self.too_late),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r, n as u64))
    }
}

/// What became of the sequence numbers of one NACK.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitCounts {
    /// Sent again.
    pub sent: u64,
    /// Payload bytes of those.
    pub bytes: u64,
    /// Older than the cache keeps.
    pub too_old: u64,
    /// Never sent on the leg, or never received from the publisher.
    pub unknown: u64,
    /// Sent again just now, or three times already.
    pub repeated: u64,
    /// The leg's retransmission budget was spent.
    pub over_budget: u64,
}

impl RetransmitCounts {
    /// Adds another NACK's counts.
    pub fn add(&mut self, o: RetransmitCounts) {
        self.sent += o.sent;
        self.bytes += o.bytes;
        self.too_old += o.too_old;
        self.unknown += o.unknown;
        self.repeated += o.repeated;
        self.over_budget += o.over_budget;
    }
}

/// All published tracks of a room and their subscribers.
#[derive(Debug)]
pub struct Forwarder {
    tracks: HashMap<TrackKey, UpTrack>,
    next_key: u64,
    pli_throttle: Duration,
    /// Where VP8 payloads renumbered for a leg are copied ([`vp8`](super::vp8)).
    vp8_arena: BytesMut,
}

impl Forwarder {
    /// An empty forwarding plane.
    pub fn new(pli_throttle: Duration) -> Self {
        Self {
            tracks: HashMap::new(),
            next_key: 1,
            pli_throttle,
            vp8_arena: BytesMut::new(),
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
        source_track_id: String,
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
                source_track_id,
                layers: Layers::new(kind == TrackKind::Video),
                dynacast: Dynacast::default(),
                codec,
                rtp_map,
                downs: Vec::new(),
                muted: false,
                source: TrackSource::default_for(kind),
                self_muted: false,
                packets_in: 0,
                bytes_in: 0,
                rate: RateMeter::default(),
            },
        );
        key
    }

    /// Adds an encoding (simulcast layer, or the only one) to a track; returns its slot.
    pub fn add_layer(&mut self, key: TrackKey, rid: Option<&str>, ssrc: u32) -> Option<LayerIndex> {
        let throttle = self.pli_throttle;
        let t = self.tracks.get_mut(&key)?;
        t.layers.add(rid, ssrc, KeyframeRequester::new(throttle))
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

    /// A published track, to change what its publisher says of it (source, self mute).
    pub fn track_mut(&mut self, key: TrackKey) -> Option<&mut UpTrack> {
        self.tracks.get_mut(&key)
    }

    /// All tracks.
    pub fn tracks(&self) -> impl Iterator<Item = (TrackKey, &UpTrack)> {
        self.tracks.iter().map(|(k, t)| (*k, t))
    }

    /// Packets `publisher`'s tracks should have delivered (their sequence-number spans) and
    /// packets that arrived (duplicates not counted; repaired ones are), over all their layers.
    pub fn upstream_totals(&self, publisher: PeerKey) -> (u64, u64) {
        self.tracks
            .values()
            .filter(|t| t.publisher == publisher)
            .flat_map(|t| t.layers.iter())
            .fold((0, 0), |(expected, received), (_, l)| {
                (expected + l.seq.expected(), received + l.packets)
            })
    }

    /// The keys of `publisher`'s tracks, in order.
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

    /// Mutes or unmutes a track; returns the publisher's own id of it. Its legs continue
    /// without a hole in their sequence numbers when it is unmuted.
    pub fn set_muted(&mut self, key: TrackKey, muted: bool) -> Option<String> {
        let t = self.tracks.get_mut(&key)?;
        if t.muted != muted {
            t.muted = muted;
            for d in t.downs.iter_mut() {
                d.splice_next();
            }
        }
        Some(t.source_track_id.clone())
    }

    /// Takes a subscriber's leg off a track (a viewer's slot moving to another source).
    pub fn take_leg(&mut self, key: TrackKey, subscriber: PeerKey) -> Option<DownTrack> {
        let t = self.tracks.get_mut(&key)?;
        let i = t.downs.iter().position(|d| d.subscriber == subscriber)?;
        Some(t.downs.swap_remove(i))
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

    /// Opens one leg with the subscriber's negotiated tables, starting on the lowest layer (the
    /// allocator raises it). Returns the layer a video leg now needs a keyframe of: the caller
    /// then requests one from the publisher.
    pub fn open(
        &mut self,
        key: TrackKey,
        subscriber: PeerKey,
        sub_map: &RtpMap,
        rtx_ssrc: Option<u32>,
    ) -> Option<LayerIndex> {
        let t = self.tracks.get_mut(&key)?;
        let translation = t.rtp_map.translate_to(sub_map);
        let needs_keyframe = t.kind == TrackKind::Video;
        let layer = t.layers.lowest().unwrap_or(0);
        let d = t.downs.iter_mut().find(|d| d.subscriber == subscriber)?;
        d.open(translation, layer, needs_keyframe, rtx_ssrc);
        needs_keyframe.then_some(layer)
    }

    /// A leg of `subscriber` on `key`.
    pub fn leg_mut(&mut self, key: TrackKey, subscriber: PeerKey) -> Option<&mut DownTrack> {
        self.tracks
            .get_mut(&key)?
            .downs
            .iter_mut()
            .find(|d| d.subscriber == subscriber)
    }

    /// The track the subscriber knows as `track_id`.
    pub fn key_of(&self, track_id: &TrackId) -> Option<TrackKey> {
        self.tracks
            .iter()
            .find(|(_, t)| &t.id == track_id)
            .map(|(k, _)| *k)
    }

    /// Records how `subscriber` shows track `key`; `false` if it has no leg of it.
    pub fn set_view(&mut self, key: TrackKey, subscriber: PeerKey, view: View) -> bool {
        match self.leg_mut(key, subscriber) {
            Some(d) => {
                d.view = view;
                true
            }
            None => false,
        }
    }

    /// Points a leg at another layer (`None` pauses it), or at the nearest layer that flows if
    /// that one does not. Returns the PLI to send when the leg now waits for a keyframe.
    pub fn set_target(
        &mut self,
        key: TrackKey,
        subscriber: PeerKey,
        target: Option<LayerIndex>,
        now: Instant,
    ) -> Option<(PeerKey, RTCRtpReceiverId, u32)> {
        let t = self.tracks.get_mut(&key)?;
        let actual = target.map(|l| t.layers.nearest_flowing(l, now));
        let d = t.downs.iter_mut().find(|d| d.subscriber == subscriber)?;
        d.ideal = target;
        let waits = d.set_target(actual, now);
        let target = actual;
        match (waits, target) {
            (true, Some(layer)) => self.request_keyframe(key, layer, now),
            _ => None,
        }
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
        now: Instant,
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
        let Some(layer) = t.layers.slot_of_ssrc(pkt.header.ssrc) else {
            return outcome;
        };
        outcome.layer = Some(layer);
        let codec = t
            .rtp_map
            .codec_kind(pkt.header.payload_type)
            .unwrap_or(Codec::Other);
        outcome.keyframe = codec.needs_keyframe() && codec.is_keyframe(&pkt.payload);
        if let Some(l) = t.layers.get_mut(layer) {
            if !l.cache.insert(pkt, now) {
                // Sent (and forwarded) before: a second copy would reach each subscriber as a
                // replayed SRTP packet, dropped there and counted as loss by its feedback.
                outcome.duplicate = true;
                outcome.keyframe = false;
                return outcome;
            }
            l.packets += 1;
            l.seq.on_packet(pkt.header.sequence_number);
            l.bytes += pkt.payload.len() as u64;
            l.last_packet = Some(now);
            if outcome.keyframe {
                l.keyframes.on_keyframe();
                if codec == Codec::Vp8 {
                    l.width = vp8_keyframe_width(&pkt.payload).or(l.width);
                }
            }
        }
        if t.muted {
            // Not forwarded, and a muted microphone is not a speaker.
            return outcome;
        }
        if t.kind == TrackKind::Audio {
            if let Some(id) = t.rtp_map.audio_level_id() {
                let level = pkt.header.extensions.iter().find(|e| e.id == id);
                if let Some(&b) = level.and_then(|e| e.payload.first()) {
                    outcome.audio_level = Some((t.publisher, b & 0x7f));
                }
            }
        }
        let decodable = outcome.keyframe || !codec.needs_keyframe();
        let vp8 = codec == Codec::Vp8;
        for d in t.downs.iter_mut() {
            if d.state != DownState::Open {
                continue;
            }
            let arena = vp8.then_some(&mut self.vp8_arena);
            match d.rewrite(pkt, layer, decodable, now, arena) {
                LegOutcome::Send { packet, switched } => {
                    out.push(Outgoing {
                        subscriber: d.subscriber,
                        sender: d.sender,
                        packet,
                    });
                    outcome.forwarded += 1;
                    outcome.switched += usize::from(switched);
                }
                LegOutcome::Skip => {}
                LegOutcome::Drop(DropReason::WaitingForKeyframe) => {
                    outcome.waiting_for_keyframe += 1
                }
                LegOutcome::Drop(DropReason::CodecNotNegotiated) => {
                    outcome.codec_not_negotiated += 1
                }
                LegOutcome::Drop(DropReason::TooLate) => outcome.too_late += 1,
                LegOutcome::Drop(_) => outcome.not_negotiated += 1,
            }
        }
        outcome
    }

    /// A subscriber NACKed `lost` (its own sequence numbers on its leg of `key`): the packets to
    /// send again (appended to `out`), from the layer caches, within the leg's limits.
    pub fn retransmit(
        &mut self,
        key: TrackKey,
        subscriber: PeerKey,
        lost: &[u16],
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) -> RetransmitCounts {
        let mut counts = RetransmitCounts::default();
        let Some(t) = self.tracks.get_mut(&key) else {
            counts.unknown = lost.len() as u64;
            return counts;
        };
        let Some(d) = t.downs.iter_mut().find(|d| d.subscriber == subscriber) else {
            counts.unknown = lost.len() as u64;
            return counts;
        };
        for &seq in lost {
            let origin = match d.sent.resend(seq, now) {
                Ok(o) => o,
                Err(Refusal::Unknown) => {
                    counts.unknown += 1;
                    continue;
                }
                Err(Refusal::Repeated) => {
                    counts.repeated += 1;
                    continue;
                }
            };
            if origin.padding {
                if let Some(packet) = d.padding_again(seq, origin.out_ts) {
                    counts.sent += 1;
                    out.push(Outgoing {
                        subscriber,
                        sender: d.sender,
                        packet,
                    });
                }
                continue;
            }
            let cached = match t
                .layers
                .get(origin.layer)
                .map(|l| l.cache.get(origin.in_seq, now))
            {
                Some(Ok(c)) => c,
                Some(Err(Miss::TooOld)) => {
                    counts.too_old += 1;
                    continue;
                }
                Some(Err(Miss::Missing)) | None => {
                    counts.unknown += 1;
                    continue;
                }
            };
            if !d.budget.take(cached.payload.len(), d.rate.bps(), now) {
                counts.over_budget += 1;
                continue;
            }
            let vp8 = (t.rtp_map.codec_kind(cached.payload_type) == Some(Codec::Vp8))
                .then_some((origin.layer, &mut self.vp8_arena));
            let Some(packet) = d.retransmission(seq, origin.out_ts, cached, vp8) else {
                counts.unknown += 1;
                continue;
            };
            counts.sent += 1;
            counts.bytes += packet.payload.len() as u64;
            out.push(Outgoing {
                subscriber,
                sender: d.sender,
                packet,
            });
        }
        counts
    }

    /// A publisher's sender report on its stream `ssrc`: kept on that layer for the legs' own.
    pub fn on_sender_report(
        &mut self,
        publisher: PeerKey,
        ssrc: u32,
        ntp: u64,
        rtp: u32,
        now: Instant,
    ) {
        for t in self
            .tracks
            .values_mut()
            .filter(|t| t.publisher == publisher)
        {
            if let Some(layer) = t
                .layers
                .slot_of_ssrc(ssrc)
                .and_then(|l| t.layers.get_mut(l))
            {
                layer.clock = Some(SenderClock { ntp, rtp, at: now });
                return;
            }
        }
    }

    /// A sender report for every open leg whose forwarded layer has a publisher clock: the
    /// publisher's NTP time now, and the leg's own RTP time for it (appended to `out`).
    pub fn sender_reports(
        &self,
        now: Instant,
        out: &mut Vec<(PeerKey, RTCRtpSenderId, SenderReport)>,
    ) {
        for t in self.tracks.values() {
            for d in t.downs.iter().filter(|d| d.state == DownState::Open) {
                let Some(layer) = d.layers().0.and_then(|l| t.layers.get(l)) else {
                    continue;
                };
                let Some(clock) = layer.clock else { continue };
                let (ntp, rtp_in) = clock.at(now, t.codec.clock_rate);
                let Some(rtp) = d.output_ts(layer.ssrc, rtp_in) else {
                    continue;
                };
                out.push((
                    d.subscriber,
                    d.sender,
                    SenderReport {
                        ssrc: d.ssrc,
                        ntp_time: ntp,
                        rtp_time: rtp,
                        packet_count: d.packets as u32,
                        octet_count: d.bytes as u32,
                        ..Default::default()
                    },
                ));
            }
        }
    }

    /// Up to `n` padding-only probe packets for `subscriber`, on one of its forwarding video
    /// legs (appended to `out`).
    pub fn probe_packets(&mut self, subscriber: PeerKey, n: usize, out: &mut Vec<Outgoing>) {
        let leg = self
            .tracks
            .values_mut()
            .filter(|t| t.kind == TrackKind::Video)
            .flat_map(|t| t.downs.iter_mut())
            .find(|d| d.subscriber == subscriber && d.can_pad());
        let Some(d) = leg else {
            return;
        };
        for _ in 0..n {
            let Some(packet) = d.padding_packet() else {
                return;
            };
            out.push(Outgoing {
                subscriber,
                sender: d.sender,
                packet,
            });
        }
    }

    /// Video legs paused for bandwidth.
    pub fn paused_for_bandwidth(&self) -> usize {
        self.tracks
            .values()
            .flat_map(|t| t.downs.iter())
            .filter(|d| d.paused_for_bandwidth)
            .count()
    }

    /// Dynacast: for each simulcast track whose wanted layers changed, (publisher, its own
    /// track id, the rids to send). A layer is wanted while a leg forwards it or waits for it
    /// (a leg not yet open wants the lowest); it is turned off after `off_delay` unwanted. The
    /// lowest layer is never turned off.
    pub fn dynacast(
        &mut self,
        now: Instant,
        off_delay: Duration,
    ) -> Vec<(PeerKey, String, Vec<String>)> {
        let mut updates = Vec::new();
        for t in self.tracks.values_mut() {
            if t.kind != TrackKind::Video || !t.layers.is_simulcast() {
                continue;
            }
            let mut wanted = [false; MAX_LAYERS];
            let lowest = t.layers.lowest().unwrap_or(0);
            // The lowest layer stays on: it is cheap, and a subscriber whose link degrades (or
            // who just joined) needs it at once, not after the encoder restarts it.
            wanted[usize::from(lowest)] = true;
            for d in &t.downs {
                let (current, target) = d.layers();
                if d.state != DownState::Open {
                    wanted[usize::from(lowest)] = true;
                }
                for l in [current, target, d.ideal].into_iter().flatten() {
                    if let Some(w) = wanted.get_mut(usize::from(l)) {
                        *w = true;
                    }
                }
            }
            let dc = &mut t.dynacast;
            let before = dc.announced.unwrap_or([true; MAX_LAYERS]);
            let mut send = before;
            for slot in 0..MAX_LAYERS {
                if wanted[slot] {
                    dc.unneeded_since[slot] = None;
                    send[slot] = true;
                } else {
                    let since = *dc.unneeded_since[slot].get_or_insert(now);
                    if now.saturating_duration_since(since) >= off_delay {
                        send[slot] = false;
                    }
                }
            }
            if dc.announced == Some(send) || (dc.announced.is_none() && send == before) {
                continue;
            }
            dc.announced = Some(send);
            let active = t
                .layers
                .iter()
                .filter(|(slot, _)| send[usize::from(*slot)])
                .filter_map(|(_, l)| l.rid.clone())
                .collect();
            updates.push((t.publisher, t.source_track_id.clone(), active));
        }
        updates
    }

    /// Keyframe requests due now (deferred by the throttle or re-asked): (publisher, receiver,
    /// media SSRC) for each.
    pub fn due_keyframe_requests(&mut self, now: Instant) -> Vec<(PeerKey, RTCRtpReceiverId, u32)> {
        let mut due = Vec::new();
        for t in self.tracks.values_mut() {
            for (_, l) in t.layers.iter_mut() {
                if !l.flowing(now) {
                    // Turned off (dynacast) or dropped by the encoder: asking again is useless,
                    // and a layer that starts again begins with a keyframe.
                    l.keyframes.on_keyframe();
                    continue;
                }
                if l.keyframes.poll(now) {
                    due.push((t.publisher, t.receiver, l.ssrc));
                }
            }
        }
        due
    }

    /// Refreshes every bitrate meter (call about once a second).
    pub fn update_rates(&mut self, now: Instant) {
        for t in self.tracks.values_mut() {
            t.rate.update(t.bytes_in, now);
            t.layers.update_rates(now);
            for d in &mut t.downs {
                d.rate.update(d.bytes, now);
            }
        }
    }

    /// The earliest keyframe-request deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracks
            .values()
            .flat_map(|t| {
                t.layers
                    .iter()
                    .filter_map(|(_, l)| l.keyframes.next_deadline())
            })
            .min()
    }

    /// Asks for a keyframe of `layer` on `key`; returns what to send now, if anything.
    pub fn request_keyframe(
        &mut self,
        key: TrackKey,
        layer: LayerIndex,
        now: Instant,
    ) -> Option<(PeerKey, RTCRtpReceiverId, u32)> {
        let t = self.tracks.get_mut(&key)?;
        if t.kind != TrackKind::Video {
            return None;
        }
        let l = t.layers.get_mut(layer)?;
        l.keyframes
            .request(now)
            .then_some((t.publisher, t.receiver, l.ssrc))
    }

    /// Asks for a keyframe of the layer `subscriber`'s leg of `key` forwards or waits for (its
    /// decoder lost the picture).
    pub fn request_keyframe_for(
        &mut self,
        key: TrackKey,
        subscriber: PeerKey,
        now: Instant,
    ) -> Option<(PeerKey, RTCRtpReceiverId, u32)> {
        let (current, target) = self.leg_mut(key, subscriber)?.layers();
        self.request_keyframe(key, target.or(current)?, now)
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
        layer_packet(0xabc, seq, u32::from(seq) * 3000, keyframe, pt, ext)
    }

    fn layer_packet(
        ssrc: u32,
        seq: u16,
        ts: u32,
        keyframe: bool,
        pt: u8,
        ext: Option<u8>,
    ) -> Packet {
        let mut payload = vec![0u8; 100];
        payload[0] = 0x10;
        payload[1] = if keyframe { 0x00 } else { 0x01 };
        Packet {
            header: Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
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
    fn vp8_track(publisher: RtpMap) -> (Forwarder, TrackKey) {
        let mut f = Forwarder::new(Duration::from_millis(500));
        let tk = f.publish(
            PeerKey(1),
            ParticipantId::mint(),
            TrackKind::Video,
            RTCRtpReceiverId::default(),
            "camera".into(),
            codec("video/VP8", 96).rtp_codec,
            publisher,
        );
        (f, tk)
    }

    fn room() -> (Forwarder, TrackKey) {
        let (mut f, tk) = vp8_track(RtpMap::new(&[codec("video/VP8", 96)], &[audio_level(1)]));
        f.add_layer(tk, None, 0xabc);
        f.subscribe(
            tk,
            DownTrack::new(PeerKey(2), RTCRtpSenderId::default(), 0x222, 90_000),
        );
        f.subscribe(
            tk,
            DownTrack::new(PeerKey(3), RTCRtpSenderId::default(), 0x333, 90_000),
        );
        (f, tk)
    }

    fn open_both(f: &mut Forwarder, tk: TrackKey) {
        let vp8_sub = RtpMap::new(&[codec("video/VP8", 120)], &[audio_level(5)]);
        let h264_sub = RtpMap::new(&[codec("video/H264", 102)], &[]);
        assert_eq!(
            f.open(tk, PeerKey(2), &vp8_sub, None),
            Some(0),
            "video legs wait for a keyframe"
        );
        assert_eq!(f.open(tk, PeerKey(3), &h264_sub, None), Some(0));
    }

    #[test]
    fn legs_not_yet_answered_get_nothing_and_are_counted_per_leg() {
        let (mut f, tk) = room();
        let mut out = Vec::new();
        let o = f.forward(tk, &packet(96, 1, true, None), Instant::now(), &mut out);
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
        let o = f.forward(tk, &packet(96, 7, false, None), Instant::now(), &mut out);
        assert!(out.is_empty(), "both legs wait for a keyframe");
        assert_eq!(o.waiting_for_keyframe, 1, "the VP8 leg waits");
        assert_eq!(o.codec_not_negotiated, 1, "the H.264 leg cannot carry VP8");
        let reasons: Vec<_> = o.drops().collect();
        assert!(reasons.contains(&(DropReason::WaitingForKeyframe, 1)));
        assert!(reasons.contains(&(DropReason::CodecNotNegotiated, 1)));

        let o = f.forward(tk, &packet(96, 8, true, Some(1)), Instant::now(), &mut out);
        assert!(o.keyframe);
        assert_eq!((o.forwarded, out.len()), (1, 1));
        let h = &out[0].packet.header;
        assert_eq!(out[0].subscriber, PeerKey(2));
        assert_eq!((h.ssrc, h.payload_type), (0x222, 120));
        assert_eq!(h.extensions.len(), 1);
        assert_eq!(h.extensions[0].id, 5, "extension id renumbered for the leg");
        let first = h.sequence_number;

        let o = f.forward(tk, &packet(96, 9, false, None), Instant::now(), &mut out);
        assert_eq!(o.forwarded, 1);
        assert_eq!(out[0].packet.header.sequence_number, first.wrapping_add(1));
        assert!(out[0].packet.header.extensions.is_empty());
        assert!(!out[0].packet.header.extension);
    }

    #[test]
    fn an_unknown_track_reports_no_kind() {
        let (mut f, _) = room();
        let mut out = Vec::new();
        let o = f.forward(
            TrackKey(999),
            &packet(96, 1, true, None),
            Instant::now(),
            &mut out,
        );
        assert_eq!(o.kind, None);
        assert!(out.is_empty());
    }

    #[test]
    fn keyframe_requests_are_throttled_and_retried_until_a_keyframe_arrives() {
        let (mut f, tk) = room();
        let t0 = Instant::now();
        let mut out = Vec::new();
        // The layer flows (inter frames only).
        f.forward(tk, &packet(96, 1, false, None), t0, &mut out);
        assert!(
            f.request_keyframe(tk, 0, t0).is_some(),
            "first request goes out"
        );
        assert!(f
            .request_keyframe(tk, 0, t0 + Duration::from_millis(100))
            .is_none());
        let due = f.next_deadline().expect("a retry is scheduled");
        assert!(due > t0);
        assert_eq!(f.due_keyframe_requests(due).len(), 1, "re-asked");
        f.forward(tk, &packet(96, 2, true, None), due, &mut out);
        assert!(f.next_deadline().is_none(), "a keyframe ends the retries");
        // A layer that stopped flowing is not asked again (it starts with a keyframe).
        assert!(f
            .request_keyframe(tk, 0, due + Duration::from_secs(1))
            .is_some());
        assert!(f
            .due_keyframe_requests(due + Duration::from_secs(3))
            .is_empty());
        assert!(f.next_deadline().is_none());
    }

    /// A simulcast VP8 track: layers q (ssrc 10), h (20), f (30), each with its own sequence
    /// and timestamp space; one subscriber (peer 2).
    fn simulcast_room() -> (Forwarder, TrackKey) {
        let (mut f, tk) = vp8_track(RtpMap::new(&[codec("video/VP8", 96)], &[]));
        for (rid, ssrc) in [("f", 30), ("q", 10), ("h", 20)] {
            f.add_layer(tk, Some(rid), ssrc);
        }
        f.subscribe(
            tk,
            DownTrack::new(PeerKey(2), RTCRtpSenderId::default(), 0x222, 90_000),
        );
        let sub = RtpMap::new(&[codec("video/VP8", 120)], &[]);
        assert_eq!(
            f.open(tk, PeerKey(2), &sub, None),
            Some(0),
            "starts on the lowest"
        );
        (f, tk)
    }

    /// One 20 ms frame of every layer at `frame` (one packet each), at `t0 + frame * 20 ms`;
    /// returns the packets the subscriber got.
    fn frame(
        f: &mut Forwarder,
        tk: TrackKey,
        t0: Instant,
        n: u32,
        keyframe_of: &[u32],
    ) -> Vec<Packet> {
        let now = t0 + Duration::from_millis(u64::from(n) * 20);
        let mut got = Vec::new();
        for (ssrc, seq0, ts0) in [
            (10u32, 100u16, 1_000u32),
            (20, 5_000, 77_000),
            (30, 60_000, 9_999_000),
        ] {
            let p = layer_packet(
                ssrc,
                seq0.wrapping_add(n as u16),
                ts0.wrapping_add(n * 1800),
                keyframe_of.contains(&ssrc),
                96,
                None,
            );
            let mut out = Vec::new();
            f.forward(tk, &p, now, &mut out);
            got.extend(out.into_iter().map(|o| o.packet));
        }
        got
    }

    /// A VP8 track (ssrc 0xabc) with two open VP8 legs: PeerKey(2) negotiated RTX (PT 121 for
    /// PT 120, its RTX SSRC 0x2221), PeerKey(3) did not.
    fn rtx_room() -> (Forwarder, TrackKey) {
        let (mut f, tk) = vp8_track(RtpMap::new(&[codec("video/VP8", 96)], &[]));
        f.add_layer(tk, None, 0xabc);
        for (key, ssrc) in [(2, 0x222), (3, 0x333)] {
            f.subscribe(
                tk,
                DownTrack::new(PeerKey(key), RTCRtpSenderId::default(), ssrc, 90_000),
            );
        }
        let mut rtx = codec("video/rtx", 121);
        rtx.rtp_codec.sdp_fmtp_line = "apt=120".into();
        let with_rtx = RtpMap::new(&[codec("video/VP8", 120), rtx], &[]);
        let plain = RtpMap::new(&[codec("video/VP8", 120)], &[]);
        f.open(tk, PeerKey(2), &with_rtx, Some(0x2221));
        f.open(tk, PeerKey(3), &plain, None);
        (f, tk)
    }

    /// Forwards `pkt` at `now`; returns (subscriber, packet) pairs.
    fn fwd(f: &mut Forwarder, tk: TrackKey, pkt: &Packet, now: Instant) -> Vec<(u64, Packet)> {
        let mut out = Vec::new();
        f.forward(tk, pkt, now, &mut out);
        out.into_iter()
            .map(|o| (o.subscriber.0, o.packet))
            .collect()
    }

    #[test]
    fn nacks_are_answered_from_the_shared_cache_in_each_legs_own_numbers() {
        let (mut f, tk) = rtx_room();
        let t0 = Instant::now();
        let mut sent: Vec<(u64, Packet)> = Vec::new();
        for seq in 1000..1006u16 {
            let p = packet(96, seq, seq == 1000, None);
            sent.extend(fwd(&mut f, tk, &p, t0));
        }
        let of = |k: u64| -> Vec<&Packet> {
            sent.iter()
                .filter(|(s, _)| *s == k)
                .map(|(_, p)| p)
                .collect()
        };
        let (a, b) = (of(2), of(3));
        assert_eq!((a.len(), b.len()), (6, 6));
        // Each subscriber lost its 4th packet (input 1003) and NACKs its own number for it.
        let mut out = Vec::new();
        let now = t0 + Duration::from_millis(30);
        let c = f.retransmit(
            tk,
            PeerKey(2),
            &[a[3].header.sequence_number],
            now,
            &mut out,
        );
        assert_eq!((c.sent, c.unknown), (1, 0));
        let rtx = &out[0].packet;
        assert_eq!(rtx.header.ssrc, 0x2221, "on the leg's RTX stream");
        assert_eq!(rtx.header.payload_type, 121);
        assert_eq!(rtx.header.timestamp, a[3].header.timestamp);
        assert_eq!(
            &rtx.payload[..2],
            &a[3].header.sequence_number.to_be_bytes(),
            "original number first"
        );
        assert_eq!(&rtx.payload[2..], &a[3].payload[..]);
        out.clear();
        let c = f.retransmit(
            tk,
            PeerKey(3),
            &[b[3].header.sequence_number],
            now,
            &mut out,
        );
        assert_eq!(c.sent, 1);
        let plain = &out[0].packet;
        assert_eq!(plain.header.ssrc, 0x333);
        assert_eq!(plain.header.sequence_number, b[3].header.sequence_number);
        assert_eq!(plain.header.payload_type, 120);
        assert_eq!(
            plain.payload.as_ptr(),
            b[3].payload.as_ptr(),
            "the payload stored once, shared"
        );
        // Asked again at once: already on its way. Much later: gone from the cache.
        out.clear();
        let again = f.retransmit(
            tk,
            PeerKey(3),
            &[b[3].header.sequence_number],
            now,
            &mut out,
        );
        assert_eq!((again.sent, again.repeated), (0, 1));
        let late = f.retransmit(
            tk,
            PeerKey(3),
            &[b[2].header.sequence_number],
            t0 + Duration::from_secs(2),
            &mut out,
        );
        assert_eq!((late.sent, late.too_old), (0, 1));
        let never = f.retransmit(
            tk,
            PeerKey(3),
            &[b[5].header.sequence_number.wrapping_add(10)],
            now,
            &mut out,
        );
        assert_eq!(never.unknown, 1);
    }

    #[test]
    fn a_publisher_retransmission_fills_each_legs_hole_and_can_be_sent_again() {
        let (mut f, tk) = rtx_room();
        let t0 = Instant::now();
        let mut got: Vec<(u64, Packet)> = Vec::new();
        // 1002 is lost upstream: the legs see a hole and NACK it; nothing is cached for it yet.
        for seq in [1000u16, 1001, 1003, 1004] {
            got.extend(fwd(&mut f, tk, &packet(96, seq, seq == 1000, None), t0));
        }
        let leg3: Vec<u16> = got
            .iter()
            .filter(|(s, _)| *s == 3)
            .map(|(_, p)| p.header.sequence_number)
            .collect();
        let hole = leg3[1].wrapping_add(1);
        assert_eq!(
            leg3[2],
            hole.wrapping_add(1),
            "the hole is kept open for the retransmission"
        );
        let mut out = Vec::new();
        assert_eq!(
            f.retransmit(tk, PeerKey(3), &[hole], t0, &mut out).unknown,
            1
        );
        // The publisher's retransmission of 1002 arrives: it lands in the hole on every leg.
        let late = fwd(
            &mut f,
            tk,
            &packet(96, 1002, false, None),
            t0 + Duration::from_millis(60),
        );
        let leg3_late: Vec<u16> = late
            .iter()
            .filter(|(s, _)| *s == 3)
            .map(|(_, p)| p.header.sequence_number)
            .collect();
        assert_eq!(leg3_late, vec![hole]);
        assert_eq!(late.len(), 2, "both legs");
    }

    #[test]
    fn sender_reports_carry_the_publishers_clock_into_each_legs_timestamps() {
        let (mut f, tk) = rtx_room();
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for seq in 1000..1003u16 {
            sent.extend(fwd(&mut f, tk, &packet(96, seq, seq == 1000, None), t0));
        }
        let mut reports = Vec::new();
        f.sender_reports(t0, &mut reports);
        assert!(reports.is_empty(), "no publisher clock yet");
        // The publisher says: RTP 1002 * 3000 is NTP 100 s.
        f.on_sender_report(PeerKey(1), 0xabc, 100 << 32, 1002 * 3000, t0);
        f.sender_reports(t0 + Duration::from_millis(500), &mut reports);
        assert_eq!(reports.len(), 2, "one per leg");
        for (sub, _, sr) in &reports {
            let last = sent
                .iter()
                .filter(|(s, _)| *s == sub.0)
                .map(|(_, p)| p)
                .last()
                .expect("leg sent");
            assert_eq!(sr.ssrc, last.header.ssrc);
            assert_eq!(
                sr.ntp_time,
                (100 << 32) + (1 << 31),
                "carried forward 500 ms"
            );
            // The leg's RTP time for that instant: its own timestamp of input 1002, + 45000.
            assert_eq!(sr.rtp_time, last.header.timestamp.wrapping_add(45_000));
            assert_eq!(sr.packet_count, 3);
        }
    }

    #[test]
    fn padding_probes_go_between_frames_never_inside_one() {
        let (mut f, tk) = rtx_room();
        let t0 = Instant::now();
        let mut first = packet(96, 1, true, None);
        first.header.marker = false;
        fwd(&mut f, tk, &first, t0);
        let mut out = Vec::new();
        f.probe_packets(PeerKey(2), 3, &mut out);
        assert!(out.is_empty(), "the frame is not complete yet");
        let mut last = packet(96, 2, false, None);
        last.header.timestamp = first.header.timestamp;
        last.header.marker = true;
        fwd(&mut f, tk, &last, t0);
        f.probe_packets(PeerKey(2), 3, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out
            .iter()
            .all(|o| o.packet.header.padding && o.packet.payload.is_empty()));
        // Paused (even mid-frame): probes still go, to find out when the link allows resuming.
        let mut next = packet(96, 3, false, None);
        next.header.marker = false;
        fwd(&mut f, tk, &next, t0);
        f.set_target(tk, PeerKey(2), None, t0);
        out.clear();
        f.probe_packets(PeerKey(2), 2, &mut out);
        assert_eq!(out.len(), 2, "a paused leg carries probes");
        // A lost probe is asked for like media: it goes again, the same number, as padding.
        let lost = out[0].packet.header.sequence_number;
        let mut again = Vec::new();
        let c = f.retransmit(tk, PeerKey(2), &[lost], t0, &mut again);
        assert_eq!(c.sent, 1);
        assert_eq!(again[0].packet.header.sequence_number, lost);
        assert!(again[0].packet.header.padding && again[0].packet.payload.is_empty());
    }

    /// The VP8 PictureID (15 bits) of a payload that has one.
    fn picture_id(p: &Packet) -> u16 {
        assert_eq!(p.payload[..2], [0x90, 0x80], "X and I set");
        u16::from_be_bytes([p.payload[2] & 0x7f, p.payload[3]])
    }

    #[test]
    fn vp8_picture_ids_run_on_across_a_layer_switch() {
        let (mut f, tk) = simulcast_room();
        let t0 = Instant::now();
        // Each layer numbers its pictures on its own: q from 7000, f from 300 (far behind).
        let send = |f: &mut Forwarder, n: u16, key: &[u32]| {
            let mut got = Vec::new();
            for (ssrc, seq0, pid0) in [(10u32, 100u16, 7_000u16), (30, 60_000, 300)] {
                let pid = pid0 + n;
                let mut payload = vec![0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8];
                payload.push(if key.contains(&ssrc) { 0x00 } else { 0x01 });
                payload.resize(100, 0);
                let mut p = layer_packet(
                    ssrc,
                    seq0.wrapping_add(n),
                    u32::from(n) * 1800,
                    false,
                    96,
                    None,
                );
                p.payload = Bytes::from(payload);
                let mut out = Vec::new();
                f.forward(
                    tk,
                    &p,
                    t0 + Duration::from_millis(u64::from(n) * 20),
                    &mut out,
                );
                got.extend(out.into_iter().map(|o| o.packet));
            }
            got
        };
        let mut got = send(&mut f, 0, &[10]);
        got.extend(send(&mut f, 1, &[]));
        f.set_target(tk, PeerKey(2), Some(2), t0 + Duration::from_millis(30));
        got.extend(send(&mut f, 2, &[30]));
        got.extend(send(&mut f, 3, &[]));
        // q's frames 0-2 (frame 2's q packet comes before f's keyframe), then f's 2 and 3.
        let ids: Vec<u16> = got.iter().map(picture_id).collect();
        assert_eq!(
            ids,
            vec![7_000, 7_001, 7_002, 7_003, 7_004],
            "q's numbers, then f's continuing them"
        );
        assert_eq!(
            &got[3].payload[4..],
            &[0x00; 96][..],
            "the keyframe's body as it was"
        );
    }

    #[test]
    fn a_layer_switch_happens_only_at_a_keyframe_with_no_sequence_gap_or_timestamp_jump() {
        let (mut f, tk) = simulcast_room();
        let t0 = Instant::now();
        assert!(
            frame(&mut f, tk, t0, 0, &[]).is_empty(),
            "waits for a keyframe of q"
        );
        let first = frame(&mut f, tk, t0, 1, &[10]);
        assert_eq!(first.len(), 1, "q's keyframe starts the leg");
        let mut got = first;
        got.extend(frame(&mut f, tk, t0, 2, &[]));
        // The allocator moves the leg to f: asks the publisher for a keyframe of f (ssrc 30).
        let pli = f.set_target(tk, PeerKey(2), Some(2), t0 + Duration::from_millis(50));
        assert_eq!(pli.map(|p| p.2), Some(30));
        for n in 3..6 {
            got.extend(frame(&mut f, tk, t0, n, &[]));
        }
        assert_eq!(got.len(), 5, "q flows until f's keyframe");
        // Frame 6: q's packet (still the leg's layer) comes first, then f's keyframe switches.
        got.extend(frame(&mut f, tk, t0, 6, &[30, 20]));
        got.extend(frame(&mut f, tk, t0, 7, &[]));
        assert_eq!(got.len(), 8, "q until the switch, then f only");
        for (i, w) in got.windows(2).enumerate() {
            assert_eq!(
                w[1].header.sequence_number,
                w[0].header.sequence_number.wrapping_add(1)
            );
            let dt = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
            if i == 5 {
                // q's frame 6 and f's keyframe 6 were captured together: a tick apart.
                assert_eq!(dt, 1, "the switch keeps time moving forward, no jump");
            } else {
                assert_eq!(dt, 1800, "20 ms per frame, before and after the switch");
            }
            assert_eq!(w[1].header.ssrc, 0x222);
        }
        let leg = f.leg_mut(tk, PeerKey(2)).expect("leg");
        assert_eq!(leg.layers(), (Some(2), Some(2)));
        assert_eq!(leg.switches, 2, "the start on q and the switch to f");
    }

    #[test]
    fn a_paused_leg_sends_nothing_and_resumes_at_a_keyframe_without_a_hole() {
        let (mut f, tk) = simulcast_room();
        let t0 = Instant::now();
        let mut got = frame(&mut f, tk, t0, 0, &[10]);
        assert!(
            f.set_target(tk, PeerKey(2), None, t0).is_none(),
            "pausing needs no keyframe"
        );
        for n in 1..50 {
            assert!(frame(&mut f, tk, t0, n, &[10]).is_empty(), "paused");
        }
        assert!(f
            .set_target(tk, PeerKey(2), Some(0), t0 + Duration::from_secs(1))
            .is_some());
        assert!(
            frame(&mut f, tk, t0, 50, &[]).is_empty(),
            "resumes at a keyframe"
        );
        got.extend(frame(&mut f, tk, t0, 51, &[10]));
        got.extend(frame(&mut f, tk, t0, 52, &[]));
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1].header.sequence_number,
            got[0].header.sequence_number.wrapping_add(1),
            "no hole the size of the pause"
        );
        assert_eq!(
            got[1]
                .header
                .timestamp
                .wrapping_sub(got[0].header.timestamp),
            51 * 1800,
            "time still advances"
        );
    }

    #[test]
    fn dynacast_turns_off_unwanted_layers_after_a_delay_and_on_at_once() {
        let (mut f, tk) = simulcast_room();
        let t0 = Instant::now();
        let delay = Duration::from_secs(3);
        // The leg wants q: h and f are unwanted, but only turned off after the delay.
        assert!(f.dynacast(t0, delay).is_empty());
        let off = f.dynacast(t0 + delay, delay);
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].1, "camera");
        assert_eq!(off[0].2, vec!["q".to_string()]);
        assert!(f.dynacast(t0 + delay * 2, delay).is_empty(), "told once");
        f.set_target(tk, PeerKey(2), Some(2), t0 + delay * 2);
        let on = f.dynacast(t0 + delay * 2, delay);
        assert_eq!(
            on[0].2,
            vec!["q".to_string(), "f".to_string()],
            "f on at once, q still forwarded"
        );
        // The leg now waits for f; q stays on all the same (the lowest layer is never off).
        assert!(f.dynacast(t0 + delay * 3, delay).is_empty());
        // Nobody subscribed any more: everything but the lowest off after the delay.
        f.drop_subscriber(PeerKey(2));
        assert!(f.dynacast(t0 + delay * 3, delay).is_empty());
        let low = f.dynacast(t0 + delay * 4, delay);
        assert_eq!(low[0].2, vec!["q".to_string()]);
    }
}
