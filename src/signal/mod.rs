//! Signaling: the JSON protocol ([`protocol`]), the chat frames of the data channel ([`chat`]), one WebSocket session per participant
//! ([`session`]), the TURN credentials it hands out ([`turn`]), and the one-exchange WHIP/WHEP
//! sessions ([`whip`]); in a cluster, the relay of a session to the node hosting its room
//! ([`relay`]).

pub mod chat;
pub mod protocol;
pub mod relay;
pub mod session;
pub mod turn;
pub mod whip;
