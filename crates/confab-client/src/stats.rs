//! Receiver-side accounting per remote track, driven by the [`probe`](super::probe) in each
//! payload (so it is independent of the SFU's sequence-number rewriting): packets, bytes, loss
//! (gaps in the probe counter), duplicates, reordering, one-way delay (HDR histogram), RFC 3550
//! style jitter of the delay, time to the first packet and first keyframe, and payload integrity.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::probe::ProbeError;
use super::synth::{locate_probe, PayloadCodec};
use confab::signal::protocol::TrackKind;

/// Probe counters remembered for duplicate/reorder detection.
const WINDOW: u64 = 4096;
/// Largest delay the histograms record (larger samples are clamped), microseconds.
pub const MAX_DELAY_US: u64 = 60_000_000;

/// A delay histogram in microseconds (2 significant digits: about 20 KiB each).
pub fn new_delay_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, MAX_DELAY_US, 2).expect("constant histogram bounds are valid")
}

/// Statistics of one received track.
#[derive(Debug)]
pub struct TrackStats {
    /// The remote track's stream id (the publisher's participant id, from `msid`).
    pub stream_id: String,
    /// The remote track's id (the server's track id).
    pub track_id: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Codec, once known (from `on_track` or the first packet).
    pub codec: Option<PayloadCodec>,
    /// Publisher index from the probes.
    pub publisher: Option<u32>,
    /// Track index from the probes.
    pub track: Option<u8>,
    /// Packets received (including duplicates and corrupt ones).
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Packets whose probe counter was seen before.
    pub duplicates: u64,
    /// Packets that arrived after a later one.
    pub reordered: u64,
    /// Packets without a valid probe or with a payload that fails verification.
    pub corrupt: u64,
    /// Last verification error, if any.
    pub last_error: Option<ProbeError>,
    missing: u64,
    /// First probe counter received.
    pub first_seq: Option<u64>,
    /// Highest probe counter received.
    pub max_seq: u64,
    seen: Vec<u64>,
    /// One-way delay, microseconds.
    pub delay: Histogram<u64>,
    /// Smoothed delay variation (RFC 3550 §6.4.1 estimator applied to the one-way delay), µs.
    pub jitter_us: f64,
    last_delay_us: Option<f64>,
    /// UNIX ns of the first packet.
    pub first_packet_ns: Option<u64>,
    /// UNIX ns of the first packet that starts a keyframe.
    pub first_keyframe_ns: Option<u64>,
    /// Probe counter of that packet.
    pub first_keyframe_seq: Option<u64>,
    /// UNIX ns of the latest packet.
    pub last_packet_ns: Option<u64>,
    /// The track ended (unpublished or the connection closed).
    pub ended: bool,
    log: Option<Vec<(u64, Bytes)>>,
}

impl TrackStats {
    /// Empty statistics for a remote track. With `record_payloads`, every payload is kept in
    /// arrival order (for tests).
    pub fn new(
        stream_id: String,
        track_id: String,
        kind: TrackKind,
        record_payloads: bool,
    ) -> Self {
        Self {
            stream_id,
            track_id,
            kind,
            codec: None,
            publisher: None,
            track: None,
            packets: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            corrupt: 0,
            last_error: None,
            missing: 0,
            first_seq: None,
            max_seq: 0,
            seen: vec![0; (WINDOW / 64) as usize],
            delay: new_delay_histogram(),
            jitter_us: 0.0,
            last_delay_us: None,
            first_packet_ns: None,
            first_keyframe_ns: None,
            first_keyframe_seq: None,
            last_packet_ns: None,
            ended: false,
            log: record_payloads.then(Vec::new),
        }
    }

    fn bit(&self, seq: u64) -> bool {
        let i = seq % WINDOW;
        self.seen[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set_bit(&mut self, seq: u64, on: bool) {
        let i = seq % WINDOW;
        let w = &mut self.seen[(i / 64) as usize];
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }

    /// Accounts one RTP payload received at `recv_ns` (UNIX ns).
    pub fn on_payload(&mut self, payload: &Bytes, recv_ns: u64) {
        self.packets += 1;
        self.bytes += payload.len() as u64;
        self.last_packet_ns = Some(recv_ns);
        self.first_packet_ns.get_or_insert(recv_ns);
        let probe = match locate_probe(self.codec, payload) {
            Ok((codec, probe)) => {
                self.codec.get_or_insert(codec);
                probe
            }
            Err(e) => {
                self.corrupt += 1;
                self.last_error = Some(e);
                return;
            }
        };
        self.publisher.get_or_insert(probe.publisher);
        self.track.get_or_insert(probe.track);
        if let Some(log) = &mut self.log {
            log.push((probe.seq, payload.clone()));
        }
        if probe.is_keyframe_start() && self.first_keyframe_ns.is_none() {
            self.first_keyframe_ns = Some(recv_ns);
            self.first_keyframe_seq = Some(probe.seq);
        }

        let seq = probe.seq;
        let mut in_order = false;
        match self.first_seq {
            None => {
                self.first_seq = Some(seq);
                self.max_seq = seq;
                self.set_bit(seq, true);
                in_order = true;
            }
            Some(_) if seq > self.max_seq => {
                let gap = seq - self.max_seq - 1;
                self.missing += gap;
                if gap + 1 >= WINDOW {
                    self.seen.iter_mut().for_each(|w| *w = 0);
                } else {
                    for s in self.max_seq + 1..seq {
                        self.set_bit(s, false);
                    }
                }
                self.max_seq = seq;
                self.set_bit(seq, true);
                in_order = true;
            }
            Some(first) => {
                if seq < first {
                    // Older than anything seen: a late packet from before our first one.
                    self.reordered += 1;
                    self.first_seq = Some(seq);
                    self.missing += first - seq - 1;
                } else if self.max_seq - seq >= WINDOW {
                    self.reordered += 1;
                    self.missing = self.missing.saturating_sub(1);
                } else if self.bit(seq) {
                    self.duplicates += 1;
                    return;
                } else {
                    self.reordered += 1;
                    self.missing = self.missing.saturating_sub(1);
                    self.set_bit(seq, true);
                }
            }
        }

        let delay_us = recv_ns.saturating_sub(probe.sent_ns) / 1000;
        let _ = self.delay.record(delay_us.clamp(1, MAX_DELAY_US));
        if in_order {
            let d = delay_us as f64;
            if let Some(prev) = self.last_delay_us {
                self.jitter_us += ((d - prev).abs() - self.jitter_us) / 16.0;
            }
            self.last_delay_us = Some(d);
        }
    }

    /// Probe counters missing between the first and the highest received.
    pub fn lost(&self) -> u64 {
        self.missing
    }

    /// Unique packets received with a valid probe.
    pub fn unique(&self) -> u64 {
        match self.first_seq {
            Some(first) => (self.max_seq - first + 1).saturating_sub(self.missing),
            None => 0,
        }
    }

    /// Payloads received, in arrival order (empty unless recording was enabled).
    pub fn payload_log(&self) -> Vec<(u64, Bytes)> {
        self.log.clone().unwrap_or_default()
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> TrackSnapshot {
        TrackSnapshot {
            stream_id: self.stream_id.clone(),
            track_id: self.track_id.clone(),
            kind: self.kind,
            codec: self.codec,
            publisher: self.publisher,
            track: self.track,
            packets: self.packets,
            bytes: self.bytes,
            unique: self.unique(),
            lost: self.lost(),
            duplicates: self.duplicates,
            reordered: self.reordered,
            corrupt: self.corrupt,
            first_seq: self.first_seq,
            max_seq: self.max_seq,
            delay_p50_us: self.delay.value_at_quantile(0.5),
            delay_p99_us: self.delay.value_at_quantile(0.99),
            jitter_us: self.jitter_us,
            first_packet_ns: self.first_packet_ns,
            first_keyframe_ns: self.first_keyframe_ns,
            first_keyframe_seq: self.first_keyframe_seq,
            last_packet_ns: self.last_packet_ns,
            ended: self.ended,
        }
    }
}

/// A copy of one track's counters.
#[derive(Clone, Debug)]
pub struct TrackSnapshot {
    /// See [`TrackStats::stream_id`].
    pub stream_id: String,
    /// See [`TrackStats::track_id`].
    pub track_id: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Codec, if known.
    pub codec: Option<PayloadCodec>,
    /// Publisher index.
    pub publisher: Option<u32>,
    /// Track index.
    pub track: Option<u8>,
    /// Packets received.
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Unique valid packets.
    pub unique: u64,
    /// Gaps in the probe counter.
    pub lost: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Late packets.
    pub reordered: u64,
    /// Failed verification.
    pub corrupt: u64,
    /// First probe counter.
    pub first_seq: Option<u64>,
    /// Highest probe counter.
    pub max_seq: u64,
    /// Median one-way delay, µs.
    pub delay_p50_us: u64,
    /// 99th percentile one-way delay, µs.
    pub delay_p99_us: u64,
    /// Jitter, µs.
    pub jitter_us: f64,
    /// UNIX ns of the first packet.
    pub first_packet_ns: Option<u64>,
    /// UNIX ns of the first keyframe.
    pub first_keyframe_ns: Option<u64>,
    /// Probe counter of the first keyframe.
    pub first_keyframe_seq: Option<u64>,
    /// UNIX ns of the latest packet.
    pub last_packet_ns: Option<u64>,
    /// The track ended.
    pub ended: bool,
}

/// Shared handle to one track's statistics.
pub type SharedTrackStats = Arc<Mutex<TrackStats>>;

/// Every track a client received.
#[derive(Debug, Default)]
pub struct ReceiveStats {
    tracks: Mutex<Vec<SharedTrackStats>>,
}

impl ReceiveStats {
    /// Registers a new track.
    pub fn add(&self, t: TrackStats) -> SharedTrackStats {
        let shared = Arc::new(Mutex::new(t));
        if let Ok(mut v) = self.tracks.lock() {
            v.push(shared.clone());
        }
        shared
    }

    /// Handles of all tracks.
    pub fn tracks(&self) -> Vec<SharedTrackStats> {
        self.tracks.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Snapshots of all tracks.
    pub fn snapshots(&self) -> Vec<TrackSnapshot> {
        self.tracks()
            .iter()
            .filter_map(|t| t.lock().ok().map(|t| t.snapshot()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{self, Probe, FLAG_FRAME_START, FLAG_KEYFRAME};
    use bytes::BytesMut;

    fn payload(seq: u64, sent_ns: u64) -> Bytes {
        let mut b = BytesMut::from(&[0xf8u8][..]);
        probe::write(
            &mut b,
            &Probe {
                publisher: 1,
                track: 0,
                flags: FLAG_KEYFRAME | FLAG_FRAME_START,
                length: 0,
                seq,
                sent_ns,
            },
            20,
        );
        b.freeze()
    }

    fn stats() -> TrackStats {
        TrackStats::new("p".into(), "t".into(), TrackKind::Audio, true)
    }

    #[test]
    fn counts_loss_duplicates_and_reordering() {
        let mut s = stats();
        for seq in [10, 11, 13, 12, 12, 16] {
            s.on_payload(&payload(seq, 1_000_000), 3_000_000);
        }
        assert_eq!(s.packets, 6);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.lost(), 2, "14 and 15");
        assert_eq!(s.unique(), 5);
        let p50 = s.delay.value_at_quantile(0.5);
        assert!((1980..=2020).contains(&p50), "{p50}");
        assert_eq!(s.first_keyframe_seq, Some(10));
        assert_eq!(s.payload_log().len(), 6, "every arrival is logged");
    }

    #[test]
    fn corrupt_payloads_are_counted_not_trusted() {
        let mut s = stats();
        let mut bad = BytesMut::from(&payload(1, 0)[..]);
        bad[40] ^= 1;
        s.on_payload(&bad.freeze(), 5);
        assert_eq!(s.corrupt, 1);
        assert_eq!(s.unique(), 0);
        assert_eq!(s.last_error, Some(ProbeError::Checksum));
    }

    #[test]
    fn jitter_follows_delay_variation() {
        let mut s = stats();
        for i in 0..200u64 {
            let extra = if i % 2 == 0 { 0 } else { 1_000_000 };
            s.on_payload(
                &payload(i, i * 20_000_000),
                i * 20_000_000 + 5_000_000 + extra,
            );
        }
        // Alternating ±1 ms converges to about 1000 µs.
        assert!((900.0..1100.0).contains(&s.jitter_us), "{}", s.jitter_us);
    }
}
