//! Simulcast: the layers of one published track, and which layer one subscriber leg forwards.
//!
//! A publisher may send one video track as up to [`MAX_LAYERS`] encodings (RTP streams told
//! apart by `rid`), each at a different resolution and bitrate. The server receives all of them
//! and forwards one per subscriber. A track without simulcast is one layer.
//!
//! Pure: no clock, no I/O. Instants come in as arguments.

use std::time::{Duration, Instant};

use super::cache::PacketCache;
use super::codec::vp8_frame_start;
use super::keyframe::KeyframeRequester;
use super::loss::SeqSpan;
use super::rate::RateMeter;

/// Most encodings one track may have.
pub const MAX_LAYERS: usize = 3;

/// A layer's slot: 0 is the lowest quality. Slots are by quality, not by arrival order.
pub type LayerIndex = u8;

/// A layer that sent nothing for this long is not flowing (the publisher turned it off, or its
/// encoder dropped it for lack of uplink bandwidth or CPU).
pub const LAYER_STALE: Duration = Duration::from_secs(1);

/// What a layer costs before it has been measured (or while the publisher has it turned off),
/// in bits per second, by slot: about what the Confab client's encodings (50k/300k/900k caps,
/// 240x135/480x270/960x540) measure on the wire.
const NOMINAL_BPS: [u64; MAX_LAYERS] = [60_000, 300_000, 700_000];

/// Bytes per packet on the wire beyond the RTP payload: RTP header and extensions, SRTP tag,
/// UDP and IPv4 headers. Used to turn payload rates into what a link must carry.
pub const WIRE_OVERHEAD_BYTES: u64 = 12 + 16 + 16 + 8 + 20;

/// The slot a `rid` names. The Confab client sends `q`, `h`, `f` (quarter, half, full); other
/// common spellings are understood too. `None`: unknown, take the next free slot.
pub fn slot_of_rid(rid: &str) -> Option<LayerIndex> {
    match rid.to_ascii_lowercase().as_str() {
        "q" | "l" | "lo" | "low" | "0" => Some(0),
        "h" | "m" | "mid" | "medium" | "1" => Some(1),
        "f" | "hi" | "high" | "full" | "2" => Some(2),
        _ => None,
    }
}

/// One received encoding of a track.
#[derive(Debug)]
pub struct Layer {
    /// Its `rid` (`None`: the track is not simulcast).
    pub rid: Option<String>,
    /// The SSRC the publisher sends it with (target of PLI).
    pub ssrc: u32,
    /// Keyframe request merging/throttling for this layer.
    pub keyframes: KeyframeRequester,
    /// Payload bytes received.
    pub bytes: u64,
    /// Packets received.
    pub packets: u64,
    /// The span of their sequence numbers (with `packets`: the loss on the way in).
    pub seq: SeqSpan,
    /// Payload bitrate.
    pub rate: RateMeter,
    /// Packet rate (a [`RateMeter`] over a packet counter, so `bps / 8` is packets per second).
    pub packet_rate: RateMeter,
    /// Wire bitrate when it last flowed (what it costs when turned back on).
    pub last_wire_bps: u64,
    /// Frame size from its last keyframe, when the codec's keyframes carry one.
    pub width: Option<u16>,
    /// When its last packet arrived.
    pub last_packet: Option<Instant>,
    /// Its recent packets, for retransmission to every leg that forwards it.
    pub cache: PacketCache,
    /// The publisher's last sender report on it.
    pub clock: Option<SenderClock>,
}

/// A sender's clock mapping from its last sender report: RTP time `rtp` was NTP time `ntp`
/// (RFC 3550 64-bit fixed point), received at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    /// NTP time of the report.
    pub ntp: u64,
    /// RTP time of the report.
    pub rtp: u32,
    /// When it arrived.
    pub at: Instant,
}

impl SenderClock {
    /// The mapping carried forward to `now` at `clock_rate` ticks per second: (NTP, RTP).
    pub fn at(&self, now: Instant, clock_rate: u32) -> (u64, u32) {
        let elapsed = now.saturating_duration_since(self.at);
        let ntp = self
            .ntp
            .wrapping_add((elapsed.as_secs_f64() * 4_294_967_296.0) as u64);
        let ticks = (elapsed.as_micros() as u64 * u64::from(clock_rate) / 1_000_000) as u32;
        (ntp, self.rtp.wrapping_add(ticks))
    }
}

impl Layer {
    /// Whether it sent something within [`LAYER_STALE`].
    pub fn flowing(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_STALE)
    }

    /// What forwarding this layer costs on a subscriber's link, in bits per second: measured
    /// when it flows, else what it cost when it last did, else the nominal rate of its slot.
    pub fn wire_bps(&self, slot: LayerIndex) -> u64 {
        let measured = self.rate.bps() + (self.packet_rate.bps() / 8) * WIRE_OVERHEAD_BYTES * 8;
        if self.rate.bps() > 0 {
            measured
        } else if self.last_wire_bps > 0 {
            self.last_wire_bps
        } else {
            NOMINAL_BPS[usize::from(slot).min(MAX_LAYERS - 1)]
        }
    }
}

/// The layers of one track, by slot.
#[derive(Debug, Default)]
pub struct Layers {
    slots: [Option<Layer>; MAX_LAYERS],
    /// Video (sizes the retransmission caches).
    video: bool,
}

impl Layers {
    /// No layers yet, of a video track or not.
    pub fn new(video: bool) -> Self {
        Self {
            slots: Default::default(),
            video,
        }
    }

    /// Adds (or re-binds) the layer with this `rid` and SSRC; returns its slot, or `None` when
    /// all slots are taken by other rids.
    pub fn add(
        &mut self,
        rid: Option<&str>,
        ssrc: u32,
        keyframes: KeyframeRequester,
    ) -> Option<LayerIndex> {
        if let Some(i) = self.slots.iter().position(|l| {
            l.as_ref()
                .is_some_and(|l| l.rid.as_deref() == rid || l.ssrc == ssrc)
        }) {
            if let Some(l) = self.slots[i].as_mut() {
                l.ssrc = ssrc;
            }
            return Some(i as LayerIndex);
        }
        let wanted = rid.and_then(slot_of_rid).map(usize::from);
        let slot = match wanted {
            Some(s) if self.slots[s].is_none() => s,
            _ => self.slots.iter().position(Option::is_none)?,
        };
        self.slots[slot] = Some(Layer {
            rid: rid.map(str::to_owned),
            ssrc,
            keyframes,
            bytes: 0,
            packets: 0,
            seq: SeqSpan::default(),
            rate: RateMeter::default(),
            packet_rate: RateMeter::default(),
            last_wire_bps: 0,
            width: None,
            last_packet: None,
            cache: PacketCache::for_video(self.video),
            clock: None,
        });
        Some(slot as LayerIndex)
    }

    /// The slot of the layer sent with `ssrc` (at most [`MAX_LAYERS`] comparisons).
    pub fn slot_of_ssrc(&self, ssrc: u32) -> Option<LayerIndex> {
        self.slots
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.ssrc == ssrc))
            .map(|i| i as LayerIndex)
    }

    /// A layer by slot.
    pub fn get(&self, slot: LayerIndex) -> Option<&Layer> {
        self.slots.get(usize::from(slot))?.as_ref()
    }

    /// A layer by slot, mutably.
    pub fn get_mut(&mut self, slot: LayerIndex) -> Option<&mut Layer> {
        self.slots.get_mut(usize::from(slot))?.as_mut()
    }

    /// The layers present, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = (LayerIndex, &Layer)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i as LayerIndex, l)))
    }

    /// The layers present, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (LayerIndex, &mut Layer)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, l)| l.as_mut().map(|l| (i as LayerIndex, l)))
    }

    /// Whether the track is sent as more than one layer.
    pub fn is_simulcast(&self) -> bool {
        self.iter().count() > 1 || self.iter().any(|(_, l)| l.rid.is_some())
    }

    /// The lowest layer present.
    pub fn lowest(&self) -> Option<LayerIndex> {
        self.iter().next().map(|(i, _)| i)
    }

    /// The layer to forward when `wanted` is asked for: `wanted` if it flows, else the highest
    /// flowing layer below it, else the lowest flowing one above it, else `wanted` itself (it
    /// starts when its first keyframe comes).
    pub fn nearest_flowing(&self, wanted: LayerIndex, now: Instant) -> LayerIndex {
        let flowing: Vec<LayerIndex> = self
            .iter()
            .filter(|(_, l)| l.flowing(now))
            .map(|(slot, _)| slot)
            .collect();
        flowing
            .iter()
            .rev()
            .find(|&&l| l <= wanted)
            .or_else(|| flowing.first())
            .copied()
            .unwrap_or(wanted)
    }

    /// Refreshes the per-layer meters (about once a second).
    pub fn update_rates(&mut self, now: Instant) {
        for (slot, l) in self.iter_mut() {
            l.rate.update(l.bytes, now);
            l.packet_rate.update(l.packets, now);
            if l.rate.bps() > 0 {
                l.last_wire_bps = l.wire_bps(slot);
            }
        }
    }
}

/// Which layer one subscriber leg forwards, and which it is switching to.
///
/// A leg forwards its `current` layer. When the allocator picks another `target`, the leg keeps
/// forwarding `current` until a keyframe of `target` arrives and switches on that packet, so the
/// subscriber's decoder always starts a layer at a keyframe. `target: None` pauses the leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSelector {
    current: Option<LayerIndex>,
    target: Option<LayerIndex>,
}

/// What a leg does with one packet of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Forward it.
    Forward,
    /// Forward it: it is the keyframe that starts the target layer.
    Switched,
    /// The target layer's packet, but not a keyframe: wait (ask the publisher for one).
    WaitForKeyframe,
    /// Not this leg's layer (or paused): skip, silently.
    Skip,
}

impl LayerSelector {
    /// A leg that forwards nothing until told which layer to take.
    pub fn new(target: Option<LayerIndex>) -> Self {
        Self {
            current: None,
            target,
        }
    }

    /// The layer being forwarded.
    pub fn current(&self) -> Option<LayerIndex> {
        self.current
    }

    /// The layer wanted.
    pub fn target(&self) -> Option<LayerIndex> {
        self.target
    }

    /// Whether a switch is waiting for a keyframe of the target layer.
    pub fn switching(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// Picks a new target. Pausing takes effect at once; any other change waits for a keyframe.
    pub fn set_target(&mut self, target: Option<LayerIndex>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// Decides for one packet of `layer`.
    pub fn select(&mut self, layer: LayerIndex, keyframe: bool) -> Selection {
        if self.target == Some(layer) && self.current != Some(layer) {
            if keyframe {
                self.current = Some(layer);
                return Selection::Switched;
            }
            // Until the switch, the old layer keeps flowing (if there is one).
            return Selection::WaitForKeyframe;
        }
        if self.current == Some(layer) {
            Selection::Forward
        } else {
            Selection::Skip
        }
    }
}

/// The frame width in a VP8 keyframe payload, if this packet starts one (RFC 6386 §9.1: the
/// 3-byte frame tag, the start code, then a 14-bit width).
pub fn vp8_keyframe_width(payload: &[u8]) -> Option<u16> {
    let frame = vp8_frame_start(payload)?.get(..10)?;
    if frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn kf() -> KeyframeRequester {
        KeyframeRequester::new(Duration::from_millis(500))
    }

    #[test]
    fn a_sender_clock_carries_its_mapping_forward() {
        let t0 = Instant::now();
        let c = SenderClock {
            ntp: 10 << 32,
            rtp: 1000,
            at: t0,
        };
        let (ntp, rtp) = c.at(t0 + Duration::from_millis(500), 90_000);
        assert_eq!(ntp, (10 << 32) + (1 << 31));
        assert_eq!(rtp, 1000 + 45_000);
    }

    #[test]
    fn rids_take_slots_by_quality_whatever_the_arrival_order() {
        let mut l = Layers::default();
        assert_eq!(l.add(Some("f"), 30, kf()), Some(2));
        assert_eq!(l.add(Some("q"), 10, kf()), Some(0));
        assert_eq!(l.add(Some("h"), 20, kf()), Some(1));
        assert_eq!(l.slot_of_ssrc(20), Some(1));
        assert_eq!(
            l.add(Some("h"), 21, kf()),
            Some(1),
            "re-bind keeps the slot"
        );
        assert_eq!(l.slot_of_ssrc(21), Some(1));
        assert_eq!(l.add(Some("x"), 40, kf()), None, "no free slot");
        assert!(l.is_simulcast());
        assert_eq!(l.lowest(), Some(0));
        assert_eq!(l.iter().last().map(|(slot, _)| slot), Some(2));
    }

    #[test]
    fn unknown_rids_fill_free_slots_and_a_plain_track_is_one_layer() {
        let mut l = Layers::default();
        assert_eq!(l.add(Some("a"), 1, kf()), Some(0));
        assert_eq!(l.add(Some("b"), 2, kf()), Some(1));
        let mut plain = Layers::default();
        assert_eq!(plain.add(None, 7, kf()), Some(0));
        assert!(!plain.is_simulcast());
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_and_the_old_layer_flows_until_then() {
        let mut s = LayerSelector::new(Some(0));
        assert_eq!(s.select(0, false), Selection::WaitForKeyframe);
        assert_eq!(s.select(1, true), Selection::Skip, "not the target");
        assert_eq!(s.select(0, true), Selection::Switched);
        assert_eq!(s.select(0, false), Selection::Forward);
        s.set_target(Some(2));
        assert!(s.switching());
        assert_eq!(
            s.select(0, false),
            Selection::Forward,
            "old layer until the switch"
        );
        assert_eq!(s.select(2, false), Selection::WaitForKeyframe);
        assert_eq!(s.select(2, true), Selection::Switched);
        assert_eq!(
            s.select(0, false),
            Selection::Skip,
            "old layer stops at the switch"
        );
        assert!(!s.switching());
    }

    #[test]
    fn pausing_is_immediate_and_resuming_waits_for_a_keyframe() {
        let mut s = LayerSelector::new(Some(1));
        assert_eq!(s.select(1, true), Selection::Switched);
        s.set_target(None);
        assert_eq!(s.select(1, true), Selection::Skip);
        assert_eq!(s.current(), None);
        s.set_target(Some(0));
        assert_eq!(s.select(0, false), Selection::WaitForKeyframe);
        assert_eq!(s.select(0, true), Selection::Switched);
    }

    #[test]
    fn unmeasured_layers_cost_their_nominal_rate_then_what_they_last_cost() {
        let mut l = Layers::default();
        l.add(Some("h"), 1, kf());
        let t0 = Instant::now();
        assert_eq!(l.get(1).map(|x| x.wire_bps(1)), Some(NOMINAL_BPS[1]));
        l.update_rates(t0);
        if let Some(x) = l.get_mut(1) {
            x.bytes = 25_000;
            x.packets = 25;
        }
        l.update_rates(t0 + Duration::from_secs(1));
        let flowing = l.get(1).map(|x| x.wire_bps(1)).unwrap_or(0);
        assert_eq!(flowing, 200_000 + 25 * WIRE_OVERHEAD_BYTES * 8);
        l.update_rates(t0 + Duration::from_secs(2)); // nothing arrived: turned off
        assert_eq!(l.get(1).map(|x| x.wire_bps(1)), Some(flowing));
    }

    #[test]
    fn a_layer_that_stopped_is_replaced_by_the_nearest_flowing_one() {
        let mut l = Layers::default();
        for (rid, ssrc) in [("q", 1), ("h", 2), ("f", 3)] {
            l.add(Some(rid), ssrc, kf());
        }
        let t0 = Instant::now();
        assert_eq!(l.nearest_flowing(2, t0), 2, "nothing flows yet: as asked");
        for slot in [0, 1] {
            if let Some(x) = l.get_mut(slot) {
                x.last_packet = Some(t0);
            }
        }
        assert_eq!(l.nearest_flowing(2, t0), 1, "f does not flow: h");
        assert_eq!(l.nearest_flowing(0, t0), 0);
        let later = t0 + LAYER_STALE;
        if let Some(x) = l.get_mut(1) {
            x.last_packet = Some(later);
        }
        assert_eq!(
            l.nearest_flowing(0, later),
            1,
            "q went stale: the lowest that flows"
        );
    }

    #[test]
    fn vp8_keyframe_width_is_read_from_the_frame_header() {
        // Descriptor with X, I (15-bit picture id): 4 bytes; then a key frame header 640x360.
        let mut p = vec![0x90, 0x80, 0x81, 0x23];
        p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        assert_eq!(vp8_keyframe_width(&p), Some(640));
        p[4] = 0x01; // inter frame
        assert_eq!(vp8_keyframe_width(&p), None);
        assert_eq!(vp8_keyframe_width(&[0x90]), None);
    }
}
