//! An interceptor that lets chosen inbound RTCP reach the application (the default chain
//! consumes all inbound RTCP otherwise). The server taps keyframe requests and NACKs
//! ([`sfu_feedback`]); the test/load client taps keyframe requests ([`keyframe_request`]).

use rtc::interceptor::{Attribute, Packet, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::read_hook::{ReadHook, ReadInterceptor};

/// PLI or FIR: a receiver asks for a keyframe.
pub fn keyframe_request(p: &dyn rtc::rtcp::packet::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// What the SFU acts on: keyframe requests (relayed), NACKs (answered from the track's
/// cache), REMB (a subscriber's estimate), sender reports (a publisher's clock mapping) and
/// receiver reports (a subscriber's loss).
pub fn sfu_feedback(p: &dyn rtc::rtcp::packet::Packet) -> bool {
    let any = p.as_any();
    keyframe_request(p)
        || any.is::<TransportLayerNack>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
        || any.is::<SenderReport>()
        || any.is::<ReceiverReport>()
}

/// Marks inbound RTCP compounds containing a packet `wanted` accepts for delivery to the
/// application; everything passes through unchanged otherwise.
pub type RtcpTap = ReadInterceptor<RtcpMarker>;

/// The tap's hook: which RTCP to deliver.
pub struct RtcpMarker {
    wanted: fn(&dyn rtc::rtcp::packet::Packet) -> bool,
}

impl RtcpTap {
    /// A tap delivering what `wanted` selects.
    pub fn new(wanted: fn(&dyn rtc::rtcp::packet::Packet) -> bool) -> Self {
        ReadInterceptor::with_hook(RtcpMarker { wanted })
    }
}

impl ReadHook for RtcpMarker {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtcp(pkts) = &msg.message.packet {
            if pkts.iter().any(|p| (self.wanted)(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
    }
}
