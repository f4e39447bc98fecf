//! Media: the forwarding plane. Sans-IO: nothing here touches a socket, a clock or tokio.
//!
//! - [`forwarder`]: published tracks → subscriber legs, the per-packet decision.
//! - [`downtrack`]: one subscriber leg: SSRC/PT/extension rewrite, keyframe gate.
//! - [`munger`]: sequence-number/timestamp continuity per leg.
//! - [`keyframe`]: PLI merging and throttling per published track.
//! - [`track`]: negotiated payload-type/extension tables.
//! - [`codec`]: keyframe detection per codec.
//! - [`rate`]: bitrate meters for the room API.
//! - [`rtcp_tap`]: lets chosen inbound RTCP (PLI, FIR, NACK) reach the application.

pub mod codec;
pub mod downtrack;
pub mod forwarder;
pub mod keyframe;
pub mod munger;
pub mod rate;
pub mod rtcp_tap;
pub mod track;

/// Why a packet (or datagram) was not forwarded. Each is counted in
/// `confab_forward_drops_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// RTP for a track the room does not know (e.g. before its `OnTrack`).
    UnknownTrack,
    /// The subscriber leg is not negotiated yet.
    NotNegotiated,
    /// The subscriber did not negotiate the publisher's codec.
    CodecNotNegotiated,
    /// The subscriber leg waits for a keyframe.
    WaitingForKeyframe,
    /// The peer connection refused the packet.
    WriteFailed,
    /// The room's datagram queue was full.
    InboxFull,
    /// A datagram from an address/ufrag no room knows.
    UnknownPeer,
    /// The UDP socket send buffer was full.
    SocketFull,
    /// A datagram the peer connection could not process.
    BadDatagram,
    /// A track the publisher may not publish (grant or track limit).
    NotPermitted,
}

impl DropReason {
    /// Every reason, for pre-resolving metric handles.
    pub const ALL: [DropReason; 10] = [
        DropReason::UnknownTrack,
        DropReason::NotNegotiated,
        DropReason::CodecNotNegotiated,
        DropReason::WaitingForKeyframe,
        DropReason::WriteFailed,
        DropReason::InboxFull,
        DropReason::UnknownPeer,
        DropReason::SocketFull,
        DropReason::BadDatagram,
        DropReason::NotPermitted,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownTrack => "unknown_track",
            DropReason::NotNegotiated => "not_negotiated",
            DropReason::CodecNotNegotiated => "codec_not_negotiated",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::WriteFailed => "write_failed",
            DropReason::InboxFull => "inbox_full",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::SocketFull => "socket_full",
            DropReason::BadDatagram => "bad_datagram",
            DropReason::NotPermitted => "not_permitted",
        }
    }
}
