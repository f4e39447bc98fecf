//! Signaling: the JSON protocol ([`protocol`]), one WebSocket session per participant
//! ([`session`]), the TURN credentials it hands out ([`turn`]), and the one-exchange WHIP/WHEP
//! sessions ([`whip`]).

pub mod protocol;
pub mod session;
pub mod turn;
pub mod whip;
