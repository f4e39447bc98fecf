//! RFC 4571 framing for ICE-TCP: every STUN, DTLS, SRTP or SRTCP packet on the TCP stream is
//! preceded by its length as a 16-bit big-endian integer. Pure: bytes in, frames out, so the
//! partial reads and garbage a TCP peer can produce are tested without sockets.

use bytes::{Buf, BufMut, BytesMut};

/// Largest frame accepted. The format allows 65 535; nothing ICE, DTLS or SRTP sends over a
/// path with a 1500-byte MTU comes near this, so a longer length means garbage or abuse.
pub const MAX_FRAME: usize = 2048;

/// A length prefix no packet of ours can have: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds {MAX_FRAME}")]
    TooLarge(usize),
    /// A zero-length frame (never a packet).
    #[error("empty frame")]
    Empty,
}

/// Splits a byte stream into frames. Read into [`buffer`](Self::buffer), then take frames with
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self {
            buf: BytesMut::with_capacity(4 * MAX_FRAME),
        }
    }
}

impl FrameDecoder {
    /// Where the next read's bytes go (grown so at least one whole frame fits).
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < MAX_FRAME + 2 {
            self.buf.reserve(4 * MAX_FRAME);
        }
        &mut self.buf
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an error for a length
    /// that no packet can have (the stream cannot be resynchronised: close it).
    pub fn next_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        self.buf.advance(2);
        Ok(Some(self.buf.split_to(len)))
    }
}

/// Appends `packet` to `out` as one frame. Packets longer than 65 535 bytes cannot be framed
/// (none of ours are); `false` and nothing written for them.
pub fn encode(packet: &[u8], out: &mut BytesMut) -> bool {
    let Ok(len) = u16::try_from(packet.len()) else {
        return false;
    };
    out.reserve(2 + packet.len());
    out.put_u16(len);
    out.put_slice(packet);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for p in packets {
            assert!(encode(p, &mut out));
        }
        out.to_vec()
    }

    fn feed(d: &mut FrameDecoder, bytes: &[u8]) {
        d.buffer().extend_from_slice(bytes);
    }

    #[test]
    fn frames_round_trip() {
        let mut d = FrameDecoder::default();
        feed(&mut d, &framed(&[b"stun", b"dtls-record", &[7u8; 1200]]));
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"stun"[..]));
        assert_eq!(
            d.next_frame().unwrap().as_deref(),
            Some(&b"dtls-record"[..])
        );
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(1200));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn partial_reads_are_joined_byte_by_byte() {
        let stream = framed(&[b"hello", b"world!", &[1u8; 300]]);
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &stream {
            feed(&mut d, std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(
            got,
            vec![b"hello".to_vec(), b"world!".to_vec(), vec![1u8; 300]]
        );
    }

    #[test]
    fn an_oversize_length_is_an_error() {
        let mut d = FrameDecoder::default();
        feed(&mut d, &[0x08, 0x01, 1, 2, 3]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(2049)));
        let mut d = FrameDecoder::default();
        feed(&mut d, &[0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(65535)));
    }

    #[test]
    fn an_empty_frame_is_an_error() {
        let mut d = FrameDecoder::default();
        feed(&mut d, &[0, 0, 0, 5]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn a_frame_of_the_maximum_size_is_accepted() {
        let big = vec![9u8; MAX_FRAME];
        let mut d = FrameDecoder::default();
        feed(&mut d, &framed(&[&big]));
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(MAX_FRAME));
    }

    #[test]
    fn encode_refuses_what_cannot_be_framed() {
        let mut out = BytesMut::new();
        assert!(!encode(&vec![0u8; 70_000], &mut out));
        assert!(out.is_empty());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Garbage never panics, and every frame handed out is within bounds.
        #[test]
        fn garbage_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 0..20)) {
            let mut d = FrameDecoder::default();
            'outer: for c in chunks {
                d.buffer().extend_from_slice(&c);
                loop {
                    match d.next_frame() {
                        Ok(Some(f)) => prop_assert!(!f.is_empty() && f.len() <= MAX_FRAME),
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
        }

        /// Any split of a framed stream gives back the same packets.
        #[test]
        fn any_split_gives_the_same_frames(
            packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..MAX_FRAME), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut stream = BytesMut::new();
            for p in &packets { encode(p, &mut stream); }
            let at = cut.index(stream.len() + 1);
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for part in [&stream[..at], &stream[at..]] {
                d.buffer().extend_from_slice(part);
                while let Some(f) = d.next_frame().unwrap() { got.push(f.to_vec()); }
            }
            prop_assert_eq!(got, packets);
        }
    }
}
