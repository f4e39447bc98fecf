//! An interceptor that turns a publisher's retransmissions (RTX, RFC 4588) back into the packets
//! they repair, before the rest of the chain sees them: the NACK generator then knows the hole is
//! filled (and stops asking), and the room receives the packet on its own stream and sequence
//! number, to be forwarded late into every leg's hole (see [`munger`](super::munger)).
//!
//! Which stream an RTX packet repairs: for a stream the SDP declared with an RTX SSRC
//! (`a=ssrc-group:FID`), that pairing; for a simulcast layer (told apart by `rid`, no SSRCs in
//! the SDP), the RTX packet's `repaired-rtp-stream-id` header extension names the layer's rid,
//! learnt from the layer's own packets (`rtp-stream-id`, with the `mid`). rtc 0.21 handles only
//! the first case, and only on the way to the application (after the NACK generator).
//!
//! Padding-only RTX packets (the publisher probing its uplink) pass through untouched: their
//! transport-wide sequence numbers must still be reported back to the publisher.

use std::collections::HashMap;

use rtc::interceptor::{Packet, StreamInfo, TaggedPacket};
use rtc::rtp::packet::Packet as RtpPacket;

use super::read_hook::{ReadHook, ReadInterceptor};

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
const RRID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// Most simulcast layers (mid, rid) remembered per connection (a publisher offers a few).
const MAX_LAYERS: usize = 64;

/// What a repair stream restores.
#[derive(Debug, Clone, Copy)]
struct Repairs {
    /// The primary stream.
    ssrc: u32,
    /// The primary payload type, if the pairing says (else the primary's last one).
    payload_type: Option<u8>,
}

/// The RTX unwrapping interceptor (one per peer connection).
#[derive(Default)]
pub struct RtxUnwrap {
    /// RTX SSRC → what it repairs.
    repairs: HashMap<u32, Repairs>,
    /// Primary SSRC → its last payload type.
    primary_pt: HashMap<u32, u8>,
    /// (mid, rid) → the layer's SSRC.
    layers: HashMap<(Vec<u8>, Vec<u8>), u32>,
    mid_id: Option<u8>,
    rid_id: Option<u8>,
    rrid_id: Option<u8>,
    /// Retransmissions restored.
    pub restored: u64,
}

impl RtxUnwrap {
    /// An unwrapper that knows no streams yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The interceptor to register (below the NACK generator).
    pub fn interceptor() -> ReadInterceptor<Self> {
        ReadInterceptor::with_hook(Self::new())
    }

    fn ext(pkt: &RtpPacket, id: Option<u8>) -> Option<&[u8]> {
        let id = id?;
        pkt.header
            .extensions
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.payload.as_ref())
    }

    /// What the RTX packet `pkt` repairs, learning simulcast pairings from `repaired-rtp-stream-id`.
    fn repairs_of(&mut self, pkt: &RtpPacket) -> Option<Repairs> {
        if let Some(r) = self.repairs.get(&pkt.header.ssrc) {
            return Some(*r);
        }
        let rrid = Self::ext(pkt, self.rrid_id)?;
        let mid = Self::ext(pkt, self.mid_id).unwrap_or_default();
        let ssrc = *self.layers.get(&(mid.to_vec(), rrid.to_vec()))?;
        let r = Repairs {
            ssrc,
            payload_type: None,
        };
        if self.repairs.len() < MAX_LAYERS * 2 {
            self.repairs.insert(pkt.header.ssrc, r);
        }
        Some(r)
    }

    /// Learns a primary packet's layer (rid) and payload type.
    fn learn(&mut self, pkt: &RtpPacket) {
        let ssrc = pkt.header.ssrc;
        if let Some(rid) = Self::ext(pkt, self.rid_id) {
            let mid = Self::ext(pkt, self.mid_id).unwrap_or_default();
            let key = (mid.to_vec(), rid.to_vec());
            if self.layers.get(&key) != Some(&ssrc) && self.layers.len() < MAX_LAYERS {
                self.layers.insert(key, ssrc);
            }
        }
        if self.primary_pt.get(&ssrc) != Some(&pkt.header.payload_type)
            && (self.primary_pt.contains_key(&ssrc) || self.primary_pt.len() < MAX_LAYERS)
        {
            self.primary_pt.insert(ssrc, pkt.header.payload_type);
        }
    }

    /// Restores `pkt` (an RTX packet repairing `r`) in place: the original sequence number from
    /// the first two payload bytes, the primary SSRC and payload type. `false` for padding.
    fn restore(&mut self, pkt: &mut RtpPacket, r: Repairs) -> bool {
        if pkt.payload.len() <= 2 {
            return false;
        }
        let Some(pt) = r
            .payload_type
            .or_else(|| self.primary_pt.get(&r.ssrc).copied())
        else {
            return false;
        };
        pkt.header.sequence_number = u16::from_be_bytes([pkt.payload[0], pkt.payload[1]]);
        pkt.header.ssrc = r.ssrc;
        pkt.header.payload_type = pt;
        pkt.header.padding = false;
        pkt.payload = pkt.payload.slice(2..);
        self.restored += 1;
        true
    }

    /// One inbound RTP packet: restored if it is a retransmission, learnt from otherwise.
    pub fn on_rtp(&mut self, pkt: &mut RtpPacket) {
        let is_repair =
            self.repairs.contains_key(&pkt.header.ssrc) || Self::ext(pkt, self.rrid_id).is_some();
        if !is_repair {
            self.learn(pkt);
            return;
        }
        if let Some(r) = self.repairs_of(pkt) {
            self.restore(pkt, r);
        }
    }
}

impl ReadHook for RtxUnwrap {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtp(pkt) = &mut msg.message.packet {
            self.on_rtp(pkt);
        }
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        for e in &info.rtp_header_extensions {
            let Ok(id) = u8::try_from(e.id) else { continue };
            match e.uri.as_str() {
                MID_URI => self.mid_id = Some(id),
                RID_URI => self.rid_id = Some(id),
                RRID_URI => self.rrid_id = Some(id),
                _ => {}
            }
        }
        if let Some(rtx) = info.ssrc_rtx {
            self.repairs.insert(
                rtx,
                Repairs {
                    ssrc: info.ssrc,
                    payload_type: Some(info.payload_type),
                },
            );
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.repairs.remove(&rtx);
        }
        self.repairs.retain(|_, r| r.ssrc != info.ssrc);
        self.primary_pt.remove(&info.ssrc);
        self.layers.retain(|_, s| *s != info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::rtp::header::{Extension, Header};

    fn pkt(
        ssrc: u32,
        pt: u8,
        seq: u16,
        exts: &[(u8, &'static [u8])],
        payload: &'static [u8],
    ) -> RtpPacket {
        RtpPacket {
            header: Header {
                version: 2,
                ssrc,
                payload_type: pt,
                sequence_number: seq,
                extension: !exts.is_empty(),
                extension_profile: 0xBEDE,
                extensions: exts
                    .iter()
                    .map(|(id, v)| Extension {
                        id: *id,
                        payload: Bytes::from_static(v),
                    })
                    .collect(),
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    fn simulcast_unwrapper() -> RtxUnwrap {
        let mut u = RtxUnwrap::new();
        u.bind_remote_stream(&StreamInfo {
            ssrc: 111,
            payload_type: 96,
            rtp_header_extensions: [(MID_URI, 1), (RID_URI, 2), (RRID_URI, 3)]
                .iter()
                .map(|(uri, id)| RTPHeaderExtension {
                    uri: (*uri).to_owned(),
                    id: *id,
                })
                .collect(),
            ..Default::default()
        });
        u
    }

    #[test]
    fn a_simulcast_retransmission_is_restored_to_its_layer_by_repaired_rid() {
        let mut u = simulcast_unwrapper();
        // The layers' own packets name their rid.
        u.on_rtp(&mut pkt(111, 96, 500, &[(1, b"0"), (2, b"q")], b"media"));
        u.on_rtp(&mut pkt(222, 96, 9000, &[(1, b"0"), (2, b"h")], b"media"));
        // A retransmission of h's 8995, on its RTX stream (PT 97): OSN first in the payload.
        let mut rtx = pkt(333, 97, 7, &[(1, b"0"), (3, b"h")], b"\x23\x23frame");
        u.on_rtp(&mut rtx);
        assert_eq!(rtx.header.ssrc, 222);
        assert_eq!(rtx.header.sequence_number, 0x2323);
        assert_eq!(rtx.header.payload_type, 96);
        assert_eq!(&rtx.payload[..], b"frame");
        // Later ones drop the extensions; the SSRC pairing was learnt.
        let mut next = pkt(333, 97, 8, &[], b"\x23\x24more");
        u.on_rtp(&mut next);
        assert_eq!(
            (next.header.ssrc, next.header.sequence_number),
            (222, 0x2324)
        );
        assert_eq!(u.restored, 2);
    }

    #[test]
    fn padding_and_unknown_repairs_pass_unchanged_and_primaries_untouched() {
        let mut u = simulcast_unwrapper();
        u.on_rtp(&mut pkt(111, 96, 500, &[(2, b"q")], b"media"));
        // Padding-only RTX (an uplink probe): its transport-wide number still matters.
        let mut pad = pkt(333, 97, 1, &[(3, b"q")], b"");
        u.on_rtp(&mut pad);
        assert_eq!((pad.header.ssrc, pad.header.payload_type), (333, 97));
        // A repair of a rid never seen: left for the chain to drop.
        let mut unknown = pkt(444, 97, 1, &[(3, b"f")], b"\x00\x01x");
        u.on_rtp(&mut unknown);
        assert_eq!(unknown.header.ssrc, 444);
        let mut media = pkt(111, 96, 501, &[], b"media");
        u.on_rtp(&mut media);
        assert_eq!(
            (media.header.ssrc, media.header.sequence_number),
            (111, 501)
        );
        assert_eq!(u.restored, 0);
    }

    #[test]
    fn a_declared_rtx_pairing_restores_without_extensions() {
        let mut u = RtxUnwrap::new();
        u.bind_remote_stream(&StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            payload_type: 100,
            payload_type_rtx: Some(101),
            ..Default::default()
        });
        let mut rtx = pkt(11, 101, 3, &[], b"\x00\x2aopus");
        u.on_rtp(&mut rtx);
        assert_eq!(
            (
                rtx.header.ssrc,
                rtx.header.sequence_number,
                rtx.header.payload_type
            ),
            (10, 42, 100)
        );
    }
}
