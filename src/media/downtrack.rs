//! One published track as sent to one subscriber: its own SSRC, payload types, header
//! extension ids, sequence/timestamp space, which simulcast layer it forwards (switching only at
//! a keyframe), and what the subscriber shows it at.

use std::time::Instant;

use rtc::rtp::header::{Extension, Header};
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;

use super::munger::Munger;
use super::rate::RateMeter;
use super::simulcast::{LayerIndex, LayerSelector, Selection};
use super::track::Translation;
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
    /// Payload type of the last packet sent (padding probes reuse it).
    last_pt: Option<u8>,
    /// Packets forwarded on this leg.
    pub packets: u64,
    /// Payload bytes forwarded on this leg.
    pub bytes: u64,
    /// Outgoing bitrate.
    pub rate: RateMeter,
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
            last_pt: None,
            packets: 0,
            bytes: 0,
            rate: RateMeter::default(),
        }
    }

    /// The subscriber answered: start forwarding `layer` with these tables. A video leg starts
    /// at a keyframe of it (the caller asks the publisher for one); audio flows at once.
    pub fn open(&mut self, translation: Translation, layer: LayerIndex, needs_keyframe: bool) {
        self.state = DownState::Open;
        self.translation = Some(translation);
        self.selector = LayerSelector::new(Some(layer));
        if !needs_keyframe {
            self.selector.select(layer, true);
        }
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
    /// unless the leg is forwarding.
    pub fn padding_packet(&mut self) -> Option<Packet> {
        if self.state != DownState::Open || self.selector.current().is_none() {
            return None;
        }
        let pt = self.last_pt?;
        let (seq, ts) = self.munger.padding()?;
        Some(Packet {
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
        })
    }

    /// How long the leg has waited for a keyframe of its new target layer (`None`: not
    /// switching).
    pub fn switching_for(&self, now: Instant) -> Option<std::time::Duration> {
        if !self.selector.switching() {
            return None;
        }
        self.switch_since.map(|t| now.saturating_duration_since(t))
    }

    /// Rewrites `src` (a packet of `layer`) for this subscriber, or says why not.
    pub fn rewrite(
        &mut self,
        src: &Packet,
        layer: LayerIndex,
        is_keyframe: bool,
        now: Instant,
    ) -> LegOutcome {
        let Some(t) = &self.translation else {
            return LegOutcome::Drop(DropReason::NotNegotiated);
        };
        let h = &src.header;
        let selection = self.selector.select(layer, is_keyframe);
        if selection == Selection::Skip {
            return LegOutcome::Skip;
        }
        let Some(pt) = t.payload_type(h.payload_type) else {
            if selection != Selection::WaitForKeyframe {
                self.munger.skip(h.ssrc, h.sequence_number);
            }
            return LegOutcome::Drop(DropReason::CodecNotNegotiated);
        };
        if selection == Selection::WaitForKeyframe {
            return LegOutcome::Drop(DropReason::WaitingForKeyframe);
        }
        let switched = selection == Selection::Switched;
        let ticks = self.last_out.map_or(0, |at| {
            let us = now.saturating_duration_since(at).as_micros() as u64;
            (us * u64::from(self.clock_rate) / 1_000_000) as u32
        });
        self.last_out = Some(now);
        self.last_pt = Some(pt);
        if switched {
            self.switches += 1;
        }
        let (seq, ts) = self
            .munger
            .rewrite(h.ssrc, h.sequence_number, h.timestamp, ticks);
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
                payload: src.payload.clone(),
            },
        }
    }
}
