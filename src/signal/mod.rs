//! Signaling: the JSON protocol ([`protocol`]), one WebSocket session per participant
//! ([`session`]) and the TURN credentials it hands out ([`turn`]).

pub mod protocol;
pub mod session;
pub mod turn;
