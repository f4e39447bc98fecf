//! # Confab — a selective forwarding unit for browser video calls
//!
//! Every participant makes one `RTCPeerConnection` to the server; the server forwards each
//! published track to every other member of the room.
//!
//! ## Layout (the packet path in one file per hop)
//! ```text
//!  browser ──WebSocket──▶ http.rs ─▶ signal/session.rs ─RoomCmd─▶ room/task.rs
//!  browser ──UDP──▶ transport/udp.rs ─▶ transport/demux.rs ─Datagram─▶ room/task.rs
//!        room/task.rs: Peer (room/peer.rs, rtc sans-IO core) ─RTP─▶ media/forwarder.rs
//!        media/forwarder.rs ─▶ media/downtrack.rs (SSRC/PT/ext/seq rewrite per subscriber)
//!        room/task.rs ─write_rtp─▶ subscriber Peer ─poll_write─▶ transport/udp.rs (UdpTx)
//! ```
//! 1. [`transport::udp`] reads a datagram from the one shared UDP port.
//! 2. [`transport::demux`] routes it to its room by STUN ufrag, then by source address.
//! 3. [`room::task`] feeds it to the publisher's peer connection and drains the decrypted RTP.
//! 4. [`media::forwarder`] picks the open subscriber legs; [`media::downtrack`] rewrites the
//!    packet for each.
//! 5. [`room::task`] writes each into the subscriber's peer connection, drains the encrypted
//!    datagrams and sends them through [`transport::udp::UdpTx`] (one `sendmmsg` per wake-up).
//!
//! Around the packet path: [`server`] composes everything; [`config`] loads settings;
//! [`auth`] verifies access tokens; [`telemetry`] holds logging and the Prometheus metrics;
//! [`room::registry`] is the room directory. The Rust client (async webrtc-rs) used by the
//! integration tests, and the `confab-loadtest` load generator, are a separate crate
//! (`crates/confab-client`), so the server does not link the async WebRTC stack.
//!
//! ## Glossary
//! - *Up track*: a track a participant publishes. *Down track*: one up track as sent to one
//!   subscriber (own SSRC, payload types, header-extension ids, sequence/timestamp space).
//! - *Munger*: keeps a down track's sequence numbers and timestamps continuous.
//! - *Keyframe requester*: merges and throttles PLIs per up track.
//! - *Demuxer*: maps datagrams on the shared port to peer connections.

pub mod auth;
pub mod config;
pub mod http;
pub mod ids;
pub mod media;
pub mod room;
pub mod server;
pub mod signal;
pub mod telemetry;
pub mod transport;
