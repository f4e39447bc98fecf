//! One published track as sent to one subscriber: its own SSRC, payload types, header
//! extension ids, sequence/timestamp space, which simulcast layer it forwards (switching only at
//! a keyframe), what the subscriber shows it at, and what it sent (to answer NACKs from the
//! track's shared cache).

use std::time::Instant;

use bytes::BytesMut;

use rtc::rtp::header::{Extension, Header};
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;

use super::cache::{Cached, AUDIO_SLOTS, VIDEO_SLOTS};
use super::codec::red_primary;
use super::munger::Munger;
use super::rate::RateMeter;
use super::sentlog::{RetransmitBudget, SentLog};
use super::simulcast::{LayerIndex, LayerSelector, Selection};
use super::track::Translation;
use super::vp8::Vp8Numbers;
use super::DropReason;
use crate::ids::PeerKey;

/// Where a down track is in negotiation with its subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownState {
    /// Added to the subscriber's peer connection, not yet in an offer.
    Pending,
    /// In the server offer with this generation; waiting for the answer.
    Offered(u64),
    /// The subscriber answered: packets flow.
    Open,
}

/// How the subscriber shows a video track (reported by its client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// On screen at all.
    pub visible: bool,
    /// Rendered width in device pixels.
    pub width: u32,
    /// Rendered height in device pixels.
    pub height: u32,
}

impl Default for View {
    /// Until the client says otherwise: visible, size unknown (no cap).
    fn default() -> Self {
        Self {
            visible: true,
            width: 0,
            height: 0,
        }
    }
}

/// What one leg did with one packet.
#[derive(Debug)]
pub enum LegOutcome {
    /// Send this packet; `switched` if it started a new layer on the leg.
    Send {
        /// The rewritten packet.
        packet: Packet,
        /// It was the keyframe that completed a layer switch (or started the leg).
        switched: bool,
    },
    /// Not this leg's layer, or the leg is paused: nothing to count.
    Skip,
    /// Dropped, for this reason.
    Drop(DropReason),
}

/// One (published track, subscriber) leg.
#[derive(Debug)]
pub struct DownTrack {
    /// The subscriber.
    pub subscriber: PeerKey,
    /// The sender on the subscriber's peer connection.
    pub sender: RTCRtpSenderId,
    /// SSRC the subscriber sees.
    pub ssrc: u32,
    /// Negotiation state.
    pub state: DownState,
    translation: Option<Translation>,
    munger: Munger,
    /// Which layer flows (audio and single-layer video: layer 0).
    selector: LayerSelector,
    /// RTP clock rate of the track (timestamps across a layer switch).
    clock_rate: u32,
    /// When the last packet went out on this leg.
    last_out: Option<Instant>,
    /// How the subscriber shows it.
    pub view: View,
    /// The allocator paused it for lack of bandwidth (the subscriber was told).
    pub paused_for_bandwidth: bool,
    /// Since when the leg waits for a keyframe of a new target layer.
    switch_since: Option<Instant>,
    /// Allocations in a row that found no room for it (a pause needs two: one low estimate
    /// does not stop a picture).
    pub starved: u8,
    /// The layer the allocator chose, before falling back to a layer that flows (dynacast
    /// keeps it turned on at the publisher).
    pub ideal: Option<LayerIndex>,
    /// Layer switches completed on this leg.
    pub switches: u64,
    /// Which input packet each recent output sequence number carried.
    pub sent: SentLog,
    /// The leg's RTX stream (RFC 4588), when the subscriber negotiated one: its SSRC.
    rtx_ssrc: Option<u32>,
    /// Next RTX sequence number.
    rtx_seq: u16,
    /// Byte budget of its retransmissions.
    pub budget: RetransmitBudget,
    /// Audio: forward RED (RFC 2198) as RED when the subscriber negotiated it; `false` sends
    /// only its primary blocks (the allocator's choice when the link is tight).
    pub redundancy: bool,
    /// Payload type of the last packet sent (padding probes reuse it).
    last_pt: Option<u8>,
    /// The last packet sent ended a frame (marker bit): padding may go in now without
    /// landing inside a frame, which would leave the receiver unable to assemble it.
    at_frame_end: bool,
    /// Packets forwarded on this leg.
    pub packets: u64,
    /// Payload bytes forwarded on this leg.
    pub bytes: u64,
    /// Outgoing bitrate.
    pub rate: RateMeter,
    /// VP8: the picture numbers as this leg sends them.
    vp8: Vp8Numbers,
}

impl DownTrack {
    /// A new leg, not yet negotiated.
    pub fn new(subscriber: PeerKey, sender: RTCRtpSenderId, ssrc: u32, clock_rate: u32) -> Self {
        Self {
            subscriber,
            sender,
            ssrc,
            state: DownState::Pending,
            translation: None,
            munger: Munger::new(rand::random(), rand::random()),
            selector: LayerSelector::new(None),
            clock_rate,
            last_out: None,
            view: View::default(),
            paused_for_bandwidth: false,
            starved: 0,
            switch_since: None,
            ideal: None,
            switches: 0,
            sent: SentLog::default(),
            rtx_ssrc: None,
            rtx_seq: rand::random(),
            budget: RetransmitBudget::default(),
            redundancy: true,
            last_pt: None,
            at_frame_end: false,
            packets: 0,
            bytes: 0,
            rate: RateMeter::default(),
            vp8: Vp8Numbers::default(),
        }
    }

    /// The subscriber answered: start forwarding `layer` with these tables. A video leg starts
    /// at a keyframe of it (the caller asks the publisher for one); audio flows at once.
    /// `rtx_ssrc`: the leg's RTX stream, if negotiated (retransmissions go there).
    pub fn open(
        &mut self,
        translation: Translation,
        layer: LayerIndex,
        needs_keyframe: bool,
        rtx_ssrc: Option<u32>,
    ) {
        self.state = DownState::Open;
        self.translation = Some(translation);
        self.rtx_ssrc = rtx_ssrc;
        if self.sent.is_empty() {
            self.sent = SentLog::new(if needs_keyframe {
                VIDEO_SLOTS
            } else {
                AUDIO_SLOTS
            });
        }
        self.selector = LayerSelector::new(Some(layer));
        if !needs_keyframe {
            self.selector.select(layer, true);
        }
    }

    /// The leg will carry another source (a viewer's slot re-pointed): it forgets what it
    /// sent (its retransmissions came from the old source's cache) and the layer it was on;
    /// its output sequence and timestamps continue from where they stopped. Reopened with
    /// [`open`](Self::open).
    pub fn repoint(&mut self) {
        self.state = DownState::Pending;
        self.translation = None;
        self.sent = SentLog::default();
        self.selector = LayerSelector::new(None);
        self.munger.splice_next();
        self.switch_since = None;
        self.paused_for_bandwidth = false;
        self.starved = 0;
        self.ideal = None;
        self.at_frame_end = true;
    }

    /// Forwarding stops for a while (the track is muted): the packet after the pause continues
    /// the output without a hole.
    pub fn splice_next(&mut self) {
        self.munger.splice_next();
    }

    /// The layer forwarded now, and the one wanted (`None`: paused).
    pub fn layers(&self) -> (Option<LayerIndex>, Option<LayerIndex>) {
        (self.selector.current(), self.selector.target())
    }

    /// Picks the layer to forward (`None` pauses) at `now`. Returns `true` when the leg now
    /// waits for a keyframe of the new layer (the caller asks the publisher for one).
    pub fn set_target(&mut self, target: Option<LayerIndex>, now: Instant) -> bool {
        if self.selector.target() == target {
            return false;
        }
        if self.selector.current().is_none() || target.is_none() {
            // Resuming (or pausing): the input skips ahead meanwhile; continue without a hole.
            self.munger.splice_next();
        }
        self.selector.set_target(target);
        let switching = self.selector.switching();
        self.switch_since = switching.then_some(now);
        switching
    }

    /// A padding-only packet on this leg (a bandwidth probe): the next sequence number, the last
    /// timestamp, no payload; the receiver counts it in its feedback and discards it. `None`
    /// unless the leg can carry one now (see [`can_pad`](Self::can_pad)).
    pub fn padding_packet(&mut self) -> Option<Packet> {
        if !self.can_pad() {
            return None;
        }
        let pt = self.last_pt?;
        let (seq, ts) = self.munger.padding()?;
        self.sent.record_padding(seq, ts);
        Some(self.padding_with(pt, seq, ts))
    }

    /// A padding-only packet with these numbers (a probe, or a lost probe sent again).
    fn padding_with(&self, pt: u8, seq: u16, ts: u32) -> Packet {
        Packet {
            header: Header {
                version: 2,
                padding: true,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::new(),
        }
    }

    /// A lost padding probe, sent again as it was (it carries nothing to cache).
    pub fn padding_again(&self, out_seq: u16, out_ts: u32) -> Option<Packet> {
        Some(self.padding_with(self.last_pt?, out_seq, out_ts))
    }

    /// Whether a padding probe may go on this leg now: it is open and has a stream, and it is
    /// between two frames (a padding packet inside a frame splits the frame's sequence numbers,
    /// and the receiver cannot assemble it) or paused (the next frame it gets is a keyframe
    /// anyway). A paused leg is where a probe is needed most: it finds out when to resume.
    pub fn can_pad(&self) -> bool {
        self.state == DownState::Open
            && self.munger.started()
            && self.last_pt.is_some()
            && (self.at_frame_end || self.selector.target().is_none())
    }

    /// How long the leg has waited for a keyframe of its new target layer (`None`: not
    /// switching).
    pub fn switching_for(&self, now: Instant) -> Option<std::time::Duration> {
        if !self.selector.switching() {
            return None;
        }
        self.switch_since.map(|t| now.saturating_duration_since(t))
    }

    /// The packet that sends output `out_seq` (stamped `out_ts`) again with the cached input
    /// packet's payload: on the leg's RTX stream when negotiated (the original sequence number
    /// first in the payload, RFC 4588 §4), else as it went the first time. `None` when the leg
    /// has no payload type for it.
    pub fn retransmission(
        &mut self,
        out_seq: u16,
        out_ts: u32,
        cached: Cached<'_>,
        vp8: Option<(LayerIndex, &mut BytesMut)>,
    ) -> Option<Packet> {
        let t = self.translation.as_ref()?;
        let pt = t.payload_type(cached.payload_type)?;
        let renumbered =
            vp8.and_then(|(layer, arena)| self.vp8.rewrite_again(layer, cached.payload, arena));
        let payload = renumbered.as_ref().unwrap_or(cached.payload);
        let header = |ssrc, payload_type, sequence_number| Header {
            version: 2,
            marker: cached.marker,
            payload_type,
            sequence_number,
            timestamp: out_ts,
            ssrc,
            ..Default::default()
        };
        if let (Some(rtx_ssrc), Some(rtx_pt)) = (self.rtx_ssrc, t.rtx_payload_type(pt)) {
            let mut rtx = BytesMut::with_capacity(2 + payload.len());
            rtx.extend_from_slice(&out_seq.to_be_bytes());
            rtx.extend_from_slice(payload);
            let seq = self.rtx_seq;
            self.rtx_seq = seq.wrapping_add(1);
            return Some(Packet {
                header: header(rtx_ssrc, rtx_pt, seq),
                payload: rtx.freeze(),
            });
        }
        Some(Packet {
            header: header(self.ssrc, pt, out_seq),
            payload: payload.clone(),
        })
    }

    /// The leg's output timestamp for input timestamp `in_ts` of stream `in_ssrc`, if the leg
    /// forwards that stream now.
    pub fn output_ts(&self, in_ssrc: u32, in_ts: u32) -> Option<u32> {
        self.munger.output_ts(in_ssrc, in_ts)
    }

    /// Rewrites `src` (a packet of `layer`) for this subscriber, or says why not. `vp8`: the
    /// packet is VP8, and rewritten payloads go into this buffer (its picture numbers are made
    /// continuous across the leg's layer switches, [`vp8`](super::vp8)).
    pub fn rewrite(
        &mut self,
        src: &Packet,
        layer: LayerIndex,
        is_keyframe: bool,
        now: Instant,
        vp8: Option<&mut BytesMut>,
    ) -> LegOutcome {
        let Some(t) = &self.translation else {
            return LegOutcome::Drop(DropReason::NotNegotiated);
        };
        let h = &src.header;
        let selection = self.selector.select(layer, is_keyframe);
        if selection == Selection::Skip {
            return LegOutcome::Skip;
        }
        // The subscriber's payload type for it; for RED (RFC 2198) to a subscriber without RED,
        // its primary block as the plain codec.
        let plain = !self.redundancy && t.red_primary_type(h.payload_type).is_some();
        let direct = t
            .payload_type(h.payload_type)
            .filter(|_| !plain)
            .map(|pt| (pt, None));
        let unwrapped = || {
            let pt = t.red_primary_type(h.payload_type)?;
            Some((pt, Some(red_primary(&src.payload)?)))
        };
        let Some((pt, primary)) = direct.or_else(unwrapped) else {
            if selection != Selection::WaitForKeyframe {
                self.munger.skip(h.ssrc, h.sequence_number);
            }
            return LegOutcome::Drop(DropReason::CodecNotNegotiated);
        };
        if selection == Selection::WaitForKeyframe {
            return LegOutcome::Drop(DropReason::WaitingForKeyframe);
        }
        let switched = selection == Selection::Switched;
        if switched && vp8.is_some() {
            self.vp8.align(layer, &src.payload);
        }
        let ticks = self.last_out.map_or(0, |at| {
            let us = now.saturating_duration_since(at).as_micros() as u64;
            (us * u64::from(self.clock_rate) / 1_000_000) as u32
        });
        self.last_out = Some(now);
        self.last_pt = Some(pt);
        self.at_frame_end = h.marker;
        if switched {
            self.switches += 1;
        }
        let Some((seq, ts)) = self
            .munger
            .rewrite(h.ssrc, h.sequence_number, h.timestamp, ticks)
        else {
            return LegOutcome::Drop(DropReason::TooLate);
        };
        // Only forwardable extensions survive; most packets carry none or one, and an empty
        // Vec does not allocate.
        let mut extensions = Vec::new();
        for e in &h.extensions {
            if let Some(id) = t.extension_id(e.id) {
                extensions.push(Extension {
                    id,
                    payload: e.payload.clone(),
                });
            }
        }
        self.packets += 1;
        self.bytes += src.payload.len() as u64;
        self.sent.record(seq, layer, h.sequence_number, ts);
        LegOutcome::Send {
            switched,
            packet: Packet {
                header: Header {
                    version: 2,
                    padding: h.padding,
                    extension: !extensions.is_empty(),
                    marker: h.marker,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: self.ssrc,
                    csrc: Vec::new(),
                    extension_profile: h.extension_profile,
                    extensions,
                    extensions_padding: 0,
                },
                payload: match (primary, vp8) {
                    (Some(range), _) => src.payload.slice(range),
                    (None, Some(arena)) => self
                        .vp8
                        .rewrite(layer, &src.payload, arena)
                        .unwrap_or_else(|| src.payload.clone()),
                    (None, None) => src.payload.clone(),
                },
            },
        }
    }
}
