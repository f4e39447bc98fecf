//! Egress: the one place a packet is written to a subscriber leg. Everything that later shapes
//! what leaves toward a subscriber (retransmission cache, pacer, congestion control) sits behind
//! [`Egress::write`].
//!
//! The write goes through `RTCRtpSender::write_rtp` of the patched `rtc` (see
//! `patches/rtc/PATCHES.md`): the sender checks the packet against bit sets it built once from
//! the negotiated parameters, and no track id `String` is made per packet. Then rtc's pipeline
//! runs: the NACK responder keeps a copy, sender-report counters, SRTP.

use std::time::Instant;

use rtc::peer_connection::RTCPeerConnection;

use super::forwarder::Outgoing;
use crate::telemetry::DropReason;

/// The room's egress. It holds no state yet; per-subscriber sending state (retransmission
/// cache, pacer, congestion control) joins it here, with a `forget(subscriber)` for leaves.
#[derive(Debug, Default)]
pub struct Egress;

impl Egress {
    /// Writes one rewritten packet into its subscriber's peer connection. Returns the payload
    /// length written, or why the packet did not go out.
    pub fn write(
        &mut self,
        pc: &mut RTCPeerConnection,
        out: Outgoing,
        now: Instant,
    ) -> Result<usize, DropReason> {
        let Some(mut sender) = pc.rtp_sender(out.sender) else {
            return Err(DropReason::WriteFailed);
        };
        let len = out.packet.payload.len();
        match sender.write_rtp(now, out.packet) {
            Ok(()) => Ok(len),
            Err(e) => {
                tracing::trace!(%e, "write_rtp failed");
                Err(DropReason::WriteFailed)
            }
        }
    }
}
