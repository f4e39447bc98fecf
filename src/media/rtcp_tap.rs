//! An interceptor that lets chosen inbound RTCP reach the application (the default chain
//! consumes all inbound RTCP otherwise). The server taps keyframe requests and NACKs
//! ([`sfu_feedback`]); the test/load client taps keyframe requests ([`keyframe_request`]).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

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
pub struct RtcpTap {
    wanted: fn(&dyn rtc::rtcp::packet::Packet) -> bool,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    /// A tap delivering what `wanted` selects.
    pub fn new(wanted: fn(&dyn rtc::rtcp::packet::Packet) -> bool) -> Self {
        Self {
            wanted,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(pkts) = &msg.message.packet {
            if pkts.iter().any(|p| (self.wanted)(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for RtcpTap {
    /// Writes are queued unchanged (the tap only marks inbound RTCP).
    fn passes_writes_through(&self) -> bool {
        true
    }
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
