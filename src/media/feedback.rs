//! Inbound RTCP feedback, routed: what a subscriber's (or publisher's) RTCP asks the room to do.
//! Pure: the room feeds the packets its peer connection delivered and acts on the values this
//! returns; the counters say what arrived, each kind under its own name.
//!
//! PLI and FIR (keyframe requests, relayed to the publisher), NACK (answered inside the peer
//! connection by its retransmission buffer; counted here) and REMB (a receiver's own estimate:
//! the subscriber's bandwidth when it does not send transport-wide feedback). Transport-wide
//! feedback is consumed inside the peer connection by its congestion controller.

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// Counts of feedback kinds seen, for the caller's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackCounts {
    /// Picture loss indications.
    pub pli: u64,
    /// Full intra requests (each FCI entry is one request).
    pub fir: u64,
    /// Generic NACK packets.
    pub nack: u64,
    /// The last REMB's bitrate in this packet (bits per second), if any.
    pub remb_bps: Option<u64>,
}

/// Walks one compound RTCP packet: calls `keyframe(ssrc)` for every media SSRC a PLI or FIR
/// asks a keyframe for, and returns what was seen.
pub fn route(
    packets: &[Box<dyn rtc::rtcp::Packet>],
    mut keyframe: impl FnMut(u32),
) -> FeedbackCounts {
    let mut counts = FeedbackCounts::default();
    for p in packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            counts.pli += 1;
            keyframe(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            for e in &fir.fir {
                counts.fir += 1;
                keyframe(e.ssrc);
            }
        } else if any.is::<TransportLayerNack>() {
            counts.nack += 1;
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            if remb.bitrate.is_finite() && remb.bitrate >= 0.0 {
                counts.remb_bps = Some(remb.bitrate as u64);
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    #[test]
    fn pli_fir_and_nack_are_counted_apart_and_keyframes_asked_per_ssrc() {
        let packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![
            Box::new(ReceiverReport::default()),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: 10,
            }),
            Box::new(FullIntraRequest {
                sender_ssrc: 1,
                media_ssrc: 0,
                fir: vec![
                    FirEntry {
                        ssrc: 11,
                        sequence_number: 1,
                    },
                    FirEntry {
                        ssrc: 12,
                        sequence_number: 1,
                    },
                ],
            }),
            Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 10,
                nacks: vec![NackPair {
                    packet_id: 5,
                    lost_packets: 0,
                }],
            }),
        ];
        let mut asked = Vec::new();
        let counts = route(&packets, |ssrc| asked.push(ssrc));
        assert_eq!(asked, vec![10, 11, 12]);
        assert_eq!(
            counts,
            FeedbackCounts {
                pli: 1,
                fir: 2,
                nack: 1,
                remb_bps: None,
            }
        );
    }
}
