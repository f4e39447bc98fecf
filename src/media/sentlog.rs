//! What one subscriber leg sent: for each recent output sequence number, which input packet (layer
//! and input sequence number) it carried and with which output timestamp, so a NACK for the
//! leg's numbers finds the payload in the track's shared [`PacketCache`](super::cache::PacketCache)
//! and goes out again exactly as it went the first time. Also the per-packet and per-leg limits
//! on retransmission (a NACK storm must not multiply traffic).
//!
//! Fixed size, allocated when the leg opens; recording a packet allocates nothing.
//! Pure: no clock, no I/O.

use std::time::{Duration, Instant};

use super::simulcast::LayerIndex;

/// A packet is sent again at most this many times on one leg.
pub const MAX_RETRANSMISSIONS: u8 = 3;
/// And not again within this interval (a receiver repeats its NACK until the packet arrives;
/// a retransmission already on its way answers the repeats).
pub const RETRANSMIT_INTERVAL: Duration = Duration::from_millis(40);

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    used: bool,
    out_seq: u16,
    layer: LayerIndex,
    in_seq: u16,
    out_ts: u32,
    sent_again: u8,
    last_sent: Option<Instant>,
    /// A padding probe (no input packet behind it).
    padding: bool,
}

/// Where a retransmission of one output sequence number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The layer it was forwarded from.
    pub layer: LayerIndex,
    /// Its input sequence number there.
    pub in_seq: u16,
    /// The output timestamp it carried.
    pub out_ts: u32,
    /// It was a padding probe: it goes again as padding (the receiver counts a lost one as lost
    /// media, and asks for it like any other).
    pub padding: bool,
}

/// Why a NACKed packet is not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The leg never sent this number (or it left the log's window).
    Unknown,
    /// Sent again recently (or often enough) already.
    Repeated,
}

/// One leg's recent output.
#[derive(Debug, Default)]
pub struct SentLog {
    entries: Vec<Entry>,
}

impl SentLog {
    /// A log of `capacity` entries (a power of two; allocated now).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: vec![Entry::default(); capacity.next_power_of_two().max(2)],
        }
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) & (self.entries.len() - 1)
    }

    /// Whether the log has no room yet (the leg is not open).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that output `out_seq` carried input `in_seq` of `layer`, stamped `out_ts`.
    pub fn record(&mut self, out_seq: u16, layer: LayerIndex, in_seq: u16, out_ts: u32) {
        if self.entries.is_empty() {
            return;
        }
        let i = self.index(out_seq);
        self.entries[i] = Entry {
            used: true,
            out_seq,
            layer,
            in_seq,
            out_ts,
            sent_again: 0,
            last_sent: None,
            padding: false,
        };
    }

    /// Records that output `out_seq` was a padding probe stamped `out_ts`.
    pub fn record_padding(&mut self, out_seq: u16, out_ts: u32) {
        self.record(out_seq, 0, 0, out_ts);
        let i = self.index(out_seq);
        if let Some(e) = self.entries.get_mut(i) {
            e.padding = true;
        }
    }

    /// Where output `out_seq` came from, if it may be sent again at `now` (and counts it).
    pub fn resend(&mut self, out_seq: u16, now: Instant) -> Result<Origin, Refusal> {
        if self.entries.is_empty() {
            return Err(Refusal::Unknown);
        }
        let i = self.index(out_seq);
        let e = &mut self.entries[i];
        if !e.used || e.out_seq != out_seq {
            return Err(Refusal::Unknown);
        }
        let recent = e
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < RETRANSMIT_INTERVAL);
        if recent || e.sent_again >= MAX_RETRANSMISSIONS {
            return Err(Refusal::Repeated);
        }
        e.sent_again += 1;
        e.last_sent = Some(now);
        Ok(Origin {
            layer: e.layer,
            in_seq: e.in_seq,
            out_ts: e.out_ts,
            padding: e.padding,
        })
    }
}

/// A byte budget for one leg's retransmissions: refilled at a share of what the leg forwards,
/// with a floor so a low-rate leg can still repair a keyframe.
#[derive(Debug, Clone)]
pub struct RetransmitBudget {
    tokens: f64,
    last: Option<Instant>,
}

/// Retransmissions may add this share of the leg's own bitrate…
const BUDGET_SHARE: f64 = 0.5;
/// …but always at least this many bits per second…
const BUDGET_FLOOR_BPS: f64 = 200_000.0;
/// …with at most this much saved up.
const BUDGET_BURST: Duration = Duration::from_millis(250);

impl Default for RetransmitBudget {
    fn default() -> Self {
        Self {
            tokens: BUDGET_FLOOR_BPS / 8.0 * BUDGET_BURST.as_secs_f64(),
            last: None,
        }
    }
}

impl RetransmitBudget {
    /// Takes `bytes` from the budget at `now` for a leg forwarding `leg_bps`; `false` when the
    /// budget is spent (the packet is not sent again).
    pub fn take(&mut self, bytes: usize, leg_bps: u64, now: Instant) -> bool {
        let rate = (leg_bps as f64 * BUDGET_SHARE).max(BUDGET_FLOOR_BPS) / 8.0;
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(rate * BUDGET_BURST.as_secs_f64());
        }
        self.last = Some(now);
        if self.tokens < bytes as f64 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nack_finds_what_the_leg_sent_under_that_number() {
        let t0 = Instant::now();
        let mut log = SentLog::new(8);
        log.record(500, 1, 9000, 123_000);
        assert_eq!(
            log.resend(500, t0),
            Ok(Origin {
                layer: 1,
                in_seq: 9000,
                out_ts: 123_000,
                padding: false,
            })
        );
        assert_eq!(log.resend(501, t0), Err(Refusal::Unknown));
        // 508 takes 500's entry: 500 is no longer known.
        log.record(508, 0, 42, 1);
        assert_eq!(log.resend(500, t0), Err(Refusal::Unknown));
    }

    #[test]
    fn each_packet_goes_again_at_most_three_times_and_not_back_to_back() {
        let t0 = Instant::now();
        let mut log = SentLog::new(8);
        log.record(1, 0, 1, 0);
        assert!(log.resend(1, t0).is_ok());
        assert_eq!(
            log.resend(1, t0 + Duration::from_millis(10)),
            Err(Refusal::Repeated)
        );
        assert!(log.resend(1, t0 + Duration::from_millis(50)).is_ok());
        assert!(log.resend(1, t0 + Duration::from_millis(100)).is_ok());
        assert_eq!(
            log.resend(1, t0 + Duration::from_millis(200)),
            Err(Refusal::Repeated),
            "three times is the limit"
        );
    }

    #[test]
    fn the_budget_caps_a_nack_storm_at_a_share_of_the_leg_rate() {
        let t0 = Instant::now();
        let mut b = RetransmitBudget::default();
        // A leg at 1 Mbit/s: 500 kbit/s of retransmission, 250 ms saved up at most.
        let mut sent = 0usize;
        for ms in 0..1000u64 {
            // Someone asks for 10 packets of 1200 B every millisecond.
            for _ in 0..10 {
                if b.take(1200, 1_000_000, t0 + Duration::from_millis(ms)) {
                    sent += 1200;
                }
            }
        }
        let bits = sent as f64 * 8.0;
        assert!(
            bits <= 500_000.0 * 1.0 + 200_000.0 * 0.25 + 10.0 * 1200.0 * 8.0,
            "{bits}"
        );
        assert!(bits >= 400_000.0, "{bits}: the budget is usable");
    }
}
