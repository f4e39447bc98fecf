//! Codec knowledge the forwarder needs: which codec a payload type carries and whether an RTP
//! payload starts a keyframe. Pure functions over byte slices; never panic on short input.

/// Codecs the forwarder can recognise keyframes of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Opus audio (every packet is independently decodable).
    Opus,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// H.264.
    H264,
    /// H.265.
    H265,
    /// AV1.
    Av1,
    /// Anything else: forwarded without keyframe gating.
    Other,
}

impl Codec {
    /// Classifies an SDP mime type (`video/VP8`, `audio/opus`, ...), case-insensitively.
    pub fn from_mime(mime: &str) -> Self {
        let sub = mime.rsplit('/').next().unwrap_or(mime);
        [
            ("opus", Codec::Opus),
            ("vp8", Codec::Vp8),
            ("vp9", Codec::Vp9),
            ("h264", Codec::H264),
            ("h265", Codec::H265),
            ("av1", Codec::Av1),
        ]
        .into_iter()
        .find(|(name, _)| sub.eq_ignore_ascii_case(name))
        .map_or(Codec::Other, |(_, c)| c)
    }

    /// Whether subscribers must wait for a keyframe before forwarding starts.
    pub fn needs_keyframe(self) -> bool {
        matches!(
            self,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::H265 | Codec::Av1
        )
    }

    /// Whether this RTP payload is (the start of) a keyframe.
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8_is_keyframe(payload),
            Codec::Vp9 => vp9_is_keyframe(payload),
            Codec::H264 => h264_is_keyframe(payload),
            Codec::H265 => h265_is_keyframe(payload),
            Codec::Av1 => av1_is_keyframe(payload),
            Codec::Opus | Codec::Other => true,
        }
    }
}

/// RFC 7741: the payload descriptor, then (on the first packet of a partition) the VP8 frame
/// header whose lowest bit is 0 for a keyframe.
pub fn vp8_is_keyframe(p: &[u8]) -> bool {
    vp8_frame_start(p).is_some_and(|f| f.first().is_some_and(|h| h & 0x01 == 0))
}

/// Where the fields of a VP8 payload descriptor (RFC 7741 §4.2) are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// Offset of the PictureID, and whether it has 15 bits (else 7).
    pub picture_id: Option<(usize, bool)>,
    /// Offset of the TL0PICIDX.
    pub tl0: Option<usize>,
    /// The descriptor's length: the VP8 payload starts here.
    pub len: usize,
}

/// Parses a VP8 payload descriptor; `None` if the packet is shorter than it says.
pub fn vp8_descriptor(p: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *p.first()?;
    let mut d = Vp8Descriptor {
        picture_id: None,
        tl0: None,
        len: 1,
    };
    if b0 & 0x80 == 0 {
        return Some(d);
    }
    let x = *p.get(1)?;
    let mut i = 2;
    if x & 0x80 != 0 {
        // PictureID: 7 or 15 bits.
        let long = p.get(i)? & 0x80 != 0;
        d.picture_id = Some((i, long));
        i += if long { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        d.tl0 = Some(i);
        i += 1;
    }
    if x & 0x30 != 0 {
        i += 1; // TID/Y/KEYIDX
    }
    // Every field named is there.
    p.get(..i)?;
    d.len = i;
    Some(d)
}

/// The VP8 payload after the RTP payload descriptor (RFC 7741 §4.2), if this packet starts
/// partition 0 of a frame (where the frame header is).
pub fn vp8_frame_start(p: &[u8]) -> Option<&[u8]> {
    let b0 = *p.first()?;
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return None;
    }
    p.get(vp8_descriptor(p)?.len..)
}

/// draft-ietf-payload-vp9: P (inter-picture predicted) clear and B (start of frame) set.
pub fn vp9_is_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0)
}

fn h264_nal_is_key(nal_type: u8) -> bool {
    matches!(nal_type, 5 | 7) // IDR slice, SPS
}

/// RFC 6184: single NAL, STAP-A aggregates, or the first FU-A fragment of an IDR/SPS.
pub fn h264_is_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if h264_nal_is_key(p[i + 2] & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && h264_nal_is_key(fu & 0x1f)),
        t => h264_nal_is_key(t),
    }
}

fn h265_nal_is_key(nal_type: u8) -> bool {
    (16..=21).contains(&nal_type) || nal_type == 33 // IRAP pictures, SPS
}

/// RFC 7798: single NAL, aggregation packet (48) or the first fragment unit (49) of an IRAP.
pub fn h265_is_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match (b0 >> 1) & 0x3f {
        48 => {
            let mut i = 2;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if h265_nal_is_key((p[i + 2] >> 1) & 0x3f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        49 => p
            .get(2)
            .is_some_and(|fu| fu & 0x80 != 0 && h265_nal_is_key(fu & 0x3f)),
        t => h265_nal_is_key(t),
    }
}

/// AV1 RTP: the aggregation header's N bit marks the first packet of a coded video sequence.
pub fn av1_is_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x08 != 0)
}

/// The primary (newest) block of an RFC 2198 RED payload, as a range of `p`: the redundant
/// blocks' 4-byte headers and data come first, then a 1-byte header for the primary. `None` for
/// a malformed payload (headers or lengths beyond its end).
pub fn red_primary(p: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut at = 0;
    let mut redundant = 0usize;
    loop {
        let first = *p.get(at)?;
        if first & 0x80 == 0 {
            at += 1;
            break;
        }
        let header = p.get(at..at + 4)?;
        redundant += usize::from(u16::from_be_bytes([header[2], header[3]]) & 0x03ff);
        at += 4;
    }
    let start = at + redundant;
    (start <= p.len()).then_some(start..p.len())
}

#[cfg(test)]
mod tests {

    #[test]
    fn red_primary_skips_the_redundant_blocks() {
        // One redundant block (PT 111, offset 960, length 3), then the primary (PT 111).
        let red = [0x80 | 111, 0x0f, 0x00, 0x03, 111, 1, 2, 3, 9, 9];
        assert_eq!(red_primary(&red), Some(8..10));
        // No redundancy: just the 1-byte header.
        assert_eq!(red_primary(&[111, 7, 7]), Some(1..3));
        // Malformed: a block longer than the payload, a header cut short, nothing at all.
        assert_eq!(red_primary(&[0x80 | 111, 0x00, 0x03, 0xff, 111]), None);
        assert_eq!(red_primary(&[0x80 | 111, 0x00]), None);
        assert_eq!(red_primary(&[]), None);
    }
    use super::*;

    #[test]
    fn mime_types_classify_case_insensitively() {
        assert_eq!(Codec::from_mime("video/VP8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_mime("video/h264"), Codec::H264);
        assert_eq!(Codec::from_mime("video/rtx"), Codec::Other);
    }

    #[test]
    fn vp8_keyframes_are_recognised_with_and_without_extensions() {
        // S=1, PID=0, no extension; frame header P bit clear → keyframe.
        assert!(vp8_is_keyframe(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Same, but inter frame.
        assert!(!vp8_is_keyframe(&[0x10, 0x01]));
        // X=1, I=1 with 15-bit picture id, then keyframe header.
        assert!(vp8_is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        // Continuation packet (S=0) is never a keyframe start.
        assert!(!vp8_is_keyframe(&[0x00, 0x00]));
        // Truncated input is not a keyframe and does not panic.
        assert!(!vp8_is_keyframe(&[0x90, 0x80]));
        assert!(!vp8_is_keyframe(&[]));
    }

    #[test]
    fn h264_idr_sps_stap_and_fu_a() {
        assert!(h264_is_keyframe(&[0x65, 0x88])); // IDR
        assert!(h264_is_keyframe(&[0x67, 0x42])); // SPS
        assert!(!h264_is_keyframe(&[0x41, 0x9a])); // non-IDR slice
                                                   // STAP-A holding SPS.
        assert!(h264_is_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42]));
        // STAP-A with a truncated size field does not panic.
        assert!(!h264_is_keyframe(&[0x78, 0x00]));
        // FU-A start of IDR, and a middle fragment.
        assert!(h264_is_keyframe(&[0x7c, 0x85]));
        assert!(!h264_is_keyframe(&[0x7c, 0x05]));
    }

    #[test]
    fn vp9_and_av1_flags() {
        assert!(vp9_is_keyframe(&[0x08]));
        assert!(!vp9_is_keyframe(&[0x48]));
        assert!(av1_is_keyframe(&[0x08]));
        assert!(!av1_is_keyframe(&[0x00]));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn keyframe_detection_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            for c in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::H265, Codec::Av1, Codec::Opus, Codec::Other] {
                let _ = c.is_keyframe(&bytes);
            }
        }
    }
}
