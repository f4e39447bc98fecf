//! One published track as sent to one subscriber: its own SSRC, payload types, header
//! extension ids, sequence/timestamp space, and the "wait for a keyframe" gate.

use rtc::rtp::header::{Extension, Header};
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;

use super::munger::Munger;
use super::rate::RateMeter;
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
    waiting_for_keyframe: bool,
    /// Packets forwarded on this leg.
    pub packets: u64,
    /// Payload bytes forwarded on this leg.
    pub bytes: u64,
    /// Outgoing bitrate.
    pub rate: RateMeter,
}

impl DownTrack {
    /// A new leg, not yet negotiated.
    pub fn new(subscriber: PeerKey, sender: RTCRtpSenderId, ssrc: u32) -> Self {
        Self {
            subscriber,
            sender,
            ssrc,
            state: DownState::Pending,
            translation: None,
            munger: Munger::new(rand::random(), rand::random()),
            waiting_for_keyframe: false,
            packets: 0,
            bytes: 0,
            rate: RateMeter::default(),
        }
    }

    /// The subscriber answered: start forwarding with these tables. Video legs first wait for a
    /// keyframe (the caller asks the publisher for one).
    pub fn open(&mut self, translation: Translation, needs_keyframe: bool) {
        self.state = DownState::Open;
        self.translation = Some(translation);
        self.waiting_for_keyframe = needs_keyframe;
    }

    /// Rewrites `src` for this subscriber, or says why it is not sent.
    pub fn rewrite(&mut self, src: &Packet, is_keyframe: bool) -> Result<Packet, DropReason> {
        let Some(t) = &self.translation else {
            return Err(DropReason::NotNegotiated);
        };
        let h = &src.header;
        let Some(pt) = t.payload_type(h.payload_type) else {
            self.munger.skip(h.ssrc, h.sequence_number);
            return Err(DropReason::CodecNotNegotiated);
        };
        if self.waiting_for_keyframe {
            if !is_keyframe {
                return Err(DropReason::WaitingForKeyframe);
            }
            self.waiting_for_keyframe = false;
        }
        let (seq, ts) = self.munger.rewrite(h.ssrc, h.sequence_number, h.timestamp);
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
        Ok(Packet {
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
        })
    }
}
