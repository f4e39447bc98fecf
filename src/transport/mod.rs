//! Transport: the shared UDP media port and the demultiplexer. Knows nothing of rooms beyond
//! the inbox type it defines ([`udp::RoomInbox`]).

pub mod demux;
pub mod udp;
