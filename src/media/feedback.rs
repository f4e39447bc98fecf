//! Inbound RTCP feedback, routed: what a subscriber's (or publisher's) RTCP asks the room to do.
//! Pure: the room feeds the packets its peer connection delivered and acts on the
//! [`Feedback`] items this hands it; the counters say what arrived, each kind under its own name.
//!
//! PLI and FIR (keyframe requests, relayed to the publisher), NACK (answered by the room from
//! the track's retransmission cache), REMB (a receiver's own estimate: the subscriber's
//! bandwidth when it does not send transport-wide feedback), sender reports (a publisher's
//! NTP↔RTP mapping, carried over into each leg's own reports) and receiver reports (a
//! subscriber's loss on a leg). Transport-wide feedback is consumed inside the peer connection
//! by its congestion controller.

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
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

/// One thing the room acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A keyframe is asked for the stream with this media SSRC.
    Keyframe(u32),
    /// Sequence number `seq` of the stream with this media SSRC was lost.
    Nack { ssrc: u32, seq: u16 },
    /// A sender's mapping of its stream `ssrc`: RTP time `rtp` was NTP time `ntp` (64-bit).
    SenderReport { ssrc: u32, ntp: u64, rtp: u32 },
    /// A receiver's report on the stream `ssrc`: the fraction lost since its last report
    /// (0..=255 for 0..100 %).
    Loss { ssrc: u32, fraction_lost: u8 },
}

/// Walks one compound RTCP packet: hands `act` every [`Feedback`] in it, and returns what was
/// seen.
pub fn route(
    packets: &[Box<dyn rtc::rtcp::Packet>],
    mut act: impl FnMut(Feedback),
) -> FeedbackCounts {
    let mut counts = FeedbackCounts::default();
    for p in packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            counts.pli += 1;
            act(Feedback::Keyframe(pli.media_ssrc));
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            for e in &fir.fir {
                counts.fir += 1;
                act(Feedback::Keyframe(e.ssrc));
            }
        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            counts.nack += 1;
            for pair in &nack.nacks {
                act(Feedback::Nack {
                    ssrc: nack.media_ssrc,
                    seq: pair.packet_id,
                });
                for bit in 0..16u16 {
                    if pair.lost_packets & (1 << bit) != 0 {
                        act(Feedback::Nack {
                            ssrc: nack.media_ssrc,
                            seq: pair.packet_id.wrapping_add(bit + 1),
                        });
                    }
                }
            }
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            if remb.bitrate.is_finite() && remb.bitrate >= 0.0 {
                counts.remb_bps = Some(remb.bitrate as u64);
            }
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            act(Feedback::SenderReport {
                ssrc: sr.ssrc,
                ntp: sr.ntp_time,
                rtp: sr.rtp_time,
            });
            for r in &sr.reports {
                act(Feedback::Loss {
                    ssrc: r.ssrc,
                    fraction_lost: r.fraction_lost,
                });
            }
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            for r in &rr.reports {
                act(Feedback::Loss {
                    ssrc: r.ssrc,
                    fraction_lost: r.fraction_lost,
                });
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
    fn pli_fir_and_nack_are_counted_apart_and_each_lost_packet_named() {
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
                    // Bit 1: 5 + 2; bit 15: 5 + 16.
                    lost_packets: 0b1000_0000_0000_0010,
                }],
            }),
        ];
        let mut asked = Vec::new();
        let counts = route(&packets, |f| asked.push(f));
        assert_eq!(
            asked,
            vec![
                Feedback::Keyframe(10),
                Feedback::Keyframe(11),
                Feedback::Keyframe(12),
                Feedback::Nack { ssrc: 10, seq: 5 },
                Feedback::Nack { ssrc: 10, seq: 7 },
                Feedback::Nack { ssrc: 10, seq: 21 },
            ]
        );
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
