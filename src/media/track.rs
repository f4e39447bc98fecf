//! What one negotiated leg can carry, as lookup tables built once at negotiation time so the
//! per-packet path indexes arrays instead of comparing strings.

use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters};

use super::codec::Codec;

/// Header extensions the forwarder carries from publisher to subscriber (by URI). Others
/// (transport-cc, abs-send-time, mid/rid) describe one hop and are not forwarded.
pub const FORWARDED_EXTENSIONS: [&str; 2] = [
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "urn:3gpp:video-orientation",
];

const NO_ENTRY: u8 = u8::MAX;

/// Normalised codec identity for matching a publisher's payload type to a subscriber's.
fn codec_key(c: &RTCRtpCodecParameters) -> (String, String) {
    let mime = c.rtp_codec.mime_type.to_ascii_lowercase();
    let fmtp = c.rtp_codec.sdp_fmtp_line.to_ascii_lowercase();
    // Parameters that change how a payload is decoded; the rest (e.g. level-asymmetry) do not.
    let mut relevant: Vec<String> = fmtp
        .split(';')
        .map(str::trim)
        .filter_map(|kv| match kv.strip_prefix("profile-level-id=") {
            Some(id) => Some(format!("h264-profile={}", h264_profile(id))),
            None => (kv.starts_with("packetization-mode")
                || kv.starts_with("profile-id")
                || kv.starts_with("apt"))
            .then(|| kv.to_owned()),
        })
        .collect();
    relevant.sort_unstable();
    (mime, relevant.join(";"))
}

/// The H.264 profile of a `profile-level-id` (RFC 6184: profile_idc, profile-iop, level_idc),
/// without the level: two ends agree on a stream when their profiles match, whatever their
/// levels (senders stay within what `level-asymmetry-allowed` receivers decode). Constrained
/// Baseline is spelt several ways (`42e0..`, `42c0..`, `4240..`, `4d80..`): one name for all.
fn h264_profile(id: &str) -> String {
    let byte = |i: usize| {
        id.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    match (byte(0), byte(2)) {
        (Some(0x42), Some(iop)) if iop & 0x40 != 0 => "constrained-baseline".to_owned(),
        (Some(0x4d), Some(iop)) if iop & 0x80 != 0 => "constrained-baseline".to_owned(),
        (Some(0x64), Some(iop)) if iop & 0x0c == 0x0c => "constrained-high".to_owned(),
        (Some(idc), Some(_)) => format!("{idc:02x}"),
        _ => id.to_owned(),
    }
}

/// Payload types and header extension ids negotiated on one leg.
#[derive(Clone, Debug)]
pub struct RtpMap {
    /// The leg's codecs.
    codecs: Vec<RTCRtpCodecParameters>,
    /// Payload type (0..128) → index into `codecs`.
    pt_index: [u8; 128],
    /// `codecs[i]`'s kind, resolved once (no string work per packet).
    kinds: Vec<Codec>,
    /// Extension id (0..256) → index into [`FORWARDED_EXTENSIONS`].
    ext_index: [u8; 256],
    /// Index into [`FORWARDED_EXTENSIONS`] → extension id on this leg (0 = not negotiated).
    ext_id: [u8; FORWARDED_EXTENSIONS.len()],
}

impl RtpMap {
    /// Builds the tables from negotiated parameters.
    pub fn new(
        codecs: &[RTCRtpCodecParameters],
        extensions: &[RTCRtpHeaderExtensionParameters],
    ) -> Self {
        let mut pt_index = [NO_ENTRY; 128];
        for (i, c) in codecs.iter().enumerate().take(usize::from(NO_ENTRY)) {
            if let Some(slot) = pt_index.get_mut(usize::from(c.payload_type)) {
                *slot = i as u8;
            }
        }
        let mut ext_index = [NO_ENTRY; 256];
        let mut ext_id = [0u8; FORWARDED_EXTENSIONS.len()];
        for e in extensions {
            if let Some(k) = FORWARDED_EXTENSIONS.iter().position(|u| *u == e.uri) {
                if let Ok(id) = u8::try_from(e.id) {
                    ext_index[usize::from(id)] = k as u8;
                    ext_id[k] = id;
                }
            }
        }
        Self {
            kinds: codecs
                .iter()
                .map(|c| Codec::from_mime(&c.rtp_codec.mime_type))
                .collect(),
            codecs: codecs.to_vec(),
            pt_index,
            ext_index,
            ext_id,
        }
    }

    /// The codec behind a payload type on this leg.
    pub fn codec(&self, pt: u8) -> Option<&RTCRtpCodecParameters> {
        let i = *self.pt_index.get(usize::from(pt))?;
        self.codecs.get(usize::from(i))
    }

    /// The codec kind behind a payload type (for keyframe detection).
    pub fn codec_kind(&self, pt: u8) -> Option<Codec> {
        let i = *self.pt_index.get(usize::from(pt))?;
        self.kinds.get(usize::from(i)).copied()
    }

    /// For each publisher payload type, the subscriber payload type carrying the same codec.
    pub fn translate_to(&self, sub: &RtpMap) -> Translation {
        let mut pt = [NO_ENTRY; 128];
        for c in &self.codecs {
            let key = codec_key(c);
            if let Some(s) = sub.codecs.iter().find(|s| codec_key(s) == key) {
                if let Some(slot) = pt.get_mut(usize::from(c.payload_type)) {
                    *slot = s.payload_type;
                }
            }
        }
        let mut ext = [0u8; 256];
        for (id, &k) in self.ext_index.iter().enumerate() {
            if k != NO_ENTRY {
                ext[id] = sub.ext_id[usize::from(k)];
            }
        }
        // RED's primary codec on the subscriber's leg, if it has that (for a subscriber without
        // RED, or when redundancy is turned off for it).
        let mut red = [NO_ENTRY; 128];
        for c in self.codecs.iter().filter(|c| is_red(c)) {
            let primary = c
                .rtp_codec
                .sdp_fmtp_line
                .split('/')
                .next()
                .and_then(|v| v.trim().parse::<u8>().ok());
            let sub_pt = primary
                .and_then(|p| pt.get(usize::from(p)).copied())
                .filter(|&p| p != NO_ENTRY);
            if let (Some(sub_pt), Some(slot)) = (sub_pt, red.get_mut(usize::from(c.payload_type))) {
                *slot = sub_pt;
            }
        }
        let mut rtx = [NO_ENTRY; 128];
        for c in &sub.codecs {
            if let Some(apt) = rtx_apt(c) {
                if let Some(slot) = rtx.get_mut(usize::from(apt)) {
                    *slot = c.payload_type;
                }
            }
        }
        Translation { pt, ext, rtx, red }
    }

    /// The id of the audio-level header extension (RFC 6464) on this leg, if negotiated.
    pub fn audio_level_id(&self) -> Option<u8> {
        Some(self.ext_id[0]).filter(|&id| id != 0)
    }
}

/// Whether this is RED (RFC 2198).
fn is_red(c: &RTCRtpCodecParameters) -> bool {
    c.rtp_codec
        .mime_type
        .split_once('/')
        .is_some_and(|(_, sub)| sub.eq_ignore_ascii_case("red"))
}

/// The payload type an RTX codec repairs (RFC 4588 `apt`), or `None` for any other codec.
fn rtx_apt(c: &RTCRtpCodecParameters) -> Option<u8> {
    let (_, subtype) = c.rtp_codec.mime_type.split_once('/')?;
    if !subtype.eq_ignore_ascii_case("rtx") {
        return None;
    }
    c.rtp_codec
        .sdp_fmtp_line
        .split(';')
        .find_map(|p| p.trim().strip_prefix("apt="))
        .and_then(|v| v.trim().parse().ok())
}

/// Publisher → subscriber rewriting tables for one down track.
#[derive(Clone, Debug)]
pub struct Translation {
    pt: [u8; 128],
    ext: [u8; 256],
    /// Subscriber payload type → its RTX payload type on the subscriber's leg.
    rtx: [u8; 128],
    /// Publisher RED payload type → the subscriber's payload type for RED's primary codec (its
    /// primary blocks go out as that when RED is not negotiated or turned off for the leg).
    red: [u8; 128],
}

impl Translation {
    /// The subscriber payload type for a publisher payload type.
    pub fn payload_type(&self, pub_pt: u8) -> Option<u8> {
        self.pt
            .get(usize::from(pub_pt))
            .copied()
            .filter(|&p| p != NO_ENTRY)
    }

    /// For a publisher RED payload type: the payload type its primary blocks go out with.
    pub fn red_primary_type(&self, pub_pt: u8) -> Option<u8> {
        self.red
            .get(usize::from(pub_pt))
            .copied()
            .filter(|&p| p != NO_ENTRY)
    }

    /// The RTX payload type repairing subscriber payload type `sub_pt`, if negotiated.
    pub fn rtx_payload_type(&self, sub_pt: u8) -> Option<u8> {
        self.rtx
            .get(usize::from(sub_pt))
            .copied()
            .filter(|&p| p != NO_ENTRY)
    }

    /// The subscriber extension id for a publisher extension id (`None`: do not forward).
    pub fn extension_id(&self, pub_id: u8) -> Option<u8> {
        Some(self.ext[usize::from(pub_id)]).filter(|&id| id != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

    fn codec(mime: &str, pt: u8, fmtp: &str) -> RTCRtpCodecParameters {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: fmtp.into(),
                rtcp_feedback: vec![],
            },
            payload_type: pt,
        }
    }

    fn ext(uri: &str, id: u16) -> RTCRtpHeaderExtensionParameters {
        RTCRtpHeaderExtensionParameters {
            uri: uri.into(),
            id,
            encrypted: false,
        }
    }

    #[test]
    fn h264_matches_by_profile_whatever_the_level_or_spelling() {
        // GStreamer's x264 offers Constrained Baseline as 42c01e; Chromium answers 42e01f.
        let publisher = RtpMap::new(
            &[codec(
                "video/H264",
                102,
                "packetization-mode=1;profile-level-id=42c01e;level-asymmetry-allowed=1",
            )],
            &[],
        );
        let browser = RtpMap::new(
            &[
                codec(
                    "video/H264",
                    96,
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
                ),
                codec(
                    "video/H264",
                    98,
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                ),
                codec(
                    "video/H264",
                    100,
                    "packetization-mode=0;profile-level-id=42e01f",
                ),
            ],
            &[],
        );
        let t = publisher.translate_to(&browser);
        assert_eq!(t.pt[102], 98, "constrained baseline, packetization mode 1");
        assert_eq!(h264_profile("42e01f"), h264_profile("42401f"));
        assert_ne!(
            h264_profile("42001f"),
            h264_profile("42e01f"),
            "baseline is not constrained"
        );
        assert_eq!(h264_profile("640c1f"), "constrained-high");
        assert_eq!(h264_profile("4d001f"), "4d");
        assert_eq!(
            h264_profile("zz"),
            "zz",
            "garbage stays itself (matches only itself)"
        );
    }

    #[test]
    fn red_goes_as_red_where_negotiated_and_as_its_primary_elsewhere() {
        let publisher = RtpMap::new(
            &[
                codec("audio/red", 63, "111/111"),
                codec("audio/opus", 111, "minptime=10"),
            ],
            &[],
        );
        let with_red = RtpMap::new(
            &[
                codec("audio/red", 96, "100/100"),
                codec("audio/opus", 100, "minptime=10"),
            ],
            &[],
        );
        let plain = RtpMap::new(&[codec("audio/opus", 109, "minptime=10")], &[]);
        let t = publisher.translate_to(&with_red);
        assert_eq!(t.payload_type(63), Some(96));
        assert_eq!(
            t.red_primary_type(63),
            Some(100),
            "for when redundancy is off"
        );
        let t = publisher.translate_to(&plain);
        assert_eq!(t.payload_type(63), None);
        assert_eq!(t.red_primary_type(63), Some(109), "primary blocks as Opus");
        assert_eq!(t.payload_type(111), Some(109));
    }

    #[test]
    fn payload_types_map_by_codec_not_by_number() {
        let publisher = RtpMap::new(
            &[
                codec("video/VP8", 96, ""),
                codec(
                    "video/H264",
                    102,
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                ),
            ],
            &[],
        );
        let subscriber = RtpMap::new(
            &[
                codec(
                    "video/h264",
                    125,
                    "profile-level-id=42e01f;packetization-mode=1",
                ),
                codec("video/vp8", 120, ""),
            ],
            &[],
        );
        let t = publisher.translate_to(&subscriber);
        assert_eq!(t.payload_type(96), Some(120));
        assert_eq!(t.payload_type(102), Some(125));
        assert_eq!(t.payload_type(97), None);
        assert_eq!(t.payload_type(200), None);
    }

    #[test]
    fn only_forwardable_extensions_are_mapped() {
        let publisher = RtpMap::new(
            &[],
            &[
                ext("urn:ietf:params:rtp-hdrext:ssrc-audio-level", 1),
                ext(
                    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                    3,
                ),
            ],
        );
        let subscriber = RtpMap::new(
            &[],
            &[ext("urn:ietf:params:rtp-hdrext:ssrc-audio-level", 10)],
        );
        let t = publisher.translate_to(&subscriber);
        assert_eq!(t.extension_id(1), Some(10));
        assert_eq!(t.extension_id(3), None);
        assert_eq!(t.extension_id(7), None);
    }
}
