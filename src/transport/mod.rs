//! Transport: the shared UDP media port, the ICE-TCP port beside it (with its RFC 4571
//! framing) and the demultiplexer. Knows nothing of rooms beyond the inbox type it defines
//! ([`udp::RoomInbox`]).

pub mod demux;
pub mod framing;
pub mod stun_discover;
pub mod tcp;
pub mod udp;
