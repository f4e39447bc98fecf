//! The probe every synthetic packet carries right after its codec header, so a receiver on the
//! same host can measure one-way delay and detect loss, duplicates and reordering independently
//! of the SFU's RTP sequence-number rewriting, and check that the payload arrived byte-identical.
//!
//! Layout (big-endian, [`PROBE_LEN`] bytes):
//! ```text
//!  0  magic     u32  "CFB1"
//!  4  publisher u32  publisher index (chosen by the test / load tester)
//!  8  track     u8   track index within the publisher (0 audio, 1 video by convention)
//!  9  flags     u8   FLAG_* bits
//! 10  length    u16  total RTP payload length (codec header + probe + filler)
//! 12  seq       u64  per-track counter, +1 per packet, never rewritten
//! 20  sent_ns   u64  send time, nanoseconds since the UNIX epoch
//! 28  checksum  u32  FNV-1a over the whole payload with this field zeroed
//! ```
//! The filler after the probe is a deterministic byte pattern derived from `seq`.

use bytes::{BufMut, BytesMut};

/// Probe magic: ASCII "CFB1".
pub const MAGIC: u32 = 0x4346_4231;
/// Bytes the probe occupies.
pub const PROBE_LEN: usize = 32;
/// Offset of the checksum field inside the probe.
const CHECKSUM_AT: usize = 28;

/// The packet belongs to a keyframe.
pub const FLAG_KEYFRAME: u8 = 0x01;
/// The packet is the first of its frame.
pub const FLAG_FRAME_START: u8 = 0x02;
/// The packet is the last of its frame.
pub const FLAG_FRAME_END: u8 = 0x04;

/// A decoded probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Publisher index.
    pub publisher: u32,
    /// Track index within the publisher.
    pub track: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Total payload length the sender wrote.
    pub length: u16,
    /// Per-track counter.
    pub seq: u64,
    /// Send time, nanoseconds since the UNIX epoch.
    pub sent_ns: u64,
}

impl Probe {
    /// Whether this packet starts a keyframe.
    pub fn is_keyframe_start(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0 && self.flags & FLAG_FRAME_START != 0
    }
}

/// Why a payload's probe could not be read or verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No probe where the codec header says it should be.
    #[error("no probe found in the payload")]
    NotFound,
    /// The payload length differs from the one the sender recorded.
    #[error("payload length {actual} differs from the sent length {expected}")]
    Length {
        /// What the probe says.
        expected: u16,
        /// What arrived.
        actual: usize,
    },
    /// The checksum does not match: the payload was altered.
    #[error("payload checksum mismatch")]
    Checksum,
}

/// FNV-1a (32-bit) over `data`, treating `data[skip..skip + 4]` as zero bytes.
fn checksum(data: &[u8], skip: usize) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, &b) in data.iter().enumerate() {
        let b = if (skip..skip + 4).contains(&i) { 0 } else { b };
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The filler byte at position `i` after the probe of packet `seq`.
pub fn filler_byte(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(i as u8)
}

/// Appends a probe and `filler` filler bytes to `buf` (which already holds the codec header),
/// then fills in the total length and the checksum. `probe.length` is ignored: the final length
/// is whatever `buf` ends up holding.
pub fn write(buf: &mut BytesMut, probe: &Probe, filler: usize) {
    let start = buf.len();
    let total = start + PROBE_LEN + filler;
    buf.reserve(PROBE_LEN + filler);
    buf.put_u32(MAGIC);
    buf.put_u32(probe.publisher);
    buf.put_u8(probe.track);
    buf.put_u8(probe.flags);
    buf.put_u16(u16::try_from(total).unwrap_or(u16::MAX));
    buf.put_u64(probe.seq);
    buf.put_u64(probe.sent_ns);
    buf.put_u32(0);
    for i in 0..filler {
        buf.put_u8(filler_byte(probe.seq, i));
    }
    let sum = checksum(buf, start + CHECKSUM_AT);
    buf[start + CHECKSUM_AT..start + CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the probe at `offset` without verifying the payload.
pub fn read_at(payload: &[u8], offset: usize) -> Option<Probe> {
    if be_u32(payload, offset)? != MAGIC {
        return None;
    }
    Some(Probe {
        publisher: be_u32(payload, offset + 4)?,
        track: *payload.get(offset + 8)?,
        flags: *payload.get(offset + 9)?,
        length: be_u16(payload, offset + 10)?,
        seq: be_u64(payload, offset + 12)?,
        sent_ns: be_u64(payload, offset + 20)?,
    })
}

/// Reads the probe at `offset` and verifies the whole payload (length and checksum).
pub fn verify_at(payload: &[u8], offset: usize) -> Result<Probe, ProbeError> {
    let probe = read_at(payload, offset).ok_or(ProbeError::NotFound)?;
    if usize::from(probe.length) != payload.len() {
        return Err(ProbeError::Length {
            expected: probe.length,
            actual: payload.len(),
        });
    }
    let stored = be_u32(payload, offset + CHECKSUM_AT).ok_or(ProbeError::NotFound)?;
    if checksum(payload, offset + CHECKSUM_AT) != stored {
        return Err(ProbeError::Checksum);
    }
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Probe {
        Probe {
            publisher: 7,
            track: 1,
            flags: FLAG_KEYFRAME | FLAG_FRAME_START,
            length: 0,
            seq,
            sent_ns: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn round_trips_after_a_codec_header() {
        let mut buf = BytesMut::from(&[0x10u8, 0x00, 0x9d][..]);
        write(&mut buf, &sample(42), 100);
        assert_eq!(buf.len(), 3 + PROBE_LEN + 100);
        let p = verify_at(&buf, 3).expect("valid probe");
        assert_eq!(p.seq, 42);
        assert_eq!(p.publisher, 7);
        assert!(p.is_keyframe_start());
        assert_eq!(usize::from(p.length), buf.len());
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let mut buf = BytesMut::new();
        write(&mut buf, &sample(1), 50);
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(verify_at(&bad, 0), Err(ProbeError::Checksum));
        assert!(matches!(
            verify_at(&buf[..buf.len() - 1], 0),
            Err(ProbeError::Length { .. })
        ));
        assert_eq!(verify_at(&buf, 1), Err(ProbeError::NotFound));
        assert_eq!(verify_at(&[], 0), Err(ProbeError::NotFound));
    }
}
