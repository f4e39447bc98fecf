//! Signaling: the JSON protocol ([`protocol`]) and one WebSocket session per participant
//! ([`session`]).

pub mod protocol;
pub mod session;
