//! The retransmission cache of one received stream (one layer of a published track): the
//! packets of the last moments, payload stored once and shared by every subscriber leg (a leg
//! keeps only which input packet each of its own sequence numbers carried, see
//! [`SentLog`](super::sentlog::SentLog)). A subscriber's NACK is answered from here.
//!
//! Sized by time: a packet older than the cache's age is gone (its payload released on the next
//! insert) and a request for it is counted as too old. The slot array is allocated at the first
//! insert and reused from then on: caching a packet allocates nothing (the payload is a
//! reference-counted [`Bytes`] shared with the forwarded copies).
//!
//! Pure: no clock, no I/O.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::packet::Packet;

/// How long a video packet stays retransmittable: about three round trips of a poor link plus
/// the receiver's own NACK delay.
pub const VIDEO_MAX_AGE: Duration = Duration::from_millis(1000);
/// Audio is useful for less time (its jitter buffer is short).
pub const AUDIO_MAX_AGE: Duration = Duration::from_millis(500);
/// Slots for a video layer: 1 s of a 2.5 Mbit/s stream is ~250 packets; keyframe bursts and
/// higher rates fit with room.
pub const VIDEO_SLOTS: usize = 1024;
/// Slots for an audio stream (50 packets/s).
pub const AUDIO_SLOTS: usize = 64;

/// Whether `a` comes after `b` in RFC 1982 serial-number order.
fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// When it arrived (`None`: empty).
    arrival: Option<Instant>,
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    payload: Bytes,
}

/// A cached packet, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached<'a> {
    /// Its input timestamp.
    pub timestamp: u32,
    /// Its marker bit.
    pub marker: bool,
    /// Its input payload type.
    pub payload_type: u8,
    /// Its payload.
    pub payload: &'a Bytes,
}

/// Why a packet is not in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// It was there but is older than the cache keeps, or it fell out of the window.
    TooOld,
    /// It never arrived (lost upstream too) or the sequence number is unknown.
    Missing,
}

/// One stream's recent packets, by input sequence number.
#[derive(Debug)]
pub struct PacketCache {
    slots: Vec<Slot>,
    capacity: usize,
    max_age: Duration,
    /// Newest sequence number inserted (`None`: nothing yet).
    head: Option<u16>,
    /// Oldest sequence number still in the window.
    tail: u16,
}

impl PacketCache {
    /// A cache of `capacity` slots (rounded up to a power of two) keeping packets `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            slots: Vec::new(),
            capacity: capacity.next_power_of_two().clamp(2, 1 << 15),
            max_age,
            head: None,
            tail: 0,
        }
    }

    /// The cache for a track of this kind.
    pub fn for_video(video: bool) -> Self {
        if video {
            Self::new(VIDEO_SLOTS, VIDEO_MAX_AGE)
        } else {
            Self::new(AUDIO_SLOTS, AUDIO_MAX_AGE)
        }
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) & (self.capacity - 1)
    }

    fn clear(&mut self, seq: u16) {
        let i = self.index(seq);
        if let Some(s) = self.slots.get_mut(i) {
            if s.arrival.is_some() {
                s.arrival = None;
                s.payload = Bytes::new();
            }
        }
    }

    /// Packets currently held.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.arrival.is_some()).count()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `pkt` (arrived at `now`), then releases what has aged out. `false`: the cache holds
    /// this sequence number already (a duplicate: a publisher's retransmission of a packet that
    /// did arrive, e.g. the RTX packets a browser probes its uplink with), and nothing changed.
    pub fn insert(&mut self, pkt: &Packet, now: Instant) -> bool {
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); self.capacity];
        }
        let seq = pkt.header.sequence_number;
        if let Some(held) = self.slots.get(self.index(seq)) {
            if held.arrival.is_some() && held.seq == seq && self.head.is_some() {
                return false;
            }
        }
        match self.head {
            None => {
                self.head = Some(seq);
                self.tail = seq;
            }
            Some(head) if seq_after(seq, head) => {
                let ahead = usize::from(seq.wrapping_sub(head));
                if ahead >= self.capacity {
                    // A jump (new stream, long gap): nothing of the old window is reachable.
                    for s in &mut self.slots {
                        s.arrival = None;
                        s.payload = Bytes::new();
                    }
                    self.tail = seq;
                } else {
                    // The skipped numbers are holes (lost upstream so far).
                    let mut s = head.wrapping_add(1);
                    while s != seq {
                        self.clear(s);
                        s = s.wrapping_add(1);
                    }
                    let window = usize::from(seq.wrapping_sub(self.tail)) + 1;
                    if window > self.capacity {
                        self.tail = seq.wrapping_sub(self.capacity as u16 - 1);
                    }
                }
                self.head = Some(seq);
            }
            Some(head) => {
                // Late (reordered, or a retransmission from the publisher): fill its hole if
                // it is still in reach.
                let behind = usize::from(head.wrapping_sub(seq));
                if behind >= self.capacity {
                    return true;
                }
                if seq_after(self.tail, seq) {
                    self.tail = seq;
                }
            }
        }
        let i = self.index(seq);
        let slot = &mut self.slots[i];
        slot.arrival = Some(now);
        slot.seq = seq;
        slot.timestamp = pkt.header.timestamp;
        slot.marker = pkt.header.marker;
        slot.payload_type = pkt.header.payload_type;
        slot.payload = pkt.payload.clone();
        self.evict(now);
        true
    }

    /// Releases packets older than the cache's age, oldest first.
    fn evict(&mut self, now: Instant) {
        let Some(head) = self.head else { return };
        while self.tail != head {
            let i = self.index(self.tail);
            let expired = match self.slots[i].arrival {
                Some(at) => now.saturating_duration_since(at) > self.max_age,
                None => true,
            };
            if !expired {
                break;
            }
            self.clear(self.tail);
            self.tail = self.tail.wrapping_add(1);
        }
    }

    /// The packet with input sequence number `seq`, if it is still retransmittable at `now`.
    pub fn get(&self, seq: u16, now: Instant) -> Result<Cached<'_>, Miss> {
        let Some(head) = self.head else {
            return Err(Miss::Missing);
        };
        if seq_after(seq, head) {
            return Err(Miss::Missing);
        }
        if usize::from(head.wrapping_sub(seq)) >= self.capacity || seq_after(self.tail, seq) {
            return Err(Miss::TooOld);
        }
        let s = &self.slots[self.index(seq)];
        match s.arrival {
            Some(at) if s.seq == seq => {
                if now.saturating_duration_since(at) > self.max_age {
                    Err(Miss::TooOld)
                } else {
                    Ok(Cached {
                        timestamp: s.timestamp,
                        marker: s.marker,
                        payload_type: s.payload_type,
                        payload: &s.payload,
                    })
                }
            }
            _ => Err(Miss::Missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::header::Header;

    fn pkt(seq: u16, payload: &Bytes) -> Packet {
        Packet {
            header: Header {
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                payload_type: 96,
                ..Default::default()
            },
            payload: payload.clone(),
        }
    }

    #[test]
    fn packets_are_found_until_they_age_out_and_then_released() {
        let t0 = Instant::now();
        let body = Bytes::from_static(b"frame");
        let mut c = PacketCache::new(16, Duration::from_millis(500));
        for i in 0..5u16 {
            c.insert(
                &pkt(100 + i, &body),
                t0 + Duration::from_millis(u64::from(i) * 100),
            );
        }
        let at = t0 + Duration::from_millis(450);
        let got = c.get(102, at).expect("cached");
        assert_eq!(got.timestamp, 102 * 3000);
        assert_eq!(got.payload, &body);
        assert_eq!(c.get(105, at), Err(Miss::Missing), "not sent yet");
        // 100 arrived at t0: 700 ms later it is too old, and the next insert releases it.
        let later = t0 + Duration::from_millis(700);
        assert_eq!(c.get(100, later), Err(Miss::TooOld));
        c.insert(&pkt(105, &body), later);
        assert_eq!(c.get(100, later), Err(Miss::TooOld));
        assert_eq!(c.get(101, later), Err(Miss::TooOld));
        assert!(c.get(102, later).is_ok(), "exactly 500 ms old: still kept");
        assert_eq!(c.len(), 4, "102..=105 held; 100 and 101 released");
    }

    #[test]
    fn the_payload_is_shared_not_copied() {
        let t0 = Instant::now();
        let body = Bytes::from(vec![7u8; 1000]);
        let mut c = PacketCache::new(8, Duration::from_secs(1));
        c.insert(&pkt(1, &body), t0);
        let got = c.get(1, t0).expect("cached");
        assert_eq!(got.payload.as_ptr(), body.as_ptr(), "same buffer");
    }

    #[test]
    fn a_packet_held_already_is_a_duplicate() {
        let t0 = Instant::now();
        let body = Bytes::from_static(b"x");
        let mut c = PacketCache::new(16, Duration::from_secs(1));
        assert!(c.insert(&pkt(10, &body), t0));
        assert!(c.insert(&pkt(11, &body), t0));
        assert!(!c.insert(&pkt(10, &body), t0), "10 again");
        assert!(!c.insert(&pkt(11, &body), t0), "11 again");
        assert!(c.insert(&pkt(12, &body), t0));
    }

    #[test]
    fn holes_are_missing_until_a_late_packet_fills_them() {
        let t0 = Instant::now();
        let body = Bytes::from_static(b"x");
        let mut c = PacketCache::new(16, Duration::from_secs(1));
        c.insert(&pkt(10, &body), t0);
        c.insert(&pkt(13, &body), t0);
        assert_eq!(c.get(11, t0), Err(Miss::Missing));
        c.insert(&pkt(11, &body), t0);
        assert!(c.get(11, t0).is_ok());
        assert_eq!(c.get(12, t0), Err(Miss::Missing));
    }

    #[test]
    fn the_window_slides_and_wraps_around() {
        let t0 = Instant::now();
        let body = Bytes::from_static(b"x");
        let mut c = PacketCache::new(8, Duration::from_secs(10));
        for i in 0..20u16 {
            c.insert(&pkt(65530u16.wrapping_add(i), &body), t0);
        }
        let head = 65530u16.wrapping_add(19);
        assert!(c.get(head, t0).is_ok());
        assert!(c.get(head.wrapping_sub(7), t0).is_ok());
        assert_eq!(c.get(head.wrapping_sub(8), t0), Err(Miss::TooOld));
        assert_eq!(c.len(), 8);
        // A jump far ahead empties the window.
        c.insert(&pkt(head.wrapping_add(5000), &body), t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(head, t0), Err(Miss::TooOld));
    }
}
