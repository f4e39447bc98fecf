//! Synthetic media without an encoder: RTP packets whose codec headers are what an SFU inspects
//! (VP8 payload descriptor and keyframe bit, H.264 STAP-A/FU-A/single NAL units, an Opus TOC
//! byte) followed by a [`probe`](super::probe) and filler. Frame sizes follow a target bitrate;
//! keyframes come at the start, on a period, and whenever a keyframe is requested (PLI/FIR).
//!
//! The generators are pure (the caller passes the clock); [`run_video`] and [`run_audio`] pace
//! them in real time onto a `TrackLocalStaticRTP`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use super::probe::{self, Probe, FLAG_FRAME_END, FLAG_FRAME_START, FLAG_KEYFRAME, PROBE_LEN};

/// Largest RTP payload the generators produce (leaves room for SRTP and headers in a
/// 1200-byte datagram budget).
pub const MAX_PAYLOAD: usize = 1100;
/// Opus frame duration.
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);
/// Opus payload bytes per 20 ms frame (32 kbit/s).
pub const AUDIO_PAYLOAD: usize = 80;
/// Keyframes are this many times larger than the average frame.
const KEYFRAME_FACTOR: u64 = 3;
/// Opus TOC byte: CELT fullband 20 ms, mono, one frame.
const OPUS_TOC: u8 = 0xf8;

/// Video codecs the synthesizer can packetize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264, packetization mode 1 (RFC 6184).
    H264,
}

impl VideoCodec {
    /// The SDP mime type.
    pub fn mime_type(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "video/VP8",
            VideoCodec::H264 => "video/H264",
        }
    }
}

impl std::str::FromStr for VideoCodec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vp8" => Ok(VideoCodec::Vp8),
            "h264" | "h.264" => Ok(VideoCodec::H264),
            other => Err(format!("unknown video codec {other:?} (vp8 or h264)")),
        }
    }
}

/// Which codec a payload carries, for finding its probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadCodec {
    /// Opus audio.
    Opus,
    /// VP8 video.
    Vp8,
    /// H.264 video.
    H264,
}

impl PayloadCodec {
    /// Classifies a mime type (`audio/opus`, `video/VP8`, ...).
    pub fn from_mime(mime: &str) -> Option<Self> {
        match mime.rsplit('/').next()?.to_ascii_lowercase().as_str() {
            "opus" => Some(PayloadCodec::Opus),
            "vp8" => Some(PayloadCodec::Vp8),
            "h264" => Some(PayloadCodec::H264),
            _ => None,
        }
    }
}

impl From<VideoCodec> for PayloadCodec {
    fn from(c: VideoCodec) -> Self {
        match c {
            VideoCodec::Vp8 => PayloadCodec::Vp8,
            VideoCodec::H264 => PayloadCodec::H264,
        }
    }
}

/// Where the probe starts in a payload of `codec`, from its codec header.
pub fn probe_offset(codec: PayloadCodec, p: &[u8]) -> Option<usize> {
    match codec {
        PayloadCodec::Opus => Some(1),
        PayloadCodec::Vp8 => vp8_probe_offset(p),
        PayloadCodec::H264 => h264_probe_offset(p),
    }
}

/// Finds and verifies the probe, trying `hint` first and then the other codecs (a remote
/// track's codec is occasionally unknown when the track starts).
pub fn locate_probe(
    hint: Option<PayloadCodec>,
    payload: &[u8],
) -> Result<(PayloadCodec, Probe), probe::ProbeError> {
    let order = [PayloadCodec::Vp8, PayloadCodec::H264, PayloadCodec::Opus];
    let mut last = probe::ProbeError::NotFound;
    for codec in hint
        .into_iter()
        .chain(order.into_iter().filter(|c| Some(*c) != hint))
    {
        let Some(off) = probe_offset(codec, payload) else {
            continue;
        };
        match probe::verify_at(payload, off) {
            Ok(p) => return Ok((codec, p)),
            Err(probe::ProbeError::NotFound) => {}
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn vp8_probe_offset(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let start_of_frame = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    if start_of_frame {
        let key = *p.get(i)? & 0x01 == 0;
        i += if key { 10 } else { 3 };
    }
    Some(i)
}

fn h264_probe_offset(p: &[u8]) -> Option<usize> {
    match *p.first()? & 0x1f {
        24 => {
            // STAP-A: the probe sits in the last aggregated unit, after its NAL header.
            let mut i = 1;
            let mut last = None;
            while i + 2 <= p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if size == 0 || i + 2 + size > p.len() {
                    return None;
                }
                last = Some(i + 3);
                i += 2 + size;
            }
            last
        }
        28 => Some(2),
        1..=23 => Some(1),
        _ => None,
    }
}

/// Nanoseconds since the UNIX epoch (the probe's clock; shared by every process on the host).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a generator needs to know about its stream.
#[derive(Clone, Debug)]
pub struct StreamParams {
    /// RTP SSRC (must equal the track's coding SSRC: the async layer does not rewrite it).
    pub ssrc: u32,
    /// Negotiated payload type.
    pub payload_type: u8,
    /// Publisher index written into every probe.
    pub publisher: u32,
    /// Track index written into every probe.
    pub track: u8,
}

/// RTP state shared by both generators: sequence numbers, probe counter, timestamps.
#[derive(Debug)]
struct RtpState {
    params: StreamParams,
    seq: u16,
    ts_base: u32,
    counter: u64,
}

impl RtpState {
    fn new(params: StreamParams) -> Self {
        Self {
            params,
            seq: rand::random(),
            ts_base: rand::random(),
            counter: 0,
        }
    }

    fn packet(&mut self, payload: Bytes, timestamp: u32, marker: bool) -> Packet {
        let header = Header {
            version: 2,
            marker,
            payload_type: self.params.payload_type,
            sequence_number: self.seq,
            timestamp,
            ssrc: self.params.ssrc,
            ..Default::default()
        };
        self.seq = self.seq.wrapping_add(1);
        Packet { header, payload }
    }

    /// Appends probe + filler so the payload is `total` bytes (or just the probe, if the header
    /// leaves less room).
    fn finish(&mut self, mut buf: BytesMut, total: usize, flags: u8, now_ns: u64) -> Bytes {
        let filler = total.saturating_sub(buf.len() + PROBE_LEN);
        let probe = Probe {
            publisher: self.params.publisher,
            track: self.params.track,
            flags,
            length: 0,
            seq: self.counter,
            sent_ns: now_ns,
        };
        self.counter += 1;
        probe::write(&mut buf, &probe, filler);
        buf.freeze()
    }
}

/// Video generator settings.
#[derive(Clone, Debug)]
pub struct VideoParams {
    /// Codec to packetize.
    pub codec: VideoCodec,
    /// Target bitrate, bits per second (RTP payload).
    pub bitrate_bps: u64,
    /// Frames per second.
    pub fps: u32,
    /// Periodic keyframe interval.
    pub keyframe_interval: Duration,
}

/// Synthetic video: one call per frame returns the frame's packets.
#[derive(Debug)]
pub struct VideoSynth {
    rtp: RtpState,
    params: VideoParams,
    frames_since_key: u64,
    key_requested: bool,
    started: bool,
    frames: u64,
}

impl VideoSynth {
    /// A generator whose first frame is a keyframe.
    pub fn new(stream: StreamParams, params: VideoParams) -> Self {
        Self {
            rtp: RtpState::new(stream),
            params,
            frames_since_key: 0,
            key_requested: true,
            started: false,
            frames: 0,
        }
    }

    /// The next frame will be a keyframe.
    pub fn request_keyframe(&mut self) {
        self.key_requested = true;
    }

    /// Frames generated so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Probe counter of the next packet (= packets generated so far).
    pub fn next_probe_seq(&self) -> u64 {
        self.rtp.counter
    }

    fn frames_per_key(&self) -> u64 {
        let f = self.params.keyframe_interval.as_secs_f64() * f64::from(self.params.fps.max(1));
        (f.round() as u64).max(1)
    }

    /// Payload bytes of the next frame (keyframes are larger; the average over a keyframe
    /// period matches the target bitrate).
    fn frame_bytes(&self, key: bool) -> usize {
        let avg = self.params.bitrate_bps / 8 / u64::from(self.params.fps.max(1));
        let n = self.frames_per_key();
        let bytes = if key {
            avg * KEYFRAME_FACTOR.min(n)
        } else if n > 1 {
            (avg * n).saturating_sub(avg * KEYFRAME_FACTOR.min(n)) / (n - 1)
        } else {
            avg
        };
        usize::try_from(bytes).unwrap_or(usize::MAX).max(64)
    }

    /// Generates one frame; `elapsed` is the stream time (for the RTP timestamp), `now_ns` the
    /// wall clock for the probes.
    pub fn frame(&mut self, elapsed: Duration, now_ns: u64) -> Vec<Packet> {
        let key = self.key_requested
            || !self.started
            || self.frames_since_key + 1 >= self.frames_per_key();
        self.started = true;
        if key {
            self.key_requested = false;
            self.frames_since_key = 0;
        } else {
            self.frames_since_key += 1;
        }
        self.frames += 1;
        let ts = self
            .rtp
            .ts_base
            .wrapping_add((elapsed.as_micros() * 90 / 1000) as u32);
        let size = self.frame_bytes(key);
        match self.params.codec {
            VideoCodec::Vp8 => self.vp8_frame(size, key, ts, now_ns),
            VideoCodec::H264 => self.h264_frame(size, key, ts, now_ns),
        }
    }

    /// Splits `size` bytes into packet sizes of at most [`MAX_PAYLOAD`], each big enough for a
    /// header and a probe.
    fn split(size: usize, min: usize) -> Vec<usize> {
        let n = size.div_ceil(MAX_PAYLOAD).max(1);
        let each = (size / n).max(min);
        vec![each; n]
    }

    fn vp8_frame(&mut self, size: usize, key: bool, ts: u32, now_ns: u64) -> Vec<Packet> {
        let sizes = Self::split(size, 16 + PROBE_LEN);
        let last = sizes.len() - 1;
        let key_flag = if key { FLAG_KEYFRAME } else { 0 };
        sizes
            .into_iter()
            .enumerate()
            .map(|(i, total)| {
                let mut buf = BytesMut::with_capacity(total);
                let mut flags = key_flag;
                if i == 0 {
                    flags |= FLAG_FRAME_START;
                    buf.put_u8(0x10); // S=1, PID=0
                                      // Frame tag: P bit (0 = keyframe), version 0, show_frame, partition size.
                    let part = u32::try_from(size.min(0x7ffff)).unwrap_or(0x7ffff);
                    let tag = u32::from(!key) | (1 << 4) | (part << 5);
                    buf.put_u8(tag as u8);
                    buf.put_u8((tag >> 8) as u8);
                    buf.put_u8((tag >> 16) as u8);
                    if key {
                        buf.put_slice(&[0x9d, 0x01, 0x2a]);
                        buf.put_u16_le(640);
                        buf.put_u16_le(480);
                    }
                } else {
                    buf.put_u8(0x00);
                }
                if i == last {
                    flags |= FLAG_FRAME_END;
                }
                let payload = self.rtp.finish(buf, total, flags, now_ns);
                self.rtp.packet(payload, ts, i == last)
            })
            .collect()
    }

    fn h264_frame(&mut self, size: usize, key: bool, ts: u32, now_ns: u64) -> Vec<Packet> {
        const SPS: [u8; 10] = [0x67, 0x42, 0xe0, 0x1f, 0x8d, 0x68, 0x05, 0x00, 0x5b, 0xa1];
        const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
        let mut out = Vec::new();
        let key_flag = if key { FLAG_KEYFRAME } else { 0 };
        let mut first = true;
        if key {
            // STAP-A: SPS, PPS, and a filler-data NAL unit that carries the probe.
            let mut buf = BytesMut::with_capacity(64);
            buf.put_u8(0x78); // NRI=3, type 24
            buf.put_u16(SPS.len() as u16);
            buf.put_slice(&SPS);
            buf.put_u16(PPS.len() as u16);
            buf.put_slice(&PPS);
            buf.put_u16((1 + PROBE_LEN) as u16);
            buf.put_u8(0x0c); // filler data NAL
            let len = buf.len() - 1 + PROBE_LEN;
            let payload = self
                .rtp
                .finish(buf, len, key_flag | FLAG_FRAME_START, now_ns);
            out.push(self.rtp.packet(payload, ts, false));
            first = false;
        }
        let (nal_type, nri) = if key { (5u8, 0x60u8) } else { (1u8, 0x40u8) };
        if size <= MAX_PAYLOAD {
            let mut buf = BytesMut::with_capacity(size);
            buf.put_u8(nri | nal_type);
            let mut flags = key_flag | FLAG_FRAME_END;
            if first {
                flags |= FLAG_FRAME_START;
            }
            let payload = self.rtp.finish(buf, size.max(1 + PROBE_LEN), flags, now_ns);
            out.push(self.rtp.packet(payload, ts, true));
            return out;
        }
        let sizes = Self::split(size, 2 + PROBE_LEN);
        let last = sizes.len() - 1;
        for (i, total) in sizes.into_iter().enumerate() {
            let mut buf = BytesMut::with_capacity(total);
            buf.put_u8(nri | 28); // FU-A indicator
            let mut fu = nal_type;
            let mut flags = key_flag;
            if i == 0 {
                fu |= 0x80;
                if first {
                    flags |= FLAG_FRAME_START;
                }
            }
            if i == last {
                fu |= 0x40;
                flags |= FLAG_FRAME_END;
            }
            buf.put_u8(fu);
            let payload = self.rtp.finish(buf, total, flags, now_ns);
            out.push(self.rtp.packet(payload, ts, i == last));
        }
        out
    }
}

/// Synthetic Opus: one packet per 20 ms.
#[derive(Debug)]
pub struct AudioSynth {
    rtp: RtpState,
    first: bool,
}

impl AudioSynth {
    /// A new generator.
    pub fn new(stream: StreamParams) -> Self {
        Self {
            rtp: RtpState::new(stream),
            first: true,
        }
    }

    /// Probe counter of the next packet.
    pub fn next_probe_seq(&self) -> u64 {
        self.rtp.counter
    }

    /// The next packet; `elapsed` is the stream time.
    pub fn packet(&mut self, elapsed: Duration, now_ns: u64) -> Packet {
        let ts = self
            .rtp
            .ts_base
            .wrapping_add((elapsed.as_micros() * 48 / 1000) as u32);
        let mut buf = BytesMut::with_capacity(AUDIO_PAYLOAD);
        buf.put_u8(OPUS_TOC);
        let payload = self.rtp.finish(
            buf,
            AUDIO_PAYLOAD,
            FLAG_KEYFRAME | FLAG_FRAME_START | FLAG_FRAME_END,
            now_ns,
        );
        let marker = std::mem::take(&mut self.first);
        self.rtp.packet(payload, ts, marker)
    }
}

/// Counters of one published track (shared with whoever reports).
#[derive(Debug, Default)]
pub struct SendCounters {
    /// RTP packets handed to the track.
    pub packets: AtomicU64,
    /// Payload bytes handed to the track.
    pub bytes: AtomicU64,
    /// Frames generated.
    pub frames: AtomicU64,
    /// Keyframes generated.
    pub keyframes: AtomicU64,
    /// PLI/FIR received for this track.
    pub keyframe_requests: AtomicU64,
    /// `write_rtp` failures.
    pub write_errors: AtomicU64,
    /// UNIX ns of the first packet sent (0: none yet).
    pub first_sent_ns: AtomicU64,
    /// Probe counter of the next packet (= probes sent so far).
    pub next_seq: AtomicU64,
}

/// A record of every payload sent, by probe counter (tests compare it with what arrived).
pub type SentLog = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// What the pacing loops share with their owner.
#[derive(Clone)]
pub struct Pacing {
    /// Counters to update.
    pub counters: Arc<SendCounters>,
    /// Set by the RTCP reader when a PLI/FIR arrives.
    pub keyframe_wanted: Arc<AtomicBool>,
    /// Optional log of sent payloads.
    pub log: Option<SentLog>,
    /// Stops the loop.
    pub cancel: CancellationToken,
}

async fn send(
    track: &TrackLocalStaticRTP,
    pkt: Packet,
    pacing: &Pacing,
    now_ns: u64,
    codec: PayloadCodec,
) {
    let len = pkt.payload.len() as u64;
    // Logged before writing: a receiver on the same host may get the packet before
    // `write_rtp` returns.
    if let Some(log) = &pacing.log {
        if let Ok((_, probe)) = locate_probe(Some(codec), &pkt.payload) {
            if let Ok(mut l) = log.lock() {
                l.push((probe.seq, pkt.payload.clone()));
            }
        }
    }
    match track.write_rtp(pkt).await {
        Ok(()) => {
            let c = &pacing.counters;
            c.packets.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(len, Ordering::Relaxed);
            let _ =
                c.first_sent_ns
                    .compare_exchange(0, now_ns, Ordering::Relaxed, Ordering::Relaxed);
        }
        Err(e) => {
            pacing.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%e, "write_rtp failed");
        }
    }
}

/// Paces `synth` in real time onto `track` until cancelled.
pub async fn run_video(track: Arc<TrackLocalStaticRTP>, mut synth: VideoSynth, pacing: Pacing) {
    let period = Duration::from_secs_f64(1.0 / f64::from(synth.params.fps.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = pacing.cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if pacing.keyframe_wanted.swap(false, Ordering::Relaxed) {
            synth.request_keyframe();
        }
        let now_ns = unix_ns();
        let packets = synth.frame(start.elapsed(), now_ns);
        let c = &pacing.counters;
        c.frames.fetch_add(1, Ordering::Relaxed);
        if synth.frames_since_key == 0 {
            c.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        let codec = PayloadCodec::from(synth.params.codec);
        for p in packets {
            send(&track, p, &pacing, now_ns, codec).await;
        }
        c.next_seq.store(synth.next_probe_seq(), Ordering::Relaxed);
    }
}

/// Paces `synth` (one packet per 20 ms) onto `track` until cancelled.
pub async fn run_audio(track: Arc<TrackLocalStaticRTP>, mut synth: AudioSynth, pacing: Pacing) {
    let mut tick = tokio::time::interval(AUDIO_FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = pacing.cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now_ns = unix_ns();
        let p = synth.packet(start.elapsed(), now_ns);
        pacing.counters.frames.fetch_add(1, Ordering::Relaxed);
        send(&track, p, &pacing, now_ns, PayloadCodec::Opus).await;
        pacing
            .counters
            .next_seq
            .store(synth.next_probe_seq(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab::media::codec::{h264_is_keyframe, vp8_is_keyframe};

    fn stream() -> StreamParams {
        StreamParams {
            ssrc: 1234,
            payload_type: 96,
            publisher: 3,
            track: 1,
        }
    }

    fn video(codec: VideoCodec) -> VideoSynth {
        VideoSynth::new(
            stream(),
            VideoParams {
                codec,
                bitrate_bps: 1_500_000,
                fps: 30,
                keyframe_interval: Duration::from_secs(2),
            },
        )
    }

    fn check_frames(codec: VideoCodec, is_key: fn(&[u8]) -> bool) {
        let mut s = video(codec);
        let mut total = 0usize;
        let mut expected_seq = 0u64;
        for f in 0..60u32 {
            let pkts = s.frame(Duration::from_millis(u64::from(f) * 33), 1);
            assert!(!pkts.is_empty());
            assert!(pkts.last().is_some_and(|p| p.header.marker));
            let ts = pkts[0].header.timestamp;
            for (i, p) in pkts.iter().enumerate() {
                assert!(p.payload.len() <= MAX_PAYLOAD);
                assert_eq!(p.header.timestamp, ts);
                let (found, probe) =
                    locate_probe(Some(codec.into()), &p.payload).expect("probe verifies");
                assert_eq!(found, PayloadCodec::from(codec));
                assert_eq!(probe.seq, expected_seq);
                expected_seq += 1;
                let key_start = f == 0 && i == 0;
                if key_start {
                    assert!(is_key(&p.payload), "frame {f} starts with a keyframe");
                } else if f != 0 {
                    assert!(!is_key(&p.payload), "frame {f} packet {i} is a delta");
                }
                assert_eq!(probe.is_keyframe_start(), key_start);
                total += p.payload.len();
            }
        }
        // 60 frames at 30 fps and 1.5 Mbit/s ≈ 375 kB (one keyframe period).
        assert!((300_000..450_000).contains(&total), "{total} bytes");
        // A requested keyframe comes next.
        s.request_keyframe();
        let pkts = s.frame(Duration::from_secs(2), 1);
        assert!(is_key(&pkts[0].payload));
    }

    #[test]
    fn vp8_frames_carry_descriptor_keyframe_bit_and_probe() {
        check_frames(VideoCodec::Vp8, vp8_is_keyframe);
    }

    #[test]
    fn h264_frames_use_stap_a_and_fu_a() {
        check_frames(VideoCodec::H264, h264_is_keyframe);
        let mut s = video(VideoCodec::H264);
        let key = s.frame(Duration::ZERO, 1);
        assert_eq!(key[0].payload[0] & 0x1f, 24, "STAP-A first");
        assert_eq!(key[1].payload[0] & 0x1f, 28, "FU-A IDR");
        assert_eq!(key[1].payload[1], 0x85, "FU-A start of IDR");
    }

    #[test]
    fn periodic_keyframes() {
        let mut s = video(VideoCodec::Vp8);
        let keys = (0..130u32)
            .filter(|f| {
                let pkts = s.frame(Duration::from_millis(u64::from(*f) * 33), 1);
                vp8_is_keyframe(&pkts[0].payload)
            })
            .count();
        assert_eq!(keys, 3);
    }

    #[test]
    fn audio_packets_every_20ms() {
        let mut a = AudioSynth::new(stream());
        let p0 = a.packet(Duration::ZERO, 5);
        let p1 = a.packet(AUDIO_FRAME, 6);
        assert_eq!(p1.header.timestamp.wrapping_sub(p0.header.timestamp), 960);
        assert_eq!(p0.payload.len(), AUDIO_PAYLOAD);
        let (c, probe) = locate_probe(Some(PayloadCodec::Opus), &p1.payload).expect("probe");
        assert_eq!(c, PayloadCodec::Opus);
        assert_eq!(probe.seq, 1);
        assert_eq!(probe.sent_ns, 6);
    }
}
