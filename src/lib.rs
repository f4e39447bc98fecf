//! # Confab — a selective forwarding unit for browser video calls
//!
//! Every participant makes one `RTCPeerConnection` to the server; the server forwards each
//! published track to every other member of the room.
//!
//! ## Layout (the packet path, socket to socket)
//! ```text
//!  browser ──WebSocket──▶ http.rs ─▶ signal/session.rs ─RoomCmd─▶ room/task.rs
//!  browser ──UDP──▶ transport/udp.rs ─▶ transport/demux.rs ─Datagram─▶ room/task.rs
//!        room/task.rs (I/O shell, clock) ─now─▶ room/state.rs (sans-IO room) ─▶ room/drive.rs
//!        room/drive.rs: publisher Peer (room/peer.rs, rtc) ─RTP─▶ media/forwarder.rs
//!        media/forwarder.rs ─▶ media/downtrack.rs (SSRC/PT/ext/seq rewrite per subscriber)
//!        room/drive.rs ─▶ media/egress.rs ─▶ subscriber Peer ─datagrams─▶ room/task.rs ─▶ UdpTx
//! ```
//! 1. [`transport::udp`] reads a datagram from the one shared UDP port.
//! 2. [`transport::demux`] routes it to its room by STUN ufrag, then by source address.
//! 3. [`room::task`] hands it, with the time, to [`room::state::Room::on_datagram`], which feeds
//!    the publisher's peer connection; [`room::drive`] drains the decrypted RTP.
//! 4. [`media::forwarder`] picks the open subscriber legs; [`media::downtrack`] rewrites the
//!    packet for each.
//! 5. [`media::egress`] writes each into the subscriber's peer connection; [`room::drive`]
//!    collects the encrypted datagrams and [`room::task`] sends them through
//!    [`transport::udp::UdpTx`] (`sendmmsg` batches).
//!
//! Beside the WebSocket: WHIP/WHEP sessions ([`signal::whip`], over HTTP in `http::whip`) join
//! rooms with one offer/answer; the room API's writes (`http::api`) become [`room::admin`]
//! commands; rooms' events go out as signed [`webhooks`].
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
pub mod cluster;
pub mod config;
pub mod http;
pub mod ids;
pub mod media;
pub mod room;
pub mod server;
pub mod signal;
pub mod telemetry;
pub mod transport;
pub mod webhooks;
