//! Media: the forwarding plane. Sans-IO: nothing here touches a socket, a clock or tokio.
//!
//! - [`forwarder`]: published tracks → subscriber legs, the per-packet decision.
//! - [`downtrack`]: one subscriber leg: SSRC/PT/extension rewrite, keyframe gate.
//! - [`munger`]: sequence-number/timestamp continuity per leg.
//! - [`cache`]: a received stream's recent packets, shared by its legs for retransmission.
//! - [`sentlog`]: what a leg sent under each sequence number, and the limits on resending.
//! - [`keyframe`]: PLI merging and throttling per published track.
//! - [`track`]: negotiated payload-type/extension tables.
//! - [`codec`]: keyframe detection per codec.
//! - [`vp8`]: VP8 picture numbers kept continuous across a leg's layer switches.
//! - [`rate`]: bitrate meters for the room API.
//! - [`loss`]: a received stream's sequence-number span (upstream loss).
//! - [`read_hook`]: a pass-through interceptor around one hook on inbound packets.
//! - [`rtcp_tap`]: lets chosen inbound RTCP (PLI, FIR, NACK) reach the application.
//! - [`rtx_unwrap`]: turns a publisher's retransmissions back into the packets they repair.
//! - [`feedback`]: routes inbound RTCP feedback (PLI, FIR, NACK) to what the room must do.
//! - [`egress`]: the one place a packet is written to a subscriber leg.
//! - [`simulcast`]: a track's layers, and which layer a leg forwards (switching at keyframes).
//! - [`bwe`]: a subscriber's bandwidth estimate from its transport-wide feedback.
//! - [`probe`]: padding bursts that test a subscriber's link upward.
//! - [`allocator`]: per-subscriber bandwidth allocation (audio first, layers by priority).
//! - [`voices`]: which voices a link too slow for all of them gets (speakers first).
//! - [`speaker`]: active-speaker detection from the publishers' audio levels.

pub mod allocator;
pub mod bwe;
pub mod cache;
pub mod codec;
pub mod downtrack;
pub mod egress;
pub mod feedback;
pub mod forwarder;
pub mod keyframe;
pub mod loss;
pub mod munger;
pub mod probe;
pub mod rate;
pub mod read_hook;
pub mod rtcp_tap;
pub mod rtx_unwrap;
pub mod sentlog;
pub mod simulcast;
pub mod speaker;
pub mod track;
pub mod voices;
pub mod vp8;

pub use crate::telemetry::DropReason;
